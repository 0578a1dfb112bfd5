//! Mounting the way systems do: `mount -t fuse.secretfs` through Debian's
//! mount.fuse3, options from `-o` and a config file, `mount -a` with an
//! fstab line, `umount`, and failures that leave nothing behind. (Signals
//! and killed daemons: tests/shutdown.rs.)
//!
//! mount(8) runs helpers with a fixed PATH, so this test makes the binary
//! under test /usr/local/bin/secretfs for its duration: a symlink it
//! removes after when nothing is there; when a secretfs is installed there
//! (as docs/INSTALL.md says to), the build is bound over it in a mount namespace of
//! the test's own thread, so the installed copy is neither run nor touched
//! and nobody else sees the difference.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{dead_addr, eventually, is_mounted, Backend, Bao, Mount, Store};

const INSTALLED: &str = "/usr/local/bin/secretfs";

/// The binary on mount(8)'s PATH for as long as this lives.
struct OnPath {
    created: bool,
}

impl OnPath {
    fn install() -> OnPath {
        let link = Path::new(INSTALLED);
        if std::fs::symlink_metadata(link).is_err() {
            std::os::unix::fs::symlink(support::secretfs(), link)
                .unwrap_or_else(|e| panic!("cannot link {INSTALLED} (tests run as root): {e}"));
            return OnPath { created: true };
        }
        // Installed: bind the build over it where only this thread (and
        // the processes it starts) can see.
        let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
        let (root, target) = (c("/"), c(INSTALLED));
        let build = c(support::secretfs());
        // SAFETY: plain syscalls on NUL-terminated paths; unshare affects
        // this thread only (CLONE_NEWNS implies CLONE_FS).
        unsafe {
            assert_eq!(
                libc::unshare(libc::CLONE_NEWNS),
                0,
                "unshare: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null()
                ),
                0,
                "making / private: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(
                libc::mount(
                    build.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null()
                ),
                0,
                "binding the build over {INSTALLED}: {}",
                std::io::Error::last_os_error()
            );
        }
        OnPath { created: false }
    }
}

impl Drop for OnPath {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(INSTALLED);
        }
    }
}

/// The pids of daemons serving `at`.
fn daemons_for(at: &Path) -> Vec<i32> {
    let wanted = at.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = state.split(' ').nth(2) == Some("Z");
        if !zombie && args.iter().any(|a| a.ends_with("secretfs")) && args.contains(&wanted) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn mounting_through_mount_8_and_fstab_style_options() {
    let _on_path = OnPath::install();
    let bao = Bao::start();
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "hunter2"}));
    let dir = tempfile::tempdir().unwrap();

    // mount -t fuse.secretfs returns once the filesystem answers.
    let m = Mount::builder(&bao, "secret/app")
        .via_mount8()
        .args(&["-o", "ttl=5s,_netdev,nofail,x-systemd.automount"])
        .start();
    let at = m.path().to_path_buf();
    assert!(is_mounted(&at));
    assert_eq!(std::fs::read(at.join("db/PASSWORD")).unwrap(), b"hunter2");
    assert_eq!(daemons_for(&at).len(), 1, "one daemon in the background");

    // `secretfs status` reports it healthy.
    let (code, report) = support::status(&at);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        (report["healthy"].clone(), report["store_reachable"].clone()),
        (json!(true), json!(true))
    );
    // mount(8) passed `rw` (it always does): the mount is read-only all
    // the same, and says so.
    assert_eq!(report["mode"], json!("read-only"), "{report}");
    let err = std::fs::write(at.join("db/PASSWORD"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    assert_eq!(
        bao.kv2_get("secret", "app/db").map(|(d, _)| d),
        Some(json!({"PASSWORD": "hunter2"}))
    );

    // umount stops the daemon and leaves a clean directory.
    let out = Command::new("umount").arg(&at).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&at));
    eventually(
        "the daemon to exit after umount",
        Duration::from_secs(5),
        || daemons_for(&at).is_empty().then_some(()),
    );
    drop(m);

    // Options from a config file, as fstab would pass them.
    let conf = dir.path().join("app.toml");
    std::fs::write(&conf, "ttl = \"5s\"\nfile_mode = \"0440\"\nro = true\n").unwrap();
    let m = Mount::builder(&bao, "secret/app")
        .via_mount8()
        .args(&["-o", &format!("config={}", conf.display())])
        .start();
    let at = m.path();
    let meta = std::fs::metadata(at.join("db/PASSWORD")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o440
    );
    let err = std::fs::write(at.join("db/PASSWORD"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    assert!(Command::new("umount").arg(at).status().unwrap().success());
    drop(m);

    // -o writable (beside the rw that mount(8) adds, and an explicit one)
    // turns write-back on.
    let m = Mount::builder(&bao, "secret/app")
        .via_mount8()
        .args(&["-o", "rw,writable,ttl=5s"])
        .start();
    let at = m.path();
    std::fs::write(at.join("db/PASSWORD"), "rotated").unwrap();
    assert_eq!(
        bao.kv2_get("secret", "app/db").map(|(d, _)| d),
        Some(json!({"PASSWORD": "rotated"}))
    );
    let (_, report) = support::status(at);
    assert_eq!(report["mode"], json!("writable"), "{report}");
    assert!(Command::new("umount").arg(at).status().unwrap().success());
    drop(m);
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "hunter2"}));

    // An fstab line: `mount -a` mounts it, and a second `mount -a` knows it
    // is mounted already.
    let at = dir.path().join("fstab");
    std::fs::create_dir(&at).unwrap();
    let fstab = dir.path().join("fstab.test");
    std::fs::write(
        &fstab,
        format!(
            "secret/app {} fuse.secretfs _netdev,ttl=5s 0 0\n",
            at.display()
        ),
    )
    .unwrap();
    for round in 0..2 {
        let out = Command::new("mount")
            .args(["-a", "-T"])
            .arg(&fstab)
            .env("VAULT_ADDR", bao.addr())
            .env("VAULT_TOKEN", "root")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -a #{round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(daemons_for(&at).len(), 1, "mount -a #{round}");
    }
    assert_eq!(std::fs::read(at.join("db/PASSWORD")).unwrap(), b"hunter2");
    assert!(Command::new("umount").arg(&at).status().unwrap().success());

    // Failures: non-zero exit, secretfs's reason, nothing mounted or running.
    let dead = dead_addr();
    for (token, opts, want) in [
        ("root", format!("addr={dead},timeout=2s"), "cannot reach"),
        ("not-a-token", String::new(), "refused the token"),
        ("root", "bogus_option=1".to_string(), ""),
    ] {
        let at = dir.path().join("fail");
        std::fs::create_dir_all(&at).unwrap();
        let mut mount = Mount::builder(&bao, "secret/app")
            .via_mount8()
            .token(token)
            .at(&at);
        if !opts.is_empty() {
            mount = mount.args(&["-o", &opts]);
        }
        let (status, stderr) = mount.fail();
        assert!(!status.success(), "{opts}: mount succeeded");
        assert!(stderr.contains(want), "{opts}: {stderr}");
        eventually(
            format!("{opts}: no daemon left"),
            Duration::from_secs(10),
            || daemons_for(&at).is_empty().then_some(()),
        );
    }
}

/// Unmounts (lazily) what a test mounted itself, should it fail first.
struct Unmounts(Vec<std::path::PathBuf>);

impl Drop for Unmounts {
    fn drop(&mut self) {
        for at in &self.0 {
            if is_mounted(at) {
                let _ = Command::new("fusermount3").arg("-uz").arg(at).status();
            }
        }
    }
}

#[test]
fn mount_8_takes_the_source_of_every_store_and_its_options() {
    let _on_path = OnPath::install();
    for backend in [Backend::File, Backend::AwsSm] {
        let store = Store::seeded_with(backend, &[("app/db", json!({"PASSWORD": "hunter2"}))]);
        // The store's own options in -o form, as an fstab line gives them
        // (AWS credentials stay in the environment, as the AWS CLI takes
        // them; region and endpoint are given here as options).
        let options = match backend {
            Backend::File => format!("ttl=5s,identity={}", store.age().key().display()),
            _ => {
                let env: std::collections::HashMap<_, _> = store.env().into_iter().collect();
                format!(
                    "ttl=5s,region={},endpoint={}",
                    env["AWS_REGION"], env["AWS_ENDPOINT_URL"]
                )
            }
        };
        let mut b = Mount::builder_without_server(&store.source("app")).via_mount8();
        for (k, v) in store.env() {
            if k.starts_with("AWS_ACCESS") || k.starts_with("AWS_SECRET") {
                b = b.env(k, v);
            }
        }
        let m = b.args(&["-o", &options]).start();
        let at = m.path().to_path_buf();
        assert!(is_mounted(&at), "{backend:?}");
        assert_eq!(
            std::fs::read(at.join("db/PASSWORD")).unwrap(),
            b"hunter2",
            "{backend:?}"
        );
        let (code, report) = support::status(&at);
        assert_eq!(code, Some(0), "{backend:?}: {report}");
    }
}

/// `secretfs ARGS` in the mount-helper form, run from `cwd` as a user
/// would type it (no VAULT_TOKEN unless `token`); its exit status and stderr.
fn helper_form(
    bao: &Bao,
    cwd: &Path,
    token: Option<&str>,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new(support::secretfs());
    cmd.args(args)
        .current_dir(cwd)
        .env("VAULT_ADDR", bao.addr())
        .env("HOME", cwd)
        .env_remove("VAULT_TOKEN")
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG");
    if let Some(t) = token {
        cmd.env("VAULT_TOKEN", t);
    }
    let out = cmd.output().expect("run secretfs");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Unmounts `at` and waits for the daemon that served it to exit.
fn unmount_and_wait(at: &Path) {
    let (_, report) = support::status(at);
    let pid = report["pid"]
        .as_i64()
        .expect("status names the daemon's pid");
    support::sh_ok(&format!("fusermount3 -u {}", support::q(at)));
    eventually("the daemon to exit", Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.split(' ').nth(2) == Some("Z")).then_some(())
    });
}

#[test]
fn the_helper_form_takes_relative_paths_from_the_caller_s_directory() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "hunter2"}));
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    for d in ["m/e1", "m/e2"] {
        std::fs::create_dir_all(cwd.join(d)).unwrap();
    }
    std::fs::write(cwd.join("tok"), "root").unwrap();
    let _cleanup = Unmounts(vec![cwd.join("m/e1"), cwd.join("m/e2")]);

    // Two positional arguments, the mountpoint relative.
    let (status, stderr) = helper_form(&bao, cwd, Some("root"), &["secret/app", "m/e1"]);
    assert!(status.success(), "secretfs secret/app m/e1: {stderr}");
    let at = cwd.join("m/e1");
    assert_eq!(std::fs::read(at.join("db/PASSWORD")).unwrap(), b"hunter2");
    unmount_and_wait(&at);

    // With -o, and the token in a file named relative to the caller's
    // directory too (the daemon re-reads it every 5 s, from wherever it runs).
    let (status, stderr) = helper_form(
        &bao,
        cwd,
        None,
        &["secret/app", "m/e2", "-o", "ttl=5s,token_file=tok"],
    );
    assert!(
        status.success(),
        "secretfs secret/app m/e2 -o ...: {stderr}"
    );
    let at = cwd.join("m/e2");
    assert_eq!(std::fs::read(at.join("db/PASSWORD")).unwrap(), b"hunter2");
    // mountinfo (and so `mount`, `umount`, `findmnt`) names it absolutely.
    assert!(is_mounted(&at), "{} is not in mountinfo", at.display());
    unmount_and_wait(&at);

    // A templates folder named relatively.
    std::fs::create_dir(cwd.join("tpl")).unwrap();
    std::fs::write(cwd.join("tpl/pw.tmpl"), "{{ secret(\"app/db\").PASSWORD }}").unwrap();
    let (status, stderr) = helper_form(
        &bao,
        cwd,
        Some("root"),
        &["secret/", "m/e1", "-o", "layout=templates:tpl"],
    );
    assert!(
        status.success(),
        "secretfs secret/ m/e1 -o layout=templates:tpl: {stderr}"
    );
    let at = cwd.join("m/e1");
    assert_eq!(std::fs::read(at.join("pw")).unwrap(), b"hunter2");
    unmount_and_wait(&at);
}

#[test]
fn a_background_daemon_whose_arguments_are_refused_tells_the_waiting_parent_why() {
    // What `secretfs SOURCE MOUNTPOINT` does when it starts its daemon: a
    // pipe the daemon writes its reason to (or READY).
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    use std::os::fd::FromRawFd;
    // SAFETY: both fds are fresh and ours.
    let (mut reader, writer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let write_fd = fds[1];
    let mut cmd = Command::new(support::secretfs());
    cmd.args([
        "mount",
        "--background",
        "secret/",
        "/nonexistent",
        "--tll=5s",
    ])
    .arg(format!("--ready-fd={write_fd}"))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    // SAFETY: fcntl between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            libc::fcntl(write_fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let status = cmd.status().expect("run secretfs");
    drop(writer);
    assert_eq!(status.code(), Some(2));
    let mut said = String::new();
    std::io::Read::read_to_string(&mut reader, &mut said).unwrap();
    assert!(
        said.contains("refused its arguments") && said.contains("'--tll"),
        "the daemon told its parent: {said:?}"
    );
}
