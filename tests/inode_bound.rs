//! `--max-inodes` (issue 14 §6): past the bound the kernel is asked to drop
//! the oldest entries, it forgets them, and the daemon's inode table
//! shrinks back under the bound, while a walk over more secrets than the
//! bound still sees every one of them. Real OpenBao, real mount, real `find`.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{Bao, Mount};

const SECRETS: usize = 300;

/// `tree/s000` … `tree/s299`, each with one key `K` holding `v0` … `v299`.
fn seed(bao: &Bao) {
    for i in 0..SECRETS {
        bao.kv2_put(
            "secret",
            &format!("tree/s{i:03}"),
            json!({"K": format!("v{i}")}),
        );
    }
}

fn inodes(m: &Mount) -> u64 {
    let (_, report) = support::status(m.path());
    report["inodes"].as_u64().expect("status reports inodes")
}

fn walk(m: &Mount) -> Vec<String> {
    let out = Command::new("find")
        .arg(m.path())
        .args(["-type", "f"])
        .output()
        .expect("find runs");
    assert!(
        out.status.success(),
        "find failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    files.sort();
    files
}

#[test]
fn a_walk_past_the_bound_sees_every_secret_and_the_table_shrinks_back() {
    let bao = Bao::start();
    seed(&bao);

    // Unbounded, the table holds every directory and file walked.
    let free = Mount::new(&bao, "secret/tree", &["--ttl", "5m"]);
    assert_eq!(walk(&free).len(), SECRETS);
    let held = inodes(&free);
    assert!(held > 2 * SECRETS as u64, "unbounded: {held} inodes");

    let (_, report) = support::status(free.path());
    assert_eq!(report["max_inodes"], serde_json::Value::Null);
    drop(free);

    let bounded = Mount::new(&bao, "secret/tree", &["--ttl", "5m", "--max-inodes", "100"]);
    let (_, report) = support::status(bounded.path());
    assert_eq!(report["max_inodes"], 100);
    let files = walk(&bounded);
    assert_eq!(files.len(), SECRETS, "every secret's key is seen");
    // What the walk left behind is dropped by the kernel, down to the bound.
    support::eventually(
        "the table back under its bound",
        Duration::from_secs(10),
        || (inodes(&bounded) <= 100).then_some(()),
    );
    // Dropped names are looked up again when used.
    let first = std::fs::read_to_string(bounded.path().join("s000/K")).expect("read s000/K");
    assert_eq!(first, "v0");
    let again = walk(&bounded);
    assert_eq!(again.len(), SECRETS);
}

fn mounted_at(mountinfo: &str, at: &std::path::Path) -> bool {
    let at = at.to_str().expect("utf-8 path");
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(at))
}

/// The kernel detaches mounts on an entry it is told to drop: the bound
/// must spare them, here and in other mount namespaces (a systemd
/// service's `InaccessiblePaths=` inside the mount, say).
#[test]
fn mounts_inside_the_mount_survive_the_bound_in_every_namespace() {
    let bao = Bao::start();
    seed(&bao);
    let m = Mount::new(&bao, "secret/tree", &["--ttl", "5m", "--max-inodes", "100"]);
    let here = m.path().join("s005");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "secretfs-test"])
        .arg(&here)
        .status()
        .expect("mount runs");
    assert!(status.success(), "mount tmpfs on s005");
    // A mount in a namespace of its own, on s007's key file.
    let there = m.path().join("s007/K");
    let mut other = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind /etc/hostname '{}' && echo up && exec sleep 60",
            there.display()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("unshare runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(other.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("unshare says up");
    assert_eq!(line.trim(), "up");
    let theirs = format!("/proc/{}/mountinfo", other.id());

    for _ in 0..3 {
        assert_eq!(walk(&m).len(), SECRETS - 1, "s005's K is under the tmpfs");
    }
    support::eventually(
        "the table back under its bound",
        Duration::from_secs(10),
        || (inodes(&m) <= 100).then_some(()),
    );
    let ours = std::fs::read_to_string("/proc/self/mountinfo").expect("our mountinfo");
    let still_here = mounted_at(&ours, &here);
    let still_there = mounted_at(
        &std::fs::read_to_string(&theirs).unwrap_or_default(),
        &there,
    );
    let _ = Command::new("umount").arg(&here).status();
    let _ = other.kill();
    let _ = other.wait();
    assert!(still_here, "the tmpfs on s005 was detached");
    assert!(
        still_there,
        "the bind mount on s007/K in another namespace was detached"
    );
}

/// `ls` of a large folder: after the first page the kernel asks with plain
/// READDIR, which gives it names without references; their inodes go at
/// the next sweep (every half TTL) instead of staying until unmount.
#[test]
fn names_only_listed_leave_memory_at_the_next_sweep() {
    let bao = Bao::start();
    seed(&bao);
    let m = Mount::new(&bao, "secret/tree", &["--ttl", "2s"]);
    let out = Command::new("ls").arg(m.path()).output().expect("ls runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        SECRETS
    );
    // (Here about a third of the names came by plain READDIR.)
    let listed = inodes(&m);
    support::eventually("listed-only names swept", Duration::from_secs(10), || {
        (inodes(&m) < listed).then_some(())
    });
    // Still there when used.
    assert_eq!(
        std::fs::read_to_string(m.path().join("s299/K")).expect("read"),
        "v299"
    );
}
