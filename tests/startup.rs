//! Starting `secretfs mount`: where the address, the token and the CA come
//! from (`--addr`/`VAULT_ADDR`, `VAULT_TOKEN`, `--token-file`,
//! `~/.vault-token`, `--ca-cert`/`VAULT_CACERT`), and start-up failures: one
//! line on stderr, a non-zero exit within 20 s, nothing mounted, the
//! mountpoint untouched. (Bad login credentials: tests/auth.rs; mount(8)'s
//! failures: tests/mount_helper.rs.)
//!
//! Fixtures are the shared ones in tests/support (one OpenBao dev server
//! per test: it starts in about a second, tests may stop it, and a server
//! of its own keeps each test's data apart). Nothing here skips: a missing
//! `bao` or FUSE fails the test with a message that says what to install.

mod support;

use std::path::Path;

use serde_json::json;
use support::{dead_addr, s, seeded, Bao, Mount, MountBuilder};

#[test]
fn the_address_comes_from_vault_addr_and_the_token_from_vault_token() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "from-env"}));
    let home = tempfile::tempdir().unwrap();
    // ~/.vault-token holds a bad token: VAULT_TOKEN wins over it, as the
    // vault and bao CLIs have it.
    std::fs::write(home.path().join(".vault-token"), "not-a-token").unwrap();
    let m = Mount::builder(&bao, "secret/")
        .addr_from_env()
        .home(home.path())
        .start();
    assert_eq!(
        std::fs::read(m.at("app/K")).unwrap(),
        b"from-env",
        "{}",
        m.log()
    );
    assert!(
        m.log().contains("token_source=VAULT_TOKEN"),
        "the log does not say where the token came from:\n{}",
        m.log()
    );
}

#[test]
fn token_file_wins_over_vault_token_and_the_log_says_which_is_used() {
    // A narrow token in the file given, root in the environment (issue
    // 22: the narrow token was silently replaced by root).
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "mine"}));
    bao.kv2_put("secret", "other", json!({"K": "not-mine"}));
    let narrow = bao.token_with_policy(
        "app-only",
        r#"path "secret/data/app" { capabilities = ["read"] }
        path "secret/metadata/*" { capabilities = ["list"] }
        path "sys/internal/ui/mounts/*" { capabilities = ["read"] }"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, &narrow).unwrap();
    let m = Mount::builder(&bao, "secret/")
        .token("root")
        .args(&["--token-file", s(&file)])
        .start();
    assert_eq!(std::fs::read(m.at("app/K")).unwrap(), b"mine");
    let err = std::fs::read(m.at("other/K")).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EACCES),
        "VAULT_TOKEN (root) is in use, not the --token-file's token: {err}\n{}",
        m.log()
    );
    let log = m.log();
    assert!(
        log.lines().any(|l| l.contains("token_source")
            && l.contains(&format!("--token-file {}", file.display()))),
        "the log does not name the token file as the token's source:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("VAULT_TOKEN") && l.contains("not used")),
        "the log does not say VAULT_TOKEN is set and not used:\n{log}"
    );
    assert!(!log.contains(&narrow), "the token reached the log");
}

#[test]
fn a_refused_token_names_where_it_came_from() {
    let bao = Bao::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "not-a-token\n").unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join(".vault-token"), "not-a-token").unwrap();
    let file_source = format!("--token-file {}", file.display());
    let cases: [(&str, MountBuilder, &str); 3] = [
        (
            "VAULT_TOKEN",
            Mount::builder(&bao, "secret/").token("not-a-token"),
            "VAULT_TOKEN",
        ),
        (
            "--token-file",
            Mount::builder(&bao, "secret/")
                .no_token()
                .args(&["--token-file", s(&file)]),
            &file_source,
        ),
        (
            "~/.vault-token",
            Mount::builder(&bao, "secret/").no_token().home(home.path()),
            "~/.vault-token",
        ),
    ];
    for (what, builder, want) in cases {
        let (status, stderr) = builder.fail();
        assert!(!status.success(), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
        assert!(
            stderr.contains("refused the token") && stderr.contains(want),
            "{what}: the refusal does not name {want}: {stderr}"
        );
        assert!(
            stderr.contains("check"),
            "{what}: says nothing to check: {stderr}"
        );
    }
}

#[test]
fn without_vault_token_the_token_comes_from_token_file() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "from-file"}));
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("token");
    // As `echo root > FILE` writes it: the newline is not part of the token.
    std::fs::write(&file, "root\n").unwrap();
    // ~/.vault-token holds a bad token: --token-file wins over it.
    std::fs::write(home.path().join(".vault-token"), "not-a-token").unwrap();
    let m = Mount::builder(&bao, "secret/")
        .no_token()
        .home(home.path())
        .args(&["--token-file", s(&file)])
        .start();
    assert_eq!(
        std::fs::read(m.at("app/K")).unwrap(),
        b"from-file",
        "{}",
        m.log()
    );
}

#[test]
fn without_vault_token_or_token_file_the_token_comes_from_home_vault_token() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "from-home"}));
    let home = tempfile::tempdir().unwrap();
    // As `bao login` leaves it: no newline.
    std::fs::write(home.path().join(".vault-token"), "root").unwrap();
    let m = Mount::builder(&bao, "secret/")
        .no_token()
        .home(home.path())
        .start();
    assert_eq!(
        std::fs::read(m.at("app/K")).unwrap(),
        b"from-home",
        "{}",
        m.log()
    );
}

#[test]
fn a_server_with_a_private_ca_is_trusted_through_ca_cert_or_vault_cacert_only() {
    let bao = Bao::start_tls();
    assert!(bao.addr().starts_with("https://"));
    bao.kv2_put("secret", "app", json!({"K": "over-tls"}));
    let ca = bao.ca_cert();
    // Without the CA: refused before mounting, in one line.
    let (status, stderr) = Mount::builder(&bao, "secret/").fail();
    assert!(!status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    // --ca-cert.
    let m = Mount::new(&bao, "secret/", &["--ca-cert", s(&ca)]);
    assert_eq!(
        std::fs::read(m.at("app/K")).unwrap(),
        b"over-tls",
        "{}",
        m.log()
    );
    drop(m);
    // VAULT_CACERT, as the vault and bao CLIs take it.
    let m = Mount::builder(&bao, "secret/")
        .env("VAULT_CACERT", &ca)
        .start();
    assert_eq!(
        std::fs::read(m.at("app/K")).unwrap(),
        b"over-tls",
        "{}",
        m.log()
    );
}

#[test]
fn start_up_failures_give_one_line_and_mount_nothing() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), "").unwrap();
    let dead = dead_addr();
    let missing = dir.path().join("missing");
    let cases: Vec<(&str, &std::path::Path, String, &str)> = vec![
        ("root", &full, bao.addr().to_string(), "not empty"),
        ("root", &empty, dead, "cannot reach"),
        (
            "wrong-token",
            &empty,
            bao.addr().to_string(),
            "refused the token",
        ),
        ("root", &missing, bao.addr().to_string(), "mountpoint"),
    ];
    for (token, mountpoint, addr, want) in cases {
        let (status, stderr) = Mount::builder(&bao, "secret/")
            .addr(&addr)
            .token(token)
            .at(mountpoint)
            .args(&["--timeout", "3s"])
            .fail();
        assert!(!status.success(), "{want}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{want}: {stderr}");
        assert!(
            stderr.starts_with("secretfs: ") && stderr.contains(want),
            "{want}: {stderr}"
        );
    }
}

#[test]
fn start_up_failures_end_within_20s_with_one_line_and_mount_nothing() {
    let bao = Bao::start();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), "keep me").unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let missing = dir.path().join("missing");
    let live = bao.addr().to_string();
    let dead = dead_addr();
    let cases: [(&str, &str, &str, &Path, &str); 7] = [
        ("non-empty mountpoint", &live, "root", &full, "secret/"),
        ("missing mountpoint", &live, "root", &missing, "secret/"),
        ("mountpoint is a file", &live, "root", &file, "secret/"),
        ("nothing listening", &dead, "root", &empty, "secret/"),
        ("bad token", &live, "not-a-token", &empty, "secret/"),
        ("no such mount", &live, "root", &empty, "nosuchmount/"),
        ("not a KV mount", &live, "root", &empty, "cubbyhole/"),
    ];
    for (what, addr, token, mountpoint, source) in cases {
        let (status, stderr) = Mount::builder(&bao, source)
            .addr(addr)
            .token(token)
            .at(mountpoint)
            .fail();
        assert!(
            !status.success(),
            "{what}: exit {status}, stderr {stderr:?}"
        );
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr:?}");
        assert!(stderr.starts_with("secretfs: "), "{what}: {stderr:?}");
        assert!(!stderr.contains("not-a-token"), "{what}: token printed");
    }
    assert_eq!(
        std::fs::read(full.join("x")).unwrap(),
        b"keep me",
        "the non-empty mountpoint was touched"
    );
    assert!(!missing.exists(), "the missing mountpoint was created");
}

#[test]
fn a_source_that_is_not_a_kv_mount_is_refused() {
    let bao = seeded();
    let (status, stderr) = Mount::builder(&bao, "nosuchmount/").fail();
    assert!(!status.success());
    assert!(stderr.starts_with("secretfs: "), "{stderr}");
}

/// Runs `secretfs ARGS` (under `timeout`, with the root token and no
/// inherited `VAULT_*`), returning its exit status and stderr.
fn secretfs_with(args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String) {
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("20").arg(support::secretfs()).args(args);
    for var in ["VAULT_ADDR", "VAULT_CACERT", "VAULT_NAMESPACE", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    let out = cmd
        .env("VAULT_TOKEN", "root")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cannot run secretfs");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_address_that_is_no_url_is_refused_in_one_line_without_a_panic() {
    let bao = Bao::start();
    let host_port = bao.addr().trim_start_matches("http://").to_string();
    let cases: [(&str, String, String); 5] = [
        (
            "no scheme, in VAULT_ADDR",
            host_port.clone(),
            format!("VAULT_ADDR/--addr {host_port:?} is not a URL: did you mean http://{host_port}?"),
        ),
        (
            "no scheme, a name that parses as one",
            "vault.example.com:8200".into(),
            "VAULT_ADDR/--addr \"vault.example.com:8200\" is not a URL: \
             did you mean https://vault.example.com:8200?"
                .into(),
        ),
        (
            "empty",
            String::new(),
            "VAULT_ADDR/--addr is empty: give the server's URL, e.g. https://vault.example.com:8200"
                .into(),
        ),
        (
            "unknown scheme",
            format!("ftp://{host_port}"),
            format!(
                "VAULT_ADDR/--addr \"ftp://{host_port}\" is not an http:// or https:// URL (scheme \"ftp\")"
            ),
        ),
        (
            "no host",
            "http://".into(),
            "VAULT_ADDR/--addr \"http://\" is not a URL: empty host".into(),
        ),
    ];
    for (what, addr, want) in cases {
        let builder = Mount::builder(&bao, "secret/");
        let builder = if what.ends_with("VAULT_ADDR") {
            builder.addr(&addr).addr_from_env()
        } else {
            builder.addr(&addr)
        };
        let (status, stderr) = builder.fail();
        assert_eq!(status.code(), Some(1), "{what}: {stderr}");
        assert_eq!(stderr, format!("secretfs: {want}\n"), "{what}");
    }
}

#[test]
fn https_against_an_http_server_says_the_server_did_not_answer_tls() {
    let bao = Bao::start();
    let http = bao.addr().to_string();
    let https = http.replacen("http://", "https://", 1);
    let (status, stderr) = Mount::builder(&bao, "secret/").addr(&https).fail();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!("secretfs: the server at {https} did not answer TLS; is it {http}?\n")
    );
}

#[test]
fn a_source_with_no_mount_says_so_even_as_a_403() {
    let bao = Bao::start();
    let (status, stderr) = Mount::builder(&bao, "nope/").fail();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "secretfs: no secrets engine is mounted at nope/, or the token may not look up \
         its mount (403 on sys/internal/ui/mounts)\n"
    );
}

#[test]
fn a_mistyped_subcommand_gets_clap_s_suggestion_not_a_mount_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) =
        secretfs_with(&["moutn".as_ref(), "secret/".as_ref(), dir.path().as_os_str()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unrecognized subcommand 'moutn'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("similar subcommand exists: 'mount'"),
        "{stderr}"
    );
}

#[test]
fn mounting_twice_names_the_running_secretfs_and_leaves_it_serving() {
    let bao = seeded();
    bao.kv2_put("secret", "twice", json!({"K": "still-here"}));
    let m = Mount::new(&bao, "secret/", &[]);
    let (status, stderr) = secretfs_with(&[
        "mount".as_ref(),
        "secret/".as_ref(),
        m.path().as_os_str(),
        "--addr".as_ref(),
        bao.addr().as_ref(),
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let pid = m.pid().expect("a foreground daemon");
    assert_eq!(
        stderr,
        format!(
            "secretfs: {} is already mounted by secretfs (pid {pid})\n",
            m.path().display()
        )
    );
    assert_eq!(
        std::fs::read(m.at("twice/K")).unwrap(),
        b"still-here",
        "{}",
        m.log()
    );
}

/// `secretfs mount secret/ MOUNTPOINT ARGS` as uid 65534, in a mount
/// namespace of its own where /dev/fuse is a device node of `mode` and
/// /etc/fuse.conf says nothing (the real files, and everyone else's view
/// of them, are left alone): its exit status and stderr.
fn mount_as_nobody(bao: &Bao, mode: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    mount_as_nobody_after(bao, mode, "true", args)
}

/// [`mount_as_nobody`], with the shell command `setup` run as root in the
/// namespace first.
fn mount_as_nobody_after(
    bao: &Bao,
    mode: &str,
    setup: &str,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (dev, mountpoint, home) = (
        dir.path().join("dev"),
        dir.path().join("mnt"),
        dir.path().join("home"),
    );
    for d in [&dev, &mountpoint, &home] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let conf = dir.path().join("fuse.conf");
    std::fs::write(&conf, "# no user_allow_other\n").unwrap();
    let q = support::q;
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs -o size=64k none {dev} && \
         mknod -m {mode} {dev}/fuse c 10 229 && mount --bind {dev}/fuse /dev/fuse && \
         {{ ! [ -e /etc/fuse.conf ] || mount --bind {conf} /etc/fuse.conf; }} && {setup} && \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups \
         env VAULT_ADDR={addr} VAULT_TOKEN=root HOME={home} \
         timeout 20 {secretfs} mount secret/ {mnt} {args}",
        dev = q(&dev),
        conf = q(&conf),
        addr = bao.addr(),
        home = q(&home),
        secretfs = support::secretfs(),
        mnt = q(&mountpoint),
        args = args.join(" "),
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .expect("unshare");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_user_who_may_not_open_dev_fuse_is_told_so_and_how_to_mount() {
    let bao = seeded();
    let (status, stderr) = mount_as_nobody(&bao, "0600", &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    for words in [
        "secretfs: /dev/fuse: Permission denied",
        "uid 65534 may not open it (mode 0600, owner uid 0)",
        "Run secretfs as root",
        "fusermount3",
        "user_allow_other",
    ] {
        assert!(line.contains(words), "no {words:?} in: {stderr}");
    }
}

#[test]
fn a_user_whose_uid_option_implies_allow_other_is_told_what_fuse_conf_needs() {
    // A user who may open /dev/fuse, as on Debian; --uid of someone else
    // implies allow_other, which fusermount3 allows a non-root user only
    // with user_allow_other in /etc/fuse.conf.
    let bao = seeded();
    let (status, stderr) = mount_as_nobody(&bao, "0666", &["--uid", "4242"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("secretfs: --uid/--gid naming another user")
            && line.contains("needs `user_allow_other` in /etc/fuse.conf")
            && line.contains("run secretfs as root"),
        "{stderr}"
    );
}

#[test]
fn a_user_whose_fusermount3_is_not_setuid_is_told_so() {
    // /dev/fuse open to all, as on Debian, but fusermount3 (through which
    // a user other than root mounts) a copy without the setuid bit, bound
    // over the real one in the test's own mount namespace.
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("fusermount3");
    std::fs::copy("/usr/bin/fusermount3", &copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bind = format!("mount --bind {} /usr/bin/fusermount3", support::q(&copy));
    let (status, stderr) = mount_as_nobody_after(&bao, "0666", &bind, &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("secretfs: cannot mount on ")
            && line.contains("but /usr/bin/fusermount3 is not setuid root: reinstall fuse3")
            && line.contains("or run secretfs as root"),
        "{stderr}"
    );
}
