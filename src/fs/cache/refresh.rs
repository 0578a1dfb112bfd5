//! Keeping answers fresh: refresh ahead of expiry and the quiet switch.
//! An answer read in the last tenth of its life is queued for the core's
//! refresher threads ([`Refresh`]), so that it is replaced before it
//! expires and readers never wait for it. A refreshed secret whose data
//! changed is held back (its old data served, and fresh) until none of its
//! keys was served for [`QUIET`], or at the latest after the hold, and
//! then switched in whole by the core's switcher (`fs/switch.rs`). Each
//! answer that replaced another is a [`Change`]: what the kernel,
//! templates and `--on-change` hear of.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{Cache, Source};
use crate::error::Result;
use crate::fs::context::OpContext;
use crate::store::{Listing, Secret, SecretPath};

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

/// How a [`Source`] refreshes its answers: given when it is made.
pub enum Refreshing {
    /// Only when asked ([`Source::refresh`]): an expired answer is fetched
    /// again by the reader that needs it (`exec`, tests).
    OnRequest,
    /// Ahead, in the background: an answer read in the last tenth of its
    /// life is sent to this queue (the core's refresher threads read it;
    /// `None` asks one to end), and a refreshed secret whose data changed
    /// is held back until [`Source::switch_due`] switches it in (the
    /// core's switcher, `fs/switch.rs`).
    Ahead(Sender<Option<Refresh>>),
}

/// A refreshed secret whose data changed is switched in once none of its
/// keys was served for this long (or at the latest after [`MAX_HOLD`]), so
/// that the switch does not fall between the reads of a program reading
/// several keys one after the other (a certificate and its key).
pub const QUIET: Duration = Duration::from_millis(50);

/// The longest a changed secret is held back (less with a TTL under 10 s:
/// a tenth of it): what a value may be served past its refresh.
pub const MAX_HOLD: Duration = Duration::from_secs(1);

/// What the switcher waits for in [`Source::wait_for_held`]: a secret
/// held back, or the end.
#[derive(Default)]
pub(super) struct Nudge {
    /// A refresh held a secret back since the switcher last looked.
    held: bool,
    /// The switcher is to end ([`Source::stop_switcher`]); it stays so.
    end: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Source {
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
                let hold = self.refresher.as_ref().map(|_| (self.hold(), same));
                let changed = self.refetched(
                    p,
                    &self.secrets,
                    || self.fetch_secret(ctx.deadline(), p),
                    hold,
                );
                if hold.is_some() {
                    let (nudge, wake) = &self.held_back;
                    lock(nudge).held = true;
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

    /// How long a refreshed secret whose data changed may be held back.
    fn hold(&self) -> Duration {
        self.ahead.min(MAX_HOLD)
    }

    /// Switches in the secrets held back whose time came (none of their
    /// keys served for [`QUIET`], or held as long as they may be): the
    /// changes made, and when to look again (`None`: nothing held).
    pub fn switch_due(&self) -> (Vec<Change>, Option<std::time::Instant>) {
        let (switched, again) = self.secrets.switch_due(QUIET);
        let changes = switched.into_iter().map(Change::from).collect();
        (changes, again)
    }

    /// Tells the switcher to end, and wakes it if it waits in
    /// [`Source::wait_for_held`]: the one thing that ends it while the
    /// filesystem lives (`Background::stop`).
    pub(in crate::fs) fn stop_switcher(&self) {
        let (nudge, wake) = &self.held_back;
        lock(nudge).end = true;
        wake.notify_all();
    }

    /// Waits until a secret is held back, or `most` passed; `false` once
    /// the switcher is told to end ([`Source::stop_switcher`]).
    pub fn wait_for_held(&self, most: Duration) -> bool {
        let (nudge, wake) = &self.held_back;
        let mut n = lock(nudge);
        if !n.held && !n.end {
            n = wake
                .wait_timeout(n, most)
                .map(|(n, _)| n)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        n.held = false;
        !n.end
    }

    /// How many secrets are held back now.
    #[cfg(test)]
    pub(in crate::fs) fn held_back(&self) -> usize {
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
    pub(super) fn refresh_ahead(&self, job: Refresh) {
        let Some(tx) = &self.refresher else {
            return;
        };
        if lock(&self.refreshing).insert(job.clone()) && tx.send(Some(job.clone())).is_err() {
            lock(&self.refreshing).remove(&job);
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
