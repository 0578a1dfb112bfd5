//! The namespace: every node the mount shows, store-backed or living only
//! in memory, under one lock. It owns the inode table (inode numbers ↔
//! parent, name and what each node stands for, with the kernel's lookup
//! counts) and what exists only here: directories made with mkdir and not
//! yet written, files created and not yet written, editors' scratch files,
//! and keys an editor set aside. Changes that touch both (a scratch file
//! created, moved or turned into a key; a key set aside) happen in one
//! step, so the two never disagree.

use std::sync::{Arc, Mutex, MutexGuard};

use super::inode::{FileNode, Ino, Inodes, NodeKind};
use super::local::{Fate, Local, Scratch, ScratchFile};
use secrecy::ExposeSecret;

use crate::store::{Secret, SecretPath};

/// Locks a scratch file (inside the namespace's lock: the order used
/// everywhere).
fn lock_scratch(file: &Scratch) -> MutexGuard<'_, ScratchFile> {
    file.lock().unwrap_or_else(|p| p.into_inner())
}

/// A name in a directory.
#[derive(Debug, Clone, Copy)]
pub struct Name<'a> {
    /// The directory's inode.
    pub parent: Ino,
    /// The name.
    pub name: &'a str,
}

struct State {
    inodes: Inodes,
    local: Local,
    /// Files created and removed before they were written: their open
    /// handles write nowhere, as into an unlinked file.
    forsaken: std::collections::HashSet<Ino>,
}

/// Every node of the mount.
pub struct Namespace {
    state: Mutex<State>,
}

impl Namespace {
    /// A namespace holding only the root, standing for `root` in the store.
    pub fn new(root: SecretPath) -> Self {
        Namespace {
            state: Mutex::new(State {
                inodes: Inodes::new(root),
                local: Local::default(),
                forsaken: Default::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- inodes ------------------------------------------------------------

    /// What `ino` stands for, if the kernel may still hold it.
    pub fn get(&self, ino: Ino) -> Option<NodeKind> {
        self.lock().inodes.get(ino)
    }

    /// The parent of `ino` (the root is its own parent).
    pub fn parent(&self, ino: Ino) -> Option<Ino> {
        self.lock().inodes.parent(ino)
    }

    /// The inode for `at`, created if new or if the name now stands for
    /// something else. `lookup` counts one kernel reference.
    pub fn remember(&self, at: Name<'_>, kind: NodeKind, lookup: bool) -> Ino {
        self.lock()
            .inodes
            .remember(at.parent, at.name, kind, lookup)
    }

    /// The inode currently named `at`, if any.
    pub fn lookup_name(&self, at: Name<'_>) -> Option<Ino> {
        self.lock().inodes.lookup_name(at.parent, at.name)
    }

    /// Records the version of the secret whose attributes of `ino` the
    /// kernel is being told: reads of `ino` serve it from then on.
    pub fn show(&self, ino: Ino, version: Arc<Secret>) {
        self.lock().inodes.show(ino, version)
    }

    /// The version of the secret last shown for `ino`.
    pub fn shown(&self, ino: Ino) -> Option<Arc<Secret>> {
        self.lock().inodes.shown(ino)
    }

    /// The version last shown for `ino`, and whether `ino` is retired.
    pub fn shown_retired(&self, ino: Ino) -> Option<(Arc<Secret>, bool)> {
        let state = self.lock();
        let shown = state.inodes.shown(ino)?;
        Some((shown, state.inodes.is_retired(ino)))
    }

    /// Shows `version` for `ino` unless the kernel was shown other bytes
    /// of it (see [`Inodes::show_unless_changed`]).
    #[allow(clippy::type_complexity)]
    pub fn show_unless_changed(
        &self,
        ino: Ino,
        version: Arc<Secret>,
        differs: &dyn Fn(&Secret) -> bool,
    ) -> Result<(), (Arc<Secret>, Option<(Ino, String)>)> {
        self.lock()
            .inodes
            .show_unless_changed(ino, version, differs)
    }

    /// The inode for the file `at`, shown `version`: when the inode the
    /// name leads to was shown other bytes (`differs` says, of the version
    /// it was shown), it is retired first and the name gets a new inode.
    /// The entry the kernel must drop, when one was retired.
    pub fn remember_shown(
        &self,
        at: Name<'_>,
        kind: NodeKind,
        lookup: bool,
        version: Arc<Secret>,
        differs: &dyn Fn(&Secret) -> bool,
    ) -> (Ino, Option<(Ino, String)>) {
        let mut state = self.lock();
        let inodes = &mut state.inodes;
        let mut dropped = None;
        if let Some(old) = inodes.lookup_name(at.parent, at.name) {
            if let Some(shown) = inodes.shown(old) {
                if inodes.get(old).as_ref() == Some(&kind)
                    && !Arc::ptr_eq(&shown, &version)
                    && differs(&shown)
                {
                    dropped = inodes.retire(old, &shown);
                }
            }
        }
        let ino = inodes.remember(at.parent, at.name, kind, lookup);
        inodes.show(ino, version);
        (ino, dropped)
    }

    /// The value of `ino`, shown as `shown`, changed outside this mount
    /// (see [`Inodes::retire`]): the entry the kernel must drop.
    pub fn retire(&self, ino: Ino, shown: &Arc<Secret>) -> Option<(Ino, String)> {
        self.lock().inodes.retire(ino, shown)
    }

    /// The version a retired inode keeps (`None`: not retired).
    pub fn kept(&self, ino: Ino) -> Option<Arc<Secret>> {
        self.lock().inodes.kept(ino)
    }

    /// Shows `version`, written by a writer of `ino` through this mount.
    pub fn show_written(&self, ino: Ino, version: Arc<Secret>) {
        self.lock().inodes.show_written(ino, version)
    }

    /// A writer of `ino` commits a change of it, until the guard is
    /// dropped (after [`Namespace::show_written`]): meanwhile the version
    /// it writes, already in the cache, is its own change and does not
    /// retire `ino` (see [`Inodes::begin_own_write`]).
    pub fn own_write(&self, ino: Ino) -> OwnWrite<'_> {
        self.lock().inodes.begin_own_write(ino);
        OwnWrite { names: self, ino }
    }

    /// Every file inode holding a version it was shown.
    pub fn shown_versions(&self) -> Vec<(Ino, SecretPath, Arc<Secret>)> {
        self.lock().inodes.shown_versions()
    }

    /// How many file inodes hold a version they were shown.
    pub fn shown_count(&self) -> usize {
        self.lock().inodes.shown_count()
    }

    /// Forgets the version shown for `ino`, if it is still `version`.
    pub fn unshow(&self, ino: Ino, version: &Arc<Secret>) {
        self.lock().inodes.unshow(ino, version)
    }

    /// The file inodes of `secret` the kernel may hold.
    pub fn files_of(&self, secret: &SecretPath) -> Vec<FileNode> {
        self.lock().inodes.files_of(secret)
    }

    /// The directory inodes standing for `path`.
    pub fn dirs_at(&self, path: &SecretPath) -> Vec<Ino> {
        self.lock().inodes.dirs_at(path)
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.lock().inodes.forget(ino, n)
    }

    /// Holds at most about `max` inodes (see [`Inodes::set_bound`]).
    pub fn set_bound(&self, max: Option<usize>) {
        self.lock().inodes.set_bound(max)
    }

    /// Drops the inodes the kernel holds no reference to (see
    /// [`Inodes::drop_unheld`]).
    pub fn drop_unheld(&self) -> usize {
        self.lock().inodes.drop_unheld()
    }

    /// The most inodes held before the kernel is asked to drop some.
    pub fn bound(&self) -> Option<usize> {
        self.lock().inodes.bound()
    }

    /// Whether the table is due to ask the kernel to drop entries.
    pub fn eviction_due(&self) -> bool {
        self.lock().inodes.eviction_due()
    }

    /// The entries the kernel should drop to keep the table under its
    /// bound, sparing the paths in `spared` and the directories above them
    /// (see [`Inodes::evictions`]).
    pub fn evictions(
        &self,
        spared: Option<&std::collections::HashSet<String>>,
    ) -> Vec<(Ino, String)> {
        self.lock().inodes.evictions(spared)
    }

    /// Number of inodes held (the root included).
    pub fn len(&self) -> usize {
        self.lock().inodes.len()
    }

    /// Whether only the root is held.
    pub fn is_empty(&self) -> bool {
        self.lock().inodes.is_empty()
    }

    // ---- what lives only in memory -----------------------------------------

    /// Whether `path` is a directory that lives in memory (made with mkdir,
    /// or above one or above a scratch file).
    pub fn is_local_dir(&self, path: &SecretPath) -> bool {
        self.lock().local.is_dir(path)
    }

    /// Whether `path` shows as a directory whatever the store holds: it
    /// lives in memory, or was made with mkdir and not removed since.
    pub fn shows_dir(&self, path: &SecretPath) -> bool {
        self.lock().local.shows_dir(path)
    }

    /// `rmdir` removed `path` from the store: a directory made there with
    /// mkdir is gone too.
    pub fn unmake_dir(&self, path: &SecretPath) {
        self.lock().local.unmake_dir(path)
    }

    /// Names of the directories living in memory, or made with mkdir and
    /// not removed, directly under `dir`.
    pub fn local_dirs_in(&self, dir: &SecretPath) -> Vec<String> {
        self.lock().local.dirs_in(dir)
    }

    /// Whether anything living in memory lies under `dir`.
    pub fn has_local_children(&self, dir: &SecretPath) -> bool {
        self.lock().local.has_children(dir)
    }

    /// The scratch file at `path`.
    pub fn scratch(&self, path: &SecretPath) -> Option<Scratch> {
        self.lock().local.scratch(path)
    }

    /// Names of the scratch files directly under `dir`.
    pub fn scratch_in(&self, dir: &SecretPath) -> Vec<String> {
        self.lock().local.scratch_in(dir)
    }

    /// Whether the file at `path` was created and is not written yet.
    pub fn is_new_file(&self, path: &SecretPath) -> bool {
        self.lock().local.is_new_key(path)
    }

    /// Names of the files created and not written yet in `dir`.
    pub fn new_files_in(&self, dir: &SecretPath) -> Vec<String> {
        self.lock().local.new_keys_in(dir)
    }

    /// Whether the key at `path` is hidden behind an editor's backup.
    pub fn is_hidden(&self, path: &SecretPath) -> bool {
        self.lock().local.is_hidden(path)
    }

    /// The scratch files that may become keys.
    pub fn tentative(&self) -> Vec<(SecretPath, Scratch)> {
        self.lock().local.tentative()
    }

    /// Whether a tentative file or a removal waits to be settled.
    pub fn has_pending(&self) -> bool {
        self.lock().local.has_pending()
    }

    /// The tentative scratch file at `scratch` was written as the key
    /// `kind` (at `path` of `secret`) under its own name: it leaves
    /// memory, and its inodes stand for the key.
    ///
    /// Only if `file` is still the scratch file at `scratch` and still
    /// holds `written` (what was stored): a program may have renamed,
    /// removed or written it while the key was being stored. Says whether
    /// it did become the key.
    pub fn scratch_became_file(
        &self,
        scratch: &SecretPath,
        (file, written): (&Scratch, &[u8]),
        (secret, path): (&SecretPath, &SecretPath),
        kind: NodeKind,
    ) -> bool {
        let mut state = self.lock();
        let unchanged = state.local.scratch(scratch).is_some_and(|current| {
            Arc::ptr_eq(&current, file) && lock_scratch(file).data.expose_secret() == written
        });
        if !unchanged {
            return false;
        }
        state.local.remove_scratch(scratch);
        state.local.committed(secret, path);
        state.inodes.retarget(
            &NodeKind::Scratch {
                path: scratch.clone(),
            },
            kind,
        );
        true
    }

    /// Makes a directory in memory at `path`, named `at`.
    pub fn make_dir(&self, at: Name<'_>, path: SecretPath) -> Ino {
        let mut state = self.lock();
        state.local.add_dir(path.clone());
        state
            .inodes
            .remember(at.parent, at.name, NodeKind::Dir { path }, true)
    }

    /// Removes a directory living in memory; `false` if there was none.
    pub fn remove_local_dir(&self, path: &SecretPath) -> bool {
        self.lock().local.remove_dir(path)
    }

    /// Creates an empty scratch file at `path`, named `at`, with its fate.
    pub fn create_scratch(&self, at: Name<'_>, path: SecretPath, fate: Fate) -> (Ino, Scratch) {
        let mut state = self.lock();
        let file = state
            .local
            .put_scratch(path.clone(), ScratchFile::with_fate(Vec::new(), fate));
        let ino = state
            .inodes
            .remember(at.parent, at.name, NodeKind::Scratch { path }, true);
        (ino, file)
    }

    /// Removes a scratch file; a key it held aside shows again.
    pub fn remove_scratch(&self, path: &SecretPath) -> Option<Scratch> {
        self.lock().local.remove_scratch(path)
    }

    /// Moves the scratch file `from` (at `src`) to `to` (at `dst`).
    pub fn move_scratch(
        &self,
        (from, src): (Name<'_>, &SecretPath),
        (to, dst): (Name<'_>, SecretPath),
    ) {
        let mut state = self.lock();
        let Some(file) = state.local.remove_scratch(src) else {
            return;
        };
        let moved = std::mem::replace(
            &mut *file.lock().unwrap_or_else(|p| p.into_inner()),
            ScratchFile::new(Vec::new()),
        );
        state.local.put_scratch(dst.clone(), moved);
        state.inodes.rename(
            from.parent,
            from.name,
            to.parent,
            to.name,
            NodeKind::Scratch { path: dst },
        );
    }

    /// Creates a file at `path`, named `at`, standing for `kind`: it shows
    /// (empty) until written, and disappears if it never is.
    pub fn create_file(&self, at: Name<'_>, path: SecretPath, kind: NodeKind) -> Ino {
        let mut state = self.lock();
        // A file of that name removed before it was written keeps its
        // inode (its handles write nowhere): the new one gets its own.
        if let Some(ino) = state.inodes.lookup_name(at.parent, at.name) {
            if state.forsaken.contains(&ino) {
                state.inodes.unname(at.parent, at.name);
            }
        }
        state.local.add_new_key(path);
        state.inodes.remember(at.parent, at.name, kind, true)
    }

    /// Forgets a created file that was never written; `false` if none.
    pub fn remove_new_file(&self, path: &SecretPath) -> bool {
        self.lock().local.remove_new_key(path)
    }

    /// A created file named `at` was removed before it was written: what
    /// its open handles write and close goes nowhere (git's `tXXXXXX`
    /// probe: create, close, remove, while the release is on its way).
    pub fn forsake(&self, at: Name<'_>) {
        let mut state = self.lock();
        if let Some(ino) = state.inodes.lookup_name(at.parent, at.name) {
            state.forsaken.insert(ino);
        }
    }

    /// The key named `at` was removed while programs hold it open: what
    /// they write and close goes nowhere, and the name, should the key
    /// come back (written elsewhere), leads to a new inode.
    pub fn forsake_removed(&self, at: Name<'_>) {
        let mut state = self.lock();
        if let Some(ino) = state.inodes.lookup_name(at.parent, at.name) {
            state.forsaken.insert(ino);
            state.inodes.unname(at.parent, at.name);
        }
    }

    /// Whether `ino` is a file removed before it was written.
    pub fn is_forsaken(&self, ino: Ino) -> bool {
        self.lock().forsaken.contains(&ino)
    }

    /// The last handle on `ino` closed: nothing more to forsake.
    pub fn forget_forsaken(&self, ino: Ino) {
        self.lock().forsaken.remove(&ino);
    }

    /// An editor's backup (`KEY` → `KEY~`): the key at `key` (named
    /// `from`) is hidden, and its old bytes live in a scratch file at
    /// `backup` (named `to`) until the editor writes the new value.
    pub fn set_aside(
        &self,
        (from, key): (Name<'_>, SecretPath),
        (to, backup): (Name<'_>, SecretPath),
        bytes: Vec<u8>,
    ) {
        let mut state = self.lock();
        state
            .local
            .put_scratch(backup.clone(), ScratchFile::new(bytes));
        state.local.displace(key, backup.clone());
        state.inodes.rename(
            from.parent,
            from.name,
            to.parent,
            to.name,
            NodeKind::Scratch { path: backup },
        );
    }

    /// A write of `secret` reached the store: the secret and every folder
    /// above it exist there now.
    pub fn secret_written(&self, secret: &SecretPath) {
        self.lock().local.secret_written(secret)
    }

    /// The store deleted `secret` when its last key was removed (KV v1
    /// holds no secret without keys): its directory stays in memory.
    pub fn secret_emptied(&self, secret: &SecretPath) {
        self.lock().local.add_dir(secret.clone())
    }

    /// A write of the file at `path` (a file of `secret`) reached the store.
    pub fn file_written(&self, secret: &SecretPath, path: &SecretPath) {
        self.lock().local.committed(secret, path)
    }

    /// A rename committed in the store: the node `from` is now `to`,
    /// standing for the file at `path` of `secret` (`kind`).
    pub fn renamed_to_file(
        &self,
        from: Name<'_>,
        to: Name<'_>,
        (secret, path): (&SecretPath, &SecretPath),
        kind: NodeKind,
    ) {
        let mut state = self.lock();
        state.local.committed(secret, path);
        state
            .inodes
            .rename(from.parent, from.name, to.parent, to.name, kind);
    }
}

/// A commit of a change of the file `ino` by a writer of this mount (see
/// [`Namespace::own_write`]); ends when dropped.
pub struct OwnWrite<'a> {
    names: &'a Namespace,
    ino: Ino,
}

impl Drop for OwnWrite<'_> {
    fn drop(&mut self) {
        self.names.lock().inodes.end_own_write(self.ino);
    }
}
