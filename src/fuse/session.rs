//! The FUSE session: mounting the adapter with plain settings, the thread
//! that delivers the core's invalidations, and unmounting.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, INodeNo, MountOption, Notifier, SessionACL};

use super::FuseAdapter;
use crate::audit::AuditLog;
use crate::fs::{Invalidation, SecretFs};
use crate::metrics::Meter;

/// How to mount: the few settings that reach the kernel, nothing of FUSE's.
pub struct MountSettings {
    /// What `/proc/mounts` shows as the source (the SOURCE, exactly).
    pub fsname: String,
    /// Let other users in (the kernel still checks modes).
    pub allow_other: bool,
    /// Mount read-only (`ro`).
    pub read_only: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// With an audit log, every open of a file and every change is
    /// recorded; a read-only mount is then not `ro` in the kernel, so that
    /// each attempted change reaches the daemon, which refuses it (`EROFS`)
    /// and records the attempt.
    pub audit: Option<AuditLog>,
    /// Where FUSE requests and kernel invalidations are counted
    /// (`--metrics`).
    pub meter: Meter,
}

/// A mounted filesystem, served by its own threads until unmounted.
pub struct Mounted {
    session: BackgroundSession,
    mountpoint: PathBuf,
    /// Told when the session ends.
    ended: Arc<tokio::sync::Notify>,
    /// Where the notifier counts invalidations.
    meter: Meter,
}

/// Mounts `core` on `mountpoint` and starts serving it.
pub fn mount(
    core: Arc<SecretFs>,
    mountpoint: &Path,
    settings: MountSettings,
) -> std::io::Result<Mounted> {
    let mut options = vec![
        // Exactly the SOURCE, as mount(8) and fstab name it, so that
        // `mount -a` sees the filesystem as mounted already.
        MountOption::FSName(settings.fsname),
        MountOption::Subtype("secretfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
        MountOption::NoAtime,
    ];
    if settings.read_only && settings.audit.is_none() {
        options.push(MountOption::RO);
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = if settings.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(settings.threads);
    let ended = Arc::new(tokio::sync::Notify::new());
    let session = fuser::spawn_mount(
        FuseAdapter::new(core, settings.audit, settings.meter.clone()).with_ended(ended.clone()),
        mountpoint,
        &config,
    )?;
    Ok(Mounted {
        session,
        mountpoint: mountpoint.to_path_buf(),
        ended,
        meter: settings.meter,
    })
}

/// How long a clean unmount may take before we detach lazily or just exit.
const UNMOUNT_DEADLINE: Duration = Duration::from_secs(10);

impl Mounted {
    /// Starts the thread that delivers the core's invalidations, read
    /// from `rx`, to the kernel.
    pub fn start_notifier(&self, rx: Receiver<Invalidation>) -> std::io::Result<()> {
        spawn_notifier(self.session.notifier(), rx, self.meter.clone())
    }

    /// Returns once the session has ended (the filesystem was unmounted,
    /// from outside or not): told by the session itself, no polling.
    pub async fn ended(&self) {
        self.ended.notified().await;
    }

    /// Waits for the session to end, once it was unmounted from outside.
    ///
    /// fuser's `BackgroundSession::join` drops its `Mount`, which unmounts
    /// the mountpoint again unless the device says it is unmounted — and
    /// fuser 0.18 reads the device's POLLERR (disconnected) as "still
    /// mounted". After an unmount from outside that takes down whatever
    /// was mounted on the path since (a new secretfs after `umount -l`, or
    /// a quick `umount` and mount again). So only the session's thread is
    /// joined; the `Mount` is never dropped: its device closes when the
    /// process exits, which follows.
    pub fn join(self) -> std::io::Result<()> {
        let session = std::mem::ManuallyDrop::new(self.session);
        // SAFETY: `session` is never dropped nor used again, so the join
        // handle read out of it is owned here alone (no double drop).
        let guard = unsafe { std::ptr::read(&session.guard) };
        guard
            .join()
            .map_err(|_| std::io::Error::other("the FUSE session's thread panicked"))?
    }

    /// Unmounts and waits (boundedly) for the session to end. When files
    /// are still open (EBUSY) the mount is detached lazily: it leaves the
    /// namespace now and open files see ENOTCONN once we exit. When the
    /// session does not end (another mount namespace still holds a bind of
    /// it), this returns anyway. An error only when neither worked.
    pub fn unmount(self) -> std::io::Result<()> {
        let Mounted {
            session,
            mountpoint,
            ..
        } = self;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(session.umount_and_join());
        });
        match rx.recv_timeout(UNMOUNT_DEADLINE) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "unmount failed (files still open?): detaching lazily");
                let detached = std::process::Command::new("fusermount3")
                    .arg("-uz")
                    .arg(&mountpoint)
                    .status()
                    .is_ok_and(|s| s.success());
                if detached || !still_mounted(&mountpoint) {
                    // Either way the mount is gone, which is what was asked.
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(_) => {
                tracing::warn!(
                    "the session did not end after unmounting (another mount namespace may still hold it): exiting"
                );
                Ok(())
            }
        }
    }
}

/// Starts the thread that delivers the core's invalidations to the kernel,
/// counting each with `meter`. Notifications go out from this thread
/// only, never from a request's handler: the kernel may hold locks for the
/// request that an invalidation of the same inode waits on.
fn spawn_notifier(
    notifier: Notifier,
    rx: Receiver<Invalidation>,
    meter: Meter,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("secretfs-notify".into())
        .spawn(move || {
            for what in rx {
                let sent = match &what {
                    // Attributes and every cached page.
                    Invalidation::Inode(ino) => {
                        meter.invalidation("inode");
                        notifier.inval_inode(INodeNo(ino.0), 0, 0)
                    }
                    Invalidation::Entry { parent, name } => {
                        meter.invalidation("entry");
                        notifier.inval_entry(INodeNo(parent.0), OsStr::new(name))
                    }
                };
                if let Err(e) = sent {
                    // The kernel may have forgotten the inode meanwhile.
                    tracing::debug!(?what, error = %e, "invalidation not delivered");
                }
            }
        })?;
    Ok(())
}

/// Whether `mountpoint` is still a mount point in this namespace.
fn still_mounted(mountpoint: &Path) -> bool {
    // The parent, not the mount point itself: a dead FUSE mount cannot be
    // resolved (ENOTCONN) and is still mounted.
    let parent = match mountpoint.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (Ok(parent), Some(name)) = (std::fs::canonicalize(parent), mountpoint.file_name()) else {
        return true;
    };
    let wanted = parent.join(name);
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|table| {
        table
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .any(|mp| Path::new(mp) == wanted)
    })
}
