//! What a node reaches, for `--allow` rules: the keys whose values it
//! shows or changes, named by their secret's path in the mount and the
//! key (`db/PASSWORD`), whatever name the node is reached by. A key file
//! reaches its key — in a version view (`db@2/PASSWORD`) too, since that
//! is the same key's value; a file showing more than one key (a whole
//! secret, an editor's scratch copy) reaches each key of its secret; a
//! secret's directory reaches its keys (its metadata is theirs). Rules
//! decide on these paths only (see `crate::access`), so a view or layout
//! added later is covered as soon as it says what it reaches.

use super::inode::{Ino, NodeKind, ROOT_INO};
use super::{FileRef, SecretFs};
use crate::error::Result;
use crate::fs::OpContext;
use crate::store::SecretPath;

/// How a node reaches keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// Its bytes: what an open reads or writes.
    Value,
    /// Its secret's metadata (extended attributes): a change of the secret.
    Metadata,
}

impl SecretFs {
    /// The path of `path` (a store path under the mount's root) as seen
    /// from the mount's root, without slashes at the ends.
    pub(super) fn in_mount(&self, path: &SecretPath) -> String {
        let root = match self.names.get(ROOT_INO) {
            Some(NodeKind::Dir { path }) => path,
            _ => SecretPath::root(),
        };
        let p = path.as_str();
        match p.strip_prefix(root.as_str()) {
            Some(rest) if root.is_root() => rest.to_string(),
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                rest.trim_start_matches('/').to_string()
            }
            _ => p.to_string(),
        }
    }

    /// The key `key` of the secret at `secret` (any version of it), as a
    /// path in the mount.
    fn key_in_mount(&self, secret: &SecretPath, key: &str) -> String {
        // `as_str` leaves the version out: `db@2` reaches `db`'s keys.
        self.in_mount(&SecretPath::parse(secret.as_str()).join(key))
    }

    /// The keys the node `ino` reaches (see the module's documentation),
    /// as paths in the mount: through its bytes ([`Through::Value`]) or
    /// through its secret's metadata ([`Through::Metadata`], which is
    /// every key's). A secret's directory and metadata may ask the store
    /// for the secret's keys; a file's value never does. Empty for a
    /// folder, the root, a template (rules are refused with templates) or
    /// an inode the kernel should no longer hold.
    pub fn reached(&self, ctx: &OpContext, ino: Ino, through: Through) -> Result<Vec<String>> {
        if through == Through::Metadata {
            if let Some(NodeKind::File { secret, .. }) = self.names.get(ino) {
                return self.keys_of(ctx, &secret);
            }
        }
        Ok(match self.names.get(ino) {
            Some(NodeKind::Scratch { path }) => {
                // An editor's swap file, a `sed -i` temp file, a key moved
                // aside: memory-only copies of what the secret's keys
                // hold, covered as those keys are.
                let mut paths = vec![self.in_mount(&path)];
                if let Some((secret, _)) = path.split_last() {
                    paths.extend(self.key_paths(&secret));
                }
                paths
            }
            Some(NodeKind::Template { .. }) => Vec::new(),
            Some(NodeKind::File { secret, view, name }) => {
                if self.views.get(view).shows_one_key_per_file() {
                    vec![self.key_in_mount(&secret, &name)]
                } else {
                    let file = FileRef { secret, view, name };
                    let mut paths = vec![self.in_mount(&self.file_path(&file))];
                    paths.extend(self.key_paths(&file.secret));
                    paths
                }
            }
            Some(NodeKind::Dir { path }) if ino != ROOT_INO => self.keys_of(ctx, &path)?,
            Some(NodeKind::Dir { .. }) | None => Vec::new(),
        })
    }

    /// The mount paths of the keys of the secret at `secret` (the version
    /// it names, else the latest), asking the store when it is not held.
    fn keys_of(&self, ctx: &OpContext, secret: &SecretPath) -> Result<Vec<String>> {
        match self.secret(ctx, secret) {
            Ok(cached) => Ok(cached
                .value
                .map(|version| {
                    version
                        .keys
                        .keys()
                        .map(|k| self.key_in_mount(secret, k))
                        .collect()
                })
                .unwrap_or_default()),
            // A folder that is no secret reaches no value.
            Err(crate::error::Error::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The mount paths of the keys of `secret` (of the version `secret`
    /// names, else the latest), in the version last fetched (a file is
    /// looked up, and its secret fetched, before it is opened).
    fn key_paths(&self, secret: &SecretPath) -> Vec<String> {
        self.source
            .held(secret)
            .map(|(version, _)| {
                version
                    .keys
                    .keys()
                    .map(|k| self.key_in_mount(secret, k))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The key a name `name` in the directory `dir` reaches (for a
    /// create, a removal or either end of a rename): `None` when `dir` is
    /// no directory.
    pub fn reached_by_name(&self, dir: Ino, name: &str) -> Option<String> {
        match self.names.get(dir) {
            Some(NodeKind::Dir { path }) => Some(self.key_in_mount(&path, name)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::super::clock::ManualClock;
    use super::super::tests::config;
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn paths_are_seen_from_the_mount_root_and_scratch_files_show_their_secret_s_keys() {
        let store = Arc::new(MemoryStore::new());
        store.put("team/app/db", json!({"PASSWORD": "p", "USER": "u"}));
        let fs = SecretFs::builder(
            store,
            SecretPath::parse("team/app"),
            config(Duration::from_secs(30)),
            ManualClock::new(),
        )
        .build()
        .0;
        let db = fs
            .lookup(&OpContext::background(), ROOT_INO, "db")
            .unwrap()
            .ino;
        let key = fs
            .lookup(&OpContext::background(), db, "PASSWORD")
            .unwrap()
            .ino;
        assert_eq!(
            fs.reached(&OpContext::background(), key, Through::Value)
                .unwrap(),
            ["db/PASSWORD"]
        );
        let mut meta = fs
            .reached(&OpContext::background(), key, Through::Metadata)
            .unwrap();
        meta.sort();
        assert_eq!(meta, ["db/PASSWORD", "db/USER"], "metadata is every key's");
        assert_eq!(fs.reached_by_name(db, "NEW").as_deref(), Some("db/NEW"));
        let mut of_dir = fs
            .reached(&OpContext::background(), db, Through::Value)
            .unwrap();
        of_dir.sort();
        assert_eq!(
            of_dir,
            ["db/PASSWORD", "db/USER"],
            "a secret's directory reaches its keys"
        );
        assert!(
            fs.reached(&OpContext::background(), ROOT_INO, Through::Value)
                .unwrap()
                .is_empty(),
            "the root reaches no value"
        );
        // vim creates its swap file with O_EXCL: a scratch file.
        let exclusive = super::super::Creating {
            exclusive: true,
            caller: None,
        };
        let (attr, fh) = fs
            .create_with(&OpContext::background(), db, ".PASSWORD.swp", exclusive)
            .unwrap();
        fs.release(&OpContext::background(), fh);
        let mut shown = fs
            .reached(&OpContext::background(), attr.ino, Through::Value)
            .unwrap();
        shown.sort();
        assert_eq!(shown, ["db/.PASSWORD.swp", "db/PASSWORD", "db/USER"]);
    }
}
