//! Following a highly available store: a 3-node OpenBao Raft cluster on
//! loopback, a mount given every node's address.

mod support;

use std::time::{Duration, Instant};

use support::Cluster;

#[test]
fn a_cluster_starts_and_a_killed_leader_is_replaced() {
    let started = Instant::now();
    let mut cluster = Cluster::start();
    eprintln!("cluster up in {:?}", started.elapsed());
    let active = cluster.active().expect("an active node");
    cluster.node(active).kv2_put("secret", "x", serde_json::json!({"a": "1"}));
    cluster.kill(active);
    let t = Instant::now();
    let next = cluster.wait_active(Duration::from_secs(60));
    eprintln!("new leader node{next} after {:?}", t.elapsed());
    cluster.restart(active);
    eprintln!("restarted: {:?}", cluster.role(active));
}

#[test]
fn probe_large_entry() {
    let cluster = Cluster::start_n(1);
    let big = "x".repeat(1_100_000);
    let (status, resp) = cluster.node(0).api(
        "POST",
        "secret/data/big",
        Some(serde_json::json!({"data": {"k": big}})),
    );
    eprintln!("{status} {resp}");
}
