//! Layered mounts against a real OpenBao: `secretfs mount SOURCE MNT
//! --layer SOURCE2 --layer SOURCE3` shows a project → environment →
//! service setup merged, names the layer of each value in
//! `user.secretfs.source`, writes to the top layer only, uncovers the
//! value below on `rm`, and refuses `rm` of a key only a lower layer holds.
//! Those run per store (`per_store!`: three folders of one store as the
//! layers), and a local overrides file lies over each store; what needs
//! Vault's policies or a server to stop runs on OpenBao.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{
    eventually, names, per_store, run, run_ok, s, set, status, write_and_close, AgeFile, Backend,
    Bao, Mount, Store,
};

/// project → environment → service, as three folders of `store`.
fn three_layers_in(store: &Store) {
    store.put(
        "project/app",
        json!({"A": "project", "B": "project", "C": "project"}),
    );
    store.put("project/only-project", json!({"X": "x"}));
    store.put("prod/app", json!({"B": "prod"}));
    store.put("api/app", json!({"C": "api"}));
}

/// `project` with `prod` and `api` laid over it.
fn mount_layers(store: &Store, extra: &[&str]) -> Mount {
    let (prod, api) = (store.source("prod"), store.source("api"));
    let mut args = vec!["--layer", &prod, "--layer", &api, "--ttl", "1s"];
    args.extend_from_slice(extra);
    store.mount("project", &args)
}

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

fn read(m: &Mount, rel: &str) -> String {
    String::from_utf8(std::fs::read(m.at(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))).unwrap()
}

fn source_of(m: &Mount, rel: &str) -> String {
    run_ok(
        "getfattr",
        &["--only-values", "-n", "user.secretfs.source", s(&m.at(rel))],
    )
}

per_store!(a_secret_in_several_layers_shows_every_key_the_top_most_value_winning);
fn a_secret_in_several_layers_shows_every_key_the_top_most_value_winning(backend: Backend) {
    let store = Store::start(backend);
    three_layers_in(&store);
    let m = mount_layers(&store, &[]);
    assert_eq!(run_ok("ls", &[s(m.path())]), "app\nonly-project\n");
    assert_eq!(run_ok("ls", &[s(&m.at("app"))]), "A\nB\nC\n");
    assert_eq!(read(&m, "app/A"), "project");
    assert_eq!(read(&m, "app/B"), "prod");
    assert_eq!(read(&m, "app/C"), "api");
    assert_eq!(source_of(&m, "app/A"), store.source("project"));
    assert_eq!(source_of(&m, "app/B"), store.source("prod"));
    assert_eq!(source_of(&m, "app/C"), store.source("api"));
}

per_store!(a_change_below_shows_unless_a_layer_above_overrides_it);
fn a_change_below_shows_unless_a_layer_above_overrides_it(backend: Backend) {
    let store = Store::start(backend);
    three_layers_in(&store);
    let m = mount_layers(&store, &[]);
    assert_eq!(read(&m, "app/A"), "project");
    store.put(
        "project/app",
        json!({"A": "new", "B": "hidden", "C": "project"}),
    );
    eventually("the new bottom value", Duration::from_secs(15), || {
        (read(&m, "app/A") == "new").then_some(())
    });
    assert_eq!(read(&m, "app/B"), "prod");
}

per_store!(writes_go_to_the_top_layer_and_rm_uncovers_the_value_below);
fn writes_go_to_the_top_layer_and_rm_uncovers_the_value_below(backend: Backend) {
    let store = Store::start(backend);
    three_layers_in(&store);
    let m = mount_layers(&store, &["--writable"]);
    // An override of a key held only below lands in the top layer alone.
    write_and_close(&m.at("app/A"), b"mine").unwrap();
    assert_eq!(read(&m, "app/A"), "mine");
    assert_eq!(source_of(&m, "app/A"), store.source("api"));
    assert_eq!(store.data("api/app"), json!({"A": "mine", "C": "api"}));
    assert_eq!(
        store.data("project/app"),
        json!({"A": "project", "B": "project", "C": "project"})
    );
    assert_eq!(store.data("prod/app"), json!({"B": "prod"}));
    // rm of the top layer's value uncovers the one below.
    std::fs::remove_file(m.at("app/C")).unwrap();
    assert_eq!(read(&m, "app/C"), "project");
    assert_eq!(source_of(&m, "app/C"), store.source("project"));
    assert_eq!(store.data("api/app"), json!({"A": "mine"}));
}

per_store!(rm_of_a_key_only_a_lower_layer_holds_is_refused_and_changes_nothing);
fn rm_of_a_key_only_a_lower_layer_holds_is_refused_and_changes_nothing(backend: Backend) {
    let store = Store::start(backend);
    three_layers_in(&store);
    let m = mount_layers(&store, &["--writable"]);
    let out = run("rm", &[s(&m.at("only-project/X"))]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(store.data("project/only-project"), json!({"X": "x"}));
    assert_eq!(store.get("api/only-project"), None);
    assert_eq!(read(&m, "only-project/X"), "x");
    let log = m.log();
    assert!(
        log.contains(&store.source("project")),
        "the log names the layer: {log}"
    );
}

// The way a developer keeps local overrides: `--layer
// file:overrides.age` over the team's store, whichever it is. Reads mix
// both; writes go to the file, never to the store below.
per_store!(a_local_overrides_file_lies_over_any_store);
fn a_local_overrides_file_lies_over_any_store(backend: Backend) {
    let store = Store::start(backend);
    store.put("app/db", json!({"USER": "app", "PASSWORD": "from-store"}));
    let over = AgeFile::new();
    over.edit(|doc| doc["secrets"]["db"] = json!({"data": {"PASSWORD": "local"}}));
    // One identity file opening both files (age reads every key in it).
    let identity = over.path("identities.txt");
    let mut keys = std::fs::read_to_string(over.key()).expect("key");
    if backend == Backend::File {
        keys.push_str(&std::fs::read_to_string(store.age().key()).expect("key"));
    }
    std::fs::write(&identity, keys).expect("identities");
    let layer = format!("file:{}", over.file().display());
    let m = store
        .bare_builder("app")
        .args(&["--layer", &layer, "--identity", s(&identity), "--writable"])
        .start();
    assert_eq!(read(&m, "db/USER"), "app");
    assert_eq!(read(&m, "db/PASSWORD"), "local");
    assert_eq!(source_of(&m, "db/PASSWORD"), layer);
    assert_eq!(source_of(&m, "db/USER"), store.source("app"));
    write_and_close(&m.at("db/USER"), b"me").expect("write");
    assert_eq!(
        over.get("db").map(|(d, _)| d),
        Some(json!({"PASSWORD": "local", "USER": "me"}))
    );
    assert_eq!(
        store.data("app/db"),
        json!({"USER": "app", "PASSWORD": "from-store"})
    );
}

/// Reads and lists of everything but the `project` layer.
const ALL_BUT_PROJECT: &str = r#"
path "secret/data/prod/*" { capabilities = ["read", "list"] }
path "secret/metadata/prod/*" { capabilities = ["read", "list"] }
path "secret/metadata/prod" { capabilities = ["list"] }
path "secret/data/api/*" { capabilities = ["create", "read", "update", "list"] }
path "secret/metadata/api/*" { capabilities = ["read", "list"] }
path "secret/metadata/api" { capabilities = ["list"] }
"#;

/// Everything of the three layers.
const ALL_LAYERS: &str = r#"
path "secret/data/*" { capabilities = ["create", "read", "update", "list"] }
path "secret/metadata/*" { capabilities = ["read", "list"] }
"#;

fn mount_as(bao: &Bao, token: &str, extra: &[&str]) -> Mount {
    let mut args = vec![
        "--layer",
        "secret/prod",
        "--layer",
        "secret/api",
        "--ttl",
        "1s",
    ];
    args.extend_from_slice(extra);
    Mount::with_token(bao, token, "secret/project", &args)
}

fn errno_of_read(m: &Mount, rel: &str) -> Option<i32> {
    std::fs::read(m.at(rel))
        .err()
        .and_then(|e| e.raw_os_error())
}

/// How often the daemon's log says that a layer cannot be read.
fn layer_warnings(m: &Mount) -> usize {
    m.log().matches("a layer cannot be read").count()
}

/// The warnings the daemon logged for single failed requests: what a
/// degraded layer makes fail is logged once for the layer instead.
fn request_warnings(m: &Mount) -> Vec<String> {
    m.log()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("request failed"))
        .map(str::to_string)
        .collect()
}

/// What `secretfs status` says of the layers: (layer, state) of each.
fn degraded_layers(m: &Mount) -> Vec<(String, String)> {
    let (_, report) = status(m.path());
    report["degraded_layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no degraded_layers in {report}"))
        .iter()
        .map(|d| {
            (
                d["layer"].as_str().unwrap_or_default().to_string(),
                d["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_mount_whose_token_may_not_read_the_bottom_layer_serves_the_layers_above() {
    let bao = Bao::start();
    three_layers(&bao);
    let token = bao.token_with_policy("no-project", ALL_BUT_PROJECT);
    let m = mount_as(&bao, &token, &[]);
    // What the readable layers hold shows; what only the forbidden one
    // could hold does not.
    assert_eq!(run_ok("ls", &[s(m.path())]), "app\n");
    assert_eq!(run_ok("ls", &[s(&m.at("app"))]), "B\nC\n");
    assert_eq!(read(&m, "app/B"), "prod");
    assert_eq!(read(&m, "app/C"), "api");
    assert!(m.at("app/C").is_file());
    assert_eq!(errno_of_read(&m, "app/A"), Some(libc::ENOENT));
    assert_eq!(source_of(&m, "app/B"), "secret/prod");
    // Status names the layer, and the mount is not healthy.
    let (code, report) = status(m.path());
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        degraded_layers(&m),
        [("secret/project".to_string(), "forbidden".to_string())]
    );
    assert!(
        report["degraded_layers"][0]["since_unix"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{report}"
    );
    // Logged once, not once per request.
    for _ in 0..3 {
        read(&m, "app/B");
        run_ok("ls", &[s(&m.at("app"))]);
        // By design: past the TTL, so that each round asks the store again.
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert_eq!(layer_warnings(&m), 1, "{}", m.log());
}

/// Everything of `prod` and `api`; the secrets of `project` may be read,
/// but none of its folders listed.
const PROJECT_UNLISTED: &str = r#"
path "secret/data/project/*" { capabilities = ["read"] }
path "secret/metadata/project/*" { capabilities = ["read"] }
path "secret/data/prod/*" { capabilities = ["read", "list"] }
path "secret/metadata/prod/*" { capabilities = ["read", "list"] }
path "secret/metadata/prod" { capabilities = ["list"] }
path "secret/data/api/*" { capabilities = ["create", "read", "update", "list"] }
path "secret/metadata/api/*" { capabilities = ["read", "list"] }
path "secret/metadata/api" { capabilities = ["list"] }
"#;

#[test]
fn a_secret_only_an_unlistable_lower_layer_holds_is_found_by_name_though_not_listed() {
    let bao = Bao::start();
    three_layers(&bao);
    bao.kv2_put("secret", "project/team/db", json!({"K": "k"}));
    let token = bao.token_with_policy("project-unlisted", PROJECT_UNLISTED);
    let m = mount_as(&bao, &token, &[]);
    // A listing shows what the listable layers hold: a 403 names nothing.
    assert_eq!(run_ok("ls", &[s(m.path())]), "app\n");
    // Reads need no listing: a secret the layers above list shows the
    // bottom layer's keys, and one only the bottom layer holds is found
    // by its name, with its keys, from that layer.
    assert_eq!(read(&m, "app/A"), "project");
    assert_eq!(read(&m, "only-project/X"), "x");
    assert!(m.at("only-project").is_dir());
    assert_eq!(run_ok("ls", &[s(&m.at("only-project"))]), "X\n");
    assert_eq!(source_of(&m, "only-project/X"), "secret/project");
    // A name no layer holds is still not found; nor is a folder only the
    // unlistable layer holds (nothing says it is there).
    assert_eq!(errno_of_read(&m, "nothing/X"), Some(libc::ENOENT));
    assert_eq!(errno_of_read(&m, "team/db/K"), Some(libc::ENOENT));
    // Status says the layer's listing is refused.
    let (code, report) = status(m.path());
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        degraded_layers(&m),
        [("secret/project".to_string(), "forbidden".to_string())]
    );
    assert!(
        report["degraded_layers"][0]["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("list ")),
        "{report}"
    );
}

#[test]
fn a_middle_layer_forbidden_while_mounted_withholds_what_it_may_override_and_nothing_else() {
    let bao = Bao::start();
    three_layers(&bao);
    let token = bao.token_with_policy("layers", ALL_LAYERS);
    let m = mount_as(&bao, &token, &["--writable"]);
    assert_eq!(read(&m, "app/A"), "project");
    assert_eq!(read(&m, "app/B"), "prod");
    // The token may no longer read the middle layer (`prod`).
    let (code, resp) = bao.api(
        "PUT",
        "sys/policies/acl/layers",
        Some(json!({"policy": r#"
path "secret/data/project/*" { capabilities = ["read", "list"] }
path "secret/metadata/project/*" { capabilities = ["read", "list"] }
path "secret/metadata/project" { capabilities = ["list"] }
path "secret/data/api/*" { capabilities = ["create", "read", "update", "list"] }
path "secret/metadata/api/*" { capabilities = ["read", "list"] }
path "secret/metadata/api" { capabilities = ["list"] }
"#})),
    );
    assert!(code < 300, "{code} {resp}");
    // A and B come from below `prod`, which may override them: they still
    // show, and are refused (not turned into directories). C, from the
    // top, is served, and stays a file.
    eventually(
        "app/A refused once prod is forbidden",
        Duration::from_secs(15),
        || (errno_of_read(&m, "app/A") == Some(libc::EACCES)).then_some(()),
    );
    assert_eq!(errno_of_read(&m, "app/B"), Some(libc::EACCES));
    for key in ["app/A", "app/B"] {
        // The kernel may still hold the attributes it was given before
        // (for at most the TTL, 1 s here): `stat` is refused once it asks.
        eventually(
            format!("stat {key} refused"),
            Duration::from_secs(10),
            || {
                let errno = std::fs::metadata(m.at(key)).err()?.raw_os_error();
                (errno == Some(libc::EACCES)).then_some(())
            },
        );
        let err = write_and_close(&m.at(key), b"x").expect_err(key);
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{key}: {err}");
    }
    assert_eq!(read(&m, "app/C"), "api");
    assert!(m.at("app/C").is_file());
    assert_eq!(names(&m.at("app")), set(&["A", "B", "C"]));
    assert_eq!(run_ok("ls", &[s(m.path())]), "app\nonly-project\n");
    // A secret only the bottom layer holds: `prod` may override its key.
    assert_eq!(errno_of_read(&m, "only-project/X"), Some(libc::EACCES));
    // Writes to the top layer go on.
    write_and_close(&m.at("app/C"), b"written").unwrap();
    assert_eq!(read(&m, "app/C"), "written");
    assert_eq!(
        bao.kv2_get("secret", "api/app").unwrap().0,
        json!({"C": "written"})
    );
    assert_eq!(
        degraded_layers(&m),
        [("secret/prod".to_string(), "forbidden".to_string())]
    );
    assert_eq!(layer_warnings(&m), 1, "{}", m.log());
    // Allowed again: everything is back.
    let (code, resp) = bao.api(
        "PUT",
        "sys/policies/acl/layers",
        Some(json!({ "policy": ALL_LAYERS })),
    );
    assert!(code < 300, "{code} {resp}");
    eventually("app/B readable again", Duration::from_secs(15), || {
        (std::fs::read(m.at("app/B")).ok()? == b"prod").then_some(())
    });
    eventually("status clean again", Duration::from_secs(15), || {
        degraded_layers(&m).is_empty().then_some(())
    });
}

#[test]
fn a_bottom_layer_whose_server_stops_answering_leaves_the_top_layer_served() {
    let bao = Bao::start();
    let below = Bao::start();
    below.kv2_put(
        "secret",
        "project/app",
        json!({"A": "project", "B": "project", "C": "project"}),
    );
    bao.kv2_put("secret", "api/app", json!({"C": "api"}));
    // SOURCE (the bottom layer) is on the other server.
    let source = format!("{}/secret/project", below.addr());
    let m = Mount::new(
        &bao,
        &source,
        &[
            "--layer",
            "secret/api",
            "--ttl",
            "1s",
            "--timeout",
            "2s",
            "--writable",
        ],
    );
    assert_eq!(run_ok("ls", &[s(&m.at("app"))]), "A\nB\nC\n");
    assert_eq!(read(&m, "app/A"), "project");
    assert_eq!(source_of(&m, "app/A"), source);
    below.pause();
    eventually(
        "only the top layer's keys once the bottom's server is down",
        Duration::from_secs(30),
        || (run_ok("ls", &[s(&m.at("app"))]) == "C\n").then_some(()),
    );
    assert_eq!(read(&m, "app/C"), "api");
    assert!(m.at("app/C").is_file());
    assert_eq!(errno_of_read(&m, "app/A"), Some(libc::ENOENT));
    write_and_close(&m.at("app/C"), b"written").unwrap();
    assert_eq!(read(&m, "app/C"), "written");
    assert_eq!(
        bao.kv2_get("secret", "api/app").unwrap().0,
        json!({"C": "written"})
    );
    assert_eq!(
        degraded_layers(&m),
        [(source.clone(), "unreachable".to_string())]
    );
    assert_eq!(layer_warnings(&m), 1, "{}", m.log());
    below.resume();
    eventually("the bottom layer back", Duration::from_secs(30), || {
        (std::fs::read(m.at("app/A")).ok()? == b"project").then_some(())
    });
    eventually("status clean again", Duration::from_secs(15), || {
        degraded_layers(&m).is_empty().then_some(())
    });
}

/// Reads and lists of everything but the `prod` layer.
const ALL_BUT_PROD: &str = r#"
path "secret/data/project/*" { capabilities = ["read", "list"] }
path "secret/metadata/project/*" { capabilities = ["read", "list"] }
path "secret/metadata/project" { capabilities = ["list"] }
path "secret/data/api/*" { capabilities = ["read", "list"] }
path "secret/metadata/api/*" { capabilities = ["read", "list"] }
path "secret/metadata/api" { capabilities = ["list"] }
"#;

#[test]
fn a_read_only_mount_lists_a_key_a_forbidden_layer_may_override_and_never_reads_it_as_empty() {
    let bao = Bao::start();
    three_layers(&bao);
    let token = bao.token_with_policy("no-prod", ALL_BUT_PROD);
    // Read-only: opens skip the daemon, reads come from the page cache.
    let m = mount_as(&bao, &token, &[]);
    assert_eq!(run_ok("ls", &[s(&m.at("app"))]), "A\nB\nC\n");
    assert_eq!(read(&m, "app/C"), "api");
    for _ in 0..2 {
        assert_eq!(errno_of_read(&m, "app/A"), Some(libc::EACCES));
        let err = std::fs::metadata(m.at("app/A")).expect_err("app/A");
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        run_ok("ls", &["-l", s(&m.at("app/C"))]);
    }
    assert_eq!(layer_warnings(&m), 1, "{}", m.log());
    assert_eq!(request_warnings(&m), Vec::<String>::new());
}

#[test]
fn a_whole_secret_file_that_a_forbidden_layer_may_change_fails_and_the_others_read() {
    let bao = Bao::start();
    three_layers(&bao);
    bao.kv2_put("secret", "api/top-only", json!({"T": "t"}));
    let token = bao.token_with_policy("no-prod", ALL_BUT_PROD);
    let m = mount_as(&bao, &token, &["--layout", "json"]);
    assert_eq!(
        run_ok("ls", &[s(m.path())]),
        "app.json\nonly-project.json\ntop-only.json\n"
    );
    // `app` has keys `prod` may override: its whole is not known.
    assert_eq!(errno_of_read(&m, "app.json"), Some(libc::EACCES));
    let err = std::fs::metadata(m.at("app.json")).expect_err("app.json");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    let top_only: serde_json::Value =
        serde_json::from_str(&read(&m, "top-only.json")).expect("JSON");
    assert_eq!(top_only, json!({"T": "t"}));
    assert_eq!(
        degraded_layers(&m),
        [("secret/prod".to_string(), "forbidden".to_string())]
    );
}

#[test]
fn a_template_reading_a_secret_a_forbidden_layer_may_change_fails_and_others_render() {
    let bao = Bao::start();
    three_layers(&bao);
    bao.kv2_put("secret", "api/top-only", json!({"T": "t"}));
    let token = bao.token_with_policy("no-prod", ALL_BUT_PROD);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.tmpl"), "{{ secret(\"app\").C }}").expect("template");
    std::fs::write(dir.path().join("top.tmpl"), "{{ secret(\"top-only\").T }}").expect("template");
    let layout = format!("templates:{}", dir.path().display());
    let m = mount_as(&bao, &token, &["--layout", &layout]);
    assert_eq!(read(&m, "top"), "t");
    // `app` has keys `prod` may override: no rendering of it is trusted,
    // even of a key that is known, rather than one that may leave some out.
    let err = std::fs::read(m.at("app")).expect_err("app");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EACCES | libc::EIO)),
        "{err}"
    );
}

#[test]
fn a_middle_layer_whose_server_is_stopped_fails_what_it_may_override_with_eio() {
    let bao = Bao::start();
    let mut middle = Bao::start();
    bao.kv2_put(
        "secret",
        "project/app",
        json!({"A": "project", "B": "project", "C": "project"}),
    );
    middle.kv2_put("secret", "prod/app", json!({"B": "prod"}));
    bao.kv2_put("secret", "api/app", json!({"C": "api"}));
    let prod = format!("{}/secret/prod", middle.addr());
    let m = Mount::new(
        &bao,
        "secret/project",
        &[
            "--layer",
            &prod,
            "--layer",
            "secret/api",
            "--ttl",
            "1s",
            "--timeout",
            "2s",
        ],
    );
    assert_eq!(read(&m, "app/B"), "prod");
    assert_eq!(source_of(&m, "app/B"), prod);
    middle.stop();
    eventually(
        "app/B fails once its layer's server is stopped",
        Duration::from_secs(30),
        || (errno_of_read(&m, "app/B") == Some(libc::EIO)).then_some(()),
    );
    // A may be overridden by the stopped layer too; C, above it, is not.
    assert_eq!(errno_of_read(&m, "app/A"), Some(libc::EIO));
    assert_eq!(read(&m, "app/C"), "api");
    assert!(m.at("app/C").is_file());
    assert_eq!(names(&m.at("app")), set(&["A", "B", "C"]));
    assert_eq!(degraded_layers(&m), [(prod, "unreachable".to_string())]);
    assert_eq!(layer_warnings(&m), 1, "{}", m.log());
    assert_eq!(request_warnings(&m), Vec::<String>::new());
}

#[test]
fn a_mount_starts_without_a_lower_layer_whose_server_does_not_answer_and_adds_it_when_it_does() {
    let bao = Bao::start();
    let below = Bao::start();
    below.kv2_put(
        "secret",
        "project/app",
        json!({"A": "project", "B": "project", "C": "project"}),
    );
    bao.kv2_put("secret", "api/app", json!({"C": "api"}));
    below.pause();
    let source = format!("{}/secret/project", below.addr());
    let m = Mount::new(
        &bao,
        &source,
        &["--layer", "secret/api", "--ttl", "1s", "--timeout", "2s"],
    );
    assert_eq!(run_ok("ls", &[s(&m.at("app"))]), "C\n");
    assert_eq!(read(&m, "app/C"), "api");
    assert_eq!(
        degraded_layers(&m),
        [(source.clone(), "unreachable".to_string())]
    );
    below.resume();
    eventually(
        "the bottom layer connected",
        Duration::from_secs(30),
        || (std::fs::read(m.at("app/A")).ok()? == b"project").then_some(()),
    );
    assert_eq!(read(&m, "app/C"), "api");
    eventually("status clean again", Duration::from_secs(15), || {
        degraded_layers(&m).is_empty().then_some(())
    });
}
