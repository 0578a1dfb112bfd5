//! The harness: the core (`SecretFs` over `MemoryStore`, or over the
//! store file: `file_backing`, with a manual clock and the kernel's lookup references counted), a walk of what it
//! shows, and the check of walk and store against the reference.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use secretfs::fs::cache::CachePolicy;
use secretfs::fs::clock::ManualClock;
use secretfs::fs::inode::{Ino, ROOT_INO};
use secretfs::fs::{FsConfig, OpContext, Presentation, SecretFs};
use secretfs::store::deleted::HideDeleted;
use secretfs::store::memory::{Call, MemoryStore, Scope};
use secretfs::store::{Permissions, SecretPath, SecretStore};

use crate::file_backing::FileBacking;

use crate::ops::{step, Op};
use crate::reference::*;

/// What a walk shows: directory paths, and file paths with their bytes.
pub(crate) type Tree = (BTreeSet<String>, BTreeMap<String, Vec<u8>>);

/// The store under the core, with what the model does to it besides.
pub(crate) enum Backing {
    Memory(Arc<MemoryStore>),
    File(Arc<FileBacking>),
}

impl Backing {
    /// Every write and delete fails with `err` until [`Backing::heal`].
    pub(crate) fn fail_writes(&self, err: secretfs::error::Error) {
        match self {
            Backing::Memory(m) => m.fail(Call::Write, Scope::Everywhere, err),
            Backing::File(f) => f.fail_writes(err),
        }
    }

    pub(crate) fn heal(&self) {
        match self {
            Backing::Memory(m) => m.heal(),
            Backing::File(f) => f.heal(),
        }
    }

    /// The policy at the secret `path` allows only `may`.
    pub(crate) fn restrict(&self, path: &str, may: Permissions) {
        match self {
            Backing::Memory(m) => m.restrict(Scope::At(path), Some(may)),
            Backing::File(f) => f.restrict(path, may),
        }
    }

    pub(crate) fn unrestrict(&self) {
        match self {
            Backing::Memory(m) => m.unrestrict(),
            Backing::File(f) => f.unrestrict(),
        }
    }

    /// Another client writes the secret.
    pub(crate) fn put(&self, path: &str, data: Value) {
        match self {
            Backing::Memory(m) => m.put(path, data),
            Backing::File(f) => f.put(path, data),
        }
    }

    /// Another client deletes the secret.
    pub(crate) fn remove(&self, path: &str) {
        match self {
            Backing::Memory(m) => m.remove(path),
            Backing::File(f) => f.remove(path),
        }
    }

    /// Someone else undeletes the secret.
    pub(crate) fn undelete(&self, path: &str) {
        match self {
            Backing::Memory(m) => m.undelete(path),
            Backing::File(f) => f.undelete(path),
        }
    }

    /// Every live secret and its data.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, Value> {
        match self {
            Backing::Memory(m) => m.snapshot(),
            Backing::File(f) => f.snapshot(),
        }
    }

    /// Versions written through the core.
    pub(crate) fn versions_written(&self) -> u64 {
        match self {
            Backing::Memory(m) => m.versions_written(),
            Backing::File(f) => f.versions_written(),
        }
    }

    /// Write requests of the core, failed or not.
    pub(crate) fn write_calls(&self) -> u64 {
        match self {
            Backing::Memory(m) => m.write_calls(),
            Backing::File(f) => f.write_calls(),
        }
    }
}

/// The filesystem under test, its store and clock.
pub(crate) struct Subject {
    pub(crate) fs: Arc<SecretFs>,
    pub(crate) store: Backing,
    pub(crate) clock: Arc<ManualClock>,
    /// The references the kernel holds: one per successful lookup.
    pub(crate) held: std::sync::Mutex<HashMap<Ino, u64>>,
}

pub(crate) fn errno<T>(r: secretfs::error::Result<T>) -> Result<T, i32> {
    r.map_err(|e| e.errno())
}

impl Subject {
    pub(crate) fn new(kv: Kv) -> Subject {
        // As `store::connect` builds them: soft deletes hidden where the
        // store has them.
        let (store, core): (Backing, Arc<dyn SecretStore>) = match kv {
            Kv::V1 | Kv::V2 => {
                let m = Arc::new(if kv == Kv::V1 {
                    MemoryStore::kv1()
                } else {
                    MemoryStore::kv2()
                });
                (Backing::Memory(m.clone()), Arc::new(HideDeleted::new(m)))
            }
            Kv::File => {
                let f = Arc::new(FileBacking::new());
                (Backing::File(f.clone()), f)
            }
        };
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
        let fs = SecretFs::builder(core, SecretPath::root(), config, clock.clone())
            .build()
            .0;
        Subject {
            fs,
            store,
            clock,
            held: Default::default(),
        }
    }

    /// A lookup, as the kernel makes it: it holds a reference after.
    pub(crate) fn look(
        &self,
        parent: Ino,
        name: &str,
    ) -> secretfs::error::Result<secretfs::fs::Attr> {
        let attr = self.fs.lookup(&OpContext::background(), parent, name)?;
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
    pub(crate) fn forget_all(&self) -> Result<(), TestCaseError> {
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

    pub(crate) fn resolve(&self, path: &str) -> Result<Ino, i32> {
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

    pub(crate) fn list(&self, ino: Ino) -> Result<Vec<(String, bool)>, i32> {
        let fh = errno(self.fs.opendir(&OpContext::background(), ino))?;
        let entries = errno(self.fs.dir_entries(fh));
        self.fs.release(&OpContext::background(), fh);
        Ok(entries?
            .1
            .iter()
            .map(|e| (e.name.clone(), e.is_dir))
            .collect())
    }

    pub(crate) fn read_file(&self, ino: Ino) -> Result<Vec<u8>, i32> {
        let fh = errno(self.fs.open(&OpContext::background(), ino, false, false))?;
        let bytes = errno(
            self.fs
                .read_handle(&OpContext::background(), fh, 0, 1 << 20, |b| b.to_vec()),
        );
        self.fs.release(&OpContext::background(), fh);
        bytes
    }

    /// Everything a walk from the root shows: directories and files.
    pub(crate) fn walk(&self) -> Result<Tree, TestCaseError> {
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
pub(crate) fn check(model: &Model, s: &Subject) -> Result<(), TestCaseError> {
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
    // One at a time, no write conflicts: each request is a version, or
    // one the store failed.
    prop_assert_eq!(
        s.store.write_calls(),
        s.store.versions_written() + model.failed_writes,
        "write requests"
    );
    Ok(())
}

/// Resolves a directory in the filesystem and checks that the model
/// agrees it shows; `None` when it does not (and may not).
pub(crate) fn reach(model: &Model, s: &Subject, dir: &str) -> Result<Option<Ino>, TestCaseError> {
    match (s.resolve(dir), model.dir_shows(dir)) {
        (Ok(ino), Shows::Yes | Shows::Maybe) => Ok(Some(ino)),
        (Err(_), Shows::No | Shows::Maybe) => Ok(None),
        (Ok(_), Shows::No) => Err(TestCaseError::fail(format!("/{dir} should not show"))),
        (Err(e), Shows::Yes) => Err(TestCaseError::fail(format!(
            "/{dir} should show, lookup errno {e}"
        ))),
    }
}

pub(crate) fn expect(
    what: &str,
    got: Result<(), i32>,
    want: Result<(), i32>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got, want, "{}", what);
    Ok(())
}

pub(crate) fn run_case(kv: Kv, ops: &[Op]) -> Result<(), TestCaseError> {
    let s = Subject::new(kv);
    let mut model = Model {
        // The store file keeps versions and secrets without keys, as KV v2.
        kv2: kv != Kv::V1,
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
