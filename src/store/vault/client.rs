//! Requests to the server: each FUSE worker thread has its own runtime
//! and clients (one keep-alive connection per thread and node), every
//! request runs under the operation's deadline, moving on to the next node
//! of a cluster when the one in use cannot be reached and asking again
//! while the cluster has no active node (see `nodes`), and the token in
//! use is picked up when it changes.
//!
//! A pooled connection that the server or a proxy closed while it was idle
//! (a restart, an idle timeout) fails the next request written to it before
//! any answer comes: that request is sent again at once on a new connection
//! (see [`Repeat`]), and only a failure on a new connection says anything
//! of the node.
//!
//! A thread's runtime and connections are dropped once idle for
//! [`POOL_IDLE`] (by a reaper thread: hyper's own pool timeout is only seen
//! while the thread's runtime runs, at its next request) and replaced once
//! older than [`MAX_AGE`]: a live connection's buffers hold the last
//! answers it carried (rustls decrypts each in place, in a buffer it
//! keeps), values included, which must leave memory with the cache's
//! copies (docs/SECURITY.md, "Values in memory").

use crate::store::Deadline;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use tokio::runtime::Handle;
use vaultrs::client::VaultClient;
use vaultrs::error::ClientError;

use super::auth::Credentials;
use super::error::{describe, status, to_error};
use super::http::{client_for, POOL_IDLE};
use super::nodes::{backoff, classify, connection_lost, Failure, Nodes};
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

/// Whether a request that may have reached a node may be sent again on a
/// new connection when its pooled connection turns out closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Sending it twice leaves what sending it once does: reads, and writes
    /// that carry all they change (a KV v1 write, a delete, a metadata
    /// write) or that check-and-set refuses a second time (the caller finds
    /// out, through [`Called::uncertain`], whether the first one landed).
    Again,
    /// A second copy would do more (a KV v2 write without check-and-set
    /// makes one more version): it fails as [`Error::Unanswered`] instead,
    /// and the writer reads to find out whether it landed.
    Once,
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
    pub fn call<T, Fut>(
        &self,
        deadline: &Deadline,
        make: impl Fn(Arc<VaultClient>) -> Fut,
    ) -> Result<Option<T>>
    where
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        self.call_tracked(deadline, Repeat::Again, make).result
    }

    /// [`Client::call`], saying also whether an earlier attempt may have
    /// reached a node (see [`Called`]); `repeat` says whether it may be
    /// sent again after its pooled connection closed.
    ///
    /// The node in use is asked first; one that cannot be reached (refused
    /// connection, timeout, sealed) passes the request on to the next, each
    /// attempt with an equal share of what is left of the deadline, so that
    /// a hung node leaves time for the others. "No active node" answers
    /// are asked again after a backoff. Only when no node answers is the
    /// store unavailable; a deadline used up waiting for a leader is
    /// [`Error::OutOfTime`] (the store answers reads meanwhile).
    ///
    /// A request that fails on a connection taken from the pool before any
    /// answer came (the server or a proxy closed it while it was idle) is
    /// sent again at once to the same node on a new connection, or, when
    /// `repeat` is [`Repeat::Once`], fails as [`Error::Unanswered`]: a
    /// closed connection says nothing of the node.
    pub fn call_tracked<T, Fut>(
        &self,
        deadline: &Deadline,
        repeat: Repeat,
        make: impl Fn(Arc<VaultClient>) -> Fut,
    ) -> Called<T>
    where
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        // This request's share of the operation's deadline.
        let Some(budget) = deadline.left(self.timeout) else {
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
            let Some(Attempt { outcome, reused }) = outcome else {
                return done(
                    Err(Error::Unavailable("cannot start an I/O runtime".into())),
                    uncertain,
                );
            };
            if let Some(Err(e)) = &outcome {
                if reused && connection_lost(e) {
                    // A connection from the pool, closed by the server or a
                    // proxy: the next one is new, and a failure on it counts.
                    self.drop_connection(node);
                    // Perhaps sent before the close was seen: a write may
                    // have landed.
                    uncertain = true;
                    let why = describe(e);
                    if repeat == Repeat::Once {
                        tracing::debug!(node = %self.nodes.addr(node), error = %why, "a pooled connection was closed under a write that must not be sent twice");
                        return done(Err(Error::Unanswered(why)), uncertain);
                    }
                    tracing::debug!(node = %self.nodes.addr(node), error = %why, "a pooled connection was closed: sending again on a new one");
                    queue.push_front(node);
                    continue;
                }
            }
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
        match answer.and_then(|a| a.outcome) {
            Some(Ok(_)) => true,
            Some(Err(e)) => status(&e).is_some(),
            None => false,
        }
    }

    /// Drops this thread's client for `node`, and with it its pooled
    /// connection: the next request to `node` opens a new one.
    fn drop_connection(&self, node: usize) {
        let slot = LOCAL.with(Arc::clone);
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(local) = slot.as_mut() {
            local.clients[node] = None;
            local.answered[node] = None;
        }
    }

    /// One attempt on `node` within `slice`: `None` when no runtime or
    /// client could be built.
    fn attempt<T, Fut>(
        &self,
        node: usize,
        slice: Duration,
        make: &impl Fn(Arc<VaultClient>) -> Fut,
    ) -> Option<Attempt<T>>
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
                let c = client_for(self.nodes.settings(node), token.expose_secret())
                    .map_err(
                        |e| tracing::error!(error = %e, "cannot build a thread's Vault client"),
                    )
                    .ok()?;
                let c = Arc::new(c);
                local.clients[node] = Some(c.clone());
                c
            }
        };
        // A connection is pooled only after an answer, and dropped
        // once idle for longer than the pool keeps it.
        let reused = local.answered[node].is_some_and(|t| t.elapsed() < POOL_IDLE);
        let outcome = local
            .rt
            .block_on(async { tokio::time::timeout(slice, make(client)).await })
            .ok();
        if let Some(answer) = &outcome {
            if answer.as_ref().err().is_none_or(|e| status(e).is_some()) {
                local.answered[node] = Some(Instant::now());
            }
        }
        local.used = Instant::now();
        Some(Attempt { outcome, reused })
    }
}

/// How long a thread's connections may live, however busy: a connection's
/// buffers may keep pieces of older answers (a shorter answer overwrites
/// only the start of a longer one).
const MAX_AGE: Duration = Duration::from_secs(2);

/// One attempt at a request.
struct Attempt<T> {
    /// What it came to; `None` when it timed out.
    outcome: Option<std::result::Result<T, ClientError>>,
    /// Whether it may have gone over a connection taken from the pool.
    reused: bool,
}

/// A calling thread's own runtime and clients.
struct LocalClient {
    /// Which client it belongs to.
    owner: usize,
    /// Which of the store's tokens it carries.
    generation: u64,
    rt: tokio::runtime::Runtime,
    /// One per node, built when first used.
    clients: Vec<Option<Arc<VaultClient>>>,
    /// Per node, when its client last got an answer (and so may hold a
    /// pooled connection).
    answered: Vec<Option<Instant>>,
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
        reaper_wake();
        Some(LocalClient {
            owner,
            generation,
            rt,
            clients: vec![None; nodes],
            answered: vec![None; nodes],
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
            .spawn(|| {
                let mut none_left_at = None;
                loop {
                    // Asleep while no thread holds a client: an idle
                    // mount's reaper does not wake.
                    let built = reaper_wait(none_left_at);
                    std::thread::sleep(POOL_IDLE / 4);
                    none_left_at = (!reap()).then_some(built);
                }
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

/// How many thread clients were built, and the reaper's wake-up call.
static BUILT: (Mutex<u64>, std::sync::Condvar) = (Mutex::new(0), std::sync::Condvar::new());

/// A thread client was built: the reaper has one to watch.
fn reaper_wake() {
    *BUILT.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    BUILT.1.notify_one();
}

/// When the reaper found no client left (`none_left_at`: how many had been
/// built before it looked), waits until another is built; returns how
/// many are built now.
fn reaper_wait(none_left_at: Option<u64>) -> u64 {
    let built = BUILT.0.lock().unwrap_or_else(PoisonError::into_inner);
    match none_left_at {
        None => *built,
        Some(seen) => *BUILT
            .1
            .wait_while(built, |built| *built == seen)
            .unwrap_or_else(PoisonError::into_inner),
    }
}

/// Drops the runtime and clients (connections, their buffers) of every
/// thread whose last request ended [`POOL_IDLE`] ago (the pool would not
/// use its connection again) or whose connections are older than
/// [`MAX_AGE`], unless it is making a request now. Whether a client is
/// left to watch.
fn reap() -> bool {
    let mut left = false;
    let slots: Vec<Slot> = SLOTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for slot in slots {
        let Ok(mut local) = slot.try_lock() else {
            // In use: it will be idle later.
            left = true;
            continue;
        };
        if local
            .as_ref()
            .is_some_and(|l| l.used.elapsed() >= POOL_IDLE || l.born.elapsed() >= MAX_AGE)
        {
            let old = local.take();
            drop(local);
            drop(old);
        } else if local.is_some() {
            left = true;
        }
    }
    left
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A server that answers each connection's first request (keep-alive)
    /// and closes the connection 50 ms later, as a server or proxy with a
    /// short idle timeout does; counts the requests it read.
    fn closing_when_idle() -> (String, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                if conn.read(&mut buf).unwrap_or(0) == 0 {
                    continue;
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        (addr, requests)
    }

    fn client(addr: &str) -> Client {
        let settings = vaultrs::client::VaultClientSettingsBuilder::default()
            .address(addr)
            .token("")
            .build()
            .unwrap();
        let credentials = Credentials::new(secrecy::SecretString::from("t".to_string()));
        Client::new(
            Arc::new(Nodes::new(vec![settings])),
            Arc::new(credentials),
            Duration::from_secs(5),
        )
    }

    /// Sends a KV v1 delete twice from one thread, the second time after
    /// the server closed the connection the first one left in the pool.
    fn twice(repeat: Repeat) -> (Called<()>, usize) {
        let (addr, requests) = closing_when_idle();
        let client = client(&addr);
        let delete =
            |c: Arc<VaultClient>| async move { vaultrs::kv1::delete(&*c, "kv", "x").await };
        std::thread::spawn(move || {
            let first = client.call_tracked(&Deadline::per_request(), repeat, delete);
            assert!(first.result.is_ok(), "{:?}", first.result.err());
            std::thread::sleep(Duration::from_millis(200));
            let second = client.call_tracked(&Deadline::per_request(), repeat, delete);
            (second, requests.load(Ordering::SeqCst))
        })
        .join()
        .unwrap()
    }

    #[test]
    fn a_request_on_a_pooled_connection_the_server_closed_is_sent_again_on_a_new_one() {
        let (second, requests) = twice(Repeat::Again);
        assert!(second.result.is_ok(), "{:?}", second.result.err());
        assert!(second.uncertain, "the first copy may have been sent");
        assert_eq!(requests, 2, "the closed connection took no request");
    }

    #[test]
    fn a_write_that_must_not_be_sent_twice_is_unanswered_not_sent_again() {
        let (second, requests) = twice(Repeat::Once);
        assert!(
            matches!(second.result, Err(Error::Unanswered(_))),
            "{:?}",
            second.result.err()
        );
        assert_eq!(requests, 1);
    }
}
