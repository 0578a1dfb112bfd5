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

mod admit;
pub mod device;
mod pool;
mod session;

pub use session::{mount, MountSettings, Mounted};

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::access::Access;
use crate::audit::{AuditLog, Caller, Op, Outcome, Process, Record};
use crate::error::Error;
use crate::fs::handle::Fh;
use crate::fs::inode::Ino;
use crate::fs::shows::Through;
use crate::fs::{Attr, Creating, DirEntry, DirReplier, OpContext, SecretFs};
use pool::Pool;

/// How many threads may wait on the store at once: requests beyond that
/// queue for them (the store's own deadline bounds each wait).
const STORE_THREADS: usize = 16;

/// What request threads and store threads share.
struct Shared {
    core: Arc<SecretFs>,
    audit: Option<AuditLog>,
    /// Per-process access rules (`--allow`), when there are any.
    access: Option<Arc<Access>>,
}

/// The FUSE face of a [`SecretFs`].
pub struct FuseAdapter {
    shared: Arc<Shared>,
    pool: Pool,
    /// Told when the session ends (`destroy`): unmounted, from outside or not.
    ended: Option<Arc<tokio::sync::Notify>>,
}

impl FuseAdapter {
    /// Wraps the core; with an audit log, every open of a file and every
    /// change is recorded, with its outcome.
    pub fn new(core: Arc<SecretFs>, audit: Option<AuditLog>) -> Self {
        FuseAdapter {
            shared: Arc::new(Shared {
                core,
                audit,
                access: None,
            }),
            pool: Pool::new(STORE_THREADS),
            ended: None,
        }
    }

    /// Tells `ended` when the session ends, so that nothing has to poll
    /// for an unmount made from outside.
    pub fn with_ended(mut self, ended: Arc<tokio::sync::Notify>) -> Self {
        self.ended = Some(ended);
        self
    }

    /// With `--allow` rules: every open reaches the daemon, and a file a
    /// rule covers opens only for callers a rule lets in (see `Shared::admit`).
    pub fn with_access(mut self, access: Option<Arc<Access>>) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.access = access,
            // Only before the adapter is shared; losing rules silently
            // would open what they close.
            None if access.is_some() => panic!("--allow rules set on an adapter already in use"),
            None => {}
        }
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
        op: impl Fn(&SecretFs, &OpContext) -> crate::error::Result<T> + Send + 'static,
        send: impl FnOnce(&Shared, R, crate::error::Result<T>) + Send + 'static,
    ) where
        R: Send + 'static,
        T: 'static,
    {
        let now = OpContext::cache_only(caller);
        match op(&self.shared.core, &now) {
            Err(Error::WouldBlock) => self.later(caller, move |s, ctx| {
                let result = op(&s.core, ctx);
                send(s, reply, result);
            }),
            result => send(&self.shared, reply, result),
        }
    }
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
    fn fail(&self, op: &'static str, ino: Ino, name: Option<&OsStr>, e: &Error) -> Errno {
        let path = self.path_of(ino, name);
        if e.is_expected() {
            tracing::debug!(op, ino = ino.0, path = %path, error = %e, "request failed");
        } else {
            tracing::warn!(op, ino = ino.0, path = %path, error = %e, "request failed");
            self.core.record_error(format!("{op} {path}: {e}"));
        }
        Errno::from_i32(e.errno())
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
            .fail(self.op, dir, Some(OsStr::new(name)), error);
    }
}

/// Answers a LOOKUP or MKDIR.
fn send_entry(
    s: &Shared,
    op: &'static str,
    (parent, name): (Ino, &OsStr),
    reply: ReplyEntry,
    result: crate::error::Result<Attr>,
) {
    match result {
        Ok(attr) => reply.entry_with_ttls(
            &attr.valid_for,
            &attr.valid_for,
            &to_file_attr(&attr),
            Generation(0),
        ),
        Err(e) => reply.error(s.fail(op, parent, Some(name), &e)),
    }
}

/// Answers a request that returns nothing but its outcome.
fn send_empty(
    s: &Shared,
    op: &'static str,
    (ino, name): (Ino, Option<&OsStr>),
    reply: ReplyEmpty,
    result: crate::error::Result<()>,
) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(s.fail(op, ino, name, &e)),
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
        crate::metrics::record_fuse_op("lookup");
        let caller = caller(req);
        let _span = tracing::debug_span!("lookup", ino = parent.0).entered();
        let Some(name) = name.to_str().map(str::to_string) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let parent = Ino(parent.0);
        let looked_up = name.clone();
        self.now_or_later(
            caller,
            reply,
            move |core, ctx| core.lookup(ctx, parent, &looked_up),
            move |s, reply, result| {
                send_entry(s, "lookup", (parent, OsStr::new(&name)), reply, result)
            },
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        crate::metrics::record_fuse_op("forget");
        self.shared.core.forget(Ino(ino.0), nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        crate::metrics::record_fuse_op("getattr");
        let caller = caller(req);
        let _span = tracing::debug_span!("getattr", ino = ino.0).entered();
        let ino = Ino(ino.0);
        self.now_or_later(
            caller,
            reply,
            move |core, ctx| core.getattr(ctx, ino),
            move |s, reply, result| match result {
                Ok(attr) => reply.attr(&attr.valid_for, &to_file_attr(&attr)),
                Err(e) => reply.error(s.fail("getattr", ino, None, &e)),
            },
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        crate::metrics::record_fuse_op("open");
        let _span = tracing::debug_span!("open", ino = ino.0).entered();
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let core = &self.shared.core;
        let caller = caller(req);
        let op = if write { Op::OpenWrite } else { Op::OpenRead };
        if self.shared.audit.is_none()
            && self.shared.access.is_none()
            && !write
            && core.opens_can_skip_daemon(Ino(ino.0))
        {
            // "No open": the kernel stops sending OPEN (and, with flush
            // refused below, FLUSH) and keeps pages across opens; reads
            // arrive without a handle. It does so for every file of the
            // mount at once: never with --allow rules, which must see
            // each open of a covered file.
            return reply.error(Errno::ENOSYS);
        }
        let truncate = write && flags.0 & libc::O_TRUNC != 0;
        let ino = Ino(ino.0);
        let paths = match &self.shared.access {
            Some(_) => match core.reached(&OpContext::request(caller), ino, Through::Value) {
                Ok(paths) => paths,
                Err(e) => return reply.error(self.shared.fail("open", ino, None, &e)),
            },
            None => Vec::new(),
        };
        // A file a rule covers bypasses the page cache (DIRECT_IO): its
        // bytes are served to admitted handles only, and left in no
        // kernel page another open could reach. Other read-only handles
        // keep the page cache across opens (AUTO_INVAL_DATA drops it when
        // the value changes) and skip FLUSH on close.
        let cache = move |covered: bool| match (covered, write) {
            (true, true) => FopenFlags::FOPEN_DIRECT_IO,
            (true, false) => FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            (false, true) => FopenFlags::empty(),
            (false, false) => FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
        };
        let send = move |s: &Shared, reply: ReplyOpen, result: crate::error::Result<(Fh, bool)>| {
            let recorded = s.audit(op, caller, &result, |s| (s.path_of(ino, None), None));
            if let (Err(_), Ok((fh, _))) = (&recorded, &result) {
                // Unrecorded, the handle is never handed out.
                // A discarded buffer commits nothing.
                s.core.discard(&OpContext::request(caller), *fh);
            }
            match recorded.and(result) {
                Ok((fh, covered)) => reply.opened(FileHandle(fh.0), cache(covered)),
                Err(e) => reply.error(s.fail("open", ino, None, &e)),
            }
        };
        if self.shared.may_hash(&paths) {
            // An executable may have to be hashed: not on a request thread.
            return self.later(caller, move |s, ctx| {
                let result = s.admit(caller, &paths).and_then(|covered| {
                    s.core
                        .open(ctx, ino, write, truncate)
                        .map(|fh| (fh, covered))
                });
                send(s, reply, result);
            });
        }
        let covered = match self.shared.admit(caller, &paths) {
            Ok(covered) => covered,
            Err(e) => return send(&self.shared, reply, Err(e)),
        };
        if write {
            // A write buffer starts from the value: the store may be asked.
            return self.later(caller, move |s, ctx| {
                send(
                    s,
                    reply,
                    s.core
                        .open(ctx, ino, write, truncate)
                        .map(|fh| (fh, covered)),
                )
            });
        }
        self.now_or_later(
            caller,
            reply,
            move |core, ctx| core.open(ctx, ino, false, false).map(|fh| (fh, covered)),
            send,
        );
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
        crate::metrics::record_fuse_op("read");
        let caller = caller(req);
        let _span = tracing::debug_span!("read", ino = ino.0, fh = fh.0).entered();
        let (ino, fh) = (Ino(ino.0), Fh(fh.0));
        // The reply is sent inside the closure so the bytes are never copied again.
        let read = move |core: &SecretFs, ctx: &OpContext, reply: &mut Option<ReplyData>| {
            let send = |bytes: &[u8]| {
                if let Some(r) = reply.take() {
                    r.data(bytes);
                }
            };
            if fh.0 == 0 {
                core.read_ino(ctx, ino, offset, size, send)
            } else {
                core.read_handle(ctx, fh, offset, size, send)
            }
        };
        let mut reply = Some(reply);
        let now = OpContext::cache_only(caller);
        let result = read(&self.shared.core, &now, &mut reply);
        let finish =
            move |s: &Shared, result: crate::error::Result<()>, reply: Option<ReplyData>| {
                if let (Err(e), Some(r)) = (result, reply) {
                    r.error(s.fail("read", ino, None, &e));
                }
            };
        match result {
            Err(Error::WouldBlock) => self.later(caller, move |s, ctx| {
                let result = read(&s.core, ctx, &mut reply);
                finish(s, result, reply);
            }),
            result => finish(&self.shared, result, reply),
        }
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        crate::metrics::record_fuse_op("release");
        let caller = caller(req);
        let fh = Fh(fh.0);
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
        crate::metrics::record_fuse_op("flush");
        let _span = tracing::debug_span!("flush", ino = ino.0, fh = fh.0).entered();
        if self.shared.core.is_read_only() {
            // Nothing to commit, ever: ENOSYS once and the kernel stops sending FLUSH.
            return reply.error(Errno::ENOSYS);
        }
        let (ino, fh, caller) = (Ino(ino.0), Fh(fh.0), caller(req));
        self.later(caller, move |s, ctx| {
            let result = s.audit_ready().and_then(|()| s.core.flush(ctx, fh));
            let result = s
                .audit(Op::Flush, caller, &result, |s| (s.path_of(ino, None), None))
                .and(result);
            send_empty(s, "flush", (ino, None), reply, result);
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
        crate::metrics::record_fuse_op("fsync");
        let _span = tracing::debug_span!("fsync", ino = ino.0, fh = fh.0).entered();
        let (ino, fh, caller) = (Ino(ino.0), Fh(fh.0), caller(req));
        self.later(caller, move |s, ctx| {
            let result = s.audit_ready().and_then(|()| s.core.fsync(ctx, fh));
            let result = s
                .audit(Op::Fsync, caller, &result, |s| (s.path_of(ino, None), None))
                .and(result);
            send_empty(s, "fsync", (ino, None), reply, result);
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        crate::metrics::record_fuse_op("fsyncdir");
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
        crate::metrics::record_fuse_op("write");
        let _span = tracing::debug_span!("write", ino = ino.0, fh = fh.0).entered();
        // Into the write buffer: the store is not asked.
        match self.shared.core.write_handle(Fh(fh.0), offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(self.shared.fail("write", Ino(ino.0), None, &e)),
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
        crate::metrics::record_fuse_op("setattr");
        let _span = tracing::debug_span!("setattr", ino = ino.0).entered();
        let (ino, caller) = (Ino(ino.0), caller(req));
        self.later(caller, move |s, ctx| {
            let fh = fh.map(|fh| Fh(fh.0));
            // A truncation or a change of owner: times and modes change nothing.
            let change = size.is_some() || uid.is_some() || gid.is_some();
            let ready = if change { s.audit_ready() } else { Ok(()) };
            let result = ready.and_then(|()| match size {
                // A truncation changes the value: covered files need a rule.
                Some(_) if s.access.is_some() => s
                    .admit_ino(ctx, caller, ino, Through::Value)
                    .and_then(|_| s.core.setattr(ctx, ino, fh, size, uid, gid)),
                _ => s.core.setattr(ctx, ino, fh, size, uid, gid),
            });
            let result = match change {
                true => s
                    .audit(Op::Setattr, caller, &result, |s| {
                        (s.path_of(ino, None), None)
                    })
                    .and(result),
                false => result,
            };
            match result {
                Ok(attr) => reply.attr(&attr.valid_for, &to_file_attr(&attr)),
                Err(e) => reply.error(s.fail("setattr", ino, None, &e)),
            }
        });
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
        crate::metrics::record_fuse_op("create");
        let _span = tracing::debug_span!("create", ino = parent.0).entered();
        let name = name.to_os_string();
        let parent = Ino(parent.0);
        let caller = caller(req);
        let exclusive = flags & libc::O_EXCL != 0;
        self.later(caller, move |s, ctx| {
            let admitted = s.admit_name(caller, parent, &name);
            let covered = matches!(admitted, Ok(true));
            // O_EXCL is how tools create their temporary files (see
            // fs::names); what they leave waits for their process.
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
            let recorded = s.audit(Op::Create, caller, &result, |s| {
                (s.path_of(parent, Some(&name)), None)
            });
            if let (Err(_), Ok((_, fh))) = (&recorded, &result) {
                // Unrecorded, the new file is dropped, never committed.
                // A discarded buffer commits nothing.
                s.core.discard(&OpContext::request(caller), *fh);
            }
            let result = recorded.and(result);
            let flags = if covered {
                FopenFlags::FOPEN_DIRECT_IO
            } else {
                FopenFlags::empty()
            };
            match result {
                Ok((attr, fh)) => reply.created(
                    &attr.valid_for,
                    &to_file_attr(&attr),
                    Generation(0),
                    FileHandle(fh.0),
                    flags,
                ),
                Err(e) => reply.error(s.fail("create", parent, Some(&name), &e)),
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
        crate::metrics::record_fuse_op("fallocate");
        let _span = tracing::debug_span!("fallocate", ino = ino.0).entered();
        let ino = Ino(ino.0);
        let result = self.shared.core.fallocate(ino);
        send_empty(&self.shared, "fallocate", (ino, None), reply, result);
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
        crate::metrics::record_fuse_op("mkdir");
        let _span = tracing::debug_span!("mkdir", ino = parent.0).entered();
        let name = name.to_os_string();
        let (parent, caller) = (Ino(parent.0), caller(req));
        self.later(caller, move |s, ctx| {
            let result = s.audit_ready().and_then(|()| match name.to_str() {
                Some(n) => s.core.mkdir(ctx, parent, n),
                None => Err(Error::NotUtf8),
            });
            let result = s
                .audit(Op::Mkdir, caller, &result, |s| {
                    (s.path_of(parent, Some(&name)), None)
                })
                .and(result);
            send_entry(s, "mkdir", (parent, &name), reply, result);
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        crate::metrics::record_fuse_op("unlink");
        let _span = tracing::debug_span!("unlink", ino = parent.0).entered();
        let name = name.to_os_string();
        let (parent, caller) = (Ino(parent.0), caller(req));
        self.later(caller, move |s, ctx| {
            let result = s
                .audit_ready()
                .and_then(|()| s.admit_name(caller, parent, &name))
                .and_then(|_| match name.to_str() {
                    Some(n) => s.core.unlink(ctx, parent, n),
                    None => Err(Error::NotFound),
                });
            let result = s
                .audit(Op::Unlink, caller, &result, |s| {
                    (s.path_of(parent, Some(&name)), None)
                })
                .and(result);
            send_empty(s, "unlink", (parent, Some(&name)), reply, result);
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        crate::metrics::record_fuse_op("rmdir");
        let _span = tracing::debug_span!("rmdir", ino = parent.0).entered();
        let name = name.to_os_string();
        let (parent, caller) = (Ino(parent.0), caller(req));
        self.later(caller, move |s, ctx| {
            let result = s.audit_ready().and_then(|()| match name.to_str() {
                Some(n) => s.core.rmdir(ctx, parent, n),
                None => Err(Error::NotFound),
            });
            let result = s
                .audit(Op::Rmdir, caller, &result, |s| {
                    (s.path_of(parent, Some(&name)), None)
                })
                .and(result);
            send_empty(s, "rmdir", (parent, Some(&name)), reply, result);
        });
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
        crate::metrics::record_fuse_op("rename");
        let _span = tracing::debug_span!("rename", ino = parent.0).entered();
        let (name, newname) = (name.to_os_string(), newname.to_os_string());
        let (parent, newparent) = (Ino(parent.0), Ino(newparent.0));
        let caller = caller(req);
        self.later(caller, move |s, ctx| {
            let result =
                if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
                    Err(Error::Invalid(
                        "RENAME_EXCHANGE and RENAME_WHITEOUT are not supported".into(),
                    ))
                } else if let Err(e) = s
                    .audit_ready()
                    .and_then(|()| s.admit_name(caller, parent, &name))
                    .and_then(|_| s.admit_name(caller, newparent, &newname))
                {
                    // A covered key renamed out of its rule's reach, or
                    // another file renamed over a covered one.
                    Err(e)
                } else {
                    match (name.to_str(), newname.to_str()) {
                        (Some(n), Some(nn)) => s.core.rename(
                            ctx,
                            parent,
                            n,
                            newparent,
                            nn,
                            flags.contains(RenameFlags::RENAME_NOREPLACE),
                        ),
                        (None, _) => Err(Error::NotFound),
                        (_, None) => Err(Error::NotUtf8),
                    }
                };
            let result = s
                .audit(Op::Rename, caller, &result, |s| {
                    (
                        s.path_of(parent, Some(&name)),
                        Some(s.path_of(newparent, Some(&newname))),
                    )
                })
                .and(result);
            send_empty(s, "rename", (parent, Some(&name)), reply, result);
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        crate::metrics::record_fuse_op("getxattr");
        let caller = caller(req);
        let _span = tracing::debug_span!("getxattr", ino = ino.0).entered();
        let ino = Ino(ino.0);
        // `ls -l` asks every file for `security.selinux` and POSIX ACLs:
        // names not ours are answered here, without a store thread.
        let Some(ours) = name.to_str().filter(|n| crate::fs::xattr::is_ours(n)) else {
            let e = name
                .to_str()
                .map_or(Error::NoAttribute, crate::fs::xattr::foreign_xattr);
            // An everyday answer, one per file listed: no path worked out.
            tracing::trace!(ino = ino.0, ?name, error = %e, "getxattr");
            reply.error(Errno::from_i32(e.errno()));
            return;
        };
        // The status attribute asks the store how it is.
        let name = ours.to_string();
        self.later(caller, move |s, ctx| {
            match s.core.getxattr(ctx, ino, &name) {
                Ok(bytes) => reply_xattr(reply, size, &s.with_audit_status(ino, &name, bytes)),
                Err(e) => reply.error(s.fail("getxattr", ino, Some(OsStr::new(&name)), &e)),
            }
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        crate::metrics::record_fuse_op("listxattr");
        let caller = caller(req);
        let _span = tracing::debug_span!("listxattr", ino = ino.0).entered();
        let ino = Ino(ino.0);
        // A secret's metadata comes with the secret: the store may be asked.
        self.now_or_later(
            caller,
            reply,
            move |core, ctx| core.listxattr(ctx, ino),
            move |s, reply, result| match result {
                Ok(names) => {
                    // Each name followed by a NUL, as listxattr(2) returns them.
                    let mut bytes = Vec::new();
                    for name in names {
                        bytes.extend_from_slice(name.as_bytes());
                        bytes.push(0);
                    }
                    reply_xattr(reply, size, &bytes);
                }
                Err(e) => reply.error(s.fail("listxattr", ino, None, &e)),
            },
        );
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
        crate::metrics::record_fuse_op("setxattr");
        let _span = tracing::debug_span!("setxattr", ino = ino.0).entered();
        let (name, value) = (name.to_os_string(), value.to_vec());
        let (ino, caller) = (Ino(ino.0), caller(req));
        self.later(caller, move |s, ctx| {
            // A change of the secret: covered files need a rule.
            let result = s
                .audit_ready()
                .and_then(|()| s.admit_ino(ctx, caller, ino, Through::Metadata))
                .and_then(|_| match name.to_str() {
                    Some(n) => s.core.setxattr(ctx, ino, n, &value, flags),
                    None => Err(Error::NotSupported("attribute names are UTF-8")),
                });
            let result = s
                .audit(Op::Setxattr, caller, &result, |s| {
                    (s.path_of(ino, None), None)
                })
                .and(result);
            send_empty(s, "setxattr", (ino, None), reply, result);
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        crate::metrics::record_fuse_op("removexattr");
        let _span = tracing::debug_span!("removexattr", ino = ino.0).entered();
        let name = name.to_os_string();
        let (ino, caller) = (Ino(ino.0), caller(req));
        self.later(caller, move |s, ctx| {
            let admitted = s
                .audit_ready()
                .and_then(|()| s.admit_ino(ctx, caller, ino, Through::Metadata));
            let result = match name.to_str() {
                _ if admitted.is_err() => admitted.map(drop),
                Some(n) => s.core.removexattr(ctx, ino, n),
                None => Err(Error::NoAttribute),
            };
            let result = s
                .audit(Op::Removexattr, caller, &result, |s| {
                    (s.path_of(ino, None), None)
                })
                .and(result);
            send_empty(s, "removexattr", (ino, None), reply, result);
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        crate::metrics::record_fuse_op("opendir");
        let caller = caller(req);
        let _span = tracing::debug_span!("opendir", ino = ino.0).entered();
        let ino = Ino(ino.0);
        self.now_or_later(
            caller,
            reply,
            move |core, ctx| core.opendir(ctx, ino),
            move |s, reply, result| match result {
                Ok(fh) => reply.opened(FileHandle(fh.0), FopenFlags::empty()),
                Err(e) => reply.error(s.fail("opendir", ino, None, &e)),
            },
        );
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        crate::metrics::record_fuse_op("readdir");
        let caller = caller(req);
        let _span = tracing::debug_span!("readdir", ino = ino.0, fh = fh.0).entered();
        // Attributes of entries may need the store.
        let (ino, fh) = (Ino(ino.0), Fh(fh.0));
        self.later(caller, move |s, ctx| {
            let mut out = Entries {
                shared: s,
                op: "readdir",
                reply,
            };
            match s.core.readdir(ctx, fh, offset, false, &mut out) {
                Ok(()) => out.reply.ok(),
                Err(e) => out.reply.error(s.fail("readdir", ino, None, &e)),
            }
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        crate::metrics::record_fuse_op("readdirplus");
        let caller = caller(req);
        let _span = tracing::debug_span!("readdirplus", ino = ino.0, fh = fh.0).entered();
        let (ino, fh) = (Ino(ino.0), Fh(fh.0));
        self.later(caller, move |s, ctx| {
            let mut out = Entries {
                shared: s,
                op: "readdirplus",
                reply,
            };
            match s.core.readdir(ctx, fh, offset, true, &mut out) {
                Ok(()) => out.reply.ok(),
                Err(e) => out.reply.error(s.fail("readdirplus", ino, None, &e)),
            }
        });
    }

    fn releasedir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        crate::metrics::record_fuse_op("releasedir");
        // A directory handle holds nothing to commit.
        self.shared
            .core
            .release(&OpContext::cache_only(caller(req)), Fh(fh.0));
        reply.ok();
    }
}
