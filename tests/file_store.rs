//! The local encrypted store (`file:PATH`) with real parts: a real FUSE
//! mount of the secretfs binary, and the real age command-line tool
//! (Debian's `age`) making and reading the store file. A file made with
//! `age -r` mounts; what a writable mount writes, `age -d` decrypts to
//! the documented JSON; versions show as `P@N`; a change made with the
//! age tool shows within the TTL; two secretfs processes writing one file
//! lose nothing; `secretfs exec` needs its identity and waits for a file
//! not there yet. (Reads, writes, layouts, layers, a file layer over
//! each store, templates, `--allow`, exec and audit run on the store file
//! too, per store: tests/support/backend.rs.)

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{
    age_decrypt, eventually, names, run, run_ok, s, set, status, write_and_close, AgeKey, Bao,
    Mount,
};

/// A mount of the store file `file` opened with `identity`, a TTL of 1 s.
fn mount(file: &Path, identity: &Path, args: &[&str]) -> Mount {
    let mut all = vec!["--identity", s(identity), "--ttl", "1s"];
    all.extend_from_slice(args);
    Mount::builder_without_server(&format!("file:{}", file.display()))
        .args(&all)
        .start()
}

/// Starts a mount of `source` with `args` expecting it to be refused:
/// the exit is a failure and stderr says why in one line, returned.
fn refusal(source: &str, args: &[&str]) -> String {
    let (status, stderr) = Mount::builder_without_server(source).args(args).fail();
    assert!(!status.success(), "{source} {args:?} exited 0: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    stderr
}

/// A mount with `identity`, which needs a passphrase, is refused in one
/// line without `--identity-passphrase-file` (saying how to give it) and
/// with a wrong passphrase, which is written to `pass` (saying so, without
/// quoting it).
fn passphrase_refusals(source: &str, identity: &Path, pass: &Path) {
    let stderr = refusal(source, &["--identity", s(identity)]);
    assert!(stderr.contains("--identity-passphrase-file"), "{stderr}");
    std::fs::write(pass, "hunter2\n").expect("write");
    let with = [
        "--identity",
        s(identity),
        "--identity-passphrase-file",
        s(pass),
    ];
    let stderr = refusal(source, &with);
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

fn read(m: &Mount, rel: &str) -> String {
    String::from_utf8(std::fs::read(m.at(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .expect("UTF-8")
}

#[test]
fn a_file_made_with_age_r_mounts_and_reads() {
    let age = AgeKey::new();
    let file = age.store_file(
        "app.age",
        &json!({"secrets": {
            "app/db": {"data": {"password": "hunter2", "port": 5432}},
            "app/api": {"data": {"token": "t0k"}}
        }}),
    );
    let m = mount(&file, age.key(), &[]);
    assert_eq!(names(m.path()), set(&["app"]));
    assert_eq!(names(&m.at("app")), set(&["api", "db"]));
    assert_eq!(read(&m, "app/db/password"), "hunter2");
    assert_eq!(read(&m, "app/db/port"), "5432");
    assert_eq!(read(&m, "app/api/token"), "t0k");
    // Read-only unless --writable, as every mount.
    let err = write_and_close(&m.at("app/db/password"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    // status says what the store can do.
    let (code, report) = status(m.path());
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        report["store_capabilities"],
        json!({"check_and_set": true, "versions": true, "metadata": true, "soft_delete": false})
    );
    assert!(!m.log().contains("hunter2"), "a value reached the log");
}

#[test]
fn writes_through_a_writable_mount_make_a_file_age_decrypts_to_the_documented_json() {
    let age = AgeKey::new();
    let file = age.path("app.age");
    run_ok(
        support::secretfs(),
        &[
            "store",
            "init",
            &format!("file:{}", file.display()),
            "--recipient",
            age.recipient(),
        ],
    );
    assert_eq!(
        age.decrypt(&file),
        json!({"secretfs": 1, "recipients": [age.recipient()], "secrets": {}})
    );
    let m = mount(&file, age.key(), &["--writable"]);
    std::fs::create_dir_all(m.at("app/db")).expect("mkdir");
    write_and_close(&m.at("app/db/password"), b"s3cret").expect("write");
    write_and_close(&m.at("app/db/user"), b"app").expect("write");
    run_ok(
        "setfattr",
        &[
            "-n",
            "user.secretfs.meta.owner",
            "-v",
            "ops",
            s(&m.at("app/db")),
        ],
    );
    let doc = age.decrypt(&file);
    assert_eq!(doc["secretfs"], json!(1));
    assert_eq!(doc["recipients"], json!([age.recipient()]));
    let db = &doc["secrets"]["app/db"];
    let versions = db["versions"].as_array().expect("versions");
    let last = versions.last().expect("a version");
    assert_eq!(last["data"], json!({"password": "s3cret", "user": "app"}));
    assert_eq!(last["version"], json!(versions.len()));
    assert!(last["created_time"].is_string(), "{db}");
    assert_eq!(db["custom_metadata"], json!({"owner": "ops"}));
    // rm of the last key, then rmdir: the secret is deleted, its
    // versions stay in the file.
    std::fs::remove_file(m.at("app/db/user")).expect("rm");
    std::fs::remove_file(m.at("app/db/password")).expect("rm");
    std::fs::remove_dir(m.at("app/db")).expect("rmdir");
    let doc = age.decrypt(&file);
    let last = doc["secrets"]["app/db"]["versions"]
        .as_array()
        .and_then(|v| v.last().cloned())
        .expect("versions kept");
    assert!(last["deleted_time"].is_string(), "{doc}");
    // No temporary file is left beside the store.
    let left: Vec<String> = std::fs::read_dir(age.dir())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn versions_show_as_p_at_n() {
    let age = AgeKey::new();
    let file = age.store_file(
        "app.age",
        &json!({"secrets": {"db": {"versions": [
            {"version": 1, "data": {"PASSWORD": "first"}},
            {"version": 2, "data": {"PASSWORD": "second"}}
        ]}}}),
    );
    let m = mount(&file, age.key(), &["--writable"]);
    assert_eq!(read(&m, "db/PASSWORD"), "second");
    assert_eq!(read(&m, "db@1/PASSWORD"), "first");
    write_and_close(&m.at("db/PASSWORD"), b"third").expect("write");
    assert_eq!(read(&m, "db@3/PASSWORD"), "third");
    assert_eq!(read(&m, "db@2/PASSWORD"), "second");
    let err = std::fs::read(m.at("db@9/PASSWORD")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    let err = write_and_close(&m.at("db@1/PASSWORD"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn a_change_made_with_the_age_tool_shows_within_the_ttl() {
    let age = AgeKey::new();
    let file = age.store_file(
        "app.age",
        &json!({"secrets": {"db": {"data": {"k": "old"}}}}),
    );
    let m = mount(&file, age.key(), &[]);
    assert_eq!(read(&m, "db/k"), "old");
    age.encrypt(
        &json!({"secrets": {"db": {"data": {"k": "new"}}, "more": {"data": {"x": "1"}}}}),
        &file,
    );
    eventually("the new value", Duration::from_secs(20), || {
        (std::fs::read(m.at("db/k")).ok()? == b"new").then_some(())
    });
    eventually("the new secret", Duration::from_secs(20), || {
        names(m.path()).contains("more").then_some(())
    });
}

#[test]
fn two_secretfs_processes_writing_one_file_lose_nothing() {
    let age = AgeKey::new();
    let file = age.store_file(
        "app.age",
        &json!({"secrets": {"shared": {"data": {"seed": "0"}}}}),
    );
    let a = mount(&file, age.key(), &["--writable"]);
    let b = mount(&file, age.key(), &["--writable"]);
    const EACH: usize = 12;
    std::thread::scope(|scope| {
        for (m, who) in [(&a, "a"), (&b, "b")] {
            scope.spawn(move || {
                for i in 0..EACH {
                    // A key of the secret both write, and a secret of its own.
                    write_and_close(&m.at(&format!("shared/{who}{i}")), who.as_bytes())
                        .unwrap_or_else(|e| panic!("{who}{i}: {e}"));
                    std::fs::create_dir_all(m.at(&format!("{who}/s{i}"))).expect("mkdir");
                    write_and_close(&m.at(&format!("{who}/s{i}/k")), b"v")
                        .unwrap_or_else(|e| panic!("{who}/s{i}: {e}"));
                }
            });
        }
    });
    let doc = age.decrypt(&file);
    let shared = doc["secrets"]["shared"]["versions"]
        .as_array()
        .and_then(|v| v.last())
        .map(|v| v["data"].clone())
        .expect("shared");
    for who in ["a", "b"] {
        for i in 0..EACH {
            assert_eq!(
                shared[format!("{who}{i}")],
                json!(who),
                "{who}{i} lost: {shared}"
            );
            let own = &doc["secrets"][format!("{who}/s{i}")]["versions"];
            assert!(own.is_array(), "{who}/s{i} lost");
        }
    }
    assert_eq!(shared["seed"], json!("0"));
}

/// (What `secretfs exec` reads from a store file is tested per store in
/// tests/exec.rs.)
#[test]
fn exec_of_a_file_source_without_an_identity_stops_before_the_command() {
    let age = AgeKey::new();
    let file = age.store_file(
        "app.age",
        &json!({"secrets": {"app/db": {"data": {"DB_PASSWORD": "hunter2"}}}}),
    );
    // Without an identity it stops before the command, saying why.
    let out = run(
        support::secretfs(),
        &["exec", &format!("file:{}", file.display()), "--", "true"],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--identity"),
        "{out:?}"
    );
}

/// A store file that is not there yet (a volume or a git checkout that
/// comes later) is a store that does not answer, as a Vault server that
/// is down: `secretfs exec --wait-for-store` waits for it, trying again
/// with backoff, then runs the command. It stopped at once (exit 125,
/// "No such file or directory"), where the runtime already took a missing
/// file for an outage.
#[test]
fn exec_waits_for_a_store_file_that_is_not_there_yet() {
    let age = AgeKey::new();
    let file = age.path("late.age");
    let stderr = age.path("stderr");
    let mut child = Command::new(support::secretfs())
        .args(["exec", &format!("file:{}#app", file.display())])
        .args(["--identity", s(age.key()), "--wait-for-store", "5m"])
        .args(["--", "sh", "-c", "printf %s \"$K\""])
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .env_remove("SECRETFS_AGE_IDENTITY_FILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("secretfs exec");
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    eventually("two logged retries", Duration::from_secs(30), || {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("exec stopped ({status}) instead of waiting: {}", log());
        }
        (log().matches("does not answer yet").count() >= 2).then_some(())
    });
    age.encrypt(
        &json!({"secrets": {"app": {"data": {"K": "from-the-late-file"}}}}),
        &file,
    );
    let status = eventually(
        format!("exec to run its command and exit (log: {})", log()),
        Duration::from_secs(60),
        || child.try_wait().ok().flatten(),
    );
    let out = child.wait_with_output().expect("output");
    assert!(status.success(), "{status}: {}", log());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-the-late-file");
}

#[test]
fn a_wrong_identity_fails_the_mount_with_one_line() {
    let age = AgeKey::new();
    let other = AgeKey::new();
    let file = age.store_file("app.age", &json!({"secrets": {}}));
    let stderr = refusal(
        &format!("file:{}", file.display()),
        &["--identity", s(other.key())],
    );
    assert!(
        stderr.contains(&format!(
            "no identity in {} opens {}",
            other.key().display(),
            file.display()
        )),
        "{stderr}"
    );
}

/// Unmounts a mount made in the background (the mount-helper form), so a
/// failed test leaves no daemon behind.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if support::is_mounted(self.0) {
            let _ = Command::new("fusermount3").arg("-u").arg(self.0).status();
        }
    }
}

#[test]
fn the_mount_helper_form_takes_a_file_source_and_its_identity_as_an_option() {
    // What mount(8) and /etc/fstab run: `secretfs SOURCE MOUNTPOINT -o
    // OPTIONS`, which returns once the background daemon serves.
    let age = AgeKey::new();
    let file = age.store_file("app.age", &json!({"secrets": {"db": {"data": {"k": "v"}}}}));
    let mnt = age.path("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let _unmount = Unmount(&mnt);
    let out = Command::new(support::secretfs())
        .arg(format!("file:{}", file.display()))
        .arg(&mnt)
        .arg("-o")
        .arg(format!(
            "ro,_netdev,identity={},ttl=1s",
            age.key().display()
        ))
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .env_remove("SECRETFS_AGE_IDENTITY_FILE")
        .output()
        .expect("secretfs");
    assert!(out.status.success(), "{out:?}");
    assert!(support::is_mounted(&mnt));
    assert_eq!(std::fs::read(mnt.join("db/k")).expect("read"), b"v");
}

#[test]
fn layouts_and_the_audit_log_work_on_a_file_store() {
    let age = AgeKey::new();
    let file = age.store_file(
        "app.age",
        &json!({"secrets": {"app/db": {"data": {"PASSWORD": "hunter2", "PORT": 5432}}}}),
    );
    let m = mount(&file, age.key(), &["--layout", "json"]);
    let shown: Value =
        serde_json::from_slice(&std::fs::read(m.at("app/db.json")).expect("read db.json"))
            .expect("JSON");
    assert_eq!(shown, json!({"PASSWORD": "hunter2", "PORT": 5432}));
    drop(m);
    let log = age.path("audit.log");
    let m = mount(&file, age.key(), &["--audit-log", s(&log)]);
    assert_eq!(read(&m, "app/db/PASSWORD"), "hunter2");
    let text = std::fs::read_to_string(&log).expect("audit log");
    assert!(
        text.lines().any(|l| l.contains("\"/app/db/PASSWORD\"")),
        "no audit line for the read: {text}"
    );
    assert!(!text.contains("hunter2"), "a value in the audit log");
}

#[test]
fn metrics_count_the_file_stores_requests() {
    let age = AgeKey::new();
    let file = age.store_file(
        "app.age",
        &json!({"secrets": {"app/db": {"data": {"k": "hunter2"}}}}),
    );
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let m = mount(&file, age.key(), &["--metrics", &addr]);
    assert_eq!(read(&m, "app/db/k"), "hunter2");
    let body = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .expect("scrape")
        .body_mut()
        .read_to_string()
        .expect("body");
    let reads = body
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "secretfs_store_request_duration_seconds_count{op=\"read\",outcome=\"ok\"} ",
            )
        })
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(reads >= 1.0, "no store read counted: {body}");
    assert!(body.contains("secretfs_store_up 1"), "{body}");
    assert!(!body.contains("hunter2") && !body.contains("app/db"));
}

/// `user.secretfs.NAME` of `path`, or the errno that refuses it.
fn xattr(path: &Path, name: &str) -> String {
    let out = run(
        "getfattr",
        &[
            "--only-values",
            "-n",
            &format!("user.secretfs.{name}"),
            s(path),
        ],
    );
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        format!(
            "({})",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .rsplit(": ")
                .next()
                .unwrap_or("")
        )
    }
}

/// What reading `rel` gives: its bytes, or the errno.
fn outcome(m: &Mount, rel: &str) -> String {
    match std::fs::read(m.at(rel)) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(0)),
    }
}

/// A secret's life through a writable mount (keys written, a key removed,
/// the secret deleted, written again) and what each step shows: the
/// version, the keys, the older versions as `P@N`, the metadata.
fn deletion_transcript(m: &Mount) -> Vec<String> {
    let mut t = Vec::new();
    let version = |t: &mut Vec<String>, step: &str| -> u64 {
        let v = xattr(&m.at("app/db"), "version");
        t.push(format!("{step}: version {v}"));
        v.parse()
            .unwrap_or_else(|_| panic!("{step}: no version: {v}"))
    };
    std::fs::create_dir_all(m.at("app/db")).expect("mkdir");
    write_and_close(&m.at("app/db/PASSWORD"), b"one").expect("write");
    write_and_close(&m.at("app/db/USER"), b"app").expect("write");
    write_and_close(&m.at("app/db/PASSWORD"), b"two").expect("write");
    run_ok(
        "setfattr",
        &[
            "-n",
            "user.secretfs.meta.owner",
            "-v",
            "ops",
            s(&m.at("app/db")),
        ],
    );
    let written = version(&mut t, "written");
    // A key removed: a new version without it; the one before keeps it.
    std::fs::remove_file(m.at("app/db/USER")).expect("rm USER");
    let removed = version(&mut t, "rm USER");
    t.push(format!("keys {:?}", names(&m.at("app/db"))));
    t.push(format!(
        "before: USER {}",
        outcome(m, &format!("app/db@{written}/USER"))
    ));
    t.push(format!(
        "after: USER {}",
        outcome(m, &format!("app/db@{removed}/USER"))
    ));
    // The last key, then the secret.
    std::fs::remove_file(m.at("app/db/PASSWORD")).expect("rm PASSWORD");
    let emptied = version(&mut t, "rm PASSWORD");
    std::fs::remove_dir(m.at("app/db")).expect("rmdir");
    t.push(format!("root {:?}", names(m.path())));
    t.push(format!("deleted: {}", outcome(m, "app/db/PASSWORD")));
    t.push(format!(
        "deleted version: {}",
        outcome(m, &format!("app/db@{emptied}/PASSWORD"))
    ));
    t.push(format!(
        "older: {}",
        outcome(m, &format!("app/db@{removed}/PASSWORD"))
    ));
    t.push(format!(
        "older xattr: {}",
        xattr(&m.at(&format!("app/db@{removed}")), "version")
    ));
    // Restored as secretfs restores (a copy from an older version): the
    // numbering goes on, the metadata was kept.
    std::fs::create_dir_all(m.at("app/db")).expect("mkdir again");
    std::fs::copy(
        m.at(&format!("app/db@{removed}/PASSWORD")),
        m.at("app/db/PASSWORD"),
    )
    .expect("cp P@N/K P/K");
    let again = version(&mut t, "restored");
    t.push(format!("restored: {}", outcome(m, "app/db/PASSWORD")));
    t.push(format!("numbering goes on: {}", again > emptied));
    t.push(format!("meta: {}", xattr(&m.at("app/db"), "meta.owner")));
    t.push(format!("keys {:?}", names(&m.at("app/db"))));
    t.push(format!("root {:?}", names(m.path())));
    t
}

#[test]
fn removing_keys_and_secrets_shows_as_on_openbao_kv_v2() {
    let bao = Bao::start();
    let on_bao = Mount::new(&bao, "secret/cmp", &["--writable", "--ttl", "1s"]);
    let expected = deletion_transcript(&on_bao);
    // The store itself: the latest version deleted, not destroyed.
    let (code, meta) = bao.api("GET", "secret/metadata/cmp/app/db", None);
    assert_eq!(code, 200, "{meta}");
    let age = AgeKey::new();
    let file = age.store_file("app.age", &json!({"secrets": {}}));
    let on_file = mount(&file, age.key(), &["--writable"]);
    let got = deletion_transcript(&on_file);
    assert_eq!(got, expected, "the file store differs from KV v2");
    // Older versions stay readable after the delete, on both.
    assert!(expected.iter().any(|l| l == "older: two"), "{expected:?}");
    assert!(
        expected.iter().any(|l| l == "deleted version: errno 2"),
        "{expected:?}"
    );
    assert!(
        expected.iter().any(|l| l == "restored: two"),
        "{expected:?}"
    );
    // In the file, as in KV v2's metadata: the deleted version is marked,
    // its data kept.
    let doc = age.decrypt(&file);
    let versions = doc["secrets"]["app/db"]["versions"]
        .as_array()
        .expect("versions");
    let deleted: Vec<&Value> = versions
        .iter()
        .filter(|v| v["deleted_time"].is_string())
        .collect();
    assert_eq!(deleted.len(), 1, "{doc}");
    let bao_deleted = meta["data"]["versions"]
        .as_object()
        .expect("versions")
        .iter()
        .filter(|(_, v)| v["deletion_time"].as_str().is_some_and(|t| !t.is_empty()))
        .map(|(n, _)| n.clone())
        .collect::<Vec<_>>();
    assert_eq!(bao_deleted, [deleted[0]["version"].to_string()], "{meta}");
}

/// An SSH key made with ssh-keygen (`-N ""`: none) in `dir`.
fn ssh_keygen(dir: &Path, kind: &str, passphrase: &str) -> (PathBuf, String) {
    let key = dir.join(format!("id_{kind}"));
    let mut args = vec![
        "-q",
        "-t",
        kind,
        "-N",
        passphrase,
        "-C",
        "me@test",
        "-f",
        s(&key),
    ];
    if kind == "rsa" {
        args.extend(["-b", "2048"]);
    }
    run_ok("ssh-keygen", &args);
    let public = std::fs::read_to_string(key.with_extension("pub"))
        .expect("the .pub file")
        .trim()
        .to_string();
    (key, public)
}

/// Writes `doc` to `file` with `age -R KEY.pub` (the SSH public key
/// beside `key`).
fn encrypt_to_ssh_key(key: &Path, doc: &Value, file: &Path) {
    let plain = file.with_extension("json");
    std::fs::write(&plain, doc.to_string()).expect("write plaintext");
    run_ok(
        "age",
        &[
            "-R",
            s(&key.with_extension("pub")),
            "-o",
            s(file),
            s(&plain),
        ],
    );
    std::fs::remove_file(&plain).expect("remove plaintext");
}

/// A store made by `secretfs store init --identity` an SSH key and
/// written through a mount decrypts with `age -d -i` that key; a file
/// made with `age -R key.pub` mounts with it.
fn an_ssh_key_works_both_ways_with_the_age_tool(kind: &str) {
    let age = AgeKey::new();
    let (key, public) = ssh_keygen(age.dir(), kind, "");
    let file = age.path("app.age");
    let source = format!("file:{}", file.display());
    run_ok(
        support::secretfs(),
        &["store", "init", &source, "--identity", s(&key)],
    );
    let m = mount(&file, &key, &["--writable"]);
    std::fs::create_dir_all(m.at("app/db")).expect("mkdir");
    write_and_close(&m.at("app/db/PASSWORD"), b"s3cret").expect("write");
    drop(m);
    let doc: Value = age_decrypt(&key, &file);
    let versions = doc["secrets"]["app/db"]["versions"]
        .as_array()
        .expect("versions");
    assert_eq!(versions[0]["data"], json!({"PASSWORD": "s3cret"}));
    // The recipient kept is the public key, without its comment.
    let without_comment = public.rsplit_once(' ').map_or(&*public, |(k, _)| k);
    assert_eq!(doc["recipients"], json!([without_comment]));
    // The other way: made by the age tool for the .pub file.
    let other = age.path("other.age");
    encrypt_to_ssh_key(
        &key,
        &json!({"secrets": {"db": {"data": {"k": "from-age"}}}}),
        &other,
    );
    let m = mount(&other, &key, &["--writable"]);
    assert_eq!(read(&m, "db/k"), "from-age");
    // A write encrypts it again to the key that opened it (the file
    // names no recipients): age still opens it.
    write_and_close(&m.at("db/k"), b"from-secretfs").expect("write");
    let doc: Value = age_decrypt(&key, &other);
    let last = doc["secrets"]["db"]["versions"]
        .as_array()
        .and_then(|v| v.last().cloned());
    assert_eq!(
        last.map(|v| v["data"].clone()),
        Some(json!({"k": "from-secretfs"}))
    );
    assert!(!m.log().contains("from-age"), "a value reached the log");
}

#[test]
fn an_ssh_ed25519_key_works_both_ways_with_the_age_tool() {
    an_ssh_key_works_both_ways_with_the_age_tool("ed25519");
}

#[test]
fn an_ssh_rsa_key_works_both_ways_with_the_age_tool() {
    an_ssh_key_works_both_ways_with_the_age_tool("rsa");
}

#[test]
fn store_init_takes_ssh_recipients_beside_an_age_identity() {
    let age = AgeKey::new();
    let (ssh_key, ssh_public) = ssh_keygen(age.dir(), "ed25519", "");
    let file = age.path("team.age");
    let source = format!("file:{}", file.display());
    run_ok(
        support::secretfs(),
        &[
            "store",
            "init",
            &source,
            "--identity",
            s(age.key()),
            "--recipient",
            &ssh_public,
        ],
    );
    // Both open it, with the age tool.
    assert_eq!(age_decrypt(&ssh_key, &file), age.decrypt(&file));
    // A write through a mount with the age key keeps the SSH recipient.
    let m = mount(&file, age.key(), &["--writable"]);
    std::fs::create_dir_all(m.at("db")).expect("mkdir");
    write_and_close(&m.at("db/k"), b"v").expect("write");
    let by_ssh: Value = age_decrypt(&ssh_key, &file);
    assert!(by_ssh["secrets"]["db"].is_object(), "{by_ssh}");
    // A recipient that is no key: one line, naming it.
    let out = run(
        support::secretfs(),
        &[
            "store",
            "init",
            &format!("file:{}", age.path("bad.age").display()),
            "--recipient",
            "ssh-ed25519 nope",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not an SSH public key"), "{stderr}");
}

#[test]
fn a_passphrase_protected_ssh_key_opens_with_its_passphrase_file() {
    let age = AgeKey::new();
    let (key, _) = ssh_keygen(age.dir(), "ed25519", "correct horse");
    let file = age.path("app.age");
    encrypt_to_ssh_key(
        &key,
        &json!({"secrets": {"db": {"data": {"k": "v"}}}}),
        &file,
    );
    let source = format!("file:{}", file.display());
    let pass = age.path("pass.txt");
    passphrase_refusals(&source, &key, &pass);
    // Right, from the flag and from the environment.
    std::fs::write(&pass, "correct horse\n").expect("write");
    let m = mount(&file, &key, &["--identity-passphrase-file", s(&pass)]);
    assert_eq!(read(&m, "db/k"), "v");
    assert!(
        !m.log().contains("correct horse"),
        "the passphrase reached the log"
    );
    drop(m);
    let m = Mount::builder_without_server(&source)
        .args(&["--identity", s(&key), "--ttl", "1s"])
        .env("SECRETFS_AGE_PASSPHRASE_FILE", &pass)
        .start();
    assert_eq!(read(&m, "db/k"), "v");
}

/// `age -p` (with `-a`: armored), which reads the passphrase from a
/// terminal: script(1) gives it one, whose input is the passphrase twice.
fn age_p(input: &Path, output: &Path, passphrase: &str, armor: bool) {
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!(
                "age -p {}-o {} {}",
                if armor { "-a " } else { "" },
                support::q(output),
                support::q(input)
            ),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(format!("{passphrase}\n{passphrase}\n").as_bytes())?;
            }
            child.wait_with_output()
        })
        .expect("script(1) runs age -p");
    assert!(out.status.success(), "age -p: {out:?}");
    let head = std::fs::read(output).expect("age -p wrote its output");
    let want: &[u8] = if armor {
        b"-----BEGIN AGE ENCRYPTED FILE-----"
    } else {
        b"age-encryption.org/v1\n-> scrypt "
    };
    assert!(head.starts_with(want), "not what age -p writes");
}

#[test]
fn an_identity_file_encrypted_with_age_p_opens_with_its_passphrase_file() {
    let age = AgeKey::new();
    let encrypted = age.path("key.txt.age");
    age_p(age.key(), &encrypted, "correct horse", false);
    let file = age.store_file("app.age", &json!({"secrets": {"db": {"data": {"k": "v"}}}}));
    let pass = age.path("pass.txt");
    std::fs::write(&pass, "correct horse\n").expect("write");
    let m = mount(
        &file,
        &encrypted,
        &["--identity-passphrase-file", s(&pass), "--writable"],
    );
    assert_eq!(read(&m, "db/k"), "v");
    write_and_close(&m.at("db/k"), b"w").expect("write");
    assert!(
        !m.log().contains("correct horse"),
        "the passphrase reached the log"
    );
    drop(m);
    // What it wrote, the age tool reads with the plain key.
    let doc = age.decrypt(&file);
    let last = doc["secrets"]["db"]["versions"]
        .as_array()
        .and_then(|v| v.last().cloned());
    assert_eq!(last.map(|v| v["data"].clone()), Some(json!({"k": "w"})));
    // Missing, wrong: one line each.
    let source = format!("file:{}", file.display());
    passphrase_refusals(&source, &encrypted, &pass);
    // store init takes it too.
    std::fs::write(&pass, "correct horse\n").expect("write");
    let new = age.path("new.age");
    run_ok(
        support::secretfs(),
        &[
            "store",
            "init",
            &format!("file:{}", new.display()),
            "--identity",
            s(&encrypted),
            "--identity-passphrase-file",
            s(&pass),
        ],
    );
    assert_eq!(
        age.decrypt(&new),
        json!({"secretfs": 1, "recipients": [age.recipient()], "secrets": {}})
    );
    // Armored (age -p -a) as well.
    let armored = age.path("key.txt.asc");
    age_p(age.key(), &armored, "correct horse", true);
    let m = mount(&file, &armored, &["--identity-passphrase-file", s(&pass)]);
    assert_eq!(read(&m, "db/k"), "w");
}

#[test]
fn an_unsupported_ssh_key_or_a_wrong_key_fails_the_mount_with_one_line() {
    let age = AgeKey::new();
    let (ecdsa, _) = ssh_keygen(age.dir(), "ecdsa", "");
    let file = age.store_file("app.age", &json!({"secrets": {}}));
    let source = format!("file:{}", file.display());
    let stderr = refusal(&source, &["--identity", s(&ecdsa)]);
    assert!(
        stderr.contains("unsupported SSH key type ecdsa"),
        "{stderr}"
    );
    // An SSH key the file is not encrypted to: names both files.
    let (ed, _) = ssh_keygen(age.dir(), "ed25519", "");
    let stderr = refusal(&source, &["--identity", s(&ed)]);
    assert!(
        stderr.contains(&format!(
            "no identity in {} opens {}",
            ed.display(),
            file.display()
        )),
        "{stderr}"
    );
}
