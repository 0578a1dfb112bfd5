//! What is left for later, and settled once it is known that nothing will
//! follow: a tool's temporary file nobody renamed or removed becomes a key
//! under its own name, and a key's removal not replaced by a new key is
//! written. "Nothing will follow" is known when the program that made the
//! change has exited (or, for a removal, [`SETTLE_AFTER`] after it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretBox};

use super::inode::NodeKind;
use super::local::{Fate, Scratch, Unlinking, SETTLE_AFTER};
use super::{lock, FileRef, SecretFs};
use crate::error::Error;
use crate::store::SecretPath;

/// How often the settler looks for what is due.
const SETTLE_EVERY: Duration = Duration::from_millis(5);

/// Whether the process `pid` has exited (or is a zombie): it will make no
/// more requests.
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which may hold spaces and
        // parentheses: it is the first field after the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Whether a removal made at `since` by `caller` is due to be written:
/// its program has exited, or it is [`SETTLE_AFTER`] old (a program that
/// keeps running: the store must not lag behind the mount for long).
fn removal_due(caller: Option<u32>, since: Instant) -> bool {
    since.elapsed() >= SETTLE_AFTER || caller.is_some_and(has_exited)
}

/// Whether a temporary file last closed at `closed` by `caller`'s program
/// is due to become a key: that program has exited (it will not rename
/// it; an editor's backup kept with `:set backup` is stored when the
/// editor exits), or, when the program is not known, [`SETTLE_AFTER`]
/// after its last close.
fn temporary_due(caller: Option<u32>, closed: Instant) -> bool {
    match caller {
        Some(pid) => has_exited(pid),
        None => closed.elapsed() >= SETTLE_AFTER,
    }
}

impl SecretFs {
    /// Settles what is due; with `all`, everything pending, as if every
    /// program had exited (tests, and the reference model).
    pub fn settle(&self, all: bool) {
        for (path, pending) in self.names.unlinking() {
            if all || removal_due(pending.caller, pending.at) {
                // Each write has a deadline of its own.
                super::operation(|| self.settle_removal(&path, pending));
            }
        }
        for (path, file) in self.names.tentative() {
            let (closed, caller) = {
                let f = lock(&file);
                match f.fate {
                    Fate::Tentative { caller } => (f.closed, caller),
                    Fate::MemoryOnly => continue,
                }
            };
            // Still open (the namespace and this loop hold one reference
            // each; every open handle another), or never closed yet.
            let Some(closed) = closed else { continue };
            if Arc::strong_count(&file) > 2 {
                continue;
            }
            if all || temporary_due(caller, closed) {
                super::operation(|| self.keep_tentative(&path, &file));
            }
        }
    }

    /// Writes the pending removals of keys of `secret` now (`rmdir` after
    /// `rm -r`).
    pub(super) fn settle_removals_in(&self, secret: &SecretPath) {
        for (path, pending) in self.names.unlinking() {
            let NodeKind::File { secret: of, .. } = &pending.file else {
                continue;
            };
            if of == secret {
                self.settle_removal(&path, pending);
            }
        }
    }

    /// Writes a pending removal. The key stays hidden until it is written
    /// (a lookup meanwhile must not find it in the cache).
    fn settle_removal(&self, path: &SecretPath, pending: Unlinking) {
        let at = pending.at;
        self.write_removal(path, pending);
        self.names.unlinked(path, at);
    }

    /// Writes a key's removal; its failure can only be logged (the
    /// program was told success when the key left the mount).
    pub(super) fn write_removal(&self, path: &SecretPath, pending: Unlinking) {
        let NodeKind::File { secret, view, name } = pending.file else {
            return;
        };
        let v = self.views.get(view);
        let result = self
            .writers
            .commit(&self.source, &secret, |data| v.remove(data, &name));
        match result {
            Ok(_) => self.names.secret_written(&secret),
            // Removed meanwhile (elsewhere, or the secret was deleted).
            Err(Error::NotFound) => {}
            Err(e) => {
                tracing::error!(path = %format!("/{path}"), error = %e, "a key's removal could not be written: the store still holds it");
                self.record_error(format!("unlink /{path}: {e}"));
            }
        }
    }

    /// A tool's temporary file nobody renamed or removed: it becomes a key
    /// under its own name. If it cannot, it stays in memory and the
    /// failure is logged.
    fn keep_tentative(&self, path: &SecretPath, file: &Scratch) {
        let memory_only = |e: &Error| {
            lock(file).fate = Fate::MemoryOnly;
            tracing::error!(path = %format!("/{path}"), error = %e, "a file created with O_EXCL could not be written as a key: it stays in memory only");
            self.record_error(format!("write /{path}: {e}"));
        };
        let Some((dir, name)) = path.split_last() else {
            return;
        };
        let target: Option<FileRef> = self
            .view_creating(name)
            .and_then(|view| self.file_ref(&dir, view, name))
            .filter(|t| !t.secret.is_root());
        let Some(target) = target else {
            memory_only(&Error::Invalid(format!(
                "{name:?} cannot be a file of a secret"
            )));
            return;
        };
        let bytes = SecretBox::new(Box::new(lock(file).data.expose_secret().clone()));
        let view = self.views.get(target.view);
        let result = self.commit(&target.secret, |data| {
            view.write(data, &target.name, bytes.expose_secret().clone())
        });
        match result {
            Ok(_) => {
                let became = self.names.scratch_became_file(
                    path,
                    (file, bytes.expose_secret()),
                    (&target.secret, &self.file_path(&target)),
                    target.kind(),
                );
                if became {
                    tracing::debug!(path = %format!("/{path}"), "a temporary file nobody renamed is now a key");
                } else if self.names.scratch(path).is_none() {
                    // Renamed or removed meanwhile: the key just stored is
                    // no file of anyone's.
                    let removed =
                        self.commit(&target.secret, |data| view.remove(data, &target.name));
                    if let Err(e) = removed {
                        tracing::error!(path = %format!("/{path}"), error = %e, "a temporary file renamed while it was stored left a key behind");
                        self.record_error(format!("unlink /{path}: {e}"));
                    }
                }
                // Else written meanwhile: stored again at a later round.
            }
            Err(e) => memory_only(&e),
        }
    }

    /// Starts the thread that settles what is due (see [`SecretFs::settle`]).
    pub fn start_settler(self: &Arc<Self>) {
        let fs = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("secretfs-settle".into())
            .spawn(move || loop {
                std::thread::sleep(SETTLE_EVERY);
                let Some(fs) = fs.upgrade() else { return };
                if fs.names.has_pending() {
                    fs.settle(false);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the settler: removals and temporary files wait for the next change");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_file_written_or_renamed_while_stored_does_not_become_the_key() {
        use crate::fs::inode::ROOT_INO;
        use crate::fs::namespace::{Name, Namespace};
        use secrecy::ExposeSecretMut;
        let names = Namespace::new(SecretPath::root());
        let path = SecretPath::parse("app/tmpabc");
        let at = Name {
            parent: ROOT_INO,
            name: "tmpabc",
        };
        let tentative = Fate::Tentative { caller: None };
        let (_, file) = names.create_scratch(at, path.clone(), tentative);
        *lock(&file).data.expose_secret_mut() = b"stored".to_vec();
        let kind = || NodeKind::File {
            secret: SecretPath::parse("app"),
            view: crate::fs::view::Views::for_layout()
                .iter()
                .next()
                .map(|(id, _)| id)
                .expect("the keys view"),
            name: "tmpabc".into(),
        };
        let target = (&SecretPath::parse("app"), &path);
        // Written again while its old bytes were being stored: it stays.
        *lock(&file).data.expose_secret_mut() = b"newer".to_vec();
        assert!(!names.scratch_became_file(&path, (&file, b"stored"), target, kind()));
        assert!(names.scratch(&path).is_some());
        // Renamed away meanwhile (another file now): not it either.
        names.remove_scratch(&path);
        assert!(!names.scratch_became_file(&path, (&file, b"newer"), target, kind()));
        // Unchanged: it becomes the key.
        let (_, again) = names.create_scratch(at, path.clone(), tentative);
        *lock(&again).data.expose_secret_mut() = b"same".to_vec();
        assert!(names.scratch_became_file(&path, (&again, b"same"), target, kind()));
        assert!(names.scratch(&path).is_none());
    }

    #[test]
    fn this_thread_runs_and_a_thread_that_never_was_has_exited() {
        let me = std::process::id();
        assert!(!has_exited(me));
        assert!(has_exited(u32::MAX));
    }
}
