//! `--allow` rules for changes at the FUSE boundary: which keys a change
//! reaches, decided by `crate::fs::open::admit` (which logs a refusal
//! once, with the caller's executable; it becomes `EACCES`). Opens are
//! admitted by the core (`SecretFs::open_for`). The audit record is
//! written by the operation that asked, as for every other outcome.

use std::ffi::OsStr;

use super::Shared;
use crate::audit::Caller;
use crate::fs::inode::Ino;
use crate::fs::shows::Through;
use crate::fs::OpContext;

impl Shared {
    /// With `--allow` rules, whether `caller` may open or change a file
    /// showing `paths`: `Ok(true)` when a rule covers it and lets the
    /// caller in, `Ok(false)` when no rule covers it, `Err(NotAllowed)`
    /// (EACCES) otherwise, logged with the caller's executable (see
    /// `crate::fs::open::admit`).
    pub(super) fn admit(&self, caller: Caller, paths: &[String]) -> crate::error::Result<bool> {
        match &self.access {
            Some(access) => crate::fs::open::admit(access, caller, paths),
            None => Ok(false),
        }
    }

    /// [`Shared::admit`] for the keys the node `ino` reaches (whatever
    /// name or view it is reached by: see `SecretFs::reached`).
    pub(super) fn admit_ino(
        &self,
        ctx: &OpContext,
        caller: Caller,
        ino: Ino,
        through: Through,
    ) -> crate::error::Result<bool> {
        if self.access.is_none() {
            return Ok(false);
        }
        self.admit(caller, &self.core.reached(ctx, ino, through)?)
    }

    /// [`Shared::admit`] for a name in a directory.
    pub(super) fn admit_name(
        &self,
        caller: Caller,
        dir: Ino,
        name: &OsStr,
    ) -> crate::error::Result<bool> {
        if self.access.is_none() {
            return Ok(false);
        }
        let paths: Vec<String> = name
            .to_str()
            .and_then(|n| self.core.reached_by_name(dir, n))
            .into_iter()
            .collect();
        self.admit(caller, &paths)
    }
}
