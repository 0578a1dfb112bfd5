//! Why `secretfs mount` could not start (or stop) cleanly. Each error's
//! `Display` is the one line printed after `secretfs: ` on stderr, and
//! passed by a background daemon to the process waiting for it.

use std::path::PathBuf;
use std::time::Duration;

/// What failed before the filesystem was serving, or while unmounting it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `--mlock`: the memory could not be locked.
    #[error("--mlock: mlockall failed: {0} (needs CAP_IPC_LOCK or a higher RLIMIT_MEMLOCK)")]
    MemoryLock(std::io::Error),
    /// The mountpoint is missing, no directory, or unreadable.
    #[error("mountpoint {}: {reason}", path.display())]
    Mountpoint {
        /// The mountpoint.
        path: PathBuf,
        /// Why it cannot be used.
        reason: std::io::Error,
    },
    /// A dead FUSE mount is left on the mountpoint and could not be detached.
    #[error(
        "mountpoint {}: {reason}; `fusermount3 -uz {}` could not detach it",
        path.display(),
        path.display()
    )]
    DeadMount {
        /// The mountpoint.
        path: PathBuf,
        /// What using it says (ENOTCONN).
        reason: std::io::Error,
    },
    /// The mountpoint holds files.
    #[error("mountpoint {} is not empty", path.display())]
    MountpointNotEmpty {
        /// The mountpoint.
        path: PathBuf,
    },
    /// A live secretfs already serves the mountpoint.
    #[error("{} is already mounted {}", path.display(), match pid {
        Some(pid) => format!("by secretfs (pid {pid})"),
        None => "(by secretfs)".to_string(),
    })]
    AlreadyMounted {
        /// The mountpoint.
        path: PathBuf,
        /// The daemon serving it, when its status says.
        pid: Option<u32>,
    },
    /// The Vault options cannot be used: they do not fit together, find no
    /// token, name files that cannot be read, or SOURCE names no KV mount.
    #[error("{0}")]
    Options(String),
    /// The store could not be reached, refused us, or has no KV engine at
    /// SOURCE: the store's own one-line sentence.
    #[error("{0}")]
    Store(String),
    /// The store did not answer (no node could be reached, or each timed
    /// out, was sealed or had no leader): one line per node. Waiting may
    /// help, unlike [`StartError::Store`].
    #[error("{0}")]
    StoreUnreachable(String),
    /// The runtime that talks to the store could not start.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    /// `--metrics`: the address could not be bound.
    #[error("metrics address {addr}: {reason}")]
    Metrics {
        /// The address given.
        addr: String,
        /// Why it cannot be bound.
        reason: std::io::Error,
    },
    /// `--audit-log`: the file could not be opened.
    #[error("audit log {}: {reason}", path.display())]
    Audit {
        /// The audit log.
        path: PathBuf,
        /// Why it cannot be opened.
        reason: std::io::Error,
    },
    /// This process cannot mount: no access to /dev/fuse, or allow_other
    /// not allowed to it. The cause and the fix.
    #[error("{0}")]
    Fuse(String),
    /// The kernel (or fusermount3) refused the mount.
    #[error("cannot mount on {}: {}{hint}", path.display(), one_line(reason))]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// What the mount said.
        reason: std::io::Error,
        /// What to do about it, when known ("; ..."), or empty.
        hint: String,
    },
    /// Unmounting failed, and so did detaching lazily.
    #[error("unmount of {} failed: {reason}", path.display())]
    Unmount {
        /// The mountpoint.
        path: PathBuf,
        /// What the unmount said.
        reason: std::io::Error,
    },
    /// Mount-helper form: this program could not find itself to start the
    /// background daemon.
    #[error("cannot find own executable: {0}")]
    OwnExecutable(std::io::Error),
    /// Mount-helper form: no pipe to hear the daemon's readiness on.
    #[error("pipe: {0}")]
    ReadinessPipe(std::io::Error),
    /// `--log-file` could not be opened for the background daemon.
    #[error("log file {}: {reason}", path.display())]
    LogFile {
        /// The log file.
        path: PathBuf,
        /// Why it cannot be opened.
        reason: std::io::Error,
    },
    /// Mount-helper form: the background daemon could not be started.
    #[error("cannot start the daemon: {0}")]
    DaemonSpawn(std::io::Error),
    /// Mount-helper form: the daemon exited without saying why (a crash):
    /// its exit status, and where to see more.
    #[error(
        "the daemon exited ({0}) before the filesystem was ready, without saying why; \
         run the same command with -f to see its output, or give --log-file PATH"
    )]
    DaemonExited(String),
    /// Mount-helper form: the daemon's own one-line reason for failing.
    #[error("{0}")]
    DaemonFailed(String),
    /// Mount-helper form: the daemon said nothing within the deadline.
    #[error("the filesystem was not ready within {}", humantime::format_duration(*.0))]
    NotReady(Duration),
}

/// `error` on one line: fusermount3's stderr, which fuser passes on as
/// the reason, ends with a newline and may hold several lines.
fn one_line(error: &std::io::Error) -> String {
    let text = error.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_path_and_the_reason() {
        let enoent = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let path = PathBuf::from("/mnt/x");
        assert_eq!(
            StartError::Mountpoint {
                path: path.clone(),
                reason: enoent()
            }
            .to_string(),
            "mountpoint /mnt/x: No such file or directory (os error 2)"
        );
        assert_eq!(
            StartError::DeadMount {
                path: path.clone(),
                reason: std::io::Error::from_raw_os_error(libc::ENOTCONN)
            }
            .to_string(),
            "mountpoint /mnt/x: Transport endpoint is not connected (os error 107); \
             `fusermount3 -uz /mnt/x` could not detach it"
        );
        assert_eq!(
            StartError::MountpointNotEmpty { path: path.clone() }.to_string(),
            "mountpoint /mnt/x is not empty"
        );
        assert_eq!(
            StartError::AlreadyMounted {
                path: path.clone(),
                pid: Some(42)
            }
            .to_string(),
            "/mnt/x is already mounted by secretfs (pid 42)"
        );
        assert_eq!(
            StartError::AlreadyMounted {
                path: path.clone(),
                pid: None
            }
            .to_string(),
            "/mnt/x is already mounted (by secretfs)"
        );
        assert_eq!(
            StartError::Mount {
                path: path.clone(),
                reason: std::io::Error::other(
                    "fusermount3: mount failed: Operation not permitted\n"
                ),
                hint: "; more".into()
            }
            .to_string(),
            "cannot mount on /mnt/x: fusermount3: mount failed: Operation not permitted; more"
        );
        assert_eq!(
            StartError::DaemonExited("exit status: 101".into()).to_string(),
            "the daemon exited (exit status: 101) before the filesystem was ready, without \
             saying why; run the same command with -f to see its output, or give --log-file PATH"
        );
        assert_eq!(
            StartError::NotReady(Duration::from_secs(25)).to_string(),
            "the filesystem was not ready within 25s"
        );
        assert_eq!(
            StartError::Store("no secrets engine is mounted at x/".into()).to_string(),
            "no secrets engine is mounted at x/"
        );
    }
}
