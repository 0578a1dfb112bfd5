//! The write path: every change a program makes through the mount, turned
//! into as few store writes as possible, each one a read-modify-write of
//! the whole secret with check-and-set (KV v2), retried on conflict.

use crate::fs::OpContext;
use std::time::{Instant, SystemTime};

use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};

use super::handle::{Fh, Handle};
use super::inode::{Ino, NodeKind};
use super::local::{Fate, Scratch};
use super::namespace::Name;
use super::writers::{write_into, Landed, WriteBuffer};
use super::{lock, names, Attr, Child, FileRef, SecretFs};
use crate::error::{Error, Result};
use crate::store::{SecretData, SecretPath};

/// Truncates or extends a scratch file to `size` bytes.
pub(super) fn truncate_scratch(file: &Scratch, size: u64) {
    let mut f = lock(file);
    f.data
        .expose_secret_mut()
        .resize(usize::try_from(size).unwrap_or(usize::MAX), 0);
    f.modified = SystemTime::now();
}

/// How a file is created.
#[derive(Debug, Clone, Copy, Default)]
pub struct Creating {
    /// `O_EXCL`: the name must not exist (how `mkstemp`, rsync, `sed -i`,
    /// `cp` and `install` create).
    pub exclusive: bool,
    /// The process id of the program creating it, when known.
    pub caller: Option<u32>,
}

impl SecretFs {
    /// A change cannot be saved while the store is known not to answer:
    /// say so at open, where shells see it (they ignore close's errors).
    fn store_answers(&self) -> Result<()> {
        if self.source.is_down() {
            return Err(Error::Unavailable(
                "the store does not answer: a change could not be saved".into(),
            ));
        }
        Ok(())
    }

    fn writable(&self) -> Result<()> {
        if self.config.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Whether `dir` may change: not in a version of a secret (`db@3`),
    /// which only reads, even on a writable mount.
    fn writable_in(&self, dir: &SecretPath) -> Result<()> {
        self.writable()?;
        match dir.version() {
            Some(_) => Err(Error::ReadOnly),
            None => Ok(()),
        }
    }

    /// Commits a change to `secret` (see [`Writers::commit`]); what lived
    /// only in memory above it now exists in the store. A secret the store
    /// deleted because no key was left (KV v1) stays a directory in
    /// memory, as an empty secret does in KV v2, until `rmdir`.
    pub(super) fn commit(
        &self,
        ctx: &OpContext,
        secret: &SecretPath,
        change: impl FnMut(&mut SecretData) -> Result<()>,
    ) -> Result<Landed> {
        self.commit_unless(ctx, secret, None, || false, change)
    }

    /// [`commit`](Self::commit), unless `lost` (see [`Writers::commit_unless`]).
    /// A commit by a `writer` of the file `ino` (a close, a `truncate`)
    /// shows the version written on `ino` in place, in commit order (under
    /// the secret's commit lock: a later commit is never shown before an
    /// earlier one), and from before the cache holds it until it is shown
    /// `ino` is not retired for it (see [`Namespace::own_write`]).
    fn commit_unless(
        &self,
        ctx: &OpContext,
        secret: &SecretPath,
        writer: Option<Ino>,
        lost: impl FnOnce() -> bool,
        change: impl FnMut(&mut SecretData) -> Result<()>,
    ) -> Result<Landed> {
        let own = writer.map(|ino| self.names.own_write(ino));
        let show = |landed: &Landed| {
            if let (Some(ino), Landed::Version(version)) = (writer, landed) {
                // In place: a writer's own change never retires its inode.
                self.names.show_written(ino, version.clone());
            }
        };
        let written = self
            .writers
            .commit_unless(ctx, &self.source, secret, lost, change, show);
        drop(own);
        let written = match written {
            Ok(written) => written,
            Err(e @ Error::OutcomeUnknown(_)) => {
                self.outcome_unknown(secret);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        match &written {
            Landed::Version(_) => self.names.secret_written(secret),
            Landed::Deleted => self.names.secret_emptied(secret),
            Landed::Nothing => {}
        }
        Ok(written)
    }

    /// A write of `secret` may or may not have been applied (the cache
    /// forgot it already): the kernel must forget what it was shown of
    /// its files too, so that nothing serves the old value as if nothing
    /// happened; their next reads ask the store.
    fn outcome_unknown(&self, secret: &SecretPath) {
        for file in self.names.files_of(secret) {
            if let Some(shown) = &file.shown {
                self.names.unshow(file.ino, shown);
            }
            self.invalidate(super::Invalidation::Inode(file.ino));
        }
    }

    /// The bytes a file shows now: the change a writer made last and has
    /// not committed yet, else its value in the store.
    fn current_bytes(&self, ctx: &OpContext, ino: Ino, file: &FileRef) -> Result<Vec<u8>> {
        if let Some(buffer) = self.writers.pending(ino) {
            return Ok(lock(&buffer).bytes().to_vec());
        }
        self.stored_bytes(ctx, file)
    }

    /// The file's value in the store (as cached), whatever writers of it
    /// have not committed yet: what a writer's own buffer starts from.
    fn stored_bytes(&self, ctx: &OpContext, file: &FileRef) -> Result<Vec<u8>> {
        if self.names.is_new_file(&self.file_path(file)) {
            return Ok(Vec::new());
        }
        let cached = self.secret(ctx, &file.secret)?;
        let version = cached.value.ok_or(Error::NotFound)?;
        let view = self.views.get(file.view);
        let rendered = view
            .render(&version, &file.name)
            .ok_or_else(|| Self::unshown(view, &version, &file.name))?;
        Ok(rendered.bytes().to_vec())
    }

    /// Writes `bytes` as the file's new content: one commit of its secret.
    /// A `writer` of the file `ino` sees it in place (see
    /// [`commit_unless`](Self::commit_unless)).
    fn commit_file(
        &self,
        ctx: &OpContext,
        writer: Option<Ino>,
        file: &FileRef,
        bytes: &[u8],
    ) -> Result<Landed> {
        let view = self.views.get(file.view);
        self.commit_unless(
            ctx,
            &file.secret,
            writer,
            || false,
            |data| view.write(data, &file.name, bytes.to_vec()),
        )
    }

    pub(super) fn open_for_write(
        &self,
        ctx: &OpContext,
        ino: Ino,
        file: FileRef,
        truncate: bool,
    ) -> Result<Fh> {
        self.writable_in(&file.secret)?;
        self.store_answers()?;
        self.may_write(ctx, &file.secret)?;
        // A buffer of this writer's own, from the value in the store (not
        // from what another writer has not committed: that would mix them).
        // What a closed descriptor changed and nobody committed yet (a
        // shell's `: > K`, committed at its last close) is what this open
        // starts from, as it would be on a local file.
        let initial = if truncate {
            Vec::new()
        } else if let Some(closed) = self.writers.closed_change(ino) {
            closed
        } else if self.names.kept(ino).is_some() {
            // Retired (its value changed outside): the store's value is
            // not the one this inode shows, and its own is no longer the
            // store's. A change of its bytes would mix the two, over a
            // version its writer never read: refused, as NFS refuses a
            // file handle whose file the server replaced. `O_TRUNC` keeps
            // nothing of either and writes.
            return Err(Error::Stale);
        } else {
            self.stored_bytes(ctx, &file)?
        };
        let mut buffer = WriteBuffer::new(file, initial);
        if truncate {
            buffer.resize(0);
        }
        let buffer = self.writers.start(ino, buffer);
        Ok(self.handles.insert(Handle::Write { ino, buffer }))
    }

    /// Writes `data` at `offset` of an open file; the store sees it on flush.
    pub fn write_handle(&self, fh: Fh, offset: u64, data: &[u8]) -> Result<u32> {
        self.writable()?;
        let limit = self.config.max_value_size;
        match &*self.handles.get(fh).ok_or(Error::Stale)? {
            Handle::Write { buffer, .. } => {
                let mut b = lock(buffer);
                b.write_at(offset, data, limit)?;
                let (view, name) = (self.views.get(b.file.view), b.file.name.clone());
                b.check(|bytes| view.check_partial(&name, bytes))?;
            }
            Handle::Scratch { file } => {
                let mut f = lock(file);
                write_into(f.data.expose_secret_mut(), offset, data, limit)?;
                f.modified = SystemTime::now();
            }
            Handle::Read { .. } | Handle::Key { .. } => return Err(Error::ReadOnly),
            Handle::Dir { .. } => return Err(Error::IsDir),
        }
        Ok(u32::try_from(data.len()).unwrap_or(u32::MAX))
    }

    /// Commits what was written through `fh` (on close and fsync), so that
    /// any failure reaches the program. A change made only by truncation or
    /// creation, with no byte written, waits for [`release`](Self::release).
    pub fn flush(&self, ctx: &OpContext, fh: Fh) -> Result<()> {
        if let Some(handle) = self.handles.get(fh) {
            if let Handle::Write { ino, buffer } = &*handle {
                self.writers.note_close(*ino, buffer);
            }
        }
        self.commit_handle(ctx, fh, false)
    }

    /// Commits an open file's buffer if it holds a change; with `force`
    /// also a change made without writing (truncation, creation). The
    /// buffer is not locked while the store is asked.
    fn commit_handle(&self, ctx: &OpContext, fh: Fh, force: bool) -> Result<()> {
        let handle = self.handles.get(fh).ok_or(Error::Stale)?;
        let Handle::Write { ino, buffer } = &*handle else {
            return Ok(());
        };
        if self.names.is_forsaken(*ino) {
            // Removed before it was written: writes go nowhere.
            return Ok(());
        }
        let (file, due) = {
            let b = lock(buffer);
            let Some(due) = b.due(force)? else {
                return Ok(());
            };
            (b.file.clone(), due)
        };
        let bytes = due.bytes.expose_secret();
        let result = if bytes.len() as u64 > self.config.max_value_size {
            Err(Error::TooBig(self.config.max_value_size))
        } else {
            let view = self.views.get(file.view);
            // Asked under the secret's commit lock: a change closed
            // before another writer's close lost to it (the last close
            // wins), even when its commit comes later, as a RELEASE does.
            let lost = || {
                let lost = self.writers.superseded(*ino, buffer);
                if lost {
                    tracing::debug!(path = %file.name, "a later close won: this change is not written");
                }
                lost
            };
            self.commit_unless(ctx, &file.secret, Some(*ino), lost, |data| {
                view.write(data, &file.name, bytes.to_vec())
            })
        };
        let landed = match result {
            Ok(landed) => landed,
            Err(e) => {
                lock(buffer).fail(e.clone());
                return Err(e);
            }
        };
        // The kernel sized the file by what was written: the version just
        // committed is what its reads must serve.
        lock(buffer).committed(&due);
        if !matches!(landed, Landed::Version(_)) {
            // Lost to a later close: nothing of it is in the store.
            return Ok(());
        }
        self.names
            .file_written(&file.secret, &self.file_path(&file));
        if self.names.is_forsaken(*ino) {
            // Removed while this commit ran (a created file removed as its
            // release committed it): the removal follows.
            self.write_removal(ctx, &file);
        }
        Ok(())
    }

    /// Commits every change of an open file, written or not (fsync).
    pub fn fsync(&self, ctx: &OpContext, fh: Fh) -> Result<()> {
        self.commit_handle(ctx, fh, true)
    }

    /// Whether `fh` writes: its release may commit (and ask the store).
    pub fn writes_through(&self, fh: Fh) -> bool {
        self.handles
            .get(fh)
            .is_some_and(|h| matches!(&*h, Handle::Write { .. }))
    }

    /// Drops a handle its opener never got (the open or create failed
    /// after the handle was made): nothing written to it or created with
    /// it is committed.
    pub fn discard(&self, ctx: &OpContext, fh: Fh) {
        if let Some(handle) = self.handles.get(fh) {
            if let Handle::Write { buffer, .. } = &*handle {
                lock(buffer).fail(Error::Stale);
            }
        }
        self.release(ctx, fh);
    }

    /// Closes a handle. A write buffer that is still dirty (a truncation or
    /// creation with nothing written) is committed now; its errors can only
    /// be logged. A buffer whose writer was told an error is discarded.
    pub fn release(&self, ctx: &OpContext, fh: Fh) {
        let Some(handle) = self.handles.get(fh) else {
            return;
        };
        if let Handle::Write { ino, buffer } = &*handle {
            let told = lock(buffer).failure().is_some();
            if told {
                tracing::info!(path = %self.describe(*ino), "change discarded after an error the writer was told");
            } else if let Err(e) = self.commit_handle(ctx, fh, true) {
                tracing::error!(path = %self.describe(*ino), error = %e, "change not saved to the store");
            }
            if self.writers.leave(*ino, buffer) {
                // A file removed before it was written: the removal did
                // what follows, and its name may be a newer file's now.
                let forsaken = self.names.is_forsaken(*ino);
                self.names.forget_forsaken(*ino);
                // A created key that never reached the store disappears.
                let path = self.file_path(&lock(buffer).file);
                if !forsaken {
                    self.names.remove_new_file(&path);
                }
            }
        }
        let scratch = matches!(&*handle, Handle::Scratch { .. });
        if let Handle::Scratch { file } = &*handle {
            // A tool's temporary file left alone becomes a key (settle.rs).
            lock(file).closed = Some(Instant::now());
        }
        self.handles.remove(fh);
        if scratch {
            // Once no handle holds the file: the settler counts them.
            drop(handle);
            self.settler.wake();
        }
    }

    /// Changes attributes: size (truncate) is a write; owner and group are
    /// fixed by the mount; modes are accepted and ignored (the mount sets them).
    /// A truncation through an open file (`ftruncate`, `fh`) changes that
    /// writer's buffer; one by path is committed at once.
    pub fn setattr(
        &self,
        ctx: &OpContext,
        ino: Ino,
        fh: Option<Fh>,
        size: Option<u64>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<Attr> {
        let p = self.config.presentation;
        if uid.is_some_and(|u| u != p.uid) || gid.is_some_and(|g| g != p.gid) {
            return Err(Error::NotPermitted(
                "owner and group are set by the mount options",
            ));
        }
        if let Some(size) = size {
            self.writable()?;
            if size > self.config.max_value_size {
                return Err(Error::TooBig(self.config.max_value_size));
            }
            match self.node(ino)? {
                NodeKind::Dir { .. } => return Err(Error::IsDir),
                NodeKind::Template { .. } => return Err(Error::ReadOnly),
                NodeKind::Scratch { path } => {
                    let file = self.names.scratch(&path).ok_or(Error::NotFound)?;
                    truncate_scratch(&file, size);
                }
                NodeKind::File { secret, view, name } => {
                    let file = FileRef { secret, view, name };
                    let len = usize::try_from(size).unwrap_or(usize::MAX);
                    let handle = fh.and_then(|fh| self.handles.get(fh));
                    match handle.as_deref() {
                        // Committed with the writer's flush.
                        Some(Handle::Write { buffer, .. }) => lock(buffer).resize(size),
                        _ => {
                            // truncate(2) on a path: nothing will flush it, so commit now.
                            self.writable_in(&file.secret)?;
                            if size > 0 && self.names.kept(ino).is_some() {
                                // Retired: it would keep bytes of the store's
                                // value, which it never showed (see
                                // `open_for_write`).
                                return Err(Error::Stale);
                            }
                            self.may_write(ctx, &file.secret)?;
                            let mut bytes = self.stored_bytes(ctx, &file)?;
                            bytes.resize(len, 0);
                            let bytes = SecretBox::new(Box::new(bytes));
                            self.commit_file(ctx, Some(ino), &file, bytes.expose_secret())?;
                            self.names
                                .file_written(&file.secret, &self.file_path(&file));
                        }
                    }
                }
            }
        }
        self.getattr(ctx, ino)
    }

    /// Creates a file (`open(O_CREAT)` of a missing name, without
    /// `O_EXCL`) and opens it for writing: a key of the directory's
    /// secret, whatever its name, committed on flush (an empty file makes
    /// an empty value). See [`create_with`](Self::create_with).
    pub fn create(&self, ctx: &OpContext, parent: Ino, name: &str) -> Result<(Attr, Fh)> {
        self.create_with(ctx, parent, name, Creating::default())
    }

    /// Creates a file and opens it for writing. A file created
    /// exclusively (`O_EXCL`, as `mkstemp`, rsync, `sed -i` and editors
    /// create their temporary files) under a scratch name
    /// ([`names::is_scratch`]) lives in memory: renamed onto a key it
    /// becomes that key in one write; removed, it never reaches the store;
    /// left alone, it becomes a key under its own name (see `settle`),
    /// unless it is an editor's private file. Every other file is a key.
    pub fn create_with(
        &self,
        ctx: &OpContext,
        parent: Ino,
        name: &str,
        how: Creating,
    ) -> Result<(Attr, Fh)> {
        self.writable()?;
        let dir = self.dir_path(parent)?;
        self.writable_in(&dir)?;
        names::acceptable(name, "key")?;
        let path = dir.join(name);
        let at = Name { parent, name };
        if how.exclusive && names::is_scratch(name) {
            let fate = if names::is_editor_private(name) {
                Fate::MemoryOnly
            } else {
                Fate::Tentative { caller: how.caller }
            };
            let (ino, file) = self.names.create_scratch(at, path.clone(), fate);
            let attr = self.scratch_attr(ino, &path)?;
            return Ok((attr, self.handles.insert(Handle::Scratch { file })));
        }
        self.store_answers()?;
        let cannot = || Error::Invalid(format!("{name:?} cannot be a file of a secret"));
        let view = self.view_creating(name).ok_or_else(cannot)?;
        let file = self.file_ref(&dir, view, name).ok_or_else(cannot)?;
        if file.secret.is_root() {
            return Err(Error::NotPermitted(
                "the mount's root is a folder: keys belong in a secret directory (mkdir one first)",
            ));
        }
        self.may_write(ctx, &file.secret)?;
        let ino = self.names.create_file(at, path, file.kind());
        let attr = self.file_attr(ino, 0, SystemTime::now(), std::time::Duration::ZERO);
        let fh = self.open_for_write(ctx, ino, file, true)?;
        Ok((attr, fh))
    }

    /// `fallocate`: not offered (a value is written whole when the file is
    /// closed; there is no space to reserve). `EOPNOTSUPP`, on which
    /// `posix_fallocate` falls back to writing.
    pub fn fallocate(&self, ino: Ino) -> Result<()> {
        self.node(ino)?;
        Err(Error::NotSupported(
            "fallocate: values are stored whole when the file is closed",
        ))
    }

    /// Makes a directory. It lives in memory until a key is written in it.
    pub fn mkdir(&self, ctx: &OpContext, parent: Ino, name: &str) -> Result<Attr> {
        self.writable()?;
        let dir = self.dir_path(parent)?;
        self.writable_in(&dir)?;
        names::acceptable(name, "secret")?;
        let path = dir.join(name);
        match self.find_child(ctx, &dir, name) {
            // A directory left by a (soft) deleted secret, holding nothing,
            // can be made again; a live secret, even with no keys, exists.
            Ok((Child::Dir(_), _))
                if !self.names.shows_dir(&path)
                    && !self.secret_is_live(ctx, &path)?
                    && self.list_dir(ctx, &path)?.is_empty() => {}
            Ok(_) => return Err(Error::Exists),
            Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        let ino = self.names.make_dir(Name { parent, name }, path);
        Ok(self.dir_attr(ino, super::LOCAL_TTL))
    }

    /// Removes a key or a file living in memory. A key's removal is one
    /// write of its secret without it, made before `unlink` returns: the
    /// store's answer is the program's, and a removal `rm` reported done
    /// is in the store, whatever happens to the daemon next. (`install`
    /// and `mv` from another secret remove, then create: the new value is
    /// a second version.)
    pub fn unlink(&self, ctx: &OpContext, parent: Ino, name: &str) -> Result<()> {
        let dir = self.dir_path(parent)?;
        // A version view (`db@3/K`) is read-only.
        self.writable_in(&dir)?;
        let path = dir.join(name);
        if self.names.remove_scratch(&path).is_some() {
            return Ok(());
        }
        if self.names.remove_new_file(&path) {
            self.names.forsake(Name { parent, name });
            return Ok(());
        }
        match self.find_child(ctx, &dir, name)?.0 {
            Child::Dir(_) => Err(Error::IsDir),
            Child::Template(_) => Err(Error::ReadOnly),
            Child::Scratch(_) | Child::NewFile(_) => Ok(()),
            Child::File { file, .. } => {
                self.may_write(ctx, &file.secret)?;
                // The store known down: said at once, not after a timeout.
                self.store_answers()?;
                let view = self.views.get(file.view);
                self.commit(ctx, &file.secret, |data| view.remove(data, &file.name))?;
                // As on a local disk, what programs still holding it open
                // write and close goes nowhere: their closes must not
                // write the removed key (and its secret) back.
                let at = Name { parent, name };
                if self
                    .names
                    .lookup_name(at)
                    .is_some_and(|ino| self.writers.is_open(ino))
                {
                    self.names.forsake_removed(at);
                }
                Ok(())
            }
        }
    }

    /// Writes the removal of a key the program was told is gone (a created
    /// file removed while its commit ran): its failure can only be logged.
    fn write_removal(&self, ctx: &OpContext, file: &FileRef) {
        let path = self.file_path(file);
        let view = self.views.get(file.view);
        match self.commit(ctx, &file.secret, |data| view.remove(data, &file.name)) {
            // Removed meanwhile (elsewhere, or the secret was deleted).
            Ok(_) | Err(Error::NotFound) => {}
            Err(e @ Error::OutcomeUnknown(_)) => {
                tracing::error!(path = %format!("/{path}"), error = %e, "a key's removal got no answer: the store may or may not hold the key");
                self.record_error(format!("unlink /{path}: {e}"));
            }
            Err(e) => {
                tracing::error!(path = %format!("/{path}"), error = %e, "a key's removal could not be written: the store still holds it");
                self.record_error(format!("unlink /{path}: {e}"));
            }
        }
    }

    /// Removes an empty directory: in KV v2 a soft delete of its secret
    /// (`bao kv undelete` brings it back); the name leaves the mount.
    pub fn rmdir(&self, ctx: &OpContext, parent: Ino, name: &str) -> Result<()> {
        let dir = self.dir_path(parent)?;
        self.writable_in(&dir)?;
        let path = dir.join(name);
        if self.names.is_local_dir(&path) {
            if self.names.has_local_children(&path) {
                return Err(Error::NotEmpty);
            }
            self.names.remove_local_dir(&path);
            return Ok(());
        }
        // The path the directory stands for (a version's: `db@3`).
        let path = match self.find_child(ctx, &dir, name)?.0 {
            Child::Dir(path) => path,
            _ => return Err(Error::NotDir),
        };
        // A version view (`db@3`) is read-only.
        self.writable_in(&path)?;
        if !self.list_dir(ctx, &path)?.is_empty() {
            return Err(Error::NotEmpty);
        }
        // A secret the listing still names is deleted even when it does
        // not read (deleted elsewhere): the store then stops listing it.
        // Only where the directory stands for the secret: in a layout
        // that shows secrets as files beside it, it is only a folder.
        let stands_for_secret = self.views.any_inside()
            && (self.source.read_latest(ctx, &path)?.is_some()
                || self.listed_as_secret(ctx, &path)?);
        if stands_for_secret {
            self.may_delete(ctx, &path)?;
            self.source.delete(ctx, &path)?;
        } else {
            self.source.forget_deleted(&path);
        }
        // A directory made here with mkdir and written since is removed.
        self.names.unmake_dir(&path);
        Ok(())
    }

    /// Renames a file inside one secret: one atomic write. Files living in
    /// memory move in memory between scratch names, and renamed onto a
    /// key or any other name commit their content as that key (`sed -i`,
    /// rsync, `mkstemp` + `os.replace`: one version, no temporary key); a
    /// key renamed to a backup name (`KEY~`: vim, emacs, `cp --backup`) is
    /// only hidden while the editor writes its new version.
    /// Anything across secrets, and any directory, is `EXDEV`, so `mv`
    /// falls back to copy and delete.
    pub fn rename(
        &self,
        ctx: &OpContext,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        self.writable()?;
        let (src_dir, dst_dir) = (self.dir_path(parent)?, self.dir_path(new_parent)?);
        self.writable_in(&src_dir)?;
        self.writable_in(&dst_dir)?;
        names::acceptable(new_name, "key")?;
        let (src, dst) = (src_dir.join(name), dst_dir.join(new_name));
        let from = Name { parent, name };
        let to = Name {
            parent: new_parent,
            name: new_name,
        };
        let dst_found = self.find_child(ctx, &dst_dir, new_name);
        if no_replace && dst_found.is_ok() {
            return Err(Error::Exists);
        }
        let dst_is_key = matches!(dst_found, Ok((Child::File { .. } | Child::NewFile(_), _)));

        if let Some(file) = self.names.scratch(&src) {
            // Between scratch names (an editor's dance), the file stays in
            // memory; onto a key or any other name it becomes a key.
            if names::is_scratch(new_name) && !dst_is_key {
                self.names.move_scratch((from, &src), (to, dst));
                return Ok(());
            }
            if src_dir != dst_dir {
                return Err(Error::CrossSecret);
            }
            // `sed -i`, `mv tmp KEY`: the scratch file's bytes become the key.
            let target = self
                .view_creating(new_name)
                .and_then(|view| self.file_ref(&dst_dir, view, new_name))
                .ok_or_else(|| {
                    Error::Invalid(format!("{new_name:?} cannot be a file of a secret"))
                })?;
            self.may_write(ctx, &target.secret)?;
            // Copied out: no scratch file is locked while the namespace
            // is (the namespace locks them inside its own lock).
            let bytes = SecretBox::new(Box::new(lock(&file).data.expose_secret().clone()));
            self.commit_file(ctx, None, &target, bytes.expose_secret())?;
            self.names.remove_scratch(&src);
            self.now_a_file(from, to, target);
            return Ok(());
        }

        let source = match self.find_child(ctx, &src_dir, name)?.0 {
            Child::Dir(_) => return Err(Error::CrossSecret),
            Child::Template(_) => return Err(Error::ReadOnly),
            Child::Scratch(_) => return Err(Error::NotFound),
            Child::NewFile(_) => {
                return Err(Error::NotPermitted(
                    "the key is still being written: close it first",
                ))
            }
            Child::File { file, .. } => file,
        };
        if src_dir != dst_dir {
            return Err(Error::CrossSecret);
        }
        // Whatever follows changes the key's secret (a key moved aside is
        // written again when the editor saves).
        self.may_write(ctx, &source.secret)?;
        if names::is_backup(new_name) && !dst_is_key {
            // An editor's backup (`vim`, `emacs`: KEY → KEY~): keep the old
            // value in memory and hide the key until the new one is written.
            // (Inode 0, never allocated, when the kernel holds no inode for it.)
            let src_ino = self.names.lookup_name(from).unwrap_or(Ino(0));
            let bytes = self.current_bytes(ctx, src_ino, &source)?;
            self.names.set_aside((from, src), (to, dst), bytes);
            return Ok(());
        }
        // Within one secret only: one write renames a key.
        let target = self
            .file_ref(&dst_dir, source.view, new_name)
            .filter(|t| t.secret == source.secret)
            .ok_or(Error::CrossSecret)?;
        // A key an editor moved aside does not show: it may be replaced.
        let dst_hidden = self.names.is_hidden(&dst);
        let view = self.views.get(source.view);
        self.commit(ctx, &source.secret, |data| {
            view.rename(data, &source.name, &target.name, no_replace && !dst_hidden)
        })?;
        self.now_a_file(from, to, target);
        Ok(())
    }

    /// After a rename was committed: the new name is `file`, and the inode
    /// the kernel keeps across the rename stands for it.
    fn now_a_file(&self, from: Name<'_>, to: Name<'_>, file: FileRef) {
        // A file living in memory under the new name is replaced.
        let dst = self.file_path(&file);
        if self.names.scratch(&dst).is_some() {
            self.names.remove_scratch(&dst);
        }
        self.names.renamed_to_file(
            from,
            to,
            (&file.secret, &self.file_path(&file)),
            file.kind(),
        );
    }
}
