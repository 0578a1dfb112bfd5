//! The test fixtures themselves (tests/support): the OpenBao dev server
//! round-trips KV v1 and KV v2 data, including on mounts enabled by the
//! test; a one-node Raft server (`Cluster::start_n(1)`) keeps its data
//! across a restart.
//!
//! Fixtures are the shared ones in tests/support (one OpenBao dev server
//! per test: it starts in about a second, tests may stop it, and a server
//! of its own keeps each test's data apart). Nothing here skips: a missing
//! `bao` or FUSE fails the test with a message that says what to install.

mod support;

use serde_json::json;
use support::Bao;

#[test]
fn bao_fixture_starts_and_round_trips_kv1_and_kv2() {
    let bao = Bao::start();
    bao.kv2_put("secret", "fixture/a", json!({"k": "v", "n": 1}));
    assert_eq!(
        bao.kv2_get("secret", "fixture/a").map(|(d, _)| d),
        Some(json!({"k": "v", "n": 1}))
    );
    assert_eq!(bao.kv2_get("secret", "fixture/missing"), None);
    bao.enable_kv("kv1", 1);
    bao.kv1_put("kv1", "fixture/b", json!({"k": "v1"}));
    assert_eq!(bao.kv1_get("kv1", "fixture/b"), Some(json!({"k": "v1"})));
    // A KV v2 mount takes writes as soon as enable_kv returns (it waits
    // for the mount's upgrade to end).
    for mount in ["kv2-a", "kv2-b", "kv2-c"] {
        bao.enable_kv(mount, 2);
        bao.kv2_put(mount, "fixture/c", json!({"k": mount}));
        assert_eq!(
            bao.kv2_get(mount, "fixture/c").map(|(d, _)| d),
            Some(json!({"k": mount}))
        );
    }
}

#[test]
fn a_one_node_raft_server_keeps_its_data_across_a_restart() {
    let mut server = support::Cluster::start_n(1);
    server
        .node(0)
        .kv2_put("secret", "fixture/kept", json!({"k": "v"}));
    server.kill(0);
    assert_eq!(server.role(0), support::Role::Down);
    server.restart(0);
    server.wait_active(std::time::Duration::from_secs(30));
    assert_eq!(
        server
            .node(0)
            .kv2_get("secret", "fixture/kept")
            .map(|(d, _)| d),
        Some(json!({"k": "v"}))
    );
}
