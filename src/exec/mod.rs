//! `secretfs exec SOURCE... -- COMMAND`: run a command with secrets in its
//! environment, and restart (or signal) it when they change, as envconsul,
//! `op run` or `doppler run` do. No FUSE involved.
//!
//! `env` builds the environment (pure), `sources` reads each SOURCE
//! through the mount's cache code, `watch` re-reads them once per --ttl,
//! `supervisor` runs the command and `signals` carries signals to it.

pub mod env;
pub mod options;
pub mod signals;
pub mod sources;
pub mod supervisor;
pub mod user;
pub mod watch;

use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::hardening;
use crate::start_error::StartError;
use crate::store;

pub use options::{OnChange, Signal};

/// The exit code of secretfs's own failures before the command starts (a
/// SOURCE missing or refused, no token, a bad option), as `env`, `timeout`
/// and `docker run` use it: distinct from the 126/127 of a command that
/// cannot run, and from what the command itself may return.
pub const FAILED: u8 = 125;

/// What `secretfs exec` is asked to do (the app layer makes it from the
/// command line).
pub struct ExecOptions {
    /// Secrets or folders, in order (later ones win).
    pub sources: Vec<String>,
    /// The command to run and its arguments.
    pub command: Vec<OsString>,
    /// Put before every variable name.
    pub prefix: Option<String>,
    /// Upper-case every variable name.
    pub upcase: bool,
    /// Variables the process environment already has keep their value.
    pub no_override: bool,
    /// How often every SOURCE is read again.
    pub ttl: Duration,
    /// What a change does.
    pub on_change: OnChange,
    /// The signal that asks the command to stop before a restart.
    pub stop_signal: Signal,
    /// How long the command may take to stop before SIGKILL.
    pub stop_timeout: Duration,
    /// The user to run the command as (a name or uid).
    pub user: Option<String>,
    /// How to reach Vault: made only when a SOURCE is on Vault.
    pub vault: Box<store::VaultAccess<'static>>,
    /// How to open store files (`file:` SOURCEs) and AWS Secrets Manager
    /// (`aws-sm:` SOURCEs).
    pub stores: store::StoreSettings,
    /// How long to try again while the store does not answer at start.
    pub wait_for_store: Duration,
}

/// Runs `secretfs exec`; returns the exit code: the command's (128+N when
/// signal N ended it), else [`FAILED`], 126 or 127. Errors are printed as
/// one line on stderr.
pub fn run(args: ExecOptions) -> u8 {
    let fail = |message: &dyn std::fmt::Display| {
        eprintln!("secretfs: {message}");
        FAILED
    };
    hardening::no_dumps();
    // Before anything starts: a user that cannot be taken fails at once.
    let user = match args.user.as_deref().map(user::RunAs::resolve).transpose() {
        Ok(u) => u,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("secretfs-io")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the I/O runtime: {e}")),
    };
    let watched = match open_waiting(&args, runtime.handle()) {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    let naming = env::Naming {
        prefix: args.prefix.clone().unwrap_or_default(),
        upcase: args.upcase,
    };
    let watch = watch::Watch::new(watched, naming);
    let first = watch.current().clone();
    tracing::debug!(variables = first.vars.len(), "read every source");

    // Only now: until the command runs, a signal ends secretfs as usual.
    let pipe = match signals::SignalPipe::install(supervisor::FORWARDED) {
        Ok(p) => p,
        Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
    };
    let mailbox: supervisor::Mailbox = Arc::new(Mutex::new(None));
    let waker = pipe.waker();
    let ttl = args.ttl;
    let to_watcher = mailbox.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("secretfs-watch".into())
        .spawn(move || watch.run(ttl, to_watcher, waker))
    {
        return fail(&format!("cannot start the watcher: {e}"));
    }
    let plan = supervisor::Plan {
        command: args.command,
        on_change: args.on_change,
        stop_signal: args.stop_signal,
        stop_timeout: args.stop_timeout,
        secrets_win: !args.no_override,
        user,
    };
    let code = match supervisor::supervise(&plan, &pipe, first, &mailbox) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("secretfs: {}", e.message);
            e.code
        }
    };
    runtime.shutdown_background();
    code
}

/// The first wait before trying an unreachable store again, and the
/// longest: doubled after each try, as OpenBao Agent backs off its logins.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Why the first read of the SOURCEs failed: one line for stderr, and
/// whether waiting may help.
struct NotYet {
    message: String,
    transient: bool,
}

impl From<StartError> for NotYet {
    fn from(e: StartError) -> Self {
        NotYet {
            transient: matches!(e, StartError::StoreUnreachable(_)),
            message: e.to_string(),
        }
    }
}

impl From<sources::Unreadable> for NotYet {
    fn from(e: sources::Unreadable) -> Self {
        NotYet {
            transient: e.transient,
            message: e.to_string(),
        }
    }
}

/// Connects to every SOURCE's store and reads each SOURCE once; while the
/// store does not answer (at the login, or at a first read), tries again
/// with backoff for up to `--wait-for-store` (a server started at the same
/// time, a node still sealed or without a leader), logging each try. A
/// store that answers no is final at once.
fn open_waiting(
    args: &ExecOptions,
    rt: &tokio::runtime::Handle,
) -> Result<Vec<sources::Watched>, String> {
    let wait = args.wait_for_store;
    let deadline = Instant::now() + wait;
    let mut pause = FIRST_RETRY;
    let mut attempt = 1u32;
    // Made once (and only when a SOURCE is on Vault): the token's source
    // is chosen (and warned of) once.
    let made = std::cell::OnceCell::new();
    let vault = || -> Result<store::vault::VaultSettings, StartError> {
        if let Some(s) = made.get() {
            return Ok(Clone::clone(s));
        }
        let s = (args.vault)()?;
        Ok(made.get_or_init(|| s).clone())
    };
    let open = || -> Result<Vec<sources::Watched>, NotYet> {
        let connected = store::connect_each(&args.sources, &vault, &args.stores, rt.clone())?;
        let mut watched = Vec::with_capacity(connected.len());
        for (name, c) in args.sources.iter().zip(connected) {
            watched.push(sources::Watched::open(name, c, args.ttl)?);
        }
        Ok(watched)
    };
    loop {
        let why = match open() {
            Ok(watched) => return Ok(watched),
            Err(e) if !e.transient => return Err(e.message),
            Err(e) => e.message,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(if wait.is_zero() {
                why
            } else {
                format!(
                    "{why} (gave up after waiting {}, --wait-for-store)",
                    humantime::format_duration(wait)
                )
            });
        }
        // Whole milliseconds: the log says `1s 476ms`, not nanoseconds.
        let next = Duration::from_millis(pause.min(left).as_millis() as u64);
        tracing::warn!(
            attempt,
            error = %why,
            retry_in = %humantime::format_duration(next),
            "the store does not answer yet: trying again (--wait-for-store {})",
            humantime::format_duration(wait)
        );
        std::thread::sleep(next);
        pause = (pause * 2).min(MAX_RETRY);
        attempt += 1;
    }
}
