//! The audit log: one JSON line per open of a key file and per change
//! (time, operation, path, uid, gid, process id, thread id, process name,
//! outcome), never the value.
//!
//! Request threads only capture what the request says (who, what, when,
//! how it ended) and hand it to a channel; one writer thread resolves the
//! process (thread group id and name, from `/proc`), formats the line and
//! writes it through a buffer, flushed whenever the channel runs dry and
//! at least every [`FLUSH_EVERY`], and again when the log is dropped or
//! [`AuditLog::flush`] is called. With `--audit-syslog` each line also goes
//! to syslog (facility `LOG_AUTHPRIV`, ident `secretfs`).

use std::ffi::CString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The longest a written record stays in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Records waiting for the writer; past this, request threads wait for it
/// (a record is never dropped).
const QUEUE: usize = 65_536;

/// Who made a request, as the request says it: the FUSE header's pid is
/// the calling thread's id.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// The calling thread's id (FUSE's "pid").
    pub tid: u32,
}

/// How a recorded operation ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed with `errno`; `reason` is the error's text (never a value).
    Failed {
        /// The errno returned to the caller.
        errno: i32,
        /// Why, as logged.
        reason: String,
    },
}

/// One thing to record.
#[derive(Debug, Clone)]
pub struct Record {
    /// When the request was made.
    pub time: SystemTime,
    /// `open-read`, `open-write`, `create`, `flush`, `unlink`, …
    pub op: &'static str,
    /// The path inside the mount.
    pub path: String,
    /// A rename's new path.
    pub new_path: Option<String>,
    /// Who asked.
    pub caller: Caller,
    /// How it ended.
    pub outcome: Outcome,
    /// The caller's process, when already looked up ([`Process::of`]);
    /// else the writer looks it up.
    pub process: Option<Process>,
}

/// The process behind a thread, as far as `/proc` knows it.
#[derive(Debug, Clone, Default)]
pub struct Process {
    /// Thread group id.
    pub tgid: Option<u32>,
    /// Process name.
    pub comm: Option<String>,
    /// The executable, when it was looked up (a refusal by `--allow`
    /// rules records it).
    pub exe: Option<String>,
}

impl Process {
    /// Looks up the process of thread `tid` in `/proc`: its thread group
    /// id and name. A process that has exited gives neither.
    pub fn of(tid: u32) -> Process {
        let tgid = std::fs::read_to_string(format!("/proc/{tid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Tgid:"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
            });
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", tgid.unwrap_or(tid)))
            .ok()
            .map(|c| c.trim_end_matches('\n').to_string());
        Process {
            tgid,
            comm,
            exe: None,
        }
    }

    /// [`Process::of`] with the executable (`/proc/TID/exe`) too.
    pub fn with_exe(tid: u32) -> Process {
        Process {
            exe: std::fs::read_link(format!("/proc/{tid}/exe"))
                .ok()
                .map(|p| p.display().to_string()),
            ..Process::of(tid)
        }
    }
}

enum Message {
    Record(Box<Record>),
    /// Flush, then answer.
    Flush(std::sync::mpsc::Sender<()>),
}

/// Where records go.
struct Sinks {
    file: BufWriter<File>,
    syslog: bool,
}

struct Inner {
    tx: Option<SyncSender<Message>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has written (and
        // flushed) everything sent before.
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the audit writer thread panicked");
            }
        }
    }
}

/// An append-only audit log, written by its own thread. Clones share the
/// writer; the last one dropped flushes and joins it.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl AuditLog {
    /// Opens (creating, mode 0600) the log at `path` for appending and
    /// starts its writer; with `syslog`, records also go to syslog.
    pub fn open(path: &Path, syslog: bool) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        if syslog {
            // SAFETY: the ident is a 'static C string, as openlog keeps
            // the pointer.
            unsafe { libc::openlog(c"secretfs".as_ptr(), libc::LOG_PID, libc::LOG_AUTHPRIV) };
        }
        let sinks = Sinks {
            file: BufWriter::with_capacity(64 * 1024, file),
            syslog,
        };
        let (tx, rx) = sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("secretfs-audit".into())
            .spawn(move || write_all(&rx, sinks))?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                tx: Some(tx),
                writer: Some(writer),
            }),
        })
    }

    /// Records one access or change. Never fails the request: a failure
    /// to write is logged by the writer.
    pub fn record(&self, record: Record) {
        if let Some(tx) = &self.inner.tx {
            if tx.send(Message::Record(Box::new(record))).is_err() {
                tracing::error!("the audit writer is gone: a record was lost");
            }
        }
    }

    /// Waits (at most `within`) until everything recorded so far is written
    /// and flushed.
    pub fn flush(&self, within: Duration) -> bool {
        let (ack, done) = std::sync::mpsc::channel();
        let Some(tx) = &self.inner.tx else {
            return false;
        };
        tx.send(Message::Flush(ack)).is_ok() && done.recv_timeout(within).is_ok()
    }
}

/// The writer thread: until the channel closes.
fn write_all(rx: &Receiver<Message>, mut sinks: Sinks) {
    let mut last_flush = Instant::now();
    let mut dirty = false;
    loop {
        let message = if dirty {
            match rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            // Everything is flushed: wait for the next record.
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            }
        };
        match message {
            Some(Message::Record(record)) => {
                sinks.write(&line(&record));
                dirty = true;
                if last_flush.elapsed() >= FLUSH_EVERY {
                    sinks.flush();
                    dirty = false;
                    last_flush = Instant::now();
                }
            }
            Some(Message::Flush(ack)) => {
                sinks.flush();
                dirty = false;
                last_flush = Instant::now();
                let _ = ack.send(());
            }
            // The channel ran dry.
            None => {
                sinks.flush();
                dirty = false;
                last_flush = Instant::now();
            }
        }
    }
    sinks.flush();
}

impl Sinks {
    fn write(&mut self, line: &str) {
        if let Err(e) = writeln!(self.file, "{line}") {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        if self.syslog {
            // JSON text holds no NUL (serde_json escapes it).
            if let Ok(text) = CString::new(line) {
                // SAFETY: a constant format and a NUL-terminated argument.
                unsafe {
                    libc::syslog(
                        libc::LOG_AUTHPRIV | libc::LOG_NOTICE,
                        c"%s".as_ptr(),
                        text.as_ptr(),
                    )
                };
            }
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.file.flush() {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

/// The name of an errno, as `errno(3)` spells it.
fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENODATA => "ENODATA",
        libc::EILSEQ => "EILSEQ",
        libc::ESTALE => "ESTALE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// One record as a JSON line. `pid` is the thread group id (the thread id
/// when the process is gone); `tid` is there when it differs.
fn line(r: &Record) -> String {
    let Process { tgid, comm, exe } = r
        .process
        .clone()
        .unwrap_or_else(|| Process::of(r.caller.tid));
    let pid = tgid.unwrap_or(r.caller.tid);
    let mut obj = serde_json::Map::new();
    let time = humantime::format_rfc3339_micros(r.time).to_string();
    obj.insert("time".into(), time.into());
    obj.insert("op".into(), r.op.into());
    obj.insert("path".into(), r.path.clone().into());
    if let Some(new_path) = &r.new_path {
        obj.insert("new_path".into(), new_path.clone().into());
    }
    obj.insert("uid".into(), r.caller.uid.into());
    obj.insert("gid".into(), r.caller.gid.into());
    obj.insert("pid".into(), pid.into());
    if pid != r.caller.tid {
        obj.insert("tid".into(), r.caller.tid.into());
    }
    obj.insert(
        "comm".into(),
        comm.map_or(serde_json::Value::Null, Into::into),
    );
    if let Some(exe) = exe {
        obj.insert("exe".into(), exe.into());
    }
    match &r.outcome {
        Outcome::Ok => {
            obj.insert("outcome".into(), "ok".into());
        }
        Outcome::Failed { errno, reason } => {
            obj.insert("outcome".into(), errno_name(*errno).into());
            obj.insert("errno".into(), (*errno).into());
            obj.insert("error".into(), reason.clone().into());
        }
    }
    serde_json::Value::Object(obj).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Caller {
        // SAFETY: plain syscalls without arguments.
        let tid = unsafe { libc::gettid() };
        Caller {
            uid: 7,
            gid: 8,
            tid: u32::try_from(tid).unwrap(),
        }
    }

    fn record(op: &'static str, outcome: Outcome) -> Record {
        Record {
            time: SystemTime::now(),
            op,
            path: "/app/db/KEY".into(),
            new_path: None,
            caller: me(),
            outcome,
            process: None,
        }
    }

    #[test]
    fn a_line_names_the_process_and_keeps_what_is_known_of_a_gone_one() {
        let mut here = record("rmdir", Outcome::Ok);
        // The main thread: its id is the process id.
        here.caller.tid = std::process::id();
        let v: serde_json::Value = serde_json::from_str(&line(&here)).unwrap();
        assert_eq!(v["pid"], std::process::id());
        assert!(v["comm"].is_string());
        assert!(v.get("tid").is_none(), "the main thread's id is the pid");

        // A caller that is gone: its id stands as the pid, no name. (An id
        // above pid_max: a thread just joined may linger in /proc a moment.)
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4_194_304);
        let caller = Caller {
            tid: pid_max + 1,
            ..me()
        };
        let gone = Record {
            caller,
            ..record("unlink", Outcome::Ok)
        };
        let v: serde_json::Value = serde_json::from_str(&line(&gone)).unwrap();
        assert_eq!(v["op"], "unlink");
        assert_eq!((v["uid"].clone(), v["gid"].clone()), (7.into(), 8.into()));
        assert_eq!(v["pid"], caller.tid);
        assert_eq!(v["comm"], serde_json::Value::Null);
        assert_eq!(v["outcome"], "ok");
    }

    #[test]
    fn a_thread_of_a_process_is_recorded_with_both_ids() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(me()).unwrap();
            let _ = done.recv();
        });
        let caller = rx.recv().unwrap();
        let r = Record {
            caller,
            ..record("flush", Outcome::Ok)
        };
        let v: serde_json::Value = serde_json::from_str(&line(&r)).unwrap();
        drop(done_tx);
        t.join().unwrap();
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["tid"], caller.tid);
    }

    #[test]
    fn a_failure_carries_its_errno_and_reason() {
        let r = record(
            "unlink",
            Outcome::Failed {
                errno: libc::EROFS,
                reason: "read-only file system".into(),
            },
        );
        let v: serde_json::Value = serde_json::from_str(&line(&r)).unwrap();
        assert_eq!(v["outcome"], "EROFS");
        assert_eq!(v["errno"], libc::EROFS);
        assert_eq!(v["error"], "read-only file system");
    }

    #[test]
    fn a_refusal_names_the_executable_when_it_was_looked_up() {
        let mut r = record(
            "open-read",
            Outcome::Failed {
                errno: libc::EACCES,
                reason: "not allowed by the --allow rules: x".into(),
            },
        );
        r.process = Some(Process::with_exe(r.caller.tid));
        let v: serde_json::Value = serde_json::from_str(&line(&r)).unwrap();
        assert_eq!(v["outcome"], "EACCES");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(v["exe"], exe.display().to_string());
        let plain: serde_json::Value =
            serde_json::from_str(&line(&record("unlink", Outcome::Ok))).unwrap();
        assert!(plain.get("exe").is_none());
    }

    #[test]
    fn records_reach_the_file_when_flushed_and_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, false).unwrap();
        log.record(record("create", Outcome::Ok));
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        for _ in 0..1000 {
            log.record(record("flush", Outcome::Ok));
        }
        drop(log);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count(),
            1001
        );
    }
}
