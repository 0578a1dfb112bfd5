//! Freshness under load (issue 10 §3): not a timed test, a measurement run
//! by hand and reported in docs/BENCHMARKS.md:
//!
//!     cargo test --release --test freshness_load -- --ignored --nocapture
//!
//! 20 read-only mounts of one OpenBao (with an audit log counting its
//! requests), each read by a thread that keeps cycling through the same
//! 100 secrets, all at `--ttl 5s`. Meanwhile one secret is changed every
//! 7 s and a watcher per mount polls it every 100 ms. Reported: how often
//! each (mount, secret) was fetched again (the mean interval, from the
//! server's count of GETs) and how long each mount took to show a change
//! (median, p99, max over all changes and mounts), against the bound of
//! TTL + one refresh. `SECRETFS_LOAD_SECS` (default 60), `SECRETFS_LOAD_MOUNTS`
//! (20) and `SECRETFS_LOAD_SECRETS` (100) change the size.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Bao, Mount};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
#[ignore = "a measurement, run by hand: see the module comment"]
fn twenty_mounts_reading_a_hundred_secrets_each_stay_within_ttl_plus_one_refresh() {
    let secs = env_or("SECRETFS_LOAD_SECS", 60);
    let mounts_n = env_or("SECRETFS_LOAD_MOUNTS", 20) as usize;
    let secrets_n = env_or("SECRETFS_LOAD_SECRETS", 100) as usize;
    let ttl = Duration::from_secs(5);

    let bao = Bao::start_audited();
    for s in 0..secrets_n {
        bao.kv2_put(
            "secret",
            &format!("load/s{s}"),
            json!({"V": format!("v{s}")}),
        );
    }
    bao.kv2_put("secret", "load/changing", json!({"V": "0"}));
    let mounts: Vec<Mount> = (0..mounts_n)
        .map(|_| Mount::new(&bao, "secret/load", &["--ttl", "5s"]))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let generation = Arc::new(AtomicU64::new(0));
    let changed_at = Arc::new(Mutex::new(vec![Instant::now()]));
    let delays = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for m in &mounts {
        let paths: Vec<_> = (0..secrets_n).map(|s| m.at(&format!("s{s}/V"))).collect();
        let reading = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !reading.load(Ordering::Relaxed) {
                for p in &paths {
                    let _ = std::fs::read(p);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
        let watched = m.at("changing/V");
        let (stop, generation, changed_at, delays) = (
            stop.clone(),
            generation.clone(),
            changed_at.clone(),
            delays.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut seen = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(v) = std::fs::read_to_string(&watched) {
                    let shown: u64 = v.parse().unwrap_or(0);
                    if shown > seen {
                        let at = changed_at.lock().unwrap()[shown as usize];
                        if shown == generation.load(Ordering::Relaxed) {
                            delays.lock().unwrap().push(at.elapsed());
                        }
                        seen = shown;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    // Let every mount read everything once before counting.
    std::thread::sleep(Duration::from_secs(10));
    let gets_before = bao.requests_under("read", "secret/data/load/s");
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    while Instant::now() + Duration::from_secs(7) <= end {
        // The changes' pace: the measured load.
        std::thread::sleep(Duration::from_secs(7));
        let next = generation.load(Ordering::Relaxed) + 1;
        changed_at.lock().unwrap().push(Instant::now());
        bao.kv2_put("secret", "load/changing", json!({"V": next.to_string()}));
        generation.store(next, Ordering::Relaxed);
    }
    // The audit log is read as it is at this moment (reading it takes a
    // few seconds that must not count as measured time).
    let measured = started.elapsed();
    let gets = bao.requests_under("read", "secret/data/load/s") - gets_before;
    // The last change's watchers get a TTL and a bit to see it.
    std::thread::sleep(ttl + Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }

    let per_pair = gets as f64 / (mounts_n * secrets_n) as f64;
    let interval = measured.as_secs_f64() / per_pair.max(f64::MIN_POSITIVE);
    let mut d = delays.lock().unwrap().clone();
    d.sort();
    let changes = generation.load(Ordering::Relaxed);
    println!(
        "freshness under load: {mounts_n} mounts x {secrets_n} secrets, --ttl 5s, {measured:.0?} measured\n  \
         GETs of the read secrets: {gets} ({per_pair:.1} per mount and secret): each fetched again every {interval:.2} s on average\n  \
         a change shown after: median {:.2?}, p99 {:.2?}, max {:.2?} ({} of {} mount-changes seen; bound TTL + one refresh)",
        percentile(&d, 0.5),
        percentile(&d, 0.99),
        d.last().copied().unwrap_or_default(),
        d.len(),
        changes as usize * mounts_n,
    );
}
