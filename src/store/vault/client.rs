//! Requests to the server: each FUSE worker thread has its own runtime
//! and client (one keep-alive connection per thread), every request runs
//! under the store's deadline, and the token in use is picked up when it
//! changes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::runtime::Handle;
use vaultrs::client::{VaultClient, VaultClientSettings};
use vaultrs::error::ClientError;

use super::auth::{self, Credentials};
use super::error::{status, to_error};
use crate::error::{Error, Result};

/// What requests need: the settings of every thread's client, the token
/// in use and the deadline.
pub struct Client {
    /// Settings for each calling thread's own client, but the token.
    pub settings: VaultClientSettings,
    /// The token in use (replaced when renewing is not enough).
    pub credentials: Arc<Credentials>,
    /// Distinguishes clients (tests may build several in one process).
    id: usize,
    /// Deadline of every request.
    pub timeout: Duration,
}

impl Client {
    /// A client for `settings` carrying the token of `credentials`.
    pub fn new(
        settings: VaultClientSettings,
        credentials: Arc<Credentials>,
        timeout: Duration,
    ) -> Self {
        Client {
            settings,
            credentials,
            id: NEXT_CLIENT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            timeout,
        }
    }

    /// Runs one request under the deadline; 404 is `Ok(None)`.
    ///
    /// Called from FUSE worker threads, which are not runtime threads: each
    /// gets its own single-threaded runtime and client (one keep-alive
    /// connection per thread), so a request never hops between threads —
    /// that hop costs more than the rest of a cold read.
    pub fn call<T, Fut>(&self, make: impl FnOnce(Arc<VaultClient>) -> Fut) -> Result<Option<T>>
    where
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        // This request's share of the operation's deadline.
        let Some(deadline) = crate::store::deadline::left(self.timeout) else {
            return Err(Error::OutOfTime(self.timeout));
        };
        let started = std::time::Instant::now();
        let outcome = LOCAL.with(|cell| {
            let mut slot = cell.borrow_mut();
            let generation = self.credentials.generation();
            if slot.as_ref().map(|l| (l.owner, l.generation)) != Some((self.id, generation)) {
                let token = self.credentials.token();
                *slot =
                    LocalClient::new((self.id, generation), &self.settings, token.expose_secret());
            }
            slot.as_ref().map(|l| {
                l.rt.block_on(async {
                    tokio::time::timeout(deadline, make(l.client.clone())).await
                })
                .ok()
            })
        });
        let Some(outcome) = outcome else {
            return Err(Error::Unavailable("cannot start an I/O runtime".into()));
        };
        tracing::trace!(
            micros = started.elapsed().as_micros() as u64,
            "store request"
        );
        match outcome {
            // A request cut short by its operation's deadline says nothing
            // of the store; one that had the whole timeout says it hangs.
            None if deadline < self.timeout => Err(Error::OutOfTime(self.timeout)),
            None => Err(Error::Timeout(self.timeout)),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(e)) if status(&e) == Some(404) => Ok(None),
            Some(Err(e)) => Err(to_error(&e)),
        }
    }
}

/// A calling thread's own runtime and client.
struct LocalClient {
    /// Which client it belongs to.
    owner: usize,
    /// Which of the store's tokens it carries.
    generation: u64,
    rt: tokio::runtime::Runtime,
    client: Arc<VaultClient>,
}

impl LocalClient {
    fn new(
        (owner, generation): (usize, u64),
        settings: &VaultClientSettings,
        token: &str,
    ) -> Option<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| tracing::error!(error = %e, "cannot build a thread's I/O runtime"))
            .ok()?;
        let client = auth::client_for(settings, token)
            .map_err(|e| tracing::error!(error = %e, "cannot build a thread's Vault client"))
            .ok()?;
        Some(LocalClient {
            owner,
            generation,
            rt,
            client: Arc::new(client),
        })
    }
}

thread_local! {
    static LOCAL: std::cell::RefCell<Option<LocalClient>> = const { std::cell::RefCell::new(None) };
}

/// Distinguishes clients (tests may build several in one process).
static NEXT_CLIENT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Runs `fut` on the runtime from a blocking thread; `None` past the deadline.
pub fn with_deadline<T>(
    rt: &Handle,
    deadline: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    rt.block_on(async move { tokio::time::timeout(deadline, fut).await })
        .ok()
}
