//! Every sequence the model (or a fuzzer driving real syscalls) found a
//! bug with, pinned as a plain test that runs on every `cargo test`,
//! whatever the random runs draw.
//!
//! Each runs over KV v1, KV v2 and the store file, checked after every step as a random
//! case is. Directories are the model's (`DIRS`): `d` and `d/e` stand for
//! a directory and one below it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::harness::run_case;
use crate::ops::{Closes, Op, WriteCall, Writer};
use crate::reference::Kv;

fn pinned(ops: &[Op]) {
    for kv in Kv::ALL {
        if let Err(e) = run_case(kv, ops) {
            panic!("the core departs from the model ({kv:?}): {e}\nsequence: {ops:#?}");
        }
    }
}

/// One write call at offset 0.
fn w(bytes: &str) -> WriteCall {
    WriteCall {
        offset_pick: 0,
        bytes: bytes.as_bytes().to_vec(),
    }
}

fn put(secret: &'static str, data: &[(&'static str, Value)]) -> Op {
    Op::ExternalPut {
        secret,
        data: data.iter().cloned().collect::<BTreeMap<_, _>>(),
    }
}

fn write(dir: &'static str, name: &'static str, bytes: &str) -> Op {
    Op::WriteFile {
        dir,
        name,
        truncate: true,
        writes: vec![w(bytes)],
    }
}

fn writer(truncate: bool, writes: &[&str]) -> Writer {
    Writer {
        truncate,
        writes: writes.iter().map(|b| w(b)).collect(),
    }
}

/// Found by the model when it was written (3fb1b69): `mkdir` as a lock
/// must fail where a secret without keys exists.
#[test]
fn mkdir_of_a_live_secret_holding_no_keys_says_it_exists() {
    pinned(&[put("a", &[]), Op::Mkdir { path: "a" }]);
}

/// 3fb1b69: a directory made with mkdir vanished when the secret above
/// it was deleted elsewhere.
#[test]
fn a_directory_made_here_stays_while_the_secret_above_it_is_deleted_elsewhere() {
    pinned(&[
        put("a", &[("K", json!("v"))]),
        Op::Mkdir { path: "a/b" },
        Op::ExternalDelete { secret: "a" },
    ]);
}

/// 3fb1b69: a write that removed a key left the directory "made here",
/// so rmdir forgot it in memory and left the secret in the store.
#[test]
fn rmdir_after_the_last_key_is_removed_deletes_the_secret() {
    pinned(&[
        Op::Mkdir { path: "a" },
        put("a", &[("K", json!("v"))]),
        Op::Unlink {
            dir: "a",
            name: "K",
        },
        Op::Rmdir { path: "a" },
    ]);
}

/// 3fb1b69: RENAME_NOREPLACE onto a key an editor moved aside said
/// EEXIST although the name did not show.
#[test]
fn rename_noreplace_may_take_the_name_of_a_key_an_editor_moved_aside() {
    pinned(&[
        put("a", &[("K", json!("v")), ("L", json!("w"))]),
        Op::Rename {
            dir: "a",
            name: "K",
            to_dir: "a",
            to_name: "K~",
            no_replace: false,
        },
        Op::Rename {
            dir: "a",
            name: "L",
            to_dir: "a",
            to_name: "K",
            no_replace: true,
        },
    ]);
}

/// bbdd43a: with directories dropped while nodes below them remained,
/// the first forget of the kernel made files it still held ESTALE.
#[test]
fn files_held_while_the_kernel_forgets_their_directories_read_as_before() {
    pinned(&[
        put("d/e", &[("K", json!("v"))]),
        Op::Mkdir { path: "a" },
        Op::Mkdir { path: "a/b" },
        Op::KernelForgets,
        Op::Rmdir { path: "a/b" },
        Op::KernelForgets,
    ]);
}

/// Issue 20 §2 (0975b41): `printf abcdef > K; : > K; printf XY 1<> K`
/// left `XYcdef`: the second open started from the stored value, not
/// from the truncation the shell had closed.
#[test]
fn a_closed_truncation_is_what_the_next_open_starts_from() {
    pinned(&[
        Op::Mkdir { path: "a" },
        write("a", "K", "abcdef"),
        Op::ClosedTruncationThenWrite {
            dir: "a",
            name: "K",
            writes: vec![w("XY")],
        },
    ]);
}

/// Issue 20 §2 (0975b41): writer 1 opens with O_TRUNC and writes
/// nothing, writer 2 writes B, writer 1 closes first; both RELEASEs come
/// after both closes. Writer 1's truncation was written at its release,
/// after B: the key ended empty.
#[test]
fn a_truncation_closed_before_another_writer_s_close_does_not_win() {
    for late_release in [true, false] {
        pinned(&[
            Op::Mkdir { path: "a" },
            write("a", "K", "old"),
            Op::TwoWriters {
                dir: "a",
                name: "K",
                first: writer(true, &[]),
                second: writer(true, &["B"]),
                late_release,
            },
        ]);
    }
}

/// Issue 20 §2, third sequence (a fuzzer driving real syscalls): `mkdir
/// G G/a`, two writers of `G/a/k1`, `rm G/a/k1`, `rmdir G/a`: `ls G`
/// said ENOENT and `mkdir G/b` failed (the store held nothing under G
/// any more). Then `mkdir G/b` (here `d/e` again), and both removed.
#[test]
fn a_directory_made_with_mkdir_stays_after_the_last_secret_below_it_is_removed() {
    pinned(&[
        Op::Mkdir { path: "d" },
        Op::Mkdir { path: "d/e" },
        write("d/e", "K", "v"),
        Op::TwoWriters {
            dir: "d/e",
            name: "K",
            first: writer(true, &["one"]),
            second: writer(true, &["two"]),
            late_release: false,
        },
        Op::Unlink {
            dir: "d/e",
            name: "K",
        },
        Op::Rmdir { path: "d/e" },
        Op::Mkdir { path: "d/e" },
        Op::Rmdir { path: "d/e" },
        Op::Rmdir { path: "d" },
    ]);
}

/// The same with the writers open during `rm` (and `rmdir`), closing
/// before `rm`, after it, or after `rmdir`, in either order, with G at
/// the root (`d`) and one level down (`d/e`, made in a secret `d`). Their
/// closes wrote the removed key back (bab1e88).
#[test]
fn writers_of_a_key_removed_with_its_directory_write_nothing_back() {
    for closes in [Closes::BeforeRm, Closes::AfterRm, Closes::AfterRmdir] {
        for second_closes_first in [false, true] {
            for (top, below) in [("d", "d/e"), ("a", "a/b")] {
                let mut ops = vec![Op::Mkdir { path: top }];
                if top == "a" {
                    // G below a secret of the store.
                    ops = vec![put("a", &[("L", json!("x"))])];
                }
                ops.extend([
                    Op::Mkdir { path: below },
                    write(below, "K", "v"),
                    Op::WritersAcrossRemoval {
                        dir: below,
                        name: "K",
                        first: writer(true, &["one"]),
                        second: writer(false, &["two"]),
                        closes,
                        second_closes_first,
                    },
                    Op::Mkdir { path: below },
                ]);
                pinned(&ops);
            }
        }
    }
}

/// KV v1 holds no secret without keys: `rm` of the last key failed with
/// EINVAL ("missing data fields"). Now the secret is deleted and its
/// directory stays until rmdir.
#[test]
fn the_last_key_of_a_secret_can_be_removed() {
    pinned(&[
        Op::Mkdir { path: "a" },
        write("a", "K", "v"),
        Op::Unlink {
            dir: "a",
            name: "K",
        },
        Op::Mkdir { path: "a" },
        write("a", "L", "w"),
        Op::Unlink {
            dir: "a",
            name: "L",
        },
        Op::Rmdir { path: "a" },
    ]);
}

/// Store faults: each change the store fails is EIO, and nothing of it
/// is applied; the same changes then succeed.
#[test]
fn changes_the_store_fails_are_eio_and_leave_everything_as_it_was() {
    pinned(&[
        Op::Mkdir { path: "a" },
        write("a", "K", "v"),
        Op::FailedWrite {
            dir: "a",
            name: "K",
            writes: vec![w("new")],
        },
        Op::FailedRename {
            dir: "a",
            name: "K",
            to_name: "L",
        },
        Op::FailedUnlink {
            dir: "a",
            name: "K",
        },
        write("a", "K", "new"),
        Op::Unlink {
            dir: "a",
            name: "K",
        },
        Op::FailedRmdir { path: "a" },
        Op::Rmdir { path: "a" },
    ]);
}

/// Access rules: a change a read-only policy forbids is refused at
/// `open` or `unlink` (EACCES) and changes nothing; once the policy is
/// lifted the same changes succeed.
#[test]
fn changes_a_policy_forbids_are_eacces_and_change_nothing() {
    pinned(&[
        Op::Mkdir { path: "a" },
        write("a", "K", "v"),
        Op::Refused {
            dir: "a",
            name: "K",
            remove: false,
        },
        Op::Refused {
            dir: "a",
            name: "K",
            remove: true,
        },
        write("a", "K", "w"),
        Op::Unlink {
            dir: "a",
            name: "K",
        },
    ]);
}
