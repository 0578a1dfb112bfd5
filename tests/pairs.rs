//! Keys written together are read together (issue 21 §1), a descriptor
//! held open reads the value it opened whole (§2) and its old inode is not
//! opened to change some of its bytes (`ESTALE`), and the last tenth of
//! the TTL costs no burst of requests (§3): real mounts against a real
//! OpenBao, read by real programs (python).
//!
//! A refresh ahead is queued by a read in the last tenth of the TTL and
//! lands a few milliseconds later: switched in at once, it fell between
//! the reads of a program reading a certificate and then its key. Now a
//! secret whose data changed is switched in once none of its keys was read
//! for a moment (50 ms), all keys at once.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{eventually, run_ok, s, Bao, Mount};

/// A loopback address nothing listens on yet, for --metrics.
fn metrics_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").to_string()
}

/// The FUSE requests of kind `op` the daemon counted so far.
fn fuse_ops(addr: &str, op: &str) -> u64 {
    let text = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .expect("metrics")
        .into_body()
        .read_to_string()
        .expect("metrics text");
    let prefix = format!("secretfs_fuse_operations_total{{op=\"{op}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

/// The reader: reads the pair once, waits for the test to change the
/// secret, then from just before the last tenth of the 5 s TTL reads
/// `cert` and `key` in turn every few ms (the first read in the last tenth
/// queues a refresh), until 30 ms after the refresh landed (the daemon's
/// metrics say). Prints every value it read, and its longest pause
/// between two reads.
const READER: &str = r#"
import re, sys, time, urllib.request
mp, metrics = sys.argv[1], sys.argv[2]
def read(n):
    with open(f"{mp}/tls/{n}") as f: return f.read()
def refreshes():
    text = urllib.request.urlopen(f"http://{metrics}/metrics").read().decode()
    m = re.search(r'^secretfs_refreshes_total\{kind="secret",result="ok"\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0
assert read("cert") == "cert-1" and read("key") == "key-1"
t0 = time.monotonic()
print("read", flush=True)
sys.stdin.readline()
time.sleep(max(0, t0 + 4.3 - time.monotonic()))
before = refreshes()
seen = set(); last = time.monotonic(); pause = 0.0; landed = None
while time.monotonic() - t0 < 8:
    for n in ("cert", "key"):
        seen.add(read(n))
        now = time.monotonic(); pause = max(pause, now - last); last = now
        time.sleep(0.005)
    if landed is None and refreshes() > before:
        landed = now
    if landed is not None and now - landed > 0.03:
        break
print(" ".join(sorted(seen)), "landed" if landed else "never-landed", f"{pause * 1000:.0f}", flush=True)
"#;

/// One run of the pair scenario: `Ok(None)` when the reader kept up and
/// saw only the old pair, `Ok(Some(pause))` when it paused for longer than
/// the quiet moment (a stalled machine: the change may switch in then, and
/// is allowed to), `Err` when it saw the new pair although it never paused.
fn pair_run() -> Result<Option<u64>, String> {
    let bao = Bao::start();
    bao.kv2_put("secret", "tls", json!({"cert": "cert-1", "key": "key-1"}));
    let metrics = metrics_addr();
    // Writable: every open reaches the daemon, so the reader's reads are
    // what keeps the secret from being quiet. The secret is first fetched
    // by the reader's first read.
    let m = Mount::builder(&bao, "secret/")
        .args(&["--ttl", "5s", "--writable", "--metrics", &metrics])
        .start();
    let mut reader = Command::new("python3")
        .args(["-c", READER, s(m.path()), &metrics])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (install it: the test needs a real reader)");
    let mut out = BufReader::new(reader.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the reader's first line");
    assert_eq!(line.trim(), "read", "the reader failed\n{}", m.log());
    bao.kv2_put("secret", "tls", json!({"cert": "cert-2", "key": "key-2"}));
    let mut stdin = reader.stdin.take().expect("stdin");
    writeln!(stdin).expect("tell the reader");
    line.clear();
    out.read_line(&mut line).expect("the reader's pair");
    assert!(reader.wait().expect("the reader").success(), "{}", m.log());
    let got: Vec<&str> = line.split_whitespace().collect();
    let (pause, landed) = match got[..] {
        [.., landed, pause] => (pause, landed),
        _ => panic!("{line:?}"),
    };
    assert_eq!(landed, "landed", "no refresh seen\n{}", m.log());
    let pause: u64 = pause.parse().unwrap_or(u64::MAX);
    if got[..got.len() - 2] != ["cert-1", "key-1"] {
        if pause >= 50 {
            return Ok(Some(pause));
        }
        return Err(format!(
            "read while the refresh landed (longest pause between reads: {pause} ms): {:?}\n{}",
            &got[..got.len() - 2],
            m.log()
        ));
    }
    // Then, nobody reading, both switch.
    eventually("the new pair", Duration::from_secs(5), || {
        let pair = (
            run_ok("cat", &[s(&m.at("tls/cert"))]),
            run_ok("cat", &[s(&m.at("tls/key"))]),
        );
        (pair == ("cert-2".into(), "key-2".into())).then_some(())
    });
    Ok(None)
}

#[test]
fn a_pair_read_while_its_refresh_lands_comes_from_one_version() {
    // A machine loaded enough to stall the reader past the quiet moment
    // proves nothing either way: such a run is made again (at most twice).
    let mut stalls = Vec::new();
    for _ in 0..3 {
        match pair_run() {
            Ok(None) => return,
            Ok(Some(pause)) => stalls.push(pause),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the reader stalled for longer than the quiet moment in every run (pauses, ms: {stalls:?}): the machine is too loaded to tell");
}

#[test]
fn opens_in_the_last_tenth_of_the_ttl_do_not_each_ask_the_daemon() {
    let bao = Bao::start();
    bao.kv2_put("secret", "tls", json!({"cert": "cert-1"}));
    let metrics = metrics_addr();
    // Read-only (the default): opens skip the daemon while the kernel
    // trusts what it holds.
    let m = Mount::builder(&bao, "secret/")
        .args(&["--ttl", "5s", "--timeout", "3s", "--metrics", &metrics])
        .start();
    let path = m.at("tls/cert");
    assert_eq!(std::fs::read(&path).expect("read"), b"cert-1");
    let fetched = Instant::now();
    std::thread::sleep(
        (fetched + Duration::from_millis(4600)).saturating_duration_since(Instant::now()),
    );
    // The refresh the first of these opens queues cannot land: the last
    // tenth lasts as long as these opens.
    bao.pause();
    let asked = |op| fuse_ops(&metrics, op);
    let before = (asked("lookup"), asked("getattr"));
    let script =
        "import sys\nfor _ in range(50):\n    assert open(sys.argv[1]).read() == 'cert-1'\n";
    let status = Command::new("python3")
        .args(["-c", script, s(&path)])
        .status()
        .expect("python3");
    let after = (asked("lookup"), asked("getattr"));
    bao.resume();
    assert!(status.success(), "{}", m.log());
    let (lookups, getattrs) = (after.0 - before.0, after.1 - before.1);
    assert!(
        lookups + getattrs <= 4,
        "50 opens in the last tenth of the TTL made {lookups} LOOKUP and {getattrs} GETATTR"
    );
}

/// A long-running reader: opens the file named by its first argument,
/// prints "opened", and re-reads it with pread (fstat before and after)
/// until a line arrives on its stdin; then prints the reads, the reads
/// that were not one whole value ("N:LEN:" and LEN x's) or whose size
/// fstat disagreed with, and the values it saw.
const HOLDER: &str = r#"
import os, sys, threading
fd = os.open(sys.argv[1], os.O_RDONLY)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
print("opened", flush=True)
reads = bad = 0; seen = set(); first_bad = None
while not stop.is_set():
    before = os.fstat(fd).st_size
    got = os.pread(fd, 65536, 0).decode()
    after = os.fstat(fd).st_size
    reads += 1
    n, length, rest = (got.split(":", 2) + ["", ""])[:3]
    if not (length.isdigit() and rest == "x" * int(length)) or before != len(got) or after != len(got):
        bad += 1; first_bad = first_bad or (got[:40], len(got), before, after)
    else:
        seen.add(n)
print(reads, bad, ",".join(sorted(seen)), repr(first_bad), flush=True)
"#;

/// A long-running reader holding its file open, re-reading it with pread
/// while the value changes in OpenBao to a longer and then a shorter one
/// (issue 21 §2: the new value cut to the old length). The descriptor
/// reads the value it opened, whole, and fstat agrees, until it is closed
/// (the file's inode keeps its value; the name leads to a new inode once
/// the value changed outside the mount); a new open reads the new value.
/// Before new inodes per version the held descriptor switched to the new
/// values (and could read one cut to the old length).
#[test]
fn a_descriptor_held_open_reads_the_value_it_opened_whole_and_new_opens_the_new_one() {
    let bao = Bao::start();
    // Each value says its own length: "N:LEN:" and LEN x's; one spans two pages.
    let value = |n: usize, len: usize| format!("{n}:{len}:{}", "x".repeat(len));
    bao.kv2_put("secret", "cert", json!({"pem": value(0, 17)}));
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s"]);
    let path = m.at("cert/pem");
    let mut holder = Command::new("python3")
        .args(["-c", HOLDER, s(&path)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (install it: the test needs a real reader)");
    let mut out = BufReader::new(holder.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the reader's first line");
    assert_eq!(line.trim(), "opened", "the reader failed\n{}", m.log());
    let ino = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).expect("stat").ino()
    };
    let first = ino(&path);
    // Longer, then shorter: each reaches a new open (within the TTL and
    // the hold), under a new inode number.
    let mut inos = vec![first];
    for (n, len) in [(1, 5000), (2, 3)] {
        let new = value(n, len);
        bao.kv2_put("secret", "cert", json!({"pem": new}));
        eventually(
            format!("value {n} to reach a new open"),
            Duration::from_secs(10),
            || (std::fs::read_to_string(&path).ok()? == new).then_some(()),
        );
        let now = ino(&path);
        assert!(
            !inos.contains(&now),
            "value {n}: inode {now} again ({inos:?})"
        );
        inos.push(now);
    }
    let mut stdin = holder.stdin.take().expect("stdin");
    writeln!(stdin).expect("tell the reader");
    line.clear();
    out.read_line(&mut line).expect("the reader's counts");
    assert!(holder.wait().expect("the reader").success(), "{}", m.log());
    eprintln!("holder: {}", line.trim());
    let got: Vec<&str> = line.trim().splitn(4, ' ').collect();
    assert_eq!(got.len(), 4, "{line:?}\n{}", m.log());
    assert!(got[0].parse::<u64>().expect("a count") > 0, "{line}");
    assert_eq!(
        got[1],
        "0",
        "reads that were not one whole value, or that fstat disagreed with \
         (reads, bad, values seen, first bad: text, length, fstat before, after): {line}\n{}",
        m.log()
    );
    assert_eq!(got[2], "0", "the held descriptor switched values: {line}");
}

/// Long-running readers holding their file open, re-reading it with
/// pread (and fstat) without pause while the value changes to longer and
/// shorter values in OpenBao: every read is one whole value (issue 21 §2:
/// the new value cut to the old length, pread gave `a-muc` while fstat
/// said 30 bytes). What it guards: a GETATTR whose reply (the new size) the
/// kernel discards because an invalidation bumped the inode's attribute
/// version meanwhile, followed by a READ served from the new version while
/// the kernel keeps the old size. Two readers, one also calling fstat, so
/// that attribute requests are in flight whenever the value changes.
fn held_readers(args: &[&str], seconds: u32) {
    let bao = Bao::start();
    // Each value says its own length: "N:LEN:" and LEN x's; one spans two pages.
    let value = |n: usize| {
        let len = [3, 400, 17, 5000, 0, 60, 2900][n % 7];
        format!("{n}:{len}:{}", "x".repeat(len))
    };
    bao.kv2_put("secret", "cert", json!({"pem": value(0)}));
    let m = Mount::new(&bao, "secret/", args);
    let script = r#"
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
stat = sys.argv[3] == "stat"
reads = bad = 0; seen = set(); first_bad = None
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    if stat:
        os.fstat(fd)
    got = os.pread(fd, 65536, 0).decode()
    reads += 1
    n, length, rest = (got.split(":", 2) + ["", ""])[:3]
    if not (length.isdigit() and rest == "x" * int(length)):
        bad += 1; first_bad = first_bad or (got[:40], len(got), os.fstat(fd).st_size)
    else:
        seen.add(n)
print(reads, bad, len(seen), repr(first_bad), flush=True)
"#;
    let seconds_arg = seconds.to_string();
    let readers: Vec<_> = ["stat", "read"]
        .iter()
        .map(|kind| {
            Command::new("python3")
                .args(["-c", script, s(&m.at("cert/pem")), &seconds_arg, kind])
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 (install it: the test needs a real reader)")
        })
        .collect();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(u64::from(seconds)) {
        std::thread::sleep(Duration::from_millis(150));
        n += 1;
        bao.kv2_put("secret", "cert", json!({"pem": value(n)}));
    }
    let lines: Vec<String> = readers
        .into_iter()
        .map(|reader| {
            let out = reader.wait_with_output().expect("the reader");
            let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
            // Printed for the record (run with --nocapture): reads, bad reads,
            // values seen, first bad read.
            eprintln!("held reader: {line}");
            line
        })
        .collect();
    for line in lines {
        let got: Vec<&str> = line.splitn(4, ' ').collect();
        assert_eq!(got.len(), 4, "{line:?}\n{}", m.log());
        let (bad, versions) = (got[1], got[2]);
        assert_eq!(
            bad,
            "0",
            "reads that were not one whole value (reads, bad, values seen, first bad: text, length, fstat size): {line}\n{}",
            m.log()
        );
        // The descriptor reads the value it opened until it is closed.
        assert_eq!(versions, "1", "{line}");
    }
    // A new open reads the last value.
    let last = value(n);
    eventually(
        "the last value to reach a new open",
        Duration::from_secs(10),
        || (std::fs::read_to_string(m.at("cert/pem")).ok()? == last).then_some(()),
    );
}

/// Refreshed ahead (the default): the switch at a quiet moment tells the
/// kernel to forget the file while the readers' requests are in flight.
/// Before new inodes per version it failed (1-4 cut reads in ~1,500,000);
/// ignored for its length (the test above is its short form): run it with
/// `--ignored`.
#[test]
#[ignore = "long (15 s): run with --ignored"]
fn held_readers_without_pause_read_only_whole_values() {
    held_readers(&["--ttl", "500ms"], 15);
}

/// Refreshed by the read that finds the value expired: the GETATTR that
/// fetched the new value is answered while the kernel is told to forget
/// the old one. Ignored as the one above.
#[test]
#[ignore = "long (15 s): run with --ignored"]
fn held_readers_without_pause_read_only_whole_values_with_blocking_refresh() {
    held_readers(&["--ttl", "500ms", "--blocking-refresh"], 15);
}

/// On a `--writable` mount a change written through the mount is made in
/// place: the writer's descriptor, its fstat and the name keep the file's
/// inode. A change made outside the mount gives the name a new inode.
#[test]
fn a_change_written_through_the_mount_keeps_the_inode_and_one_made_outside_does_not() {
    use std::os::unix::fs::MetadataExt;
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "short"}));
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s", "--writable"]);
    let path = m.at("app/K");
    let ino = std::fs::metadata(&path).expect("stat").ino();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("open for writing");
    f.write_all(b"a much longer value").expect("write");
    f.sync_all().expect("fsync");
    let meta = f.metadata().expect("fstat");
    assert_eq!((meta.ino(), meta.len()), (ino, 19));
    drop(f);
    let meta = std::fs::metadata(&path).expect("stat");
    assert_eq!((meta.ino(), meta.len()), (ino, 19));
    assert_eq!(std::fs::read(&path).expect("read"), b"a much longer value");
    // Outside: a new inode once the change reached the mount.
    bao.kv2_put("secret", "app", json!({"K": "changed outside"}));
    eventually(
        "the outside change to reach a new open",
        Duration::from_secs(10),
        || (std::fs::read(&path).ok()? == b"changed outside").then_some(()),
    );
    assert_ne!(std::fs::metadata(&path).expect("stat").ino(), ino);
}

/// A file whose value changed outside the mount keeps the version it
/// showed (its old inode, reached through a descriptor held open): opened
/// again for writing without `O_TRUNC` (`O_APPEND`, or writing over a few
/// bytes, through `/proc/self/fd/N`) it is refused with `ESTALE`, and
/// nothing is written; so is `truncate(2)` to a length other than 0. Before, the writer's buffer started from the
/// store's new value, which it never read: appending `+x` at the old
/// length stored `TWO+xhanged`, over a version the writer did not see.
/// `O_TRUNC`, which keeps nothing of what the file held, still writes.
#[test]
fn an_old_inode_opened_to_change_its_bytes_is_refused_and_nothing_is_written() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "one"}));
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s", "--writable"]);
    let path = m.at("app/K");
    let mut held = std::fs::File::open(&path).expect("open for reading");
    let first = held.metadata().expect("fstat").ino();
    bao.kv2_put("secret", "app", json!({"K": "TWO-changed"}));
    eventually(
        "the outside change to reach a new open, under a new inode",
        Duration::from_secs(10),
        || {
            let new = std::fs::read(&path).ok()? == b"TWO-changed";
            (new && std::fs::metadata(&path).ok()?.ino() != first).then_some(())
        },
    );
    let version = bao.kv2_version("secret", "app");
    let old = format!("/proc/self/fd/{}", held.as_raw_fd());
    for (how, append) in [("O_APPEND", true), ("O_WRONLY", false)] {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .append(append)
            .open(&old);
        let err = match opened {
            Ok(f) => {
                let written = write_and_close_file(f, b"+x");
                panic!(
                    "{how} on the old inode opened ({written:?}); the store holds {:?}\n{}",
                    bao.kv2_get("secret", "app"),
                    m.log()
                );
            }
            Err(e) => e,
        };
        assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{how}: {err}");
    }
    // truncate(2) to 2 bytes would keep "TW" of that value: refused too.
    let c = std::ffi::CString::new(old.as_str()).expect("a path");
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let truncated = unsafe { libc::truncate(c.as_ptr(), 2) };
    let err = std::io::Error::last_os_error();
    assert_eq!(
        (truncated, err.raw_os_error()),
        (-1, Some(libc::ESTALE)),
        "truncate: the store holds {:?}",
        bao.kv2_get("secret", "app")
    );
    assert_eq!(
        bao.kv2_get("secret", "app"),
        Some((json!({"K": "TWO-changed"}), version)),
        "nothing written"
    );
    let mut bytes = String::new();
    held.read_to_string(&mut bytes).expect("read the held file");
    assert_eq!(bytes, "one", "the held descriptor keeps its value");
    // O_TRUNC keeps nothing of the old bytes: a whole new value is written.
    support::write_and_close(std::path::Path::new(&old), b"whole").expect("O_TRUNC");
    assert_eq!(
        bao.kv2_get("secret", "app").map(|(data, _)| data),
        Some(json!({"K": "whole"}))
    );
}

/// Writes `bytes` to `f` and closes it: the first error of the two.
fn write_and_close_file(mut f: std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    f.write_all(bytes)?;
    let fd = f.into_raw_fd();
    // SAFETY: we own fd and close it once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
