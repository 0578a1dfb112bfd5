//! `secretfs exec SOURCE... -- COMMAND` against a real OpenBao: the keys
//! of every SOURCE in COMMAND's environment (layered, later wins), names
//! that cannot be variables left out with a warning, `--prefix`/`--upcase`,
//! `--no-override`; a missing or refused SOURCE stops it before COMMAND
//! starts; COMMAND's exit status and the signals secretfs receives pass
//! through; a change in OpenBao restarts COMMAND (or signals it). What
//! comes from the store runs per store (`per_store!`,
//! tests/support/backend.rs): layers, folder SOURCEs, restarts on a change.

mod support;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{eventually, per_store, Backend, Bao, Store};

/// How long a change may take to reach COMMAND: --ttl 1s plus a generous
/// bound for "does not hang" on a loaded machine.
const WITHIN: Duration = Duration::from_secs(20);

/// `secretfs exec ARGS` against `bao` with the root token, and nothing of
/// the tester's own Vault settings.
fn exec(bao: &Bao, args: &[&str]) -> Command {
    let mut cmd = Command::new(support::secretfs());
    cmd.arg("exec").args(args);
    for var in [
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "VAULT_CACERT",
        "VAULT_NAMESPACE",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("VAULT_ADDR", bao.addr())
        .env("VAULT_TOKEN", "root")
        .stdin(Stdio::null());
    cmd
}

/// `secretfs exec ARGS` on `store` (its SOURCEs among ARGS): with the root
/// token on OpenBao, with its identity on a store file.
fn exec_on(store: &Store, args: &[&str]) -> Command {
    match store.backend() {
        Backend::File | Backend::AwsSm => {
            let mut cmd = Command::new(support::secretfs());
            cmd.arg("exec").args(args).args(store.access_args());
            for var in ["VAULT_ADDR", "VAULT_TOKEN", "RUST_LOG"] {
                cmd.env_remove(var);
            }
            cmd.envs(store.env()).stdin(Stdio::null());
            cmd
        }
        _ => exec(store.bao(), args),
    }
}

/// Runs it to the end.
fn output(mut cmd: Command) -> Output {
    cmd.output().expect("run secretfs exec")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `secretfs exec` left running, its stderr in a file; killed if the
/// test ends first (its command follows: it gets SIGTERM when secretfs dies).
struct Running {
    child: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
    /// Where the command's script writes what it sees.
    out: PathBuf,
}

impl Running {
    /// Starts `secretfs exec ARGS -- sh -c SCRIPT`, with `$OUT` the file
    /// the script writes to.
    fn start(bao: &Bao, args: &[&str], script: &str) -> Running {
        Running::spawn(exec(bao, args), script)
    }

    /// [`Running::start`] on `store`.
    fn start_on(store: &Store, args: &[&str], script: &str) -> Running {
        Running::spawn(exec_on(store, args), script)
    }

    fn spawn(mut cmd: Command, script: &str) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let stderr = dir.path().join("stderr");
        cmd.args(["--", "sh", "-c", script])
            .env("OUT", &out)
            .stderr(File::create(&stderr).expect("stderr file"));
        let child = cmd.spawn().expect("start secretfs exec");
        Running {
            child,
            stderr,
            _dir: dir,
            out,
        }
    }

    fn out(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn lines(&self) -> Vec<String> {
        self.out().lines().map(str::to_string).collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the script's output has a line `line`.
    fn wait_for_line(&self, line: &str) {
        self.wait_for(line, |l| l == line);
    }

    /// Waits until the script's output has a line that `wanted` accepts;
    /// returns it.
    fn wait_for(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        eventually(
            format!(
                "the line {what:?} (output so far: {:?}, log: {})",
                self.out(),
                self.log()
            ),
            WITHIN,
            || self.lines().into_iter().find(|l| wanted(l)),
        )
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let log = self.log();
        let child = &mut self.child;
        eventually(
            format!("secretfs exec to exit (log: {log})"),
            WITHIN,
            || child.try_wait().ok().flatten(),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A project → environment → service setup.
fn three_layers(bao: &Bao) {
    bao.kv2_put(
        "secret",
        "shop",
        json!({"DB_HOST": "db.shop", "LOG_LEVEL": "info", "REPLICAS": 1}),
    );
    bao.kv2_put(
        "secret",
        "shop/prod",
        json!({"LOG_LEVEL": "warn", "DB_PASSWORD": "prod-pw"}),
    );
    bao.kv2_put(
        "secret",
        "shop/prod/api",
        json!({"LOG_LEVEL": "debug", "PORT": 8080}),
    );
}

/// [`three_layers`] in any store.
fn three_layers_in(store: &Store) {
    store.put(
        "shop",
        json!({"DB_HOST": "db.shop", "LOG_LEVEL": "info", "REPLICAS": 1}),
    );
    store.put(
        "shop/prod",
        json!({"LOG_LEVEL": "warn", "DB_PASSWORD": "prod-pw"}),
    );
    store.put("shop/prod/api", json!({"LOG_LEVEL": "debug", "PORT": 8080}));
}

per_store!(every_key_of_every_layer_is_a_variable_and_later_layers_win);
fn every_key_of_every_layer_is_a_variable_and_later_layers_win(backend: Backend) {
    let store = Store::start(backend);
    three_layers_in(&store);
    let layers = ["shop", "shop/prod", "shop/prod/api"].map(|f| store.source(f));
    let layers: Vec<&str> = layers.iter().map(String::as_str).collect();
    let mut cmd = exec_on(&store, &layers);
    cmd.args([
        "--",
        "sh",
        "-c",
        r#"printf '%s|%s|%s|%s|%s' "$DB_HOST" "$LOG_LEVEL" "$DB_PASSWORD" "$REPLICAS" "$PORT""#,
    ]);
    let out = output(cmd);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "db.shop|debug|prod-pw|1|8080");
    // The order of the SOURCEs is the order of the layers.
    let mut cmd = exec_on(
        &store,
        &[&store.source("shop/prod/api"), &store.source("shop")],
    );
    cmd.args(["--", "sh", "-c", r#"printf %s "$LOG_LEVEL""#]);
    assert_eq!(text(&output(cmd).stdout), "info");
    // Nothing of secretfs's own on stderr when all is well.
    let mut cmd = exec_on(&store, &layers);
    cmd.args(["--", "true"]);
    let out = output(cmd);
    assert_eq!(text(&out.stderr), "");
}

per_store!(a_folder_source_gives_the_keys_of_every_secret_directly_in_it);
fn a_folder_source_gives_the_keys_of_every_secret_directly_in_it(backend: Backend) {
    let store = Store::seeded_with(
        backend,
        &[
            ("team/a", json!({"A": "a", "SHARED": "from a"})),
            ("team/b", json!({"B": "b", "SHARED": "from b"})),
            ("team/deeper/c", json!({"C": "c"})),
            ("team", json!({"T": "the secret team"})),
        ],
    );
    let mut cmd = exec_on(&store, &[&store.source("team/")]);
    cmd.args([
        "--",
        "sh",
        "-c",
        r#"printf '%s|%s|%s|%s|%s' "$A" "$B" "$SHARED" "${C-unset}" "${T-unset}""#,
    ]);
    let out = output(cmd);
    assert!(out.status.success(), "{out:?}");
    // In name order, a later secret winning; not the secret `team` itself,
    // and nothing below a subfolder.
    assert_eq!(text(&out.stdout), "a|b|from b|unset|unset");
    // Without the slash, a path that is a secret is that secret.
    let mut cmd = exec_on(&store, &[&store.source("team")]);
    cmd.args(["--", "sh", "-c", r#"printf '%s|%s' "$T" "${A-unset}""#]);
    assert_eq!(text(&output(cmd).stdout), "the secret team|unset");
}

#[test]
fn keys_that_cannot_be_variables_are_left_out_and_named_once() {
    let bao = Bao::start();
    bao.kv2_put(
        "secret",
        "app",
        json!({"db-password": "leaked-if-shown", "1ST": "x", "GOOD": "g"}),
    );
    bao.kv2_put("secret", "app2", json!({"db-password": "again"}));
    let mut cmd = exec(&bao, &["secret/app", "secret/app"]);
    cmd.args(["--", "env"]);
    let out = output(cmd);
    assert!(out.status.success(), "{out:?}");
    let env = text(&out.stdout);
    assert!(env.lines().any(|l| l == "GOOD=g"), "{env}");
    assert!(
        !env.contains("db-password") && !env.contains("1ST="),
        "{env}"
    );
    let log = text(&out.stderr);
    assert_eq!(log.matches("db-password").count(), 1, "{log}");
    assert_eq!(log.matches("1ST").count(), 1, "{log}");
    assert!(log.contains("WARN"), "{log}");
    assert!(!log.contains("leaked-if-shown"), "{log}");
}

#[test]
fn prefix_and_upcase_name_the_variables() {
    let bao = Bao::start();
    bao.kv2_put(
        "secret",
        "app",
        json!({"db_url": "postgres://x", "Mixed": "m"}),
    );
    let mut cmd = exec(&bao, &["--prefix", "app_", "--upcase", "secret/app"]);
    cmd.args([
        "--",
        "sh",
        "-c",
        r#"printf '%s|%s|%s' "$APP_DB_URL" "$APP_MIXED" "${db_url-unset}""#,
    ]);
    assert_eq!(text(&output(cmd).stdout), "postgres://x|m|unset");
    let mut cmd = exec(&bao, &["--prefix", "P_", "secret/app"]);
    cmd.args(["--", "sh", "-c", r#"printf %s "$P_db_url""#]);
    assert_eq!(text(&output(cmd).stdout), "postgres://x");
}

#[test]
fn secrets_win_over_the_process_environment_unless_no_override() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"REGION": "from-vault", "NEW": "n"}));
    let script = r#"printf '%s|%s|%s' "$REGION" "$NEW" "$KEPT""#;
    let mut cmd = exec(&bao, &["secret/app"]);
    cmd.args(["--", "sh", "-c", script])
        .env("REGION", "from-env")
        .env("KEPT", "k");
    assert_eq!(text(&output(cmd).stdout), "from-vault|n|k");
    let mut cmd = exec(&bao, &["--no-override", "secret/app"]);
    cmd.args(["--", "sh", "-c", script])
        .env("REGION", "from-env")
        .env("KEPT", "k");
    assert_eq!(text(&output(cmd).stdout), "from-env|n|k");
}

/// Runs `secretfs exec` with `sources` and a command that would leave a
/// mark; checks that it failed before the command ran, with one line.
fn fails_before_start(bao: &Bao, token: &str, sources: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("ran");
    let mut cmd = exec(bao, sources);
    cmd.env("VAULT_TOKEN", token)
        .args(["--", "touch"])
        .arg(&mark);
    let out = output(cmd);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(!mark.exists(), "the command ran");
    let log = text(&out.stderr);
    assert_eq!(log.lines().count(), 1, "not one line: {log}");
    log
}

#[test]
fn a_missing_or_refused_source_stops_it_before_the_command_starts() {
    let bao = Bao::start();
    three_layers(&bao);
    let log = fails_before_start(&bao, "root", &["secret/shop", "secret/shop/nope"]);
    assert_eq!(
        log,
        "secretfs: secret/shop/nope: no such secret or folder\n"
    );
    let log = fails_before_start(&bao, "root", &["secret/shop", "nomount/x"]);
    assert!(log.contains("nomount/x"), "{log}");
    let token = bao.token_with_policy(
        "shop-only",
        r#"path "secret/data/shop" { capabilities = ["read"] }"#,
    );
    let log = fails_before_start(&bao, &token, &["secret/shop", "secret/shop/prod"]);
    assert!(
        log.starts_with("secretfs: secret/shop/prod: permission denied"),
        "{log}"
    );
}

#[test]
fn the_commands_exit_status_is_secretfs_exit_status() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    for (script, code) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("kill -KILL $$", 128 + libc::SIGKILL),
        ("kill -TERM $$", 128 + libc::SIGTERM),
    ] {
        let mut cmd = exec(&bao, &["secret/app"]);
        cmd.args(["--", "sh", "-c", script]);
        assert_eq!(output(cmd).status.code(), Some(code), "{script}");
    }
    let mut cmd = exec(&bao, &["secret/app"]);
    cmd.args(["--", "no-such-program-anywhere"]);
    let out = output(cmd);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
}

per_store!(a_changed_value_restarts_the_command_with_the_new_environment);
fn a_changed_value_restarts_the_command_with_the_new_environment(backend: Backend) {
    let store = Store::start(backend);
    three_layers_in(&store);
    let (shop, prod) = (store.source("shop"), store.source("shop/prod"));
    let mut run = Running::start_on(
        &store,
        &["--ttl", "1s", &shop, &prod],
        r#"printf '%s\n' "$DB_PASSWORD" >> "$OUT"; exec sleep 60"#,
    );
    run.wait_for_line("prod-pw");
    // Rotated the way an operator does it (`bao kv put` on OpenBao).
    match backend {
        Backend::File | Backend::AwsSm => store.put(
            "shop/prod",
            json!({"LOG_LEVEL": "warn", "DB_PASSWORD": "rotated-pw"}),
        ),
        _ => {
            let mount = if backend == Backend::VaultKv1 {
                "-mount=kv1"
            } else {
                "-mount=secret"
            };
            let put = Command::new("bao")
                .args([
                    "kv",
                    "put",
                    mount,
                    "shop/prod",
                    "LOG_LEVEL=warn",
                    "DB_PASSWORD=rotated-pw",
                ])
                .env("VAULT_ADDR", store.bao().addr())
                .env("VAULT_TOKEN", "root")
                .output()
                .expect("bao kv put");
            assert!(put.status.success(), "{put:?}");
        }
    }
    run.wait_for_line("rotated-pw");
    assert_eq!(run.lines(), ["prod-pw", "rotated-pw"]);
    // A change that a layer above overrides changes nothing the command
    // sees: no restart.
    store.put(
        "shop",
        json!({"DB_HOST": "db.shop", "LOG_LEVEL": "error", "REPLICAS": 1, "DB_PASSWORD": "hidden"}),
    );
    eventually("the overridden change to be seen", WITHIN, || {
        run.log()
            .contains("no variable the command sees")
            .then_some(())
    });
    assert_eq!(run.lines(), ["prod-pw", "rotated-pw"], "{}", run.log());
    let log = run.log();
    assert!(
        log.contains("DB_PASSWORD"),
        "the log names the variable: {log}"
    );
    for value in ["prod-pw", "rotated-pw", "hidden"] {
        assert!(!log.contains(value), "a value in the log: {log}");
    }
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit().code(), Some(128 + libc::SIGTERM));
}

#[test]
fn a_command_that_ignores_the_stop_signal_is_killed_after_the_stop_timeout() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "one"}));
    let mut run = Running::start(
        &bao,
        &["--ttl", "1s", "--stop-timeout", "1s", "secret/app"],
        r#"trap '' TERM; echo "$$ $K" >> "$OUT"; while :; do sleep 0.1; done"#,
    );
    run.wait_for("PID one", |l| l.ends_with(" one"));
    bao.kv2_put("secret", "app", json!({"K": "two"}));
    let line = run.wait_for("PID two", |l| l.ends_with(" two"));
    assert!(run.log().contains("SIGKILL"), "{}", run.log());
    // The new command ignores SIGTERM too: end it from here.
    let pid: libc::pid_t = line
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pid");
    // SAFETY: kill(2) on the command the test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(run.wait_exit().code(), Some(128 + libc::SIGKILL));
}

#[test]
fn on_change_signal_sends_the_signal_and_does_not_restart() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "one"}));
    let mut run = Running::start(
        &bao,
        &["--ttl", "1s", "--on-change", "signal:HUP", "secret/app"],
        r#"trap 'echo reload >> "$OUT"' HUP; echo "start $K" >> "$OUT"; while :; do sleep 0.1; done"#,
    );
    run.wait_for_line("start one");
    bao.kv2_put("secret", "app", json!({"K": "two"}));
    run.wait_for_line("reload");
    assert_eq!(run.lines(), ["start one", "reload"]);
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit().code(), Some(128 + libc::SIGTERM));
}

#[test]
fn signals_secretfs_receives_reach_the_command() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    let mut run = Running::start(
        &bao,
        &["secret/app"],
        r#"trap 'echo usr1 >> "$OUT"' USR1; trap 'echo hup >> "$OUT"' HUP; trap 'echo term >> "$OUT"; exit 7' TERM; echo ready >> "$OUT"; while :; do sleep 0.1; done"#,
    );
    run.wait_for_line("ready");
    run.signal(libc::SIGUSR1);
    run.wait_for_line("usr1");
    run.signal(libc::SIGHUP);
    run.wait_for_line("hup");
    run.signal(libc::SIGTERM);
    let status = run.wait_exit();
    assert_eq!(status.code(), Some(7), "{}", run.log());
    assert_eq!(run.lines(), ["ready", "usr1", "hup", "term"]);
}

#[test]
fn a_ctrl_c_on_the_terminal_reaches_the_command_once() {
    // The terminal sends SIGINT to its whole foreground process group:
    // secretfs and the command both get it, and secretfs must not pass it
    // on a second time. script(1) gives them a terminal of their own.
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let program = dir.path().join("count_sigint.py");
    std::fs::write(
        &program,
        r#"import os, signal, time
out = os.environ["OUT"]
def note(line):
    with open(out, "a") as f:
        f.write(line + "\n")
# One byte per delivery, written by the C-level handler: Python's own
# handlers would run once for two signals that come close together.
r, w = os.pipe()
os.set_blocking(r, False)
os.set_blocking(w, False)
signal.set_wakeup_fd(w)
signal.signal(signal.SIGINT, lambda *_: None)
signal.signal(signal.SIGUSR1, lambda *_: None)
# Our parent is secretfs: the test signals it there.
with open(out + ".secretfs", "w") as f:
    f.write(str(os.getppid()))
note("ready")
deadline = time.time() + 60
while time.time() < deadline and not os.path.exists(out + ".stop"):
    time.sleep(0.05)
    try:
        for byte in os.read(r, 64):
            if byte == signal.SIGINT:
                note("int")
            elif byte == signal.SIGUSR1:
                note("usr1")
    except BlockingIOError:
        pass
"#,
    )
    .unwrap();
    // Its debug log says each signal it passes on.
    let log = dir.path().join("secretfs.log");
    let line = format!(
        "exec '{}' exec -v --log-file '{}' secret/app -- python3 '{}'",
        support::secretfs(),
        log.display(),
        program.display()
    );
    let mut script = Command::new("script");
    script
        .args(["-qfec", &line, "/dev/null"])
        .env("VAULT_ADDR", bao.addr())
        .env("VAULT_TOKEN", "root")
        .env("OUT", &out)
        .env("SHELL", "/bin/sh")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = script.spawn().expect("script(1) (bsdutils)");
    let lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    eventually("the command to start", WITHIN, || {
        lines().contains(&"ready".to_string()).then_some(())
    });
    use std::io::Write;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"\x03").expect("Ctrl-C");
    stdin.flush().ok();
    eventually("SIGINT to reach the command", WITHIN, || {
        lines().contains(&"int".to_string()).then_some(())
    });
    // Then a SIGUSR1 to secretfs, which it passes on: a barrier. Its
    // SIGINT from the terminal was pending before, so secretfs handled it
    // first: once the command has the SIGUSR1, secretfs has decided about
    // the SIGINT, and its log says whether it passed it on. (The command
    // alone cannot tell: a SIGINT passed on while the terminal's is still
    // pending merges with it.)
    let secretfs: libc::pid_t = std::fs::read_to_string(dir.path().join("out.secretfs"))
        .expect("the pid of secretfs")
        .parse()
        .expect("a pid");
    // SAFETY: kill(2) with a pid read from the command, secretfs's.
    assert_eq!(unsafe { libc::kill(secretfs, libc::SIGUSR1) }, 0);
    eventually("SIGUSR1 passed on to the command", WITHIN, || {
        lines().contains(&"usr1".to_string()).then_some(())
    });
    assert_eq!(lines(), ["ready", "int", "usr1"]);
    let log = std::fs::read_to_string(&log).expect("the log of secretfs");
    let passed_on = |sig: &str| {
        log.lines()
            .any(|l| l.contains("passing the signal on") && l.contains(sig))
    };
    assert!(passed_on("SIGUSR1"), "{log}");
    assert!(!passed_on("SIGINT"), "{log}");
    std::fs::write(dir.path().join("out.stop"), b"").unwrap();
    let status = eventually("script to end", WITHIN, || child.try_wait().ok().flatten());
    drop(stdin);
    assert!(status.success(), "{status}");
}

#[test]
fn while_vault_is_unreachable_the_command_keeps_running_and_changes_count_after() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "one"}));
    let mut run = Running::start(
        &bao,
        &["--ttl", "1s", "--timeout", "1s", "secret/app"],
        r#"printf '%s\n' "$K" >> "$OUT"; exec sleep 60"#,
    );
    run.wait_for_line("one");
    bao.pause();
    eventually(format!("a warning (log: {})", run.log()), WITHIN, || {
        run.log()
            .contains("cannot read the source again")
            .then_some(())
    });
    assert_eq!(run.lines(), ["one"], "restarted during the outage");
    assert!(run.child.try_wait().unwrap().is_none(), "secretfs exited");
    bao.resume();
    bao.kv2_put("secret", "app", json!({"K": "two"}));
    run.wait_for_line("two");
    assert_eq!(run.lines(), ["one", "two"]);
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit().code(), Some(128 + libc::SIGTERM));
}

#[test]
fn as_a_containers_pid_1_it_reaps_what_the_command_leaves_behind() {
    // In a PID namespace of its own (as in a container), secretfs is PID 1:
    // a process the command starts and abandons becomes its child, and
    // must not stay a zombie once it ends.
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(support::secretfs())
        .args(["exec", "secret/app", "--", "sh", "-c"])
        .arg(
            // The inner sh exits at once: its `sleep` is orphaned, reparented
            // to PID 1, and ends 0.2 s later.
            r#"sh -c 'sleep 0.2 &'; sleep 2; ps -eo stat=,comm= | grep -c '^Z' || true"#,
        )
        .env("VAULT_ADDR", bao.addr())
        .env("VAULT_TOKEN", "root")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    let out = output(cmd);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), "0", "zombies left: {out:?}");
}

/// docs/EXEC.md's promise for a token file: with `--user`, COMMAND runs as
/// that user and cannot read the token file secretfs reads (root's,
/// 0600), nor find the token in its environment; secretfs still reads
/// every SOURCE with the token.
#[test]
fn with_user_the_command_runs_as_that_user_and_cannot_read_the_token_file() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (secretfs exec --user)"
    );
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"PASSWORD": "one"}));
    // Only the file's own mode keeps nobody out: its folder is open.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "root").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // Without --user, as docs/EXEC.md says, the token file is in its reach.
    let mut cmd = exec(&bao, &["--token-file", support::s(&token), "secret/app"]);
    cmd.env_remove("VAULT_TOKEN")
        .env("TOKEN_FILE", &token)
        .args(["--", "sh", "-c", "cat \"$TOKEN_FILE\""]);
    assert_eq!(text(&output(cmd).stdout), "root");

    let script = r#"echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME user=$USER"
echo "token=${VAULT_TOKEN-unset} password=$PASSWORD"
cat "$TOKEN_FILE" 2>&1; echo "cat=$?"
"#;
    let mut cmd = exec(
        &bao,
        &[
            "--user",
            "nobody",
            "--token-file",
            support::s(&token),
            "secret/app",
        ],
    );
    cmd.env_remove("VAULT_TOKEN")
        .env("TOKEN_FILE", &token)
        .args(["--", "sh", "-c", script]);
    let out = output(cmd);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    let home = support::sh_ok("getent passwd nobody | cut -d: -f6");
    assert_eq!(
        stdout,
        format!(
            "uid=65534 gid=65534 groups=65534 home={} user=nobody\n\
             token=unset password=one\n\
             cat: {}: Permission denied\ncat=1\n",
            home.trim(),
            token.display()
        ),
        "{out:?}"
    );

    // Even with VAULT_TOKEN in secretfs's environment, COMMAND does not get it.
    let mut cmd = exec(&bao, &["--user", "65534", "secret/app"]);
    cmd.args(["--", "sh", "-c", "echo \"${VAULT_TOKEN-unset} $(id -u)\""]);
    let out = output(cmd);
    assert_eq!(text(&out.stdout), "unset 65534\n", "{out:?}");
}

#[test]
fn user_is_refused_before_the_command_starts_when_it_cannot_be_taken() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app", json!({"K": "v"}));
    let log = fails_before_start(&bao, "root", &["--user", "no-such-user-here", "secret/app"]);
    assert!(
        log.contains("--user no-such-user-here: no such user"),
        "{log}"
    );
    // secretfs itself as nobody cannot start COMMAND as anyone else.
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(support::secretfs())
        .args(["exec", "--user", "root", "secret/app", "--", "true"])
        .env("VAULT_ADDR", bao.addr())
        .env("VAULT_TOKEN", "root")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    let out = output(cmd);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        text(&out.stderr).contains("cannot run a command as another user"),
        "{out:?}"
    );
}

#[test]
fn a_store_that_starts_after_exec_is_waited_for_with_backoff() {
    // A one-node Raft server keeps its port and data across a restart:
    // down when exec starts, started (and unsealed) while exec waits.
    let mut cluster = support::Cluster::start_n(1);
    cluster
        .node(0)
        .kv2_put("secret", "app", json!({"K": "from-the-late-server"}));
    cluster.kill(0);
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr");
    let stdout = dir.path().join("stdout");
    let mut cmd = exec(cluster.node(0), &["--wait-for-store", "5m", "secret/app"]);
    cmd.args(["--", "sh", "-c", "printf %s \"$K\""])
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap());
    let mut child = cmd.spawn().expect("start secretfs exec");
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    // It tries again, each try logged, with a growing pause.
    eventually(
        format!("two logged retries (log: {})", log()),
        Duration::from_secs(30),
        || (log().matches("does not answer yet").count() >= 2).then_some(()),
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "exec gave up while waiting: {}",
        log()
    );
    cluster.restart(0);
    let status = eventually(
        format!("exec to run its command and exit (log: {})", log()),
        Duration::from_secs(60),
        || child.try_wait().ok().flatten(),
    );
    assert!(status.success(), "{status}: {}", log());
    assert_eq!(
        std::fs::read_to_string(&stdout).unwrap(),
        "from-the-late-server"
    );
    let log = log();
    assert!(
        log.contains("attempt=1") && log.contains("attempt=2"),
        "{log}"
    );
    assert!(
        log.contains("retry_in=500ms") && log.contains("retry_in=1s"),
        "{log}"
    );
}

#[test]
fn wait_for_store_0_gives_up_at_once_on_an_unreachable_store() {
    let bao = Bao::start();
    let mut cmd = exec(&bao, &["--wait-for-store", "0", "secret/app"]);
    cmd.env("VAULT_ADDR", support::dead_addr())
        .args(["--", "true"]);
    let out = output(cmd);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let log = text(&out.stderr);
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(log.contains("cannot reach Vault at"), "{log}");
}
