//! Which part of the store a mount shows: a whole KV mount (`secret/`, a
//! custom `team-kv` mount, with or without the trailing slash), a SOURCE
//! folder shown alone and nothing outside it, and KV v1 mounts read like
//! KV v2.
//!
//! Fixtures are the shared ones in tests/support (one OpenBao dev server
//! per test: it starts in about a second, tests may stop it, and a server
//! of its own keeps each test's data apart). Nothing here skips: a missing
//! `bao` or FUSE fails the test with a message that says what to install.

mod support;

use std::io::ErrorKind;
use std::path::Path;

use serde_json::json;
use support::{q, run_ok, s, seeded, sh_ok, Bao, Mount};

/// The filesystem type mountinfo gives for the mount point `path`.
fn fstype(path: &Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mp = left.split(' ').nth(4)?;
        (Path::new(mp) == path).then(|| right.split(' ').next().unwrap_or("").to_string())
    })
}

#[test]
fn a_bare_custom_kv2_mount_serves_its_whole_tree_as_a_fuse_mount() {
    let bao = Bao::start();
    bao.enable_kv("team-kv", 2);
    bao.kv2_put("team-kv", "svc/api", json!({"TOKEN": "abc"}));
    bao.kv2_put("team-kv", "top", json!({"K": "v"}));
    for source in ["team-kv/", "team-kv"] {
        let m = Mount::new(&bao, source, &[]);
        let fs = fstype(m.path()).expect("not in mountinfo");
        assert!(fs.starts_with("fuse"), "{source}: fstype {fs}");
        assert_eq!(run_ok("ls", &[s(m.path())]), "svc\ntop\n", "{source}");
        assert_eq!(run_ok("cat", &[s(&m.at("svc/api/TOKEN"))]), "abc");
        assert_eq!(std::fs::read(m.at("top/K")).unwrap(), b"v");
    }
}

#[test]
fn a_source_folder_shows_only_its_subtree() {
    let bao = Bao::start();
    bao.kv2_put("secret", "team/prod/db", json!({"URL": "postgres://prod"}));
    bao.kv2_put("secret", "team/prod/api", json!({"KEY": "k-prod"}));
    bao.kv2_put("secret", "team/dev/db", json!({"URL": "postgres://dev"}));
    bao.kv2_put("secret", "other", json!({"X": "x"}));
    for source in ["secret/team/prod", "secret/team/prod/"] {
        let m = Mount::new(&bao, source, &[]);
        assert_eq!(run_ok("ls", &[s(m.path())]), "api\ndb\n", "{source}");
        assert_eq!(
            run_ok("cat", &[s(&m.at("db/URL"))]),
            "postgres://prod",
            "{source}"
        );
        assert_eq!(std::fs::read(m.at("api/KEY")).unwrap(), b"k-prod");
        for outside in ["dev", "team", "other", "prod", "team/dev/db/URL"] {
            let err = std::fs::metadata(m.at(outside)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound, "{source}: {outside}");
        }
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

/// The warning lines of a log (the daemon's stderr).
fn warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("WARN")).collect()
}

#[test]
fn a_source_that_shows_nothing_is_warned_of_with_the_fix() {
    let bao = Bao::start();
    bao.kv2_put("secret", "myapp/db", json!({"K": "v"}));
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "p"}));
    // A folder that lists nothing.
    let m = Mount::new(&bao, "secret/nope/", &[]);
    let log = m.log();
    assert!(
        warnings(&log)
            .iter()
            .any(|l| l.contains("secret/nope lists nothing")),
        "{log}"
    );
    drop(m);
    // The KV v2 API path: the path meant is named (the store has it).
    for source in ["secret/data/myapp", "secret/metadata/myapp/"] {
        let m = Mount::new(&bao, source, &[]);
        let log = m.log();
        assert!(
            warnings(&log)
                .iter()
                .any(|l| l.contains("mount secret/myapp instead")),
            "{source}: {log}"
        );
    }
    // A secret's own path shows its keys: nothing to warn of.
    let m = Mount::new(&bao, "secret/app/db", &[]);
    assert_eq!(std::fs::read(m.at("PASSWORD")).unwrap(), b"p");
    let log = m.log();
    assert!(warnings(&log).is_empty(), "{log}");
    drop(m);
    // ... except in a layout of one file per secret, where it shows nothing.
    let m = Mount::new(&bao, "secret/app/db", &["--layout", "json"]);
    let log = m.log();
    assert!(
        warnings(&log)
            .iter()
            .any(|l| l.contains("secret/app/db is a secret, not a folder")
                && l.contains("mount its folder secret/app")),
        "{log}"
    );
    drop(m);
    // A folder with secrets: no warning.
    let m = Mount::new(&bao, "secret/myapp", &[]);
    let log = m.log();
    assert!(warnings(&log).is_empty(), "{log}");
}

#[test]
fn the_mount_helper_form_prints_the_warning_on_stderr() {
    let bao = Bao::start();
    bao.kv2_put("secret", "myapp/db", json!({"K": "v"}));
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    /// Unmounts what the test mounted, whatever happens.
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            if support::is_mounted(self.0) {
                let _ = std::process::Command::new("fusermount3")
                    .arg("-uz")
                    .arg(self.0)
                    .status();
            }
        }
    }
    let _unmount = Unmount(&mnt);
    let mut cmd = std::process::Command::new(support::secretfs());
    for var in ["VAULT_ADDR", "VAULT_TOKEN", "VAULT_CACERT", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    // The form mount.fuse3 runs: it returns once the daemon is serving.
    let out = cmd
        .args(["secret/data/myapp", s(&mnt), "-o", "ro"])
        .env("VAULT_ADDR", bao.addr())
        .env("VAULT_TOKEN", "root")
        .env("HOME", dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run secretfs");
    assert!(out.status.success(), "{out:?}");
    assert!(support::is_mounted(&mnt));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("secretfs: warning: secret/data/myapp lists nothing")
            && stderr.contains("mount secret/myapp instead"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
