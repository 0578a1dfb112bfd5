//! An in-memory store for tests of the core: Vault's listing rules, KV v1
//! or KV v2 behaviour (versions, check-and-set, soft delete and undelete),
//! call counters, and faults for every call or for the calls on one path.
//! Never used by the binary, nor built into it: compiled for the crate's
//! unit tests and with the `memory-store` feature, which the integration
//! tests turn on (Cargo.toml's dev-dependency on this crate itself).

use crate::store::Deadline;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Capabilities, Health, ListEntry, Listing, Permissions, Precondition, Revision, Secret,
    SecretData, SecretPath, SecretStore,
};
use crate::error::{Error, Result};

type Data = serde_json::Map<String, serde_json::Value>;

/// Which KV engine the store behaves like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// No versions, no check-and-set, hard deletes.
    V1,
    /// Versions, check-and-set, soft deletes.
    V2,
}

/// One secret as the store keeps it.
#[derive(Clone)]
struct Stored {
    data: Data,
    /// The latest version (KV v2; on KV v1 it only counts writes).
    version: u64,
    /// The latest version is soft-deleted (KV v2): reads say "no such
    /// secret", listings still name it, `undelete` brings it back.
    deleted: bool,
    /// Every version's data (KV v2); `None` once deleted or destroyed.
    history: BTreeMap<u64, Option<Data>>,
    /// Custom metadata (KV v2).
    custom: BTreeMap<String, String>,
}

impl Stored {
    /// The next version of what `before` held: `data`, live.
    fn next(before: Option<&Stored>, data: Data) -> Stored {
        let version = before.map_or(0, |s| s.version) + 1;
        let mut history = before.map(|s| s.history.clone()).unwrap_or_default();
        history.insert(version, Some(data.clone()));
        Stored {
            data,
            version,
            deleted: false,
            history,
            custom: before.map(|s| s.custom.clone()).unwrap_or_default(),
        }
    }
}

/// Which calls a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Folder listings.
    List,
    /// Secret reads (and version lookups).
    Read,
    /// Writes and deletes.
    Write,
    /// Every call.
    Any,
}

/// Which paths a fault applies to.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every path.
    Everywhere,
    /// This path only.
    At(&'a str),
    /// This path and every path below it.
    Under(&'a str),
}

enum Paths {
    All,
    At(SecretPath),
    Under(SecretPath),
}

struct Fault {
    call: Call,
    paths: Paths,
    error: Error,
    when: When,
}

/// When a fault strikes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    /// Instead of the call.
    Before,
    /// After the call took effect: its answer is lost.
    After,
    /// After the call took effect, and from then on every call fails.
    AfterThenHang,
}

impl Paths {
    fn of(scope: Scope<'_>) -> Paths {
        match scope {
            Scope::Everywhere => Paths::All,
            Scope::At(p) => Paths::At(SecretPath::parse(p)),
            Scope::Under(p) => Paths::Under(SecretPath::parse(p)),
        }
    }

    fn hold(&self, path: &SecretPath) -> bool {
        match self {
            Paths::All => true,
            Paths::At(p) => path == p,
            Paths::Under(p) => {
                path == p
                    || p.is_root()
                    || path
                        .as_str()
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }
}

impl Fault {
    fn applies(&self, call: Call, path: &SecretPath) -> bool {
        (self.call == Call::Any || self.call == call) && self.paths.hold(path)
    }
}

/// Secrets kept in a map, listed the way Vault lists them.
pub struct MemoryStore {
    kv: Engine,
    secrets: Mutex<BTreeMap<SecretPath, Stored>>,
    faults: Mutex<Vec<Fault>>,
    delay: Mutex<Duration>,
    /// Each call's own deadline, as a real store's request timeout.
    timeout: Mutex<Option<Duration>>,
    /// What the credential may do, as a policy would say it: the first
    /// restriction whose scope holds a path decides (none: everything).
    /// A restriction holds the store to it, as Vault enforces a policy.
    policy: Mutex<Vec<(Paths, Option<Permissions>)>>,
    permission_asks: AtomicU64,
    lists: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    versions: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::kv2()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    /// An empty KV v2 store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store behaving like a KV v1 engine.
    pub fn kv1() -> Self {
        MemoryStore::with_engine(Engine::V1)
    }

    /// An empty store behaving like a KV v2 engine.
    pub fn kv2() -> Self {
        MemoryStore::with_engine(Engine::V2)
    }

    fn with_engine(kv: Engine) -> Self {
        MemoryStore {
            kv,
            secrets: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(Vec::new()),
            delay: Mutex::new(Duration::ZERO),
            timeout: Mutex::new(None),
            policy: Mutex::new(Vec::new()),
            permission_asks: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            versions: AtomicU64::new(0),
        }
    }

    /// Writes a secret (a JSON object), as `bao kv put` would.
    pub fn put(&self, path: &str, data: serde_json::Value) {
        let data = match data {
            serde_json::Value::Object(m) => m,
            _ => Data::new(),
        };
        let mut secrets = lock(&self.secrets);
        let path = SecretPath::parse(path);
        let next = Stored::next(secrets.get(&path), data);
        secrets.insert(path, next);
    }

    /// Deletes version `version` of a secret (`bao kv delete -versions=N`):
    /// it no longer reads; the latest too when it is that one.
    pub fn delete_version(&self, path: &str, version: u64) {
        if let Some(s) = lock(&self.secrets).get_mut(&SecretPath::parse(path)) {
            s.history.insert(version, None);
            if s.version == version {
                s.deleted = true;
            }
        }
    }

    /// Sets a custom metadata entry, as `bao kv metadata put -custom-metadata` does.
    pub fn put_custom_metadata(&self, path: &str, name: &str, value: &str) {
        if let Some(s) = lock(&self.secrets).get_mut(&SecretPath::parse(path)) {
            s.custom.insert(name.to_string(), value.to_string());
        }
    }

    /// A secret's custom metadata.
    pub fn custom_metadata(&self, path: &str) -> BTreeMap<String, String> {
        lock(&self.secrets)
            .get(&SecretPath::parse(path))
            .map(|s| s.custom.clone())
            .unwrap_or_default()
    }

    /// Deletes a secret as `bao kv delete` does: a soft delete of the latest
    /// version on KV v2 (still listed, `undelete` reverses it), gone on KV v1.
    pub fn remove(&self, path: &str) {
        self.delete_at(&SecretPath::parse(path));
    }

    /// Reverses a soft delete (`bao kv undelete` of the latest version).
    pub fn undelete(&self, path: &str) {
        if let Some(s) = lock(&self.secrets).get_mut(&SecretPath::parse(path)) {
            s.deleted = false;
            s.history.insert(s.version, Some(s.data.clone()));
        }
    }

    /// Removes a secret and all its versions (`bao kv metadata delete`).
    pub fn destroy(&self, path: &str) {
        lock(&self.secrets).remove(&SecretPath::parse(path));
    }

    /// Makes every call fail with `err` until cleared with `None`.
    pub fn set_fault(&self, err: Option<Error>) {
        let mut faults = lock(&self.faults);
        faults.clear();
        if let Some(error) = err {
            faults.push(Fault {
                call: Call::Any,
                paths: Paths::All,
                error,
                when: When::Before,
            });
        }
    }

    /// Makes `call`s on the paths of `scope` fail with `err`, on top of
    /// the faults already set (the first one set that applies wins).
    pub fn fail(&self, call: Call, scope: Scope<'_>, err: Error) {
        self.add_fault(call, scope, err, When::Before);
    }

    /// Makes writes on the paths of `scope` take effect and then fail with
    /// `err`: the answer is lost on its way back, as when a request times
    /// out after the server applied it.
    pub fn lose_write_answers(&self, scope: Scope<'_>, err: Error) {
        self.add_fault(Call::Write, scope, err, When::After);
    }

    /// Makes the next write on the paths of `scope` take effect and fail
    /// with `err`, and every call after it fail with `err` too (the store
    /// hung right after applying it), until [`MemoryStore::heal`].
    pub fn hang_after_write(&self, scope: Scope<'_>, err: Error) {
        self.add_fault(Call::Write, scope, err, When::AfterThenHang);
    }

    fn add_fault(&self, call: Call, scope: Scope<'_>, error: Error, when: When) {
        let paths = Paths::of(scope);
        lock(&self.faults).push(Fault {
            call,
            paths,
            error,
            when,
        });
    }

    /// The error a call that took effect answers instead (its answer lost).
    fn after_call(&self, call: Call, path: &SecretPath) -> Result<()> {
        let mut faults = lock(&self.faults);
        let Some(f) = faults
            .iter()
            .find(|f| f.when != When::Before && f.applies(call, path))
        else {
            return Ok(());
        };
        let (error, hang) = (f.error.clone(), f.when == When::AfterThenHang);
        if hang {
            faults.insert(
                0,
                Fault {
                    call: Call::Any,
                    paths: Paths::All,
                    error: error.clone(),
                    when: When::Before,
                },
            );
        }
        Err(error)
    }

    /// Clears every fault.
    pub fn heal(&self) {
        lock(&self.faults).clear();
    }

    /// Makes every call take at least `d` (to widen races in tests).
    pub fn set_delay(&self, d: Duration) {
        *lock(&self.delay) = d;
    }

    /// Gives each call a deadline, as a real store's request timeout: a
    /// call that would take longer (see [`MemoryStore::set_delay`]) fails,
    /// and calls of one operation share it (`store::deadline`).
    pub fn set_timeout(&self, d: Duration) {
        *lock(&self.timeout) = Some(d);
    }

    /// Lets the credential do only what `may` says on the paths of
    /// `scope` (on top of earlier restrictions; the first that applies
    /// wins), as a Vault policy would: writes and deletes it forbids fail
    /// with [`Error::PermissionDenied`], and [`SecretStore::permissions`]
    /// says so. With `may` `None` the store enforces it but cannot say it
    /// (an old server, a policy that forbids asking).
    pub fn restrict(&self, scope: Scope<'_>, may: Option<Permissions>) {
        lock(&self.policy).push((Paths::of(scope), may));
    }

    /// Lifts every restriction [`MemoryStore::restrict`] set.
    pub fn unrestrict(&self) {
        lock(&self.policy).clear();
    }

    /// Number of permission questions so far.
    pub fn permission_asks(&self) -> u64 {
        self.permission_asks.load(Ordering::SeqCst)
    }

    /// What the credential may do at `path` (`None`: a restriction that
    /// cannot be told), and whether any restriction applies.
    fn policy_at(&self, path: &SecretPath) -> Option<Option<Permissions>> {
        lock(&self.policy)
            .iter()
            .find(|(paths, _)| paths.hold(path))
            .map(|(_, may)| *may)
    }

    /// Fails as Vault does when the policy forbids the change.
    fn enforce(&self, path: &SecretPath, allowed: impl Fn(&Permissions) -> bool) -> Result<()> {
        match self.policy_at(path) {
            Some(Some(p)) if allowed(&p) => Ok(()),
            // A restriction that cannot be told forbids every change.
            Some(_) => Err(Error::PermissionDenied(
                "1 error occurred: permission denied".into(),
            )),
            None => Ok(()),
        }
    }

    /// Number of LIST calls so far.
    pub fn list_calls(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }

    /// Number of READ calls so far.
    pub fn read_calls(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Number of WRITE calls so far (conflicts and failures included).
    pub fn write_calls(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Number of versions written through the trait (`put` not counted):
    /// writes that succeeded.
    pub fn versions_written(&self) -> u64 {
        self.versions.load(Ordering::SeqCst)
    }

    /// The live data of a secret as stored (`None` when absent or deleted).
    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        lock(&self.secrets)
            .get(&SecretPath::parse(path))
            .filter(|s| !s.deleted)
            .map(|s| serde_json::Value::Object(s.data.clone()))
    }

    /// The latest version of a secret, deleted or not.
    pub fn version(&self, path: &str) -> Option<u64> {
        lock(&self.secrets)
            .get(&SecretPath::parse(path))
            .map(|s| s.version)
    }

    /// Every secret with live data: path → data, for comparing whole stores.
    pub fn snapshot(&self) -> BTreeMap<String, serde_json::Value> {
        lock(&self.secrets)
            .iter()
            .filter(|(_, s)| !s.deleted)
            .map(|(p, s)| {
                (
                    p.as_str().to_string(),
                    serde_json::Value::Object(s.data.clone()),
                )
            })
            .collect()
    }

    fn before_call(&self, deadline: &Deadline, call: Call, path: &SecretPath) -> Result<()> {
        let delay = *lock(&self.delay);
        if let Some(timeout) = *lock(&self.timeout) {
            let Some(limit) = deadline.left(timeout) else {
                return Err(Error::OutOfTime(timeout));
            };
            if delay >= limit {
                std::thread::sleep(limit);
                return Err(if limit < timeout {
                    Error::OutOfTime(timeout)
                } else {
                    Error::Timeout(timeout)
                });
            }
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let faults = lock(&self.faults);
        match faults
            .iter()
            .find(|f| f.when == When::Before && f.applies(call, path))
        {
            Some(f) => Err(f.error.clone()),
            None => Ok(()),
        }
    }

    fn delete_at(&self, path: &SecretPath) {
        let mut secrets = lock(&self.secrets);
        match self.kv {
            Engine::V2 => {
                if let Some(s) = secrets.get_mut(path) {
                    s.deleted = true;
                    s.history.insert(s.version, None);
                }
            }
            Engine::V1 => {
                secrets.remove(path);
            }
        }
    }
}

impl SecretStore for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        let v2 = self.kv == Engine::V2;
        Capabilities {
            check_and_set: v2,
            versions: v2,
            metadata: v2,
            descriptions: false,
            metadata_apart: false,
            soft_delete: v2,
            empty_secrets: v2,
        }
    }

    fn list(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.before_call(deadline, Call::List, path)?;
        let prefix = if path.is_root() {
            String::new()
        } else {
            format!("{}/", path.as_str())
        };
        // KV v2 lists soft-deleted secrets too (their metadata remains).
        let mut entries = BTreeSet::new();
        for key in lock(&self.secrets).keys() {
            if let Some(rest) = key.as_str().strip_prefix(&prefix) {
                match rest.split_once('/') {
                    Some((folder, _)) => entries.insert((folder.to_string(), true)),
                    None => entries.insert((rest.to_string(), false)),
                };
            }
        }
        if entries.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            entries
                .into_iter()
                .map(|(name, folder)| ListEntry { name, folder })
                .collect(),
        ))
    }

    fn read(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.before_call(deadline, Call::Read, path)?;
        let v2 = self.kv == Engine::V2;
        let revision = |s: &Stored| v2.then(|| Revision::new(s.version.to_string()));
        Ok(lock(&self.secrets)
            .get(path)
            .filter(|s| !s.deleted)
            .map(|s| {
                let mut secret = Secret::from_json_map(&s.data, revision(s), None);
                if v2 {
                    secret.custom_metadata = s.custom.clone();
                }
                secret
            }))
    }

    fn read_version(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        version: u64,
    ) -> Result<Option<Secret>> {
        if self.kv == Engine::V1 {
            return Err(Error::NotSupported("KV v1 keeps no versions"));
        }
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.before_call(deadline, Call::Read, path)?;
        Ok(lock(&self.secrets).get(path).and_then(|s| {
            let data = s.history.get(&version)?.as_ref()?;
            let mut secret =
                Secret::from_json_map(data, Some(Revision::new(version.to_string())), None);
            secret.custom_metadata = s.custom.clone();
            Some(secret)
        }))
    }

    fn set_custom_metadata(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        if self.kv == Engine::V1 {
            return Err(Error::NotSupported("KV v1 keeps no metadata"));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.before_call(deadline, Call::Write, path)?;
        let mut secrets = lock(&self.secrets);
        let s = secrets.get_mut(path).ok_or(Error::NotFound)?;
        match value {
            Some(v) => s.custom.insert(name.to_string(), v.to_string()),
            None => s.custom.remove(name),
        };
        Ok(())
    }

    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.before_call(deadline, Call::Write, path)?;
        let exists = lock(&self.secrets).get(path).is_some_and(|s| !s.deleted);
        self.enforce(path, |p| if exists { p.update } else { p.create })?;
        let mut secrets = lock(&self.secrets);
        let current = secrets.get(path);
        let holds = match when {
            _ if self.kv == Engine::V1 => true,
            Precondition::Any => true,
            Precondition::Absent => current.is_none_or(|s| s.deleted),
            Precondition::At(r) => {
                current.is_some_and(|s| !s.deleted && s.version.to_string() == r.as_str())
            }
        };
        if !holds {
            return Err(Error::CasConflict);
        }
        if data.is_empty() && self.kv == Engine::V1 {
            // As OpenBao's KV v1 answers (HTTP 400).
            return Err(Error::Invalid("missing data fields".into()));
        }
        let data: Data = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_json()))
            .collect();
        let next = Stored::next(current, data);
        let version = next.version;
        secrets.insert(path.clone(), next);
        self.versions.fetch_add(1, Ordering::SeqCst);
        drop(secrets);
        self.after_call(Call::Write, path)?;
        Ok((self.kv == Engine::V2).then(|| Revision::new(version.to_string())))
    }

    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        self.before_call(deadline, Call::Write, path)?;
        self.enforce(path, |p| p.delete)?;
        self.delete_at(path);
        Ok(())
    }

    fn health(&self, deadline: &Deadline) -> Result<Health> {
        self.before_call(deadline, Call::Any, &SecretPath::root())?;
        Ok(Health::default())
    }

    fn permissions(&self, _deadline: &Deadline, path: &SecretPath) -> Result<Option<Permissions>> {
        self.permission_asks.fetch_add(1, Ordering::SeqCst);
        Ok(match self.policy_at(path) {
            None => Some(Permissions::all()),
            Some(may) => may,
        })
    }
}
