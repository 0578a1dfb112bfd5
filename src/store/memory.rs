//! An in-memory store for tests of the core: Vault's listing rules, call
//! counters and fault injection. Never used by the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{ListEntry, Listing, Secret, SecretPath, SecretStore};
use crate::error::{Error, Result};

/// Path → (data, version).
type Secrets = BTreeMap<String, (serde_json::Map<String, serde_json::Value>, u64)>;

/// Secrets kept in a map, listed the way Vault lists them.
#[derive(Default)]
pub struct MemoryStore {
    secrets: Mutex<Secrets>,
    fault: Mutex<Option<Error>>,
    delay: Mutex<Duration>,
    lists: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes a secret (a JSON object), as `bao kv put` would.
    pub fn put(&self, path: &str, data: serde_json::Value) {
        let map = match data {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let path = SecretPath::parse(path).as_str().to_string();
        let mut secrets = self.lock_secrets();
        let version = secrets.get(&path).map_or(1, |(_, v)| v + 1);
        secrets.insert(path, (map, version));
    }

    /// Deletes a secret.
    pub fn remove(&self, path: &str) {
        self.lock_secrets().remove(SecretPath::parse(path).as_str());
    }

    /// Makes every call fail with `err` until cleared with `None`.
    pub fn set_fault(&self, err: Option<Error>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = err;
    }

    /// Makes every call take at least `d` (to widen races in tests).
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }

    /// Number of LIST calls so far.
    pub fn list_calls(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }

    /// Number of WRITE calls so far (conflicts included).
    pub fn write_calls(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The data of a secret as stored, for assertions.
    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        self.lock_secrets()
            .get(SecretPath::parse(path).as_str())
            .map(|(d, _)| serde_json::Value::Object(d.clone()))
    }

    /// The version of a secret, for assertions.
    pub fn version(&self, path: &str) -> Option<u64> {
        self.lock_secrets()
            .get(SecretPath::parse(path).as_str())
            .map(|(_, v)| *v)
    }

    /// Number of READ calls so far.
    pub fn read_calls(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    fn lock_secrets(&self) -> std::sync::MutexGuard<'_, Secrets> {
        self.secrets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn before_call(&self) -> Result<()> {
        let delay = *self.delay.lock().unwrap_or_else(|p| p.into_inner());
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        match &*self.fault.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

impl SecretStore for MemoryStore {
    fn list(&self, path: &SecretPath) -> Result<Option<Listing>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.before_call()?;
        let prefix = if path.is_root() {
            String::new()
        } else {
            format!("{}/", path.as_str())
        };
        let mut names = BTreeSet::new();
        for key in self.lock_secrets().keys() {
            if let Some(rest) = key.strip_prefix(&prefix) {
                match rest.split_once('/') {
                    Some((folder, _)) => names.insert(format!("{folder}/")),
                    None => names.insert(rest.to_string()),
                };
            }
        }
        if names.is_empty() {
            return Ok(None);
        }
        Ok(Some(names.iter().map(|n| ListEntry::parse(n)).collect()))
    }

    fn read(&self, path: &SecretPath) -> Result<Option<Secret>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.before_call()?;
        Ok(self
            .lock_secrets()
            .get(path.as_str())
            .map(|(data, version)| Secret::from_json_map(data, Some(*version), None)))
    }

    fn write(
        &self,
        path: &SecretPath,
        data: &serde_json::Map<String, serde_json::Value>,
        cas: Option<u64>,
    ) -> Result<Option<u64>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.before_call()?;
        let mut secrets = self.lock_secrets();
        let current = secrets.get(path.as_str()).map_or(0, |(_, v)| *v);
        if cas.is_some_and(|c| c != current) {
            return Err(Error::CasConflict);
        }
        secrets.insert(path.as_str().to_string(), (data.clone(), current + 1));
        Ok(Some(current + 1))
    }

    fn delete(&self, path: &SecretPath) -> Result<()> {
        self.before_call()?;
        self.lock_secrets().remove(path.as_str());
        Ok(())
    }

    fn current_version(&self, path: &SecretPath) -> Result<Option<u64>> {
        self.before_call()?;
        Ok(self.lock_secrets().get(path.as_str()).map(|(_, v)| *v))
    }

    fn supports_cas(&self) -> bool {
        true
    }

    fn health(&self) -> Result<Option<Duration>> {
        self.before_call()?;
        Ok(None)
    }
}
