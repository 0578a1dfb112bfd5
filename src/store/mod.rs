//! The store seen by the core: a trait with a Vault/OpenBao implementation
//! (`vault`) and an in-memory one for tests (`memory`).

pub mod auth;
pub mod memory;
pub mod vault;

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretSlice};

use crate::error::Result;

/// A path inside a KV mount, without leading or trailing slashes.
/// The empty path is the mount's root folder.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretPath(String);

impl SecretPath {
    /// The mount's root folder.
    pub fn root() -> Self {
        SecretPath(String::new())
    }

    /// Parses a `/`-separated path; empty segments are dropped.
    pub fn parse(path: &str) -> Self {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        SecretPath(parts.join("/"))
    }

    /// The path of a child named `name` (one segment, no `/`).
    pub fn join(&self, name: &str) -> Self {
        if self.0.is_empty() {
            SecretPath(name.to_string())
        } else {
            SecretPath(format!("{}/{}", self.0, name))
        }
    }

    /// The parent folder and the last segment; `None` for the root.
    pub fn split_last(&self) -> Option<(SecretPath, &str)> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rsplit_once('/') {
            Some((parent, name)) => (SecretPath(parent.to_string()), name),
            None => (SecretPath::root(), self.0.as_str()),
        })
    }

    /// Whether this is the mount's root folder.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as a string, without slashes at either end.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One entry of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The entry's name, without the trailing `/` of a folder.
    pub name: String,
    /// `true` for `name/` (a folder), `false` for `name` (a secret).
    pub folder: bool,
}

impl ListEntry {
    /// Parses one key of a LIST answer (`name` or `name/`).
    pub fn parse(raw: &str) -> Self {
        match raw.strip_suffix('/') {
            Some(name) => ListEntry {
                name: name.to_string(),
                folder: true,
            },
            None => ListEntry {
                name: raw.to_string(),
                folder: false,
            },
        }
    }
}

/// A folder's listing as the store returned it.
pub type Listing = Vec<ListEntry>;

/// One value of a secret, rendered to the bytes a file shows.
pub struct SecretValue {
    bytes: SecretSlice<u8>,
    /// The value was a JSON number, bool, object, array or null rather than a string.
    json: bool,
}

impl SecretValue {
    /// Renders a JSON value: strings as their UTF-8 bytes, anything else as compact JSON.
    pub fn from_json(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::String(s) => SecretValue {
                bytes: SecretSlice::from(s.as_bytes().to_vec()),
                json: false,
            },
            other => SecretValue {
                // Serialising a `Value` cannot fail.
                bytes: SecretSlice::from(serde_json::to_vec(other).unwrap_or_default()),
                json: true,
            },
        }
    }

    /// A string value.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        SecretValue {
            bytes: SecretSlice::from(bytes),
            json: false,
        }
    }

    /// The bytes a reader sees.
    pub fn expose(&self) -> &[u8] {
        self.bytes.expose_secret()
    }

    /// The length in bytes.
    pub fn len(&self) -> u64 {
        self.expose().len() as u64
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// Whether the store holds this value as non-string JSON.
    pub fn is_json(&self) -> bool {
        self.json
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue([REDACTED {} bytes])", self.len())
    }
}

impl SecretValue {
    /// The value as the store holds it: a JSON string, or the JSON it renders.
    pub fn to_json(&self) -> serde_json::Value {
        if self.json {
            if let Ok(v) = serde_json::from_slice(self.expose()) {
                return v;
            }
        }
        serde_json::Value::String(String::from_utf8_lossy(self.expose()).into_owned())
    }

    /// The JSON to store for bytes written to a file. A key that held
    /// non-string JSON keeps its type when the new bytes parse as JSON;
    /// anything else is stored as a string, which must be UTF-8.
    pub fn json_for_written(bytes: &[u8], was_json: bool) -> Result<serde_json::Value> {
        if was_json {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
                if !v.is_string() {
                    return Ok(v);
                }
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(serde_json::Value::String(s.to_string())),
            Err(_) => Err(crate::error::Error::NotUtf8),
        }
    }
}

/// A secret: its keys and values, plus what the store says of its version.
#[derive(Debug, Default)]
pub struct Secret {
    /// Key → value.
    pub keys: BTreeMap<String, SecretValue>,
    /// KV v2 version number; `None` on KV v1.
    pub version: Option<u64>,
    /// When this version was written (KV v2), used as the files' mtime.
    pub modified: Option<SystemTime>,
}

impl Secret {
    /// Whether two reads hold the same keys and bytes.
    pub fn same_data(&self, other: &Secret) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(other.keys.iter())
                .all(|((ka, va), (kb, vb))| ka == kb && va.expose() == vb.expose())
    }

    /// The data as the store holds it, for a write of the whole secret.
    pub fn to_json_map(&self) -> serde_json::Map<String, serde_json::Value> {
        self.keys
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect()
    }

    /// Builds a secret from the JSON object the store returned.
    pub fn from_json_map(
        data: &serde_json::Map<String, serde_json::Value>,
        version: Option<u64>,
        modified: Option<SystemTime>,
    ) -> Self {
        Secret {
            keys: data
                .iter()
                .map(|(k, v)| (k.clone(), SecretValue::from_json(v)))
                .collect(),
            version,
            modified,
        }
    }
}

/// The KV engine version of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvVersion {
    /// KV v1: no versions, no check-and-set.
    V1,
    /// KV v2: versioned, check-and-set.
    V2,
}

/// A secret store: folders that list, secrets that read.
///
/// Implementations are blocking (the FUSE worker threads call them directly)
/// and must bound every call by a deadline.
pub trait SecretStore: Send + Sync + 'static {
    /// Lists the folder at `path`. `Ok(None)` when there is no such folder.
    fn list(&self, path: &SecretPath) -> Result<Option<Listing>>;

    /// Reads the secret at `path`. `Ok(None)` when there is no such secret
    /// (or, in KV v2, its latest version is deleted or destroyed).
    fn read(&self, path: &SecretPath) -> Result<Option<Secret>>;

    /// Writes the whole secret at `path`. With `cas: Some(v)` (KV v2 only)
    /// the write succeeds only if the current version is `v` (0: none yet),
    /// else fails with [`Error::CasConflict`](crate::error::Error::CasConflict).
    /// Returns the new version (KV v2).
    fn write(
        &self,
        path: &SecretPath,
        data: &serde_json::Map<String, serde_json::Value>,
        cas: Option<u64>,
    ) -> Result<Option<u64>>;

    /// Deletes the secret at `path` (KV v2: a soft delete of the latest version).
    fn delete(&self, path: &SecretPath) -> Result<()>;

    /// The current version of a secret whose latest version may be deleted
    /// (KV v2), which a check-and-set write must name. `None` when unknown.
    fn current_version(&self, path: &SecretPath) -> Result<Option<u64>>;

    /// Whether writes can be made atomic with check-and-set (KV v2).
    fn supports_cas(&self) -> bool;

    /// Checks that the store answers and the token is valid; returns the
    /// token's remaining time to live when it has one.
    fn health(&self) -> Result<Option<std::time::Duration>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn list_entries_tell_folders_from_secrets() {
        assert_eq!(
            ListEntry::parse("app/"),
            ListEntry {
                name: "app".into(),
                folder: true
            }
        );
        assert!(!ListEntry::parse("db").folder);
    }

    #[test]
    fn strings_render_as_exact_bytes() {
        let v = SecretValue::from_json(&json!("pa\nss é"));
        assert_eq!(v.expose(), "pa\nss é".as_bytes());
        assert!(!v.is_json());
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
        assert!(SecretValue::from_json(&json!(1.5)).is_json());
    }

    #[test]
    fn written_bytes_keep_a_json_type_only_where_there_was_one() {
        assert_eq!(
            SecretValue::json_for_written(b"43", true).unwrap(),
            json!(43)
        );
        assert_eq!(
            SecretValue::json_for_written(b"43", false).unwrap(),
            json!("43")
        );
        assert_eq!(
            SecretValue::json_for_written(b"not json", true).unwrap(),
            json!("not json")
        );
        assert_eq!(
            SecretValue::json_for_written(br#""quoted""#, true).unwrap(),
            json!("\"quoted\"")
        );
        assert!(SecretValue::json_for_written(&[0xff, 0xfe], false).is_err());
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
            assert_eq!(SecretValue::from_json(&v).to_json(), v);
        }
    }

    #[test]
    fn debug_never_shows_a_value() {
        let v = SecretValue::from_json(&json!("hunter2"));
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
