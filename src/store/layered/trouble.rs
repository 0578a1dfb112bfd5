//! The health of the lower layers of a store of layers: what is wrong
//! with each (forbidden, unreachable, unreadable), since when and why,
//! logged when it starts and ends, and the probe that asks a troubled
//! layer again until it is over.

use crate::store::Deadline;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, SystemTime};

use super::Layer;
use crate::error::{Error, Result};
use crate::store::SecretPath;

/// How often a layer that does not answer is asked whether it answers again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The longest wait between two askings of a request a layer refused.
const PROBE_AT_MOST: Duration = Duration::from_secs(10);

/// A request to a layer, kept to be asked again by the probe.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Request {
    Read(SecretPath),
    List(SecretPath),
}

impl Request {
    /// Asks it of `layer` again; only whether it is answered counts.
    pub(super) fn send(&self, layer: &Layer) -> Result<()> {
        // The probe's own request: no operation's deadline.
        let deadline = Deadline::per_request();
        match self {
            Request::Read(p) => layer.store.read(&deadline, &layer.at(p)).map(drop),
            Request::List(p) => layer.store.list(&deadline, &layer.at(p)).map(drop),
        }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Read(p) => write!(f, "read /{p}"),
            Request::List(p) => write!(f, "list /{p}"),
        }
    }
}

/// What is wrong with a lower layer, as the last requests found.
#[derive(Clone)]
pub(super) struct Trouble {
    pub(super) state: &'static str,
    pub(super) since: SystemTime,
    /// The request that found it: when it is answered, a refusal ends.
    pub(super) request: Request,
    pub(super) why: String,
}

/// The health of one lower layer.
#[derive(Default)]
pub(super) struct LayerState {
    trouble: Mutex<Option<Trouble>>,
    /// It does not answer: not asked until the probe finds it back.
    pub(super) down: AtomicBool,
    /// A probe runs for it.
    pub(super) probing: AtomicBool,
}

impl LayerState {
    pub(super) fn trouble(&self) -> std::sync::MutexGuard<'_, Option<Trouble>> {
        self.trouble.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that `request` to the layer `name` failed with `e`; logs it
    /// when the layer's trouble starts or changes kind, not each time.
    pub(super) fn failed(&self, name: &str, request: &Request, e: &Error) {
        let state = match e {
            Error::PermissionDenied(_) => "forbidden",
            e if is_outage(e) => "unreachable",
            _ => "unreadable",
        };
        let mut t = self.trouble();
        if t.as_ref().is_some_and(|t| t.state == state) {
            return;
        }
        tracing::warn!(layer = %name, state, request = %request, error = %e,
            "a layer cannot be read: serving what the other layers hold");
        *t = Some(Trouble {
            state,
            since: SystemTime::now(),
            request: request.clone(),
            why: e.to_string(),
        });
    }

    /// Notes that the layer `name` answered `request` (`None`: answered at
    /// all, the probe's health check): that ends a trouble, except a
    /// refusal of another request.
    pub(super) fn answered(&self, name: &str, request: Option<&Request>) {
        let mut t = self.trouble();
        let ends = t
            .as_ref()
            .is_some_and(|t| t.state != "forbidden" || Some(&t.request) == request);
        if ends {
            *t = None;
            tracing::info!(layer = %name, "the layer can be read again");
        }
    }
}

/// Whether `e` says the layer's server does not answer (rather than that
/// one operation ran out of time).
pub(super) fn is_outage(e: &Error) -> bool {
    matches!(e, Error::Unavailable(_) | Error::Timeout(_))
}

/// Asks a troubled layer again until its trouble is over: whether it
/// answers at all (its health) while it is down, else the request that
/// found the trouble, waiting longer each time it is still refused.
pub(super) fn probe(layer: Layer, state: Weak<LayerState>) {
    let mut wait = PROBE_EVERY;
    loop {
        std::thread::sleep(wait);
        let Some(state) = state.upgrade() else { return };
        if state.down.load(Ordering::SeqCst) {
            match layer.store.health(&Deadline::per_request()) {
                Err(e) if is_outage(&e) => {
                    tracing::debug!(layer = %layer.name, error = %e, "probe: the layer still does not answer");
                    continue;
                }
                _ => {
                    state.down.store(false, Ordering::SeqCst);
                    state.answered(&layer.name, None);
                }
            }
        }
        let request = state.trouble().as_ref().map(|t| t.request.clone());
        match request {
            Some(r) => match r.send(&layer) {
                Ok(()) => state.answered(&layer.name, Some(&r)),
                Err(e) => {
                    tracing::debug!(layer = %layer.name, request = %r, error = %e, "probe: the layer still cannot be read");
                    if is_outage(&e) {
                        state.down.store(true, Ordering::SeqCst);
                        wait = PROBE_EVERY;
                    } else {
                        wait = (wait * 2).min(PROBE_AT_MOST);
                    }
                }
            },
            None => {
                state.probing.store(false, Ordering::SeqCst);
                // A trouble noted meanwhile found this probe still running.
                let again = state.trouble().is_some() || state.down.load(Ordering::SeqCst);
                if !again || state.probing.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
        }
    }
}
