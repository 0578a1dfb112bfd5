use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use secretfs::cli::{self, Command};

fn init_logging(verbose: u8) {
    let ours = match verbose {
        0 => "secretfs=info",
        1 => "secretfs=debug",
        _ => "secretfs=trace",
    };
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("warn,{ours}"));
    // The HTTP layers may print request bodies (secret values) at trace
    // level: keep them quiet whatever RUST_LOG says.
    let filter = EnvFilter::try_new(format!(
        "{base},rustify=off,vaultrs=warn,reqwest=warn,hyper=warn"
    ))
    .unwrap_or_else(|_| EnvFilter::new(ours));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
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
