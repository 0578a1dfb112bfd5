//! Where the token comes from and how it stays valid, against a real
//! OpenBao through a real mount: AppRole and Kubernetes logins repeated
//! before the token reaches its maximum TTL (Kubernetes against a stand-in
//! for the API server's TokenReview, the one part of Kubernetes OpenBao
//! calls), a token file whose token is rotated, and clear start-up errors
//! for bad credentials.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Bao, Mount};

const READER: &str = r#"
path "secret/data/*" { capabilities = ["read", "list"] }
path "secret/metadata/*" { capabilities = ["list", "read"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
"#;

/// Creates the policy `reader` (read and list secret/).
fn reader_policy(bao: &Bao) {
    let (status, resp) = bao.api(
        "PUT",
        "sys/policies/acl/reader",
        Some(json!({ "policy": READER })),
    );
    assert!(status < 300, "policy: {status} {resp}");
}

/// Creates the policy `reader` and an AppRole role `app` whose tokens live
/// `ttl` and at most `max_ttl`; writes its role ID and a secret ID to files.
fn approle(bao: &Bao, dir: &Path, ttl: &str, max_ttl: &str) -> (String, String) {
    reader_policy(bao);
    let (status, resp) = bao.api("POST", "sys/auth/approle", Some(json!({"type": "approle"})));
    assert!(status < 300, "enable approle: {status} {resp}");
    let (status, resp) = bao.api(
        "POST",
        "auth/approle/role/app",
        Some(json!({"token_policies": "reader", "token_ttl": ttl, "token_max_ttl": max_ttl})),
    );
    assert!(status < 300, "role: {status} {resp}");
    let (_, resp) = bao.api("GET", "auth/approle/role/app/role-id", None);
    let role_id = resp["data"]["role_id"]
        .as_str()
        .expect("role_id")
        .to_string();
    let (_, resp) = bao.api("POST", "auth/approle/role/app/secret-id", None);
    let secret_id = resp["data"]["secret_id"]
        .as_str()
        .expect("secret_id")
        .to_string();
    let role_file = dir.join("role-id");
    let secret_file = dir.join("secret-id");
    std::fs::write(&role_file, format!("{role_id}\n")).unwrap();
    std::fs::write(&secret_file, format!("{secret_id}\n")).unwrap();
    (
        role_file.display().to_string(),
        secret_file.display().to_string(),
    )
}

/// A token with the `reader` policy living `ttl` at most, not renewable.
fn short_token(bao: &Bao, ttl: &str) -> String {
    reader_policy(bao);
    let (status, resp) = bao.api(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["reader"], "ttl": ttl, "renewable": false})),
    );
    assert!(status < 300, "token: {status} {resp}");
    resp["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// Reads `path` once a second for `span` (the value is cached for 1 s, so
/// each read past the TTL asks Vault): every read must give `want`.
fn keeps_reading(m: &Mount, rel: &str, want: &[u8], span: Duration) {
    let start = Instant::now();
    while start.elapsed() < span {
        match std::fs::read(m.at(rel)) {
            Ok(v) => assert_eq!(v, want),
            Err(e) => panic!(
                "{e} after {:?} (the first token has run out by then?):\n{}",
                start.elapsed(),
                m.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
}

#[test]
fn approle_logs_in_and_again_before_the_token_reaches_its_maximum_ttl() {
    let bao = Bao::start_audited();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    let dir = tempfile::tempdir().unwrap();
    // Renewable for 4 s at a time, 8 s at most: the mount outlives three tokens.
    let (role, secret) = approle(&bao, dir.path(), "4s", "8s");
    let m = Mount::with_token(
        &bao,
        "",
        "secret/",
        &[
            "--ttl",
            "1s",
            "--auth",
            "approle",
            "--role-id-file",
            &role,
            "--secret-id-file",
            &secret,
        ],
    );
    keeps_reading(&m, "app/K", b"v", Duration::from_secs(20));
    // One login at start and at least two more (8 s max TTL, 20 s of reads).
    let logins = bao.requests("update", "auth/approle/login");
    assert!(logins >= 3, "{logins} AppRole logins in 20 s");
    let log = m.log();
    let role_id = std::fs::read_to_string(&role).unwrap();
    let secret_id = std::fs::read_to_string(&secret).unwrap();
    assert!(
        !log.contains(role_id.trim()) && !log.contains(secret_id.trim()),
        "a credential reached the log"
    );
}

#[test]
fn a_token_file_rotated_before_its_token_expires_is_picked_up() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let first = short_token(&bao, "8s");
    std::fs::write(&file, &first).unwrap();
    let m = Mount::with_token(
        &bao,
        "",
        "secret/",
        &["--ttl", "1s", "--token-file", &file.display().to_string()],
    );
    assert_eq!(std::fs::read(m.at("app/K")).unwrap(), b"v");
    // As Vault Agent's sink does: a new token replaces the file's content.
    let next = short_token(&bao, "1h");
    let tmp = dir.path().join("token.tmp");
    std::fs::write(&tmp, &next).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    keeps_reading(&m, "app/K", b"v", Duration::from_secs(14));
    // Reads went on past the first token's end: the new one was in use.
    let (status, resp) = bao.api("POST", "auth/token/lookup", Some(json!({ "token": first })));
    assert_ne!(status, 200, "the first token is still valid: {resp}");
    assert!(!m.log().contains(&next), "the token reached the log");
}

#[test]
fn bad_approle_credentials_fail_at_start_with_one_line() {
    let bao = Bao::start();
    let dir = tempfile::tempdir().unwrap();
    let (role, _) = approle(&bao, dir.path(), "1m", "1h");
    let wrong = dir.path().join("wrong-secret-id");
    std::fs::write(&wrong, "00000000-0000-0000-0000-000000000000").unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "wrong secret ID",
            vec![
                "--role-id-file",
                &role,
                "--secret-id-file",
                wrong.to_str().unwrap(),
            ],
        ),
        (
            "no role ID file",
            vec!["--secret-id-file", wrong.to_str().unwrap()],
        ),
        (
            "missing file",
            vec!["--role-id-file", "/nonexistent/role-id"],
        ),
    ];
    for (what, args) in cases {
        let (status, stderr) = Mount::builder(&bao, "secret/")
            .no_token()
            .at(&mnt)
            .args(&["--auth", "approle"])
            .args(&args)
            .fail();
        assert!(!status.success(), "{what}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.starts_with("secretfs: "), "{what}: {stderr}");
    }
}

#[test]
fn a_login_whose_token_is_refused_names_the_login_and_the_role_settings_to_check() {
    let bao = Bao::start();
    let dir = tempfile::tempdir().unwrap();
    let (role, secret) = approle(&bao, dir.path(), "1m", "1h");
    // The role's tokens lack the default policy: they may not look
    // themselves up, which secretfs does at start.
    let (status, resp) = bao.api(
        "POST",
        "auth/approle/role/app",
        Some(json!({"token_policies": "reader", "token_no_default_policy": true})),
    );
    assert!(status < 300, "role: {status} {resp}");
    let (status, stderr) = Mount::builder(&bao, "secret/")
        .no_token()
        .args(&["--auth", "approle", "--role-id-file", &role])
        .args(&["--secret-id-file", &secret])
        .fail();
    assert!(!status.success(), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("refused the token (403) from an AppRole login at auth/approle")
            && stderr.contains("token_no_default_policy"),
        "{stderr}"
    );
}

/// A certificate for `kubernetes_ca_cert`, which OpenBao insists on; the
/// fake API server below speaks plain HTTP, so it is never used.
const FAKE_KUBERNETES_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBkjCCATegAwIBAgIUMdT7Y4tIrN1YORr6bG9nJ+6csPAwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSZmFrZS1rdWJlcm5ldGVzLWNhMCAXDTI2MTEyOTA3NTA0MFoY
DzIxMjYxMTA1MDc1MDQwWjAdMRswGQYDVQQDDBJmYWtlLWt1YmVybmV0ZXMtY2Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQrbJEm5VuySfcvVlL4Lbw71SOPcwoE
DbhtwSgVBzouGXcDDK+yT8kapUH81TDRcUoheesPHMG/bAhP+kqI6YmXo1MwUTAd
BgNVHQ4EFgQUGcRjkS37evQRGJzGC2lO3dW8kR0wHwYDVR0jBBgwFoAUGcRjkS37
evQRGJzGC2lO3dW8kR0wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBG
AiEA7glKBvhGnUAKPlH2mbnFQ334pIooylkXJwc6Ln5RiYACIQD9pROF3nFhyLFg
SuMgk0ZxF8E6BeU+kszIFh91oqyOZQ==
-----END CERTIFICATE-----
";

/// A stand-in for the Kubernetes API's TokenReview: says yes to every
/// token, as service account `default/app`. Returns its URL and how many
/// reviews it answered (one per login).
fn fake_kubernetes_api() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let reviews = Arc::new(AtomicUsize::new(0));
    let count = reviews.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            count.fetch_add(1, Ordering::SeqCst);
            let answer = json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "status": {
                    "authenticated": true,
                    "user": {"username": "system:serviceaccount:default:app", "uid": "uid-1234"}
                }
            })
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, reviews)
}

/// A service account token as the kubelet mounts it (legacy claims; the
/// signature is not checked here: OpenBao asks the TokenReview API).
fn service_account_jwt() -> String {
    use std::fmt::Write as _;
    let b64 = |s: &str| {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in s.as_bytes().chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                let _ = out.write_char(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    };
    let header = b64(r#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = b64(&json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "default",
        "kubernetes.io/serviceaccount/service-account.name": "app",
        "kubernetes.io/serviceaccount/service-account.uid": "uid-1234",
        "sub": "system:serviceaccount:default:app"
    })
    .to_string());
    format!("{header}.{claims}.{}", b64("not-checked"))
}

#[test]
fn kubernetes_auth_logs_in_with_the_service_account_token_and_again_later() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    let (api, reviews) = fake_kubernetes_api();
    reader_policy(&bao);
    let (status, resp) = bao.api(
        "POST",
        "sys/auth/kubernetes",
        Some(json!({"type": "kubernetes"})),
    );
    assert!(status < 300, "enable kubernetes: {status} {resp}");
    let (status, resp) = bao.api(
        "POST",
        "auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": api,
            "kubernetes_ca_cert": FAKE_KUBERNETES_CA,
            "disable_local_ca_jwt": true
        })),
    );
    assert!(status < 300, "config: {status} {resp}");
    let (status, resp) = bao.api(
        "POST",
        "auth/kubernetes/role/app",
        Some(json!({
            "bound_service_account_names": ["app"],
            "bound_service_account_namespaces": ["default"],
            "token_policies": ["reader"],
            "token_ttl": "4s",
            "token_max_ttl": "8s"
        })),
    );
    assert!(status < 300, "role: {status} {resp}");
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("token");
    std::fs::write(&jwt, service_account_jwt()).unwrap();
    let m = Mount::with_token(
        &bao,
        "",
        "secret/",
        &[
            "--ttl",
            "1s",
            "--auth",
            "kubernetes",
            "--role",
            "app",
            "--jwt-file",
            jwt.to_str().unwrap(),
        ],
    );
    keeps_reading(&m, "app/K", b"v", Duration::from_secs(20));
    let log = m.log();
    // One login at start and at least two more (8 s max TTL, 20 s of reads).
    assert!(reviews.load(Ordering::SeqCst) >= 3, "{log}");
    assert!(
        !log.contains(&service_account_jwt()),
        "the JWT reached the log"
    );
}

/// A self-signed TLS client certificate and its key, made with openssl.
fn client_certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=secretfs-test"])
        .args(["-addext", "extendedKeyUsage=clientAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is missing: scripts/install-deps installs it");
    assert!(out.status.success(), "openssl: {out:?}");
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn tls_certificate_auth_logs_in_with_the_client_certificate_and_again_later() {
    let bao = Bao::start_tls_audited();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    reader_policy(&bao);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = client_certificate(dir.path());
    let (status, resp) = bao.api("POST", "sys/auth/cert", Some(json!({"type": "cert"})));
    assert!(status < 300, "enable cert: {status} {resp}");
    let (status, resp) = bao.api(
        "POST",
        "auth/cert/certs/app",
        Some(json!({
            "certificate": std::fs::read_to_string(&cert).unwrap(),
            "token_policies": "reader",
            "token_ttl": "4s",
            "token_max_ttl": "8s"
        })),
    );
    assert!(status < 300, "cert role: {status} {resp}");
    let ca = bao.ca_cert().display().to_string();
    let m = Mount::with_token(
        &bao,
        "",
        "secret/",
        &[
            "--ttl",
            "1s",
            "--ca-cert",
            &ca,
            "--auth",
            "cert",
            "--client-cert",
            &cert,
            "--client-key",
            &key,
        ],
    );
    keeps_reading(&m, "app/K", b"v", Duration::from_secs(20));
    // One login at start and at least two more (8 s max TTL, 20 s of reads).
    let logins = bao.requests("update", "auth/cert/login");
    assert!(logins >= 3, "{logins} certificate logins in 20 s");

    // Without the certificate, or with one the server does not trust: one
    // line at start, nothing mounted.
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (untrusted, untrusted_key) = client_certificate(&other);
    let cases: [(&str, Vec<&str>); 2] = [
        ("no client certificate", vec![]),
        (
            "untrusted certificate",
            vec!["--client-cert", &untrusted, "--client-key", &untrusted_key],
        ),
    ];
    for (what, args) in cases {
        let (status, stderr) = Mount::builder(&bao, "secret/")
            .no_token()
            .at(&mnt)
            .args(&["--ca-cert", &ca, "--auth", "cert"])
            .args(&args)
            .fail();
        assert!(!status.success(), "{what}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.starts_with("secretfs: "), "{what}: {stderr}");
    }
}
