//! The store behind the cache: folder listings and secrets as the core
//! asks for them, with what a parent's listing already tells, coalesced
//! fetches, refresh ahead of expiry, stale-if-error, and writes that land in
//! the cache at once. Every answer that replaced an older one comes back
//! with the [`Change`], from which the core makes kernel invalidations.
//!
//! Once a request has timed out or could not reach the store, the store is
//! "down" until a background probe gets an answer: meanwhile cached answers
//! are served at once (stale ones within --stale-if-error), anything else
//! fails at once with `EIO`, and only the probe waits on the store.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use super::cache::{Cache, CachePolicy, Cached, Clock};
use super::context::OpContext;
use crate::error::{Error, Result};
use crate::metrics::Meter;
use crate::store::{
    Capabilities, Deadline, Health, ListEntry, Listing, Permissions, Precondition, Secret,
    SecretData, SecretPath, SecretStore,
};

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

/// A refresh to run in the background.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Refresh {
    /// The listing of a folder.
    Listing(SecretPath),
    /// A secret.
    Secret(SecretPath),
}

/// An answer that replaced an older one (or a first one): what the kernel
/// may have to forget.
pub enum Change {
    /// A folder's listing.
    Listing {
        /// The folder.
        path: SecretPath,
        /// The listing held before (`None`: none, or not a folder).
        before: Option<Arc<Listing>>,
        /// The listing now.
        now: Option<Arc<Listing>>,
    },
    /// A secret.
    Secret {
        /// The secret's path.
        path: SecretPath,
        /// The version held before.
        before: Option<Arc<Secret>>,
        /// The version now.
        now: Option<Arc<Secret>>,
    },
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
enum Kind {
    Folder,
    Secret,
}

/// What the parent's listing says of a path.
struct ParentSays {
    folder: bool,
    secret: bool,
    valid_for: Duration,
}

impl ParentSays {
    fn is(&self, kind: Kind) -> bool {
        match kind {
            Kind::Folder => self.folder,
            Kind::Secret => self.secret,
        }
    }
}

/// A refreshed secret whose data changed is switched in once none of its
/// keys was served for this long (or at the latest after [`MAX_HOLD`]), so
/// that the switch does not fall between the reads of a program reading
/// several keys one after the other (a certificate and its key).
pub const QUIET: Duration = Duration::from_millis(50);

/// The longest a changed secret is held back (less with a TTL under 10 s:
/// a tenth of it): what a value may be served past its refresh.
pub const MAX_HOLD: Duration = Duration::from_secs(1);

/// How often a probe asks a store that stopped answering whether it is back.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long `secretfs status` waits for the store's health, whatever
/// --timeout is: the status command has a deadline of its own.
const HEALTH_WAIT: Duration = Duration::from_secs(3);

/// Whether an error says the store could not be reached (rather than that
/// it answered no).
fn is_outage(e: &Error) -> bool {
    // Not `Unanswered`: that says what became of one write (it may have
    // landed), and can come of a read that only ran out of time.
    matches!(e, Error::Timeout(_) | Error::Unavailable(_))
}

/// Whether the store answers, as the last request found.
#[derive(Default)]
struct Reach {
    /// A request timed out or could not connect, and no probe got an
    /// answer since.
    down: AtomicBool,
    /// A probe thread is running.
    probing: AtomicBool,
}

/// The store as the core sees it: through the cache.
pub struct Source {
    store: Arc<dyn SecretStore>,
    reach: Arc<Reach>,
    listings: Cache<SecretPath, Listing>,
    secrets: Cache<SecretPath, Secret>,
    /// What the credential may do to each secret (`None`: the store cannot say).
    permissions: Cache<SecretPath, Permissions>,
    /// Versions of secrets (paths naming a version): they never change
    /// once written, but may be deleted or destroyed, so they expire too.
    versions: Cache<SecretPath, Secret>,
    /// How long an answer is served (what a version view is told).
    ttl: Duration,
    /// When the mount started: the mtime of what the store gives none.
    started: SystemTime,
    /// Where background refreshes are sent, once a refresher runs (set
    /// by the core's builder only; `None` asks a refresher thread to end).
    refresher: OnceLock<Sender<Option<Refresh>>>,
    /// Refreshes queued or running, so each path is refreshed once at a time.
    refreshing: Mutex<HashSet<Refresh>>,
    /// An answer read with less validity left than this is refreshed ahead.
    ahead: Duration,
    /// Set once a switcher runs: refreshed secrets that changed are held
    /// back until [`Source::switch_due`] switches them in.
    switching: OnceLock<()>,
    /// Wakes the switcher when a secret is held back.
    held_back: (Mutex<bool>, std::sync::Condvar),
    /// Where cache lookups and refreshes are counted (`--metrics`).
    meter: Meter,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Source {
    /// The store `store` behind caches of `policy`, counting lookups and
    /// refreshes with `meter`.
    pub fn new(
        store: Arc<dyn SecretStore>,
        policy: CachePolicy,
        clock: Arc<dyn Clock>,
        meter: Meter,
    ) -> Self {
        Source {
            store,
            reach: Arc::new(Reach::default()),
            listings: Cache::new(policy, clock.clone()),
            secrets: Cache::new(policy, clock.clone()),
            permissions: Cache::new(policy, clock.clone()),
            versions: Cache::new(policy, clock),
            ttl: policy.ttl,
            started: SystemTime::now(),
            refresher: OnceLock::new(),
            refreshing: Mutex::new(HashSet::new()),
            ahead: policy.ttl / 10,
            switching: OnceLock::new(),
            held_back: (Mutex::new(false), std::sync::Condvar::new()),
            meter,
        }
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
    fn latest_only(path: &SecretPath) -> Result<()> {
        match path.version() {
            Some(_) => Err(Error::ReadOnly),
            None => Ok(()),
        }
    }

    /// Whether the store answers and its credential holds: at once when
    /// it is known down, else within a few seconds whatever --timeout is.
    pub fn health(&self, ctx: &OpContext) -> Result<Health> {
        if self.is_down() {
            return Err(Self::down_error());
        }
        ctx.may_wait()?;
        let store = self.store.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("secretfs-health".into())
            .spawn(move || {
                // Outside the operation, on a thread of its own: the
                // whole timeout (bounded here by HEALTH_WAIT).
                let _ = tx.send(store.health(&Deadline::per_request()));
            })
            .map_err(|e| Error::Unavailable(format!("cannot start a health check: {e}")))?;
        let answer = rx
            .recv_timeout(HEALTH_WAIT)
            .unwrap_or(Err(Error::Timeout(HEALTH_WAIT)));
        self.noted(answer)
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

    /// Whether the last listing of the folder at `path` may have left out
    /// names a read reaches (a lower layer refused it): asks nothing.
    pub fn lists_partly(&self, path: &SecretPath) -> bool {
        self.store.lists_partly(path)
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

    /// Whether the store is known not to answer (a probe is checking).
    pub fn is_down(&self) -> bool {
        self.reach.down.load(Ordering::SeqCst)
    }

    fn down_error() -> Error {
        Error::Unavailable("the store did not answer the last request (a probe is checking)".into())
    }

    /// Passes `result` on, marking the store down when it says the store
    /// could not be reached.
    fn noted<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if is_outage(e) {
                self.went_down(e);
            }
        }
        result
    }

    fn went_down(&self, e: &Error) {
        if !self.reach.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = %e, "store unreachable: answering from the cache (stale answers within --stale-if-error), failing the rest at once, probing it in the background");
        }
        if self.reach.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let store = self.store.clone();
        let reach = Arc::downgrade(&self.reach);
        let spawned = std::thread::Builder::new()
            .name("secretfs-probe".into())
            .spawn(move || probe(store, reach));
        if let Err(e) = spawned {
            // Without a probe, requests keep trying the store themselves.
            tracing::error!(error = %e, "cannot start the store probe");
            self.reach.probing.store(false, Ordering::SeqCst);
            self.reach.down.store(false, Ordering::SeqCst);
        }
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

    /// Sends answers read near their expiry to `tx`, to be refreshed in
    /// the background (once; later calls are ignored). Without it every
    /// expired answer is fetched again by the reader that needs it. Only
    /// the core's builder calls it, before it hands the core out.
    pub(super) fn refresh_through(&self, tx: Sender<Option<Refresh>>) {
        let _ = self.refresher.set(tx);
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

    /// Runs one background refresh; the change it made.
    pub fn refresh(&self, ctx: &OpContext, job: &Refresh) -> Result<Change> {
        if self.is_down() {
            lock(&self.refreshing).remove(job);
            return Err(Self::down_error());
        }
        let result = match job {
            Refresh::Listing(p) => self.refetched(
                p,
                &self.listings,
                || self.fetch_listing(ctx.deadline(), p),
                None,
            ),
            Refresh::Secret(p) => {
                fn same(a: Option<&Secret>, b: Option<&Secret>) -> bool {
                    match (a, b) {
                        (Some(a), Some(b)) => a.same_data(b),
                        (a, b) => a.is_none() && b.is_none(),
                    }
                }
                let same: &dyn Fn(Option<&Secret>, Option<&Secret>) -> bool = &same;
                let hold = self.switching.get().map(|()| (self.hold(), same));
                let changed = self.refetched(
                    p,
                    &self.secrets,
                    || self.fetch_secret(ctx.deadline(), p),
                    hold,
                );
                if hold.is_some() {
                    let (woken, wake) = &self.held_back;
                    *lock(woken) = true;
                    wake.notify_all();
                }
                changed
            }
        };
        lock(&self.refreshing).remove(job);
        let kind = match job {
            Refresh::Listing(_) => "listing",
            Refresh::Secret(_) => "secret",
        };
        self.meter
            .refresh(kind, if result.is_ok() { "ok" } else { "failed" });
        self.noted(result)
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

    /// `secret`, just read from the store, is what a change would have
    /// written: the cache holds it now, as after a write.
    pub fn found(&self, path: &SecretPath, mut secret: Secret) -> Result<Arc<Secret>> {
        secret.modified = Some(self.modified_time(path, &secret));
        let cached = self.secrets.insert(path.clone(), Some(secret));
        cached
            .value
            .ok_or_else(|| crate::error::Error::Protocol("a read left nothing cached".into()))
    }

    /// Drops the cached copy of the secret at `path` (and the listings
    /// above that do not name it yet): what the store holds is read again
    /// before it is served, stale-if-error included.
    pub fn forget_secret(&self, path: &SecretPath) {
        self.secrets.invalidate(path);
        self.note_written(path);
    }

    /// Writes `data` as the secret at `path` if `when` holds. On success
    /// the cache holds it at once (read-your-writes) and the listings above
    /// are fetched again; the version written is returned.
    pub fn write(
        &self,
        ctx: &OpContext,
        path: &SecretPath,
        data: SecretData,
        when: &Precondition,
    ) -> Result<Arc<Secret>> {
        Self::latest_only(path)?;
        if self.is_down() {
            return Err(Self::down_error());
        }
        ctx.may_wait()?;
        let revision = self.noted(self.store.write(ctx.deadline(), path, &data, when))?;
        let fresh = if self.store.rereads_after_write() {
            // Layers: what the write left is not only what was written.
            self.noted(self.fetch_secret(ctx.deadline(), path))?
        } else {
            // A write of the data leaves the secret's metadata as it was.
            let custom_metadata = self
                .secrets
                .last(path)
                .map(|s| s.custom_metadata.clone())
                .unwrap_or_default();
            Some(Secret {
                keys: data,
                revision,
                modified: Some(SystemTime::now()),
                custom_metadata,
                withheld: Default::default(),
            })
        };
        let cached = self.secrets.insert(path.clone(), fresh);
        self.note_written(path);
        cached
            .value
            .ok_or_else(|| crate::error::Error::Protocol("a write left nothing cached".into()))
    }

    /// Sets (`Some`) or removes (`None`) one entry of the custom metadata
    /// of the secret at `path`. The cached secret is dropped: the next
    /// read fetches it with its new metadata.
    pub fn set_custom_metadata(
        &self,
        ctx: &OpContext,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        Self::latest_only(path)?;
        if self.is_down() {
            return Err(Self::down_error());
        }
        ctx.may_wait()?;
        self.noted(
            self.store
                .set_custom_metadata(ctx.deadline(), path, name, value),
        )?;
        self.secrets.invalidate(path);
        Ok(())
    }

    /// Deletes the secret at `path`; the cache knows at once.
    pub fn delete(&self, ctx: &OpContext, path: &SecretPath) -> Result<()> {
        Self::latest_only(path)?;
        if self.is_down() {
            return Err(Self::down_error());
        }
        ctx.may_wait()?;
        self.noted(self.store.delete(ctx.deadline(), path))?;
        self.forget_deleted(path);
        Ok(())
    }

    /// Records that nothing is at `path` any more (a directory removed):
    /// its secret and listing are gone, and the listings above change.
    pub fn forget_deleted(&self, path: &SecretPath) {
        self.secrets.insert(path.clone(), None);
        self.listings.invalidate(path);
        self.forget_listings_above(path);
    }

    /// A secret was written at `path`: each listing above must name it (a
    /// new secret, a new folder on the way). Only listings that do not yet
    /// are fetched again; the others stay, and with them what
    /// stale-if-error serves should the store go away right after. Every
    /// level is checked: a listing below that names its child says
    /// nothing of the levels above (an old copy may name what a fresher
    /// listing above does not yet show as a folder).
    fn note_written(&self, path: &SecretPath) {
        let mut child = path.clone();
        let mut folder = false;
        while let Some((parent, name)) = child.split_last() {
            let named = self
                .listings
                .last(&parent)
                .is_some_and(|l| named(&l, name).iter().any(|e| e.folder == folder));
            if !named {
                self.listings.invalidate(&parent);
            }
            child = parent;
            folder = true;
        }
    }

    fn forget_listings_above(&self, path: &SecretPath) {
        let mut p = path.split_last().map(|(parent, _)| parent);
        while let Some(dir) = p {
            self.listings.invalidate(&dir);
            p = dir.split_last().map(|(parent, _)| parent);
        }
    }

    /// What the parent's fresh listing says of `path`, when it is cached
    /// and whole (a listing a layer refused says nothing of its names).
    fn known_from_parent(&self, path: &SecretPath) -> Option<ParentSays> {
        let (parent, _) = path.split_last()?;
        if self.lists_partly(&parent) {
            return None;
        }
        Self::parent_says(path, self.listings.fresh(&parent)?)
    }

    /// What the parent's last listing says of `path` while the store is
    /// unreachable and that listing is within the stale-if-error window.
    fn known_from_stale_parent(&self, path: &SecretPath) -> Option<ParentSays> {
        let (parent, _) = path.split_last()?;
        if self.lists_partly(&parent) {
            return None;
        }
        Self::parent_says(path, self.listings.stale(&parent)?)
    }

    fn parent_says(path: &SecretPath, cached: Cached<Listing>) -> Option<ParentSays> {
        let (_, name) = path.split_last()?;
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

    /// The answer for `path` while the store is down: the cache's (a stale
    /// one within --stale-if-error), what the parent's stale listing says,
    /// else `EIO` at once.
    fn while_down<V>(
        &self,
        path: &SecretPath,
        kind: Kind,
        cache: &Cache<SecretPath, V>,
    ) -> Result<Fetched<V>> {
        let answer = match cache.fresh(path).or_else(|| cache.stale(path)) {
            Some(answer) => answer,
            None => match self.known_from_stale_parent(path) {
                Some(says) if !says.is(kind) => Cached {
                    value: None,
                    valid_for: says.valid_for,
                },
                _ => return Err(Self::down_error()),
            },
        };
        Ok(Fetched {
            answer,
            change: None,
        })
    }

    /// Fetches `path` again as the one fetch in flight for it (a reader
    /// that finds the answer expired meanwhile waits for this fetch instead
    /// of making a second one); the change it made. When another fetch is
    /// in flight, that one reports the change: none here.
    #[allow(clippy::type_complexity)]
    fn refetched<V>(
        &self,
        path: &SecretPath,
        cache: &Cache<SecretPath, V>,
        fetch: impl FnOnce() -> Result<Option<V>>,
        hold: Option<(Duration, &dyn Fn(Option<&V>, Option<&V>) -> bool)>,
    ) -> Result<Change>
    where
        Change: From<(SecretPath, Option<Arc<V>>, Option<Arc<V>>)>,
    {
        Ok(match cache.refetch(path, fetch, hold)? {
            Some((before, now)) => Change::from((path.clone(), before, now.value)),
            None => {
                let last = cache.last(path);
                Change::from((path.clone(), last.clone(), last))
            }
        })
    }

    /// A fresh answer as the kernel may keep it: with a refresher running,
    /// only until the last part of its life begins, so that a value read
    /// through the kernel's caches comes back to us while it can still be
    /// refreshed ahead, instead of once it has expired (when the reader
    /// would wait for the store). Read in that last part (which queued its
    /// refresh), for the rest of its life: a refresh that finds it changed
    /// tells the kernel to forget it, so asking again on every open until
    /// the refresh lands would only cost requests.
    fn for_the_kernel<V>(&self, mut answer: Cached<V>) -> Cached<V> {
        if self.refresher.get().is_some() && answer.valid_for > self.ahead {
            answer.valid_for -= self.ahead;
        }
        answer
    }

    /// How long a refreshed secret whose data changed may be held back.
    fn hold(&self) -> Duration {
        self.ahead.min(MAX_HOLD)
    }

    /// Holds refreshed secrets whose data changed back from now on, until
    /// [`Source::switch_due`] switches them in (once a switcher runs; only
    /// the core's builder calls it).
    pub(super) fn hold_changes(&self) {
        let _ = self.switching.set(());
    }

    /// Switches in the secrets held back whose time came (none of their
    /// keys served for [`QUIET`], or held as long as they may be): the
    /// changes made, and when to look again (`None`: nothing held).
    pub fn switch_due(&self) -> (Vec<Change>, Option<std::time::Instant>) {
        let (switched, again) = self.secrets.switch_due(QUIET);
        let changes = switched.into_iter().map(Change::from).collect();
        (changes, again)
    }

    /// Wakes the switcher waiting in [`Source::wait_for_held`] (to stop).
    pub(super) fn wake_switcher(&self) {
        let (woken, wake) = &self.held_back;
        *lock(woken) = true;
        wake.notify_all();
    }

    /// Waits until a secret is held back, or `most` passed.
    pub fn wait_for_held(&self, most: Duration) {
        let (woken, wake) = &self.held_back;
        let mut w = lock(woken);
        if !*w {
            w = wake
                .wait_timeout(w, most)
                .map(|(w, _)| w)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *w = false;
    }

    /// How many secrets are held back now.
    #[cfg(test)]
    pub(super) fn held_back(&self) -> usize {
        self.secrets.holding()
    }

    /// A key of the secret at `path` was served from what the kernel was
    /// shown of it (no cache lookup): its switch waits for a quiet moment.
    pub fn served(&self, path: &SecretPath) {
        self.secrets.touch(path);
    }

    /// Queues a background refresh of an answer being read in the last
    /// part of its life (once per path at a time), so that it is replaced
    /// before it expires: all keys of a secret switch to the new version
    /// at one instant, and readers never wait for it.
    fn refresh_ahead(&self, job: Refresh) {
        let Some(tx) = self.refresher.get() else {
            return;
        };
        if lock(&self.refreshing).insert(job.clone()) && tx.send(Some(job.clone())).is_err() {
            lock(&self.refreshing).remove(&job);
        }
    }

    /// Lists the folder `path` in the store, sorted by name.
    fn fetch_listing(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        let mut listing = self.store.list(deadline, path)?;
        if let Some(l) = listing.as_mut() {
            l.sort_by(|a, b| a.name.cmp(&b.name).then(a.folder.cmp(&b.folder)));
        }
        Ok(listing)
    }

    /// Reads a secret from the store, with its mtime settled.
    fn fetch_secret(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
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
    fn modified_time(&self, path: &SecretPath, fresh: &Secret) -> SystemTime {
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

impl From<(SecretPath, Option<Arc<Listing>>, Option<Arc<Listing>>)> for Change {
    fn from((path, before, now): (SecretPath, Option<Arc<Listing>>, Option<Arc<Listing>>)) -> Self {
        Change::Listing { path, before, now }
    }
}

impl From<(SecretPath, Option<Arc<Secret>>, Option<Arc<Secret>>)> for Change {
    fn from((path, before, now): (SecretPath, Option<Arc<Secret>>, Option<Arc<Secret>>)) -> Self {
        Change::Secret { path, before, now }
    }
}

/// Asks the store every [`PROBE_EVERY`] whether it answers again, until it
/// does (any answer, a refusal included) or the mount is gone.
fn probe(store: Arc<dyn SecretStore>, reach: Weak<Reach>) {
    loop {
        std::thread::sleep(PROBE_EVERY);
        let Some(r) = reach.upgrade() else { return };
        match store.health(&Deadline::per_request()) {
            Err(e) if is_outage(&e) => {
                tracing::debug!(error = %e, "probe: the store still does not answer");
            }
            _ => {
                r.down.store(false, Ordering::SeqCst);
                r.probing.store(false, Ordering::SeqCst);
                tracing::info!("the store answers again");
                return;
            }
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
        listing.sort_by(|a, b| a.name.cmp(&b.name).then(a.folder.cmp(&b.folder)));
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
