//! Connecting: building the client from the settings, obtaining and
//! checking the token, and resolving SOURCE to a KV mount and folder.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustify::enums::{RequestMethod, RequestType, ResponseType};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::runtime::Handle;
use vaultrs::client::{Identity, VaultClientSettings, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::auth::{self, Credentials, Login};
use super::client::{with_deadline, Client};
use super::error::{describe, is_not_tls};
use super::http;
use super::nodes::{classify, Failure, Nodes};
use super::{KvVersion, ResolvedSource, VaultStore};
use crate::metrics::Meter;
use crate::start_error::StartError;
use crate::store::SecretPath;

/// How to reach and authenticate to the server.
#[derive(Clone)]
pub struct VaultSettings {
    /// Server addresses, e.g. `http://127.0.0.1:8200`: one, or every node
    /// of an HA cluster (the first that answers is used).
    pub addrs: Vec<String>,
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

impl VaultSettings {
    /// The addresses as one string, for messages and logs.
    pub fn addr_list(&self) -> String {
        self.addrs.join(",")
    }

    /// Client settings (without a token) for `addr`.
    fn client_settings(&self, addr: &str) -> Result<VaultClientSettings, StartError> {
        // vaultrs panics on an address that is not a URL: check it first.
        check_addr(addr).map_err(StartError::Options)?;
        let mut builder = VaultClientSettingsBuilder::default();
        builder
            .address(addr.trim())
            .token("")
            .verify(!self.skip_verify)
            .timeout(Some(self.timeout))
            .namespace(self.namespace.clone())
            .ca_certs(
                self.ca_cert
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            );
        // Explicitly, even when absent: vaultrs would otherwise read
        // VAULT_CLIENT_CERT itself and only log what goes wrong.
        builder.identity(
            self.client_cert
                .as_ref()
                .map(identity)
                .transpose()
                .map_err(StartError::Options)?,
        );
        builder
            .build()
            .map_err(|e| StartError::Options(format!("invalid Vault settings: {e}")))
    }
}

/// Why a node could not be used at start: it did not answer (the next
/// node may), its login failed (the next node may do better), or it
/// answered no (final).
enum NodeStart {
    Unreachable(String),
    LoginFailed(String),
    Refused(StartError),
}

impl VaultStore {
    /// Connects, checks the token and resolves `source` to a KV mount.
    /// Errors are one human sentence, fit for stderr before mounting:
    /// [`StartError::Options`] for settings that cannot work,
    /// [`StartError::Store`] for what the server said (or did not).
    /// With several addresses, the first node that answers is used.
    /// The token's expiry is reported to `meter`.
    pub fn connect(
        settings: &VaultSettings,
        meter: &Meter,
        source: &str,
        rt: Handle,
    ) -> std::result::Result<Self, StartError> {
        Session::open(settings, meter, rt)?.resolve(source)
    }
}

/// A logged-in connection to the server (or to the nodes of a cluster):
/// the token, kept fresh in the background, from which stores for any
/// number of SOURCEs are made without logging in again (`secretfs exec`
/// reads several).
pub struct Session {
    nodes: Arc<Nodes>,
    credentials: Arc<Credentials>,
    /// Where the token came from (`Login::source`), for the log.
    token_source: String,
    timeout: Duration,
    rt: Handle,
}

impl Session {
    /// Builds the clients, obtains the token from the first node that
    /// answers and checks it, and keeps it fresh, reporting its expiry to
    /// `meter`. Errors as for [`VaultStore::connect`].
    pub fn open(
        settings: &VaultSettings,
        meter: &Meter,
        rt: Handle,
    ) -> std::result::Result<Self, StartError> {
        let all: Vec<VaultClientSettings> = settings
            .addrs
            .iter()
            .map(|a| settings.client_settings(a))
            .collect::<Result<_, _>>()?;
        let nodes = Arc::new(Nodes::new(all));
        let mut unreachable = Vec::new();
        // Whether a node answered a login with no: waiting will not help.
        let mut login_refused = false;
        let mut found = None;
        for i in 0..nodes.len() {
            let why = match first_contact(settings, nodes.settings(i), &rt) {
                Ok(got) => {
                    found = Some((i, got));
                    break;
                }
                Err(NodeStart::Refused(e)) => return Err(e),
                Err(NodeStart::Unreachable(why)) => why,
                Err(NodeStart::LoginFailed(why)) => {
                    login_refused = true;
                    why
                }
            };
            // The last node's failure is the error itself.
            if i + 1 < nodes.len() {
                tracing::warn!(node = %nodes.addr(i), error = %why, "store node cannot be used: trying the next");
            }
            unreachable.push(why);
        }
        let Some((node, (token, lease))) = found else {
            // One sentence per node (the same one once).
            unreachable.dedup();
            let why = unreachable.join("; ");
            return Err(if login_refused {
                StartError::Store(why)
            } else {
                StartError::StoreUnreachable(why)
            });
        };
        nodes.start_on(node);
        let credentials = Arc::new(Credentials::new(token));
        let needs_care = lease.ttl > 0 || matches!(settings.login, Login::TokenFile(_));
        if needs_care {
            rt.spawn(auth::keep_fresh(
                settings.login.clone(),
                nodes.clone(),
                credentials.clone(),
                lease,
                meter.clone(),
            ));
        }
        if nodes.len() > 1 {
            rt.spawn(super::nodes::prefer_first(Arc::downgrade(&nodes)));
        }
        Ok(Session {
            nodes,
            credentials,
            token_source: settings.login.source(),
            timeout: settings.timeout,
            rt,
        })
    }

    /// The store of the KV mount that holds `source`, scoped to it.
    pub fn resolve(&self, source: &str) -> std::result::Result<VaultStore, StartError> {
        let client_settings = self.nodes.settings(self.nodes.in_use()).clone();
        let client = http::client_for(&client_settings, self.credentials.token().expose_secret())
            .map_err(StartError::Store)?;
        let no_answer = || {
            StartError::StoreUnreachable(format!(
                "Vault at {} did not answer within {}",
                client_settings.address,
                humantime::format_duration(self.timeout)
            ))
        };

        let wanted = SecretPath::parse(source);
        if wanted.is_root() {
            return Err(StartError::Options(
                "SOURCE must name a KV mount, e.g. secret/ or secret/team/prod".into(),
            ));
        }
        let request = UiMountRequest {
            path: wanted.as_str().to_string(),
        };
        let ui = match with_deadline(
            &self.rt,
            self.timeout,
            vaultrs::api::exec_with_result(&client, request),
        )
        .ok_or_else(no_answer)?
        {
            Ok(ui) => ui,
            Err(ClientError::APIError { code: 403, .. }) => {
                // Vault answers 403 both when the policy forbids the
                // lookup and when no mount owns the path (even to root).
                return Err(StartError::Store(format!(
                    "no secrets engine is mounted at {source}, or the token may not look up \
                     its mount (403 on sys/internal/ui/mounts)"
                )));
            }
            Err(ClientError::APIError {
                code: 400 | 404, ..
            }) => {
                return Err(StartError::Store(format!(
                    "no secrets engine is mounted at {source}"
                )))
            }
            Err(e) => {
                let why = format!("cannot resolve the mount of {source}: {}", describe(&e));
                // A node that went away, sealed or without a leader since
                // the login: waiting may help.
                return Err(match classify(&e) {
                    Failure::Answer => StartError::Store(why),
                    _ => StartError::StoreUnreachable(why),
                });
            }
        };
        if ui.engine != "kv" && ui.engine != "generic" {
            return Err(StartError::Store(format!(
                "{source} is a {} secrets engine, not KV",
                ui.engine
            )));
        }
        let version = match ui.options.as_ref().and_then(|o| o.version.as_deref()) {
            Some("2") => KvVersion::V2,
            _ => KvVersion::V1,
        };
        let mount = SecretPath::parse(&ui.path);
        let folder = wanted
            .as_str()
            .strip_prefix(mount.as_str())
            .map(SecretPath::parse)
            .unwrap_or_else(SecretPath::root);
        Ok(VaultStore {
            client: Client::new(self.nodes.clone(), self.credentials.clone(), self.timeout),
            source: ResolvedSource {
                mount: mount.as_str().to_string(),
                folder,
                version,
            },
            token_source: self.token_source.clone(),
            known: Default::default(),
        })
    }
}

/// Obtains the token through `node` and checks it there: the token and
/// its lease, or why the node cannot be used.
fn first_contact(
    settings: &VaultSettings,
    node: &VaultClientSettings,
    rt: &Handle,
) -> Result<(SecretString, auth::Lease), NodeStart> {
    let addr = node.address.as_str().trim_end_matches('/').to_string();
    let no_answer = || {
        NodeStart::Unreachable(format!(
            "Vault at {addr} did not answer within {}",
            humantime::format_duration(settings.timeout)
        ))
    };
    let login_client =
        http::client_for(node, "").map_err(|e| NodeStart::Refused(StartError::Store(e)))?;
    // A failed login says no more than a sentence: another node may do
    // better (the caller tries it, and reports this when none is left).
    let token = with_deadline(rt, settings.timeout, settings.login.obtain(&login_client))
        .ok_or_else(no_answer)?
        .map_err(|e| {
            if e.unreachable {
                NodeStart::Unreachable(e.message)
            } else {
                NodeStart::LoginFailed(e.message)
            }
        })?;
    let client = http::client_for(node, token.expose_secret())
        .map_err(|e| NodeStart::Refused(StartError::Store(e)))?;
    match with_deadline(rt, settings.timeout, auth::lease_of(&client)).ok_or_else(no_answer)? {
        Ok(lease) => Ok((token, lease)),
        Err(ClientError::APIError { code: 403, .. }) => {
            Err(NodeStart::Refused(StartError::Store(format!(
                "Vault at {addr} refused the token (403) from {}: {}",
                settings.login.source(),
                settings.login.what_to_check()
            ))))
        }
        Err(e) if is_not_tls(&e) => Err(NodeStart::Refused(StartError::Store(format!(
            "the server at {addr} did not answer TLS; is it {}?",
            addr.replacen("https://", "http://", 1)
        )))),
        Err(e) if matches!(classify(&e), Failure::Answer) => {
            Err(NodeStart::Refused(StartError::Store(format!(
                "Vault at {addr} refused the token check: {}",
                describe(&e)
            ))))
        }
        Err(e) => Err(NodeStart::Unreachable(format!(
            "cannot reach Vault at {addr}: {}",
            describe(&e)
        ))),
    }
}

/// Checks that `addr` is an address the client can use: an `http://` or
/// `https://` URL with a host. The error is one line saying what is wrong
/// and, for an address without a scheme, what would work.
fn check_addr(addr: &str) -> std::result::Result<(), String> {
    let what = "VAULT_ADDR/--addr";
    let trimmed = addr.trim();
    if trimmed.is_empty() {
        return Err(format!(
            "{what} is empty: give the server's URL, e.g. https://vault.example.com:8200"
        ));
    }
    if !trimmed.contains("://") {
        // `127.0.0.1:8200` does not parse; `localhost:8200` parses with
        // "localhost" as its scheme: both lack one.
        let loopback = ["127.", "localhost", "[::1]"]
            .iter()
            .any(|p| trimmed.starts_with(p));
        let scheme = if loopback { "http" } else { "https" };
        return Err(format!(
            "{what} {addr:?} is not a URL: did you mean {scheme}://{trimmed}?"
        ));
    }
    let url = url::Url::parse(trimmed).map_err(|e| format!("{what} {addr:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{what} {addr:?} is not an http:// or https:// URL (scheme {:?})",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what} {addr:?} has no host"));
    }
    Ok(())
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
