//! Large trees (issue 14 §6): not a timed test, a measurement run by hand
//! and reported in docs/SCALE.md:
//!
//!     cargo build --release && cargo test --release --test large_tree -- --ignored --nocapture
//!
//! One folder of N secrets (one key each; `SECRETFS_TREE_SIZES`, default
//! "1000,10000"; 50000 takes minutes to seed) in an OpenBao with an audit
//! log; a fresh read-only mount per size; `find MNT -type f` walks it.
//! Reported per size: the walk's time per secret, the LISTs and GETs the
//! server received, the daemon's resident memory after the walk and per
//! inode it holds, and a second `ls -l` of the folder. `SECRETFS_TREE_ARGS`
//! adds mount options (`--max-inodes 20000`).

mod support;

use std::process::Command;
use std::time::Instant;

use serde_json::json;
use support::{Bao, Mount};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "a measurement, run by hand: see the module comment"]
fn walking_large_folders() {
    let sizes: Vec<usize> = std::env::var("SECRETFS_TREE_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let bao = Bao::start_audited();
    for &n in &sizes {
        let folder = format!("tree{n}");
        for i in 0..n {
            bao.kv2_put("secret", &format!("{folder}/s{i:05}"), json!({"K": "v"}));
        }
        // SECRETFS_TREE_ARGS: more mount options, e.g. "--max-inodes 20000".
        let extra = std::env::var("SECRETFS_TREE_ARGS").unwrap_or_default();
        let mut args = vec!["--ttl", "5m"];
        args.extend(extra.split_whitespace());
        let m = Mount::new(&bao, &format!("secret/{folder}"), &args);
        let pid = m.pid().expect("daemon pid");
        let rss_mounted = rss_kib(pid);
        let (lists0, gets0) = (
            bao.requests_under("list", "secret/metadata/"),
            bao.requests_under("read", "secret/data/"),
        );
        let started = Instant::now();
        let out = Command::new("find")
            .arg(m.path())
            .args(["-type", "f"])
            .output()
            .expect("find");
        let walk = started.elapsed();
        let files = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(files, n, "find saw {files} files");
        let lists = bao.requests_under("list", "secret/metadata/") - lists0;
        let gets = bao.requests_under("read", "secret/data/") - gets0;
        let rss = rss_kib(pid);
        let (_, report) = support::status(m.path());
        let inodes = report["inodes"].as_u64().unwrap_or(0);
        let started = Instant::now();
        let ls = Command::new("ls")
            .arg("-l")
            .arg(m.path())
            .output()
            .expect("ls");
        let ls_took = started.elapsed();
        assert!(ls.status.success());
        println!(
            "{n} secrets: find {walk:.2?} ({:.0} µs per secret), {lists} LISTs, {gets} GETs; \
             RSS {rss_mounted} KiB mounted -> {rss} KiB after ({:.0} bytes per inode, {inodes} inodes); \
             ls -l again {ls_took:.2?}",
            walk.as_secs_f64() * 1e6 / n as f64,
            (rss.saturating_sub(rss_mounted) * 1024) as f64 / inodes.max(1) as f64,
        );
    }
}
