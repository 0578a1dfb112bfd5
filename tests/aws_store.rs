//! AWS Secrets Manager (`aws-sm:PREFIX`) with real parts: a real FUSE
//! mount of the secretfs binary against moto's server (which speaks the
//! Secrets Manager API; scripts/install-deps installs it). Folders and
//! secrets list; JSON-object keys, a plain string and a binary secret
//! read; a change made with the API shows within the TTL; writes make
//! new versions and move AWSCURRENT; mkdir+write creates a secret, rm
//! removes a key, rmdir schedules the deletion (restorable for
//! --recovery-window days, 30 unless given; 7 to 30 taken); two writers
//! lose nothing and a lost check is EAGAIN; ENOENT, EIO once the endpoint
//! is dead, EACCES in moto's IAM mode; `secretfs exec`; a store file
//! layered over AWS; `secretfs status` names what the store can do; tags
//! are `user.secretfs.meta.*` attributes that a writable mount sets and
//! removes, within AWS's limits; a read of a value sends no
//! DescribeSecret, the tags and description are described when asked,
//! once per TTL (requests counted by a proxy, `support::Counted`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, names, run_ok, s, set, status, write_and_close, Counted, Moto, Mount};

fn mount(moto: &Moto, source: &str, args: &[&str]) -> Mount {
    let mut all = vec!["--ttl", "1s"];
    all.extend_from_slice(args);
    Mount::builder_without_server(source)
        .aws(moto)
        .args(&all)
        .start()
}

fn read(m: &Mount, rel: &str) -> String {
    String::from_utf8(std::fs::read(m.at(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .expect("UTF-8")
}

fn errno(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// The labels of each version of `name`, by version id.
fn stages(moto: &Moto, name: &str) -> serde_json::Map<String, Value> {
    moto.describe(name).expect("describe")["VersionIdsToStages"]
        .as_object()
        .cloned()
        .expect("VersionIdsToStages")
}

#[test]
fn folders_secrets_and_the_three_kinds_of_value_read() {
    let moto = Moto::start();
    moto.create("prod/app/db", r#"{"user":"app","port":5432}"#);
    moto.create("prod/api", "t0k-plain");
    moto.create_binary("prod/cert", &[0, 0xff, 1, b'\n']);
    moto.create("dev/db", r#"{"user":"dev"}"#);
    let m = mount(&moto, "aws-sm:prod/", &[]);
    assert_eq!(names(m.path()), set(&["app", "api", "cert"]));
    assert_eq!(names(&m.at("app")), set(&["db"]));
    assert_eq!(names(&m.at("app/db")), set(&["port", "user"]));
    assert_eq!(read(&m, "app/db/user"), "app");
    assert_eq!(read(&m, "app/db/port"), "5432");
    assert_eq!(names(&m.at("api")), set(&["value"]));
    assert_eq!(read(&m, "api/value"), "t0k-plain");
    assert_eq!(
        std::fs::read(m.at("cert/value")).expect("cert"),
        vec![0, 0xff, 1, b'\n']
    );
    // Missing names: ENOENT.
    assert_eq!(errno(std::fs::metadata(m.at("nope"))), Some(libc::ENOENT));
    assert_eq!(
        errno(std::fs::metadata(m.at("app/db/nokey"))),
        Some(libc::ENOENT)
    );
    // Read-only unless --writable.
    assert_eq!(
        errno(write_and_close(&m.at("app/db/user"), b"x")),
        Some(libc::EROFS)
    );
    // A change made with the API shows within the TTL.
    moto.put("prod/api", "rotated");
    moto.put("prod/app/db", r#"{"user":"app2","port":5432}"#);
    eventually("the rotated values", Duration::from_secs(20), || {
        (read(&m, "api/value") == "rotated" && read(&m, "app/db/user") == "app2").then_some(())
    });
    // status names the store (its endpoint) and what it can do.
    let (code, report) = status(m.path());
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        report["store_capabilities"],
        json!({"check_and_set": true, "versions": false, "metadata": true, "soft_delete": false})
    );
    assert_eq!(report["store_node"], json!(moto.endpoint()), "{report}");
    let log = m.log();
    for value in ["t0k-plain", "rotated", "app2"] {
        assert!(!log.contains(value), "a value reached the log: {value}");
    }
}

#[test]
fn plain_key_names_the_file_of_a_plain_secret() {
    let moto = Moto::start();
    moto.create("api", "t0k");
    let m = mount(&moto, "aws-sm:", &["--plain-key", "token"]);
    assert_eq!(names(&m.at("api")), set(&["token"]));
    assert_eq!(read(&m, "api/token"), "t0k");
}

#[test]
fn writes_make_new_versions_create_remove_and_schedule_deletion() {
    let moto = Moto::start();
    let first = moto.create("prod/db", r#"{"user":"u"}"#)["VersionId"]
        .as_str()
        .expect("VersionId")
        .to_string();
    moto.create("prod/api", "old");
    let m = mount(&moto, "aws-sm:prod", &["--writable"]);

    // A key written: a new version holding both, AWSCURRENT moved to it.
    write_and_close(&m.at("db/password"), b"p4ss").expect("write");
    assert_eq!(
        moto.current_json("prod/db"),
        Some(json!({"user": "u", "password": "p4ss"}))
    );
    let current = moto.current("prod/db").expect("current")["VersionId"]
        .as_str()
        .expect("VersionId")
        .to_string();
    assert_ne!(current, first);
    let labels = stages(&moto, "prod/db");
    assert!(
        labels[&current]
            .as_array()
            .expect("labels")
            .contains(&json!("AWSCURRENT")),
        "{labels:?}"
    );
    assert_eq!(labels[&first], json!(["AWSPREVIOUS"]), "{labels:?}");

    // A plain secret stays plain.
    write_and_close(&m.at("api/value"), b"new").expect("write");
    assert_eq!(
        moto.current("prod/api").expect("api")["SecretString"],
        json!("new")
    );

    // mkdir + write: a new secret (a JSON object).
    std::fs::create_dir(m.at("fresh")).expect("mkdir");
    write_and_close(&m.at("fresh/k"), b"v").expect("write");
    assert_eq!(moto.current_json("prod/fresh"), Some(json!({"k": "v"})));

    // rm of a key: a new version without it.
    std::fs::remove_file(m.at("db/user")).expect("rm");
    assert_eq!(
        moto.current_json("prod/db"),
        Some(json!({"password": "p4ss"}))
    );
    // rm of the last key: the secret stays, an empty object (as a store
    // file keeps an empty secret).
    std::fs::remove_file(m.at("fresh/k")).expect("rm");
    assert_eq!(moto.current_json("prod/fresh"), Some(json!({})));
    assert!(names(&m.at("fresh")).is_empty());

    // rmdir: DeleteSecret with the recovery window, never forced.
    std::fs::remove_dir(m.at("fresh")).expect("rmdir");
    let described = moto.describe("prod/fresh").expect("still there");
    assert!(
        !described["DeletedDate"].is_null(),
        "not scheduled for deletion: {described}"
    );
    assert!(moto.current("prod/fresh").is_none());
    eventually(
        "the deleted secret leaves the listing",
        Duration::from_secs(20),
        || (!names(m.path()).contains("fresh")).then_some(()),
    );
    // It can be restored, with its versions.
    moto.ok("RestoreSecret", json!({"SecretId": "prod/fresh"}));
    assert_eq!(moto.current_json("prod/fresh"), Some(json!({})));
    eventually(
        "the restored secret shows again",
        Duration::from_secs(20),
        || names(m.path()).contains("fresh").then_some(()),
    );
    // And a name deleted through the mount can be written again.
    std::fs::remove_dir(m.at("fresh")).expect("rmdir again");
    std::fs::create_dir(m.at("fresh")).expect("mkdir again");
    write_and_close(&m.at("fresh/k2"), b"v2").expect("write again");
    assert_eq!(
        moto.current_json("prod/fresh"),
        Some(json!({"k2": "v2"})),
        "{}",
        m.log()
    );
    assert!(!m.log().contains("p4ss"), "a value reached the log");
}

/// In whole days, how long after its creation `name` is scheduled to be
/// deleted (moto's DescribeSecret gives the scheduled date as DeletedDate).
fn scheduled_in_days(moto: &Moto, name: &str) -> i64 {
    let described = moto.describe(name).expect("still there");
    let date = |field: &str| {
        described[field]
            .as_f64()
            .unwrap_or_else(|| panic!("no {field}: {described}"))
    };
    ((date("DeletedDate") - date("CreatedDate")) / 86_400.0).round() as i64
}

#[test]
fn rmdir_keeps_the_secret_restorable_for_the_recovery_window() {
    let moto = Moto::start();
    for name in ["week", "fortnight", "month"] {
        moto.create(name, "{}");
    }
    let given = [
        ("week", vec!["--recovery-window", "7"]),
        ("fortnight", vec!["-o", "recovery_window=14"]),
        ("month", vec![]),
    ];
    for (name, args) in given {
        let mut all = vec!["--writable"];
        all.extend(args);
        let m = mount(&moto, "aws-sm:", &all);
        std::fs::remove_dir(m.at(name)).unwrap_or_else(|e| panic!("rmdir {name}: {e}"));
    }
    assert_eq!(scheduled_in_days(&moto, "week"), 7);
    assert_eq!(scheduled_in_days(&moto, "fortnight"), 14);
    assert_eq!(scheduled_in_days(&moto, "month"), 30, "the default");
}

#[test]
fn a_recovery_window_aws_does_not_take_is_refused_in_one_line() {
    let moto = Moto::start();
    for days in ["3", "31"] {
        let (status, stderr) = Mount::builder_without_server("aws-sm:")
            .aws(&moto)
            .args(&["--writable", "--recovery-window", days])
            .fail();
        assert!(!status.success());
        let said: Vec<&str> = stderr.lines().collect();
        assert_eq!(said.len(), 1, "{stderr}");
        assert!(said[0].contains("--recovery-window"), "{stderr}");
        assert!(said[0].contains(days), "{stderr}");
        assert!(said[0].contains("7 to 30 days"), "{stderr}");
    }
}

#[test]
fn two_writers_lose_nothing() {
    let moto = Moto::start();
    moto.create("shared", r#"{"seed":"0"}"#);
    let a = mount(&moto, "aws-sm:", &["--writable"]);
    let b = mount(&moto, "aws-sm:", &["--writable"]);
    const EACH: usize = 6;
    std::thread::scope(|scope| {
        for (m, who) in [(&a, "a"), (&b, "b")] {
            scope.spawn(move || {
                for i in 0..EACH {
                    write_and_close(&m.at(&format!("shared/{who}{i}")), who.as_bytes())
                        .unwrap_or_else(|e| panic!("{who}{i}: {e}"));
                }
            });
        }
    });
    let shared = moto.current_json("shared").expect("shared");
    for who in ["a", "b"] {
        for i in 0..EACH {
            assert_eq!(
                shared[format!("{who}{i}")],
                json!(who),
                "{who}{i} lost: {shared}"
            );
        }
    }
    assert_eq!(shared["seed"], json!("0"));
}

#[test]
fn a_write_checked_against_a_version_no_longer_current_fails_with_eagain() {
    use secretfs::error::Error;
    use secretfs::store::{Deadline, Precondition, SecretPath, StoreSettings};
    let moto = Moto::start();
    let old = moto.create("prod/db", r#"{"user":"u"}"#)["VersionId"]
        .as_str()
        .expect("VersionId")
        .to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    // The credentials, as a profile of a shared credentials file.
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        "[moto]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .expect("credentials");
    // SAFETY: only this test of this binary sets it, before any thread of
    // its own reads the environment.
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &credentials);
    let mut stores = StoreSettings::default();
    stores.aws.region = Some("eu-west-1".into());
    stores.aws.endpoint = Some(moto.endpoint().into());
    stores.aws.profile = Some("moto".into());
    let no_vault = || {
        Err(secretfs::start_error::StartError::Options(
            "no Vault".into(),
        ))
    };
    let connected =
        secretfs::store::connect("aws-sm:prod", &no_vault, &stores, rt.handle().clone())
            .unwrap_or_else(|e| panic!("connect: {e}"));
    let path = SecretPath::parse("db").under(&connected.root);
    let read = connected
        .store
        .read(&Deadline::per_request(), &path)
        .expect("read")
        .expect("a secret");
    assert_eq!(
        read.revision.as_ref().map(|r| r.as_str()),
        Some(old.as_str())
    );
    // Someone else writes.
    moto.put("prod/db", r#"{"user":"them"}"#);
    let mut data = read.keys.clone();
    data.insert(
        "user".into(),
        secretfs::store::SecretValue::from_bytes(b"me".to_vec()),
    );
    let lost = connected
        .store
        .write(
            &Deadline::per_request(),
            &path,
            &data,
            &Precondition::At(read.revision.clone().expect("revision")),
        )
        .expect_err("the check must fail");
    assert!(matches!(lost, Error::CasConflict), "{lost:?}");
    assert_eq!(lost.errno(), libc::EAGAIN);
    // Their update stands, and what we staged carries no label.
    assert_eq!(moto.current_json("prod/db"), Some(json!({"user": "them"})));
    let labels = stages(&moto, "prod/db");
    let labelled: Vec<&Value> = labels.values().filter(|l| l != &&json!([])).collect();
    assert_eq!(labelled.len(), 2, "{labels:?}");
    // A write checked against the current version goes through.
    let now = connected
        .store
        .read(&Deadline::per_request(), &path)
        .expect("read")
        .expect("a secret");
    connected
        .store
        .write(
            &Deadline::per_request(),
            &path,
            &data,
            &Precondition::At(now.revision.expect("revision")),
        )
        .expect("write");
    assert_eq!(moto.current_json("prod/db"), Some(json!({"user": "me"})));
    // Absent: the name is taken.
    let taken = connected
        .store
        .write(
            &Deadline::per_request(),
            &path,
            &data,
            &Precondition::Absent,
        )
        .expect_err("exists");
    assert!(matches!(taken, Error::CasConflict), "{taken:?}");
}

#[test]
fn a_dead_endpoint_fails_with_eio_after_the_deadline() {
    let mut moto = Moto::start();
    moto.create("prod/seen", r#"{"k":"v"}"#);
    moto.create("prod/unseen", r#"{"k":"v"}"#);
    let m = mount(&moto, "aws-sm:prod", &["--timeout", "2s"]);
    assert_eq!(names(m.path()), set(&["seen", "unseen"]));
    assert_eq!(read(&m, "seen/k"), "v");
    moto.stop();
    // Never read: nothing cached to serve while the store is down.
    assert_eq!(errno(std::fs::read(m.at("unseen/k"))), Some(libc::EIO));
}

/// A user of moto's IAM mode whose policy allows `actions` only: its
/// access key id and secret key. The moto must be started with
/// `INITIAL_NO_AUTH_ACTION_COUNT` letting these 3 IAM requests through.
fn iam_user(moto: &Moto, actions: &[&str]) -> (String, String) {
    let iam = |action: &str, params: &[(&str, &str)]| -> String {
        let mut form = format!("Action={action}&Version=2010-05-08");
        for (k, v) in params {
            form.push_str(&format!("&{k}={}", urlencode(v)));
        }
        let out = Command::new("curl")
            .args(["-sS", "-X", "POST", moto.endpoint()])
            .args(["-H", "Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0"])
            .args(["-H", "Content-Type: application/x-www-form-urlencoded"])
            .args(["-d", &form])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    iam("CreateUser", &[("UserName", "reader")]);
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": "*"}
    ]})
    .to_string();
    iam(
        "PutUserPolicy",
        &[
            ("UserName", "reader"),
            ("PolicyName", "list"),
            ("PolicyDocument", &policy),
        ],
    );
    let keys = iam("CreateAccessKey", &[("UserName", "reader")]);
    let tag = |name: &str| -> String {
        let open = format!("<{name}>");
        let start = keys.find(&open).map(|i| i + open.len()).expect(name);
        let end = keys[start..].find('<').expect(name) + start;
        keys[start..end].to_string()
    };
    (tag("AccessKeyId"), tag("SecretAccessKey"))
}

#[test]
fn access_denied_is_eacces() {
    // moto's IAM mode: the first requests are let through (to make a user
    // whose policy allows listing only), the rest are checked.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "5")]);
    moto.create("prod/db", r#"{"k":"v"}"#);
    let (id, secret) = iam_user(&moto, &["secretsmanager:ListSecrets"]);
    let m = Mount::builder_without_server("aws-sm:prod")
        .aws(&moto)
        .env("AWS_ACCESS_KEY_ID", &id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .args(&["--ttl", "1s"])
        .start();
    assert_eq!(names(m.path()), set(&["db"]));
    assert_eq!(errno(std::fs::read(m.at("db/k"))), Some(libc::EACCES));
}

#[test]
fn a_policy_that_denies_describe_secret_reads_values_without_tags() {
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "5")]);
    let version = moto.ok(
        "CreateSecret",
        json!({"Name": "prod/db", "SecretString": r#"{"k":"v"}"#,
               "Tags": [{"Key": "owner", "Value": "team-a"}]}),
    )["VersionId"]
        .as_str()
        .expect("VersionId")
        .to_string();
    let (id, secret) = iam_user(
        &moto,
        &[
            "secretsmanager:ListSecrets",
            "secretsmanager:GetSecretValue",
        ],
    );
    let m = Mount::builder_without_server("aws-sm:prod")
        .aws(&moto)
        .env("AWS_ACCESS_KEY_ID", &id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .args(&["--ttl", "1s"])
        .start();
    assert_eq!(read(&m, "db/k"), "v");
    // The version's attributes, and no tag.
    assert_eq!(get_x(&m.at("db"), "user.secretfs.version"), Ok(version));
    assert_eq!(
        get_x(&m.at("db"), "user.secretfs.meta.owner"),
        Err(libc::ENODATA)
    );
    // Said once.
    read(&m, "db/k");
    support::eventually("the warning", Duration::from_secs(10), || {
        m.log().contains("DescribeSecret is denied").then_some(())
    });
    assert_eq!(m.log().matches("DescribeSecret is denied").count(), 1);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn exec_runs_a_command_with_the_keys_of_an_aws_secret() {
    let moto = Moto::start();
    moto.create("prod/app", r#"{"DB_PASSWORD":"hunter2","DB_USER":"app"}"#);
    let out = Command::new(support::secretfs())
        .args(["exec", "aws-sm:prod/app", "--endpoint", moto.endpoint()])
        .args(["--region", "eu-west-1", "--", "env"])
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("HOME", Path::new("/nonexistent"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .expect("secretfs exec");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.lines().any(|l| l == "DB_PASSWORD=hunter2"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l == "DB_USER=app"), "{stdout}");
}

#[test]
fn a_store_file_layers_over_aws() {
    let moto = Moto::start();
    moto.create("prod/db", r#"{"USER":"app","PASSWORD":"from-aws"}"#);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.txt");
    let file = dir.path().join("overrides.age");
    let layer = format!("file:{}", file.display());
    run_ok(
        support::secretfs(),
        &["store", "init", &layer, "--identity", s(&key)],
    );
    let m = mount(
        &moto,
        "aws-sm:prod",
        &["--layer", &layer, "--identity", s(&key), "--writable"],
    );
    assert_eq!(read(&m, "db/PASSWORD"), "from-aws");
    // Writes go to the top layer: the file, never AWS.
    write_and_close(&m.at("db/PASSWORD"), b"local").expect("write");
    assert_eq!(read(&m, "db/PASSWORD"), "local");
    assert_eq!(read(&m, "db/USER"), "app");
    let source = run_ok(
        "getfattr",
        &[
            "--only-values",
            "-n",
            "user.secretfs.source",
            s(&m.at("db/PASSWORD")),
        ],
    );
    assert_eq!(source, layer);
    assert_eq!(
        moto.current_json("prod/db"),
        Some(json!({"USER": "app", "PASSWORD": "from-aws"}))
    );
}

/// The extended attribute `name` of `path`, or the errno.
fn get_x(path: &Path, name: &str) -> Result<String, i32> {
    let path = std::ffi::CString::new(s(path)).expect("path");
    let name = std::ffi::CString::new(name).expect("name");
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: NUL-terminated strings and a buffer of the length given.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8(buf).expect("UTF-8"))
}

/// The names of the extended attributes of `path` under `user.secretfs.`.
fn list_x(path: &Path) -> std::collections::BTreeSet<String> {
    let c = std::ffi::CString::new(s(path)).expect("path");
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: a NUL-terminated path and a buffer of the length given.
    let n = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr {}", path.display());
    buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| n.starts_with("user.secretfs."))
        .collect()
}

/// setxattr(2) of `name` on `path` (no flags), or the errno.
/// On a read-only mount: the attribute `name` of `path` reads `value`,
/// and setting or removing it is `EROFS`.
fn shown_and_unchangeable(path: &Path, name: &str, value: &str) {
    assert_eq!(get_x(path, name), Ok(value.to_string()), "{name}");
    assert_eq!(set_x(path, name, "x"), Err(libc::EROFS), "{name}");
    assert_eq!(remove_x(path, name), Err(libc::EROFS), "{name}");
}

fn set_x(path: &Path, name: &str, value: &str) -> Result<(), i32> {
    let path = std::ffi::CString::new(s(path)).expect("path");
    let name = std::ffi::CString::new(name).expect("name");
    // SAFETY: NUL-terminated strings and a value of the length given.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(())
}

/// removexattr(2) of `name` on `path`, or the errno.
fn remove_x(path: &Path, name: &str) -> Result<(), i32> {
    let path = std::ffi::CString::new(s(path)).expect("path");
    let name = std::ffi::CString::new(name).expect("name");
    // SAFETY: NUL-terminated strings.
    if unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(())
}

/// The tags of `name` as AWS answers DescribeSecret: key → value.
fn tags(moto: &Moto, name: &str) -> std::collections::BTreeMap<String, String> {
    moto.describe(name).expect("describe")["Tags"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t["Key"].as_str().expect("Key").to_string(),
                t["Value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn tags_show_as_metadata_attributes_and_setfattr_changes_them() {
    let moto = Moto::start();
    let created = moto.ok(
        "CreateSecret",
        json!({"Name": "prod/db", "SecretString": r#"{"user":"app"}"#,
               "Tags": [{"Key": "owner", "Value": "team-a"},
                        {"Key": "cost center", "Value": "42"}]}),
    );
    let version = created["VersionId"]
        .as_str()
        .expect("VersionId")
        .to_string();
    let m = mount(&moto, "aws-sm:prod", &["--writable"]);
    for path in ["db", "db/user"] {
        let p = m.at(path);
        assert_eq!(
            list_x(&p),
            [
                "user.secretfs.created_time",
                "user.secretfs.meta.cost center",
                "user.secretfs.meta.owner",
                "user.secretfs.version",
            ]
            .iter()
            .map(|n| n.to_string())
            .collect(),
            "{path}"
        );
        assert_eq!(get_x(&p, "user.secretfs.meta.owner"), Ok("team-a".into()));
        assert_eq!(get_x(&p, "user.secretfs.meta.cost center"), Ok("42".into()));
        assert_eq!(get_x(&p, "user.secretfs.version"), Ok(version.clone()));
        let created = get_x(&p, "user.secretfs.created_time").expect("created_time");
        humantime::parse_rfc3339(&created).expect("RFC 3339");
        assert_eq!(
            get_x(&p, "user.secretfs.meta.none"),
            Err(libc::ENODATA),
            "{path}"
        );
    }

    // Set: TagResource, the other tags kept, no new version.
    set_x(&m.at("db"), "user.secretfs.meta.tier", "gold").expect("set tier");
    set_x(&m.at("db/user"), "user.secretfs.meta.owner", "team-b").expect("set owner");
    let want = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(
        tags(&moto, "prod/db"),
        want(&[("cost center", "42"), ("owner", "team-b"), ("tier", "gold")])
    );
    assert_eq!(
        moto.current("prod/db").expect("current")["VersionId"],
        json!(version),
        "no new version"
    );
    assert_eq!(
        get_x(&m.at("db"), "user.secretfs.meta.tier"),
        Ok("gold".into())
    );
    assert_eq!(
        get_x(&m.at("db/user"), "user.secretfs.meta.owner"),
        Ok("team-b".into())
    );

    // Removed: UntagResource; a tag it does not have is ENODATA.
    remove_x(&m.at("db/user"), "user.secretfs.meta.cost center").expect("remove");
    assert_eq!(
        tags(&moto, "prod/db"),
        want(&[("owner", "team-b"), ("tier", "gold")])
    );
    assert_eq!(
        get_x(&m.at("db"), "user.secretfs.meta.cost center"),
        Err(libc::ENODATA)
    );
    assert_eq!(
        remove_x(&m.at("db"), "user.secretfs.meta.cost center"),
        Err(libc::ENODATA)
    );

    // A tag set with the API shows within the TTL.
    moto.ok(
        "TagResource",
        json!({"SecretId": "prod/db", "Tags": [{"Key": "env", "Value": "prod"}]}),
    );
    eventually("the tag set with the API", Duration::from_secs(20), || {
        (get_x(&m.at("db"), "user.secretfs.meta.env") == Ok("prod".into())).then_some(())
    });

    // A read-only mount shows them and refuses changes.
    let ro = mount(&moto, "aws-sm:prod", &[]);
    shown_and_unchangeable(&ro.at("db"), "user.secretfs.meta.tier", "gold");
    let (_, report) = status(m.path());
    assert_eq!(report["store_capabilities"]["metadata"], json!(true));
    let log = m.log();
    for value in ["team-b", "gold"] {
        assert!(!log.contains(value), "a tag value reached the log: {value}");
    }
}

#[test]
fn tags_aws_would_refuse_are_refused_with_a_clear_errno() {
    let moto = Moto::start();
    let fifty: Vec<Value> = (0..50)
        .map(|i| json!({"Key": format!("t{i}"), "Value": "v"}))
        .collect();
    moto.ok(
        "CreateSecret",
        json!({"Name": "full", "SecretString": "{}", "Tags": fifty}),
    );
    moto.create("db", r#"{"k":"v"}"#);
    let m = mount(&moto, "aws-sm:", &["--writable"]);
    let db = m.at("db");
    let meta = |k: &str| format!("user.secretfs.meta.{k}");
    // Lengths AWS refuses: EINVAL, as Vault's 400.
    assert_eq!(set_x(&db, &meta(&"k".repeat(129)), "v"), Err(libc::EINVAL));
    assert_eq!(set_x(&db, &meta("k"), &"é".repeat(257)), Err(libc::EINVAL));
    // AWS's own tags are AWS's to set: EPERM, as the version's attribute.
    assert_eq!(set_x(&db, &meta("aws:owner"), "v"), Err(libc::EPERM));
    assert!(tags(&moto, "db").is_empty(), "{:?}", tags(&moto, "db"));
    // The longest AWS takes are taken.
    set_x(&db, &meta(&"k".repeat(128)), &"é".repeat(256)).expect("the longest tag");
    assert_eq!(tags(&moto, "db").len(), 1);

    // The 51st tag: EINVAL; a change of one of the 50 is taken.
    let full = m.at("full");
    assert_eq!(set_x(&full, &meta("t50"), "v"), Err(libc::EINVAL));
    set_x(&full, &meta("t7"), "changed").expect("a change of a tag there is");
    let now = tags(&moto, "full");
    assert_eq!(now.len(), 50);
    assert_eq!(now["t7"], "changed");
    assert!(!now.contains_key("t50"));
    // The log says why, without the value.
    assert!(m.log().contains("AWS takes at most 50"), "{}", m.log());
}

#[test]
fn the_description_is_its_own_attribute_and_setfattr_changes_it() {
    let moto = Moto::start();
    let version = moto.ok(
        "CreateSecret",
        json!({"Name": "prod/db", "SecretString": r#"{"user":"app"}"#,
               "Description": "orders database",
               "Tags": [{"Key": "description", "Value": "a tag"}]}),
    )["VersionId"]
        .as_str()
        .expect("VersionId")
        .to_string();
    moto.create("prod/api", "t0k");
    let m = mount(&moto, "aws-sm:prod", &["--writable"]);
    // Outside meta.: a tag of any name cannot clash with it.
    for path in ["db", "db/user"] {
        let p = m.at(path);
        assert!(
            list_x(&p).contains("user.secretfs.description"),
            "{path}: {:?}",
            list_x(&p)
        );
        assert_eq!(
            get_x(&p, "user.secretfs.description"),
            Ok("orders database".into())
        );
        assert_eq!(
            get_x(&p, "user.secretfs.meta.description"),
            Ok("a tag".into())
        );
    }
    // None: no attribute.
    assert!(!list_x(&m.at("api")).contains("user.secretfs.description"));
    assert_eq!(
        get_x(&m.at("api"), "user.secretfs.description"),
        Err(libc::ENODATA)
    );

    // Set: UpdateSecret with the Description only; no new version, the
    // tags kept.
    set_x(
        &m.at("db/user"),
        "user.secretfs.description",
        "the orders DB",
    )
    .expect("set");
    let described = moto.describe("prod/db").expect("describe");
    assert_eq!(described["Description"], json!("the orders DB"));
    assert_eq!(
        tags(&moto, "prod/db"),
        [("description".to_string(), "a tag".to_string())]
            .into_iter()
            .collect()
    );
    assert_eq!(
        moto.current("prod/db").expect("current")["VersionId"],
        json!(version),
        "no new version"
    );
    assert_eq!(
        get_x(&m.at("db"), "user.secretfs.description"),
        Ok("the orders DB".into())
    );
    set_x(&m.at("api"), "user.secretfs.description", "the API token").expect("set");
    assert_eq!(
        moto.describe("prod/api").expect("describe")["Description"],
        json!("the API token")
    );
    // Longer than AWS takes: EINVAL, nothing sent.
    assert_eq!(
        set_x(&m.at("db"), "user.secretfs.description", &"d".repeat(2049)),
        Err(libc::EINVAL)
    );
    assert_eq!(
        moto.describe("prod/db").expect("describe")["Description"],
        json!("the orders DB")
    );
    // Removing it is UpdateSecret with an empty Description, which AWS
    // takes; moto keeps the old one on an empty Description, so only the
    // answer is checked here.
    remove_x(&m.at("api"), "user.secretfs.description").expect("remove");

    // A read-only mount shows it and refuses changes.
    let ro = mount(&moto, "aws-sm:prod", &[]);
    shown_and_unchangeable(&ro.at("db"), "user.secretfs.description", "the orders DB");
    let log = m.log();
    for value in ["the orders DB", "the API token"] {
        assert!(
            !log.contains(value),
            "a description reached the log: {value}"
        );
    }
}

#[test]
fn a_read_sends_no_describe_secret_and_the_metadata_is_described_once_per_ttl() {
    let moto = Moto::start();
    moto.ok(
        "CreateSecret",
        json!({"Name": "prod/db", "SecretString": r#"{"user":"app"}"#,
               "Description": "orders database",
               "Tags": [{"Key": "owner", "Value": "team-a"}]}),
    );
    let counted = Counted::before(&moto);
    // A TTL no step of this test outlives: nothing expires, nothing is
    // refreshed ahead, so every request counted is one a step made.
    let m = Mount::builder_without_server("aws-sm:prod")
        .aws_at(counted.endpoint())
        .args(&["--ttl", "600s", "--writable"])
        .start();
    assert_eq!(read(&m, "db/user"), "app");
    assert!(
        counted.count("GetSecretValue") >= 1,
        "the read went elsewhere: {:?}",
        counted.all()
    );
    assert_eq!(
        counted.count("DescribeSecret"),
        0,
        "a read of the value described the secret: {:?}",
        counted.all()
    );

    // getfattr -d: the names, then each value, of the directory and of
    // the key file: one DescribeSecret for all of it.
    for path in ["db", "db/user"] {
        let p = m.at(path);
        let listed = list_x(&p);
        assert!(listed.contains("user.secretfs.meta.owner"), "{listed:?}");
        for name in &listed {
            get_x(&p, name).unwrap_or_else(|e| panic!("{path} {name}: errno {e}"));
        }
        assert_eq!(
            get_x(&p, "user.secretfs.description"),
            Ok("orders database".into())
        );
    }
    assert_eq!(
        counted.count("DescribeSecret"),
        1,
        "the metadata was not asked once: {:?}",
        counted.all()
    );
    // The version and its time come with the value: no request.
    get_x(&m.at("db"), "user.secretfs.version").expect("version");
    assert_eq!(counted.count("DescribeSecret"), 1, "{:?}", counted.all());

    // A tag set through the mount shows at once, cached TTL or not.
    set_x(&m.at("db"), "user.secretfs.meta.tier", "gold").expect("set");
    assert_eq!(
        get_x(&m.at("db/user"), "user.secretfs.meta.tier"),
        Ok("gold".into())
    );
    assert_eq!(
        get_x(&m.at("db/user"), "user.secretfs.meta.owner"),
        Ok("team-a".into())
    );
}
