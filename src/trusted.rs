//! Files the daemon acts on that decide what it does as its own user
//! (often root): `--on-change signal:NAME:PIDFILE`'s pid file (which
//! process gets the signal) and the templates of `templates:DIR` (what a
//! mount shows). Whoever can write such a file chooses for the daemon, so
//! it must be owned by root or the daemon's own user, and writable by
//! nobody else (no group or other write bit). Checked on the opened file
//! (`fstat`), never on a path that may be replaced in between.

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why `meta` (of a file or folder) cannot be trusted; `Ok` when it is
/// owned by root or the daemon's user and no one else can write it.
pub fn check(meta: &Metadata) -> Result<(), String> {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "it is owned by uid {}, not by root or secretfs's own user (uid {me}); \
             chown it to root",
            meta.uid()
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "group or others can write it (mode {mode:04o}); chmod go-w it"
        ));
    }
    Ok(())
}

/// Opens the regular file at `path` for reading without following a
/// symbolic link in its last component and without waiting on a FIFO,
/// and checks the opened file with [`check`].
pub fn open(path: &Path) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => "it is a symbolic link (give the file it points to)".to_string(),
            _ => format!("cannot open it: {e}"),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    check(&meta)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_others_can_write_or_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "1").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open(&file).is_ok());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let why = open(&file).unwrap_err();
        assert!(why.contains("mode 0666"), "{why}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(open(&file).is_err());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let why = open(&link).unwrap_err();
        assert!(why.contains("symbolic link"), "{why}");
        assert!(open(dir.path()).is_err());
    }
}
