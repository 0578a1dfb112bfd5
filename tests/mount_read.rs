//! The read path against a real OpenBao through a real mount: `ls`, `cat`
//! and `stat` show exactly what `bao kv get` holds.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use serde_json::json;
use support::{dead_addr, eventually, q, sh, sh_ok, Bao, Mount};

fn seeded() -> Bao {
    let bao = Bao::start();
    bao.kv2_put(
        "secret",
        "myapp/db",
        json!({"PASSWORD": "hunter2", "USER": "app", "MULTI": "line1\nline2", "UNICODE": "pässwörd ✓"}),
    );
    bao.kv2_put("secret", "myapp/db/replica", json!({"HOST": "r1"}));
    bao.kv2_put("secret", "myapp/api/token", json!({"value": "t0k"}));
    bao.kv2_put(
        "secret",
        "myapp/typed",
        json!({"n": 42, "f": 1.5, "b": true, "o": {"a": [1, "x"]}, "a": [1, 2], "z": null}),
    );
    bao.kv2_put("secret", "clash", json!({"child": "shadowed", "k": "v"}));
    bao.kv2_put("secret", "clash/child", json!({"x": "y"}));
    bao
}

#[test]
fn ls_and_cat_show_folders_secrets_and_exact_values() {
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &[]);
    assert_eq!(sh_ok(&format!("ls {}", q(m.path()))), "clash\nmyapp\n");
    assert_eq!(
        sh_ok(&format!("ls {}", q(&m.at("myapp")))),
        "api\ndb\ntyped\n"
    );
    assert_eq!(
        sh_ok(&format!("cat {}", q(&m.at("myapp/db/PASSWORD")))),
        "hunter2"
    );
    assert_eq!(
        std::fs::read(m.at("myapp/db/MULTI")).unwrap(),
        b"line1\nline2"
    );
    assert_eq!(
        std::fs::read_to_string(m.at("myapp/db/UNICODE")).unwrap(),
        "pässwörd ✓"
    );
    assert_eq!(
        std::fs::read(m.at("myapp/api/token/value")).unwrap(),
        b"t0k"
    );
}

#[test]
fn a_path_that_is_secret_and_folder_shows_keys_and_children() {
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &[]);
    assert_eq!(
        sh_ok(&format!("ls {}", q(&m.at("myapp/db")))),
        "MULTI\nPASSWORD\nUNICODE\nUSER\nreplica\n"
    );
    assert!(m.at("myapp/db/replica").is_dir());
    assert_eq!(std::fs::read(m.at("myapp/db/replica/HOST")).unwrap(), b"r1");
}

#[test]
fn a_child_directory_wins_over_a_key_of_the_same_name() {
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &[]);
    assert!(m.at("clash/child").is_dir());
    assert_eq!(std::fs::read(m.at("clash/child/x")).unwrap(), b"y");
    assert_eq!(std::fs::read(m.at("clash/k")).unwrap(), b"v");
}

#[test]
fn non_string_values_are_compact_json() {
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &[]);
    let read = |k: &str| std::fs::read_to_string(m.at(&format!("myapp/typed/{k}"))).unwrap();
    assert_eq!(read("n"), "42");
    assert_eq!(read("f"), "1.5");
    assert_eq!(read("b"), "true");
    assert_eq!(read("o"), r#"{"a":[1,"x"]}"#);
    assert_eq!(read("a"), "[1,2]");
    assert_eq!(read("z"), "null");
}

#[test]
fn stat_shows_mode_owner_and_size() {
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &[]);
    let out = sh_ok(&format!(
        "stat -c '%a %U %s' {} {}",
        q(&m.at("myapp/db/PASSWORD")),
        q(&m.at("myapp/db/UNICODE"))
    ));
    let unicode_len = "pässwörd ✓".len();
    assert_eq!(out, format!("400 root 7\n400 root {unicode_len}\n"));
    let dir = std::fs::metadata(m.at("myapp/db")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(dir.permissions().mode() & 0o7777, 0o500);
    assert_eq!(
        (
            dir.nlink(),
            std::fs::metadata(m.at("myapp/db/USER")).unwrap().nlink()
        ),
        (2, 1)
    );
}

#[test]
fn ownership_and_modes_follow_the_options_given_as_flags_or_o() {
    let bao = seeded();
    for args in [
        vec![
            "--uid",
            "1234",
            "--gid",
            "4321",
            "--file-mode",
            "0440",
            "--dir-mode",
            "0550",
        ],
        vec!["-o", "uid=1234,gid=4321,file_mode=0440,dir_mode=0550"],
    ] {
        let m = Mount::new(&bao, "secret/", &args);
        let f = std::fs::metadata(m.at("myapp/db/USER")).unwrap();
        assert_eq!(
            (f.uid(), f.gid(), f.mode() & 0o7777),
            (1234, 4321, 0o440),
            "{args:?}"
        );
        let d = std::fs::metadata(m.at("myapp")).unwrap();
        assert_eq!(
            (d.uid(), d.gid(), d.mode() & 0o7777),
            (1234, 4321, 0o550),
            "{args:?}"
        );
    }
}

#[test]
fn a_source_folder_and_a_custom_kv2_mount_work() {
    let bao = seeded();
    bao.enable_kv("team-kv", 2);
    bao.kv2_put("team-kv", "project/prod/db", json!({"URL": "postgres://x"}));
    let m = Mount::new(&bao, "team-kv/project", &[]);
    assert_eq!(sh_ok(&format!("ls {}", q(m.path()))), "prod\n");
    assert_eq!(std::fs::read(m.at("prod/db/URL")).unwrap(), b"postgres://x");
    let sub = Mount::new(&bao, "secret/myapp/db", &[]);
    assert_eq!(std::fs::read(sub.at("PASSWORD")).unwrap(), b"hunter2");
    assert_eq!(std::fs::read(sub.at("replica/HOST")).unwrap(), b"r1");
}

#[test]
fn kv1_mounts_read_like_kv2() {
    let bao = Bao::start();
    bao.enable_kv("kv1", 1);
    bao.kv1_put("kv1", "svc/cfg", json!({"A": "1", "N": 7}));
    bao.kv1_put("kv1", "svc/deep/er", json!({"B": "2"}));
    let m = Mount::new(&bao, "kv1/", &[]);
    assert_eq!(sh_ok(&format!("ls {}", q(&m.at("svc")))), "cfg\ndeep\n");
    assert_eq!(std::fs::read(m.at("svc/cfg/A")).unwrap(), b"1");
    assert_eq!(std::fs::read(m.at("svc/cfg/N")).unwrap(), b"7");
    assert_eq!(std::fs::read(m.at("svc/deep/er/B")).unwrap(), b"2");
}

#[test]
fn missing_names_are_enoent() {
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &[]);
    for p in [
        "nope",
        "myapp/nope",
        "myapp/db/NOPE",
        "myapp/db/replica/NOPE",
    ] {
        let err = std::fs::read(m.at(p)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{p}");
    }
    let out = sh(&format!("cat {}", q(&m.at("myapp/db/NOPE"))));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file or directory"));
}

#[test]
fn a_change_in_vault_shows_after_the_ttl_even_to_a_cached_reader() {
    let bao = seeded();
    for mode in [&["--ttl", "1s"][..], &["--ttl", "1s", "--ro"][..]] {
        let m = Mount::new(&bao, "secret/", mode);
        let path = m.at("myapp/api/token/value");
        let before = std::fs::read(&path).unwrap();
        // Keep the page cache warm.
        for _ in 0..20 {
            assert_eq!(std::fs::read(&path).unwrap(), before);
        }
        let longer = format!("rotated-{}-and-longer", before.len());
        bao.kv2_put("secret", "myapp/api/token", json!({"value": longer}));
        eventually(
            format!("{mode:?}: the rotated value to show to a cached reader"),
            Duration::from_secs(4),
            || (std::fs::read(&path).unwrap_or_default() == longer.as_bytes()).then_some(()),
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), longer.len() as u64);
        // The kernel was told to drop what it held of the old value.
        let log = m.log();
        assert!(
            log.contains("value changed in the store: invalidating"),
            "{mode:?}: no invalidation sent\n{log}"
        );
        assert!(
            !log.contains("invalidation not delivered"),
            "{mode:?}\n{log}"
        );
        bao.kv2_put("secret", "myapp/api/token", json!({"value": "t0k"}));
    }
}

#[test]
fn a_new_secret_in_vault_appears_in_ls_after_the_ttl() {
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s"]);
    assert!(!sh_ok(&format!("ls {}", q(&m.at("myapp")))).contains("cache"));
    bao.kv2_put("secret", "myapp/cache", json!({"URL": "redis://"}));
    eventually(
        "the new secret to show in ls",
        Duration::from_secs(4),
        || {
            sh_ok(&format!("ls {}", q(&m.at("myapp"))))
                .contains("cache")
                .then_some(())
        },
    );
}

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

#[test]
fn with_vault_stopped_uncached_reads_fail_with_eio_and_do_not_hang() {
    let mut bao = seeded();
    let m = Mount::new(
        &bao,
        "secret/",
        &["--timeout", "2s", "--stale-if-error", "0s"],
    );
    assert!(m.at("myapp").is_dir());
    bao.stop();
    let path = m.at("myapp/db/PASSWORD");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(path));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("a read hung with Vault down");
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EIO));
}

#[test]
fn with_vault_stopped_cached_values_are_served_within_the_stale_window() {
    let mut bao = seeded();
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s", "--timeout", "1s"]);
    assert_eq!(std::fs::read(m.at("myapp/db/USER")).unwrap(), b"app");
    bao.stop();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(std::fs::read(m.at("myapp/db/USER")).unwrap(), b"app");
    assert!(
        m.log().contains("stale-if-error"),
        "serving stale is logged"
    );
}

#[test]
fn sigterm_unmounts_cleanly_and_exits_zero() {
    let bao = seeded();
    let mut m = Mount::new(&bao, "secret/", &[]);
    assert!(m.at("myapp").is_dir());
    let status = m.terminate();
    assert!(status.success(), "{status}");
    assert!(!support::is_mounted(m.path()));
    assert_eq!(std::fs::read_dir(m.path()).unwrap().count(), 0);
}

#[test]
fn start_up_failures_give_one_line_and_mount_nothing() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), "").unwrap();
    let dead = dead_addr();
    let missing = dir.path().join("missing");
    let cases: Vec<(&str, &std::path::Path, String, &str)> = vec![
        ("root", &full, bao.addr().to_string(), "not empty"),
        ("root", &empty, dead, "cannot reach"),
        (
            "wrong-token",
            &empty,
            bao.addr().to_string(),
            "refused the token",
        ),
        ("root", &missing, bao.addr().to_string(), "mountpoint"),
    ];
    for (token, mountpoint, addr, want) in cases {
        let (status, stderr) = Mount::builder(&bao, "secret/")
            .addr(&addr)
            .token(token)
            .at(mountpoint)
            .args(&["--timeout", "3s"])
            .fail();
        assert!(!status.success(), "{want}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{want}: {stderr}");
        assert!(
            stderr.starts_with("secretfs: ") && stderr.contains(want),
            "{want}: {stderr}"
        );
    }
}

#[test]
fn a_source_that_is_not_a_kv_mount_is_refused() {
    let bao = seeded();
    let (status, stderr) = Mount::builder(&bao, "nosuchmount/").fail();
    assert!(!status.success());
    assert!(stderr.starts_with("secretfs: "), "{stderr}");
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
    let m = Mount::new(
        &bao,
        "secret/",
        &["--ro", "--audit-log", log.to_str().unwrap()],
    );
    for _ in 0..3 {
        sh_ok(&format!("cat {} >/dev/null", q(&m.at("myapp/db/PASSWORD"))));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every open is seen, even on a --ro mount (no "no open" fast path).
    assert_eq!(lines.len(), 3, "{text}");
    for l in &lines {
        assert_eq!(l["path"], json!("/myapp/db/PASSWORD"));
        assert_eq!(l["op"], json!("open-read"));
        assert_eq!(l["comm"], json!("cat"));
        assert_eq!(l["uid"], json!(0));
        assert!(l["pid"].as_u64().unwrap() > 0);
    }
    assert!(!text.contains("hunter2"));
}
