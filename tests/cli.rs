//! The command line's own answers: `--version` names the commit built, and
//! `completions SHELL` prints a script the shell accepts.

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
