//! Stopping a mount: SIGTERM and SIGINT (Ctrl-C) unmount cleanly and exit
//! 0, also when the daemon was started with them blocked or a file is
//! still open; a daemon killed with SIGTERM or SIGKILL leaves a mountpoint
//! that the next `secretfs` mounts again. (`umount` of a mount(8) mount:
//! tests/mount_helper.rs.)
//!
//! Fixtures are the shared ones in tests/support (one OpenBao dev server
//! per test: it starts in about a second, tests may stop it, and a server
//! of its own keeps each test's data apart). Nothing here skips: a missing
//! `bao` or FUSE fails the test with a message that says what to install.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{is_mounted, seeded, Bao, Mount};

#[test]
fn sigterm_unmounts_cleanly_and_exits_zero() {
    let bao = seeded();
    let mut m = Mount::new(&bao, "secret/", &[]);
    assert!(m.at("myapp").is_dir());
    let status = m.terminate();
    assert!(status.success(), "{status}");
    assert!(!is_mounted(m.path()));
    assert_eq!(std::fs::read_dir(m.path()).unwrap().count(), 0);
}

#[test]
fn sigint_unmounts_cleanly_and_exits_zero_like_ctrl_c() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    let mut m = Mount::new(&bao, "secret/", &[]);
    assert_eq!(std::fs::read(m.at("app/K")).unwrap(), b"v");
    let status = m.stop_with(libc::SIGINT);
    assert!(status.success(), "{status}\n{}", m.log());
    assert!(!is_mounted(m.path()), "still mounted after exit");
    assert_eq!(std::fs::read_dir(m.path()).unwrap().count(), 0);
}

#[test]
fn sigterm_unmounts_even_when_the_daemon_was_started_with_it_blocked() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    // As some supervisors leave it: SIGTERM and SIGINT blocked, a mask
    // that exec keeps.
    let mut m = Mount::builder(&bao, "secret/")
        .block_signals(&[libc::SIGTERM, libc::SIGINT])
        .start();
    assert_eq!(std::fs::read(m.at("app/K")).unwrap(), b"v");
    let status = m.terminate();
    assert!(status.success(), "{status}\n{}", m.log());
    assert!(!is_mounted(m.path()), "still mounted after exit");
}

#[test]
fn sigterm_with_a_file_still_open_detaches_and_exits_zero() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "hunter2"}));
    let mut m = Mount::new(&bao, "secret/", &[]);
    let open = std::fs::File::open(m.at("app/db/PASSWORD")).unwrap();
    let status = m.terminate();
    assert!(status.success(), "{status}: {}", m.log());
    assert!(!is_mounted(m.path()));
    drop(open);
}

#[test]
fn a_killed_daemon_leaves_a_mountpoint_that_mounts_again() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "hunter2"}));
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let mut m = Mount::new(&bao, "secret/", &[]);
        let at = m.path().to_path_buf();
        assert!(at.join("app/db").is_dir());
        let pid = m.pid().expect("the daemon's pid") as i32;
        // SAFETY: kill(2) on the daemon we started.
        unsafe { libc::kill(pid, signal) };
        let _ = m.wait_exit(Duration::from_secs(10));
        // The same mountpoint mounts again, dead FUSE mount or not.
        let again = Mount::builder(&bao, "secret/").at(&at).start();
        let read = std::fs::read(again.at("app/db/PASSWORD"));
        assert_eq!(
            read.ok().as_deref(),
            Some(&b"hunter2"[..]),
            "after signal {signal}: {}",
            again.log()
        );
        drop(again);
        drop(m);
    }
}

/// `umount -l` (systemd's `LazyUnmount=`, or `fusermount3 -uz`) while a
/// file is open, a new mount on the same path, then the last file of the
/// old mount closed: the old daemon ends then, and it must not unmount
/// what is now mounted there. (fuser 0.18 unmounts the mountpoint again
/// when its session ends, taking the disconnected device for "still
/// mounted": that took the new mount down. Seen first as `umount` then an
/// immediate new mount on the same path losing the new mount 3 times in
/// 10; the held file makes the window certain.)
#[test]
fn an_old_daemon_ending_after_a_lazy_unmount_leaves_the_new_mount_on_its_path() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "hunter2"}));
    let mut old = Mount::new(&bao, "secret/", &[]);
    let at = old.path().to_path_buf();
    let held = std::fs::File::open(old.at("app/db/PASSWORD")).unwrap();
    let out = std::process::Command::new("umount")
        .arg("-l")
        .arg(&at)
        .output()
        .expect("umount");
    assert!(out.status.success(), "{out:?}");
    let new = Mount::builder(&bao, "secret/").at(&at).start();
    assert_eq!(
        std::fs::read(new.at("app/db/PASSWORD")).unwrap(),
        b"hunter2"
    );
    // The old mount's last file closes: its daemon is told it is unmounted.
    drop(held);
    let status = old.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "the old daemon did not exit cleanly: {status:?}\n{}",
        old.log()
    );
    assert!(
        is_mounted(&at),
        "the new mount was taken down:\n{}",
        old.log()
    );
    assert_eq!(
        std::fs::read(new.at("app/db/PASSWORD")).ok().as_deref(),
        Some(&b"hunter2"[..]),
        "{}",
        new.log()
    );
}
