//! Whether this process can mount at all, asked before anything else is
//! done, so that a user who cannot gets the reason and the fix rather
//! than "Permission denied" after connecting to the store.
//!
//! What is true on Debian with fuse3: `/dev/fuse` is mode 0666 (a udev
//! rule), root mounts with mount(2), other users through the setuid-root
//! `fusermount3`, which opens `/dev/fuse` as the user and allows
//! `allow_other` only when `/etc/fuse.conf` says `user_allow_other`.

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The FUSE device.
const DEVICE: &str = "/dev/fuse";
/// fusermount3's configuration.
const FUSE_CONF: &str = "/etc/fuse.conf";

/// Checks that this process may open `/dev/fuse`, and, when it is not
/// root and `allow_other` is wanted (`why` says for what option), that
/// `/etc/fuse.conf` lets it. `Err` is one line: the cause and the fix.
pub fn check(allow_other: Option<&str>) -> Result<(), String> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let device = CString::new(DEVICE).map_err(|e| e.to_string())?;
    // access(2) checks the real uid, as fusermount3 does when it opens
    // the device on a user's behalf.
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::access(device.as_ptr(), libc::R_OK | libc::W_OK) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT) => format!(
                "{DEVICE}: {e}: FUSE is not available here; load the module (`modprobe fuse`), \
                 or start the container with `--device /dev/fuse --cap-add SYS_ADMIN`"
            ),
            _ => format!(
                "{DEVICE}: {e}: uid {uid} may not open it ({}). Run secretfs as root, or let \
                 users mount: {DEVICE} mode 0666 (Debian's default; a udev rule \
                 `KERNEL==\"fuse\", MODE=\"0666\"` keeps it) and {}, and for --allow-other \
                 `user_allow_other` in {FUSE_CONF}",
                describe(Path::new(DEVICE)),
                fusermount_state(),
            ),
        });
    }
    if uid != 0 {
        if let Some(why) = allow_other {
            if !user_allow_other() {
                return Err(format!(
                    "{why} needs `user_allow_other` in {FUSE_CONF} when secretfs runs as \
                     another user than root (uid {uid}): add that line as root, or run \
                     secretfs as root"
                ));
            }
        }
    }
    Ok(())
}

/// What to add to a refused mount's reason: for a user other than root,
/// whether the setuid `fusermount3` it mounts through is missing or not
/// setuid (which fuser reports only as "No such file or directory" or
/// fusermount3's own "Operation not permitted"). Empty when there is
/// nothing to add.
pub fn hint_after_refusal() -> String {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } == 0 {
        return String::new();
    }
    match fusermount() {
        Fusermount::SetuidRoot(_) => String::new(),
        Fusermount::Missing => "; a user other than root mounts through the setuid-root \
            fusermount3, which is missing: `apt-get install fuse3`, or run secretfs as root"
            .to_string(),
        Fusermount::NotSetuid(p) => format!(
            "; a user other than root mounts through the setuid-root fusermount3, but {p} \
             is not setuid root: reinstall fuse3 (or `chmod u+s {p}` as root), or run \
             secretfs as root",
            p = p.display()
        ),
    }
}

/// `mode 0600, owner uid 0` of `path`.
fn describe(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!(
            "mode {:04o}, owner uid {}",
            m.permissions().mode() & 0o7777,
            m.uid()
        ),
        Err(e) => e.to_string(),
    }
}

/// The setuid helper non-root mounts need.
enum Fusermount {
    /// Not found on PATH, /usr/bin or /bin.
    Missing,
    /// There, and setuid root.
    SetuidRoot(std::path::PathBuf),
    /// There, but not setuid root.
    NotSetuid(std::path::PathBuf),
}

impl Fusermount {
    /// In words, for a message.
    fn describe(&self) -> String {
        match self {
            Fusermount::Missing => {
                "fusermount3, which is missing (`apt-get install fuse3`)".to_string()
            }
            Fusermount::SetuidRoot(p) => format!("the setuid-root {} (installed)", p.display()),
            Fusermount::NotSetuid(p) => format!(
                "{} setuid root, which it is not (`chmod u+s` as root, or reinstall fuse3)",
                p.display()
            ),
        }
    }
}

/// Whether the setuid helper non-root mounts need is there, in words.
fn fusermount_state() -> String {
    fusermount().describe()
}

/// Where fusermount3 is, and whether it is setuid root.
fn fusermount() -> Fusermount {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|dir| dir.join("fusermount3"))
        .find(|p| p.is_file());
    match found.and_then(|p| std::fs::metadata(&p).ok().map(|m| (p, m))) {
        None => Fusermount::Missing,
        Some((p, m)) if m.uid() == 0 && m.permissions().mode() & 0o4000 != 0 => {
            Fusermount::SetuidRoot(p)
        }
        Some((p, _)) => Fusermount::NotSetuid(p),
    }
}

/// Whether /etc/fuse.conf has an uncommented `user_allow_other` line.
fn user_allow_other() -> bool {
    std::fs::read_to_string(FUSE_CONF)
        .map(|text| text.lines().any(|l| l.trim() == "user_allow_other"))
        .unwrap_or(false)
}
