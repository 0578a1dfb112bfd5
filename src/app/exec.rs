//! `secretfs exec`: its flags converted into [`ExecOptions`], then run.

use crate::cli::ExecArgs;
use crate::exec::{self, ExecOptions};

/// Runs `secretfs exec` as the command line asks; returns the exit code
/// ([`exec::run`]'s, or [`exec::FAILED`] when the Vault flags cannot work).
pub fn run(args: ExecArgs) -> u8 {
    // As exec::run does first: no core dump once a token may be in memory.
    crate::hardening::no_dumps();
    let vault = match super::vault::vault_settings(&args.vault) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("secretfs: {e}");
            return exec::FAILED;
        }
    };
    exec::run(ExecOptions {
        sources: args.sources,
        command: args.command,
        prefix: args.prefix,
        upcase: args.upcase,
        no_override: args.no_override,
        ttl: args.ttl,
        on_change: args.on_change,
        stop_signal: args.stop_signal,
        stop_timeout: args.stop_timeout,
        user: args.user,
        vault,
    })
}
