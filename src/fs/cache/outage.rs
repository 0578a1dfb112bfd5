//! When the store does not answer. Once a request has timed out or could
//! not reach the store, the store is "down" until a background probe gets
//! an answer: meanwhile cached answers are served at once (stale ones
//! within --stale-if-error), anything else fails at once with `EIO`, and
//! only the probe waits on the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Cache, Cached, Fetched, Kind, Source};
use crate::error::{Error, Result};
use crate::fs::context::OpContext;
use crate::store::{Deadline, Health, SecretPath, SecretStore};

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
pub(super) struct Reach {
    /// A request timed out or could not connect, and no probe got an
    /// answer since.
    down: AtomicBool,
    /// A probe thread is running.
    probing: AtomicBool,
}

impl Source {
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

    /// Whether the store is known not to answer (a probe is checking).
    pub fn is_down(&self) -> bool {
        self.reach.down.load(Ordering::SeqCst)
    }

    pub(super) fn down_error() -> Error {
        Error::Unavailable("the store did not answer the last request (a probe is checking)".into())
    }

    /// Passes `result` on, marking the store down when it says the store
    /// could not be reached.
    pub(super) fn noted<T>(&self, result: Result<T>) -> Result<T> {
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

    /// The answer for `path` while the store is down: the cache's (a stale
    /// one within --stale-if-error), what the parent's stale listing says,
    /// else `EIO` at once.
    pub(super) fn while_down<V>(
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
