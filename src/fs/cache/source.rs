//! The store behind the cache, and the read-through path: folder
//! listings and secrets as the core asks for them, with what a parent's
//! listing already tells, coalesced fetches (one for all who ask at once),
//! versions, permissions, and the store's own answers (capabilities,
//! node, layers). Every answer that replaced an older one comes back with
//! the [`Change`], from which the core makes kernel invalidations.
//!
//! The other parts of [`Source`] are beside it: the "store is down" state
//! in `outage.rs`, refresh ahead and the quiet switch in `refresh.rs`,
//! writes in `write_through.rs`, what the kernel may keep in `kernel.rs`.

use std::collections::HashSet;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{Cache, CachePolicy, Cached, Change, Clock, Nudge, Reach, Refresh, Refreshing};
use crate::error::{Error, Result};
use crate::fs::context::OpContext;
use crate::metrics::Meter;
use crate::store::{
    Capabilities, Deadline, ListEntry, Listing, Metadata, Permissions, Secret, SecretPath,
    SecretStore,
};

/// The entries of a listing (sorted by `fetch_listing`) named `name`: a
/// folder, a secret, or both. Searched, not scanned: a folder of thousands
/// of secrets is looked up on every access below it.
pub(in crate::fs) fn named<'a>(listing: &'a Listing, name: &str) -> &'a [ListEntry] {
    let first = listing.partition_point(|e| e.name.as_str() < name);
    let len = listing[first..]
        .iter()
        .take_while(|e| e.name == name)
        .count();
    &listing[first..first + len]
}

/// An answer, and the change it made to what was held.
pub struct Fetched<V> {
    /// The answer and how long it stays valid.
    pub answer: Cached<V>,
    /// What it replaced, when it was fetched now.
    pub change: Option<Change>,
}

/// What a path is asked about: a folder (its listing) or a secret.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Folder,
    Secret,
}

/// What the parent's listing says of a path.
pub(super) struct ParentSays {
    folder: bool,
    secret: bool,
    pub(super) valid_for: Duration,
}

impl ParentSays {
    pub(super) fn is(&self, kind: Kind) -> bool {
        match kind {
            Kind::Folder => self.folder,
            Kind::Secret => self.secret,
        }
    }
}

/// The store as the core sees it: through the cache.
pub struct Source {
    pub(super) store: Arc<dyn SecretStore>,
    pub(super) reach: Arc<Reach>,
    pub(super) listings: Cache<SecretPath, Listing>,
    pub(super) secrets: Cache<SecretPath, Secret>,
    /// What the credential may do to each secret (`None`: the store cannot say).
    pub(super) permissions: Cache<SecretPath, Permissions>,
    /// Versions of secrets (paths naming a version): they never change
    /// once written, but may be deleted or destroyed, so they expire too.
    pub(super) versions: Cache<SecretPath, Secret>,
    /// Secrets' custom metadata and descriptions, on a store that keeps
    /// them apart from the value ([`Capabilities::metadata_apart`]):
    /// asked for only when wanted ([`Source::metadata`]).
    pub(super) metadata: Cache<SecretPath, Metadata>,
    /// How long an answer is served (what a version view is told).
    pub(super) ttl: Duration,
    /// When the mount started: the mtime of what the store gives none.
    pub(super) started: SystemTime,
    /// Where background refreshes are sent (`None` asks a refresher
    /// thread to end); with it, refreshed secrets that changed are held
    /// back until [`Source::switch_due`] switches them in. `None`: no
    /// refresh ahead, nothing held.
    pub(super) refresher: Option<Sender<Option<Refresh>>>,
    /// Refreshes queued or running, so each path is refreshed once at a time.
    pub(super) refreshing: Mutex<HashSet<Refresh>>,
    /// An answer read with less validity left than this is refreshed ahead.
    pub(super) ahead: Duration,
    /// Wakes the switcher when a secret is held back, or tells it to end.
    pub(super) held_back: (Mutex<Nudge>, std::sync::Condvar),
    /// Where cache lookups and refreshes are counted (`--metrics`).
    pub(super) meter: Meter,
}

impl Source {
    /// The store `store` behind caches of `policy`, refreshed as
    /// `refreshing` says, counting lookups and refreshes with `meter`.
    pub fn new(
        store: Arc<dyn SecretStore>,
        policy: CachePolicy,
        clock: Arc<dyn Clock>,
        refreshing: Refreshing,
        meter: Meter,
    ) -> Self {
        let refresher = match refreshing {
            Refreshing::OnRequest => None,
            Refreshing::Ahead(queue) => Some(queue),
        };
        Source {
            store,
            reach: Arc::new(Reach::default()),
            // A partial listing of no names found no folder: it lives as
            // long as other "no such" answers.
            listings: Cache::new(policy, clock.clone())
                .finding_nothing_when(|l: &Listing| !l.shows_folder()),
            secrets: Cache::new(policy, clock.clone()),
            permissions: Cache::new(policy, clock.clone()),
            versions: Cache::new(policy, clock.clone()),
            metadata: Cache::new(policy, clock),
            ttl: policy.ttl,
            started: SystemTime::now(),
            refresher,
            refreshing: Mutex::new(HashSet::new()),
            ahead: policy.ttl / 10,
            held_back: (Mutex::default(), std::sync::Condvar::new()),
            meter,
        }
    }

    /// Whether `version` is the secret at `path` the cache holds now
    /// (this very copy): not a version a later answer or write replaced,
    /// nor one of a secret the cache has since forgotten.
    pub fn is_latest(&self, path: &SecretPath, version: &Arc<Secret>) -> bool {
        self.secrets
            .last(path)
            .is_some_and(|held| Arc::ptr_eq(&held, version))
    }

    /// What the store can do.
    pub fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }

    /// Drops the answers nothing may serve any more (past TTL and
    /// stale-if-error); returns the paths of the secrets dropped.
    pub fn sweep(&self) -> Vec<SecretPath> {
        self.listings.sweep();
        let mut swept = self.secrets.sweep();
        swept.extend(self.versions.sweep());
        self.metadata.sweep();
        swept
    }

    /// The version of the secret at `path` the cache holds, and how long
    /// ago it was fetched.
    pub fn held(&self, path: &SecretPath) -> Option<(Arc<Secret>, Duration)> {
        let cache = self.secrets_of(path);
        Some((cache.last(path)?, cache.age(path)?))
    }

    /// The cache holding `path`: versions apart from latest secrets.
    fn secrets_of(&self, path: &SecretPath) -> &Cache<SecretPath, Secret> {
        if path.version().is_some() {
            &self.versions
        } else {
            &self.secrets
        }
    }

    /// What a path naming a version refuses: every change.
    pub(super) fn latest_only(path: &SecretPath) -> Result<()> {
        match path.version() {
            Some(_) => Err(Error::ReadOnly),
            None => Ok(()),
        }
    }

    /// The server (node of a cluster) the store's requests go to now.
    pub fn node(&self) -> Option<String> {
        self.store.node()
    }

    /// What of the store cannot be read now (layers of a mount with
    /// `--layer`): asks nothing of the server.
    pub fn degraded(&self) -> Vec<crate::store::Degraded> {
        self.store.degraded()
    }

    /// Whether the store is made of layers (`--layer`).
    pub fn is_layered(&self) -> bool {
        self.store.rereads_after_write()
    }

    /// The layer the value of `key` of the secret at `path` comes from
    /// (asked of the store: it is rarely wanted); `None` when the store has
    /// no layers or no such key.
    pub fn origin(&self, ctx: &OpContext, path: &SecretPath, key: &str) -> Result<Option<String>> {
        if !self.is_layered() {
            return Ok(None);
        }
        if self.is_down() {
            return Err(Self::down_error());
        }
        ctx.may_wait()?;
        self.noted(self.store.origin(ctx.deadline(), path, key))
    }

    /// The paths of the secrets the cache holds a value of (fresh or not).
    pub fn held_secrets(&self) -> Vec<SecretPath> {
        self.secrets.held_keys()
    }

    /// Numbers of listings and secrets held.
    pub fn counts(&self) -> (usize, usize) {
        (self.listings.len(), self.secrets.len())
    }

    /// When the mount started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The folder listing at `path` (`None`: not a folder).
    pub fn listing(&self, ctx: &OpContext, path: &SecretPath) -> Result<Fetched<Listing>> {
        if path.version().is_some() {
            // A version of a secret holds its keys, never children.
            return Ok(Fetched {
                answer: Cached {
                    value: None,
                    valid_for: self.ttl,
                },
                change: None,
            });
        }
        self.through_cache(ctx, path, Kind::Folder, &self.listings, || {
            self.fetch_listing(ctx.deadline(), path)
        })
    }

    /// The secret at `path` (`None`: not a secret).
    pub fn secret(&self, ctx: &OpContext, path: &SecretPath) -> Result<Fetched<Secret>> {
        if let Some(version) = path.version() {
            return self.version(ctx, path, version);
        }
        self.through_cache(ctx, path, Kind::Secret, &self.secrets, || {
            self.fetch_secret(ctx.deadline(), path)
        })
    }

    /// The cached answer for the secret at `path`, if fresh.
    pub fn fresh_secret(&self, path: &SecretPath) -> Option<Cached<Secret>> {
        self.secrets_of(path).fresh(path)
    }

    /// Version `version` of the secret at `path` (which names it): cached
    /// like a secret, fetched once for all who ask at once, served from
    /// the cache while the store is down. Never refreshed ahead, never a
    /// change the kernel must hear of: a version's data does not change.
    fn version(&self, ctx: &OpContext, path: &SecretPath, version: u64) -> Result<Fetched<Secret>> {
        let done = |answer| {
            Ok(Fetched {
                answer,
                change: None,
            })
        };
        if let Some(answer) = self.versions.fresh(path) {
            return done(answer);
        }
        if self.is_down() {
            return match self.versions.stale(path) {
                Some(answer) => done(answer),
                None => Err(Self::down_error()),
            };
        }
        if !self.capabilities().versions {
            return done(Cached {
                value: None,
                valid_for: self.ttl,
            });
        }
        ctx.may_wait()?;
        let latest = SecretPath::parse(path.as_str());
        let answer = self.versions.get_or_fetch(path, || {
            let read = self.noted(self.store.read_version(ctx.deadline(), &latest, version))?;
            Ok(read.map(|mut s| {
                s.modified = s.modified.or(Some(self.started));
                s
            }))
        })?;
        done(answer)
    }

    /// The custom metadata and description of the secret at `path`, whose
    /// value `secret` is. On most stores they came with it; on one that
    /// keeps them apart ([`Capabilities::metadata_apart`]: AWS Secrets
    /// Manager) they are asked for here, once for all who ask at once, and
    /// cached like secrets (`--ttl`, at most `--cache-entries`, served
    /// stale while the store is down), so a listing of every attribute
    /// asks once; a change through the mount drops them
    /// (`write_through.rs`). Empty when the store has none for it.
    pub fn metadata(
        &self,
        ctx: &OpContext,
        path: &SecretPath,
        secret: &Secret,
    ) -> Result<Arc<Metadata>> {
        if !self.capabilities().metadata_apart {
            return Ok(Arc::new(Metadata::of(secret)));
        }
        if let Some(known) = self.metadata.fresh(path) {
            return Ok(known.value.unwrap_or_default());
        }
        if self.is_down() {
            return match self.metadata.stale(path) {
                Some(known) => Ok(known.value.unwrap_or_default()),
                None => Err(Self::down_error()),
            };
        }
        ctx.may_wait()?;
        let known = self.metadata.get_or_fetch(path, || {
            self.noted(self.store.read_metadata(ctx.deadline(), path))
        })?;
        Ok(known.value.unwrap_or_default())
    }

    /// What the credential may do to the secret at `path`, cached like
    /// other answers; `None` when the store cannot say, or cannot be asked
    /// now (down, or it failed to answer): the change is then tried, and
    /// refused at commit if it must be.
    pub fn permissions(
        &self,
        ctx: &OpContext,
        path: &SecretPath,
    ) -> Result<Option<Arc<Permissions>>> {
        if let Some(known) = self.permissions.fresh(path) {
            return Ok(known.value);
        }
        if self.is_down() {
            return Ok(None);
        }
        ctx.may_wait()?;
        match self.permissions.get_or_fetch(path, || {
            self.noted(self.store.permissions(ctx.deadline(), path))
        }) {
            Ok(known) => Ok(known.value),
            Err(e) => {
                tracing::debug!(path = %path, error = %e, "cannot learn what the token may do");
                Ok(None)
            }
        }
    }

    /// The latest version of a secret, from the store (not the cache): what
    /// a change is made to.
    pub fn read_latest(&self, ctx: &OpContext, path: &SecretPath) -> Result<Option<Secret>> {
        Self::latest_only(path)?;
        if self.is_down() {
            return Err(Self::down_error());
        }
        ctx.may_wait()?;
        self.noted(self.store.read(ctx.deadline(), path))
    }

    /// The latest version of a secret from the store, asked even while it
    /// is marked down: to find out what became of a write that got no
    /// answer, within what is left of the operation's deadline.
    pub fn read_latest_anyway(&self, ctx: &OpContext, path: &SecretPath) -> Result<Option<Secret>> {
        ctx.may_wait()?;
        self.noted(self.store.read(ctx.deadline(), path))
    }

    /// What the parent's fresh listing says of `path`, when it is cached
    /// and whole.
    fn known_from_parent(&self, path: &SecretPath) -> Option<ParentSays> {
        let (parent, _) = path.split_last()?;
        Self::parent_says(path, self.listings.fresh(&parent)?)
    }

    /// What the parent's last listing says of `path` while the store is
    /// unreachable and that listing is within the stale-if-error window.
    pub(super) fn known_from_stale_parent(&self, path: &SecretPath) -> Option<ParentSays> {
        let (parent, _) = path.split_last()?;
        Self::parent_says(path, self.listings.stale(&parent)?)
    }

    /// What the listing `cached` says of `path`, its child: nothing when
    /// it is partial (a listing a layer refused says nothing of the names
    /// it lacks).
    fn parent_says(path: &SecretPath, cached: Cached<Listing>) -> Option<ParentSays> {
        let (_, name) = path.split_last()?;
        if cached.value.as_ref().is_some_and(|l| l.partial) {
            return None;
        }
        let mut says = ParentSays {
            folder: false,
            secret: false,
            valid_for: cached.valid_for,
        };
        for e in cached.value.iter().flat_map(|l| named(l, name)) {
            if e.folder {
                says.folder = true;
            } else {
                says.secret = true;
            }
        }
        Some(says)
    }

    /// The answer for `path` as a folder or as a secret: what the parent's
    /// listing already says, else the cache's fresh answer (refreshed
    /// ahead in the background when it is near its end), else one fetch
    /// shared by all who ask at once, else, with the store unreachable, a
    /// stale answer within --stale-if-error.
    fn through_cache<V>(
        &self,
        ctx: &OpContext,
        path: &SecretPath,
        kind: Kind,
        cache: &Cache<SecretPath, V>,
        fetch: impl FnOnce() -> Result<Option<V>>,
    ) -> Result<Fetched<V>>
    where
        Change: From<(SecretPath, Option<Arc<V>>, Option<Arc<V>>)>,
    {
        let not_one = |valid_for| {
            Ok(Fetched {
                answer: Cached {
                    value: None,
                    valid_for,
                },
                change: None,
            })
        };
        if let Some(says) = self.known_from_parent(path) {
            if !says.is(kind) {
                return not_one(says.valid_for);
            }
        }
        let label = match kind {
            Kind::Folder => "listing",
            Kind::Secret => "secret",
        };
        if self.is_down() {
            let answer = self.while_down(path, kind, cache);
            self.meter
                .cache_lookup(label, if answer.is_ok() { "stale" } else { "failed" });
            return answer;
        }
        let job = match kind {
            Kind::Folder => Refresh::Listing(path.clone()),
            Kind::Secret => Refresh::Secret(path.clone()),
        };
        if let Some(answer) = cache.fresh(path) {
            // A secret held back was refreshed already.
            if answer.valid_for <= self.ahead && !cache.is_holding(path) {
                self.refresh_ahead(job);
            }
            self.meter.cache_lookup(label, "hit");
            return Ok(Fetched {
                answer: self.for_the_kernel(answer),
                change: None,
            });
        }
        // Only a fetch (or waiting for another thread's fetch) is left.
        ctx.may_wait()?;
        let mut replaced = None;
        let mut fetch_failed = false;
        let answer = cache.get_or_fetch(path, || {
            replaced = Some(cache.last(path));
            let fetched = self.noted(fetch());
            fetch_failed = fetched.is_err();
            fetched
        });
        self.meter.cache_lookup(
            label,
            match (&answer, replaced.is_some(), fetch_failed) {
                (Err(_), _, _) => "failed",
                (Ok(_), false, _) => "coalesced",
                (Ok(_), true, false) => "miss",
                (Ok(_), true, true) => "stale",
            },
        );
        match answer {
            Ok(now) => {
                let change =
                    replaced.map(|before| Change::from((path.clone(), before, now.value.clone())));
                Ok(Fetched {
                    answer: self.for_the_kernel(now),
                    change,
                })
            }
            // What the parent's listing says is not of this kind (a secret
            // with no children is no folder) has no answer of its own to
            // serve stale: the parent's stale listing stands for it.
            Err(e) if e.is_transient() => match self.known_from_stale_parent(path) {
                Some(says) if !says.is(kind) => not_one(says.valid_for),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Lists the folder `path` in the store, sorted by name.
    pub(super) fn fetch_listing(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
    ) -> Result<Option<Listing>> {
        let mut listing = self.store.list(deadline, path)?;
        if let Some(l) = listing.as_mut() {
            l.entries
                .sort_by(|a, b| a.name.cmp(&b.name).then(a.folder.cmp(&b.folder)));
        }
        Ok(listing)
    }

    /// Reads a secret from the store, with its mtime settled.
    pub(super) fn fetch_secret(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
    ) -> Result<Option<Secret>> {
        let mut fresh = self.store.read(deadline, path)?;
        if let Some(s) = fresh.as_mut() {
            s.modified = Some(self.modified_time(path, s));
        }
        Ok(fresh)
    }

    /// A file's mtime: the version's creation time where the store keeps
    /// one, else the time we first saw this content. It must change
    /// whenever the bytes do: the kernel drops its cached pages when it
    /// sees a new mtime (FUSE_AUTO_INVAL_DATA), which is how a refreshed
    /// value reaches readers that keep the file in the page cache.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, folder: bool) -> ListEntry {
        ListEntry {
            name: name.to_string(),
            folder,
        }
    }

    /// A large folder, sorted as `fetch_listing` sorts it: every name finds
    /// its own entries (a folder and a secret may share one), and a name
    /// that is only a prefix of others, or falls between them, finds none.
    #[test]
    fn a_listing_is_searched_by_name() {
        let mut listing: Listing = (0..50_000)
            .map(|i| entry(&format!("s{i:05}"), false))
            .chain([
                entry("s00007", true),
                entry("app", true),
                entry("zz", false),
            ])
            .collect();
        listing
            .entries
            .sort_by(|a, b| a.name.cmp(&b.name).then(a.folder.cmp(&b.folder)));
        for i in (0..50_000).step_by(997) {
            let name = format!("s{i:05}");
            let found = named(&listing, &name);
            assert!(!found.is_empty() && found.iter().all(|e| e.name == name));
        }
        let both: Vec<bool> = named(&listing, "s00007").iter().map(|e| e.folder).collect();
        assert_eq!(both, [false, true]);
        assert_eq!(named(&listing, "app"), [entry("app", true)]);
        assert_eq!(named(&listing, "zz"), [entry("zz", false)]);
        for missing in ["", "a", "s", "s0000", "s000071", "s49999x", "zzz"] {
            assert!(named(&listing, missing).is_empty(), "{missing:?} found");
        }
    }
}
