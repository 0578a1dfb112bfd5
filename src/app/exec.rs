//! `secretfs exec`: its flags converted into [`ExecOptions`], then run.

use crate::cli::ExecArgs;
use crate::exec::{self, ExecOptions};

/// Runs `secretfs exec` as the command line asks; returns the exit code
/// ([`exec::run`]'s, or [`exec::FAILED`] when the Vault flags cannot work).
pub fn run(args: ExecArgs) -> u8 {
    // As exec::run does first: no core dump once a token may be in memory.
    crate::hardening::no_dumps();
    // `exec` serves no metrics.
    let stores = super::store_settings(
        &args.age,
        &args.aws,
        args.vault.timeout,
        crate::metrics::Meter::off(),
    );
    let vault_args = args.vault;
    let vault = Box::new(move || super::vault::vault_settings(&vault_args));
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
        stores,
        wait_for_store: args.wait_for_store,
    })
}
