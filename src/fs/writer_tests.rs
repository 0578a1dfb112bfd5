//! Core tests of what a close commits: each writer's own buffer, no
//! version for a value the store holds already, and writes that got no
//! answer.

use crate::fs::OpContext;
use crate::store::Deadline;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::tests::{fs_over, path_ino, read_all, seeded, soon, write_file};
use crate::error::{Error, Result};
use crate::store::memory::{MemoryStore, Scope};
use crate::store::SecretPath;
use crate::store::{Precondition, Revision, SecretData};

fn stored(store: &MemoryStore, key: &str) -> serde_json::Value {
    store.get("myapp/db").unwrap()[key].clone()
}

#[test]
fn each_writer_commits_exactly_what_it_wrote() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let before = store.version("myapp/db").unwrap();
    let a = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.write_handle(a, 0, b"AAA").unwrap();
    // A second O_TRUNC open empties nothing of the first writer's.
    let b = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.write_handle(b, 0, b"BB").unwrap();
    fs.write_handle(a, 3, b"AAA").unwrap();
    // Each reads its own writes.
    let own = |fh| {
        fs.read_handle(&OpContext::background(), fh, 0, 100, |b| b.to_vec())
            .unwrap()
    };
    assert_eq!((own(a), own(b)), (b"AAAAAA".to_vec(), b"BB".to_vec()));
    // stat and a new reader show the change made last.
    assert_eq!(fs.getattr(&OpContext::background(), ino).unwrap().size, 6);
    assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"AAAAAA");
    fs.flush(&OpContext::background(), b).unwrap();
    fs.release(&OpContext::background(), b);
    assert_eq!(stored(&store, "USER"), json!("BB"));
    fs.flush(&OpContext::background(), a).unwrap();
    fs.release(&OpContext::background(), a);
    // The last close wins; no version holds a mix or an empty value.
    assert_eq!(stored(&store, "USER"), json!("AAAAAA"));
    assert_eq!(store.version("myapp/db").unwrap(), before + 2);
    assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"AAAAAA");
}

#[test]
fn a_writer_without_o_trunc_starts_from_the_stored_value_not_from_another_writer() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let a = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.write_handle(a, 0, b"half-written").unwrap();
    let b = fs.open(&OpContext::background(), ino, true, false).unwrap();
    fs.write_handle(b, 0, b"A").unwrap();
    fs.flush(&OpContext::background(), b).unwrap();
    fs.release(&OpContext::background(), b);
    assert_eq!(stored(&store, "USER"), json!("App"));
    fs.release(&OpContext::background(), a);
    assert_eq!(stored(&store, "USER"), json!("half-written"));
}

#[test]
fn an_ftruncate_changes_its_own_writer_only_and_a_truncate_by_path_commits() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let a = fs.open(&OpContext::background(), ino, true, false).unwrap();
    let b = fs.open(&OpContext::background(), ino, true, false).unwrap();
    fs.setattr(&OpContext::background(), ino, Some(b), Some(1), None, None)
        .unwrap();
    assert_eq!(
        fs.read_handle(&OpContext::background(), a, 0, 100, |b| b.to_vec())
            .unwrap(),
        b"app"
    );
    assert_eq!(stored(&store, "USER"), json!("app"));
    fs.release(&OpContext::background(), b);
    assert_eq!(stored(&store, "USER"), json!("a"));
    fs.release(&OpContext::background(), a);
    fs.setattr(&OpContext::background(), ino, None, Some(2), None, None)
        .unwrap();
    assert_eq!(stored(&store, "USER"), json!("a\u{0}"));
}

#[test]
fn a_shell_redirection_still_commits_once_and_a_lone_truncation_at_release() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let before = store.write_calls();
    // `echo x > K` next to `: > K` of another shell.
    let echo = fs.open(&OpContext::background(), ino, true, true).unwrap();
    let colon = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.flush(&OpContext::background(), echo).unwrap(); // the shell closes the descriptor it dup2'ed
    fs.flush(&OpContext::background(), colon).unwrap();
    assert_eq!(
        store.write_calls(),
        before,
        "no empty value committed at a close"
    );
    fs.write_handle(echo, 0, b"x").unwrap();
    fs.flush(&OpContext::background(), echo).unwrap();
    fs.release(&OpContext::background(), echo);
    assert_eq!(stored(&store, "USER"), json!("x"));
    fs.release(&OpContext::background(), colon);
    assert_eq!(
        stored(&store, "USER"),
        json!("x"),
        "the last close wins, as on a local file where both truncations \
         came at open, before x was written (issue 20 §2)"
    );
    // A truncation alone, closed by the last writer: written at release.
    let alone = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.flush(&OpContext::background(), alone).unwrap();
    fs.release(&OpContext::background(), alone);
    assert_eq!(stored(&store, "USER"), json!(""));
}

#[test]
fn fsync_commits_this_writers_change_and_close_then_writes_nothing_more() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let other = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.write_handle(other, 0, b"other").unwrap();
    let fh = fs.open(&OpContext::background(), ino, true, true).unwrap();
    let before = store.write_calls();
    fs.fsync(&OpContext::background(), fh).unwrap(); // a truncation alone, committed by fsync
    assert_eq!(stored(&store, "USER"), json!(""));
    fs.write_handle(fh, 0, b"synced").unwrap();
    fs.fsync(&OpContext::background(), fh).unwrap();
    assert_eq!(stored(&store, "USER"), json!("synced"));
    fs.flush(&OpContext::background(), fh).unwrap();
    fs.release(&OpContext::background(), fh);
    assert_eq!(store.write_calls(), before + 2);
    fs.release(&OpContext::background(), other);
    assert_eq!(stored(&store, "USER"), json!("other"));
}

#[test]
fn a_failed_writer_never_commits_and_another_writer_is_not_affected() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let bad = fs.open(&OpContext::background(), ino, true, true).unwrap();
    let good = fs.open(&OpContext::background(), ino, true, true).unwrap();
    assert!(fs.write_handle(bad, 0, &[0xff, 0xfe]).is_err());
    fs.write_handle(good, 0, b"fine").unwrap();
    fs.flush(&OpContext::background(), good).unwrap();
    fs.release(&OpContext::background(), good);
    assert!(fs.flush(&OpContext::background(), bad).is_err());
    fs.release(&OpContext::background(), bad);
    assert_eq!(stored(&store, "USER"), json!("fine"));
}

#[test]
fn writing_the_value_a_key_holds_makes_no_version() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let before = (store.version("myapp/db").unwrap(), store.write_calls());
    write_file(&fs, "myapp/db/USER", b"app").unwrap();
    write_file(&fs, "myapp/db/PORT", b"5432").unwrap();
    assert_eq!(
        (store.version("myapp/db").unwrap(), store.write_calls()),
        before
    );
    // The bytes are compared with the store, not with the cache.
    store.put("myapp/db", json!({"USER": "theirs"}));
    write_file(&fs, "myapp/db/USER", b"app").unwrap();
    assert_eq!(stored(&store, "USER"), json!("app"));
}

#[test]
fn a_write_applied_whose_answer_was_lost_is_a_successful_close() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let before = store.version("myapp/db").unwrap();
    store.lose_write_answers(
        Scope::At("myapp/db"),
        Error::Timeout(Duration::from_secs(5)),
    );
    write_file(&fs, "myapp/db/USER", b"new").unwrap();
    store.heal();
    assert_eq!(
        store.version("myapp/db").unwrap(),
        before + 1,
        "one version"
    );
    assert_eq!(stored(&store, "USER"), json!("new"));
    assert_eq!(
        fs.status_json(&OpContext::background())["unknown_outcomes"],
        json!(0)
    );
}

#[test]
fn a_write_whose_connection_broke_after_it_was_sent_is_found_out_too() {
    // A server killed while it applied the write: the connection breaks
    // instead of timing out (seen in tests/fault_soak.rs: the close said
    // EIO and the value was stored).
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let before = store.version("myapp/db").unwrap();
    store.hang_after_write(
        Scope::At("myapp/db"),
        Error::Unanswered("connection reset by peer".into()),
    );
    let err = write_file(&fs, "myapp/db/USER", b"new").unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err}");
    assert_eq!(
        fs.status_json(&OpContext::background())["unknown_outcomes"],
        json!(1)
    );
    store.heal();
    assert_eq!(store.version("myapp/db").unwrap(), before + 1);
}

#[test]
fn a_write_applied_whose_connection_broke_before_the_answer_is_a_successful_close() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let before = store.version("myapp/db").unwrap();
    store.lose_write_answers(
        Scope::At("myapp/db"),
        Error::Unanswered("connection reset by peer".into()),
    );
    write_file(&fs, "myapp/db/USER", b"newer").unwrap();
    store.heal();
    assert_eq!(store.version("myapp/db").unwrap(), before + 1);
    assert_eq!(stored(&store, "USER"), json!("newer"));
    assert_eq!(
        fs.status_json(&OpContext::background())["unknown_outcomes"],
        json!(0)
    );
}

#[test]
fn a_rename_whose_answer_was_lost_is_found_to_have_landed() {
    // Made again, a rename would fail (its source key is gone once it
    // landed): what it left is recognised instead.
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let db = path_ino(&fs, "myapp/db").unwrap();
    path_ino(&fs, "myapp/db/USER").unwrap();
    let before = store.version("myapp/db").unwrap();
    store.lose_write_answers(
        Scope::At("myapp/db"),
        Error::Unanswered("connection reset by peer".into()),
    );
    fs.rename(&OpContext::background(), db, "USER", db, "LOGIN", false)
        .unwrap();
    store.heal();
    assert_eq!(store.version("myapp/db").unwrap(), before + 1);
    assert_eq!(stored(&store, "LOGIN"), json!("app"));
    assert_eq!(
        fs.status_json(&OpContext::background())["unknown_outcomes"],
        json!(0)
    );
}

#[test]
fn a_write_whose_outcome_cannot_be_known_fails_and_the_secret_is_read_again() {
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(300));
    assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"app");
    store.hang_after_write(
        Scope::At("myapp/db"),
        Error::Timeout(Duration::from_secs(5)),
    );
    let err = write_file(&fs, "myapp/db/USER", b"new").unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(fs.writers.unknown_outcomes(), 1);
    // Never the old cached value as if nothing happened: while the store
    // does not answer, no value; once it does, what it holds.
    assert!(read_all(&fs, "myapp/db/USER").is_err());
    store.heal();
    // (Once the probe finds the store back.)
    soon("the store answers", || {
        read_all(&fs, "myapp/db/USER").is_ok()
    });
    assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"new");
    assert_eq!(
        fs.status_json(&OpContext::background())["unknown_outcomes"],
        json!(1)
    );
}

/// A store whose first write gets no answer and is not applied.
struct FirstWriteLost {
    inner: Arc<MemoryStore>,
    lost: std::sync::atomic::AtomicBool,
}

impl crate::store::Forwarding for FirstWriteLost {
    type Inner = MemoryStore;

    fn inner(&self) -> &MemoryStore {
        &self.inner
    }
    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        if !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::OutOfTime(Duration::from_secs(5)));
        }
        self.inner.write(deadline, path, data, when)
    }
    fn permissions(
        &self,
        _deadline: &Deadline,
        _path: &SecretPath,
    ) -> Result<Option<crate::store::Permissions>> {
        Ok(None)
    }
}

#[test]
fn a_write_that_got_no_answer_and_did_not_land_is_made_again_once() {
    let inner = seeded();
    let store = Arc::new(FirstWriteLost {
        inner: inner.clone(),
        lost: Default::default(),
    });
    let fs = super::SecretFs::builder(
        store,
        SecretPath::root(),
        super::tests::config(Duration::from_secs(30)),
        super::clock::ManualClock::new(),
    )
    .build()
    .0;
    let before = inner.version("myapp/db").unwrap();
    write_file(&fs, "myapp/db/USER", b"new").unwrap();
    assert_eq!(inner.version("myapp/db").unwrap(), before + 1);
    assert_eq!(stored(&inner, "USER"), json!("new"));
}

#[test]
fn the_next_open_starts_from_what_a_closed_descriptor_changed() {
    // `printf abcdef > K; : > K; printf XY 1<> K` (issue 20 §2): the
    // truncation of `: > K` waits for its RELEASE, which the kernel sends
    // after close() returned, so the third open comes first.
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let ino = path_ino(&fs, "myapp/db/USER").unwrap();
    let colon = fs.open(&OpContext::background(), ino, true, true).unwrap();
    fs.flush(&OpContext::background(), colon).unwrap(); // closed after dup2
    fs.flush(&OpContext::background(), colon).unwrap(); // the shell restores its stdout
    let printf = fs.open(&OpContext::background(), ino, true, false).unwrap();
    assert_eq!(
        fs.read_handle(&OpContext::background(), printf, 0, 100, |b| b.to_vec())
            .unwrap(),
        b""
    );
    fs.write_handle(printf, 0, b"XY").unwrap();
    fs.flush(&OpContext::background(), printf).unwrap();
    assert_eq!(stored(&store, "USER"), json!("XY"));
    let versions = store.write_calls();
    fs.release(&OpContext::background(), colon);
    fs.release(&OpContext::background(), printf);
    assert_eq!(stored(&store, "USER"), json!("XY"));
    assert_eq!(store.write_calls(), versions, "the closed truncation lost");
}

#[test]
fn commit_locks_are_held_only_while_a_secret_is_being_committed() {
    // One lock per secret ever written would grow without bound.
    let store = seeded();
    for i in 0..200 {
        store.put(&format!("many/s{i}"), json!({"K": "old"}));
    }
    let fs = Arc::new(fs_over(store.clone(), "", Duration::from_secs(30)));
    for i in 0..200 {
        write_file(&fs, &format!("many/s{i}/K"), b"new").unwrap();
        assert_eq!(fs.writers.commit_locks(), 0, "after many/s{i}");
    }
    assert_eq!(store.get("many/s199").unwrap()["K"], json!("new"));
    // Commits of one secret at once wait for each other's lock, and the
    // last one out drops it.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                for n in 0..10 {
                    write_file(&fs, &format!("myapp/db/K{t}"), format!("{n}").as_bytes()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(fs.writers.commit_locks(), 0);
    let db = store.get("myapp/db").unwrap();
    for t in 0..8 {
        assert_eq!(db[format!("K{t}")], json!("9"), "{db}");
    }
}

#[test]
fn removing_the_last_key_of_a_kv1_secret_deletes_it_and_its_directory_stays_until_rmdir() {
    // KV v1 refuses a secret without keys ("missing data fields"): `rm`
    // of the last key failed with EINVAL.
    let store = Arc::new(MemoryStore::kv1());
    store.put("base/d", json!({"K": "v"}));
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let d = path_ino(&fs, "base/d").unwrap();
    fs.unlink(&OpContext::background(), d, "K").unwrap();
    assert_eq!(store.get("base/d"), None);
    let base = path_ino(&fs, "base").unwrap();
    assert!(
        fs.lookup(&OpContext::background(), base, "d")
            .unwrap()
            .is_dir
    );
    assert_eq!(
        fs.mkdir(&OpContext::background(), base, "d")
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    write_file(&fs, "base/d/L", b"again").unwrap();
    assert_eq!(store.get("base/d"), Some(json!({"L": "again"})));
    fs.unlink(
        &OpContext::background(),
        path_ino(&fs, "base/d").unwrap(),
        "L",
    )
    .unwrap();
    fs.rmdir(&OpContext::background(), base, "d").unwrap();
    assert_eq!(path_ino(&fs, "base/d").unwrap_err().errno(), libc::ENOENT);
}

#[test]
fn a_change_that_lost_to_a_later_close_creates_no_empty_secret() {
    // Two writers of a new key in a new directory: the first truncated
    // and closed, the second wrote and closed (and failed). The first's
    // change lost to the later close; its release wrote the secret with
    // no key at all (KV v2: a version `{}`; KV v1: EINVAL).
    for store in [MemoryStore::kv2(), MemoryStore::kv1()] {
        let store = Arc::new(store);
        store.put("base", json!({"x": "y"}));
        let fs = fs_over(store.clone(), "", Duration::from_secs(30));
        let base = path_ino(&fs, "base").unwrap();
        let d = fs.mkdir(&OpContext::background(), base, "d").unwrap().ino;
        let (attr, first) = fs.create(&OpContext::background(), d, "K").unwrap();
        fs.flush(&OpContext::background(), first).unwrap();
        let second = fs
            .open(&OpContext::background(), attr.ino, true, true)
            .unwrap();
        fs.write_handle(second, 0, b"two").unwrap();
        store.fail(
            crate::store::memory::Call::Write,
            Scope::Everywhere,
            Error::PermissionDenied("policy".into()),
        );
        assert_eq!(
            fs.flush(&OpContext::background(), second)
                .unwrap_err()
                .errno(),
            libc::EACCES
        );
        fs.release(&OpContext::background(), second);
        store.heal();
        let versions = store.versions_written();
        fs.release(&OpContext::background(), first);
        assert_eq!(store.get("base/d"), None);
        assert_eq!(store.versions_written(), versions);
        assert!(
            fs.lookup(&OpContext::background(), base, "d")
                .unwrap()
                .is_dir
        );
    }
}

#[test]
fn a_key_removed_while_writers_hold_it_open_is_not_written_back_by_their_close() {
    // As on a local disk, what goes to a removed file is lost: `rm K`
    // (and `rmdir` of its directory) while two programs write K, then
    // they close. Their closes wrote K back, and its secret with it.
    for closes_after_rmdir in [false, true] {
        let store = seeded();
        store.put("myapp/gone", json!({"K": "v"}));
        let fs = fs_over(store.clone(), "", Duration::from_secs(30));
        let ino = path_ino(&fs, "myapp/gone/K").unwrap();
        let a = fs.open(&OpContext::background(), ino, true, true).unwrap();
        let b = fs.open(&OpContext::background(), ino, true, false).unwrap();
        fs.write_handle(a, 0, b"one").unwrap();
        fs.write_handle(b, 0, b"two").unwrap();
        fs.unlink(
            &OpContext::background(),
            path_ino(&fs, "myapp/gone").unwrap(),
            "K",
        )
        .unwrap();
        let close = |fh| {
            let r = fs.flush(&OpContext::background(), fh);
            fs.release(&OpContext::background(), fh);
            r
        };
        if !closes_after_rmdir {
            close(a).unwrap();
            close(b).unwrap();
        }
        let myapp = path_ino(&fs, "myapp").unwrap();
        fs.rmdir(&OpContext::background(), myapp, "gone").unwrap();
        if closes_after_rmdir {
            close(b).unwrap();
            close(a).unwrap();
        }
        assert_eq!(store.get("myapp/gone"), None, "{closes_after_rmdir}");
        assert_eq!(
            fs.lookup(&OpContext::background(), myapp, "gone")
                .unwrap_err()
                .errno(),
            libc::ENOENT
        );
    }
}

#[test]
fn a_write_refused_for_a_held_lock_is_eagain_not_an_unknown_outcome() {
    // The file store's answer when another writer keeps its lock: nothing
    // was written, so there is nothing to find out and no outage.
    let store = seeded();
    let fs = fs_over(store.clone(), "", Duration::from_secs(30));
    let before = store.version("myapp/db").unwrap();
    store.fail(
        crate::store::memory::Call::Write,
        Scope::At("myapp/db"),
        Error::Locked("app.age.lock still held after 5s".into()),
    );
    let err = write_file(&fs, "myapp/db/USER", b"new").unwrap_err();
    assert_eq!(err.errno(), libc::EAGAIN, "{err}");
    let status = fs.status_json(&OpContext::background());
    assert_eq!(status["unknown_outcomes"], json!(0));
    assert_eq!(status["store_reachable"], json!(true));
    assert_eq!(store.version("myapp/db").unwrap(), before);
    store.heal();
    write_file(&fs, "myapp/db/USER", b"new").unwrap();
    assert_eq!(stored(&store, "USER"), json!("new"));
}
