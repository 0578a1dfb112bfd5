//! Writing the audit log: group commit by the requests themselves, and
//! what the log knows of its health.
//!
//! A request adds its line to the batch that waits and waits for that
//! batch to be written; when no write is under way, it writes the batch
//! itself (every line that waits, in one write) and tells the others.
//! One request alone writes its own line at once, with no thread to wake;
//! many at once share a write. A request returns only once its line was
//! written (`write(2)` returned) or could not be.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::file::LogFile;

/// Locks `m`, also after a panic elsewhere (the state stays consistent:
/// every change to it is made whole under the lock).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The batches: what waits to be written and what was.
#[derive(Default)]
struct Batches {
    /// The lines of the next batch, each ending in `\n`.
    waiting: String,
    /// How many records `waiting` holds.
    records: usize,
    /// The number of the next batch (the one `waiting` becomes).
    next: u64,
    /// Every batch numbered below this one is written, or failed.
    done_below: u64,
    /// A request is writing a batch now.
    writing: bool,
    /// Batches that failed: why, and how many of their requests have not
    /// been told yet.
    failed: HashMap<u64, (String, usize)>,
}

/// Where records go.
struct Sinks {
    /// `None` after a reopen refused the file at the path.
    file: Option<LogFile>,
    syslog: bool,
}

/// The audit log's writing side, shared by every request.
pub(super) struct Writer {
    path: PathBuf,
    batches: Mutex<Batches>,
    /// Told whenever a batch is done.
    done: Condvar,
    /// Locked by the one request writing (and by a reopen).
    sinks: Mutex<Sinks>,
    /// Why records cannot be written now, and since when.
    failing: Mutex<Option<(String, SystemTime)>>,
    /// Records that could not be written (their operations failed).
    unwritten: std::sync::atomic::AtomicU64,
}

impl Writer {
    pub(super) fn new(path: PathBuf, file: LogFile, syslog: bool) -> Writer {
        Writer {
            path,
            batches: Mutex::default(),
            done: Condvar::new(),
            sinks: Mutex::new(Sinks {
                file: Some(file),
                syslog,
            }),
            failing: Mutex::default(),
            unwritten: Default::default(),
        }
    }

    /// Writes `line` (ending in `\n`), with whatever else waits; returns
    /// once it is written, or why it could not be.
    pub(super) fn write(&self, line: &str) -> Result<(), String> {
        let mut b = lock(&self.batches);
        b.waiting.push_str(line);
        b.records += 1;
        let mine = b.next;
        loop {
            if b.done_below > mine {
                let Some((reason, untold)) = b.failed.get_mut(&mine) else {
                    return Ok(());
                };
                let reason = reason.clone();
                *untold -= 1;
                if *untold == 0 {
                    b.failed.remove(&mine);
                }
                return Err(reason);
            }
            if !b.writing {
                // No batch is being written, and ours is not done: ours
                // is the one waiting. Write it.
                let text = std::mem::take(&mut b.waiting);
                let records = std::mem::take(&mut b.records);
                b.next += 1;
                b.writing = true;
                drop(b);
                let result = self.write_batch(&text, records);
                let mut b = lock(&self.batches);
                b.writing = false;
                b.done_below = mine + 1;
                if let Err(reason) = &result {
                    if records > 1 {
                        b.failed.insert(mine, (reason.clone(), records - 1));
                    }
                }
                self.done.notify_all();
                return result;
            }
            b = self.done.wait(b).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Writes one batch of `records` lines to the file (whole or not at
    /// all), then to syslog.
    fn write_batch(&self, text: &str, records: usize) -> Result<(), String> {
        let mut sinks = lock(&self.sinks);
        let written = match &mut sinks.file {
            None => Err(self
                .failing()
                .map_or_else(|| "the audit log is closed".to_string(), |(r, _)| r)),
            Some(file) => file
                .append(text.as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", self.path.display())),
        };
        if let Err(reason) = &written {
            self.unwritten.fetch_add(
                u64::try_from(records).unwrap_or(u64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
            self.failed(reason);
            return written;
        }
        self.recovered();
        if sinks.syslog {
            for line in text.lines() {
                to_syslog(line);
            }
        }
        Ok(())
    }

    /// Opens the file at the path again: a rotated log goes on in a new
    /// file there. A file refused there (see [`LogFile::open`]) is not
    /// written to, nor is the old one: records fail until a reopen works.
    pub(super) fn reopen(&self) {
        let mut sinks = lock(&self.sinks);
        match LogFile::open(&self.path) {
            Ok(file) => {
                sinks.file = Some(file);
                tracing::info!(path = %self.path.display(), "audit log reopened");
                self.recovered();
            }
            Err(e) => {
                sinks.file = None;
                self.failed(&format!("cannot reopen {}: {e}", self.path.display()));
            }
        }
    }

    /// Waits (at most `within`) until no record waits to be written.
    pub(super) fn settle(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut b = lock(&self.batches);
        while b.writing || b.records > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            b = self
                .done
                .wait_timeout(b, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    fn failed(&self, reason: &str) {
        let mut failing = lock(&self.failing);
        if failing.as_ref().is_none_or(|(r, _)| r != reason) {
            tracing::error!(
                reason,
                "the audit log cannot record: operations it would record fail (EIO)"
            );
            *failing = Some((reason.to_string(), SystemTime::now()));
        }
    }

    fn recovered(&self) {
        if let Some((reason, _)) = lock(&self.failing).take() {
            tracing::warn!(was = %reason, "the audit log records again");
        }
    }

    /// The log's path.
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Why the log cannot record now (`None` while it records).
    pub(super) fn failing(&self) -> Option<(String, SystemTime)> {
        lock(&self.failing).clone()
    }

    /// How many records could not be written.
    pub(super) fn unwritten(&self) -> u64 {
        self.unwritten.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Sends one line to syslog (`LOG_AUTHPRIV | LOG_NOTICE`).
fn to_syslog(line: &str) {
    // JSON text holds no NUL (serde_json escapes it).
    if let Ok(text) = CString::new(line) {
        // SAFETY: a constant format and a NUL-terminated argument.
        unsafe {
            libc::syslog(
                libc::LOG_AUTHPRIV | libc::LOG_NOTICE,
                c"%s".as_ptr(),
                text.as_ptr(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_of_a_failed_batch_is_told_and_nothing_is_kept_for_them() {
        let full = std::fs::OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .expect("/dev/full");
        let writer = std::sync::Arc::new(Writer::new(
            "/dev/full".into(),
            LogFile::unchecked(full),
            false,
        ));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| writer.write("{}\n"))
                        .filter(|r| r.as_ref().is_err_and(|e| e.contains("No space left")))
                        .count()
                })
            })
            .collect();
        let told: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(told, 400);
        assert_eq!(writer.unwritten(), 400);
        assert!(writer.failing().is_some());
        let b = lock(&writer.batches);
        assert!(b.failed.is_empty() && b.records == 0 && !b.writing);
    }
}
