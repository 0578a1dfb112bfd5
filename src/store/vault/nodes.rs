//! The nodes of a Vault / OpenBao cluster the mount may talk to (one
//! address, or several for an HA cluster): which one is in use, what a
//! failed request says about the node that failed it, and how long to wait
//! before asking again while the cluster has no active node.
//!
//! A request goes to the node in use; a node that cannot be reached (the
//! connection fails, the request times out, the node is sealed) makes the
//! request move on to the next node, which becomes the one in use once it
//! answers. Answers are final (4xx, and 5xx other than the ones below),
//! except the ones a cluster gives while it has no active node (a standby's
//! redirect to the dead leader, "local node not active"): those are asked
//! again, with backoff and jitter, within the operation's deadline.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vaultrs::client::VaultClientSettings;
use vaultrs::error::ClientError;

use super::error::status;

/// Every node's client settings (without a token) and the one in use.
pub struct Nodes {
    settings: Vec<VaultClientSettings>,
    in_use: AtomicUsize,
    /// Per node, until when (ms since `epoch`) it is tried after the
    /// others: it failed to take a request, or is behind what the store
    /// acknowledged.
    avoid_until: Vec<AtomicU64>,
    epoch: Instant,
    /// Unique within the process: the clients of every store made over
    /// these nodes (one per SOURCE or layer) share a thread's connections.
    id: usize,
}

static NEXT_NODES_ID: AtomicUsize = AtomicUsize::new(1);

/// How long a node that failed or was found behind is tried after the others.
const AVOID_FOR: Duration = Duration::from_secs(5);

impl Nodes {
    /// The nodes, each with its settings; the first is in use.
    pub fn new(settings: Vec<VaultClientSettings>) -> Self {
        assert!(!settings.is_empty(), "no Vault address");
        Nodes {
            avoid_until: settings.iter().map(|_| AtomicU64::new(0)).collect(),
            settings,
            in_use: AtomicUsize::new(0),
            epoch: Instant::now(),
            id: NEXT_NODES_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// What tells these nodes from any other set in the process.
    pub fn id(&self) -> usize {
        self.id
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.settings.len()
    }

    /// The node in use.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Node `i`'s settings.
    pub fn settings(&self, i: usize) -> &VaultClientSettings {
        &self.settings[i]
    }

    /// Node `i`'s address, as given.
    pub fn addr(&self, i: usize) -> String {
        let a = self.settings[i].address.as_str();
        a.strip_suffix('/').unwrap_or(a).to_string()
    }

    /// The settings of the node in use.
    pub fn settings_in_use(&self) -> &VaultClientSettings {
        &self.settings[self.in_use()]
    }

    /// Node `i` answered a request that started when `first` was in use:
    /// `i` is in use from now on, unless another request moved on since
    /// (a request that started before a move must not undo it).
    pub fn answered(&self, first: usize, i: usize) {
        if i == first {
            return;
        }
        if self
            .in_use
            .compare_exchange(first, i, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                node = %self.addr(i),
                was = %self.addr(first),
                "store: now using another node of the cluster"
            );
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn avoided(&self, i: usize) -> bool {
        self.avoid_until[i].load(Ordering::Relaxed) > self.now_ms()
    }

    /// Node `i` failed to take a request: tried after the others for a while.
    pub fn avoid(&self, i: usize) {
        let until = self.now_ms() + AVOID_FOR.as_millis() as u64;
        self.avoid_until[i].store(until, Ordering::Relaxed);
    }

    /// Node `i` is behind what the store is known to hold (a node that came
    /// back while the cluster had no leader can stay behind for long): it
    /// is tried after the others for a while, and the first of those is in
    /// use from now on, unless another request moved on since.
    pub fn behind(&self, i: usize) {
        self.avoid(i);
        let Some(next) = (0..self.len()).find(|&j| j != i && !self.avoided(j)) else {
            return;
        };
        if self
            .in_use
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                node = %self.addr(next),
                was = %self.addr(i),
                "store: the node in use is behind what we wrote: using another"
            );
        }
    }

    /// Starts on node `i`, the first that answered at start (the ones
    /// before it did not: each was warned of).
    pub fn start_on(&self, i: usize) {
        self.in_use.store(i, Ordering::Relaxed);
        if i > 0 {
            tracing::info!(node = %self.addr(i), "store: the nodes given before this one did not answer: this one is in use");
        }
    }

    /// Puts node `i`, given before the one in use, back in use: it serves
    /// again.
    pub fn prefer(&self, i: usize) {
        let before = self.in_use.swap(i, Ordering::Relaxed);
        if before != i {
            tracing::info!(node = %self.addr(i), was = %self.addr(before), "store: a node given before the one in use serves again: back to it, now in use");
        }
    }

    /// The nodes in the order to try them: the one in use first, then the
    /// others in the order given; nodes that failed or were found behind
    /// lately come last.
    pub fn order(&self) -> Vec<usize> {
        let first = self.in_use();
        let rest = (0..self.len()).filter(|&i| i != first);
        let mut order: Vec<usize> = std::iter::once(first).chain(rest).collect();
        order.sort_by_key(|&i| self.avoided(i));
        order
    }
}

/// How often the nodes before the one in use are asked whether they are
/// back, and how many answers in a row bring one back into use: a node
/// just unsealed answers reads at once but cannot take writes for some
/// seconds (measured: about 9).
const PREFER_EVERY: Duration = Duration::from_secs(5);
const PREFER_AFTER: u32 = 3;

/// Prefers the first node given: while another is in use, asks those
/// before it every [`PREFER_EVERY`] whether they serve (active or standby,
/// unsealed) and brings back the first that did [`PREFER_AFTER`] times in a
/// row. Ends when the store is gone.
pub async fn prefer_first(nodes: std::sync::Weak<Nodes>) {
    let mut healthy = Vec::<u32>::new();
    // Built once (reading CA and client-certificate files, TLS set-up),
    // not on the runtime's threads every few seconds.
    let mut clients: Vec<Option<vaultrs::client::VaultClient>> = Vec::new();
    loop {
        tokio::time::sleep(PREFER_EVERY).await;
        let Some(nodes) = nodes.upgrade() else { return };
        healthy.resize(nodes.len(), 0);
        if clients.len() != nodes.len() {
            let settings: Vec<_> = (0..nodes.len())
                .map(|i| nodes.settings(i).clone())
                .collect();
            let built = tokio::task::spawn_blocking(move || {
                settings
                    .iter()
                    .map(|s| super::http::client_for(s, "").ok())
                    .collect::<Vec<_>>()
            })
            .await;
            clients = built.unwrap_or_default();
            if clients.len() != nodes.len() {
                continue;
            }
        }
        let in_use = nodes.in_use();
        for (i, count) in healthy.iter_mut().enumerate().take(in_use) {
            let serves = match &clients[i] {
                Some(c) => {
                    let answer =
                        tokio::time::timeout(Duration::from_secs(2), vaultrs::sys::health(c)).await;
                    match answer {
                        Ok(Ok(_)) => true,
                        // A standby (429; 473 a performance standby).
                        Ok(Err(e)) => matches!(status(&e), Some(429 | 473)),
                        Err(_) => false,
                    }
                }
                None => false,
            };
            *count = if serves { *count + 1 } else { 0 };
        }
        if let Some(first) = (0..in_use).find(|&i| healthy[i] >= PREFER_AFTER) {
            nodes.prefer(first);
            healthy.iter_mut().for_each(|h| *h = 0);
        }
    }
}

/// What a failed request says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection failed: to the node itself (it is down, the next
    /// node may answer), or to where the node redirected the request (a
    /// standby redirects writes to a dead leader: no leader). Which of the
    /// two, only asking the node tells: the transport error names the URL
    /// first asked either way. Nothing was sent.
    Unreachable,
    /// The node did not answer in time (the client's own timeout): the
    /// request may have reached it.
    Hung,
    /// The node did not take part: the next node may answer. `sent` when
    /// the request may have reached the node before it failed (a write
    /// may then have landed).
    Node {
        /// Whether the request may have reached the node.
        sent: bool,
    },
    /// The cluster has no active node at the moment (an election is under
    /// way): the same request may succeed a little later. Nothing landed.
    NoLeader,
    /// The node answered: final.
    Answer,
}

/// What the failure `e` of a request says.
pub fn classify(e: &ClientError) -> Failure {
    if let Some(transport) = reqwest_error(e) {
        if transport.is_connect() {
            return Failure::Unreachable;
        }
        if transport.is_timeout() {
            return Failure::Hung;
        }
        return Failure::Node { sent: true };
    }
    match status(e) {
        // Sealed (a restarted node), or a node that cannot serve at all.
        Some(503) => Failure::Node { sent: false },
        // Vault answers 500 for many things, a storage entry over Raft's
        // limit among them: only these messages say "no leader now", and
        // the body's text is all that tells them apart.
        Some(500) if no_leader_message(e) => Failure::NoLeader,
        Some(_) => Failure::Answer,
        None if matches!(e, ClientError::RestClientError { .. }) => Failure::Node { sent: true },
        None => Failure::Answer,
    }
}

/// Whether the request of `e` failed on its connection after it was made
/// and before any answer came: the connection was closed or reset under it
/// (`connection closed before message completed`, a reset), not refused,
/// not timed out. On a connection taken from the pool, that is what a
/// close by the server or a proxy while it was idle looks like.
pub fn connection_lost(e: &ClientError) -> bool {
    reqwest_error(e).is_some_and(|t| t.is_request() && !t.is_connect() && !t.is_timeout())
}

fn no_leader_message(e: &ClientError) -> bool {
    let ClientError::APIError { errors, .. } = e else {
        return false;
    };
    errors.iter().any(|m| {
        m.contains("active cluster node not found")
            || m.contains("local node not active")
            || m.contains("node not active")
            || m.contains("no leader")
    })
}

/// The transport error (reqwest's) inside a client error, if any.
fn reqwest_error(e: &ClientError) -> Option<&reqwest::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            return Some(r);
        }
        cause = c.source();
    }
    None
}

/// How long to wait before asking again after the `attempt`th (from 0)
/// "no active node" answer: 50 ms doubling to 800 ms, each with up to half
/// again of random jitter, so that the writers of many mounts do not come
/// back in step.
pub fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = Duration::from_millis(50) * 2u32.pow(attempt.min(4));
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = h.finish() % (base.as_millis() as u64 / 2 + 1);
    base + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::super::error::tests::api;
    use super::*;

    #[test]
    fn no_leader_answers_are_retried_and_other_500s_are_final() {
        let no_leader = api(
            500,
            &["local node not active but active cluster node not found"],
        );
        assert_eq!(classify(&no_leader), Failure::NoLeader);
        let too_big = api(500, &["raft: entry too large"]);
        assert_eq!(classify(&too_big), Failure::Answer);
        assert_eq!(
            classify(&api(503, &["Vault is sealed"])),
            Failure::Node { sent: false }
        );
        assert_eq!(classify(&api(403, &[])), Failure::Answer);
    }

    /// A server that answers every request with a redirect to `to`, as a
    /// standby whose leader died does.
    /// An address that refuses connections for as long as the returned
    /// socket lives: bound, so no other test (nor `redirecting`, which binds
    /// port 0 right after) can be given its port, but never listening. A
    /// listener bound and dropped frees its port, and the next bind may get
    /// it: that made the redirecting server redirect to itself.
    fn refusing() -> (std::os::fd::OwnedFd, String) {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor this function owns;
        // the address structures are sized as the kernel expects.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            use std::os::fd::AsRawFd;
            let rc = libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len);
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let mut len = len;
            let rc = libc::getsockname(fd.as_raw_fd(), (&raw mut addr).cast(), &mut len);
            assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
            let port = u16::from_be(addr.sin_port);
            (fd, format!("http://127.0.0.1:{port}"))
        }
    }

    fn redirecting(to: String) -> String {
        closing_after(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}/v1/secret/data/x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ))
    }

    #[test]
    fn a_refused_connection_is_unreachable_whether_to_the_node_or_where_it_redirected() {
        let (_held, dead) = refusing();
        let standby = redirecting(dead.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = |addr: &str| {
            let settings = vaultrs::client::VaultClientSettingsBuilder::default()
                .address(addr)
                .token("t")
                .build()
                .unwrap();
            vaultrs::client::VaultClient::new(settings).unwrap()
        };
        let data = std::collections::HashMap::from([("k", "v")]);
        for addr in [&standby, &dead] {
            let e = rt
                .block_on(vaultrs::kv2::set(&client(addr), "secret", "x", &data))
                .unwrap_err();
            assert_eq!(classify(&e), Failure::Unreachable, "{e:?}");
        }
    }

    /// A server that reads each request and then sends `answer` and closes.
    fn closing_after(answer: impl Into<String>) -> String {
        let answer = answer.into();
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn a_connection_closed_before_any_answer_is_lost_and_one_cut_mid_answer_is_not() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let read = |addr: &str| {
            let settings = vaultrs::client::VaultClientSettingsBuilder::default()
                .address(addr)
                .token("t")
                .build()
                .unwrap();
            let client = vaultrs::client::VaultClient::new(settings).unwrap();
            rt.block_on(vaultrs::sys::health(&client)).unwrap_err()
        };
        let unanswered = read(&closing_after(""));
        assert!(connection_lost(&unanswered), "{unanswered:?}");
        assert_eq!(classify(&unanswered), Failure::Node { sent: true });
        let cut = read(&closing_after(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"initialized\"",
        ));
        assert!(!connection_lost(&cut), "{cut:?}");
        let (_held, refused) = refusing();
        assert!(!connection_lost(&read(&refused)));
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(backoff(0) >= Duration::from_millis(50));
        assert!(backoff(0) <= Duration::from_millis(75));
        assert!(backoff(10) >= Duration::from_millis(800));
        assert!(backoff(10) <= Duration::from_millis(1200));
    }

    #[test]
    fn the_node_in_use_is_tried_first() {
        let s = |a: &str| {
            vaultrs::client::VaultClientSettingsBuilder::default()
                .address(a)
                .build()
                .unwrap()
        };
        let nodes = Nodes::new(vec![s("http://a:1"), s("http://b:2"), s("http://c:3")]);
        assert_eq!(nodes.order(), vec![0, 1, 2]);
        nodes.answered(0, 2);
        assert_eq!(nodes.order(), vec![2, 0, 1]);
        // A request that started on node 0 before the move does not undo it.
        nodes.answered(0, 1);
        assert_eq!(nodes.in_use(), 2);
        assert_eq!(nodes.addr(2), "http://c:3");
        // A node behind what we wrote is tried last, and left.
        nodes.behind(2);
        assert_eq!(nodes.in_use(), 0);
        assert_eq!(nodes.order(), vec![0, 1, 2]);
        nodes.behind(0);
        assert_eq!(nodes.in_use(), 1);
        assert_eq!(nodes.order(), vec![1, 0, 2]);
    }
}
