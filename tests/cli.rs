//! The command line's own answers: `--version` names the commit built,
//! `completions SHELL` prints a script the shell accepts, and `man` writes
//! manual pages that man(1) renders with every option of `mount`.

mod support;

use std::process::Command;

fn secretfs(args: &[&str]) -> std::process::Output {
    Command::new(support::secretfs())
        .args(args)
        .output()
        .expect("run secretfs")
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = secretfs(&["--version"]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert!(
        said.starts_with(&format!(
            "secretfs {} (commit {head}, ",
            env!("CARGO_PKG_VERSION")
        )),
        "{said}"
    );
}

#[test]
fn completions_for_bash_are_a_script_bash_accepts() {
    let out = secretfs(&["completions", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8_lossy(&out.stdout);
    for word in ["mount", "status", "--writable", "--ttl"] {
        assert!(script.contains(word), "no {word} in the completions");
    }
    let check = Command::new("bash")
        .arg("-n")
        .arg("-c")
        .arg(&*script)
        .output()
        .expect("bash -n");
    assert!(check.status.success(), "{check:?}");
    // A mistyped subcommand gets a suggestion, not a mount attempt.
    let out = secretfs(&["completion", "bash"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'completions'"));
}

#[test]
fn man_pages_render_and_list_every_mount_option() {
    let out = secretfs(&["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH secretfs 1"), "{page}");

    let dir = tempfile::tempdir().expect("temp dir");
    let out = secretfs(&["man", "--dir", dir.path().to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{out:?}");
    for name in [
        "secretfs.1",
        "secretfs-mount.1",
        "secretfs-status.1",
        "secretfs-completions.1",
    ] {
        assert!(dir.path().join(name).is_file(), "{name} not written");
    }
    // man(1) renders the mount page; every long option of `mount` is in it.
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("secretfs-mount.1"))
        .env("MANWIDTH", "200")
        .env("MANPAGER", "cat")
        .output()
        .expect("run man (apt-get install man-db)");
    assert!(rendered.status.success(), "{rendered:?}");
    let text = String::from_utf8_lossy(&rendered.stdout);
    use clap::CommandFactory;
    let cli = secretfs::cli::Cli::command();
    let mount = cli.find_subcommand("mount").expect("mount subcommand");
    for arg in mount.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(long) = arg.get_long() {
            assert!(
                text.contains(&format!("--{long}")),
                "--{long} missing from secretfs-mount(1)"
            );
        }
    }
}

#[test]
fn a_mistyped_key_in_a_config_file_is_named_with_its_file_line_and_the_nearest_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("myapp.toml");
    std::fs::write(&conf, "uid = 1000\ntll = \"5s\"\n").expect("write config");
    let conf = conf.to_str().expect("utf-8 path");
    let mountpoint = dir.path().to_str().expect("utf-8 path");
    let want =
        format!("secretfs: config file {conf}, line 2: unknown key `tll`; did you mean `ttl`?");
    let config_o = format!("config={conf}");
    for args in [
        &["mount", "secret/", mountpoint, "--config", conf][..],
        // The mount-helper form (mount(8), fstab).
        &["secret/", mountpoint, "-o", &config_o][..],
    ] {
        let out = secretfs(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim(), want, "{args:?}");
    }
}

#[test]
fn the_man_page_synopsis_shows_what_each_option_takes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = secretfs(&["man", "--dir", dir.path().to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{out:?}");
    let page = std::fs::read_to_string(dir.path().join("secretfs-mount.1")).expect("page");
    let synopsis = page
        .lines()
        .skip_while(|l| *l != ".SH SYNOPSIS")
        .nth(1)
        .expect("a SYNOPSIS section")
        .replace("\\-", "-");
    use clap::CommandFactory;
    let cli = secretfs::cli::Cli::command();
    let mount = cli.find_subcommand("mount").expect("mount subcommand");
    for arg in mount
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_action().takes_values())
    {
        let (Some(long), Some(names)) = (arg.get_long(), arg.get_value_names()) else {
            continue;
        };
        let want = format!("--{long} <{}>", names.join(" "));
        assert!(synopsis.contains(&want), "no {want:?} in: {synopsis}");
    }
    for want in [
        "[-o <OPTIONS>]...",
        "[--uid <UID>]",
        "[--writable]",
        "<SOURCE> <MOUNTPOINT>",
    ] {
        assert!(synopsis.contains(want), "no {want:?} in: {synopsis}");
    }
}
