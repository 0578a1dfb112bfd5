//! The audit log's file: opened for appending without following a
//! symbolic link, and only when it is a regular file of the daemon's user
//! that group and others can neither read nor write (created `0600`).
//! Records are appended whole or not at all: a write that fails part-way
//! (a full disk) is cut back to where it began.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Group and others may do neither of these to the log.
const GROUP_OTHERS_READ_WRITE: u32 = 0o066;

/// An open audit log file.
pub struct LogFile {
    file: File,
    /// A write failed part-way and could not be cut back: the next record
    /// starts on a line of its own.
    torn: bool,
}

impl LogFile {
    /// Opens (creating, mode 0600) the file at `path` for appending. Refuses
    /// a symbolic link, anything but a regular file, a file owned by
    /// another user, and one group or others can read or write: the error
    /// says which, and how to fix it.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            // O_NONBLOCK: a FIFO planted at the path must not hang the
            // open (the file is refused below); no effect on a regular file.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => refused(
                    "is a symbolic link, which secretfs does not follow: give the path of the file itself"
                        .to_string(),
                ),
                _ => e,
            })?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(refused("is not a regular file".to_string()));
        }
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        let mode = meta.mode() & 0o7777;
        if meta.uid() != me {
            return Err(refused(format!(
                "is owned by uid {} (mode {mode:04o}), not by uid {me} that secretfs runs as, \
                 so another user could read or forge its records; \
                 fix: `chown {me} {shown} && chmod 600 {shown}`, or remove it and secretfs creates it",
                meta.uid(),
                shown = path.display(),
            )));
        }
        if mode & GROUP_OTHERS_READ_WRITE != 0 {
            return Err(refused(format!(
                "has mode {mode:04o}: group or others can read or write it, \
                 and so read or forge its records; fix: `chmod 600 {}`",
                path.display()
            )));
        }
        Ok(LogFile { file, torn: false })
    }

    /// `file` as it is, unchecked (tests write to `/dev/full`).
    #[cfg(test)]
    pub(super) fn unchecked(file: File) -> LogFile {
        LogFile { file, torn: false }
    }

    /// Appends `bytes` (whole lines) in as few writes as the kernel takes.
    /// When a write fails, what was written of `bytes` is cut off again,
    /// so that no line is left half-written.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.torn {
            // What is left of a cut line ends here, on a line of its own.
            self.write_whole(b"\n")?;
            self.torn = false;
        }
        self.write_whole(bytes)
    }

    fn write_whole(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut written = 0;
        while written < bytes.len() {
            match self.file.write(&bytes[written..]) {
                Ok(0) => {
                    self.cut_back(written);
                    return Err(io::Error::from(io::ErrorKind::WriteZero));
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.cut_back(written);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Removes the last `written` bytes, which are ours (the file is
    /// opened for appending).
    fn cut_back(&mut self, written: usize) {
        if written == 0 {
            return;
        }
        let cut = self.file.metadata().and_then(|meta| {
            let len = meta.len().saturating_sub(written as u64);
            self.file.set_len(len)
        });
        if let Err(e) = cut {
            tracing::error!(error = %e, written, "cannot cut a half-written audit record off the log");
            self.torn = true;
        }
    }
}

fn refused(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_file_is_created_0600_and_an_open_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = LogFile::open(&path).unwrap();
        log.append(b"{}\n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = LogFile::open(&path).err().unwrap().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");

        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = LogFile::open(&link).err().unwrap().to_string();
        assert!(e.contains("symbolic link"), "{e}");

        let e = LogFile::open(dir.path()).err().unwrap();
        assert!(e.raw_os_error().is_some() || e.to_string().contains("regular"));
    }
}
