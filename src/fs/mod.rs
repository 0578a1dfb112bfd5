//! The core of secretfs: the filesystem's operations over a [`SecretStore`],
//! free of FUSE. Each operation returns plain structs or an [`Error`]; the
//! FUSE adapter (`crate::fuse`) only translates.
//!
//! Reads are here; everything that changes the store is in `write`.

pub mod cache;
pub mod clock;
pub mod handle;
pub mod inode;
mod invalidate;
pub mod local;
pub mod names;
pub mod namespace;
mod readdir;
pub mod source;
pub mod view;
mod write;
pub mod writers;
pub mod xattr;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretSlice};

use crate::error::{Error, Result};
use crate::store::{ListEntry, Listing, Secret, SecretPath, SecretStore};
use cache::{CachePolicy, Cached, Clock};
use handle::{DirEntryInfo, Fh, Handle, HandleTable};
use inode::{Ino, NodeKind};
pub use invalidate::Invalidation;
use namespace::{Name, Namespace};
pub use readdir::{DirEntry, DirReplier};
use source::{Refresh, Source};
use view::{Placement, ViewId, Views};
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
    /// Refresh expired answers in the background while serving the old one
    /// (stale-while-revalidate), once [`SecretFs::start_refresher`] runs.
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

/// How long the kernel may trust an answer about in-memory nodes, which
/// only this process changes.
const LOCAL_TTL: Duration = Duration::from_secs(1);

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
    /// Where invalidations for the kernel go, once the mount is up.
    invalidations: std::sync::OnceLock<std::sync::mpsc::Sender<Invalidation>>,
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
    /// A filesystem whose root stands for `root` in `store`, showing each
    /// secret as a directory of key files.
    pub fn new(
        store: Arc<dyn SecretStore>,
        root: SecretPath,
        config: FsConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_views(store, root, config, clock, Views::for_layout())
    }

    /// A filesystem showing secrets through `views`.
    pub fn with_views(
        store: Arc<dyn SecretStore>,
        root: SecretPath,
        config: FsConfig,
        clock: Arc<dyn Clock>,
        views: Views,
    ) -> Self {
        SecretFs {
            source: Arc::new(Source::new(store, config.cache, clock)),
            names: Namespace::new(root),
            handles: HandleTable::default(),
            writers: Writers::default(),
            config,
            views,
            last_error: Mutex::new(None),
            invalidations: std::sync::OnceLock::new(),
        }
    }

    /// The folder listing at `path` (`None`: not a folder).
    fn listing(&self, path: &SecretPath) -> Result<Cached<Listing>> {
        let source::Fetched { answer, change } = self.source.listing(path)?;
        if let Some(change) = change {
            self.notice(change);
        }
        Ok(answer)
    }

    /// The secret at `path` (`None`: not a secret).
    fn secret(&self, path: &SecretPath) -> Result<Cached<Secret>> {
        let source::Fetched { answer, change } = self.source.secret(path)?;
        if let Some(change) = change {
            self.notice(change);
        }
        Ok(answer)
    }

    /// Starts the thread that refreshes expired answers in the background
    /// (when `background_refresh` is set). Without it every refresh blocks
    /// the reader that needs it.
    pub fn start_refresher(self: &Arc<Self>) {
        if !self.config.background_refresh {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel::<Refresh>();
        let fs = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("secretfs-refresh".into())
            .spawn(move || {
                for job in rx {
                    let Some(fs) = fs.upgrade() else { return };
                    match fs.source.refresh(&job) {
                        Ok(change) => fs.notice(change),
                        // The stale answer stays; the next reader fetches (or
                        // gets stale-if-error) in the foreground.
                        Err(e) => tracing::debug!(?job, error = %e, "background refresh failed"),
                    }
                }
            });
        match spawned {
            Ok(_) => self.source.refresh_through(tx),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the refresh thread: refreshing in the foreground")
            }
        }
    }

    /// Whether a listing entry stands for something that shows: a store
    /// may keep listing a secret whose latest version is deleted (KV v2
    /// soft delete). A secret known (fresh in the cache) not to read is
    /// left out; one not read yet is shown until looked up.
    fn entry_stands(&self, dir: &SecretPath, e: &ListEntry) -> bool {
        e.folder
            || !matches!(
                self.source.fresh_secret(&dir.join(&e.name)),
                Some(Cached { value: None, .. })
            )
    }

    /// Whether the secret at `path` has a live version (or we may not know).
    fn secret_is_live(&self, path: &SecretPath) -> bool {
        !matches!(self.secret(path), Ok(Cached { value: None, .. }))
    }

    /// Whether the parent's listing names a secret at `path` (whether or
    /// not it reads).
    fn listed_as_secret(&self, path: &SecretPath) -> bool {
        let Some((parent, name)) = path.split_last() else {
            return false;
        };
        match self.listing(&parent) {
            Ok(Cached {
                value: Some(listing),
                ..
            }) => source::named(&listing, name).iter().any(|e| !e.folder),
            _ => false,
        }
    }

    /// The store path behind `ino`, for log lines (`secret/KEY` for files).
    pub fn describe(&self, ino: Ino) -> String {
        match self.names.get(ino) {
            Some(NodeKind::Dir { path }) | Some(NodeKind::Scratch { path }) => format!("/{path}"),
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
    /// TTL, the last failure, cache and inode counts. Never a value.
    pub fn status_json(&self) -> serde_json::Value {
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let health = self.source.health();
        let stats = self.stats();
        let last_error = lock(&self.last_error)
            .as_ref()
            .map(|f| serde_json::json!({"at_unix": secs(f.at), "error": f.what}));
        serde_json::json!({
            "healthy": health.is_ok(),
            "mounted": true,
            "store_reachable": health.is_ok(),
            "store_error": health.as_ref().err().map(|e| e.to_string()),
            "token_ttl_seconds": health.ok().and_then(|h| h.credential_ttl).map(|d| d.as_secs()),
            "last_error": last_error,
            "cached_listings": stats.listings,
            "cached_secrets": stats.secrets,
            "inodes": stats.inodes,
            "open_handles": self.handles.len(),
            "read_only": self.config.read_only,
            "mounted_at_unix": secs(self.source.started()),
        })
    }

    /// Number of inodes and cache entries held, for status and tests.
    pub fn stats(&self) -> Stats {
        let (listings, secrets) = self.source.counts();
        Stats {
            inodes: self.names.len(),
            listings,
            secrets,
        }
    }

    // ---- attributes ------------------------------------------------------

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

    /// A write buffer's size, when the inode is open for writing: what
    /// `stat` must show while a writer has not closed yet.
    fn buffered_size(&self, ino: Ino) -> Option<u64> {
        self.writers.live_size(ino)
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
        let size = self
            .views
            .get(file.view)
            .render(version, &file.name)
            .ok_or(Error::NotFound)?
            .bytes()
            .len() as u64;
        if shown {
            self.names.show(ino, version.clone());
        }
        Ok(self.file_attr(
            ino,
            size,
            version.modified.unwrap_or(self.source.started()),
            valid_for,
        ))
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

    // ---- operations --------------------------------------------------------

    /// Finds `name` in the directory `parent`: a child folder or secret
    /// (directories win over keys), else a key of the secret at `parent`.
    /// Counts one kernel reference on the returned inode.
    pub fn lookup(&self, parent: Ino, name: &str) -> Result<Attr> {
        let dir = self.dir_path(parent)?;
        if !names::is_showable(name) {
            return Err(Error::NotFound);
        }
        let (child, valid_for) = self.find_child(&dir, name)?;
        self.remember(parent, name, child, valid_for, true)
    }

    /// Registers a found child in the inode table and returns its attributes.
    fn remember(
        &self,
        parent: Ino,
        name: &str,
        child: Child,
        valid_for: Duration,
        lookup: bool,
    ) -> Result<Attr> {
        let at = Name { parent, name };
        match child {
            Child::Dir(path) => {
                let ino = self.names.remember(at, NodeKind::Dir { path }, lookup);
                Ok(self.dir_attr(ino, valid_for))
            }
            Child::Scratch(path) => {
                let attr = self.scratch_attr(Ino(0), &path)?;
                let ino = self.names.remember(at, NodeKind::Scratch { path }, lookup);
                Ok(Attr { ino, ..attr })
            }
            Child::NewFile(file) => {
                let ino = self.names.remember(at, file.kind(), lookup);
                let size = self.buffered_size(ino).unwrap_or(0);
                Ok(self.file_attr(ino, size, SystemTime::now(), Duration::ZERO))
            }
            Child::File { file, version } => {
                let ino = self.names.remember(at, file.kind(), lookup);
                match self.buffered_size(ino) {
                    Some(size) => Ok(self.file_attr(ino, size, SystemTime::now(), Duration::ZERO)),
                    None => self.secret_file_attr(ino, &file, &version, valid_for, lookup),
                }
            }
        }
    }

    fn find_child(&self, dir: &SecretPath, name: &str) -> Result<(Child, Duration)> {
        let child_path = dir.join(name);
        // What lives only in memory comes first.
        if self.names.is_local_dir(&child_path) {
            return Ok((Child::Dir(child_path), LOCAL_TTL));
        }
        if self.names.scratch(&child_path).is_some() {
            return Ok((Child::Scratch(child_path), LOCAL_TTL));
        }
        if self.names.is_new_file(&child_path) {
            let view = self.view_creating(name);
            if let Some(file) = view.and_then(|v| self.file_ref(dir, v, name)) {
                return Ok((Child::NewFile(file), Duration::ZERO));
            }
        }
        let mut list_denied = None;
        let mut valid_for = self.config.cache.ttl;
        match self.listing(dir) {
            Ok(listing) => {
                valid_for = valid_for.min(listing.valid_for);
                let entries = listing.value.iter().flat_map(|l| source::named(l, name));
                let (mut folder, mut secret) = (false, false);
                for e in entries.filter(|e| self.entry_stands(dir, e)) {
                    folder |= e.folder;
                    secret |= !e.folder;
                }
                // KV v2 keeps listing a soft-deleted secret: a secret-only
                // entry is a directory only if it has a live version. Its
                // GET is needed by the first access below it anyway.
                if folder || (secret && self.secret_is_live(&child_path)) {
                    return Ok((Child::Dir(child_path), valid_for));
                }
            }
            Err(e @ Error::PermissionDenied(_)) => list_denied = Some(e),
            Err(e) => return Err(e),
        }
        if self.names.is_set_aside(&child_path) {
            return Err(Error::NotFound);
        }
        if let Some(found) = self.find_beside(dir, name)? {
            return Ok(found);
        }
        let secret = match self.secret(dir) {
            // Neither listable nor readable: the child may still be (below).
            Err(Error::PermissionDenied(_)) if list_denied.is_some() => None,
            other => Some(other?),
        };
        if let Some(secret) = secret {
            valid_for = valid_for.min(secret.valid_for);
            if let Some(s) = &secret.value {
                if let Some(view) = self.view_showing(s, name) {
                    let file = FileRef {
                        secret: dir.clone(),
                        view,
                        name: name.to_string(),
                    };
                    let version = s.clone();
                    return Ok((Child::File { file, version }, valid_for));
                }
            }
        }
        // A token may read secrets without the right to list their folder
        // (a common narrow policy): then ask about the child itself.
        if list_denied.is_some() {
            let as_secret = self.secret(&child_path);
            if let Ok(Cached { value: Some(_), .. }) = as_secret {
                return Ok((Child::Dir(child_path), valid_for));
            }
            let as_folder = self.listing(&child_path);
            if let Ok(Cached { value: Some(_), .. }) = as_folder {
                return Ok((Child::Dir(child_path), valid_for));
            }
            let refused = |e: Option<&Error>| matches!(e, Some(Error::PermissionDenied(_)));
            if refused(as_secret.as_ref().err()) && refused(as_folder.as_ref().err()) {
                // We may not know: a directory that lists as EACCES, so that
                // paths below it the token may read stay reachable.
                return Ok((Child::Dir(child_path), valid_for));
            }
            if let Err(e) = as_secret.and(as_folder.map(|_| ())) {
                if !matches!(e, Error::PermissionDenied(_)) {
                    return Err(e);
                }
            }
        }
        Err(Error::NotFound)
    }

    /// A file shown beside the secret it is named after (`P.json`), if a
    /// view beside secrets shows `name` in `dir`.
    fn find_beside(&self, dir: &SecretPath, name: &str) -> Result<Option<(Child, Duration)>> {
        for (view, v) in self.views.iter() {
            if v.placement() != Placement::Beside {
                continue;
            }
            let Some(file) = self.file_ref(dir, view, name) else {
                continue;
            };
            let cached = match self.secret(&file.secret) {
                Ok(c) => c,
                Err(Error::PermissionDenied(_)) => continue,
                Err(e) => return Err(e),
            };
            if let Some(version) = cached.value {
                if v.render(&version, name).is_some() {
                    return Ok(Some((Child::File { file, version }, cached.valid_for)));
                }
            }
        }
        Ok(None)
    }

    /// Attributes of `ino`; a key's size comes from its (cached) secret, or
    /// from its write buffer while it is open for writing.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        match self.node(ino)? {
            NodeKind::Dir { .. } => Ok(self.dir_attr(ino, self.config.cache.ttl)),
            NodeKind::Scratch { path } => self.scratch_attr(ino, &path),
            NodeKind::File { secret, view, name } => {
                if let Some(size) = self.buffered_size(ino) {
                    return Ok(self.file_attr(ino, size, SystemTime::now(), Duration::ZERO));
                }
                let file = FileRef { secret, view, name };
                if self.names.is_new_file(&self.file_path(&file)) {
                    return Ok(self.file_attr(ino, 0, SystemTime::now(), Duration::ZERO));
                }
                let cached = self.secret(&file.secret)?;
                let version = cached.value.ok_or(Error::NotFound)?;
                self.secret_file_attr(ino, &file, &version, cached.valid_for, true)
            }
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.names.forget(ino, n);
    }

    /// Opens a file. Read-only opens of a key hold the value as it is now;
    /// opens for writing share one buffer per inode, committed on flush.
    pub fn open(&self, ino: Ino, write: bool, truncate: bool) -> Result<Fh> {
        match self.node(ino)? {
            NodeKind::Dir { .. } => Err(Error::IsDir),
            NodeKind::Scratch { path } => {
                if write && self.config.read_only {
                    return Err(Error::ReadOnly);
                }
                let file = self.names.scratch(&path).ok_or(Error::NotFound)?;
                if truncate {
                    write::truncate_scratch(&file, 0);
                }
                Ok(self.handles.insert(Handle::Scratch { file }))
            }
            NodeKind::File { secret, view, name } => {
                let file = FileRef { secret, view, name };
                if write {
                    return self.open_for_write(ino, file, truncate);
                }
                if let Some(buffer) = self.writers.live(ino) {
                    // Read what the writer wrote, as a local filesystem would.
                    let copy = lock(&buffer).bytes().to_vec();
                    let value = Arc::new(SecretSlice::from(copy));
                    return Ok(self.handles.insert(Handle::Read { value }));
                }
                if self.names.is_new_file(&self.file_path(&file)) {
                    let value = Arc::new(SecretSlice::from(Vec::new()));
                    return Ok(self.handles.insert(Handle::Read { value }));
                }
                // The file must exist now; its bytes are read later, from
                // the version the kernel was last told of (`read_ino`).
                let cached = self.secret(&file.secret)?;
                let version = cached.value.ok_or(Error::NotFound)?;
                let view = self.views.get(file.view);
                view.render(&version, &file.name).ok_or(Error::NotFound)?;
                Ok(self.handles.insert(Handle::Key { ino }))
            }
        }
    }

    /// Reads up to `size` bytes at `offset` of an open file.
    pub fn read_handle<R>(
        &self,
        fh: Fh,
        offset: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let handle = self.handles.get(fh).ok_or(Error::Stale)?;
        match &*handle {
            Handle::Read { value } => Ok(f(slice_at(value.expose_secret(), offset, size))),
            Handle::Key { ino } => self.read_ino(*ino, offset, size, f),
            Handle::Write { buffer, .. } => {
                let b = lock(buffer);
                Ok(f(slice_at(b.bytes(), offset, size)))
            }
            Handle::Scratch { file } => {
                let file = lock(file);
                Ok(f(slice_at(file.data.expose_secret(), offset, size)))
            }
            Handle::Dir { .. } => Err(Error::IsDir),
        }
    }

    /// Whether opens of `ino` for reading may skip the daemon: on a
    /// read-only mount the kernel can serve key files from its page cache
    /// with no OPEN, READ (once cached) or FLUSH reaching us ("no open").
    pub fn opens_can_skip_daemon(&self, ino: Ino) -> bool {
        self.config.read_only && matches!(self.names.get(ino), Some(NodeKind::File { .. }))
    }

    /// Whether this mount refuses every change.
    pub fn is_read_only(&self) -> bool {
        self.config.read_only
    }

    /// Reads a file by inode: what every read of a key comes to, and all
    /// reads after a "no open" open (the kernel sends them with no handle).
    pub fn read_ino<R>(
        &self,
        ino: Ino,
        offset: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let bytes = match self.node(ino)? {
            NodeKind::Dir { .. } => return Err(Error::IsDir),
            NodeKind::Scratch { path } => {
                let file = self.names.scratch(&path).ok_or(Error::NotFound)?;
                let copy = lock(&file).data.expose_secret().clone();
                SecretSlice::from(copy)
            }
            NodeKind::File { secret, view, name } => {
                // The version whose size the kernel holds: a newer value's
                // bytes would be cut to the old size (or end short of it),
                // and a reader would get neither value whole. A newer
                // version reaches the kernel with its attributes first.
                let version = match self.names.shown(ino) {
                    Some(v) => v,
                    None => self.secret(&secret)?.value.ok_or(Error::NotFound)?,
                };
                let rendered = self
                    .views
                    .get(view)
                    .render(&version, &name)
                    .ok_or(Error::NotFound)?;
                return Ok(f(slice_at(rendered.bytes(), offset, size)));
            }
        };
        Ok(f(slice_at(bytes.expose_secret(), offset, size)))
    }

    /// Opens a directory: lists it once, so that offsets stay stable.
    pub fn opendir(&self, ino: Ino) -> Result<Fh> {
        let dir = self.dir_path(ino)?;
        let entries = self.list_dir(&dir)?;
        Ok(self.handles.insert(Handle::Dir {
            ino,
            entries: Arc::new(entries),
        }))
    }

    /// The names in a directory: store folders and secrets, the files the
    /// views show of the secret, and what lives in memory.
    fn list_dir(&self, dir: &SecretPath) -> Result<Vec<DirEntryInfo>> {
        let mut entries: BTreeMap<String, bool> = BTreeMap::new();
        let mut denied = None;
        let mut found = false;
        match self.listing(dir) {
            Ok(Cached {
                value: Some(listing),
                ..
            }) => {
                found = true;
                for e in listing
                    .iter()
                    .filter(|e| names::is_showable(&e.name) && self.entry_stands(dir, e))
                {
                    entries.insert(e.name.clone(), true);
                    if e.folder {
                        continue;
                    }
                    for (_, view) in self.views.iter() {
                        let Some(file) = view.beside_name(&e.name) else {
                            continue;
                        };
                        if view.placement() == Placement::Beside
                            && names::is_showable(&file)
                            && !self.names.is_set_aside(&dir.join(&file))
                        {
                            entries.entry(file).or_insert(false);
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e @ Error::PermissionDenied(_)) => denied = Some(e),
            Err(e) => return Err(e),
        }
        match self.secret(dir) {
            Ok(Cached {
                value: Some(secret),
                ..
            }) => {
                found = true;
                let inside = self
                    .views
                    .iter()
                    .filter(|(_, v)| v.placement() == Placement::Inside);
                for (_, view) in inside {
                    for name in view.files(&secret) {
                        if self.names.is_set_aside(&dir.join(&name)) {
                            continue;
                        }
                        // Where a file and a child share a name, the directory wins.
                        entries.entry(name).or_insert(false);
                    }
                }
            }
            Ok(_) => {}
            Err(e @ Error::PermissionDenied(_)) => {
                if !found {
                    denied = Some(e);
                }
            }
            Err(e) => return Err(e),
        }
        for name in self.names.local_dirs_in(dir) {
            entries.insert(name, true);
        }
        for name in self
            .names
            .new_files_in(dir)
            .into_iter()
            .chain(self.names.scratch_in(dir))
        {
            entries.entry(name).or_insert(false);
        }
        if let (true, Some(e)) = (entries.is_empty() && !found, denied) {
            // Nothing visible and something refused: say so rather than show
            // an empty directory.
            return Err(e);
        }
        Ok(entries
            .into_iter()
            .map(|(name, is_dir)| DirEntryInfo { name, is_dir })
            .collect())
    }

    /// The entries of an open directory (`.` and `..` excluded) and the directory's inode.
    pub fn dir_entries(&self, fh: Fh) -> Result<(Ino, Arc<Vec<DirEntryInfo>>)> {
        match &*self.handles.get(fh).ok_or(Error::Stale)? {
            Handle::Dir { ino, entries } => Ok((*ino, entries.clone())),
            _ => Err(Error::NotDir),
        }
    }

    /// Attributes of one entry of an open directory, for READDIRPLUS or
    /// `d_ino`. With `lookup`, the kernel holds a reference afterwards.
    pub fn entry_attr(&self, dir: Ino, entry: &DirEntryInfo, lookup: bool) -> Result<Attr> {
        let path = self.dir_path(dir)?;
        if entry.is_dir {
            let child = Child::Dir(path.join(&entry.name));
            return self.remember(dir, &entry.name, child, self.config.cache.ttl, lookup);
        }
        // Everything a file can be, found as a lookup finds it (cached).
        let (child, valid_for) = self.find_child(&path, &entry.name)?;
        self.remember(dir, &entry.name, child, valid_for, lookup)
    }

    /// The parent inode of a directory, for `..`.
    pub fn parent_of(&self, ino: Ino) -> Ino {
        self.names.parent(ino).unwrap_or(inode::ROOT_INO)
    }
}

#[cfg(test)]
mod tests;
