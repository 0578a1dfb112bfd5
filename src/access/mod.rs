//! Per-process access rules (`--allow`, `--allow-file`): which processes
//! may open which files, beyond what the kernel's modes can say — "only
//! /usr/bin/myapp may read `db/PASSWORD`". `rules` parses and decides;
//! `process` gathers the facts of a caller from `/proc`. The FUSE adapter
//! asks on every open of a covered file (covered files never use the
//! kernel's "no open" path nor its page cache: see docs/SECURITY.md).

pub mod process;
pub mod rules;

pub use process::{Caller, ExeDigests};
pub use rules::{Decision, Facts, Rules};

/// A mount's rules and what deciding them needs to remember.
#[derive(Default)]
pub struct Access {
    /// The rules.
    pub rules: Rules,
    /// Digests of executables, for `exe=…@sha256=…` conditions.
    pub digests: ExeDigests,
}

impl Access {
    /// Rules from `--allow` texts and the lines of `--allow-file` files.
    pub fn load(given: &[String], files: &[std::path::PathBuf]) -> Result<Access, String> {
        let mut texts: Vec<String> = given.to_vec();
        for file in files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--allow-file {}: {e}", file.display()))?;
            texts.extend(text.lines().map(str::to_string));
        }
        Ok(Access {
            rules: Rules::parse(texts.iter().map(String::as_str))?,
            digests: ExeDigests::default(),
        })
    }
}
