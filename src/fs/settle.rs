//! What is left for later, and settled once it is known that nothing will
//! follow: a tool's temporary file nobody renamed or removed becomes a key
//! under its own name once it is closed and the program that created it
//! has exited, or [`SETTLE_AFTER`] after its last close while that program
//! keeps running (or is not known).
//!
//! A program's exit is learned from the kernel, not by looking again and
//! again: one thread blocks in `poll(2)` on a pidfd of each such program
//! (readable once it has exited) and on a pipe that wakes it when a
//! temporary file is closed; its only timeout is the nearest
//! [`SETTLE_AFTER`] deadline, and with nothing pending it sleeps until
//! woken. A read-only mount, where nothing can be pending, starts no
//! thread. (A key's removal is written before `unlink` returns.)

use crate::fs::OpContext;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Weak};
use std::time::Instant;

use secrecy::{ExposeSecret, SecretBox};

use super::halt::Halt;
use super::local::{Fate, Scratch, SETTLE_AFTER};
use super::{lock, Background, FileRef, SecretFs};
use crate::error::Error;
use crate::store::SecretPath;

/// Whether the process `pid` has exited (or is a zombie), read from
/// /proc: where no pidfd can be had.
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which may hold spaces and
        // parentheses: it is the first field after the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// How the exit of one program is learned.
enum Watch {
    /// Its pidfd: readable once it has exited.
    Pidfd(OwnedFd),
    /// It was gone already.
    Gone,
    /// No pidfd (an old kernel): /proc is asked, and its files wait for
    /// their deadline.
    Proc,
}

impl Watch {
    fn of(pid: u32) -> Watch {
        let Ok(raw) = libc::pid_t::try_from(pid) else {
            return Watch::Proc;
        };
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new
        // descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        match RawFd::try_from(fd) {
            // SAFETY: a descriptor just returned to us, owned by nobody else.
            Ok(fd) if fd >= 0 => Watch::Pidfd(unsafe { OwnedFd::from_raw_fd(fd) }),
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => Watch::Gone,
            _ => Watch::Proc,
        }
    }

    fn exited(&self, pid: u32) -> bool {
        match self {
            Watch::Pidfd(fd) => readable(fd.as_raw_fd(), 0),
            Watch::Gone => true,
            Watch::Proc => has_exited(pid),
        }
    }
}

/// Whether `fd` is readable (or hung up) within `timeout_ms`.
fn readable(fd: RawFd, timeout_ms: libc::c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    n > 0 && p.revents != 0
}

/// The exits a settler has learned of, by process id.
#[derive(Default)]
struct Exits(HashMap<u32, Watch>);

impl Exits {
    fn exited(&mut self, pid: u32) -> bool {
        self.0
            .entry(pid)
            .or_insert_with(|| Watch::of(pid))
            .exited(pid)
    }
}

/// What the settler waits for after a round: the exits of these
/// programs, and the nearest deadline.
#[derive(Default)]
struct Waiting {
    pids: Vec<u32>,
    until: Option<Instant>,
}

/// How the core wakes the settler thread (when it runs).
#[derive(Default)]
pub struct Settler {
    /// The pipe's writing end; its reading end is the thread's.
    wake: Option<OwnedFd>,
}

impl Settler {
    /// Wakes the thread reading the other end of `waker`'s pipe.
    pub(super) fn waking(waker: OwnedFd) -> Settler {
        Settler { wake: Some(waker) }
    }

    /// Wakes the thread: something may have become due.
    pub(super) fn wake(&self) {
        if let Some(fd) = &self.wake {
            // SAFETY: one byte from a valid buffer to our own pipe. A full
            // (non-blocking) pipe already holds a wake-up: EAGAIN is fine.
            let _ = unsafe { libc::write(fd.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
    }
}

/// A pipe (reading end, writing end), both non-blocking and close-on-exec.
pub(super) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2(2) fills two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: descriptors just returned to us, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Empties the (non-blocking) pipe.
fn drain(fd: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: reads into a buffer of its length.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

impl SecretFs {
    /// Settles what is due; with `all`, everything pending, as if every
    /// program had exited (tests, and the mount's end).
    pub fn settle(&self, all: bool) {
        self.settle_due(&mut Exits::default(), all);
    }

    /// Stores each closed temporary file whose creator has exited (or
    /// whose deadline passed); says what the rest wait for.
    fn settle_due(&self, exits: &mut Exits, all: bool) -> Waiting {
        let mut waiting = Waiting::default();
        for (path, file) in self.names.tentative() {
            let (closed, caller) = {
                let f = lock(&file);
                match f.fate {
                    Fate::Tentative { caller } => (f.closed, caller),
                    Fate::MemoryOnly => continue,
                }
            };
            // Still open (the namespace and this loop hold one reference
            // each; every open handle another), or never closed yet: its
            // last release wakes the settler.
            let Some(closed) = closed else { continue };
            if Arc::strong_count(&file) > 2 {
                continue;
            }
            let deadline = closed + SETTLE_AFTER;
            let due =
                all || Instant::now() >= deadline || caller.is_some_and(|pid| exits.exited(pid));
            if due {
                // Each write has a deadline of its own.
                self.keep_tentative(&OpContext::own_operation(), &path, &file);
            } else {
                waiting.pids.extend(caller);
                waiting.until = Some(waiting.until.map_or(deadline, |u| u.min(deadline)));
            }
        }
        waiting
    }

    /// A tool's temporary file nobody renamed or removed: it becomes a key
    /// under its own name. If it cannot, it stays in memory and the
    /// failure is logged.
    fn keep_tentative(&self, ctx: &OpContext, path: &SecretPath, file: &Scratch) {
        let memory_only = |e: &Error| {
            lock(file).fate = Fate::MemoryOnly;
            if matches!(e, Error::OutcomeUnknown(_)) {
                tracing::error!(path = %format!("/{path}"), error = %e, "a file created with O_EXCL got no answer when written as a key: the store may or may not hold it; it stays in memory too");
            } else {
                tracing::error!(path = %format!("/{path}"), error = %e, "a file created with O_EXCL could not be written as a key: it stays in memory only");
            }
            self.record_error(format!("write /{path}: {e}"));
        };
        let Some((dir, name)) = path.split_last() else {
            return;
        };
        let target: Option<FileRef> = self
            .view_creating(name)
            .and_then(|view| self.file_ref(&dir, view, name))
            .filter(|t| !t.secret.is_root());
        let Some(target) = target else {
            memory_only(&Error::Invalid(format!(
                "{name:?} cannot be a file of a secret"
            )));
            return;
        };
        let bytes = SecretBox::new(Box::new(lock(file).data.expose_secret().clone()));
        let view = self.views.get(target.view);
        let result = self.commit(ctx, &target.secret, |data| {
            view.write(data, &target.name, bytes.expose_secret().clone())
        });
        match result {
            Ok(_) => {
                let became = self.names.scratch_became_file(
                    path,
                    (file, bytes.expose_secret()),
                    (&target.secret, &self.file_path(&target)),
                    target.kind(),
                );
                if became {
                    tracing::debug!(path = %format!("/{path}"), "a temporary file nobody renamed is now a key");
                } else if self.names.scratch(path).is_none() {
                    // Renamed or removed meanwhile: the key just stored is
                    // no file of anyone's.
                    let removed =
                        self.commit(ctx, &target.secret, |data| view.remove(data, &target.name));
                    if let Err(e) = removed {
                        tracing::error!(path = %format!("/{path}"), error = %e, "a temporary file renamed while it was stored left a key behind");
                        self.record_error(format!("unlink /{path}: {e}"));
                    }
                }
                // Else written meanwhile: stored again at a later round.
            }
            Err(e) => memory_only(&e),
        }
    }

    /// Starts the thread that settles what is due (see the module's
    /// documentation), woken through `wakes` (the reading end of the pipe
    /// whose writing end the core's [`Settler`] holds). The builder starts
    /// none on a read-only core.
    pub(super) fn start_settler(self: &Arc<Self>, wakes: OwnedFd, background: &mut Background) {
        let (fs, halt) = (Arc::downgrade(self), background.halt());
        let spawned = std::thread::Builder::new()
            .name("secretfs-settle".into())
            .spawn(move || settle_thread(&fs, &wakes, &halt));
        match spawned {
            Ok(thread) => background.spawned(thread),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the settler: temporary files left alone wait for the mount's end")
            }
        }
    }
}

/// The settler: settles what is due, then sleeps in poll(2) until a
/// program it waits for exits, a temporary file is closed, or the nearest
/// deadline. Ends when told to, or when the filesystem is gone.
fn settle_thread(fs: &Weak<SecretFs>, wakes: &OwnedFd, halt: &Halt) {
    let mut exits = Exits::default();
    loop {
        if halt.is_halted() {
            return;
        }
        let waiting = {
            let Some(fs) = fs.upgrade() else { return };
            drain(wakes.as_raw_fd());
            fs.settle_due(&mut exits, false)
        };
        // Programs nothing waits for any more: their pidfds are closed.
        exits.0.retain(|pid, _| waiting.pids.contains(pid));
        let mut fds = vec![libc::pollfd {
            fd: wakes.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for pid in &waiting.pids {
            if let Some(Watch::Pidfd(fd)) = exits.0.get(pid) {
                fds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        // Rounded up: woken before the deadline, the round finds nothing due.
        let timeout = waiting.until.map_or(-1, |until| {
            let left = until.saturating_duration_since(Instant::now());
            libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
        });
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        halt.dozing();
        // SAFETY: `fds` holds `nfds` valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout) };
        // Read before anything else can change errno.
        let failed = (n < 0).then(std::io::Error::last_os_error);
        halt.woke(halt.is_halted());
        if let Some(e) = failed.filter(|e| e.raw_os_error() != Some(libc::EINTR)) {
            tracing::warn!(error = %e, "the settler cannot wait: it looks again after a pause");
            std::thread::sleep(SETTLE_AFTER);
        }
        // The pipe hung up: the filesystem is gone (the next round ends).
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::inode::NodeKind;

    #[test]
    fn a_temporary_file_written_or_renamed_while_stored_does_not_become_the_key() {
        use crate::fs::inode::ROOT_INO;
        use crate::fs::namespace::{Name, Namespace};
        use secrecy::ExposeSecretMut;
        let names = Namespace::new(SecretPath::root());
        let path = SecretPath::parse("app/tmpabc");
        let at = Name {
            parent: ROOT_INO,
            name: "tmpabc",
        };
        let tentative = Fate::Tentative { caller: None };
        let (_, file) = names.create_scratch(at, path.clone(), tentative);
        *lock(&file).data.expose_secret_mut() = b"stored".to_vec();
        let kind = || NodeKind::File {
            secret: SecretPath::parse("app"),
            view: crate::fs::view::Views::for_layout()
                .iter()
                .next()
                .map(|(id, _)| id)
                .expect("the keys view"),
            name: "tmpabc".into(),
        };
        let target = (&SecretPath::parse("app"), &path);
        // Written again while its old bytes were being stored: it stays.
        *lock(&file).data.expose_secret_mut() = b"newer".to_vec();
        assert!(!names.scratch_became_file(&path, (&file, b"stored"), target, kind()));
        assert!(names.scratch(&path).is_some());
        // Renamed away meanwhile (another file now): not it either.
        names.remove_scratch(&path);
        assert!(!names.scratch_became_file(&path, (&file, b"newer"), target, kind()));
        // Unchanged: it becomes the key.
        let (_, again) = names.create_scratch(at, path.clone(), tentative);
        *lock(&again).data.expose_secret_mut() = b"same".to_vec();
        assert!(names.scratch_became_file(&path, (&again, b"same"), target, kind()));
        assert!(names.scratch(&path).is_none());
    }

    #[test]
    fn this_thread_runs_and_a_thread_that_never_was_has_exited() {
        let me = std::process::id();
        assert!(!has_exited(me));
        assert!(has_exited(u32::MAX));
    }
}
