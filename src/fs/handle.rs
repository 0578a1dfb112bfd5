//! Open file and directory handles, and the write buffers behind them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use secrecy::SecretSlice;

use super::inode::Ino;
use super::local::Scratch;
use super::map::FastMap;
use super::writers::SharedBuffer;

/// An open file or directory handle's number (never 0: a read with no
/// handle is a read after a "no open" open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fh(pub u64);

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
    /// A key of the store opened read-only: reads serve the version the
    /// kernel was last told of, whatever version was current at open.
    Key {
        /// The file's inode.
        ino: Ino,
    },
    /// A key opened read-only while a writer holds it: its bytes at open.
    Read {
        /// The value's bytes.
        value: Arc<SecretSlice<u8>>,
    },
    /// A key opened for writing.
    Write {
        /// The file's inode.
        ino: Ino,
        /// This open's own buffer (its `dup`s share it; other opens have theirs).
        buffer: SharedBuffer,
    },
    /// A scratch file (memory only).
    Scratch {
        /// The file.
        file: Scratch,
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
    handles: Mutex<FastMap<Fh, Arc<Handle>>>,
    next: AtomicU64,
}

impl HandleTable {
    fn lock(&self) -> MutexGuard<'_, FastMap<Fh, Arc<Handle>>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a handle and returns its number.
    pub fn insert(&self, handle: Handle) -> Fh {
        let fh = Fh(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        self.lock().insert(fh, Arc::new(handle));
        fh
    }

    /// The handle `fh`, if open.
    pub fn get(&self, fh: Fh) -> Option<Arc<Handle>> {
        self.lock().get(&fh).cloned()
    }

    /// Closes `fh`.
    pub fn remove(&self, fh: Fh) -> Option<Arc<Handle>> {
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
