//! Changes made in Vault reaching readers of the mount: a changed value
//! shows within the TTL even to a reader whose pages the kernel caches, a
//! new secret appears in `ls`, a removed key and a deleted secret go away,
//! and a value that shrinks while a file is open is never read cut or
//! mixed (one whole value, old or new).
//!
//! Fixtures are the shared ones in tests/support (one OpenBao dev server
//! per test: it starts in about a second, tests may stop it, and a server
//! of its own keeps each test's data apart). Nothing here skips: a missing
//! `bao` or FUSE fails the test with a message that says what to install.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{eventually, names, q, run, run_ok, s, seeded, set, sh_ok, Bao, Mount};

const LONG: &str = "a-rather-long-value-0123456789-0123456789";

/// Whether `got` is one of the two values, whole.
fn whole(got: &[u8], old: &str, new: &str) -> bool {
    got == old.as_bytes() || got == new.as_bytes()
}

#[test]
fn a_change_in_vault_shows_after_the_ttl_even_to_a_cached_reader() {
    let bao = seeded();
    // Both modes: writable (opens reach the daemon) and the default,
    // read-only (opens skip it).
    for mode in [&["--ttl", "1s", "--writable"][..], &["--ttl", "1s"][..]] {
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
        // The kernel dropped what it held of the old value: its cached
        // pages (the read above, also on a read-only mount, where opens skip the daemon)
        // and its cached size.
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            longer.len() as u64,
            "{mode:?}"
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
    // The listing comes from the daemon's cache, which switched; the
    // kernel is told to drop the name just after (a notification from
    // another thread), and until then the name may still lead to the
    // file as it was opened (a new inode per change keeps its value).
    let err = eventually(
        "the removed key to stop reading",
        Duration::from_secs(4),
        || std::fs::read(m.at("app/DROP")).err(),
    );
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
    // A slow reader, by design (the refresh lands meanwhile).
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
    // By design: held open past two TTLs.
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
