//! Which paths of the mount a node shows, for `--allow` rules: a key
//! file shows its own path; a file of a view that shows more than one key
//! (a whole secret) also shows each key's path, so that a rule on
//! `db/PASSWORD` covers every file holding that value.

use super::inode::{Ino, NodeKind, ROOT_INO};
use super::{FileRef, SecretFs};
use crate::store::SecretPath;

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

    /// The mount paths the file `ino` shows: its own, and the paths of the
    /// keys it shows when that is more than its own name. Empty for a
    /// directory or an inode the kernel should no longer hold.
    pub fn shown_paths(&self, ino: Ino) -> Vec<String> {
        match self.names.get(ino) {
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
            // A rendered template: --allow rules are refused with templates.
            Some(NodeKind::Template { name }) => vec![format!("/{name}")],
            Some(NodeKind::File { secret, view, name }) => {
                let file = FileRef { secret, view, name };
                let mut paths = vec![self.in_mount(&self.file_path(&file))];
                if !self.views.get(view).shows_one_key_per_file() {
                    paths.extend(self.key_paths(&file.secret));
                }
                paths
            }
            Some(NodeKind::Dir { .. }) | None => Vec::new(),
        }
    }

    /// The mount paths of the keys of `secret`, in the version last
    /// fetched (a file is looked up, and its secret fetched, before it is
    /// opened).
    fn key_paths(&self, secret: &SecretPath) -> Vec<String> {
        self.source
            .held(secret)
            .map(|(version, _)| {
                version
                    .keys
                    .keys()
                    .map(|k| self.in_mount(&secret.join(k)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The mount path of `name` in the directory `dir` (`None`: `dir` is
    /// no directory).
    pub fn shown_path_of(&self, dir: Ino, name: &str) -> Option<String> {
        match self.names.get(dir) {
            Some(NodeKind::Dir { path }) => Some(self.in_mount(&path.join(name))),
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
        let fs = SecretFs::new(
            store,
            SecretPath::parse("team/app"),
            config(Duration::from_secs(30)),
            ManualClock::new(),
        );
        let db = fs.lookup(ROOT_INO, "db").unwrap().ino;
        let key = fs.lookup(db, "PASSWORD").unwrap().ino;
        assert_eq!(fs.shown_paths(key), ["db/PASSWORD"]);
        assert_eq!(fs.shown_path_of(db, "NEW").as_deref(), Some("db/NEW"));
        assert!(fs.shown_paths(db).is_empty(), "directories show no value");
        // vim creates its swap file with O_EXCL: a scratch file.
        let exclusive = super::super::Creating {
            exclusive: true,
            caller: None,
        };
        let (attr, fh) = fs.create_with(db, ".PASSWORD.swp", exclusive).unwrap();
        fs.release(fh);
        let mut shown = fs.shown_paths(attr.ino);
        shown.sort();
        assert_eq!(shown, ["db/.PASSWORD.swp", "db/PASSWORD", "db/USER"]);
    }
}
