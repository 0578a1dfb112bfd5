//! The Vault / OpenBao implementation of [`SecretStore`], over `vaultrs`:
//! KV v1 and v2 operations here; connecting (`connect`), requests under a
//! deadline (`client`), the nodes of a cluster and failing over between
//! them (`nodes`), tokens and logins (`auth`), the HTTP client and its
//! connections (`http`) and the mapping of Vault's answers to errors
//! (`error`) in modules of their own.
//!
//! Read-your-writes on a cluster: a standby answers reads from its own
//! copy, a little behind the active node. The store remembers, per secret,
//! the least KV v2 version the store is known to hold (the one we wrote,
//! or one past the version a check-and-set write was refused at). A read
//! that comes back older is asked again (on the next node once this one
//! has been behind for longer than a standby lags) until the operation's
//! deadline, then fails rather than answer older than what the store
//! acknowledged; one that finds no secret at all is taken as deleted after
//! a moment. So the re-read after a conflict sees what the conflict was
//! about. (OpenBao's `X-Vault-Index` header would do this for any request,
//! but vaultrs does not give response headers back.)

pub mod auth;
mod client;
mod connect;
pub mod error;
mod http;
mod nodes;

use crate::store::Deadline;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};

pub use connect::{Session, VaultSettings};

use super::{
    Capabilities, Health, ListEntry, Listing, Permissions, Precondition, Revision, Secret,
    SecretData, SecretPath, SecretStore,
};
use crate::error::{Error, Result};
use client::{Client, Repeat};

/// The KV engine version of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvVersion {
    /// KV v1: no versions, no check-and-set.
    V1,
    /// KV v2: versioned, check-and-set, soft deletes.
    V2,
}

/// Where a SOURCE lives: its KV mount and the folder under it.
#[derive(Debug, Clone)]
pub struct ResolvedSource {
    /// The KV mount path, without slashes (`secret`, `team/kv`).
    pub mount: String,
    /// The folder inside the mount that becomes the filesystem root.
    pub folder: SecretPath,
    /// KV engine version.
    pub version: KvVersion,
}

/// A KV mount on a Vault or OpenBao server (or cluster).
pub struct VaultStore {
    client: Client,
    source: ResolvedSource,
    /// Where the token came from (`auth::Login::source`), for the log.
    token_source: String,
    /// Per secret, the least version the store is known to hold.
    known: Mutex<HashMap<SecretPath, u64>>,
}

/// How long a read that finds no secret waits for a standby to catch up
/// with a version the store is known to hold (measured lag: 77 ms median,
/// 113 ms at most) before taking it as deleted since. An older version is
/// waited out for the whole deadline: a cluster without a leader keeps
/// every standby behind what the dead leader acknowledged.
const CATCH_UP: Duration = Duration::from_millis(1500);

/// How long a node may stay behind a version we know of before reads go
/// to another node (a standby's lag was 113 ms at most).
const BEHIND: Duration = Duration::from_millis(300);

/// How many secrets' known versions are remembered at most (a cluster
/// catches up in well under a second: the map is cleared when full).
const KNOWN_MAX: usize = 4096;

impl VaultStore {
    /// The mount, folder and KV version the SOURCE resolved to.
    pub fn source(&self) -> &ResolvedSource {
        &self.source
    }

    /// Where the token came from: `VAULT_TOKEN`, `--token-file PATH`, ...
    pub fn token_source(&self) -> &str {
        &self.token_source
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<SecretPath, u64>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the store holds at least `version` of `path`.
    fn holds(&self, path: &SecretPath, version: u64) {
        let mut known = self.known();
        if known.len() >= KNOWN_MAX {
            known.clear();
        }
        let v = known.entry(path.clone()).or_insert(0);
        *v = (*v).max(version);
    }
}

/// One key of a LIST answer: `name/` is a folder, `name` a secret.
fn list_entry(raw: &str) -> ListEntry {
    match raw.strip_suffix('/') {
        Some(name) => ListEntry {
            name: name.to_string(),
            folder: true,
        },
        None => ListEntry {
            name: raw.to_string(),
            folder: false,
        },
    }
}

/// A KV v2 version number as a revision, and back.
fn revision(version: u64) -> Revision {
    Revision::new(version.to_string())
}

fn version_of(r: &Revision) -> Result<u32> {
    r.as_str()
        .parse()
        .map_err(|_| Error::Protocol(format!("{r} is not a KV v2 version")))
}

impl VaultStore {
    /// A KV v2 write of `data` with check-and-set `cas` (0: no version yet).
    fn kv2_write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        cas: Option<u32>,
    ) -> Result<u64> {
        let mount = self.source.mount.as_str();
        let called = match cas {
            Some(cas) => self
                .client
                .call_tracked(deadline, Repeat::Again, |c| async move {
                    vaultrs::kv2::set_with_options(
                        &*c,
                        mount,
                        path.as_str(),
                        data,
                        SetSecretRequestOptions { cas },
                    )
                    .await
                }),
            None => self
                .client
                .call_tracked(deadline, Repeat::Once, |c| async move {
                    vaultrs::kv2::set(&*c, mount, path.as_str(), data).await
                }),
        };
        match (called.result, cas) {
            (Ok(meta), _) => {
                let version = meta
                    .map(|m| m.version)
                    .ok_or_else(|| Error::Protocol("a write answered 404".into()))?;
                self.holds(path, version);
                Ok(version)
            }
            (Err(Error::CasConflict), Some(cas)) => {
                // The store holds a version past `cas`: perhaps ours, from
                // an attempt that reached a node that then failed.
                self.holds(path, u64::from(cas) + 1);
                if called.uncertain {
                    // Whether an earlier attempt landed: not knowing is
                    // not "never sent".
                    let landed = self
                        .landed(deadline, path, data, cas)
                        .map_err(|e| Error::Unanswered(e.to_string()))?;
                    if let Some(version) = landed {
                        tracing::info!(path = %path, version, "a write retried on another node had landed");
                        return Ok(version);
                    }
                }
                Err(Error::CasConflict)
            }
            // Sent, and the connection failed before an answer: it may
            // have landed (the writers find out, or say the outcome is
            // unknown).
            (Err(Error::Unavailable(why)), _) if called.uncertain => Err(Error::Unanswered(why)),
            (Err(e), _) => {
                if called.uncertain {
                    // Reported as a failure, yet it may have landed.
                    tracing::warn!(path = %path, error = %e, "write outcome unknown: an attempt reached a node that then failed");
                }
                Err(e)
            }
        }
    }

    /// Whether the version after `cas` of `path` holds `data`: the write
    /// that a failed attempt made (`Some(version)`).
    fn landed(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        cas: u32,
    ) -> Result<Option<u64>> {
        let Some(latest) = self.read(deadline, path)? else {
            return Ok(None);
        };
        let version = latest.revision.as_ref().map(version_of).transpose()?;
        Ok((version == Some(cas + 1) && latest.keys == *data).then_some(u64::from(cas) + 1))
    }

    /// Reads the latest version of a KV v2 secret, or version `version`:
    /// `None` when there is none, or it is deleted or destroyed.
    fn kv2_read(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        version: Option<u64>,
    ) -> Result<Option<Secret>> {
        let mount = self.source.mount.as_str();
        // Made anew for each node tried.
        let Some(resp) = self.client.call(deadline, |c| async move {
            let request = ReadSecretRequest {
                mount: mount.to_string(),
                path: path.as_str().to_string(),
                version,
            };
            vaultrs::api::exec_with_result(&*c, request).await
        })?
        else {
            return Ok(None);
        };
        if resp.metadata.destroyed || !resp.metadata.deletion_time.is_empty() {
            return Ok(None);
        }
        let modified = humantime::parse_rfc3339_weak(&resp.metadata.created_time).ok();
        let mut secret = secret_from(&resp.data, Some(revision(resp.metadata.version)), modified)?;
        secret.custom_metadata = resp
            .metadata
            .custom_metadata
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Some(secret))
    }

    /// The version a write "if absent" must name: KV v2 keeps counting the
    /// versions of a deleted secret, and check-and-set names the latest
    /// (deleted) one; `None` when the latest version is live after all.
    fn deleted_version(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<u32>> {
        let mount = self.source.mount.as_str();
        let Some(meta) = self.client.call(deadline, |c| async move {
            vaultrs::kv2::read_metadata(&*c, mount, path.as_str()).await
        })?
        else {
            return Ok(Some(0));
        };
        let latest = meta.versions.get(&meta.current_version.to_string());
        let gone = latest.is_none_or(|v| v.destroyed || !v.deletion_time.is_empty());
        if !gone {
            return Ok(None);
        }
        u32::try_from(meta.current_version)
            .map(Some)
            .map_err(|_| Error::Protocol("version out of range".into()))
    }
}

/// The requests behind [`SecretStore`]'s list, read, write and delete;
/// the trait's methods name the refused request's API path.
impl VaultStore {
    fn list_raw(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        let mount = self.source.mount.as_str();
        // A trailing slash lists the folder; Vault accepts an empty path for the root.
        let dir = format!("{}/", path.as_str());
        let dir = if path.is_root() { "" } else { dir.as_str() };
        let keys = match self.source.version {
            KvVersion::V2 => self.client.call(deadline, |c| async move {
                vaultrs::kv2::list(&*c, mount, dir).await
            })?,
            KvVersion::V1 => self
                .client
                .call(deadline, |c| async move {
                    vaultrs::kv1::list(&*c, mount, dir).await
                })?
                .map(|r| r.data.keys),
        };
        Ok(keys.map(|keys| keys.iter().map(|k| list_entry(k)).collect()))
    }

    fn read_raw(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        if path.is_root() {
            // No secret can live at a mount's root path.
            return Ok(None);
        }
        let mount = self.source.mount.as_str();
        match self.source.version {
            KvVersion::V2 => {
                let wanted = self.known().get(path).copied();
                let started = Instant::now();
                let mut pause = Duration::from_millis(10);
                let mut node = self.client.nodes.in_use();
                let mut on_node = Instant::now();
                loop {
                    let secret = self.kv2_read(deadline, path, None)?;
                    let Some(wanted) = wanted else {
                        return Ok(secret);
                    };
                    let version = secret
                        .as_ref()
                        .and_then(|s| s.revision.as_ref())
                        .map(version_of)
                        .transpose()?
                        .map(u64::from);
                    let caught_up = version.is_some_and(|v| v >= wanted);
                    let room = deadline
                        .left(self.client.timeout)
                        .is_some_and(|l| l > pause * 2);
                    let waited = started.elapsed();
                    // Missing for longer than a standby lags: deleted since
                    // (by someone else), and the store's answer stands.
                    let gone = version.is_none() && waited >= CATCH_UP;
                    if caught_up || gone {
                        let mut known = self.known();
                        if known.get(path).is_some_and(|&k| k <= wanted) {
                            known.remove(path);
                        }
                        return Ok(secret);
                    }
                    if !room || waited >= self.client.timeout {
                        // Older than what the store acknowledged: every node
                        // is behind (the cluster has had no leader since).
                        // Not an answer to give, nor an outage; the next read
                        // takes what the store says.
                        self.known().remove(path);
                        tracing::warn!(path = %path, wanted, ?version, "every node answers an older version than the store acknowledged");
                        return Err(Error::OutOfTime(self.client.timeout));
                    }
                    tracing::debug!(path = %path, wanted, ?version, "the node is behind a version we know of: reading again");
                    // Longer behind than a standby's lag: ask another node.
                    if on_node.elapsed() >= BEHIND && self.client.nodes.in_use() == node {
                        self.client.nodes.behind(node);
                    }
                    if self.client.nodes.in_use() != node {
                        node = self.client.nodes.in_use();
                        on_node = Instant::now();
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
            KvVersion::V1 => {
                match self.client.call(deadline, |c| async move {
                    vaultrs::kv1::get_raw(&*c, mount, path.as_str()).await
                })? {
                    None => Ok(None),
                    Some(resp) => secret_from(&resp.data, None, None).map(Some),
                }
            }
        }
    }

    fn write_raw(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        if path.is_root() {
            return Err(Error::Invalid(
                "a secret cannot live at the mount's root".into(),
            ));
        }
        let mount = self.source.mount.as_str();
        match self.source.version {
            KvVersion::V2 => {
                let version = match when {
                    Precondition::Any => self.kv2_write(deadline, path, data, None)?,
                    Precondition::At(r) => {
                        self.kv2_write(deadline, path, data, Some(version_of(r)?))?
                    }
                    Precondition::Absent => match self.kv2_write(deadline, path, data, Some(0)) {
                        // Absent may mean "deleted": name the deleted version.
                        Err(Error::CasConflict) => match self.deleted_version(deadline, path)? {
                            Some(cas) => self.kv2_write(deadline, path, data, Some(cas))?,
                            None => return Err(Error::CasConflict),
                        },
                        other => other?,
                    },
                };
                Ok(Some(revision(version)))
            }
            KvVersion::V1 => {
                let map: std::collections::HashMap<&str, &super::SecretValue> =
                    data.iter().map(|(k, v)| (k.as_str(), v)).collect();
                let map = &map;
                self.client.call(deadline, |c| async move {
                    vaultrs::kv1::set(&*c, mount, path.as_str(), map).await
                })?;
                Ok(None)
            }
        }
    }

    fn delete_raw(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        self.known().remove(path);
        let mount = self.source.mount.as_str();
        match self.source.version {
            KvVersion::V2 => self.client.call(deadline, |c| async move {
                vaultrs::kv2::delete_latest(&*c, mount, path.as_str()).await
            })?,
            KvVersion::V1 => self.client.call(deadline, |c| async move {
                vaultrs::kv1::delete(&*c, mount, path.as_str()).await
            })?,
        };
        Ok(())
    }

    /// A refusal (403) as the error of `op` on the API path of `path`,
    /// the one a policy names (`secret/data/app/db`, `secret/metadata/app/`);
    /// any other error as it is.
    fn refused(&self, e: Error, op: &str, path: &SecretPath) -> Error {
        let Error::PermissionDenied(why) = e else {
            return e;
        };
        let mount = self.source.mount.as_str();
        let rel = path.as_str();
        let api = match (self.source.version, op) {
            (KvVersion::V2, "list") if path.is_root() => format!("{mount}/metadata/"),
            (KvVersion::V2, "list") => format!("{mount}/metadata/{rel}/"),
            (KvVersion::V2, _) => format!("{mount}/data/{rel}"),
            (KvVersion::V1, "list") if path.is_root() => format!("{mount}/"),
            (KvVersion::V1, "list") => format!("{mount}/{rel}/"),
            (KvVersion::V1, _) => format!("{mount}/{rel}"),
        };
        Error::PermissionDenied(format!("{op} {api} refused ({why})"))
    }
}

impl SecretStore for VaultStore {
    fn capabilities(&self) -> Capabilities {
        let v2 = self.source.version == KvVersion::V2;
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
        self.list_raw(deadline, path)
            .map_err(|e| self.refused(e, "list", path))
    }

    fn read(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        self.read_raw(deadline, path)
            .map_err(|e| self.refused(e, "read", path))
    }

    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        self.write_raw(deadline, path, data, when)
            .map_err(|e| self.refused(e, "write", path))
    }

    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        self.delete_raw(deadline, path)
            .map_err(|e| self.refused(e, "delete", path))
    }

    fn read_version(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        version: u64,
    ) -> Result<Option<Secret>> {
        match self.source.version {
            // Vault numbers versions with an int64 and refuses a larger
            // number (HTTP 400): such a version never was, as 0 never is.
            KvVersion::V2 if version > 0 && version <= i64::MAX as u64 && !path.is_root() => {
                self.kv2_read(deadline, path, Some(version))
            }
            KvVersion::V2 => Ok(None),
            KvVersion::V1 => Err(Error::NotSupported("KV v1 keeps no versions")),
        }
    }

    /// Reads the metadata, changes one entry of custom_metadata, writes it
    /// back: Vault replaces custom_metadata as a whole, and leaves the
    /// fields a metadata write does not name as they were.
    fn set_custom_metadata(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        if self.source.version == KvVersion::V1 {
            return Err(Error::NotSupported("KV v1 keeps no metadata"));
        }
        let mount = self.source.mount.as_str();
        let meta = self
            .client
            .call(deadline, |c| async move {
                vaultrs::kv2::read_metadata(&*c, mount, path.as_str()).await
            })?
            .ok_or(Error::NotFound)?;
        let mut custom = meta.custom_metadata.unwrap_or_default();
        match value {
            Some(v) => custom.insert(name.to_string(), v.to_string()),
            None => custom.remove(name),
        };
        let custom = &custom;
        self.client.call(deadline, |c| async move {
            let mut request = vaultrs::api::kv2::requests::SetSecretMetadataRequest::builder();
            request.custom_metadata(custom.clone());
            vaultrs::kv2::set_metadata(&*c, mount, path.as_str(), Some(&mut request)).await
        })?;
        Ok(())
    }

    fn health(&self, deadline: &Deadline) -> Result<Health> {
        let me = self
            .client
            .call(deadline, |c| async move {
                vaultrs::token::lookup_self(&*c).await
            })?
            .ok_or_else(|| Error::Protocol("token lookup answered 404".into()))?;
        // A TTL of 0 means the token never expires (root tokens).
        Ok(Health {
            credential_ttl: (me.ttl > 0).then(|| std::time::Duration::from_secs(me.ttl)),
        })
    }

    /// Asks `sys/capabilities-self` about the path a write of the secret
    /// goes to (`MOUNT/data/P` on KV v2, `MOUNT/P` on KV v1). A server
    /// that does not know the call (404), or a policy that forbids asking
    /// (403; the default policy allows it), cannot say: `Ok(None)`.
    fn permissions(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Permissions>> {
        let mount = self.source.mount.as_str();
        let asked = match self.source.version {
            KvVersion::V2 => format!("{mount}/data/{}", path.as_str()),
            KvVersion::V1 => format!("{mount}/{}", path.as_str()),
        };
        let request = CapabilitiesSelf {
            paths: vec![asked.clone()],
        };
        let answer = match self.client.call(deadline, |c| {
            let request = request.clone();
            async move { vaultrs::api::exec_with_result(&*c, request).await }
        }) {
            Ok(Some(answer)) => answer,
            Ok(None) | Err(Error::PermissionDenied(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Newer servers answer per path; older ones (one path) under
        // "capabilities".
        let listed = answer
            .get(&asked)
            .or_else(|| answer.get("capabilities"))
            .and_then(|v| v.as_array());
        Ok(listed.map(|caps| {
            let names: Vec<&str> = caps.iter().filter_map(|c| c.as_str()).collect();
            permissions_from(&names)
        }))
    }

    fn node(&self) -> Option<String> {
        let nodes = &self.client.nodes;
        Some(nodes.addr(nodes.in_use()))
    }
}

fn secret_from(
    data: &serde_json::Value,
    revision: Option<Revision>,
    modified: Option<SystemTime>,
) -> Result<Secret> {
    match data {
        serde_json::Value::Object(map) => Ok(Secret::from_json_map(map, revision, modified)),
        serde_json::Value::Null => Ok(Secret {
            revision,
            modified,
            ..Secret::default()
        }),
        _ => Err(Error::Protocol("secret data is not a JSON object".into())),
    }
}

/// `POST sys/capabilities-self {"paths": [...]}`: what the token may do on
/// each path (`["read", "update"]`, `["root"]`, `["deny"]`).
#[derive(Clone)]
struct CapabilitiesSelf {
    paths: Vec<String>,
}

impl rustify::Endpoint for CapabilitiesSelf {
    type Response = std::collections::HashMap<String, serde_json::Value>;
    const REQUEST_BODY_TYPE: rustify::enums::RequestType = rustify::enums::RequestType::JSON;
    const RESPONSE_BODY_TYPE: rustify::enums::ResponseType = rustify::enums::ResponseType::JSON;

    fn path(&self) -> String {
        "sys/capabilities-self".into()
    }

    fn method(&self) -> rustify::enums::RequestMethod {
        rustify::enums::RequestMethod::POST
    }

    fn body(&self) -> std::result::Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        serde_json::to_vec(&serde_json::json!({ "paths": self.paths }))
            .map(Some)
            .map_err(|e| rustify::errors::ClientError::DataParseError { source: e.into() })
    }
}

/// Capabilities as Vault names them, as what we may do.
fn permissions_from(capabilities: &[&str]) -> Permissions {
    if capabilities.contains(&"root") {
        return Permissions::all();
    }
    if capabilities.contains(&"deny") {
        return Permissions::read_only();
    }
    Permissions {
        create: capabilities.contains(&"create"),
        update: capabilities.contains(&"update"),
        delete: capabilities.contains(&"delete"),
    }
}
