//! Telling the kernel what to forget when a refresh finds the store
//! changed: a key file whose bytes changed (its attributes and cached
//! pages), a name that is gone. The FUSE adapter delivers these from a
//! thread of its own (`crate::fuse::session`); the core only says
//! which, so it stays free of FUSE and testable without a mount.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::cache::Change;
use super::inode::Ino;
use super::{FileRef, SecretFs};
use crate::store::{Listing, Secret, SecretPath};

/// One thing the kernel must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A file's attributes and cached pages: its bytes changed in place (a
    /// template's rendering; a key after a write whose outcome is unknown).
    /// A key whose value changed outside the mount is retired instead: its
    /// name is dropped ([`Invalidation::Entry`]) and leads to a new inode.
    Inode(Ino),
    /// The name `name` in the directory `parent`: it is gone, or leads to
    /// a new inode.
    Entry {
        /// The directory's inode.
        parent: Ino,
        /// The name.
        name: String,
    },
}

impl SecretFs {
    /// An answer of the store replaced an older one: tells the kernel what
    /// to forget.
    pub(super) fn notice(&self, change: Change) {
        match &change {
            Change::Secret { path, before, now } => {
                let same = matches!((before, now), (Some(a), Some(b)) if a.same_data(b));
                if !same {
                    self.notice_templates(path);
                }
            }
            Change::Listing { path, before, now } => {
                if before != now {
                    self.notice_templates(path);
                }
            }
        }
        match change {
            Change::Secret { path, before, now } => {
                self.notice_secret(&path, before.as_ref(), now.as_ref())
            }
            Change::Listing { path, before, now } => {
                self.notice_listing(&path, before.as_ref(), now.as_ref())
            }
        }
    }

    /// Asks the kernel to drop entries when the inode table is past its bound.
    pub(super) fn keep_inodes_bounded(&self) {
        // Unbounded (see [`super::Builder::bound_inodes`]): every lookup
        // passes here, and returns without taking the namespace's lock.
        let Some(mounted_over) = &self.mounted_over else {
            return;
        };
        if self.invalidations.is_none() || !self.names.eviction_due() {
            return;
        }
        let spared = mounted_over();
        if spared.is_none() {
            tracing::warn!(
                "inode table past its bound, but what is mounted inside the mount cannot be \
                 read from /proc: no entry is dropped"
            );
        }
        let evictions = self.names.evictions(spared.as_ref());
        if !evictions.is_empty() {
            tracing::debug!(
                entries = evictions.len(),
                inodes = self.names.len(),
                "inode table past its bound: asking the kernel to drop entries"
            );
        }
        for (parent, name) in evictions {
            self.invalidate(Invalidation::Entry { parent, name });
        }
    }

    pub(super) fn invalidate(&self, what: Invalidation) {
        if let Some(tx) = &self.invalidations {
            // The receiver only goes away when the mount ends.
            let _ = tx.send(what);
        }
    }

    /// A fresh answer for the secret at `path` is in the cache; `before` was
    /// the last one. Every key file the kernel was shown different bytes
    /// of is retired: it keeps serving what it was shown (a descriptor held
    /// open reads that value whole, and `fstat` agrees), and the kernel is
    /// told to drop its name, whose next lookup makes a new inode for the
    /// new value (or finds none, for a key that is gone). Nothing the
    /// kernel holds of an inode changes, so no reply the kernel drops can
    /// leave it a size of one version and bytes of another.
    fn notice_secret(
        &self,
        path: &SecretPath,
        before: Option<&Arc<Secret>>,
        now: Option<&Arc<Secret>>,
    ) {
        self.report_change(path, before, now);
        if let (Some(a), Some(b)) = (before, now) {
            if a.same_data(b) {
                return;
            }
        }
        for file in self.names.files_of(path) {
            let Some(shown) = &file.shown else {
                // No version recorded as shown (written through the mount
                // since, or swept): nothing to keep for a held descriptor,
                // but the kernel may still cache its pages and size (a
                // writable mount's reads keep the page cache): it must
                // forget them, or the old bytes are read on and on.
                self.invalidate(Invalidation::Inode(file.ino));
                continue;
            };
            let view = self.views.get(file.view);
            if let Some(now) = now {
                let at = FileRef {
                    secret: path.clone(),
                    view: file.view,
                    name: file.name.clone(),
                };
                if !Self::replaces(view, &self.source, &at, now, shown) {
                    continue;
                }
            }
            if let Some((parent, name)) = self.names.retire(file.ino, shown) {
                self.drop_entry(file.ino, parent, name);
            }
        }
    }

    /// A fresh listing of the folder `path` is in the cache; `before` was
    /// the last one. Names it no longer holds are invalidated in every
    /// directory standing for `path`.
    fn notice_listing(
        &self,
        path: &SecretPath,
        before: Option<&Arc<Listing>>,
        now: Option<&Arc<Listing>>,
    ) {
        // Nothing listed before (first fetch, or evicted): nothing is gone.
        if self.invalidations.is_none() || before.is_none() {
            return;
        }
        let names = |l: Option<&Arc<Listing>>| -> BTreeSet<String> {
            l.iter()
                .flat_map(|l| l.iter())
                .map(|e| e.name.clone())
                .collect()
        };
        let (old, new) = (names(before), names(now));
        let gone: Vec<&String> = old.difference(&new).collect();
        if gone.is_empty() {
            return;
        }
        // A secret gone takes the files shown beside it (`P.json`) along.
        let beside: Vec<String> = gone
            .iter()
            .flat_map(|name| {
                self.views
                    .iter()
                    .filter(|(_, v)| v.placement() == super::view::Placement::Beside)
                    .filter_map(|(_, v)| v.beside_name(name))
                    .collect::<Vec<_>>()
            })
            .collect();
        for dir in self.names.dirs_at(path) {
            for name in gone.iter().copied().chain(beside.iter()) {
                let at = super::namespace::Name { parent: dir, name };
                if self.names.lookup_name(at).is_some() {
                    tracing::debug!(%path, ino = dir.0, "name gone from the store: invalidating");
                    self.invalidate(Invalidation::Entry {
                        parent: dir,
                        name: name.clone(),
                    });
                }
            }
        }
    }
}
