//! What `--on-change` and `--stop-signal` accept: signal names as `kill -l`
//! spells them (with or without `SIG`, any case) or numbers.

use std::fmt;

/// A signal, by number, shown by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub libc::c_int);

/// The signals a user names, as `kill -l` spells them.
const NAMES: &[(&str, libc::c_int)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("WINCH", libc::SIGWINCH),
];

impl Signal {
    /// Parses `TERM`, `SIGTERM`, `sigterm` or `15`.
    pub fn parse(text: &str) -> Result<Signal, String> {
        let t = text.trim();
        if let Ok(n) = t.parse::<libc::c_int>() {
            return if (1..=64).contains(&n) {
                Ok(Signal(n))
            } else {
                Err(format!("{text:?} is not a signal number (1-64)"))
            };
        }
        let upper = t.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, s)| Signal(s))
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a signal name; use one of {} or a number",
                    NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )
            })
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match NAMES.iter().find(|&&(_, s)| s == self.0) {
            Some((name, _)) => write!(f, "SIG{name}"),
            None => write!(f, "signal {}", self.0),
        }
    }
}

/// What to do with the command when an injected value changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Stop it (--stop-signal, then SIGKILL after --stop-timeout) and
    /// start it again with the new environment.
    Restart,
    /// Send it this signal (for programs that reload their own files).
    Signal(Signal),
    /// Leave it be; the change is only logged.
    Ignore,
}

impl OnChange {
    /// Parses `restart`, `ignore`, `signal:HUP` (any signal name or number).
    pub fn parse(text: &str) -> Result<OnChange, String> {
        match text.trim() {
            "restart" => Ok(OnChange::Restart),
            "ignore" => Ok(OnChange::Ignore),
            other => match other.strip_prefix("signal:") {
                Some(sig) => Signal::parse(sig).map(OnChange::Signal),
                None => Err(format!(
                    "{text:?}: use restart, signal:NAME (e.g. signal:HUP) or ignore"
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_as_kill_spells_them() {
        for text in ["HUP", "SIGHUP", "sighup", "hup", "1"] {
            assert_eq!(Signal::parse(text), Ok(Signal(libc::SIGHUP)), "{text}");
        }
        assert_eq!(Signal::parse("usr1"), Ok(Signal(libc::SIGUSR1)));
        assert!(Signal::parse("SIGNOPE").is_err());
        assert!(Signal::parse("0").is_err());
        assert!(Signal::parse("65").is_err());
        assert_eq!(Signal(libc::SIGTERM).to_string(), "SIGTERM");
        assert_eq!(Signal(40).to_string(), "signal 40");
    }

    #[test]
    fn on_change_takes_restart_signal_or_ignore() {
        assert_eq!(OnChange::parse("restart"), Ok(OnChange::Restart));
        assert_eq!(OnChange::parse("ignore"), Ok(OnChange::Ignore));
        assert_eq!(
            OnChange::parse("signal:HUP"),
            Ok(OnChange::Signal(Signal(libc::SIGHUP)))
        );
        assert_eq!(
            OnChange::parse("signal:SIGUSR2"),
            Ok(OnChange::Signal(Signal(libc::SIGUSR2)))
        );
        assert!(OnChange::parse("signal:").is_err());
        assert!(OnChange::parse("reload").is_err());
    }
}
