//! Per-process access rules (`--allow`, issue 10 §5) with real processes
//! on a real mount: a file a rule covers opens only for the executables,
//! users and groups a rule names; everyone else gets EACCES, audited;
//! files no rule covers read as before. Rules decide on what a file
//! reaches, whatever the store: the core tests run per store
//! (`per_store!`, tests/support/backend.rs).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, per_store, q, run, s, seeded, sh_ok, Backend, Mount, Store};

/// A copy of /usr/bin/cat under another path: the executable a rule allows.
fn copied_cat(dir: &Path, name: &str) -> PathBuf {
    copied("/usr/bin/cat", dir, name)
}

fn copied(program: &str, dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(name);
    std::fs::copy(program, &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

fn refused(out: &Output) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied")
}

fn audit_lines(log: &Path, at_least: usize) -> Vec<serde_json::Value> {
    let text = eventually("audit lines", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        (text.lines().count() >= at_least).then_some(text)
    });
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

per_store!(only_the_allowed_executable_reads_a_covered_key_and_refusals_are_audited);
fn only_the_allowed_executable_reads_a_covered_key_and_refusals_are_audited(backend: Backend) {
    let store = Store::seeded(backend);
    let dir = tempfile::tempdir().unwrap();
    let mycat = copied_cat(dir.path(), "mycat");
    let log = dir.path().join("audit.log");
    let rule = format!("myapp/db/PASSWORD:exe={}", mycat.display());
    let m = store.mount("", &["--allow", &rule, "--audit-log", s(&log)]);
    let (password, user) = (m.at("myapp/db/PASSWORD"), m.at("myapp/db/USER"));
    // A file no rule covers: any program, as before (and first, so that
    // nothing could have switched opens off for the whole mount).
    assert_eq!(run("cat", &[s(&user)]).stdout, b"app");
    let out = run("/usr/bin/cat", &[s(&password)]);
    assert!(refused(&out), "{out:?}");
    assert_eq!(run(s(&mycat), &[s(&password)]).stdout, b"hunter2");
    // Read by the allowed program, the value is in no page the next
    // open could be served from.
    let out = run("/usr/bin/cat", &[s(&password)]);
    assert!(refused(&out), "after an allowed read: {out:?}");
    for tool in [
        format!("head -c 3 {}", q(&password)),
        format!("python3 -c 'import mmap,sys; f=open(sys.argv[1],\"rb\"); print(mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)[:])' {}", q(&password)),
        format!("dd if={} of=/dev/null iflag=direct", q(&password)),
    ] {
        let out = support::sh(&tool);
        assert!(refused(&out), "`{tool}`: {out:?}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
    }
    // stat and ls still work: rules decide opens only.
    assert_eq!(std::fs::metadata(&password).unwrap().len(), 7);
    sh_ok(&format!("ls -l {}", q(&m.at("myapp/db"))));

    let lines = audit_lines(&log, 7);
    let refusals: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["outcome"] == "EACCES").collect();
    assert_eq!(refusals.len(), 5, "{lines:#?}");
    let first = refusals[0];
    assert_eq!(first["op"], json!("open-read"));
    assert_eq!(first["path"], json!("/myapp/db/PASSWORD"));
    assert_eq!(first["exe"], json!("/usr/bin/cat"));
    assert_eq!(first["uid"], json!(0));
    assert!(
        first["error"].as_str().unwrap().contains("--allow"),
        "{first}"
    );
    let allowed = lines
        .iter()
        .filter(|l| l["path"] == "/myapp/db/PASSWORD" && l["outcome"] == "ok")
        .count();
    assert_eq!(allowed, 1, "{lines:#?}");
    assert!(
        m.log().contains("refused by the --allow rules"),
        "{}",
        m.log()
    );
    assert!(!m.log().contains("hunter2"));
}

#[test]
fn uid_and_group_rules_let_in_only_those_users() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::write(
        &rules,
        "# who may read what\nmyapp/db/PASSWORD:uid=4242\n\nmyapp/api/**:group=nogroup\n",
    )
    .unwrap();
    let m = Mount::new(
        &bao,
        "secret/",
        &[
            "--allow-file",
            s(&rules),
            "--allow-other",
            "--file-mode",
            "0444",
            "--dir-mode",
            "0555",
        ],
    );
    // Other users must reach the mountpoint.
    let parent = m.path().parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |uid: u32, groups: &str, file: &str| {
        run(
            "setpriv",
            &[
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                &format!("--groups={groups}"),
                "cat",
                s(&m.at(file)),
            ],
        )
    };
    let nogroup = sh_ok("getent group nogroup | cut -d: -f3")
        .trim()
        .to_string();
    assert_eq!(
        as_user(4242, "4242", "myapp/db/PASSWORD").stdout,
        b"hunter2"
    );
    assert!(refused(&as_user(4243, "4243", "myapp/db/PASSWORD")));
    assert!(
        refused(&run("cat", &[s(&m.at("myapp/db/PASSWORD"))])),
        "root is no exception"
    );
    // A supplementary group is enough for a group rule.
    assert_eq!(
        as_user(4243, &nogroup, "myapp/api/token/value").stdout,
        b"t0k"
    );
    assert!(refused(&as_user(4243, "4243", "myapp/api/token/value")));
    // Uncovered: every user the modes let in.
    assert_eq!(as_user(4243, "4243", "myapp/db/USER").stdout, b"app");
}

#[test]
fn an_exe_rule_with_a_digest_stops_matching_when_the_binary_changes() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let mycat = copied_cat(dir.path(), "mycat");
    let digest = sh_ok(&format!("sha256sum {}", q(&mycat)));
    let digest = digest.split_whitespace().next().unwrap();
    let rule = format!("myapp/db/*:exe={}@sha256={digest}", mycat.display());
    let m = Mount::new(&bao, "secret/", &["-o", &format!("allow={rule}")]);
    let password = m.at("myapp/db/PASSWORD");
    for _ in 0..3 {
        assert_eq!(run(s(&mycat), &[s(&password)]).stdout, b"hunter2");
    }
    // Same path, other bytes (a tampered binary): refused.
    std::fs::copy("/usr/bin/tac", &mycat).unwrap();
    assert!(refused(&run(s(&mycat), &[s(&password)])));
    // A copy at another path, same bytes as the allowed one: refused too.
    let elsewhere = copied_cat(dir.path(), "othercat");
    assert!(refused(&run(s(&elsewhere), &[s(&password)])));
    // Back to the right bytes: allowed again.
    std::fs::copy("/usr/bin/cat", &mycat).unwrap();
    assert_eq!(run(s(&mycat), &[s(&password)]).stdout, b"hunter2");
}

#[test]
fn on_a_writable_mount_a_denied_process_can_neither_write_nor_move_a_covered_key() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let mytee = copied("/usr/bin/tee", dir.path(), "mytee");
    let rule = format!("myapp/db/PASSWORD:exe={}", mytee.display());
    let m = Mount::new(&bao, "secret/", &["--writable", "--allow", &rule]);
    let db = m.at("myapp/db");
    let before = bao.kv2_version("secret", "myapp/db");
    for script in [
        format!("echo x > {}/PASSWORD", q(&db)),
        format!("mv {0}/PASSWORD {0}/EXPOSED", q(&db)),
        format!("mv {0}/USER {0}/PASSWORD", q(&db)),
        format!("rm {}/PASSWORD", q(&db)),
        format!("truncate -s 0 {}/PASSWORD", q(&db)),
    ] {
        let out = support::sh(&script);
        assert!(refused(&out), "`{script}`: {out:?}");
    }
    assert_eq!(bao.kv2_version("secret", "myapp/db"), before);
    // The allowed program writes; other keys stay free for all.
    sh_ok(&format!(
        "echo -n new | {} {}/PASSWORD >/dev/null",
        q(&mytee),
        q(&db)
    ));
    sh_ok(&format!("echo -n u2 > {}/USER", q(&db)));
    let data = bao.kv2_get("secret", "myapp/db").unwrap().0;
    assert_eq!(
        (data["PASSWORD"].clone(), data["USER"].clone()),
        (json!("new"), json!("u2"))
    );
}

#[test]
fn reads_of_uncovered_files_never_switch_off_the_check_of_covered_ones() {
    // The kernel's "no open" is for the whole mount: once one open is
    // answered ENOSYS, no OPEN reaches the daemon again, for any file.
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let mycat = copied_cat(dir.path(), "mycat");
    let rule = format!("myapp/db/PASSWORD:exe={}", mycat.display());
    let m = Mount::new(&bao, "secret/", &["--allow", &rule]);
    for _ in 0..3 {
        assert_eq!(run("cat", &[s(&m.at("myapp/db/USER"))]).stdout, b"app");
        assert_eq!(
            run("cat", &[s(&m.at("myapp/api/token/value"))]).stdout,
            b"t0k"
        );
    }
    assert!(refused(&run("cat", &[s(&m.at("myapp/db/PASSWORD"))])));
    assert_eq!(
        run(s(&mycat), &[s(&m.at("myapp/db/PASSWORD"))]).stdout,
        b"hunter2"
    );
    assert!(refused(&run("cat", &[s(&m.at("myapp/db/PASSWORD"))])));
}

#[test]
fn rules_with_a_layout_that_shows_whole_secrets_are_refused_at_start() {
    // A file showing a whole secret (P.json) could be renamed aside under
    // a name no rule covers: refused rather than half-enforced.
    let bao = seeded();
    let (status, stderr) = Mount::builder(&bao, "secret/")
        .args(&["--layout", "json", "--allow", "db/PASSWORD:uid=0"])
        .fail();
    assert!(!status.success());
    assert!(
        stderr.contains("--allow rules work with --layout keys only"),
        "{stderr}"
    );
}

// Issue 19 §1: a rule on a key covers every name that shows its value.
// `cat M/myapp/db@1/PASSWORD` printed the value a rule kept from `cat`,
// was audited `ok` and was served through the page cache: rules were
// matched against the text of the path, not the key it reaches.
per_store!(a_version_view_of_a_covered_key_is_covered_as_the_key_is: vault_kv2, file);
fn a_version_view_of_a_covered_key_is_covered_as_the_key_is(backend: Backend) {
    let store = Store::seeded(backend);
    store.put("myapp/db", json!({"PASSWORD": "rotated", "USER": "app"}));
    let dir = tempfile::tempdir().unwrap();
    let mycat = copied_cat(dir.path(), "mycat");
    let log = dir.path().join("audit.log");
    let rule = format!("myapp/db/PASSWORD:exe={}", mycat.display());
    let m = store.mount(
        "",
        &[
            "--allow",
            &rule,
            "--audit-log",
            s(&log),
            "--allow-other",
            "--file-mode",
            "0444",
            "--dir-mode",
            "0555",
        ],
    );
    let parent = m.path().parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (file, value) in [
        ("myapp/db/PASSWORD", "rotated"),
        ("myapp/db@1/PASSWORD", "hunter2"),
        ("myapp/db@2/PASSWORD", "rotated"),
    ] {
        let path = m.at(file);
        // The allowed program reads each name first: nothing it leaves
        // behind may serve the others.
        assert_eq!(
            run(s(&mycat), &[s(&path)]).stdout,
            value.as_bytes(),
            "{file}"
        );
        let out = run("/usr/bin/cat", &[s(&path)]);
        assert!(refused(&out), "root's cat {file}: {out:?}");
        let other = run(
            "setpriv",
            &[
                "--reuid=4243",
                "--regid=4243",
                "--clear-groups",
                "cat",
                s(&path),
            ],
        );
        assert!(refused(&other), "another user's cat {file}: {other:?}");
        let out = support::sh(&format!("dd if={} bs=1 count=3", q(&path)));
        assert!(refused(&out), "dd {file}: {out:?}");
    }
    // The other keys of every version stay free for all.
    assert_eq!(run("cat", &[s(&m.at("myapp/db@1/USER"))]).stdout, b"app");
    let lines = audit_lines(&log, 12);
    for file in ["/myapp/db@1/PASSWORD", "/myapp/db@2/PASSWORD"] {
        let outcomes: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["path"] == file)
            .map(|l| &l["outcome"])
            .collect();
        assert_eq!(
            outcomes,
            [
                &json!("ok"),
                &json!("EACCES"),
                &json!("EACCES"),
                &json!("EACCES")
            ],
            "{file}: {lines:#?}"
        );
    }
    assert!(!m.log().contains("hunter2") && !m.log().contains("rotated"));
}

/// Issue 19 §1: setting or removing the metadata of a secret whose key a
/// rule covers is a change of that secret, decided like any other.
#[test]
fn metadata_of_a_secret_with_a_covered_key_changes_only_for_a_let_in_caller() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    let mysetfattr = copied("/usr/bin/setfattr", dir.path(), "mysetfattr");
    bao.api(
        "POST",
        "secret/metadata/myapp/db",
        Some(json!({"custom_metadata": {"owner": "ops"}})),
    );
    let rule = format!("myapp/db/PASSWORD:exe={}", mysetfattr.display());
    let m = Mount::new(&bao, "secret/", &["--writable", "--allow", &rule]);
    let meta = |path: &str| -> Value {
        bao.api("GET", &format!("secret/metadata/{path}"), None).1["data"]["custom_metadata"]
            .clone()
    };
    let db = m.at("myapp/db");
    for script in [
        format!("setfattr -n user.secretfs.meta.owner -v mallory {}", q(&db)),
        format!(
            "setfattr -n user.secretfs.meta.owner -v mallory {}/USER",
            q(&db)
        ),
        format!(
            "setfattr -n user.secretfs.meta.owner -v mallory {}",
            q(&m.at("myapp/db@1"))
        ),
    ] {
        let out = support::sh(&script);
        assert!(refused(&out), "`{script}`: {out:?}");
    }
    assert_eq!(meta("myapp/db")["owner"], json!("ops"));
    // A secret no rule covers: metadata changes as before.
    let api = m.at("myapp/api/token");
    sh_ok(&format!(
        "setfattr -n user.secretfs.meta.owner -v team {}",
        q(&api)
    ));
    assert_eq!(meta("myapp/api/token")["owner"], json!("team"));
    // Set by the store's own API, it cannot be removed through the mount.
    let out = support::sh(&format!("setfattr -x user.secretfs.meta.owner {}", q(&db)));
    assert!(refused(&out), "setfattr -x: {out:?}");
    assert_eq!(meta("myapp/db")["owner"], json!("ops"));
    // The program the rule names changes it.
    let out = run(s(&mysetfattr), &["-x", "user.secretfs.meta.owner", s(&db)]);
    assert!(out.status.success(), "{out:?}");
    assert!(meta("myapp/db").get("owner").is_none());
}

/// Issue 19 §2: `exe=PATH` is met by the file at PATH (its device and
/// inode, as the daemon sees it), not by whatever a process shows under
/// that name. Any user could bind-mount a program of their own over
/// PATH in a mount namespace of their own and read the key.
#[test]
fn an_exe_rule_is_met_by_that_file_not_by_another_shown_under_its_path() {
    let bao = seeded();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let myapp = copied_cat(dir.path(), "myapp");
    // Another file with the same bytes, owned by the attacker.
    let fake = copied_cat(dir.path(), "fake");
    let link = dir.path().join("link-to-myapp");
    std::os::unix::fs::symlink(&myapp, &link).unwrap();
    let rule = format!("myapp/db/PASSWORD:exe={}", myapp.display());
    let m = Mount::new(
        &bao,
        "secret/",
        &[
            "--allow",
            &rule,
            "--allow-other",
            "--file-mode",
            "0444",
            "--dir-mode",
            "0555",
        ],
    );
    let parent = m.path().parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let password = m.at("myapp/db/PASSWORD");
    assert_eq!(run(s(&myapp), &[s(&password)]).stdout, b"hunter2");
    // A symbolic link to the file runs the same file: let in.
    assert_eq!(run(s(&link), &[s(&password)]).stdout, b"hunter2");
    // Root in a private mount namespace.
    let out = support::sh(&format!(
        "unshare -m --propagation private sh -c 'mount --bind {fake} {myapp} && exec {myapp} {password}'",
        fake = q(&fake),
        myapp = q(&myapp),
        password = q(&password),
    ));
    assert!(refused(&out), "bind mount as root: {out:?}");
    // An unprivileged user in user and mount namespaces of their own.
    let out = run(
        "setpriv",
        &[
            "--reuid=4243",
            "--regid=4243",
            "--clear-groups",
            "unshare",
            "-Urm",
            "sh",
            "-c",
            &format!(
                "mount --bind {fake} {myapp} && exec {myapp} {password}",
                fake = q(&fake),
                myapp = q(&myapp),
                password = q(&password),
            ),
        ],
    );
    assert!(refused(&out), "bind mount as a user: {out:?}");
    // The file at the rule's path replaced (as a package upgrade does):
    // the new file is the one let in.
    let upgraded = dir.path().join("myapp.new");
    std::fs::copy("/usr/bin/cat", &upgraded).unwrap();
    std::fs::rename(&upgraded, &myapp).unwrap();
    assert_eq!(run(s(&myapp), &[s(&password)]).stdout, b"hunter2");
}
