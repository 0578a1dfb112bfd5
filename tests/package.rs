//! The Debian packages (scripts/package-deb): what they hold, and that once
//! installed with `dpkg -i`, `mount -t fuse.secretfs` runs the packaged
//! /usr/bin/secretfs and serves secrets from OpenBao. The packages are made
//! from the build under test (SECRETFS_BINARY), so no release build is
//! needed here; the test removes them again (`dpkg -P`) whatever happens.
//!
//! mount(8) finds helpers on a fixed PATH in which /usr/local/bin comes
//! before /usr/bin; the mount is made from a mount namespace of this test's
//! thread where /usr/local/bin is an empty tmpfs, so the packaged binary is
//! the one that runs, and nothing outside sees the difference.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::{run, run_ok, Bao, Mount};

/// Builds both packages into `out`; their paths.
fn build_packages(out: &Path) -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package-deb");
    let built = Command::new(&script)
        .env("OUT", out)
        .env("SECRETFS_BINARY", support::secretfs())
        // xz (the default) takes a minute over the unstripped test build.
        .env("DEB_COMPRESSION", "zstd")
        .output()
        .expect("run scripts/package-deb");
    assert!(built.status.success(), "package-deb failed: {built:?}");
    let paths: Vec<PathBuf> = String::from_utf8_lossy(&built.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    (paths[0].clone(), paths[1].clone())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// The packages installed for as long as this lives.
struct Installed;

impl Installed {
    fn install(debs: &[&Path]) -> Installed {
        assert!(
            !installed("secretfs") && !Path::new("/usr/bin/secretfs").exists(),
            "/usr/bin/secretfs is on this machine (a package or a copy); this test installs \
             and purges a package of its own there and will not replace yours: run it on a \
             machine without it"
        );
        let mut cmd = Command::new("dpkg");
        cmd.arg("-i")
            .args(debs)
            .env("DEBIAN_FRONTEND", "noninteractive");
        let out = cmd.output().expect("run dpkg");
        let guard = Installed;
        assert!(out.status.success(), "dpkg -i failed: {out:?}");
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["-P", "secretfs-dbgsym", "secretfs"])
            .output();
    }
}

/// Hides /usr/local/bin from this thread and what it starts.
fn hide_usr_local_bin() {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (root, target, tmpfs) = (c("/"), c("/usr/local/bin"), c("tmpfs"));
    // SAFETY: plain syscalls on NUL-terminated strings; unshare affects
    // this thread only (CLONE_NEWNS implies CLONE_FS).
    unsafe {
        assert_eq!(
            libc::unshare(libc::CLONE_NEWNS),
            0,
            "unshare: {}",
            std::io::Error::last_os_error()
        );
        let private = libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        assert_eq!(
            private,
            0,
            "making / private: {}",
            std::io::Error::last_os_error()
        );
        let hidden = libc::mount(
            tmpfs.as_ptr(),
            target.as_ptr(),
            tmpfs.as_ptr(),
            0,
            std::ptr::null(),
        );
        assert_eq!(
            hidden,
            0,
            "tmpfs over /usr/local/bin: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn the_package_installs_a_stripped_binary_that_mount_8_runs() {
    let out = tempfile::tempdir().expect("temp dir");
    let (deb, dbgsym) = build_packages(out.path());

    // What the main package holds.
    let listing = run_ok("dpkg-deb", &["-c", deb.to_str().expect("utf-8")]);
    for path in [
        "./usr/bin/secretfs",
        "./usr/share/man/man1/secretfs.1.gz",
        "./usr/share/man/man1/secretfs-mount.1.gz",
        "./usr/share/bash-completion/completions/secretfs",
        "./usr/share/doc/secretfs/README.md",
        "./usr/share/doc/secretfs/copyright",
        "./usr/share/doc/secretfs/examples/run-secrets.mount",
        "./usr/share/doc/secretfs/examples/secretfs-myapp.service",
        "./usr/share/doc/secretfs/examples/myapp.toml.example",
    ] {
        assert!(
            listing.contains(path),
            "{path} not in the package:\n{listing}"
        );
    }
    // Every docs/ page README.md links to is where the link points.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let linked: Vec<&str> = readme
        .split("](docs/")
        .skip(1)
        .filter_map(|rest| rest.split(['#', ')']).next())
        .collect();
    assert!(!linked.is_empty(), "README.md links to no docs/ page");
    for page in linked {
        let path = format!("./usr/share/doc/secretfs/docs/{page}");
        assert!(
            listing.contains(&path),
            "README.md links to docs/{page}, which the package lacks at {path}"
        );
    }
    let depends = run_ok("dpkg-deb", &["-f", deb.to_str().expect("utf-8"), "Depends"]);
    assert!(depends.contains("fuse3"), "{depends}");
    let debug_listing = run_ok("dpkg-deb", &["-c", dbgsym.to_str().expect("utf-8")]);
    assert!(
        debug_listing.contains("./usr/lib/debug/.build-id/"),
        "{debug_listing}"
    );

    let bao = Bao::start();
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "hunter2"}));
    let _installed = Installed::install(&[&deb, &dbgsym]);

    // Installed: stripped, linked to its debug file, which is installed too.
    let sections = run_ok("readelf", &["-S", "/usr/bin/secretfs"]);
    assert!(
        !sections.contains(".debug_info"),
        "the binary still has debug info"
    );
    assert!(sections.contains(".gnu_debuglink"), "{sections}");
    let build_id = run_ok("readelf", &["-n", "/usr/bin/secretfs"]);
    let id = build_id
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("build id")
        .to_string();
    let debug_file = format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
    assert!(Path::new(&debug_file).is_file(), "{debug_file} missing");
    let version = run("/usr/bin/secretfs", &["--version"]);
    assert!(version.status.success(), "{version:?}");
    assert!(Path::new("/etc/secretfs").is_dir());

    // mount -t fuse.secretfs runs the packaged binary.
    hide_usr_local_bin();
    let m = Mount::builder(&bao, "secret/app").via_mount8().start();
    assert_eq!(
        std::fs::read_to_string(m.at("db/PASSWORD")).expect("read"),
        "hunter2"
    );
    let (code, report) = support::status(m.path());
    assert_eq!(code, Some(0), "{report}");
    let pid = report["pid"].as_u64().expect("pid in status");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("daemon's exe");
    assert_eq!(exe, Path::new("/usr/bin/secretfs"));
    drop(m);
}

#[test]
fn the_packaged_example_units_run_usr_bin_secretfs_and_their_comments_still_read_right() {
    let out = tempfile::tempdir().expect("temp dir");
    let (deb, _) = build_packages(out.path());
    let root = out.path().join("root");
    run_ok(
        "dpkg-deb",
        &[
            "-x",
            deb.to_str().expect("utf-8"),
            root.to_str().expect("utf-8"),
        ],
    );
    let examples = root.join("usr/share/doc/secretfs/examples");
    let read = |name: &str| {
        std::fs::read_to_string(examples.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let service = read("secretfs-myapp.service");
    let exec_start = service
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("an ExecStart= line");
    assert!(
        exec_start.starts_with("ExecStart=/usr/bin/secretfs "),
        "{exec_start}"
    );
    for name in [
        "run-secrets.mount",
        "secretfs-myapp.service",
        "myapp.toml.example",
    ] {
        let text = read(name);
        assert!(
            !text.contains("/usr/bin/secretfs or /usr/bin/secretfs"),
            "{name} says the same place twice:\n{text}"
        );
    }
    // The mount unit's comment names both places a binary may be.
    let unit = read("run-secrets.mount")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        unit.contains("the binary must be /usr/local/bin/secretfs or /usr/bin/secretfs"),
        "{unit}"
    );
}
