//! `--on-change HOOK`: what a mount does when a secret it holds changed
//! in the store (programs cannot watch a FUSE file with inotify for
//! that). Either a command, run through `sh -c` with the changed secrets'
//! paths in `SECRETFS_CHANGED`, or `signal:NAME:PIDFILE`, a signal to the
//! process whose id the file holds (nginx, HAProxy, most daemons reload on
//! SIGHUP). Changes found close together (one refresh, one watch round)
//! make one run; runs never overlap. Logged, never with a value.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::exec::Signal;

/// How long changes are gathered into one run after the first.
const GATHER: Duration = Duration::from_millis(300);
/// The longest a run waits for more changes to gather.
const GATHER_AT_MOST: Duration = Duration::from_secs(2);
/// How long a command may run before it is killed (later changes wait
/// for it).
const COMMAND_AT_MOST: Duration = Duration::from_secs(60);

/// What to do when secrets changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// `sh -c COMMAND`.
    Command(String),
    /// A signal to the process whose id `pidfile` holds.
    Signal {
        /// The signal.
        signal: Signal,
        /// The file holding the process id.
        pidfile: PathBuf,
    },
}

impl Hook {
    /// `signal:NAME:PIDFILE`, else a shell command.
    pub fn parse(text: &str) -> Result<Hook, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("--on-change needs a command or signal:NAME:PIDFILE".into());
        }
        match text.strip_prefix("signal:") {
            Some(rest) => {
                let (name, pidfile) = rest.split_once(':').ok_or_else(|| {
                    format!("--on-change {text:?}: use signal:NAME:PIDFILE, e.g. signal:HUP:/run/nginx.pid")
                })?;
                if pidfile.is_empty() {
                    return Err(format!("--on-change {text:?}: the PIDFILE is missing"));
                }
                let signal = Signal::parse(name)?;
                let pidfile = PathBuf::from(pidfile);
                // A pid file there already must be one to trust now, not
                // only when the first change comes.
                if std::fs::symlink_metadata(&pidfile).is_ok() {
                    crate::trusted::open(&pidfile).map_err(|why| {
                        format!(
                            "--on-change {text:?}: pid file {}: {why} (whoever can write the \
                             pid file chooses which process secretfs signals)",
                            pidfile.display()
                        )
                    })?;
                }
                Ok(Hook::Signal { signal, pidfile })
            }
            None => Ok(Hook::Command(text.to_string())),
        }
    }

    /// Runs the hook for `changed` (absolute paths): once, to its end.
    fn fire(&self, mountpoint: &Path, changed: &BTreeSet<PathBuf>) {
        let count = changed.len();
        match self {
            Hook::Command(command) => {
                let list: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
                // The daemon's token is not the command's business.
                let status = Command::new("/bin/sh")
                    .arg("-c")
                    .arg(command)
                    .env("SECRETFS_CHANGED", list.join("\n"))
                    .env("SECRETFS_MOUNTPOINT", mountpoint)
                    .env_remove("VAULT_TOKEN")
                    .stdin(Stdio::null())
                    .spawn()
                    .and_then(wait_at_most);
                match status {
                    Ok(s) if s.success() => {
                        tracing::info!(changed = count, "--on-change command ran")
                    }
                    Ok(s) => {
                        tracing::warn!(changed = count, status = %s, "--on-change command failed")
                    }
                    Err(e) => tracing::warn!(error = %e, "--on-change command could not start"),
                }
            }
            Hook::Signal { signal, pidfile } => match read_pid(pidfile) {
                Ok(pid) => {
                    // SAFETY: kill(2) with a pid read from the file and a valid signal.
                    if unsafe { libc::kill(pid, signal.0) } == 0 {
                        tracing::info!(
                            pid,
                            signal = signal.0,
                            changed = count,
                            "--on-change: signalled"
                        );
                    } else {
                        let e = std::io::Error::last_os_error();
                        tracing::warn!(pid, error = %e, "--on-change: cannot signal");
                    }
                }
                Err(why) => tracing::warn!(
                    pidfile = %pidfile.display(),
                    "--on-change: no signal sent: pid file {}: {why}",
                    pidfile.display()
                ),
            },
        }
    }
}

/// Waits for `child` for [`COMMAND_AT_MOST`], then kills it.
fn wait_at_most(mut child: std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    let until = Instant::now() + COMMAND_AT_MOST;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= until {
            tracing::warn!(
                pid = child.id(),
                "--on-change command still running after {COMMAND_AT_MOST:?}: killed"
            );
            child.kill()?;
            return child.wait();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The longest pid file read (a process id and a newline fit many times).
const PIDFILE_AT_MOST: u64 = 64;

/// The process id in `pidfile`, read afresh (it may have been replaced)
/// from a file only root or the daemon's user can have written: the file
/// opened without following a symbolic link, and the opened file checked.
fn read_pid(pidfile: &Path) -> Result<libc::pid_t, String> {
    use std::io::Read as _;
    let file = crate::trusted::open(pidfile)?;
    let mut text = String::new();
    file.take(PIDFILE_AT_MOST)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    match text.trim().parse::<libc::pid_t>() {
        Ok(pid) if pid > 0 => Ok(pid),
        // Not its text: a pid file given by mistake may be anything.
        _ => Err(format!(
            "it holds no process id ({} bytes, not a positive number)",
            text.len()
        )),
    }
}

/// Runs `hook` on a thread of its own for the changed secrets' paths (from
/// the mount's root) that arrive on `changes`, until the sender is gone.
pub fn start(hook: Hook, mountpoint: PathBuf, changes: Receiver<String>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("secretfs-hook".into())
        .spawn(move || {
            while let Ok(first) = changes.recv() {
                let mut changed = BTreeSet::from([mountpoint.join(first)]);
                let until = Instant::now() + GATHER_AT_MOST;
                loop {
                    let wait = GATHER.min(until.saturating_duration_since(Instant::now()));
                    match changes.recv_timeout(wait) {
                        Ok(path) => {
                            changed.insert(mountpoint.join(path));
                        }
                        // The mount ends: what was found still gets its run.
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
                hook.fire(&mountpoint, &changed);
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_parse_as_a_signal_with_its_pid_file_or_a_command() {
        assert_eq!(
            Hook::parse("signal:HUP:/run/nginx.pid"),
            Ok(Hook::Signal {
                signal: Signal(libc::SIGHUP),
                pidfile: PathBuf::from("/run/nginx.pid")
            })
        );
        assert_eq!(
            Hook::parse("systemctl reload nginx"),
            Ok(Hook::Command("systemctl reload nginx".into()))
        );
        assert!(Hook::parse("signal:HUP").is_err());
        assert!(Hook::parse("signal:NOPE:/x").is_err());
        assert!(Hook::parse("  ").is_err());
    }

    #[test]
    fn changes_close_together_make_one_run_with_every_path() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("runs");
        let hook = Hook::Command(format!(
            "printf '%s\\n--\\n' \"$SECRETFS_CHANGED\" >> {}",
            out.display()
        ));
        let (tx, rx) = std::sync::mpsc::channel();
        start(hook, PathBuf::from("/mnt"), rx).unwrap();
        tx.send("app/db".to_string()).unwrap();
        tx.send("app/tls".to_string()).unwrap();
        tx.send("app/db".to_string()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("--")
        {
            assert!(Instant::now() < deadline, "the hook did not run");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "/mnt/app/db\n/mnt/app/tls\n--\n"
        );
    }
}
