//! Core tests over the in-memory store: the mapping, lookups, listings,
//! freshness and backend-call counts, without any mount.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::cache::{CachePolicy, SystemClock};
use super::inode::{Ino, ROOT_INO};
use super::*;
use crate::store::memory::MemoryStore;

fn presentation() -> Presentation {
    Presentation {
        uid: 1000,
        gid: 1000,
        file_mode: 0o400,
        dir_mode: 0o500,
    }
}

fn policy(ttl: Duration) -> CachePolicy {
    CachePolicy {
        ttl,
        negative_ttl: ttl.min(Duration::from_secs(5)),
        stale_if_error: Duration::from_secs(300),
        capacity: NonZeroUsize::new(100).unwrap(),
    }
}

fn fs_over(store: Arc<MemoryStore>, root: &str, ttl: Duration) -> SecretFs {
    SecretFs::new(
        store,
        SecretPath::parse(root),
        FsConfig {
            presentation: presentation(),
            cache: policy(ttl),
            read_only: false,
            max_value_size: 1024,
        },
        Arc::new(SystemClock),
    )
}

fn seeded() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    store.put(
        "myapp/db",
        json!({"PASSWORD": "hunter2", "USER": "app", "PORT": 5432}),
    );
    store.put("myapp/db/replica", json!({"HOST": "r1"}));
    store.put("myapp/api/token", json!({"value": "t0k"}));
    store.put("other", json!({"replica": "shadowed", "k": "v"}));
    store.put("other/replica", json!({"x": "y"}));
    store
}

fn path_ino(fs: &SecretFs, path: &str) -> Result<Ino> {
    let mut ino = ROOT_INO;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(ino, part)?.ino;
    }
    Ok(ino)
}

fn read_all(fs: &SecretFs, path: &str) -> Result<Vec<u8>> {
    let ino = path_ino(fs, path)?;
    let fh = fs.open(ino, false, false)?;
    let bytes = fs.read(fh, 0, 1 << 20, |b| b.to_vec());
    fs.release(fh);
    bytes
}

fn names(fs: &SecretFs, path: &str) -> Vec<(String, bool)> {
    let ino = path_ino(fs, path).unwrap();
    let fh = fs.opendir(ino).unwrap();
    let (_, entries) = fs.dir_entries(fh).unwrap();
    fs.release(fh);
    entries.iter().map(|e| (e.name.clone(), e.is_dir)).collect()
}

#[test]
fn folders_and_secrets_are_directories_and_keys_are_files() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    assert_eq!(
        names(&fs, ""),
        vec![("myapp".into(), true), ("other".into(), true)]
    );
    assert_eq!(
        names(&fs, "myapp"),
        vec![("api".into(), true), ("db".into(), true)]
    );
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    assert_eq!(read_all(&fs, "myapp/api/token/value").unwrap(), b"t0k");
}

#[test]
fn a_path_that_is_secret_and_folder_shows_keys_and_children() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    assert_eq!(
        names(&fs, "myapp/db"),
        vec![
            ("PASSWORD".into(), false),
            ("PORT".into(), false),
            ("USER".into(), false),
            ("replica".into(), true)
        ]
    );
    assert_eq!(read_all(&fs, "myapp/db/replica/HOST").unwrap(), b"r1");
}

#[test]
fn the_directory_wins_over_a_key_of_the_same_name() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    assert!(names(&fs, "other").contains(&("replica".into(), true)));
    let attr = fs
        .lookup(path_ino(&fs, "other").unwrap(), "replica")
        .unwrap();
    assert!(attr.is_dir);
    assert_eq!(read_all(&fs, "other/k").unwrap(), b"v");
}

#[test]
fn file_attributes_carry_size_mode_and_owner() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
    let attr = fs.getattr(ino).unwrap();
    assert_eq!(
        (attr.size, attr.perm, attr.uid, attr.gid, attr.is_dir),
        (7, 0o400, 1000, 1000, false)
    );
    let dir = fs.getattr(path_ino(&fs, "myapp").unwrap()).unwrap();
    assert_eq!((dir.perm, dir.is_dir), (0o500, true));
    assert_eq!(read_all(&fs, "myapp/db/PORT").unwrap(), b"5432");
}

#[test]
fn missing_names_are_enoent() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    assert_eq!(path_ino(&fs, "nope").unwrap_err().errno(), libc::ENOENT);
    assert_eq!(
        path_ino(&fs, "myapp/db/NOPE").unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(path_ino(&fs, "myapp/..").unwrap_err().errno(), libc::ENOENT);
}

#[test]
fn a_source_folder_becomes_the_root() {
    let fs = fs_over(seeded(), "myapp", Duration::from_secs(30));
    assert_eq!(
        names(&fs, ""),
        vec![("api".into(), true), ("db".into(), true)]
    );
    assert_eq!(read_all(&fs, "db/USER").unwrap(), b"app");
}

#[test]
fn reads_at_offsets_return_the_right_slice() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    let fh = fs
        .open(path_ino(&fs, "myapp/db/PASSWORD").unwrap(), false, false)
        .unwrap();
    assert_eq!(fs.read(fh, 2, 3, |b| b.to_vec()).unwrap(), b"nte");
    assert_eq!(fs.read(fh, 5, 100, |b| b.to_vec()).unwrap(), b"r2");
    assert!(fs.read(fh, 100, 10, |b| b.to_vec()).unwrap().is_empty());
    fs.release(fh);
    assert_eq!(
        fs.read(fh, 0, 1, |b| b.len()).unwrap_err().errno(),
        libc::ESTALE
    );
}

#[test]
fn an_open_handle_keeps_the_value_it_opened() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::ZERO);
    let fh = fs
        .open(path_ino(&fs, "myapp/db/PASSWORD").unwrap(), false, false)
        .unwrap();
    store.put("myapp/db", json!({"PASSWORD": "changed"}));
    assert_eq!(fs.read(fh, 0, 100, |b| b.to_vec()).unwrap(), b"hunter2");
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"changed");
}

#[test]
fn cached_reads_make_no_backend_calls() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    read_all(&fs, "myapp/db/PASSWORD").unwrap();
    let (lists, reads) = (store.list_calls(), store.read_calls());
    for _ in 0..10 {
        read_all(&fs, "myapp/db/PASSWORD").unwrap();
        read_all(&fs, "myapp/db/USER").unwrap();
    }
    assert_eq!((store.list_calls(), store.read_calls()), (lists, reads));
}

#[test]
fn a_folder_known_from_its_parent_listing_is_not_read_as_a_secret() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    names(&fs, "");
    let reads = store.read_calls();
    // "myapp" is listed only as a folder: no GET of secret "myapp".
    names(&fs, "myapp");
    assert_eq!(store.read_calls(), reads);
}

#[test]
fn a_change_in_the_store_shows_after_the_ttl() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_millis(200));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    store.put("myapp/db", json!({"PASSWORD": "rotated-and-longer"}));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(
        read_all(&fs, "myapp/db/PASSWORD").unwrap(),
        b"rotated-and-longer"
    );
    let ino = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
    assert_eq!(fs.getattr(ino).unwrap().size, 18);
}

#[test]
fn attributes_are_valid_no_longer_than_the_cached_value() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    let attr = fs
        .getattr(path_ino(&fs, "myapp/db/PASSWORD").unwrap())
        .unwrap();
    assert!(attr.valid_for <= Duration::from_secs(30));
    assert!(attr.valid_for > Duration::from_secs(25));
}

#[test]
fn store_outage_is_eio_for_uncached_and_stale_for_cached() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_millis(100));
    read_all(&fs, "myapp/db/PASSWORD").unwrap();
    std::thread::sleep(Duration::from_millis(150));
    store.set_fault(Some(Error::Unavailable("connection refused".into())));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    // Nothing under myapp/api was ever fetched.
    assert_eq!(
        path_ino(&fs, "myapp/api/token").unwrap_err().errno(),
        libc::EIO
    );
}

#[test]
fn permission_denied_is_eacces() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    store.set_fault(Some(Error::PermissionDenied("403".into())));
    assert_eq!(path_ino(&fs, "myapp").unwrap_err().errno(), libc::EACCES);
}

#[test]
fn many_threads_opening_one_cold_secret_make_one_read() {
    let store = seeded();
    let fs = Arc::new(fs_over(store.clone(), "", Duration::from_secs(30)));
    let db = path_ino(&fs, "myapp/db/replica")
        .and(path_ino(&fs, "myapp/db"))
        .unwrap();
    let reads = store.read_calls();
    // The listing of myapp/db is cached by now; its secret is not.
    store.set_delay(Duration::from_millis(100));
    let barrier = Arc::new(std::sync::Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (fs, barrier) = (fs.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                fs.lookup(db, "PASSWORD").map(|a| a.size)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), 7);
    }
    assert_eq!(store.read_calls() - reads, 1);
}

#[test]
fn forgotten_inodes_are_dropped() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    let before = fs.stats().0;
    let ino = path_ino(&fs, "myapp").unwrap();
    assert_eq!(fs.stats().0, before + 1);
    fs.forget(ino, 1);
    assert_eq!(fs.stats().0, before);
}
