//! `--audit-log` and its file (issue 19 §3), with the real programs:
//!
//! - on a full disk (a 64 KiB tmpfs holding the log) every `cat` that got
//!   the value has a whole record, once the disk is full `cat`s fail
//!   (`EIO`), no line of the log is cut, `secretfs status` says why, and
//!   reads work again once there is room;
//! - SIGHUP reopens the log: after logrotate moved it aside, the next
//!   record is in a new file at the old path, the earlier ones in the
//!   moved file, and the daemon lives on; after a copytruncate, records
//!   go on at the start of the emptied file;
//! - a log file others could read or forge (mode 0666, another owner, a
//!   symbolic link) is refused at start, and on reopen: then records, and
//!   the reads they record, fail until the file is fixed.
//!
//! A record is written before its operation is answered: the tests read
//! the log right after the program returns, without waiting.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, q, run_ok, seeded, sh, status, Mount};

/// A tmpfs of `size` mounted on a directory of its own, unmounted when
/// dropped, also when the test fails (declare it before the mount that
/// writes into it: that is dropped first).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                dir.path().to_str().unwrap(),
            ],
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a daemon still holding the log open must not keep it.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Every line of the log, each of which must be a whole JSON record.
fn records(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the log ends in a cut line: {:?}",
        &text[text.len().saturating_sub(200)..]
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("a cut or broken line: {l:?}: {e}"))
        })
        .collect()
}

/// `cat FILE` by a shell that first prints its pid (`exec`: the same
/// process): the pid and what cat did.
fn cat(file: &Path) -> (u64, Output) {
    let out = sh(&format!("echo $$; exec cat {}", q(file)));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = stdout
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid printed: {out:?}"));
    (pid, out)
}

/// The value `cat` printed, if it succeeded.
fn served(out: &Output) -> Option<String> {
    out.status.success().then(|| {
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_once('\n').map_or("", |(_, v)| v).to_string()
    })
}

/// The read of `path` by process `pid`, recorded as served.
fn has_read(records: &[Value], path: &str, pid: u64) -> bool {
    records.iter().any(|r| {
        r["op"] == json!("open-read")
            && r["path"] == json!(path)
            && r["pid"] == json!(pid)
            && r["outcome"] == json!("ok")
    })
}

fn hup(m: &Mount) {
    let pid = m.pid().expect("the daemon's pid");
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

#[test]
fn on_a_full_disk_reads_fail_and_every_read_served_has_a_whole_record() {
    let bao = seeded();
    let disk = Tmpfs::new("64k");
    // Room to give back at the end.
    let spare = disk.path().join("spare");
    std::fs::write(&spare, vec![b'x'; 16 * 1024]).unwrap();
    let log = disk.path().join("audit.log");
    let m = Mount::new(&bao, "secret/", &["--audit-log", log.to_str().unwrap()]);
    let file = m.at("myapp/db/PASSWORD");

    let mut served_to = Vec::new();
    let mut refused = 0;
    for _ in 0..2000 {
        let (pid, out) = cat(&file);
        match served(&out) {
            Some(value) => {
                assert_eq!(value, "hunter2");
                assert_eq!(refused, 0, "a read served after one was refused");
                served_to.push(pid);
            }
            None => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(stderr.contains("Input/output error"), "{out:?}");
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
        }
    }
    assert_eq!(
        refused,
        20,
        "the disk filled and reads went on being served ({} of them)\n{}",
        served_to.len(),
        m.log()
    );
    assert!(served_to.len() > 100, "only {} reads", served_to.len());

    let all = records(&log);
    for pid in &served_to {
        assert!(
            has_read(&all, "/myapp/db/PASSWORD", *pid),
            "cat {pid} got the value and has no record"
        );
    }

    let (code, report) = status(m.path());
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["healthy"], json!(false), "{report}");
    assert_eq!(report["audit"]["recording"], json!(false), "{report}");
    let why = report["audit"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("No space left on device"), "{report}");
    assert!(why.contains(log.to_str().unwrap()), "{report}");

    // Room again: reads are served and recorded again.
    std::fs::remove_file(&spare).unwrap();
    let (pid, out) = cat(&file);
    assert_eq!(served(&out).as_deref(), Some("hunter2"), "{out:?}");
    assert!(has_read(&records(&log), "/myapp/db/PASSWORD", pid));
    let (code, report) = status(m.path());
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["audit"]["recording"], json!(true), "{report}");
}

#[test]
fn sighup_reopens_the_log_after_it_was_moved_aside() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let m = Mount::new(&bao, "secret/", &["--audit-log", log.to_str().unwrap()]);
    let file = m.at("myapp/db/PASSWORD");

    let (before, out) = cat(&file);
    assert_eq!(served(&out).as_deref(), Some("hunter2"));
    std::fs::rename(&log, &rotated).unwrap();
    hup(&m);
    eventually(
        format!("a new log at {} after SIGHUP", log.display()),
        Duration::from_secs(5),
        || log.exists().then_some(()),
    );
    let (after, out) = cat(&file);
    assert_eq!(served(&out).as_deref(), Some("hunter2"), "{}", m.log());

    let old = records(&rotated);
    let new = records(&log);
    assert!(has_read(&old, "/myapp/db/PASSWORD", before), "{old:?}");
    assert!(!has_read(&old, "/myapp/db/PASSWORD", after), "{old:?}");
    assert!(has_read(&new, "/myapp/db/PASSWORD", after), "{new:?}");
    assert!(!has_read(&new, "/myapp/db/PASSWORD", before), "{new:?}");
    assert_eq!(std::fs::metadata(&log).unwrap().mode() & 0o777, 0o600);

    // Without a rotation, SIGHUP just goes on in the same file.
    hup(&m);
    let (again, _) = cat(&file);
    assert!(has_read(&records(&log), "/myapp/db/PASSWORD", again));
    let (code, report) = status(m.path());
    assert_eq!(code, Some(0), "{report}");

    // logrotate's copytruncate, without a signal: records go on at the
    // start of the emptied file (no hole of NULs before them).
    run_ok("truncate", &["-s", "0", log.to_str().unwrap()]);
    let (last, _) = cat(&file);
    let now = records(&log);
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(has_read(&now, "/myapp/db/PASSWORD", last), "{now:?}");
}

/// The start of a mount with `--audit-log log` is refused; returns stderr.
fn refused_at_start(bao: &support::Bao, log: &Path) -> String {
    let (code, stderr) = Mount::builder(bao, "secret/")
        .args(&["--audit-log", log.to_str().unwrap()])
        .fail();
    assert!(!code.success(), "{stderr}");
    assert!(stderr.contains(log.to_str().unwrap()), "{stderr}");
    stderr
}

#[test]
fn a_log_file_others_could_read_or_forge_is_refused_at_start() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();

    let open = dir.path().join("open.log");
    std::fs::write(&open, "").unwrap();
    run_ok("chmod", &["0666", open.to_str().unwrap()]);
    let stderr = refused_at_start(&bao, &open);
    assert!(
        stderr.contains("0666") && stderr.contains("chmod 600"),
        "{stderr}"
    );

    let theirs = dir.path().join("theirs.log");
    std::fs::write(&theirs, "").unwrap();
    run_ok("chmod", &["0600", theirs.to_str().unwrap()]);
    run_ok("chown", &["65534", theirs.to_str().unwrap()]);
    let stderr = refused_at_start(&bao, &theirs);
    assert!(
        stderr.contains("uid 65534") && stderr.contains("chown"),
        "{stderr}"
    );

    // A symbolic link planted at the path is not followed.
    let target: PathBuf = dir.path().join("target.log");
    std::fs::write(&target, "").unwrap();
    run_ok("chmod", &["0600", target.to_str().unwrap()]);
    let link = dir.path().join("link.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let stderr = refused_at_start(&bao, &link);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
}

#[test]
fn a_log_file_others_could_forge_found_on_reopen_stops_the_reads() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let m = Mount::new(&bao, "secret/", &["--audit-log", log.to_str().unwrap()]);
    let file = m.at("myapp/db/PASSWORD");
    let (_, out) = cat(&file);
    assert_eq!(served(&out).as_deref(), Some("hunter2"));

    // Rotated, and a file anyone may write put in its place.
    std::fs::rename(&log, &rotated).unwrap();
    std::fs::write(&log, "").unwrap();
    run_ok("chmod", &["0666", log.to_str().unwrap()]);
    hup(&m);
    let out = eventually(
        "reads refused once the reopened log is refused",
        Duration::from_secs(5),
        || {
            let (_, out) = cat(&file);
            (!out.status.success()).then_some(out)
        },
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );
    let (code, report) = status(m.path());
    assert_eq!(code, Some(1), "{report}");
    let why = report["audit"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("0666"), "{report}");
    // Until the daemon took the signal, reads were recorded in the moved
    // file; from then on, in neither.
    let kept = std::fs::read_to_string(&rotated).unwrap();
    let (_, out) = cat(&file);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
    assert_eq!(std::fs::read_to_string(&rotated).unwrap(), kept);

    // Fixed, and told again: reads are served and recorded there.
    run_ok("chmod", &["0600", log.to_str().unwrap()]);
    hup(&m);
    let pid = eventually(
        "reads served again once the log is fixed",
        Duration::from_secs(5),
        || {
            let (pid, out) = cat(&file);
            served(&out).map(|_| pid)
        },
    );
    assert!(has_read(&records(&log), "/myapp/db/PASSWORD", pid));
}

#[test]
fn sighup_does_not_end_a_daemon_without_an_audit_log() {
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &[]);
    hup(&m);
    hup(&m);
    let (_, out) = cat(&m.at("myapp/db/PASSWORD"));
    assert_eq!(
        served(&out).as_deref(),
        Some("hunter2"),
        "{out:?}\n{}",
        m.log()
    );
    eventually(
        "the SIGHUP noted in the daemon's log",
        Duration::from_secs(5),
        || m.log().contains("no audit log to reopen").then_some(()),
    );
    let (code, report) = status(m.path());
    assert_eq!(code, Some(0), "{report}");
}
