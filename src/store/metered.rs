//! A store that counts and times every request for `--metrics`: the
//! outermost wrapper, so what it sees is what the core asked. It records
//! into the meter it is made with; with [`Meter::off`] each call costs
//! one branch more.

use crate::store::Deadline;
use std::time::Instant;

use super::{
    Health, Listing, Metadata, Permissions, Precondition, Revision, Secret, SecretData, SecretPath,
    SecretStore,
};
use crate::error::Result;
use crate::metrics::{self, Meter};

/// `S` with every request recorded.
pub struct Metered<S> {
    inner: S,
    meter: Meter,
}

impl<S> Metered<S> {
    /// Wraps `inner`, recording its requests with `meter`.
    pub fn new(inner: S, meter: Meter) -> Self {
        Metered { inner, meter }
    }

    /// Runs `call` and records it as a request of `op`.
    fn timed<T>(&self, op: &'static str, call: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.meter.is_on() {
            return call();
        }
        let started = Instant::now();
        let result = call();
        self.meter
            .store_request(op, metrics::outcome_of(&result), started.elapsed());
        result
    }
}

/// What is not a request (capabilities, the node, where a key comes
/// from, degraded layers…) is passed on as it is.
impl<S: SecretStore> super::Forwarding for Metered<S> {
    type Inner = S;

    fn inner(&self) -> &S {
        &self.inner
    }

    fn list(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        self.timed("list", || self.inner.list(deadline, path))
    }
    fn read(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        self.timed("read", || self.inner.read(deadline, path))
    }
    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        self.timed("write", || self.inner.write(deadline, path, data, when))
    }
    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        self.timed("delete", || self.inner.delete(deadline, path))
    }
    fn permissions(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Permissions>> {
        self.timed("permissions", || self.inner.permissions(deadline, path))
    }
    fn read_version(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        version: u64,
    ) -> Result<Option<Secret>> {
        self.timed("read_version", || {
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
        self.timed("set_metadata", || {
            self.inner.set_custom_metadata(deadline, path, name, value)
        })
    }
    fn set_description(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        value: Option<&str>,
    ) -> Result<()> {
        self.timed("set_metadata", || {
            self.inner.set_description(deadline, path, value)
        })
    }
    fn read_metadata(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Metadata>> {
        self.timed("read_metadata", || self.inner.read_metadata(deadline, path))
    }
    fn health(&self, deadline: &Deadline) -> Result<Health> {
        let health = self.timed("health", || self.inner.health(deadline));
        if let Ok(h) = &health {
            self.meter.token_ttl(h.credential_ttl);
        }
        health
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::memory::MemoryStore;
    use std::sync::Arc;

    #[test]
    fn each_request_is_counted_with_the_meter_it_was_made_with() {
        let store = MemoryStore::new();
        store.put("app/db", serde_json::json!({"PASSWORD": "x"}));
        let metrics = Arc::new(Metrics::new());
        let metered = Metered::new(store, Meter::to(metrics.clone()));
        let deadline = Deadline::per_request();
        metered
            .read(&deadline, &SecretPath::parse("app/db"))
            .expect("read");
        metered
            .read(&deadline, &SecretPath::parse("app/none"))
            .expect("read");
        let text = metrics.encode();
        assert!(
            text.contains(
                "secretfs_store_request_duration_seconds_count{op=\"read\",outcome=\"ok\"} 2"
            ),
            "{text}"
        );
        // Unmetered, the same store records nothing anywhere.
        let unmetered = Metered::new(MemoryStore::new(), Meter::off());
        unmetered
            .read(&deadline, &SecretPath::parse("app/db"))
            .expect("read");
        assert_eq!(metrics.encode(), text);
    }
}
