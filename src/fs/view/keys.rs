//! The `keys` view: a secret is a directory holding one file per key,
//! whose bytes are the value (a string's UTF-8, other JSON as compact text).

use super::{Rendered, View};
use crate::error::{Error, Result};
use crate::fs::names;
use crate::store::{KeyName, Secret, SecretData, SecretValue};

/// One file per key.
pub struct Keys;

impl View for Keys {
    fn shows_one_key_per_file(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "keys"
    }

    /// Keys whose value cannot be known now show too: their files exist
    /// and fail to read.
    fn files(&self, secret: &Secret) -> Vec<String> {
        secret
            .keys
            .keys()
            .chain(secret.withheld.keys())
            .filter(|k| {
                let showable = names::is_showable(k);
                if !showable {
                    tracing::debug!("key name cannot be a file name: hidden");
                }
                showable
            })
            .map(|k| k.to_string())
            .collect()
    }

    fn render<'a>(&self, secret: &'a Secret, name: &str) -> Option<Rendered<'a>> {
        secret
            .keys
            .get(name)
            .map(|v| Rendered::Borrowed(v.expose()))
    }

    fn can_create(&self, name: &str) -> bool {
        names::is_showable(name)
    }

    /// Values are UTF-8 text: bytes that are not (beyond a character cut
    /// at the end, which the next write may complete) never will be.
    fn check_partial(&self, _name: &str, bytes: &[u8]) -> Result<()> {
        match std::str::from_utf8(bytes) {
            Err(e) if e.error_len().is_some() => Err(Error::NotUtf8),
            _ => Ok(()),
        }
    }

    /// A key that held non-string JSON keeps its type when the new bytes
    /// parse as JSON; anything else is stored as a string.
    fn write(&self, data: &mut SecretData, name: &str, bytes: Vec<u8>) -> Result<()> {
        let was = data.get(name).map(SecretValue::kind);
        data.insert(KeyName::from(name), SecretValue::written(bytes, was)?);
        Ok(())
    }

    fn remove(&self, data: &mut SecretData, name: &str) -> Result<()> {
        data.remove(name).map(drop).ok_or(Error::NotFound)
    }

    fn rename(&self, data: &mut SecretData, from: &str, to: &str, no_replace: bool) -> Result<()> {
        let value = data.remove(from).ok_or(Error::NotFound)?;
        if no_replace && data.contains_key(to) {
            return Err(Error::Exists);
        }
        data.insert(KeyName::from(to), value);
        Ok(())
    }
}
