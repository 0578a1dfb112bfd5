//! Views: how a secret shows as files. A view says which file names a
//! secret shows, renders each file's bytes, and turns what a program writes
//! to (or removes, or renames among) its files into a change of the
//! secret's data. The core asks the views registered for the mount and
//! knows nothing of any one of them; adding a view is a module here plus
//! one line in [`Views::for_layout`].
//!
//! A view shows its files in the secret's own directory (`keys`: one file
//! per key, `P/K`) or beside it, in the folder holding the secret, one
//! file named after the secret (`P.json`). A mount's [`Layout`] says which
//! views it shows.

mod env;
mod json;
mod keys;
mod whole;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretSlice};

use crate::error::{Error, Result};
use crate::store::{Secret, SecretData};

pub use env::{is_env_name, Env};
pub use json::Json;
pub use keys::Keys;
pub use whole::Whole;

/// How a mount shows its secrets (`--layout`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Layout {
    /// A secret is a directory holding one file per key.
    #[default]
    Keys,
    /// A secret `P` is one file `P.json`: its data as a JSON object.
    Json,
    /// A secret `P` is one file `P.env`: `KEY=value` lines.
    Env,
    /// Each file `DIR/X.tmpl` is a file `X` at the root, rendered on read
    /// (read-only).
    Templates(std::path::PathBuf),
}

impl Layout {
    /// Whether a mount with this layout refuses every change: unless
    /// `writable` (`--writable`; `--ro` only says so, and the command line
    /// refuses the two together). A templates layout is always read-only.
    pub fn read_only(&self, writable: bool) -> bool {
        !writable || matches!(self, Layout::Templates(_))
    }
}

impl std::str::FromStr for Layout {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "keys" => Ok(Layout::Keys),
            "json" => Ok(Layout::Json),
            "env" => Ok(Layout::Env),
            t if t.starts_with("templates:") => match &t["templates:".len()..] {
                "" => Err("templates:DIR needs the folder holding the *.tmpl files".into()),
                dir => Ok(Layout::Templates(dir.into())),
            },
            other => Err(format!(
                "{other:?} is no layout: keys (default), json, env or templates:DIR"
            )),
        }
    }
}

/// The bytes of one file: borrowed from the cached secret where they are
/// stored as they show, else rendered (and zeroized when dropped).
pub enum Rendered<'a> {
    /// The stored bytes themselves.
    Borrowed(&'a [u8]),
    /// Bytes made for this file.
    Owned(SecretSlice<u8>),
}

impl Rendered<'_> {
    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Rendered::Borrowed(b) => b,
            Rendered::Owned(s) => s.expose_secret(),
        }
    }
}

/// Where a view's files show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the secret's own directory: `P/NAME`.
    Inside,
    /// In the folder holding the secret, one file named after it:
    /// [`View::beside_name`].
    Beside,
}

/// How a secret shows as files.
pub trait View: Send + Sync + 'static {
    /// The view's name, for logs.
    fn name(&self) -> &'static str;

    /// Where its files show.
    fn placement(&self) -> Placement {
        Placement::Inside
    }

    /// For a view beside the secret: the name of the file that the secret
    /// named `secret` shows as.
    fn beside_name(&self, _secret: &str) -> Option<String> {
        None
    }

    /// For a view beside the secret: the name of the secret the file
    /// `file` stands for.
    fn secret_named(&self, _file: &str) -> Option<String> {
        None
    }

    /// The names of the files `secret` shows (a view inside the secret).
    fn files(&self, secret: &Secret) -> Vec<String>;

    /// The bytes of the file `name` of `secret`; `None` when it shows no
    /// such file.
    fn render<'a>(&self, secret: &'a Secret, name: &str) -> Option<Rendered<'a>>;

    /// Why the file `name` of `secret` has no bytes to show although it
    /// exists: a value that cannot be known now ([`Secret::withheld`]).
    /// `None` when it is no such file or renders.
    fn withheld(&self, secret: &Secret, name: &str) -> Option<Error> {
        secret.withheld.get(name).cloned()
    }

    /// Whether each file shows exactly the key it is named after (`P/K`
    /// shows key `K` of `P`, nothing else). A view whose files show more
    /// (several keys, the whole secret) says no: `--allow` rules on a key
    /// then cover its files too.
    fn shows_one_key_per_file(&self) -> bool {
        false
    }

    /// Whether a program may create a file `name` (the change reaches the
    /// store when it is written).
    fn can_create(&self, name: &str) -> bool;

    /// Whether bytes written so far to the file `name` can still become a
    /// value it accepts (more bytes may follow): `Err` when they cannot,
    /// told to the writer at `write()` already, not only at `close()`.
    fn check_partial(&self, _name: &str, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }

    /// Applies the bytes written to the file `name` to the secret's data.
    fn write(&self, data: &mut SecretData, name: &str, bytes: Vec<u8>) -> Result<()>;

    /// Removes the file `name` from the secret's data.
    fn remove(&self, data: &mut SecretData, name: &str) -> Result<()>;

    /// Renames the file `from` to `to` within the secret's data; with
    /// `no_replace`, an existing `to` is an error.
    fn rename(&self, data: &mut SecretData, from: &str, to: &str, no_replace: bool) -> Result<()>;
}

/// Which registered view a file is seen through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewId(u8);

/// The views of a mount, in the order they are asked.
#[derive(Clone)]
pub struct Views(Vec<Arc<dyn View>>);

impl Views {
    /// The views of the default layout, `keys`.
    pub fn for_layout() -> Self {
        Self::of_layout(&Layout::Keys)
    }

    /// The views of `layout`.
    pub fn of_layout(layout: &Layout) -> Self {
        match layout {
            // Templates show no secret's files (see `fs::template`).
            Layout::Keys | Layout::Templates(_) => Views(vec![Arc::new(Keys)]),
            Layout::Json => Views(vec![Arc::new(Whole::<Json>::default())]),
            Layout::Env => Views(vec![Arc::new(Whole::<Env>::default())]),
        }
    }

    /// Whether some view shows files inside a secret's directory: only
    /// then is a secret (with no children) a directory.
    pub fn any_inside(&self) -> bool {
        self.0.iter().any(|v| v.placement() == Placement::Inside)
    }

    /// These views, asked in this order.
    pub fn of(views: Vec<Arc<dyn View>>) -> Self {
        Views(views)
    }

    /// Every view with its id.
    pub fn iter(&self) -> impl Iterator<Item = (ViewId, &dyn View)> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, v)| (ViewId(u8::try_from(i).unwrap_or(u8::MAX)), v.as_ref()))
    }

    /// The view `id`.
    pub fn get(&self, id: ViewId) -> &dyn View {
        // Ids come from `iter`: always in range.
        self.0
            .get(usize::from(id.0))
            .or_else(|| self.0.first())
            .map_or(&Keys as &dyn View, |v| v.as_ref())
    }
}
