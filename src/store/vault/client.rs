//! Requests to the server: each FUSE worker thread has its own runtime
//! and clients (one keep-alive connection per thread and node), every
//! request runs under the operation's deadline, moving on to the next node
//! of a cluster when the one in use cannot be reached and asking again
//! while the cluster has no active node (see `nodes`), and the token in
//! use is picked up when it changes.
//!
//! A thread's connections are closed once idle for [`IDLE`] and replaced
//! once older than [`MAX_AGE`]: a live connection's buffers (rustls
//! decrypts a response in place, in a buffer it keeps) hold the last
//! values it carried, which must leave memory with the cache's copies
//! (README, "Security"). Closing idle connections within a second also
//! keeps them from outliving a server's or proxy's idle timeout.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use tokio::runtime::Handle;
use vaultrs::client::VaultClient;
use vaultrs::error::ClientError;

use super::auth::{self, Credentials};
use super::error::{describe, status, to_error};
use super::nodes::{backoff, classify, Failure, Nodes};
use crate::error::{Error, Result};

/// What requests need: the nodes, the token in use and the deadline.
pub struct Client {
    /// The server's nodes (one, or several of a cluster) and the one in use.
    pub nodes: Arc<Nodes>,
    /// The token in use (replaced when renewing is not enough).
    pub credentials: Arc<Credentials>,
    /// Distinguishes clients (tests may build several in one process).
    id: usize,
    /// Deadline of every request.
    pub timeout: Duration,
}

/// The outcome of [`Client::call_tracked`]: the result, and whether an
/// attempt that failed may have reached a node before it failed (a write
/// may then have landed although a later attempt says otherwise).
pub struct Called<T> {
    /// What the request came to.
    pub result: Result<Option<T>>,
    /// An attempt before the last may have reached a node.
    pub uncertain: bool,
}

impl Client {
    /// A client for `nodes` carrying the token of `credentials`.
    pub fn new(nodes: Arc<Nodes>, credentials: Arc<Credentials>, timeout: Duration) -> Self {
        // Keyed by the nodes, not by this client: the stores of one
        // session (several SOURCEs, the layers of a mount) read one after
        // another on a thread and share its connections.
        Client {
            id: nodes.id(),
            nodes,
            credentials,
            timeout,
        }
    }

    /// Runs one request under the deadline; 404 is `Ok(None)`.
    ///
    /// Called from FUSE worker threads, which are not runtime threads: each
    /// gets its own single-threaded runtime and clients (one keep-alive
    /// connection per thread and node), so a request never hops between
    /// threads — that hop costs more than the rest of a cold read.
    pub fn call<T, Fut>(&self, make: impl Fn(Arc<VaultClient>) -> Fut) -> Result<Option<T>>
    where
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        self.call_tracked(make).result
    }

    /// [`Client::call`], saying also whether an earlier attempt may have
    /// reached a node (see [`Called`]).
    ///
    /// The node in use is asked first; one that cannot be reached (refused
    /// connection, timeout, sealed) passes the request on to the next, each
    /// attempt with an equal share of what is left of the deadline, so that
    /// a hung node leaves time for the others. "No active node" answers
    /// are asked again after a backoff. Only when no node answers is the
    /// store unavailable; a deadline used up waiting for a leader is
    /// [`Error::OutOfTime`] (the store answers reads meanwhile).
    pub fn call_tracked<T, Fut>(&self, make: impl Fn(Arc<VaultClient>) -> Fut) -> Called<T>
    where
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        // This request's share of the operation's deadline.
        let Some(budget) = crate::store::deadline::left(self.timeout) else {
            return Called {
                result: Err(Error::OutOfTime(self.timeout)),
                uncertain: false,
            };
        };
        let end = Instant::now() + budget;
        let mut queue: VecDeque<usize> = self.nodes.order().into();
        let first = queue[0];
        let mut uncertain = false;
        let mut waits = 0u32;
        let mut waiting_for_leader = false;
        // The nodes that failed to take the request, and why the last one
        // that refused it (rather than hung) did.
        let mut failed = vec![false; self.nodes.len()];
        let mut refused: Option<String> = None;
        let done = |result, uncertain| Called { result, uncertain };
        loop {
            let remaining = end.saturating_duration_since(Instant::now());
            let Some(node) = queue.pop_front().filter(|_| !remaining.is_zero()) else {
                break;
            };
            // An equal share of what is left for each node still to try.
            let slice = remaining / (queue.len() as u32 + 1);
            let started = Instant::now();
            let outcome = self.attempt(node, slice, &make);
            tracing::trace!(
                micros = started.elapsed().as_micros() as u64,
                node,
                "store request"
            );
            let Some(outcome) = outcome else {
                return done(
                    Err(Error::Unavailable("cannot start an I/O runtime".into())),
                    uncertain,
                );
            };
            let (failure, e) = match outcome {
                Some(Ok(v)) => {
                    self.nodes.answered(first, node);
                    return done(Ok(Some(v)), uncertain);
                }
                None => (Failure::Hung, None),
                Some(Err(e)) if status(&e) == Some(404) => {
                    self.nodes.answered(first, node);
                    return done(Ok(None), uncertain);
                }
                Some(Err(e)) => match classify(&e) {
                    // Refused: by the node, or by where it redirected us?
                    Failure::Unreachable if self.alive(node, end) => (Failure::NoLeader, Some(e)),
                    Failure::Unreachable => (Failure::Node { sent: false }, Some(e)),
                    other => (other, Some(e)),
                },
            };
            let why = e
                .as_ref()
                .map(describe)
                .unwrap_or_else(|| format!("no answer within {slice:?}"));
            match (failure, e) {
                (Failure::Answer, Some(e)) => {
                    self.nodes.answered(first, node);
                    return done(Err(to_error(&e)), uncertain);
                }
                (Failure::Hung | Failure::Answer, _) => {
                    tracing::debug!(node = %self.nodes.addr(node), error = %why, "store node did not answer in time");
                    uncertain = true;
                    waiting_for_leader = false;
                    failed[node] = true;
                    self.nodes.avoid(node);
                }
                (Failure::Node { sent }, _) => {
                    tracing::debug!(node = %self.nodes.addr(node), error = %why, "store node failed the request");
                    uncertain |= sent;
                    waiting_for_leader = false;
                    failed[node] = true;
                    self.nodes.avoid(node);
                    refused = Some(why);
                }
                (Failure::NoLeader | Failure::Unreachable, _) => {
                    // The node answers (reads meanwhile), the cluster has
                    // no leader yet: ask it again a little later.
                    let pause = backoff(waits).min(end.saturating_duration_since(Instant::now()));
                    tracing::debug!(node = %self.nodes.addr(node), error = %why, wait = ?pause, "no active node in the cluster: asking again");
                    waits += 1;
                    waiting_for_leader = true;
                    std::thread::sleep(pause);
                    // Another node may know the leader already (a node
                    // just unsealed does not for a few seconds).
                    queue.push_back(node);
                }
            }
        }
        let all_failed = failed.iter().all(|f| *f) && !waiting_for_leader;
        let e = match refused {
            // No node took it, one at least refused: unreachable, however
            // little time the operation had left.
            Some(why) if all_failed => {
                if self.nodes.len() > 1 {
                    Error::Unavailable(format!(
                        "none of the {} nodes answered (last: {why})",
                        self.nodes.len()
                    ))
                } else {
                    Error::Unavailable(why)
                }
            }
            // Every node hung through (nearly) the whole timeout: the
            // store hangs. A request cut short by its operation's
            // deadline, or one spent waiting for a leader, says nothing
            // of whether the store answers.
            None if all_failed && budget >= self.timeout * 9 / 10 => Error::Timeout(self.timeout),
            _ => Error::OutOfTime(self.timeout),
        };
        done(Err(e), uncertain)
    }

    /// Whether `node` answers at all (its health, any status), asked
    /// within a second at most and never past `end`: a node that answers
    /// after a refused connection redirected the request to a node that
    /// is gone (a standby's leader died).
    fn alive(&self, node: usize, end: Instant) -> bool {
        let wait = end
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        let answer = self.attempt(node, wait, &|c: Arc<VaultClient>| async move {
            vaultrs::sys::health(&*c).await
        });
        match answer {
            Some(Some(Ok(_))) => true,
            Some(Some(Err(e))) => status(&e).is_some(),
            _ => false,
        }
    }

    /// One attempt on `node` within `slice`: `None` when no runtime or
    /// client could be built, `Some(None)` when it timed out.
    fn attempt<T, Fut>(
        &self,
        node: usize,
        slice: Duration,
        make: &impl Fn(Arc<VaultClient>) -> Fut,
    ) -> Option<Option<std::result::Result<T, ClientError>>>
    where
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        let slot = LOCAL.with(Arc::clone);
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = self.credentials.generation();
        let current = slot.as_ref().is_some_and(|l| {
            (l.owner, l.generation) == (self.id, generation) && l.born.elapsed() < MAX_AGE
        });
        if !current {
            // The old one (its connections, their buffers) goes first.
            *slot = None;
            *slot = LocalClient::new((self.id, generation), self.nodes.len());
        }
        let local = slot.as_mut()?;
        let client = match &local.clients[node] {
            Some(c) => c.clone(),
            None => {
                let token = self.credentials.token();
                let c = auth::client_for(self.nodes.settings(node), token.expose_secret())
                    .map_err(
                        |e| tracing::error!(error = %e, "cannot build a thread's Vault client"),
                    )
                    .ok()?;
                let c = Arc::new(c);
                local.clients[node] = Some(c.clone());
                c
            }
        };
        let answer = local
            .rt
            .block_on(async { tokio::time::timeout(slice, make(client)).await })
            .ok();
        local.used = Instant::now();
        Some(answer)
    }
}

/// How long a thread's connections may stay idle before they are closed.
const IDLE: Duration = Duration::from_secs(1);

/// How long a thread's connections may live, however busy: a connection's
/// buffers may keep pieces of older answers (a shorter answer overwrites
/// only the start of a longer one).
const MAX_AGE: Duration = Duration::from_secs(2);

/// A calling thread's own runtime and clients.
struct LocalClient {
    /// Which client it belongs to.
    owner: usize,
    /// Which of the store's tokens it carries.
    generation: u64,
    rt: tokio::runtime::Runtime,
    /// One per node, built when first used.
    clients: Vec<Option<Arc<VaultClient>>>,
    /// When it was built.
    born: Instant,
    /// When its last request ended.
    used: Instant,
}

impl LocalClient {
    fn new((owner, generation): (usize, u64), nodes: usize) -> Option<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| tracing::error!(error = %e, "cannot build a thread's I/O runtime"))
            .ok()?;
        let now = Instant::now();
        Some(LocalClient {
            owner,
            generation,
            rt,
            clients: vec![None; nodes],
            born: now,
            used: now,
        })
    }
}

/// A thread's [`LocalClient`], shared with the reaper (which takes it only
/// while the thread does not use it).
type Slot = Arc<Mutex<Option<LocalClient>>>;

thread_local! {
    static LOCAL: Slot = register();
}

/// Every thread's slot, for the reaper.
static SLOTS: Mutex<Vec<Weak<Mutex<Option<LocalClient>>>>> = Mutex::new(Vec::new());

/// A new thread's slot, known to the reaper (started with the first).
fn register() -> Slot {
    static REAPER: std::sync::Once = std::sync::Once::new();
    REAPER.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("secretfs-conns".into())
            .spawn(|| loop {
                std::thread::sleep(IDLE / 4);
                reap();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the thread that closes idle connections: they stay open (and keep the last values they carried) until used again");
        }
    });
    let slot = Slot::default();
    let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
    slots.retain(|s| s.strong_count() > 0);
    slots.push(Arc::downgrade(&slot));
    slot
}

/// Closes the connections (drops the runtime and clients) of every thread
/// whose last request ended [`IDLE`] ago or whose connections are older
/// than [`MAX_AGE`], unless it is making a request now.
fn reap() {
    let slots: Vec<Slot> = SLOTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for slot in slots {
        let Ok(mut local) = slot.try_lock() else {
            continue;
        };
        if local
            .as_ref()
            .is_some_and(|l| l.used.elapsed() >= IDLE || l.born.elapsed() >= MAX_AGE)
        {
            let old = local.take();
            drop(local);
            drop(old);
        }
    }
}

/// Runs `fut` on the runtime from a blocking thread; `None` past the deadline.
pub fn with_deadline<T>(
    rt: &Handle,
    deadline: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    rt.block_on(async move { tokio::time::timeout(deadline, fut).await })
        .ok()
}
