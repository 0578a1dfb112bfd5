//! Reads: attributes, opens, the bytes of files and the entries of
//! directories. A file's bytes come from the version of its secret whose
//! size the kernel was last told.

use crate::fs::OpContext;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretSlice};

use super::handle::{DirEntryInfo, Fh, Handle};
use super::inode::{self, Ino, NodeKind};
use super::{lock, slice_at, write, Attr, FileRef, SecretFs};
use crate::error::{Error, Result};

impl SecretFs {
    /// Attributes of `ino`; a key's size comes from its (cached) secret, or
    /// from its write buffer while it is open for writing.
    pub fn getattr(&self, ctx: &OpContext, ino: Ino) -> Result<Attr> {
        match self.node(ino)? {
            NodeKind::Dir { .. } => Ok(self.dir_attr(ino, self.config.cache.ttl)),
            NodeKind::Scratch { path } => self.scratch_attr(ino, &path),
            NodeKind::Template { name } => self.template_attr(ctx, ino, &name),
            NodeKind::File { secret, view, name } => {
                if let Some(size) = self.buffered_size(ino) {
                    return Ok(self.file_attr(ino, size, SystemTime::now(), Duration::ZERO));
                }
                let file = FileRef { secret, view, name };
                if let Some(kept) = self.names.kept(ino) {
                    // Retired: what it was shown, whatever the store holds.
                    return self.kept_attr(ino, &file, &kept);
                }
                if self.names.is_new_file(&self.file_path(&file)) {
                    return Ok(self.file_attr(ino, 0, SystemTime::now(), Duration::ZERO));
                }
                let cached = self.secret(ctx, &file.secret)?;
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
    /// each open for writing has a buffer of its own, committed on flush.
    pub fn open(&self, ctx: &OpContext, ino: Ino, write: bool, truncate: bool) -> Result<Fh> {
        match self.node(ino)? {
            NodeKind::Dir { .. } => Err(Error::IsDir),
            NodeKind::Template { name } => {
                if write {
                    return Err(Error::ReadOnly);
                }
                // Reads of this handle serve the rendering the kernel was
                // last told the size of.
                let rendering = self.template_rendering(ctx, &name)?;
                let bytes = Self::template_bytes(&rendering)?.to_vec();
                let value = Arc::new(SecretSlice::from(bytes));
                Ok(self.handles.insert(Handle::Read { value }))
            }
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
                    return self.open_for_write(ctx, ino, file, truncate);
                }
                if let Some(buffer) = self.writers.pending(ino) {
                    // Read what a writer wrote, as a local filesystem would
                    // (the change made last, when several write).
                    let copy = lock(&buffer).bytes().to_vec();
                    let value = Arc::new(SecretSlice::from(copy));
                    return Ok(self.handles.insert(Handle::Read { value }));
                }
                if self.names.is_new_file(&self.file_path(&file)) {
                    let value = Arc::new(SecretSlice::from(Vec::new()));
                    return Ok(self.handles.insert(Handle::Read { value }));
                }
                if self.names.kept(ino).is_some() {
                    // Retired: it serves the version it keeps.
                    return Ok(self.handles.insert(Handle::Key { ino }));
                }
                // The file must exist now; its bytes are read later, from
                // the version the kernel was last told of (`read_ino`).
                let cached = self.secret(ctx, &file.secret)?;
                let version = cached.value.ok_or(Error::NotFound)?;
                let view = self.views.get(file.view);
                view.render(&version, &file.name)
                    .ok_or_else(|| Self::unshown(view, &version, &file.name))?;
                Ok(self.handles.insert(Handle::Key { ino }))
            }
        }
    }

    /// Reads up to `size` bytes at `offset` of an open file.
    pub fn read_handle<R>(
        &self,
        ctx: &OpContext,
        fh: Fh,
        offset: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let handle = self.handles.get(fh).ok_or(Error::Stale)?;
        match &*handle {
            Handle::Read { value } => Ok(f(slice_at(value.expose_secret(), offset, size))),
            Handle::Key { ino } => self.read_ino(ctx, *ino, offset, size, f),
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
    /// So may rendered templates: one that fails to render is `EIO` at
    /// lookup and getattr already, so the kernel never reads it as empty.
    pub fn opens_can_skip_daemon(&self, ino: Ino) -> bool {
        self.config.read_only
            && matches!(
                self.names.get(ino),
                Some(NodeKind::File { .. } | NodeKind::Template { .. })
            )
    }

    /// Whether this mount refuses every change.
    pub fn is_read_only(&self) -> bool {
        self.config.read_only
    }

    /// Reads a file by inode: what every read of a key comes to, and all
    /// reads after a "no open" open (the kernel sends them with no handle).
    pub fn read_ino<R>(
        &self,
        ctx: &OpContext,
        ino: Ino,
        offset: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let bytes = match self.node(ino)? {
            NodeKind::Dir { .. } => return Err(Error::IsDir),
            NodeKind::Template { name } => {
                let rendering = self.template_rendering(ctx, &name)?;
                return Ok(f(slice_at(Self::template_bytes(&rendering)?, offset, size)));
            }
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
                // A retired inode's version is no longer the secret's: its
                // reads do not hold the secret's next switch back.
                let version = match self.names.shown_retired(ino) {
                    Some((v, retired)) => {
                        if !retired {
                            self.source.served(&secret);
                        }
                        v
                    }
                    None => self.secret(ctx, &secret)?.value.ok_or(Error::NotFound)?,
                };
                let view = self.views.get(view);
                let rendered = view
                    .render(&version, &name)
                    .ok_or_else(|| Self::unshown(view, &version, &name))?;
                return Ok(f(slice_at(rendered.bytes(), offset, size)));
            }
        };
        Ok(f(slice_at(bytes.expose_secret(), offset, size)))
    }

    /// Opens a directory: lists it once, so that offsets stay stable.
    pub fn opendir(&self, ctx: &OpContext, ino: Ino) -> Result<Fh> {
        let dir = self.dir_path(ino)?;
        let entries = self.list_dir(ctx, &dir)?;
        Ok(self.handles.insert(Handle::Dir {
            ino,
            entries: Arc::new(entries),
        }))
    }

    /// The entries of an open directory (`.` and `..` excluded) and the directory's inode.
    pub fn dir_entries(&self, fh: Fh) -> Result<(Ino, Arc<Vec<DirEntryInfo>>)> {
        match &*self.handles.get(fh).ok_or(Error::Stale)? {
            Handle::Dir { ino, entries } => Ok((*ino, entries.clone())),
            _ => Err(Error::NotDir),
        }
    }

    /// The parent inode of a directory, for `..`.
    pub fn parent_of(&self, ino: Ino) -> Ino {
        self.names.parent(ino).unwrap_or(inode::ROOT_INO)
    }
}
