//! Running in the background the way mount helpers do: the mount-helper
//! form starts a copy of itself in a new session and returns only once
//! that copy says the filesystem answers (or says why it could not).
//! Also `sd_notify` readiness for `Type=notify` services.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::start_error::StartError;

/// How a mounting process tells whoever waits that it is ready (or not).
pub struct Readiness {
    pipe: Option<File>,
}

impl Readiness {
    /// Reports to the parent through `fd` (background mode), and to systemd
    /// through `NOTIFY_SOCKET` when set.
    pub fn new(ready_fd: Option<i32>) -> Self {
        // SAFETY: the fd was opened for us by the parent (see `spawn_and_wait`)
        // and nothing else in this process owns it.
        let pipe = ready_fd.map(|fd| unsafe { File::from_raw_fd(fd) });
        Readiness { pipe }
    }

    /// The filesystem answers.
    pub fn ready(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"READY\n");
        }
        notify_systemd("READY=1");
    }

    /// A warning for whoever started the mount (one line): the process
    /// waiting in the mount-helper form prints it on its stderr.
    pub fn warn(&mut self, msg: &str) {
        if let Some(p) = self.pipe.as_mut() {
            let _ = writeln!(p, "{WARNING}{msg}");
        }
    }

    /// Mounting failed with `msg` (one line for stderr).
    pub fn failed(&mut self, msg: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = writeln!(p, "{msg}");
        }
    }
}

/// For a daemon that fails before it could build its [`Readiness`] (its
/// arguments refused): hands `msg` to the process waiting on the
/// `--ready-fd` its arguments name, if any, so that the caller sees the
/// reason rather than "the daemon exited".
pub fn tell_waiting_parent(msg: &str) {
    let Some(fd) = std::env::args_os()
        .find_map(|a| a.to_str()?.strip_prefix("--ready-fd=")?.parse::<i32>().ok())
    else {
        return;
    };
    let line = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or(msg);
    let text = format!("{}\n", line.trim());
    // SAFETY: write(2) of our own buffer; an fd that is not open (the
    // argument given by hand) fails with EBADF, which is ignored.
    unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
}

/// How a warning line on the readiness pipe begins.
const WARNING: &str = "warning: ";

/// Sends one sd_notify state line, if systemd asked for them.
pub fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Starts this program again in the background (new session, no terminal)
/// with `--ready-fd`, waits until it reports readiness, and returns `Ok`
/// then; or its one-line reason when it fails or goes silent.
pub fn spawn_and_wait(log_file: Option<&Path>, deadline: Duration) -> Result<(), StartError> {
    let exe = std::env::current_exe().map_err(StartError::OwnExecutable)?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds; O_CLOEXEC keeps them out of other children.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(StartError::ReadinessPipe(std::io::Error::last_os_error()));
    }
    // SAFETY: both fds are fresh and ours.
    let (mut reader, writer) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let write_fd = writer.as_raw_fd();

    let stderr = match log_file {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|reason| StartError::LogFile {
                    path: p.to_path_buf(),
                    reason,
                })?,
        ),
        // Under systemd (a .mount unit) stderr is already the journal: keep it.
        None if std::env::var_os("JOURNAL_STREAM").is_some() => Stdio::inherit(),
        None => Stdio::null(),
    };
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    args.push(OsString::from(format!("--ready-fd={write_fd}")));
    let mut command = Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        // The caller's directory, so that the daemon reads relative paths
        // (`secretfs secret/ m/e1`) as the caller meant them; it moves to
        // `/` once it has made them absolute.
        .current_dir(std::env::current_dir().unwrap_or_else(|_| "/".into()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Let the write end survive exec.
            if libc::fcntl(write_fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(StartError::DaemonSpawn)?;
    drop(writer);

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = reader.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    match rx.recv_timeout(deadline) {
        Ok(text) => {
            // Warnings first, each on our stderr; then READY or the reason.
            let mut rest = text.lines().filter(|l| match l.strip_prefix(WARNING) {
                Some(w) => {
                    eprintln!("secretfs: warning: {w}");
                    false
                }
                None => true,
            });
            let line = rest.next().unwrap_or("").trim();
            if line.starts_with("READY") {
                return Ok(());
            }
            let status = child.wait();
            Err(if line.is_empty() {
                StartError::DaemonExited(match status {
                    Ok(status) => status.to_string(),
                    Err(e) => format!("status unknown: {e}"),
                })
            } else {
                StartError::DaemonFailed(line.to_string())
            })
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(StartError::NotReady(deadline))
        }
    }
}
