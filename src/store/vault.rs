//! The Vault / OpenBao implementation of [`SecretStore`], over `vaultrs`.
//!
//! Every call runs on the shared tokio runtime under a deadline, so a stuck
//! server turns into `EIO` instead of a hung `ls`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustify::enums::{RequestMethod, RequestType, ResponseType};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::runtime::Handle;
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};
use vaultrs::client::{Identity, VaultClient, VaultClientSettings, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::auth::{self, Credentials, Login};
use super::{KvVersion, ListEntry, Listing, Secret, SecretPath, SecretStore};
use crate::error::{Error, Result};

/// How to reach and authenticate to the server.
pub struct VaultSettings {
    /// Server address, e.g. `http://127.0.0.1:8200`.
    pub addr: String,
    /// Where the token comes from (never logged).
    pub login: Login,
    /// PEM file of a private CA.
    pub ca_cert: Option<PathBuf>,
    /// PEM files of a client certificate and its key, presented on every
    /// connection.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Skip TLS verification (`VAULT_SKIP_VERIFY`).
    pub skip_verify: bool,
    /// Enterprise namespace.
    pub namespace: Option<String>,
    /// Deadline of every request.
    pub timeout: Duration,
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
    /// Settings for each calling thread's own client, but the token.
    client_settings: VaultClientSettings,
    /// The token in use (replaced when renewing is not enough).
    credentials: Arc<Credentials>,
    id: usize,
    source: ResolvedSource,
    timeout: Duration,
}

impl VaultStore {
    /// Connects, checks the token and resolves `source` to a KV mount.
    /// Errors are one human sentence, fit for stderr before mounting.
    pub fn connect(
        settings: &VaultSettings,
        source: &str,
        rt: Handle,
    ) -> std::result::Result<Self, String> {
        let mut builder = VaultClientSettingsBuilder::default();
        builder
            .address(settings.addr.as_str())
            .token("")
            .verify(!settings.skip_verify)
            .timeout(Some(settings.timeout))
            .namespace(settings.namespace.clone())
            .ca_certs(
                settings
                    .ca_cert
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            );
        // Explicitly, even when absent: vaultrs would otherwise read
        // VAULT_CLIENT_CERT itself and only log what goes wrong.
        builder.identity(settings.client_cert.as_ref().map(identity).transpose()?);
        let client_settings = builder
            .build()
            .map_err(|e| format!("invalid Vault settings: {e}"))?;
        let login_client = auth::client_for(&client_settings, "")?;

        let no_answer = || {
            format!(
                "Vault at {} did not answer within {}",
                settings.addr,
                humantime::format_duration(settings.timeout)
            )
        };

        let token = with_deadline(&rt, settings.timeout, settings.login.obtain(&login_client))
            .ok_or_else(no_answer)??;
        let client = auth::client_for(&client_settings, token.expose_secret())?;
        let lease = match with_deadline(&rt, settings.timeout, auth::lease_of(&client))
            .ok_or_else(no_answer)?
        {
            Ok(lease) => lease,
            Err(ClientError::APIError { code: 403, .. }) => {
                return Err(format!(
                    "Vault at {} refused the token (403): {}",
                    settings.addr,
                    match &settings.login {
                        Login::AppRole { .. } | Login::Cert { .. } | Login::Kubernetes { .. } =>
                            "check the role's token policies",
                        _ => "check VAULT_TOKEN, --token-file or ~/.vault-token",
                    }
                ))
            }
            Err(e) => {
                return Err(format!(
                    "cannot reach Vault at {}: {}",
                    settings.addr,
                    describe(&e)
                ))
            }
        };

        let wanted = SecretPath::parse(source);
        if wanted.is_root() {
            return Err("SOURCE must name a KV mount, e.g. secret/ or secret/team/prod".into());
        }
        let request = UiMountRequest {
            path: wanted.as_str().to_string(),
        };
        let ui = match with_deadline(
            &rt,
            settings.timeout,
            vaultrs::api::exec_with_result(&client, request),
        )
        .ok_or_else(no_answer)?
        {
            Ok(ui) => ui,
            Err(ClientError::APIError { code: 403, .. }) => {
                return Err(format!(
                "the token may not look up the mount of {source} (403 on sys/internal/ui/mounts)"
            ))
            }
            Err(ClientError::APIError {
                code: 400 | 404, ..
            }) => return Err(format!("no secrets engine is mounted at {source}")),
            Err(e) => {
                return Err(format!(
                    "cannot resolve the mount of {source}: {}",
                    describe(&e)
                ))
            }
        };
        if ui.engine != "kv" && ui.engine != "generic" {
            return Err(format!(
                "{source} is a {} secrets engine, not KV",
                ui.engine
            ));
        }
        let version = match ui.options.as_ref().and_then(|o| o.version.as_deref()) {
            Some("2") => KvVersion::V2,
            _ => KvVersion::V1,
        };
        let credentials = Arc::new(Credentials::new(token));
        let needs_care = lease.ttl > 0 || matches!(settings.login, Login::TokenFile(_));
        if needs_care {
            rt.spawn(auth::keep_fresh(
                settings.login.clone(),
                client_settings.clone(),
                credentials.clone(),
                lease,
            ));
        }
        let mount = SecretPath::parse(&ui.path);
        let folder = wanted
            .as_str()
            .strip_prefix(mount.as_str())
            .map(SecretPath::parse)
            .unwrap_or_else(SecretPath::root);
        Ok(VaultStore {
            client_settings,
            credentials,
            id: NEXT_STORE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            source: ResolvedSource {
                mount: mount.as_str().to_string(),
                folder,
                version,
            },
            timeout: settings.timeout,
        })
    }

    /// The mount, folder and KV version the SOURCE resolved to.
    pub fn source(&self) -> &ResolvedSource {
        &self.source
    }

    /// Runs one request under the deadline; 404 is `Ok(None)`.
    ///
    /// Called from FUSE worker threads, which are not runtime threads: each
    /// gets its own single-threaded runtime and client (one keep-alive
    /// connection per thread), so a request never hops between threads —
    /// that hop costs more than the rest of a cold read.
    fn call<T, Fut>(&self, make: impl FnOnce(Arc<VaultClient>) -> Fut) -> Result<Option<T>>
    where
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        let deadline = self.timeout;
        let started = std::time::Instant::now();
        let outcome = LOCAL.with(|cell| {
            let mut slot = cell.borrow_mut();
            let generation = self.credentials.generation();
            if slot.as_ref().map(|l| (l.owner, l.generation)) != Some((self.id, generation)) {
                let token = self.credentials.token();
                *slot = LocalClient::new(
                    (self.id, generation),
                    &self.client_settings,
                    token.expose_secret(),
                );
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
            None => Err(Error::Timeout(self.timeout)),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(e)) if status(&e) == Some(404) => Ok(None),
            Some(Err(e)) => Err(to_error(&e)),
        }
    }
}

/// A calling thread's own runtime and client.
struct LocalClient {
    /// Which store it belongs to.
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

/// Distinguishes stores (tests may build several in one process).
static NEXT_STORE_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

impl SecretStore for VaultStore {
    fn list(&self, path: &SecretPath) -> Result<Option<Listing>> {
        let mount = self.source.mount.as_str();
        // A trailing slash lists the folder; Vault accepts an empty path for the root.
        let dir = format!("{}/", path.as_str());
        let dir = if path.is_root() { "" } else { dir.as_str() };
        let keys = match self.source.version {
            KvVersion::V2 => {
                self.call(|c| async move { vaultrs::kv2::list(&*c, mount, dir).await })?
            }
            KvVersion::V1 => self
                .call(|c| async move { vaultrs::kv1::list(&*c, mount, dir).await })?
                .map(|r| r.data.keys),
        };
        Ok(keys.map(|keys| keys.iter().map(|k| ListEntry::parse(k)).collect()))
    }

    fn read(&self, path: &SecretPath) -> Result<Option<Secret>> {
        if path.is_root() {
            // No secret can live at a mount's root path.
            return Ok(None);
        }
        let mount = self.source.mount.as_str();
        match self.source.version {
            KvVersion::V2 => {
                let request = ReadSecretRequest::builder()
                    .mount(mount)
                    .path(path.as_str())
                    .build()
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                let Some(resp) = self
                    .call(|c| async move { vaultrs::api::exec_with_result(&*c, request).await })?
                else {
                    return Ok(None);
                };
                if resp.metadata.destroyed || !resp.metadata.deletion_time.is_empty() {
                    return Ok(None);
                }
                let modified = humantime::parse_rfc3339_weak(&resp.metadata.created_time).ok();
                secret_from(&resp.data, Some(resp.metadata.version), modified).map(Some)
            }
            KvVersion::V1 => {
                match self.call(|c| async move {
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
        data: &serde_json::Map<String, serde_json::Value>,
        cas: Option<u64>,
    ) -> Result<Option<u64>> {
        if path.is_root() {
            return Err(Error::Invalid(
                "a secret cannot live at the mount's root".into(),
            ));
        }
        let mount = self.source.mount.as_str();
        match self.source.version {
            KvVersion::V2 => {
                let result = match cas {
                    Some(version) => {
                        let cas = u32::try_from(version)
                            .map_err(|_| Error::Protocol("version out of range".into()))?;
                        self.call(|c| async move {
                            vaultrs::kv2::set_with_options(
                                &*c,
                                mount,
                                path.as_str(),
                                data,
                                SetSecretRequestOptions { cas },
                            )
                            .await
                        })
                    }
                    None => self.call(|c| async move {
                        vaultrs::kv2::set(&*c, mount, path.as_str(), data).await
                    }),
                };
                match result {
                    Ok(meta) => Ok(meta.map(|m| m.version)),
                    // Vault answers a CAS mismatch with 400 "check-and-set parameter did not match".
                    Err(Error::Invalid(msg)) if msg.contains("check-and-set") => {
                        Err(Error::CasConflict)
                    }
                    Err(e) => Err(e),
                }
            }
            KvVersion::V1 => {
                let map: std::collections::HashMap<&str, &serde_json::Value> =
                    data.iter().map(|(k, v)| (k.as_str(), v)).collect();
                self.call(
                    |c| async move { vaultrs::kv1::set(&*c, mount, path.as_str(), &map).await },
                )?;
                Ok(None)
            }
        }
    }

    fn delete(&self, path: &SecretPath) -> Result<()> {
        let mount = self.source.mount.as_str();
        match self.source.version {
            KvVersion::V2 => self.call(|c| async move {
                vaultrs::kv2::delete_latest(&*c, mount, path.as_str()).await
            })?,
            KvVersion::V1 => {
                self.call(|c| async move { vaultrs::kv1::delete(&*c, mount, path.as_str()).await })?
            }
        };
        Ok(())
    }

    fn current_version(&self, path: &SecretPath) -> Result<Option<u64>> {
        match self.source.version {
            KvVersion::V2 => Ok(self
                .call(|c| async move {
                    vaultrs::kv2::read_metadata(&*c, self.source.mount.as_str(), path.as_str())
                        .await
                })?
                .map(|m| m.current_version)),
            KvVersion::V1 => Ok(None),
        }
    }

    fn supports_cas(&self) -> bool {
        self.source.version == KvVersion::V2
    }

    fn health(&self) -> Result<Option<Duration>> {
        let me = self
            .call(|c| async move { vaultrs::token::lookup_self(&*c).await })?
            .ok_or_else(|| Error::Protocol("token lookup answered 404".into()))?;
        // A TTL of 0 means the token never expires (root tokens).
        Ok((me.ttl > 0).then(|| Duration::from_secs(me.ttl)))
    }
}

/// The client certificate and key of `--client-cert` and `--client-key`.
fn identity((cert, key): &(PathBuf, PathBuf)) -> std::result::Result<Identity, String> {
    let read =
        |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    // The key is a credential: wiped from memory once parsed.
    let mut pem = secrecy::zeroize::Zeroizing::new(read(cert)?);
    pem.push(b'\n');
    pem.extend(secrecy::zeroize::Zeroizing::new(read(key)?).iter());
    Identity::from_pem(&pem).map_err(|e| {
        format!(
            "{} and {} are not a PEM certificate and its key: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// Runs `fut` on the runtime from a blocking thread; `None` past the deadline.
fn with_deadline<T>(rt: &Handle, deadline: Duration, fut: impl Future<Output = T>) -> Option<T> {
    rt.block_on(async move { tokio::time::timeout(deadline, fut).await })
        .ok()
}

fn secret_from(
    data: &serde_json::Value,
    version: Option<u64>,
    modified: Option<SystemTime>,
) -> Result<Secret> {
    match data {
        serde_json::Value::Object(map) => Ok(Secret::from_json_map(map, version, modified)),
        serde_json::Value::Null => Ok(Secret {
            version,
            modified,
            ..Secret::default()
        }),
        _ => Err(Error::Protocol("secret data is not a JSON object".into())),
    }
}

/// A store error as a sentence, without anything the server echoed back
/// beyond its status and error messages.
pub(crate) fn describe(e: &ClientError) -> String {
    match e {
        ClientError::APIError { code, errors } if errors.is_empty() => format!("HTTP {code}"),
        ClientError::APIError { code, errors } => format!("HTTP {code}: {}", errors.join("; ")),
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => format!("HTTP {code}"),
        ClientError::RestClientError { source } => {
            // Walk to the innermost cause: "connection refused" says more than
            // "error sending request".
            let mut msg = source.to_string();
            let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(source);
            while let Some(c) = cause {
                msg = c.to_string();
                cause = c.source();
            }
            msg
        }
        other => other.to_string(),
    }
}

/// The HTTP status of a failed request. vaultrs gives `APIError` only when
/// the body carries an `errors` list; a KV v2 read of a deleted secret is a
/// 404 whose body holds metadata instead, and surfaces as a raw response error.
fn status(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::APIError { code, .. } => Some(*code),
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    }
}

fn to_error(e: &ClientError) -> Error {
    match status(e) {
        Some(403) => Error::PermissionDenied(describe(e)),
        Some(400) => Error::Invalid(describe(e)),
        Some(_) => Error::Unavailable(describe(e)),
        None if matches!(e, ClientError::RestClientError { .. }) => Error::Unavailable(describe(e)),
        None => Error::Protocol(describe(e)),
    }
}

/// `GET sys/internal/ui/mounts/<path>`: which mount owns a path, and its
/// engine type and options. Any token that may use the path may ask.
struct UiMountRequest {
    path: String,
}

#[derive(Debug, Deserialize)]
struct UiMountOptions {
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
struct UiMountResponse {
    path: String,
    #[serde(rename = "type")]
    engine: String,
    options: Option<UiMountOptions>,
}

impl rustify::Endpoint for UiMountRequest {
    type Response = UiMountResponse;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        format!("sys/internal/ui/mounts/{}", self.path)
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::GET
    }
}
