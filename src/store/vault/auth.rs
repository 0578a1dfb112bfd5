//! Where the Vault token comes from and how it is kept valid: a token given
//! once (renewed while the server allows), a token file (re-read when it
//! changes, as Vault Agent's sink or a mounted secret rotate it), or a login
//! with AppRole, a TLS client certificate or a Kubernetes service account
//! (logged in again before the token reaches its end).
//!
//! The token in use lives in [`Credentials`], shared by every thread's
//! client; a new token bumps its generation and each client picks it up on
//! its next request. Tokens, role IDs and secret IDs are never logged.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use vaultrs::client::{VaultClient, VaultClientSettings};

use super::error::describe;
use super::http::client_for;

/// How secretfs obtains its token.
#[derive(Debug, Clone)]
pub enum Login {
    /// A token given once (`VAULT_TOKEN`): renewed while it can be.
    Token(SecretString),
    /// A file holding the token (`--token-file`, `~/.vault-token`): read
    /// at start and again whenever it changes.
    TokenFile(PathBuf),
    /// AppRole: a login with a role ID and (unless the role does without)
    /// a secret ID, each read from a file; repeated before the token ends.
    AppRole {
        /// Where the auth method is mounted (`approle`).
        mount: String,
        /// File holding the role ID.
        role_id_file: PathBuf,
        /// File holding the secret ID.
        secret_id_file: Option<PathBuf>,
    },
    /// TLS certificate: a login with the client certificate the
    /// connection presents (`--client-cert`, `--client-key`).
    Cert {
        /// Where the auth method is mounted (`cert`).
        mount: String,
        /// The certificate role to log in against (any matching one when `None`).
        role: Option<String>,
    },
    /// Kubernetes: a login with the pod's service account token (a JWT,
    /// read from its file at each login: the kubelet rotates it).
    Kubernetes {
        /// Where the auth method is mounted (`kubernetes`).
        mount: String,
        /// The Vault role to log in as.
        role: String,
        /// File holding the service account token.
        jwt_file: PathBuf,
    },
}

/// What a token is good for, as the server says.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    /// Seconds left; 0 for a token that never expires.
    pub ttl: u64,
    /// Whether it can be renewed.
    pub renewable: bool,
}

/// The token in use, shared by every client.
pub struct Credentials {
    token: RwLock<SecretString>,
    generation: AtomicU64,
}

impl Credentials {
    /// Holds `token` as generation 0.
    pub fn new(token: SecretString) -> Self {
        Credentials {
            token: RwLock::new(token),
            generation: AtomicU64::new(0),
        }
    }

    /// The token in use.
    pub fn token(&self) -> SecretString {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Bumped with each new token.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts `token` in use.
    pub fn replace(&self, token: SecretString) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Reads a token, role ID or secret ID from `path`: trimmed, non-empty, and
/// only the characters an HTTP header may carry. The error names the file,
/// never its contents.
pub fn read_credential_file(path: &Path, what: &str) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(format!("the {what} file {} is empty", path.display()));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the {what} file {} holds characters a {what} cannot have",
            path.display()
        ));
    }
    Ok(SecretString::from(value.to_string()))
}

impl Login {
    /// Where the token comes from, for logs and messages (never the
    /// token): `VAULT_TOKEN`, `--token-file PATH`, `~/.vault-token (PATH)`,
    /// or the login.
    pub fn source(&self) -> String {
        match self {
            Login::Token(_) => "VAULT_TOKEN".into(),
            Login::TokenFile(path) => {
                let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".vault-token"));
                if home.as_deref() == Some(path.as_path()) {
                    format!("~/.vault-token ({})", path.display())
                } else {
                    format!("--token-file {}", path.display())
                }
            }
            Login::AppRole { mount, .. } => format!("an AppRole login at auth/{mount}"),
            Login::Cert { mount, .. } => format!("a TLS certificate login at auth/{mount}"),
            Login::Kubernetes { mount, role, .. } => {
                format!("a Kubernetes login at auth/{mount} as role {role}")
            }
        }
    }

    /// What to check when the server refuses the token this obtained.
    pub fn what_to_check(&self) -> String {
        let lookup = "and that its policies allow auth/token/lookup-self (the default policy does)";
        match self {
            Login::Token(_) => format!(
                "check that VAULT_TOKEN holds a live token of this server (`bao token lookup` with the same VAULT_ADDR and VAULT_TOKEN; not expired or revoked, the right namespace) {lookup}"
            ),
            Login::TokenFile(path) => format!(
                "check that {} holds a live token of this server (`VAULT_TOKEN=$(cat {}) bao token lookup`; not expired or revoked, the right namespace; `bao login` writes ~/.vault-token anew) {lookup}",
                path.display(),
                path.display()
            ),
            Login::AppRole { .. } | Login::Cert { .. } | Login::Kubernetes { .. } => format!(
                "the login succeeded, so check the role's token settings: its token_policies, token_no_default_policy {lookup}"
            ),
        }
    }

    /// Whether a new token can be had without the user (re-read or login).
    pub fn can_refresh(&self) -> bool {
        !matches!(self, Login::Token(_))
    }

    /// Obtains a token: the one given, the file's, or a fresh login.
    /// `client` carries the address and TLS settings, and no token.
    pub async fn obtain(&self, client: &VaultClient) -> Result<SecretString, LoginFailed> {
        match self {
            Login::Token(t) => {
                if !t.expose_secret().bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(LoginFailed::from(
                        "VAULT_TOKEN holds characters a token cannot have".to_string(),
                    ));
                }
                Ok(t.clone())
            }
            Login::TokenFile(path) => Ok(read_credential_file(path, "token")?),
            Login::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => {
                let role_id = read_credential_file(role_id_file, "role ID")?;
                let secret_id = match secret_id_file {
                    Some(f) => read_credential_file(f, "secret ID")?,
                    None => SecretString::from(String::new()),
                };
                let auth = vaultrs::auth::approle::login(
                    client,
                    mount,
                    role_id.expose_secret(),
                    secret_id.expose_secret(),
                )
                .await
                .map_err(|e| {
                    LoginFailed::of(&e, format!("AppRole login at auth/{mount} failed"))
                })?;
                Ok(SecretString::from(auth.client_token))
            }
            Login::Cert { mount, role } => {
                let name = role.as_deref().unwrap_or("");
                let auth = vaultrs::auth::cert::login(client, mount, name)
                    .await
                    .map_err(|e| {
                        LoginFailed::of(&e, format!("TLS certificate login at auth/{mount} failed"))
                    })?;
                Ok(SecretString::from(auth.client_token))
            }
            Login::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let jwt = read_credential_file(jwt_file, "service account token")?;
                let auth =
                    vaultrs::auth::kubernetes::login(client, mount, role, jwt.expose_secret())
                        .await
                        .map_err(|e| {
                            LoginFailed::of(
                                &e,
                                format!("Kubernetes login at auth/{mount} as role {role} failed"),
                            )
                        })?;
                Ok(SecretString::from(auth.client_token))
            }
        }
    }
}

/// Why no token could be had: one line, and whether the server did not
/// answer (it may later, or another node may) rather than say no.
#[derive(Debug)]
pub struct LoginFailed {
    /// The reason (never a credential).
    pub message: String,
    /// The server was not reached, timed out, was sealed or had no leader.
    pub unreachable: bool,
}

impl LoginFailed {
    /// A failed login request: `what` and the server's answer.
    fn of(e: &vaultrs::error::ClientError, what: String) -> Self {
        LoginFailed {
            message: format!("{what}: {}", describe(e)),
            unreachable: !matches!(super::nodes::classify(e), super::nodes::Failure::Answer),
        }
    }
}

impl From<String> for LoginFailed {
    /// A failure of ours (a file, a setting): final.
    fn from(message: String) -> Self {
        LoginFailed {
            message,
            unreachable: false,
        }
    }
}

impl std::fmt::Display for LoginFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the server says of `client`'s token.
pub async fn lease_of(client: &VaultClient) -> Result<Lease, vaultrs::error::ClientError> {
    let me = vaultrs::token::lookup_self(client).await?;
    Ok(Lease {
        ttl: me.ttl,
        renewable: me.renewable.unwrap_or(false),
    })
}

/// How `adopt` says the server refused a token (not merely unreachable).
const REFUSED: &str = "the server refused the new token";

/// How often a token file is checked for a new token.
const FILE_POLL: Duration = Duration::from_secs(5);
/// How soon a failed renewal or login is tried again, at most.
const RETRY: Duration = Duration::from_secs(10);

/// Tells the metrics when the token in use expires.
fn note_lease(meter: &crate::metrics::Meter, lease: &Lease) {
    meter.token_ttl((lease.ttl > 0).then(|| Duration::from_secs(lease.ttl)));
}

/// Keeps the token valid for as long as the mount lives: renews it at half
/// its TTL; when it cannot be renewed further (or is about to reach its
/// maximum TTL) obtains a new one if `login` can (file, AppRole, TLS
/// certificate, Kubernetes), else warns.
/// A token file is also re-read every few seconds and a changed token put
/// in use once the server accepts it.
///
/// Every renewal, login and check goes to the node in use at the time (the
/// one requests fail over to when a node of a cluster stops answering).
/// Each lease's expiry is reported to `meter`.
pub async fn keep_fresh(
    login: Login,
    nodes: Arc<super::nodes::Nodes>,
    credentials: Arc<Credentials>,
    mut lease: Lease,
    meter: crate::metrics::Meter,
) {
    use tokio::time::Instant;
    let half = |l: &Lease| Duration::from_secs((l.ttl / 2).max(1));
    // When the token next needs renewing or replacing (never: no TTL).
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    let mut due = Instant::now() + if lease.ttl == 0 { far } else { half(&lease) };
    let watch_file = matches!(login, Login::TokenFile(_));
    note_lease(&meter, &lease);
    if lease.ttl == 0 && !watch_file {
        return; // never expires: nothing to do
    }
    let mut warned = false;
    // A token the file held that the server refused: not tried again.
    let mut refused: Option<SecretString> = None;
    // Whether the token file could not be read last time (warned once).
    let mut unreadable = false;
    loop {
        let wake = if watch_file {
            due.min(Instant::now() + FILE_POLL)
        } else {
            due
        };
        tokio::time::sleep_until(wake).await;

        if let Login::TokenFile(path) = &login {
            match read_credential_file(path, "token") {
                Ok(t)
                    if t.expose_secret() != credentials.token().expose_secret()
                        && refused.as_ref().map(|r| r.expose_secret())
                            != Some(t.expose_secret()) =>
                {
                    unreadable = false;
                    match adopt(nodes.settings_in_use(), &credentials, t.clone()).await {
                        Ok(l) => {
                            tracing::info!(file = %path.display(), ttl_seconds = l.ttl, "token file changed: new token in use");
                            lease = l;
                            note_lease(&meter, &lease);
                            due = Instant::now() + if l.ttl == 0 { far } else { half(&l) };
                            warned = false;
                        }
                        Err(e) => {
                            tracing::warn!(
                                file = %path.display(),
                                error = %e,
                                "token file changed but its token is refused: keeping the old one"
                            );
                            if e.starts_with(REFUSED) {
                                refused = Some(t);
                            }
                        }
                    }
                    continue;
                }
                Ok(_) => unreadable = false,
                Err(e) => {
                    if !unreadable {
                        tracing::warn!(error = %e, "cannot re-read the token file");
                    }
                    unreadable = true;
                }
            }
        }
        if Instant::now() < due {
            continue;
        }

        // A non-renewable token needs replacing; so does one reaching its
        // maximum TTL, or one the server will not renew.
        let mut renewal_failed = false;
        if lease.renewable {
            let current = credentials.token();
            let renewal = match client_for(nodes.settings_in_use(), current.expose_secret()) {
                Ok(client) => vaultrs::token::renew_self(&client, None)
                    .await
                    .map_err(|e| describe(&e)),
                Err(e) => Err(e),
            };
            match renewal {
                Ok(auth) => {
                    // Less than last time: the maximum TTL caps it.
                    let shrinking = auth.lease_duration < lease.ttl || !auth.renewable;
                    tracing::info!(ttl_seconds = auth.lease_duration, "token renewed");
                    lease = Lease {
                        ttl: auth.lease_duration,
                        renewable: auth.renewable,
                    };
                    note_lease(&meter, &lease);
                    due = Instant::now() + half(&lease);
                    if !shrinking {
                        warned = false;
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "token renewal failed");
                    renewal_failed = true;
                }
            }
        }

        if login.can_refresh() {
            match obtain_and_adopt(&login, nodes.settings_in_use(), &credentials).await {
                Ok(l) => {
                    tracing::info!(ttl_seconds = l.ttl, "new token obtained");
                    lease = l;
                    note_lease(&meter, &lease);
                    due = Instant::now() + if l.ttl == 0 { far } else { half(&l) };
                    warned = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot obtain a new token; retrying");
                    due = Instant::now() + RETRY;
                }
            }
            continue;
        }
        if renewal_failed {
            // Perhaps the server is away for a moment: try again soon.
            due = Instant::now() + RETRY;
            continue;
        }
        if !warned {
            tracing::warn!(
                ttl_seconds = lease.ttl,
                "the token cannot be renewed much longer: give secretfs a fresh one before it expires (--token-file and the --auth login methods do this themselves)"
            );
            warned = true;
        }
        if !lease.renewable || lease.ttl == 0 {
            return;
        }
    }
}

/// Obtains a new token through `login` and puts it in use.
async fn obtain_and_adopt(
    login: &Login,
    base: &VaultClientSettings,
    credentials: &Credentials,
) -> Result<Lease, String> {
    let login_client = client_for(base, "")?;
    let token = login.obtain(&login_client).await.map_err(|e| e.message)?;
    if token.expose_secret() == credentials.token().expose_secret() {
        return Err("the token file still holds the token that is running out".into());
    }
    adopt(base, credentials, token).await
}

/// Checks `token` with the server and puts it in use; its lease.
async fn adopt(
    base: &VaultClientSettings,
    credentials: &Credentials,
    token: SecretString,
) -> Result<Lease, String> {
    let client = client_for(base, token.expose_secret())?;
    let lease = lease_of(&client).await.map_err(|e| match e {
        vaultrs::error::ClientError::APIError { code: 403, .. } => {
            format!("{REFUSED}: {}", describe(&e))
        }
        e => format!("cannot check the new token: {}", describe(&e)),
    })?;
    credentials.replace(token);
    Ok(lease)
}
