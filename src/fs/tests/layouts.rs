//! Core tests of the `json` and `env` layouts, version views and metadata
//! attributes, over the in-memory store.

use super::*;
use crate::fs::view::{Layout, Views};
use crate::fs::OpContext;

/// A filesystem over `store` in `layout`, writable, whose clock moves only
/// when the test says.
fn laid_out(store: Arc<MemoryStore>, layout: Layout) -> (Arc<SecretFs>, Arc<ManualClock>) {
    let (builder, clock) = laid_out_builder(store, layout);
    (builder.build().0, clock)
}

/// The builder of [`laid_out`]'s filesystem, and its clock.
fn laid_out_builder(
    store: Arc<MemoryStore>,
    layout: Layout,
) -> (crate::fs::Builder, Arc<ManualClock>) {
    let clock = ManualClock::new();
    let builder = SecretFs::builder(
        Arc::new(HideDeleted::new(store)),
        SecretPath::root(),
        config(Duration::from_secs(30)),
        clock.clone(),
    )
    .views(Views::of_layout(&layout));
    (builder, clock)
}

fn text(fs: &SecretFs, path: &str) -> String {
    String::from_utf8(read_all(fs, path).unwrap()).unwrap()
}

#[test]
fn rm_of_a_file_showing_a_whole_secret_says_eperm_at_once() {
    // Written before unlink returns: the refusal reaches rm.
    let store = seeded();
    let (fs, _) = laid_out(store.clone(), Layout::Json);
    let api = path_ino(&fs, "myapp/api").unwrap();
    let err = fs
        .unlink(&OpContext::background(), api, "token.json")
        .unwrap_err();
    assert_eq!(err.errno(), libc::EPERM);
    assert_eq!(names(&fs, "myapp/api"), vec![("token.json".into(), false)]);
    assert!(store.get("myapp/api/token").is_some());
}

#[test]
fn in_the_json_layout_a_secret_is_one_file_and_only_folders_are_directories() {
    let (fs, _) = laid_out(seeded(), Layout::Json);
    assert_eq!(
        names(&fs, ""),
        vec![
            ("myapp".into(), true),
            ("other".into(), true),
            ("other.json".into(), false)
        ]
    );
    // db is a secret and a folder: both show; token is only a secret.
    assert_eq!(
        names(&fs, "myapp"),
        vec![
            ("api".into(), true),
            ("db".into(), true),
            ("db.json".into(), false)
        ]
    );
    assert_eq!(names(&fs, "myapp/api"), vec![("token.json".into(), false)]);
    assert_eq!(
        path_ino(&fs, "myapp/api/token").unwrap_err().errno(),
        libc::ENOENT
    );
    // The folder db holds its children only, not the secret's keys.
    assert_eq!(names(&fs, "myapp/db"), vec![("replica.json".into(), false)]);
    assert_eq!(
        path_ino(&fs, "myapp/db/PASSWORD").unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(
        text(&fs, "myapp/db.json"),
        "{\"PASSWORD\":\"hunter2\",\"PORT\":5432,\"USER\":\"app\"}\n"
    );
    let ino = path_ino(&fs, "myapp/db.json").unwrap();
    assert_eq!(fs.getattr(&OpContext::background(), ino).unwrap().size, 48);
}

#[test]
fn writing_a_json_file_replaces_the_data_in_one_write_and_keeps_types() {
    let store = seeded();
    let (fs, _) = laid_out(store.clone(), Layout::Json);
    let writes = store.write_calls();
    write_file(
        &fs,
        "myapp/db.json",
        br#"{"USER":"admin","PORT":6543,"TLS":{"on":true}}"#,
    )
    .unwrap();
    assert_eq!(store.write_calls() - writes, 1);
    assert_eq!(
        store.get("myapp/db"),
        Some(json!({"USER": "admin", "PORT": 6543, "TLS": {"on": true}}))
    );
    assert_eq!(
        text(&fs, "myapp/db.json"),
        "{\"PORT\":6543,\"TLS\":{\"on\":true},\"USER\":\"admin\"}\n"
    );
    // Not a JSON object: EINVAL, and the store keeps what it had.
    for bad in [&b"[1,2]"[..], b"{\"a\":", b"not json"] {
        let e = write_file(&fs, "myapp/db.json", bad).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
    }
    assert_eq!(store.write_calls() - writes, 1);
    assert_eq!(store.get("myapp/db").unwrap()["USER"], "admin");
}

#[test]
fn creating_a_json_file_creates_the_secret_it_is_named_after() {
    let store = seeded();
    let (fs, _) = laid_out(store.clone(), Layout::Json);
    write_file(&fs, "myapp/cache.json", b"{\"HOST\":\"redis\"}\n").unwrap();
    assert_eq!(store.get("myapp/cache"), Some(json!({"HOST": "redis"})));
    assert!(names(&fs, "myapp").contains(&("cache.json".into(), false)));
    assert!(!names(&fs, "myapp").contains(&("cache".into(), true)));
    // At the mount's root too: a secret may live there.
    write_file(&fs, "/top.json", b"{}").unwrap();
    assert_eq!(store.get("top"), Some(json!({})));
    // A name that is no .json file is no secret.
    let myapp = path_ino(&fs, "myapp").unwrap();
    assert_eq!(
        fs.create(&OpContext::background(), myapp, "x.txt")
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
}

#[test]
fn rmdir_of_a_folder_in_the_json_layout_never_deletes_the_secret_beside_it() {
    let store = Arc::new(MemoryStore::new());
    store.put("app", json!({"K": "v"}));
    let (fs, _) = laid_out(store.clone(), Layout::Json);
    let root = path_ino(&fs, "").unwrap();
    // `app` is only a secret here: no directory to remove.
    assert_eq!(
        fs.rmdir(&OpContext::background(), root, "app")
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
    fs.mkdir(&OpContext::background(), root, "app").unwrap();
    fs.rmdir(&OpContext::background(), root, "app").unwrap();
    assert_eq!(store.get("app"), Some(json!({"K": "v"})));
}

#[test]
fn in_the_env_layout_a_secret_is_one_env_file() {
    let store = seeded();
    store.put("q", json!({"A": "two words", "B": "it's", "bad-name": "x"}));
    let (fs, _) = laid_out(store.clone(), Layout::Env);
    assert_eq!(names(&fs, "myapp/api"), vec![("token.env".into(), false)]);
    assert_eq!(
        text(&fs, "myapp/db.env"),
        "PASSWORD=hunter2\nPORT=5432\nUSER=app\n"
    );
    assert_eq!(text(&fs, "q.env"), "A='two words'\nB=\"it's\"\n");
    // Written back: one write; the key no .env can show is kept; PORT
    // stays a number.
    let writes = store.write_calls();
    write_file(&fs, "/q.env", b"A='one'\nPORT=1\n").unwrap();
    assert_eq!(store.write_calls() - writes, 1);
    assert_eq!(
        store.get("q"),
        Some(json!({"A": "one", "PORT": "1", "bad-name": "x"}))
    );
    write_file(&fs, "myapp/db.env", b"PORT=6543\n").unwrap();
    assert_eq!(store.get("myapp/db"), Some(json!({"PORT": 6543})));
    // A line that does not parse: EINVAL, nothing written.
    let e = write_file(&fs, "myapp/db.env", b"PORT=1\nnot a pair\n").unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert_eq!(store.get("myapp/db"), Some(json!({"PORT": 6543})));
    // A new file is a new secret.
    write_file(&fs, "myapp/new.env", b"K=v\n").unwrap();
    assert_eq!(store.get("myapp/new"), Some(json!({"K": "v"})));
}

#[test]
fn a_json_file_is_invalidated_when_its_secret_changes() {
    let store = seeded();
    let (builder, clock) = laid_out_builder(store.clone(), Layout::Json);
    let (fs, rx) = notified(builder);
    let ino = path_ino(&fs, "myapp/db.json").unwrap();
    let size = fs.getattr(&OpContext::background(), ino).unwrap().size;
    store.put("myapp/db", json!({"USER": "other"}));
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        fs.getattr(&OpContext::background(), ino).unwrap().size,
        size,
        "the old inode keeps it"
    );
    let got: Vec<Invalidation> = rx.try_iter().collect();
    let myapp = path_ino(&fs, "myapp").unwrap();
    let entry = Invalidation::Entry {
        parent: myapp,
        name: "db.json".into(),
    };
    assert!(got.contains(&entry), "{got:?}");
    assert_eq!(
        fs.lookup(&OpContext::background(), myapp, "db.json")
            .unwrap()
            .size,
        17
    );
}

// ---- versions --------------------------------------------------------------

/// `app/db` written three times; `app/db@2` a real secret of its own.
fn versioned() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    store.put("app/db", json!({"PASSWORD": "one", "USER": "app"}));
    store.put("app/db", json!({"PASSWORD": "two", "USER": "app"}));
    store.put("app/db", json!({"PASSWORD": "three"}));
    store.put("app/db@2", json!({"REAL": "yes"}));
    store
}

#[test]
fn a_version_of_a_secret_is_looked_up_by_name_and_never_listed() {
    let store = versioned();
    let (fs, _) = laid_out(store.clone(), Layout::Keys);
    assert_eq!(text(&fs, "app/db@1/PASSWORD"), "one");
    assert_eq!(
        names(&fs, "app/db@1"),
        vec![("PASSWORD".into(), false), ("USER".into(), false)]
    );
    assert_eq!(text(&fs, "app/db@3/PASSWORD"), "three");
    assert_eq!(text(&fs, "app/db/PASSWORD"), "three");
    assert_eq!(
        names(&fs, "app"),
        vec![("db".into(), true), ("db@2".into(), true)]
    );
    // A real secret of that name wins.
    assert_eq!(text(&fs, "app/db@2/REAL"), "yes");
    // No such version, or not a version's name.
    for missing in [
        "app/db@4",
        "app/db@0",
        "app/db@01",
        "app/nope@1",
        "app/db@1/NOPE",
    ] {
        assert_eq!(
            path_ino(&fs, missing).unwrap_err().errno(),
            libc::ENOENT,
            "{missing}"
        );
    }
    // The file's mtime is the version's.
    let a = fs
        .getattr(
            &OpContext::background(),
            path_ino(&fs, "app/db@1/USER").unwrap(),
        )
        .unwrap();
    assert_eq!(a.size, 3);
}

#[test]
fn a_deleted_or_destroyed_version_is_enoent() {
    let store = versioned();
    let (fs, clock) = laid_out(store.clone(), Layout::Keys);
    assert_eq!(text(&fs, "app/db@1/PASSWORD"), "one");
    store.delete_version("app/db", 1);
    // Cached for the TTL, like any answer; then gone.
    clock.advance(Duration::from_secs(31));
    assert_eq!(path_ino(&fs, "app/db@1").unwrap_err().errno(), libc::ENOENT);
    store.remove("app/db");
    assert_eq!(path_ino(&fs, "app/db@3").unwrap_err().errno(), libc::ENOENT);
    assert_eq!(text(&fs, "app/db@2/REAL"), "yes");
}

#[test]
fn a_version_only_reads_and_a_rollback_is_a_copy() {
    let store = versioned();
    let (fs, _) = laid_out(store.clone(), Layout::Keys);
    let v1 = path_ino(&fs, "app/db@1").unwrap();
    let pw = path_ino(&fs, "app/db@1/PASSWORD").unwrap();
    let rofs = |r: Result<()>| assert_eq!(r.unwrap_err().errno(), libc::EROFS);
    rofs(fs.open(&OpContext::background(), pw, true, false).map(drop));
    rofs(fs.create(&OpContext::background(), v1, "NEW").map(drop));
    rofs(
        fs.create(&OpContext::background(), v1, ".NEW.swp")
            .map(drop),
    );
    rofs(fs.mkdir(&OpContext::background(), v1, "d").map(drop));
    rofs(fs.unlink(&OpContext::background(), v1, "USER"));
    rofs(fs.rename(&OpContext::background(), v1, "USER", v1, "USER~", false));
    rofs(
        fs.setattr(&OpContext::background(), pw, None, Some(0), None, None)
            .map(drop),
    );
    let app = path_ino(&fs, "app").unwrap();
    assert_eq!(
        fs.rmdir(&OpContext::background(), app, "db@1")
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    store.put("app/empty", json!({}));
    store.put("app/empty", json!({"K": "v"}));
    assert_eq!(
        fs.rmdir(&OpContext::background(), app, "empty@1")
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(store.get("app/empty"), Some(json!({"K": "v"})));
    assert_eq!(store.version("app/db"), Some(3));
    // `cp app/db@1/PASSWORD app/db/PASSWORD`.
    let old = read_all(&fs, "app/db@1/PASSWORD").unwrap();
    write_file(&fs, "app/db/PASSWORD", &old).unwrap();
    assert_eq!(store.get("app/db"), Some(json!({"PASSWORD": "one"})));
    assert_eq!(store.version("app/db"), Some(4));
    // The version view still shows version 1.
    assert_eq!(text(&fs, "app/db@1/USER"), "app");
}

#[test]
fn in_the_json_layout_a_version_is_a_json_file() {
    let store = versioned();
    let (fs, _) = laid_out(store.clone(), Layout::Json);
    assert_eq!(
        text(&fs, "app/db@1.json"),
        "{\"PASSWORD\":\"one\",\"USER\":\"app\"}\n"
    );
    assert_eq!(text(&fs, "app/db@2.json"), "{\"REAL\":\"yes\"}\n");
    assert_eq!(
        names(&fs, "app"),
        vec![("db.json".into(), false), ("db@2.json".into(), false)]
    );
    let e = write_file(&fs, "app/db@1.json", b"{}").unwrap_err();
    assert_eq!(e.errno(), libc::EROFS);
    assert_eq!(store.version("app/db"), Some(3));
    let (fs, _) = laid_out(store, Layout::Env);
    assert_eq!(text(&fs, "app/db@1.env"), "PASSWORD=one\nUSER=app\n");
}

#[test]
fn versions_are_read_once_per_ttl() {
    let store = versioned();
    let (fs, _) = laid_out(store.clone(), Layout::Keys);
    assert_eq!(text(&fs, "app/db@1/PASSWORD"), "one");
    let reads = store.read_calls();
    for _ in 0..5 {
        assert_eq!(text(&fs, "app/db@1/PASSWORD"), "one");
        assert_eq!(text(&fs, "app/db@1/USER"), "app");
    }
    assert_eq!(store.read_calls(), reads);
}

#[test]
fn kv1_has_no_versions() {
    let store = Arc::new(MemoryStore::kv1());
    store.put("app/db", json!({"K": "v"}));
    let (fs, _) = laid_out(store.clone(), Layout::Keys);
    assert_eq!(path_ino(&fs, "app/db@1").unwrap_err().errno(), libc::ENOENT);
    let (fs, _) = laid_out(store, Layout::Json);
    assert_eq!(
        path_ino(&fs, "app/db@1.json").unwrap_err().errno(),
        libc::ENOENT
    );
}

#[test]
fn a_secret_gone_from_its_folder_takes_its_json_file_name_along() {
    let store = seeded();
    let (builder, clock) = laid_out_builder(store.clone(), Layout::Json);
    let (fs, rx) = notified(builder);
    let api = path_ino(&fs, "myapp/api").unwrap();
    path_ino(&fs, "myapp/api/token.json").unwrap();
    store.put("myapp/api/other", json!({"K": "v"}));
    store.destroy("myapp/api/token");
    clock.advance(Duration::from_secs(31));
    assert_eq!(names(&fs, "myapp/api"), vec![("other.json".into(), false)]);
    let got: Vec<Invalidation> = rx.try_iter().collect();
    let entry = Invalidation::Entry {
        parent: api,
        name: "token.json".into(),
    };
    assert!(got.contains(&entry), "{got:?}");
}
