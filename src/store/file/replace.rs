//! Replacing the store file so that a crash or a full disk leaves the old
//! file or the new one, never a broken one; and the advisory lock that
//! keeps two writers' read-modify-write cycles apart.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The directory of `path` (`.` for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes`: a temporary file in the same directory,
/// written and fsynced, renamed over `path`, then the directory fsynced.
/// The new file keeps the old one's mode (0600 for a new one), and its
/// owner when we may set it.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dir_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let old = std::fs::metadata(path).ok();
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(old) = &old {
            // Best effort: only root may give a file away.
            let _ = std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid()));
            f.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// An exclusive advisory lock (flock) on the store's lock file, held
/// until dropped.
pub struct Lock {
    _file: File,
}

/// The lock file of the store at `path`: `PATH.lock` beside it (the store
/// file itself is replaced by each write, so it cannot carry the lock).
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of the store at `path`, waiting at most `within` for
/// another writer to let go of it. When it does not, the error is
/// [`Error::Locked`]: nothing was written (not a store that stopped
/// answering, nor a write whose outcome is unknown).
pub fn lock(path: &Path, within: Duration) -> Result<Lock> {
    let lock = lock_path(path);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock)
        .map_err(|e| io_error(&format!("lock file {}", lock.display()), &e))?;
    let started = Instant::now();
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Lock { _file: file });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_error(&format!("lock file {}", lock.display()), &e));
        }
        if started.elapsed() >= within {
            return Err(Error::Locked(format!(
                "{} still held after {}",
                lock.display(),
                humantime::format_duration(within)
            )));
        }
        // Another writer holds it for one read-modify-write: milliseconds.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A file system error as the one error type: refusals are the store's
/// refusal, anything else makes the store unavailable.
pub fn io_error(what: &str, e: &std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied(format!("{what}: {e}")),
        Some(libc::EROFS) => Error::ReadOnly,
        _ => Error::Unavailable(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_keeps_its_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.age");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = std::fs::metadata(&path).unwrap().ino();
        replace(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert_ne!(meta.ino(), before, "written in place, not renamed over");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s.age"]);
    }

    #[test]
    fn a_failed_replace_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.age");
        std::fs::write(&path, b"old").unwrap();
        // The rename cannot happen: a directory stands where the file
        // would go... so make the target name a non-empty directory.
        let blocked = dir.path().join("d");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(replace(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: std::collections::BTreeSet<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["d", "s.age"].map(String::from).into());
    }

    #[test]
    fn the_lock_keeps_a_second_taker_out_until_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.age");
        let held = lock(&path, Duration::ZERO).unwrap();
        // flock locks belong to the open file: a second open, as another
        // process would, is kept out.
        assert!(matches!(
            lock(&path, Duration::from_millis(20)),
            Err(Error::Locked(_))
        ));
        drop(held);
        assert!(lock(&path, Duration::ZERO).is_ok());
    }
}
