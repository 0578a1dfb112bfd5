//! What the mount shows, against a real OpenBao through a real mount:
//! folders and secrets as directories, keys as files holding exactly the
//! value (compact JSON for non-string values), a path that is a secret and
//! a folder at once, a child that wins over a key of the same name, key
//! names that cannot be file names, missing names, and the attributes
//! (`stat`: mode, owner, size; `--uid`, `--gid`, `--file-mode`,
//! `--dir-mode` as flags or `-o`).
//!
//! The tests of what a store holds run per store (`per_store!`: OpenBao
//! KV v2, KV v1, the age store file; tests/support/backend.rs); those of
//! the attributes the options give are the kernel's and run on one.
//!
//! Fixtures are the shared ones in tests/support (one OpenBao dev server
//! or store file per test: a store of its own keeps each test's data
//! apart). Nothing here skips: a missing `bao`, `age` or FUSE fails the
//! test with a message that says what to install.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use serde_json::json;
use support::{names, per_store, q, run_ok, s, seeded, set, sh, sh_ok, Backend, Mount, Store};

per_store!(ls_and_cat_show_folders_secrets_and_exact_values);
fn ls_and_cat_show_folders_secrets_and_exact_values(backend: Backend) {
    let store = Store::seeded(backend);
    let m = store.mount("", &[]);
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

per_store!(the_root_lists_plain_secrets_beside_folders);
fn the_root_lists_plain_secrets_beside_folders(backend: Backend) {
    let store = Store::seeded_with(
        backend,
        &[
            ("solo", json!({"KEY": "alone"})),
            ("folder/inner", json!({"I": "1"})),
            ("both", json!({"B": "2"})),
            ("both/child", json!({"C": "3"})),
        ],
    );
    let m = store.mount("", &[]);
    // -p marks directories: every name at the root is one.
    assert_eq!(
        run_ok("ls", &["-p", s(m.path())]),
        "both/\nfolder/\nsolo/\n"
    );
    assert_eq!(run_ok("ls", &["-p", s(&m.at("solo"))]), "KEY\n");
    assert_eq!(run_ok("ls", &["-p", s(&m.at("both"))]), "B\nchild/\n");
    assert_eq!(run_ok("cat", &[s(&m.at("solo/KEY"))]), "alone");
}

per_store!(a_path_that_is_secret_and_folder_shows_keys_and_children);
fn a_path_that_is_secret_and_folder_shows_keys_and_children(backend: Backend) {
    let store = Store::seeded(backend);
    let m = store.mount("", &[]);
    assert_eq!(
        sh_ok(&format!("ls {}", q(&m.at("myapp/db")))),
        "MULTI\nPASSWORD\nUNICODE\nUSER\nreplica\n"
    );
    assert!(m.at("myapp/db/replica").is_dir());
    assert_eq!(std::fs::read(m.at("myapp/db/replica/HOST")).unwrap(), b"r1");
}

per_store!(a_child_directory_wins_over_a_key_of_the_same_name);
fn a_child_directory_wins_over_a_key_of_the_same_name(backend: Backend) {
    let store = Store::seeded(backend);
    let m = store.mount("", &[]);
    assert!(m.at("clash/child").is_dir());
    assert_eq!(std::fs::read(m.at("clash/child/x")).unwrap(), b"y");
    assert_eq!(std::fs::read(m.at("clash/k")).unwrap(), b"v");
}

per_store!(non_string_values_are_compact_json);
fn non_string_values_are_compact_json(backend: Backend) {
    let store = Store::seeded(backend);
    let m = store.mount("", &[]);
    let read = |k: &str| std::fs::read_to_string(m.at(&format!("myapp/typed/{k}"))).unwrap();
    assert_eq!(read("n"), "42");
    assert_eq!(read("f"), "1.5");
    assert_eq!(read("b"), "true");
    assert_eq!(read("o"), r#"{"a":[1,"x"]}"#);
    assert_eq!(read("a"), "[1,2]");
    assert_eq!(read("z"), "null");
}

per_store!(keys_that_cannot_be_file_names_are_hidden_and_the_others_read);
fn keys_that_cannot_be_file_names_are_hidden_and_the_others_read(backend: Backend) {
    let store = Store::start(backend);
    let long = "k".repeat(300);
    store.put(
        "odd",
        json!({
            "ok": "1", "with space": "2", ".dot": "3", "ünï": "4",
            "a/b": "slash", "..": "dotdot", long.as_str(): "long"
        }),
    );
    let m = store.mount("", &[]);
    assert_eq!(
        names(&m.at("odd")),
        set(&["ok", "with space", ".dot", "ünï"])
    );
    assert_eq!(run_ok("cat", &[s(&m.at("odd/with space"))]), "2");
    assert_eq!(std::fs::read(m.at("odd/.dot")).unwrap(), b"3");
    assert_eq!(std::fs::read(m.at("odd/ünï")).unwrap(), b"4");
}

per_store!(missing_names_are_enoent);
fn missing_names_are_enoent(backend: Backend) {
    let store = Store::seeded(backend);
    let m = store.mount("", &[]);
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

per_store!(stat_shows_mode_owner_and_size);
fn stat_shows_mode_owner_and_size(backend: Backend) {
    let store = Store::seeded(backend);
    let m = store.mount("", &[]);
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
fn files_given_to_another_user_with_uid_and_gid_are_readable_by_that_user() {
    // As root, `--uid 65534 --gid 65534` without --allow-other: FUSE would
    // let nobody but root in, so the owner could not read its own files.
    // Naming another user implies allow_other (and says so in the log);
    // the modes still decide who reads.
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &["--uid", "65534", "--gid", "65534"]);
    let parent = m.path().parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |uid: u32| {
        support::run(
            "setpriv",
            &[
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "cat",
                s(&m.at("myapp/db/PASSWORD")),
            ],
        )
    };
    let owner = as_user(65534);
    assert!(
        owner.status.success(),
        "uid 65534 cannot read its own file: {}",
        String::from_utf8_lossy(&owner.stderr)
    );
    assert_eq!(owner.stdout, b"hunter2");
    let other = as_user(4243);
    assert!(
        !other.status.success(),
        "a 0400 file of uid 65534 was read by uid 4243"
    );
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("Permission denied"),
        "{other:?}"
    );
    assert!(
        m.log().contains("mounting with allow_other"),
        "no log line says allow_other was implied:\n{}",
        m.log()
    );
}
