//! A fault soak, bounded for CI: a `--writable` mount over OpenBao (KV v2)
//! while the server is frozen and thawed (SIGSTOP/SIGCONT: a hung server,
//! a black-holed network) again and again — or, in the second test,
//! killed (SIGKILL) and restarted on its Raft data — with writers (each key written
//! whole by one process-like thread; two writers sharing a secret through
//! different keys), readers of cached keys and readers of never-read
//! secrets. Afterwards, from the store's full version history:
//!
//! - every close that returned 0 is in the store (its value is some
//!   version of its key), and the last one is the key's value now;
//! - no value whose close failed was stored — except writes whose outcome
//!   the mount could not learn, which it must count as such in `status`;
//! - no version holds a value nobody wrote (torn, empty);
//! - no syscall waited much longer than `--timeout` (one deadline per
//!   operation);
//! - a cached key never failed to read (stale-if-error).
//!
//! `SECRETFS_SOAK_SECS` (default 20) sets how long the faults go on; the
//! figures are printed (run with `--nocapture`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{eventually, Bao, Cluster, Mount};

const TIMEOUT: Duration = Duration::from_secs(1);
/// What a syscall may take beyond --timeout on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);

fn soak_length() -> Duration {
    let secs = std::env::var("SECRETFS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// One attempt to write a value: what close said.
struct Attempt {
    value: String,
    ok: bool,
}

/// The longest time one syscall took, and which.
#[derive(Default)]
struct Slowest {
    took: Duration,
    what: String,
}

impl Slowest {
    fn note(&mut self, took: Duration, what: impl FnOnce() -> String) {
        if took > self.took {
            self.took = took;
            self.what = what();
        }
    }
}

/// Writes `value` to `path` the way a program does (open O_TRUNC, write,
/// close), timing each call; whether every call succeeded.
fn write_value(path: &Path, value: &str, slowest: &Mutex<Slowest>) -> bool {
    use std::io::Write;
    let timed = |what: &str, started: Instant| {
        let took = started.elapsed();
        slowest
            .lock()
            .unwrap()
            .note(took, || format!("{what} {}", path.display()));
    };
    let started = Instant::now();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path);
    timed("open", started);
    let Ok(mut file) = file else {
        return false;
    };
    let started = Instant::now();
    let written = file.write_all(value.as_bytes());
    timed("write", started);
    // close(2) by hand: its result is what a shell would ignore and we don't.
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    let started = Instant::now();
    // SAFETY: fd is ours, closed once.
    let closed = unsafe { libc::close(fd) } == 0;
    timed("close", started);
    written.is_ok() && closed
}

/// Every version of `secret`'s key `key`, oldest first (None: the version
/// does not hold the key, or was deleted).
fn history(bao: &Bao, secret: &str, key: &str) -> Vec<Option<String>> {
    let current = bao.kv2_version("secret", secret);
    (1..=current)
        .map(|v| {
            let (status, resp) = bao.api("GET", &format!("secret/data/{secret}?version={v}"), None);
            if status != 200 {
                return None;
            }
            resp["data"]["data"][key].as_str().map(str::to_string)
        })
        .collect()
}

/// A soak under way: the mount and the threads working on it.
struct Soak {
    m: Mount,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    writers: Vec<(String, &'static str)>,
    logs: Vec<Arc<Mutex<Vec<Attempt>>>>,
    slowest: Arc<Mutex<Slowest>>,
    cached_failures: Arc<Mutex<Vec<String>>>,
}

/// Seeds `bao`, mounts it and starts the writers and readers.
fn start_soak(bao: &Bao) -> Soak {
    // Keep every version: the history is what is checked.
    let (status, resp) = bao.api(
        "POST",
        "secret/config",
        Some(json!({"max_versions": 100000})),
    );
    assert!(status < 300, "{status} {resp}");
    for n in 0..4 {
        bao.kv2_put(
            "secret",
            &format!("soak/cached{n}"),
            json!({"V": format!("cached-{n}")}),
        );
        bao.kv2_put("secret", &format!("soak/cold{n}"), json!({"V": "cold"}));
    }
    let m = Mount::builder(bao, "secret/")
        .args(&[
            "--writable",
            "--timeout",
            "1s",
            "--ttl",
            "2s",
            "--stale-if-error",
            "10m",
        ])
        .start();
    // Warm the cached keys (and the folders above everything).
    for n in 0..4 {
        assert_eq!(
            std::fs::read_to_string(m.at(&format!("soak/cached{n}/V"))).unwrap(),
            format!("cached-{n}")
        );
    }
    std::fs::create_dir(m.at("soak/shared")).unwrap();

    // (secret, key) written by each writer.
    let writers: Vec<(String, &'static str)> = vec![
        ("soak/w0".into(), "K"),
        ("soak/w1".into(), "K"),
        ("soak/shared".into(), "A"),
        ("soak/shared".into(), "B"),
    ];
    for (secret, _) in &writers[..2] {
        std::fs::create_dir(m.at(secret)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(Mutex::new(Slowest::default()));
    let mut threads = Vec::new();
    let mut logs: Vec<Arc<Mutex<Vec<Attempt>>>> = Vec::new();
    for (w, (secret, key)) in writers.iter().enumerate() {
        let log = Arc::new(Mutex::new(Vec::new()));
        logs.push(log.clone());
        let path: PathBuf = m.at(&format!("{secret}/{key}"));
        let (stop, slowest) = (stop.clone(), slowest.clone());
        threads.push(std::thread::spawn(move || {
            let mut round = 0u32;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let value = format!("w{w}-round{round}-{}", "x".repeat((round % 7) as usize));
                let ok = write_value(&path, &value, &slowest);
                log.lock().unwrap().push(Attempt { value, ok });
                // The load's pace (a soak, not a synchronisation).
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    let cached_failures = Arc::new(Mutex::new(Vec::new()));
    for n in 0..4 {
        let path = m.at(&format!("soak/cached{n}/V"));
        let (stop, slowest, failures) = (stop.clone(), slowest.clone(), cached_failures.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let read = std::fs::read_to_string(&path);
                slowest
                    .lock()
                    .unwrap()
                    .note(started.elapsed(), || format!("read {}", path.display()));
                match read {
                    Ok(v) if v == format!("cached-{n}") => {}
                    other => failures
                        .lock()
                        .unwrap()
                        .push(format!("{}: {other:?}", path.display())),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }));
    }
    {
        // Cold reads: whatever they answer, they answer within the deadline.
        let (stop, slowest) = (stop.clone(), slowest.clone());
        let paths: Vec<PathBuf> = (0..4).map(|n| m.at(&format!("soak/cold{n}/V"))).collect();
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let path = &paths[i % paths.len()];
                i += 1;
                let started = Instant::now();
                let _ = std::fs::read(path);
                slowest.lock().unwrap().note(started.elapsed(), || {
                    format!("cold read {}", path.display())
                });
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }

    Soak {
        m,
        stop,
        threads,
        writers,
        logs,
        slowest,
        cached_failures,
    }
}

/// A pseudo-random duration in `lo..hi` ms (seeded by the process id).
fn jitter(seed: &mut u64, lo: u64, hi: u64) -> Duration {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Duration::from_millis(lo + (*seed >> 33) % (hi - lo))
}

/// Stops the soak and checks the store's history against what each
/// writer was told; `faults` is how many faults were made.
fn finish(soak: Soak, bao: &Bao, faults: usize) {
    let Soak {
        m,
        stop,
        threads,
        writers,
        logs,
        slowest,
        cached_failures,
    } = soak;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }

    // The mount finds the store again by itself.
    let (_, report) = eventually(
        "the mount to find the store again",
        Duration::from_secs(30),
        || {
            let (code, report) = support::status(m.path());
            (code == Some(0)).then_some(((), report))
        },
    );
    let unknown = report["unknown_outcomes"].as_u64().unwrap_or(0);

    let mut succeeded = 0;
    let mut failed = 0;
    let mut failed_landed = 0;
    for ((secret, key), log) in writers.iter().zip(&logs) {
        let log = log.lock().unwrap();
        let stored = history(bao, secret, key);
        let ok: BTreeSet<&str> = log
            .iter()
            .filter(|a| a.ok)
            .map(|a| a.value.as_str())
            .collect();
        let bad: BTreeSet<&str> = log
            .iter()
            .filter(|a| !a.ok)
            .map(|a| a.value.as_str())
            .collect();
        succeeded += ok.len();
        failed += bad.len();
        let in_store: BTreeSet<&str> = stored.iter().flatten().map(String::as_str).collect();
        for v in &ok {
            assert!(
                in_store.contains(v),
                "{secret}/{key}: close returned 0 for {v:?}, never stored"
            );
        }
        for v in &in_store {
            assert!(
                ok.contains(v) || bad.contains(v),
                "{secret}/{key}: stored {v:?}, which no writer wrote whole"
            );
        }
        failed_landed += in_store.iter().filter(|v| bad.contains(*v)).count();
        // The key's value now is the last value whose close returned 0,
        // unless a later write of unknown outcome landed.
        let current = stored.last().cloned().flatten();
        let last_ok = log.iter().rev().find(|a| a.ok).map(|a| a.value.clone());
        let later_unknown: BTreeMap<&str, ()> = log
            .iter()
            .rev()
            .take_while(|a| !a.ok)
            .map(|a| (a.value.as_str(), ()))
            .collect();
        let current_ok = current == last_ok
            || current
                .as_deref()
                .is_some_and(|c| later_unknown.contains_key(c));
        assert!(
            current_ok,
            "{secret}/{key}: now {current:?}, last success {last_ok:?}"
        );
    }
    let failures = cached_failures.lock().unwrap();
    let slowest = slowest.lock().unwrap();
    println!(
        "soak: {:?} of faults, {faults} faults; {succeeded} writes succeeded, {failed} failed \
         ({failed_landed} of them landed, {unknown} outcomes reported unknown); \
         slowest call {:?} ({}); {} cached reads failed",
        soak_length(),
        slowest.took,
        slowest.what,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "cached keys failed to read: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(
        failed_landed as u64 <= unknown,
        "{failed_landed} writes whose close failed were stored, but the mount reported only {unknown} unknown outcomes"
    );
    assert!(
        slowest.took <= TIMEOUT + SLACK,
        "a call waited {:?} ({}), past the {TIMEOUT:?} deadline",
        slowest.took,
        slowest.what
    );
    assert!(succeeded > 0 && faults > 0, "the soak did nothing");
}

#[test]
fn under_a_freezing_store_no_success_is_lost_no_failure_lands_and_no_call_waits() {
    let bao = Bao::start();
    let soak = start_soak(&bao);
    // The faults: frozen for 0.3–2.5 s, thawed for 0.5–2.5 s, until the end.
    let end = Instant::now() + soak_length();
    let (mut freezes, mut seed) = (0, u64::from(std::process::id()));
    while Instant::now() < end {
        // The faults' own timing is the scenario.
        std::thread::sleep(jitter(&mut seed, 500, 2500));
        bao.pause();
        freezes += 1;
        std::thread::sleep(jitter(&mut seed, 300, 2500));
        bao.resume();
    }
    finish(soak, &bao, freezes);
}

#[test]
fn under_a_killed_and_restarted_store_no_success_is_lost_and_no_failure_lands() {
    // One Raft node: its data survives SIGKILL, and it comes back sealed
    // (the cluster fixture unseals it).
    let mut cluster = Cluster::start_n(1);
    let soak = start_soak(cluster.node(0));
    let end = Instant::now() + soak_length();
    let (mut kills, mut seed) = (0, u64::from(std::process::id()) ^ 0x5eed);
    while Instant::now() < end {
        // The faults' own timing is the scenario.
        std::thread::sleep(jitter(&mut seed, 1000, 3000));
        cluster.kill(0);
        kills += 1;
        std::thread::sleep(jitter(&mut seed, 200, 1500));
        cluster.restart(0);
    }
    finish(soak, cluster.node(0), kills);
}
