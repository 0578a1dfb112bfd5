//! The core of secretfs: the filesystem's operations over a [`SecretStore`],
//! free of FUSE. Each operation returns plain structs or an [`Error`]; the
//! FUSE adapter (`crate::fuse`) only translates.

pub mod cache;
pub mod handle;
pub mod inode;
pub mod names;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretSlice};

use crate::error::{Error, Result};
use crate::store::{Listing, Secret, SecretPath, SecretStore};
use cache::{Cache, CachePolicy, Cached, Clock};
use handle::{DirEntryInfo, Handle, HandleTable};
use inode::{Ino, InodeTable, NodeKind};

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

/// What a lookup found in a directory.
enum Child {
    Dir(SecretPath),
    Key(SecretPath, String),
}

/// The filesystem.
pub struct SecretFs {
    store: Arc<dyn SecretStore>,
    inodes: InodeTable,
    listings: Cache<SecretPath, Listing>,
    secrets: Cache<SecretPath, Secret>,
    handles: HandleTable,
    presentation: Presentation,
    ttl: Duration,
    started: SystemTime,
}

impl SecretFs {
    /// A filesystem whose root stands for `root` in `store`.
    pub fn new(
        store: Arc<dyn SecretStore>,
        root: SecretPath,
        presentation: Presentation,
        policy: CachePolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        SecretFs {
            store,
            inodes: InodeTable::new(root),
            listings: Cache::new(policy, clock.clone()),
            secrets: Cache::new(policy, clock),
            handles: HandleTable::default(),
            presentation,
            ttl: policy.ttl,
            started: SystemTime::now(),
        }
    }

    /// The store path behind `ino`, for log lines (`secret/KEY` for files).
    pub fn describe(&self, ino: Ino) -> String {
        match self.inodes.get(ino) {
            Some(NodeKind::Dir { path }) => format!("/{path}"),
            Some(NodeKind::Key { secret, key }) => format!("/{}", secret.join(&key)),
            None => format!("<inode {ino}>"),
        }
    }

    /// Number of inodes and cache entries held, for status and tests.
    pub fn stats(&self) -> (usize, usize, usize) {
        (self.inodes.len(), self.listings.len(), self.secrets.len())
    }

    // ---- store access through the cache -------------------------------

    /// What the parent's fresh listing says of `path`: `Some((is_folder,
    /// is_secret, valid_for))` when it is cached and fresh, `None` otherwise.
    fn known_from_parent(&self, path: &SecretPath) -> Option<(bool, bool, Duration)> {
        let (parent, name) = path.split_last()?;
        let cached = self.listings.fresh(&parent)?;
        let (mut folder, mut secret) = (false, false);
        for e in cached.value.iter().flat_map(|l| l.iter()) {
            if e.name == name {
                if e.folder {
                    folder = true;
                } else {
                    secret = true;
                }
            }
        }
        Some((folder, secret, cached.valid_for))
    }

    /// The folder listing at `path` (`None`: not a folder).
    fn listing(&self, path: &SecretPath) -> Result<Cached<Listing>> {
        if let Some((false, _, valid_for)) = self.known_from_parent(path) {
            return Ok(Cached {
                value: None,
                valid_for,
            });
        }
        self.listings.get_or_fetch(path, || self.store.list(path))
    }

    /// The secret at `path` (`None`: not a secret).
    fn secret(&self, path: &SecretPath) -> Result<Cached<Secret>> {
        if let Some((_, false, valid_for)) = self.known_from_parent(path) {
            return Ok(Cached {
                value: None,
                valid_for,
            });
        }
        self.secrets.get_or_fetch(path, || self.store.read(path))
    }

    // ---- attributes ------------------------------------------------------

    fn dir_attr(&self, ino: Ino, valid_for: Duration) -> Attr {
        Attr {
            ino,
            is_dir: true,
            size: 0,
            perm: self.presentation.dir_mode,
            uid: self.presentation.uid,
            gid: self.presentation.gid,
            mtime: self.started,
            valid_for,
        }
    }

    fn key_attr(&self, ino: Ino, secret: &Secret, key: &str, valid_for: Duration) -> Result<Attr> {
        let value = secret.keys.get(key).ok_or(Error::NotFound)?;
        Ok(Attr {
            ino,
            is_dir: false,
            size: value.len(),
            perm: self.presentation.file_mode,
            uid: self.presentation.uid,
            gid: self.presentation.gid,
            mtime: secret.modified.unwrap_or(self.started),
            valid_for,
        })
    }

    fn dir_path(&self, ino: Ino) -> Result<SecretPath> {
        match self.inodes.get(ino) {
            Some(NodeKind::Dir { path }) => Ok(path),
            Some(NodeKind::Key { .. }) => Err(Error::NotDir),
            None => Err(Error::Stale),
        }
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
        let (child, secret, valid_for) = self.find_child(&dir, name)?;
        let kind = match &child {
            Child::Dir(path) => NodeKind::Dir { path: path.clone() },
            Child::Key(secret, key) => NodeKind::Key {
                secret: secret.clone(),
                key: key.clone(),
            },
        };
        let ino = self.inodes.remember(parent, name, kind, true);
        match (child, secret) {
            (Child::Key(_, key), Some(secret)) => self.key_attr(ino, &secret, &key, valid_for),
            _ => Ok(self.dir_attr(ino, valid_for)),
        }
    }

    fn find_child(
        &self,
        dir: &SecretPath,
        name: &str,
    ) -> Result<(Child, Option<Arc<Secret>>, Duration)> {
        let child_path = dir.join(name);
        let mut list_denied = None;
        let mut valid_for = self.ttl;
        match self.listing(dir) {
            Ok(listing) => {
                valid_for = valid_for.min(listing.valid_for);
                if listing
                    .value
                    .iter()
                    .flat_map(|l| l.iter())
                    .any(|e| e.name == name)
                {
                    return Ok((Child::Dir(child_path), None, valid_for));
                }
            }
            Err(e @ Error::PermissionDenied(_)) => list_denied = Some(e),
            Err(e) => return Err(e),
        }
        let secret = self.secret(dir)?;
        valid_for = valid_for.min(secret.valid_for);
        if let Some(s) = &secret.value {
            if s.keys.contains_key(name) {
                return Ok((
                    Child::Key(dir.clone(), name.to_string()),
                    Some(s.clone()),
                    valid_for,
                ));
            }
        }
        // A token may read secrets without the right to list their folder:
        // then ask for the child itself.
        if let Some(denied) = list_denied {
            let as_secret = self.secret(&child_path);
            if let Ok(Cached { value: Some(_), .. }) = as_secret {
                return Ok((Child::Dir(child_path), None, valid_for));
            }
            let as_folder = self.listing(&child_path);
            if let Ok(Cached { value: Some(_), .. }) = as_folder {
                return Ok((Child::Dir(child_path), None, valid_for));
            }
            if as_secret.is_err() && as_folder.is_err() {
                return Err(denied);
            }
        }
        Err(Error::NotFound)
    }

    /// Attributes of `ino`; a key's size comes from its (cached) secret.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        match self.inodes.get(ino).ok_or(Error::Stale)? {
            NodeKind::Dir { .. } => Ok(self.dir_attr(ino, self.ttl)),
            NodeKind::Key { secret, key } => {
                let cached = self.secret(&secret)?;
                let s = cached.value.ok_or(Error::NotFound)?;
                self.key_attr(ino, &s, &key, cached.valid_for)
            }
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.inodes.forget(ino, n);
    }

    /// Opens a key for reading: the handle holds the value as it is now.
    pub fn open(&self, ino: Ino, write: bool) -> Result<u64> {
        let (secret, key) = match self.inodes.get(ino).ok_or(Error::Stale)? {
            NodeKind::Dir { .. } => return Err(Error::IsDir),
            NodeKind::Key { secret, key } => (secret, key),
        };
        if write {
            return Err(Error::ReadOnly);
        }
        let cached = self.secret(&secret)?;
        let s = cached.value.ok_or(Error::NotFound)?;
        let value = s.keys.get(&key).ok_or(Error::NotFound)?;
        let copy = SecretSlice::from(value.expose().to_vec());
        Ok(self.handles.insert(Handle::File {
            ino,
            value: Arc::new(copy),
        }))
    }

    /// Reads up to `size` bytes at `offset` of an open key.
    pub fn read<R>(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let value = self
            .handles
            .with(fh, |h| match h {
                Handle::File { value, .. } => Ok(value.clone()),
                Handle::Dir { .. } => Err(Error::IsDir),
            })
            .ok_or(Error::Stale)??;
        let bytes = value.expose_secret();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        Ok(f(&bytes[start..end]))
    }

    /// Closes a file or directory handle.
    pub fn release(&self, fh: u64) {
        self.handles.remove(fh);
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
                for e in listing.iter().filter(|e| names::is_showable(&e.name)) {
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
                    // Where a key and a child share a name, the directory wins.
                    entries.entry(key.clone()).or_insert(false);
                }
            }
            Ok(_) => {}
            Err(e @ Error::PermissionDenied(_)) if denied.is_some() => return Err(e),
            Err(e @ Error::PermissionDenied(_)) if !found => denied = Some(e),
            Err(Error::PermissionDenied(_)) => {}
            Err(e) => return Err(e),
        }
        if let (false, Some(e)) = (found, denied) {
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
        self.handles
            .with(fh, |h| match h {
                Handle::Dir { ino, entries } => Ok((*ino, entries.clone())),
                Handle::File { .. } => Err(Error::NotDir),
            })
            .ok_or(Error::Stale)?
    }

    /// Attributes of one entry of an open directory, for READDIRPLUS or
    /// `d_ino`. With `lookup`, the kernel holds a reference afterwards.
    pub fn entry_attr(&self, dir: Ino, entry: &DirEntryInfo, lookup: bool) -> Result<Attr> {
        let path = self.dir_path(dir)?;
        if entry.is_dir {
            let ino = self.inodes.remember(
                dir,
                &entry.name,
                NodeKind::Dir {
                    path: path.join(&entry.name),
                },
                lookup,
            );
            return Ok(self.dir_attr(ino, self.ttl));
        }
        let cached = self.secret(&path)?;
        let secret = cached.value.ok_or(Error::NotFound)?;
        let ino = self.inodes.remember(
            dir,
            &entry.name,
            NodeKind::Key {
                secret: path,
                key: entry.name.clone(),
            },
            lookup,
        );
        self.key_attr(ino, &secret, &entry.name, cached.valid_for)
    }

    /// The parent inode of a directory, for `..`.
    pub fn parent_of(&self, ino: Ino) -> Ino {
        self.inodes.parent(ino).unwrap_or(inode::ROOT_INO)
    }
}

#[cfg(test)]
mod tests;
