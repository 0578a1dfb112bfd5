//! `secretfs status MOUNTPOINT`: asks a running mount how it is, through an
//! extended attribute of its root (a name space no secret can collide with).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::fs::xattr::STATUS_XATTR;

/// How long a probe waits for a hung mount before calling it unhealthy.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// Whether `mountpoint` is a FUSE mount point. (Mounted by root, fuser
/// calls mount(2) with type "fuse" and no subtype, and the source is the
/// SOURCE as given: a mount is known to be ours when it answers the status
/// attribute.)
fn is_fuse_mount(mountpoint: &Path) -> bool {
    let Some(wanted) = resolve_without_entering(mountpoint) else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    table.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let fstype = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|i| fields.get(i + 1));
        fstype.is_some_and(|t| *t == "fuse" || t.starts_with("fuse."))
            && fields.get(4).is_some_and(|mp| Path::new(mp) == wanted)
    })
}

/// `mountpoint` as mountinfo spells it, found without looking into the
/// mount itself: a user the mount does not let in gets EACCES from any
/// `stat` of its root, but may still ask whether something is mounted there.
fn resolve_without_entering(mountpoint: &Path) -> Option<std::path::PathBuf> {
    if let Ok(path) = std::fs::canonicalize(mountpoint) {
        return Some(path);
    }
    let name = mountpoint.file_name()?;
    let parent = match mountpoint.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::canonicalize(parent) {
        Ok(parent) => Some(parent.join(name)),
        // A parent this user may not search either: its spelling, made
        // absolute.
        Err(_) => std::path::absolute(mountpoint).ok(),
    }
}

/// Why the status could not be read.
enum ReadError {
    /// This user may not look into the mount.
    Denied(String),
    /// Anything else: dead, not secretfs, not there.
    Other(String),
}

fn read_status(mountpoint: &Path) -> Result<Vec<u8>, ReadError> {
    read_status_bytes(mountpoint).map_err(|e| match e.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => {
            ReadError::Other("a FUSE mount, but not secretfs".into())
        }
        Some(libc::EACCES) | Some(libc::EPERM) => ReadError::Denied(e.to_string()),
        _ => ReadError::Other(e.to_string()),
    })
}

fn read_status_bytes(mountpoint: &Path) -> std::io::Result<Vec<u8>> {
    let path = CString::new(mountpoint.as_os_str().as_bytes())?;
    let name = CString::new(STATUS_XATTR)?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: valid C strings and a buffer of the size we pass.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// How long [`mounted_by_secretfs`] waits for a mount to answer.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// Whether a live secretfs serves `mountpoint`: `Some(pid)` when its
/// status attribute answers (the pid when the status names it), `None` when
/// no FUSE mount is there, it is not secretfs, it is dead (ENOTCONN) or it
/// does not answer within two seconds.
pub fn mounted_by_secretfs(mountpoint: &Path) -> Option<Option<u32>> {
    if !is_fuse_mount(mountpoint) {
        return None;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let mp = mountpoint.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(read_status(&mp));
    });
    let bytes = rx.recv_timeout(CHECK_DEADLINE).ok()?.ok()?;
    let pid = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("pid").and_then(serde_json::Value::as_u64))
        .and_then(|p| u32::try_from(p).ok());
    Some(pid)
}

/// Exit code when the store is unreachable but the mount answers.
const EXIT_STORE_DOWN: u8 = 1;
/// Exit code when nothing (alive) is mounted there.
const EXIT_NOT_MOUNTED: u8 = 2;
/// Exit code when a FUSE mount is there but this user may not look into
/// it: not a reason to restart it.
const EXIT_CANNOT_LOOK: u8 = 3;

/// How `secretfs status` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object, for programs.
    Json,
    /// A summary line and one `field: value` line each, for people.
    Text,
}

/// Prints the status of the mount at `mountpoint`. Exits 0 when healthy,
/// 1 when the mount answers but the store does not (cached secrets are still
/// served: not a reason to restart) or its audit log cannot record, 2 when
/// no live secretfs mount is there, 3 when a FUSE mount is there that this
/// user may not look into.
pub fn run(mountpoint: &Path, format: Format) -> ExitCode {
    let at = mountpoint.display();
    let not_mounted = |reason: String| {
        let report = serde_json::json!({"healthy": false, "mounted": false, "error": reason});
        print_report(format, &format!("{at}: not mounted: {reason}"), &report);
        ExitCode::from(EXIT_NOT_MOUNTED)
    };
    if !is_fuse_mount(mountpoint) {
        return not_mounted(format!("no secretfs mount at {at}"));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let mp = mountpoint.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(read_status(&mp));
    });
    match rx.recv_timeout(PROBE_DEADLINE) {
        Err(_) => not_mounted(format!(
            "the mount did not answer within {}s",
            PROBE_DEADLINE.as_secs()
        )),
        Ok(Err(ReadError::Other(e))) => not_mounted(format!("the mount did not answer: {e}")),
        Ok(Err(ReadError::Denied(e))) => {
            // SAFETY: getuid cannot fail.
            let uid = unsafe { libc::getuid() };
            let reason = format!(
                "cannot look: a FUSE mount is at {at}, but uid {uid} may not look into it ({e}); \
                 ask as root or as the user who mounted it, or mount with allow_other and a \
                 --dir-mode this user may read"
            );
            let report = serde_json::json!({"healthy": null, "mounted": true, "error": reason});
            print_report(format, &format!("{at}: {reason}"), &report);
            ExitCode::from(EXIT_CANNOT_LOOK)
        }
        Ok(Ok(bytes)) => {
            let report = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
            let healthy = report
                .as_ref()
                .and_then(|v| v.get("healthy").and_then(|h| h.as_bool()))
                .unwrap_or(false);
            match (format, report) {
                (Format::Text, Some(report)) => {
                    let summary = if healthy {
                        format!("{at}: healthy")
                    } else {
                        format!(
                            "{at}: mounted and answering, but not healthy (see last_error, audit)"
                        )
                    };
                    print_report(format, &summary, &report);
                }
                _ => println!("{}", String::from_utf8_lossy(&bytes)),
            }
            if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_STORE_DOWN)
            }
        }
    }
}

/// Prints `report` as JSON, or as `summary` and one line per field.
fn print_report(format: Format, summary: &str, report: &serde_json::Value) {
    match format {
        Format::Json => println!("{report}"),
        Format::Text => print!("{}", text_report(summary, report)),
    }
}

/// The text form: `summary`, then `  field: value` per field of `report`
/// (booleans as yes/no, null as -, objects and lists as compact JSON).
fn text_report(summary: &str, report: &serde_json::Value) -> String {
    use serde_json::Value;
    let mut out = format!("{summary}\n");
    if let Value::Object(fields) = report {
        for (key, value) in fields {
            let shown = match value {
                Value::Bool(true) => "yes".to_string(),
                Value::Bool(false) => "no".to_string(),
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("  {key}: {shown}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_is_a_summary_and_a_line_per_field() {
        let report = serde_json::json!({"healthy": true, "last_error": null, "pid": 42,
            "store_node": "http://a:8200", "audit": {"records": true}});
        assert_eq!(
            text_report("/mnt: healthy", &report),
            "/mnt: healthy\n  audit: {\"records\":true}\n  healthy: yes\n  last_error: -\n  \
             pid: 42\n  store_node: http://a:8200\n"
        );
    }
}
