//! `secretfs status MOUNTPOINT`: asks a running mount how it is, through an
//! extended attribute of its root (a name space no secret can collide with).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The extended attribute of the mount's root that holds its status (JSON).
pub const STATUS_XATTR: &str = "user.secretfs.status";

/// How long a probe waits for a hung mount before calling it unhealthy.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);

fn is_secretfs_mount(mountpoint: &Path) -> bool {
    let Ok(wanted) = std::fs::canonicalize(mountpoint) else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // Mounted by root, fuser calls mount(2) with type "fuse" (no subtype):
    // our mounts are known by their source, "secretfs:SOURCE".
    table.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let after = fields
            .iter()
            .position(|f| *f == "-")
            .map(|i| &fields[i + 1..]);
        let ours = after.is_some_and(|f| {
            f.first() == Some(&"fuse.secretfs")
                || (f.first() == Some(&"fuse")
                    && f.get(1).is_some_and(|s| s.starts_with("secretfs:")))
        });
        ours && fields.get(4).is_some_and(|mp| Path::new(mp) == wanted)
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
        return Err(std::io::Error::last_os_error().to_string());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Prints the status of the mount at `mountpoint`; success when healthy.
pub fn run(mountpoint: &Path) -> ExitCode {
    let unhealthy = |reason: String| {
        println!(
            "{}",
            serde_json::json!({"healthy": false, "mounted": false, "error": reason})
        );
        ExitCode::FAILURE
    };
    if !is_secretfs_mount(mountpoint) {
        return unhealthy(format!("no secretfs mount at {}", mountpoint.display()));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let mp = mountpoint.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(read_status(&mp));
    });
    match rx.recv_timeout(PROBE_DEADLINE) {
        Err(_) => unhealthy(format!(
            "the mount did not answer within {}s",
            PROBE_DEADLINE.as_secs()
        )),
        Ok(Err(e)) => unhealthy(format!("the mount did not answer: {e}")),
        Ok(Ok(bytes)) => {
            let healthy = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("healthy").and_then(|h| h.as_bool()))
                .unwrap_or(false);
            println!("{}", String::from_utf8_lossy(&bytes));
            if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
