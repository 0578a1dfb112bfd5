//! The model's second store: the real `FileStore` (src/store/file/) on a
//! store file of its own (on /dev/shm when there is one: every write
//! fsyncs), with what the model needs of any store around it: writes
//! counted (requests and versions, as `MemoryStore` counts them), writes
//! made to fail, a path made read-only by "policy", and changes made by
//! another client (through a second `FileStore` on the same file, as a
//! second secretfs would; an undelete as a person makes it, by dropping
//! the `deleted_time` of the last version with the age tool).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use serde_json::Value;

use secretfs::error::{Error, Result};
use secretfs::store::deadline::Deadline;
use secretfs::store::file::format::Document;
use secretfs::store::file::{FileStore, Passphrase};
use secretfs::store::{
    Permissions, Precondition, Revision, Secret, SecretData, SecretPath, SecretStore,
};

pub(crate) struct FileBacking {
    _dir: tempfile::TempDir,
    path: PathBuf,
    identity: age::x25519::Identity,
    /// What the core uses.
    store: FileStore,
    /// Another client of the same file.
    other: FileStore,
    writes: AtomicU64,
    versions: AtomicU64,
    failing: Mutex<Option<Error>>,
    read_only: Mutex<Option<(SecretPath, Permissions)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FileBacking {
    pub(crate) fn new() -> FileBacking {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let identity = age::x25519::Identity::generate();
        let key = dir.path().join("key.txt");
        std::fs::write(&key, format!("{}\n", identity.to_string().expose_secret()))
            .expect("identity file");
        let path = dir.path().join("model.age");
        secretfs::store::file::init(&format!("file:{}", path.display()), &[], Some(&key), None)
            .expect("store init");
        let open = || {
            FileStore::open(
                &path,
                &key,
                &Passphrase { file: None },
                Duration::from_secs(5),
            )
            .expect("open the store")
        };
        FileBacking {
            store: open(),
            other: open(),
            _dir: dir,
            path,
            identity,
            writes: AtomicU64::new(0),
            versions: AtomicU64::new(0),
            failing: Mutex::new(None),
            read_only: Mutex::new(None),
        }
    }

    /// The document the file holds now.
    fn doc(&self) -> Document {
        let bytes = std::fs::read(&self.path).expect("read the store file");
        let plain = age::decrypt(&self.identity, &bytes).expect("decrypt the store file");
        Document::parse(&plain).expect("a store document")
    }

    /// Every live secret and its data.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, Value> {
        self.doc()
            .secrets
            .iter()
            .filter_map(|(p, e)| Some((p.clone(), Value::Object(e.live()?.data.clone()))))
            .collect()
    }

    pub(crate) fn write_calls(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    pub(crate) fn versions_written(&self) -> u64 {
        self.versions.load(Ordering::SeqCst)
    }

    /// Every write and delete fails with `err` until [`FileBacking::heal`].
    pub(crate) fn fail_writes(&self, err: Error) {
        *lock(&self.failing) = Some(err);
    }

    pub(crate) fn heal(&self) {
        *lock(&self.failing) = None;
    }

    /// The policy at `path` allows only `may` until [`FileBacking::unrestrict`].
    pub(crate) fn restrict(&self, path: &str, may: Permissions) {
        *lock(&self.read_only) = Some((SecretPath::parse(path), may));
    }

    pub(crate) fn unrestrict(&self) {
        *lock(&self.read_only) = None;
    }

    /// Another client writes the secret.
    pub(crate) fn put(&self, path: &str, data: Value) {
        let map = match data {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let keys = Secret::from_json_map(&map, None, None).keys;
        self.other
            .write(
                &Deadline::per_request(),
                &SecretPath::parse(path),
                &keys,
                &Precondition::Any,
            )
            .expect("another client's write");
    }

    /// Another client deletes the secret.
    pub(crate) fn remove(&self, path: &str) {
        self.other
            .delete(&Deadline::per_request(), &SecretPath::parse(path))
            .expect("another client's delete");
    }

    /// A person undeletes the secret: drops its last version's
    /// `deleted_time` (docs/FILE-STORE.md), encrypting the file anew.
    pub(crate) fn undelete(&self, path: &str) {
        let mut doc = self.doc();
        let Some(last) = doc
            .secrets
            .get_mut(path)
            .and_then(|e| e.versions.last_mut())
        else {
            return;
        };
        last.deleted_time = None;
        let plain = doc.to_bytes();
        let file =
            age::encrypt(&self.identity.to_public(), &plain).expect("encrypt the store file");
        let next = self.path.with_extension("next");
        std::fs::write(&next, file).expect("write the store file");
        std::fs::rename(&next, &self.path).expect("replace the store file");
    }

    fn check(&self, path: &SecretPath, allowed: impl Fn(&Permissions) -> bool) -> Result<()> {
        if let Some(e) = lock(&self.failing).clone() {
            return Err(e);
        }
        match &*lock(&self.read_only) {
            Some((p, may)) if p == path && !allowed(may) => Err(Error::PermissionDenied(
                "1 error occurred: permission denied".into(),
            )),
            _ => Ok(()),
        }
    }
}

impl secretfs::store::Forwarding for FileBacking {
    type Inner = FileStore;

    fn inner(&self) -> &FileStore {
        &self.store
    }

    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let exists = self.store.read(deadline, path)?.is_some();
        self.check(path, |p| if exists { p.update } else { p.create })?;
        let written = self.store.write(deadline, path, data, when)?;
        self.versions.fetch_add(1, Ordering::SeqCst);
        Ok(written)
    }

    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        self.check(path, |p| p.delete)?;
        self.store.delete(deadline, path)
    }

    fn set_custom_metadata(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.check(path, |p| p.update)?;
        self.store.set_custom_metadata(deadline, path, name, value)
    }

    fn permissions(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Permissions>> {
        match &*lock(&self.read_only) {
            Some((p, may)) if p == path => Ok(Some(*may)),
            _ => self.store.permissions(deadline, path),
        }
    }
}
