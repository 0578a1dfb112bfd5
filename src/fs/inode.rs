//! The inode table: inode numbers ↔ (parent, name, what the node stands for),
//! with the kernel's lookup counts. Store paths map to inodes here and
//! nowhere else. Numbers are monotonic and never reused.

use std::collections::HashMap;
use std::sync::Arc;

use super::view::ViewId;
use crate::store::{Secret, SecretPath};

/// An inode number: monotonic, never reused within a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl std::fmt::Display for Ino {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The root directory's inode number (FUSE's fixed 1).
pub const ROOT_INO: Ino = Ino(1);

/// A file inode of a secret, as [`Inodes::files_of`] finds it.
pub struct FileNode {
    /// Its inode.
    pub ino: Ino,
    /// The directory holding it.
    pub parent: Ino,
    /// The view it is seen through.
    pub view: ViewId,
    /// Its name.
    pub name: String,
    /// The version of the secret the kernel was last told of.
    pub shown: Option<Arc<Secret>>,
}

/// What a node stands for in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory: a folder, a secret, or both, at this path.
    Dir {
        /// The store path the directory stands for.
        path: SecretPath,
    },
    /// A file of a secret, seen through a view (one key, in the `keys` view).
    File {
        /// The secret the file shows.
        secret: SecretPath,
        /// The view it is seen through.
        view: ViewId,
        /// The file's name, as the view names it.
        name: String,
    },
    /// A file rendered from a template (`--layout templates:DIR`), at the root.
    Template {
        /// The file's name (`DIR/NAME.tmpl`).
        name: String,
    },
    /// An editor's or tool's scratch file, kept in memory only.
    Scratch {
        /// Its path: the directory's path joined with its name.
        path: SecretPath,
    },
}

impl NodeKind {
    /// Whether this node is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self, NodeKind::Dir { .. })
    }
}

struct Node {
    parent: Ino,
    name: String,
    kind: NodeKind,
    lookups: u64,
    /// For a file: the version of its secret whose size and mtime the kernel
    /// was last told. Reads serve these bytes, so that the kernel's idea of
    /// the file's size and the bytes it gets always belong together.
    shown: Option<Arc<Secret>>,
}

/// All inodes the kernel may hold (see [`Namespace`](super::namespace::Namespace),
/// which owns them together with what lives only in memory).
pub struct Inodes {
    nodes: HashMap<Ino, Node>,
    by_name: HashMap<(Ino, String), Ino>,
    /// Store path → the directories standing for it and the keys of the
    /// secret there: what a change found at that path concerns.
    by_path: HashMap<SecretPath, Vec<Ino>>,
    next: Ino,
}

/// The store path a node belongs to, for `by_path`.
fn store_path(kind: &NodeKind) -> Option<&SecretPath> {
    match kind {
        NodeKind::Dir { path } => Some(path),
        NodeKind::File { secret, .. } => Some(secret),
        NodeKind::Scratch { .. } | NodeKind::Template { .. } => None,
    }
}

impl Inodes {
    fn index(&mut self, ino: Ino, kind: &NodeKind) {
        if let Some(path) = store_path(kind) {
            self.by_path.entry(path.clone()).or_default().push(ino);
        }
    }

    fn unindex(&mut self, ino: Ino, kind: &NodeKind) {
        let Some(path) = store_path(kind) else { return };
        if let Some(inos) = self.by_path.get_mut(path) {
            inos.retain(|&i| i != ino);
            if inos.is_empty() {
                self.by_path.remove(path);
            }
        }
    }

    /// The nodes indexed under `path`.
    fn at_path(&self, path: &SecretPath) -> impl Iterator<Item = (Ino, &Node)> {
        self.by_path
            .get(path)
            .into_iter()
            .flatten()
            .filter_map(|ino| self.nodes.get(ino).map(|n| (*ino, n)))
    }
}

impl Inodes {
    /// A table holding only the root, standing for `root`.
    pub fn new(root: SecretPath) -> Self {
        let mut nodes = HashMap::new();
        let mut by_path = HashMap::new();
        by_path.insert(root.clone(), vec![ROOT_INO]);
        nodes.insert(
            ROOT_INO,
            Node {
                parent: ROOT_INO,
                name: String::new(),
                kind: NodeKind::Dir { path: root },
                lookups: 1,
                shown: None,
            },
        );
        Inodes {
            nodes,
            by_name: HashMap::new(),
            by_path,
            next: Ino(ROOT_INO.0 + 1),
        }
    }

    /// What `ino` stands for, if the table knows it.
    pub fn get(&self, ino: Ino) -> Option<NodeKind> {
        self.nodes.get(&ino).map(|n| n.kind.clone())
    }

    /// The parent of `ino` (the root is its own parent).
    pub fn parent(&self, ino: Ino) -> Option<Ino> {
        self.nodes.get(&ino).map(|n| n.parent)
    }

    /// The inode for `name` in `parent`, created if new or if the name now
    /// stands for something else (a key that became a folder gets a new inode).
    /// `lookup` counts one kernel reference (lookup, create, readdirplus).
    pub fn remember(&mut self, parent: Ino, name: &str, kind: NodeKind, lookup: bool) -> Ino {
        let key = (parent, name.to_string());
        if let Some(&ino) = self.by_name.get(&key) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                if node.kind == kind {
                    if lookup {
                        node.lookups += 1;
                    }
                    return ino;
                }
            }
        }
        let ino = self.next;
        self.next = Ino(ino.0 + 1);
        self.index(ino, &kind);
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_string(),
                kind,
                lookups: u64::from(lookup),
                shown: None,
            },
        );
        self.by_name.insert(key, ino);
        ino
    }

    /// The inode currently named `name` in `parent`, if any.
    pub fn lookup_name(&self, parent: Ino, name: &str) -> Option<Ino> {
        self.by_name.get(&(parent, name.to_string())).copied()
    }

    /// Moves the node named `name` in `parent` to `new_name` in `new_parent`,
    /// now standing for `kind` (the kernel keeps the inode across a rename).
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        kind: NodeKind,
    ) {
        let Some(ino) = self.by_name.remove(&(parent, name.to_string())) else {
            return;
        };
        self.by_name.insert((new_parent, new_name.to_string()), ino);
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.parent = new_parent;
        node.name = new_name.to_string();
        node.shown = None;
        let old = std::mem::replace(&mut node.kind, kind.clone());
        self.unindex(ino, &old);
        self.index(ino, &kind);
    }

    /// The name `name` in `parent` no longer leads to its inode (which
    /// stays for the kernel's references): the next one made there is new.
    pub fn unname(&mut self, parent: Ino, name: &str) {
        self.by_name.remove(&(parent, name.to_string()));
    }

    /// Every node standing for `old` now stands for `new` (a file living
    /// in memory became a key under its own name).
    pub fn retarget(&mut self, old: &NodeKind, new: NodeKind) {
        let inos: Vec<Ino> = self
            .nodes
            .iter()
            .filter(|(_, n)| &n.kind == old)
            .map(|(ino, _)| *ino)
            .collect();
        for ino in inos {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.kind = new.clone();
                node.shown = None;
            }
            self.unindex(ino, old);
            self.index(ino, &new);
        }
    }

    /// Records the version of the secret whose attributes of `ino` the
    /// kernel is being told.
    pub fn show(&mut self, ino: Ino, version: Arc<Secret>) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.shown = Some(version);
        }
    }

    /// Every file inode holding a version it was shown: (inode, secret, version).
    pub fn shown_versions(&self) -> Vec<(Ino, SecretPath, Arc<Secret>)> {
        self.nodes
            .iter()
            .filter_map(|(ino, n)| match (&n.kind, &n.shown) {
                (NodeKind::File { secret, .. }, Some(v)) => Some((*ino, secret.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }

    /// How many file inodes hold a version they were shown.
    pub fn shown_count(&self) -> usize {
        self.nodes.values().filter(|n| n.shown.is_some()).count()
    }

    /// Forgets the version shown for `ino`, if it is still `version`.
    pub fn unshow(&mut self, ino: Ino, version: &Arc<Secret>) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            if node.shown.as_ref().is_some_and(|v| Arc::ptr_eq(v, version)) {
                node.shown = None;
            }
        }
    }

    /// The version of the secret last shown for `ino`.
    pub fn shown(&self, ino: Ino) -> Option<Arc<Secret>> {
        self.nodes.get(&ino).and_then(|n| n.shown.clone())
    }

    /// The file inodes of `secret` the kernel may hold, for what to
    /// invalidate when the secret changes.
    pub fn files_of(&self, secret: &SecretPath) -> Vec<FileNode> {
        self.at_path(secret)
            .filter_map(|(ino, n)| match &n.kind {
                NodeKind::File { view, name, .. } => Some(FileNode {
                    ino,
                    parent: n.parent,
                    view: *view,
                    name: name.clone(),
                    shown: n.shown.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The directory inodes standing for `path`.
    pub fn dirs_at(&self, path: &SecretPath) -> Vec<Ino> {
        self.at_path(path)
            .filter(|(_, n)| n.kind.is_dir())
            .map(|(ino, _)| ino)
            .collect()
    }

    /// The kernel dropped `n` references to `ino`; at zero the inode is forgotten.
    pub fn forget(&mut self, ino: Ino, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 {
            return;
        }
        if let Some(node) = self.nodes.remove(&ino) {
            self.unindex(ino, &node.kind);
            let key = (node.parent, node.name);
            if self.by_name.get(&key) == Some(&ino) {
                self.by_name.remove(&key);
            }
        }
    }

    /// Number of inodes held (the root included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether only the root is held.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_view() -> ViewId {
        crate::fs::view::Views::for_layout()
            .iter()
            .next()
            .map(|(id, _)| id)
            .unwrap()
    }

    fn dir(p: &str) -> NodeKind {
        NodeKind::Dir {
            path: SecretPath::parse(p),
        }
    }

    #[test]
    fn the_same_name_gets_the_same_inode() {
        let mut t = Inodes::new(SecretPath::root());
        let a = t.remember(ROOT_INO, "app", dir("app"), true);
        let b = t.remember(ROOT_INO, "app", dir("app"), true);
        assert_eq!(a, b);
        assert_eq!(t.get(a), Some(dir("app")));
        assert_eq!(t.parent(a), Some(ROOT_INO));
    }

    #[test]
    fn an_inode_is_forgotten_when_its_lookups_reach_zero_and_never_reused() {
        let mut t = Inodes::new(SecretPath::root());
        let a = t.remember(ROOT_INO, "app", dir("app"), true);
        t.remember(ROOT_INO, "app", dir("app"), true);
        t.forget(a, 1);
        assert!(t.get(a).is_some());
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        let again = t.remember(ROOT_INO, "app", dir("app"), true);
        assert!(again > a);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_name_that_changes_kind_gets_a_new_inode() {
        let mut t = Inodes::new(SecretPath::root());
        let key = NodeKind::File {
            secret: SecretPath::parse("app"),
            view: keys_view(),
            name: "x".into(),
        };
        let a = t.remember(ROOT_INO, "x", key.clone(), true);
        let b = t.remember(ROOT_INO, "x", dir("x"), true);
        assert_ne!(a, b);
        // The old inode lives on until the kernel forgets it, without stealing the name.
        assert_eq!(t.get(a), Some(key));
        t.forget(a, 1);
        assert_eq!(t.remember(ROOT_INO, "x", dir("x"), false), b);
    }

    #[test]
    fn keys_and_dirs_are_found_by_store_path_through_renames_and_forgets() {
        let mut t = Inodes::new(SecretPath::root());
        let key = |s: &str, k: &str| NodeKind::File {
            secret: SecretPath::parse(s),
            view: keys_view(),
            name: k.into(),
        };
        let app = t.remember(ROOT_INO, "app", dir("app"), true);
        let a = t.remember(app, "A", key("app", "A"), true);
        let b = t.remember(app, "B", key("app", "B"), true);
        let keys = |t: &Inodes, s: &str| {
            let mut v: Vec<Ino> = t
                .files_of(&SecretPath::parse(s))
                .into_iter()
                .map(|k| k.ino)
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(keys(&t, "app"), [a, b]);
        assert_eq!(t.dirs_at(&SecretPath::parse("app")), [app]);
        assert_eq!(t.dirs_at(&SecretPath::root()), [ROOT_INO]);
        // B moves to another secret.
        let other = t.remember(ROOT_INO, "other", dir("other"), true);
        t.rename(app, "B", other, "B", key("other", "B"));
        assert_eq!(keys(&t, "app"), [a]);
        assert_eq!(keys(&t, "other"), [b]);
        t.forget(a, 1);
        assert_eq!(keys(&t, "app"), Vec::<Ino>::new());
        t.forget(app, 1);
        assert!(t.dirs_at(&SecretPath::parse("app")).is_empty());
    }

    #[test]
    fn the_root_is_never_forgotten() {
        let mut t = Inodes::new(SecretPath::root());
        t.forget(ROOT_INO, 100);
        assert!(t.get(ROOT_INO).is_some());
    }
}
