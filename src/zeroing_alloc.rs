//! A global allocator that clears every heap block before giving it back.
//!
//! A value passes through buffers of many libraries on its way from the
//! server to a reader: reqwest/hyper's response bodies, rustls' records,
//! serde_json's strings, minijinja's output, ours. They all free those
//! buffers without clearing them, so freed heap memory keeps copies of
//! values long after the cache let them go. Wrapping the system allocator
//! clears every block any of them frees, without touching each library:
//! `dealloc` zeroes the block first, and `realloc` (which may move a block
//! and free the old one) allocates anew, copies, and zeroes and frees the
//! old block.
//!
//! What it does not cover: buffers still alive (a pooled connection's read
//! buffer: see `store::vault::client`), thread stacks, and the kernel's
//! copies (page cache, socket buffers).

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, clearing every block it frees (see the module).
pub type ZeroingAlloc = Zeroing<System>;

/// The zeroing allocator: [`Zeroing::SYSTEM`] for the binary's
/// `#[global_allocator]`.
pub struct Zeroing<A> {
    inner: A,
}

impl Zeroing<System> {
    /// Over the system allocator.
    pub const SYSTEM: Zeroing<System> = Zeroing { inner: System };
}

impl<A> Zeroing<A> {
    /// Over `inner` (tests pass one that inspects what it is given back).
    pub const fn new(inner: A) -> Self {
        Zeroing { inner }
    }
}

/// Clears `len` bytes at `ptr` in a way the compiler may not drop as a
/// dead store (the block is freed right after).
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn clear(ptr: *mut u8, len: usize) {
    if len > 0 {
        // SAFETY: the caller's promise; explicit_bzero is memset that the
        // compiler keeps.
        unsafe { libc::explicit_bzero(ptr.cast(), len) };
    }
}

// SAFETY: every block comes from `inner` with the layout asked for and
// goes back to it with that layout; blocks are only cleared while owned.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Zeroing<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller owns the block of `layout.size()` bytes.
        unsafe {
            clear(ptr, layout.size());
            self.inner.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Never the inner realloc: it may move the block and free the old
        // one uncleared.
        // SAFETY: the caller promises `new_size`, rounded up to the
        // alignment, does not overflow isize (GlobalAlloc::realloc).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a non-zero size (GlobalAlloc::realloc's contract).
        let new = unsafe { self.inner.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are ours, distinct, and at least this
            // long; the old block is cleared and freed with its layout.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                clear(ptr, layout.size());
                self.inner.dealloc(ptr, layout);
            }
        }
        // On failure the old block stays the caller's, untouched.
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The system allocator, recording the bytes of each block as it gets
    /// it back (what a later reader of freed memory would find).
    struct Inspecting {
        freed: Mutex<Vec<Vec<u8>>>,
    }

    // SAFETY: forwards to System; reads a block only before freeing it.
    unsafe impl GlobalAlloc for Inspecting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) }.to_vec();
            self.freed.lock().unwrap().push(bytes);
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, _: *mut u8, _: Layout, _: usize) -> *mut u8 {
            panic!("the zeroing allocator must never call the inner realloc")
        }
    }

    fn zeroing() -> Zeroing<Inspecting> {
        Zeroing::new(Inspecting {
            freed: Mutex::new(Vec::new()),
        })
    }

    /// Allocates `bytes.len()` bytes holding `bytes`.
    fn filled(a: &Zeroing<Inspecting>, bytes: &[u8]) -> (*mut u8, Layout) {
        let layout = Layout::from_size_align(bytes.len(), 8).unwrap();
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        (p, layout)
    }

    #[test]
    fn a_freed_block_is_all_zeroes_when_the_system_gets_it_back() {
        let a = zeroing();
        let (p, layout) = filled(&a, b"hunter2-hunter2-hunter2");
        unsafe { a.dealloc(p, layout) };
        let freed = a.inner.freed.lock().unwrap();
        assert_eq!(freed.as_slice(), &[vec![0u8; 23]]);
    }

    #[test]
    fn a_grown_block_keeps_its_bytes_and_the_old_one_is_cleared() {
        let a = zeroing();
        let (p, layout) = filled(&a, b"secret!!");
        let q = unsafe { a.realloc(p, layout, 4096) };
        assert!(!q.is_null());
        assert_eq!(unsafe { std::slice::from_raw_parts(q, 8) }, b"secret!!");
        assert_eq!(a.inner.freed.lock().unwrap().as_slice(), &[vec![0u8; 8]]);
        unsafe { a.dealloc(q, Layout::from_size_align(4096, 8).unwrap()) };
        assert!(a.inner.freed.lock().unwrap()[1].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_shrunk_block_keeps_its_head_and_the_old_one_is_cleared_whole() {
        let a = zeroing();
        let (p, layout) = filled(&a, b"0123456789abcdef");
        let q = unsafe { a.realloc(p, layout, 4) };
        assert_eq!(unsafe { std::slice::from_raw_parts(q, 4) }, b"0123");
        assert_eq!(a.inner.freed.lock().unwrap().as_slice(), &[vec![0u8; 16]]);
        unsafe { a.dealloc(q, Layout::from_size_align(4, 8).unwrap()) };
    }

    #[test]
    fn vecs_and_strings_through_it_leave_only_zeroes() {
        let a = zeroing();
        // What Vec does: grow by realloc, free by dealloc.
        let (mut p, mut layout) = filled(&a, b"ab");
        for size in [4usize, 64, 1000, 70_000] {
            p = unsafe { a.realloc(p, layout, size) };
            layout = Layout::from_size_align(size, 8).unwrap();
            unsafe { std::ptr::write_bytes(p, b'v', size) };
        }
        unsafe { a.dealloc(p, layout) };
        let freed = a.inner.freed.lock().unwrap();
        assert_eq!(freed.len(), 5);
        assert!(freed.iter().flatten().all(|b| *b == 0));
    }
}
