//! What `--allow` rules cost a cached open+read+close (issue 10 §5): not a
//! timed test, a measurement run by hand and reported in docs/SECURITY.md:
//!
//!     CARGO_TARGET_DIR=... cargo test --release --test access_cost -- --ignored --nocapture
//!
//! One file on tmpfs, one on a mount without rules (the kernel's "no
//! open" path), and on a mount with rules: a file no rule covers and
//! files covered by an `exe=` rule, an `exe=…@sha256=` rule and a `uid=`
//! rule (each letting this test's process in). Rounds interleave the
//! files; the figure is the median of the rounds' medians, and its ratio
//! to tmpfs in the same run.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{median, read_round, seeded, Mount};

const OPS: usize = 3000;
const ROUNDS: usize = 5;

#[test]
#[ignore = "a measurement, run by hand: see the module comment"]
fn covered_and_uncovered_cached_reads_against_tmpfs() {
    let bao = seeded();
    let exe = std::env::current_exe().unwrap();
    let bytes = std::fs::read(&exe).unwrap();
    let digest = ring_free_sha256(&exe);
    println!("test binary: {} bytes", bytes.len());
    let rules = [
        format!("myapp/db/PASSWORD:exe={}", exe.display()),
        format!("myapp/db/UNICODE:exe={}@sha256={digest}", exe.display()),
        "myapp/db/MULTI:uid=0".to_string(),
    ];
    let mut args = vec![];
    for r in &rules {
        args.push("--allow");
        args.push(r.as_str());
    }
    let ruled = Mount::new(&bao, "secret/", &args);
    let plain = Mount::new(&bao, "secret/", &[]);
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let tmpfs = shm.path().join("PASSWORD");
    std::fs::write(&tmpfs, "hunter2").unwrap();
    let files = [
        ("tmpfs", tmpfs),
        ("no rules (no open)", plain.at("myapp/db/PASSWORD")),
        ("rules, uncovered", ruled.at("myapp/db/USER")),
        ("rules, covered exe=", ruled.at("myapp/db/PASSWORD")),
        ("rules, covered exe@sha256", ruled.at("myapp/db/UNICODE")),
        ("rules, covered uid=", ruled.at("myapp/db/MULTI")),
    ];
    for (_, file) in &files {
        assert!(!std::fs::read(file).unwrap().is_empty());
        read_round(file, 1, 200);
    }
    for threads in [1, 4] {
        let ops = OPS / threads;
        let mut figures = vec![Vec::new(); files.len()];
        for _ in 0..ROUNDS {
            for (i, (_, file)) in files.iter().enumerate() {
                figures[i].push(read_round(file, threads, ops));
            }
        }
        let medians: Vec<Duration> = figures.into_iter().map(median).collect();
        for ((name, _), m) in files.iter().zip(&medians) {
            println!(
                "{threads} thread(s), {ROUNDS} rounds x {ops} ops: {name:26} p50 {:7.1} µs  {:5.2}x tmpfs",
                m.as_secs_f64() * 1e6,
                m.as_secs_f64() / medians[0].as_secs_f64()
            );
        }
    }
}

/// `sha256sum` of a file, as the rule writes it.
fn ring_free_sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}
