//! The SOURCEs of `secretfs exec`, read through the same cache code as a
//! mount (`fs::cache::Source`, one per SOURCE): a secret, or a folder
//! whose secrets (those directly in it) all count.
//!
//! Each read is a `Source::refresh`, which always asks the store: the
//! watcher is the only reader and must see the store once per tick, not
//! whatever a cache entry that expires a millisecond later still says.
//! What `Source` brings is the rest of a mount's behaviour towards the
//! store: one "unreachable" state with a background probe (a tick while
//! the store is down fails at once instead of waiting out --timeout per
//! secret), and the same errors.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::fs::cache::{CachePolicy, Change, Refresh, Refreshing, Source, SystemClock};
use crate::fs::OpContext;
use crate::store::{Connected, Secret, SecretPath};

/// What a SOURCE turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One secret: its keys.
    Secret,
    /// A folder: the keys of every secret directly in it.
    Folder,
}

/// One SOURCE, read.
pub struct Watched {
    /// The SOURCE as the user wrote it.
    pub name: String,
    source: Source,
    path: SecretPath,
    shape: Shape,
    /// Its secrets as last read, in the order they apply.
    pub secrets: Vec<Arc<Secret>>,
}

/// Why a SOURCE could not be read: one line, naming it.
#[derive(Debug)]
pub struct Unreadable {
    /// The SOURCE.
    pub source: String,
    /// The reason (no value in it).
    pub reason: String,
    /// The store did not answer (rather than say no): trying later may
    /// help.
    pub transient: bool,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.source, self.reason)
    }
}

/// The cache policy of a SOURCE: answers live one --ttl.
fn policy(ttl: Duration) -> CachePolicy {
    CachePolicy {
        ttl,
        negative_ttl: ttl,
        stale_if_error: Duration::ZERO,
        capacity: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
    }
}

impl Watched {
    /// Reads SOURCE `name` (connected as `connected`) for the first time.
    /// A name that ends in `/`, or names a whole KV mount, is a folder;
    /// any other is the secret at that path, else the folder there. One
    /// that is neither, or that the store refuses, is an error.
    pub fn open(name: &str, connected: Connected, ttl: Duration) -> Result<Watched, Unreadable> {
        let fail = |reason: String| Unreadable {
            source: name.to_string(),
            reason,
            transient: false,
        };
        let failed = |e: Error| Unreadable {
            transient: e.is_transient(),
            ..fail(reason(&e))
        };
        let source = Source::new(
            connected.store,
            policy(ttl),
            Arc::new(SystemClock),
            Refreshing::OnRequest,
            crate::metrics::Meter::off(),
        );
        let path = connected.root;
        let folder_only = name.trim_end().ends_with('/') || path.is_root();
        let mut watched = Watched {
            name: name.to_string(),
            source,
            path,
            shape: Shape::Secret,
            secrets: Vec::new(),
        };
        if !folder_only {
            if let Some(secret) = watched.read_secret(&watched.path.clone()).map_err(failed)? {
                watched.secrets = vec![secret];
                return Ok(watched);
            }
        }
        watched.shape = Shape::Folder;
        match watched.read_folder().map_err(failed)? {
            Some(secrets) => {
                watched.secrets = secrets;
                Ok(watched)
            }
            None if folder_only => Err(fail("no such folder".into())),
            None => Err(fail("no such secret or folder".into())),
        }
    }

    /// Reads the SOURCE again from the store. `Ok(true)` when what it
    /// holds changed; an error, or a SOURCE that is gone, leaves the last
    /// read in place (the command keeps what it was started with).
    pub fn reread(&mut self) -> Result<bool, Unreadable> {
        let fail = |reason: String| Unreadable {
            source: self.name.clone(),
            reason,
            transient: false,
        };
        let now = match self.shape {
            Shape::Secret => self
                .read_secret(&self.path.clone())
                .map(|s| s.map(|s| vec![s])),
            Shape::Folder => self.read_folder(),
        }
        .map_err(|e| Unreadable {
            transient: e.is_transient(),
            ..fail(reason(&e))
        })?;
        let Some(now) = now else {
            return Err(fail(match self.shape {
                Shape::Secret => "the secret is gone".into(),
                Shape::Folder => "the folder is gone".into(),
            }));
        };
        let changed = now.len() != self.secrets.len()
            || now.iter().zip(&self.secrets).any(|(a, b)| !a.same_data(b));
        self.secrets = now;
        Ok(changed)
    }

    fn read_secret(&self, path: &SecretPath) -> crate::error::Result<Option<Arc<Secret>>> {
        match self
            .source
            .refresh(&OpContext::background(), &Refresh::Secret(path.clone()))?
        {
            Change::Secret { now, .. } => Ok(now),
            Change::Listing { .. } => Err(Error::Protocol("a secret read gave a listing".into())),
        }
    }

    /// The secrets directly in the folder, in name order; `None`: no folder.
    fn read_folder(&self) -> crate::error::Result<Option<Vec<Arc<Secret>>>> {
        let listing = match self.source.refresh(
            &OpContext::background(),
            &Refresh::Listing(self.path.clone()),
        )? {
            Change::Listing { now, .. } => now,
            Change::Secret { .. } => return Err(Error::Protocol("a listing gave a secret".into())),
        };
        let Some(listing) = listing.filter(|l| l.shows_folder()) else {
            return Ok(None);
        };
        let mut secrets = Vec::new();
        for entry in listing.iter().filter(|e| !e.folder) {
            // Listed but deleted (KV v2 keeps naming it): nothing to add.
            if let Some(secret) = self.read_secret(&self.path.join(&entry.name))? {
                secrets.push(secret);
            }
        }
        Ok(Some(secrets))
    }
}

/// An error as the one-line reason of a SOURCE that cannot be read.
fn reason(e: &Error) -> String {
    match e {
        Error::PermissionDenied(_) => {
            "permission denied (403): the token's policies do not allow reading it".into()
        }
        other => other.to_string(),
    }
}
