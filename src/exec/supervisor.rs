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
    /// The user to run the command as (`--user`); `None`: secretfs's own.
    pub user: Option<super::user::RunAs>,
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
    if let Some(user) = &plan.user {
        // The token stays with secretfs: the point of another user.
        cmd.env_remove("VAULT_TOKEN");
        user.apply(&mut cmd);
    }
    let present = |name: &str| std::env::var_os(name).is_some();
    cmd.envs(env.to_set(present, plan.secrets_win));
    // SAFETY: prctl is async-signal-safe. If secretfs dies (SIGKILL, a
    // crash), the command is told to stop instead of running on with
    // nobody to restart it or pass it signals. Set after `--user`'s
    // setuid (registered first), which would clear it.
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

/// The command as it runs now.
struct Running<'p> {
    plan: &'p Plan,
    /// The program's name, for the log.
    name: String,
    child: Child,
    /// How the command ended, once reaped.
    ended: Option<ExitStatus>,
    /// The newest environment: what a restart starts the command with.
    env: Injected,
    /// A restart in progress: the command was asked to stop and is started
    /// again once it has.
    restarting: bool,
    /// When to SIGKILL a command asked to stop that has not.
    kill_at: Option<Instant>,
}

impl Running<'_> {
    /// Sends `sig` to the command, unless it is reaped already (its pid
    /// may then be another process's).
    fn send(&self, sig: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        if self.ended.is_none() {
            // SAFETY: kill on our own child's pid, which stays ours (a
            // zombie at worst) until we reap it.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Reaps every child process that ended, noting the command's end.
    /// Processes the command left behind are children of secretfs too
    /// when it is a container's PID 1: reaped here, they do not pile up
    /// as zombies (as with tini).
    fn reap(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap_or(-1);
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a local status word; nothing else in
            // secretfs starts processes (std's `Child` is never waited on).
            let got = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if got <= 0 {
                break;
            }
            if got == pid {
                self.ended = Some(ExitStatus::from_raw(status));
            }
        }
    }

    /// The watcher's news: the environment is now `newer`. An exit code
    /// when the command turns out to have exited on its own already.
    fn changed(&mut self, newer: Injected) -> Option<u8> {
        self.env = newer;
        let (name, pid) = (self.name.clone(), self.child.id());
        match self.plan.on_change {
            OnChange::Restart if !self.restarting => {
                // A command that already exited on its own is not started
                // again, whatever changed meanwhile.
                self.reap();
                if let Some(status) = self.ended {
                    return Some(exit_code(status));
                }
                tracing::info!(command = %name, pid, signal = %self.plan.stop_signal, "restarting with the new environment");
                self.send(self.plan.stop_signal.0);
                self.restarting = true;
                self.kill_at = Some(Instant::now() + self.plan.stop_timeout);
            }
            // The restart under way starts it with the newest environment.
            OnChange::Restart => {}
            OnChange::Signal(sig) => {
                tracing::info!(command = %name, pid, signal = %sig, "sending the signal --on-change names");
                self.send(sig.0);
            }
            OnChange::Ignore => {
                tracing::info!(command = %name, "--on-change ignore: the command keeps its environment");
            }
        }
        None
    }

    /// Signal `sig` reached secretfs (`from_kernel`: a terminal sent it to
    /// the whole process group, the command included).
    fn signalled(&mut self, sig: libc::c_int, from_kernel: bool) {
        if !from_kernel {
            tracing::debug!(signal = %Signal(sig), pid = self.child.id(), "passing the signal on");
            self.send(sig);
        }
        if ENDING.contains(&sig) && self.restarting {
            tracing::info!(signal = %Signal(sig), "restart called off: told to stop");
            self.restarting = false;
        }
    }

    /// SIGKILL for a command past its --stop-timeout.
    fn enforce_stop_timeout(&mut self) {
        if self.kill_at.is_some_and(|at| Instant::now() >= at) {
            tracing::warn!(command = %self.name, pid = self.child.id(), timeout = %humantime::format_duration(self.plan.stop_timeout), "still running after --stop-timeout: SIGKILL");
            self.send(libc::SIGKILL);
            self.kill_at = None;
        }
    }

    /// After the command exited with `status`: started again (`Ok(None)`)
    /// when a restart was under way, else secretfs's exit code.
    fn exited(&mut self, status: ExitStatus) -> Result<Option<u8>, SpawnFailed> {
        self.kill_at = None;
        if !self.restarting {
            tracing::debug!(command = %self.name, status = %status, "exited");
            return Ok(Some(exit_code(status)));
        }
        self.restarting = false;
        self.child = spawn(self.plan, &self.env)?;
        tracing::info!(command = %self.name, pid = self.child.id(), "started again");
        Ok(None)
    }
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
    let child = spawn(plan, &first)?;
    tracing::debug!(command = %name, pid = child.id(), "started");
    let mut run = Running {
        plan,
        name,
        child,
        ended: None,
        env: first,
        restarting: false,
        kill_at: None,
    };
    loop {
        let wait = run.kill_at.map_or(BACKSTOP, |at| {
            at.saturating_duration_since(Instant::now()).min(BACKSTOP)
        });
        for byte in pipe.wait(wait) {
            let sig = libc::c_int::from(byte & !FROM_KERNEL);
            if byte != CHANGED && sig != libc::SIGCHLD {
                run.signalled(sig, byte & FROM_KERNEL != 0);
            }
        }
        // Looked at every round, not only when woken: a lost wake-up
        // delays a change by the backstop at most.
        let newer = mailbox.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(code) = newer.and_then(|n| run.changed(n)) {
            return Ok(code);
        }
        run.enforce_stop_timeout();
        run.reap();
        if let Some(status) = run.ended.take() {
            if let Some(code) = run.exited(status)? {
                return Ok(code);
            }
        }
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
