//! What exists in the mount but not (or not yet, or no longer) in the store:
//! directories made with `mkdir` and still empty, keys created and not yet
//! committed, files created exclusively under a scratch name (editors' and
//! tools' temporary files) and keys an editor moved aside. (A key's
//! removal is written before `unlink` returns: nothing of it waits here.)
//!
//! A directory made with `mkdir` stays until `rmdir` removes it, even
//! after a key written below it put it in the store: a store folder exists
//! only while some secret lies below it, so removing the last one (`rm`,
//! `rmdir` here, or a deletion elsewhere) would otherwise take along a
//! directory the user made and never removed (issue 20 §2).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use secrecy::SecretBox;

use crate::store::SecretPath;

/// What becomes of a file living in memory if nobody renames or removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It never reaches the store: an editor's private file (swap, probe,
    /// lock) or a key's old value an editor or `cp --backup` moved aside.
    MemoryOnly,
    /// A tool's temporary file (`mkstemp`, rsync, `sed -i`): renamed onto
    /// a key it becomes that key; left alone it becomes a key under its
    /// own name once it is closed and its creator has exited, or
    /// [`SETTLE_AFTER`] after its last close while the creator keeps
    /// running (or is not known), or when the mount ends.
    Tentative {
        /// The process id of the program that created it, when known.
        caller: Option<u32>,
    },
}

/// How long a closed temporary file waits for its rename while the
/// program that created it keeps running (or when that program is not
/// known). Tools rename theirs within milliseconds of closing them (rsync
/// sets times and modes first, each a request to the daemon; with 100 ms
/// the rsync test of tests/tool_writes.rs once counted the wrong number
/// of versions on a loaded machine); a file left alone longer than this
/// is meant to stay, and reaches the store rather than living only in
/// this daemon's memory.
pub const SETTLE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// A file that lives only in memory.
pub struct ScratchFile {
    /// Its bytes (zeroized on drop).
    pub data: SecretBox<Vec<u8>>,
    /// Last change.
    pub modified: SystemTime,
    /// What becomes of it.
    pub fate: Fate,
    /// When a handle on it was last closed (`None`: never closed yet).
    pub closed: Option<Instant>,
}

impl ScratchFile {
    /// A file holding `bytes` that never reaches the store.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self::with_fate(bytes, Fate::MemoryOnly)
    }

    /// A file holding `bytes`, with its fate.
    pub fn with_fate(bytes: Vec<u8>, fate: Fate) -> Self {
        ScratchFile {
            data: SecretBox::new(Box::new(bytes)),
            modified: SystemTime::now(),
            fate,
            closed: None,
        }
    }
}

/// A shared scratch file.
pub type Scratch = Arc<Mutex<ScratchFile>>;

/// What lives only in memory. Paths of files are `secret/NAME`.
#[derive(Default)]
pub struct Local {
    /// Directories made with mkdir and not written to the store yet.
    dirs: BTreeSet<SecretPath>,
    /// Directories made with mkdir and not removed with rmdir, written to
    /// the store since or not: they show whatever the store holds.
    made: BTreeSet<SecretPath>,
    scratch: HashMap<SecretPath, Scratch>,
    new_keys: HashSet<SecretPath>,
    /// key path → the scratch path holding its old value.
    displaced: HashMap<SecretPath, SecretPath>,
}

/// Whether `path` lies strictly below `dir`.
fn is_below(path: &SecretPath, dir: &SecretPath) -> bool {
    path != dir
        && (dir.is_root()
            || path
                .as_str()
                .strip_prefix(dir.as_str())
                .is_some_and(|rest| rest.starts_with('/')))
}

fn children<'a>(paths: impl Iterator<Item = &'a SecretPath>, dir: &SecretPath) -> Vec<String> {
    paths
        .filter_map(|p| match p.split_last() {
            Some((parent, name)) if &parent == dir => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

impl Local {
    /// Paths of what lives only in memory and keeps its directories: local
    /// directories and scratch files.
    fn local_paths(&self) -> impl Iterator<Item = &SecretPath> {
        self.dirs.iter().chain(self.scratch.keys())
    }
}

impl Local {
    /// Whether `path` is a directory made with mkdir and not yet in the
    /// store, or one above such a directory or a scratch file (which must
    /// stay reachable even when the store no longer has anything there).
    pub fn is_dir(&self, path: &SecretPath) -> bool {
        self.dirs.contains(path) || self.local_paths().any(|d| is_below(d, path))
    }

    /// Records a new, empty directory.
    pub fn add_dir(&mut self, path: SecretPath) {
        self.made.insert(path.clone());
        self.dirs.insert(path);
    }

    /// Forgets an in-memory directory; `false` if there was none.
    pub fn remove_dir(&mut self, path: &SecretPath) -> bool {
        self.made.remove(path);
        self.dirs.remove(path)
    }

    /// Whether `path` shows as a directory whatever the store holds: it
    /// lives in memory ([`is_dir`](Self::is_dir)), or it was made with
    /// mkdir (or lies above such a directory) and not removed with rmdir.
    pub fn shows_dir(&self, path: &SecretPath) -> bool {
        self.is_dir(path) || self.made.iter().any(|d| d == path || is_below(d, path))
    }

    /// `rmdir` removed `path` from the store: a directory made there with
    /// mkdir is gone too.
    pub fn unmake_dir(&mut self, path: &SecretPath) {
        self.made.remove(path);
    }

    /// Names of in-memory directories directly under `dir`, and of those
    /// that lead to one (or to a scratch file) further down.
    /// Directories made with mkdir and not removed show here too.
    pub fn dirs_in(&self, dir: &SecretPath) -> Vec<String> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        let paths = self.local_paths().chain(self.made.iter());
        for d in paths.filter(|d| is_below(d, dir)) {
            let rest = if dir.is_root() {
                d.as_str()
            } else {
                &d.as_str()[dir.as_str().len() + 1..]
            };
            // A scratch file directly in `dir` is no directory.
            if let Some((first, _)) = rest.split_once('/') {
                names.insert(first.to_string());
            } else if self.dirs.contains(d) || self.made.contains(d) {
                names.insert(rest.to_string());
            }
        }
        names.into_iter().collect()
    }

    /// Whether anything living in memory, or a directory made with mkdir,
    /// lies under `dir`.
    pub fn has_children(&self, dir: &SecretPath) -> bool {
        let under = |p: &SecretPath| p.split_last().is_some_and(|(parent, _)| &parent == dir);
        self.local_paths().any(|p| is_below(p, dir))
            || self.made.iter().any(|p| is_below(p, dir))
            || self.new_keys.iter().any(under)
    }

    /// The scratch file at `path`.
    pub fn scratch(&self, path: &SecretPath) -> Option<Scratch> {
        self.scratch.get(path).cloned()
    }

    /// Creates (or replaces) a scratch file.
    pub fn put_scratch(&mut self, path: SecretPath, file: ScratchFile) -> Scratch {
        let file = Arc::new(Mutex::new(file));
        self.scratch.insert(path, file.clone());
        file
    }

    /// Removes a scratch file; a key it held aside shows again.
    pub fn remove_scratch(&mut self, path: &SecretPath) -> Option<Scratch> {
        self.displaced.retain(|_, s| s != path);
        self.scratch.remove(path)
    }

    /// Names of scratch files directly under `dir`.
    pub fn scratch_in(&self, dir: &SecretPath) -> Vec<String> {
        children(self.scratch.keys(), dir)
    }

    /// Records a key created and not yet committed.
    pub fn add_new_key(&mut self, key: SecretPath) {
        self.displaced.remove(&key);
        self.new_keys.insert(key);
    }

    /// Whether `key` was created and is not yet committed.
    pub fn is_new_key(&self, key: &SecretPath) -> bool {
        self.new_keys.contains(key)
    }

    /// Forgets an uncommitted key; `false` if there was none.
    pub fn remove_new_key(&mut self, key: &SecretPath) -> bool {
        self.new_keys.remove(key)
    }

    /// Names of uncommitted keys of the secret `dir`.
    pub fn new_keys_in(&self, dir: &SecretPath) -> Vec<String> {
        children(self.new_keys.iter(), dir)
    }

    /// Hides `key` (still in the store) while `scratch` holds its old value:
    /// an editor renamed the file to its backup name and writes a new one.
    pub fn displace(&mut self, key: SecretPath, scratch: SecretPath) {
        self.displaced.insert(key, scratch);
    }

    /// Whether `key` is hidden behind an editor's backup.
    pub fn is_hidden(&self, key: &SecretPath) -> bool {
        self.displaced.contains_key(key)
    }

    /// The scratch files that may become keys: path and file.
    pub fn tentative(&self) -> Vec<(SecretPath, Scratch)> {
        self.scratch
            .iter()
            .filter(|(_, f)| {
                matches!(
                    f.lock().map(|f| f.fate).unwrap_or(Fate::MemoryOnly),
                    Fate::Tentative { .. }
                )
            })
            .map(|(p, f)| (p.clone(), f.clone()))
            .collect()
    }

    /// Whether anything waits to be settled (a tentative file).
    pub fn has_pending(&self) -> bool {
        !self.tentative().is_empty()
    }

    /// A write of `secret` reached the store: the secret and every folder
    /// above it now exist there.
    pub fn secret_written(&mut self, secret: &SecretPath) {
        let mut p = Some(secret.clone());
        while let Some(path) = p {
            self.dirs.remove(&path);
            p = path.split_last().map(|(parent, _)| parent);
        }
    }

    /// A write of the file at `file` (a file of `secret`) reached the
    /// store: the file, the secret and every folder above it exist there.
    pub fn committed(&mut self, secret: &SecretPath, file: &SecretPath) {
        self.secret_written(secret);
        self.new_keys.remove(file);
        self.displaced.remove(file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_turns_in_memory_directories_into_store_ones() {
        let mut o = Local::default();
        o.add_dir(SecretPath::parse("a"));
        o.add_dir(SecretPath::parse("a/b"));
        assert_eq!(o.dirs_in(&SecretPath::parse("a")), vec!["b".to_string()]);
        o.add_new_key(SecretPath::parse("a/b/K"));
        o.committed(&SecretPath::parse("a/b"), &SecretPath::parse("a/b/K"));
        assert!(!o.is_dir(&SecretPath::parse("a")));
        assert!(!o.is_dir(&SecretPath::parse("a/b")));
        assert!(!o.is_new_key(&SecretPath::parse("a/b/K")));
    }

    #[test]
    fn removing_a_backup_shows_the_key_it_held_aside() {
        let mut o = Local::default();
        let (key, backup) = (SecretPath::parse("s/K"), SecretPath::parse("s/K~"));
        o.put_scratch(backup.clone(), ScratchFile::new(b"old".to_vec()));
        o.displace(key.clone(), backup.clone());
        assert!(o.is_hidden(&key));
        o.remove_scratch(&backup);
        assert!(!o.is_hidden(&key));
    }
}
