//! What the views that show each secret whole have in common: one file
//! beside the secret (`P.json`, `P.env`), named after it, created to
//! create a secret, never removed or renamed (another name is another
//! secret), refused at `write()` as soon as its bytes cannot be text. Only
//! the format differs: how a secret renders and how written bytes become
//! its data.

use std::marker::PhantomData;

use secrecy::SecretSlice;

use super::{Placement, Rendered, View};
use crate::error::{Error, Result};
use crate::store::{Secret, SecretData};

/// A file format that holds a whole secret.
pub trait Format: Send + Sync + 'static {
    /// The view's name, for logs.
    const NAME: &'static str;
    /// The extension of the file a secret shows as (`.json`).
    const EXT: &'static str;
    /// Why the file is not removed (a secret is not deleted through it).
    const NOT_REMOVED: &'static str;

    /// The file's bytes for `secret`.
    fn render(secret: &Secret) -> SecretSlice<u8>;

    /// Applies the bytes written to the file to the secret's data.
    fn write(data: &mut SecretData, bytes: Vec<u8>) -> Result<()>;
}

/// The view showing each secret as one file of format `F` beside it.
pub struct Whole<F>(PhantomData<F>);

impl<F> Default for Whole<F> {
    fn default() -> Self {
        Whole(PhantomData)
    }
}

/// The secret a file named `file` stands for (`db.json` → `db`).
fn secret_named(file: &str, ext: &str) -> Option<String> {
    file.strip_suffix(ext)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl<F: Format> View for Whole<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }

    fn placement(&self) -> Placement {
        Placement::Beside
    }

    fn beside_name(&self, secret: &str) -> Option<String> {
        Some(format!("{secret}{}", F::EXT))
    }

    fn secret_named(&self, file: &str) -> Option<String> {
        secret_named(file, F::EXT)
    }

    fn files(&self, _secret: &Secret) -> Vec<String> {
        Vec::new()
    }

    /// A secret with a key whose value cannot be known now has no whole
    /// to show: its file fails to read ([`View::withheld`]).
    fn render<'a>(&self, secret: &'a Secret, _name: &str) -> Option<Rendered<'a>> {
        if !secret.withheld.is_empty() {
            return None;
        }
        Some(Rendered::Owned(F::render(secret)))
    }

    fn withheld(&self, secret: &Secret, _name: &str) -> Option<Error> {
        secret.withheld.values().next().cloned()
    }

    fn can_create(&self, name: &str) -> bool {
        self.secret_named(name).is_some()
    }

    fn check_partial(&self, _name: &str, bytes: &[u8]) -> Result<()> {
        match std::str::from_utf8(bytes) {
            Err(e) if e.error_len().is_some() => Err(Error::NotUtf8),
            _ => Ok(()),
        }
    }

    /// The file written replaces the data: one store write.
    fn write(&self, data: &mut SecretData, _name: &str, bytes: Vec<u8>) -> Result<()> {
        F::write(data, bytes)
    }

    fn remove(&self, _data: &mut SecretData, _name: &str) -> Result<()> {
        Err(Error::NotPermitted(F::NOT_REMOVED))
    }

    fn rename(&self, _: &mut SecretData, _: &str, _: &str, _: bool) -> Result<()> {
        // Another name is another secret.
        Err(Error::CrossSecret)
    }
}
