//! Who reads what, and what never leaks: a token's policy decides what the
//! mount shows (`EACCES` for a denied path, direct reads of known paths
//! without the right to list), the token and the values never reach the
//! log or a command line, and `--audit-log` records each open with its
//! caller, never the value.
//!
//! Fixtures are the shared ones in tests/support (one OpenBao dev server
//! per test: it starts in about a second, tests may stop it, and a server
//! of its own keeps each test's data apart). Nothing here skips: a missing
//! `bao` or FUSE fails the test with a message that says what to install.

mod support;

use std::io::ErrorKind;
use std::time::Duration;

use serde_json::json;
use support::{eventually, q, run, run_ok, s, seeded, sh_ok, Bao, Mount};

#[test]
fn a_path_denied_by_policy_is_eacces_while_allowed_ones_read() {
    let bao = seeded();
    bao.kv2_put("secret", "denied/x", json!({"KEY": "no"}));
    let token = bao.token_with_policy(
        "myapp-only",
        r#"
        path "secret/data/myapp/*" { capabilities = ["read"] }
        path "secret/metadata/*" { capabilities = ["list"] }
        path "secret/metadata/" { capabilities = ["list"] }
        "#,
    );
    let m = Mount::with_token(&bao, &token, "secret/", &[]);
    assert_eq!(
        std::fs::read(m.at("myapp/db/PASSWORD")).unwrap(),
        b"hunter2"
    );
    let err = std::fs::read(m.at("denied/x/KEY")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    assert!(
        m.log().contains("denied/x"),
        "the refusal is logged with its path"
    );
}

#[test]
fn a_denied_secret_is_permission_denied_to_cat_while_allowed_ones_read() {
    let bao = Bao::start();
    bao.kv2_put("secret", "allowed/app", json!({"KEY": "yes"}));
    bao.kv2_put("secret", "denied/x", json!({"KEY": "no"}));
    // Keeps the default policy (auth/token/lookup-self).
    let token = bao.token_with_policy(
        "allowed-only",
        r#"
        path "secret/data/allowed/*" { capabilities = ["read", "list"] }
        path "secret/metadata/*" { capabilities = ["list"] }
        path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
        "#,
    );
    let m = Mount::with_token(&bao, &token, "secret/", &[]);
    assert_eq!(run_ok("ls", &[s(m.path())]), "allowed\ndenied\n");
    assert_eq!(run_ok("cat", &[s(&m.at("allowed/app/KEY"))]), "yes");
    let out = run("cat", &[s(&m.at("denied/x/KEY"))]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "cat said: {}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
    let err = std::fs::read(m.at("denied/x/KEY")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!m.log().contains("\"no\""), "a value reached the log");
}

#[test]
fn a_token_without_list_rights_still_reads_known_paths() {
    let bao = seeded();
    let token = bao.token_with_policy(
        "read-no-list",
        r#"path "secret/data/myapp/*" { capabilities = ["read"] }"#,
    );
    let m = Mount::with_token(&bao, &token, "secret/", &[]);
    assert_eq!(
        std::fs::read(m.at("myapp/db/PASSWORD")).unwrap(),
        b"hunter2"
    );
    let err = std::fs::read_dir(m.path()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
}

/// A policy that may read every secret but list none (`secret/data/*`):
/// reading `myapp` as a secret answers 404, listing it answers 403. The
/// folder may well exist, so `cat` of a key below it reads; it was ENOENT.
#[test]
fn a_token_that_reads_everything_and_lists_nothing_still_reads_known_paths() {
    let bao = seeded();
    let token = bao.token_with_policy(
        "read-all-list-none",
        r#"path "secret/data/*" { capabilities = ["read"] }"#,
    );
    let m = Mount::with_token(&bao, &token, "secret/", &[]);
    assert_eq!(
        std::fs::read(m.at("myapp/db/PASSWORD")).unwrap(),
        b"hunter2",
        "{}",
        m.log()
    );
    assert_eq!(
        std::fs::read(m.at("myapp/api/token/value")).unwrap(),
        b"t0k"
    );
    let err = std::fs::read_dir(m.at("myapp")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    // A key the readable secret does not hold is still no file.
    let err = std::fs::read(m.at("myapp/db/NOPE")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn the_token_never_reaches_the_log_or_the_command_line() {
    let bao = seeded();
    let token = bao.token_with_policy("all", r#"path "*" { capabilities = ["read", "list"] }"#);
    let m = Mount::with_token(&bao, &token, "secret/", &["-vv"]);
    let _ = std::fs::read(m.at("myapp/db/PASSWORD"));
    let _ = std::fs::read(m.at("nope/x"));
    assert!(!m.log().contains(&token), "token in the log");
    assert!(!m.log().contains("hunter2"), "a value in the log");
    let ps = sh_ok("ps -eo args");
    assert!(!ps.contains(&token), "token on a command line");
}

#[test]
fn the_audit_log_records_each_open_with_caller_and_never_the_value() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let m = Mount::new(&bao, "secret/", &["--audit-log", log.to_str().unwrap()]);
    for _ in 0..3 {
        sh_ok(&format!("cat {} >/dev/null", q(&m.at("myapp/db/PASSWORD"))));
    }
    // Lines are written by the log's own thread, within 100 ms.
    let text = eventually("three audit lines", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.lines().count() >= 3).then_some(text)
    });
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every open is seen, even on a read-only mount (the default: no "no
    // open" fast path with an audit log).
    assert_eq!(lines.len(), 3, "{text}");
    for l in &lines {
        assert_eq!(l["path"], json!("/myapp/db/PASSWORD"));
        assert_eq!(l["op"], json!("open-read"));
        // The writer looks the process up after the open: a `cat` may
        // have exited by then, and is recorded without its name.
        assert!(l["comm"] == json!("cat") || l["comm"].is_null(), "{l}");
        assert_eq!(l["uid"], json!(0));
        assert!(l["pid"].as_u64().unwrap() > 0);
    }
    assert!(!text.contains("hunter2"));
}
