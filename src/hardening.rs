//! Keeping secret values out of core dumps, swap and other processes.

use crate::start_error::StartError;

/// Refuses core dumps and ptrace by other non-root processes
/// (`PR_SET_DUMPABLE=0`, `RLIMIT_CORE=0`). Always on.
pub fn no_dumps() {
    // SAFETY: plain syscalls with constant arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "PR_SET_DUMPABLE failed");
        }
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::setrlimit(libc::RLIMIT_CORE, &zero) != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "RLIMIT_CORE=0 failed");
        }
    }
}

/// Locks all present and future memory (`mlockall`), so values never reach
/// swap. Needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK.
pub fn lock_memory() -> Result<(), StartError> {
    // SAFETY: plain syscall with constant flags.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        return Err(StartError::MemoryLock(std::io::Error::last_os_error()));
    }
    Ok(())
}
