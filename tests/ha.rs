//! Following a highly available store: a 3-node OpenBao Raft cluster on
//! loopback (`support::Cluster`), a mount given every node's address.
//!
//! Longer runs: `SECRETFS_HA_ROUNDS=N` kills the node in use N times (each
//! time restarting the one killed before); `SECRETFS_RAFT_MULTIPLIER=5`
//! runs the cluster with OpenBao's default (slower) Raft timing.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{eventually, read_within, status, write_and_close, Cluster, Mount, Role};

/// What `secretfs status` says is the node in use.
fn node_in_use(m: &Mount) -> String {
    let (_, report) = status(m.path());
    report["store_node"]
        .as_str()
        .unwrap_or_else(|| panic!("status names no store_node: {report}"))
        .to_string()
}

/// The errno of an I/O error (0 when it has none).
fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn a_mount_on_a_standby_updates_two_keys_in_a_row_without_eagain() {
    let cluster = Cluster::start();
    let standby = cluster.standby().expect("a standby");
    let node = cluster.node(standby);
    cluster
        .node(0)
        .kv2_put("secret", "app/pair", json!({"A": "a0", "B": "b0"}));
    // Only the standby's address: its reads come from its own copy.
    let m = Mount::builder(node, "secret/app")
        .args(&["--writable", "--ttl", "5m"])
        .start();
    eventually(
        "the standby has the secret",
        Duration::from_secs(10),
        || std::fs::read(m.at("pair/A")).ok(),
    );
    let mut failed = Vec::new();
    for i in 1..=30 {
        for key in ["A", "B"] {
            let value = format!("{}{i}", key.to_lowercase());
            if let Err(e) = write_and_close(&m.at(&format!("pair/{key}")), value.as_bytes()) {
                failed.push((i, key, errno(&e)));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 60 writes (30 two-key updates) through a standby failed, (update, key, errno): {failed:?}\n{}",
        failed.len(),
        m.log()
    );
    let active = cluster.active().expect("an active node");
    let (data, _) = cluster
        .node(active)
        .kv2_get("secret", "app/pair")
        .expect("the secret");
    assert_eq!(data, json!({"A": "a30", "B": "b30"}));
}

#[test]
fn a_mount_starts_on_the_first_node_that_answers() {
    let cluster = Cluster::start_n(1);
    cluster
        .node(0)
        .kv2_put("secret", "app/s", json!({"k": "v"}));
    let dead = support::dead_addr();
    let addrs = format!("{dead},{}", cluster.addrs()[0]);
    let m = Mount::builder(cluster.node(0), "secret/app")
        .addr(&addrs)
        .addr_from_env()
        .start();
    assert_eq!(std::fs::read(m.at("s/k")).unwrap(), b"v");
    assert_eq!(node_in_use(&m), cluster.addrs()[0]);
    // The log says which node serves, and tells no story of a node back.
    let log = m.log();
    assert!(
        !log.contains("serves again"),
        "a start on the second node is logged as a node coming back:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("in use") && l.contains(&format!("node={}", cluster.addrs()[0]))),
        "no line names the node in use:\n{log}"
    );
    let (status, err) = Mount::builder(cluster.node(0), "secret/app")
        .addr(&format!("{dead},{}", support::dead_addr()))
        .fail();
    assert!(!status.success());
    assert!(err.contains("cannot reach Vault at"), "{err}");
}

#[test]
fn a_value_over_the_storage_limit_is_too_big_not_an_outage() {
    let cluster = Cluster::start_n(1);
    cluster
        .node(0)
        .kv2_put("secret", "app/s", json!({"k": "v"}));
    let m = Mount::builder(cluster.node(0), "secret/app")
        .args(&["--writable", "--max-value-size", "4M"])
        .start();
    // Random text (6 bits a byte) does not compress below Raft's 1 MiB
    // entry limit, as repeated bytes would.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: String = (0..2_500_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(alphabet[(x % 64) as usize])
        })
        .collect();
    let err = write_and_close(&m.at("s/k"), big.as_bytes()).expect_err("an entry over 1 MiB");
    assert_eq!(errno(&err), libc::EFBIG, "{err}\n{}", m.log());
    let (code, report) = status(m.path());
    assert_eq!(code, Some(0), "the store is not down: {report}");
    assert_eq!(report["store_reachable"], true, "{report}");
    // And the mount still writes what fits.
    write_and_close(&m.at("s/k"), b"small").expect("a small write");
}

#[test]
fn a_hung_node_in_use_hands_reads_to_the_next_within_the_deadline() {
    let cluster = Cluster::start();
    for i in 0..20 {
        cluster.node(0).kv2_put(
            "secret",
            &format!("app/s{i}"),
            json!({"v": format!("x{i}")}),
        );
    }
    let m = Mount::builder(cluster.node(0), "secret/app")
        .addr(&cluster.addrs().join(","))
        .args(&["--timeout", "3s"])
        .start();
    eventually(
        "the standbys have the secrets",
        Duration::from_secs(10),
        || {
            (1..3)
                .all(|n| cluster.node(n).kv2_get("secret", "app/s19").is_some())
                .then_some(())
        },
    );
    assert_eq!(std::fs::read(m.at("s0/v")).unwrap(), b"x0");
    // Frozen: it keeps its port and never answers (a hung server).
    cluster.node(0).pause();
    let mut slowest = Duration::ZERO;
    for i in 1..20 {
        let t = Instant::now();
        let v = read_within(&m.at(&format!("s{i}/v")), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("cold read s{i} with node0 hung: {e}\n{}", m.log()));
        assert_eq!(v, format!("x{i}").as_bytes());
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("slowest cold read with the node in use hung: {slowest:?}");
    assert!(slowest < Duration::from_secs(3) + Duration::from_secs(2));
    assert_ne!(node_in_use(&m), cluster.addrs()[0]);
    cluster.node(0).resume();
}

/// One write of the load test.
struct Write {
    /// The secret and key it created.
    secret: String,
    key: String,
    /// When it was started and when it returned, from the start of the load.
    began: Duration,
    at: Duration,
    /// `None` when it succeeded, else the errno.
    failed: Option<i32>,
}

/// One read of the load test.
struct Read {
    at: Duration,
    took: Duration,
    cold: bool,
    failed: Option<i32>,
}

#[test]
fn killing_the_node_in_use_under_load_loses_nothing() {
    let rounds: usize = std::env::var("SECRETFS_HA_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let timeout = Duration::from_secs(5);
    let mut cluster = Cluster::start();
    let seed = cluster.node(0);
    const WARM: usize = 10;
    const COLD: usize = 300;
    const WRITERS: usize = 2;
    for i in 0..WARM {
        seed.kv2_put(
            "secret",
            &format!("load/warm/s{i}"),
            json!({"v": format!("w{i}")}),
        );
    }
    for i in 0..COLD {
        seed.kv2_put(
            "secret",
            &format!("load/cold/s{i}"),
            json!({"v": format!("c{i}")}),
        );
    }
    // Each writer adds keys to a secret of its own, a new one every
    // KEYS_PER_SECRET writes (a write may carry 499 keys at most).
    const KEYS_PER_SECRET: usize = 100;
    let batches = 30 * rounds;
    for w in 0..WRITERS {
        for b in 0..batches {
            seed.kv2_put(
                "secret",
                &format!("load/writer{w}-{b}"),
                json!({"seed": "x"}),
            );
        }
    }
    let addrs = cluster.addrs().join(",");
    let m = Mount::builder(seed, "secret/load")
        .addr(&addrs)
        .args(&["--writable", "--ttl", "3s", "--timeout", "5s"])
        .start();
    for i in 0..WARM {
        std::fs::read(m.at(&format!("warm/s{i}/v"))).expect("a warm read");
    }
    assert_eq!(node_in_use(&m), cluster.addrs()[0]);

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(Mutex::new(Vec::<Read>::new()));
    let writes = Arc::new(Mutex::new(Vec::<Write>::new()));
    let cold_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut threads = Vec::new();
    for r in 0..3 {
        let (stop, reads, cold_next, root) = (
            stop.clone(),
            reads.clone(),
            cold_next.clone(),
            m.path().to_path_buf(),
        );
        threads.push(std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // Mostly warm (cached) secrets, every third read a cold one.
                let cold = n % 3 == 0;
                let (path, want) = if cold {
                    let i = cold_next.fetch_add(1, Ordering::Relaxed) % COLD;
                    (root.join(format!("cold/s{i}/v")), format!("c{i}"))
                } else {
                    let i = (n + r) % WARM;
                    (root.join(format!("warm/s{i}/v")), format!("w{i}"))
                };
                let t = Instant::now();
                let got = read_within(&path, Duration::from_secs(30));
                let took = t.elapsed();
                let failed = match got {
                    Ok(v) => {
                        assert_eq!(v, want.as_bytes(), "{} read wrong", path.display());
                        None
                    }
                    Err(e) => Some(errno(&e)),
                };
                reads.lock().unwrap().push(Read {
                    at: start.elapsed(),
                    took,
                    cold,
                    failed,
                });
                // The load's pace (a soak, not a synchronisation).
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    for w in 0..WRITERS {
        let (stop, writes, root) = (stop.clone(), writes.clone(), m.path().to_path_buf());
        threads.push(std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let secret = format!("writer{w}-{}", (n - 1) / KEYS_PER_SECRET);
                let key = format!("k{n}");
                let began = start.elapsed();
                let got = write_and_close(&root.join(&secret).join(&key), key.as_bytes());
                writes.lock().unwrap().push(Write {
                    secret: format!("load/{secret}"),
                    key,
                    began,
                    at: start.elapsed(),
                    failed: got.err().map(|e| errno(&e)),
                });
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }

    let mut killed: Option<usize> = None;
    let mut kills = Vec::new();
    for round in 0..rounds {
        // Load between kills: the scenario's timing.
        std::thread::sleep(Duration::from_secs(2));
        if let Some(k) = killed.take() {
            cluster.restart(k);
        }
        let in_use = node_in_use(&m);
        let victim = cluster
            .addrs()
            .iter()
            .position(|a| *a == in_use)
            .expect("the node in use is one of the cluster's");
        let was_active = cluster.role(victim) == Role::Active;
        let at = start.elapsed();
        cluster.kill(victim);
        killed = Some(victim);
        kills.push((at, was_active));
        eprintln!("round {round}: killed node{victim} (active: {was_active}) at {at:?}");
        // Writes resume once a leader is elected: each writer succeeds again.
        let resumed = |w: usize| {
            writes.lock().unwrap().iter().any(|x| {
                x.began > at
                    && x.failed.is_none()
                    && x.secret.starts_with(&format!("load/writer{w}-"))
            })
        };
        eventually(
            "writes resume after the kill",
            Duration::from_secs(60),
            || (0..WRITERS).all(resumed).then_some(()),
        );
        let now = node_in_use(&m);
        assert_ne!(now, in_use, "status still names the killed node");
    }
    // The node killed last comes back: the first node given is preferred
    // again once it has served for a while, under the same load.
    if let Some(k) = killed.take() {
        cluster.restart(k);
    }
    let back = Instant::now();
    eventually(
        "the first node is in use again",
        Duration::from_secs(60),
        || (node_in_use(&m) == cluster.addrs()[0]).then_some(()),
    );
    eprintln!("back on node0 {:?} after its restart", back.elapsed());
    // Load on the node back in use, to be checked with the rest.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a load thread panicked");
    }

    // What the store holds, from the active node.
    let active = cluster.wait_active(Duration::from_secs(60));
    let writes = writes.lock().unwrap();
    let mut landed = BTreeSet::new();
    let written: BTreeSet<&String> = writes.iter().map(|w| &w.secret).collect();
    for path in written {
        let (data, _) = cluster
            .node(active)
            .kv2_get("secret", path)
            .expect("the writer's secret");
        for k in data.as_object().expect("an object").keys() {
            landed.insert((path.clone(), k.clone()));
        }
    }
    let ok: Vec<&Write> = writes.iter().filter(|w| w.failed.is_none()).collect();
    let lost: Vec<String> = ok
        .iter()
        .filter(|w| !landed.contains(&(w.secret.clone(), w.key.clone())))
        .map(|w| format!("{}/{}", w.secret, w.key))
        .collect();
    let failed: Vec<&Write> = writes.iter().filter(|w| w.failed.is_some()).collect();
    let failed_landed: Vec<String> = failed
        .iter()
        .filter(|w| landed.contains(&(w.secret.clone(), w.key.clone())))
        .map(|w| format!("{}/{} (errno {:?})", w.secret, w.key, w.failed))
        .collect();

    let reads = reads.lock().unwrap();
    let after = |r: &&Read| r.at >= kills[0].0;
    let read_failures: Vec<&Read> = reads.iter().filter(|r| r.failed.is_some()).collect();
    let slowest = |cold: bool| {
        reads
            .iter()
            .filter(after)
            .filter(|r| r.cold == cold)
            .map(|r| r.took)
            .max()
            .unwrap_or_default()
    };
    // Writers' gap: from the kill to the first success of a write started
    // after it.
    let gaps: Vec<Duration> = kills
        .iter()
        .map(|(at, _)| {
            writes
                .iter()
                .filter(|w| w.began > *at && w.failed.is_none())
                .map(|w| w.at - *at)
                .min()
                .unwrap_or_default()
        })
        .collect();
    eprintln!(
        "HA figures: kills {} (of the active node: {}), reads {} (failed {}), slowest after a kill: warm {:?}, cold {:?}; \
         writes {} (failed {}: errnos {:?}), first write success after each kill {:?}, \
         failed writes that landed (unknown outcome) {}",
        kills.len(),
        kills.iter().filter(|k| k.1).count(),
        reads.len(),
        read_failures.len(),
        slowest(false),
        slowest(true),
        writes.len(),
        failed.len(),
        failed
            .iter()
            .filter_map(|w| w.failed)
            .collect::<BTreeSet<_>>(),
        gaps,
        failed_landed.len(),
    );
    let log = m.log();
    if let Ok(p) = std::env::var("SECRETFS_HA_LOG") {
        let _ = std::fs::write(p, &log);
    }
    let retried = log
        .matches("no active node in the cluster: asking again")
        .count();
    let failovers = log.matches("now using another node of the cluster").count();
    eprintln!("daemon: {failovers} failovers, {retried} retries while no leader");

    assert!(lost.is_empty(), "writes that succeeded are lost: {lost:?}");
    assert!(
        read_failures.is_empty(),
        "reads failed: {:?}",
        read_failures
            .iter()
            .map(|r| (r.at, r.cold, r.failed))
            .collect::<Vec<_>>()
    );
    let bound = timeout + Duration::from_secs(3);
    assert!(
        slowest(true) < bound && slowest(false) < bound,
        "a read took longer than the deadline ({timeout:?}) allows"
    );
    // A failed write that landed must be one whose outcome the daemon
    // logged as unknown (an attempt reached a node that then died).
    let unknown = log.matches("write outcome unknown").count();
    eprintln!("writes whose outcome was unknown: {unknown}");
    assert!(
        failed_landed.len() <= unknown,
        "failed writes that landed: {failed_landed:?}, but only {unknown} outcomes logged unknown"
    );
}
