//! The plaintext of a store file: one JSON document of secrets, each with
//! its versions and custom metadata (docs/FILE-STORE.md describes it for
//! people who edit it with the age command-line tool).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::super::SecretPath;
use crate::error::{Error, Result};

/// The format version this secretfs reads and writes.
pub const FORMAT: u64 = 1;

/// How many versions of a secret are kept (KV v2's default): the oldest
/// are dropped when a write makes more.
pub const MAX_VERSIONS: usize = 10;

/// A secret's data: key → any JSON value.
pub type Data = serde_json::Map<String, serde_json::Value>;

/// The whole document. (No `Debug`: it holds values.)
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// The format version ([`FORMAT`]); may be left out by hand.
    #[serde(default = "format")]
    pub secretfs: u64,
    /// The age recipients (`age1...`) every write encrypts to. Left out:
    /// the public keys of the identities the store was opened with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Secret path (`app/db`) → secret. Folders are the paths' prefixes.
    #[serde(default)]
    pub secrets: BTreeMap<String, Entry>,
}

fn format() -> u64 {
    FORMAT
}

/// One secret.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The short form a person may write by hand: the data of version 1.
    /// Never written: read as `versions: [{version: 1, data}]`.
    #[serde(default, skip_serializing)]
    data: Option<Data>,
    /// Its versions, oldest first; the last one is the current version.
    #[serde(default)]
    pub versions: Vec<Version>,
    /// Custom metadata (not secret), as KV v2's `custom_metadata`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_metadata: BTreeMap<String, String>,
}

/// One version of a secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    /// Its number: 1, 2, … increasing.
    pub version: u64,
    /// When it was written (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<String>,
    /// When it was deleted (RFC 3339); a deleted version does not read,
    /// and a deleted current version hides the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_time: Option<String>,
    /// Key → value.
    pub data: Data,
}

impl Version {
    /// When it was written, when the document says.
    pub fn created(&self) -> Option<SystemTime> {
        self.created_time
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
    }

    /// Whether it was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted_time.is_some()
    }
}

/// Now, as the document spells times.
pub fn now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

impl Entry {
    /// The current version, unless it is deleted.
    pub fn live(&self) -> Option<&Version> {
        self.versions.last().filter(|v| !v.is_deleted())
    }

    /// Version `n`, unless it is deleted (or was dropped).
    pub fn version(&self, n: u64) -> Option<&Version> {
        self.versions
            .iter()
            .find(|v| v.version == n && !v.is_deleted())
    }

    /// Adds `data` as the next version, dropping the oldest past
    /// [`MAX_VERSIONS`]; its number.
    pub fn push(&mut self, data: Data) -> u64 {
        let version = self.versions.last().map_or(0, |v| v.version) + 1;
        self.versions.push(Version {
            version,
            created_time: Some(now()),
            deleted_time: None,
            data,
        });
        let extra = self.versions.len().saturating_sub(MAX_VERSIONS);
        self.versions.drain(..extra);
        version
    }
}

impl Document {
    /// An empty document encrypted to `recipients`.
    pub fn empty(recipients: Vec<String>) -> Document {
        Document {
            secretfs: FORMAT,
            recipients,
            secrets: BTreeMap::new(),
        }
    }

    /// Parses and checks a document: a known format, paths that name a
    /// secret (spelled as [`SecretPath`] spells them, each once), version
    /// numbers increasing. The reason of an `Err` names no value.
    pub fn parse(bytes: &[u8]) -> Result<Document> {
        let raw: Document = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json's message may quote a piece of the input (a
            // value): keep only where it is.
            Error::Protocol(format!(
                "the store file's JSON is not a secretfs document (line {}, column {}: {})",
                e.line(),
                e.column(),
                match e.classify() {
                    serde_json::error::Category::Syntax => "syntax error",
                    serde_json::error::Category::Eof => "unexpected end",
                    serde_json::error::Category::Data => "unexpected field or type",
                    serde_json::error::Category::Io => "read error",
                }
            ))
        })?;
        if raw.secretfs != FORMAT {
            return Err(Error::Protocol(format!(
                "the store file has format {}; this secretfs reads format {FORMAT}",
                raw.secretfs
            )));
        }
        let mut secrets = BTreeMap::new();
        for (path, mut entry) in raw.secrets {
            let normal = SecretPath::parse(&path);
            if normal.is_root() {
                return Err(Error::Protocol(format!(
                    "the store file names a secret with an empty path ({path:?})"
                )));
            }
            if let Some(data) = entry.data.take() {
                if !entry.versions.is_empty() {
                    return Err(Error::Protocol(format!(
                        "secret {path:?} has both \"data\" and \"versions\""
                    )));
                }
                entry.versions.push(Version {
                    version: 1,
                    created_time: None,
                    deleted_time: None,
                    data,
                });
            }
            if entry
                .versions
                .windows(2)
                .any(|w| w[0].version >= w[1].version)
                || entry.versions.first().is_some_and(|v| v.version == 0)
            {
                return Err(Error::Protocol(format!(
                    "secret {path:?}: version numbers must start at 1 or more and increase"
                )));
            }
            if secrets.insert(normal.as_str().to_string(), entry).is_some() {
                return Err(Error::Protocol(format!(
                    "the store file names secret {:?} twice",
                    normal.as_str()
                )));
            }
        }
        Ok(Document {
            secretfs: FORMAT,
            recipients: raw.recipients,
            secrets,
        })
    }

    /// The document as the file holds it (pretty JSON, for people who
    /// decrypt it), zeroized when dropped.
    pub fn to_bytes(&self) -> secrecy::zeroize::Zeroizing<Vec<u8>> {
        let mut out = secrecy::zeroize::Zeroizing::new(Vec::with_capacity(4096));
        // Serialising maps of strings and JSON values cannot fail.
        let _ = serde_json::to_writer_pretty(&mut *out, self);
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_short_form_reads_as_version_1() {
        let doc = Document::parse(
            br#"{"secrets": {"/app//db/": {"data": {"password": "s3cret", "port": 5432}}}}"#,
        )
        .unwrap();
        let entry = &doc.secrets["app/db"];
        let live = entry.live().unwrap();
        assert_eq!(live.version, 1);
        assert_eq!(live.data["port"], json!(5432));
        // Written back in the full form.
        let text: serde_json::Value = serde_json::from_slice(&doc.to_bytes()).unwrap();
        assert_eq!(text["secretfs"], json!(1));
        assert_eq!(
            text["secrets"]["app/db"]["versions"][0]["data"]["password"],
            json!("s3cret")
        );
        assert!(text["secrets"]["app/db"].get("data").is_none());
    }

    #[test]
    fn what_it_cannot_keep_is_refused_without_quoting_values() {
        for bad in [
            &br#"{"secrets": {"a": {"data": {"k": "hunter2"}, "versions": [{"version": 1, "data": {}}]}}}"#[..],
            br#"{"secrets": {"a": {"versions": [{"version": 2, "data": {}}, {"version": 1, "data": {}}]}}}"#,
            br#"{"secrets": {"": {"data": {}}}}"#,
            br#"{"secrets": {"a": {"data": {}}, "/a": {"data": {}}}}"#,
            br#"{"secretfs": 2}"#,
            br#"{"secrets": {"a": {"data": {"k": "hunter2"}, "colour": "hunter2"}}}"#,
            br#"{"secrets": {"a": {"data": {"k": "hunter2"#,
        ] {
            // (No Debug for a document: it holds values.)
            let Err(err) = Document::parse(bad) else {
                panic!("{} was taken", String::from_utf8_lossy(bad));
            };
            assert!(matches!(err, Error::Protocol(_)), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn versions_past_the_limit_drop_the_oldest() {
        let mut e = Entry::default();
        for i in 0..(MAX_VERSIONS as u64 + 3) {
            let n = e.push(Data::from_iter([("k".to_string(), json!(i))]));
            assert_eq!(n, i + 1);
        }
        assert_eq!(e.versions.len(), MAX_VERSIONS);
        assert!(e.version(3).is_none());
        assert_eq!(e.version(4).unwrap().data["k"], json!(3));
        assert!(e.live().unwrap().created().is_some());
    }
}
