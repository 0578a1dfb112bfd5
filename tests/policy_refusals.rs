//! A change the token's policy forbids fails where the program sees it
//! (issue 11 §1): at `open()`, `creat()`, `unlink()`, `rename()` — bash
//! and dash ignore what `close()` says, so a refusal left for the commit
//! made `echo x > KEY` exit 0 with nothing stored. The mount asks
//! `sys/capabilities-self` (cached like other answers); when it cannot
//! ask, the commit still refuses, as before.

mod support;

use std::process::Output;

use serde_json::json;
use support::{q, write_and_close, Bao, Mount};

const READ_ONLY: &str = r#"
path "secret/data/app/*" { capabilities = ["read"] }
path "secret/metadata/app/*" { capabilities = ["list", "read"] }
path "secret/metadata/" { capabilities = ["list"] }
path "secret/metadata/app/" { capabilities = ["list"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
"#;

fn seeded() -> Bao {
    let bao = Bao::start();
    bao.kv2_put(
        "secret",
        "app/db",
        json!({"PASSWORD": "old", "USER": "app"}),
    );
    bao
}

fn shell(shell: &str, script: &str) -> Output {
    std::process::Command::new(shell)
        .arg("-c")
        .arg(script)
        .output()
        .expect("run the shell")
}

#[test]
fn every_writer_is_refused_at_open_under_a_read_only_policy() {
    let bao = seeded();
    let token = bao.token_with_policy("read-only-app", READ_ONLY);
    let m = Mount::with_token(&bao, &token, "secret/", &["--writable"]);
    let dir = m.at("app/db");
    assert_eq!(std::fs::read(dir.join("USER")).unwrap(), b"app");
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), "from-a-file").unwrap();
    let before = bao.kv2_version("secret", "app/db");
    let key = q(&dir.join("PASSWORD"));
    let cases = [
        ("bash", format!("echo x > {key}")),
        ("sh", format!("echo x > {key}")),
        ("bash", format!("echo x >> {key}")),
        ("sh", format!("cp {} {key}", q(local.path()))),
        ("sh", format!("printf x | tee {key} >/dev/null")),
        ("sh", format!("touch {}", q(&dir.join("NEW")))),
        ("sh", format!("rm -f {key}")),
        ("sh", format!("mv {key} {}", q(&dir.join("MOVED")))),
        ("sh", format!("truncate -s 0 {key}")),
    ];
    let mut wrong = Vec::new();
    for (sh, script) in &cases {
        let out = shell(sh, script);
        let said = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !said.contains("Permission denied") {
            wrong.push(format!("{sh} -c '{script}': {} {said:?}", out.status));
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused where seen:\n{}",
        wrong.join("\n")
    );
    assert_eq!(bao.kv2_version("secret", "app/db"), before);
    assert_eq!(
        bao.kv2_get("secret", "app/db").unwrap().0,
        json!({"PASSWORD": "old", "USER": "app"})
    );
    assert!(!dir.join("NEW").exists(), "a refused touch left a name");
    assert_eq!(std::fs::read(dir.join("PASSWORD")).unwrap(), b"old");
}

#[test]
fn a_token_that_may_not_ask_is_refused_at_close_as_before() {
    let bao = seeded();
    // Without the default policy, sys/capabilities-self is refused (403).
    let policy =
        format!("{READ_ONLY}\npath \"auth/token/lookup-self\" {{ capabilities = [\"read\"] }}\n");
    let (status, resp) = bao.api(
        "PUT",
        "sys/policies/acl/no-default",
        Some(json!({ "policy": policy })),
    );
    assert!(status < 300, "{status} {resp}");
    let (status, resp) = bao.api(
        "POST",
        "auth/token/create",
        Some(json!({ "policies": ["no-default"], "no_default_policy": true })),
    );
    assert!(status < 300, "{status} {resp}");
    let token = resp["auth"]["client_token"].as_str().unwrap().to_string();
    let (status, _) = bao.api_as(
        &token,
        "POST",
        "sys/capabilities-self",
        Some(json!({"paths": ["secret/data/app/db"]})),
    );
    assert_eq!(status, 403, "the token may ask after all");
    let m = Mount::with_token(&bao, &token, "secret/", &["--writable"]);
    let err = write_and_close(&m.at("app/db/USER"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    assert_eq!(
        bao.kv2_get("secret", "app/db").unwrap().0["USER"],
        json!("app")
    );
}

#[test]
fn a_token_that_may_write_is_not_slowed_by_asking() {
    // One question per secret per TTL: many writes, one ask.
    let bao = Bao::start_audited();
    bao.kv2_put("secret", "app/db", json!({"USER": "app"}));
    let token = bao.token_with_policy(
        "writer",
        r#"path "secret/*" { capabilities = ["create", "read", "update", "list"] }
        path "sys/internal/ui/mounts/*" { capabilities = ["read"] }"#,
    );
    let m = Mount::with_token(&bao, &token, "secret/", &["--writable", "--ttl", "5m"]);
    for i in 0..5 {
        std::fs::write(m.at("app/db/USER"), format!("v{i}")).unwrap();
    }
    assert_eq!(
        bao.kv2_get("secret", "app/db").unwrap().0["USER"],
        json!("v4")
    );
    assert_eq!(
        bao.requests("update", "sys/capabilities-self"),
        1,
        "{}",
        bao.log()
    );
}

#[test]
fn a_kv1_mount_asks_about_its_own_paths() {
    let bao = Bao::start();
    bao.enable_kv("kv1", 1);
    bao.kv1_put("kv1", "svc/cfg", json!({"A": "1"}));
    bao.kv1_put("kv1", "open/cfg", json!({"A": "1"}));
    let token = bao.token_with_policy(
        "kv1-mixed",
        r#"
        path "kv1/svc/*" { capabilities = ["read", "list"] }
        path "kv1/open/*" { capabilities = ["read", "list", "update", "create"] }
        path "kv1/*" { capabilities = ["list"] }
        path "kv1/" { capabilities = ["list"] }
        path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
        "#,
    );
    let m = Mount::with_token(&bao, &token, "kv1/", &["--writable"]);
    let out = shell("sh", &format!("echo x > {}", q(&m.at("svc/cfg/A"))));
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    assert_eq!(bao.kv1_get("kv1", "svc/cfg").unwrap(), json!({"A": "1"}));
    let out = shell("sh", &format!("printf two > {}", q(&m.at("open/cfg/A"))));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(bao.kv1_get("kv1", "open/cfg").unwrap(), json!({"A": "two"}));
}

#[test]
fn a_refused_read_is_logged_on_one_line_naming_the_operation_and_the_store_path() {
    let bao = seeded();
    // May list, may not read.
    let token = bao.token_with_policy(
        "list-only",
        r#"
        path "secret/metadata/*" { capabilities = ["list", "read"] }
        path "secret/metadata/" { capabilities = ["list"] }
        path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
        "#,
    );
    let m = Mount::with_token(&bao, &token, "secret/", &[]);
    let out = shell("sh", &format!("cat {}", q(&m.at("app/db/PASSWORD"))));
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let log = m.log();
    // Every record is one line: each starts with its timestamp.
    let strays: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(
        strays.is_empty(),
        "records spread over lines {strays:?}:\n{log}"
    );
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("permission denied"))
        .collect();
    assert_eq!(refusals.len(), 1, "{log}");
    let line = refusals[0];
    // The store path and request a policy names, and the operation the
    // kernel made for cat (the lookup of the key), not a directory's.
    assert!(
        line.contains("read secret/data/app/db refused"),
        "the record does not name the store path: {line}"
    );
    assert!(line.contains("op=\"lookup\""), "{line}");
    assert!(line.contains("path=/app/db/PASSWORD"), "{line}");
    // Who asked: the process (cat), its pid and uid; never a value.
    let exe = line
        .split(' ')
        .find_map(|f| f.strip_prefix("exe="))
        .unwrap_or_else(|| panic!("the record does not name the process: {line}"));
    assert!(exe.ends_with("/cat"), "{line}");
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    assert!(line.contains(&format!(" uid={uid} ")), "{line}");
    assert!(
        line.split(' ')
            .find_map(|f| f.strip_prefix("pid="))
            .is_some_and(|p| p.parse::<u32>().is_ok()),
        "{line}"
    );
}
