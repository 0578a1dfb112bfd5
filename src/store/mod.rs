//! The store seen by the core: a trait that speaks secrets, typed values,
//! revisions and preconditions, with a Vault/OpenBao implementation
//! (`vault`) and an in-memory one for tests (`memory`, built only for
//! tests: the `memory-store` feature). `deleted` hides
//! what a store with soft deletes keeps listing after a delete through us;
//! `forward` lets a store that wraps another write only what it changes.

pub mod aws;
mod data;
pub mod deadline;
pub use deadline::Deadline;
pub mod deleted;
pub mod empty_source;
pub mod file;
pub mod forward;
pub use forward::Forwarding;
pub mod layered;
#[cfg(any(test, feature = "memory-store"))]
pub mod memory;
pub mod metered;
pub mod pending;
pub mod vault;

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretSlice};

use crate::error::{Error, Result};

/// A store reached from a SOURCE, and the folder in it that the mount's
/// root stands for.
pub struct Connected {
    /// The store.
    pub store: std::sync::Arc<dyn SecretStore>,
    /// The folder of SOURCE inside the store.
    pub root: SecretPath,
}

/// How to reach Vault: the app layer's conversion of the Vault flags, run
/// only when a SOURCE or layer is on Vault (a store file alone needs no
/// token, and no Vault flag is checked for it).
pub type VaultAccess<'a> =
    dyn Fn() -> std::result::Result<vault::VaultSettings, crate::start_error::StartError> + 'a;

/// How to open the SOURCEs that are not on Vault: store files (`file:`)
/// and AWS Secrets Manager (`aws-sm:`), from the command line; and where
/// every store opened counts its requests (and Vault its token's expiry).
#[derive(Debug, Clone, Default)]
pub struct StoreSettings {
    /// `file:PATH` SOURCEs.
    pub file: file::FileSettings,
    /// `aws-sm:PREFIX` SOURCEs.
    pub aws: aws::AwsSettings,
    /// `--metrics`: off unless the mount serves them.
    pub meter: crate::metrics::Meter,
}

/// Opens SOURCE when it names a store other than Vault (`file:`,
/// `aws-sm:`); `Ok(None)` for a Vault SOURCE. The one place a SOURCE's
/// kind is told apart.
fn open_other(
    source: &str,
    stores: &StoreSettings,
    rt: &tokio::runtime::Handle,
) -> std::result::Result<Option<Connected>, crate::start_error::StartError> {
    if let Some(c) = file::connect(source, &stores.file, &stores.meter)? {
        return Ok(Some(c));
    }
    aws::connect(source, &stores.aws, &stores.meter, rt)
}

/// Reaches the store SOURCE names (a Vault/OpenBao KV mount and folder,
/// e.g. `secret/team/prod`) with the settings given: what `mount` (and
/// any other command that reads secrets) starts from. Errors are one
/// sentence for stderr.
pub fn connect(
    source: &str,
    vault: &VaultAccess,
    stores: &StoreSettings,
    rt: tokio::runtime::Handle,
) -> std::result::Result<Connected, crate::start_error::StartError> {
    if let Some(c) = open_other(source, stores, &rt)? {
        return Ok(c);
    }
    let settings = vault()?;
    let store = vault::VaultStore::connect(&settings, &stores.meter, source, rt)?;
    Ok(connected(store, &settings.addr_list(), &stores.meter))
}

/// Reaches the stores of several SOURCEs (in order) with one login, as
/// [`connect`] does for one: what `secretfs exec` starts from. The
/// settings are the caller's: `exec` tries again with the same ones while
/// the store does not answer.
pub fn connect_each(
    sources: &[String],
    vault: &VaultAccess,
    stores: &StoreSettings,
    rt: tokio::runtime::Handle,
) -> std::result::Result<Vec<Connected>, crate::start_error::StartError> {
    // Logged in only when a SOURCE is on Vault.
    let mut session = None;
    let mut out = Vec::with_capacity(sources.len());
    for source in sources {
        if let Some(c) = open_other(source, stores, &rt)? {
            out.push(c);
            continue;
        }
        let (settings, session) = match &mut session {
            Some(s) => s,
            None => {
                let settings = vault()?;
                let s = vault::Session::open(&settings, &stores.meter, rt.clone())?;
                session.insert((settings, s))
            }
        };
        out.push(connected(
            session.resolve(source)?,
            &settings.addr_list(),
            &stores.meter,
        ));
    }
    Ok(out)
}

/// Reaches SOURCE and the layers laid over it (bottom first) with one
/// login, as one store ([`layered::Layered`]) rooted at the empty path. A
/// layer given as a URL (`https://vault-b:8200/secret/prod`) is on that
/// server, reached with the same credentials and a login of its own.
pub fn connect_layered(
    source: &str,
    layers: &[String],
    vault: &VaultAccess,
    stores: &StoreSettings,
    rt: tokio::runtime::Handle,
) -> std::result::Result<Connected, crate::start_error::StartError> {
    // Only a layer on Vault needs the Vault settings and a login.
    let mut settings: Option<vault::VaultSettings> = None;
    let mut session: Option<vault::Session> = None;
    let mut out = Vec::with_capacity(layers.len() + 1);
    let top = layers.len();
    for (i, name) in std::iter::once(source)
        .chain(layers.iter().map(String::as_str))
        .enumerate()
    {
        if let Some(c) = open_other(name, stores, &rt)? {
            out.push(layered::Layer {
                name: name.to_string(),
                store: c.store,
                root: c.root,
            });
            continue;
        }
        let c = match on_server(name)? {
            Some((addr, source)) => {
                let mut own = match &settings {
                    Some(s) => s.clone(),
                    None => settings.insert(vault()?).clone(),
                };
                own.addrs = vec![addr.clone()];
                match vault::Session::open(&own, &stores.meter, rt.clone()) {
                    Ok(session) => connected(session.resolve(&source)?, &addr, &stores.meter),
                    // A lower layer's server that does not answer (or
                    // refuses the login) now: mount without it, and
                    // connect it when it does.
                    Err(
                        crate::start_error::StartError::Store(why)
                        | crate::start_error::StartError::StoreUnreachable(why),
                    ) if i < top => {
                        tracing::warn!(layer = %name, error = %why, "a layer's server cannot be used: mounting without that layer until it can");
                        let rt = rt.clone();
                        let meter = stores.meter.clone();
                        let connect = move || {
                            let store =
                                vault::Session::open(&own, &meter, rt.clone())?.resolve(&source)?;
                            Ok(connected(store, &addr, &meter))
                        };
                        Connected {
                            store: std::sync::Arc::new(pending::Pending::new(
                                name.to_string(),
                                Box::new(connect),
                            )),
                            root: SecretPath::root(),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                let settings = match &settings {
                    Some(s) => s,
                    None => settings.insert(vault()?),
                };
                let s = match session.take() {
                    Some(s) => s,
                    None => vault::Session::open(settings, &stores.meter, rt.clone())?,
                };
                let store = s.resolve(name)?;
                session = Some(s);
                connected(store, &settings.addr_list(), &stores.meter)
            }
        };
        out.push(layered::Layer {
            name: name.to_string(),
            store: c.store,
            root: c.root,
        });
    }
    let store = layered::Layered::new(out)
        .map_err(|e| crate::start_error::StartError::Options(e.to_string()))?;
    Ok(Connected {
        store: std::sync::Arc::new(store),
        root: SecretPath::root(),
    })
}

/// A layer's SOURCE given with its server (`http(s)://HOST:PORT/SOURCE`):
/// the server's address and the SOURCE; `None` for a plain SOURCE.
fn on_server(
    layer: &str,
) -> std::result::Result<Option<(String, String)>, crate::start_error::StartError> {
    if !(layer.starts_with("http://") || layer.starts_with("https://")) {
        return Ok(None);
    }
    let url = url::Url::parse(layer).map_err(|e| {
        crate::start_error::StartError::Options(format!("layer {layer:?} is not a URL: {e}"))
    })?;
    let addr = url[..url::Position::BeforePath].to_string();
    let source = url.path().trim_matches('/').to_string();
    if source.is_empty() {
        return Err(crate::start_error::StartError::Options(format!(
            "layer {layer:?} names a server but no SOURCE: e.g. {addr}/secret/prod"
        )));
    }
    Ok(Some((addr, source)))
}

/// A resolved store as the core uses it, its requests counted by `meter`.
fn connected(store: vault::VaultStore, addr: &str, meter: &crate::metrics::Meter) -> Connected {
    let resolved = store.source().clone();
    tracing::info!(
        addr = %addr,
        mount = %resolved.mount,
        folder = %resolved.folder,
        kv = if resolved.version == vault::KvVersion::V2 { 2 } else { 1 },
        token_source = %store.token_source(),
        "connected"
    );
    // Soft deletes leave names in listings: hide those deleted through us.
    // Outermost, every request is counted for --metrics.
    let store: std::sync::Arc<dyn SecretStore> = if store.capabilities().soft_delete {
        std::sync::Arc::new(metered::Metered::new(
            deleted::HideDeleted::new(store),
            meter.clone(),
        ))
    } else {
        std::sync::Arc::new(metered::Metered::new(store, meter.clone()))
    };
    Connected {
        store,
        root: resolved.folder,
    }
}

/// A path inside a KV mount, without leading or trailing slashes.
/// The empty path is the mount's root folder. A path may name one version
/// of its secret ([`SecretPath::at_version`]): `app/db@3` for version 3 of
/// `app/db`, which only reads.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretPath {
    path: String,
    version: Option<u64>,
}

impl SecretPath {
    fn plain(path: String) -> Self {
        SecretPath {
            path,
            version: None,
        }
    }

    /// The mount's root folder.
    pub fn root() -> Self {
        SecretPath::plain(String::new())
    }

    /// Parses a `/`-separated path; empty segments are dropped.
    pub fn parse(path: &str) -> Self {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        SecretPath::plain(parts.join("/"))
    }

    /// The path of a child named `name` (one segment, no `/`). Below a
    /// version (`app/db@3`), the child's path is spelled with it
    /// (`app/db@3/K`), as the mount shows it.
    pub fn join(&self, name: &str) -> Self {
        if self.path.is_empty() {
            SecretPath::plain(name.to_string())
        } else {
            SecretPath::plain(format!("{self}/{name}"))
        }
    }

    /// This path, seen from the folder `root`, as a path of the store
    /// (`db` under `team/app` is `team/app/db`; the root is `root`).
    pub fn under(&self, root: &SecretPath) -> SecretPath {
        if self.is_root() {
            root.clone()
        } else if root.is_root() {
            self.clone()
        } else {
            SecretPath::parse(&format!("{root}/{self}"))
        }
    }

    /// The parent folder and the last segment (without the version);
    /// `None` for the root.
    pub fn split_last(&self) -> Option<(SecretPath, &str)> {
        if self.path.is_empty() {
            return None;
        }
        Some(match self.path.rsplit_once('/') {
            Some((parent, name)) => (SecretPath::plain(parent.to_string()), name),
            None => (SecretPath::root(), self.path.as_str()),
        })
    }

    /// Whether this is the mount's root folder.
    pub fn is_root(&self) -> bool {
        self.path.is_empty()
    }

    /// The path as a string, without slashes at either end (and without
    /// the version: see [`SecretPath::version`]).
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// Version `version` of the secret at this path.
    pub fn at_version(&self, version: u64) -> Self {
        SecretPath {
            path: self.path.clone(),
            version: Some(version),
        }
    }

    /// The version this path names, if it names one.
    pub fn version(&self) -> Option<u64> {
        self.version
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        match self.version {
            Some(v) => write!(f, "@{v}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// One entry of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The entry's name (one path segment).
    pub name: String,
    /// `true` for a folder (it holds further entries), `false` for a secret.
    pub folder: bool,
}

/// A folder's listing as the store returned it: its entries, and whether
/// they may be only part of what a read reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The entries, in the store's order (the cache sorts them by name).
    pub entries: Vec<ListEntry>,
    /// `true` when names a read reaches may be left out: on a mount with
    /// `--layer`, a lower layer refused to list the folder (a token that
    /// may read its secrets but not list its folders). Such a listing says
    /// nothing of the names it lacks; with no entries at all, it does not
    /// say there is no folder either.
    pub partial: bool,
}

impl Listing {
    /// A listing that names everything there is.
    pub fn complete(entries: Vec<ListEntry>) -> Self {
        Listing {
            entries,
            partial: false,
        }
    }

    /// A listing that may leave out names a read reaches.
    pub fn partial(entries: Vec<ListEntry>) -> Self {
        Listing {
            entries,
            partial: true,
        }
    }

    /// Whether it shows a folder: it names something, or it is complete (a
    /// partial listing of nothing found no folder, and cannot say there is
    /// none: its answer is `Some` only to carry the mark).
    pub fn shows_folder(&self) -> bool {
        !self.partial || !self.entries.is_empty()
    }
}

impl std::ops::Deref for Listing {
    type Target = [ListEntry];

    fn deref(&self) -> &[ListEntry] {
        &self.entries
    }
}

impl FromIterator<ListEntry> for Listing {
    /// A complete listing of these entries.
    fn from_iter<I: IntoIterator<Item = ListEntry>>(entries: I) -> Self {
        Listing::complete(entries.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Listing {
    type Item = &'a ListEntry;
    type IntoIter = std::slice::Iter<'a, ListEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl IntoIterator for Listing {
    type Item = ListEntry;
    type IntoIter = std::vec::IntoIter<ListEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// The JSON type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A string: its bytes are the string's UTF-8.
    String,
    /// A number, bool, null, array or object: its bytes are compact JSON.
    Json,
}

/// One value of a secret as the store holds it, typed: a string, or any
/// other JSON value kept as its compact JSON text. Zeroized on drop and
/// never shown by `Debug`.
#[derive(Clone)]
pub struct SecretValue {
    /// The bytes a file shows.
    bytes: SecretSlice<u8>,
    kind: ValueKind,
}

impl SecretValue {
    /// A value from the JSON the store sent.
    pub fn from_json(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::String(s) => SecretValue::string(s.as_bytes().to_vec()),
            other => SecretValue {
                // Serialising a `Value` cannot fail.
                bytes: SecretSlice::from(serde_json::to_vec(other).unwrap_or_default()),
                kind: ValueKind::Json,
            },
        }
    }

    /// A value shown as these bytes exactly, not checked for UTF-8 (a
    /// store's plain or binary value); written back only by a store that
    /// takes bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        SecretValue::string(bytes)
    }

    /// A string value from its UTF-8 bytes (checked by [`SecretValue::written`]).
    fn string(bytes: Vec<u8>) -> Self {
        SecretValue {
            bytes: SecretSlice::from(bytes),
            kind: ValueKind::String,
        }
    }

    /// The value bytes written to a file become. A key that held non-string
    /// JSON (`was`) keeps its type when the new bytes parse as such JSON;
    /// anything else is a string, which must be UTF-8.
    pub fn written(bytes: Vec<u8>, was: Option<ValueKind>) -> Result<Self> {
        // Whatever is not kept is wiped.
        let mut bytes = secrecy::zeroize::Zeroizing::new(bytes);
        if was == Some(ValueKind::Json) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                if !v.is_string() {
                    return Ok(SecretValue::from_json(&v));
                }
            }
        }
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(SecretValue::string(std::mem::take(&mut *bytes))),
            Err(_) => Err(crate::error::Error::NotUtf8),
        }
    }

    /// The bytes a reader sees.
    pub fn expose(&self) -> &[u8] {
        self.bytes.expose_secret()
    }

    /// Its JSON type.
    pub fn kind(&self) -> ValueKind {
        self.kind
    }

    /// The length in bytes.
    pub fn len(&self) -> u64 {
        self.expose().len() as u64
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// The value as JSON, for a renderer or a store's wire format. The
    /// copy is outside `secrecy`: drop it as soon as it is used.
    pub fn to_json(&self) -> serde_json::Value {
        match self.kind {
            ValueKind::Json => serde_json::from_slice(self.expose())
                .unwrap_or_else(|_| serde_json::Value::String(self.lossy())),
            ValueKind::String => serde_json::Value::String(self.lossy()),
        }
    }

    fn lossy(&self) -> String {
        String::from_utf8_lossy(self.expose()).into_owned()
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.expose() == other.expose()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue([REDACTED {} bytes])", self.len())
    }
}

impl serde::Serialize for SecretValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.kind {
            ValueKind::String => s.serialize_str(&self.lossy()),
            ValueKind::Json => self.to_json().serialize(s),
        }
    }
}

/// The name of a key of a secret: any string the store allows (not every
/// one can be a file name; see `fs::names::is_showable`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct KeyName(String);

impl KeyName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for KeyName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for KeyName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for KeyName {
    fn from(s: &str) -> Self {
        KeyName(s.to_string())
    }
}

impl From<String> for KeyName {
    fn from(s: String) -> Self {
        KeyName(s)
    }
}

pub use data::SecretData;

/// Which version of a secret a store holds, as the store names it: only
/// compared and handed back, never computed with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision(String);

impl Revision {
    /// A revision named `name` by its store.
    pub fn new(name: impl Into<String>) -> Self {
        Revision(name.into())
    }

    /// The store's name for it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What must hold for a write to happen (check-and-set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there.
    Any,
    /// Only if the secret has no live version (never written, or deleted).
    Absent,
    /// Only if the secret's latest version is still this one.
    At(Revision),
}

/// A secret: its data, plus what the store says of its version.
#[derive(Debug, Default, Clone)]
pub struct Secret {
    /// Key → value.
    pub keys: SecretData,
    /// The store's revision of this version (`None` when it has none).
    pub revision: Option<Revision>,
    /// When this version was written, when the store knows (the files' mtime).
    pub modified: Option<SystemTime>,
    /// The secret's custom metadata (KV v2 `custom_metadata`: a
    /// description, an owner…), when the store keeps it. Not secret.
    pub custom_metadata: BTreeMap<String, String>,
    /// The secret's description (AWS Secrets Manager's Description), when
    /// the store keeps one and it is not empty. Not secret.
    pub description: Option<String>,
    /// Keys the secret is known to have whose value cannot be known now,
    /// each with why (on a mount with `--layer`: a layer that may override
    /// the value cannot be read). They are not in `keys`, so they are never
    /// written back; their files fail with the error.
    pub withheld: BTreeMap<KeyName, Error>,
}

impl Secret {
    /// Whether two reads hold the same keys and values (and withhold the
    /// same keys).
    pub fn same_data(&self, other: &Secret) -> bool {
        self.keys == other.keys && self.withheld.keys().eq(other.withheld.keys())
    }

    /// Builds a secret from the JSON object a store returned.
    pub fn from_json_map(
        data: &serde_json::Map<String, serde_json::Value>,
        revision: Option<Revision>,
        modified: Option<SystemTime>,
    ) -> Self {
        Secret {
            keys: data
                .iter()
                .map(|(k, v)| (KeyName::from(k.as_str()), SecretValue::from_json(v)))
                .collect(),
            revision,
            modified,
            custom_metadata: BTreeMap::new(),
            description: None,
            withheld: BTreeMap::new(),
        }
    }
}

/// A secret's metadata: what [`SecretStore::read_metadata`] reads apart
/// from its value, on a store whose [`Capabilities::metadata_apart`] is
/// set. Not secret.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// As [`Secret::custom_metadata`].
    pub custom_metadata: BTreeMap<String, String>,
    /// As [`Secret::description`].
    pub description: Option<String>,
}

impl Metadata {
    /// The metadata a secret was read with.
    pub fn of(secret: &Secret) -> Self {
        Metadata {
            custom_metadata: secret.custom_metadata.clone(),
            description: secret.description.clone(),
        }
    }
}

/// What a store can do beyond listing, reading and writing, which the core
/// asks instead of assuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Writes can be made conditional ([`Precondition::At`]/[`Precondition::Absent`]).
    pub check_and_set: bool,
    /// Secrets keep numbered versions.
    pub versions: bool,
    /// A secret's versions carry metadata (creation time), and the secret
    /// custom metadata.
    pub metadata: bool,
    /// A secret may carry a description ([`Secret::description`]), which
    /// [`SecretStore::set_description`] changes (AWS Secrets Manager).
    pub descriptions: bool,
    /// A secret's custom metadata and description do not come with its
    /// value: [`SecretStore::read`] leaves them empty, and
    /// [`SecretStore::read_metadata`] asks for them (AWS Secrets Manager:
    /// DescribeSecret, one request more, sent only when they are wanted).
    pub metadata_apart: bool,
    /// A delete is soft: the latest version is marked deleted and can be
    /// brought back, and folder listings keep naming the secret.
    pub soft_delete: bool,
    /// A secret may hold no key (KV v2). KV v1 refuses a write without
    /// data ("missing data fields"): a secret whose last key is removed
    /// is deleted instead.
    pub empty_secrets: bool,
}

/// What the credential in use may do to one secret, as the store says
/// (Vault's `sys/capabilities-self`): asked before a change is started,
/// so that a refusal reaches the program at `open()`, not at `close()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Write the secret when it does not exist yet.
    pub create: bool,
    /// Write a new version of an existing secret.
    pub update: bool,
    /// Delete the secret.
    pub delete: bool,
}

impl Permissions {
    /// Everything.
    pub fn all() -> Self {
        Permissions {
            create: true,
            update: true,
            delete: true,
        }
    }

    /// Nothing but what reads need.
    pub fn read_only() -> Self {
        Permissions::default()
    }
}

/// How the store is, for `secretfs status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// How long the credential in use stays valid, when it expires at all.
    pub credential_ttl: Option<std::time::Duration>,
}

/// A part of a store that cannot be read now (a layer of a mount with
/// `--layer`), for `secretfs status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    /// The part: a layer's SOURCE as given.
    pub part: String,
    /// `forbidden` (the store says 403), `unreachable` (no answer, 5xx) or
    /// `unreadable` (an answer we cannot use).
    pub state: &'static str,
    /// Since when.
    pub since: SystemTime,
    /// Why: the request that found it and the store's answer (never a
    /// value).
    pub why: String,
}

/// A secret store: folders that list, secrets that read and write.
///
/// Implementations are blocking (the FUSE worker threads call them directly)
/// and must bound every call by a deadline.
pub trait SecretStore: Send + Sync + 'static {
    /// What this store can do.
    fn capabilities(&self) -> Capabilities;

    /// Lists the folder at `path`. `Ok(None)` when there is no such folder.
    /// A listing may still name a secret whose latest version was deleted,
    /// and may say it is partial ([`Listing::partial`]): then a read may
    /// reach names it leaves out, and `Some` with no entries is no folder
    /// found rather than none there.
    fn list(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>>;

    /// Reads the secret at `path`. `Ok(None)` when there is no such secret
    /// (or its latest version is deleted).
    fn read(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>>;

    /// Writes the whole secret at `path` if `when` holds (stores without
    /// check-and-set write regardless), else fails with
    /// [`Error::CasConflict`](crate::error::Error::CasConflict).
    /// Returns the new version's revision, when the store has them.
    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>>;

    /// Deletes the secret at `path` (a soft delete where the store has them).
    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()>;

    /// Reads version `version` of the secret at `path` (stores whose
    /// [`Capabilities::versions`] is set). `Ok(None)`: no such version, or
    /// it was deleted or destroyed.
    fn read_version(
        &self,
        _deadline: &Deadline,
        path: &SecretPath,
        version: u64,
    ) -> Result<Option<Secret>> {
        let _ = (path, version);
        Err(Error::NotSupported("this store keeps no versions"))
    }

    /// Sets (`Some`) or removes (`None`) the entry `name` of the custom
    /// metadata of the secret at `path`, keeping the other entries: one
    /// metadata write (stores whose [`Capabilities::metadata`] is set).
    fn set_custom_metadata(
        &self,
        _deadline: &Deadline,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        let _ = (path, name, value);
        Err(Error::NotSupported("this store keeps no metadata"))
    }

    /// Sets (`Some`) or removes (`None`) the description of the secret at
    /// `path`: one metadata write, no new version (stores whose
    /// [`Capabilities::descriptions`] is set).
    fn set_description(
        &self,
        _deadline: &Deadline,
        path: &SecretPath,
        value: Option<&str>,
    ) -> Result<()> {
        let _ = (path, value);
        Err(Error::NotSupported("this store keeps no descriptions"))
    }

    /// The custom metadata and description of the secret at `path`
    /// (`Ok(None)`: no such secret). On a store whose
    /// [`Capabilities::metadata_apart`] is set, this is the request that
    /// asks for them; on the others they come with the value, and this
    /// reads the secret for them.
    fn read_metadata(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Metadata>> {
        Ok(self.read(deadline, path)?.as_ref().map(Metadata::of))
    }

    /// Checks that the store answers and the credential is valid.
    fn health(&self, deadline: &Deadline) -> Result<Health>;

    /// What the credential may do to the secret at `path`; `Ok(None)`
    /// when the store cannot say (an old server, a policy that forbids
    /// asking): changes are then tried and refused at commit. No default:
    /// a wrapper that forgot to pass it on would silently turn the
    /// refusals at `open()` off.
    fn permissions(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Permissions>>;

    /// The server (node of a cluster) requests go to now, for a store
    /// that has one.
    fn node(&self) -> Option<String> {
        None
    }

    /// Where the value of `key` of the secret at `path` comes from, for a
    /// store made of layers (the layer's SOURCE); `None` for any other.
    fn origin(
        &self,
        _deadline: &Deadline,
        _path: &SecretPath,
        _key: &str,
    ) -> Result<Option<String>> {
        Ok(None)
    }

    /// Whether a write may leave the secret other than the data written
    /// (layers: a key removed from the top one uncovers the value below),
    /// so that what a write leaves must be read again.
    fn rereads_after_write(&self) -> bool {
        false
    }

    /// What of the store cannot be read now, for `secretfs status`: on a
    /// mount with `--layer`, each lower layer that is forbidden or does not
    /// answer. Asks nothing of the server.
    fn degraded(&self) -> Vec<Degraded> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_layer_may_name_its_server() {
        assert!(on_server("secret/prod").unwrap().is_none());
        assert_eq!(
            on_server("http://127.0.0.1:8300/secret/prod/").unwrap(),
            Some(("http://127.0.0.1:8300".into(), "secret/prod".into()))
        );
        assert_eq!(
            on_server("https://vault-b.example/kv/team").unwrap(),
            Some(("https://vault-b.example".into(), "kv/team".into()))
        );
        assert!(on_server("https://vault-b.example:8200/").is_err());
        assert!(on_server("http://[::1/secret").is_err());
    }

    #[test]
    fn paths_normalise_slashes() {
        assert_eq!(SecretPath::parse("/a//b/").as_str(), "a/b");
        assert!(SecretPath::parse("/").is_root());
        assert_eq!(SecretPath::root().join("x").join("y").as_str(), "x/y");
        let abc = SecretPath::parse("a/b/c");
        let (parent, name) = abc.split_last().unwrap();
        assert_eq!((parent.as_str(), name), ("a/b", "c"));
        let a = SecretPath::parse("a");
        let (parent, name) = a.split_last().unwrap();
        assert_eq!((parent.as_str(), name), ("", "a"));
        assert!(SecretPath::root().split_last().is_none());
    }

    #[test]
    fn strings_render_as_exact_bytes() {
        let v = SecretValue::from_json(&json!("pa\nss é"));
        assert_eq!(v.expose(), "pa\nss é".as_bytes());
        assert_eq!(v.kind(), ValueKind::String);
    }

    #[test]
    fn other_json_renders_compact() {
        assert_eq!(SecretValue::from_json(&json!(42)).expose(), b"42");
        assert_eq!(SecretValue::from_json(&json!(true)).expose(), b"true");
        assert_eq!(SecretValue::from_json(&json!(null)).expose(), b"null");
        assert_eq!(
            SecretValue::from_json(&json!({"a": [1, "x"]})).expose(),
            br#"{"a":[1,"x"]}"#
        );
        assert_eq!(SecretValue::from_json(&json!(1.5)).kind(), ValueKind::Json);
    }

    #[test]
    fn written_bytes_keep_a_json_type_only_where_there_was_one() {
        let json = Some(ValueKind::Json);
        let written = |b: &[u8], was| SecretValue::written(b.to_vec(), was).unwrap().to_json();
        assert_eq!(written(b"43", json), json!(43));
        assert_eq!(written(b"43", Some(ValueKind::String)), json!("43"));
        assert_eq!(written(b"43", None), json!("43"));
        assert_eq!(written(b"not json", json), json!("not json"));
        assert_eq!(written(br#""quoted""#, json), json!("\"quoted\""));
        assert!(SecretValue::written(vec![0xff, 0xfe], None).is_err());
    }

    #[test]
    fn a_written_number_keeps_its_exact_value() {
        // Kept as text and parsed again on the way to the store: the float
        // must survive (found by the reference model: 12e125 came back one
        // unit in the last place off without correctly rounded parsing).
        let written = SecretValue::written(b"12e125".to_vec(), Some(ValueKind::Json)).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(b"12e125").unwrap();
        assert_eq!(written.to_json(), parsed);
    }

    #[test]
    fn values_round_trip_to_the_json_the_store_held() {
        for v in [
            json!("s"),
            json!(42),
            json!(1.5),
            json!(null),
            json!({"a": [true]}),
        ] {
            let value = SecretValue::from_json(&v);
            assert_eq!(value.to_json(), v);
            assert_eq!(serde_json::to_value(&value).unwrap(), v);
        }
    }

    #[test]
    fn debug_never_shows_a_value() {
        let v = SecretValue::from_json(&json!("hunter2"));
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
