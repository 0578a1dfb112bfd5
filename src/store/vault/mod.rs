//! The Vault / OpenBao implementation of [`SecretStore`], over `vaultrs`:
//! KV v1 and v2 operations here; connecting (`connect`), requests under a
//! deadline (`client`), tokens and logins (`auth`) and the mapping of
//! Vault's answers to errors (`error`) in modules of their own.

pub mod auth;
mod client;
mod connect;
pub mod error;

use std::time::SystemTime;

use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};

pub use connect::VaultSettings;

use super::{
    Capabilities, Health, ListEntry, Listing, Precondition, Revision, Secret, SecretData,
    SecretPath, SecretStore,
};
use crate::error::{Error, Result};
use client::Client;

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

/// A KV mount on a Vault or OpenBao server.
pub struct VaultStore {
    client: Client,
    source: ResolvedSource,
}

impl VaultStore {
    /// The mount, folder and KV version the SOURCE resolved to.
    pub fn source(&self) -> &ResolvedSource {
        &self.source
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
    fn kv2_write(&self, path: &SecretPath, data: &SecretData, cas: Option<u32>) -> Result<u64> {
        let mount = self.source.mount.as_str();
        let meta = match cas {
            Some(cas) => self.client.call(|c| async move {
                vaultrs::kv2::set_with_options(
                    &*c,
                    mount,
                    path.as_str(),
                    data,
                    SetSecretRequestOptions { cas },
                )
                .await
            })?,
            None => self.client.call(|c| async move {
                vaultrs::kv2::set(&*c, mount, path.as_str(), data).await
            })?,
        };
        meta.map(|m| m.version)
            .ok_or_else(|| Error::Protocol("a write answered 404".into()))
    }

    /// Reads the latest version of a KV v2 secret, or version `version`:
    /// `None` when there is none, or it is deleted or destroyed.
    fn kv2_read(&self, path: &SecretPath, version: Option<u64>) -> Result<Option<Secret>> {
        let mount = self.source.mount.as_str();
        let request = ReadSecretRequest::builder()
            .mount(mount)
            .path(path.as_str())
            .version(version)
            .build()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let Some(resp) = self
            .client
            .call(|c| async move { vaultrs::api::exec_with_result(&*c, request).await })?
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
    fn deleted_version(&self, path: &SecretPath) -> Result<Option<u32>> {
        let mount = self.source.mount.as_str();
        let Some(meta) = self.client.call(|c| async move {
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

impl SecretStore for VaultStore {
    fn capabilities(&self) -> Capabilities {
        let v2 = self.source.version == KvVersion::V2;
        Capabilities {
            check_and_set: v2,
            versions: v2,
            metadata: v2,
            soft_delete: v2,
        }
    }

    fn list(&self, path: &SecretPath) -> Result<Option<Listing>> {
        let mount = self.source.mount.as_str();
        // A trailing slash lists the folder; Vault accepts an empty path for the root.
        let dir = format!("{}/", path.as_str());
        let dir = if path.is_root() { "" } else { dir.as_str() };
        let keys = match self.source.version {
            KvVersion::V2 => self
                .client
                .call(|c| async move { vaultrs::kv2::list(&*c, mount, dir).await })?,
            KvVersion::V1 => self
                .client
                .call(|c| async move { vaultrs::kv1::list(&*c, mount, dir).await })?
                .map(|r| r.data.keys),
        };
        Ok(keys.map(|keys| keys.iter().map(|k| list_entry(k)).collect()))
    }

    fn read(&self, path: &SecretPath) -> Result<Option<Secret>> {
        if path.is_root() {
            // No secret can live at a mount's root path.
            return Ok(None);
        }
        let mount = self.source.mount.as_str();
        match self.source.version {
            KvVersion::V2 => self.kv2_read(path, None),
            KvVersion::V1 => {
                match self.client.call(|c| async move {
                    vaultrs::kv1::get_raw(&*c, mount, path.as_str()).await
                })? {
                    None => Ok(None),
                    Some(resp) => secret_from(&resp.data, None, None).map(Some),
                }
            }
        }
    }

    fn write(
        &self,
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
                    Precondition::Any => self.kv2_write(path, data, None)?,
                    Precondition::At(r) => self.kv2_write(path, data, Some(version_of(r)?))?,
                    Precondition::Absent => match self.kv2_write(path, data, Some(0)) {
                        // Absent may mean "deleted": name the deleted version.
                        Err(Error::CasConflict) => match self.deleted_version(path)? {
                            Some(cas) => self.kv2_write(path, data, Some(cas))?,
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
                self.client.call(|c| async move {
                    vaultrs::kv1::set(&*c, mount, path.as_str(), &map).await
                })?;
                Ok(None)
            }
        }
    }

    fn delete(&self, path: &SecretPath) -> Result<()> {
        let mount = self.source.mount.as_str();
        match self.source.version {
            KvVersion::V2 => self.client.call(|c| async move {
                vaultrs::kv2::delete_latest(&*c, mount, path.as_str()).await
            })?,
            KvVersion::V1 => self
                .client
                .call(|c| async move { vaultrs::kv1::delete(&*c, mount, path.as_str()).await })?,
        };
        Ok(())
    }

    fn read_version(&self, path: &SecretPath, version: u64) -> Result<Option<Secret>> {
        match self.source.version {
            KvVersion::V2 if version > 0 && !path.is_root() => self.kv2_read(path, Some(version)),
            KvVersion::V2 => Ok(None),
            KvVersion::V1 => Err(Error::Unsupported("KV v1 keeps no versions")),
        }
    }

    /// Reads the metadata, changes one entry of custom_metadata, writes it
    /// back: Vault replaces custom_metadata as a whole, and leaves the
    /// fields a metadata write does not name as they were.
    fn set_custom_metadata(
        &self,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        if self.source.version == KvVersion::V1 {
            return Err(Error::Unsupported("KV v1 keeps no metadata"));
        }
        let mount = self.source.mount.as_str();
        let meta = self
            .client
            .call(|c| async move { vaultrs::kv2::read_metadata(&*c, mount, path.as_str()).await })?
            .ok_or(Error::NotFound)?;
        let mut custom = meta.custom_metadata.unwrap_or_default();
        match value {
            Some(v) => custom.insert(name.to_string(), v.to_string()),
            None => custom.remove(name),
        };
        self.client.call(|c| async move {
            let mut request = vaultrs::api::kv2::requests::SetSecretMetadataRequest::builder();
            request.custom_metadata(custom);
            vaultrs::kv2::set_metadata(&*c, mount, path.as_str(), Some(&mut request)).await
        })?;
        Ok(())
    }

    fn health(&self) -> Result<Health> {
        let me = self
            .client
            .call(|c| async move { vaultrs::token::lookup_self(&*c).await })?
            .ok_or_else(|| Error::Protocol("token lookup answered 404".into()))?;
        // A TTL of 0 means the token never expires (root tokens).
        Ok(Health {
            credential_ttl: (me.ttl > 0).then(|| std::time::Duration::from_secs(me.ttl)),
        })
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
