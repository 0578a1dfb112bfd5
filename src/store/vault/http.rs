//! The HTTP client under each Vault client: built here rather than by
//! `VaultClient::new` so that its idle connections are dropped before the
//! servers and proxies between us and the store close them.
//!
//! Servers and proxies close keep-alive connections that stay idle
//! (OpenBao's listener `http_idle_timeout`, nginx's `keepalive_timeout`,
//! HAProxy's `timeout http-keep-alive`, cloud load balancers), and a
//! restarted server closes them all. A FUSE thread's runtime runs only while
//! the thread waits on a request, so the close of a pooled connection is not
//! seen until the next request is written to it, and fails it. Such a
//! request is sent again on a new connection (see `client`); dropping idle
//! connections early makes that rare.

use std::time::Duration;

use rustify::clients::reqwest::Client as HttpClient;
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::{VaultClient, VaultClientSettings};

/// How long a connection stays pooled without a request.
///
/// Shorter than the idle timeouts a server or proxy may be given: the
/// shortest met in practice is about a second (HAProxy's
/// `timeout http-keep-alive` is often set to 1 s; nginx's default is 75 s,
/// cloud load balancers' 60 s and more, OpenBao's 5 min). Their clock
/// starts at the last byte they sent, ours a little later, when the answer
/// has been read: 800 ms leaves a margin under a 1 s timeout. What a new
/// connection costs (a TCP, or TLS, handshake: well under a millisecond, or
/// a few, on a LAN) is paid only by a request after a pause, one per FUSE
/// thread, and cached values spare most of those.
pub const POOL_IDLE: Duration = Duration::from_millis(800);

/// A client for `token` (empty: none) with the other settings of `base`.
pub fn client_for(base: &VaultClientSettings, token: &str) -> Result<VaultClient, String> {
    let mut settings = base.clone();
    settings.token = token.to_string();
    vault_client(settings)
}

/// A Vault client for `settings` whose connections are pooled for at most
/// [`POOL_IDLE`]; otherwise what `VaultClient::new` builds: the same TLS
/// settings (CA files, client certificate, verification), deadline and
/// proxy.
pub fn vault_client(settings: VaultClientSettings) -> Result<VaultClient, String> {
    let built = |e: reqwest::Error| format!("cannot build the Vault client: {e}");
    let mut http = reqwest::ClientBuilder::new()
        .tls_backend_rustls()
        .pool_idle_timeout(POOL_IDLE)
        .tls_danger_accept_invalid_certs(!settings.verify);
    if let Some(timeout) = settings.timeout {
        http = http.timeout(timeout);
    }
    if settings.address.scheme() == "http" {
        // As vaultrs does: no certificates to load for plain HTTP (see
        // https://github.com/seanmonstar/reqwest/issues/2988).
        http = http.tls_certs_only(Vec::new());
    } else {
        for path in &settings.ca_certs {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{path} holds no PEM certificate: {e}"))?;
            http = http.tls_certs_merge(certs);
        }
    }
    if let Some(identity) = &settings.identity {
        http = http.identity(identity.clone());
    }
    if let Some(proxy) = &settings.proxy {
        http = http.proxy(reqwest::Proxy::all(proxy.as_str()).map_err(built)?);
    }
    let http = http.build().map_err(built)?;
    Ok(VaultClient {
        http: HttpClient::new(settings.address.as_str(), http),
        middle: EndpointMiddleware {
            token: settings.token.clone(),
            version: format!("v{}", settings.version),
            wrap: None,
            namespace: settings.namespace.clone(),
        },
        settings,
    })
}
