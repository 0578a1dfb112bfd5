//! The writers: a write buffer per open file description that writes
//! (each writer's own, as `O_TRUNC` or the value at open started it), with
//! an explicit state, and the commits that turn a buffer (or any other
//! change to a secret) into one store write: read the latest version,
//! change it, write it back on condition that it is still the latest
//! (check-and-set), retry on conflict. A change that leaves the secret as
//! it is writes nothing. A write whose answer never came is found out by
//! reading again; when even that cannot tell, the outcome is unknown. One
//! commit at a time per secret; no buffer is locked while the store is
//! asked.

use crate::fs::OpContext;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};

use super::cache::Source;
use super::inode::Ino;
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
    /// file): committed by `fsync` or at release (the last close of this
    /// open file description), not by every `close`
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

/// Orders the changes made to all buffers: the one changed last is what a
/// reader opening the file (and `stat`) sees while several write it.
static CHANGES: AtomicU64 = AtomicU64::new(1);

/// The pending new value of one key, as one open file description (one
/// `open()`, shared by its `dup`s and forks) wrote it: its own, so that its
/// close commits exactly what it wrote.
pub struct WriteBuffer {
    /// The file written.
    pub(crate) file: FileRef,
    /// The file's bytes as written so far (zeroized on drop).
    data: SecretBox<Vec<u8>>,
    state: WriteState,
    /// Bumped by every change: a commit leaves the buffer clean only if
    /// nothing changed while it ran.
    edits: u64,
    /// When it was last changed, in the order of [`CHANGES`].
    changed: u64,
    /// When a descriptor of it was last closed (FLUSH), in the same order;
    /// 0 before the first close.
    closed: u64,
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
            changed: 0,
            closed: 0,
        }
    }

    /// A descriptor of it was closed; when it held a change, the tick of
    /// that close (see [`Writers::note_close`]).
    pub fn close(&mut self) -> Option<u64> {
        self.closed = CHANGES.fetch_add(1, Ordering::Relaxed);
        self.is_pending().then_some(self.closed)
    }

    /// Whether a descriptor of it was closed since its last change: its
    /// change is one a program has finished making (a shell's `: > K`
    /// closes before the truncation is committed, at the last close).
    fn closed_since_change(&self) -> bool {
        self.closed > self.changed
    }

    fn touch(&mut self) {
        self.edits += 1;
        self.changed = CHANGES.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether it holds a change not committed yet (and no error).
    fn is_pending(&self) -> bool {
        matches!(self.state, WriteState::Changed | WriteState::Written)
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
        self.touch();
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
        self.touch();
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

/// What a commit left in the store.
#[derive(Debug, Clone)]
pub enum Landed {
    /// This version of the secret (written, or found holding the change).
    Version(Arc<Secret>),
    /// No key was left of a secret the store cannot hold without keys
    /// (KV v1): the secret was deleted.
    Deleted,
    /// Nothing was written: the change lost to a later close (see
    /// [`Writers::commit_unless`]).
    Nothing,
}

/// A write buffer shared by a handle and the operations that look at it.
pub type SharedBuffer = Arc<Mutex<WriteBuffer>>;

/// The writers of one inode.
#[derive(Default)]
struct OpenWriters {
    /// The buffers of its open file descriptions that write.
    buffers: Vec<SharedBuffer>,
    /// When a descriptor of one of them holding a change was last
    /// closed, in the order of [`CHANGES`].
    last_close: u64,
}

/// The commit locks of the secrets being committed, by secret.
type CommitLocks = Mutex<HashMap<SecretPath, Arc<Mutex<()>>>>;

/// A commit's place in line for its secret's lock (taken with
/// [`CommitTurn::lock`]). When it ends, the map's entry goes if nobody
/// else holds or waits for it: every other holder and waiter cloned it
/// under the map's lock, so a count of two (the map's and ours), read
/// under that lock, means none.
struct CommitTurn<'a> {
    locks: &'a CommitLocks,
    secret: &'a SecretPath,
    lock: Arc<Mutex<()>>,
}

impl<'a> CommitTurn<'a> {
    fn new(locks: &'a CommitLocks, secret: &'a SecretPath) -> CommitTurn<'a> {
        let lock = lock(locks)
            .entry(secret.clone())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone();
        CommitTurn {
            locks,
            secret,
            lock,
        }
    }
}

impl Drop for CommitTurn<'_> {
    fn drop(&mut self) {
        let mut locks = lock(self.locks);
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(self.secret);
        }
    }
}

/// The write buffers of open files, and one commit at a time per secret.
#[derive(Default)]
pub struct Writers {
    /// Inode → its writers.
    open: Mutex<HashMap<Ino, OpenWriters>>,
    /// A lock per secret being committed: an entry lives while a commit
    /// holds it or waits for it (see [`CommitTurn`]), so that the map
    /// holds the secrets being written now, not every one ever written.
    commit_locks: CommitLocks,
    /// Commits whose write got no answer and whose outcome a read after it
    /// could not tell either.
    unknown_outcomes: AtomicU64,
}

impl Writers {
    /// Opens a buffer of its own for one more writer of `ino`.
    pub fn start(&self, ino: Ino, buffer: WriteBuffer) -> SharedBuffer {
        let buffer = Arc::new(Mutex::new(buffer));
        lock(&self.open)
            .entry(ino)
            .or_default()
            .buffers
            .push(buffer.clone());
        buffer
    }

    /// A descriptor of `buffer`, a writer of `ino`, is being closed
    /// (FLUSH): noted before its commit starts, so that an older change
    /// whose commit waits for the same secret knows it lost.
    pub fn note_close(&self, ino: Ino, buffer: &SharedBuffer) {
        let closed = lock(buffer).close();
        if let Some(tick) = closed {
            if let Some(w) = lock(&self.open).get_mut(&ino) {
                w.last_close = w.last_close.max(tick);
            }
        }
    }

    /// Whether `buffer`'s change was superseded: a descriptor of it was
    /// closed after its last change, and a descriptor of another writer
    /// of `ino` holding a change was closed after that. The last close
    /// wins, so its change is not committed at its release (which the
    /// kernel sends after close() returned, and may come after the later
    /// close's commit).
    pub fn superseded(&self, ino: Ino, buffer: &SharedBuffer) -> bool {
        let last_close = lock(&self.open).get(&ino).map_or(0, |w| w.last_close);
        let b = lock(buffer);
        b.closed_since_change() && last_close > b.closed
    }

    /// The bytes of the change made last to `ino` when a descriptor of its
    /// buffer was closed since (a change a program finished, not yet
    /// committed: it waits for the last close): what a new writer starts
    /// from, as the next open must see what a closed descriptor changed.
    pub fn closed_change(&self, ino: Ino) -> Option<Vec<u8>> {
        let buffer = self.pending(ino)?;
        let b = lock(&buffer);
        b.closed_since_change().then(|| b.bytes().to_vec())
    }

    /// The buffer of `ino` holding the change made last that no close has
    /// committed yet nor a later close superseded (none once each is
    /// committed, clean, superseded or failed: a
    /// buffer whose writer was told an error will be discarded, and nobody
    /// else may see its bytes). What a reader opening the file sees, and
    /// what `stat` shows, while writers have not closed.
    pub fn pending(&self, ino: Ino) -> Option<SharedBuffer> {
        let (buffers, last_close) = lock(&self.open)
            .get(&ino)
            .map(|w| (w.buffers.clone(), w.last_close))?;
        buffers
            .into_iter()
            .filter_map(|b| {
                let changed = {
                    let w = lock(&b);
                    // A change closed before a later close lost to it.
                    let superseded = w.closed_since_change() && last_close > w.closed;
                    (w.is_pending() && !superseded).then_some(w.changed)
                };
                changed.map(|c| (c, b))
            })
            .max_by_key(|(c, _)| *c)
            .map(|(_, b)| b)
    }

    /// The size of [`pending`](Self::pending)'s buffer.
    pub fn pending_size(&self, ino: Ino) -> Option<u64> {
        let buffer = self.pending(ino)?;
        let size = lock(&buffer).bytes().len() as u64;
        Some(size)
    }

    /// Whether some open file description writes `ino`.
    pub fn is_open(&self, ino: Ino) -> bool {
        lock(&self.open).contains_key(&ino)
    }

    /// A writer of `ino` closed `buffer`; whether it was the last writer.
    pub fn leave(&self, ino: Ino, buffer: &SharedBuffer) -> bool {
        let mut open = lock(&self.open);
        let Some(writers) = open.get_mut(&ino) else {
            return true;
        };
        writers.buffers.retain(|b| !Arc::ptr_eq(b, buffer));
        if writers.buffers.is_empty() {
            open.remove(&ino);
            return true;
        }
        false
    }

    /// How many secrets have a commit lock now (tests).
    #[cfg(test)]
    pub fn commit_locks(&self) -> usize {
        lock(&self.commit_locks).len()
    }

    /// Commits whose outcome stayed unknown, since the mount started.
    pub fn unknown_outcomes(&self) -> u64 {
        self.unknown_outcomes.load(Ordering::Relaxed)
    }

    /// Applies `change` to the latest data of `secret` and writes it back,
    /// on condition that the secret is still as read (check-and-set, where
    /// the store has it), retrying on conflict. A change that leaves the
    /// data as it is writes nothing. Our own commits of one secret run one
    /// at a time. Returns the version written (or found), which the cache
    /// already holds (read-your-writes).
    ///
    /// A write that got no answer in time (it may have been applied) is
    /// found out within the operation's deadline: its request leaves part
    /// of the time for a read after it, which shows our change (done), or
    /// the secret as it was (written again, on the same condition, so that
    /// at most one of the two requests lands). When that read fails too,
    /// the outcome is unknown: [`Error::OutcomeUnknown`], the cached copy
    /// dropped, so that the secret is read again before it is served.
    pub fn commit(
        &self,
        ctx: &OpContext,
        source: &Source,
        secret: &SecretPath,
        change: impl FnMut(&mut SecretData) -> Result<()>,
    ) -> Result<Landed> {
        self.commit_unless(ctx, source, secret, || false, change, |_| {})
    }

    /// [`commit`](Self::commit), unless `lost` says, once this commit holds
    /// the secret's commit lock, that the change lost to a later close:
    /// then nothing is read or written ([`Landed::Nothing`]; a change that
    /// lost must not create the secret, even without keys, where the
    /// later close's commit failed or has not come yet). `landed` is told
    /// what a successful commit left while the lock is still held, so that
    /// what it does (showing the version written) follows commit order.
    pub fn commit_unless(
        &self,
        ctx: &OpContext,
        source: &Source,
        secret: &SecretPath,
        lost: impl FnOnce() -> bool,
        mut change: impl FnMut(&mut SecretData) -> Result<()>,
        landed: impl FnOnce(&Landed),
    ) -> Result<Landed> {
        let _span = tracing::debug_span!("commit", path = %secret).entered();
        // Declared first, dropped last: after the lock below is released.
        let turn = CommitTurn::new(&self.commit_locks, secret);
        let _one_at_a_time = lock(&turn.lock);
        if lost() {
            return Ok(Landed::Nothing);
        }
        let mut unanswered = None;
        let result = Self::attempts(ctx, source, secret, &mut change, &mut unanswered);
        if let Ok(written) = &result {
            landed(written);
        }
        match (result, unanswered) {
            (Err(e), Some(first)) => {
                self.unknown_outcomes.fetch_add(1, Ordering::Relaxed);
                source.forget_secret(secret);
                tracing::warn!(
                    path = %secret,
                    write = %first,
                    then = %e,
                    "outcome unknown: a write got no answer and the store could not tell whether it was applied; the secret is read again before it is served"
                );
                Err(Error::OutcomeUnknown(Box::new(first)))
            }
            (result, _) => result,
        }
    }

    /// The read-change-write rounds of [`commit`](Self::commit); a write
    /// that got no answer is left in `unanswered`.
    fn attempts(
        ctx: &OpContext,
        source: &Source,
        secret: &SecretPath,
        change: &mut impl FnMut(&mut SecretData) -> Result<()>,
        unanswered: &mut Option<Error>,
    ) -> Result<Landed> {
        let capabilities = source.capabilities();
        let check_and_set = capabilities.check_and_set;
        // What the write that got no answer would have left: found in the
        // store, it landed (a rename or a removal cannot be made again to
        // tell: its source is gone once it landed).
        let mut sent: Option<SecretData> = None;
        for attempt in 1..=CAS_ATTEMPTS {
            let latest = match unanswered {
                // The store may be marked down by now: ask it anyway.
                Some(_) => source.read_latest_anyway(ctx, secret)?,
                None => source.read_latest(ctx, secret)?,
            };
            if let (Some(latest), Some(sent)) = (&latest, &sent) {
                if latest.keys == *sent {
                    tracing::debug!(attempt, "the write that got no answer had landed");
                    let latest = latest.clone();
                    return source.found(secret, latest).map(Landed::Version);
                }
            }
            let when = match &latest {
                _ if !check_and_set => Precondition::Any,
                Some(Secret {
                    revision: Some(r), ..
                }) => Precondition::At(r.clone()),
                Some(_) => Precondition::Any,
                None => Precondition::Absent,
            };
            let mut data = latest.as_ref().map(|s| s.keys.clone()).unwrap_or_default();
            change(&mut data)?;
            if let Some(latest) = &latest {
                if latest.keys == data {
                    // Nothing to change (the bytes it holds, or our write
                    // that got no answer): no new version.
                    tracing::debug!(attempt, "the store holds this already: nothing written");
                    return source.found(secret, latest.clone()).map(Landed::Version);
                }
            }
            if data.is_empty() && latest.is_some() && !capabilities.empty_secrets {
                tracing::debug!(attempt, "no key left: the secret is deleted");
                source.delete(ctx, secret)?;
                return Ok(Landed::Deleted);
            }
            // Part of the time is kept for finding out what became of a
            // write that gets no answer.
            let data_sent = data.clone();
            let reserving = ctx.keeping_a_reserve();
            let written = source.write(&reserving, secret, data, &when);
            let not_sent = reserving.deadline().not_sent();
            match written {
                Ok(written) => {
                    tracing::debug!(attempt, revision = ?written.revision, "committed");
                    return Ok(Landed::Version(written));
                }
                Err(Error::CasConflict) => {
                    tracing::debug!(attempt, "check-and-set conflict: re-reading");
                }
                Err(e) if may_have_landed(&e) && !not_sent => {
                    tracing::debug!(attempt, error = %e, "a write got no answer: reading to find out");
                    unanswered.get_or_insert(e);
                    sent = Some(data_sent);
                }
                Err(e) => return Err(e),
            }
        }
        Err(unanswered.clone().unwrap_or(Error::CasConflict))
    }
}

/// Whether a write that failed with `e` may still have been applied: its
/// request went out and no answer came (in time, or at all).
fn may_have_landed(e: &Error) -> bool {
    matches!(
        e,
        Error::Timeout(_) | Error::OutOfTime(_) | Error::Unanswered(_)
    )
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
