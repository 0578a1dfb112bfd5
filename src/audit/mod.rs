//! The audit log: one JSON line per open of a key file and per change
//! (time, operation, path, uid, gid, process id, thread id, process name,
//! outcome), never the value.
//!
//! An operation is answered only once its record is written: the request
//! thread formats the line (looking the caller's process up in `/proc`
//! while the caller still waits) and writes it, together with the lines
//! other requests are waiting with (`writer`: group commit). A record
//! that cannot be written fails its operation (`EIO`), and the log's
//! [`AuditLog::status`] says why. The file (`file`) is refused
//! unless it is the daemon user's and private, and is opened again on
//! [`AuditLog::reopen`] (SIGHUP, after a rotation). With `--audit-syslog`
//! each line also goes to syslog (facility `LOG_AUTHPRIV`, ident
//! `secretfs`).

mod file;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use file::LogFile;
use writer::Writer;

/// The operations an audit record names, each with its `op` value.
macro_rules! ops {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// An operation the audit log records.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Op {
            $($(#[$doc])* $variant,)*
        }

        impl Op {
            /// Every operation recorded.
            pub const ALL: &'static [Op] = &[$(Op::$variant,)*];

            /// Its `op` value in a record.
            pub fn name(self) -> &'static str {
                match self {
                    $(Op::$variant => $name,)*
                }
            }
        }
    };
}

ops! {
    /// An open of a file for reading.
    OpenRead = "open-read",
    /// An open of a file for writing.
    OpenWrite = "open-write",
    /// A file created.
    Create = "create",
    /// A written file committed when it is closed.
    Flush = "flush",
    /// A written file committed by fsync.
    Fsync = "fsync",
    /// A truncation or a change of owner.
    Setattr = "setattr",
    /// A file removed.
    Unlink = "unlink",
    /// A file renamed.
    Rename = "rename",
    /// A directory made.
    Mkdir = "mkdir",
    /// A directory removed.
    Rmdir = "rmdir",
    /// A custom metadata entry set (`user.secretfs.meta.*`), or the
    /// description (`user.secretfs.description`).
    Setxattr = "setxattr",
    /// A custom metadata entry, or the description, removed.
    Removexattr = "removexattr",
}

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
    /// What was done.
    pub op: Op,
    /// The path inside the mount.
    pub path: String,
    /// A rename's new path.
    pub new_path: Option<String>,
    /// Who asked.
    pub caller: Caller,
    /// How it ended.
    pub outcome: Outcome,
    /// The caller's process, when already looked up ([`Process::of`]);
    /// else it is looked up when the record is made.
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
        let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim_start_matches('\t').to_string())
        };
        let tgid = field("Tgid:").and_then(|v| v.trim().parse::<u32>().ok());
        let comm = match tgid {
            // The thread is the process's first: its name is the process's.
            Some(tgid) if tgid == tid => field("Name:"),
            _ => std::fs::read_to_string(format!("/proc/{}/comm", tgid.unwrap_or(tid)))
                .ok()
                .map(|c| c.trim_end_matches('\n').to_string()),
        };
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

/// An append-only audit log. Clones share it.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Writer>,
}

impl AuditLog {
    /// Opens (creating, mode 0600) the log at `path` for appending; with
    /// `syslog`, records also go to syslog. An existing file is refused
    /// unless it is a regular file of this process's user that group and
    /// others can neither read nor write; a symbolic link is not followed.
    pub fn open(path: &Path, syslog: bool) -> std::io::Result<Self> {
        let file = LogFile::open(path)?;
        if syslog {
            // SAFETY: the ident is a 'static C string, as openlog keeps
            // the pointer.
            unsafe { libc::openlog(c"secretfs".as_ptr(), libc::LOG_PID, libc::LOG_AUTHPRIV) };
        }
        Ok(AuditLog {
            inner: Arc::new(Writer::new(path.to_path_buf(), file, syslog)),
        })
    }

    /// Records one access or change, and returns once the record is
    /// written; [`Error::AuditFailed`] when it could not be (the operation
    /// must then fail).
    pub fn record(&self, record: Record) -> Result<()> {
        let mut text = line(&record);
        text.push('\n');
        self.inner.write(&text).map_err(Error::AuditFailed)
    }

    /// An error while the log cannot record: after a write failed (or a
    /// reopen refused the file), until a write works again.
    pub fn ready(&self) -> Result<()> {
        match self.inner.failing() {
            None => Ok(()),
            Some((reason, _)) => Err(Error::AuditFailed(reason)),
        }
    }

    /// Opens the file at the log's path again (after logrotate moved or
    /// removed it), with the checks [`AuditLog::open`] makes; a file that
    /// fails them is not written to (records fail) until a later reopen
    /// works.
    pub fn reopen(&self) {
        self.inner.reopen();
    }

    /// Waits (at most `within`) until no record waits to be written.
    pub fn flush(&self, within: Duration) -> bool {
        self.inner.settle(within)
    }

    /// The log's part of `secretfs status`: its path, whether it records,
    /// why not and since when, and how many records could not be written.
    pub fn status(&self) -> serde_json::Value {
        let failing = self.inner.failing();
        serde_json::json!({
            "log": self.inner.path().display().to_string(),
            "recording": failing.is_none(),
            "error": failing.as_ref().map(|(reason, _)| reason.clone()),
            "failing_since": failing
                .as_ref()
                .map(|(_, since)| humantime::format_rfc3339_seconds(*since).to_string()),
            "unwritten_records": self.inner.unwritten(),
        })
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
    obj.insert("op".into(), r.op.name().into());
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

    fn record(op: Op, outcome: Outcome) -> Record {
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
        let mut here = record(Op::Rmdir, Outcome::Ok);
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
            ..record(Op::Unlink, Outcome::Ok)
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
            ..record(Op::Flush, Outcome::Ok)
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
            Op::Unlink,
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
            Op::OpenRead,
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
            serde_json::from_str(&line(&record(Op::Unlink, Outcome::Ok))).unwrap();
        assert!(plain.get("exe").is_none());
    }

    #[test]
    fn a_record_is_in_the_file_when_record_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, false).unwrap();
        log.record(record(Op::Create, Outcome::Ok)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        // Many threads at once (sharing writes): every record whose call
        // has returned is in the file (others may be being written).
        let returned = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (log, path, returned) = (log.clone(), path.clone(), returned.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        log.record(record(Op::Flush, Outcome::Ok)).unwrap();
                        returned.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let at_least = returned.load(std::sync::atomic::Ordering::SeqCst);
                        let text = std::fs::read_to_string(&path).unwrap();
                        assert!(text.matches('\n').count() >= at_least);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 801);
        for l in text.lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
    }

    #[test]
    fn every_op_has_a_distinct_name() {
        let names: std::collections::BTreeSet<_> = Op::ALL.iter().map(|op| op.name()).collect();
        assert_eq!(names.len(), Op::ALL.len());
    }
}
