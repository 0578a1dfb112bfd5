//! The audit log: one JSON line per open of a key file (time, operation,
//! path, uid, pid, process name), never the value.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

/// Who opened a file.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Process id.
    pub pid: u32,
}

/// An append-only audit log file.
pub struct AuditLog {
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating, mode 0600) the log at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(AuditLog {
            file: Mutex::new(file),
        })
    }

    /// Records one access. A failure to record is logged, not fatal.
    pub fn record(&self, op: &str, path: &str, caller: Caller) {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", caller.pid))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_default();
        let time = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        let line = serde_json::json!({
            "time": time,
            "op": op,
            "path": path,
            "uid": caller.uid,
            "pid": caller.pid,
            "comm": comm,
        });
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = writeln!(file, "{line}") {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}
