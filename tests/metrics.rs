//! `--metrics ADDR`: a real mount against a real OpenBao, scraped by a
//! real HTTP client (ureq), shows what the mount did: store requests by
//! operation and outcome, cache lookups, FUSE operations, open handles,
//! the token's expiry, whether the store is up; and a busy address fails
//! the mount in one line.

mod support;

use std::net::TcpListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::scrape::{free_addr, scrape, value};
use support::{eventually, seeded, Mount};

#[test]
fn a_scrape_shows_what_the_mount_did() {
    let bao = seeded();
    let token = bao.token_with_policy(
        "reader",
        "path \"secret/*\" { capabilities = [\"read\", \"list\"] }",
    );
    let addr = free_addr();
    let m = Mount::builder(&bao, "secret/")
        .token(&token)
        .args(&["--metrics", &addr])
        .start();

    for key in ["myapp/db/PASSWORD", "myapp/api/token/value", "clash/k"] {
        std::fs::read(m.at(key)).expect("read through the mount");
    }
    let held = std::fs::File::open(m.at("myapp/db/USER")).expect("open");

    let samples = scrape(&addr);
    let reads = value(
        &samples,
        "secretfs_store_request_duration_seconds_count{op=\"read\",outcome=\"ok\"}",
    );
    assert!(
        reads >= 3.0,
        "3 secrets read, {reads} store reads counted: {samples:?}"
    );
    let lists = value(
        &samples,
        "secretfs_store_request_duration_seconds_count{op=\"list\",outcome=\"ok\"}",
    );
    assert!(lists >= 1.0, "{samples:?}");
    let misses = value(
        &samples,
        "secretfs_cache_lookups_total{kind=\"secret\",result=\"miss\"}",
    );
    assert!(misses >= 3.0, "{samples:?}");
    assert!(value(&samples, "secretfs_fuse_operations_total{op=\"lookup\"}") >= 4.0);
    assert!(
        value(&samples, "secretfs_cached_secrets") >= 3.0,
        "{samples:?}"
    );
    assert_eq!(value(&samples, "secretfs_store_up"), 1.0, "{samples:?}");
    let node = format!("secretfs_store_node_info{{node=\"{}\"}}", bao.addr());
    assert_eq!(value(&samples, &node), 1.0, "{node} in {samples:?}");
    // Read-only mounts open without the daemon; a handle shows only on a
    // writable mount, so this one counts none (and says so).
    assert!(samples.iter().any(|(n, _)| n == "secretfs_open_handles"));
    drop(held);
    // The token was made with a TTL: its expiry lies ahead.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let expiry = value(&samples, "secretfs_token_expiry_timestamp_seconds");
    assert!(expiry > now, "token expiry {expiry} not after now {now}");
    // No label holds a path or a value.
    for (name, _) in &samples {
        assert!(
            !name.contains("myapp") && !name.contains("hunter2"),
            "{name}"
        );
    }

    // With the store gone, the gauge says so and failures are counted.
    bao.pause();
    assert!(std::fs::read(m.at("myapp/db/replica/HOST")).is_err());
    eventually("store_up to fall to 0", Duration::from_secs(10), || {
        let s = scrape(&addr);
        (value(&s, "secretfs_store_up") == 0.0).then_some(())
    });
    let samples = scrape(&addr);
    // A hung server's request ends as a timeout or "unavailable" (how
    // the HTTP client words it), never as ok.
    let failed: f64 = samples
        .iter()
        .filter(|(n, _)| {
            n.starts_with("secretfs_store_request_duration_seconds_count{op=\"read\"")
                && !n.contains("outcome=\"ok\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert!(failed >= 1.0, "{samples:?}");
    let lookups_failed = value(
        &samples,
        "secretfs_cache_lookups_total{kind=\"secret\",result=\"failed\"}",
    );
    assert!(lookups_failed >= 1.0, "{samples:?}");
    bao.resume();
}

#[test]
fn a_busy_metrics_address_fails_the_mount_in_one_line() {
    let bao = seeded();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (status, stderr) = Mount::builder(&bao, "secret/")
        .args(&["--metrics", &addr])
        .fail();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("metrics address {addr}:")),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// The getxattr requests that reached the daemon so far.
fn getxattrs(addr: &str) -> f64 {
    value(
        &scrape(addr),
        "secretfs_fuse_operations_total{op=\"getxattr\"}",
    )
}

/// `ls -l` (coreutils) asks every file it lists for `security.selinux`
/// and its POSIX ACL (`system.posix_acl_access`, and `_default` of a
/// directory) unless the filesystem says once that it keeps none
/// (`ENOTSUP`): answered "no data", that was three round trips to the
/// daemon per secret, on every listing. Now it is a fixed few per `ls`
/// however many files, and our own attributes still read.
#[test]
fn ls_l_asks_the_daemon_for_no_extended_attribute_per_file() {
    const SECRETS: usize = 40;
    let bao = seeded();
    for i in 0..SECRETS {
        bao.kv2_put(
            "secret",
            &format!("tree/s{i:03}"),
            serde_json::json!({"K": "v"}),
        );
    }
    let addr = free_addr();
    let m = Mount::builder(&bao, "secret/")
        .args(&["--metrics", &addr])
        .start();

    for (dir, entries) in [("tree", SECRETS), ("myapp/db", 5)] {
        for listing in ["first", "second"] {
            let before = getxattrs(&addr);
            let out = support::run_ok("ls", &["-l", support::s(&m.at(dir))]);
            let asked = getxattrs(&addr) - before;
            let lines: Vec<&str> = out.lines().skip(1).collect(); // "total N"
            assert_eq!(lines.len(), entries, "{out}");
            // No ACL (`+`) or security context (`.`) mark after the mode.
            for line in &lines {
                assert_eq!(line.as_bytes().get(10), Some(&b' '), "{line}");
            }
            assert!(
                asked <= 3.0,
                "{listing} `ls -l {dir}` of {entries} entries sent {asked} getxattr requests to the daemon"
            );
        }
    }

    // Our own attributes answer; other names in `user.` have no data, and
    // other namespaces are not kept.
    let db = m.at("myapp/db/USER");
    let version = support::run_ok(
        "getfattr",
        &[
            "-n",
            "user.secretfs.version",
            "--only-values",
            support::s(&db),
        ],
    );
    assert_eq!(version, "1");
    let other = support::run("getfattr", &["-n", "user.other", support::s(&db)]);
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("No such attribute"),
        "{other:?}"
    );
    let selinux = support::run("getfattr", &["-n", "security.selinux", support::s(&db)]);
    assert!(
        String::from_utf8_lossy(&selinux.stderr).contains("Operation not supported"),
        "{selinux:?}"
    );
}

/// A client that sends `GET /metrics` one byte a second, the way a
/// hostile one holds a connection; it stops when the server closes the
/// connection (`true`), or gives up after a minute (`false`).
fn trickle(addr: &str) -> std::thread::JoinHandle<bool> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    std::thread::spawn(move || {
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let until = std::time::Instant::now() + Duration::from_secs(60);
        for byte in request.iter().cycle() {
            if std::time::Instant::now() >= until {
                return false;
            }
            if s.write_all(&[*byte]).is_err() {
                return true;
            }
            // Waits a second for a byte from the server: 0 (or an error
            // other than the timeout) means it closed the connection.
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    })
}

/// Connections that trickle their request a byte at a time (more than
/// the server used to answer at once) held every scrape for as long as
/// they ran: now curl gets its answer while they still trickle, and the
/// server cuts each off at its deadline.
#[test]
fn slow_clients_do_not_hold_up_a_scrape_and_are_cut_off() {
    let bao = seeded();
    let addr = free_addr();
    let _m = Mount::builder(&bao, "secret/")
        .args(&["--metrics", &addr])
        .start();
    let slow: Vec<_> = (0..8).map(|_| trickle(&addr)).collect();
    // Before they give up: curl waits at most half their minute.
    let curl = support::run(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--max-time",
            "30",
            &format!("http://{addr}/metrics"),
        ],
    );
    let body = String::from_utf8_lossy(&curl.stdout);
    assert!(
        curl.status.success() && body.ends_with("# EOF\n"),
        "the scrape got no answer while slow clients trickled: {curl:?}"
    );
    // Each slow client is cut off at its deadline, well within its minute.
    for t in slow {
        assert!(
            t.join().expect("slow client"),
            "the server never closed a trickling connection"
        );
    }
}

#[test]
fn a_metrics_address_that_is_not_loopback_is_warned_about() {
    let bao = seeded();
    let port = free_addr().rsplit_once(':').expect("port").1.to_string();
    let m = Mount::builder(&bao, "secret/")
        .args(&["--metrics", &format!("0.0.0.0:{port}")])
        .start();
    assert!(m.log().contains("not a loopback address"), "{}", m.log());
    let loopback = free_addr();
    let m = Mount::builder(&bao, "secret/")
        .args(&["--metrics", &loopback])
        .start();
    assert!(!m.log().contains("not a loopback address"), "{}", m.log());
}
