//! `secretfs status` as probes and people run it: a user the mount does
//! not let in is told so (exit 3), not that nothing is mounted (exit 2,
//! which a liveness probe would answer with a restart); `--format text`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::{seeded, Mount};

/// `secretfs status ARGS` as `uid` (root when `None`): exit code, stdout.
fn status_as(uid: Option<u32>, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(support::secretfs());
            c
        }
        None => Command::new(support::secretfs()),
    };
    let out = cmd
        .arg("status")
        .args(args)
        .output()
        .expect("secretfs status");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_user_the_mount_does_not_let_in_is_told_it_cannot_look_not_that_nothing_is_mounted() {
    let bao = seeded();
    // Root's mount, without allow_other: FUSE lets nobody else in.
    let m = Mount::new(&bao, "secret/", &[]);
    let parent = m.path().parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let at = support::s(m.path());

    let (code, out) = status_as(Some(65534), &[at]);
    assert_eq!(code, Some(3), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["mounted"], serde_json::json!(true), "{out}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot look") && error.contains("allow_other"),
        "{out}"
    );

    // The same for a mountpoint whose parent it may not even search.
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, out) = status_as(Some(65534), &[at]);
    assert_eq!(code, Some(3), "{out}");

    // Root (the mounting user) gets the report, and a directory with
    // nothing mounted is still "not mounted".
    assert_eq!(status_as(None, &[at]).0, Some(0));
    let empty = tempfile::tempdir().unwrap();
    let (code, out) = status_as(None, &[support::s(empty.path())]);
    assert_eq!(code, Some(2), "{out}");
}

#[test]
fn format_text_is_a_summary_and_a_line_per_field() {
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &[]);
    let at = support::s(m.path());
    let (code, out) = status_as(None, &["--format", "text", at]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with(&format!("{at}: healthy\n")), "{out}");
    for line in [
        "  mounted: yes",
        "  store_reachable: yes",
        "  mode: read-only",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
    let empty = tempfile::tempdir().unwrap();
    let (code, out) = status_as(None, &["--format", "text", support::s(empty.path())]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(": not mounted: "), "{out}");
}
