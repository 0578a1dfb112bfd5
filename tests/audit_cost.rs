//! What `--audit-log` costs a cached read (issue 10 §4): not a timed test,
//! a measurement run by hand and reported in docs/SECURITY.md:
//!
//!     CARGO_TARGET_DIR=... cargo test --release --test audit_cost -- --ignored --nocapture
//!
//! Two mounts of one server, both reaching the daemon on every open: an
//! audited read-only mount (`--audit-log`) and an unaudited `--writable`
//! one. Each round times `open` + `read_to_end` + close of one cached key,
//! per operation, on 1 and on 8 threads, the mounts interleaved; the
//! figure is the median of the rounds' medians.

mod support;

use std::time::Duration;

use support::{median, read_round, seeded, Mount};

const OPS: usize = 4000;
const ROUNDS: usize = 5;

#[test]
#[ignore = "a measurement, run by hand: see the module comment"]
fn audited_cached_read_vs_unaudited_writable_mount() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let audited = Mount::new(&bao, "secret/", &["--audit-log", log.to_str().unwrap()]);
    let writable = Mount::new(&bao, "secret/", &["--writable"]);
    let plain = Mount::new(&bao, "secret/", &[]);
    let mounts = [
        ("audited read-only", audited.at("myapp/db/PASSWORD")),
        ("unaudited --writable", writable.at("myapp/db/PASSWORD")),
        ("unaudited read-only", plain.at("myapp/db/PASSWORD")),
    ];
    for (_, file) in &mounts {
        assert_eq!(std::fs::read(file).unwrap(), b"hunter2");
        read_round(file, 1, 200);
    }
    for threads in [1, 8] {
        let ops = OPS / threads.min(4);
        let mut figures = vec![Vec::new(); mounts.len()];
        for _ in 0..ROUNDS {
            for (i, (_, file)) in mounts.iter().enumerate() {
                figures[i].push(read_round(file, threads, ops));
            }
        }
        let medians: Vec<Duration> = figures.into_iter().map(median).collect();
        for ((name, _), m) in mounts.iter().zip(&medians) {
            println!(
                "{threads} thread(s), {ROUNDS} rounds x {ops} ops: {name:22} p50 {:7.1} µs",
                m.as_secs_f64() * 1e6
            );
        }
        println!(
            "{threads} thread(s): audited / unaudited --writable = {:.2}x",
            medians[0].as_secs_f64() / medians[1].as_secs_f64()
        );
    }
    let lines = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    println!("audit lines written: {lines}");
}
