//! A global allocator that clears every heap block before giving it back.
//!
//! A value passes through buffers of many libraries on its way from the
//! server to a reader: reqwest/hyper's response bodies, rustls' records,
//! serde_json's strings, minijinja's output, ours. They all free those
//! buffers without clearing them, so freed heap memory keeps copies of
//! values long after the cache let them go. Wrapping the system allocator
//! clears every block any of them frees, without touching each library:
//! `dealloc` zeroes the block first, and `realloc` never lets the system
//! move a block: it grows a block in place when the system gave it room
//! enough (`malloc_usable_size`), shrinks it in place clearing the tail
//! when at least half stays, and otherwise allocates anew, copies, and
//! clears and frees the old block.
//!
//! What it does not cover: buffers still alive (a pooled connection's read
//! buffer: see `store::vault::client`), thread stacks, and the kernel's
//! copies (page cache, socket buffers).

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, clearing every block it frees (see the module).
pub type ZeroingAlloc = Zeroing<System>;

/// An allocator [`Zeroing`] can wrap: says how many bytes a block it gave
/// really holds, so that a block can grow into them without moving.
///
/// # Safety
/// `usable_size` must return at least `layout.size()` and no more than the
/// block at `ptr` holds; the block must stay valid for dealloc with any
/// layout of the same alignment and a size up to that.
pub unsafe trait Inner: GlobalAlloc {
    /// Bytes the block at `ptr` (allocated with `layout`) holds.
    ///
    /// # Safety
    /// `ptr` must be a live block of this allocator, allocated with `layout`.
    unsafe fn usable_size(&self, ptr: *mut u8, layout: Layout) -> usize {
        let _ = ptr;
        layout.size()
    }
}

// SAFETY: System allocates with malloc or posix_memalign and frees with
// free whatever the layout, so a block may use all malloc_usable_size says.
unsafe impl Inner for System {
    unsafe fn usable_size(&self, ptr: *mut u8, layout: Layout) -> usize {
        // SAFETY: a live block of the system's malloc (the caller's promise).
        unsafe { libc::malloc_usable_size(ptr.cast()) }.max(layout.size())
    }
}

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
unsafe impl<A: Inner> GlobalAlloc for Zeroing<A> {
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
        let old_size = layout.size();
        if new_size <= old_size && new_size >= old_size / 2 {
            // Shrinks in place; the tail no longer belongs to the caller.
            // SAFETY: the tail is inside the caller's block.
            unsafe { clear(ptr.add(new_size), old_size - new_size) };
            return ptr;
        }
        // SAFETY: the caller's live block, allocated with `layout`.
        if new_size > old_size && new_size <= unsafe { self.inner.usable_size(ptr, layout) } {
            // Grows into room the block has (bytes never handed out, or
            // cleared when they last were).
            return ptr;
        }
        // SAFETY: the caller promises `new_size`, rounded up to the
        // alignment, does not overflow isize (GlobalAlloc::realloc).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a non-zero size (GlobalAlloc::realloc's contract).
        let new = unsafe { self.inner.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are ours, distinct, and at least this
            // long; the old block is cleared and freed with its layout.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, old_size.min(new_size));
                clear(ptr, old_size);
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
        /// Extra bytes every block holds beyond its layout.
        room: usize,
    }

    unsafe impl Inner for Inspecting {
        unsafe fn usable_size(&self, _: *mut u8, layout: Layout) -> usize {
            layout.size() + self.room
        }
    }

    // SAFETY: forwards to System; reads a block only before freeing it.
    unsafe impl GlobalAlloc for Inspecting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let real = Layout::from_size_align(layout.size() + self.room, layout.align()).unwrap();
            unsafe { System.alloc(real) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) }.to_vec();
            self.freed.lock().unwrap().push(bytes);
            // System frees whatever the size.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, _: *mut u8, _: Layout, _: usize) -> *mut u8 {
            panic!("the zeroing allocator must never call the inner realloc")
        }
    }

    fn zeroing() -> Zeroing<Inspecting> {
        with_room(0)
    }

    fn with_room(room: usize) -> Zeroing<Inspecting> {
        Zeroing::new(Inspecting {
            freed: Mutex::new(Vec::new()),
            room,
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
    fn a_block_shrunk_by_less_than_half_stays_and_its_tail_is_cleared() {
        let a = zeroing();
        let (p, layout) = filled(&a, b"0123456789abcdef");
        let q = unsafe { a.realloc(p, layout, 12) };
        assert_eq!(q, p);
        assert_eq!(
            unsafe { std::slice::from_raw_parts(q, 16) },
            b"0123456789ab\0\0\0\0"
        );
        assert!(a.inner.freed.lock().unwrap().is_empty());
        unsafe { a.dealloc(q, Layout::from_size_align(12, 8).unwrap()) };
        assert_eq!(a.inner.freed.lock().unwrap().as_slice(), &[vec![0u8; 12]]);
    }

    #[test]
    fn a_block_grows_in_place_into_room_it_has_and_moves_past_it() {
        let a = with_room(32);
        let (p, layout) = filled(&a, b"secret!!");
        let q = unsafe { a.realloc(p, layout, 40) };
        assert_eq!(q, p, "40 bytes fit in 8 + 32");
        assert_eq!(unsafe { std::slice::from_raw_parts(q, 8) }, b"secret!!");
        let grown = Layout::from_size_align(40, 8).unwrap();
        let r = unsafe { a.realloc(q, grown, 100) };
        assert_ne!(r, q, "100 bytes do not fit in 40 + 32");
        assert_eq!(unsafe { std::slice::from_raw_parts(r, 8) }, b"secret!!");
        assert_eq!(a.inner.freed.lock().unwrap().as_slice(), &[vec![0u8; 40]]);
        unsafe { a.dealloc(r, Layout::from_size_align(100, 8).unwrap()) };
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
