//! The reference model of the core (in the style of mountpoint-s3's
//! reftests): random sequences of filesystem operations and of changes made
//! in the store by others are applied both to the core over `MemoryStore`
//! and to a small model of secrets, keys, local directories and files that
//! live in memory (keys an editor moved aside, tools' temporary files). After every step the tree a walk of the filesystem shows,
//! the store's content and the number of versions written must match what
//! the model says.
//!
//! Cases: `SECRETFS_MODEL_CASES` (default 256, what CI runs: a few seconds), steps per case
//! `SECRETFS_MODEL_STEPS` (default 40), seed `SECRETFS_MODEL_SEED` (random
//! by default; printed on failure, so a failing run can be repeated).
//!
//! What the model allows either way: KV v2 keeps listing a secret deleted
//! by someone else, so the core may show its name as an empty directory
//! until it looks the secret up (docs/SEMANTICS.md). Such names are
//! "uncertain": the walk may or may not see them, and they must be empty.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use serde_json::Value;

use secretfs::fs::cache::CachePolicy;
use secretfs::fs::clock::ManualClock;
use secretfs::fs::inode::{Ino, ROOT_INO};
use secretfs::fs::{Creating, FsConfig, Presentation, SecretFs};
use secretfs::store::deleted::HideDeleted;
use secretfs::store::memory::MemoryStore;
use secretfs::store::SecretPath;

/// Which KV engine the store behaves like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kv {
    V1,
    V2,
}

const TTL: Duration = Duration::from_secs(30);
const MAX_VALUE: u64 = 1024;

/// Directories the operations pick from (each may become a secret).
const DIRS: &[&str] = &["a", "a/b", "c", "d", "d/e"];
/// Key names.
const KEYS: &[&str] = &["K", "L"];
/// Names that look like editors' and tools' scratch files
/// (`secretfs::fs::names::is_scratch`). A name alone decides nothing: a
/// plain create makes a key of any name; only renames look at names (a
/// file in memory renamed to such a name stays in memory; a key renamed to
/// a backup name `NAME~` is moved aside).
const SCRATCH: &[&str] = &["K~", ".K.swp", "sedAb12Cd"];
/// Temporary names tools create with `O_EXCL` and rename onto a key.
const TEMPS: &[&str] = &["tmpab12cd_9", ".K.Ab12Cd"];

fn is_scratch_name(name: &str) -> bool {
    SCRATCH.contains(&name) || TEMPS.contains(&name)
}

fn is_backup(name: &str) -> bool {
    name.ends_with('~')
}

/// The thread id of a program that has exited: its removals are due.
const GONE: u32 = u32::MAX;

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn name_of(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether `path` is `dir` or lies below it.
fn at_or_below(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || path.starts_with(&format!("{dir}/"))
}

/// The bytes a file shows for a stored value.
fn render(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    }
}

/// The value stored for bytes written over `old` (DESIGN.md: a key that
/// held non-string JSON keeps its type when the new bytes parse as JSON).
fn written_value(old: Option<&Value>, bytes: &[u8]) -> Result<Value, i32> {
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

/// One write call of a program: at an offset picked within the file (or
/// just past its end), with bytes that are not UTF-8 when `garbage`.
#[derive(Debug, Clone)]
struct WriteCall {
    offset_pick: u8,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Op {
    /// open (creating when missing), write calls, close.
    WriteFile {
        dir: &'static str,
        name: &'static str,
        truncate: bool,
        writes: Vec<WriteCall>,
    },
    /// Two programs open one existing key for writing, write in turns,
    /// and close one after the other: each close commits its own buffer.
    /// With `late_release`, both closes come before either RELEASE (the
    /// kernel sends RELEASE after close() returned): the last close wins,
    /// and a truncation closed first is not written at its release.
    TwoWriters {
        dir: &'static str,
        name: &'static str,
        first: Writer,
        second: Writer,
        late_release: bool,
    },
    /// `: > K; printf XY 1<> K`: a truncation closed (its RELEASE not yet
    /// come), then an open without `O_TRUNC` that starts from it.
    ClosedTruncationThenWrite {
        dir: &'static str,
        name: &'static str,
        writes: Vec<WriteCall>,
    },
    Unlink {
        dir: &'static str,
        name: &'static str,
    },
    /// `mkstemp` + `os.replace`, rsync: create a temporary name with
    /// `O_EXCL`, write, close, rename onto a key; on failure remove it.
    TempThenRename {
        dir: &'static str,
        temp: &'static str,
        writes: Vec<WriteCall>,
        to_dir: &'static str,
        to_name: &'static str,
        no_replace: bool,
    },
    /// `install`: remove the key, create it again with `O_EXCL`, write,
    /// close.
    Replace {
        dir: &'static str,
        name: &'static str,
        writes: Vec<WriteCall>,
    },
    Rename {
        dir: &'static str,
        name: &'static str,
        to_dir: &'static str,
        to_name: &'static str,
        no_replace: bool,
    },
    Mkdir {
        path: &'static str,
    },
    Rmdir {
        path: &'static str,
    },
    /// `bao kv put` by someone else, then the TTL passes.
    ExternalPut {
        secret: &'static str,
        data: BTreeMap<&'static str, Value>,
    },
    /// `bao kv delete` by someone else, then the TTL passes.
    ExternalDelete {
        secret: &'static str,
    },
    /// `bao kv undelete` by someone else, then the TTL passes.
    ExternalUndelete {
        secret: &'static str,
    },
    /// Time passes.
    Advance {
        secs: u64,
    },
    /// The kernel drops every cached name (memory pressure, `echo 2 >
    /// drop_caches`, `--max-inodes`) and forgets every inode: directories
    /// first, while it still holds the files in them (open, say), which
    /// must read as before; then the files.
    KernelForgets,
}

/// One of [`Op::TwoWriters`]: how it opens, what it writes.
#[derive(Debug, Clone)]
struct Writer {
    truncate: bool,
    writes: Vec<WriteCall>,
}

fn any_of(names: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(names)
}

/// A directory: mostly one, so that operations meet each other often.
fn dir() -> impl Strategy<Value = &'static str> {
    prop_oneof![2 => Just(DIRS[0]), 3 => any_of(DIRS)]
}

fn file_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => any_of(KEYS), 1 => any_of(SCRATCH)]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[a-z]{0,6}".prop_map(Value::String),
        1 => (0u32..10_000).prop_map(Value::from),
    ]
}

fn write_call() -> impl Strategy<Value = WriteCall> {
    prop_oneof![
        8 => (any::<u8>(), "[a-z0-9]{0,5}").prop_map(|(offset_pick, s)| WriteCall {
            offset_pick,
            bytes: s.into_bytes(),
        }),
        1 => any::<u8>().prop_map(|offset_pick| WriteCall {
            offset_pick,
            bytes: vec![0xff, 0xfe],
        }),
    ]
}

fn writer() -> impl Strategy<Value = Writer> {
    (any::<bool>(), proptest::collection::vec(write_call(), 0..3))
        .prop_map(|(truncate, writes)| Writer { truncate, writes })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (dir(), file_name(), any::<bool>(), proptest::collection::vec(write_call(), 0..3))
            .prop_map(|(dir, name, truncate, writes)| Op::WriteFile { dir, name, truncate, writes }),
        2 => (dir(), any_of(KEYS), writer(), writer(), any::<bool>())
            .prop_map(|(dir, name, first, second, late_release)| Op::TwoWriters { dir, name, first, second, late_release }),
        1 => (dir(), any_of(KEYS), proptest::collection::vec(write_call(), 0..3))
            .prop_map(|(dir, name, writes)| Op::ClosedTruncationThenWrite { dir, name, writes }),
        2 => (dir(), any_of(&["K", "L", "K~", ".K.swp", "sedAb12Cd"]))
            .prop_map(|(dir, name)| Op::Unlink { dir, name }),
        2 => (dir(), any_of(TEMPS), proptest::collection::vec(write_call(), 0..3),
              prop_oneof![4 => Just(None), 1 => dir().prop_map(Some)], any_of(KEYS), any::<bool>())
            .prop_map(|(dir, temp, writes, to_dir, to_name, no_replace)| Op::TempThenRename {
                dir,
                temp,
                writes,
                to_dir: to_dir.unwrap_or(dir),
                to_name,
                no_replace,
            }),
        1 => (dir(), any_of(KEYS), proptest::collection::vec(write_call(), 0..3))
            .prop_map(|(dir, name, writes)| Op::Replace { dir, name, writes }),
        // Mostly within one directory, as editors and tools rename.
        4 => (dir(), file_name(), prop_oneof![4 => Just(None), 1 => dir().prop_map(Some)], file_name(), any::<bool>())
            .prop_map(|(dir, name, to_dir, to_name, no_replace)| Op::Rename {
                dir,
                name,
                to_dir: to_dir.unwrap_or(dir),
                to_name,
                no_replace,
            }),
        1 => any_of(DIRS).prop_map(|path| Op::Mkdir { path }),
        1 => any_of(DIRS).prop_map(|path| Op::Rmdir { path }),
        2 => (dir(), proptest::collection::btree_map(any_of(KEYS), value(), 0..3))
            .prop_map(|(secret, data)| Op::ExternalPut { secret, data }),
        1 => dir().prop_map(|secret| Op::ExternalDelete { secret }),
        1 => dir().prop_map(|secret| Op::ExternalUndelete { secret }),
        1 => (0u64..45).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::KernelForgets),
    ]
}

/// A secret as the model keeps it.
#[derive(Debug, Clone, Default)]
struct ModelSecret {
    data: BTreeMap<String, Value>,
    /// Soft-deleted (KV v2): listed, but reads say it does not exist.
    deleted: bool,
}

/// What the filesystem should show and the store should hold.
#[derive(Debug, Default)]
struct Model {
    kv2: bool,
    secrets: BTreeMap<String, ModelSecret>,
    /// Directories made with mkdir that the store does not know yet.
    local_dirs: BTreeSet<String>,
    /// Scratch files: directory → name → bytes.
    scratch: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Keys an editor moved to a scratch name: key path → scratch path.
    displaced: BTreeMap<String, String>,
    /// Secrets deleted (rmdir) through the mount.
    deleted_here: BTreeSet<String>,
    /// Versions the mount should have written (others' puts not counted).
    versions: u64,
}

/// Whether a directory shows: surely, surely not, or either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shows {
    Yes,
    No,
    Maybe,
}

impl Model {
    fn live(&self, secret: &str) -> Option<&BTreeMap<String, Value>> {
        self.secrets
            .get(secret)
            .filter(|s| !s.deleted)
            .map(|s| &s.data)
    }

    /// Whether `dir` lives in memory: made with mkdir (or above such a
    /// directory, or holding a scratch file at any depth) and not written
    /// to the store since.
    fn is_local(&self, dir: &str) -> bool {
        self.local_dirs.iter().any(|d| at_or_below(d, dir))
            || self
                .scratch
                .iter()
                .any(|(d, files)| !files.is_empty() && at_or_below(d, dir) && !dir.is_empty())
    }

    fn dir_shows(&self, dir: &str) -> Shows {
        if dir.is_empty() {
            return Shows::Yes;
        }
        let local = self.is_local(dir);
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
    fn files_in(&self, dir: &str) -> BTreeMap<String, Vec<u8>> {
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
    fn has_content(&self, dir: &str) -> bool {
        !self.files_in(dir).is_empty()
            || DIRS
                .iter()
                .any(|d| parent_of(d) == dir && self.dir_shows(d) == Shows::Yes)
    }

    /// The bytes a file shows now, if it shows.
    fn file(&self, dir: &str, name: &str) -> Option<Vec<u8>> {
        self.files_in(dir).remove(&join(dir, name))
    }

    /// A write of `secret` through the mount reached the store: a new
    /// version, unless the store held that data already.
    fn committed(&mut self, secret: &str, key: &str, data: BTreeMap<String, Value>) {
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
    fn remove_scratch(&mut self, dir: &str, name: &str) -> Option<Vec<u8>> {
        let path = join(dir, name);
        self.displaced.retain(|_, s| *s != path);
        self.scratch.get_mut(dir)?.remove(name)
    }

    /// Sets `key` of `secret` to the value `bytes` make: one version.
    fn commit_key(&mut self, secret: &str, key: &str, bytes: &[u8]) -> Result<(), i32> {
        let mut data = self.live(secret).cloned().unwrap_or_default();
        let value = written_value(data.get(key), bytes)?;
        data.insert(key.to_string(), value);
        self.committed(secret, key, data);
        Ok(())
    }
}

/// What a walk shows: directory paths, and file paths with their bytes.
type Tree = (BTreeSet<String>, BTreeMap<String, Vec<u8>>);

/// The filesystem under test, its store and clock.
struct Subject {
    fs: SecretFs,
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    /// The references the kernel holds: one per successful lookup.
    held: std::sync::Mutex<HashMap<Ino, u64>>,
}

fn errno<T>(r: secretfs::error::Result<T>) -> Result<T, i32> {
    r.map_err(|e| e.errno())
}

impl Subject {
    fn new(kv: Kv) -> Subject {
        let store = Arc::new(match kv {
            Kv::V1 => MemoryStore::kv1(),
            Kv::V2 => MemoryStore::kv2(),
        });
        let clock = ManualClock::new();
        let config = FsConfig {
            presentation: Presentation {
                uid: 0,
                gid: 0,
                file_mode: 0o400,
                dir_mode: 0o500,
            },
            cache: CachePolicy {
                ttl: TTL,
                negative_ttl: Duration::from_secs(5),
                stale_if_error: Duration::from_secs(300),
                capacity: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
            },
            read_only: false,
            max_value_size: MAX_VALUE,
            background_refresh: false,
        };
        let fs = SecretFs::new(
            Arc::new(HideDeleted::new(store.clone())),
            SecretPath::root(),
            config,
            clock.clone(),
        );
        Subject {
            fs,
            store,
            clock,
            held: Default::default(),
        }
    }

    /// A lookup, as the kernel makes it: it holds a reference after.
    fn look(&self, parent: Ino, name: &str) -> secretfs::error::Result<secretfs::fs::Attr> {
        let attr = self.fs.lookup(parent, name)?;
        *self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(attr.ino)
            .or_default() += 1;
        Ok(attr)
    }

    /// The kernel forgets every directory it holds, then reads each file
    /// it still holds (they must read as before), then forgets them too.
    fn forget_all(&self) -> Result<(), TestCaseError> {
        let (_, files) = self.walk()?;
        let mut held_files = Vec::new();
        for (path, bytes) in files {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            let parent = self
                .resolve(dir)
                .map_err(|e| TestCaseError::fail(format!("resolve /{dir}: errno {e}")))?;
            let ino = self
                .look(parent, name)
                .map_err(|e| TestCaseError::fail(format!("lookup /{path}: {e}")))?
                .ino;
            held_files.push((path, ino, bytes));
        }
        let held: Vec<(Ino, u64)> = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        let files: BTreeSet<Ino> = held_files.iter().map(|(_, ino, _)| *ino).collect();
        let (file_refs, dir_refs): (Vec<_>, Vec<_>) =
            held.into_iter().partition(|(ino, _)| files.contains(ino));
        for (ino, n) in dir_refs {
            self.fs.forget(ino, n);
        }
        for (path, ino, bytes) in &held_files {
            let read = self.read_file(*ino).map_err(|e| {
                TestCaseError::fail(format!(
                    "cat /{path} after its directory was forgotten: errno {e}"
                ))
            })?;
            prop_assert_eq!(&read, bytes, "/{} after its directory was forgotten", path);
        }
        for (ino, n) in file_refs {
            self.fs.forget(ino, n);
        }
        Ok(())
    }

    fn resolve(&self, path: &str) -> Result<Ino, i32> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let attr = errno(self.look(ino, part))?;
            if !attr.is_dir {
                return Err(libc::ENOTDIR);
            }
            ino = attr.ino;
        }
        Ok(ino)
    }

    fn list(&self, ino: Ino) -> Result<Vec<(String, bool)>, i32> {
        let fh = errno(self.fs.opendir(ino))?;
        let entries = errno(self.fs.dir_entries(fh));
        self.fs.release(fh);
        Ok(entries?
            .1
            .iter()
            .map(|e| (e.name.clone(), e.is_dir))
            .collect())
    }

    fn read_file(&self, ino: Ino) -> Result<Vec<u8>, i32> {
        let fh = errno(self.fs.open(ino, false, false))?;
        let bytes = errno(self.fs.read_handle(fh, 0, 1 << 20, |b| b.to_vec()));
        self.fs.release(fh);
        bytes
    }

    /// Everything a walk from the root shows: directories and files.
    fn walk(&self) -> Result<Tree, TestCaseError> {
        let mut dirs = BTreeSet::new();
        let mut files = BTreeMap::new();
        let mut todo = vec![(String::new(), ROOT_INO)];
        let every_name: Vec<&str> = KEYS
            .iter()
            .chain(SCRATCH)
            .chain(TEMPS)
            .chain(DIRS.iter().map(|d| name_of(d)).collect::<Vec<_>>().iter())
            .copied()
            .collect();
        while let Some((dir, ino)) = todo.pop() {
            let listed = self
                .list(ino)
                .map_err(|e| TestCaseError::fail(format!("ls /{dir}: errno {e}")))?;
            for (name, is_dir) in &listed {
                let path = join(&dir, name);
                let attr = match self.look(ino, name) {
                    Ok(a) => a,
                    // A listed secret deleted elsewhere (see the top).
                    Err(e) if e.errno() == libc::ENOENT && *is_dir => continue,
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "/{path} is listed but its lookup fails: {e}"
                        )))
                    }
                };
                prop_assert_eq!(attr.is_dir, *is_dir, "/{} kind", path);
                if attr.is_dir {
                    dirs.insert(path.clone());
                    todo.push((path, attr.ino));
                } else {
                    let bytes = self
                        .read_file(attr.ino)
                        .map_err(|e| TestCaseError::fail(format!("cat /{path}: errno {e}")))?;
                    prop_assert_eq!(attr.size, bytes.len() as u64, "size of /{}", path);
                    files.insert(path, bytes);
                }
            }
            // What a listing does not show, a lookup does not find.
            for name in &every_name {
                if listed.iter().any(|(n, _)| n == name) {
                    continue;
                }
                if let Ok(a) = self.look(ino, name) {
                    if a.is_dir {
                        // An empty directory of a secret deleted elsewhere.
                        let empty = self.list(a.ino).map(|l| l.is_empty());
                        prop_assert!(
                            empty == Ok(true),
                            "/{} is found but not listed",
                            join(&dir, name)
                        );
                    } else {
                        return Err(TestCaseError::fail(format!(
                            "/{} is found but not listed",
                            join(&dir, name)
                        )));
                    }
                }
            }
        }
        Ok((dirs, files))
    }
}

/// Checks that the filesystem and the store agree with the model.
fn check(model: &Model, s: &Subject) -> Result<(), TestCaseError> {
    let (dirs, files) = s.walk()?;
    let mut expected_files = BTreeMap::new();
    for d in DIRS {
        let shown = dirs.contains(*d);
        match model.dir_shows(d) {
            Shows::Yes => prop_assert!(shown, "/{} should show", d),
            Shows::No => prop_assert!(!shown, "/{} should not show", d),
            // Its files (only scratch files can be there) are compared below.
            Shows::Maybe => {}
        }
        if shown {
            expected_files.extend(model.files_in(d));
        }
    }
    expected_files.extend(model.files_in(""));
    prop_assert_eq!(&files, &expected_files, "files shown");
    let expected_store: BTreeMap<String, Value> = model
        .secrets
        .iter()
        .filter(|(_, s)| !s.deleted)
        .map(|(p, s)| {
            let map: serde_json::Map<String, Value> =
                s.data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            (p.clone(), Value::Object(map))
        })
        .collect();
    prop_assert_eq!(&s.store.snapshot(), &expected_store, "store content");
    prop_assert_eq!(
        s.store.versions_written(),
        model.versions,
        "versions written"
    );
    // One at a time, no write is refused: each is one request.
    prop_assert_eq!(
        s.store.write_calls(),
        s.store.versions_written(),
        "write requests"
    );
    Ok(())
}

/// The buffer a writer ends with: `base`, then each write at its offset.
fn apply_writes(base: Vec<u8>, writes: &[WriteCall]) -> (Vec<u8>, Vec<u64>) {
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
fn write_at(buf: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let (start, end) = (offset as usize, offset as usize + bytes.len());
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(bytes);
}

/// Whether `buf` is not UTF-8 in a way no later write can mend (not
/// just a character cut at the end).
fn broken_utf8(buf: &[u8]) -> bool {
    std::str::from_utf8(buf)
        .err()
        .is_some_and(|e| e.error_len().is_some())
}

/// Resolves a directory in the filesystem and checks that the model
/// agrees it shows; `None` when it does not (and may not).
fn reach(model: &Model, s: &Subject, dir: &str) -> Result<Option<Ino>, TestCaseError> {
    match (s.resolve(dir), model.dir_shows(dir)) {
        (Ok(ino), Shows::Yes | Shows::Maybe) => Ok(Some(ino)),
        (Err(_), Shows::No | Shows::Maybe) => Ok(None),
        (Ok(_), Shows::No) => Err(TestCaseError::fail(format!("/{dir} should not show"))),
        (Err(e), Shows::Yes) => Err(TestCaseError::fail(format!(
            "/{dir} should show, lookup errno {e}"
        ))),
    }
}

fn expect(what: &str, got: Result<(), i32>, want: Result<(), i32>) -> Result<(), TestCaseError> {
    prop_assert_eq!(got, want, "{}", what);
    Ok(())
}

fn step(model: &mut Model, s: &Subject, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::WriteFile {
            dir,
            name,
            truncate,
            writes,
        } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            let existing = model.file(dir, name);
            // A file living in memory (a key moved aside): written there.
            let in_memory = model
                .scratch
                .get(*dir)
                .is_some_and(|f| f.contains_key(*name));
            let (fh, base) = match &existing {
                Some(bytes) => {
                    let ino = errno(s.look(parent, name))
                        .map_err(|e| TestCaseError::fail(format!("lookup {name}: {e}")))?
                        .ino;
                    let fh = errno(s.fs.open(ino, true, *truncate))
                        .map_err(|e| TestCaseError::fail(format!("open {name}: {e}")))?;
                    (fh, if *truncate { Vec::new() } else { bytes.clone() })
                }
                None => {
                    prop_assert_eq!(
                        s.look(parent, name).map(|_| ()).map_err(|e| e.errno()),
                        Err(libc::ENOENT),
                        "lookup of missing /{}/{}",
                        dir,
                        name
                    );
                    let (_, fh) = errno(s.fs.create(parent, name))
                        .map_err(|e| TestCaseError::fail(format!("create {name}: {e}")))?;
                    // A key an editor moved aside is written anew: should
                    // that fail, the store's value shows again.
                    model.displaced.remove(&join(dir, name));
                    (fh, Vec::new())
                }
            };
            let (buf, offsets) = apply_writes(base.clone(), writes);
            // A key's value is UTF-8: a write that leaves bytes that never
            // can be (not just a character cut at the end) fails at once,
            // and the change is never saved.
            let mut partial = base;
            let mut refused = false;
            for (w, offset) in writes.iter().zip(offsets) {
                write_at(&mut partial, offset, &w.bytes);
                let broken = broken_utf8(&partial);
                let want = if broken && !in_memory {
                    refused = true;
                    Err(libc::EILSEQ)
                } else {
                    Ok(w.bytes.len() as u32)
                };
                let n = errno(s.fs.write_handle(fh, offset, &w.bytes));
                prop_assert_eq!(n, want, "write");
            }
            let flushed = errno(s.fs.flush(fh));
            s.fs.release(fh);
            if in_memory {
                model
                    .scratch
                    .entry(dir.to_string())
                    .or_default()
                    .insert(name.to_string(), buf);
                return expect("close of a scratch file", flushed, Ok(()));
            }
            let changed = existing.is_none() || *truncate || !writes.is_empty();
            if !changed {
                return expect("close without change", flushed, Ok(()));
            }
            if refused {
                return expect("close after a refused write", flushed, Err(libc::EILSEQ));
            }
            let committed = model.commit_key(dir, name, &buf);
            // Only a close after writes reports; a change without writes
            // is committed at release, whose errors are only logged.
            let want = if writes.is_empty() { Ok(()) } else { committed };
            expect("close", flushed, want)
        }
        Op::TwoWriters {
            dir,
            name,
            first,
            second,
            late_release,
        } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            let Some(base) = model.file(dir, name) else {
                return Ok(());
            };
            let ino = errno(s.look(parent, name))
                .map_err(|e| TestCaseError::fail(format!("lookup {name}: {e}")))?
                .ino;
            let writers = [first, second];
            let mut open = Vec::new();
            for w in writers {
                let fh = errno(s.fs.open(ino, true, w.truncate))
                    .map_err(|e| TestCaseError::fail(format!("open {name}: {e}")))?;
                let start = if w.truncate { Vec::new() } else { base.clone() };
                // (buffer, refused)
                open.push((fh, start, false));
            }
            // Write calls in turns: first, second, first, ...
            let turns = first.writes.len().max(second.writes.len());
            for i in 0..turns {
                for (w, (fh, buf, refused)) in writers.iter().zip(open.iter_mut()) {
                    let Some(call) = w.writes.get(i) else {
                        continue;
                    };
                    let offset = u64::from(call.offset_pick) % (buf.len() as u64 + 2);
                    let (start, end) = (offset as usize, offset as usize + call.bytes.len());
                    if buf.len() < end {
                        buf.resize(end, 0);
                    }
                    buf[start..end].copy_from_slice(&call.bytes);
                    let broken = std::str::from_utf8(buf)
                        .err()
                        .is_some_and(|e| e.error_len().is_some());
                    // A writer told an error never commits.
                    let want = if broken {
                        *refused = true;
                        Err(libc::EILSEQ)
                    } else {
                        Ok(call.bytes.len() as u32)
                    };
                    let got = errno(s.fs.write_handle(*fh, offset, &call.bytes));
                    prop_assert_eq!(got, want, "write");
                }
            }
            // Whether each writer's close held a change (a refused writer's
            // buffer holds none: it is never written).
            let changes: Vec<bool> = writers
                .iter()
                .zip(&open)
                .map(|(w, (_, _, refused))| !refused && (w.truncate || !w.writes.is_empty()))
                .collect();
            // Truncations without a write wait for their RELEASE.
            let mut at_release = Vec::new();
            let mut unreleased = Vec::new();
            for (i, (w, (fh, buf, refused))) in writers.iter().zip(open).enumerate() {
                let flushed = errno(s.fs.flush(fh));
                if *late_release {
                    unreleased.push(fh);
                } else {
                    s.fs.release(fh);
                }
                if refused {
                    expect("close after a refused write", flushed, Err(libc::EILSEQ))?;
                    continue;
                }
                if !w.truncate && w.writes.is_empty() {
                    expect("close without change", flushed, Ok(()))?;
                    continue;
                }
                if w.writes.is_empty() {
                    expect("close of a truncation", flushed, Ok(()))?;
                    // Lost to a later close holding a change, if any.
                    let superseded = *late_release && changes[i + 1..].iter().any(|c| *c);
                    if !superseded {
                        if *late_release {
                            at_release.push(buf);
                        } else {
                            let _ = model.commit_key(dir, name, &buf);
                        }
                    }
                    continue;
                }
                let committed = model.commit_key(dir, name, &buf);
                expect("close", flushed, committed)?;
            }
            for fh in unreleased {
                s.fs.release(fh);
            }
            for buf in at_release {
                let _ = model.commit_key(dir, name, &buf);
            }
            Ok(())
        }
        Op::ClosedTruncationThenWrite { dir, name, writes } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            if model.file(dir, name).is_none() {
                return Ok(());
            }
            let ino = errno(s.look(parent, name))
                .map_err(|e| TestCaseError::fail(format!("lookup {name}: {e}")))?
                .ino;
            let colon = errno(s.fs.open(ino, true, true))
                .map_err(|e| TestCaseError::fail(format!("open {name}: {e}")))?;
            expect("close of : > K", errno(s.fs.flush(colon)), Ok(()))?;
            let printf = errno(s.fs.open(ino, true, false))
                .map_err(|e| TestCaseError::fail(format!("open {name} again: {e}")))?;
            // It starts from what the closed descriptor left: nothing.
            let mut buf = Vec::new();
            let mut refused = false;
            for call in writes {
                let offset = u64::from(call.offset_pick) % (buf.len() as u64 + 2);
                let (start, end) = (offset as usize, offset as usize + call.bytes.len());
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[start..end].copy_from_slice(&call.bytes);
                let broken = std::str::from_utf8(&buf)
                    .err()
                    .is_some_and(|e| e.error_len().is_some());
                let want = if broken {
                    refused = true;
                    Err(libc::EILSEQ)
                } else {
                    Ok(call.bytes.len() as u32)
                };
                let got = errno(s.fs.write_handle(printf, offset, &call.bytes));
                prop_assert_eq!(got, want, "write");
            }
            let flushed = errno(s.fs.flush(printf));
            s.fs.release(colon);
            s.fs.release(printf);
            if refused {
                expect("close after a refused write", flushed, Err(libc::EILSEQ))?;
                // The truncation alone is written, at its release.
                let _ = model.commit_key(dir, name, b"");
            } else if writes.is_empty() {
                expect("close without change", flushed, Ok(()))?;
                let _ = model.commit_key(dir, name, b"");
            } else {
                let committed = model.commit_key(dir, name, &buf);
                expect("close", flushed, committed)?;
            }
            Ok(())
        }
        Op::Unlink { dir, name } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            // Written once the program is gone (the step's end settles).
            let got = errno(s.fs.unlink_by(parent, name, GONE));
            let want = if model.remove_scratch(dir, name).is_some() {
                Ok(())
            } else if model.file(dir, name).is_some() {
                let mut data = model.live(dir).cloned().unwrap_or_default();
                data.remove(*name);
                model.committed(dir, name, data);
                Ok(())
            } else {
                Err(libc::ENOENT)
            };
            expect("unlink", got, want)
        }
        Op::Rename {
            dir,
            name,
            to_dir,
            to_name,
            no_replace,
        } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            let Some(new_parent) = reach(model, s, to_dir)? else {
                return Ok(());
            };
            let got = errno(s.fs.rename(parent, name, new_parent, to_name, *no_replace));
            let want = rename_in_model(model, dir, name, to_dir, to_name, *no_replace);
            expect("rename", got, want)
        }
        Op::TempThenRename {
            dir,
            temp,
            writes,
            to_dir,
            to_name,
            no_replace,
        } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            let Some(new_parent) = reach(model, s, to_dir)? else {
                return Ok(());
            };
            let how = Creating {
                exclusive: true,
                caller: None,
            };
            let (_, fh) = errno(s.fs.create_with(parent, temp, how))
                .map_err(|e| TestCaseError::fail(format!("create {temp}: {e}")))?;
            let (buf, offsets) = apply_writes(Vec::new(), writes);
            for (w, offset) in writes.iter().zip(offsets) {
                // In memory, any bytes.
                let n = errno(s.fs.write_handle(fh, offset, &w.bytes));
                prop_assert_eq!(n, Ok(w.bytes.len() as u32), "write into {}", temp);
            }
            let flushed = errno(s.fs.flush(fh));
            s.fs.release(fh);
            expect("close of a temporary file", flushed, Ok(()))?;
            model
                .scratch
                .entry(dir.to_string())
                .or_default()
                .insert(temp.to_string(), buf);
            let got = errno(s.fs.rename(parent, temp, new_parent, to_name, *no_replace));
            let want = rename_in_model(model, dir, temp, to_dir, to_name, *no_replace);
            expect("rename of a temporary file", got, want)?;
            if want.is_err() {
                let removed = errno(s.fs.unlink_by(parent, temp, GONE));
                model.remove_scratch(dir, temp);
                expect("removal of a temporary file", removed, Ok(()))?;
            }
            Ok(())
        }
        Op::Replace { dir, name, writes } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            let existed = model.file(dir, name).is_some();
            let removed = errno(s.fs.unlink_by(parent, name, GONE));
            let want = if existed { Ok(()) } else { Err(libc::ENOENT) };
            expect("removal before install", removed, want)?;
            let how = Creating {
                exclusive: true,
                caller: None,
            };
            let (_, fh) = errno(s.fs.create_with(parent, name, how))
                .map_err(|e| TestCaseError::fail(format!("create {name}: {e}")))?;
            model.displaced.remove(&join(dir, name));
            let (buf, offsets) = apply_writes(Vec::new(), writes);
            let mut partial = Vec::new();
            let mut refused = false;
            for (w, offset) in writes.iter().zip(offsets) {
                write_at(&mut partial, offset, &w.bytes);
                let broken = broken_utf8(&partial);
                refused |= broken;
                let want = if broken {
                    Err(libc::EILSEQ)
                } else {
                    Ok(w.bytes.len() as u32)
                };
                let n = errno(s.fs.write_handle(fh, offset, &w.bytes));
                prop_assert_eq!(n, want, "write");
            }
            let flushed = errno(s.fs.flush(fh));
            s.fs.release(fh);
            // One version: the new value, or (when it could not be
            // stored) the removal.
            let stored = if refused {
                Err(libc::EILSEQ)
            } else {
                model.commit_key(dir, name, &buf)
            };
            if stored.is_err() && existed {
                let mut data = model.live(dir).cloned().unwrap_or_default();
                data.remove(*name);
                model.committed(dir, name, data);
            }
            let want = if writes.is_empty() { Ok(()) } else { stored };
            expect("close of an installed file", flushed, want)
        }
        Op::Mkdir { path } => {
            let Some(parent) = reach(model, s, parent_of(path))? else {
                return Ok(());
            };
            let got = errno(s.fs.mkdir(parent, name_of(path)).map(|_| ()));
            // A name left by a secret deleted elsewhere may be made again.
            let want = match model.dir_shows(path) {
                Shows::Yes => Err(libc::EEXIST),
                Shows::Maybe | Shows::No => Ok(()),
            };
            if want.is_ok() {
                model.local_dirs.insert(path.to_string());
            }
            expect("mkdir", got, want)
        }
        Op::Rmdir { path } => {
            let Some(parent) = reach(model, s, parent_of(path))? else {
                return Ok(());
            };
            let got = errno(s.fs.rmdir(parent, name_of(path)));
            if model.is_local(path) {
                // Only what lives in memory counts for a local directory.
                let below = |d: &String| d != path && at_or_below(d, path);
                let busy = model.local_dirs.iter().any(below)
                    || model
                        .scratch
                        .iter()
                        .any(|(d, files)| !files.is_empty() && (d == path || below(d)));
                let want = if busy { Err(libc::ENOTEMPTY) } else { Ok(()) };
                if want.is_ok() {
                    model.local_dirs.remove(*path);
                }
                return expect("rmdir of a local directory", got, want);
            }
            match model.dir_shows(path) {
                Shows::No => expect("rmdir", got, Err(libc::ENOENT)),
                Shows::Maybe => {
                    prop_assert!(
                        got == Ok(()) || got == Err(libc::ENOENT),
                        "rmdir of an uncertain directory: {:?}",
                        got
                    );
                    if got.is_ok() {
                        model.deleted_here.insert(path.to_string());
                    }
                    Ok(())
                }
                Shows::Yes if model.has_content(path) => expect("rmdir", got, Err(libc::ENOTEMPTY)),
                Shows::Yes => {
                    if model.live(path).is_some() {
                        if model.kv2 {
                            if let Some(sec) = model.secrets.get_mut(*path) {
                                sec.deleted = true;
                            }
                        } else {
                            model.secrets.remove(*path);
                        }
                    }
                    model.deleted_here.insert(path.to_string());
                    expect("rmdir", got, Ok(()))
                }
            }
        }
        Op::ExternalPut { secret, data } => {
            let json: serde_json::Map<String, Value> = data
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            s.store.put(secret, Value::Object(json));
            model.deleted_here.remove(*secret);
            model.secrets.insert(
                secret.to_string(),
                ModelSecret {
                    data: data
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                    deleted: false,
                },
            );
            s.clock.advance(TTL + Duration::from_secs(1));
            Ok(())
        }
        Op::ExternalDelete { secret } => {
            s.store.remove(secret);
            if model.kv2 {
                if let Some(sec) = model.secrets.get_mut(*secret) {
                    sec.deleted = true;
                }
            } else {
                model.secrets.remove(*secret);
            }
            s.clock.advance(TTL + Duration::from_secs(1));
            Ok(())
        }
        Op::ExternalUndelete { secret } => {
            s.store.undelete(secret);
            if let Some(sec) = model.secrets.get_mut(*secret) {
                sec.deleted = false;
                model.deleted_here.remove(*secret);
            }
            s.clock.advance(TTL + Duration::from_secs(1));
            Ok(())
        }
        Op::Advance { secs } => {
            s.clock.advance(Duration::from_secs(*secs));
            Ok(())
        }
        Op::KernelForgets => s.forget_all(),
    }
}

/// What a rename does (docs/SEMANTICS.md, "Editors and tools").
fn rename_in_model(
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

fn run_case(kv: Kv, ops: &[Op]) -> Result<(), TestCaseError> {
    let s = Subject::new(kv);
    let mut model = Model {
        kv2: kv == Kv::V2,
        ..Model::default()
    };
    for (i, op) in ops.iter().enumerate() {
        // Each operation is one program, gone when it ends: what it left
        // for later (removals) is settled before the check.
        step(&mut model, &s, op)
            .map(|()| s.fs.settle(true))
            .and_then(|()| check(&model, &s))
            .map_err(|e| TestCaseError::fail(format!("step {i} ({op:?}): {e}")))?;
    }
    Ok(())
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn run_model(kv: Kv) {
    let seed = std::env::var("SECRETFS_MODEL_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let cases = env_number("SECRETFS_MODEL_CASES", 256);
    let steps = env_number("SECRETFS_MODEL_STEPS", 40) as usize;
    let config = Config {
        cases: u32::try_from(cases).unwrap_or(u32::MAX),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(op(), 1..=steps), |ops| {
        run_case(kv, &ops)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => panic!(
            "the core departs from the model ({kv:?}): {reason}\n\
             smallest failing sequence: {ops:#?}\n\
             repeat with SECRETFS_MODEL_SEED={seed}"
        ),
        Err(e) => panic!("model run aborted ({kv:?}): {e}; seed {seed}"),
    }
}

#[test]
fn the_core_over_kv2_matches_the_model() {
    run_model(Kv::V2);
}

#[test]
fn the_core_over_kv1_matches_the_model() {
    run_model(Kv::V1);
}
