//! The core of secretfs: the filesystem's operations over a [`SecretStore`],
//! free of FUSE. Each operation returns plain structs or an [`Error`]; the
//! FUSE adapter (`crate::fuse`) only translates.
//!
//! `SecretFs` is made of parts with interfaces of their own: the store
//! behind the cache (`cache`), every node (`namespace`), the views that
//! show secrets as files (`view`), the open handles (`handle`) and the
//! write buffers and commits (`writers`). Its operations: names to nodes
//! in `lookup`, reads in `read`, directory listings in `readdir`, changes
//! in `write`, extended attributes in `xattr`; what the kernel must forget
//! in `invalidate`.

mod builder;
pub mod cache;
/// The clock's module, where tests and the daemon name it: it is part of the cache.
pub use cache::clock;
pub mod context;
mod halt;
pub mod handle;
pub mod inode;
mod invalidate;
pub mod local;
mod lookup;
mod map;
pub mod names;
pub mod namespace;
pub mod open;
mod permits;
mod read;
mod readdir;
mod settle;
pub mod shows;
mod switch;
pub mod template;
pub mod view;
mod watch;
mod write;
pub mod writers;
pub mod xattr;

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;

use crate::error::{Error, Result};
use crate::store::{Listing, Secret, SecretPath};
pub use builder::{Background, Builder};
use cache::{CachePolicy, Cached, Clock, Refresh, Source};
pub use context::OpContext;
use handle::HandleTable;
use inode::{Ino, NodeKind};
pub use invalidate::Invalidation;
use namespace::Namespace;
pub use open::{Opened, PageCache};
pub use readdir::{DirEntry, DirReplier};
use view::{Placement, View, ViewId, Views};
pub use write::Creating;
use writers::Writers;

/// Ownership and modes shown on every node.
#[derive(Debug, Clone, Copy)]
pub struct Presentation {
    /// Owner of every file and directory.
    pub uid: u32,
    /// Group of every file and directory.
    pub gid: u32,
    /// Permission bits of key files.
    pub file_mode: u16,
    /// Permission bits of directories.
    pub dir_mode: u16,
}

/// Everything the core is configured with.
#[derive(Debug, Clone, Copy)]
pub struct FsConfig {
    /// Owner and modes.
    pub presentation: Presentation,
    /// Cache lifetimes and size.
    pub cache: CachePolicy,
    /// Refuse every change with `EROFS`.
    pub read_only: bool,
    /// Largest value a write may produce, in bytes (`EFBIG` past it).
    pub max_value_size: u64,
    /// Refresh answers read near their expiry in the background, before
    /// they expire, on threads [`Builder::build`] starts.
    pub background_refresh: bool,
}

/// A failure logged, as `secretfs status` reports the last one.
struct Failure {
    at: SystemTime,
    what: String,
}

/// How much the mount holds, for `secretfs status` and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Inodes the kernel may hold (the root included).
    pub inodes: usize,
    /// Folder listings cached.
    pub listings: usize,
    /// Secrets cached.
    pub secrets: usize,
    /// Files holding the version of their secret they were last shown.
    pub shown: usize,
    /// Open file handles.
    pub handles: usize,
    /// Whether the store is taken to be down (a probe is waiting for it).
    pub store_down: bool,
}

/// Attributes of one node, and how long the kernel may keep them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Directory or file.
    pub is_dir: bool,
    /// Size in bytes (the value's length for files, 0 for directories).
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (the KV v2 version's creation time when known).
    pub mtime: SystemTime,
    /// How long these attributes (and the name leading here) stay valid.
    pub valid_for: Duration,
}

/// What a name in a directory stands for.
enum Child {
    /// A folder, a secret, or both.
    Dir(SecretPath),
    /// A file of a secret seen through a view, as `version` shows it.
    File {
        /// The file: its secret, view and name.
        file: FileRef,
        /// The version of the secret found.
        version: Arc<Secret>,
    },
    /// A file created and not yet written to the store.
    NewFile(FileRef),
    /// A scratch file, in memory only.
    Scratch(SecretPath),
    /// A file rendered from a template, by its name.
    Template(String),
}

/// A file of a secret seen through a view.
#[derive(Debug, Clone)]
pub(crate) struct FileRef {
    /// The secret.
    secret: SecretPath,
    /// The view.
    view: ViewId,
    /// The file's name.
    name: String,
}

impl FileRef {
    fn kind(&self) -> NodeKind {
        NodeKind::File {
            secret: self.secret.clone(),
            view: self.view,
            name: self.name.clone(),
        }
    }
}

/// Threads refreshing answers ahead of their expiry.
const REFRESHERS: usize = 4;

/// How long the kernel may trust an answer about in-memory nodes, which
/// only this process changes.
const LOCAL_TTL: Duration = Duration::from_secs(1);

/// Says which paths inside the mount (relative to its root) something is
/// mounted on, in any mount namespace; `None` when it cannot tell.
pub type MountedOver = Box<dyn Fn() -> Option<std::collections::HashSet<String>> + Send + Sync>;

/// The filesystem.
pub struct SecretFs {
    /// The store behind the cache.
    source: Arc<Source>,
    /// Every node: the inode table and what lives only in memory.
    names: Namespace,
    handles: HandleTable,
    /// Write buffers of open files, and commits.
    writers: Writers,
    config: FsConfig,
    /// How secrets show as files.
    views: Views,
    /// The last failure logged, for `secretfs status`.
    last_error: Mutex<Option<Failure>>,
    /// Where invalidations for the kernel go (a mount's notifier), if
    /// anywhere.
    invalidations: Option<std::sync::mpsc::Sender<Invalidation>>,
    /// Where the paths of changed secrets go (`--on-change`), if anywhere.
    changes: Option<std::sync::mpsc::Sender<String>>,
    /// The paths inside the mount something is mounted on, when the inode
    /// table is bounded (see [`Builder::bound_inodes`]).
    mounted_over: Option<MountedOver>,
    /// The templates shown at the root (`--layout templates:DIR`), if any.
    templates: Option<Arc<template::Templates>>,
    /// Wakes the thread that settles temporary files (settle.rs).
    settler: settle::Settler,
    /// Per-process access rules (`--allow`), when there are any: every
    /// open and change of a file they cover is admitted by them (open.rs).
    access: Option<crate::access::Access>,
    /// Whether every open is recorded (an audit log), and so must reach
    /// the daemon.
    opens_recorded: bool,
}

/// The bytes of `bytes` a read of `size` at `offset` returns.
fn slice_at(bytes: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = start.saturating_add(size as usize).min(bytes.len());
    &bytes[start..end]
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SecretFs {
    /// The folder listing at `path` (`None`: not a folder).
    fn listing(&self, ctx: &OpContext, path: &SecretPath) -> Result<Cached<Listing>> {
        let cache::Fetched { answer, change } = self.source.listing(ctx, path)?;
        if let Some(change) = change {
            self.notice(change);
        }
        Ok(answer)
    }

    /// The secret at `path` (`None`: not a secret).
    fn secret(&self, ctx: &OpContext, path: &SecretPath) -> Result<Cached<Secret>> {
        let cache::Fetched { answer, change } = self.source.secret(ctx, path)?;
        if let Some(change) = change {
            self.notice(change);
        }
        Ok(answer)
    }

    /// Lets values leave memory once nothing may serve them: answers past
    /// their TTL and --stale-if-error go, and so does the version a file
    /// was last shown when it is that old, or was replaced more than a TTL
    /// ago (the kernel asks for attributes again before it reads). Inodes
    /// the kernel holds no reference to (names a plain READDIR gave) go too.
    pub fn sweep(&self) {
        self.names.drop_unheld();
        let swept: std::collections::HashSet<SecretPath> =
            self.source.sweep().into_iter().collect();
        let ttl = self.config.cache.ttl;
        for (ino, secret, version) in self.names.shown_versions() {
            let gone = swept.contains(&secret)
                || match self.source.held(&secret) {
                    None => true,
                    Some((held, age)) => !Arc::ptr_eq(&held, &version) && age >= ttl,
                };
            if gone {
                self.names.unshow(ino, &version);
            }
        }
        self.sweep_templates(&swept);
    }

    /// Starts the thread that sweeps old values out of memory (see
    /// [`SecretFs::sweep`]), every half TTL (between 1 s and 30 s).
    fn start_sweeper(self: &Arc<Self>, background: &mut Background) {
        let every =
            (self.config.cache.ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let (fs, halt) = (Arc::downgrade(self), background.halt());
        let spawned = std::thread::Builder::new()
            .name("secretfs-sweep".into())
            .spawn(move || {
                while !halt.sleep(every) {
                    let Some(fs) = fs.upgrade() else { return };
                    fs.sweep();
                }
            });
        match spawned {
            Ok(thread) => background.spawned(thread),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the sweeper: values stay in memory until evicted")
            }
        }
    }

    /// Starts the switcher and the threads that refresh answers ahead of
    /// their expiry while they are being read (when `background_refresh`
    /// is set): they read `rx`, the queue the source sends to (`tx`, its
    /// [`cache::Refreshing::Ahead`]). Without them (none could start, or
    /// the switcher could not, which holds changed secrets back) `rx` is
    /// dropped, nothing can be queued, and every value is fetched again by
    /// the reader that finds it expired. Several threads: refreshes of
    /// many secrets must not queue behind each other (that would stretch
    /// the freshness bound).
    fn start_refresher(
        self: &Arc<Self>,
        tx: Sender<Option<Refresh>>,
        rx: Receiver<Option<Refresh>>,
        background: &mut Background,
    ) {
        if !self.start_switcher(background) {
            return;
        }
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..REFRESHERS {
            let (fs, rx) = (Arc::downgrade(self), rx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("secretfs-refresh-{i}"))
                .spawn(move || loop {
                    // `None`: told to end.
                    let job = lock(&rx).recv();
                    let (Ok(Some(job)), Some(fs)) = (job, fs.upgrade()) else {
                        return;
                    };
                    match fs.source.refresh(&OpContext::background(), &job) {
                        Ok(change) => fs.notice(change),
                        // The answer stays until it expires; then its next
                        // reader fetches it (or gets stale-if-error).
                        Err(e) => tracing::debug!(?job, error = %e, "background refresh failed"),
                    }
                });
            match spawned {
                Ok(thread) => {
                    background.spawned(thread);
                    started += 1;
                }
                Err(e) => tracing::warn!(error = %e, "cannot start a refresh thread"),
            }
        }
        if started > 0 {
            background.refreshers(tx, started);
        }
    }

    /// The store path behind `ino`, for log lines (`secret/KEY` for files).
    pub fn describe(&self, ino: Ino) -> String {
        match self.names.get(ino) {
            Some(NodeKind::Dir { path }) | Some(NodeKind::Scratch { path }) => format!("/{path}"),
            Some(NodeKind::Template { name }) => format!("/{name}"),
            Some(NodeKind::File { secret, view, name }) => {
                format!("/{}", self.file_path(&FileRef { secret, view, name }))
            }
            None => format!("<inode {ino}>"),
        }
    }

    /// Remembers a failure (already logged) for `secretfs status`.
    pub fn record_error(&self, what: String) {
        *lock(&self.last_error) = Some(Failure {
            at: SystemTime::now(),
            what,
        });
    }

    /// The mount's health as JSON: whether the store answers, the token's
    /// TTL, the last failure, cache and inode counts, and `pending_files`:
    /// the temporary files that may still become keys (settle.rs), which
    /// a test waits to reach 0 before it checks that nothing more was
    /// written. Never a value.
    pub fn status_json(&self, ctx: &OpContext) -> serde_json::Value {
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let health = self.source.health(ctx);
        let stats = self.stats();
        let last_error = lock(&self.last_error)
            .as_ref()
            .map(|f| serde_json::json!({"at_unix": secs(f.at), "error": f.what}));
        // A lower layer that cannot be read: the mount serves what the
        // others hold, and is not healthy.
        let degraded: Vec<serde_json::Value> = self
            .source
            .degraded()
            .into_iter()
            .map(|d| {
                serde_json::json!({"layer": d.part, "state": d.state, "since_unix": secs(d.since), "why": d.why})
            })
            .collect();
        // What the store can do: a feature it lacks fails (EOPNOTSUPP)
        // rather than pretend.
        let caps = self.source.capabilities();
        let capabilities = serde_json::json!({
            "check_and_set": caps.check_and_set,
            "versions": caps.versions,
            "metadata": caps.metadata,
            "soft_delete": caps.soft_delete,
        });
        serde_json::json!({
            "healthy": health.is_ok() && degraded.is_empty(),
            "store_capabilities": capabilities,
            "degraded_layers": degraded,
            "mounted": true,
            "store_reachable": health.is_ok(),
            "store_error": health.as_ref().err().map(|e| e.to_string()),
            "store_node": self.source.node(),
            "token_ttl_seconds": health.ok().and_then(|h| h.credential_ttl).map(|d| d.as_secs()),
            "last_error": last_error,
            "cached_listings": stats.listings,
            "cached_secrets": stats.secrets,
            "inodes": stats.inodes,
            "max_inodes": self.names.bound(),
            "open_handles": self.handles.len(),
            "pending_files": self.names.tentative().len(),
            "unknown_outcomes": self.writers.unknown_outcomes(),
            "read_only": self.config.read_only,
            "mode": if self.config.read_only { "read-only" } else { "writable" },
            "mounted_at_unix": secs(self.source.started()),
            "pid": std::process::id(),
        })
    }

    /// The server (node of a cluster) store requests go to now.
    pub fn store_node(&self) -> Option<String> {
        self.source.node()
    }

    /// Number of inodes and cache entries held, for status and tests.
    pub fn stats(&self) -> Stats {
        let (listings, secrets) = self.source.counts();
        Stats {
            inodes: self.names.len(),
            listings,
            secrets,
            shown: self.names.shown_count(),
            handles: self.handles.len(),
            store_down: self.source.is_down(),
        }
    }

    /// The levels `--metrics` reads at each scrape: what the core holds
    /// now (its [`Stats`]) and the store node requests go to.
    pub fn levels(&self) -> Vec<crate::metrics::Level> {
        let stats = self.stats();
        let level = |name, help, value: usize| crate::metrics::Level {
            name,
            help,
            value: i64::try_from(value).unwrap_or(i64::MAX),
            label: None,
        };
        let node = self.store_node().map(|node| crate::metrics::Level {
            name: "store_node_info",
            help: "The server (node of a cluster) requests go to now",
            value: 1,
            label: Some(("node", node)),
        });
        let mut levels = vec![
            level("open_handles", "Open file handles", stats.handles),
            level("inodes", "Inodes the kernel may hold", stats.inodes),
            level("cached_secrets", "Secrets in the cache", stats.secrets),
            level(
                "cached_listings",
                "Folder listings in the cache",
                stats.listings,
            ),
            level(
                "store_up",
                "1 while the store answers, 0 while it is taken to be down",
                usize::from(!stats.store_down),
            ),
        ];
        levels.extend(node);
        levels
    }

    fn dir_attr(&self, ino: Ino, valid_for: Duration) -> Attr {
        Attr {
            ino,
            is_dir: true,
            size: 0,
            perm: self.config.presentation.dir_mode,
            uid: self.config.presentation.uid,
            gid: self.config.presentation.gid,
            mtime: self.source.started(),
            valid_for,
        }
    }

    fn file_attr(&self, ino: Ino, size: u64, mtime: SystemTime, valid_for: Duration) -> Attr {
        Attr {
            ino,
            is_dir: false,
            size,
            perm: self.config.presentation.file_mode,
            uid: self.config.presentation.uid,
            gid: self.config.presentation.gid,
            mtime,
            valid_for,
        }
    }

    /// The size of the change a writer of `ino` made last and has not
    /// committed yet: what `stat` shows while writers have not closed.
    fn buffered_size(&self, ino: Ino) -> Option<u64> {
        self.writers.pending_size(ino)
    }

    /// Attributes of the file `ino` (`file` seen in `version` of its
    /// secret). With `shown` the kernel is being told them: reads of `ino`
    /// serve this version from then on (see [`Namespace::show`]).
    fn secret_file_attr(
        &self,
        ino: Ino,
        file: &FileRef,
        version: &Arc<Secret>,
        valid_for: Duration,
        shown: bool,
    ) -> Result<Attr> {
        // A value that cannot be known now fails here already, so that the
        // kernel never reads its file as empty (reads may skip the daemon).
        let view = self.views.get(file.view);
        let size = view
            .render(version, &file.name)
            .ok_or_else(|| Self::unshown(view, version, &file.name))?
            .bytes()
            .len() as u64;
        if shown {
            let differs = |old: &Secret| Self::replaces(view, &self.source, file, version, old);
            if let Err((kept, dropped)) =
                self.names
                    .show_unless_changed(ino, version.clone(), &differs)
            {
                // Changed outside this mount: the inode keeps what it was
                // shown, and the name leads to a new one.
                if let Some((parent, name)) = dropped {
                    self.drop_entry(ino, parent, name);
                }
                return self.kept_attr(ino, file, &kept);
            }
        }
        Ok(self.file_attr(
            ino,
            size,
            version.modified.unwrap_or(self.source.started()),
            valid_for,
        ))
    }

    /// Attributes of the retired file `ino` (`file`): those of the version
    /// it keeps, which never change.
    fn kept_attr(&self, ino: Ino, file: &FileRef, kept: &Secret) -> Result<Attr> {
        let view = self.views.get(file.view);
        let size = view
            .render(kept, &file.name)
            .ok_or(Error::Stale)?
            .bytes()
            .len() as u64;
        Ok(self.file_attr(
            ino,
            size,
            kept.modified.unwrap_or(self.source.started()),
            self.config.cache.ttl,
        ))
    }

    /// Whether `version` of the file `file` (seen through `view`) replaces
    /// `shown`, the version the kernel was shown of it: other bytes, and
    /// the latest version the cache holds. A reply that read its version
    /// before a later one was shown (a `stat` that lagged behind a commit
    /// of this mount, or a refresh's notice behind a write) replaces
    /// nothing. The one test behind retiring an inode; it asks the cache,
    /// so it may be run under the namespace's lock (the cache never takes
    /// that lock).
    fn replaces(
        view: &dyn View,
        source: &Source,
        file: &FileRef,
        version: &Arc<Secret>,
        shown: &Secret,
    ) -> bool {
        !Self::same_bytes(view, shown, version, &file.name)
            && source.is_latest(&file.secret, version)
    }

    /// Whether `view` shows the file `name` with the same bytes in `a`
    /// and `b` (or in neither).
    fn same_bytes(view: &dyn View, a: &Secret, b: &Secret, name: &str) -> bool {
        a.same_data(b)
            || view.render(a, name).as_ref().map(|r| r.bytes())
                == view.render(b, name).as_ref().map(|r| r.bytes())
    }

    /// The file `ino`, named `name` in `parent`, was retired: the kernel
    /// must drop the name, so that its next lookup finds the new inode.
    fn drop_entry(&self, ino: Ino, parent: Ino, name: String) {
        tracing::debug!(ino = ino.0, parent = parent.0, path = %name, op = "retire",
            "value changed outside this mount: the name leads to a new inode");
        self.invalidate(Invalidation::Entry { parent, name });
    }

    /// The file `name` in the directory `dir`, seen through `view`: for a
    /// view inside secrets a file of the secret at `dir`, for a view beside
    /// them a file of the secret it is named after (`None`: no such name).
    fn file_ref(&self, dir: &SecretPath, view: ViewId, name: &str) -> Option<FileRef> {
        let v = self.views.get(view);
        let secret = match v.placement() {
            Placement::Inside => dir.clone(),
            Placement::Beside => dir.join(&v.secret_named(name)?),
        };
        Some(FileRef {
            secret,
            view,
            name: name.to_string(),
        })
    }

    /// Where a file is in the mount: its directory's path and its name.
    fn file_path(&self, file: &FileRef) -> SecretPath {
        match self.views.get(file.view).placement() {
            Placement::Inside => file.secret.join(&file.name),
            Placement::Beside => match file.secret.split_last() {
                Some((folder, _)) => folder.join(&file.name),
                None => file.secret.join(&file.name),
            },
        }
    }

    /// The view through which `version` shows a file `name`, if any.
    fn view_showing(&self, version: &Secret, name: &str) -> Option<ViewId> {
        self.views
            .iter()
            .filter(|(_, v)| v.placement() == Placement::Inside)
            .find(|(_, v)| v.render(version, name).is_some())
            .map(|(id, _)| id)
    }

    /// Why a view inside secrets shows the file `name` of `version` and
    /// cannot render it: a key whose value cannot be known now.
    fn withheld_inside(&self, version: &Secret, name: &str) -> Option<Error> {
        self.views
            .iter()
            .filter(|(_, v)| v.placement() == Placement::Inside)
            .find_map(|(_, v)| v.withheld(version, name))
    }

    /// Why `view` shows no bytes of the file `name` of `version`: a value
    /// that cannot be known now, else no such file.
    fn unshown(view: &dyn View, version: &Secret, name: &str) -> Error {
        view.withheld(version, name).unwrap_or(Error::NotFound)
    }

    /// The view through which a new file `name` is created, if any.
    fn view_creating(&self, name: &str) -> Option<ViewId> {
        self.views
            .iter()
            .find(|(_, v)| v.can_create(name))
            .map(|(id, _)| id)
    }

    /// Attributes of the in-memory scratch file at `path`.
    fn scratch_attr(&self, ino: Ino, path: &SecretPath) -> Result<Attr> {
        let file = self.names.scratch(path).ok_or(Error::NotFound)?;
        let f = lock(&file);
        let size = f.data.expose_secret().len() as u64;
        Ok(self.file_attr(ino, size, f.modified, LOCAL_TTL))
    }

    fn dir_path(&self, ino: Ino) -> Result<SecretPath> {
        match self.names.get(ino) {
            Some(NodeKind::Dir { path }) => Ok(path),
            Some(_) => Err(Error::NotDir),
            None => Err(Error::Stale),
        }
    }

    fn node(&self, ino: Ino) -> Result<NodeKind> {
        self.names.get(ino).ok_or(Error::Stale)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod writer_tests;
