//! Signals as bytes on a pipe (the self-pipe trick), so that one loop
//! waits for signals, the child's exit and the watcher's news at once.
//!
//! Each byte is a signal number, with [`FROM_KERNEL`] set when the kernel
//! sent it rather than a process (`kill`): a terminal's Ctrl-C, Ctrl-\ or
//! window change goes to the whole foreground process group, the command
//! included, and must not be passed on a second time. Byte 0 is the
//! watcher's "the environment changed".

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// Set in a byte when the kernel sent the signal (`si_code == SI_KERNEL`).
pub const FROM_KERNEL: u8 = 0x80;

/// The byte the watcher writes when the environment changed.
pub const CHANGED: u8 = 0;

/// The pipe's write end, for the handler (which can reach no other state).
static WRITE_END: AtomicI32 = AtomicI32::new(-1);

/// `SI_KERNEL` from `<asm-generic/siginfo.h>` (libc does not export it).
const SI_KERNEL: libc::c_int = 0x80;

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: only async-signal-safe calls (errno access, write) on a
    // valid fd or -1; `info` is the kernel's siginfo for this delivery.
    unsafe {
        let errno = *libc::__errno_location();
        let from_kernel = !info.is_null() && (*info).si_code == SI_KERNEL;
        let byte = (sig as u8 & 0x7f) | if from_kernel { FROM_KERNEL } else { 0 };
        let fd = WRITE_END.load(Ordering::Relaxed);
        if fd >= 0 {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
        *libc::__errno_location() = errno;
    }
}

/// The read end of the signal pipe.
pub struct SignalPipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// Something that can wake the supervisor from another thread.
#[derive(Clone, Copy)]
pub struct Waker(RawFd);

impl Waker {
    /// Wakes the supervisor with [`CHANGED`].
    pub fn wake(&self) {
        // SAFETY: write of one byte from a local; the fd lives as long as
        // the process (the pipe is never closed while the supervisor runs).
        unsafe {
            libc::write(self.0, (&CHANGED as *const u8).cast(), 1);
        }
    }
}

impl SignalPipe {
    /// Makes the pipe and routes `signals` to it (and SIGCHLD). Once per
    /// process.
    pub fn install(signals: &[libc::c_int]) -> io::Result<SignalPipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        WRITE_END.store(write.as_raw_fd(), Ordering::SeqCst);
        for &sig in signals.iter().chain(&[libc::SIGCHLD]) {
            // SAFETY: a zeroed sigaction with our handler and SA_SIGINFO;
            // SA_RESTART so that no other thread's call fails with EINTR.
            let failed = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut()) != 0
            };
            if failed {
                return Err(io::Error::last_os_error());
            }
        }
        unblock(signals);
        Ok(SignalPipe { read, write })
    }

    /// A waker for other threads.
    pub fn waker(&self) -> Waker {
        Waker(self.write.as_raw_fd())
    }

    /// Waits up to `timeout` for bytes; returns those that came (maybe none).
    pub fn wait(&self, timeout: Duration) -> Vec<u8> {
        let mut poll = libc::pollfd {
            fd: self.read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut poll, 1, ms) };
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: read into a local buffer of its length.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        out
    }
}

/// Unblocks `signals` (a parent may have left them blocked, and the mask
/// is inherited across exec).
fn unblock(signals: &[libc::c_int]) {
    // SAFETY: signal-set calls on a local set, then pthread_sigmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}
