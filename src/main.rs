use std::io::IsTerminal;
use std::process::ExitCode;

use std::path::Path;

use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use secretfs::cli::{self, Command};

/// Every heap block is cleared before it is freed, so that no library's
/// freed buffer keeps a value (docs/SECURITY.md, "Values in memory"). The `bench-unzeroed`
/// feature (scripts/bench only, to measure what it costs) leaves it out.
#[cfg(not(feature = "bench-unzeroed"))]
#[global_allocator]
static ALLOC: secretfs::zeroing_alloc::ZeroingAlloc = secretfs::zeroing_alloc::Zeroing::SYSTEM;

fn init_logging(verbose: u8, log_file: Option<&Path>, quiet: bool) {
    let ours = match verbose {
        // `exec` shares stderr with the command: only what it does to it,
        // and warnings. An outage is told by exec's own line (the cache's
        // speaks of a mount's stale-if-error).
        0 if quiet => "secretfs=warn,secretfs::fs::cache::outage=error,secretfs::exec=info",
        0 => "secretfs=info",
        1 => "secretfs=debug",
        _ => "secretfs=trace",
    };
    let wanted = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("warn,{ours}"));
    let user = EnvFilter::try_new(&wanted).unwrap_or_else(|_| EnvFilter::new(ours));
    // Whatever RUST_LOG says: the HTTP layers may print request bodies
    // (secret values) at trace level, vaultrs logs every 404 and CAS
    // conflict as an error, and fuser warns for every operation we answer
    // ENOSYS on purpose. We log each failure once, with its path.
    let quiet = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("vaultrs", LevelFilter::OFF)
        .with_target("rustify", LevelFilter::OFF)
        .with_target("reqwest", LevelFilter::WARN)
        // A refused certificate is reported once, in our own error line.
        .with_target("rustls", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::WARN)
        .with_target("fuser", LevelFilter::ERROR);
    let file = log_file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| eprintln!("secretfs: log file {}: {e}; logging to stderr", p.display()))
            .ok()
    });
    let ansi = file.is_none() && std::io::stderr().is_terminal();
    let writer = match file {
        Some(f) => BoxMakeWriter::new(std::sync::Mutex::new(f)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false)
        .with_filter(user.and(quiet));
    tracing_subscriber::registry().with(layer).init();
}

fn main() -> ExitCode {
    let cli = parse_args();
    match cli.command {
        Command::Status { mountpoint, format } => secretfs::status::run(
            &mountpoint,
            match format {
                cli::StatusFormat::Json => secretfs::status::Format::Json,
                cli::StatusFormat::Text => secretfs::status::Format::Text,
            },
        ),
        Command::Store(cli::StoreCommand::Init {
            source,
            recipients,
            age,
        }) => match secretfs::store::file::init(
            &source,
            &recipients,
            age.identity.as_deref(),
            age.identity_passphrase_file.as_deref(),
        ) {
            Ok(path) => {
                eprintln!("secretfs: created the empty store {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("secretfs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            // Into memory first: clap_complete panics on a failed write
            // (a closed pipe), which is the user's to cause.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cli::Cli::command(), "secretfs", &mut script);
            match std::io::stdout().write_all(&script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("secretfs: cannot write the completion script: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Man { dir } => match write_man(dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("secretfs: cannot write the manual page: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Exec(args) => {
            init_logging(args.verbose, args.log_file.as_deref(), true);
            ExitCode::from(secretfs::app::exec::run(args))
        }
        Command::Mount(args) => {
            init_logging(args.verbose, args.log_file.as_deref(), false);
            match secretfs::mount::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("secretfs: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The command line, as `cli::expand` rewrites it; or exit 2 with clap's
/// usage error. A background daemon whose arguments are refused hands the
/// reason to the process waiting for it as well.
fn parse_args() -> cli::Cli {
    use clap::Parser;
    match cli::expand(std::env::args_os().collect()) {
        Ok(args) => cli::Cli::try_parse_from(args).unwrap_or_else(|e| {
            if e.use_stderr() {
                let said = e.to_string();
                let first = said.lines().next().unwrap_or_default();
                secretfs::daemon::tell_waiting_parent(&format!(
                    "the daemon refused its arguments: {}",
                    first.trim_start_matches("error: ")
                ));
            }
            e.exit()
        }),
        Err(msg) => {
            secretfs::daemon::tell_waiting_parent(&msg);
            eprintln!("secretfs: {msg}");
            std::process::exit(2);
        }
    }
}

/// `secretfs man`: the page to stdout, or every page into `dir`.
fn write_man(dir: Option<&Path>) -> std::io::Result<()> {
    use clap::CommandFactory;
    use std::io::Write;
    // Built first, as clap_mangen::generate_to does, so that each
    // subcommand knows its full name (`secretfs mount`).
    let mut command = cli::Cli::command().disable_help_subcommand(true);
    command.build();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
                clap_mangen::Man::new(with_synopsis(sub.clone())).generate_to(dir)?;
            }
            clap_mangen::Man::new(with_synopsis(command)).generate_to(dir)?;
            Ok(())
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(with_synopsis(command)).render(&mut page)?;
            std::io::stdout().write_all(&page)
        }
    }
}

/// `command` with a manual-page synopsis that shows what each option takes
/// (`[--ttl <DURATION>]`), which clap_mangen's own leaves out (`[--ttl]`).
fn with_synopsis(command: clap::Command) -> clap::Command {
    let mut words = vec![command
        .get_bin_name()
        .unwrap_or_else(|| command.get_name())
        .to_string()];
    for arg in command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional())
    {
        let flag = match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => format!("-{short}|--{long}"),
            (None, Some(long)) => format!("--{long}"),
            (Some(short), None) => format!("-{short}"),
            (None, None) => continue,
        };
        let action = arg.get_action();
        let word = if matches!(action, clap::ArgAction::Count) {
            format!("{flag}...")
        } else if action.takes_values() {
            format!("{flag} <{}>", value_name(arg))
        } else {
            flag
        };
        let repeated = matches!(action, clap::ArgAction::Append);
        words.push(match (arg.is_required_set(), repeated) {
            (true, false) => word,
            (true, true) => format!("{word}..."),
            (false, false) => format!("[{word}]"),
            (false, true) => format!("[{word}]..."),
        });
    }
    for arg in command.get_positionals().filter(|a| !a.is_hide_set()) {
        let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
        let name = format!("<{}>{}", value_name(arg), if many { "..." } else { "" });
        let name = if arg.is_last_set() {
            format!("-- {name}")
        } else {
            name
        };
        words.push(if arg.is_required_set() {
            name
        } else {
            format!("[{name}]")
        });
    }
    if command.has_subcommands() {
        words.push("<COMMAND>".to_string());
    }
    let synopsis = words.join(" ");
    command.override_usage(synopsis)
}

/// What an argument's value is called in a synopsis: its value name, or
/// its name in capitals.
fn value_name(arg: &clap::Arg) -> String {
    arg.get_value_names()
        .map(|names| names.join(" "))
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase())
}
