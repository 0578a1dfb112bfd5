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
pub mod names;
pub mod overlay;
mod readdir;
mod source;
mod write;
pub mod xattr;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretSlice};

use crate::error::{Error, Result};
use crate::store::{Listing, Secret, SecretPath, SecretStore};
use cache::{Cache, CachePolicy, Cached, Clock};
use handle::{DirEntryInfo, Handle, HandleTable, SharedBuffer};
use inode::{Ino, InodeTable, NodeKind};
pub use invalidate::Invalidation;
use overlay::Overlay;
pub use readdir::{DirEntry, DirReplier};

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

/// A refresh to run in the background.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Refresh {
    Listing(SecretPath),
    Secret(SecretPath),
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
    Dir(SecretPath),
    Key(SecretPath, String, Option<Arc<Secret>>),
    NewKey(SecretPath, String),
    Scratch(SecretPath),
}

/// How long the kernel may trust an answer about in-memory nodes, which
/// only this process changes.
const LOCAL_TTL: Duration = Duration::from_secs(1);

/// The filesystem.
pub struct SecretFs {
    store: Arc<dyn SecretStore>,
    inodes: InodeTable,
    listings: Cache<SecretPath, Listing>,
    secrets: Cache<SecretPath, Secret>,
    handles: HandleTable,
    overlay: Overlay,
    /// Write buffers by inode, with the number of handles sharing each.
    writers: Mutex<HashMap<Ino, (SharedBuffer, usize)>>,
    /// One commit at a time per secret, so our own writers never race.
    commit_locks: Mutex<HashMap<SecretPath, Arc<Mutex<()>>>>,
    config: FsConfig,
    started: SystemTime,
    /// The last failure logged, for `secretfs status`.
    last_error: Mutex<Option<(SystemTime, String)>>,
    /// Where background refreshes are sent, once the refresher runs.
    refresher: std::sync::OnceLock<std::sync::mpsc::Sender<Refresh>>,
    /// Refreshes queued or running, so each path is refreshed once at a time.
    refreshing: Mutex<std::collections::HashSet<Refresh>>,
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
    /// A filesystem whose root stands for `root` in `store`.
    pub fn new(
        store: Arc<dyn SecretStore>,
        root: SecretPath,
        config: FsConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        SecretFs {
            store,
            inodes: InodeTable::new(root),
            listings: Cache::new(config.cache, clock.clone()),
            secrets: Cache::new(config.cache, clock),
            handles: HandleTable::default(),
            overlay: Overlay::default(),
            writers: Mutex::new(HashMap::new()),
            commit_locks: Mutex::new(HashMap::new()),
            config,
            started: SystemTime::now(),
            last_error: Mutex::new(None),
            refresher: std::sync::OnceLock::new(),
            refreshing: Mutex::new(std::collections::HashSet::new()),
            invalidations: std::sync::OnceLock::new(),
        }
    }

    /// The store path behind `ino`, for log lines (`secret/KEY` for files).
    pub fn describe(&self, ino: Ino) -> String {
        match self.inodes.get(ino) {
            Some(NodeKind::Dir { path }) | Some(NodeKind::Scratch { path }) => format!("/{path}"),
            Some(NodeKind::Key { secret, key }) => format!("/{}", secret.join(&key)),
            None => format!("<inode {ino}>"),
        }
    }

    /// Remembers a failure (already logged) for `secretfs status`.
    pub fn record_error(&self, what: String) {
        *lock(&self.last_error) = Some((SystemTime::now(), what));
    }

    /// The mount's health as JSON: whether the store answers, the token's
    /// TTL, the last failure, cache and inode counts. Never a value.
    pub fn status_json(&self) -> serde_json::Value {
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let health = self.store.health();
        let last_error = lock(&self.last_error)
            .as_ref()
            .map(|(t, what)| serde_json::json!({"at_unix": secs(*t), "error": what}));
        serde_json::json!({
            "healthy": health.is_ok(),
            "mounted": true,
            "store_reachable": health.is_ok(),
            "store_error": health.as_ref().err().map(|e| e.to_string()),
            "token_ttl_seconds": health.ok().and_then(|h| h.credential_ttl).map(|d| d.as_secs()),
            "last_error": last_error,
            "cached_listings": self.listings.len(),
            "cached_secrets": self.secrets.len(),
            "inodes": self.inodes.len(),
            "open_handles": self.handles.len(),
            "read_only": self.config.read_only,
            "mounted_at_unix": secs(self.started),
        })
    }

    /// Number of inodes and cache entries held, for status and tests.
    pub fn stats(&self) -> (usize, usize, usize) {
        (self.inodes.len(), self.listings.len(), self.secrets.len())
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
            mtime: self.started,
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
        let buffer = self.live_buffer(ino)?;
        let size = lock(&buffer).data.expose_secret().len() as u64;
        Some(size)
    }

    /// The write buffer of `ino` while it is open for writing, unless its
    /// writer was told an error: then it will be discarded, and nobody else
    /// may see its bytes (its release may still be on the way).
    fn live_buffer(&self, ino: Ino) -> Option<SharedBuffer> {
        let buffer = lock(&self.writers).get(&ino).map(|(b, _)| b.clone())?;
        let failed = lock(&buffer).failed.is_some();
        (!failed).then_some(buffer)
    }

    /// Attributes of the key file `ino` as `secret` holds it. With `shown`
    /// the kernel is being told them: reads of `ino` serve this version
    /// from then on (see [`InodeTable::show`]).
    fn key_attr(
        &self,
        ino: Ino,
        secret: &Arc<Secret>,
        key: &str,
        valid_for: Duration,
        shown: bool,
    ) -> Result<Attr> {
        let value = secret.keys.get(key).ok_or(Error::NotFound)?;
        if shown {
            self.inodes.show(ino, secret.clone());
        }
        Ok(self.file_attr(
            ino,
            value.len(),
            secret.modified.unwrap_or(self.started),
            valid_for,
        ))
    }

    /// Attributes of the in-memory scratch file at `path`.
    fn scratch_attr(&self, ino: Ino, path: &SecretPath) -> Result<Attr> {
        let file = self.overlay.scratch(path).ok_or(Error::NotFound)?;
        let f = lock(&file);
        let size = f.data.expose_secret().len() as u64;
        Ok(self.file_attr(ino, size, f.modified, LOCAL_TTL))
    }

    fn dir_path(&self, ino: Ino) -> Result<SecretPath> {
        match self.inodes.get(ino) {
            Some(NodeKind::Dir { path }) => Ok(path),
            Some(_) => Err(Error::NotDir),
            None => Err(Error::Stale),
        }
    }

    fn node(&self, ino: Ino) -> Result<NodeKind> {
        self.inodes.get(ino).ok_or(Error::Stale)
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
        match child {
            Child::Dir(path) => {
                let ino = self
                    .inodes
                    .remember(parent, name, NodeKind::Dir { path }, lookup);
                Ok(self.dir_attr(ino, valid_for))
            }
            Child::Scratch(path) => {
                let attr = self.scratch_attr(0, &path)?;
                let ino = self
                    .inodes
                    .remember(parent, name, NodeKind::Scratch { path }, lookup);
                Ok(Attr { ino, ..attr })
            }
            Child::NewKey(secret, key) | Child::Key(secret, key, None) => {
                let ino = self
                    .inodes
                    .remember(parent, name, NodeKind::Key { secret, key }, lookup);
                let size = self.buffered_size(ino).unwrap_or(0);
                Ok(self.file_attr(ino, size, SystemTime::now(), Duration::ZERO))
            }
            Child::Key(secret_path, key, Some(secret)) => {
                let ino = self.inodes.remember(
                    parent,
                    name,
                    NodeKind::Key {
                        secret: secret_path,
                        key: key.clone(),
                    },
                    lookup,
                );
                match self.buffered_size(ino) {
                    Some(size) => Ok(self.file_attr(ino, size, SystemTime::now(), Duration::ZERO)),
                    None => self.key_attr(ino, &secret, &key, valid_for, lookup),
                }
            }
        }
    }

    fn find_child(&self, dir: &SecretPath, name: &str) -> Result<(Child, Duration)> {
        let child_path = dir.join(name);
        // What lives only in memory comes first.
        if self.overlay.is_dir(&child_path) {
            return Ok((Child::Dir(child_path), LOCAL_TTL));
        }
        if self.overlay.scratch(&child_path).is_some() {
            return Ok((Child::Scratch(child_path), LOCAL_TTL));
        }
        if self.overlay.is_new_key(&child_path) {
            return Ok((Child::NewKey(dir.clone(), name.to_string()), Duration::ZERO));
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
        if self.overlay.is_displaced(&child_path) {
            return Err(Error::NotFound);
        }
        let secret = match self.secret(dir) {
            // Neither listable nor readable: the child may still be (below).
            Err(Error::PermissionDenied(_)) if list_denied.is_some() => None,
            other => Some(other?),
        };
        if let Some(secret) = secret {
            valid_for = valid_for.min(secret.valid_for);
            if let Some(s) = &secret.value {
                if s.keys.contains_key(name) {
                    let key = Child::Key(dir.clone(), name.to_string(), Some(s.clone()));
                    return Ok((key, valid_for));
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

    /// Attributes of `ino`; a key's size comes from its (cached) secret, or
    /// from its write buffer while it is open for writing.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        match self.node(ino)? {
            NodeKind::Dir { .. } => Ok(self.dir_attr(ino, self.config.cache.ttl)),
            NodeKind::Scratch { path } => self.scratch_attr(ino, &path),
            NodeKind::Key { secret, key } => {
                if let Some(size) = self.buffered_size(ino) {
                    return Ok(self.file_attr(ino, size, SystemTime::now(), Duration::ZERO));
                }
                if self.overlay.is_new_key(&secret.join(&key)) {
                    return Ok(self.file_attr(ino, 0, SystemTime::now(), Duration::ZERO));
                }
                let cached = self.secret(&secret)?;
                let s = cached.value.ok_or(Error::NotFound)?;
                self.key_attr(ino, &s, &key, cached.valid_for, true)
            }
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.inodes.forget(ino, n);
    }

    /// Opens a file. Read-only opens of a key hold the value as it is now;
    /// opens for writing share one buffer per inode, committed on flush.
    pub fn open(&self, ino: Ino, write: bool, truncate: bool) -> Result<u64> {
        match self.node(ino)? {
            NodeKind::Dir { .. } => Err(Error::IsDir),
            NodeKind::Scratch { path } => {
                if write && self.config.read_only {
                    return Err(Error::ReadOnly);
                }
                let file = self.overlay.scratch(&path).ok_or(Error::NotFound)?;
                if truncate {
                    write::truncate_scratch(&file, 0);
                }
                Ok(self.handles.insert(Handle::Scratch { file }))
            }
            NodeKind::Key { secret, key } => {
                if write {
                    return self.open_for_write(ino, secret, key, truncate);
                }
                if let Some(buffer) = self.live_buffer(ino) {
                    // Read what the writer wrote, as a local filesystem would.
                    let copy = lock(&buffer).data.expose_secret().clone();
                    let value = Arc::new(SecretSlice::from(copy));
                    return Ok(self.handles.insert(Handle::Read { value }));
                }
                if self.overlay.is_new_key(&secret.join(&key)) {
                    let value = Arc::new(SecretSlice::from(Vec::new()));
                    return Ok(self.handles.insert(Handle::Read { value }));
                }
                // The key must exist now; its bytes are read later, from
                // the version the kernel was last told of (`read_ino`).
                let cached = self.secret(&secret)?;
                let s = cached.value.ok_or(Error::NotFound)?;
                s.keys.get(&key).ok_or(Error::NotFound)?;
                Ok(self.handles.insert(Handle::Key { ino }))
            }
        }
    }

    /// Reads up to `size` bytes at `offset` of an open file.
    pub fn read<R>(
        &self,
        fh: u64,
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
                Ok(f(slice_at(b.data.expose_secret(), offset, size)))
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
        self.config.read_only && matches!(self.inodes.get(ino), Some(NodeKind::Key { .. }))
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
                let file = self.overlay.scratch(&path).ok_or(Error::NotFound)?;
                let copy = lock(&file).data.expose_secret().clone();
                SecretSlice::from(copy)
            }
            NodeKind::Key { secret, key } => {
                // The version whose size the kernel holds: a newer value's
                // bytes would be cut to the old size (or end short of it),
                // and a reader would get neither value whole. A newer
                // version reaches the kernel with its attributes first.
                let version = match self.inodes.shown(ino) {
                    Some(v) => v,
                    None => self.secret(&secret)?.value.ok_or(Error::NotFound)?,
                };
                let value = version.keys.get(&key).ok_or(Error::NotFound)?;
                return Ok(f(slice_at(value.expose(), offset, size)));
            }
        };
        Ok(f(slice_at(bytes.expose_secret(), offset, size)))
    }

    /// Opens a directory: lists it once, so that offsets stay stable.
    pub fn opendir(&self, ino: Ino) -> Result<u64> {
        let dir = self.dir_path(ino)?;
        let entries = self.list_dir(&dir)?;
        Ok(self.handles.insert(Handle::Dir {
            ino,
            entries: Arc::new(entries),
        }))
    }

    /// The names in a directory: store folders and secrets, the secret's
    /// keys, and what lives in memory.
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
                for key in secret.keys.keys() {
                    if !names::is_showable(key) {
                        tracing::debug!(path = %dir, "key name cannot be a file name: hidden");
                        continue;
                    }
                    if self.overlay.is_displaced(&dir.join(key)) {
                        continue;
                    }
                    // Where a key and a child share a name, the directory wins.
                    entries.entry(key.clone()).or_insert(false);
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
        for name in self.overlay.dirs_in(dir) {
            entries.insert(name, true);
        }
        for name in self
            .overlay
            .new_keys_in(dir)
            .into_iter()
            .chain(self.overlay.scratch_in(dir))
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
    pub fn dir_entries(&self, fh: u64) -> Result<(Ino, Arc<Vec<DirEntryInfo>>)> {
        match &*self.handles.get(fh).ok_or(Error::Stale)? {
            Handle::Dir { ino, entries } => Ok((*ino, entries.clone())),
            _ => Err(Error::NotDir),
        }
    }

    /// Attributes of one entry of an open directory, for READDIRPLUS or
    /// `d_ino`. With `lookup`, the kernel holds a reference afterwards.
    pub fn entry_attr(&self, dir: Ino, entry: &DirEntryInfo, lookup: bool) -> Result<Attr> {
        let path = self.dir_path(dir)?;
        let child_path = path.join(&entry.name);
        let child = if entry.is_dir {
            Child::Dir(child_path)
        } else if self.overlay.scratch(&child_path).is_some() {
            Child::Scratch(child_path)
        } else if self.overlay.is_new_key(&child_path) {
            Child::NewKey(path, entry.name.clone())
        } else {
            let cached = self.secret(&path)?;
            let secret = cached.value.ok_or(Error::NotFound)?;
            let valid_for = cached.valid_for;
            return self.remember(
                dir,
                &entry.name,
                Child::Key(path, entry.name.clone(), Some(secret)),
                valid_for,
                lookup,
            );
        };
        self.remember(dir, &entry.name, child, self.config.cache.ttl, lookup)
    }

    /// The parent inode of a directory, for `..`.
    pub fn parent_of(&self, ino: Ino) -> Ino {
        self.inodes.parent(ino).unwrap_or(inode::ROOT_INO)
    }
}

#[cfg(test)]
mod tests;
