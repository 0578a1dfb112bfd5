//! The reference: what the filesystem should show and the store should
//! hold after each operation, kept as plain maps of secrets, keys, local
//! directories and files living in memory. The rules it encodes are those
//! of docs/SEMANTICS.md.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::ops::WriteCall;

/// Which store the core runs over: `MemoryStore` behaving like a KV
/// engine, or the age store file (`FileStore`), which behaves like KV v2
/// (versions, secrets without keys) but lists no deleted secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kv {
    V1,
    V2,
    File,
}

impl Kv {
    /// Every store the model runs over.
    pub(crate) const ALL: [Kv; 3] = [Kv::V1, Kv::V2, Kv::File];
}

pub(crate) const TTL: Duration = Duration::from_secs(30);
pub(crate) const MAX_VALUE: u64 = 1024;

/// Directories the operations pick from (each may become a secret).
pub(crate) const DIRS: &[&str] = &["a", "a/b", "c", "d", "d/e"];
/// Key names.
pub(crate) const KEYS: &[&str] = &["K", "L"];
/// Names that look like editors' and tools' scratch files
/// (`secretfs::fs::names::is_scratch`). A name alone decides nothing: a
/// plain create makes a key of any name; only renames look at names (a
/// file in memory renamed to such a name stays in memory; a key renamed to
/// a backup name `NAME~` is moved aside).
pub(crate) const SCRATCH: &[&str] = &["K~", ".K.swp", "sedAb12Cd"];
/// Temporary names tools create with `O_EXCL` and rename onto a key.
pub(crate) const TEMPS: &[&str] = &["tmpab12cd_9", ".K.Ab12Cd"];

pub(crate) fn is_scratch_name(name: &str) -> bool {
    SCRATCH.contains(&name) || TEMPS.contains(&name)
}

pub(crate) fn is_backup(name: &str) -> bool {
    name.ends_with('~')
}

pub(crate) fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

pub(crate) fn name_of(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether `path` is `dir` or lies below it.
pub(crate) fn at_or_below(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || path.starts_with(&format!("{dir}/"))
}

/// The bytes a file shows for a stored value.
pub(crate) fn render(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    }
}

/// The value stored for bytes written over `old` (docs/SEMANTICS.md: a key that
/// held non-string JSON keeps its type when the new bytes parse as JSON).
pub(crate) fn written_value(old: Option<&Value>, bytes: &[u8]) -> Result<Value, i32> {
    if old.is_some_and(|v| !v.is_string()) {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            if !v.is_string() {
                return Ok(v);
            }
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(Value::String(s.to_string())),
        Err(_) => Err(libc::EILSEQ),
    }
}

/// A secret as the model keeps it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelSecret {
    pub(crate) data: BTreeMap<String, Value>,
    /// Soft-deleted (KV v2): listed, but reads say it does not exist.
    pub(crate) deleted: bool,
}

/// What the filesystem should show and the store should hold.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) kv2: bool,
    pub(crate) secrets: BTreeMap<String, ModelSecret>,
    /// Directories made with mkdir that the store does not know yet (and
    /// KV v1 secrets deleted when their last key was removed).
    pub(crate) local_dirs: BTreeSet<String>,
    /// Directories made with mkdir and not removed with rmdir, written to
    /// the store since or not: they show whatever the store holds, until
    /// rmdir (a store folder exists only while a secret lies below it).
    pub(crate) made: BTreeSet<String>,
    /// Scratch files: directory → name → bytes.
    pub(crate) scratch: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Keys an editor moved to a scratch name: key path → scratch path.
    pub(crate) displaced: BTreeMap<String, String>,
    /// Secrets deleted (rmdir) through the mount.
    pub(crate) deleted_here: BTreeSet<String>,
    /// Versions the mount should have written (others' puts not counted).
    pub(crate) versions: u64,
    /// Write requests the store failed (store faults).
    pub(crate) failed_writes: u64,
}

/// Whether a directory shows: surely, surely not, or either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shows {
    Yes,
    No,
    Maybe,
}

impl Model {
    pub(crate) fn live(&self, secret: &str) -> Option<&BTreeMap<String, Value>> {
        self.secrets
            .get(secret)
            .filter(|s| !s.deleted)
            .map(|s| &s.data)
    }

    /// Whether `dir` lives in memory: made with mkdir (or above such a
    /// directory, or holding a scratch file at any depth) and not written
    /// to the store since.
    pub(crate) fn is_local(&self, dir: &str) -> bool {
        self.local_dirs.iter().any(|d| at_or_below(d, dir))
            || self
                .scratch
                .iter()
                .any(|(d, files)| !files.is_empty() && at_or_below(d, dir) && !dir.is_empty())
    }

    pub(crate) fn dir_shows(&self, dir: &str) -> Shows {
        if dir.is_empty() {
            return Shows::Yes;
        }
        let local = self.is_local(dir) || self.made.iter().any(|d| at_or_below(d, dir));
        let live = self
            .secrets
            .iter()
            .any(|(p, s)| !s.deleted && at_or_below(p, dir));
        if local || live {
            return Shows::Yes;
        }
        // Only deleted secrets (if any) at or below: hidden when each was
        // deleted through the mount, else KV v2 may still list them.
        let listed_elsewhere = self
            .secrets
            .keys()
            .any(|p| at_or_below(p, dir) && !self.deleted_here.contains(p));
        if listed_elsewhere {
            Shows::Maybe
        } else {
            Shows::No
        }
    }

    /// The files of a directory that shows: path → bytes.
    pub(crate) fn files_in(&self, dir: &str) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        if let Some(data) = self.live(dir) {
            for (k, v) in data {
                let path = join(dir, k);
                if !self.displaced.contains_key(&path) {
                    files.insert(path, render(v));
                }
            }
        }
        for (name, bytes) in self.scratch.get(dir).into_iter().flatten() {
            files.insert(join(dir, name), bytes.clone());
        }
        files
    }

    /// Whether anything shows in `dir`: a file, or a child directory.
    pub(crate) fn has_content(&self, dir: &str) -> bool {
        !self.files_in(dir).is_empty()
            || DIRS
                .iter()
                .any(|d| parent_of(d) == dir && self.dir_shows(d) == Shows::Yes)
    }

    /// The bytes a file shows now, if it shows.
    pub(crate) fn file(&self, dir: &str, name: &str) -> Option<Vec<u8>> {
        self.files_in(dir).remove(&join(dir, name))
    }

    /// A write of `secret` through the mount reached the store: a new
    /// version, unless the store held that data already.
    /// KV v1 holds no secret without keys: one whose last key is removed
    /// is deleted (no version), and its directory stays in memory until
    /// rmdir, as an empty secret does in KV v2.
    pub(crate) fn committed(&mut self, secret: &str, key: &str, data: BTreeMap<String, Value>) {
        if data.is_empty() && !self.kv2 && self.live(secret).is_some() {
            self.secrets.remove(secret);
            self.displaced.remove(&join(secret, key));
            self.local_dirs.insert(secret.to_string());
            self.made.insert(secret.to_string());
            return;
        }
        if self.live(secret) != Some(&data) {
            self.versions += 1;
        }
        self.secrets.insert(
            secret.to_string(),
            ModelSecret {
                data,
                deleted: false,
            },
        );
        self.displaced.remove(&join(secret, key));
        self.deleted_here.remove(secret);
        self.local_dirs.retain(|d| !at_or_below(secret, d));
    }

    /// Removes a scratch file; keys it held aside show again.
    pub(crate) fn remove_scratch(&mut self, dir: &str, name: &str) -> Option<Vec<u8>> {
        let path = join(dir, name);
        self.displaced.retain(|_, s| *s != path);
        self.scratch.get_mut(dir)?.remove(name)
    }

    /// Sets `key` of `secret` to the value `bytes` make: one version.
    pub(crate) fn commit_key(&mut self, secret: &str, key: &str, bytes: &[u8]) -> Result<(), i32> {
        let mut data = self.live(secret).cloned().unwrap_or_default();
        let value = written_value(data.get(key), bytes)?;
        data.insert(key.to_string(), value);
        self.committed(secret, key, data);
        Ok(())
    }
}

/// The buffer a writer ends with: `base`, then each write at its offset.
pub(crate) fn apply_writes(base: Vec<u8>, writes: &[WriteCall]) -> (Vec<u8>, Vec<u64>) {
    let mut buf = base;
    let mut offsets = Vec::new();
    for w in writes {
        let offset = u64::from(w.offset_pick) % (buf.len() as u64 + 2);
        write_at(&mut buf, offset, &w.bytes);
        offsets.push(offset);
    }
    (buf, offsets)
}

/// One pwrite into `buf`: zeros fill a gap past its end.
pub(crate) fn write_at(buf: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let (start, end) = (offset as usize, offset as usize + bytes.len());
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(bytes);
}

/// Whether `buf` is not UTF-8 in a way no later write can mend (not
/// just a character cut at the end).
pub(crate) fn broken_utf8(buf: &[u8]) -> bool {
    std::str::from_utf8(buf)
        .err()
        .is_some_and(|e| e.error_len().is_some())
}

/// What a rename does (docs/SEMANTICS.md, "Editors and tools").
pub(crate) fn rename_in_model(
    model: &mut Model,
    dir: &str,
    name: &str,
    to_dir: &str,
    to_name: &str,
    no_replace: bool,
) -> Result<(), i32> {
    if no_replace && model.file(to_dir, to_name).is_some() {
        return Err(libc::EEXIST);
    }
    let dst_in_memory = model
        .scratch
        .get(to_dir)
        .is_some_and(|f| f.contains_key(to_name));
    let dst_is_key = model.file(to_dir, to_name).is_some() && !dst_in_memory;
    let src_scratch = model.scratch.get(dir).and_then(|f| f.get(name)).cloned();
    if let Some(bytes) = src_scratch {
        if is_scratch_name(to_name) && !dst_is_key {
            model.remove_scratch(dir, name);
            model
                .scratch
                .entry(to_dir.to_string())
                .or_default()
                .insert(to_name.to_string(), bytes);
            return Ok(());
        }
        if dir != to_dir {
            return Err(libc::EXDEV);
        }
        // `sed -i`, `mv tmp KEY`: the scratch file's bytes become the key.
        model.commit_key(dir, to_name, &bytes)?;
        model.remove_scratch(dir, name);
        return Ok(());
    }
    let Some(bytes) = model.file(dir, name) else {
        return Err(libc::ENOENT);
    };
    if dir != to_dir {
        return Err(libc::EXDEV);
    }
    if is_backup(to_name) && !dst_is_key {
        // An editor's backup: the old value held aside, the key hidden.
        model
            .scratch
            .entry(dir.to_string())
            .or_default()
            .insert(to_name.to_string(), bytes);
        model
            .displaced
            .insert(join(dir, name), join(to_dir, to_name));
        return Ok(());
    }
    let mut data = model.live(dir).cloned().unwrap_or_default();
    let Some(value) = data.remove(name) else {
        return Err(libc::ENOENT);
    };
    data.insert(to_name.to_string(), value);
    // A file in memory under the new name is replaced.
    model.remove_scratch(to_dir, to_name);
    model.committed(dir, to_name, data);
    Ok(())
}
