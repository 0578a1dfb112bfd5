//! Open file and directory handles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use secrecy::SecretSlice;

use super::inode::Ino;

/// One entry of a directory as listed when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntryInfo {
    /// File name.
    pub name: String,
    /// `true` for a directory, `false` for a key file.
    pub is_dir: bool,
}

/// What an open handle holds.
pub enum Handle {
    /// An open key: the value as it was at open, so that one reader never
    /// sees two versions mixed.
    File {
        /// The file's inode.
        ino: Ino,
        /// The value's bytes.
        value: Arc<SecretSlice<u8>>,
    },
    /// An open directory: its entries as listed at open, so offsets stay stable.
    Dir {
        /// The directory's inode.
        ino: Ino,
        /// Entries, `.` and `..` excluded.
        entries: Arc<Vec<DirEntryInfo>>,
    },
}

/// Handle number → handle.
#[derive(Default)]
pub struct HandleTable {
    handles: Mutex<HashMap<u64, Handle>>,
    next: AtomicU64,
}

impl HandleTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Handle>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a handle and returns its number.
    pub fn insert(&self, handle: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(fh, handle);
        fh
    }

    /// Runs `f` on the handle `fh`, if open.
    pub fn with<R>(&self, fh: u64, f: impl FnOnce(&Handle) -> R) -> Option<R> {
        self.lock().get(&fh).map(f)
    }

    /// Closes `fh`.
    pub fn remove(&self, fh: u64) -> Option<Handle> {
        self.lock().remove(&fh)
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no handle is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
