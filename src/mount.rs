//! `secretfs mount`: check the mountpoint, reach the store, build the core,
//! mount it (through `crate::fuse`), report readiness, and unmount cleanly
//! on SIGINT/SIGTERM. SIGHUP reopens the audit log.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::app::vault::vault_settings;
use crate::audit::AuditLog;
use crate::cli::MountArgs;
use crate::daemon::{self, Readiness};
use crate::fs::cache::{CachePolicy, SystemClock};
use crate::fs::view::Views;
use crate::fs::{Background, FsConfig, Presentation, SecretFs};
use crate::fuse::{self, MountSettings, Mounted};
use crate::hardening;
use crate::metrics::{self, Meter, Metrics};
use crate::start_error::StartError;
use crate::status;
use crate::store;

/// Mounts and serves until told to stop. An `Err`'s `Display` is one line
/// for stderr.
///
/// In the mount-helper form (`--background`) this starts a background copy
/// of itself and returns once that copy reports the filesystem ready.
pub fn run(mut args: MountArgs) -> Result<(), StartError> {
    accept_stop_signals();
    // The background daemon starts in the caller's directory (so that it
    // reads its arguments as the caller meant them) and then leaves it for
    // `/`, so as not to hold it busy: every path it keeps using must be
    // absolute by then.
    absolute_paths(&mut args);
    if args.ready_fd.is_some() {
        if let Err(e) = std::env::set_current_dir("/") {
            tracing::warn!(error = %e, "cannot change to /");
        }
    }
    // SIGHUP reopens the audit log once the runtime catches it; until
    // then it must not end the daemon.
    // SAFETY: setting a signal's disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    if args.background && !args.foreground && args.ready_fd.is_none() {
        // The daemon's own checks are bounded by --timeout: a login and a
        // token check per address tried, a mount lookup per SOURCE and
        // layer; mounting is quick.
        let addrs = u32::try_from(args.vault.addr.len().max(1)).unwrap_or(u32::MAX);
        let sources = u32::try_from(args.layer.len() + 1).unwrap_or(u32::MAX);
        let deadline = args.vault.timeout * (2 * addrs + sources) + Duration::from_secs(10);
        return daemon::spawn_and_wait(args.log_file.as_deref(), deadline);
    }
    let mut readiness = Readiness::new(args.ready_fd);
    let result = serve(args, &mut readiness);
    if let Err(e) = &result {
        readiness.failed(&e.to_string());
    }
    result
}

/// Makes every path option absolute, taken from the current directory
/// (lexically: symlinks and `..` are left for the kernel). A relative
/// `--on-change` shell command is not rewritten: the background daemon
/// runs it from `/`.
fn absolute_paths(args: &mut MountArgs) {
    fn fix(path: &mut std::path::PathBuf) {
        if path.is_relative() {
            if let Ok(absolute) = std::path::absolute(&*path) {
                *path = absolute;
            }
        }
    }
    fn fix_opt(path: &mut Option<std::path::PathBuf>) {
        if let Some(path) = path {
            fix(path);
        }
    }
    fix(&mut args.mountpoint);
    fix_opt(&mut args.log_file);
    // A store file named relatively (`file:app.age`, `file:app.age#db`).
    let fix_source = |source: &mut String| {
        if let Some(rest) = source.strip_prefix("file:") {
            if let Ok(absolute) = std::path::absolute(rest) {
                *source = format!("file:{}", absolute.display());
            }
        }
    };
    fix_source(&mut args.source);
    args.layer.iter_mut().for_each(fix_source);
    let vault = &mut args.vault;
    for path in [
        &mut vault.token_file,
        &mut vault.role_id_file,
        &mut vault.secret_id_file,
        &mut vault.client_cert,
        &mut vault.client_key,
        &mut vault.ca_cert,
    ] {
        fix_opt(path);
    }
    fix(&mut vault.jwt_file);
    fix_opt(&mut args.age.identity);
    fix_opt(&mut args.age.identity_passphrase_file);
    fix_opt(&mut args.service.audit_log);
    args.service.allow_file.iter_mut().for_each(fix);
    if let Some(crate::hook::Hook::Signal { pidfile, .. }) = &mut args.service.on_change {
        fix(pidfile);
    }
}

fn serve(args: MountArgs, readiness: &mut Readiness) -> Result<(), StartError> {
    hardening::no_dumps();
    if args.service.mlock {
        hardening::lock_memory()?;
    }
    check_mountpoint(&args.mountpoint)?;
    let allow_other = allow_other(&args);
    fuse::device::check(allow_other).map_err(StartError::Fuse)?;
    let access = crate::access::Access::load(&args.service.allow, &args.service.allow_file)
        .map_err(StartError::Options)?;
    if !access.rules.is_empty() && args.files.layout != crate::fs::view::Layout::Keys {
        // A file showing a whole secret (P.json) can be renamed aside or
        // replaced under names no rule would cover yet.
        return Err(StartError::Options(
            "--allow rules work with --layout keys only (for now)".into(),
        ));
    }
    if !access.rules.is_empty() {
        tracing::info!(
            rules = access.rules.len(),
            "--allow rules: every open reaches the daemon; covered files bypass the page cache"
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("secretfs-io")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    // Caught from now on, so that SIGHUP (logrotate's) never ends the daemon.
    let hangup = {
        let _entered = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot catch SIGHUP"))
            .ok()
    };
    // Bound before anything else, so a busy address fails the mount; on
    // before connecting, so the first token lease is counted.
    let meter = start_metrics(args.service.metrics.as_deref())?;
    let vault = || vault_settings(&args.vault);
    let stores =
        crate::app::store_settings(&args.age, &args.aws, args.vault.timeout, meter.clone());
    let connected = if args.layer.is_empty() {
        store::connect(&args.source, &vault, &stores, runtime.handle().clone())?
    } else {
        store::connect_layered(
            &args.source,
            &args.layer,
            &vault,
            &stores,
            runtime.handle().clone(),
        )?
    };

    warn_if_empty(&connected, &args, readiness);
    // Where the core's invalidations go: the notifier thread reads them
    // once the mount is up.
    let (invalidations, for_notifier) = std::sync::mpsc::channel();
    let (core, mut background) = build_core(connected, &args, access, invalidations, meter.clone());

    let audit = args
        .service
        .audit_log
        .as_deref()
        .map(|path| {
            AuditLog::open(path, args.service.audit_syslog).map_err(|reason| StartError::Audit {
                path: path.to_path_buf(),
                reason,
            })
        })
        .transpose()?;
    let settings = MountSettings {
        fsname: args.source.clone(),
        allow_other: allow_other.is_some(),
        read_only: args.files.layout.read_only(args.files.writable),
        threads: usize::try_from(args.service.threads).unwrap_or(1),
        audit: audit.clone(),
        meter,
    };
    let mounted = fuse::mount(core.clone(), &args.mountpoint, settings).map_err(|reason| {
        StartError::Mount {
            path: args.mountpoint.clone(),
            reason,
            hint: fuse::device::hint_after_refusal(),
        }
    })?;
    if let Err(e) = mounted.start_notifier(for_notifier) {
        // Kernel caches still expire with the TTL (attributes say so).
        tracing::warn!(error = %e, "cannot start the notifier thread");
    }
    tracing::info!(mountpoint = %args.mountpoint.display(), source = %args.source, "mounted");
    readiness.ready();

    let stopped_by_signal = runtime.block_on(wait_for_stop(&mounted, hangup, audit.as_ref()));
    if stopped_by_signal {
        daemon::notify_systemd("STOPPING=1");
        tracing::info!("unmounting");
        if let Err(reason) = mounted.unmount() {
            // Still write what waits, and flush the audit log, first.
            background.stop();
            core.settle(true);
            flush_audit(audit.as_ref());
            return Err(StartError::Unmount {
                path: args.mountpoint.clone(),
                reason,
            });
        }
    } else {
        tracing::info!("unmounted from outside");
        if let Err(e) = mounted.join() {
            tracing::warn!(error = %e, "session ended with an error");
        }
    }
    // The core's threads end first; then removals and temporary files left
    // for later are written, while the store can still be reached.
    background.stop();
    core.settle(true);
    runtime.shutdown_timeout(Duration::from_secs(1));
    // The session may not have ended (a lazy detach, another namespace
    // holding the mount), and with it the adapter's copy of the log: the
    // records written so far reach the file before we exit.
    flush_audit(audit.as_ref());
    Ok(())
}

/// Whether other users may use the mount, and the option that says so:
/// `--allow-other`, or implied by `--uid`/`--gid` naming someone else than
/// the mounting user, since the files would be theirs but FUSE would let
/// only the mounting user in (the modes still decide who reads what:
/// `default_permissions`).
fn allow_other(args: &MountArgs) -> Option<&'static str> {
    if args.files.allow_other {
        return Some("--allow-other");
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let other_uid = args.files.uid.filter(|u| *u != uid);
    let other_gid = args.files.gid.filter(|g| *g != gid);
    if other_uid.is_none() && other_gid.is_none() {
        return None;
    }
    tracing::info!(
        uid = args.files.uid,
        gid = args.files.gid,
        "--uid/--gid name another user than the mounting one: mounting with allow_other \
         (file modes decide who reads what)"
    );
    Some("--uid/--gid naming another user (which imply allow_other)")
}

/// Warns when SOURCE shows nothing (a folder that lists nothing, the KV v2
/// API path, a secret in a layout of one file per secret), with the fix:
/// in the log, on stderr in the foreground with --log-file, and to the
/// waiting process in the mount-helper form. Only a single SOURCE is asked
/// (a layer may be empty on purpose), and templates show their own files.
fn warn_if_empty(connected: &store::Connected, args: &MountArgs, readiness: &mut Readiness) {
    use crate::fs::view::Layout;
    if !args.layer.is_empty() || matches!(args.files.layout, Layout::Templates(_)) {
        return;
    }
    let keys = args.files.layout == Layout::Keys;
    let Some(why) = store::empty_source::why_empty(&args.source, connected, keys) else {
        return;
    };
    tracing::warn!(source = %args.source, "{why}");
    readiness.warn(&why);
    if args.log_file.is_some() && args.ready_fd.is_none() {
        eprintln!("secretfs: warning: {why}");
    }
}

/// Writes out the audit records so far (at most 5 s).
fn flush_audit(audit: Option<&AuditLog>) {
    if let Some(audit) = audit {
        if !audit.flush(Duration::from_secs(5)) {
            tracing::error!("the audit log could not be flushed before exiting");
        }
    }
}

/// Serves `--metrics` at `addr`, when given: the meter every part of the
/// mount records with (its levels attached once the core is built), or
/// [`Meter::off`].
fn start_metrics(addr: Option<&str>) -> Result<Meter, StartError> {
    let Some(addr) = addr else {
        return Ok(Meter::off());
    };
    let failed = |reason| StartError::Metrics {
        addr: addr.to_string(),
        reason,
    };
    let server = metrics::serve(addr).map_err(failed)?;
    let metrics = Arc::new(Metrics::new());
    server.start(metrics.clone()).map_err(failed)?;
    Ok(Meter::to(metrics))
}

/// The core over the connected store, configured by the command line,
/// sending what the kernel must forget to `invalidations` and counting
/// with `meter`, with its background threads running: refreshers,
/// sweeper, settler, and the `--on-change` watcher (whose hook thread
/// starts here too).
fn build_core(
    connected: store::Connected,
    args: &MountArgs,
    access: crate::access::Access,
    invalidations: std::sync::mpsc::Sender<crate::fs::Invalidation>,
    meter: Meter,
) -> (Arc<SecretFs>, Background) {
    let mut builder = SecretFs::builder(
        connected.store,
        connected.root,
        fs_config(args),
        Arc::new(SystemClock),
    )
    .send_invalidations_to(invalidations)
    .metrics(meter)
    .access(access)
    .housekeeping();
    if args.service.audit_log.is_some() {
        // Every open is recorded: none may skip the daemon.
        builder = builder.record_opens();
    }
    builder = match &args.files.layout {
        crate::fs::view::Layout::Templates(dir) => builder.templates(dir.clone()),
        layout => builder.views(Views::of_layout(layout)),
    };
    // Absolute, as mountinfo spells it and as the paths handed to the hook
    // must be; resolved before our mount covers it.
    let at = || std::fs::canonicalize(&args.mountpoint).unwrap_or(args.mountpoint.clone());
    if args.cache.max_inodes > 0 {
        let at = at();
        let max = usize::try_from(args.cache.max_inodes).unwrap_or(usize::MAX);
        builder = builder.bound_inodes(
            max,
            Box::new(move || {
                let device = crate::mounted_over::device_of(&at)?;
                crate::mounted_over::paths_mounted_over(&device)
            }),
        );
    }
    if let Some(hook) = args.service.on_change.clone() {
        let (tx, rx) = std::sync::mpsc::channel();
        match crate::hook::start(hook, at(), rx) {
            Ok(()) => builder = builder.report_changes_to(tx),
            Err(e) => tracing::warn!(error = %e, "cannot start the --on-change thread"),
        }
    }
    builder.build()
}

/// The core's configuration: what the command line says, and the mounting
/// user as the owner unless told otherwise.
fn fs_config(args: &MountArgs) -> FsConfig {
    let capacity =
        NonZeroUsize::new(usize::try_from(args.cache.cache_entries).unwrap_or(usize::MAX))
            .unwrap_or(NonZeroUsize::MIN);
    let policy = CachePolicy {
        ttl: args.cache.ttl,
        negative_ttl: args.cache.negative_ttl,
        stale_if_error: args.cache.stale_if_error,
        capacity,
    };
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let presentation = Presentation {
        uid: args.files.uid.unwrap_or(uid),
        gid: args.files.gid.unwrap_or(gid),
        file_mode: args.files.file_mode,
        dir_mode: args.files.dir_mode,
    };
    FsConfig {
        presentation,
        cache: policy,
        read_only: args.files.layout.read_only(args.files.writable),
        max_value_size: args.files.max_value_size,
        background_refresh: !args.cache.blocking_refresh,
    }
}

/// Waits for SIGINT/SIGTERM (`true`) or for the session to end because the
/// filesystem was unmounted from outside (`false`). Each SIGHUP meanwhile
/// reopens the audit log.
async fn wait_for_stop(
    mounted: &Mounted,
    mut hangup: Option<tokio::signal::unix::Signal>,
    audit: Option<&AuditLog>,
) -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return true;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return true,
            _ = int.recv() => return true,
            Some(()) = async { hangup.as_mut()?.recv().await } => match audit {
                Some(audit) => audit.reopen(),
                None => tracing::info!("SIGHUP: no audit log to reopen"),
            },
            () = mounted.ended() => return false,
        }
    }
}

/// Unblocks SIGTERM, SIGINT and SIGHUP, which a parent may have left blocked (the
/// mask is inherited across exec): blocked, they would stay pending and the
/// mount would never end cleanly. Runs before any thread starts, so every
/// thread inherits the mask.
fn accept_stop_signals() {
    // SAFETY: signal-set calls on a local set, then pthread_sigmask.
    let failed = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) != 0
    };
    if failed {
        tracing::warn!("cannot unblock SIGTERM/SIGINT/SIGHUP");
    }
}

/// The mountpoint must be an existing, empty directory. A dead FUSE mount
/// left there by a killed daemon ("Transport endpoint is not connected") is
/// detached first, so that a restart just works; a live secretfs mount is
/// named as such (not as a directory that is not empty).
fn check_mountpoint(path: &Path) -> Result<(), StartError> {
    if let Some(pid) = status::mounted_by_secretfs(path) {
        return Err(StartError::AlreadyMounted {
            path: path.to_path_buf(),
            pid,
        });
    }
    match empty_dir(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(mountpoint = %path.display(), "detaching a dead mount left by a previous daemon");
            let detached = std::process::Command::new("fusermount3")
                .arg("-uz")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            if !detached {
                return Err(StartError::DeadMount {
                    path: path.to_path_buf(),
                    reason: e,
                });
            }
            empty_dir(path)
        }
        other => other,
    }
    .map_err(|reason| StartError::Mountpoint {
        path: path.to_path_buf(),
        reason,
    })?
    .then_some(())
    .ok_or_else(|| StartError::MountpointNotEmpty {
        path: path.to_path_buf(),
    })
}

/// Whether `path` is an empty directory (an error if it is no directory).
fn empty_dir(path: &Path) -> std::io::Result<bool> {
    if !std::fs::metadata(path)?.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    Ok(std::fs::read_dir(path)?.next().is_none())
}
