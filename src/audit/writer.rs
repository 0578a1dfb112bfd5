//! The thread that writes the audit log, and what it knows of its health.
//!
//! Request threads format their record and wait for this thread's answer
//! before they reply: a record is written (`write(2)` returned) before the
//! operation it records is answered, or the operation fails. Records that
//! arrive while a write is under way are written together by the next
//! one (group commit), so that many waiting threads cost one write.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::file::LogFile;

/// The most one write takes of the records waiting.
const BATCH_BYTES: usize = 256 * 1024;

/// What the writer is asked to do.
pub(super) enum Message {
    /// Write this line (ending in `\n`) and answer how it went.
    Record(String, Sender<Result<(), String>>),
    /// Answer once everything sent before is written.
    Flush(Sender<()>),
    /// Open the file at the log's path again (after a rotation).
    Reopen,
}

/// Whether the log records, and why not.
#[derive(Default)]
pub(super) struct Health {
    /// Why records cannot be written now, and since when.
    failing: Mutex<Option<(String, SystemTime)>>,
    /// Records that could not be written (their operations failed).
    unwritten: AtomicU64,
}

impl Health {
    fn failed(&self, reason: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.as_ref().is_none_or(|(r, _)| r != reason) {
            tracing::error!(
                reason,
                "the audit log cannot record: operations it would record fail (EIO)"
            );
            *failing = Some((reason.to_string(), SystemTime::now()));
        }
    }

    fn recovered(&self) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((reason, _)) = failing.take() {
            tracing::warn!(was = %reason, "the audit log records again");
        }
    }

    /// Why the log cannot record now (`None` while it records).
    pub(super) fn failing(&self) -> Option<(String, SystemTime)> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many records could not be written.
    pub(super) fn unwritten(&self) -> u64 {
        self.unwritten.load(Ordering::Relaxed)
    }
}

/// Where records go.
pub(super) struct Sinks {
    pub(super) path: PathBuf,
    /// `None` after a reopen refused the file at the path.
    pub(super) file: Option<LogFile>,
    pub(super) syslog: bool,
    pub(super) health: Arc<Health>,
}

/// The writer thread: until the channel closes.
pub(super) fn run(rx: &Receiver<Message>, mut sinks: Sinks) {
    let mut held = None;
    loop {
        let message = match held.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            },
        };
        match message {
            Message::Record(line, ack) => {
                let mut text = line;
                let mut acks = vec![ack];
                // Everything waiting goes in the same write.
                while text.len() < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(Message::Record(line, ack)) => {
                            text.push_str(&line);
                            acks.push(ack);
                        }
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let result = sinks.write(&text, acks.len());
                for ack in acks {
                    // A requester that is gone needs no answer.
                    let _ = ack.send(result.clone());
                }
            }
            Message::Flush(ack) => {
                let _ = ack.send(());
            }
            Message::Reopen => sinks.reopen(),
        }
    }
}

impl Sinks {
    /// Writes `records` lines in `text` to the file (whole or not at all),
    /// then to syslog.
    fn write(&mut self, text: &str, records: usize) -> Result<(), String> {
        let written = match &mut self.file {
            None => Err(self
                .health
                .failing()
                .map_or_else(|| "the audit log is closed".to_string(), |(r, _)| r)),
            Some(file) => file
                .append(text.as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", self.path.display())),
        };
        match &written {
            Ok(()) => self.health.recovered(),
            Err(reason) => {
                self.health
                    .unwritten
                    .fetch_add(records as u64, Ordering::Relaxed);
                self.health.failed(reason);
                return written;
            }
        }
        if self.syslog {
            for line in text.lines() {
                to_syslog(line);
            }
        }
        Ok(())
    }

    /// Opens the file at the path again: a rotated log goes on in a new
    /// file there. A file refused there (see [`LogFile::open`]) is not
    /// written to, nor is the old one: records fail until a reopen works.
    fn reopen(&mut self) {
        match LogFile::open(&self.path) {
            Ok(file) => {
                self.file = Some(file);
                tracing::info!(path = %self.path.display(), "audit log reopened");
                self.health.recovered();
            }
            Err(e) => {
                self.file = None;
                self.health
                    .failed(&format!("cannot reopen {}: {e}", self.path.display()));
            }
        }
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
