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
    // Unchanged secrets do not make it run again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
}
