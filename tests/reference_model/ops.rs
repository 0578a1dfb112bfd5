//! The operations a case is made of, and how one step applies each to
//! the core (through the harness) and to the reference, comparing every
//! answer on the way.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use secretfs::fs::{Creating, OpContext};
use secretfs::store::Permissions;

use crate::harness::{errno, expect, reach, Subject};
use crate::reference::*;

/// One write call of a program: at an offset picked within the file (or
/// just past its end), with bytes that are not UTF-8 when `garbage`.
#[derive(Debug, Clone)]
pub(crate) struct WriteCall {
    pub(crate) offset_pick: u8,
    pub(crate) bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// open (creating when missing), write calls, close.
    WriteFile {
        dir: &'static str,
        name: &'static str,
        truncate: bool,
        writes: Vec<WriteCall>,
    },
    /// Two programs open one existing key for writing, write in turns,
    /// and close one after the other: each close commits its own buffer.
    /// With `late_release`, both closes come before either RELEASE (the
    /// kernel sends RELEASE after close() returned): the last close wins,
    /// and a truncation closed first is not written at its release.
    TwoWriters {
        dir: &'static str,
        name: &'static str,
        first: Writer,
        second: Writer,
        late_release: bool,
    },
    /// `: > K; printf XY 1<> K`: a truncation closed (its RELEASE not yet
    /// come), then an open without `O_TRUNC` that starts from it.
    ClosedTruncationThenWrite {
        dir: &'static str,
        name: &'static str,
        writes: Vec<WriteCall>,
    },
    Unlink {
        dir: &'static str,
        name: &'static str,
    },
    /// `mkstemp` + `os.replace`, rsync: create a temporary name with
    /// `O_EXCL`, write, close, rename onto a key; on failure remove it.
    TempThenRename {
        dir: &'static str,
        temp: &'static str,
        writes: Vec<WriteCall>,
        to_dir: &'static str,
        to_name: &'static str,
        no_replace: bool,
    },
    /// `install`: remove the key, create it again with `O_EXCL`, write,
    /// close.
    Replace {
        dir: &'static str,
        name: &'static str,
        writes: Vec<WriteCall>,
    },
    Rename {
        dir: &'static str,
        name: &'static str,
        to_dir: &'static str,
        to_name: &'static str,
        no_replace: bool,
    },
    Mkdir {
        path: &'static str,
    },
    Rmdir {
        path: &'static str,
    },
    /// `bao kv put` by someone else, then the TTL passes.
    ExternalPut {
        secret: &'static str,
        data: BTreeMap<&'static str, Value>,
    },
    /// `bao kv delete` by someone else, then the TTL passes.
    ExternalDelete {
        secret: &'static str,
    },
    /// `bao kv undelete` by someone else, then the TTL passes.
    ExternalUndelete {
        secret: &'static str,
    },
    /// Time passes.
    Advance {
        secs: u64,
    },
    /// The kernel drops every cached name (memory pressure, `echo 2 >
    /// drop_caches`, `--max-inodes`) and forgets every inode: directories
    /// first, while it still holds the files in them (open, say), which
    /// must read as before; then the files.
    KernelForgets,
    /// Issue 20 §2's third sequence: two programs open an existing key for
    /// writing and write, `rm` removes the key and `rmdir` its directory,
    /// and the writers close (`closes`) before the `rm`, between `rm` and
    /// `rmdir`, or after the `rmdir`, the second first or not. What they
    /// write to a removed key goes nowhere, as on a local disk.
    WritersAcrossRemoval {
        dir: &'static str,
        name: &'static str,
        first: Writer,
        second: Writer,
        closes: Closes,
        second_closes_first: bool,
    },
    /// The store fails every write (HTTP 500) while a program writes a
    /// key and closes it: `close` says EIO, and nothing changes.
    FailedWrite {
        dir: &'static str,
        name: &'static str,
        writes: Vec<WriteCall>,
    },
    /// The store fails every write and delete while `rm` removes a key:
    /// EIO, and the key stays.
    FailedUnlink {
        dir: &'static str,
        name: &'static str,
    },
    /// The store fails every write while `mv` renames a key within its
    /// secret: EIO, and both names stay as they were.
    FailedRename {
        dir: &'static str,
        name: &'static str,
        to_name: &'static str,
    },
    /// The store fails every delete while `rmdir` removes an empty
    /// secret: EIO, and the secret stays.
    FailedRmdir {
        path: &'static str,
    },
    /// An access rule: the token's policy makes one secret read-only
    /// while a program changes one of its keys (`unlink` with `remove`,
    /// else an open for writing): refused with EACCES where the program
    /// sees it (at `open`, at `unlink`), nothing changes. The TTL passes
    /// before (so that what the token may do is asked again) and after.
    Refused {
        dir: &'static str,
        name: &'static str,
        remove: bool,
    },
}

/// When the writers of [`Op::WritersAcrossRemoval`] close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closes {
    BeforeRm,
    AfterRm,
    AfterRmdir,
}

/// The error the store answers while it fails: EIO, and neither an outage
/// (which would mark the store down) nor a write that may have landed.
fn store_error() -> secretfs::error::Error {
    secretfs::error::Error::Protocol("HTTP 500: injected by the model".into())
}

/// Runs `f` while the store fails every write and delete.
fn with_failing_writes<T>(s: &Subject, f: impl FnOnce() -> T) -> T {
    s.store.fail_writes(store_error());
    let result = f();
    s.store.heal();
    result
}

/// Whether `name` in `dir` is a key the store holds that shows as such
/// (not a file living in memory, not hidden behind an editor's backup).
fn store_key(model: &Model, dir: &str, name: &str) -> bool {
    let in_memory = model.scratch.get(dir).is_some_and(|f| f.contains_key(name));
    !in_memory
        && !model.displaced.contains_key(&join(dir, name))
        && model.live(dir).is_some_and(|d| d.contains_key(name))
}

/// One of [`Op::TwoWriters`]: how it opens, what it writes.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pub(crate) truncate: bool,
    pub(crate) writes: Vec<WriteCall>,
}

pub(crate) fn step(model: &mut Model, s: &Subject, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::WriteFile {
            dir,
            name,
            truncate,
            writes,
        } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            let existing = model.file(dir, name);
            // A file living in memory (a key moved aside): written there.
            let in_memory = model
                .scratch
                .get(*dir)
                .is_some_and(|f| f.contains_key(*name));
            let (fh, base) = match &existing {
                Some(bytes) => {
                    let ino = errno(s.look(parent, name))
                        .map_err(|e| TestCaseError::fail(format!("lookup {name}: {e}")))?
                        .ino;
                    let fh = errno(s.fs.open(&OpContext::background(), ino, true, *truncate))
                        .map_err(|e| TestCaseError::fail(format!("open {name}: {e}")))?;
                    (fh, if *truncate { Vec::new() } else { bytes.clone() })
                }
                None => {
                    prop_assert_eq!(
                        s.look(parent, name).map(|_| ()).map_err(|e| e.errno()),
                        Err(libc::ENOENT),
                        "lookup of missing /{}/{}",
                        dir,
                        name
                    );
                    let (_, fh) = errno(s.fs.create(&OpContext::background(), parent, name))
                        .map_err(|e| TestCaseError::fail(format!("create {name}: {e}")))?;
                    // A key an editor moved aside is written anew: should
                    // that fail, the store's value shows again.
                    model.displaced.remove(&join(dir, name));
                    (fh, Vec::new())
                }
            };
            let (buf, offsets) = apply_writes(base.clone(), writes);
            // A key's value is UTF-8: a write that leaves bytes that never
            // can be (not just a character cut at the end) fails at once,
            // and the change is never saved.
            let mut partial = base;
            let mut refused = false;
            for (w, offset) in writes.iter().zip(offsets) {
                write_at(&mut partial, offset, &w.bytes);
                let broken = broken_utf8(&partial);
                let want = if broken && !in_memory {
                    refused = true;
                    Err(libc::EILSEQ)
                } else {
                    Ok(w.bytes.len() as u32)
                };
                let n = errno(s.fs.write_handle(fh, offset, &w.bytes));
                prop_assert_eq!(n, want, "write");
            }
            let flushed = errno(s.fs.flush(&OpContext::background(), fh));
            s.fs.release(&OpContext::background(), fh);
            if in_memory {
                model
                    .scratch
                    .entry(dir.to_string())
                    .or_default()
                    .insert(name.to_string(), buf);
                return expect("close of a scratch file", flushed, Ok(()));
            }
            let changed = existing.is_none() || *truncate || !writes.is_empty();
            if !changed {
                return expect("close without change", flushed, Ok(()));
            }
            if refused {
                return expect("close after a refused write", flushed, Err(libc::EILSEQ));
            }
            let committed = model.commit_key(dir, name, &buf);
            // Only a close after writes reports; a change without writes
            // is committed at release, whose errors are only logged.
            let want = if writes.is_empty() { Ok(()) } else { committed };
            expect("close", flushed, want)
        }
        Op::TwoWriters {
            dir,
            name,
            first,
            second,
            late_release,
        } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            let Some(base) = model.file(dir, name) else {
                return Ok(());
            };
            let ino = errno(s.look(parent, name))
                .map_err(|e| TestCaseError::fail(format!("lookup {name}: {e}")))?
                .ino;
            let writers = [first, second];
            let mut open = Vec::new();
            for w in writers {
                let fh = errno(s.fs.open(&OpContext::background(), ino, true, w.truncate))
                    .map_err(|e| TestCaseError::fail(format!("open {name}: {e}")))?;
                let start = if w.truncate { Vec::new() } else { base.clone() };
                // (buffer, refused)
                open.push((fh, start, false));
            }
            // Write calls in turns: first, second, first, ...
            let turns = first.writes.len().max(second.writes.len());
            for i in 0..turns {
                for (w, (fh, buf, refused)) in writers.iter().zip(open.iter_mut()) {
                    let Some(call) = w.writes.get(i) else {
                        continue;
                    };
                    let offset = u64::from(call.offset_pick) % (buf.len() as u64 + 2);
                    let (start, end) = (offset as usize, offset as usize + call.bytes.len());
                    if buf.len() < end {
                        buf.resize(end, 0);
                    }
                    buf[start..end].copy_from_slice(&call.bytes);
                    let broken = std::str::from_utf8(buf)
                        .err()
                        .is_some_and(|e| e.error_len().is_some());
                    // A writer told an error never commits.
                    let want = if broken {
                        *refused = true;
                        Err(libc::EILSEQ)
                    } else {
                        Ok(call.bytes.len() as u32)
                    };
                    let got = errno(s.fs.write_handle(*fh, offset, &call.bytes));
                    prop_assert_eq!(got, want, "write");
                }
            }
            // Whether each writer's close held a change (a refused writer's
            // buffer holds none: it is never written).
            let changes: Vec<bool> = writers
                .iter()
                .zip(&open)
                .map(|(w, (_, _, refused))| !refused && (w.truncate || !w.writes.is_empty()))
                .collect();
            // Truncations without a write wait for their RELEASE.
            let mut at_release = Vec::new();
            let mut unreleased = Vec::new();
            for (i, (w, (fh, buf, refused))) in writers.iter().zip(open).enumerate() {
                let flushed = errno(s.fs.flush(&OpContext::background(), fh));
                if *late_release {
                    unreleased.push(fh);
                } else {
                    s.fs.release(&OpContext::background(), fh);
                }
                if refused {
                    expect("close after a refused write", flushed, Err(libc::EILSEQ))?;
                    continue;
                }
                if !w.truncate && w.writes.is_empty() {
                    expect("close without change", flushed, Ok(()))?;
                    continue;
                }
                if w.writes.is_empty() {
                    expect("close of a truncation", flushed, Ok(()))?;
                    // Lost to a later close holding a change, if any.
                    let superseded = *late_release && changes[i + 1..].iter().any(|c| *c);
                    if !superseded {
                        if *late_release {
                            at_release.push(buf);
                        } else {
                            let _ = model.commit_key(dir, name, &buf);
                        }
                    }
                    continue;
                }
                let committed = model.commit_key(dir, name, &buf);
                expect("close", flushed, committed)?;
            }
            for fh in unreleased {
                s.fs.release(&OpContext::background(), fh);
            }
            for buf in at_release {
                let _ = model.commit_key(dir, name, &buf);
            }
            Ok(())
        }
        Op::ClosedTruncationThenWrite { dir, name, writes } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            if model.file(dir, name).is_none() {
                return Ok(());
            }
            let ino = errno(s.look(parent, name))
                .map_err(|e| TestCaseError::fail(format!("lookup {name}: {e}")))?
                .ino;
            let colon = errno(s.fs.open(&OpContext::background(), ino, true, true))
                .map_err(|e| TestCaseError::fail(format!("open {name}: {e}")))?;
            expect(
                "close of : > K",
                errno(s.fs.flush(&OpContext::background(), colon)),
                Ok(()),
            )?;
            let printf = errno(s.fs.open(&OpContext::background(), ino, true, false))
                .map_err(|e| TestCaseError::fail(format!("open {name} again: {e}")))?;
            // It starts from what the closed descriptor left: nothing.
            let mut buf = Vec::new();
            let mut refused = false;
            for call in writes {
                let offset = u64::from(call.offset_pick) % (buf.len() as u64 + 2);
                let (start, end) = (offset as usize, offset as usize + call.bytes.len());
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[start..end].copy_from_slice(&call.bytes);
                let broken = std::str::from_utf8(&buf)
                    .err()
                    .is_some_and(|e| e.error_len().is_some());
                let want = if broken {
                    refused = true;
                    Err(libc::EILSEQ)
                } else {
                    Ok(call.bytes.len() as u32)
                };
                let got = errno(s.fs.write_handle(printf, offset, &call.bytes));
                prop_assert_eq!(got, want, "write");
            }
            let flushed = errno(s.fs.flush(&OpContext::background(), printf));
            s.fs.release(&OpContext::background(), colon);
            s.fs.release(&OpContext::background(), printf);
            if refused {
                expect("close after a refused write", flushed, Err(libc::EILSEQ))?;
                // The truncation alone is written, at its release.
                let _ = model.commit_key(dir, name, b"");
            } else if writes.is_empty() {
                expect("close without change", flushed, Ok(()))?;
                let _ = model.commit_key(dir, name, b"");
            } else {
                let committed = model.commit_key(dir, name, &buf);
                expect("close", flushed, committed)?;
            }
            Ok(())
        }
        Op::Unlink { dir, name } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            // Written before unlink returns.
            let got = errno(s.fs.unlink(&OpContext::background(), parent, name));
            let want = if model.remove_scratch(dir, name).is_some() {
                Ok(())
            } else if model.file(dir, name).is_some() {
                let mut data = model.live(dir).cloned().unwrap_or_default();
                data.remove(*name);
                model.committed(dir, name, data);
                Ok(())
            } else {
                Err(libc::ENOENT)
            };
            expect("unlink", got, want)
        }
        Op::Rename {
            dir,
            name,
            to_dir,
            to_name,
            no_replace,
        } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            let Some(new_parent) = reach(model, s, to_dir)? else {
                return Ok(());
            };
            let got = errno(s.fs.rename(
                &OpContext::background(),
                parent,
                name,
                new_parent,
                to_name,
                *no_replace,
            ));
            let want = rename_in_model(model, dir, name, to_dir, to_name, *no_replace);
            expect("rename", got, want)
        }
        Op::TempThenRename {
            dir,
            temp,
            writes,
            to_dir,
            to_name,
            no_replace,
        } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            let Some(new_parent) = reach(model, s, to_dir)? else {
                return Ok(());
            };
            let how = Creating {
                exclusive: true,
                caller: None,
            };
            let (_, fh) = errno(s.fs.create_with(&OpContext::background(), parent, temp, how))
                .map_err(|e| TestCaseError::fail(format!("create {temp}: {e}")))?;
            let (buf, offsets) = apply_writes(Vec::new(), writes);
            for (w, offset) in writes.iter().zip(offsets) {
                // In memory, any bytes.
                let n = errno(s.fs.write_handle(fh, offset, &w.bytes));
                prop_assert_eq!(n, Ok(w.bytes.len() as u32), "write into {}", temp);
            }
            let flushed = errno(s.fs.flush(&OpContext::background(), fh));
            s.fs.release(&OpContext::background(), fh);
            expect("close of a temporary file", flushed, Ok(()))?;
            model
                .scratch
                .entry(dir.to_string())
                .or_default()
                .insert(temp.to_string(), buf);
            let got = errno(s.fs.rename(
                &OpContext::background(),
                parent,
                temp,
                new_parent,
                to_name,
                *no_replace,
            ));
            let want = rename_in_model(model, dir, temp, to_dir, to_name, *no_replace);
            expect("rename of a temporary file", got, want)?;
            if want.is_err() {
                let removed = errno(s.fs.unlink(&OpContext::background(), parent, temp));
                model.remove_scratch(dir, temp);
                expect("removal of a temporary file", removed, Ok(()))?;
            }
            Ok(())
        }
        Op::Replace { dir, name, writes } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            let existed = model.file(dir, name).is_some();
            // The removal is a version of its own, written at once.
            let removed = errno(s.fs.unlink(&OpContext::background(), parent, name));
            let want = if existed { Ok(()) } else { Err(libc::ENOENT) };
            expect("removal before install", removed, want)?;
            if existed {
                let mut data = model.live(dir).cloned().unwrap_or_default();
                data.remove(*name);
                model.committed(dir, name, data);
            }
            let how = Creating {
                exclusive: true,
                caller: None,
            };
            let (_, fh) = errno(s.fs.create_with(&OpContext::background(), parent, name, how))
                .map_err(|e| TestCaseError::fail(format!("create {name}: {e}")))?;
            model.displaced.remove(&join(dir, name));
            let (buf, offsets) = apply_writes(Vec::new(), writes);
            let mut partial = Vec::new();
            let mut refused = false;
            for (w, offset) in writes.iter().zip(offsets) {
                write_at(&mut partial, offset, &w.bytes);
                let broken = broken_utf8(&partial);
                refused |= broken;
                let want = if broken {
                    Err(libc::EILSEQ)
                } else {
                    Ok(w.bytes.len() as u32)
                };
                let n = errno(s.fs.write_handle(fh, offset, &w.bytes));
                prop_assert_eq!(n, want, "write");
            }
            let flushed = errno(s.fs.flush(&OpContext::background(), fh));
            s.fs.release(&OpContext::background(), fh);
            // Then one version with the new value, unless it could not be
            // stored: the removal stands.
            let stored = if refused {
                Err(libc::EILSEQ)
            } else {
                model.commit_key(dir, name, &buf)
            };
            let want = if writes.is_empty() { Ok(()) } else { stored };
            expect("close of an installed file", flushed, want)
        }
        Op::Mkdir { path } => {
            let Some(parent) = reach(model, s, parent_of(path))? else {
                return Ok(());
            };
            let got = errno(
                s.fs.mkdir(&OpContext::background(), parent, name_of(path))
                    .map(|_| ()),
            );
            // A name left by a secret deleted elsewhere may be made again.
            let want = match model.dir_shows(path) {
                Shows::Yes => Err(libc::EEXIST),
                Shows::Maybe | Shows::No => Ok(()),
            };
            if want.is_ok() {
                model.local_dirs.insert(path.to_string());
                model.made.insert(path.to_string());
            }
            expect("mkdir", got, want)
        }
        Op::Rmdir { path } => {
            let Some(parent) = reach(model, s, parent_of(path))? else {
                return Ok(());
            };
            let got = errno(s.fs.rmdir(&OpContext::background(), parent, name_of(path)));
            if model.is_local(path) {
                // Only what lives in memory counts for a local directory.
                let below = |d: &String| d != path && at_or_below(d, path);
                let busy = model.local_dirs.iter().any(below)
                    || model.made.iter().any(below)
                    || model
                        .scratch
                        .iter()
                        .any(|(d, files)| !files.is_empty() && (d == path || below(d)));
                let want = if busy { Err(libc::ENOTEMPTY) } else { Ok(()) };
                if want.is_ok() {
                    model.local_dirs.remove(*path);
                    model.made.remove(*path);
                }
                return expect("rmdir of a local directory", got, want);
            }
            match model.dir_shows(path) {
                Shows::No => expect("rmdir", got, Err(libc::ENOENT)),
                Shows::Maybe => {
                    prop_assert!(
                        got == Ok(()) || got == Err(libc::ENOENT),
                        "rmdir of an uncertain directory: {:?}",
                        got
                    );
                    if got.is_ok() {
                        model.deleted_here.insert(path.to_string());
                    }
                    Ok(())
                }
                Shows::Yes if model.has_content(path) => expect("rmdir", got, Err(libc::ENOTEMPTY)),
                Shows::Yes => {
                    if model.live(path).is_some() {
                        if model.kv2 {
                            if let Some(sec) = model.secrets.get_mut(*path) {
                                sec.deleted = true;
                            }
                        } else {
                            model.secrets.remove(*path);
                        }
                    }
                    model.deleted_here.insert(path.to_string());
                    model.made.remove(*path);
                    expect("rmdir", got, Ok(()))
                }
            }
        }
        Op::ExternalPut { secret, data } => {
            let json: serde_json::Map<String, Value> = data
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            s.store.put(secret, Value::Object(json));
            model.deleted_here.remove(*secret);
            model.secrets.insert(
                secret.to_string(),
                ModelSecret {
                    data: data
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                    deleted: false,
                },
            );
            s.clock.advance(TTL + Duration::from_secs(1));
            Ok(())
        }
        Op::ExternalDelete { secret } => {
            s.store.remove(secret);
            if model.kv2 {
                if let Some(sec) = model.secrets.get_mut(*secret) {
                    sec.deleted = true;
                }
            } else {
                model.secrets.remove(*secret);
            }
            s.clock.advance(TTL + Duration::from_secs(1));
            Ok(())
        }
        Op::ExternalUndelete { secret } => {
            s.store.undelete(secret);
            if let Some(sec) = model.secrets.get_mut(*secret) {
                sec.deleted = false;
                model.deleted_here.remove(*secret);
            }
            s.clock.advance(TTL + Duration::from_secs(1));
            Ok(())
        }
        Op::Advance { secs } => {
            s.clock.advance(Duration::from_secs(*secs));
            Ok(())
        }
        Op::KernelForgets => s.forget_all(),
        Op::WritersAcrossRemoval {
            dir,
            name,
            first,
            second,
            closes,
            second_closes_first,
        } => writers_across_removal(
            model,
            s,
            (dir, name),
            [first, second],
            *closes,
            *second_closes_first,
        ),
        Op::FailedWrite { dir, name, writes } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            if !store_key(model, dir, name) || writes.is_empty() {
                return Ok(());
            }
            let ino = errno(s.look(parent, name))
                .map_err(|e| TestCaseError::fail(format!("lookup {name}: {e}")))?
                .ino;
            let fh = errno(s.fs.open(&OpContext::background(), ino, true, true))
                .map_err(|e| TestCaseError::fail(format!("open {name}: {e}")))?;
            let (buf, offsets) = apply_writes(Vec::new(), writes);
            let mut partial = Vec::new();
            let mut refused = false;
            for (w, offset) in writes.iter().zip(offsets) {
                write_at(&mut partial, offset, &w.bytes);
                let broken = broken_utf8(&partial);
                refused |= broken;
                let want = if broken {
                    Err(libc::EILSEQ)
                } else {
                    Ok(w.bytes.len() as u32)
                };
                let n = errno(s.fs.write_handle(fh, offset, &w.bytes));
                prop_assert_eq!(n, want, "write");
            }
            let flushed =
                with_failing_writes(s, || errno(s.fs.flush(&OpContext::background(), fh)));
            s.fs.release(&OpContext::background(), fh);
            // Only a change asks the store; one that cannot be stored
            // fails before.
            let old = model.live(dir).cloned().unwrap_or_default();
            let want = match written_value(old.get(*name), &buf) {
                _ if refused => Err(libc::EILSEQ),
                Err(e) => Err(e),
                Ok(v) if old.get(*name) == Some(&v) => Ok(()),
                Ok(_) => {
                    model.failed_writes += 1;
                    Err(libc::EIO)
                }
            };
            expect("close while the store fails", flushed, want)
        }
        Op::FailedUnlink { dir, name } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            if !store_key(model, dir, name) {
                return Ok(());
            }
            let got = with_failing_writes(s, || {
                errno(s.fs.unlink(&OpContext::background(), parent, name))
            });
            // KV v1 deletes a secret whose last key goes: no write request.
            let last = model.live(dir).is_some_and(|d| d.len() == 1);
            if model.kv2 || !last {
                model.failed_writes += 1;
            }
            expect("rm while the store fails", got, Err(libc::EIO))
        }
        Op::FailedRename { dir, name, to_name } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            let to = join(dir, to_name);
            let to_in_memory = model
                .scratch
                .get(*dir)
                .is_some_and(|f| f.contains_key(*to_name));
            if !store_key(model, dir, name)
                || name == to_name
                || to_in_memory
                || model.displaced.contains_key(&to)
            {
                return Ok(());
            }
            let got = with_failing_writes(s, || {
                errno(s.fs.rename(
                    &OpContext::background(),
                    parent,
                    name,
                    parent,
                    to_name,
                    false,
                ))
            });
            model.failed_writes += 1;
            expect("mv while the store fails", got, Err(libc::EIO))
        }
        Op::Refused { dir, name, remove } => {
            let Some(parent) = reach(model, s, dir)? else {
                return Ok(());
            };
            if !store_key(model, dir, name) {
                return Ok(());
            }
            let ino = errno(s.look(parent, name))
                .map_err(|e| TestCaseError::fail(format!("lookup {name}: {e}")))?
                .ino;
            s.clock.advance(TTL + Duration::from_secs(1));
            let read_only = Permissions {
                create: false,
                update: false,
                delete: false,
            };
            s.store.restrict(dir, read_only);
            let got = if *remove {
                errno(s.fs.unlink(&OpContext::background(), parent, name))
            } else {
                errno(s.fs.open(&OpContext::background(), ino, true, true))
                    .map(|fh| s.fs.release(&OpContext::background(), fh))
            };
            s.store.unrestrict();
            s.clock.advance(TTL + Duration::from_secs(1));
            expect("a change the policy forbids", got, Err(libc::EACCES))
        }
        Op::FailedRmdir { path } => {
            let Some(parent) = reach(model, s, parent_of(path))? else {
                return Ok(());
            };
            let deletes = model.dir_shows(path) == Shows::Yes
                && !model.is_local(path)
                && !model.has_content(path)
                && model.live(path).is_some();
            if !deletes {
                return Ok(());
            }
            let got = with_failing_writes(s, || {
                errno(s.fs.rmdir(&OpContext::background(), parent, name_of(path)))
            });
            expect("rmdir while the store fails", got, Err(libc::EIO))
        }
    }
}

/// [`Op::WritersAcrossRemoval`].
fn writers_across_removal(
    model: &mut Model,
    s: &Subject,
    (dir, name): (&'static str, &'static str),
    writers: [&Writer; 2],
    closes: Closes,
    second_closes_first: bool,
) -> Result<(), TestCaseError> {
    let Some(parent) = reach(model, s, dir)? else {
        return Ok(());
    };
    if !store_key(model, dir, name) {
        return Ok(());
    }
    let Some(base) = model.file(dir, name) else {
        return Ok(());
    };
    let ino = errno(s.look(parent, name))
        .map_err(|e| TestCaseError::fail(format!("lookup {name}: {e}")))?
        .ino;
    // (handle, buffer, refused)
    let mut open = Vec::new();
    for w in writers {
        let fh = errno(s.fs.open(&OpContext::background(), ino, true, w.truncate))
            .map_err(|e| TestCaseError::fail(format!("open {name}: {e}")))?;
        let start = if w.truncate { Vec::new() } else { base.clone() };
        open.push((fh, start, false));
    }
    // Write calls in turns: first, second, first, ...
    let turns = writers[0].writes.len().max(writers[1].writes.len());
    for i in 0..turns {
        for (w, (fh, buf, refused)) in writers.iter().zip(open.iter_mut()) {
            let Some(call) = w.writes.get(i) else {
                continue;
            };
            let offset = u64::from(call.offset_pick) % (buf.len() as u64 + 2);
            write_at(buf, offset, &call.bytes);
            let want = if broken_utf8(buf) {
                *refused = true;
                Err(libc::EILSEQ)
            } else {
                Ok(call.bytes.len() as u32)
            };
            let got = errno(s.fs.write_handle(*fh, offset, &call.bytes));
            prop_assert_eq!(got, want, "write");
        }
    }
    let order = if second_closes_first { [1, 0] } else { [0, 1] };
    // Each closes and is released at once; `removed`: the key is gone,
    // and what they wrote with it.
    let close_all = |model: &mut Model, removed: bool| -> Result<(), TestCaseError> {
        for i in order {
            let (fh, buf, refused) = &open[i];
            let w = writers[i];
            let flushed = errno(s.fs.flush(&OpContext::background(), *fh));
            s.fs.release(&OpContext::background(), *fh);
            if removed {
                expect("close of a removed key", flushed, Ok(()))?;
            } else if *refused {
                expect("close after a refused write", flushed, Err(libc::EILSEQ))?;
            } else if !w.truncate && w.writes.is_empty() {
                expect("close without change", flushed, Ok(()))?;
            } else if w.writes.is_empty() {
                // Committed at its release, which follows at once.
                expect("close of a truncation", flushed, Ok(()))?;
                let _ = model.commit_key(dir, name, buf);
            } else {
                let committed = model.commit_key(dir, name, buf);
                expect("close", flushed, committed)?;
            }
        }
        Ok(())
    };
    let rm = Op::Unlink { dir, name };
    let rmdir = Op::Rmdir { path: dir };
    match closes {
        Closes::BeforeRm => {
            close_all(model, false)?;
            step(model, s, &rm)?;
            step(model, s, &rmdir)
        }
        Closes::AfterRm => {
            step(model, s, &rm)?;
            close_all(model, true)?;
            step(model, s, &rmdir)
        }
        Closes::AfterRmdir => {
            step(model, s, &rm)?;
            step(model, s, &rmdir)?;
            close_all(model, true)
        }
    }
}
