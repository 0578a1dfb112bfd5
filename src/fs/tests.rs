//! Core tests over the in-memory store: the mapping, lookups, listings,
//! freshness and backend-call counts, without any mount.

use crate::fs::OpContext;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::cache::CachePolicy;
use super::clock::ManualClock;
use super::inode::{Ino, ROOT_INO};
use super::*;
use crate::store::deleted::HideDeleted;
use crate::store::memory::{Call, MemoryStore, Scope};

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

/// The configuration core tests use: writable, no background refresh.
pub(super) fn config(ttl: Duration) -> FsConfig {
    FsConfig {
        presentation: presentation(),
        cache: policy(ttl),
        read_only: false,
        max_value_size: 1024,
        background_refresh: false,
    }
}

pub(super) fn fs_over(store: Arc<MemoryStore>, root: &str, ttl: Duration) -> Arc<SecretFs> {
    timed(store, root, ttl).0
}

/// A filesystem over `store` whose clock moves only when the test says.
fn timed(store: Arc<MemoryStore>, root: &str, ttl: Duration) -> (Arc<SecretFs>, Arc<ManualClock>) {
    let (builder, clock) = timed_builder(store, root, ttl);
    (builder.build().0, clock)
}

/// The builder of [`timed`]'s filesystem, and its clock.
fn timed_builder(
    store: Arc<MemoryStore>,
    root: &str,
    ttl: Duration,
) -> (super::Builder, Arc<ManualClock>) {
    let clock = ManualClock::new();
    let builder = SecretFs::builder(
        Arc::new(HideDeleted::new(store)),
        SecretPath::parse(root),
        config(ttl),
        clock.clone(),
    );
    (builder, clock)
}

pub(super) fn seeded() -> Arc<MemoryStore> {
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

/// Waits (at most 5 s, polling) for a background thread to make `done` true.
pub(super) fn soon(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(super) fn path_ino(fs: &SecretFs, path: &str) -> Result<Ino> {
    let mut ino = ROOT_INO;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(&OpContext::background(), ino, part)?.ino;
    }
    Ok(ino)
}

pub(super) fn read_all(fs: &SecretFs, path: &str) -> Result<Vec<u8>> {
    let ino = path_ino(fs, path)?;
    let fh = fs.open(&OpContext::background(), ino, false, false)?;
    let bytes = fs.read_handle(&OpContext::background(), fh, 0, 1 << 20, |b| b.to_vec());
    fs.release(&OpContext::background(), fh);
    bytes
}

fn names(fs: &SecretFs, path: &str) -> Vec<(String, bool)> {
    let ino = path_ino(fs, path).unwrap();
    let fh = fs.opendir(&OpContext::background(), ino).unwrap();
    let (_, entries) = fs.dir_entries(fh).unwrap();
    fs.release(&OpContext::background(), fh);
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
        .lookup(
            &OpContext::background(),
            path_ino(&fs, "other").unwrap(),
            "replica",
        )
        .unwrap();
    assert!(attr.is_dir);
    assert_eq!(read_all(&fs, "other/k").unwrap(), b"v");
}

#[test]
fn file_attributes_carry_size_mode_and_owner() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
    let attr = fs.getattr(&OpContext::background(), ino).unwrap();
    assert_eq!(
        (attr.size, attr.perm, attr.uid, attr.gid, attr.is_dir),
        (7, 0o400, 1000, 1000, false)
    );
    let dir = fs
        .getattr(&OpContext::background(), path_ino(&fs, "myapp").unwrap())
        .unwrap();
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
        .open(
            &OpContext::background(),
            path_ino(&fs, "myapp/db/PASSWORD").unwrap(),
            false,
            false,
        )
        .unwrap();
    assert_eq!(
        fs.read_handle(&OpContext::background(), fh, 2, 3, |b| b.to_vec())
            .unwrap(),
        b"nte"
    );
    assert_eq!(
        fs.read_handle(&OpContext::background(), fh, 5, 100, |b| b.to_vec())
            .unwrap(),
        b"r2"
    );
    assert!(fs
        .read_handle(&OpContext::background(), fh, 100, 10, |b| b.to_vec())
        .unwrap()
        .is_empty());
    fs.release(&OpContext::background(), fh);
    assert_eq!(
        fs.read_handle(&OpContext::background(), fh, 0, 1, |b| b.len())
            .unwrap_err()
            .errno(),
        libc::ESTALE
    );
}

#[test]
fn reads_serve_the_version_whose_size_the_kernel_was_last_told() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::ZERO);
    let ino = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
    let fh = fs
        .open(&OpContext::background(), ino, false, false)
        .unwrap();
    // Longer, then shorter: the kernel still holds size 7 until it asks.
    for value in ["rotated-and-longer", "short"] {
        store.put("myapp/db", json!({ "PASSWORD": value }));
        assert_eq!(
            fs.read_handle(&OpContext::background(), fh, 0, 4096, |b| b.to_vec())
                .unwrap(),
            b"hunter2"
        );
        assert_eq!(
            fs.read_ino(&OpContext::background(), ino, 0, 4096, |b| b.to_vec())
                .unwrap(),
            b"hunter2"
        );
    }
    // Asked again, the held inode keeps its size and bytes (it was
    // retired: its value changed outside); the name leads to a new inode
    // with the new ones.
    assert_eq!(fs.getattr(&OpContext::background(), ino).unwrap().size, 7);
    assert_eq!(
        fs.read_handle(&OpContext::background(), fh, 0, 4096, |b| b.to_vec())
            .unwrap(),
        b"hunter2"
    );
    let new = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
    assert_ne!(new, ino);
    assert_eq!(fs.getattr(&OpContext::background(), new).unwrap().size, 5);
    assert_eq!(
        fs.read_ino(&OpContext::background(), new, 0, 4096, |b| b.to_vec())
            .unwrap(),
        b"short"
    );
    fs.release(&OpContext::background(), fh);
}

#[test]
fn a_retired_file_opened_to_change_its_bytes_is_stale_and_o_trunc_writes() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::ZERO);
    let ctx = OpContext::background();
    let old = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
    store.put("myapp/db", json!({"PASSWORD": "rotated", "USER": "app"}));
    // The lookup finds the change: the old inode is retired.
    assert_ne!(path_ino(&fs, "myapp/db/PASSWORD").unwrap(), old);
    let version = store.version("myapp/db").unwrap();
    // Its buffer would start from "rotated", which it never showed.
    let refused = fs.open(&ctx, old, true, false).unwrap_err();
    assert_eq!(refused.errno(), libc::ESTALE);
    // So would truncate(2) to a length other than 0: "ro".
    let refused = fs.setattr(&ctx, old, None, Some(2), None, None);
    assert_eq!(refused.unwrap_err().errno(), libc::ESTALE);
    assert_eq!(
        store.version("myapp/db").unwrap(),
        version,
        "nothing written"
    );
    assert_eq!(fs.getattr(&ctx, old).unwrap().size, 7, "it keeps hunter2");
    // O_TRUNC keeps nothing of either value: the whole new one is written.
    let fh = fs.open(&ctx, old, true, true).unwrap();
    fs.write_handle(fh, 0, b"whole").unwrap();
    fs.flush(&ctx, fh).unwrap();
    fs.release(&ctx, fh);
    assert_eq!(store.get("myapp/db").unwrap()["PASSWORD"], json!("whole"));
}

#[test]
fn a_plain_secret_is_served_stale_after_its_parent_listing_expired() {
    let store = seeded();
    let (fs, clock) = timed(store.clone(), "", Duration::from_secs(30));
    // "myapp/api/token" has no children: its own listing is never fetched.
    assert_eq!(read_all(&fs, "myapp/api/token/value").unwrap(), b"t0k");
    clock.advance(Duration::from_secs(31));
    store.set_fault(Some(Error::Unavailable("connection refused".into())));
    assert_eq!(read_all(&fs, "myapp/api/token/value").unwrap(), b"t0k");
    assert_eq!(
        names(&fs, "myapp/api/token"),
        [("value".to_string(), false)]
    );
}

#[test]
fn an_open_handle_keeps_the_value_it_opened() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::ZERO);
    let fh = fs
        .open(
            &OpContext::background(),
            path_ino(&fs, "myapp/db/PASSWORD").unwrap(),
            false,
            false,
        )
        .unwrap();
    store.put("myapp/db", json!({"PASSWORD": "changed"}));
    assert_eq!(
        fs.read_handle(&OpContext::background(), fh, 0, 100, |b| b.to_vec())
            .unwrap(),
        b"hunter2"
    );
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
    let (fs, clock) = timed(store.clone(), "", Duration::from_secs(30));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    store.put("myapp/db", json!({"PASSWORD": "rotated-and-longer"}));
    clock.advance(Duration::from_secs(29));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        read_all(&fs, "myapp/db/PASSWORD").unwrap(),
        b"rotated-and-longer"
    );
    let ino = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
    assert_eq!(fs.getattr(&OpContext::background(), ino).unwrap().size, 18);
}

#[test]
fn attributes_are_valid_no_longer_than_the_cached_value() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    let attr = fs
        .getattr(
            &OpContext::background(),
            path_ino(&fs, "myapp/db/PASSWORD").unwrap(),
        )
        .unwrap();
    assert!(attr.valid_for <= Duration::from_secs(30));
    assert!(attr.valid_for > Duration::from_secs(25));
}

#[test]
fn store_outage_is_eio_for_uncached_and_stale_for_cached() {
    let store = seeded();
    let (fs, clock) = timed(store.clone(), "", Duration::from_secs(30));
    read_all(&fs, "myapp/db/PASSWORD").unwrap();
    clock.advance(Duration::from_secs(31));
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
    // Nothing can be checked: the name may exist, so it is a directory
    // whose listing is refused (paths below it may still be readable).
    let ino = path_ino(&fs, "myapp").unwrap();
    assert_eq!(
        fs.opendir(&OpContext::background(), ino)
            .unwrap_err()
            .errno(),
        libc::EACCES
    );
}

#[test]
fn a_readable_secret_in_an_unlistable_folder_is_reachable() {
    // A narrow policy: read below myapp/, nothing else; list nothing.
    let store = seeded();
    let denied = || Error::PermissionDenied("403".into());
    store.fail(Call::List, Scope::Everywhere, denied());
    store.fail(Call::Read, Scope::At("myapp"), denied());
    store.fail(Call::Read, Scope::Under("other"), denied());
    store.fail(Call::Write, Scope::Everywhere, denied());
    let fs = fs_over(store, "", Duration::from_secs(30));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    assert_eq!(
        path_ino(&fs, "myapp/db/NOPE").unwrap_err().errno(),
        libc::ENOENT
    );
    let root = fs.opendir(&OpContext::background(), ROOT_INO);
    assert_eq!(root.unwrap_err().errno(), libc::EACCES);
}

#[test]
fn a_secret_only_an_unlistable_lower_layer_holds_is_found_by_name() {
    use crate::store::layered::{Layer, Layered};
    // The bottom layer's secrets may be read, its folders listed nowhere;
    // the top layer's root is no secret it may read.
    let denied = || Error::PermissionDenied("403".into());
    let (bottom, top) = (Arc::new(MemoryStore::kv2()), Arc::new(MemoryStore::kv2()));
    bottom.put("app", json!({"A": "bottom"}));
    bottom.put("only-bottom", json!({"X": "x"}));
    bottom.put("team/db", json!({"K": "k"}));
    bottom.fail(Call::List, Scope::Everywhere, denied());
    top.put("app", json!({"C": "top"}));
    top.fail(Call::Read, Scope::At(""), denied());
    let layer = |name: &str, store: &Arc<MemoryStore>| Layer {
        name: name.to_string(),
        store: store.clone(),
        root: SecretPath::root(),
    };
    let layered = Layered::new(vec![layer("bottom", &bottom), layer("top", &top)]).unwrap();
    let fs = SecretFs::builder(
        Arc::new(layered),
        SecretPath::root(),
        config(Duration::from_secs(30)),
        ManualClock::new(),
    )
    .build()
    .0;
    assert_eq!(names(&fs, ""), [("app".to_string(), true)]);
    assert_eq!(read_all(&fs, "app/A").unwrap(), b"bottom");
    assert_eq!(read_all(&fs, "only-bottom/X").unwrap(), b"x");
    assert_eq!(names(&fs, "only-bottom"), [("X".to_string(), false)]);
    // A name no layer holds, and a folder only the unlistable layer
    // holds (nothing says it is there), are not found.
    for missing in ["nothing", "team"] {
        let e = path_ino(&fs, missing).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT, "{missing}: {e:?}");
    }
}

#[test]
fn what_only_an_unlistable_lower_layer_holds_is_found_by_name_over_an_empty_top_layer() {
    use crate::store::layered::{Layer, Layered};
    // No layer lists anything: each listing is partial and names nothing,
    // which is no folder found, and no proof that nothing is there.
    let (bottom, top) = (Arc::new(MemoryStore::kv2()), Arc::new(MemoryStore::kv2()));
    bottom.put("only-bottom", json!({"X": "x"}));
    bottom.put("only-bottom/deeper", json!({"Y": "y"}));
    bottom.fail(
        Call::List,
        Scope::Everywhere,
        Error::PermissionDenied("403".into()),
    );
    let layer = |name: &str, store: &Arc<MemoryStore>| Layer {
        name: name.to_string(),
        store: store.clone(),
        root: SecretPath::root(),
    };
    let layered = Layered::new(vec![layer("bottom", &bottom), layer("top", &top)]).unwrap();
    let fs = SecretFs::builder(
        Arc::new(layered),
        SecretPath::root(),
        config(Duration::from_secs(30)),
        ManualClock::new(),
    )
    .build()
    .0;
    assert!(names(&fs, "").is_empty());
    assert_eq!(read_all(&fs, "only-bottom/X").unwrap(), b"x");
    // A secret below a secret, in a folder no layer lists.
    assert_eq!(read_all(&fs, "only-bottom/deeper/Y").unwrap(), b"y");
    assert_eq!(names(&fs, "only-bottom"), [("X".to_string(), false)]);
    for missing in ["nothing", "only-bottom/nothing"] {
        let e = path_ino(&fs, missing).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT, "{missing}: {e:?}");
    }
}

#[test]
fn a_readable_secret_below_folders_no_one_may_list_is_reachable() {
    // A policy that reads every secret (`secret/data/*`) and lists none:
    // `myapp` is no secret (404) and may not be listed (403); it may well
    // be a folder. It was ENOENT.
    let store = seeded();
    store.fail(
        Call::List,
        Scope::Everywhere,
        Error::PermissionDenied("403".into()),
    );
    let fs = fs_over(store, "", Duration::from_secs(30));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    // Beside a secret's known keys, a name that is no secret is no file.
    assert_eq!(
        path_ino(&fs, "myapp/db/NOPE").unwrap_err().errno(),
        libc::ENOENT
    );
    let myapp = path_ino(&fs, "myapp").unwrap();
    assert_eq!(
        fs.opendir(&OpContext::background(), myapp)
            .unwrap_err()
            .errno(),
        libc::EACCES
    );
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
                fs.lookup(&OpContext::background(), db, "PASSWORD")
                    .map(|a| a.size)
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
    let before = fs.stats().inodes;
    let ino = path_ino(&fs, "myapp").unwrap();
    assert_eq!(fs.stats().inodes, before + 1);
    fs.forget(ino, 1);
    assert_eq!(fs.stats().inodes, before);
}

// ---- the write path --------------------------------------------------------

pub(super) fn write_file(fs: &SecretFs, path: &str, bytes: &[u8]) -> Result<()> {
    let (dir, name) = path.rsplit_once('/').unwrap();
    let parent = path_ino(fs, dir)?;
    let fh = match fs.lookup(&OpContext::background(), parent, name) {
        Ok(attr) => fs.open(&OpContext::background(), attr.ino, true, true)?,
        Err(Error::NotFound) => fs.create(&OpContext::background(), parent, name)?.1,
        Err(e) => return Err(e),
    };
    let result = fs
        .write_handle(fh, 0, bytes)
        .and_then(|_| fs.flush(&OpContext::background(), fh));
    fs.release(&OpContext::background(), fh);
    result
}

/// Creates `path` as `mkstemp`, rsync, `sed -i` and editors create their
/// temporary files (`O_CREAT|O_EXCL`), writes `bytes` and closes it.
fn write_exclusive(fs: &SecretFs, path: &str, bytes: &[u8]) -> Result<()> {
    let (dir, name) = path.rsplit_once('/').unwrap();
    let parent = path_ino(fs, dir)?;
    let how = Creating {
        exclusive: true,
        caller: None,
    };
    let (_, fh) = fs.create_with(&OpContext::background(), parent, name, how)?;
    let result = fs
        .write_handle(fh, 0, bytes)
        .and_then(|_| fs.flush(&OpContext::background(), fh));
    fs.release(&OpContext::background(), fh);
    result
}

fn exclusive() -> Creating {
    Creating {
        exclusive: true,
        caller: None,
    }
}

#[test]
fn writing_a_key_is_one_store_write_that_keeps_the_other_keys() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let before = store.version("myapp/db").unwrap();
    write_file(&fs, "myapp/db/PASSWORD", b"rotated").unwrap();
    assert_eq!(store.version("myapp/db").unwrap(), before + 1);
    assert_eq!(
        store.get("myapp/db").unwrap(),
        json!({"PASSWORD": "rotated", "USER": "app", "PORT": 5432})
    );
    // Read-your-writes, whatever the TTL.
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"rotated");
}

#[test]
fn a_json_typed_key_keeps_its_type_when_rewritten_with_json() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    write_file(&fs, "myapp/db/PORT", b"6543").unwrap();
    assert_eq!(store.get("myapp/db").unwrap()["PORT"], json!(6543));
    write_file(&fs, "myapp/db/PORT", b"not a number").unwrap();
    assert_eq!(
        store.get("myapp/db").unwrap()["PORT"],
        json!("not a number")
    );
}

#[test]
fn a_close_without_writes_commits_nothing_until_release() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let before = store.write_calls();
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    // A shell opens with O_TRUNC, dup2s and closes the first descriptor.
    let fh = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.flush(&OpContext::background(), fh).unwrap();
    assert_eq!(store.write_calls(), before);
    fs.write_handle(fh, 0, b"x").unwrap();
    fs.flush(&OpContext::background(), fh).unwrap();
    fs.release(&OpContext::background(), fh);
    assert_eq!(store.write_calls(), before + 1);
    assert_eq!(store.get("myapp/db").unwrap()["USER"], json!("x"));
}

#[test]
fn touch_creates_an_empty_key_at_release() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let (_, fh) = fs
        .create(
            &OpContext::background(),
            path_ino(&fs, "myapp/db").unwrap(),
            "NEW",
        )
        .unwrap();
    fs.flush(&OpContext::background(), fh).unwrap();
    fs.release(&OpContext::background(), fh);
    assert_eq!(store.get("myapp/db").unwrap()["NEW"], json!(""));
}

#[test]
fn appends_and_offset_writes_change_the_right_bytes() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let fh = fs.open(&OpContext::background(), ino, true, false).unwrap();
    fs.write_handle(fh, 3, b"-suffix").unwrap();
    fs.write_handle(fh, 0, b"A").unwrap();
    fs.flush(&OpContext::background(), fh).unwrap();
    fs.release(&OpContext::background(), fh);
    assert_eq!(store.get("myapp/db").unwrap()["USER"], json!("App-suffix"));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let before = store.get("myapp/db").unwrap();
    let err = write_file(&fs, "myapp/db/USER", &[0xff, 0xfe]).unwrap_err();
    assert_eq!(err.errno(), libc::EILSEQ);
    let err = write_file(&fs, "myapp/db/USER", &[b'x'; 2000]).unwrap_err();
    assert_eq!(err.errno(), libc::EFBIG);
    assert_eq!(store.get("myapp/db").unwrap(), before);
}

#[test]
fn a_read_only_mount_refuses_every_change() {
    let store = seeded();
    let fs = SecretFs::builder(
        store.clone(),
        SecretPath::root(),
        FsConfig {
            read_only: true,
            ..config(Duration::from_secs(30))
        },
        ManualClock::new(),
    )
    .build()
    .0;
    let db = path_ino(&fs, "myapp/db").unwrap();
    let key = path_ino(&fs, "myapp/db/USER").unwrap();
    assert_eq!(
        fs.open(&OpContext::background(), key, true, false)
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(
        fs.create(&OpContext::background(), db, "N")
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(
        fs.unlink(&OpContext::background(), db, "USER")
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(
        fs.mkdir(&OpContext::background(), db, "d")
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(store.write_calls(), 0);
}

#[test]
fn unlink_and_rename_are_one_write_each() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    let v = store.version("myapp/db").unwrap();
    fs.rename(&OpContext::background(), db, "USER", db, "LOGIN", false)
        .unwrap();
    assert_eq!(store.version("myapp/db").unwrap(), v + 1);
    fs.unlink(&OpContext::background(), db, "PORT").unwrap();
    assert_eq!(store.version("myapp/db").unwrap(), v + 2);
    assert_eq!(
        store.get("myapp/db").unwrap(),
        json!({"PASSWORD": "hunter2", "LOGIN": "app"})
    );
    assert_eq!(read_all(&fs, "myapp/db/LOGIN").unwrap(), b"app");
    assert_eq!(
        path_ino(&fs, "myapp/db/USER").unwrap_err().errno(),
        libc::ENOENT
    );
}

#[test]
fn rename_noreplace_and_across_secrets_are_refused() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    let api = path_ino(&fs, "myapp/api/token").unwrap();
    assert_eq!(
        fs.rename(&OpContext::background(), db, "USER", db, "PASSWORD", true)
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    assert_eq!(
        fs.rename(&OpContext::background(), db, "USER", api, "USER", false)
            .unwrap_err()
            .errno(),
        libc::EXDEV
    );
    let myapp = path_ino(&fs, "myapp").unwrap();
    assert_eq!(
        fs.rename(&OpContext::background(), myapp, "db", myapp, "db2", false)
            .unwrap_err()
            .errno(),
        libc::EXDEV
    );
}

#[test]
fn editor_scratch_files_never_reach_the_store() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    let writes = store.write_calls();
    // vim: swap file, probe file, backup by rename, new file, delete backup.
    let (_, swap) = fs
        .create_with(&OpContext::background(), db, ".PASSWORD.swp", exclusive())
        .unwrap();
    fs.write_handle(swap, 0, b"swap data").unwrap();
    fs.flush(&OpContext::background(), swap).unwrap();
    fs.release(&OpContext::background(), swap);
    let (_, probe) = fs
        .create_with(&OpContext::background(), db, "4913", exclusive())
        .unwrap();
    fs.release(&OpContext::background(), probe);
    fs.unlink(&OpContext::background(), db, "4913").unwrap();
    fs.rename(
        &OpContext::background(),
        db,
        "PASSWORD",
        db,
        "PASSWORD~",
        false,
    )
    .unwrap();
    assert_eq!(
        path_ino(&fs, "myapp/db/PASSWORD").unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD~").unwrap(), b"hunter2");
    assert_eq!(store.write_calls(), writes);
    write_file(&fs, "myapp/db/PASSWORD", b"edited").unwrap();
    fs.unlink(&OpContext::background(), db, "PASSWORD~")
        .unwrap();
    fs.unlink(&OpContext::background(), db, ".PASSWORD.swp")
        .unwrap();
    assert_eq!(store.write_calls(), writes + 1);
    assert_eq!(
        store.get("myapp/db").unwrap(),
        json!({"PASSWORD": "edited", "USER": "app", "PORT": 5432})
    );
    assert!(!names(&fs, "myapp/db")
        .iter()
        .any(|(n, _)| n.contains('~') || n.starts_with('.')));
}

#[test]
fn sed_in_place_commits_its_temporary_file_as_the_key() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    let writes = store.write_calls();
    let (_, fh) = fs
        .create_with(&OpContext::background(), db, "sedAbC123", exclusive())
        .unwrap();
    fs.write_handle(fh, 0, b"sedded").unwrap();
    fs.flush(&OpContext::background(), fh).unwrap();
    fs.release(&OpContext::background(), fh);
    fs.rename(
        &OpContext::background(),
        db,
        "sedAbC123",
        db,
        "PASSWORD",
        false,
    )
    .unwrap();
    assert_eq!(store.write_calls(), writes + 1);
    assert_eq!(store.get("myapp/db").unwrap()["PASSWORD"], json!("sedded"));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"sedded");
}

#[test]
fn a_plain_create_stores_the_key_whatever_its_name() {
    // `echo -n v > NAME` (O_CREAT|O_TRUNC, no O_EXCL) is a key, even when
    // the name looks like an editor's or tool's scratch file.
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    for name in [
        "XXAPIKEY",
        "KEY~",
        "sedCONFIG",
        ".env.tmp",
        "4913",
        ".K.swp",
        "tmpab12cd34",
    ] {
        let writes = store.write_calls();
        write_file(&fs, &format!("myapp/db/{name}"), b"v").unwrap();
        assert_eq!(store.write_calls(), writes + 1, "{name}");
        assert_eq!(store.get("myapp/db").unwrap()[name], json!("v"), "{name}");
    }
}

#[test]
fn a_temporary_file_renamed_onto_a_key_is_one_version_and_never_stored() {
    // python's mkstemp + os.replace, rsync: O_EXCL create, write, close,
    // rename onto the key.
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    for (temp, key) in [
        ("tmp7e8opawn", "PASSWORD"),
        (".USER.abBT6Y", "USER"),
        (".NEW.lZm1zU", "NEW"),
    ] {
        let writes = store.write_calls();
        write_exclusive(&fs, &format!("myapp/db/{temp}"), key.as_bytes()).unwrap();
        fs.settle(false);
        assert_eq!(
            store.write_calls(),
            writes,
            "{temp} reached the store at close"
        );
        fs.rename(&OpContext::background(), db, temp, db, key, false)
            .unwrap();
        assert_eq!(store.write_calls(), writes + 1, "{temp}");
        let now = store.get("myapp/db").unwrap();
        assert_eq!(now[key], json!(key));
        assert!(now.get(temp).is_none());
        fs.settle(true);
        assert_eq!(store.write_calls(), writes + 1, "{temp} settled later");
    }
}

#[test]
fn a_temporary_file_nobody_renames_becomes_a_key() {
    // `cp f sedCONFIG` creates with O_EXCL a name that looks like sed's:
    // once its program is done, the value is stored under its own name.
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let writes = store.write_calls();
    write_exclusive(&fs, "myapp/db/sedCONFIG", b"kept").unwrap();
    write_exclusive(&fs, "myapp/db/4913", b"").unwrap();
    assert_eq!(store.write_calls(), writes);
    assert_eq!(
        fs.status_json(&OpContext::background())["pending_files"],
        json!(1)
    );
    fs.settle(true);
    assert_eq!(store.write_calls(), writes + 1);
    assert_eq!(
        fs.status_json(&OpContext::background())["pending_files"],
        json!(0)
    );
    let now = store.get("myapp/db").unwrap();
    assert_eq!(now["sedCONFIG"], json!("kept"));
    assert!(now.get("4913").is_none(), "vim's probe is never stored");
    assert_eq!(read_all(&fs, "myapp/db/sedCONFIG").unwrap(), b"kept");
    // An exclusive create under any other name is a key at once (cp, install).
    write_exclusive(&fs, "myapp/db/CERT", b"c").unwrap();
    assert_eq!(store.write_calls(), writes + 2);
}

#[test]
fn a_key_removed_is_written_before_unlink_returns_and_a_new_one_is_a_version_of_its_own() {
    // `rm KEY`: the store holds the removal when rm is told it is done.
    // `install -m 400 f KEY`: unlink KEY, create KEY with O_EXCL, write.
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    let writes = store.write_calls();
    fs.unlink(&OpContext::background(), db, "PASSWORD").unwrap();
    assert_eq!(store.write_calls(), writes + 1);
    assert!(store.get("myapp/db").unwrap().get("PASSWORD").is_none());
    assert_eq!(
        path_ino(&fs, "myapp/db/PASSWORD").unwrap_err().errno(),
        libc::ENOENT
    );
    write_exclusive(&fs, "myapp/db/PASSWORD", b"installed").unwrap();
    assert_eq!(store.write_calls(), writes + 2);
    assert_eq!(
        store.get("myapp/db").unwrap()["PASSWORD"],
        json!("installed")
    );
    fs.settle(true);
    assert_eq!(
        store.write_calls(),
        writes + 2,
        "nothing was left for later"
    );
    // A replacement that fails: the removal stands.
    fs.unlink(&OpContext::background(), db, "PORT").unwrap();
    let (_, fh) = fs
        .create_with(&OpContext::background(), db, "PORT", exclusive())
        .unwrap();
    assert!(fs.write_handle(fh, 0, &[0xff, 0xfe]).is_err());
    fs.release(&OpContext::background(), fh);
    fs.settle(true);
    assert_eq!(
        store.get("myapp/db").unwrap(),
        json!({"PASSWORD": "installed", "USER": "app"})
    );
}

#[test]
fn a_temporary_file_left_alone_is_stored_when_its_creator_exits_or_at_its_deadline() {
    use super::local::SETTLE_AFTER;
    use crate::store::SecretPath;
    use std::time::Instant;
    // Written and closed by `caller`; when it was closed is set by hand.
    let left_alone = |fs: &SecretFs, name: &str, caller: u32, closed: Instant| {
        let db = path_ino(fs, "myapp/db").unwrap();
        let how = Creating {
            exclusive: true,
            caller: Some(caller),
        };
        let (_, fh) = fs
            .create_with(&OpContext::background(), db, name, how)
            .unwrap();
        fs.write_handle(fh, 0, b"kept").unwrap();
        fs.flush(&OpContext::background(), fh).unwrap();
        fs.release(&OpContext::background(), fh);
        let file = fs
            .names
            .scratch(&SecretPath::parse(&format!("myapp/db/{name}")));
        lock(&file.expect("a temporary file")).closed = Some(closed);
    };
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let writes = store.write_calls();
    let later = Instant::now() + Duration::from_secs(3600);
    // This test's own process keeps running: it waits for its deadline.
    left_alone(&fs, "sedRUNNER", std::process::id(), later);
    fs.settle(false);
    assert_eq!(store.write_calls(), writes, "stored before its deadline");
    left_alone(
        &fs,
        "sedLATEST",
        std::process::id(),
        Instant::now() - SETTLE_AFTER,
    );
    fs.settle(false);
    assert_eq!(store.write_calls(), writes + 1);
    assert_eq!(store.get("myapp/db").unwrap()["sedLATEST"], json!("kept"));
    // A creator that has exited (and was reaped): stored at once.
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    exited.wait().unwrap();
    left_alone(&fs, "sedEXITED", exited.id(), later);
    fs.settle(false);
    assert_eq!(store.write_calls(), writes + 2);
    assert_eq!(store.get("myapp/db").unwrap()["sedEXITED"], json!("kept"));
    assert!(store.get("myapp/db").unwrap().get("sedRUNNER").is_none());
}

#[test]
fn a_removal_whose_answer_is_lost_says_so_to_rm() {
    // Written before unlink returns, the removal's outcome is rm's: found
    // to have landed, success; not found out, "outcome unknown" (EIO),
    // never a claim that the store still holds the key.
    use crate::store::memory::Scope;
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    store.lose_write_answers(
        Scope::At("myapp/db"),
        Error::Unanswered("connection reset by peer".into()),
    );
    fs.unlink(&OpContext::background(), db, "USER").unwrap();
    store.heal();
    assert!(store.get("myapp/db").unwrap().get("USER").is_none());
    store.hang_after_write(
        Scope::At("myapp/db"),
        Error::Unanswered("connection reset by peer".into()),
    );
    let err = fs.unlink(&OpContext::background(), db, "PORT").unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(
        fs.status_json(&OpContext::background())["unknown_outcomes"],
        json!(1)
    );
    store.heal();
    assert!(store.get("myapp/db").unwrap().get("PORT").is_none());
}

#[test]
fn a_file_removed_before_its_release_is_never_written() {
    // git init: mkstemp `tXXXXXX`, close, unlink; the release (which
    // commits a created file) reaches the core after the unlink.
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    let writes = store.write_calls();
    let (_, fh) = fs
        .create_with(&OpContext::background(), db, "tXYnArg", exclusive())
        .unwrap();
    fs.flush(&OpContext::background(), fh).unwrap();
    fs.unlink(&OpContext::background(), db, "tXYnArg").unwrap();
    fs.release(&OpContext::background(), fh);
    fs.settle(true);
    assert_eq!(store.write_calls(), writes);
    assert_eq!(
        path_ino(&fs, "myapp/db/tXYnArg").unwrap_err().errno(),
        libc::ENOENT
    );
    // The name made again is a new file, written as usual.
    write_file(&fs, "myapp/db/tXYnArg", b"again").unwrap();
    assert_eq!(store.get("myapp/db").unwrap()["tXYnArg"], json!("again"));
}

#[test]
fn renames_of_temporary_files_while_the_settler_runs_never_deadlock() {
    // The settler locks the namespace, then each temporary file; a rename
    // once held a temporary file locked across its commit, which locks the
    // namespace: the two waited on each other.
    let store = seeded();
    let fs = Arc::new(fs_over(store.clone(), "", Duration::from_secs(30)));
    // What the settler thread does when woken, without pause.
    let settler = fs.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            settler.settle(false);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = fs.clone();
    std::thread::spawn(move || {
        let db = path_ino(&worker, "myapp/db").unwrap();
        for round in 0..2000 {
            let temp = format!("tmp{round:08}");
            write_exclusive(&worker, &format!("myapp/db/{temp}"), b"v").unwrap();
            worker
                .rename(&OpContext::background(), db, &temp, db, "PASSWORD", false)
                .unwrap();
        }
        let _ = tx.send(());
    });
    let finished = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        finished,
        "renames of temporary files deadlocked with the settler"
    );
    assert_eq!(store.get("myapp/db").unwrap()["PASSWORD"], json!("v"));
}

#[test]
fn names_over_255_bytes_are_enametoolong() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    let long = "x".repeat(256);
    assert_eq!(
        fs.lookup(&OpContext::background(), db, &long)
            .unwrap_err()
            .errno(),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        fs.create(&OpContext::background(), db, &long)
            .unwrap_err()
            .errno(),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        fs.mkdir(&OpContext::background(), db, &long)
            .unwrap_err()
            .errno(),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        fs.rename(&OpContext::background(), db, "USER", db, &long, false)
            .unwrap_err()
            .errno(),
        libc::ENAMETOOLONG
    );
    let user = path_ino(&fs, "myapp/db/USER").unwrap();
    assert_eq!(fs.fallocate(user).unwrap_err().errno(), libc::EOPNOTSUPP);
}

#[test]
fn mkdir_lives_in_memory_until_a_key_is_written() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let myapp = path_ino(&fs, "myapp").unwrap();
    fs.mkdir(&OpContext::background(), myapp, "cache").unwrap();
    let sub = fs
        .mkdir(
            &OpContext::background(),
            path_ino(&fs, "myapp/cache").unwrap(),
            "redis",
        )
        .unwrap();
    assert!(sub.is_dir);
    assert_eq!(store.write_calls(), 0);
    assert!(names(&fs, "myapp").contains(&("cache".into(), true)));
    write_file(&fs, "myapp/cache/redis/URL", b"redis://x").unwrap();
    assert_eq!(
        store.get("myapp/cache/redis").unwrap(),
        json!({"URL": "redis://x"})
    );
    assert_eq!(
        read_all(&fs, "myapp/cache/redis/URL").unwrap(),
        b"redis://x"
    );
    assert_eq!(
        fs.mkdir(&OpContext::background(), myapp, "cache")
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
}

#[test]
fn rmdir_only_removes_empty_directories_and_they_leave_the_listing() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let myapp = path_ino(&fs, "myapp").unwrap();
    assert_eq!(
        fs.rmdir(&OpContext::background(), myapp, "db")
            .unwrap_err()
            .errno(),
        libc::ENOTEMPTY
    );
    let token = path_ino(&fs, "myapp/api/token").unwrap();
    fs.unlink(&OpContext::background(), token, "value").unwrap();
    fs.rmdir(
        &OpContext::background(),
        path_ino(&fs, "myapp/api").unwrap(),
        "token",
    )
    .unwrap();
    assert!(store.get("myapp/api/token").is_none());
    assert_eq!(
        path_ino(&fs, "myapp/api/token").unwrap_err().errno(),
        libc::ENOENT
    );
    fs.mkdir(&OpContext::background(), myapp, "empty").unwrap();
    fs.rmdir(&OpContext::background(), myapp, "empty").unwrap();
    assert!(!names(&fs, "myapp").iter().any(|(n, _)| n == "empty"));
}

#[test]
fn keys_cannot_be_created_at_the_mount_root() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    assert_eq!(
        fs.create(&OpContext::background(), ROOT_INO, "K")
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
}

#[test]
fn concurrent_writers_of_different_keys_both_land() {
    let store = seeded();
    let fs = Arc::new(fs_over(store.clone(), "", Duration::from_secs(30)));
    let threads: Vec<_> = ["A", "B"]
        .into_iter()
        .map(|key| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                for round in 0..20 {
                    write_file(
                        &fs,
                        &format!("myapp/db/{key}"),
                        format!("{round}").as_bytes(),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let data = store.get("myapp/db").unwrap();
    assert_eq!(
        (data["A"].clone(), data["B"].clone()),
        (json!("19"), json!("19"))
    );
    assert_eq!(data["PASSWORD"], json!("hunter2"));
}

#[test]
fn a_change_made_elsewhere_between_read_and_write_is_kept() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let fh = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.write_handle(fh, 0, b"mine").unwrap();
    // Someone else rotates the password while our file is open.
    store.put(
        "myapp/db",
        json!({"PASSWORD": "theirs", "USER": "app", "PORT": 5432}),
    );
    fs.flush(&OpContext::background(), fh).unwrap();
    fs.release(&OpContext::background(), fh);
    let data = store.get("myapp/db").unwrap();
    assert_eq!(
        (data["USER"].clone(), data["PASSWORD"].clone()),
        (json!("mine"), json!("theirs"))
    );
}

#[test]
fn a_failed_commit_reaches_flush_and_keeps_the_old_value() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let fh = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.write_handle(fh, 0, b"new").unwrap();
    store.set_fault(Some(Error::Unavailable("down".into())));
    assert_eq!(
        fs.flush(&OpContext::background(), fh).unwrap_err().errno(),
        libc::EIO
    );
    fs.release(&OpContext::background(), fh);
    store.set_fault(None);
    assert_eq!(store.get("myapp/db").unwrap()["USER"], json!("app"));
}

#[test]
fn stat_shows_the_size_being_written_before_close() {
    let fs = fs_over(seeded(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let fh = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.write_handle(fh, 0, b"twelve bytes").unwrap();
    assert_eq!(fs.getattr(&OpContext::background(), ino).unwrap().size, 12);
    fs.release(&OpContext::background(), fh);
}

/// A filesystem refreshing ahead in the background, over a clock moved by hand.
/// The refresh threads run until the returned [`super::Background`] goes.
fn refreshing_ahead(
    store: Arc<MemoryStore>,
) -> (Arc<SecretFs>, Arc<ManualClock>, super::Background) {
    let clock = ManualClock::new();
    let (fs, background) = SecretFs::builder(
        Arc::new(HideDeleted::new(store)),
        SecretPath::root(),
        FsConfig {
            background_refresh: true,
            ..config(Duration::from_secs(30))
        },
        clock.clone(),
    )
    .build();
    (fs, clock, background)
}

#[test]
fn a_value_read_near_its_expiry_is_refreshed_ahead_and_readers_never_wait() {
    let store = seeded();
    let (fs, clock, _background) = refreshing_ahead(store.clone());
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    store.put("myapp/db", json!({"PASSWORD": "rotated"}));
    // 28 s into a 30 s TTL: the cached value, and a refresh behind it.
    clock.advance(Duration::from_secs(28));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    soon("the refresh ahead lands", || fs.source.held_back() == 1);
    // Switched in once nobody read it for a moment (see `switch`).
    clock.advance(super::cache::QUIET);
    soon("the new value is switched in", || {
        fs.source.held_back() == 0
    });
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"rotated");
    // Past the first value's expiry: the refreshed one is fresh, no fetch.
    let reads = store.read_calls();
    clock.advance(Duration::from_secs(3));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"rotated");
    assert_eq!(store.read_calls(), reads);
}

#[test]
fn the_kernel_is_told_to_come_back_while_a_value_can_still_be_refreshed_ahead() {
    // A value read through the kernel's caches only reaches us when the
    // kernel asks again: if it may keep it the whole TTL, it asks once the
    // value has expired, and that reader waits for the store.
    let store = seeded();
    let (fs, clock, _background) = refreshing_ahead(store.clone());
    let ino = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
    let kept = fs.getattr(&OpContext::background(), ino).unwrap().valid_for;
    assert!(
        kept <= Duration::from_secs(27),
        "the kernel may keep it {kept:?} of a 30 s TTL"
    );
    assert!(kept >= Duration::from_secs(26), "{kept:?}");
    // Asked back at 27 s: the value is still fresh and is refreshed ahead.
    clock.advance(kept);
    let reads = store.read_calls();
    fs.getattr(&OpContext::background(), ino).unwrap();
    soon("the refresh ahead lands", || store.read_calls() > reads);
    clock.advance(Duration::from_secs(4));
    let before = store.read_calls();
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    assert_eq!(store.read_calls(), before, "the reader waited for a fetch");
}

#[test]
fn a_reader_finding_the_value_expired_during_a_refresh_waits_for_it_instead_of_fetching_again() {
    // A slow refresh (a busy store) must not make the next reader fetch
    // the same secret a second time.
    use super::cache::{Refresh, Refreshing, Source};
    let store = seeded();
    let clock = ManualClock::new();
    let source = Arc::new(Source::new(
        store.clone(),
        config(Duration::from_secs(30)).cache,
        clock.clone(),
        Refreshing::OnRequest,
        crate::metrics::Meter::off(),
    ));
    let db = SecretPath::parse("myapp/db");
    source.secret(&OpContext::background(), &db).unwrap();
    store.put("myapp/db", json!({"PASSWORD": "rotated"}));
    store.set_delay(Duration::from_millis(300));
    let reads = store.read_calls();
    let refresher = {
        let (source, db) = (source.clone(), db.clone());
        std::thread::spawn(move || {
            source
                .refresh(&OpContext::background(), &Refresh::Secret(db))
                .map(drop)
        })
    };
    soon("the refresh to ask the store", || {
        store.read_calls() > reads
    });
    // Expired while the refresh still waits for its answer.
    clock.advance(Duration::from_secs(31));
    let got = source
        .secret(&OpContext::background(), &db)
        .unwrap()
        .answer
        .value
        .unwrap();
    assert_eq!(got.keys.len(), 1);
    refresher.join().unwrap().unwrap();
    assert_eq!(store.read_calls(), reads + 1, "the reader fetched again");
}

#[test]
fn two_keys_read_one_after_the_other_after_expiry_come_from_one_version() {
    // A certificate and its key: nobody read them near expiry, the secret
    // changed; the first read must not serve the old version while it
    // refreshes, or the second would get the new one (nginx: "key values
    // mismatch").
    let store = seeded();
    let (fs, clock, _background) = refreshing_ahead(store.clone());
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"app");
    store.put(
        "myapp/db",
        json!({"PASSWORD": "new-pass", "USER": "new-user"}),
    );
    clock.advance(Duration::from_secs(31));
    let password = read_all(&fs, "myapp/db/PASSWORD").unwrap();
    std::thread::sleep(Duration::from_millis(10));
    let user = read_all(&fs, "myapp/db/USER").unwrap();
    assert_eq!(
        (password, user),
        (b"new-pass".to_vec(), b"new-user".to_vec())
    );
}

/// The filesystem `builder` makes, and where its invalidations go.
fn notified(builder: super::Builder) -> (Arc<SecretFs>, std::sync::mpsc::Receiver<Invalidation>) {
    let (tx, rx) = std::sync::mpsc::channel();
    (builder.send_invalidations_to(tx).build().0, rx)
}

#[test]
fn a_changed_value_gets_a_new_inode_and_the_old_one_keeps_serving_what_it_was_shown() {
    let store = seeded();
    let (builder, clock) = timed_builder(store.clone(), "", Duration::from_secs(30));
    let (fs, rx) = notified(builder);
    let dir = path_ino(&fs, "myapp/db").unwrap();
    let password = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
    let user = path_ino(&fs, "myapp/db/USER").unwrap();
    let port = path_ino(&fs, "myapp/db/PORT").unwrap();
    assert_eq!(
        fs.getattr(&OpContext::background(), password).unwrap().size,
        7
    );
    assert!(rx.try_recv().is_err(), "nothing changed yet");
    let shown = fs.stats().shown;
    // PASSWORD grows, USER stays, PORT goes.
    store.put(
        "myapp/db",
        json!({"PASSWORD": "rotated-and-longer", "USER": "app"}),
    );
    clock.advance(Duration::from_secs(31));
    // The refetch (by this getattr) retires PASSWORD's and PORT's inodes:
    // they keep their attributes and bytes, whatever the store holds.
    let old = fs.getattr(&OpContext::background(), password).unwrap();
    assert_eq!((old.ino, old.size), (password, 7));
    assert_eq!(
        fs.read_ino(&OpContext::background(), password, 0, 4096, |b| b.to_vec())
            .unwrap(),
        b"hunter2"
    );
    assert_eq!(
        fs.read_ino(&OpContext::background(), port, 0, 4096, |b| b.to_vec())
            .unwrap(),
        b"5432"
    );
    // The kernel is told to drop their names, not the inodes.
    let got: Vec<Invalidation> = rx.try_iter().collect();
    for name in ["PASSWORD", "PORT"] {
        let entry = Invalidation::Entry {
            parent: dir,
            name: name.into(),
        };
        assert!(got.contains(&entry), "{name}: {got:?}");
    }
    assert!(
        !got.iter().any(|i| matches!(i, Invalidation::Inode(_))),
        "{got:?}"
    );
    assert!(!got.contains(&Invalidation::Entry {
        parent: dir,
        name: "USER".into()
    }));
    // The name leads to a new inode, sized for the new value; USER's stays.
    let new = fs
        .lookup(&OpContext::background(), dir, "PASSWORD")
        .unwrap();
    assert!(new.ino > port, "{new:?}");
    assert_eq!(new.size, 18);
    assert_eq!(
        fs.read_ino(&OpContext::background(), new.ino, 0, 4096, |b| b.to_vec())
            .unwrap(),
        b"rotated-and-longer"
    );
    assert_eq!(
        fs.lookup(&OpContext::background(), dir, "USER")
            .unwrap()
            .ino,
        user
    );
    assert_eq!(
        fs.lookup(&OpContext::background(), dir, "PORT")
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
    // Still the old value, after the sweep too: the kernel holds it.
    fs.sweep();
    assert_eq!(
        fs.getattr(&OpContext::background(), password).unwrap().size,
        7
    );
    assert_eq!(fs.stats().shown, shown + 1);
    // Fetched again unchanged: nothing more.
    clock.advance(Duration::from_secs(31));
    fs.getattr(&OpContext::background(), password).unwrap();
    fs.getattr(&OpContext::background(), new.ino).unwrap();
    assert_eq!(rx.try_iter().count(), 0);
    // The kernel forgets the old inodes (every reference): they and their
    // values go.
    let inodes = fs.stats().inodes;
    fs.forget(password, u64::MAX);
    fs.forget(port, u64::MAX);
    assert_eq!(fs.stats().inodes, inodes - 2);
    assert_eq!(fs.stats().shown, shown - 1);
    assert_eq!(
        fs.getattr(&OpContext::background(), password)
            .unwrap_err()
            .errno(),
        libc::ESTALE
    );
}

#[test]
fn a_writers_own_change_keeps_its_inode() {
    let store = seeded();
    let (builder, _clock) = timed_builder(store.clone(), "", Duration::from_secs(30));
    let (fs, rx) = notified(builder);
    let dir = path_ino(&fs, "myapp/db").unwrap();
    let ino = fs
        .lookup(&OpContext::background(), dir, "PASSWORD")
        .unwrap()
        .ino;
    let fh = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.write_handle(fh, 0, b"a-much-longer-password").unwrap();
    fs.flush(&OpContext::background(), fh).unwrap();
    // fstat of the writer's descriptor, and the name: the same inode.
    assert_eq!(fs.getattr(&OpContext::background(), ino).unwrap().size, 22);
    fs.release(&OpContext::background(), fh);
    let again = fs
        .lookup(&OpContext::background(), dir, "PASSWORD")
        .unwrap();
    assert_eq!((again.ino, again.size), (ino, 22));
    assert_eq!(
        fs.read_ino(&OpContext::background(), ino, 0, 4096, |b| b.to_vec())
            .unwrap(),
        b"a-much-longer-password"
    );
    assert_eq!(rx.try_iter().count(), 0);
}

#[test]
fn a_secret_gone_from_its_folder_invalidates_its_name() {
    let store = seeded();
    let (builder, clock) = timed_builder(store.clone(), "", Duration::from_secs(30));
    store.put("myapp/api/other", json!({"k": "v"}));
    let (fs, rx) = notified(builder);
    let api = path_ino(&fs, "myapp/api").unwrap();
    assert_eq!(names(&fs, "myapp/api").len(), 2);
    path_ino(&fs, "myapp/api/token").unwrap();
    // Gone with all its versions (KV v1 delete, KV v2 metadata delete).
    store.destroy("myapp/api/token");
    clock.advance(Duration::from_secs(31));
    assert_eq!(names(&fs, "myapp/api"), [("other".to_string(), true)]);
    let got: Vec<Invalidation> = rx.try_iter().collect();
    assert!(
        got.contains(&Invalidation::Entry {
            parent: api,
            name: "token".into()
        }),
        "{got:?}"
    );
}

#[test]
fn names_sharing_a_prefix_are_told_apart_in_a_large_folder() {
    let store = Arc::new(MemoryStore::new());
    for i in 0..500 {
        store.put(&format!("big/s{i}"), json!({ "K": format!("v{i}") }));
    }
    // Vault sorts "a-b" < "a/" (by raw key); by name "a" < "a-b".
    store.put("big/a", json!({"K": "secret a"}));
    store.put("big/a/child", json!({"K": "child"}));
    store.put("big/a-b", json!({"K": "a-b"}));
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    names(&fs, "big");
    let reads = store.read_calls();
    assert_eq!(read_all(&fs, "big/a/K").unwrap(), b"secret a");
    assert_eq!(read_all(&fs, "big/a/child/K").unwrap(), b"child");
    assert_eq!(read_all(&fs, "big/a-b/K").unwrap(), b"a-b");
    assert_eq!(read_all(&fs, "big/s499/K").unwrap(), b"v499");
    assert_eq!(path_ino(&fs, "big/s500").unwrap_err().errno(), libc::ENOENT);
    // One GET per secret read; "big/s500" is known missing from the listing.
    assert_eq!(store.read_calls() - reads, 4);
}

#[test]
fn after_a_write_reads_serve_the_committed_value_the_kernel_sized_the_file_by() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
    let fh = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.write_handle(fh, 0, b"a-longer-new-password").unwrap();
    fs.flush(&OpContext::background(), fh).unwrap();
    fs.release(&OpContext::background(), fh);
    // No getattr in between: the kernel knows the size from the write.
    assert_eq!(
        fs.read_ino(&OpContext::background(), ino, 0, 4096, |b| b.to_vec())
            .unwrap(),
        b"a-longer-new-password"
    );
}

#[test]
fn mkdir_of_a_secret_that_holds_no_keys_says_it_exists() {
    // `mkdir` as a lock: it must fail when the directory is there.
    let store = seeded();
    store.put("myapp/empty", json!({}));
    let fs = fs_over(store, "", Duration::from_secs(30));
    let myapp = path_ino(&fs, "myapp").unwrap();
    assert_eq!(
        fs.mkdir(&OpContext::background(), myapp, "empty")
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
}

#[test]
fn a_directory_made_here_stays_while_the_secret_above_it_is_deleted_elsewhere() {
    let store = seeded();
    let (fs, clock) = timed(store.clone(), "", Duration::from_secs(30));
    let api = path_ino(&fs, "myapp/api/token").unwrap();
    fs.mkdir(&OpContext::background(), api, "new").unwrap();
    store.destroy("myapp/api/token");
    clock.advance(Duration::from_secs(31));
    assert!(path_ino(&fs, "myapp/api/token/new").is_ok());
    assert_eq!(names(&fs, "myapp/api/token"), [("new".to_string(), true)]);
}

#[test]
fn a_directory_made_here_stays_when_the_last_secret_below_it_is_removed() {
    // Issue 20 §2: `mkdir G G/a`, a key written in G/a, `rm G/a/k1`,
    // `rmdir G/a`: the store then holds nothing under G, and G, which
    // the user made and never removed, vanished (`ls G`: ENOENT).
    for store in [MemoryStore::kv1(), MemoryStore::kv2()] {
        let store = Arc::new(store);
        store.put("base", json!({"x": "y"}));
        let (fs, clock) = timed(store.clone(), "", Duration::from_secs(30));
        for top in ["", "base"] {
            let g = |rest: &str| format!("{top}/G{rest}");
            fs.mkdir(&OpContext::background(), path_ino(&fs, top).unwrap(), "G")
                .unwrap();
            fs.mkdir(
                &OpContext::background(),
                path_ino(&fs, &g("")).unwrap(),
                "a",
            )
            .unwrap();
            write_file(&fs, &g("/a/k1"), b"one").unwrap();
            fs.unlink(
                &OpContext::background(),
                path_ino(&fs, &g("/a")).unwrap(),
                "k1",
            )
            .unwrap();
            fs.rmdir(
                &OpContext::background(),
                path_ino(&fs, &g("")).unwrap(),
                "a",
            )
            .unwrap();
            assert!(names(&fs, &g("")).is_empty());
            assert!(names(&fs, top).contains(&("G".to_string(), true)));
            fs.mkdir(
                &OpContext::background(),
                path_ino(&fs, &g("")).unwrap(),
                "b",
            )
            .unwrap();
            let parent = path_ino(&fs, top).unwrap();
            assert_eq!(
                fs.mkdir(&OpContext::background(), parent, "G")
                    .unwrap_err()
                    .errno(),
                libc::EEXIST
            );
            assert_eq!(
                fs.rmdir(&OpContext::background(), parent, "G")
                    .unwrap_err()
                    .errno(),
                libc::ENOTEMPTY
            );
            fs.rmdir(
                &OpContext::background(),
                path_ino(&fs, &g("")).unwrap(),
                "b",
            )
            .unwrap();
            // Deleted elsewhere: it stays too.
            write_file(&fs, &g("/k2"), b"two").unwrap();
            store.remove(g("").trim_start_matches('/'));
            clock.advance(Duration::from_secs(31));
            assert!(names(&fs, &g("")).is_empty());
            fs.rmdir(&OpContext::background(), parent, "G").unwrap();
            assert_eq!(path_ino(&fs, &g("")).unwrap_err().errno(), libc::ENOENT);
            assert!(!names(&fs, top).iter().any(|(n, _)| n == "G"));
        }
    }
}

#[test]
fn after_its_last_key_is_removed_a_directory_made_here_is_a_secret_rmdir_deletes() {
    let store = Arc::new(MemoryStore::kv1());
    store.put("app", json!({}));
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let app = path_ino(&fs, "app").unwrap();
    fs.mkdir(&OpContext::background(), app, "db").unwrap();
    // Someone else writes the secret the empty directory stands for.
    store.put("app/db", json!({"K": "v"}));
    let db = path_ino(&fs, "app/db").unwrap();
    fs.unlink(&OpContext::background(), db, "K").unwrap();
    fs.rmdir(&OpContext::background(), app, "db").unwrap();
    assert_eq!(store.get("app/db"), None);
    assert_eq!(path_ino(&fs, "app/db").unwrap_err().errno(), libc::ENOENT);
}

#[test]
fn rename_noreplace_may_take_the_name_of_a_key_an_editor_moved_aside() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    fs.rename(&OpContext::background(), db, "USER", db, "USER~", false)
        .unwrap();
    // USER does not show: `mv -n PASSWORD USER` may take its name.
    fs.rename(&OpContext::background(), db, "PASSWORD", db, "USER", true)
        .unwrap();
    assert_eq!(store.get("myapp/db").unwrap()["USER"], "hunter2");
}

// ---- a view beside secrets -------------------------------------------------

/// A view beside each secret: `P.txt` holds one `KEY=value` line per key;
/// writing it replaces the secret's data. Proves that a view is a module
/// plus a registration: nothing else in the core knows it.
struct Lines;

impl view::View for Lines {
    fn name(&self) -> &'static str {
        "lines"
    }
    fn placement(&self) -> view::Placement {
        view::Placement::Beside
    }
    fn beside_name(&self, secret: &str) -> Option<String> {
        Some(format!("{secret}.txt"))
    }
    fn secret_named(&self, file: &str) -> Option<String> {
        file.strip_suffix(".txt")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
    fn files(&self, _: &Secret) -> Vec<String> {
        Vec::new()
    }
    fn render<'a>(&self, secret: &'a Secret, _: &str) -> Option<view::Rendered<'a>> {
        let mut text = Vec::new();
        for (k, v) in &secret.keys {
            text.extend_from_slice(k.as_bytes());
            text.push(b'=');
            text.extend_from_slice(v.expose());
            text.push(b'\n');
        }
        Some(view::Rendered::Owned(secrecy::SecretSlice::from(text)))
    }
    fn can_create(&self, name: &str) -> bool {
        self.secret_named(name).is_some()
    }
    fn write(&self, data: &mut crate::store::SecretData, _: &str, bytes: Vec<u8>) -> Result<()> {
        let text = String::from_utf8(bytes).map_err(|_| Error::NotUtf8)?;
        let mut parsed = crate::store::SecretData::new();
        for line in text.lines() {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| Error::Invalid("not KEY=value".into()))?;
            let value = crate::store::SecretValue::written(v.as_bytes().to_vec(), None)?;
            parsed.insert(crate::store::KeyName::from(k), value);
        }
        *data = parsed;
        Ok(())
    }
    fn remove(&self, _: &mut crate::store::SecretData, _: &str) -> Result<()> {
        Err(Error::NotPermitted("a secret is removed with rmdir"))
    }
    fn rename(&self, _: &mut crate::store::SecretData, _: &str, _: &str, _: bool) -> Result<()> {
        Err(Error::CrossSecret)
    }
}

fn fs_with_lines(store: Arc<MemoryStore>) -> (Arc<SecretFs>, Arc<ManualClock>) {
    let (builder, clock) = lines_builder(store);
    (builder.build().0, clock)
}

/// The builder of [`fs_with_lines`]'s filesystem, and its clock.
fn lines_builder(store: Arc<MemoryStore>) -> (super::Builder, Arc<ManualClock>) {
    let clock = ManualClock::new();
    // Asked first: a new `NAME.txt` is a secret, not a key.
    let views = view::Views::of(vec![Arc::new(Lines), Arc::new(view::Keys)]);
    let builder = SecretFs::builder(
        Arc::new(HideDeleted::new(store)),
        SecretPath::root(),
        config(Duration::from_secs(30)),
        clock.clone(),
    )
    .views(views);
    (builder, clock)
}

#[test]
fn a_view_beside_secrets_shows_one_file_per_secret_next_to_its_directory() {
    let (fs, _) = fs_with_lines(seeded());
    assert_eq!(
        names(&fs, "myapp"),
        vec![
            ("api".into(), true),
            ("db".into(), true),
            ("db.txt".into(), false)
        ]
    );
    assert_eq!(
        read_all(&fs, "myapp/db.txt").unwrap(),
        b"PASSWORD=hunter2\nPORT=5432\nUSER=app\n"
    );
    let ino = path_ino(&fs, "myapp/db.txt").unwrap();
    assert_eq!(fs.getattr(&OpContext::background(), ino).unwrap().size, 36);
    // The keys view still shows the same secret as a directory.
    assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"app");
    assert_eq!(
        path_ino(&fs, "myapp/nope.txt").unwrap_err().errno(),
        libc::ENOENT
    );
}

#[test]
fn writing_a_file_beside_a_secret_is_one_write_of_that_secret() {
    let store = seeded();
    let (fs, _) = fs_with_lines(store.clone());
    let writes = store.write_calls();
    write_file(&fs, "myapp/db.txt", b"USER=admin\n").unwrap();
    assert_eq!(store.write_calls() - writes, 1);
    assert_eq!(store.get("myapp/db"), Some(json!({"USER": "admin"})));
    assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"admin");
    assert_eq!(read_all(&fs, "myapp/db.txt").unwrap(), b"USER=admin\n");
    // A line that does not parse changes nothing.
    assert_eq!(
        write_file(&fs, "myapp/db.txt", b"garbage")
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    assert_eq!(store.get("myapp/db"), Some(json!({"USER": "admin"})));
}

#[test]
fn creating_a_file_beside_makes_the_secret_it_is_named_after() {
    let store = seeded();
    let (fs, _) = fs_with_lines(store.clone());
    write_file(&fs, "myapp/cache.txt", b"HOST=redis\n").unwrap();
    assert_eq!(store.get("myapp/cache"), Some(json!({"HOST": "redis"})));
    assert!(names(&fs, "myapp").contains(&("cache".into(), true)));
    // Renaming it would move it to another secret.
    let myapp = path_ino(&fs, "myapp").unwrap();
    assert_eq!(
        fs.rename(
            &OpContext::background(),
            myapp,
            "cache.txt",
            myapp,
            "other.txt",
            false
        )
        .unwrap_err()
        .errno(),
        libc::EXDEV
    );
    // `sed -i`: a scratch file renamed onto it commits its bytes.
    write_exclusive(&fs, "myapp/sedAb12Cd", b"HOST=memcached\n").unwrap();
    fs.rename(
        &OpContext::background(),
        myapp,
        "sedAb12Cd",
        myapp,
        "cache.txt",
        false,
    )
    .unwrap();
    assert_eq!(store.get("myapp/cache"), Some(json!({"HOST": "memcached"})));
}

#[test]
fn a_file_beside_a_secret_is_invalidated_when_the_secret_changes() {
    let store = seeded();
    let (builder, clock) = lines_builder(store.clone());
    let (fs, rx) = notified(builder);
    let ino = path_ino(&fs, "myapp/db.txt").unwrap();
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
        name: "db.txt".into(),
    };
    assert!(got.contains(&entry), "{got:?}");
    let new = fs
        .lookup(&OpContext::background(), myapp, "db.txt")
        .unwrap();
    assert_ne!(new.ino, ino);
    assert_eq!(new.size, 11);
}

#[test]
fn a_write_keeps_the_listings_that_stale_if_error_serves_from() {
    // Writing other/k must not drop the cached listings above it: with the
    // store gone right after, myapp/db is still read from its stale copy.
    let store = seeded();
    let (fs, clock) = timed(store.clone(), "", Duration::from_secs(30));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    write_file(&fs, "other/k", b"new").unwrap();
    store.set_fault(Some(Error::Unavailable("connection refused".into())));
    clock.advance(Duration::from_secs(31));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
}

#[test]
fn a_new_secret_shows_in_the_listings_above_it_at_once() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    assert!(!names(&fs, "").iter().any(|(n, _)| n == "fresh"));
    let root = path_ino(&fs, "").unwrap();
    fs.mkdir(&OpContext::background(), root, "fresh").unwrap();
    let fresh = path_ino(&fs, "fresh").unwrap();
    fs.mkdir(&OpContext::background(), fresh, "deeper").unwrap();
    write_file(&fs, "fresh/deeper/K", b"v").unwrap();
    let lists = store.list_calls();
    assert!(names(&fs, "").contains(&("fresh".to_string(), true)));
    assert!(names(&fs, "fresh").contains(&("deeper".to_string(), true)));
    assert_eq!(read_all(&fs, "fresh/deeper/K").unwrap(), b"v");
    // The listings that did not name the new secret were fetched again.
    assert!(store.list_calls() > lists);
}

#[test]
fn once_the_store_fails_to_answer_only_the_probe_asks_it_until_it_is_back() {
    let store = seeded();
    let (fs, clock) = timed(store.clone(), "", Duration::from_secs(30));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    clock.advance(Duration::from_secs(31));
    store.set_fault(Some(Error::Timeout(Duration::from_secs(3))));
    // The first request that finds the store gone waits for it...
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    let calls = store.read_calls() + store.list_calls();
    // ...the next ones do not: cached answers at once, the rest EIO at once.
    for _ in 0..5 {
        assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
        assert_eq!(
            path_ino(&fs, "myapp/api/token").unwrap_err().errno(),
            libc::EIO
        );
        assert_eq!(
            write_file(&fs, "myapp/db/USER", b"x").unwrap_err().errno(),
            libc::EIO
        );
    }
    assert_eq!(store.read_calls() + store.list_calls(), calls);
    assert!(!fs.status_json(&OpContext::background())["store_reachable"]
        .as_bool()
        .unwrap());
    // Back: the probe (every second) notices, and requests go through again.
    store.set_fault(None);
    soon("the mount notices the store is back", || {
        path_ino(&fs, "myapp/api/token").is_ok()
    });
    assert_eq!(read_all(&fs, "myapp/api/token/value").unwrap(), b"t0k");
}

#[test]
fn an_operation_asks_the_store_for_no_longer_than_one_timeout_in_all() {
    // Every write keeps losing its check-and-set: 8 tries of a read and a
    // write, 150 ms each, would take 2.4 s; the close's one deadline (a
    // 400 ms store timeout) ends it first, with EIO rather than EAGAIN.
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let fh = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.write_handle(fh, 0, b"x").unwrap();
    store.set_delay(Duration::from_millis(150));
    store.set_timeout(Duration::from_millis(400));
    store.fail(Call::Write, Scope::Everywhere, Error::CasConflict);
    let flushed = fs.flush(&OpContext::own_operation(), fh);
    assert_eq!(flushed.unwrap_err().errno(), libc::EIO);
    assert!(store.write_calls() < 3, "{} writes", store.write_calls());
    // A deadline used up is no outage: the store is not marked down.
    store.heal();
    store.set_delay(Duration::ZERO);
    assert_eq!(read_all(&fs, "myapp/api/token/value").unwrap(), b"t0k");
    fs.release(&OpContext::background(), fh);
}

#[test]
fn values_leave_memory_once_nothing_may_serve_them() {
    // --ttl 30s, --stale-if-error 300s (policy above).
    let store = seeded();
    let (fs, clock) = timed(store.clone(), "", Duration::from_secs(30));
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
    assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"app");
    assert_eq!(fs.stats().shown, 2);
    let password = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
    // Replaced in the store and refetched (USER is looked up again):
    // PASSWORD's inode is retired and holds the old version until the
    // kernel forgets it (a descriptor held open reads it).
    store.put("myapp/db", json!({"PASSWORD": "rotated", "USER": "app"}));
    clock.advance(Duration::from_secs(31));
    let db = path_ino(&fs, "myapp/db").unwrap();
    fs.lookup(&OpContext::background(), db, "USER").unwrap();
    fs.sweep();
    assert_eq!(fs.stats().shown, 2, "replaced less than a TTL ago: kept");
    clock.advance(Duration::from_secs(31));
    fs.sweep();
    assert_eq!(fs.stats().shown, 2, "the kernel holds the old inode: kept");
    fs.forget(password, u64::MAX);
    assert_eq!(fs.stats().shown, 1, "the old version left memory");
    // Past TTL + stale-if-error: every value goes.
    clock.advance(Duration::from_secs(330));
    fs.sweep();
    let after = fs.stats();
    assert_eq!((after.secrets, after.listings, after.shown), (0, 0, 0));
    // And is fetched again when read.
    assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"rotated");
}

#[test]
fn with_the_store_known_down_an_open_for_writing_fails_where_shells_see_it() {
    // bash and dash ignore close()'s result: `echo x > K` must fail at open.
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    let user = path_ino(&fs, "myapp/db/USER").unwrap();
    store.set_fault(Some(Error::Timeout(Duration::from_secs(3))));
    // A request finds the store gone (an uncached path).
    assert!(path_ino(&fs, "myapp/api/token").is_err());
    assert_eq!(
        fs.open(&OpContext::background(), user, true, true)
            .unwrap_err()
            .errno(),
        libc::EIO
    );
    assert_eq!(
        fs.create(&OpContext::background(), db, "NEW")
            .unwrap_err()
            .errno(),
        libc::EIO
    );
    // Editors' scratch files still work: nothing reaches the store.
    assert!(fs
        .create_with(&OpContext::background(), db, ".USER.swp", exclusive())
        .is_ok());
    assert_eq!(
        path_ino(&fs, "myapp/db/NEW").unwrap_err().errno(),
        libc::ENOENT
    );
}

#[test]
fn a_secret_written_under_a_secret_shows_though_an_old_listing_names_it() {
    // Found by the reference model (KV v1, seed 1796047179745081601): an
    // old copy of a's listing still named b, so the write stopped looking
    // there and left the root's fresh listing, where a is no folder yet.
    let store = Arc::new(MemoryStore::kv1());
    store.put("a/b", json!({}));
    let (fs, clock) = timed(store.clone(), "", Duration::from_secs(30));
    assert_eq!(names(&fs, "a"), [("b".to_string(), true)]);
    store.remove("a/b");
    store.put("a", json!({}));
    clock.advance(Duration::from_secs(31));
    assert!(names(&fs, "a").is_empty());
    let a = path_ino(&fs, "a").unwrap();
    fs.mkdir(&OpContext::background(), a, "b").unwrap();
    write_file(&fs, "a/b/K", b"").unwrap();
    assert_eq!(names(&fs, "a"), [("b".to_string(), true)]);
    assert_eq!(read_all(&fs, "a/b/K").unwrap(), b"");
}

// Layouts other than `keys`, versions and metadata: in tests/layouts.rs.
mod layouts;
mod reach;
mod templates;

/// A mount over a folder `app` of 30 one-key secrets, its inodes bounded
/// at 20 when `bounded`, and where its invalidations go.
fn thirty_secrets(bounded: bool) -> (Arc<SecretFs>, std::sync::mpsc::Receiver<Invalidation>) {
    let store = Arc::new(MemoryStore::new());
    for i in 0..30 {
        store.put(&format!("app/s{i:02}"), json!({"K": "v"}));
    }
    let (mut builder, _clock) = timed_builder(store, "", Duration::from_secs(30));
    if bounded {
        builder = builder.bound_inodes(20, Box::new(|| Some(Default::default())));
    }
    notified(builder)
}

#[test]
fn lookups_past_the_inode_bound_ask_the_kernel_to_drop_the_oldest_names() {
    let (fs, rx) = thirty_secrets(true);
    let app = fs
        .lookup(&OpContext::background(), ROOT_INO, "app")
        .unwrap()
        .ino;
    for i in 0..30 {
        fs.lookup(&OpContext::background(), app, &format!("s{i:02}"))
            .unwrap();
    }
    let got: Vec<Invalidation> = rx.try_iter().collect();
    // Past 20 inodes, the oldest secrets' names go (app holds them: it
    // goes last).
    assert!(!got.is_empty(), "past the bound, names are dropped");
    assert_eq!(
        got[0],
        Invalidation::Entry {
            parent: app,
            name: "s00".into()
        }
    );
    assert!(!got.contains(&Invalidation::Entry {
        parent: ROOT_INO,
        name: "app".into()
    }));
    // Without a bound, nothing is asked.
    let (fs, rx) = thirty_secrets(false);
    let app = fs
        .lookup(&OpContext::background(), ROOT_INO, "app")
        .unwrap()
        .ino;
    for i in 0..30 {
        fs.lookup(&OpContext::background(), app, &format!("s{i:02}"))
            .unwrap();
    }
    assert!(rx.try_recv().is_err());
}

#[test]
fn names_a_plain_readdir_gave_go_when_the_inode_bound_is_reached() {
    let (fs, rx) = thirty_secrets(true);
    let app = fs
        .lookup(&OpContext::background(), ROOT_INO, "app")
        .unwrap()
        .ino;
    let fh = fs.opendir(&OpContext::background(), app).unwrap();
    struct Count(usize);
    impl crate::fs::DirReplier for Count {
        fn add(&mut self, _: crate::fs::DirEntry<'_>) -> bool {
            self.0 += 1;
            true
        }
        fn skipped(&mut self, _: Ino, _: &str, _: &Error) {}
    }
    let mut listed = Count(0);
    fs.readdir(&OpContext::background(), fh, 0, false, &mut listed)
        .unwrap();
    assert_eq!(listed.0, 32);
    // The kernel holds none of these 30 names.
    assert_eq!(fs.stats().inodes, 32);
    // The next lookup finds the table past its bound: they go, and the
    // kernel is asked about nothing.
    fs.lookup(&OpContext::background(), app, "s00").unwrap();
    assert_eq!(fs.stats().inodes, 3, "the root, app and s00");
    assert!(rx.try_recv().is_err());
}
