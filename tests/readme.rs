//! README.md's command blocks, run as shown against a real OpenBao and real
//! FUSE mounts, so that a command README tells users to type cannot rot:
//!
//! - every fenced block names its language; `sh` and `console` blocks are
//!   commands, the others (`nginx`, `toml`, …) are files shown;
//! - a command block is run unless the line just before it is
//!   `<!-- not run: WHY -->`; a block neither run nor marked (an indented
//!   code block, a fence without a language) fails the test;
//! - an `sh` block runs as one bash script (`set -e`) and must succeed;
//! - a `console` block is a session: each `$ COMMAND` (continued by a final
//!   `\`) runs in one bash, in order, and must print what README shows under
//!   it (stdout and stderr, as a terminal shows them; blanks compared
//!   loosely, since `ls` prints columns only to a terminal). A line `...`
//!   stands for any lines, a line ending in `...` for any line starting so.
//!   A command shown without output must print nothing and exit 0.
//!
//! The blocks run in order, in a mount namespace of this test's thread with
//! its own `/run`, `/tmp` and a copy-on-write `/etc` (an overlay), so they
//! may mount on `/run/secrets` and write `/etc/secretfs` without touching the
//! machine. `secretfs` on PATH is the build under test; `VAULT_ADDR` and
//! `VAULT_TOKEN` name a fresh OpenBao dev server, as README's "throwaway
//! server" block would.

mod support;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const README: &str = include_str!("../README.md");

/// Fence languages that are commands.
const SHELL: &[&str] = &["sh", "console"];
/// Fence languages that show a file's content, not commands.
const FILES: &[&str] = &["nginx", "ini", "toml", "jinja", "json", "yaml", "python"];

#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    text: String,
    /// The reason given by `<!-- not run: … -->`, if any.
    not_run: Option<String>,
}

/// The fenced blocks of `doc`, with their markers; panics on a block that
/// would be neither run nor marked.
fn blocks(doc: &str) -> Vec<Block> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            let indent = line.len() - trimmed.len();
            let lang = lang.trim().to_string();
            assert!(
                !lang.is_empty(),
                "README.md:{}: a fenced block without a language: say `sh`, `console` or the file type",
                i + 1
            );
            assert!(
                SHELL.contains(&lang.as_str()) || FILES.contains(&lang.as_str()),
                "README.md:{}: unknown block language `{lang}`: add it to tests/readme.rs (SHELL or FILES)",
                i + 1
            );
            let not_run = (i > 0)
                .then(|| lines[i - 1].trim())
                .and_then(|l| l.strip_prefix("<!-- not run:"))
                .and_then(|l| l.strip_suffix("-->"))
                .map(|why| why.trim().to_string());
            if let Some(why) = &not_run {
                assert!(
                    !why.is_empty(),
                    "README.md:{i}: `<!-- not run: -->` must say why"
                );
                assert!(
                    SHELL.contains(&lang.as_str()),
                    "README.md:{i}: `not run` on a `{lang}` block, which is never run"
                );
            }
            let start = i;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                let l = lines[i];
                body.push(
                    l.get(indent..)
                        .filter(|_| l.len() >= indent)
                        .unwrap_or(l.trim_start()),
                );
                i += 1;
            }
            assert!(i < lines.len(), "README.md:{}: unclosed block", start + 1);
            out.push(Block {
                line: start + 1,
                lang,
                text: body.join("\n") + "\n",
                not_run,
            });
        } else {
            assert!(
                !line.starts_with("    ") || line.trim().is_empty(),
                "README.md:{}: an indented code block, which the test cannot tell from prose: fence it with a language",
                i + 1
            );
            if line.trim_start().starts_with("<!-- not run:") {
                assert!(
                    lines
                        .get(i + 1)
                        .is_some_and(|l| l.trim_start().starts_with("```")),
                    "README.md:{}: a `not run` marker not followed by a block",
                    i + 1
                );
            }
        }
        i += 1;
    }
    out
}

/// One `$ COMMAND` of a console block and the output shown under it.
#[derive(Debug)]
struct Step {
    command: String,
    shown: Vec<String>,
}

fn steps(block: &Block) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut continued = false;
    for line in block.text.lines() {
        if continued {
            let step = out.last_mut().expect("a step");
            step.command.push('\n');
            step.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            out.push(Step {
                command: command.to_string(),
                shown: Vec::new(),
            });
            continued = command.ends_with('\\');
        } else {
            out.last_mut()
                .unwrap_or_else(|| {
                    panic!(
                        "README.md:{}: a console block must start with `$ `",
                        block.line
                    )
                })
                .shown
                .push(line.to_string());
        }
    }
    out
}

/// Whether `actual` is what README shows (see the module's doc).
fn matches(shown: &[String], actual: &str) -> bool {
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let ellipsis = shown.iter().any(|l| l.trim_end().ends_with("..."));
    if !ellipsis {
        return words(&shown.join("\n")) == words(actual);
    }
    let shown: Vec<String> = shown.iter().map(|l| words(l)).collect();
    let actual: Vec<String> = actual
        .lines()
        .map(words)
        .filter(|l| !l.is_empty())
        .collect();
    fn go(shown: &[String], actual: &[String]) -> bool {
        match shown.split_first() {
            None => actual.is_empty(),
            Some((s, rest)) if s == "..." => (0..=actual.len()).any(|k| go(rest, &actual[k..])),
            Some((s, rest)) => actual.split_first().is_some_and(|(a, more)| {
                let ok = match s.strip_suffix("...") {
                    Some(prefix) => a.starts_with(prefix),
                    None => a == s,
                };
                ok && go(rest, more)
            }),
        }
    }
    go(&shown, &actual)
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// Mounts `fstype` on `target` in this thread's mount namespace.
fn mount(source: &str, target: &str, fstype: &str, data: &str) {
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c(source).as_ptr(),
            c(target).as_ptr(),
            c(fstype).as_ptr(),
            0,
            c(data).as_ptr().cast(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount {fstype} on {target}: {}",
        std::io::Error::last_os_error()
    );
}

/// Gives this thread a mount namespace of its own in which `/run` and
/// `/tmp` are empty and `/etc` is writable without reaching the machine's.
fn private_machine() {
    // SAFETY: plain syscalls; unshare affects this thread only (CLONE_NEWNS
    // implies CLONE_FS).
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
                c("/").as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            0,
            "make / private: {}",
            std::io::Error::last_os_error()
        );
    }
    mount("tmpfs", "/run", "tmpfs", "mode=0755");
    mount("tmpfs", "/tmp", "tmpfs", "mode=1777");
    std::fs::create_dir_all("/tmp/.readme-etc/upper").expect("overlay dirs");
    std::fs::create_dir_all("/tmp/.readme-etc/work").expect("overlay dirs");
    mount(
        "overlay",
        "/etc",
        "overlay",
        "lowerdir=/etc,upperdir=/tmp/.readme-etc/upper,workdir=/tmp/.readme-etc/work",
    );
}

/// Unmounts the blocks' FUSE mounts when dropped (those a failing block
/// left), which stops their daemons.
struct Unmounter;

impl Drop for Unmounter {
    fn drop(&mut self) {
        for mountpoint in fuse_mounts() {
            let _ = Command::new("umount").arg("-l").arg(mountpoint).status();
        }
    }
}

/// The mount points of the FUSE mounts the blocks made (under this
/// namespace's own `/run`, where README mounts; the namespace also holds
/// copies of the machine's mounts, which are not ours).
fn fuse_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/thread-self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(" - ").nth(1).is_some_and(|t| t.starts_with("fuse")))
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| mp.starts_with("/run/"))
        .collect()
}

/// The environment every block runs in.
struct Shell {
    bin: PathBuf,
    home: PathBuf,
    addr: String,
}

impl Shell {
    fn bash(&self, script: &str) -> std::process::Output {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("timeout")
            .args(["120", "bash", "-c", script])
            .env_clear()
            .env("PATH", path)
            .env("HOME", &self.home)
            .env("LC_ALL", "C")
            .env("VAULT_ADDR", &self.addr)
            .env("VAULT_TOKEN", "root")
            .current_dir(&self.home)
            .stdin(Stdio::null())
            .output()
            .expect("bash")
    }

    fn run_sh(&self, block: &Block) {
        let out = self.bash(&format!("set -e -o pipefail\nexec 2>&1\n{}", block.text));
        assert!(
            out.status.success(),
            "README.md:{}: this block failed ({}):\n{}\nit printed:\n{}",
            block.line,
            out.status,
            block.text,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    fn run_console(&self, block: &Block) {
        let steps = steps(block);
        let mut script = String::from("exec 2>&1\n");
        for (n, step) in steps.iter().enumerate() {
            script.push_str(&format!(
                "printf '\\n@@readme-start {n}@@\\n'\n{}\nprintf '\\n@@readme-end {n} %d@@\\n' $?\n",
                step.command
            ));
        }
        let out = self.bash(&script);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for (n, step) in steps.iter().enumerate() {
            let start = format!("\n@@readme-start {n}@@\n");
            let after = text.split_once(&start).map(|(_, a)| a).unwrap_or_else(|| {
                panic!(
                    "README.md:{}: the session ended before `{}` ({}):\n{text}",
                    block.line, step.command, out.status
                )
            });
            let end = format!("\n@@readme-end {n} ");
            let (printed, rest) = after.split_once(&end).unwrap_or_else(|| {
                panic!(
                    "README.md:{}: `{}` did not finish ({}):\n{after}",
                    block.line, step.command, out.status
                )
            });
            let status: i32 = rest
                .split("@@")
                .next()
                .and_then(|s| s.parse().ok())
                .expect("an exit status");
            assert!(
                matches(&step.shown, printed),
                "README.md:{}: `{}` printed\n{printed}\nwhere README shows\n{}",
                block.line,
                step.command,
                step.shown.join("\n")
            );
            if step.shown.is_empty() {
                assert_eq!(
                    status, 0,
                    "README.md:{}: `{}` failed (exit {status}) and README shows no output",
                    block.line, step.command
                );
            }
        }
    }
}

#[test]
fn every_command_block_is_run_or_says_why_not() {
    let all = blocks(README);
    let commands: Vec<&Block> = all
        .iter()
        .filter(|b| SHELL.contains(&b.lang.as_str()))
        .collect();
    assert!(
        commands.len() >= 10,
        "too few command blocks found: {commands:?}"
    );
    let run = commands.iter().filter(|b| b.not_run.is_none()).count();
    assert!(
        run * 2 > commands.len(),
        "most of README's command blocks must be run: {run} of {}",
        commands.len()
    );
    for b in &commands {
        if b.lang == "console" {
            assert!(
                !steps(b).is_empty(),
                "README.md:{}: no `$ ` command",
                b.line
            );
        }
    }
}

#[test]
fn the_readme_commands_run_as_shown() {
    let bao = support::Bao::start();
    let addr = bao.addr().to_string();
    // A thread of its own for the private namespace, so that this one
    // (which drops the server and its temporary directory) keeps the
    // machine's /tmp.
    let ran = std::thread::spawn(move || run_every_block(addr)).join();
    if let Err(panic) = ran {
        std::panic::resume_unwind(panic);
    }
    drop(bao);
}

fn run_every_block(addr: String) {
    // Opened before /tmp is replaced: the build (a clone under /tmp, as CI
    // may make it) is out of sight once it is, so the blocks run a copy.
    let mut built = std::fs::File::open(support::secretfs()).expect("the built secretfs");
    private_machine();
    let _unmount = Unmounter;
    let bin = Path::new("/tmp/readme/bin").to_path_buf();
    let home = Path::new("/tmp/readme/home").to_path_buf();
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::fs::create_dir_all(&home).expect("home dir");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut copy = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(bin.join("secretfs"))
            .expect("a copy of secretfs");
        std::io::copy(&mut built, &mut copy).expect("copy secretfs");
    }
    let shell = Shell { bin, home, addr };
    let mut skipped = Vec::new();
    for block in blocks(README) {
        if let Some(why) = &block.not_run {
            skipped.push(format!("README.md:{}: {why}", block.line));
            continue;
        }
        match block.lang.as_str() {
            "sh" => shell.run_sh(&block),
            "console" => shell.run_console(&block),
            _ => continue,
        }
        // The next block follows at once, as a user's would: a daemon
        // still exiting from a block's `umount` leaves alone what the next
        // block mounts on the same path (tests/shutdown.rs).
    }
    println!("not run:\n{}", skipped.join("\n"));
}

#[test]
fn the_comparison_is_strict_where_nothing_is_elided() {
    let shown = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    assert!(matches(&shown("A  B  C"), "A\nB\nC\n"));
    assert!(!matches(&shown("A  B"), "A\nB\nC\n"));
    assert!(!matches(&shown(""), "secretfs: error\n"));
    assert!(matches(&shown("...\nx"), "a\nb\nx\n"));
    assert!(matches(&shown("{\"a\":..."), "{\"a\":1}\n"));
    assert!(!matches(&shown("{\"b\":..."), "{\"a\":1}\n"));
    assert!(!matches(&shown("...\nx"), "a\nb\n"));
}

/// The errno names in the last column of the table that follows `heading`
/// (a line of its own) in `doc`.
fn errno_column(doc: &str, heading: &str) -> std::collections::BTreeSet<String> {
    let rows: Vec<&str> = doc
        .lines()
        .skip_while(|l| l.trim() != heading)
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert!(rows.len() > 5, "no table after `{heading}`");
    rows.iter()
        .flat_map(|row| {
            let last = row
                .trim()
                .trim_matches('|')
                .rsplit('|')
                .next()
                .unwrap_or("");
            last.split('`')
                .skip(1)
                .step_by(2)
                .filter(|w| w.starts_with('E'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// README's errno table names the errnos docs/SEMANTICS.md's does, which
/// tests/semantics_doc.rs ties to the code: an errno the code gains or
/// loses fails there, and then here until README says so too.
#[test]
fn the_troubleshooting_errnos_are_the_ones_docs_semantics_lists() {
    let semantics =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SEMANTICS.md"))
            .expect("docs/SEMANTICS.md");
    assert_eq!(
        errno_column(README, "**What an error means:**"),
        errno_column(&semantics, "## Errors"),
        "README.md's errno table (left) and docs/SEMANTICS.md's (right) differ"
    );
}
