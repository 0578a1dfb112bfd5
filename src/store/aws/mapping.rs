//! How AWS Secrets Manager secrets become folders, secrets and keys, and
//! back: pure functions, no SDK (unit-tested here, built with or without
//! the `aws-sm` feature).
//!
//! - A secret's name splits on `/` into folders: `prod/app/db` is the
//!   secret `db` in the folder `prod/app`. A name that does not survive
//!   that split (`/x`, `a//b`, `a/`) cannot be named by a path and is
//!   left out of listings.
//! - A SecretString that is a JSON object (what the console's key/value
//!   editor stores) shows its keys; any other SecretString (plain text,
//!   or JSON that is not an object) is one key named by `--plain-key`;
//!   a SecretBinary is that one key too, holding the bytes.
//! - A write keeps the form it found: one `--plain-key` key written back
//!   to a plain or binary secret stays plain or binary; anything else
//!   (a key added, a new secret) is written as a JSON object.
//! - A secret's tags are its custom metadata (`user.secretfs.meta.KEY`),
//!   within what AWS takes of a tag ([`check_tag`], [`MAX_TAGS`]); its
//!   Description is its description ([`check_description`]).

use std::collections::BTreeSet;

use secrecy::zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::store::{KeyName, ListEntry, Listing, SecretData, SecretPath, SecretValue};

/// How a secret's value is stored, so that a write keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A SecretString holding a JSON object: one key per member.
    Object,
    /// A SecretString that is not a JSON object: one key, the plain key.
    Plain,
    /// A SecretBinary: one key, the plain key, holding the bytes.
    Binary,
}

/// The keys of a secret's current value, and its form.
pub fn keys_of(string: Option<&str>, binary: Option<&[u8]>, plain_key: &str) -> (SecretData, Form) {
    if let Some(s) = string {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(s) {
            let keys = map
                .iter()
                .map(|(k, v)| (KeyName::from(k.as_str()), SecretValue::from_json(v)))
                .collect();
            return (keys, Form::Object);
        }
        let mut keys = SecretData::new();
        keys.insert(
            KeyName::from(plain_key),
            SecretValue::from_bytes(s.as_bytes().to_vec()),
        );
        return (keys, Form::Plain);
    }
    match binary {
        Some(b) => {
            let mut keys = SecretData::new();
            keys.insert(
                KeyName::from(plain_key),
                SecretValue::from_bytes(b.to_vec()),
            );
            (keys, Form::Binary)
        }
        // Neither (a secret created without a value): no key.
        None => (SecretData::new(), Form::Object),
    }
}

/// What a write sends: a SecretString or a SecretBinary. Wiped on drop
/// (the SDK's request keeps a copy of its own, outside our reach).
pub enum Payload {
    /// SecretString.
    String(Zeroizing<String>),
    /// SecretBinary.
    Binary(Zeroizing<Vec<u8>>),
}

/// The value to write for `data`, on a secret that had the form `was`
/// (`Form::Object` for a new one).
pub fn payload_of(data: &SecretData, was: Form, plain_key: &str) -> Result<Payload> {
    let only_plain = data.len() == 1 && data.contains_key(plain_key);
    if only_plain && was != Form::Object {
        let value = data.get(plain_key).ok_or(Error::NotFound)?;
        return Ok(match was {
            Form::Binary => Payload::Binary(Zeroizing::new(value.expose().to_vec())),
            _ => Payload::String(Zeroizing::new(
                std::str::from_utf8(value.expose())
                    .map_err(|_| Error::NotUtf8)?
                    .to_string(),
            )),
        });
    }
    let mut map = serde_json::Map::with_capacity(data.len());
    for (k, v) in data.iter() {
        // Bytes of a binary secret cannot become a JSON string.
        if std::str::from_utf8(v.expose()).is_err() {
            return Err(Error::NotUtf8);
        }
        map.insert(k.to_string(), v.to_json());
    }
    let text = serde_json::to_string(&serde_json::Value::Object(map))
        .map_err(|e| Error::Protocol(format!("cannot encode the secret as JSON: {e}")))?;
    Ok(Payload::String(Zeroizing::new(text)))
}

/// The secret name a path stands for.
pub fn name_of(path: &SecretPath) -> &str {
    path.as_str()
}

/// The prefix secret names in `folder` begin with (`""` for the root).
pub fn prefix_of(folder: &SecretPath) -> String {
    if folder.is_root() {
        String::new()
    } else {
        format!("{}/", folder.as_str())
    }
}

/// The entries of `folder`, from the names of the secrets under it
/// (more may be given: those outside it are skipped); `None` when none is
/// in it. A name that a path cannot name (`a//b`, `/a`, `a/`) is skipped.
pub fn listing<'a>(
    folder: &SecretPath,
    names: impl IntoIterator<Item = &'a str>,
) -> Option<Listing> {
    let prefix = prefix_of(folder);
    let mut entries = BTreeSet::new();
    for name in names {
        // AWS's name filter is a prefix match that ignores case.
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if rest.is_empty() || SecretPath::parse(name).as_str() != name {
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
}

/// The most tags a secret may have (those AWS sets, `aws:…`, not counted).
pub const MAX_TAGS: usize = 50;

/// The longest tag key AWS takes, in characters.
pub const MAX_TAG_KEY: usize = 128;

/// The longest tag value AWS takes, in characters.
pub const MAX_TAG_VALUE: usize = 256;

/// The prefix of the tags AWS keeps for itself: not ours to set or remove.
pub const AWS_TAG_PREFIX: &str = "aws:";

/// Whether `key` is one of AWS's own tags (`aws:…`, in any case).
fn is_aws_tag(key: &str) -> bool {
    key.get(..AWS_TAG_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(AWS_TAG_PREFIX))
}

/// Whether AWS would take the tag `key` set to `value` (removed: `None`):
/// `Error::Invalid` (`EINVAL`, as Vault's refusal of custom metadata it
/// does not take) for a length AWS refuses; `Error::NotPermitted`
/// (`EPERM`, as the attributes that are the store's to set) for AWS's own
/// `aws:` tags. Characters are AWS's to judge: its API sets no pattern
/// (it recommends letters, digits, spaces and `_ . : / = + - @` for tags
/// that other services read), and its refusal is `EINVAL` too. Never says
/// the value.
pub fn check_tag(key: &str, value: Option<&str>) -> Result<()> {
    if is_aws_tag(key) {
        return Err(Error::NotPermitted(
            "tags beginning with aws: are AWS's to set",
        ));
    }
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_TAG_KEY {
        return Err(Error::Invalid(format!(
            "a tag key of {chars} characters: AWS takes 1 to {MAX_TAG_KEY}"
        )));
    }
    let Some(value) = value else {
        return Ok(());
    };
    let chars = value.chars().count();
    if chars > MAX_TAG_VALUE {
        return Err(Error::Invalid(format!(
            "tag {key:?}: a value of {chars} characters: AWS takes at most {MAX_TAG_VALUE}"
        )));
    }
    Ok(())
}

/// The longest description AWS takes, in characters.
pub const MAX_DESCRIPTION: usize = 2048;

/// Whether AWS would take `description`: `Error::Invalid` (`EINVAL`)
/// past [`MAX_DESCRIPTION`] characters. Never says it.
pub fn check_description(description: &str) -> Result<()> {
    let chars = description.chars().count();
    if chars > MAX_DESCRIPTION {
        return Err(Error::Invalid(format!(
            "a description of {chars} characters: AWS takes at most {MAX_DESCRIPTION}"
        )));
    }
    Ok(())
}

/// Whether one more tag, `key`, may be added to a secret whose tags have
/// these keys (AWS's own `aws:` tags not counted): `Error::Invalid` when
/// it would be one more than [`MAX_TAGS`].
pub fn check_tag_count<'a>(key: &str, keys: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut count = 0;
    for k in keys {
        if k == key {
            // A change of a tag there is: no more tags.
            return Ok(());
        }
        if !is_aws_tag(k) {
            count += 1;
        }
    }
    if count >= MAX_TAGS {
        return Err(Error::Invalid(format!(
            "the secret has {count} tags: AWS takes at most {MAX_TAGS}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(listing: Option<Listing>) -> Vec<(String, bool)> {
        listing
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.folder))
            .collect()
    }

    fn payload_text(p: Payload) -> String {
        match p {
            Payload::String(s) => s.to_string(),
            Payload::Binary(_) => panic!("binary"),
        }
    }

    #[test]
    fn a_json_object_shows_its_keys() {
        let (keys, form) = keys_of(Some(r#"{"user":"app","port":5432}"#), None, "value");
        assert_eq!(form, Form::Object);
        assert_eq!(keys.get("user").unwrap().expose(), b"app");
        assert_eq!(keys.get("port").unwrap().expose(), b"5432");
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn a_plain_string_is_one_key_named_by_plain_key() {
        for s in ["hunter2", "", "[1,2]", "\"quoted\"", "42", "{not json"] {
            let (keys, form) = keys_of(Some(s), None, "value");
            assert_eq!(form, Form::Plain, "{s}");
            assert_eq!(keys.len(), 1);
            assert_eq!(keys.get("value").unwrap().expose(), s.as_bytes());
        }
        let (keys, _) = keys_of(Some("x"), None, "secret");
        assert!(keys.contains_key("secret"));
    }

    #[test]
    fn a_binary_secret_is_its_bytes_under_plain_key() {
        let (keys, form) = keys_of(None, Some(&[0, 0xff, 1]), "value");
        assert_eq!(form, Form::Binary);
        assert_eq!(keys.get("value").unwrap().expose(), &[0, 0xff, 1]);
        let (keys, form) = keys_of(None, None, "value");
        assert_eq!((keys.len(), form), (0, Form::Object));
    }

    #[test]
    fn a_write_keeps_the_form_it_found() {
        let (keys, form) = keys_of(Some("old"), None, "value");
        let mut data = keys.clone();
        data.insert("value".into(), SecretValue::from_bytes(b"new".to_vec()));
        assert_eq!(
            payload_text(payload_of(&data, form, "value").unwrap()),
            "new"
        );
        // A key added: the secret becomes a JSON object.
        data.insert("user".into(), SecretValue::from_bytes(b"u".to_vec()));
        assert_eq!(
            payload_text(payload_of(&data, form, "value").unwrap()),
            r#"{"user":"u","value":"new"}"#
        );
        // A binary secret stays binary, bytes and all.
        let (keys, form) = keys_of(None, Some(&[0xff, 0]), "value");
        match payload_of(&keys, form, "value").unwrap() {
            Payload::Binary(b) => assert_eq!(&b[..], &[0xff, 0]),
            Payload::String(_) => panic!("string"),
        }
        // Its bytes cannot go into a JSON object.
        let mut more = keys.clone();
        more.insert("k".into(), SecretValue::from_bytes(b"v".to_vec()));
        assert!(matches!(
            payload_of(&more, form, "value"),
            Err(Error::NotUtf8)
        ));
    }

    #[test]
    fn an_object_keeps_json_types_and_a_lone_value_key_stays_an_object() {
        let (keys, form) = keys_of(Some(r#"{"value":"x","n":1}"#), None, "value");
        let mut data = keys;
        data.remove("n");
        assert_eq!(
            payload_text(payload_of(&data, form, "value").unwrap()),
            r#"{"value":"x"}"#
        );
        let (keys, form) = keys_of(Some(r#"{"n":1,"b":true}"#), None, "value");
        assert_eq!(
            payload_text(payload_of(&keys, form, "value").unwrap()),
            r#"{"b":true,"n":1}"#
        );
        // The last key removed: an empty object.
        assert_eq!(
            payload_text(payload_of(&SecretData::new(), Form::Plain, "value").unwrap()),
            "{}"
        );
    }

    #[test]
    fn names_split_on_slashes_into_folders() {
        let all = [
            "prod/db",
            "prod/app/api",
            "prod/app/web",
            "PROD/other",
            "production",
            "dev/db",
            "prod//bad",
            "/prod/x",
            "prod/",
        ];
        assert_eq!(
            names(listing(&SecretPath::parse("prod"), all)),
            vec![("app".into(), true), ("db".into(), false)]
        );
        assert_eq!(
            names(listing(&SecretPath::parse("prod/app"), all)),
            vec![("api".into(), false), ("web".into(), false)]
        );
        assert_eq!(
            names(listing(&SecretPath::root(), all)),
            vec![
                ("PROD".into(), true),
                ("dev".into(), true),
                ("prod".into(), true),
                ("production".into(), false)
            ]
        );
        assert!(listing(&SecretPath::parse("nope"), all).is_none());
        assert_eq!(prefix_of(&SecretPath::parse("a/b")), "a/b/");
        assert_eq!(name_of(&SecretPath::parse("a/b")), "a/b");
    }

    #[test]
    fn tag_lengths_aws_would_refuse_are_refused_before_asking() {
        assert!(check_tag("owner", Some("team-a")).is_ok());
        assert!(check_tag("cost center/id:x=y+z-@_.", Some("a b")).is_ok());
        assert!(check_tag("équipe", Some("café")).is_ok());
        // Characters are AWS's to judge.
        assert!(check_tag("a#b", Some("semi;colon")).is_ok());
        assert!(check_tag("owner", Some("")).is_ok());
        assert!(check_tag("owner", None).is_ok());
        let k128 = "k".repeat(MAX_TAG_KEY);
        assert!(check_tag(&k128, Some("v")).is_ok());
        let v256 = "é".repeat(MAX_TAG_VALUE);
        assert!(check_tag("k", Some(&v256)).is_ok());
        for (key, value) in [
            (format!("{k128}k"), Some("v".to_string())),
            ("k".to_string(), Some(format!("{v256}x"))),
            (String::new(), Some("v".to_string())),
            (String::new(), None),
        ] {
            let refused = check_tag(&key, value.as_deref());
            assert!(matches!(refused, Err(Error::Invalid(_))), "{key} {value:?}");
        }
        for key in ["aws:x", "AWS:cloudformation:stack-name"] {
            assert!(matches!(
                check_tag(key, Some("v")),
                Err(Error::NotPermitted(_))
            ));
            assert!(matches!(check_tag(key, None), Err(Error::NotPermitted(_))));
        }
    }

    #[test]
    fn a_description_takes_2048_characters() {
        assert!(check_description("").is_ok());
        assert!(check_description(&"é".repeat(MAX_DESCRIPTION)).is_ok());
        assert!(matches!(
            check_description(&"x".repeat(MAX_DESCRIPTION + 1)),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn a_secret_takes_50_tags_besides_those_of_aws() {
        let keys: Vec<String> = (0..MAX_TAGS).map(|i| format!("t{i}")).collect();
        let keys = || keys.iter().map(String::as_str);
        assert!(matches!(
            check_tag_count("new", keys()),
            Err(Error::Invalid(_))
        ));
        // Changing one there is adds none.
        assert!(check_tag_count("t7", keys()).is_ok());
        // AWS's own do not count.
        let mut fewer: Vec<&str> = keys().skip(1).collect();
        fewer.push("aws:secretsmanager:owningService");
        assert!(check_tag_count("new", fewer.iter().copied()).is_ok());
    }
}
