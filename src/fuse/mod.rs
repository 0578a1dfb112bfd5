//! The `fuser` adapter: unpacks each request, calls the core, replies.
//! Errors are logged here, once, with the operation, inode and path.
//! Mounting, unmounting and the notifier thread are in `session`; this
//! folder is the only place that knows `fuser`.
//!
//! Request threads never wait on the store: reads (lookup, getattr, open,
//! read, opendir) are answered on the request thread when the cache can
//! answer them, and everything that needs the store (those reads on a
//! miss, every change, directory listings and extended attributes) runs on
//! the store threads of `pool`, which reply when done.

pub mod device;
mod pool;
mod session;

pub use session::{mount, MountSettings, Mounted};

use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::audit::{AuditLog, Caller, Op, Outcome, Process, Record};
use crate::error::Error;
use crate::fs::handle::Fh;
use crate::fs::inode::Ino;
use crate::fs::shows::Through;
use crate::fs::{Attr, Creating, DirEntry, DirReplier, OpContext, Opened, PageCache, SecretFs};
use crate::metrics::Meter;
use pool::Pool;

/// How many threads may wait on the store at once: requests beyond that
/// queue for them (the store's own deadline bounds each wait).
const STORE_THREADS: usize = 16;

/// What request threads and store threads share.
struct Shared {
    core: Arc<SecretFs>,
    audit: Option<AuditLog>,
}

/// The FUSE face of a [`SecretFs`].
pub struct FuseAdapter {
    shared: Arc<Shared>,
    pool: Pool,
    /// Where each request is counted (`--metrics`).
    meter: Meter,
    /// Told when the session ends (`destroy`): unmounted, from outside or not.
    ended: Option<Arc<tokio::sync::Notify>>,
}

impl FuseAdapter {
    /// Wraps the core; with an audit log, every open of a file and every
    /// change is recorded, with its outcome (the core must then have been
    /// built to record opens: `Builder::record_opens`); each request is
    /// counted with `meter`.
    pub fn new(core: Arc<SecretFs>, audit: Option<AuditLog>, meter: Meter) -> Self {
        // An open that skipped the daemon could not be recorded.
        assert!(
            audit.is_none() || core.records_opens(),
            "an audit log over a core that lets opens skip the daemon"
        );
        FuseAdapter {
            shared: Arc::new(Shared { core, audit }),
            pool: Pool::new(STORE_THREADS),
            meter,
            ended: None,
        }
    }

    /// Tells `ended` when the session ends, so that nothing has to poll
    /// for an unmount made from outside.
    pub fn with_ended(mut self, ended: Arc<tokio::sync::Notify>) -> Self {
        self.ended = Some(ended);
        self
    }

    /// Runs `job` on a store thread, as one operation of `caller`'s: all
    /// the store requests it makes share one deadline, from when it starts.
    fn later(&self, caller: Caller, job: impl FnOnce(&Shared, &OpContext) + Send + 'static) {
        let shared = self.shared.clone();
        self.pool
            .run(move || job(&shared, &OpContext::request(caller)));
    }

    /// Answers with `op` on this thread if the cache can (a context that
    /// may not wait on the store); else on a store thread. `send` replies
    /// either way.
    fn now_or_later<T, R>(
        &self,
        caller: Caller,
        reply: R,
        op: impl Fn(&Shared, &OpContext) -> crate::error::Result<T> + Send + 'static,
        send: impl FnOnce(&Shared, R, crate::error::Result<T>) + Send + 'static,
    ) where
        R: Send + 'static,
        T: 'static,
    {
        let now = OpContext::cache_only(caller);
        match op(&self.shared, &now) {
            Err(Error::WouldBlock) => self.later(caller, move |s, ctx| {
                let result = op(s, ctx);
                send(s, reply, result);
            }),
            result => send(&self.shared, reply, result),
        }
    }

    /// A read the cache may answer: `call` on this thread if it can, else
    /// on a store thread; the reply is its result.
    fn cached<T: 'static, R: Answer<T>>(
        &self,
        caller: Caller,
        at: At,
        reply: R,
        call: impl Fn(&Shared, &OpContext) -> crate::error::Result<T> + Send + 'static,
    ) {
        let at = at.by(caller);
        self.now_or_later(caller, reply, call, move |s, reply, result| {
            send(s, &at, reply, result)
        });
    }

    /// An operation that may wait on the store: `call` on a store thread.
    fn stored<T: 'static, R: Answer<T>>(
        &self,
        caller: Caller,
        at: At,
        reply: R,
        call: impl FnOnce(&Shared, &OpContext) -> crate::error::Result<T> + Send + 'static,
    ) {
        let at = at.by(caller);
        self.later(caller, move |s, ctx| {
            let result = call(s, ctx);
            send(s, &at, reply, result);
        });
    }

    /// A change, on a store thread: refused before `call` reaches the
    /// store while the audit log cannot record, and recorded as `op` with
    /// its outcome (a change that cannot be recorded fails).
    fn change<T: 'static, R: Answer<T>>(
        &self,
        caller: Caller,
        op: Op,
        at: At,
        reply: R,
        call: impl FnOnce(&Shared, &OpContext) -> crate::error::Result<T> + Send + 'static,
    ) {
        let at = at.by(caller);
        self.later(caller, move |s, ctx| {
            let result = s.audit_ready().and_then(|()| call(s, ctx));
            let result = s.audit(op, caller, &result, |s| at.paths(s)).and(result);
            send(s, &at, reply, result);
        });
    }

    /// A READDIR or READDIRPLUS, filled by the core on a store thread.
    fn list<R: Listing>(&self, caller: Caller, at: At, fh: Fh, offset: u64, reply: R)
    where
        for<'a> Entries<'a, R>: DirReplier,
    {
        let at = at.by(caller);
        self.later(caller, move |s, ctx| {
            let mut out = Entries {
                shared: s,
                op: at.op,
                reply,
            };
            match s.core.readdir(ctx, fh, offset, R::PLUS, &mut out) {
                Ok(()) => out.reply.done(),
                Err(e) => out.reply.error(at.fail(s, &e)),
            }
        });
    }
}

/// An operation's prologue on the request thread: counts it with the
/// adapter's meter and enters its span, named for the operation, with the
/// fields given (the inode, a name or handle where known; never a value).
macro_rules! begin {
    ($adapter:ident, $op:literal, $($field:tt)*) => {{
        $adapter.meter.fuse_op($op);
        tracing::debug_span!($op, $($field)*).entered()
    }};
}

/// Who made a request. Only what the request says: the process behind
/// the thread is looked up by the audit log's writer, off this thread.
fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        tid: req.pid(),
    }
}

/// The process (thread group) behind a request's thread, looked up while
/// the caller waits for the reply; the thread itself if `/proc` cannot say.
fn program_of(caller: Caller) -> u32 {
    Process::of(caller.tid).tgid.unwrap_or(caller.tid)
}

impl Shared {
    /// The path of `name` in `parent` (of `parent` itself without a name).
    fn path_of(&self, parent: Ino, name: Option<&OsStr>) -> String {
        let path = self.core.describe(parent);
        match name {
            Some(name) => format!("{}/{}", path.trim_end_matches('/'), name.to_string_lossy()),
            None => path,
        }
    }

    /// With an audit log, records `op` by `caller` and how it ended, and
    /// returns once the record is written: an error when it could not be,
    /// and the operation must then fail (fail closed). `paths` (the path,
    /// and a rename's new path) is only worked out with a log.
    fn audit<T>(
        &self,
        op: Op,
        caller: Caller,
        result: &crate::error::Result<T>,
        paths: impl FnOnce(&Self) -> (String, Option<String>),
    ) -> crate::error::Result<()> {
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        let (path, new_path) = paths(self);
        // The caller waits for the reply: its process is looked up (by
        // `record`) before it can exit; with the executable when refused.
        let process = match result {
            Err(Error::NotAllowed(_)) => Some(Process::with_exe(caller.tid)),
            _ => None,
        };
        let outcome = match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Failed {
                errno: e.errno(),
                reason: e.to_string(),
            },
        };
        let recorded = audit.record(Record {
            time: SystemTime::now(),
            op,
            path: path.clone(),
            new_path,
            caller,
            outcome,
            process,
        });
        // Opens and creates hand out no handle unrecorded; a change the
        // store has made cannot be taken back: its caller is told EIO.
        let made = result.is_ok() && !matches!(op, Op::OpenRead | Op::OpenWrite | Op::Create);
        if let (Err(e), true) = (&recorded, made) {
            tracing::error!(op = op.name(), path = %path, error = %e, "a change was made and could not be recorded");
        }
        recorded
    }

    /// Before a change: an error while the audit log cannot record, so
    /// that the change is refused before it reaches the store.
    fn audit_ready(&self) -> crate::error::Result<()> {
        self.audit.as_ref().map_or(Ok(()), AuditLog::ready)
    }

    /// The mount's status (`user.secretfs.status` of the root) with the
    /// audit log's part added: a log that cannot record makes the mount
    /// unhealthy. Any other attribute as it is.
    fn with_audit_status(&self, ino: Ino, name: &str, bytes: Vec<u8>) -> Vec<u8> {
        let Some(audit) = &self.audit else {
            return bytes;
        };
        if ino != crate::fs::inode::ROOT_INO || name != crate::fs::xattr::STATUS_XATTR {
            return bytes;
        }
        let Ok(serde_json::Value::Object(mut status)) = serde_json::from_slice(&bytes) else {
            return bytes;
        };
        let audit = audit.status();
        if audit["recording"] == false {
            status.insert("healthy".into(), false.into());
        }
        status.insert("audit".into(), audit);
        serde_json::Value::Object(status).to_string().into_bytes()
    }

    /// Logs a failed request once and turns it into its errno.
    fn fail(
        &self,
        op: &'static str,
        ino: Ino,
        name: Option<&OsStr>,
        e: &Error,
        caller: Option<Caller>,
    ) -> Errno {
        let path = self.path_of(ino, name);
        let errno = e.errno();
        if e.is_expected() {
            tracing::debug!(op, ino = ino.0, path = %path, error = %e, "request failed");
            return Errno::from_i32(errno);
        }
        // A refusal (the store's policy) names who asked: the process
        // behind the calling thread, looked up while it waits.
        match caller.filter(|_| errno == libc::EACCES) {
            Some(caller) => {
                let process = Process::with_exe(caller.tid);
                let exe = process.exe.as_deref().unwrap_or("?");
                let pid = process.tgid.unwrap_or(caller.tid);
                tracing::warn!(op, ino = ino.0, path = %path, pid, uid = caller.uid, exe = %exe, error = %e, "request failed");
            }
            None => tracing::warn!(op, ino = ino.0, path = %path, error = %e, "request failed"),
        }
        self.core.record_error(format!("{op} {path}: {e}"));
        Errno::from_i32(errno)
    }
}

fn to_file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: if a.is_dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: a.perm,
        nlink: if a.is_dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

fn file_type(is_dir: bool) -> FileType {
    if is_dir {
        FileType::Directory
    } else {
        FileType::RegularFile
    }
}

/// A READDIR or READDIRPLUS reply being filled by the core.
struct Entries<'a, R> {
    shared: &'a Shared,
    op: &'static str,
    reply: R,
}

impl<R> Entries<'_, R> {
    fn log_skipped(&self, dir: Ino, name: &str, error: &Error) {
        self.shared
            .fail(self.op, dir, Some(OsStr::new(name)), error, None);
    }
}

/// What an operation is about: its name and node (and the name in that
/// directory), for its span, its error log and its audit record.
struct At {
    op: &'static str,
    ino: Ino,
    name: Option<OsString>,
    /// Where a rename goes.
    to: Option<(Ino, OsString)>,
    /// Who asked, once known (a refusal's log line names them).
    caller: Option<Caller>,
}

impl At {
    fn ino(op: &'static str, ino: Ino) -> At {
        At {
            op,
            ino,
            name: None,
            to: None,
            caller: None,
        }
    }

    /// Asked by `caller`.
    fn by(self, caller: Caller) -> At {
        At {
            caller: Some(caller),
            ..self
        }
    }

    fn name(op: &'static str, dir: Ino, name: &OsStr) -> At {
        At {
            name: Some(name.to_os_string()),
            ..At::ino(op, dir)
        }
    }

    /// The paths an audit record names.
    fn paths(&self, s: &Shared) -> (String, Option<String>) {
        let to = self.to.as_ref();
        (
            s.path_of(self.ino, self.name.as_deref()),
            to.map(|(dir, name)| s.path_of(*dir, Some(name))),
        )
    }

    /// Logs a failure once and turns it into its errno.
    fn fail(&self, s: &Shared, e: &Error) -> Errno {
        s.fail(self.op, self.ino, self.name.as_deref(), e, self.caller)
    }
}

/// A FUSE reply that answers with a `T` from the core.
trait Answer<T>: Send + 'static {
    fn answer(self, value: T);
    fn error(self, errno: Errno);
}

/// Replies with `result`: its value, or its error's errno (logged once).
fn send<T, R: Answer<T>>(s: &Shared, at: &At, reply: R, result: crate::error::Result<T>) {
    match result {
        Ok(value) => reply.answer(value),
        Err(e) => reply.error(at.fail(s, &e)),
    }
}

impl Answer<()> for ReplyEmpty {
    fn answer(self, (): ()) {
        self.ok();
    }
    fn error(self, errno: Errno) {
        ReplyEmpty::error(self, errno);
    }
}

/// A LOOKUP or MKDIR.
impl Answer<Attr> for ReplyEntry {
    fn answer(self, attr: Attr) {
        let ttl = &attr.valid_for;
        self.entry_with_ttls(ttl, ttl, &to_file_attr(&attr), Generation(0));
    }
    fn error(self, errno: Errno) {
        ReplyEntry::error(self, errno);
    }
}

impl Answer<Attr> for ReplyAttr {
    fn answer(self, attr: Attr) {
        self.attr(&attr.valid_for, &to_file_attr(&attr));
    }
    fn error(self, errno: Errno) {
        ReplyAttr::error(self, errno);
    }
}

/// An OPENDIR.
impl Answer<Fh> for ReplyOpen {
    fn answer(self, fh: Fh) {
        self.opened(FileHandle(fh.0), FopenFlags::empty());
    }
    fn error(self, errno: Errno) {
        ReplyOpen::error(self, errno);
    }
}

/// A getxattr or listxattr, with the size of the caller's buffer.
struct Xattr(ReplyXattr, u32);

impl Answer<Vec<u8>> for Xattr {
    fn answer(self, bytes: Vec<u8>) {
        reply_xattr(self.0, self.1, &bytes);
    }
    fn error(self, errno: Errno) {
        self.0.error(errno);
    }
}

/// What the kernel is told of an open handle's pages.
fn fopen_flags(cache: PageCache) -> FopenFlags {
    let mut flags = FopenFlags::empty();
    if cache.keep_cache {
        flags |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if cache.direct_io {
        flags |= FopenFlags::FOPEN_DIRECT_IO;
    }
    if cache.no_flush {
        flags |= FopenFlags::FOPEN_NOFLUSH;
    }
    flags
}

/// A READDIR or READDIRPLUS reply.
trait Listing: Send + 'static {
    /// Whether entries come with their attributes.
    const PLUS: bool;
    fn done(self);
    fn error(self, errno: Errno);
}

impl Listing for ReplyDirectory {
    const PLUS: bool = false;
    fn done(self) {
        self.ok();
    }
    fn error(self, errno: Errno) {
        ReplyDirectory::error(self, errno);
    }
}

impl Listing for ReplyDirectoryPlus {
    const PLUS: bool = true;
    fn done(self) {
        self.ok();
    }
    fn error(self, errno: Errno) {
        ReplyDirectoryPlus::error(self, errno);
    }
}

impl DirReplier for Entries<'_, ReplyDirectory> {
    fn add(&mut self, e: DirEntry<'_>) -> bool {
        // fuser's `add` says whether the buffer was full.
        !self
            .reply
            .add(INodeNo(e.ino.0), e.offset, file_type(e.is_dir), e.name)
    }

    fn skipped(&mut self, dir: Ino, name: &str, error: &Error) {
        self.log_skipped(dir, name, error);
    }
}

impl DirReplier for Entries<'_, ReplyDirectoryPlus> {
    fn add(&mut self, e: DirEntry<'_>) -> bool {
        let Some(attr) = e.attr else {
            // The core gives attributes to every READDIRPLUS entry.
            return false;
        };
        !self.reply.add(
            INodeNo(e.ino.0),
            e.offset,
            e.name,
            &attr.valid_for,
            &to_file_attr(attr),
            Generation(0),
        )
    }

    fn skipped(&mut self, dir: Ino, name: &str, error: &Error) {
        self.log_skipped(dir, name, error);
    }
}

/// Answers a getxattr or listxattr: the size alone when asked with size 0,
/// ERANGE when the caller's buffer is too small.
fn reply_xattr(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        reply.size(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    } else if bytes.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(bytes);
    }
}

impl Filesystem for FuseAdapter {
    fn destroy(&mut self) {
        if let Some(ended) = &self.ended {
            // Kept for the waiter if it is not waiting yet.
            ended.notify_one();
        }
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // READDIRPLUS saves one LOOKUP per entry on `ls -l`; ATOMIC_O_TRUNC
        // brings O_TRUNC with the open instead of a separate truncate.
        // Older kernels may refuse either; both have fallbacks.
        // AUTO_INVAL_DATA: on a read, the kernel refreshes expired
        // attributes and drops its cached pages when size or mtime changed:
        // that bounds a page-cached value's age by the TTL.
        // NO_OPEN_SUPPORT: on read-only mounts, opens need not reach us.
        for wanted in [
            InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_NO_OPEN_SUPPORT,
        ] {
            if let Err(missing) = config.add_capabilities(wanted) {
                tracing::debug!(?missing, "kernel lacks a capability");
            }
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _span = begin!(self, "lookup", ino = parent.0, ?name);
        let Some(looked_up) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::ENOENT);
        };
        let at = At::name("lookup", Ino(parent.0), name);
        let parent = at.ino;
        self.cached(caller(req), at, reply, move |s, ctx| {
            s.core.lookup(ctx, parent, &looked_up)
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.meter.fuse_op("forget");
        self.shared.core.forget(Ino(ino.0), nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _span = begin!(self, "getattr", ino = ino.0);
        let ino = Ino(ino.0);
        let at = At::ino("getattr", ino);
        self.cached(caller(req), at, reply, move |s, ctx| {
            s.core.getattr(ctx, ino)
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _span = begin!(self, "open", ino = ino.0);
        let (ino, caller) = (Ino(ino.0), caller(req));
        // What to do, and what to tell the kernel, is the core's decision.
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let op = if write { Op::OpenWrite } else { Op::OpenRead };
        let opened = move |s: &Shared, ctx: &OpContext| s.core.open_for(ctx, ino, flags.0);
        let send = move |s: &Shared, reply: ReplyOpen, result: crate::error::Result<Opened>| {
            if let Ok(Opened::NoOpen) = result {
                // No audit log and no rules: nothing to record.
                return reply.error(Errno::ENOSYS);
            }
            let recorded = s.audit(op, caller, &result, |s| (s.path_of(ino, None), None));
            if let (Err(_), Ok(Opened::Handle { fh, .. })) = (&recorded, &result) {
                // Unrecorded, the handle is never handed out.
                // A discarded buffer commits nothing.
                s.core.discard(&OpContext::request(caller), *fh);
            }
            match recorded.and(result) {
                Ok(Opened::Handle { fh, cache }) => {
                    reply.opened(FileHandle(fh.0), fopen_flags(cache))
                }
                Ok(Opened::NoOpen) => reply.error(Errno::ENOSYS),
                Err(e) => reply.error(s.fail("open", ino, None, &e, Some(caller))),
            }
        };
        self.now_or_later(caller, reply, opened, send);
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _span = begin!(self, "read", ino = ino.0, fh = fh.0);
        let (ino, fh) = (Ino(ino.0), Fh(fh.0));
        // The reply is sent inside the call so the bytes are never copied
        // again; it is gone once sent.
        let read = move |s: &Shared, ctx: &OpContext, reply: &mut Option<ReplyData>| {
            let send = |bytes: &[u8]| {
                if let Some(r) = reply.take() {
                    r.data(bytes);
                }
            };
            if fh.0 == 0 {
                s.core.read_ino(ctx, ino, offset, size, send)
            } else {
                s.core.read_handle(ctx, fh, offset, size, send)
            }
        };
        let caller = caller(req);
        let finish =
            move |s: &Shared, mut reply: Option<ReplyData>, result: crate::error::Result<()>| {
                if let (Err(e), Some(r)) = (result, reply.take()) {
                    r.error(s.fail("read", ino, None, &e, Some(caller)));
                }
            };
        let mut reply = Some(reply);
        match read(&self.shared, &OpContext::cache_only(caller), &mut reply) {
            Err(Error::WouldBlock) => self.later(caller, move |s, ctx| {
                let result = read(s, ctx, &mut reply);
                finish(s, reply, result);
            }),
            result => finish(&self.shared, reply, result),
        }
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _span = begin!(self, "release", ino = ino.0, fh = fh.0);
        let (fh, caller) = (Fh(fh.0), caller(req));
        if !self.shared.core.writes_through(fh) {
            // A read handle: nothing to commit, nothing to wait for (a
            // context that asks no clock).
            self.shared.core.release(&OpContext::cache_only(caller), fh);
            return reply.ok();
        }
        // The last close of a written file may commit (a change made
        // without writing): the store may be asked.
        self.later(caller, move |s, ctx| {
            s.core.release(ctx, fh);
            reply.ok();
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _span = begin!(self, "flush", ino = ino.0, fh = fh.0);
        if self.shared.core.is_read_only() {
            // Nothing to commit, ever: ENOSYS once and the kernel stops sending FLUSH.
            return reply.error(Errno::ENOSYS);
        }
        let at = At::ino("flush", Ino(ino.0));
        let fh = Fh(fh.0);
        self.change(caller(req), Op::Flush, at, reply, move |s, ctx| {
            s.core.flush(ctx, fh)
        });
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _span = begin!(self, "fsync", ino = ino.0, fh = fh.0);
        let at = At::ino("fsync", Ino(ino.0));
        let fh = Fh(fh.0);
        self.change(caller(req), Op::Fsync, at, reply, move |s, ctx| {
            s.core.fsync(ctx, fh)
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _span = begin!(self, "fsyncdir", ino = ino.0);
        // Directory changes reach the store when they are made.
        reply.ok();
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _span = begin!(self, "write", ino = ino.0, fh = fh.0);
        // Into the write buffer: the store is not asked.
        match self.shared.core.write_handle(Fh(fh.0), offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(self.shared.fail("write", Ino(ino.0), None, &e, None)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _span = begin!(self, "setattr", ino = ino.0);
        let (at, caller) = (At::ino("setattr", Ino(ino.0)), caller(req));
        let (ino, fh) = (at.ino, fh.map(|fh| Fh(fh.0)));
        let call = move |s: &Shared, ctx: &OpContext| {
            if size.is_some() {
                // A truncation changes the value: covered files need a rule.
                s.core.admit(ctx, ino, Through::Value)?;
            }
            s.core.setattr(ctx, ino, fh, size, uid, gid)
        };
        // A truncation or a change of owner: times and modes change nothing.
        if size.is_some() || uid.is_some() || gid.is_some() {
            self.change(caller, Op::Setattr, at, reply, call);
        } else {
            self.stored(caller, at, reply, call);
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _span = begin!(self, "create", ino = parent.0, ?name);
        let caller = caller(req);
        let at = At::name("create", Ino(parent.0), name).by(caller);
        // O_EXCL is how tools create their temporary files (see
        // fs::names); what they leave waits for their process.
        let exclusive = flags & libc::O_EXCL != 0;
        self.later(caller, move |s, ctx| {
            let (parent, name) = (at.ino, at.name.as_deref().unwrap_or_default());
            let admitted = s.core.admit_name(ctx, parent, name);
            let covered = matches!(admitted, Ok(true));
            let how = Creating {
                exclusive,
                caller: Some(program_of(caller)),
            };
            let result = s
                .audit_ready()
                .and(admitted)
                .and_then(|_| match name.to_str() {
                    Some(n) => s.core.create_with(ctx, parent, n, how),
                    None => Err(Error::NotUtf8),
                });
            let recorded = s.audit(Op::Create, caller, &result, |s| at.paths(s));
            if let (Err(_), Ok((_, fh))) = (&recorded, &result) {
                // Unrecorded, the new file is dropped, never committed.
                // A discarded buffer commits nothing.
                s.core.discard(&OpContext::request(caller), *fh);
            }
            match recorded.and(result) {
                Ok((attr, fh)) => reply.created(
                    &attr.valid_for,
                    &to_file_attr(&attr),
                    Generation(0),
                    FileHandle(fh.0),
                    // Open for writing: the same decision as any open.
                    fopen_flags(PageCache::of(covered, true)),
                ),
                Err(e) => reply.error(at.fail(s, &e)),
            }
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        let _span = begin!(self, "fallocate", ino = ino.0);
        let at = At::ino("fallocate", Ino(ino.0));
        send(&self.shared, &at, reply, self.shared.core.fallocate(at.ino));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let _span = begin!(self, "mkdir", ino = parent.0, ?name);
        let (at, name) = (At::name("mkdir", Ino(parent.0), name), name.to_os_string());
        let parent = at.ino;
        self.change(
            caller(req),
            Op::Mkdir,
            at,
            reply,
            move |s, ctx| match name.to_str() {
                Some(n) => s.core.mkdir(ctx, parent, n),
                None => Err(Error::NotUtf8),
            },
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = begin!(self, "unlink", ino = parent.0, ?name);
        let (at, name) = (At::name("unlink", Ino(parent.0), name), name.to_os_string());
        let (parent, caller) = (at.ino, caller(req));
        self.change(caller, Op::Unlink, at, reply, move |s, ctx| {
            s.core.admit_name(ctx, parent, &name)?;
            match name.to_str() {
                Some(n) => s.core.unlink(ctx, parent, n),
                None => Err(Error::NotFound),
            }
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = begin!(self, "rmdir", ino = parent.0, ?name);
        let (at, name) = (At::name("rmdir", Ino(parent.0), name), name.to_os_string());
        let parent = at.ino;
        self.change(
            caller(req),
            Op::Rmdir,
            at,
            reply,
            move |s, ctx| match name.to_str() {
                Some(n) => s.core.rmdir(ctx, parent, n),
                None => Err(Error::NotFound),
            },
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _span = begin!(self, "rename", ino = parent.0, ?name, ?newname);
        let at = At {
            to: Some((Ino(newparent.0), newname.to_os_string())),
            ..At::name("rename", Ino(parent.0), name)
        };
        let (name, newname) = (name.to_os_string(), newname.to_os_string());
        let (parent, newparent, caller) = (at.ino, Ino(newparent.0), caller(req));
        self.change(caller, Op::Rename, at, reply, move |s, ctx| {
            if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
                return Err(Error::Invalid(
                    "RENAME_EXCHANGE and RENAME_WHITEOUT are not supported".into(),
                ));
            }
            // A covered key renamed out of its rule's reach, or another
            // file renamed over a covered one.
            s.core.admit_name(ctx, parent, &name)?;
            s.core.admit_name(ctx, newparent, &newname)?;
            let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            match (name.to_str(), newname.to_str()) {
                (Some(n), Some(nn)) => s.core.rename(ctx, parent, n, newparent, nn, noreplace),
                (None, _) => Err(Error::NotFound),
                (_, None) => Err(Error::NotUtf8),
            }
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _span = begin!(self, "getxattr", ino = ino.0, ?name);
        let ino = Ino(ino.0);
        // `ls -l` asks every file for `security.selinux` and POSIX ACLs:
        // names not ours are answered here, without a store thread.
        let Some(ours) = name.to_str().filter(|n| crate::fs::xattr::is_ours(n)) else {
            let e = name
                .to_str()
                .map_or(Error::NoAttribute, crate::fs::xattr::foreign_xattr);
            // An everyday answer, one per file listed: no path worked out.
            tracing::trace!(ino = ino.0, ?name, error = %e, "getxattr");
            return reply.error(Errno::from_i32(e.errno()));
        };
        // The status attribute asks the store how it is.
        let name = ours.to_string();
        let at = At::name("getxattr", ino, OsStr::new(&name));
        self.stored(caller(req), at, Xattr(reply, size), move |s, ctx| {
            let bytes = s.core.getxattr(ctx, ino, &name)?;
            Ok(s.with_audit_status(ino, &name, bytes))
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _span = begin!(self, "listxattr", ino = ino.0);
        let at = At::ino("listxattr", Ino(ino.0));
        let ino = at.ino;
        // A secret's metadata comes with the secret: the store may be asked.
        self.cached(caller(req), at, Xattr(reply, size), move |s, ctx| {
            // Each name followed by a NUL, as listxattr(2) returns them.
            let mut bytes = Vec::new();
            for name in s.core.listxattr(ctx, ino)? {
                bytes.extend_from_slice(name.as_bytes());
                bytes.push(0);
            }
            Ok(bytes)
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _span = begin!(self, "setxattr", ino = ino.0, ?name);
        let (name, value) = (name.to_os_string(), value.to_vec());
        let (at, caller) = (At::ino("setxattr", Ino(ino.0)), caller(req));
        let ino = at.ino;
        self.change(caller, Op::Setxattr, at, reply, move |s, ctx| {
            // A change of the secret: covered files need a rule.
            s.core.admit(ctx, ino, Through::Metadata)?;
            match name.to_str() {
                Some(n) => s.core.setxattr(ctx, ino, n, &value, flags),
                None => Err(Error::NotSupported("attribute names are UTF-8")),
            }
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = begin!(self, "removexattr", ino = ino.0, ?name);
        let name = name.to_os_string();
        let (at, caller) = (At::ino("removexattr", Ino(ino.0)), caller(req));
        let ino = at.ino;
        self.change(caller, Op::Removexattr, at, reply, move |s, ctx| {
            s.core.admit(ctx, ino, Through::Metadata)?;
            match name.to_str() {
                Some(n) => s.core.removexattr(ctx, ino, n),
                None => Err(Error::NoAttribute),
            }
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _span = begin!(self, "opendir", ino = ino.0);
        let at = At::ino("opendir", Ino(ino.0));
        let ino = at.ino;
        self.cached(caller(req), at, reply, move |s, ctx| {
            s.core.opendir(ctx, ino)
        });
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let _span = begin!(self, "readdir", ino = ino.0, fh = fh.0);
        // Attributes of entries may need the store.
        self.list(
            caller(req),
            At::ino("readdir", Ino(ino.0)),
            Fh(fh.0),
            offset,
            reply,
        );
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let _span = begin!(self, "readdirplus", ino = ino.0, fh = fh.0);
        let at = At::ino("readdirplus", Ino(ino.0));
        self.list(caller(req), at, Fh(fh.0), offset, reply);
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _span = begin!(self, "releasedir", ino = ino.0, fh = fh.0);
        // A directory handle holds nothing to commit.
        self.shared
            .core
            .release(&OpContext::cache_only(caller(req)), Fh(fh.0));
        reply.ok();
    }
}
