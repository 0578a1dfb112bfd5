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
    let Ok(wanted) = std::fs::canonicalize(mountpoint) else {
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

fn read_status(mountpoint: &Path) -> Result<Vec<u8>, String> {
    let path = CString::new(mountpoint.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let name = CString::new(STATUS_XATTR).map_err(|e| e.to_string())?;
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
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => "a FUSE mount, but not secretfs".into(),
            _ => e.to_string(),
        });
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

/// Prints the status of the mount at `mountpoint`. Exits 0 when healthy,
/// 1 when the mount answers but the store does not (cached secrets are still
/// served: not a reason to restart) or its audit log cannot record, 2 when
/// no live secretfs mount is there.
pub fn run(mountpoint: &Path) -> ExitCode {
    let not_mounted = |reason: String| {
        println!(
            "{}",
            serde_json::json!({"healthy": false, "mounted": false, "error": reason})
        );
        ExitCode::from(EXIT_NOT_MOUNTED)
    };
    if !is_fuse_mount(mountpoint) {
        return not_mounted(format!("no secretfs mount at {}", mountpoint.display()));
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
        Ok(Err(e)) => not_mounted(format!("the mount did not answer: {e}")),
        Ok(Ok(bytes)) => {
            let healthy = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("healthy").and_then(|h| h.as_bool()))
                .unwrap_or(false);
            println!("{}", String::from_utf8_lossy(&bytes));
            if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_STORE_DOWN)
            }
        }
    }
}
