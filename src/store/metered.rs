//! A store that counts and times every request for `--metrics`: the
//! outermost wrapper, so what it sees is what the core asked. Without
//! metrics turned on each call costs one atomic load more.

use crate::store::Deadline;
use std::time::Instant;

use super::{
    Capabilities, Health, Listing, Permissions, Precondition, Revision, Secret, SecretData,
    SecretPath, SecretStore,
};
use crate::error::Result;
use crate::metrics;

/// `S` with every request recorded.
pub struct Metered<S> {
    inner: S,
}

impl<S> Metered<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Metered { inner }
    }
}

/// Runs `call` and records it as a request of `op`.
fn timed<T>(op: &'static str, call: impl FnOnce() -> Result<T>) -> Result<T> {
    if metrics::get().is_none() {
        return call();
    }
    let started = Instant::now();
    let result = call();
    metrics::record_store_request(op, metrics::outcome_of(&result), started.elapsed());
    result
}

impl<S: SecretStore> SecretStore for Metered<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn list(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        timed("list", || self.inner.list(deadline, path))
    }
    fn read(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        timed("read", || self.inner.read(deadline, path))
    }
    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        timed("write", || self.inner.write(deadline, path, data, when))
    }
    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        timed("delete", || self.inner.delete(deadline, path))
    }
    fn permissions(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Permissions>> {
        timed("permissions", || self.inner.permissions(deadline, path))
    }
    fn node(&self) -> Option<String> {
        self.inner.node()
    }
    fn read_version(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        version: u64,
    ) -> Result<Option<Secret>> {
        timed("read_version", || {
            self.inner.read_version(deadline, path, version)
        })
    }
    fn set_custom_metadata(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        timed("set_metadata", || {
            self.inner.set_custom_metadata(deadline, path, name, value)
        })
    }
    fn origin(&self, deadline: &Deadline, path: &SecretPath, key: &str) -> Result<Option<String>> {
        self.inner.origin(deadline, path, key)
    }
    fn rereads_after_write(&self) -> bool {
        self.inner.rereads_after_write()
    }
    fn health(&self, deadline: &Deadline) -> Result<Health> {
        let health = timed("health", || self.inner.health(deadline));
        if let Ok(h) = &health {
            metrics::record_token_ttl(h.credential_ttl);
        }
        health
    }
}
