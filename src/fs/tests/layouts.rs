//! Core tests of the `json` and `env` layouts, version views and metadata
//! attributes, over the in-memory store.

use super::*;
use crate::fs::view::{Layout, Views};

/// A filesystem over `store` in `layout`, writable, whose clock moves only
/// when the test says.
fn laid_out(store: Arc<MemoryStore>, layout: Layout) -> (SecretFs, Arc<ManualClock>) {
    let clock = ManualClock::new();
    let fs = SecretFs::with_views(
        Arc::new(HideDeleted::new(store)),
        SecretPath::root(),
        config(Duration::from_secs(30)),
        clock.clone(),
        Views::of_layout(layout),
    );
    (fs, clock)
}

fn text(fs: &SecretFs, path: &str) -> String {
    String::from_utf8(read_all(fs, path).unwrap()).unwrap()
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
    assert_eq!(fs.getattr(ino).unwrap().size, 48);
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
    assert_eq!(fs.create(myapp, "x.txt").unwrap_err().errno(), libc::EINVAL);
}

#[test]
fn rmdir_of_a_folder_in_the_json_layout_never_deletes_the_secret_beside_it() {
    let store = Arc::new(MemoryStore::new());
    store.put("app", json!({"K": "v"}));
    let (fs, _) = laid_out(store.clone(), Layout::Json);
    let root = path_ino(&fs, "").unwrap();
    // `app` is only a secret here: no directory to remove.
    assert_eq!(fs.rmdir(root, "app").unwrap_err().errno(), libc::ENOENT);
    fs.mkdir(root, "app").unwrap();
    fs.rmdir(root, "app").unwrap();
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
    let (fs, clock) = laid_out(store.clone(), Layout::Json);
    let rx = invalidations_of(&fs);
    let ino = path_ino(&fs, "myapp/db.json").unwrap();
    store.put("myapp/db", json!({"USER": "other"}));
    clock.advance(Duration::from_secs(31));
    assert_eq!(fs.getattr(ino).unwrap().size, 17);
    let got: Vec<Invalidation> = rx.try_iter().collect();
    assert!(got.contains(&Invalidation::Inode(ino)), "{got:?}");
}
