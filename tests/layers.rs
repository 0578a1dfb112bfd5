//! Layered mounts against a real OpenBao: `secretfs mount SOURCE MNT
//! --layer SOURCE2 --layer SOURCE3` shows a project → environment →
//! service setup merged, names the layer of each value in
//! `user.secretfs.source`, writes to the top layer only, uncovers the
//! value below on `rm`, and refuses `rm` of a key only a lower layer holds.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{eventually, run, run_ok, s, write_and_close, Bao, Mount};

/// project → environment → service, as three folders.
fn three_layers(bao: &Bao) {
    bao.kv2_put(
        "secret",
        "project/app",
        json!({"A": "project", "B": "project", "C": "project"}),
    );
    bao.kv2_put("secret", "project/only-project", json!({"X": "x"}));
    bao.kv2_put("secret", "prod/app", json!({"B": "prod"}));
    bao.kv2_put("secret", "api/app", json!({"C": "api"}));
}

fn mount(bao: &Bao, extra: &[&str]) -> Mount {
    let mut args = vec![
        "--layer",
        "secret/prod",
        "--layer",
        "secret/api",
        "--ttl",
        "1s",
    ];
    args.extend_from_slice(extra);
    Mount::new(bao, "secret/project", &args)
}

fn read(m: &Mount, rel: &str) -> String {
    String::from_utf8(std::fs::read(m.at(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))).unwrap()
}

fn source_of(m: &Mount, rel: &str) -> String {
    run_ok(
        "getfattr",
        &["--only-values", "-n", "user.secretfs.source", s(&m.at(rel))],
    )
}

#[test]
fn a_secret_in_several_layers_shows_every_key_the_top_most_value_winning() {
    let bao = Bao::start();
    three_layers(&bao);
    let m = mount(&bao, &[]);
    assert_eq!(run_ok("ls", &[s(m.path())]), "app\nonly-project\n");
    assert_eq!(run_ok("ls", &[s(&m.at("app"))]), "A\nB\nC\n");
    assert_eq!(read(&m, "app/A"), "project");
    assert_eq!(read(&m, "app/B"), "prod");
    assert_eq!(read(&m, "app/C"), "api");
    assert_eq!(source_of(&m, "app/A"), "secret/project");
    assert_eq!(source_of(&m, "app/B"), "secret/prod");
    assert_eq!(source_of(&m, "app/C"), "secret/api");
}

#[test]
fn a_change_below_shows_unless_a_layer_above_overrides_it() {
    let bao = Bao::start();
    three_layers(&bao);
    let m = mount(&bao, &[]);
    assert_eq!(read(&m, "app/A"), "project");
    bao.kv2_put(
        "secret",
        "project/app",
        json!({"A": "new", "B": "hidden", "C": "project"}),
    );
    eventually("the new bottom value", Duration::from_secs(15), || {
        (read(&m, "app/A") == "new").then_some(())
    });
    assert_eq!(read(&m, "app/B"), "prod");
}

#[test]
fn writes_go_to_the_top_layer_and_rm_uncovers_the_value_below() {
    let bao = Bao::start();
    three_layers(&bao);
    let m = mount(&bao, &["--writable"]);
    // An override of a key held only below lands in the top layer alone.
    write_and_close(&m.at("app/A"), b"mine").unwrap();
    assert_eq!(read(&m, "app/A"), "mine");
    assert_eq!(source_of(&m, "app/A"), "secret/api");
    assert_eq!(
        bao.kv2_get("secret", "api/app").unwrap().0,
        json!({"A": "mine", "C": "api"})
    );
    assert_eq!(
        bao.kv2_get("secret", "project/app").unwrap().0,
        json!({"A": "project", "B": "project", "C": "project"})
    );
    assert_eq!(
        bao.kv2_get("secret", "prod/app").unwrap().0,
        json!({"B": "prod"})
    );
    // rm of the top layer's value uncovers the one below.
    std::fs::remove_file(m.at("app/C")).unwrap();
    assert_eq!(read(&m, "app/C"), "project");
    assert_eq!(source_of(&m, "app/C"), "secret/project");
    assert_eq!(
        bao.kv2_get("secret", "api/app").unwrap().0,
        json!({"A": "mine"})
    );
}

#[test]
fn rm_of_a_key_only_a_lower_layer_holds_is_refused_and_changes_nothing() {
    let bao = Bao::start();
    three_layers(&bao);
    let m = mount(&bao, &["--writable"]);
    let out = run("rm", &[s(&m.at("only-project/X"))]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(
        bao.kv2_get("secret", "project/only-project").unwrap().0,
        json!({"X": "x"})
    );
    assert!(bao.kv2_get("secret", "api/only-project").is_none());
    assert_eq!(read(&m, "only-project/X"), "x");
    let log = m.log();
    assert!(
        log.contains("secret/project"),
        "the log names the layer: {log}"
    );
}
