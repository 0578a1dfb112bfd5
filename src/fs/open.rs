//! Opening a file as the kernel asks: whether the open may skip the
//! daemon altogether ("no open"), whether the caller is admitted by the
//! `--allow` rules, and what the kernel is told of its page cache for the
//! handle (decided by [`PageCache::of`], `fs/cache/kernel.rs`). The
//! adapter only translates an [`Opened`] into FUSE's flags.

use crate::access::{Access, Decision};
use crate::audit::Caller;
use crate::error::{Error, Result};
pub use crate::fs::cache::PageCache;
use crate::fs::handle::Fh;
use crate::fs::inode::Ino;
use crate::fs::shows::Through;
use crate::fs::{OpContext, SecretFs};

/// What an open must honour beyond the core's own state: the mount's
/// `--allow` rules, and whether every open is recorded (an audit log).
#[derive(Clone, Copy, Default)]
pub struct Gate<'a> {
    /// Per-process access rules (`--allow`), when there are any.
    pub access: Option<&'a Access>,
    /// Whether every open is recorded, and so must reach the daemon.
    pub recorded: bool,
}

/// What the kernel is told of an open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// "No open" (ENOSYS): the kernel stops sending OPEN (and, with
    /// FLUSH refused, FLUSH) for every file of the mount and keeps pages
    /// across opens; reads arrive without a handle.
    NoOpen,
    /// A handle, and how its pages are cached.
    Handle { fh: Fh, cache: PageCache },
}

impl SecretFs {
    /// Opens `ino` with the open(2) `flags` for the caller of `ctx`, as
    /// `gate` says. With a context that may not wait, what needs a store
    /// thread fails with [`Error::WouldBlock`] and no handle made: the
    /// same open is then made again with one that may. A write buffer or
    /// an executable to hash says so before admission; a read the cache
    /// cannot answer after it, and is admitted again on the store thread
    /// (a refusal ends the open, so none is logged twice).
    pub fn open_for(
        &self,
        ctx: &OpContext,
        gate: Gate<'_>,
        ino: Ino,
        flags: i32,
    ) -> Result<Opened> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if !gate.recorded && gate.access.is_none() && !write && self.opens_can_skip_daemon(ino) {
            // Never with --allow rules, which must see each open of a
            // covered file, nor with an audit log, which records each.
            return Ok(Opened::NoOpen);
        }
        let truncate = write && flags & libc::O_TRUNC != 0;
        let paths = match gate.access {
            Some(_) => self.reached(ctx, ino, Through::Value)?,
            None => Vec::new(),
        };
        let hashes = gate.access.is_some_and(|a| a.rules.needs_digest(&paths));
        if hashes || write {
            // An executable may have to be hashed, or a write buffer
            // starts from the value (the store may be asked): not on a
            // request thread.
            ctx.may_wait()?;
        }
        let covered = match (gate.access, ctx.caller()) {
            (Some(access), Some(caller)) => admit(access, caller, &paths)?,
            (Some(_), None) if !paths.is_empty() => {
                return Err(Error::NotAllowed("an open with no caller".into()))
            }
            _ => false,
        };
        let fh = self.open(ctx, ino, write, truncate)?;
        Ok(Opened::Handle {
            fh,
            cache: PageCache::of(covered, write),
        })
    }
}

/// Whether `caller` may open or change a file showing `paths` under the
/// rules of `access`: `Ok(true)` when a rule covers it and lets the
/// caller in, `Ok(false)` when no rule covers it, `Err(NotAllowed)`
/// (EACCES) otherwise, logged here with the caller's executable.
pub fn admit(access: &Access, caller: Caller, paths: &[String]) -> Result<bool> {
    if paths.is_empty() {
        return Ok(false);
    }
    let mut facts = crate::access::Caller::new(caller.tid, caller.uid, caller.gid, &access.digests);
    match access.rules.decide(paths, &mut facts) {
        Decision::Uncovered => Ok(false),
        Decision::Allowed => Ok(true),
        Decision::Denied { path } => {
            let exe = facts
                .exe_name()
                .map_or_else(|| "?".into(), |p| p.display().to_string());
            // The target refusals were always logged under.
            tracing::warn!(
                target: "secretfs::fuse::admit",
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::access::Rules;
    use crate::fs::clock::ManualClock;
    use crate::fs::inode::ROOT_INO;
    use crate::fs::tests::config;
    use crate::store::memory::MemoryStore;
    use crate::store::SecretPath;

    const TTL: Duration = Duration::from_secs(60);

    fn me() -> Caller {
        Caller {
            uid: nix_uid(),
            gid: 0,
            tid: std::process::id(),
        }
    }

    fn nix_uid() -> u32 {
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    }

    fn mounted(read_only: bool) -> Arc<SecretFs> {
        let store = Arc::new(MemoryStore::new());
        store.put("db", json!({"PASSWORD": "p1", "USER": "u"}));
        store.put("db", json!({"PASSWORD": "p2", "USER": "u"}));
        let mut config = config(TTL);
        config.read_only = read_only;
        SecretFs::builder(store, SecretPath::parse(""), config, ManualClock::new())
            .build()
            .0
    }

    fn file(fs: &SecretFs, dir: &str, name: &str) -> Ino {
        let ctx = OpContext::background();
        let dir = fs.lookup(&ctx, ROOT_INO, dir).unwrap().ino;
        fs.lookup(&ctx, dir, name).unwrap().ino
    }

    fn rules(text: &str) -> Access {
        Access {
            rules: Rules::parse([text]).unwrap(),
            ..Access::default()
        }
    }

    fn handle(opened: Opened) -> (Fh, PageCache) {
        match opened {
            Opened::Handle { fh, cache } => (fh, cache),
            Opened::NoOpen => panic!("a handle was wanted"),
        }
    }

    const KEEP: PageCache = PageCache {
        keep_cache: true,
        direct_io: false,
        no_flush: true,
    };

    #[test]
    fn a_read_only_mount_skips_the_daemon_unless_opens_are_recorded_or_ruled() {
        let fs = mounted(true);
        let ino = file(&fs, "db", "PASSWORD");
        let ctx = OpContext::cache_only(me());
        let plain = Gate::default();
        assert_eq!(
            fs.open_for(&ctx, plain, ino, libc::O_RDONLY).unwrap(),
            Opened::NoOpen
        );
        let recorded = Gate {
            recorded: true,
            ..plain
        };
        assert_eq!(
            handle(fs.open_for(&ctx, recorded, ino, libc::O_RDONLY).unwrap()).1,
            KEEP
        );
        let access = rules("other/**:uid=0");
        let ruled = Gate {
            access: Some(&access),
            ..plain
        };
        assert_eq!(
            handle(fs.open_for(&ctx, ruled, ino, libc::O_RDONLY).unwrap()).1,
            KEEP
        );
        // A change is refused whatever the rules.
        let ctx = OpContext::request(me());
        assert!(matches!(
            fs.open_for(&ctx, plain, ino, libc::O_WRONLY),
            Err(Error::ReadOnly)
        ));
    }

    #[test]
    fn a_writable_mount_keeps_read_pages_and_writes_wait_for_a_store_thread() {
        let fs = mounted(false);
        let ino = file(&fs, "db", "PASSWORD");
        let now = OpContext::cache_only(me());
        let gate = Gate::default();
        let (fh, cache) = handle(fs.open_for(&now, gate, ino, libc::O_RDONLY).unwrap());
        assert_eq!(cache, KEEP);
        fs.release(&now, fh);
        // A write buffer is never made on a request thread.
        let flags = libc::O_WRONLY | libc::O_TRUNC;
        assert!(matches!(
            fs.open_for(&now, gate, ino, flags),
            Err(Error::WouldBlock)
        ));
        let later = OpContext::request(me());
        let (fh, cache) = handle(fs.open_for(&later, gate, ino, flags).unwrap());
        assert_eq!(cache, PageCache::default());
        assert!(fs.writes_through(fh));
        fs.discard(&later, fh);
    }

    #[test]
    fn a_template_skips_the_daemon_and_no_rule_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let text = "P={{ secret(\"db\").PASSWORD }}\n";
        std::fs::write(dir.path().join("app.tmpl"), text).unwrap();
        let store = Arc::new(MemoryStore::new());
        store.put("db", json!({"PASSWORD": "p"}));
        // A mount of templates is read-only whatever its settings say.
        let fs = SecretFs::builder(
            store,
            SecretPath::parse(""),
            config(TTL),
            ManualClock::new(),
        )
        .templates(dir.path().to_path_buf())
        .build()
        .0;
        let ctx = OpContext::request(me());
        let ino = fs.lookup(&ctx, ROOT_INO, "app").unwrap().ino;
        let plain = Gate::default();
        let opened = fs.open_for(&ctx, plain, ino, libc::O_RDONLY).unwrap();
        assert_eq!(opened, Opened::NoOpen);
        let recorded = Gate {
            recorded: true,
            ..plain
        };
        let (fh, cache) = handle(fs.open_for(&ctx, recorded, ino, libc::O_RDONLY).unwrap());
        assert_eq!(cache, KEEP);
        fs.release(&ctx, fh);
        // Rules for everything cover no template: it reaches no key.
        let access = rules("**:uid=4294967294");
        let ruled = Gate {
            access: Some(&access),
            ..plain
        };
        let (fh, cache) = handle(fs.open_for(&ctx, ruled, ino, libc::O_RDONLY).unwrap());
        assert_eq!(cache, KEEP);
        fs.release(&ctx, fh);
        assert!(matches!(
            fs.open_for(&ctx, plain, ino, libc::O_WRONLY),
            Err(Error::ReadOnly)
        ));
    }

    #[test]
    fn a_version_view_is_covered_as_its_key_is_and_admitted_callers_bypass_the_page_cache() {
        let fs = mounted(false);
        let ctx = OpContext::request(me());
        let ino = file(&fs, "db@1", "PASSWORD");
        let admitted = rules(&format!("db/PASSWORD:uid={}", nix_uid()));
        let gate = Gate {
            access: Some(&admitted),
            recorded: false,
        };
        let (fh, cache) = handle(fs.open_for(&ctx, gate, ino, libc::O_RDONLY).unwrap());
        let direct = PageCache {
            keep_cache: false,
            direct_io: true,
            no_flush: true,
        };
        assert_eq!(cache, direct);
        fs.release(&ctx, fh);
        // A key no rule covers keeps its pages.
        let user = file(&fs, "db@1", "USER");
        assert_eq!(
            handle(fs.open_for(&ctx, gate, user, libc::O_RDONLY).unwrap()).1,
            KEEP
        );
    }

    #[test]
    fn a_refused_caller_gets_eacces_and_no_handle() {
        let fs = mounted(false);
        let ctx = OpContext::cache_only(me());
        let refusing = rules("db/PASSWORD:uid=4294967294");
        let gate = Gate {
            access: Some(&refusing),
            recorded: true,
        };
        for ino in [file(&fs, "db", "PASSWORD"), file(&fs, "db@2", "PASSWORD")] {
            let refused = fs.open_for(&ctx, gate, ino, libc::O_RDONLY);
            let Err(e @ Error::NotAllowed(_)) = refused else {
                panic!("not refused: {refused:?}");
            };
            assert_eq!(e.errno(), libc::EACCES);
        }
        // A writer is refused too, once on a store thread.
        let later = OpContext::request(me());
        let ino = file(&fs, "db", "PASSWORD");
        assert!(matches!(
            fs.open_for(&later, gate, ino, libc::O_RDWR),
            Err(Error::NotAllowed(_))
        ));
        assert!(!fs.writes_through(Fh(1)));
    }
}
