//! The writers: a write buffer per key file open for writing, with an
//! explicit state, and the commits that turn a buffer (or any other change
//! to a secret) into one store write: read the latest version, change it,
//! write it back on condition that it is still the latest (check-and-set),
//! retry on conflict. One commit at a time per secret; no buffer is locked
//! while the store is asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};

use super::inode::Ino;
use super::source::Source;
use super::FileRef;
use crate::error::{Error, Result};
use crate::store::{Precondition, Secret, SecretData, SecretPath};

/// How often a check-and-set write is retried before `EAGAIN`.
const CAS_ATTEMPTS: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a write buffer stands with respect to the store.
#[derive(Debug, Clone)]
pub enum WriteState {
    /// It holds what the store holds.
    Clean,
    /// Changed without a byte written (`O_TRUNC`, `ftruncate`, a new
    /// file): committed by `fsync` or the last close, not by every `close`
    /// (shells open, `dup2` and close the first descriptor before writing,
    /// and that close must not commit an empty value).
    Changed,
    /// Bytes were written since the last commit: the next `close` commits.
    Written,
    /// A writer was told this error (by `write`, `close` or `fsync`): the
    /// buffer is never committed, so that a program that saw a failure
    /// does not find its half-done change in the store later.
    Failed(Error),
}

/// The pending new value of one key, shared by all handles that opened it
/// for writing (as a page cache would be).
pub struct WriteBuffer {
    /// The file written.
    pub(crate) file: FileRef,
    /// The file's bytes as written so far (zeroized on drop).
    data: SecretBox<Vec<u8>>,
    state: WriteState,
    /// Bumped by every change: a commit leaves the buffer clean only if
    /// nothing changed while it ran.
    edits: u64,
}

/// What a commit of a buffer writes.
pub struct Due {
    /// The bytes to store.
    pub bytes: SecretBox<Vec<u8>>,
    /// The buffer's edit count when they were taken.
    edits: u64,
}

impl WriteBuffer {
    /// A clean buffer of `file` holding `initial`.
    pub(crate) fn new(file: FileRef, initial: Vec<u8>) -> Self {
        WriteBuffer {
            file,
            data: SecretBox::new(Box::new(initial)),
            state: WriteState::Clean,
            edits: 0,
        }
    }

    /// The bytes as written so far.
    pub fn bytes(&self) -> &[u8] {
        self.data.expose_secret()
    }

    /// The error a writer was told, if any.
    pub fn failure(&self) -> Option<&Error> {
        match &self.state {
            WriteState::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Writes `bytes` at `offset`, refusing to grow past `limit` (which
    /// fails the buffer: the writer is told).
    pub fn write_at(&mut self, offset: u64, bytes: &[u8], limit: u64) -> Result<()> {
        if let Err(e) = write_into(self.data.expose_secret_mut(), offset, bytes, limit) {
            self.fail(e.clone());
            return Err(e);
        }
        self.edits += 1;
        if !matches!(self.state, WriteState::Failed(_)) {
            self.state = WriteState::Written;
        }
        Ok(())
    }

    /// Checks what was written so far with `check`; a failure fails the
    /// buffer (the writer is told now).
    pub fn check(&mut self, check: impl FnOnce(&[u8]) -> Result<()>) -> Result<()> {
        if let Err(e) = check(self.data.expose_secret()) {
            self.fail(e.clone());
            return Err(e);
        }
        Ok(())
    }

    /// Truncates or extends the buffer to `len` bytes.
    pub fn resize(&mut self, len: u64) {
        self.data
            .expose_secret_mut()
            .resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
        self.edits += 1;
        if matches!(self.state, WriteState::Clean) {
            self.state = WriteState::Changed;
        }
    }

    /// Records the error a writer was told (the first one stays).
    pub fn fail(&mut self, e: Error) {
        if !matches!(self.state, WriteState::Failed(_)) {
            self.state = WriteState::Failed(e);
        }
    }

    /// What a commit must write now: nothing when the buffer is clean, or
    /// holds only a change made without writing and `force` is off; the
    /// error a writer was told when it failed.
    pub fn due(&self, force: bool) -> Result<Option<Due>> {
        match &self.state {
            WriteState::Failed(e) => Err(e.clone()),
            WriteState::Clean => Ok(None),
            WriteState::Changed if !force => Ok(None),
            WriteState::Changed | WriteState::Written => Ok(Some(Due {
                bytes: SecretBox::new(Box::new(self.bytes().to_vec())),
                edits: self.edits,
            })),
        }
    }

    /// A commit of `due` reached the store: clean, unless the buffer was
    /// changed meanwhile.
    pub fn committed(&mut self, due: &Due) {
        if self.edits == due.edits && !matches!(self.state, WriteState::Failed(_)) {
            self.state = WriteState::Clean;
        }
    }
}

/// Writes `bytes` at `offset` into `buf`, refusing to grow past `limit`.
pub fn write_into(buf: &mut Vec<u8>, offset: u64, bytes: &[u8], limit: u64) -> Result<()> {
    let end = offset.saturating_add(bytes.len() as u64);
    if end > limit {
        return Err(Error::TooBig(limit));
    }
    let (start, end) = (offset as usize, end as usize);
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(bytes);
    Ok(())
}

/// A shared write buffer.
pub type SharedBuffer = Arc<Mutex<WriteBuffer>>;

/// A buffer and the number of handles writing through it.
struct Open {
    buffer: SharedBuffer,
    handles: usize,
}

/// The write buffers of open files, and one commit at a time per secret.
#[derive(Default)]
pub struct Writers {
    open: Mutex<HashMap<Ino, Open>>,
    commit_locks: Mutex<HashMap<SecretPath, Arc<Mutex<()>>>>,
}

impl Writers {
    /// Joins the buffer of `ino` if one is open (one more handle on it).
    pub fn join(&self, ino: Ino) -> Option<SharedBuffer> {
        lock(&self.open).get_mut(&ino).map(|o| {
            o.handles += 1;
            o.buffer.clone()
        })
    }

    /// Opens `buffer` for `ino`, or joins the one another writer opened
    /// meanwhile.
    pub fn start(&self, ino: Ino, buffer: WriteBuffer) -> SharedBuffer {
        let mut open = lock(&self.open);
        let o = open.entry(ino).or_insert_with(|| Open {
            buffer: Arc::new(Mutex::new(buffer)),
            handles: 0,
        });
        o.handles += 1;
        o.buffer.clone()
    }

    /// The buffer of `ino` while it is open for writing, unless its writer
    /// was told an error: then it will be discarded, and nobody else may
    /// see its bytes (its release may still be on the way).
    pub fn live(&self, ino: Ino) -> Option<SharedBuffer> {
        let buffer = lock(&self.open).get(&ino).map(|o| o.buffer.clone())?;
        let failed = lock(&buffer).failure().is_some();
        (!failed).then_some(buffer)
    }

    /// The size of the buffer of `ino` while it is live: what `stat` must
    /// show while a writer has not closed yet.
    pub fn live_size(&self, ino: Ino) -> Option<u64> {
        let buffer = self.live(ino)?;
        let size = lock(&buffer).bytes().len() as u64;
        Some(size)
    }

    /// One handle on `ino`'s buffer closed; the buffer, when it was the last.
    pub fn leave(&self, ino: Ino) -> Option<SharedBuffer> {
        let mut open = lock(&self.open);
        let o = open.get_mut(&ino)?;
        o.handles = o.handles.saturating_sub(1);
        if o.handles > 0 {
            return None;
        }
        open.remove(&ino).map(|o| o.buffer)
    }

    /// Applies `change` to the latest data of `secret` and writes it back,
    /// on condition that the secret is still as read (check-and-set, where
    /// the store has it), retrying on conflict. Our own commits of one
    /// secret run one at a time. Returns the version written, which the
    /// cache already holds (read-your-writes).
    pub fn commit(
        &self,
        source: &Source,
        secret: &SecretPath,
        mut change: impl FnMut(&mut SecretData) -> Result<()>,
    ) -> Result<Arc<Secret>> {
        let _span = tracing::debug_span!("commit", path = %secret).entered();
        let secret_lock = lock(&self.commit_locks)
            .entry(secret.clone())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone();
        let _one_at_a_time = lock(&secret_lock);
        let check_and_set = source.capabilities().check_and_set;
        for attempt in 1..=CAS_ATTEMPTS {
            let latest = source.read_latest(secret)?;
            let when = match &latest {
                _ if !check_and_set => Precondition::Any,
                Some(Secret {
                    revision: Some(r), ..
                }) => Precondition::At(r.clone()),
                Some(_) => Precondition::Any,
                None => Precondition::Absent,
            };
            let mut data = latest.map(|s| s.keys).unwrap_or_default();
            change(&mut data)?;
            match source.write(secret, data, &when) {
                Ok(written) => {
                    tracing::debug!(attempt, revision = ?written.revision, "committed");
                    return Ok(written);
                }
                Err(Error::CasConflict) => {
                    tracing::debug!(attempt, "check-and-set conflict: re-reading");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::CasConflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(initial: &[u8]) -> WriteBuffer {
        let view = crate::fs::view::Views::for_layout()
            .iter()
            .next()
            .map(|(id, _)| id)
            .unwrap();
        let file = FileRef {
            secret: SecretPath::parse("s"),
            view,
            name: "K".into(),
        };
        WriteBuffer::new(file, initial.to_vec())
    }

    #[test]
    fn a_clean_buffer_commits_nothing() {
        let b = buffer(b"v");
        assert!(b.due(false).unwrap().is_none());
        assert!(b.due(true).unwrap().is_none());
    }

    #[test]
    fn a_change_without_writes_waits_for_a_forced_commit() {
        let mut b = buffer(b"value");
        b.resize(0);
        assert!(b.due(false).unwrap().is_none());
        let due = b.due(true).unwrap().unwrap();
        assert_eq!(due.bytes.expose_secret().as_slice(), b"");
        b.committed(&due);
        assert!(b.due(true).unwrap().is_none());
    }

    #[test]
    fn written_bytes_are_due_at_the_next_close_and_clean_after() {
        let mut b = buffer(b"abc");
        b.write_at(1, b"XY", 100).unwrap();
        let due = b.due(false).unwrap().unwrap();
        assert_eq!(due.bytes.expose_secret().as_slice(), b"aXY");
        b.committed(&due);
        assert!(b.due(true).unwrap().is_none());
    }

    #[test]
    fn a_write_during_a_commit_stays_due() {
        let mut b = buffer(b"");
        b.write_at(0, b"one", 100).unwrap();
        let due = b.due(false).unwrap().unwrap();
        b.write_at(3, b"two", 100).unwrap();
        b.committed(&due);
        let again = b.due(false).unwrap().unwrap();
        assert_eq!(again.bytes.expose_secret().as_slice(), b"onetwo");
    }

    #[test]
    fn a_failed_buffer_reports_its_first_error_and_never_commits() {
        let mut b = buffer(b"");
        assert!(matches!(
            b.write_at(0, b"toolong", 3),
            Err(Error::TooBig(3))
        ));
        b.write_at(0, b"ok", 3).unwrap();
        b.fail(Error::CasConflict);
        assert!(matches!(b.due(true), Err(Error::TooBig(3))));
    }
}
