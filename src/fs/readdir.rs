//! Listing an open directory for the kernel: `.`, `..` and the entries with
//! their offsets, handed one by one to a replier the adapter provides, so
//! that offsets and lookup references are decided here, once, for READDIR
//! and READDIRPLUS alike.

use crate::fs::OpContext;
use std::time::Duration;

use super::handle::Fh;
use super::inode::Ino;
use super::{Attr, SecretFs};
use crate::error::{Error, Result};

/// One directory entry as the kernel gets it.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    /// The entry's inode.
    pub ino: Ino,
    /// Where the listing continues after this entry (the next entry's
    /// offset): `.` is 1, `..` is 2, the directory's entries 3 and on.
    pub offset: u64,
    /// The name.
    pub name: &'a str,
    /// Directory or file.
    pub is_dir: bool,
    /// The attributes, for READDIRPLUS (`None` for a plain READDIR). Their
    /// `valid_for` is how long the kernel may keep the name and the
    /// attributes; `.` and `..` come with zero.
    pub attr: Option<&'a Attr>,
}

/// Where [`SecretFs::readdir`] puts the entries: the adapter's reply buffer.
pub trait DirReplier {
    /// Adds one entry. Returns `false` when the reply is full and the entry
    /// was not taken: the listing stops there and the kernel asks again
    /// from that entry's offset.
    fn add(&mut self, entry: DirEntry<'_>) -> bool;

    /// An entry whose attributes could not be had (the secret behind a key
    /// is gone or cannot be read): it is left out of the listing and the
    /// listing goes on. The replier logs it, once.
    fn skipped(&mut self, dir: Ino, name: &str, error: &Error);
}

impl SecretFs {
    /// Lists the directory open as `fh` from `offset` (0 for the start, or
    /// the offset of the last entry the kernel received) into `out`, until
    /// the listing ends or `out` is full.
    ///
    /// With `plus` (READDIRPLUS) each entry carries its attributes, and
    /// every entry but `.` and `..` counts as a lookup: the kernel holds a
    /// reference to it afterwards. An entry `out` does not take gives its
    /// reference back. Without `plus` no reference is taken.
    pub fn readdir(
        &self,
        ctx: &OpContext,
        fh: Fh,
        offset: u64,
        plus: bool,
        out: &mut dyn DirReplier,
    ) -> Result<()> {
        let (dir, entries) = self.dir_entries(fh)?;
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let dots = [(dir, "."), (self.parent_of(dir), "..")];
        for (i, (ino, name)) in dots.into_iter().enumerate().skip(offset) {
            // `.` and `..` take no lookup reference.
            let attr = if plus {
                let attr = self.getattr(ctx, ino)?;
                Some(Attr {
                    valid_for: Duration::ZERO,
                    ..attr
                })
            } else {
                None
            };
            let entry = DirEntry {
                ino,
                offset: i as u64 + 1,
                name,
                is_dir: true,
                attr: attr.as_ref(),
            };
            if !out.add(entry) {
                return Ok(());
            }
        }
        for (i, entry) in entries
            .iter()
            .enumerate()
            .skip(offset.saturating_sub(dots.len()))
        {
            let attr = match self.entry_attr(ctx, dir, entry, plus) {
                Ok(a) => a,
                Err(e) => {
                    out.skipped(dir, &entry.name, &e);
                    continue;
                }
            };
            let taken = out.add(DirEntry {
                ino: attr.ino,
                offset: (i + dots.len() + 1) as u64,
                name: &entry.name,
                is_dir: entry.is_dir,
                attr: plus.then_some(&attr),
            });
            if !taken {
                if plus {
                    // Not sent: the kernel takes no reference on it.
                    self.forget(attr.ino, 1);
                }
                break;
            }
        }
        if plus {
            self.keep_inodes_bounded();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::fs::clock::ManualClock;
    use crate::fs::inode::ROOT_INO;
    use crate::fs::tests::config;
    use crate::store::memory::{Call, MemoryStore, Scope};
    use crate::store::SecretPath;

    const TTL: Duration = Duration::from_secs(30);

    fn timed(store: Arc<MemoryStore>) -> (Arc<SecretFs>, Arc<ManualClock>) {
        let clock = ManualClock::new();
        let fs = SecretFs::builder(store, SecretPath::root(), config(TTL), clock.clone())
            .build()
            .0;
        (fs, clock)
    }

    fn fs() -> Arc<SecretFs> {
        let store = Arc::new(MemoryStore::new());
        store.put("app/db", json!({"PASSWORD": "hunter2", "USER": "app"}));
        store.put("app/db/replica", json!({"HOST": "r1"}));
        timed(store).0
    }

    /// What a replier was given, taking at most `room` entries.
    #[derive(Default)]
    struct Collect {
        room: usize,
        entries: Vec<(u64, String, bool, Option<Duration>)>,
        skipped: Vec<String>,
    }

    impl DirReplier for Collect {
        fn add(&mut self, e: DirEntry<'_>) -> bool {
            if self.entries.len() == self.room {
                return false;
            }
            let ttl = e.attr.map(|a| a.valid_for);
            self.entries
                .push((e.offset, e.name.to_string(), e.is_dir, ttl));
            true
        }

        fn skipped(&mut self, _dir: Ino, name: &str, _error: &Error) {
            self.skipped.push(name.to_string());
        }
    }

    fn list(fs: &SecretFs, fh: Fh, offset: u64, plus: bool, room: usize) -> Collect {
        let mut out = Collect {
            room,
            ..Collect::default()
        };
        fs.readdir(&OpContext::background(), fh, offset, plus, &mut out)
            .expect("readdir of an open directory");
        out
    }

    fn names(c: &Collect) -> Vec<(u64, &str)> {
        c.entries
            .iter()
            .map(|(o, n, ..)| (*o, n.as_str()))
            .collect()
    }

    fn open_db(fs: &SecretFs) -> (Ino, Fh) {
        let app = fs
            .lookup(&OpContext::background(), ROOT_INO, "app")
            .unwrap()
            .ino;
        let db = fs.lookup(&OpContext::background(), app, "db").unwrap().ino;
        (db, fs.opendir(&OpContext::background(), db).unwrap())
    }

    #[test]
    fn dots_come_first_and_each_offset_is_the_next_entrys() {
        let fs = fs();
        let (_, fh) = open_db(&fs);
        let all = list(&fs, fh, 0, false, usize::MAX);
        assert_eq!(
            names(&all),
            [
                (1, "."),
                (2, ".."),
                (3, "PASSWORD"),
                (4, "USER"),
                (5, "replica")
            ]
        );
        let kinds: Vec<bool> = all.entries.iter().map(|e| e.2).collect();
        assert_eq!(kinds, [true, true, false, false, true]);
        assert!(all.entries.iter().all(|e| e.3.is_none()));
        // Resuming after an entry lists from the one after it.
        assert_eq!(names(&list(&fs, fh, 1, false, usize::MAX))[0], (2, ".."));
        assert_eq!(
            names(&list(&fs, fh, 4, false, usize::MAX)),
            [(5, "replica")]
        );
        assert!(list(&fs, fh, 5, false, usize::MAX).entries.is_empty());
    }

    #[test]
    fn readdirplus_takes_a_reference_per_entry_sent_and_none_for_the_dots() {
        let fs = fs();
        let (db, fh) = open_db(&fs);
        let before = fs.stats().inodes;
        // Room for `.`, `..` and one entry: the second is not taken.
        let some = list(&fs, fh, 0, true, 3);
        assert_eq!(names(&some), [(1, "."), (2, ".."), (3, "PASSWORD")]);
        assert_eq!(some.entries[0].3, Some(Duration::ZERO));
        assert_eq!(some.entries[1].3, Some(Duration::ZERO));
        assert_eq!(some.entries[2].3, Some(TTL));
        assert_eq!(
            fs.stats().inodes,
            before + 1,
            "USER's reference was given back"
        );
        let file = fs
            .lookup(&OpContext::background(), db, "PASSWORD")
            .unwrap()
            .ino;
        fs.forget(file, 2);
        assert_eq!(fs.stats().inodes, before, "one READDIRPLUS and one lookup");
    }

    #[test]
    fn plain_readdir_takes_no_reference() {
        let fs = fs();
        let (db, fh) = open_db(&fs);
        list(&fs, fh, 0, false, usize::MAX);
        let listed = fs.stats().inodes;
        // The one reference is the lookup's: forgetting it drops the inode.
        let file = fs.lookup(&OpContext::background(), db, "USER").unwrap().ino;
        fs.forget(file, 1);
        assert_eq!(fs.stats().inodes, listed - 1);
        // What the listing alone named goes at the next sweep.
        fs.sweep();
        assert_eq!(fs.stats().inodes, listed - 3, "PASSWORD and replica");
    }

    #[test]
    fn an_entry_without_attributes_is_skipped_and_reported() {
        let store = Arc::new(MemoryStore::new());
        store.put("app/db", json!({"K": "v"}));
        store.put("app/db/replica", json!({"HOST": "r1"}));
        let (fs, clock) = timed(store.clone());
        let (_, fh) = open_db(&fs);
        // The secret's keys were listed; now it may no longer be read.
        clock.advance(TTL * 2);
        store.fail(
            Call::Read,
            Scope::At("app/db"),
            Error::PermissionDenied("policy".into()),
        );
        let out = list(&fs, fh, 0, true, usize::MAX);
        assert_eq!(names(&out), [(1, "."), (2, ".."), (4, "replica")]);
        assert_eq!(out.skipped, ["K"]);
    }
}
