//! The stores a test can run over, behind one interface, so that a test
//! body is written once and run per store (see [`per_store!`]):
//! OpenBao KV v2 and KV v1 (a real `bao` dev server) and the age-encrypted
//! store file (`file:PATH`, made and changed with the real `age` tool).
//!
//! A [`Store`] starts the store, names it for a mount (the SOURCE, or a
//! `--layer`), seeds secrets, reads a secret back from the store itself
//! (never through a mount), changes one from outside as another client
//! would (the HTTP API; for the file, `age -d`, an edit of the JSON, `age
//! -r`, under the store's lock as a careful person's script would), and
//! says what the store can do ([`Caps`], as `secretfs status` reports it).
//!
//! Adding a store is one more [`Backend`] variant, its arm in each `match`
//! below (start, source, seed, read back, change from outside), and its
//! name in [`per_store!`]'s default list.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::moto::{self, Moto};
use super::{run_ok, s, Bao, Mount, MountBuilder};

/// One kind of store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// OpenBao, dev mode's `secret/` (KV v2).
    VaultKv2,
    /// OpenBao, a KV v1 mount `kv1/`.
    VaultKv1,
    /// An age-encrypted store file (`file:PATH`).
    File,
    /// AWS Secrets Manager (`aws-sm:PREFIX`), served by moto.
    AwsSm,
}

impl Backend {
    /// Every store, in the order tests run them.
    pub const ALL: [Backend; 4] = [
        Backend::VaultKv2,
        Backend::VaultKv1,
        Backend::File,
        Backend::AwsSm,
    ];

    /// The backend a [`per_store!`] test function is named after.
    pub fn named(name: &str) -> Backend {
        match name {
            "vault_kv2" => Backend::VaultKv2,
            "vault_kv1" => Backend::VaultKv1,
            "file" => Backend::File,
            "aws_sm" => Backend::AwsSm,
            other => panic!("no store backend named {other}"),
        }
    }

    /// What the store can do, as `secretfs status` says in
    /// `store_capabilities`.
    pub fn caps(self) -> Caps {
        match self {
            Backend::VaultKv2 => Caps {
                check_and_set: true,
                versions: true,
                metadata: true,
                soft_delete: true,
            },
            Backend::VaultKv1 => Caps {
                check_and_set: false,
                versions: false,
                metadata: false,
                soft_delete: false,
            },
            Backend::File => Caps {
                check_and_set: true,
                versions: true,
                metadata: true,
                soft_delete: false,
            },
            // Version ids are UUIDs (no `P@N`); tags are the custom
            // metadata; the check of the version read is AWS's own
            // (docs/AWS-SM.md).
            Backend::AwsSm => Caps {
                check_and_set: true,
                versions: false,
                metadata: true,
                soft_delete: false,
            },
        }
    }
}

/// What a store can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub check_and_set: bool,
    pub versions: bool,
    pub metadata: bool,
    pub soft_delete: bool,
}

impl Caps {
    /// As `secretfs status` reports them (`store_capabilities`).
    pub fn as_status(&self) -> Value {
        json!({
            "check_and_set": self.check_and_set,
            "versions": self.versions,
            "metadata": self.metadata,
            "soft_delete": self.soft_delete,
        })
    }
}

/// An age key made with `age-keygen` in a directory of its own, and
/// files encrypted to it and read with the real `age` tool.
pub struct AgeKey {
    dir: tempfile::TempDir,
    key: PathBuf,
    recipient: String,
}

impl AgeKey {
    /// A new key (`key.txt`) in a new directory.
    pub fn new() -> AgeKey {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.txt");
        run_ok("age-keygen", &["-o", s(&key)]);
        let recipient = run_ok("age-keygen", &["-y", s(&key)]).trim().to_string();
        AgeKey {
            dir,
            key,
            recipient,
        }
    }

    /// The identity file.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// The public key (`age1...`).
    pub fn recipient(&self) -> &str {
        &self.recipient
    }

    /// The key's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path in the key's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `doc` to `file` with `age -r` (in place, as the tool does).
    pub fn encrypt(&self, doc: &Value, file: &Path) {
        let plain = self.path("plain.json");
        std::fs::write(&plain, doc.to_string()).expect("write plaintext");
        run_ok("age", &["-r", &self.recipient, "-o", s(file), s(&plain)]);
        std::fs::remove_file(&plain).expect("remove plaintext");
    }

    /// A store file `name` in the key's directory holding `doc`, made
    /// with `age -r`.
    pub fn store_file(&self, name: &str, doc: &Value) -> PathBuf {
        let file = self.path(name);
        self.encrypt(doc, &file);
        file
    }

    /// What `age -d -i key.txt FILE` prints, as JSON.
    pub fn decrypt(&self, file: &Path) -> Value {
        age_decrypt(&self.key, file)
    }
}

/// What `age -d -i IDENTITY FILE` prints, as JSON.
pub fn age_decrypt(identity: &Path, file: &Path) -> Value {
    let text = run_ok("age", &["-d", "-i", s(identity), s(file)]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// An age key (made with `age-keygen`) and the store file encrypted to it.
pub struct AgeFile {
    age: AgeKey,
    file: PathBuf,
}

impl AgeFile {
    /// A new key, and an empty store file made with `secretfs store init`.
    pub fn new() -> AgeFile {
        let age = AgeKey::new();
        let file = age.path("store.age");
        run_ok(
            super::secretfs(),
            &[
                "store",
                "init",
                &format!("file:{}", file.display()),
                "--recipient",
                age.recipient(),
            ],
        );
        AgeFile { age, file }
    }

    /// The store file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The identity file.
    pub fn key(&self) -> &Path {
        self.age.key()
    }

    /// A path in the directory of the store file.
    pub fn path(&self, name: &str) -> PathBuf {
        self.age.path(name)
    }

    /// What `age -d -i KEY FILE` prints, as JSON.
    pub fn decrypt(&self) -> Value {
        self.age.decrypt(&self.file)
    }

    /// Changes the document as a person's script would: under the store's
    /// lock (`FILE.lock`, flock), `age -d`, edit, `age -r` to a file beside
    /// it, renamed over the store file.
    ///
    /// The lock is held by a child (`flock FILE.lock sh -c ...`), never by
    /// this process, and this process starts nothing while it is held: a
    /// process it starts is a fork of it, holding a copy of every
    /// descriptor open here (a file a test thread has open on a mount)
    /// until its exec closes them; each such close is a FLUSH, which
    /// commits, which waits for the lock, which waits for the child: the
    /// mount's commit stalls for its whole lock timeout and fails. A
    /// person's editor is another process, with no descriptor on the mount.
    pub fn edit(&self, f: impl FnOnce(&mut Value)) {
        use std::io::{BufRead, Write};
        use std::process::{Command, Stdio};
        let plain = self.path("edit.json");
        let edited = self.path("edited.json");
        let next = self.path("store.age.next");
        // Under the lock: decrypt, say so, wait for the edited document,
        // encrypt it, rename it over the store file.
        let script = r#"age -d -i "$1" -o "$3" "$2" && echo decrypted && read _ && age -r "$4" -o "$5" "$6" && mv "$5" "$2""#;
        let mut child = Command::new("flock")
            .arg(self.path("store.age.lock"))
            .args(["sh", "-c", script, "sh"])
            .args([
                s(self.key()),
                s(&self.file),
                s(&plain),
                self.age.recipient(),
                s(&next),
                s(&edited),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock sh");
        let (Some(mut to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
            panic!("piped flock sh");
        };
        let mut line = String::new();
        std::io::BufReader::new(from)
            .read_line(&mut line)
            .expect("read from flock sh");
        if line.trim() != "decrypted" {
            let status = child.wait().expect("wait for flock sh");
            panic!("age -d under the lock failed: {status}");
        }
        let text = std::fs::read_to_string(&plain).expect("read the plaintext");
        let mut doc: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        f(&mut doc);
        std::fs::write(&edited, doc.to_string()).expect("write the edited plaintext");
        to.write_all(b"go\n").expect("write to flock sh");
        drop(to);
        let status = child.wait().expect("wait for flock sh");
        for p in [&plain, &edited] {
            let _ = std::fs::remove_file(p);
        }
        assert!(status.success(), "age -r under the lock failed: {status}");
    }

    /// The live versions (not deleted) of `path`: its entry's last
    /// version, and its number; `None` when missing or deleted.
    pub fn get(&self, path: &str) -> Option<(Value, u64)> {
        let doc = self.decrypt();
        let last = doc["secrets"][path]["versions"]
            .as_array()
            .and_then(|v| v.last().cloned())?;
        if last.get("deleted_time").is_some_and(|t| !t.is_null()) {
            return None;
        }
        Some((
            last["data"].clone(),
            last["version"].as_u64().expect("version"),
        ))
    }

    /// The number of `path`'s last version, deleted or not (0 when none).
    pub fn version(&self, path: &str) -> u64 {
        self.decrypt()["secrets"][path]["versions"]
            .as_array()
            .and_then(|v| v.last())
            .and_then(|v| v["version"].as_u64())
            .unwrap_or(0)
    }
}

/// Now, as a store file spells times (RFC 3339).
fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// The parts a started store is made of.
enum Parts {
    Vault(Bao),
    File(AgeFile),
    Aws(Moto),
}

/// A started store of one [`Backend`].
pub struct Store {
    backend: Backend,
    parts: Parts,
}

impl Store {
    /// Starts a store of this kind, empty.
    pub fn start(backend: Backend) -> Store {
        let parts = match backend {
            Backend::VaultKv2 => Parts::Vault(Bao::start()),
            Backend::VaultKv1 => {
                let bao = Bao::start();
                bao.enable_kv("kv1", 1);
                Parts::Vault(bao)
            }
            Backend::File => Parts::File(AgeFile::new()),
            Backend::AwsSm => Parts::Aws(Moto::start()),
        };
        Store { backend, parts }
    }

    /// Starts a store and seeds it with `secrets` (path, data).
    pub fn seeded_with(backend: Backend, secrets: &[(&str, Value)]) -> Store {
        let store = Store::start(backend);
        for (path, data) in secrets {
            store.put(path, data.clone());
        }
        store
    }

    /// Its kind.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What it can do.
    pub fn caps(&self) -> Caps {
        self.backend.caps()
    }

    /// The OpenBao server, for a Vault store (panics for another).
    pub fn bao(&self) -> &Bao {
        match &self.parts {
            Parts::Vault(bao) => bao,
            _ => panic!("{:?} has no OpenBao server", self.backend),
        }
    }

    /// The store file, for a file store (panics for another).
    pub fn age(&self) -> &AgeFile {
        match &self.parts {
            Parts::File(age) => age,
            _ => panic!("{:?} is no store file", self.backend),
        }
    }

    /// The SOURCE (or `--layer`) naming `folder` of this store (`""`: the
    /// whole store).
    pub fn source(&self, folder: &str) -> String {
        // A trailing slash stays: `secret/team/` is the folder where
        // `secret/team` may be the secret (secretfs exec tells them apart).
        let folder = folder.trim_start_matches('/');
        match (&self.parts, self.backend) {
            (Parts::Vault(_), Backend::VaultKv1) => format!("kv1/{folder}"),
            (Parts::Vault(_), _) => format!("secret/{folder}"),
            (Parts::File(age), _) if folder.is_empty() => format!("file:{}", age.file.display()),
            (Parts::File(age), _) => format!("file:{}#{folder}", age.file.display()),
            (Parts::Aws(_), _) => format!("aws-sm:{folder}"),
        }
    }

    /// What a mount or `secretfs exec` of this store needs besides the
    /// SOURCE (`--identity` for a store file).
    pub fn access_args(&self) -> Vec<String> {
        match &self.parts {
            Parts::Vault(_) | Parts::Aws(_) => Vec::new(),
            Parts::File(age) => vec!["--identity".into(), age.key().display().to_string()],
        }
    }

    /// A mount of `folder` without [`Store::access_args`] (for a test
    /// that gives its own `--identity`).
    pub fn bare_builder(&self, folder: &str) -> MountBuilder {
        let source = self.source(folder);
        match &self.parts {
            Parts::Vault(bao) => Mount::builder(bao, &source),
            Parts::File(_) => Mount::builder_without_server(&source),
            Parts::Aws(moto) => Mount::builder_without_server(&source).aws(moto),
        }
    }

    /// The environment a process reaching this store needs (region,
    /// endpoint and credentials for AWS, as the AWS CLI takes them).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match &self.parts {
            Parts::Aws(moto) => {
                let mut env = vec![
                    ("AWS_REGION", moto::REGION.to_string()),
                    ("AWS_ENDPOINT_URL", moto.endpoint().to_string()),
                ];
                env.extend(moto::CREDENTIALS.iter().map(|(k, v)| (*k, v.to_string())));
                env
            }
            _ => Vec::new(),
        }
    }

    /// A mount of `folder`, to be set up further and started.
    pub fn builder(&self, folder: &str) -> MountBuilder {
        let b = self.bare_builder(folder);
        let access = self.access_args();
        let access: Vec<&str> = access.iter().map(String::as_str).collect();
        b.args(&access)
    }

    /// Mounts `folder` with extra `args`.
    pub fn mount(&self, folder: &str, args: &[&str]) -> Mount {
        self.builder(folder).args(args).start()
    }

    /// Writes the secret at `path` (a new version where there are
    /// versions), as another client would.
    pub fn put(&self, path: &str, data: Value) {
        match (&self.parts, self.backend) {
            (Parts::Vault(bao), Backend::VaultKv1) => bao.kv1_put("kv1", path, data),
            (Parts::Vault(bao), _) => bao.kv2_put("secret", path, data),
            (Parts::File(age), _) => age.edit(|doc| {
                let entry = &mut doc["secrets"][path];
                if entry.is_null() {
                    *entry = json!({"versions": []});
                }
                let versions = entry["versions"].as_array_mut().expect("versions");
                let next = versions
                    .last()
                    .and_then(|v| v["version"].as_u64())
                    .unwrap_or(0)
                    + 1;
                versions.push(json!({"version": next, "created_time": now(), "data": data}));
            }),
            (Parts::Aws(moto), _) => {
                if moto.describe(path).is_some() {
                    moto.put(path, &data.to_string());
                } else {
                    moto.create(path, &data.to_string());
                }
            }
        }
    }

    /// Changes the secret at `path` with `f` from outside, as another
    /// client would: read, change, write with check-and-set where the
    /// store has it (a conflict is tried again). Panics when it is
    /// missing.
    pub fn update(&self, path: &str, f: impl Fn(&mut Value)) {
        match (&self.parts, self.backend) {
            (Parts::Vault(bao), Backend::VaultKv2) => loop {
                let (mut data, version) = bao.kv2_get("secret", path).expect("secret exists");
                f(&mut data);
                let (status, _) = bao.api(
                    "POST",
                    &format!("secret/data/{path}"),
                    Some(json!({"data": data, "options": {"cas": version}})),
                );
                if status < 300 {
                    break;
                }
            },
            (Parts::Vault(bao), _) => {
                let mut data = bao.kv1_get("kv1", path).expect("secret exists");
                f(&mut data);
                bao.kv1_put("kv1", path, data);
            }
            (Parts::File(age), _) => age.edit(|doc| {
                let versions = doc["secrets"][path]["versions"]
                    .as_array_mut()
                    .expect("secret exists");
                let last = versions.last().cloned().expect("a version");
                let mut data = last["data"].clone();
                f(&mut data);
                let next = last["version"].as_u64().expect("version") + 1;
                versions.push(json!({"version": next, "created_time": now(), "data": data}));
            }),
            // Checked as secretfs checks its own writes: an unchecked
            // write could undo the mount's (the concurrent writers test
            // lost A10..A14 to it, 1 run in 10).
            (Parts::Aws(moto), _) => loop {
                let current = moto.current(path).expect("secret exists");
                let read = current["VersionId"].as_str().expect("VersionId");
                let mut data: Value = current["SecretString"]
                    .as_str()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .expect("a JSON object secret");
                f(&mut data);
                if moto.put_if_current(path, &data.to_string(), read) {
                    break;
                }
            },
        }
    }

    /// Deletes the secret at `path` from outside (KV v2: its current
    /// version, soft; the file: marked deleted, versions kept).
    pub fn delete(&self, path: &str) {
        match (&self.parts, self.backend) {
            (Parts::Vault(bao), Backend::VaultKv1) => {
                let (status, resp) = bao.api("DELETE", &format!("kv1/{path}"), None);
                assert!(status < 300, "delete {path}: {status} {resp}");
            }
            (Parts::Vault(bao), _) => {
                let (status, resp) = bao.api("DELETE", &format!("secret/data/{path}"), None);
                assert!(status < 300, "delete {path}: {status} {resp}");
            }
            (Parts::File(age), _) => age.edit(|doc| {
                if let Some(last) = doc["secrets"][path]["versions"]
                    .as_array_mut()
                    .and_then(|v| v.last_mut())
                {
                    last["deleted_time"] = json!("2026-01-01T00:00:00Z");
                }
            }),
            // Scheduled for deletion (the recovery window): restorable.
            (Parts::Aws(moto), _) => {
                moto.ok("DeleteSecret", json!({"SecretId": path}));
            }
        }
    }

    /// Deletes version `n` of the secret at `path` from outside (stores
    /// with versions only): it no longer reads.
    pub fn delete_version(&self, path: &str, n: u64) {
        assert!(self.caps().versions, "{:?} has no versions", self.backend);
        match &self.parts {
            Parts::Vault(bao) => {
                let (status, resp) = bao.api(
                    "POST",
                    &format!("secret/delete/{path}"),
                    Some(json!({ "versions": [n] })),
                );
                assert!(status < 300, "{resp}");
            }
            Parts::File(age) => age.edit(|doc| {
                for v in doc["secrets"][path]["versions"]
                    .as_array_mut()
                    .expect("versions")
                {
                    if v["version"] == json!(n) {
                        v["deleted_time"] = json!(now());
                    }
                }
            }),
            Parts::Aws(_) => unreachable!("no versions"),
        }
    }

    /// Destroys version `n` of the secret at `path` from outside: its data
    /// is gone (KV v2's destroy; the file: the version is dropped).
    pub fn destroy_version(&self, path: &str, n: u64) {
        assert!(self.caps().versions, "{:?} has no versions", self.backend);
        match &self.parts {
            Parts::Vault(bao) => {
                let (status, resp) = bao.api(
                    "PUT",
                    &format!("secret/destroy/{path}"),
                    Some(json!({ "versions": [n] })),
                );
                assert!(status < 300, "{resp}");
            }
            Parts::File(age) => age.edit(|doc| {
                doc["secrets"][path]["versions"]
                    .as_array_mut()
                    .expect("versions")
                    .retain(|v| v["version"] != json!(n));
            }),
            Parts::Aws(_) => unreachable!("no versions"),
        }
    }

    /// The secret's data as the store holds it now (read from the store,
    /// not through a mount); `None` when missing or deleted.
    pub fn get(&self, path: &str) -> Option<Value> {
        match (&self.parts, self.backend) {
            (Parts::Vault(bao), Backend::VaultKv1) => bao.kv1_get("kv1", path),
            (Parts::Vault(bao), _) => bao.kv2_get("secret", path).map(|(d, _)| d),
            (Parts::File(age), _) => age.get(path).map(|(d, _)| d),
            (Parts::Aws(moto), _) => moto.current_json(path),
        }
    }

    /// The secret's data; panics when missing.
    pub fn data(&self, path: &str) -> Value {
        self.get(path)
            .unwrap_or_else(|| panic!("{path} is missing from the {:?} store", self.backend))
    }

    /// The secret's current version number, deleted or not (0 when none);
    /// `None` for a store without versions.
    pub fn version(&self, path: &str) -> Option<u64> {
        match (&self.parts, self.backend) {
            (Parts::Vault(_), Backend::VaultKv1) => None,
            (Parts::Vault(bao), _) => Some(bao.kv2_version("secret", path)),
            (Parts::File(age), _) => Some(age.version(path)),
            (Parts::Aws(_), _) => None,
        }
    }

    /// The secret's custom metadata (`None` for a store without metadata).
    pub fn custom_metadata(&self, path: &str) -> Option<Value> {
        match (&self.parts, self.backend) {
            (Parts::Vault(_), Backend::VaultKv1) => None,
            (Parts::Aws(moto), _) => {
                let described = moto.describe(path).expect("secret exists");
                let tags = described["Tags"].as_array().cloned().unwrap_or_default();
                Some(Value::Object(
                    tags.iter()
                        .filter_map(|t| Some((t["Key"].as_str()?.to_string(), t["Value"].clone())))
                        .collect(),
                ))
            }
            (Parts::Vault(bao), _) => {
                let (status, resp) = bao.api("GET", &format!("secret/metadata/{path}"), None);
                assert_eq!(status, 200, "{resp}");
                Some(match &resp["data"]["custom_metadata"] {
                    Value::Null => json!({}),
                    m => m.clone(),
                })
            }
            (Parts::File(age), _) => {
                Some(match &age.decrypt()["secrets"][path]["custom_metadata"] {
                    Value::Null => json!({}),
                    m => m.clone(),
                })
            }
        }
    }

    /// Sets custom metadata `name` = `value` of the secret at `path` from
    /// outside (stores with metadata only).
    pub fn put_custom_metadata(&self, path: &str, name: &str, value: &str) {
        assert!(self.caps().metadata, "{:?} has no metadata", self.backend);
        match &self.parts {
            Parts::Vault(bao) => {
                let mut custom = self.custom_metadata(path).unwrap_or(json!({}));
                custom[name] = json!(value);
                let (status, resp) = bao.api(
                    "POST",
                    &format!("secret/metadata/{path}"),
                    Some(json!({ "custom_metadata": custom })),
                );
                assert!(status < 300, "{resp}");
            }
            Parts::File(age) => age.edit(|doc| {
                doc["secrets"][path]["custom_metadata"][name] = json!(value);
            }),
            Parts::Aws(moto) => {
                let (status, resp) = moto.call(
                    "TagResource",
                    json!({"SecretId": path, "Tags": [{"Key": name, "Value": value}]}),
                );
                assert_eq!(status, 200, "{resp}");
            }
        }
    }

    /// The tree most read tests look at (as [`super::seeded`] on KV v2):
    ///
    /// - `myapp/db`: `PASSWORD` = `hunter2`, `USER` = `app`, `MULTI` (two
    ///   lines), `UNICODE` = `pässwörd ✓`; and `myapp/db/replica`: `HOST` = `r1`
    /// - `myapp/api/token`: `value` = `t0k`
    /// - `myapp/typed`: a number, a float, a bool, an object, an array, a null
    /// - `clash`: keys `child` and `k`, and a secret `clash/child` (`x` = `y`)
    pub fn seeded(backend: Backend) -> Store {
        Store::seeded_with(
            backend,
            &[
                (
                    "myapp/db",
                    json!({"PASSWORD": "hunter2", "USER": "app", "MULTI": "line1\nline2", "UNICODE": "pässwörd ✓"}),
                ),
                ("myapp/db/replica", json!({"HOST": "r1"})),
                ("myapp/api/token", json!({"value": "t0k"})),
                (
                    "myapp/typed",
                    json!({"n": 42, "f": 1.5, "b": true, "o": {"a": [1, "x"]}, "a": [1, 2], "z": null}),
                ),
                ("clash", json!({"child": "shadowed", "k": "v"})),
                ("clash/child", json!({"x": "y"})),
            ],
        )
    }
}

/// Runs a test body `fn NAME(backend: Backend)` once per store: makes a
/// module `NAME` holding one `#[test]` per store (`NAME::vault_kv2`,
/// `NAME::vault_kv1`, `NAME::file`, `NAME::aws_sm`; `cargo test NAME`
/// runs them all).
/// `per_store!(NAME: file, vault_kv2)` runs it on those stores only.
#[allow(unused_macros)] // the test binaries that run nothing per store
macro_rules! per_store {
    ($test:ident) => {
        per_store!($test: vault_kv2, vault_kv1, file, aws_sm);
    };
    ($test:ident: $($backend:ident),+ $(,)?) => {
        mod $test {
            $(
                #[test]
                fn $backend() {
                    super::$test(crate::support::Backend::named(stringify!($backend)));
                }
            )+
        }
    };
}
pub(crate) use per_store;
