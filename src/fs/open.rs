//! Opening a file as the kernel asks: whether the open may skip the
//! daemon altogether ("no open"), whether the caller is admitted by the
//! `--allow` rules, and what the kernel is told of its page cache for the
//! handle (decided by [`PageCache::of`], `fs/cache/kernel.rs`). The
//! adapter only translates an [`Opened`] into FUSE's flags.
//!
//! The rules are the core's (given to the builder, `Builder::access`):
//! every admission is decided here, of an open ([`SecretFs::open_for`])
//! and of a change ([`SecretFs::admit`], [`SecretFs::admit_name`], which
//! the adapter asks before the change), and a refusal is logged here once.

use std::ffi::OsStr;

use crate::access::{Access, Decision};
use crate::audit::Caller;
use crate::error::{Error, Result};
pub use crate::fs::cache::PageCache;
use crate::fs::handle::Fh;
use crate::fs::inode::Ino;
use crate::fs::shows::Through;
use crate::fs::{OpContext, SecretFs};

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
    /// Opens `ino` with the open(2) `flags` for the caller of `ctx`. With
    /// a context that may not wait, what needs a store thread fails with
    /// [`Error::WouldBlock`] and no handle made: the same open is then
    /// made again with one that may. A write buffer or an executable to
    /// hash says so before admission; a read the cache cannot answer
    /// after it, and is admitted again on the store thread (a refusal
    /// ends the open, so none is logged twice).
    pub fn open_for(&self, ctx: &OpContext, ino: Ino, flags: i32) -> Result<Opened> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let access = self.access.as_ref();
        if !self.opens_recorded && access.is_none() && !write && self.opens_can_skip_daemon(ino) {
            // Never with --allow rules, which must see each open of a
            // covered file, nor with an audit log, which records each.
            return Ok(Opened::NoOpen);
        }
        let truncate = write && flags & libc::O_TRUNC != 0;
        let paths = match access {
            Some(_) => self.reached(ctx, ino, Through::Value)?,
            None => Vec::new(),
        };
        let hashes = access.is_some_and(|a| a.rules.needs_digest(&paths));
        if hashes || write {
            // An executable may have to be hashed, or a write buffer
            // starts from the value (the store may be asked): not on a
            // request thread.
            ctx.may_wait()?;
        }
        let covered = self.admit_paths(ctx, &paths)?;
        let fh = self.open(ctx, ino, write, truncate)?;
        Ok(Opened::Handle {
            fh,
            cache: PageCache::of(covered, write),
        })
    }

    /// Whether every open is recorded (an audit log), so that none skips
    /// the daemon ([`crate::fs::Builder::record_opens`]).
    pub fn records_opens(&self) -> bool {
        self.opens_recorded
    }

    /// Whether the caller of `ctx` may change the node `ino`, by the keys
    /// it reaches `through` its value or its metadata (whatever name or
    /// view it is reached by: see [`SecretFs::reached`]): `Ok(true)` when
    /// a rule covers it and lets the caller in, `Ok(false)` when no rule
    /// covers it (or there are no rules), `Err(NotAllowed)` (EACCES)
    /// otherwise, logged once.
    pub fn admit(&self, ctx: &OpContext, ino: Ino, through: Through) -> Result<bool> {
        if self.access.is_none() {
            return Ok(false);
        }
        self.admit_paths(ctx, &self.reached(ctx, ino, through)?)
    }

    /// [`SecretFs::admit`] for the key a name in a directory would be
    /// (created, renamed to or from, removed).
    pub fn admit_name(&self, ctx: &OpContext, dir: Ino, name: &OsStr) -> Result<bool> {
        if self.access.is_none() {
            return Ok(false);
        }
        let paths: Vec<String> = name
            .to_str()
            .and_then(|n| self.reached_by_name(dir, n))
            .into_iter()
            .collect();
        self.admit_paths(ctx, &paths)
    }

    /// Admission of the caller of `ctx` to a file showing `paths`: the
    /// one place the rules are asked. No caller (the daemon's own work)
    /// is let into no covered file.
    fn admit_paths(&self, ctx: &OpContext, paths: &[String]) -> Result<bool> {
        match (&self.access, ctx.caller()) {
            (Some(access), Some(caller)) => admit(access, caller, paths),
            (Some(_), None) if !paths.is_empty() => {
                Err(Error::NotAllowed("an open or change with no caller".into()))
            }
            _ => Ok(false),
        }
    }
}

/// Whether `caller` may open or change a file showing `paths` under the
/// rules of `access`: `Ok(true)` when a rule covers it and lets the
/// caller in, `Ok(false)` when no rule covers it, `Err(NotAllowed)`
/// (EACCES) otherwise, logged here with the caller's executable.
fn admit(access: &Access, caller: Caller, paths: &[String]) -> Result<bool> {
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
    use crate::fs::Builder;
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
        mounted_with(read_only, |b| b)
    }

    /// A core over two versions of `db`, built as `wire` says.
    fn mounted_with(read_only: bool, wire: impl FnOnce(Builder) -> Builder) -> Arc<SecretFs> {
        let store = Arc::new(MemoryStore::new());
        store.put("db", json!({"PASSWORD": "p1", "USER": "u"}));
        store.put("db", json!({"PASSWORD": "p2", "USER": "u"}));
        let mut config = config(TTL);
        config.read_only = read_only;
        wire(SecretFs::builder(
            store,
            SecretPath::parse(""),
            config,
            ManualClock::new(),
        ))
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
        let ctx = OpContext::cache_only(me());
        let plain = mounted(true);
        let ino = file(&plain, "db", "PASSWORD");
        assert_eq!(
            plain.open_for(&ctx, ino, libc::O_RDONLY).unwrap(),
            Opened::NoOpen
        );
        let recorded = mounted_with(true, Builder::record_opens);
        let ino = file(&recorded, "db", "PASSWORD");
        assert_eq!(
            handle(recorded.open_for(&ctx, ino, libc::O_RDONLY).unwrap()).1,
            KEEP
        );
        let ruled = mounted_with(true, |b| b.access(rules("other/**:uid=0")));
        let ino = file(&ruled, "db", "PASSWORD");
        assert_eq!(
            handle(ruled.open_for(&ctx, ino, libc::O_RDONLY).unwrap()).1,
            KEEP
        );
        // Rules with nothing in them are no rules.
        let empty = mounted_with(true, |b| b.access(Access::default()));
        let ino = file(&empty, "db", "PASSWORD");
        assert_eq!(
            empty.open_for(&ctx, ino, libc::O_RDONLY).unwrap(),
            Opened::NoOpen
        );
        // A change is refused whatever the rules.
        let ctx = OpContext::request(me());
        let ino = file(&plain, "db", "PASSWORD");
        assert!(matches!(
            plain.open_for(&ctx, ino, libc::O_WRONLY),
            Err(Error::ReadOnly)
        ));
    }

    #[test]
    fn a_writable_mount_keeps_read_pages_and_writes_wait_for_a_store_thread() {
        let fs = mounted(false);
        let ino = file(&fs, "db", "PASSWORD");
        let now = OpContext::cache_only(me());
        let (fh, cache) = handle(fs.open_for(&now, ino, libc::O_RDONLY).unwrap());
        assert_eq!(cache, KEEP);
        fs.release(&now, fh);
        // A write buffer is never made on a request thread.
        let flags = libc::O_WRONLY | libc::O_TRUNC;
        assert!(matches!(
            fs.open_for(&now, ino, flags),
            Err(Error::WouldBlock)
        ));
        let later = OpContext::request(me());
        let (fh, cache) = handle(fs.open_for(&later, ino, flags).unwrap());
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
        let templates = |wire: fn(Builder) -> Builder| {
            wire(SecretFs::builder(
                store.clone(),
                SecretPath::parse(""),
                config(TTL),
                ManualClock::new(),
            ))
            .templates(dir.path().to_path_buf())
            .build()
            .0
        };
        let ctx = OpContext::request(me());
        let app = |fs: &SecretFs| fs.lookup(&ctx, ROOT_INO, "app").unwrap().ino;
        let plain = templates(|b| b);
        let opened = plain.open_for(&ctx, app(&plain), libc::O_RDONLY).unwrap();
        assert_eq!(opened, Opened::NoOpen);
        let recorded = templates(Builder::record_opens);
        let (fh, cache) = handle(
            recorded
                .open_for(&ctx, app(&recorded), libc::O_RDONLY)
                .unwrap(),
        );
        assert_eq!(cache, KEEP);
        recorded.release(&ctx, fh);
        // Rules for everything cover no template: it reaches no key.
        let ruled = templates(|b| b.access(rules("**:uid=4294967294")));
        let (fh, cache) = handle(ruled.open_for(&ctx, app(&ruled), libc::O_RDONLY).unwrap());
        assert_eq!(cache, KEEP);
        ruled.release(&ctx, fh);
        assert!(matches!(
            plain.open_for(&ctx, app(&plain), libc::O_WRONLY),
            Err(Error::ReadOnly)
        ));
    }

    #[test]
    fn a_version_view_is_covered_as_its_key_is_and_admitted_callers_bypass_the_page_cache() {
        let admitted = rules(&format!("db/PASSWORD:uid={}", nix_uid()));
        let fs = mounted_with(false, |b| b.access(admitted));
        let ctx = OpContext::request(me());
        let ino = file(&fs, "db@1", "PASSWORD");
        let (fh, cache) = handle(fs.open_for(&ctx, ino, libc::O_RDONLY).unwrap());
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
            handle(fs.open_for(&ctx, user, libc::O_RDONLY).unwrap()).1,
            KEEP
        );
    }

    #[test]
    fn a_change_is_admitted_by_the_same_rules_by_node_and_by_name() {
        let ruled = |text: &str| mounted_with(false, |b| b.access(rules(text)));
        let ctx = OpContext::request(me());
        let mine = ruled(&format!("db/PASSWORD:uid={}", nix_uid()));
        let db = mine.lookup(&ctx, ROOT_INO, "db").unwrap().ino;
        let key = file(&mine, "db", "PASSWORD");
        assert!(mine.admit(&ctx, key, Through::Value).unwrap());
        assert!(mine.admit_name(&ctx, db, OsStr::new("PASSWORD")).unwrap());
        // A name no rule covers, and a name that is no key.
        assert!(!mine.admit_name(&ctx, db, OsStr::new("USER")).unwrap());
        assert!(!mine.admit_name(&ctx, ROOT_INO, OsStr::new("x")).unwrap());
        // The daemon's own work is let into no covered file.
        assert!(matches!(
            mine.admit(&OpContext::own_operation(), key, Through::Value),
            Err(Error::NotAllowed(_))
        ));
        let theirs = ruled("db/PASSWORD:uid=4294967294");
        let db = theirs.lookup(&ctx, ROOT_INO, "db").unwrap().ino;
        let key = file(&theirs, "db", "PASSWORD");
        let refused = theirs.admit(&ctx, key, Through::Metadata);
        assert!(matches!(refused, Err(Error::NotAllowed(_))), "{refused:?}");
        let refused = theirs.admit_name(&ctx, db, OsStr::new("PASSWORD"));
        assert!(matches!(refused, Err(Error::NotAllowed(_))), "{refused:?}");
        // Without rules, nothing is covered.
        let plain = mounted(false);
        let key = file(&plain, "db", "PASSWORD");
        assert!(!plain
            .admit(&OpContext::own_operation(), key, Through::Value)
            .unwrap());
    }

    #[test]
    fn a_refused_caller_gets_eacces_and_no_handle() {
        let refusing = rules("db/PASSWORD:uid=4294967294");
        let fs = mounted_with(false, |b| b.access(refusing).record_opens());
        let ctx = OpContext::cache_only(me());
        for ino in [file(&fs, "db", "PASSWORD"), file(&fs, "db@2", "PASSWORD")] {
            let refused = fs.open_for(&ctx, ino, libc::O_RDONLY);
            let Err(e @ Error::NotAllowed(_)) = refused else {
                panic!("not refused: {refused:?}");
            };
            assert_eq!(e.errno(), libc::EACCES);
        }
        // A writer is refused too, once on a store thread.
        let later = OpContext::request(me());
        let ino = file(&fs, "db", "PASSWORD");
        assert!(matches!(
            fs.open_for(&later, ino, libc::O_RDWR),
            Err(Error::NotAllowed(_))
        ));
        assert!(!fs.writes_through(Fh(1)));
    }
}
