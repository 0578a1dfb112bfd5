//! A local encrypted store: one file, encrypted with age, holding a JSON
//! document of secrets with their versions and metadata
//! (`secretfs mount file:/etc/secretfs/app.age /mnt --identity key.txt`).
//! docs/FILE-STORE.md describes the format and what is guaranteed.
//!
//! Every call looks at the file (one `stat`) and decrypts it again when it
//! changed, so a change made by someone else (the age tool, `git pull`)
//! shows within the mount's TTL. A write takes the advisory lock
//! (`PATH.lock`), reads the file afresh, applies the change (with
//! check-and-set on the version number), and replaces the whole file
//! atomically (`replace`): two writers never lose each other's changes,
//! and a crash leaves the old file or the new one.

mod crypt;
pub use crypt::Passphrase;
pub mod format;
mod replace;

use crate::store::Deadline;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Capabilities, Connected, Health, ListEntry, Listing, Permissions, Precondition, Revision,
    Secret, SecretData, SecretPath, SecretStore,
};
use crate::error::{Error, Result};
use crate::start_error::StartError;
use format::{Document, Entry};

/// The prefix of a SOURCE that names a store file.
pub const SCHEME: &str = "file:";

/// How to open `file:` SOURCEs, from the command line.
#[derive(Debug, Clone, Default)]
pub struct FileSettings {
    /// The age identity file (`--identity`, `SECRETFS_AGE_IDENTITY_FILE`):
    /// age-keygen's, one encrypted with `age -p`, or an OpenSSH key.
    pub identity: Option<PathBuf>,
    /// The file holding the identity file's passphrase
    /// (`--identity-passphrase-file`, `SECRETFS_AGE_PASSPHRASE_FILE`).
    pub passphrase_file: Option<PathBuf>,
    /// How long a write waits for another writer's lock.
    pub timeout: Duration,
}

/// A `file:` SOURCE: the store file, and the folder in it
/// (`file:PATH#FOLDER`; the whole file without `#`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// The store file.
    pub path: PathBuf,
    /// The folder (or secret) of the SOURCE in it.
    pub folder: SecretPath,
}

impl FileSource {
    /// Parses SOURCE; `None` when it does not name a store file.
    pub fn parse(source: &str) -> Option<FileSource> {
        let rest = source.strip_prefix(SCHEME)?;
        let (path, folder) = match rest.rsplit_once('#') {
            Some((path, folder)) => (path, SecretPath::parse(folder)),
            None => (rest, SecretPath::root()),
        };
        Some(FileSource {
            path: PathBuf::from(path),
            folder,
        })
    }
}

/// Opens SOURCE when it names a store file (`file:PATH`), as a store
/// ready for the core (counted for --metrics by `meter`); `Ok(None)` for
/// any other SOURCE (Vault/OpenBao, AWS). Called by `store::open_other`.
pub fn connect(
    source: &str,
    settings: &FileSettings,
    meter: &crate::metrics::Meter,
) -> std::result::Result<Option<Connected>, StartError> {
    let Some(parsed) = FileSource::parse(source) else {
        return Ok(None);
    };
    if parsed.path.as_os_str().is_empty() {
        return Err(StartError::Options(format!(
            "{source}: name the store file, e.g. file:/etc/secretfs/app.age"
        )));
    }
    let Some(identity) = &settings.identity else {
        return Err(StartError::Options(format!(
            "{source}: no age identity: give --identity FILE (-o identity=FILE) or SECRETFS_AGE_IDENTITY_FILE"
        )));
    };
    let passphrase = crypt::Passphrase {
        file: settings.passphrase_file.as_deref(),
    };
    let store =
        FileStore::open(&parsed.path, identity, &passphrase, settings.timeout).map_err(|e| {
            let why = format!("{source}: {e}");
            // A store file that is not there (yet) is a store that does not
            // answer, as a server that is down (`exec --wait-for-store` waits
            // for it; once mounted, a missing file is an outage too).
            match std::fs::metadata(&parsed.path) {
                Err(m) if m.kind() == std::io::ErrorKind::NotFound => {
                    StartError::StoreUnreachable(why)
                }
                _ => StartError::Store(why),
            }
        })?;
    tracing::info!(file = %store.path.display(), folder = %parsed.folder, "opened the store file");
    Ok(Some(Connected {
        store: std::sync::Arc::new(super::metered::Metered::new(store, meter.clone())),
        root: parsed.folder,
    }))
}

/// `secretfs store init file:PATH [--recipient R] [--identity FILE]`:
/// creates an empty store encrypted to `recipients` (`age1...`, SSH
/// public keys) and to the identities of `identity` (all kept in it for
/// later writes); an identity file that does not exist is made first,
/// with a new age key. `passphrase_file` holds the passphrase of an
/// encrypted identity file or SSH key. Refuses to overwrite a store
/// file. The `Err` is one line for stderr.
pub fn init(
    source: &str,
    recipients: &[String],
    identity: Option<&Path>,
    passphrase_file: Option<&Path>,
) -> std::result::Result<PathBuf, String> {
    let parsed = FileSource::parse(source)
        .ok_or_else(|| format!("{source}: a store file is named file:PATH"))?;
    let exists = |path: &Path| {
        format!(
            "{} exists already: secretfs store init makes a new store",
            path.display()
        )
    };
    // Before a key is made for it.
    if parsed.path.exists() {
        return Err(exists(&parsed.path));
    }
    let mut recipients: Vec<String> = recipients.iter().map(|r| r.trim().to_string()).collect();
    let mut keys = recipients
        .iter()
        .map(|r| crypt::parse_recipient(r))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if let Some(identity) = identity {
        if !identity.exists() {
            crypt::new_identity_file(identity)?;
        }
        let passphrase = crypt::Passphrase {
            file: passphrase_file,
        };
        for id in crypt::read_identities(identity, &passphrase)? {
            let key = id.recipient()?;
            if !keys.iter().any(|k| k.canonical() == key.canonical()) {
                recipients.push(id.public().to_string());
                keys.push(key);
            }
        }
    }
    if recipients.is_empty() {
        return Err(
            "give --identity FILE (made when missing) or --recipient (age1... or an SSH public key)"
                .into(),
        );
    }
    let doc = Document::empty(recipients);
    let file = crypt::encrypt(&keys, &doc.to_bytes()).map_err(|e| e.to_string())?;
    let path = &parsed.path;
    let _lock = replace::lock(path, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    if path.exists() {
        return Err(exists(path));
    }
    replace::replace(path, &file).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.clone())
}

/// What identifies one content of the file: a change by anyone changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The document as last read, and which content of the file it was.
struct Loaded {
    stamp: Stamp,
    doc: Document,
}

/// Secrets kept in one age-encrypted file.
pub struct FileStore {
    path: PathBuf,
    /// The identity file the identities came from (named in errors).
    identity_file: PathBuf,
    identities: Vec<crypt::Key>,
    timeout: Duration,
    loaded: Mutex<Option<Loaded>>,
}

impl FileStore {
    /// Opens the store file at `path` with the identities of the
    /// identity file `identity` (its passphrase, when it has one, as
    /// `passphrase` says), and reads it once (so that a wrong key or a
    /// broken file fails the start). `timeout` bounds the wait for
    /// another writer's lock.
    pub fn open(
        path: &Path,
        identity: &Path,
        passphrase: &crypt::Passphrase<'_>,
        timeout: Duration,
    ) -> Result<FileStore, String> {
        let identities = crypt::read_identities(identity, passphrase)?;
        // Absolute: the daemon may move to another directory.
        let path =
            std::path::absolute(path).map_err(|e| format!("store file {}: {e}", path.display()))?;
        let store = FileStore {
            path,
            identity_file: identity.to_path_buf(),
            identities,
            timeout,
            loaded: Mutex::new(None),
        };
        store.current(&mut store.state()).map_err(|e| match e {
            Error::Unavailable(why) | Error::PermissionDenied(why) | Error::Protocol(why) => why,
            other => other.to_string(),
        })?;
        Ok(store)
    }

    fn state(&self) -> MutexGuard<'_, Option<Loaded>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The document as the file holds it now: the one read last unless
    /// the file changed since.
    fn current<'a>(&self, state: &'a mut Option<Loaded>) -> Result<&'a Document> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| replace::io_error(&format!("store file {}", self.path.display()), &e))?;
        let stamp = Stamp::of(&meta);
        if state.as_ref().is_none_or(|l| l.stamp != stamp) {
            let bytes = std::fs::read(&self.path).map_err(|e| {
                replace::io_error(&format!("store file {}", self.path.display()), &e)
            })?;
            let plain = crypt::decrypt(&self.identities, &bytes).map_err(|e| match e {
                Error::PermissionDenied(_) => Error::PermissionDenied(format!(
                    "no identity in {} opens {} (it is encrypted to other recipients)",
                    self.identity_file.display(),
                    self.path.display()
                )),
                other => other,
            })?;
            let doc = Document::parse(&plain)?;
            if state.is_some() {
                tracing::info!(file = %self.path.display(), "the store file changed: read again");
            }
            // Stamped as before the read: what was read may be newer than
            // the stamp (then it is read once more), never older.
            *state = Some(Loaded { stamp, doc });
        }
        match state.as_ref() {
            Some(l) => Ok(&l.doc),
            None => Err(Error::Unavailable("the store file was not read".into())),
        }
    }

    /// Reads the current document and answers with `f`.
    fn with_doc<T>(&self, f: impl FnOnce(&Document) -> T) -> Result<T> {
        let mut state = self.state();
        Ok(f(self.current(&mut state)?))
    }

    /// One read-modify-write under the lock: `f` changes a copy of the
    /// file's current document, which then replaces the file. Nothing is
    /// written when `f` fails.
    fn change<T>(&self, f: impl FnOnce(&mut Document) -> Result<T>) -> Result<T> {
        let mut state = self.state();
        let _lock = replace::lock(&self.path, self.timeout)?;
        let mut doc = self.current(&mut state)?.clone();
        let out = f(&mut doc)?;
        let recipients = self.recipients(&doc)?;
        let file = crypt::encrypt(&recipients, &doc.to_bytes())?;
        replace::replace(&self.path, &file).map_err(|e| {
            replace::io_error(
                &format!("cannot replace the store file {}", self.path.display()),
                &e,
            )
        })?;
        let stamp = std::fs::metadata(&self.path)
            .map(|m| Stamp::of(&m))
            .map_err(|e| replace::io_error(&format!("store file {}", self.path.display()), &e))?;
        *state = Some(Loaded { stamp, doc });
        Ok(out)
    }

    /// Whom a write encrypts to: the document's recipients, which must
    /// include one of our identities (else we could not read back what we
    /// write); the identities' own public keys when it names none.
    fn recipients(&self, doc: &Document) -> Result<Vec<crypt::Recipient>> {
        let ours = self
            .identities
            .iter()
            .map(|i| i.recipient().map_err(Error::Protocol))
            .collect::<Result<Vec<_>>>()?;
        if doc.recipients.is_empty() {
            return Ok(ours);
        }
        let theirs = doc
            .recipients
            .iter()
            .map(|r| crypt::parse_recipient(r).map_err(Error::Protocol))
            .collect::<Result<Vec<_>>>()?;
        if !theirs
            .iter()
            .any(|r| ours.iter().any(|o| o.canonical() == r.canonical()))
        {
            return Err(Error::NotPermitted(
                "the store file's recipients do not include the identity in use: it could not read back what it writes",
            ));
        }
        Ok(theirs)
    }
}

/// A version number as a revision.
fn revision(version: u64) -> Revision {
    Revision::new(version.to_string())
}

fn secret_of(entry: &Entry, version: &format::Version) -> Secret {
    let mut secret = Secret::from_json_map(
        &version.data,
        Some(revision(version.version)),
        version.created(),
    );
    secret.custom_metadata = entry.custom_metadata.clone();
    secret
}

impl SecretStore for FileStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            check_and_set: true,
            versions: true,
            metadata: true,
            descriptions: false,
            metadata_apart: false,
            // A deleted secret is no longer listed.
            soft_delete: false,
            // A secret is a JSON object, which may be empty.
            empty_secrets: true,
        }
    }

    fn list(&self, _deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        let prefix = if path.is_root() {
            String::new()
        } else {
            format!("{}/", path.as_str())
        };
        self.with_doc(|doc| {
            let mut entries = std::collections::BTreeSet::new();
            for (name, entry) in doc.secrets.range(prefix.clone()..) {
                let Some(rest) = name.strip_prefix(&prefix) else {
                    break;
                };
                if entry.live().is_none() {
                    continue;
                }
                match rest.split_once('/') {
                    Some((folder, _)) => entries.insert((folder.to_string(), true)),
                    None => entries.insert((rest.to_string(), false)),
                };
            }
            (!entries.is_empty()).then(|| {
                entries
                    .into_iter()
                    .map(|(name, folder)| ListEntry { name, folder })
                    .collect()
            })
        })
    }

    fn read(&self, _deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        self.with_doc(|doc| {
            let entry = doc.secrets.get(path.as_str())?;
            Some(secret_of(entry, entry.live()?))
        })
    }

    fn read_version(
        &self,
        _deadline: &Deadline,
        path: &SecretPath,
        version: u64,
    ) -> Result<Option<Secret>> {
        self.with_doc(|doc| {
            let entry = doc.secrets.get(path.as_str())?;
            Some(secret_of(entry, entry.version(version)?))
        })
    }

    fn write(
        &self,
        _deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        if path.is_root() {
            return Err(Error::Invalid(
                "a secret needs a name below the root".into(),
            ));
        }
        let data: format::Data = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_json()))
            .collect();
        self.change(|doc| {
            let entry = doc.secrets.entry(path.as_str().to_string()).or_default();
            let live = entry.live().map(|v| v.version);
            let holds = match when {
                Precondition::Any => true,
                Precondition::Absent => live.is_none(),
                Precondition::At(r) => live.is_some_and(|v| v.to_string() == r.as_str()),
            };
            if !holds {
                return Err(Error::CasConflict);
            }
            Ok(Some(revision(entry.push(data))))
        })
    }

    fn delete(&self, _deadline: &Deadline, path: &SecretPath) -> Result<()> {
        let live = self.with_doc(|doc| {
            doc.secrets
                .get(path.as_str())
                .is_some_and(|e| e.live().is_some())
        })?;
        if !live {
            return Ok(());
        }
        self.change(|doc| {
            if let Some(v) = doc
                .secrets
                .get_mut(path.as_str())
                .and_then(|e| e.versions.last_mut())
            {
                v.deleted_time.get_or_insert_with(format::now);
            }
            Ok(())
        })
    }

    fn set_custom_metadata(
        &self,
        _deadline: &Deadline,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        self.change(|doc| {
            let entry = doc.secrets.get_mut(path.as_str()).ok_or(Error::NotFound)?;
            match value {
                Some(v) => entry
                    .custom_metadata
                    .insert(name.to_string(), v.to_string()),
                None => entry.custom_metadata.remove(name),
            };
            Ok(())
        })
    }

    fn health(&self, _deadline: &Deadline) -> Result<Health> {
        self.with_doc(|_| Health::default())
    }

    fn permissions(&self, _deadline: &Deadline, _path: &SecretPath) -> Result<Option<Permissions>> {
        // A write replaces the file: it needs the directory writable.
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let Ok(dir) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
            return Ok(None);
        };
        // SAFETY: access(2) on a NUL-terminated path.
        let writable = unsafe { libc::access(dir.as_ptr(), libc::W_OK) } == 0;
        Ok(Some(if writable {
            Permissions::all()
        } else {
            Permissions::read_only()
        }))
    }
}

#[cfg(test)]
mod tests;
