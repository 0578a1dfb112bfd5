//! The command's process: started with the secrets in its environment,
//! passed the signals secretfs receives, stopped and started again (or
//! signalled) when the environment changes, and its exit status made
//! secretfs's own.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::env::Injected;
use super::options::{OnChange, Signal};
use super::signals::{SignalPipe, CHANGED, FROM_KERNEL};

/// Signals passed on to the command.
pub const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Signals after which the command, once it exits, is not started again.
const ENDING: &[libc::c_int] = &[libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

/// How long the loop sleeps at most: a backstop for a lost wake-up.
const BACKSTOP: Duration = Duration::from_secs(1);

/// How the command is run.
pub struct Plan {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// What a change does.
    pub on_change: OnChange,
    /// The signal that asks the command to stop before a restart.
    pub stop_signal: Signal,
    /// How long it may take to stop before SIGKILL.
    pub stop_timeout: Duration,
    /// Whether the secrets win over the process environment.
    pub secrets_win: bool,
}

/// Where the watcher leaves the newest environment for the supervisor.
pub type Mailbox = Arc<Mutex<Option<Injected>>>;

/// Why the command could not be started; the exit code secretfs gives.
pub struct SpawnFailed {
    /// What to print after `secretfs: `.
    pub message: String,
    /// 127 when the program was not found, 126 otherwise (as shells do).
    pub code: u8,
}

/// The exit code that stands for `status`: the command's, or 128+N when a
/// signal N ended it.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// Starts the command with `env`.
fn spawn(plan: &Plan, env: &Injected) -> Result<Child, SpawnFailed> {
    let (program, args) = plan.command.split_first().ok_or_else(|| SpawnFailed {
        message: "no command to run".into(),
        code: 127,
    })?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    let present = |name: &str| std::env::var_os(name).is_some();
    cmd.envs(env.to_set(present, plan.secrets_win));
    // SAFETY: prctl is async-signal-safe. If secretfs dies (SIGKILL, a
    // crash), the command is told to stop instead of running on with
    // nobody to restart it or pass it signals.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| SpawnFailed {
        message: format!("cannot run {}: {e}", program.to_string_lossy()),
        code: if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    })
}

fn send(child: &Child, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill on our own child's pid, which stays ours (a zombie at
    // worst) until we reap it.
    unsafe { libc::kill(pid, sig) };
}

/// Runs the command until it exits on its own (or after a signal passed
/// on); returns the exit code secretfs gives.
pub fn supervise(
    plan: &Plan,
    pipe: &SignalPipe,
    first: Injected,
    mailbox: &Mailbox,
) -> Result<u8, SpawnFailed> {
    let name = plan
        .command
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut env = first;
    let mut child = spawn(plan, &env)?;
    tracing::debug!(command = %name, pid = child.id(), "started");
    // A restart in progress: the command was asked to stop and is started
    // again once it has; SIGKILL at `kill_at`.
    let mut restarting = false;
    let mut kill_at: Option<Instant> = None;
    loop {
        let wait = kill_at.map_or(BACKSTOP, |at| {
            at.saturating_duration_since(Instant::now()).min(BACKSTOP)
        });
        for byte in pipe.wait(wait) {
            if byte == CHANGED {
                let Some(newer) = mailbox.lock().unwrap_or_else(|p| p.into_inner()).take() else {
                    continue;
                };
                match plan.on_change {
                    OnChange::Restart => {
                        env = newer;
                        if !restarting {
                            tracing::info!(command = %name, pid = child.id(), signal = %plan.stop_signal, "restarting with the new environment");
                            send(&child, plan.stop_signal.0);
                            restarting = true;
                            kill_at = Some(Instant::now() + plan.stop_timeout);
                        }
                    }
                    OnChange::Signal(sig) => {
                        tracing::info!(command = %name, pid = child.id(), signal = %sig, "sending the signal --on-change names");
                        env = newer;
                        send(&child, sig.0);
                    }
                    OnChange::Ignore => {
                        env = newer;
                        tracing::info!(command = %name, "--on-change ignore: the command keeps its environment");
                    }
                }
                continue;
            }
            let sig = libc::c_int::from(byte & !FROM_KERNEL);
            if sig == libc::SIGCHLD {
                continue;
            }
            if byte & FROM_KERNEL == 0 {
                tracing::debug!(signal = %Signal(sig), pid = child.id(), "passing the signal on");
                send(&child, sig);
            }
            if ENDING.contains(&sig) && restarting {
                tracing::info!(signal = %Signal(sig), "restart called off: told to stop");
                restarting = false;
            }
        }
        if let Some(at) = kill_at {
            if Instant::now() >= at {
                tracing::warn!(command = %name, pid = child.id(), timeout = %humantime::format_duration(plan.stop_timeout), "still running after --stop-timeout: SIGKILL");
                send(&child, libc::SIGKILL);
                kill_at = None;
            }
        }
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for the command");
                continue;
            }
        };
        kill_at = None;
        if !restarting {
            tracing::debug!(command = %name, status = %status, "exited");
            return Ok(exit_code(status));
        }
        restarting = false;
        child = spawn(plan, &env)?;
        tracing::info!(command = %name, pid = child.id(), "started again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_commands_or_128_plus_the_signal() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }
}
