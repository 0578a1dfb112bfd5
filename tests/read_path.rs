//! More of the read path against a real OpenBao through a real mount, beside
//! tests/mount_read.rs: the corners that one leaves open. Custom and bare KV
//! mounts and SOURCE folders shown alone; plain secrets next to folders at
//! the root; key names that cannot be file names; a shorter value reaching
//! a file opened before it landed; keys and secrets deleted in Vault; a
//! plain secret served stale while Vault is down, and the end of the
//! stale-if-error window; where the token and the address come from
//! (VAULT_ADDR, --token-file, ~/.vault-token); and start-up failures, each
//! bounded in time.
//!
//! Fixtures are the shared ones in tests/support (one OpenBao dev server
//! per test: it starts in about a second, tests may stop it, and a server
//! of its own keeps each test's data apart). Nothing here skips: a missing
//! `bao` or FUSE fails the test with a message that says what to install.

mod support;

use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    dead_addr, eventually, is_mounted, names, read_within, run, run_ok, s, set, Bao, Mount,
};

// ---------------------------------------------------------------- helpers

/// The filesystem type mountinfo gives for the mount point `path`.
fn fstype(path: &Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mp = left.split(' ').nth(4)?;
        (Path::new(mp) == path).then(|| right.split(' ').next().unwrap_or("").to_string())
    })
}

// ------------------------------------------------------------------ tests

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
fn the_root_lists_plain_secrets_beside_folders() {
    let bao = Bao::start();
    bao.kv2_put("secret", "solo", json!({"KEY": "alone"}));
    bao.kv2_put("secret", "folder/inner", json!({"I": "1"}));
    bao.kv2_put("secret", "both", json!({"B": "2"}));
    bao.kv2_put("secret", "both/child", json!({"C": "3"}));
    let m = Mount::new(&bao, "secret/", &[]);
    // -p marks directories: every name at the root is one.
    assert_eq!(
        run_ok("ls", &["-p", s(m.path())]),
        "both/\nfolder/\nsolo/\n"
    );
    assert_eq!(run_ok("ls", &["-p", s(&m.at("solo"))]), "KEY\n");
    assert_eq!(run_ok("ls", &["-p", s(&m.at("both"))]), "B\nchild/\n");
    assert_eq!(run_ok("cat", &[s(&m.at("solo/KEY"))]), "alone");
}

#[test]
fn keys_that_cannot_be_file_names_are_hidden_and_the_others_read() {
    let bao = Bao::start();
    let long = "k".repeat(300);
    bao.kv2_put(
        "secret",
        "odd",
        json!({
            "ok": "1", "with space": "2", ".dot": "3", "ünï": "4",
            "a/b": "slash", "..": "dotdot", long.as_str(): "long"
        }),
    );
    let m = Mount::new(&bao, "secret/", &[]);
    assert_eq!(
        names(&m.at("odd")),
        set(&["ok", "with space", ".dot", "ünï"])
    );
    assert_eq!(run_ok("cat", &[s(&m.at("odd/with space"))]), "2");
    assert_eq!(std::fs::read(m.at("odd/.dot")).unwrap(), b"3");
    assert_eq!(std::fs::read(m.at("odd/ünï")).unwrap(), b"4");
}

const LONG: &str = "a-rather-long-value-0123456789-0123456789";

/// Whether `got` is one of the two values, whole.
fn whole(got: &[u8], old: &str, new: &str) -> bool {
    got == old.as_bytes() || got == new.as_bytes()
}

#[test]
fn a_file_opened_as_a_shorter_value_lands_reads_one_whole_value() {
    use std::io::Read;
    let bao = Bao::start();
    bao.kv2_put("secret", "shrink", json!({"V": LONG}));
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s"]);
    let path = m.at("shrink/V");
    assert_eq!(std::fs::read(&path).unwrap(), LONG.as_bytes());
    let fetched = Instant::now();
    bao.kv2_put("secret", "shrink", json!({"V": "short"}));
    // Past the TTL, before twice the TTL: the open is answered from the
    // expired value while one refresh runs; the reader reads after the
    // refresh has landed, as a slow reader would.
    std::thread::sleep(Duration::from_millis(1200).saturating_sub(fetched.elapsed()));
    let mut f = std::fs::File::open(&path).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let len = f.metadata().unwrap().len();
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    drop(f);
    let later = run_ok("cat", &[s(&path)]);
    assert!(
        whole(&got, LONG, "short"),
        "read {:?} (stat size {len}): neither the old value nor the new one; \
         `cat` afterwards: {later:?}\n{}",
        String::from_utf8_lossy(&got),
        m.log()
    );
    assert_eq!(later, "short");
}

#[test]
fn a_file_held_open_across_a_shorter_value_reads_one_whole_value() {
    use std::os::unix::fs::FileExt;
    let bao = Bao::start();
    bao.kv2_put("secret", "shrink", json!({"V": LONG}));
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s"]);
    let path = m.at("shrink/V");
    // A long-running program: opens once, re-reads with pread.
    let f = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = f.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], LONG.as_bytes());
    bao.kv2_put("secret", "shrink", json!({"V": "short"}));
    std::thread::sleep(Duration::from_millis(2500));
    let len = f.metadata().unwrap().len();
    let n = f.read_at(&mut buf, 0).unwrap();
    let got = buf[..n].to_vec();
    drop(f);
    assert!(
        whole(&got, LONG, "short"),
        "pread {:?} (stat size {len}): neither the old value nor the new one; \
         new opens then read {:?}\n{}",
        String::from_utf8_lossy(&got),
        run_ok("cat", &[s(&path)]),
        m.log()
    );
    // And what everyone else reads from then on (TTL 1 s and slack).
    eventually(
        "`cat` to give the new value after the reader closed",
        Duration::from_secs(4),
        || (run_ok("cat", &[s(&path)]) == "short").then_some(()),
    );
}

#[test]
fn a_key_removed_in_vault_disappears_after_the_ttl() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"KEEP": "k", "DROP": "d"}));
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s"]);
    assert_eq!(names(&m.at("app")), set(&["DROP", "KEEP"]));
    assert_eq!(std::fs::read(m.at("app/DROP")).unwrap(), b"d");
    bao.kv2_put("secret", "app", json!({"KEEP": "k"}));
    eventually(
        "the removed key to leave the listing",
        Duration::from_secs(4),
        || (names(&m.at("app")) == set(&["KEEP"])).then_some(()),
    );
    let err = std::fs::read(m.at("app/DROP")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    assert_eq!(std::fs::read(m.at("app/KEEP")).unwrap(), b"k");
}

#[test]
fn a_secret_deleted_in_vault_reads_as_enoent_after_the_ttl() {
    let bao = Bao::start();
    bao.kv2_put("secret", "dir/gone", json!({"KEY": "bye"}));
    bao.kv2_put("secret", "dir/stays", json!({"KEY": "hi"}));
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s"]);
    assert_eq!(std::fs::read(m.at("dir/gone/KEY")).unwrap(), b"bye");
    // KV v2 soft delete of the latest version, as `bao kv delete` does.
    let (status, body) = bao.api("DELETE", "secret/data/dir/gone", None);
    assert!(status < 300, "delete: {status} {body}");
    let err = eventually(
        "a secret deleted in Vault to stop reading (--ttl 1s)",
        Duration::from_secs(4),
        || std::fs::read(m.at("dir/gone/KEY")).err(),
    );
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    let out = run("cat", &[s(&m.at("dir/gone/KEY"))]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such file or directory"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(m.at("dir/stays/KEY")).unwrap(), b"hi");
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
fn with_vault_stopped_a_cached_plain_secret_is_served_within_the_stale_window() {
    let mut bao = Bao::start();
    // A secret with no children: its folder listing is a 404.
    bao.kv2_put("secret", "plain", json!({"USER": "app"}));
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s", "--timeout", "1s"]);
    let path = m.at("plain/USER");
    assert_eq!(std::fs::read(&path).unwrap(), b"app");
    let fetched = Instant::now();
    bao.stop();
    // Past the TTL (1 s), well inside the default window (5 m): first while
    // a stale-while-revalidate answer is still allowed (< 2 TTL), then past it.
    for at in [Duration::from_millis(1500), Duration::from_millis(2500)] {
        std::thread::sleep(at.saturating_sub(fetched.elapsed()));
        match read_within(&path, Duration::from_secs(15)) {
            Ok(v) => assert_eq!(v, b"app"),
            Err(e) => panic!(
                "{e} {:?} after the fetch, inside --ttl 1s + --stale-if-error 5m:\n{}",
                fetched.elapsed(),
                m.log()
            ),
        }
    }
    assert_eq!(run_ok("cat", &[s(&path)]), "app");
}

#[test]
fn past_the_stale_if_error_window_a_cached_value_turns_into_eio() {
    let mut bao = Bao::start();
    // A secret that is also a folder (its listing is cached too).
    bao.kv2_put("secret", "app", json!({"USER": "app"}));
    bao.kv2_put("secret", "app/child", json!({"C": "c"}));
    let m = Mount::new(
        &bao,
        "secret/",
        &["--ttl", "1s", "--stale-if-error", "2s", "--timeout", "1s"],
    );
    let path = m.at("app/USER");
    assert_eq!(std::fs::read(&path).unwrap(), b"app");
    let fetched = Instant::now();
    bao.stop();
    std::thread::sleep(Duration::from_millis(1500));
    // Past the TTL, inside the window: still served.
    match read_within(&path, Duration::from_secs(15)) {
        Ok(v) => assert_eq!(v, b"app"),
        Err(e) => panic!(
            "{e} {:?} after the fetch, inside --ttl 1s + --stale-if-error 2s:\n{}",
            fetched.elapsed(),
            m.log()
        ),
    }
    // TTL 1 s + window 2 s, then one request timeout and slack.
    let err = eventually(
        "a cached value to turn into an error past --ttl 1s --stale-if-error 2s",
        Duration::from_secs(8),
        || match read_within(&path, Duration::from_secs(15)) {
            Ok(v) => {
                assert_eq!(v, b"app", "a wrong value while Vault is down");
                None
            }
            Err(e) => Some(e),
        },
    );
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        fetched.elapsed() >= Duration::from_secs(3),
        "EIO {:?} after the fetch, before the window ended",
        fetched.elapsed()
    );
    let out = run("cat", &[s(&path)]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );
}

#[test]
fn with_vault_stopped_an_uncached_listing_fails_with_eio_and_does_not_hang() {
    let mut bao = Bao::start();
    bao.kv2_put("secret", "cold/a", json!({"K": "v"}));
    let m = Mount::new(
        &bao,
        "secret/",
        &["--timeout", "2s", "--stale-if-error", "0s"],
    );
    assert!(m.path().is_dir());
    bao.stop();
    let out = run("ls", &[s(&m.at("cold"))]);
    assert_ne!(out.status.code(), Some(124), "ls hung with Vault down");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );
}

#[test]
fn the_address_comes_from_vault_addr_and_the_token_from_vault_token() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "from-env"}));
    let dir = tempfile::tempdir().unwrap();
    // A token file holding a bad token: VAULT_TOKEN wins over it.
    let file = dir.path().join("token");
    std::fs::write(&file, "not-a-token\n").unwrap();
    let m = Mount::builder(&bao, "secret/")
        .addr_from_env()
        .args(&["--token-file", s(&file)])
        .start();
    assert_eq!(
        std::fs::read(m.at("app/K")).unwrap(),
        b"from-env",
        "{}",
        m.log()
    );
}

#[test]
fn without_vault_token_the_token_comes_from_token_file() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "from-file"}));
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("token");
    // As `echo root > FILE` writes it: the newline is not part of the token.
    std::fs::write(&file, "root\n").unwrap();
    // ~/.vault-token holds a bad token: --token-file wins over it.
    std::fs::write(home.path().join(".vault-token"), "not-a-token").unwrap();
    let m = Mount::builder(&bao, "secret/")
        .no_token()
        .home(home.path())
        .args(&["--token-file", s(&file)])
        .start();
    assert_eq!(
        std::fs::read(m.at("app/K")).unwrap(),
        b"from-file",
        "{}",
        m.log()
    );
}

#[test]
fn without_vault_token_or_token_file_the_token_comes_from_home_vault_token() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "from-home"}));
    let home = tempfile::tempdir().unwrap();
    // As `bao login` leaves it: no newline.
    std::fs::write(home.path().join(".vault-token"), "root").unwrap();
    let m = Mount::builder(&bao, "secret/")
        .no_token()
        .home(home.path())
        .start();
    assert_eq!(
        std::fs::read(m.at("app/K")).unwrap(),
        b"from-home",
        "{}",
        m.log()
    );
}

#[test]
fn start_up_failures_end_within_20s_with_one_line_and_mount_nothing() {
    let bao = Bao::start();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), "keep me").unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let missing = dir.path().join("missing");
    let live = bao.addr().to_string();
    let dead = dead_addr();
    let cases: [(&str, &str, &str, &Path, &str); 7] = [
        ("non-empty mountpoint", &live, "root", &full, "secret/"),
        ("missing mountpoint", &live, "root", &missing, "secret/"),
        ("mountpoint is a file", &live, "root", &file, "secret/"),
        ("nothing listening", &dead, "root", &empty, "secret/"),
        ("bad token", &live, "not-a-token", &empty, "secret/"),
        ("no such mount", &live, "root", &empty, "nosuchmount/"),
        ("not a KV mount", &live, "root", &empty, "cubbyhole/"),
    ];
    for (what, addr, token, mountpoint, source) in cases {
        let (status, stderr) = Mount::builder(&bao, source)
            .addr(addr)
            .token(token)
            .at(mountpoint)
            .fail();
        assert!(
            !status.success(),
            "{what}: exit {status}, stderr {stderr:?}"
        );
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr:?}");
        assert!(stderr.starts_with("secretfs: "), "{what}: {stderr:?}");
        assert!(!stderr.contains("not-a-token"), "{what}: token printed");
    }
    assert_eq!(
        std::fs::read(full.join("x")).unwrap(),
        b"keep me",
        "the non-empty mountpoint was touched"
    );
    assert!(!missing.exists(), "the missing mountpoint was created");
}

#[test]
fn sigterm_unmounts_even_when_the_daemon_was_started_with_it_blocked() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    // As some supervisors leave it: SIGTERM and SIGINT blocked, a mask
    // that exec keeps.
    let mut m = Mount::builder(&bao, "secret/")
        .block_signals(&[libc::SIGTERM, libc::SIGINT])
        .start();
    assert_eq!(std::fs::read(m.at("app/K")).unwrap(), b"v");
    let status = m.terminate();
    assert!(status.success(), "{status}\n{}", m.log());
    assert!(!is_mounted(m.path()), "still mounted after exit");
}

#[test]
fn a_server_with_a_private_ca_is_trusted_through_ca_cert_or_vault_cacert_only() {
    let bao = Bao::start_tls();
    assert!(bao.addr().starts_with("https://"));
    bao.kv2_put("secret", "app", json!({"K": "over-tls"}));
    let ca = bao.ca_cert();
    // Without the CA: refused before mounting, in one line.
    let (status, stderr) = Mount::builder(&bao, "secret/").fail();
    assert!(!status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    // --ca-cert.
    let m = Mount::new(&bao, "secret/", &["--ca-cert", s(&ca)]);
    assert_eq!(
        std::fs::read(m.at("app/K")).unwrap(),
        b"over-tls",
        "{}",
        m.log()
    );
    drop(m);
    // VAULT_CACERT, as the vault and bao CLIs take it.
    let m = Mount::builder(&bao, "secret/")
        .env("VAULT_CACERT", &ca)
        .start();
    assert_eq!(
        std::fs::read(m.at("app/K")).unwrap(),
        b"over-tls",
        "{}",
        m.log()
    );
}

#[test]
fn sigint_unmounts_cleanly_and_exits_zero_like_ctrl_c() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    let mut m = Mount::new(&bao, "secret/", &[]);
    assert_eq!(std::fs::read(m.at("app/K")).unwrap(), b"v");
    let status = m.stop_with(libc::SIGINT);
    assert!(status.success(), "{status}\n{}", m.log());
    assert!(!is_mounted(m.path()), "still mounted after exit");
    assert_eq!(std::fs::read_dir(m.path()).unwrap().count(), 0);
}
