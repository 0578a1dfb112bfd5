//! The inode table: inode numbers ↔ (parent, name, what the node stands for),
//! with the kernel's lookup counts. Store paths map to inodes here and
//! nowhere else. Numbers are monotonic and never reused.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

use super::map::FastMap;
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

/// How a node stores what it stands for: paths are not kept but derived
/// from the directory above it, which holds its path the same way, up to
/// a node that keeps its path whole (the root, and the rare node whose
/// path is not its directory's path joined with its name).
#[derive(Debug, PartialEq, Eq)]
enum Packed {
    /// A directory at its parent's path joined with its name.
    Dir,
    /// A file named as the node is, of the secret at its parent's path
    /// (`leaf: None`) or beside it, at the parent's path joined with `leaf`
    /// (a `Box<String>`: a thin pointer keeps this enum at 16 bytes).
    #[allow(clippy::box_collection)] // a thin pointer, on purpose
    File {
        view: ViewId,
        leaf: Option<Box<String>>,
    },
    /// A template's file named as the node is.
    Template,
    /// A scratch file at its parent's path joined with its name.
    Scratch,
    /// Anything else, kept whole.
    Whole(Box<NodeKind>),
}

/// One node: 64 bytes, plus its name. A directory holds its path only
/// through its ancestors, so a node outlives the kernel's references while
/// nodes below it remain (`children`), as a ghost the kernel no longer
/// knows: no name leads to it and no change concerns it.
struct Node {
    parent: Ino,
    name: Box<str>,
    kind: Packed,
    lookups: u64,
    /// Nodes whose parent this is.
    children: u32,
    /// Forgotten by the kernel; kept for the nodes below it.
    ghost: bool,
    /// Looked up again since the kernel was last asked to drop nodes.
    referenced: bool,
    /// For a file: the version of its secret whose size and mtime the kernel
    /// was last told. Reads serve these bytes, so that the kernel's idea of
    /// the file's size and the bytes it gets always belong together.
    shown: Option<Arc<Secret>>,
    /// A file whose value changed outside this mount: its name leads to a
    /// new inode, and this one keeps serving `shown` (its attributes and
    /// bytes never change again) until the kernel forgets it.
    retired: bool,
}

/// All inodes the kernel may hold (see [`Namespace`](super::namespace::Namespace),
/// which owns them together with what lives only in memory).
///
/// Laid out for large trees: a node keeps its name once, the name index
/// refers to the node instead of a copy of the name, and the index by store
/// path holds a hash of the path per node (checked against the node).
pub struct Inodes {
    nodes: FastMap<Ino, Node>,
    /// Files a writer of this mount is committing a change of (how many
    /// commits): the version written reaches the cache before the writer
    /// shows it (`show_written`), and seen in between it is the file's own
    /// change, never one made outside (see [`Inodes::begin_own_write`]).
    own_writes: FastMap<Ino, u32>,
    /// (parent, name) → inode, hashed by `hasher`, compared against the node.
    by_name: HashTable<Ino>,
    /// (hash of a store path, inode): the directories standing for a path,
    /// the files of the secret there, and its scratch files — what a change
    /// found at that path concerns.
    by_path: BTreeSet<(u64, Ino)>,
    hasher: RandomState,
    next: Ino,
    /// Most nodes to hold before the kernel is asked to drop some.
    bound: Option<usize>,
    /// Nodes made since the kernel was last asked to drop some.
    made: usize,
}

/// The store path a node belongs to, for `by_path`.
fn store_path(kind: &NodeKind) -> Option<&SecretPath> {
    match kind {
        NodeKind::Dir { path } | NodeKind::Scratch { path } => Some(path),
        NodeKind::File { secret, .. } => Some(secret),
        NodeKind::Template { .. } => None,
    }
}

impl Inodes {
    fn name_hash(&self, parent: Ino, name: &str) -> u64 {
        self.hasher.hash_one((parent.0, name))
    }

    fn path_hash(&self, path: &SecretPath) -> u64 {
        self.hasher.hash_one(path)
    }

    /// The inode named `name` in `parent` in the name index.
    fn named(&self, parent: Ino, name: &str) -> Option<Ino> {
        let nodes = &self.nodes;
        self.by_name
            .find(self.name_hash(parent, name), |ino| {
                nodes
                    .get(ino)
                    .is_some_and(|n| n.parent == parent && &*n.name == name)
            })
            .copied()
    }

    /// Takes `ino` (named `name` in `parent`) out of the name index, if it
    /// is what that name leads to.
    fn unname_ino(&mut self, ino: Ino, parent: Ino, name: &str) {
        let hash = self.name_hash(parent, name);
        if let Ok(entry) = self.by_name.find_entry(hash, |&i| i == ino) {
            entry.remove();
        }
    }

    /// Makes `name` in `parent` lead to `ino` (whose node has that name),
    /// in place of whatever it led to.
    fn name_ino(&mut self, ino: Ino, parent: Ino, name: &str) {
        if let Some(old) = self.named(parent, name) {
            self.unname_ino(old, parent, name);
        }
        let hash = self.name_hash(parent, name);
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.by_name.insert_unique(hash, ino, |i| {
            nodes
                .get(i)
                .map(|n| hasher.hash_one((n.parent.0, &*n.name)))
                .unwrap_or(0)
        });
    }

    /// The store path the directory `ino` stands for.
    fn dir_path(&self, ino: Ino) -> Option<SecretPath> {
        let mut names = Vec::new();
        let mut at = ino;
        let base = loop {
            let node = self.nodes.get(&at)?;
            match &node.kind {
                Packed::Dir => names.push(&*node.name),
                Packed::Whole(kind) => match &**kind {
                    NodeKind::Dir { path } => break path.clone(),
                    _ => return None,
                },
                _ => return None,
            }
            if names.len() > self.nodes.len() {
                return None;
            }
            at = node.parent;
        };
        Some(names.iter().rev().fold(base, |path, name| path.join(name)))
    }

    /// What `node` stands for.
    fn unpack(&self, node: &Node) -> Option<NodeKind> {
        let name = || node.name.to_string();
        Some(match &node.kind {
            Packed::Dir => NodeKind::Dir {
                path: self.dir_path(node.parent)?.join(&node.name),
            },
            Packed::Scratch => NodeKind::Scratch {
                path: self.dir_path(node.parent)?.join(&node.name),
            },
            Packed::File { view, leaf } => {
                let dir = self.dir_path(node.parent)?;
                NodeKind::File {
                    secret: match leaf {
                        None => dir,
                        Some(leaf) => dir.join(leaf),
                    },
                    view: *view,
                    name: name(),
                }
            }
            Packed::Template => NodeKind::Template { name: name() },
            Packed::Whole(kind) => (**kind).clone(),
        })
    }

    /// How a node named `name` in `parent` stores `kind`.
    fn pack(&self, parent: Ino, name: &str, kind: &NodeKind) -> Packed {
        let dir = || self.dir_path(parent);
        match kind {
            NodeKind::Dir { path } if dir().is_some_and(|d| d.join(name) == *path) => Packed::Dir,
            NodeKind::Scratch { path } if dir().is_some_and(|d| d.join(name) == *path) => {
                Packed::Scratch
            }
            NodeKind::Template { name: n } if n == name => Packed::Template,
            NodeKind::File {
                secret,
                view,
                name: n,
            } if n == name => match dir() {
                Some(d) if d == *secret => Packed::File {
                    view: *view,
                    leaf: None,
                },
                Some(d) => match secret.split_last() {
                    Some((_, leaf)) if d.join(leaf) == *secret => Packed::File {
                        view: *view,
                        leaf: Some(Box::new(leaf.to_string())),
                    },
                    _ => Packed::Whole(Box::new(kind.clone())),
                },
                None => Packed::Whole(Box::new(kind.clone())),
            },
            _ => Packed::Whole(Box::new(kind.clone())),
        }
    }

    fn index(&mut self, ino: Ino, kind: &NodeKind) {
        if let Some(path) = store_path(kind) {
            let hash = self.path_hash(path);
            self.by_path.insert((hash, ino));
        }
    }

    fn unindex(&mut self, ino: Ino, kind: &NodeKind) {
        if let Some(path) = store_path(kind) {
            let hash = self.path_hash(path);
            self.by_path.remove(&(hash, ino));
        }
    }

    /// The live nodes indexed under `path`, with what they stand for.
    fn at_path(&self, path: &SecretPath) -> Vec<(Ino, &Node, NodeKind)> {
        let hash = self.path_hash(path);
        self.by_path
            .range((hash, Ino(0))..=(hash, Ino(u64::MAX)))
            .filter_map(|&(_, ino)| {
                let node = self.nodes.get(&ino).filter(|n| !n.ghost)?;
                let kind = self.unpack(node)?;
                (store_path(&kind) == Some(path)).then_some((ino, node, kind))
            })
            .collect()
    }

    /// Removes `ino` from the table, and then each ancestor that was kept
    /// only for it.
    fn remove(&mut self, ino: Ino) {
        let mut at = ino;
        while at != ROOT_INO {
            // (Known while its parent is: a node keeps its parent.)
            let kind = self.nodes.get(&at).and_then(|n| self.unpack(n));
            let Some(node) = self.nodes.remove(&at) else {
                return;
            };
            if let Some(kind) = kind {
                self.unindex(at, &kind);
            }
            self.unname_ino(at, node.parent, &node.name);
            let Some(parent) = self.nodes.get_mut(&node.parent) else {
                return;
            };
            parent.children = parent.children.saturating_sub(1);
            if !(parent.ghost && parent.children == 0) {
                return;
            }
            at = node.parent;
        }
    }

    /// Moves one child from `from` to `to`; a ghost left without children goes.
    fn reparent(&mut self, from: Ino, to: Ino) {
        if from == to {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&to) {
            node.children += 1;
        }
        let Some(old) = self.nodes.get_mut(&from) else {
            return;
        };
        old.children = old.children.saturating_sub(1);
        if old.ghost && old.children == 0 {
            self.remove(from);
        }
    }
}

impl Inodes {
    /// A table holding only the root, standing for `root`.
    pub fn new(root: SecretPath) -> Self {
        let mut table = Inodes {
            nodes: FastMap::default(),
            own_writes: FastMap::default(),
            by_name: HashTable::new(),
            by_path: BTreeSet::new(),
            hasher: RandomState::new(),
            next: Ino(ROOT_INO.0 + 1),
            bound: None,
            made: 0,
        };
        let kind = NodeKind::Dir { path: root };
        table.index(ROOT_INO, &kind);
        table.nodes.insert(
            ROOT_INO,
            Node {
                parent: ROOT_INO,
                name: "".into(),
                kind: Packed::Whole(Box::new(kind.clone())),
                lookups: 1,
                children: 0,
                ghost: false,
                referenced: false,
                shown: None,
                retired: false,
            },
        );
        table
    }

    /// What `ino` stands for, if the table knows it.
    pub fn get(&self, ino: Ino) -> Option<NodeKind> {
        self.nodes.get(&ino).and_then(|n| self.unpack(n))
    }

    /// The parent of `ino` (the root is its own parent).
    pub fn parent(&self, ino: Ino) -> Option<Ino> {
        self.nodes.get(&ino).map(|n| n.parent)
    }

    /// The inode for `name` in `parent`, created if new or if the name now
    /// stands for something else (a key that became a folder gets a new inode).
    /// `lookup` counts one kernel reference (lookup, create, readdirplus).
    pub fn remember(&mut self, parent: Ino, name: &str, kind: NodeKind, lookup: bool) -> Ino {
        let packed = self.pack(parent, name, &kind);
        if let Some(ino) = self.named(parent, name) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                if node.kind == packed {
                    if lookup {
                        node.lookups += 1;
                        node.referenced = true;
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
                name: name.into(),
                kind: packed,
                lookups: u64::from(lookup),
                children: 0,
                ghost: false,
                referenced: false,
                shown: None,
                retired: false,
            },
        );
        self.made += 1;
        if let Some(dir) = self.nodes.get_mut(&parent) {
            dir.children += 1;
        }
        self.name_ino(ino, parent, name);
        ino
    }

    /// The inode currently named `name` in `parent`, if any.
    pub fn lookup_name(&self, parent: Ino, name: &str) -> Option<Ino> {
        self.named(parent, name)
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
        let Some(ino) = self.named(parent, name) else {
            return;
        };
        let Some(old) = self.get(ino) else {
            return;
        };
        self.unname_ino(ino, parent, name);
        self.unindex(ino, &old);
        let packed = self.pack(new_parent, new_name, &kind);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.parent = new_parent;
            node.name = new_name.into();
            node.kind = packed;
            node.shown = None;
        }
        self.index(ino, &kind);
        self.name_ino(ino, new_parent, new_name);
        self.reparent(parent, new_parent);
    }

    /// The name `name` in `parent` no longer leads to its inode (which
    /// stays for the kernel's references): the next one made there is new.
    pub fn unname(&mut self, parent: Ino, name: &str) {
        if let Some(ino) = self.named(parent, name) {
            self.unname_ino(ino, parent, name);
        }
    }

    /// Every node standing for `old` now stands for `new` (a file living
    /// in memory became a key under its own name).
    pub fn retarget(&mut self, old: &NodeKind, new: NodeKind) {
        let inos: Vec<Ino> = match store_path(old) {
            Some(path) => self
                .at_path(path)
                .into_iter()
                .filter(|(_, _, kind)| kind == old)
                .map(|(ino, ..)| ino)
                .collect(),
            None => Vec::new(),
        };
        for ino in inos {
            let Some((parent, name)) = self.nodes.get(&ino).map(|n| (n.parent, n.name.clone()))
            else {
                continue;
            };
            let packed = self.pack(parent, &name, &new);
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.kind = packed;
                node.shown = None;
            }
            self.unindex(ino, old);
            self.index(ino, &new);
        }
    }

    /// Records the version of the secret whose attributes of `ino` the
    /// kernel is being told.
    /// A retired inode keeps the version it was shown.
    pub fn show(&mut self, ino: Ino, version: Arc<Secret>) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            if !node.retired {
                node.shown = Some(version);
            }
        }
    }

    /// Shows `version` for the file `ino` unless the kernel was shown
    /// other bytes of it (`differs` says, of the version shown): then the
    /// inode is retired (see [`Inodes::retire`]) and keeps that version.
    /// `Err` holds the version `ino` keeps, and the entry (directory,
    /// name) the kernel must drop when it was retired now.
    #[allow(clippy::type_complexity)]
    pub fn show_unless_changed(
        &mut self,
        ino: Ino,
        version: Arc<Secret>,
        differs: &dyn Fn(&Secret) -> bool,
    ) -> Result<(), (Arc<Secret>, Option<(Ino, String)>)> {
        let Some(node) = self.nodes.get(&ino) else {
            return Ok(());
        };
        match node.shown.clone() {
            Some(shown) if node.retired => Err((shown, None)),
            Some(shown)
                if !Arc::ptr_eq(&shown, &version)
                    && !self.own_writes.contains_key(&ino)
                    && differs(&shown) =>
            {
                let entry = self.retire(ino, &shown);
                Err((shown, entry))
            }
            _ => {
                self.show(ino, version);
                Ok(())
            }
        }
    }

    /// The value of the file `ino`, shown to the kernel as `shown`, changed
    /// outside this mount: its name no longer leads to it (the next lookup
    /// makes a new inode, sized for the new value), and it keeps `shown`,
    /// its attributes and bytes, until the kernel forgets it, so that a
    /// descriptor held open reads the value it opened, whole. No change
    /// concerns it any more. The entry (directory, name) the kernel must
    /// drop; `None` when `ino` is retired already, is no file, or was
    /// shown another version meanwhile.
    ///
    /// A file a writer of this mount is committing is never retired: the
    /// change seen is its own (see [`Inodes::begin_own_write`]).
    pub fn retire(&mut self, ino: Ino, shown: &Arc<Secret>) -> Option<(Ino, String)> {
        let node = self.nodes.get(&ino)?;
        if node.retired
            || node.ghost
            || self.own_writes.contains_key(&ino)
            || !node.shown.as_ref().is_some_and(|v| Arc::ptr_eq(v, shown))
        {
            return None;
        }
        let kind = self.unpack(node)?;
        if !matches!(kind, NodeKind::File { .. }) {
            return None;
        }
        let (parent, name) = (node.parent, node.name.to_string());
        self.unindex(ino, &kind);
        self.unname_ino(ino, parent, &name);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.retired = true;
        }
        Some((parent, name))
    }

    /// A writer of this mount starts committing a change of the file
    /// `ino`; [`Inodes::end_own_write`] ends it, after `show_written`.
    /// Until then a version of its secret with other bytes is taken for
    /// the writer's own: shown in place, as `show_written` will, instead
    /// of retiring the inode (which would leave the name to a new inode and
    /// this one, held by the writer, serving the version it replaced).
    pub fn begin_own_write(&mut self, ino: Ino) {
        *self.own_writes.entry(ino).or_insert(0) += 1;
    }

    /// Ends one [`Inodes::begin_own_write`] of `ino`.
    pub fn end_own_write(&mut self, ino: Ino) {
        if let Some(n) = self.own_writes.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                self.own_writes.remove(&ino);
            }
        }
    }

    /// Shows `version`, just written through this mount by a writer of
    /// `ino`, retired or not: a writer's own change is made in place.
    pub fn show_written(&mut self, ino: Ino, version: Arc<Secret>) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.shown = Some(version);
        }
    }

    /// The version a retired inode keeps (`None`: not retired).
    pub fn kept(&self, ino: Ino) -> Option<Arc<Secret>> {
        self.nodes
            .get(&ino)
            .filter(|n| n.retired)
            .and_then(|n| n.shown.clone())
    }

    /// Whether `ino` was retired (see [`Inodes::retire`]).
    pub fn is_retired(&self, ino: Ino) -> bool {
        self.nodes.get(&ino).is_some_and(|n| n.retired)
    }

    /// Every file inode holding a version it was shown: (inode, secret,
    /// version); retired inodes, which keep theirs, are not among them.
    pub fn shown_versions(&self) -> Vec<(Ino, SecretPath, Arc<Secret>)> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.retired)
            .filter_map(|(ino, n)| {
                let version = n.shown.as_ref()?;
                match self.unpack(n)? {
                    NodeKind::File { secret, .. } => Some((*ino, secret, version.clone())),
                    _ => None,
                }
            })
            .collect()
    }

    /// How many file inodes hold a version they were shown.
    pub fn shown_count(&self) -> usize {
        self.nodes.values().filter(|n| n.shown.is_some()).count()
    }

    /// Forgets the version shown for `ino`, if it is still `version` (a
    /// retired inode keeps it).
    pub fn unshow(&mut self, ino: Ino, version: &Arc<Secret>) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            if !node.retired && node.shown.as_ref().is_some_and(|v| Arc::ptr_eq(v, version)) {
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
            .into_iter()
            .filter_map(|(ino, n, kind)| match kind {
                NodeKind::File { view, name, .. } => Some(FileNode {
                    ino,
                    parent: n.parent,
                    view,
                    name,
                    shown: n.shown.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The directory inodes standing for `path`.
    pub fn dirs_at(&self, path: &SecretPath) -> Vec<Ino> {
        self.at_path(path)
            .into_iter()
            .filter(|(_, _, kind)| kind.is_dir())
            .map(|(ino, ..)| ino)
            .collect()
    }

    /// The kernel dropped `n` references to `ino`; at zero the inode is
    /// forgotten (kept as a ghost while nodes below it remain).
    pub fn forget(&mut self, ino: Ino, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 || node.ghost {
            return;
        }
        if node.children > 0 {
            node.ghost = true;
            node.shown = None;
            let (parent, name) = (node.parent, node.name.clone());
            self.unname_ino(ino, parent, &name);
            return;
        }
        self.remove(ino);
    }

    /// Holds at most about `max` nodes (`None`: no bound): past it,
    /// [`Inodes::evictions`] names entries for the kernel to drop.
    pub fn set_bound(&mut self, max: Option<usize>) {
        self.bound = max;
    }

    /// The bound, if any (see [`Inodes::set_bound`]).
    pub fn bound(&self) -> Option<usize> {
        self.bound
    }

    /// Whether the table is past its bound and a tenth of the bound was
    /// made since the kernel was last asked to drop entries.
    pub fn eviction_due(&self) -> bool {
        self.bound
            .is_some_and(|max| self.nodes.len() > max && self.made >= (max / 10).max(1))
    }

    /// The entries (directory, name) the kernel should drop to bring the
    /// table back under its bound: none unless [`Inodes::eviction_due`].
    ///
    /// The table only shrinks when the kernel forgets; it drops an entry it
    /// was told to unless the entry is in use (open, a working directory),
    /// and a directory goes with the entries below it. Files and empty
    /// directories go before directories holding nodes, the oldest first,
    /// and those looked up again since the last time go last (a second
    /// chance); what is left holds nine tenths of the bound. Nodes the
    /// kernel holds no reference to (named by a plain READDIR only) are
    /// dropped here and then.
    ///
    /// `spared` are paths inside the mount (relative to its root)
    /// something is mounted on: neither they nor the directories above
    /// them are named. `None` (what is mounted is not known): nothing is.
    pub fn evictions(&mut self, spared: Option<&HashSet<String>>) -> Vec<(Ino, String)> {
        if !self.eviction_due() {
            return Vec::new();
        }
        self.made = 0;
        let (Some(max), Some(spared)) = (self.bound, spared) else {
            return Vec::new();
        };
        // Nodes the kernel holds no reference to need not be asked about.
        self.drop_unheld();
        let spared = self.spared_inos(spared);
        let need = self.nodes.len().saturating_sub(max / 10 * 9);
        let mut candidates: Vec<(bool, bool, Ino)> = self
            .nodes
            .iter()
            .filter(|(&ino, n)| {
                ino != ROOT_INO
                    && !spared.contains(&ino)
                    && !n.ghost
                    && n.lookups > 0
                    && self.named(n.parent, &n.name) == Some(ino)
            })
            .map(|(&ino, n)| (n.referenced, n.children > 0, ino))
            .collect();
        candidates.sort_unstable();
        let chosen: HashSet<Ino> = candidates.iter().take(need).map(|&(.., ino)| ino).collect();
        for node in self.nodes.values_mut() {
            node.referenced = false;
        }
        let mut victims: Vec<(Ino, String)> = chosen
            .iter()
            .filter_map(|ino| self.nodes.get(ino))
            // A directory's entries go with it.
            .filter(|n| !chosen.contains(&n.parent))
            .map(|n| (n.parent, n.name.to_string()))
            .collect();
        victims.sort_unstable();
        victims
    }

    /// Drops the nodes the kernel holds no reference to: named in a plain
    /// READDIR (which takes none) and never looked up. Says how many.
    pub fn drop_unheld(&mut self) -> usize {
        let unheld: Vec<Ino> = self
            .nodes
            .iter()
            .filter(|(&ino, n)| ino != ROOT_INO && n.lookups == 0 && !n.ghost && n.children == 0)
            .map(|(&ino, _)| ino)
            .collect();
        for &ino in &unheld {
            self.remove(ino);
        }
        unheld.len()
    }

    /// The nodes on the way to each of `paths` (relative to the mount's root).
    fn spared_inos(&self, paths: &HashSet<String>) -> HashSet<Ino> {
        let mut inos = HashSet::new();
        for path in paths {
            let mut at = ROOT_INO;
            for name in path.split('/').filter(|s| !s.is_empty()) {
                match self.named(at, name) {
                    Some(ino) => {
                        inos.insert(ino);
                        at = ino;
                    }
                    None => break,
                }
            }
        }
        inos
    }

    /// Number of inodes held (the root and ghosts included).
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
    fn every_kind_reads_back_as_it_was_remembered() {
        let mut t = Inodes::new(SecretPath::parse("team"));
        let app = t.remember(ROOT_INO, "app", dir("team/app"), true);
        let db3 = SecretPath::parse("team/app/db").at_version(3);
        let kinds = [
            (app, "db", dir("team/app/db")),
            (app, "db@3", NodeKind::Dir { path: db3.clone() }),
            (
                app,
                "K",
                NodeKind::File {
                    secret: SecretPath::parse("team/app"),
                    view: keys_view(),
                    name: "K".into(),
                },
            ),
            (
                app,
                "db.json",
                NodeKind::File {
                    secret: SecretPath::parse("team/app/db"),
                    view: keys_view(),
                    name: "db.json".into(),
                },
            ),
            (
                app,
                ".K.swp",
                NodeKind::Scratch {
                    path: SecretPath::parse("team/app/.K.swp"),
                },
            ),
            (
                ROOT_INO,
                "nginx.conf",
                NodeKind::Template {
                    name: "nginx.conf".into(),
                },
            ),
            // Kinds whose paths are not their directory's: kept whole.
            (app, "odd", dir("elsewhere/odd")),
            (
                app,
                "renamed",
                NodeKind::File {
                    secret: SecretPath::parse("team/app"),
                    view: keys_view(),
                    name: "other".into(),
                },
            ),
        ];
        for (parent, name, kind) in kinds {
            let ino = t.remember(parent, name, kind.clone(), true);
            assert_eq!(t.get(ino), Some(kind.clone()), "{name}");
            assert_eq!(t.remember(parent, name, kind, true), ino, "{name}");
        }
        let v3 = t.remember(app, "db@3", NodeKind::Dir { path: db3.clone() }, true);
        let in_v3 = NodeKind::File {
            secret: db3.clone(),
            view: keys_view(),
            name: "K".into(),
        };
        let k = t.remember(v3, "K", in_v3.clone(), true);
        assert_eq!(t.get(k), Some(in_v3));
        assert_eq!(t.files_of(&db3).len(), 1);
    }

    #[test]
    fn a_node_outliving_its_directory_keeps_its_path_and_the_directory_goes_after_it() {
        let mut t = Inodes::new(SecretPath::root());
        let app = t.remember(ROOT_INO, "app", dir("app"), true);
        let db = t.remember(app, "db", dir("app/db"), true);
        let key = NodeKind::File {
            secret: SecretPath::parse("app/db"),
            view: keys_view(),
            name: "K".into(),
        };
        let k = t.remember(db, "K", key.clone(), true);
        // The kernel forgets the directories before the file.
        t.forget(app, 1);
        t.forget(db, 1);
        assert_eq!(t.get(k), Some(key));
        assert_eq!(t.files_of(&SecretPath::parse("app/db")).len(), 1);
        // No name leads to them and no change concerns them.
        assert_eq!(t.lookup_name(ROOT_INO, "app"), None);
        assert!(t.dirs_at(&SecretPath::parse("app")).is_empty());
        assert!(t.dirs_at(&SecretPath::parse("app/db")).is_empty());
        let again = t.remember(ROOT_INO, "app", dir("app"), true);
        assert!(again > k);
        assert_eq!(t.dirs_at(&SecretPath::parse("app")), [again]);
        assert_eq!(t.len(), 5);
        // The last node below them goes, and they go with it.
        t.forget(k, 1);
        assert_eq!(t.len(), 2);
        assert!(t.get(app).is_none() && t.get(db).is_none());
    }

    #[test]
    fn a_scratch_file_becoming_a_key_is_found_by_its_new_kind() {
        let mut t = Inodes::new(SecretPath::root());
        let app = t.remember(ROOT_INO, "app", dir("app"), true);
        let scratch = NodeKind::Scratch {
            path: SecretPath::parse("app/K"),
        };
        let ino = t.remember(app, "K", scratch.clone(), true);
        let key = NodeKind::File {
            secret: SecretPath::parse("app"),
            view: keys_view(),
            name: "K".into(),
        };
        t.retarget(&scratch, key.clone());
        assert_eq!(t.get(ino), Some(key.clone()));
        assert_eq!(t.lookup_name(app, "K"), Some(ino));
        assert_eq!(t.files_of(&SecretPath::parse("app")).len(), 1);
        assert_eq!(t.remember(app, "K", key, true), ino);
    }

    #[test]
    fn past_its_bound_the_table_names_the_oldest_entries_for_the_kernel_to_drop() {
        let mut t = Inodes::new(SecretPath::root());
        t.set_bound(Some(20));
        let dirs: Vec<Ino> = (0..10)
            .map(|i| t.remember(ROOT_INO, &format!("d{i}"), dir(&format!("d{i}")), true))
            .collect();
        // A file in each: 21 nodes with the root.
        for (i, &d) in dirs.iter().enumerate() {
            let key = NodeKind::File {
                secret: SecretPath::parse(&format!("d{i}")),
                view: keys_view(),
                name: "K".into(),
            };
            t.remember(d, "K", key, true);
        }
        assert_eq!(t.len(), 21);
        // d0 and its file were looked up again: they get a second chance.
        let k0 = t.lookup_name(dirs[0], "K").unwrap();
        t.remember(ROOT_INO, "d0", dir("d0"), true);
        t.remember(dirs[0], "K", t.get(k0).unwrap(), true);
        let victims = t.evictions(Some(&HashSet::new()));
        // Down to 18 nodes: three go, the oldest files but d0's (the
        // directories holding them go last).
        assert_eq!(
            victims,
            [
                (dirs[1], "K".to_string()),
                (dirs[2], "K".to_string()),
                (dirs[3], "K".to_string())
            ]
        );
        // Nothing more is asked until a tenth of the bound is made again.
        assert!(t.evictions(Some(&HashSet::new())).is_empty());
        t.remember(ROOT_INO, "e0", dir("e0"), true);
        assert!(
            t.evictions(Some(&HashSet::new())).is_empty(),
            "one made, two needed"
        );
        t.remember(ROOT_INO, "e1", dir("e1"), true);
        // The second chance is used up: d0's file is the oldest now.
        assert_eq!(
            t.evictions(Some(&HashSet::new()))[0],
            (dirs[0], "K".to_string())
        );
        // The kernel forgets: the table shrinks.
        for d in &dirs[1..4] {
            let k = t.lookup_name(*d, "K").unwrap();
            t.forget(k, 1);
        }
        assert_eq!(t.len(), 20);
        // A directory chosen goes with its entries: they are not named.
        t.set_bound(Some(10));
        t.remember(ROOT_INO, "h0", dir("h0"), true);
        let victims = t.evictions(Some(&HashSet::new()));
        let inos: Vec<Ino> = victims
            .iter()
            .map(|(parent, name)| t.lookup_name(*parent, name).unwrap())
            .collect();
        assert!(victims.iter().all(|(parent, _)| !inos.contains(parent)));
        // The kernel drops them, with every reference it held.
        for ino in inos {
            if let Some(k) = t.lookup_name(ino, "K") {
                t.forget(k, 100);
            }
            t.forget(ino, 100);
        }
        assert_eq!(t.len(), 9);
        t.set_bound(Some(20));
        // Under the bound nothing is asked.
        for i in 0..2 {
            t.remember(ROOT_INO, &format!("f{i}"), dir(&format!("f{i}")), true);
        }
        assert!(t.evictions(Some(&HashSet::new())).is_empty());
        t.set_bound(None);
        for i in 0..10 {
            t.remember(ROOT_INO, &format!("g{i}"), dir(&format!("g{i}")), true);
        }
        assert!(t.evictions(Some(&HashSet::new())).is_empty(), "no bound");
    }

    #[test]
    fn paths_something_is_mounted_on_and_the_directories_above_them_are_spared() {
        let mut t = Inodes::new(SecretPath::root());
        t.set_bound(Some(10));
        let key = |s: &str| NodeKind::File {
            secret: SecretPath::parse(s),
            view: keys_view(),
            name: "K".into(),
        };
        let a = t.remember(ROOT_INO, "a", dir("a"), true);
        t.remember(a, "K", key("a"), true);
        let b = t.remember(ROOT_INO, "b", dir("b"), true);
        t.remember(b, "K", key("b"), true);
        for i in 0..10 {
            t.remember(ROOT_INO, &format!("c{i}"), dir(&format!("c{i}")), true);
        }
        // 15 nodes; 6 must go, and would be a/K, b/K, c0..c3. a/K and a
        // are spared, and b; b/K is not a mount point (the mount hides it).
        let mounted: HashSet<String> = ["a/K".to_string(), "b".to_string()].into();
        let victims = t.evictions(Some(&mounted));
        let names: Vec<(Ino, &str)> = victims.iter().map(|(p, n)| (*p, n.as_str())).collect();
        assert_eq!(
            names,
            [
                (ROOT_INO, "c0"),
                (ROOT_INO, "c1"),
                (ROOT_INO, "c2"),
                (ROOT_INO, "c3"),
                (ROOT_INO, "c4"),
                (b, "K")
            ]
        );
        // Not knowing what is mounted: nothing goes.
        t.remember(ROOT_INO, "d", dir("d"), true);
        assert!(t.eviction_due());
        assert!(t.evictions(None).is_empty());
        assert!(!t.eviction_due(), "asked again after another tenth");
    }

    fn version(value: &str) -> Arc<Secret> {
        let mut keys = crate::store::SecretData::new();
        keys.insert(
            "K".into(),
            crate::store::SecretValue::from_json(&serde_json::json!(value)),
        );
        Arc::new(Secret {
            keys,
            revision: None,
            modified: None,
            custom_metadata: Default::default(),
            description: None,
            withheld: Default::default(),
        })
    }

    #[test]
    fn a_retired_file_keeps_what_it_was_shown_its_name_gets_a_new_inode_and_forget_frees_it() {
        let mut t = Inodes::new(SecretPath::root());
        let app = t.remember(ROOT_INO, "app", dir("app"), true);
        let key = NodeKind::File {
            secret: SecretPath::parse("app"),
            view: keys_view(),
            name: "K".into(),
        };
        let old = t.remember(app, "K", key.clone(), true);
        let (v1, v2) = (version("one"), version("two, longer"));
        t.show(old, v1.clone());
        // Shown another version meanwhile: not retired.
        assert_eq!(t.retire(old, &v2), None);
        assert_eq!(t.retire(old, &v1), Some((app, "K".to_string())));
        assert_eq!(t.retire(old, &v1), None, "once");
        assert!(t.is_retired(old));
        // It keeps its version; nothing shows it another.
        t.show(old, v2.clone());
        t.unshow(old, &v1);
        assert!(t.kept(old).is_some_and(|v| Arc::ptr_eq(&v, &v1)));
        assert!(t.shown_versions().is_empty(), "the sweep leaves it alone");
        // No change concerns it; its name leads to a new inode.
        assert!(t.files_of(&SecretPath::parse("app")).is_empty());
        assert_eq!(t.lookup_name(app, "K"), None);
        let new = t.remember(app, "K", key.clone(), true);
        assert!(new > old);
        assert!(t.show_unless_changed(new, v2.clone(), &|_| true).is_ok());
        assert_eq!(t.get(old), Some(key.clone()));
        assert_eq!(t.shown_count(), 2);
        // Shown other bytes: the new one is retired in turn.
        let v3 = version("three");
        let kept = t.show_unless_changed(new, v3.clone(), &|_| true);
        assert!(matches!(&kept, Err((v, Some(_))) if Arc::ptr_eq(v, &v2)));
        // Shown the same bytes: it takes the new version.
        let newer = t.remember(app, "K", key, true);
        t.show(newer, v3.clone());
        assert!(t
            .show_unless_changed(newer, version("three"), &|_| false)
            .is_ok());
        // The kernel forgets the old inodes: they and their values go.
        assert_eq!(t.len(), 5);
        t.forget(old, 1);
        t.forget(new, 1);
        assert_eq!(t.len(), 3);
        assert!(t.get(old).is_none());
        assert_eq!(t.shown_count(), 1);
        assert_eq!(t.lookup_name(app, "K"), Some(newer));
    }

    #[test]
    fn the_root_is_never_forgotten() {
        let mut t = Inodes::new(SecretPath::root());
        t.forget(ROOT_INO, 100);
        assert!(t.get(ROOT_INO).is_some());
    }
}
