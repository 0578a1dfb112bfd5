//! The store as the core sees it: folder listings and secrets through the
//! cache, what a parent's listing already tells, stale-while-revalidate with
//! its refresher thread, and which listed names stand for something (a store
//! may keep listing soft-deleted secrets).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::cache::{Cache, Cached};
use super::{lock, Refresh, SecretFs};
use crate::error::Result;
use crate::store::{ListEntry, Listing, Secret, SecretPath};

/// The entries of a listing (sorted by `fetch_listing`) named `name`: a
/// folder, a secret, or both. Searched, not scanned: a folder of thousands
/// of secrets is looked up on every access below it.
pub(super) fn named<'a>(listing: &'a Listing, name: &str) -> &'a [ListEntry] {
    let first = listing.partition_point(|e| e.name.as_str() < name);
    let len = listing[first..]
        .iter()
        .take_while(|e| e.name == name)
        .count();
    &listing[first..first + len]
}

/// What a path is asked about: a folder (its listing) or a secret.
#[derive(Clone, Copy)]
enum Kind {
    Folder,
    Secret,
}

impl SecretFs {
    /// What the parent's fresh listing says of `path`: `Some((is_folder,
    /// is_secret, valid_for))` when it is cached and fresh, `None` otherwise.
    pub(super) fn known_from_parent(&self, path: &SecretPath) -> Option<(bool, bool, Duration)> {
        let (parent, _) = path.split_last()?;
        self.parent_says(path, self.listings.fresh(&parent)?)
    }

    /// What the parent's last listing says of `path` while the store is
    /// unreachable and that listing is within the stale-if-error window.
    fn known_from_stale_parent(&self, path: &SecretPath) -> Option<(bool, bool, Duration)> {
        let (parent, _) = path.split_last()?;
        self.parent_says(path, self.listings.stale(&parent)?)
    }

    fn parent_says(
        &self,
        path: &SecretPath,
        cached: Cached<Listing>,
    ) -> Option<(bool, bool, Duration)> {
        let (_, name) = path.split_last()?;
        let (mut folder, mut secret) = (false, false);
        if let Some(listing) = &cached.value {
            for e in named(listing, name) {
                if e.folder {
                    folder = true;
                } else {
                    secret = true;
                }
            }
        }
        Some((folder, secret, cached.valid_for))
    }

    /// The folder listing at `path` (`None`: not a folder).
    pub(super) fn listing(&self, path: &SecretPath) -> Result<Cached<Listing>> {
        self.through_cache(
            path,
            Kind::Folder,
            &self.listings,
            || self.fetch_listing(path),
            |before, now| self.notice_listing(path, before, now),
        )
    }

    /// The answer for `path` as a folder or as a secret: what the parent's
    /// listing already says, else the cache (a recently expired answer
    /// while a background refresh runs), else one fetch shared by all who
    /// ask at once (telling `notice` what it replaced), else, with the store
    /// unreachable, a stale answer within --stale-if-error.
    fn through_cache<V>(
        &self,
        path: &SecretPath,
        kind: Kind,
        cache: &Cache<SecretPath, V>,
        fetch: impl FnOnce() -> Result<Option<V>>,
        notice: impl FnOnce(Option<&Arc<V>>, Option<&Arc<V>>),
    ) -> Result<Cached<V>> {
        let is_kind = |folder: bool, secret: bool| match kind {
            Kind::Folder => folder,
            Kind::Secret => secret,
        };
        let not_one = |valid_for| {
            Ok(Cached {
                value: None,
                valid_for,
            })
        };
        if let Some((folder, secret, valid_for)) = self.known_from_parent(path) {
            if !is_kind(folder, secret) {
                return not_one(valid_for);
            }
        }
        let job = match kind {
            Kind::Folder => Refresh::Listing(path.clone()),
            Kind::Secret => Refresh::Secret(path.clone()),
        };
        if let Some(stale) = self.serve_while_refreshing(cache, job) {
            return Ok(stale);
        }
        let mut replaced = None;
        let answer = cache.get_or_fetch(path, || {
            replaced = Some(cache.last(path));
            fetch()
        });
        if let (Some(before), Ok(now)) = (replaced, &answer) {
            notice(before.as_ref(), now.value.as_ref());
        }
        match answer {
            // What the parent's listing says is not of this kind (a secret
            // with no children is no folder) has no answer of its own to
            // serve stale: the parent's stale listing stands for it.
            Err(e) if e.is_transient() => match self.known_from_stale_parent(path) {
                Some((folder, secret, valid_for)) if !is_kind(folder, secret) => not_one(valid_for),
                _ => Err(e),
            },
            answer => answer,
        }
    }

    /// Lists the folder `path` in the store, sorted by name.
    pub(super) fn fetch_listing(&self, path: &SecretPath) -> Result<Option<Listing>> {
        let mut listing = self.store.list(path)?;
        if let Some(l) = listing.as_mut() {
            l.sort_by(|a, b| a.name.cmp(&b.name).then(a.folder.cmp(&b.folder)));
        }
        Ok(listing)
    }

    /// Starts the thread that refreshes expired answers in the background
    /// (when `background_refresh` is set). Without it every refresh blocks
    /// the reader that needs it.
    pub fn start_refresher(self: &Arc<Self>) {
        if !self.config.background_refresh {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel::<Refresh>();
        if self.refresher.set(tx).is_err() {
            return;
        }
        let fs = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("secretfs-refresh".into())
            .spawn(move || {
                for job in rx {
                    let Some(fs) = fs.upgrade() else { return };
                    let result = match &job {
                        Refresh::Listing(p) => fs.fetch_listing(p).map(|l| {
                            let before = fs.listings.last(p);
                            let now = fs.listings.insert(p.clone(), l);
                            fs.notice_listing(p, before.as_ref(), now.value.as_ref());
                        }),
                        Refresh::Secret(p) => fs.fetch_secret(p).map(|s| {
                            let before = fs.secrets.last(p);
                            let now = fs.secrets.insert(p.clone(), s);
                            fs.notice_secret(p, before.as_ref(), now.value.as_ref());
                        }),
                    };
                    if let Err(e) = result {
                        // The stale answer stays; the next reader fetches (or
                        // gets stale-if-error) in the foreground.
                        tracing::debug!(?job, error = %e, "background refresh failed");
                    }
                    lock(&fs.refreshing).remove(&job);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the refresh thread: refreshing in the foreground");
        }
    }

    /// A recently expired answer, served at once while `job` refreshes it
    /// in the background; `None` when the caller must fetch itself.
    pub(super) fn serve_while_refreshing<V>(
        &self,
        cache: &Cache<SecretPath, V>,
        job: Refresh,
    ) -> Option<Cached<V>> {
        let tx = self.refresher.get()?;
        let key = match &job {
            Refresh::Listing(p) | Refresh::Secret(p) => p,
        };
        if cache.fresh(key).is_some() {
            return None;
        }
        let stale = cache.recently_expired(key)?;
        if lock(&self.refreshing).insert(job.clone()) && tx.send(job.clone()).is_err() {
            lock(&self.refreshing).remove(&job);
            return None;
        }
        Some(stale)
    }

    /// The secret at `path` (`None`: not a secret).
    pub(super) fn secret(&self, path: &SecretPath) -> Result<Cached<Secret>> {
        self.through_cache(
            path,
            Kind::Secret,
            &self.secrets,
            || self.fetch_secret(path),
            |before, now| self.notice_secret(path, before, now),
        )
    }

    /// Reads a secret from the store, with its mtime settled.
    pub(super) fn fetch_secret(&self, path: &SecretPath) -> Result<Option<Secret>> {
        let mut fresh = self.store.read(path)?;
        if let Some(s) = fresh.as_mut() {
            s.modified = Some(self.modified_time(path, s));
        }
        Ok(fresh)
    }

    /// A file's mtime: the KV v2 version's creation time, else (KV v1) the
    /// time we first saw this content. It must change whenever the bytes
    /// do: the kernel drops its cached pages when it sees a new mtime
    /// (FUSE_AUTO_INVAL_DATA), which is how a refreshed value reaches
    /// readers that keep the file in the page cache.
    pub(super) fn modified_time(&self, path: &SecretPath, fresh: &Secret) -> SystemTime {
        if let Some(t) = fresh.modified {
            return t;
        }
        match self.secrets.last(path) {
            Some(old) if old.same_data(fresh) => old.modified.unwrap_or(self.started),
            Some(_) => SystemTime::now(),
            None => self.started,
        }
    }

    /// Whether a listing entry stands for something that shows: a store
    /// may keep listing a secret whose latest version is deleted (KV v2
    /// soft delete). A secret known (fresh in the cache) not to read is
    /// left out; one not read yet is shown until looked up.
    pub(super) fn entry_stands(&self, dir: &SecretPath, e: &ListEntry) -> bool {
        e.folder
            || !matches!(
                self.secrets.fresh(&dir.join(&e.name)),
                Some(Cached { value: None, .. })
            )
    }

    /// Whether the secret at `path` has a live version (or we may not know).
    pub(super) fn secret_is_live(&self, path: &SecretPath) -> bool {
        !matches!(self.secret(path), Ok(Cached { value: None, .. }))
    }

    /// Whether the parent's listing names a secret at `path` (whether or
    /// not it reads).
    pub(super) fn listed_as_secret(&self, path: &SecretPath) -> bool {
        let Some((parent, name)) = path.split_last() else {
            return false;
        };
        match self.listing(&parent) {
            Ok(Cached {
                value: Some(listing),
                ..
            }) => named(&listing, name).iter().any(|e| !e.folder),
            _ => false,
        }
    }
}
