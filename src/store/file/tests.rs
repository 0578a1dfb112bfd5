use std::sync::Arc;

use age::secrecy::ExposeSecret;
use age::x25519;
use serde_json::json;

use super::*;
use crate::metrics::Meter;
use crate::store::deadline::Deadline;
use crate::store::SecretValue;

use crypt::{recipient_of, NO_PASSPHRASE};

/// A store file made by `init`, and the identity file that opens it.
struct Fixture {
    dir: tempfile::TempDir,
    file: PathBuf,
    key: PathBuf,
    id: x25519::Identity,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let id = x25519::Identity::generate();
    let key = dir.path().join("key.txt");
    std::fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
    let file = dir.path().join("app.age");
    let source = format!("file:{}", file.display());
    init(&source, &[id.to_public().to_string()], None, None).unwrap();
    Fixture { dir, file, key, id }
}

impl Fixture {
    fn open(&self) -> FileStore {
        open(&self.file, &self.key)
    }

    /// The file's plaintext, as `age -d` shows it.
    fn plaintext(&self) -> serde_json::Value {
        let plain = crypt::decrypt(
            &[crypt::Key::x25519(self.id.clone())],
            &std::fs::read(&self.file).unwrap(),
        )
        .unwrap();
        serde_json::from_slice(&plain).unwrap()
    }

    /// Replaces the file as someone else would (`age -r`), in place.
    fn rewrite(&self, doc: serde_json::Value) {
        let file = crypt::encrypt(&[recipient_of(&self.id)], doc.to_string().as_bytes()).unwrap();
        std::fs::write(&self.file, file).unwrap();
    }
}

/// The store in `file`, opened with the identity file `key`.
fn open(file: &Path, key: &Path) -> FileStore {
    match FileStore::open(file, key, &NO_PASSPHRASE, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => panic!("cannot open the store: {e}"),
    }
}

/// Writes `pairs` as the secret at `path` if `when` holds.
fn put(
    s: &FileStore,
    path: &str,
    pairs: &[(&str, &str)],
    when: Precondition,
) -> Result<Option<Revision>> {
    s.write(
        &Deadline::per_request(),
        &SecretPath::parse(path),
        &data(pairs),
        &when,
    )
}

fn data(pairs: &[(&str, &str)]) -> SecretData {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), SecretValue::from_json(&json!(v))))
        .collect()
}

fn value(s: &FileStore, path: &str, key: &str) -> Option<serde_json::Value> {
    s.read(&Deadline::per_request(), &SecretPath::parse(path))
        .unwrap()
        .and_then(|secret| secret.keys.get(key).map(SecretValue::to_json))
}

#[test]
fn what_is_written_reads_back_and_lists_as_folders() {
    let f = fixture();
    let s = f.open();
    assert_eq!(
        s.list(&Deadline::per_request(), &SecretPath::root())
            .unwrap(),
        None
    );
    let rev = put(&s, "app/db", &[("password", "pw")], Precondition::Absent).unwrap();
    assert_eq!(rev, Some(Revision::new("1")));
    assert_eq!(value(&s, "app/db", "password"), Some(json!("pw")));
    let root = s
        .list(&Deadline::per_request(), &SecretPath::root())
        .unwrap()
        .unwrap();
    assert_eq!(
        root,
        Listing::complete(vec![ListEntry {
            name: "app".into(),
            folder: true
        }])
    );
    let app = s
        .list(&Deadline::per_request(), &SecretPath::parse("app"))
        .unwrap()
        .unwrap();
    assert_eq!(app[0].name, "db");
    assert!(!app[0].folder);
    // Another process opening the file sees the same.
    assert_eq!(value(&f.open(), "app/db", "password"), Some(json!("pw")));
    // The file is the documented JSON.
    let doc = f.plaintext();
    assert_eq!(doc["secretfs"], json!(1));
    assert_eq!(
        doc["secrets"]["app/db"]["versions"][0]["data"],
        json!({"password": "pw"})
    );
    assert_eq!(doc["secrets"]["app/db"]["versions"][0]["version"], json!(1));
}

#[test]
fn versions_and_check_and_set_work_as_on_kv_v2() {
    let f = fixture();
    let s = f.open();
    let p = SecretPath::parse("db");
    put(&s, "db", &[("k", "one")], Precondition::Any).unwrap();
    let two = put(
        &s,
        "db",
        &[("k", "two")],
        Precondition::At(Revision::new("1")),
    )
    .unwrap();
    assert_eq!(two, Some(Revision::new("2")));
    // A writer that read version 1 loses.
    assert!(matches!(
        put(
            &s,
            "db",
            &[("k", "three")],
            Precondition::At(Revision::new("1"))
        ),
        Err(Error::CasConflict)
    ));
    assert!(matches!(
        put(&s, "db", &[("k", "x")], Precondition::Absent),
        Err(Error::CasConflict)
    ));
    let v1 = s
        .read_version(&Deadline::per_request(), &p, 1)
        .unwrap()
        .unwrap();
    assert_eq!(v1.keys.get("k").unwrap().to_json(), json!("one"));
    assert_eq!(v1.revision, Some(Revision::new("1")));
    assert!(v1.modified.is_some());
    assert_eq!(value(&s, "db", "k"), Some(json!("two")));
    assert!(s
        .read_version(&Deadline::per_request(), &p, 9)
        .unwrap()
        .is_none());
    // A delete hides the secret; its versions stay, and the next write
    // (which may then expect it absent) is version 3.
    s.delete(&Deadline::per_request(), &p).unwrap();
    assert!(s.read(&Deadline::per_request(), &p).unwrap().is_none());
    assert_eq!(
        s.list(&Deadline::per_request(), &SecretPath::root())
            .unwrap(),
        None
    );
    assert!(s
        .read_version(&Deadline::per_request(), &p, 2)
        .unwrap()
        .is_none());
    assert!(s
        .read_version(&Deadline::per_request(), &p, 1)
        .unwrap()
        .is_some());
    let three = put(&s, "db", &[("k", "back")], Precondition::Absent).unwrap();
    assert_eq!(three, Some(Revision::new("3")));
}

#[test]
fn custom_metadata_is_kept_with_the_secret() {
    let f = fixture();
    let s = f.open();
    let p = SecretPath::parse("db");
    assert!(matches!(
        s.set_custom_metadata(&Deadline::per_request(), &p, "owner", Some("ops")),
        Err(Error::NotFound)
    ));
    put(&s, "db", &[("k", "v")], Precondition::Any).unwrap();
    s.set_custom_metadata(&Deadline::per_request(), &p, "owner", Some("ops"))
        .unwrap();
    s.set_custom_metadata(&Deadline::per_request(), &p, "team", Some("a"))
        .unwrap();
    s.set_custom_metadata(&Deadline::per_request(), &p, "team", None)
        .unwrap();
    let read = f
        .open()
        .read(&Deadline::per_request(), &p)
        .unwrap()
        .unwrap();
    assert_eq!(
        read.custom_metadata,
        [("owner".to_string(), "ops".to_string())].into()
    );
    assert_eq!(
        f.plaintext()["secrets"]["db"]["custom_metadata"],
        json!({"owner": "ops"})
    );
}

#[test]
fn a_change_made_by_someone_else_is_read() {
    let f = fixture();
    let s = f.open();
    put(&s, "a", &[("k", "mine")], Precondition::Any).unwrap();
    f.rewrite(json!({"secrets": {"a": {"data": {"k": "theirs"}}, "b/c": {"data": {"n": 1}}}}));
    assert_eq!(value(&s, "a", "k"), Some(json!("theirs")));
    assert_eq!(value(&s, "b/c", "n"), Some(json!(1)));
    // And a write builds on what they left.
    put(
        &s,
        "a",
        &[("k", "again")],
        Precondition::At(Revision::new("1")),
    )
    .unwrap();
    assert_eq!(value(&f.open(), "b/c", "n"), Some(json!(1)));
}

#[test]
fn a_file_it_cannot_open_fails_as_the_store_saying_no() {
    let f = fixture();
    let s = f.open();
    let other = x25519::Identity::generate();
    let file = crypt::encrypt(&[recipient_of(&other)], b"{}").unwrap();
    std::fs::write(&f.file, file).unwrap();
    assert!(matches!(
        s.read(&Deadline::per_request(), &SecretPath::parse("a")),
        Err(Error::PermissionDenied(_))
    ));
    std::fs::write(&f.file, b"not age").unwrap();
    let err = s
        .read(&Deadline::per_request(), &SecretPath::parse("a"))
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    std::fs::remove_file(&f.file).unwrap();
    assert!(s.health(&Deadline::per_request()).is_err());
    // And it does not start.
    assert!(FileStore::open(&f.file, &f.key, &NO_PASSPHRASE, Duration::from_secs(1)).is_err());
}

#[test]
fn two_writers_on_one_file_lose_nothing() {
    let f = fixture();
    // Two stores on one file: two lock descriptors, as two processes have.
    let stores = [Arc::new(f.open()), Arc::new(f.open())];
    let threads: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(w, s)| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    put(
                        &s,
                        &format!("w{w}/s{i}"),
                        &[("i", "x")],
                        Precondition::Absent,
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = f.open();
    for w in 0..2 {
        let listed = s
            .list(
                &Deadline::per_request(),
                &SecretPath::parse(&format!("w{w}")),
            )
            .unwrap()
            .unwrap();
        assert_eq!(listed.len(), 20, "writer {w} lost writes");
    }
    // No temporary file is left, and the lock file is all that was added.
    let mut names: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["app.age", "app.age.lock", "key.txt"]);
}

#[test]
fn init_refuses_an_existing_file_and_needs_a_recipient() {
    let f = fixture();
    let source = format!("file:{}", f.file.display());
    let err = init(&source, &[f.id.to_public().to_string()], None, None).unwrap_err();
    assert!(err.contains("exists"), "{err}");
    let new = format!("file:{}", f.dir.path().join("new.age").display());
    assert!(init(&new, &[], None, None).is_err());
    assert!(init(&new, &["age1nope".into()], None, None).is_err());
    assert!(init("secret/app", &[f.id.to_public().to_string()], None, None).is_err());
}

#[test]
fn init_with_a_missing_identity_file_makes_a_key_that_opens_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    let file = dir.path().join("app.age");
    init(&format!("file:{}", file.display()), &[], Some(&key), None).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let s = open(&file, &key);
    put(&s, "a", &[("k", "v")], Precondition::Absent).unwrap();
    assert_eq!(value(&s, "a", "k"), Some(json!("v")));
}

#[test]
fn a_store_whose_recipients_leave_us_out_is_not_written() {
    let f = fixture();
    let s = f.open();
    let other = x25519::Identity::generate();
    f.rewrite(json!({"recipients": [other.to_public().to_string()], "secrets": {}}));
    assert!(matches!(
        put(&s, "a", &[("k", "v")], Precondition::Any),
        Err(Error::NotPermitted(_))
    ));
}

#[test]
fn sources_name_a_file_and_a_folder_in_it() {
    assert_eq!(FileSource::parse("secret/app"), None);
    assert_eq!(
        FileSource::parse("file:/etc/app.age"),
        Some(FileSource {
            path: "/etc/app.age".into(),
            folder: SecretPath::root()
        })
    );
    assert_eq!(
        FileSource::parse("file:app.age#team/db/"),
        Some(FileSource {
            path: "app.age".into(),
            folder: SecretPath::parse("team/db")
        })
    );
    let none = FileSettings::default();
    assert!(connect("secret/app", &none, &Meter::off())
        .unwrap()
        .is_none());
    let Err(StartError::Options(why)) = connect("file:/nowhere.age", &none, &Meter::off()) else {
        panic!("a file: SOURCE without an identity was accepted");
    };
    assert!(why.contains("--identity"), "{why}");
}

#[test]
fn a_delete_is_kv_v2s_soft_delete_of_the_latest_version() {
    let f = fixture();
    let s = f.open();
    let p = SecretPath::parse("db");
    put(&s, "db", &[("a", "1"), ("b", "2")], Precondition::Any).unwrap();
    // A key removed: a write without it; the version before keeps it.
    put(&s, "db", &[("a", "1")], Precondition::Any).unwrap();
    s.set_custom_metadata(&Deadline::per_request(), &p, "owner", Some("ops"))
        .unwrap();
    // Deleting what does not exist is no error and writes nothing.
    let before = std::fs::read(&f.file).unwrap();
    s.delete(&Deadline::per_request(), &SecretPath::parse("nothing"))
        .unwrap();
    assert_eq!(std::fs::read(&f.file).unwrap(), before);
    s.delete(&Deadline::per_request(), &p).unwrap();
    let doc = f.plaintext();
    let versions = doc["secrets"]["db"]["versions"].as_array().unwrap();
    // Marked, not removed: the data stays (KV v2's deletion_time).
    assert_eq!(versions.len(), 2);
    assert!(versions[0].get("deleted_time").is_none());
    let deleted_time = versions[1]["deleted_time"].clone();
    assert!(deleted_time.is_string(), "{deleted_time}");
    assert_eq!(versions[1]["data"], json!({"a": "1"}));
    // Deleted again: nothing changes.
    s.delete(&Deadline::per_request(), &p).unwrap();
    assert_eq!(
        f.plaintext()["secrets"]["db"]["versions"][1]["deleted_time"],
        deleted_time
    );
    let v1 = s
        .read_version(&Deadline::per_request(), &p, 1)
        .unwrap()
        .unwrap();
    assert_eq!(v1.keys.get("b").unwrap().to_json(), json!("2"));
    assert_eq!(
        v1.custom_metadata.get("owner").map(String::as_str),
        Some("ops")
    );
    // The metadata of a deleted secret may still be set (as KV v2's).
    s.set_custom_metadata(&Deadline::per_request(), &p, "team", Some("a"))
        .unwrap();
    let back = put(&s, "db", &[("a", "3")], Precondition::Absent).unwrap();
    assert_eq!(back, Some(Revision::new("3")));
    let now = s.read(&Deadline::per_request(), &p).unwrap().unwrap();
    assert_eq!(now.custom_metadata.len(), 2);
}

#[test]
fn a_write_that_cannot_take_the_lock_writes_nothing_and_says_so() {
    let f = fixture();
    let s = match FileStore::open(&f.file, &f.key, &NO_PASSPHRASE, Duration::from_millis(20)) {
        Ok(s) => s,
        Err(e) => panic!("cannot open the store: {e}"),
    };
    put(&s, "a", &[("k", "1")], Precondition::Any).unwrap();
    let before = std::fs::read(&f.file).unwrap();
    // Another writer (another process: its own descriptor) holds the lock.
    let held = replace::lock(&f.file, Duration::ZERO).unwrap();
    let err = put(&s, "a", &[("k", "2")], Precondition::Any).unwrap_err();
    // Not a timeout: that says the store may have applied the write, and
    // makes the mount think the store is down.
    assert!(matches!(err, Error::Locked(_)), "{err}");
    assert_eq!(err.errno(), libc::EAGAIN);
    assert!(!err.is_transient(), "{err}");
    assert_eq!(std::fs::read(&f.file).unwrap(), before, "nothing written");
    drop(held);
    put(&s, "a", &[("k", "2")], Precondition::Any).unwrap();
    assert_eq!(
        f.plaintext()["secrets"]["a"]["versions"][1]["data"]["k"],
        json!("2")
    );
}
