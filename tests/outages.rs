//! Reads while OpenBao is down: cached values are served for the
//! stale-if-error window past their TTL and `EIO` follows; what was never
//! cached fails with `EIO` within the request timeout and never hangs.
//! (A write with the store down: tests/write_path.rs.)
//!
//! Fixtures are the shared ones in tests/support (one OpenBao dev server
//! per test: it starts in about a second, tests may stop it, and a server
//! of its own keeps each test's data apart). Nothing here skips: a missing
//! `bao` or FUSE fails the test with a message that says what to install.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{eventually, read_within, run, run_ok, s, seeded, Bao, Mount};

#[test]
fn with_vault_stopped_cached_values_are_served_within_the_stale_window() {
    let mut bao = seeded();
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s", "--timeout", "1s"]);
    assert_eq!(std::fs::read(m.at("myapp/db/USER")).unwrap(), b"app");
    bao.stop();
    // By design: past two TTLs of the outage.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(std::fs::read(m.at("myapp/db/USER")).unwrap(), b"app");
    // The outage is not hidden: `secretfs status` says the mount answers
    // but the store does not (exit 1, not 2: no reason to restart).
    let (code, report) = support::status(m.path());
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        (report["healthy"].clone(), report["store_reachable"].clone()),
        (json!(false), json!(false)),
        "{report}"
    );
}

#[test]
fn with_vault_stopped_a_cached_plain_secret_is_served_within_the_stale_window() {
    let mut bao = Bao::start();
    // A secret with no children: its folder listing is a 404.
    bao.kv2_put("secret", "plain", json!({"USER": "app"}));
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s", "--timeout", "1s"]);
    let path = m.at("plain/USER");
    assert_eq!(std::fs::read(&path).unwrap(), b"app");
    let fetched = Instant::now();
    bao.stop();
    // Past the TTL (1 s), well inside the default window (5 m): first while
    // a stale-while-revalidate answer is still allowed (< 2 TTL), then past it.
    for at in [Duration::from_millis(1500), Duration::from_millis(2500)] {
        std::thread::sleep(at.saturating_sub(fetched.elapsed()));
        match read_within(&path, Duration::from_secs(15)) {
            Ok(v) => assert_eq!(v, b"app"),
            Err(e) => panic!(
                "{e} {:?} after the fetch, inside --ttl 1s + --stale-if-error 5m:\n{}",
                fetched.elapsed(),
                m.log()
            ),
        }
    }
    assert_eq!(run_ok("cat", &[s(&path)]), "app");
}

#[test]
fn past_the_stale_if_error_window_a_cached_value_turns_into_eio() {
    let mut bao = Bao::start();
    // A secret that is also a folder (its listing is cached too).
    bao.kv2_put("secret", "app", json!({"USER": "app"}));
    bao.kv2_put("secret", "app/child", json!({"C": "c"}));
    let m = Mount::new(
        &bao,
        "secret/",
        &["--ttl", "1s", "--stale-if-error", "2s", "--timeout", "1s"],
    );
    let path = m.at("app/USER");
    assert_eq!(std::fs::read(&path).unwrap(), b"app");
    let fetched = Instant::now();
    bao.stop();
    // By design: past the TTL, inside --stale-if-error.
    std::thread::sleep(Duration::from_millis(1500));
    // Past the TTL, inside the window: still served.
    match read_within(&path, Duration::from_secs(15)) {
        Ok(v) => assert_eq!(v, b"app"),
        Err(e) => panic!(
            "{e} {:?} after the fetch, inside --ttl 1s + --stale-if-error 2s:\n{}",
            fetched.elapsed(),
            m.log()
        ),
    }
    // TTL 1 s + window 2 s, then one request timeout and slack.
    let err = eventually(
        "a cached value to turn into an error past --ttl 1s --stale-if-error 2s",
        Duration::from_secs(8),
        || match read_within(&path, Duration::from_secs(15)) {
            Ok(v) => {
                assert_eq!(v, b"app", "a wrong value while Vault is down");
                None
            }
            Err(e) => Some(e),
        },
    );
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        fetched.elapsed() >= Duration::from_secs(3),
        "EIO {:?} after the fetch, before the window ended",
        fetched.elapsed()
    );
    let out = run("cat", &[s(&path)]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );
}

#[test]
fn with_vault_stopped_uncached_reads_fail_with_eio_and_do_not_hang() {
    let mut bao = seeded();
    let m = Mount::new(
        &bao,
        "secret/",
        &["--timeout", "2s", "--stale-if-error", "0s"],
    );
    assert!(m.at("myapp").is_dir());
    bao.stop();
    let path = m.at("myapp/db/PASSWORD");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(path));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("a read hung with Vault down");
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EIO));
}

#[test]
fn with_vault_stopped_an_uncached_listing_fails_with_eio_and_does_not_hang() {
    let mut bao = Bao::start();
    bao.kv2_put("secret", "cold/a", json!({"K": "v"}));
    let m = Mount::new(
        &bao,
        "secret/",
        &["--timeout", "2s", "--stale-if-error", "0s"],
    );
    assert!(m.path().is_dir());
    bao.stop();
    let out = run("ls", &[s(&m.at("cold"))]);
    assert_ne!(out.status.code(), Some(124), "ls hung with Vault down");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );
}

#[test]
fn with_vault_hung_only_the_first_request_waits_on_it_until_it_answers_again() {
    // A paused server (a hung node, a black-holed network) answers nothing:
    // once one request has timed out, reads stop waiting on it — cached
    // values at once (within --stale-if-error), everything else EIO at once
    // — until a background probe finds it back.
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s", "--timeout", "1s"]);
    assert_eq!(std::fs::read(m.at("myapp/db/USER")).unwrap(), b"app");
    bao.pause();
    // Past two TTLs: no stale-while-revalidate; requests go to the store.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(std::fs::read(m.at("myapp/db/USER")).unwrap(), b"app");
    for _ in 0..3 {
        // Each of these waited for at least one --timeout (1 s) before.
        let started = Instant::now();
        assert_eq!(std::fs::read(m.at("myapp/db/USER")).unwrap(), b"app");
        let cold = std::fs::read(m.at("myapp/api/token/value"));
        let took = started.elapsed();
        assert_eq!(
            cold.map_err(|e| e.raw_os_error()),
            Err(Some(libc::EIO)),
            "an uncached read with the store hung"
        );
        assert!(
            took < Duration::from_millis(800),
            "a cached and an uncached read waited {took:?} on a store known to hang"
        );
    }
    bao.resume();
    let value = eventually(
        "the mount notices the store is back",
        Duration::from_secs(10),
        || std::fs::read(m.at("myapp/api/token/value")).ok(),
    );
    assert_eq!(value, b"t0k");
}

#[test]
fn status_of_a_mount_whose_store_hangs_says_so_within_its_own_deadline() {
    // A liveness probe must not restart a healthy mount because the store
    // hangs: `status` answers "mounted, store unreachable" (exit 1), not
    // "not mounted" (exit 2), whatever --timeout is.
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &["--timeout", "30s"]);
    assert_eq!(std::fs::read(m.at("myapp/db/USER")).unwrap(), b"app");
    bao.pause();
    let (code, report) = support::status(m.path());
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        (report["mounted"].clone(), report["store_reachable"].clone()),
        (json!(true), json!(false)),
        "{report}"
    );
    bao.resume();
}

#[test]
fn a_cached_read_is_answered_while_cold_reads_hang_on_the_store() {
    // 16 cold reads hang on a frozen store (more than the daemon has
    // request threads): a read of a cached key must not queue behind them.
    // Each in a folder of its own: the kernel sends one lookup at a time
    // per directory.
    let bao = seeded();
    for i in 0..16 {
        bao.kv2_put("secret", &format!("cold{i}/s"), json!({"K": "v"}));
    }
    // Writable: every open reaches the daemon (a read-only mount's opens
    // do not), so the cached reads really need a free request thread.
    // Its metrics count the FUSE requests it receives.
    let metrics = support::scrape::free_addr();
    let m = Mount::new(
        &bao,
        "secret/",
        &[
            "--writable",
            "--ttl",
            "10m",
            "--timeout",
            "5s",
            "--metrics",
            &metrics,
        ],
    );
    // Cached: the key, and the root listing that names cold0..cold15.
    assert_eq!(std::fs::read(m.at("myapp/db/USER")).unwrap(), b"app");
    bao.pause();
    let lookups = support::scrape::fuse_ops(&metrics, "lookup");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cold: Vec<_> = (0..16)
        .map(|i| {
            let (path, done) = (m.at(&format!("cold{i}/s/K")), done.clone());
            std::thread::spawn(move || {
                let r = std::fs::read(path);
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                r
            })
        })
        .collect();
    // Every cold read hung in the daemon: each looks up `cold{i}`
    // (answered from the cached root listing), then `s`, which needs the
    // frozen store: 32 lookups received, well before they time out (5 s).
    eventually(
        "the 16 cold reads to reach the daemon",
        Duration::from_secs(4),
        || (support::scrape::fuse_ops(&metrics, "lookup") >= lookups + 32.0).then_some(()),
    );
    let mut took = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        assert_eq!(std::fs::read(m.at("myapp/db/USER")).unwrap(), b"app");
        took.push(started.elapsed());
    }
    let still_hanging = 16 - done.load(std::sync::atomic::Ordering::SeqCst);
    took.sort();
    eprintln!(
        "cached reads while {still_hanging} cold reads hang: p50 {:?}, p99 {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        took[took.len() - 1]
    );
    assert_eq!(
        still_hanging, 16,
        "the cached reads were answered only after cold reads gave up"
    );
    for t in cold {
        let r = t.join().expect("cold reader");
        assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)));
    }
    bao.resume();
}

#[test]
fn with_the_store_known_down_a_shell_redirection_fails_at_open() {
    // bash and dash ignore close()'s result: refusing at open is the only
    // way `echo x > KEY` can say the change was not saved.
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &["--writable", "--timeout", "1s"]);
    assert_eq!(std::fs::read(m.at("myapp/db/USER")).unwrap(), b"app");
    bao.pause();
    // One request finds the store hung.
    assert!(std::fs::read(m.at("myapp/api/token/value")).is_err());
    // Debian's sh is dash.
    for shell in ["bash", "sh"] {
        let out = Command::new(shell)
            .arg("-c")
            .arg(format!(
                "echo -n x > {}",
                support::q(&m.at("myapp/db/USER"))
            ))
            .output()
            .expect("run the shell");
        assert!(
            !out.status.success(),
            "{shell}: the redirection said nothing"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bao.resume();
    assert_eq!(bao.kv2_get("secret", "myapp/db").unwrap().0["USER"], "app");
}
