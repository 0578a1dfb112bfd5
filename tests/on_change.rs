//! `--on-change`: a mount tells programs that a secret changed in the
//! store, which they cannot learn from inotify on a FUSE file. Real
//! programs against a real OpenBao: nginx serving a certificate and key
//! from the mount reloads them on SIGHUP (`signal:HUP:PIDFILE`) after a
//! rotation made with the HTTP API, and a shell command gets the changed
//! secrets' paths. Without the hook nginx never sees the new certificate:
//! it read the files once, and nothing reads them again.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{eventually, run_ok, s, Bao, Mount};

/// A self-signed certificate and its key for `cn`, as PEM text.
fn certificate(dir: &Path, cn: &str) -> (String, String) {
    let (crt, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            s(&key),
            "-out",
            s(&crt),
        ],
    );
    (
        std::fs::read_to_string(crt).expect("crt"),
        std::fs::read_to_string(key).expect("key"),
    )
}

/// The CN of the certificate served at `port`.
fn served_cn(port: u16) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("CN")
        .nth(1)
        .map(|cn| cn.trim_start_matches([' ', '=']).trim().to_string())
}

/// nginx, stopped when dropped.
struct Nginx {
    pidfile: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            let _ = Command::new("kill").args(["-QUIT", pid.trim()]).status();
        }
    }
}

#[test]
fn nginx_reloads_a_rotated_certificate_on_the_signal_the_mount_sends() {
    let bao = Bao::start();
    let dir = tempfile::tempdir().unwrap();
    let (crt1, key1) = certificate(dir.path(), "first");
    let (crt2, key2) = certificate(dir.path(), "second");
    bao.kv2_put("secret", "web/tls", json!({"crt": crt1, "key": key1}));

    let pidfile = dir.path().join("nginx.pid");
    let hook = format!("signal:HUP:{}", pidfile.display());
    let m = Mount::new(&bao, "secret/web", &["--ttl", "1s", "--on-change", &hook]);

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon on;\nmaster_process on;\nuser root;\npid {pid};\nerror_log {dir}/error.log;\n\
             events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  \
             proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n  \
             uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n  \
             server {{\n    listen 127.0.0.1:{port} ssl;\n    \
             ssl_certificate {crt};\n    ssl_certificate_key {key};\n    return 200 ok;\n  }}\n}}\n",
            pid = pidfile.display(),
            dir = dir.path().display(),
            crt = m.at("tls/crt").display(),
            key = m.at("tls/key").display(),
        ),
    )
    .unwrap();
    let started = Command::new("nginx")
        .args(["-c", s(&conf), "-p", s(dir.path())])
        .output()
        .expect("run nginx (apt-get install nginx-light)");
    assert!(started.status.success(), "nginx: {started:?}");
    let _nginx = Nginx {
        pidfile: pidfile.clone(),
    };
    eventually(
        "nginx to serve the first certificate",
        Duration::from_secs(10),
        || (served_cn(port).as_deref() == Some("first")).then_some(()),
    );

    // Rotated in the store: nginx holds the old pair until it is told.
    bao.kv2_put("secret", "web/tls", json!({"crt": crt2, "key": key2}));
    eventually(
        "nginx to serve the rotated certificate",
        Duration::from_secs(15),
        || (served_cn(port).as_deref() == Some("second")).then_some(()),
    );
    assert!(m.log().contains("--on-change: signalled"), "{}", m.log());
}

#[test]
fn a_command_hook_gets_the_changed_secrets_paths_once_per_change() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "one"}));
    bao.kv2_put("secret", "app/api", json!({"TOKEN": "t"}));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("changed");
    let hook = format!("printf '%s\\n' \"$SECRETFS_CHANGED\" >> {}", out.display());
    let m = Mount::new(&bao, "secret/app", &["--ttl", "1s", "--on-change", &hook]);
    assert_eq!(std::fs::read_to_string(m.at("db/PASSWORD")).unwrap(), "one");
    assert_eq!(std::fs::read_to_string(m.at("api/TOKEN")).unwrap(), "t");

    // Nobody reads again: the mount finds the change by itself.
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "two"}));
    let want = format!("{}\n", m.at("db").display());
    eventually("the hook to run", Duration::from_secs(10), || {
        (std::fs::read_to_string(&out).unwrap_or_default() == want).then_some(())
    });
    // Unchanged secrets do not make it run again: a later change, found by
    // a later round, runs it for that secret alone (db, unchanged, would
    // be named again by any round that took it for changed).
    bao.kv2_put("secret", "app/api", json!({"TOKEN": "u"}));
    let want = format!("{want}{}\n", m.at("api").display());
    eventually(
        "the hook to run for the second change",
        Duration::from_secs(10),
        || {
            let got = std::fs::read_to_string(&out).unwrap_or_default();
            assert!(want.starts_with(&got), "the hook ran for more: {got:?}");
            (got == want).then_some(())
        },
    );
}

/// `sleep 600` as root: a process the mount must not be made to signal.
struct Victim(std::process::Child);

impl Victim {
    fn start() -> Victim {
        Victim(
            Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("start sleep"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it still runs (a TERM ends it: `sleep` does not catch it).
    fn alive(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `pid` to `file` (replacing it), owned by `uid`, with `mode`.
fn pidfile(file: &Path, pid: u32, uid: u32, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(file);
    std::fs::write(file, format!("{pid}\n")).expect("write the pid file");
    std::os::unix::fs::chown(file, Some(uid), None).expect("chown the pid file");
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Lines of the log that say a signal was refused.
fn refusals(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("--on-change: no signal sent"))
        .count()
}

#[test]
fn a_pid_file_another_user_can_write_gets_no_signal_sent() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (chown to uid 65534)"
    );
    let bao = Bao::start();
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "one"}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.pid");
    let mut victim = Victim::start();
    // None at start: the mount starts; the file is judged when read.
    let hook = format!("signal:TERM:{}", file.display());
    let m = Mount::new(&bao, "secret/app", &["--ttl", "1s", "--on-change", &hook]);
    assert_eq!(std::fs::read_to_string(m.at("db/PASSWORD")).unwrap(), "one");

    // Written by nobody (uid 65534), naming a root process.
    pidfile(&file, victim.pid(), 65534, 0o644);
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "two"}));
    eventually("the refusal in the log", Duration::from_secs(15), || {
        (refusals(&m.log()) == 1).then_some(())
    });
    assert!(victim.alive(), "the root process was signalled");
    assert!(m.log().contains("owned by uid 65534"), "{}", m.log());

    // Root's, but anyone may write it.
    pidfile(&file, victim.pid(), 0, 0o666);
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "three"}));
    eventually(
        "the second refusal in the log",
        Duration::from_secs(15),
        || (refusals(&m.log()) == 2).then_some(()),
    );
    assert!(victim.alive(), "the root process was signalled");
    assert!(m.log().contains("mode 0666"), "{}", m.log());

    // A symbolic link to a root-owned pid file is not followed.
    let real = dir.path().join("real.pid");
    pidfile(&real, victim.pid(), 0, 0o644);
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&real, &file).unwrap();
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "four"}));
    eventually(
        "the third refusal in the log",
        Duration::from_secs(15),
        || (refusals(&m.log()) == 3).then_some(()),
    );
    assert!(victim.alive(), "the root process was signalled");
    assert!(m.log().contains("symbolic link"), "{}", m.log());

    // Root's and only root's: the signal goes out.
    std::fs::remove_file(&file).unwrap();
    pidfile(&file, victim.pid(), 0, 0o644);
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "five"}));
    eventually(
        "the signalled process to end",
        Duration::from_secs(15),
        || (!victim.alive()).then_some(()),
    );
    assert!(m.log().contains("--on-change: signalled"), "{}", m.log());
}

#[test]
fn a_pid_file_another_user_owns_at_start_fails_the_mount() {
    let bao = Bao::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.pid");
    let victim = Victim::start();
    pidfile(&file, victim.pid(), 65534, 0o644);
    let hook = format!("signal:HUP:{}", file.display());
    let (status, stderr) = Mount::builder(&bao, "secret/")
        .args(&["--on-change", &hook])
        .fail();
    assert!(!status.success());
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("owned by uid 65534"),
        "{stderr}"
    );
}
