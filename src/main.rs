use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use secretfs::cli::{self, Command};

fn init_logging(verbose: u8) {
    let ours = match verbose {
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
        .with_target("hyper", LevelFilter::WARN)
        .with_target("fuser", LevelFilter::ERROR);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(user.and(quiet));
    tracing_subscriber::registry().with(layer).init();
}

fn main() -> ExitCode {
    let cli = cli::parse();
    match cli.command {
        Command::Mount(args) => {
            init_logging(args.verbose);
            match secretfs::mount::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(msg) => {
                    eprintln!("secretfs: {msg}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
