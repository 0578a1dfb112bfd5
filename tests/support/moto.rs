//! A throwaway moto server (`moto_server`, from `pip install
//! 'moto[server]'`; scripts/install-deps installs it) speaking AWS Secrets
//! Manager on a free loopback port, and its API for tests to change and
//! inspect secrets behind a mount's back. Fails the test loudly when moto
//! is missing: never skips.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{die_with_parent, free_port, poll, MountBuilder};

/// The region every test uses.
pub const REGION: &str = "eu-west-1";

/// The credentials moto takes (any).
pub const CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
];

/// A moto server; dropping it kills it.
pub struct Moto {
    child: Option<Child>,
    endpoint: String,
    log: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts a server and waits until it answers.
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// Starts a server with these environment variables (moto's IAM mode:
    /// `INITIAL_NO_AUTH_ACTION_COUNT`).
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        Moto::start_attempt(env, 3)
    }

    /// One start; a port taken between being chosen and being bound makes
    /// moto exit, and then (up to `attempts` times) a new one is tried.
    fn start_attempt(env: &[(&str, &str)], attempts: u32) -> Moto {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start moto_server ({e}): AWS Secrets Manager tests need moto; run scripts/install-deps (pip install 'moto[server]')"
            )
        });
        let mut moto = Moto {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        let up = poll(Duration::from_secs(60), || {
            if let Some(c) = moto.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Some(Err(status));
                }
            }
            let (status, _) = moto.call("ListSecrets", json!({}));
            (status != 0).then_some(Ok(()))
        });
        match up {
            Some(Ok(())) => moto,
            Some(Err(_)) if attempts > 1 && moto.log().contains("already in use") => {
                Moto::start_attempt(env, attempts - 1)
            }
            Some(Err(status)) => panic!("moto_server exited ({status}):\n{}", moto.log()),
            None => panic!("moto_server did not answer in 60 s:\n{}", moto.log()),
        }
    }

    /// Its URL (`--endpoint`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What it printed.
    pub fn log(&self) -> String {
        let mut s = String::new();
        let _ = self.log.reopen().and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// Kills it: its endpoint is dead from now on.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One Secrets Manager request (`action`, e.g. `CreateSecret`): the
    /// HTTP status (0 when nothing answered) and the JSON answer. Moto
    /// takes any signature.
    pub fn call(&self, action: &str, body: Value) -> (u16, Value) {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20240101/{REGION}/secretsmanager/aws4_request, SignedHeaders=host, Signature=0"
        );
        let answer = agent
            .post(&self.endpoint)
            .header("Authorization", &auth)
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("X-Amz-Target", &format!("secretsmanager.{action}"))
            .send(body.to_string());
        match answer {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let text = r.body_mut().read_to_string().unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// [`Moto::call`] that must succeed.
    pub fn ok(&self, action: &str, body: Value) -> Value {
        let (status, answer) = self.call(action, body.clone());
        assert_eq!(status, 200, "{action} {body}: {answer}");
        answer
    }

    /// Creates secret `name` holding SecretString `value`.
    pub fn create(&self, name: &str, value: &str) -> Value {
        self.ok("CreateSecret", json!({"Name": name, "SecretString": value}))
    }

    /// Creates secret `name` holding SecretBinary `bytes`.
    pub fn create_binary(&self, name: &str, bytes: &[u8]) -> Value {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        self.ok("CreateSecret", json!({"Name": name, "SecretBinary": b64}))
    }

    /// A new version of `name` holding `value` (AWSCURRENT moves to it).
    pub fn put(&self, name: &str, value: &str) -> Value {
        self.ok(
            "PutSecretValue",
            json!({"SecretId": name, "SecretString": value}),
        )
    }

    /// Writes `value` to `name` only if its current version is still
    /// `read` (a version id), as secretfs checks a write: stored labelled
    /// AWSPENDING, then AWSCURRENT moved to it from `read`, which AWS
    /// refuses when `read` is no longer current. `false` then (the staged
    /// version is unlabelled).
    pub fn put_if_current(&self, name: &str, value: &str, read: &str) -> bool {
        let staged = self.ok(
            "PutSecretValue",
            json!({"SecretId": name, "SecretString": value, "VersionStages": ["AWSPENDING"]}),
        );
        let staged = staged["VersionId"].as_str().expect("VersionId").to_string();
        let (status, _) = self.call(
            "UpdateSecretVersionStage",
            json!({"SecretId": name, "VersionStage": "AWSCURRENT",
                   "MoveToVersionId": staged, "RemoveFromVersionId": read}),
        );
        let _ = self.call(
            "UpdateSecretVersionStage",
            json!({"SecretId": name, "VersionStage": "AWSPENDING", "RemoveFromVersionId": staged}),
        );
        status == 200
    }

    /// The current version of `name`: GetSecretValue's answer, or `None`.
    pub fn current(&self, name: &str) -> Option<Value> {
        let (status, answer) = self.call(
            "GetSecretValue",
            json!({"SecretId": name, "VersionStage": "AWSCURRENT"}),
        );
        (status == 200).then_some(answer)
    }

    /// The current SecretString of `name` parsed as JSON (a JSON object
    /// secret), or `None`.
    pub fn current_json(&self, name: &str) -> Option<Value> {
        let s = self.current(name)?["SecretString"].as_str()?.to_string();
        serde_json::from_str(&s).ok()
    }

    /// DescribeSecret's answer, or `None` when there is no such secret.
    pub fn describe(&self, name: &str) -> Option<Value> {
        let (status, answer) = self.call("DescribeSecret", json!({"SecretId": name}));
        (status == 200).then_some(answer)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

impl MountBuilder {
    /// Reaches AWS Secrets Manager at `moto` (region, endpoint and
    /// credentials in the environment, as the AWS CLI takes them).
    pub fn aws(self, moto: &Moto) -> Self {
        self.aws_at(moto.endpoint())
    }

    /// Reaches AWS Secrets Manager at `endpoint` (a [`Counted`] moto).
    pub fn aws_at(self, endpoint: &str) -> Self {
        let mut b = self
            .env("AWS_REGION", REGION)
            .env("AWS_ENDPOINT_URL", endpoint);
        for (k, v) in CREDENTIALS {
            b = b.env(k, v);
        }
        b
    }
}

/// A loopback proxy in front of a moto that counts the requests passing
/// through it by action (their `X-Amz-Target`, e.g. `DescribeSecret`):
/// how a test learns how many of each a mount sent. Bytes pass unchanged
/// both ways (moto takes any signature, so a Host of the proxy's is fine).
pub struct Counted {
    endpoint: String,
    seen: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Counted {
    /// A proxy to `moto`, listening on a free loopback port.
    pub fn before(moto: &Moto) -> Counted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let upstream = moto.endpoint().trim_start_matches("http://").to_string();
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let counts = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let counts = counts.clone();
                std::thread::spawn(move || relay(client, server, &counts));
            }
        });
        Counted {
            endpoint: format!("http://127.0.0.1:{port}"),
            seen,
        }
    }

    /// Its URL, to mount with ([`MountBuilder::aws_at`]).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// How many `action` requests went through so far.
    pub fn count(&self, action: &str) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(action).copied().unwrap_or(0)
    }

    /// Every action seen so far, with its count (for messages).
    pub fn all(&self) -> BTreeMap<String, usize> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Copies one connection both ways, counting the `X-Amz-Target` header
/// lines of what the client sends (the whole line is there before it is
/// read: lines are counted once their CRLF has arrived).
fn relay(mut client: TcpStream, mut server: TcpStream, seen: &Mutex<BTreeMap<String, usize>>) {
    let (Ok(mut from_server), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            if let Some(target) = line.strip_prefix("x-amz-target:") {
                let action = target.trim().trim_start_matches("secretsmanager.");
                // Header values are matched lowercased: name the action as
                // AWS spells it back from the original bytes.
                let original = String::from_utf8_lossy(&pending[..end]).into_owned();
                let spelled = original
                    .rsplit('.')
                    .next()
                    .map(str::trim)
                    .filter(|a| a.eq_ignore_ascii_case(action))
                    .unwrap_or(action)
                    .to_string();
                *seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(spelled)
                    .or_insert(0) += 1;
            }
            pending.drain(..end + 2);
        }
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Write);
    let _ = back.join();
}
