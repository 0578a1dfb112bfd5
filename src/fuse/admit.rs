//! `--allow` rules at the FUSE boundary: the adapter gathers what the
//! request and `/proc` say of the caller, and `crate::access` decides.
//! A refusal is logged here, once, with the caller's executable, and
//! becomes `EACCES`; the audit record is written by the operation that
//! asked, as for every other outcome.

use std::ffi::OsStr;

use super::Shared;
use crate::audit::Caller;
use crate::error::Error;
use crate::fs::inode::Ino;
use crate::fs::shows::Through;
use crate::fs::OpContext;

impl Shared {
    /// With `--allow` rules, whether `caller` may open or change a file
    /// showing `paths`: `Ok(true)` when a rule covers it and lets the
    /// caller in, `Ok(false)` when no rule covers it, `Err(NotAllowed)`
    /// (EACCES) otherwise, logged here with the caller's executable.
    pub(super) fn admit(&self, caller: Caller, paths: &[String]) -> crate::error::Result<bool> {
        let Some(access) = &self.access else {
            return Ok(false);
        };
        if paths.is_empty() {
            return Ok(false);
        }
        let mut facts =
            crate::access::Caller::new(caller.tid, caller.uid, caller.gid, &access.digests);
        match access.rules.decide(paths, &mut facts) {
            crate::access::Decision::Uncovered => Ok(false),
            crate::access::Decision::Allowed => Ok(true),
            crate::access::Decision::Denied { path } => {
                let exe = facts
                    .exe_name()
                    .map_or_else(|| "?".into(), |p| p.display().to_string());
                tracing::warn!(
                    path = %path,
                    uid = caller.uid,
                    gid = caller.gid,
                    tid = caller.tid,
                    exe = %exe,
                    "refused by the --allow rules"
                );
                Err(Error::NotAllowed(format!(
                    "no rule covering {path} lets in uid {} running {exe}",
                    caller.uid
                )))
            }
        }
    }

    /// Whether deciding an open of a file showing `paths` may need an
    /// executable's digest (a covering rule has `@sha256`).
    pub(super) fn may_hash(&self, paths: &[String]) -> bool {
        self.access
            .as_ref()
            .is_some_and(|a| a.rules.needs_digest(paths))
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
