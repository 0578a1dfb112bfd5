//! The `fuser` adapter: unpacks each request, calls the core, replies.
//! Errors are logged here, once, with the operation, inode and path.
//! Mounting, unmounting and the notifier thread are in `session`; this
//! folder is the only place that knows `fuser`.

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

use crate::audit::{AuditLog, Caller};
use crate::error::Error;
use crate::fs::handle::Fh;
use crate::fs::inode::Ino;
use crate::fs::{Attr, DirEntry, DirReplier, SecretFs};

/// The FUSE face of a [`SecretFs`].
pub struct FuseAdapter {
    core: Arc<SecretFs>,
    audit: Option<AuditLog>,
}

impl FuseAdapter {
    /// Wraps the core; with an audit log, every open of a file is recorded.
    pub fn new(core: Arc<SecretFs>, audit: Option<AuditLog>) -> Self {
        FuseAdapter { core, audit }
    }

    /// Logs a failed request once and turns it into its errno.
    fn fail(&self, op: &'static str, ino: Ino, name: Option<&OsStr>, e: &Error) -> Errno {
        let mut path = self.core.describe(ino);
        if let Some(name) = name {
            path = format!("{}/{}", path.trim_end_matches('/'), name.to_string_lossy());
        }
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
    adapter: &'a FuseAdapter,
    op: &'static str,
    reply: R,
}

impl<R> Entries<'_, R> {
    fn log_skipped(&self, dir: Ino, name: &str, error: &Error) {
        self.adapter
            .fail(self.op, dir, Some(OsStr::new(name)), error);
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

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _span = tracing::debug_span!("lookup", ino = parent.0).entered();
        let Some(name_str) = name.to_str() else {
            reply.error(Errno::ENOENT);
            return;
        };
        match self.core.lookup(Ino(parent.0), name_str) {
            Ok(attr) => reply.entry_with_ttls(
                &attr.valid_for,
                &attr.valid_for,
                &to_file_attr(&attr),
                Generation(0),
            ),
            Err(e) => reply.error(self.fail("lookup", Ino(parent.0), Some(name), &e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(Ino(ino.0), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _span = tracing::debug_span!("getattr", ino = ino.0).entered();
        match self.core.getattr(Ino(ino.0)) {
            Ok(attr) => reply.attr(&attr.valid_for, &to_file_attr(&attr)),
            Err(e) => reply.error(self.fail("getattr", Ino(ino.0), None, &e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _span = tracing::debug_span!("open", ino = ino.0).entered();
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        if let Some(audit) = &self.audit {
            let caller = Caller {
                uid: req.uid(),
                pid: req.pid(),
            };
            let op = if write { "open-write" } else { "open-read" };
            audit.record(op, &self.core.describe(Ino(ino.0)), caller);
        } else if !write && self.core.opens_can_skip_daemon(Ino(ino.0)) {
            // "No open": the kernel stops sending OPEN (and, with flush
            // refused below, FLUSH) and keeps pages across opens; reads
            // arrive without a handle.
            return reply.error(Errno::ENOSYS);
        }
        let truncate = write && flags.0 & libc::O_TRUNC != 0;
        // Read-only handles: keep the page cache across opens (AUTO_INVAL_DATA
        // drops it when the value changes) and skip FLUSH on close.
        let cache = if write {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
        };
        match self.core.open(Ino(ino.0), write, truncate) {
            Ok(fh) => reply.opened(FileHandle(fh.0), cache),
            Err(e) => reply.error(self.fail("open", Ino(ino.0), None, &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _span = tracing::debug_span!("read", ino = ino.0, fh = fh.0).entered();
        // The reply is sent inside the closure so the bytes are never copied again.
        let mut reply = Some(reply);
        let send = |bytes: &[u8]| {
            if let Some(r) = reply.take() {
                r.data(bytes);
            }
        };
        let result = if fh.0 == 0 {
            self.core.read_ino(Ino(ino.0), offset, size, send)
        } else {
            self.core.read_handle(Fh(fh.0), offset, size, send)
        };
        if let (Err(e), Some(r)) = (result, reply) {
            r.error(self.fail("read", Ino(ino.0), None, &e));
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.core.release(Fh(fh.0));
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _span = tracing::debug_span!("flush", ino = ino.0, fh = fh.0).entered();
        if self.core.is_read_only() {
            // Nothing to commit, ever: ENOSYS once and the kernel stops sending FLUSH.
            return reply.error(Errno::ENOSYS);
        }
        match self.core.flush(Fh(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("flush", Ino(ino.0), None, &e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _span = tracing::debug_span!("fsync", ino = ino.0, fh = fh.0).entered();
        match self.core.fsync(Fh(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("fsync", Ino(ino.0), None, &e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
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
        let _span = tracing::debug_span!("write", ino = ino.0, fh = fh.0).entered();
        match self.core.write_handle(Fh(fh.0), offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(self.fail("write", Ino(ino.0), None, &e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _span = tracing::debug_span!("setattr", ino = ino.0).entered();
        match self.core.setattr(Ino(ino.0), size, uid, gid) {
            Ok(attr) => reply.attr(&attr.valid_for, &to_file_attr(&attr)),
            Err(e) => reply.error(self.fail("setattr", Ino(ino.0), None, &e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let _span = tracing::debug_span!("create", ino = parent.0).entered();
        let result = match name.to_str() {
            Some(n) => self.core.create(Ino(parent.0), n),
            None => Err(Error::NotUtf8),
        };
        if let (Some(audit), Ok((attr, _))) = (&self.audit, &result) {
            let caller = Caller {
                uid: req.uid(),
                pid: req.pid(),
            };
            audit.record("create", &self.core.describe(attr.ino), caller);
        }
        match result {
            Ok((attr, fh)) => reply.created(
                &attr.valid_for,
                &to_file_attr(&attr),
                Generation(0),
                FileHandle(fh.0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(self.fail("create", Ino(parent.0), Some(name), &e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let _span = tracing::debug_span!("mkdir", ino = parent.0).entered();
        let result = match name.to_str() {
            Some(n) => self.core.mkdir(Ino(parent.0), n),
            None => Err(Error::NotUtf8),
        };
        match result {
            Ok(attr) => reply.entry_with_ttls(
                &attr.valid_for,
                &attr.valid_for,
                &to_file_attr(&attr),
                Generation(0),
            ),
            Err(e) => reply.error(self.fail("mkdir", Ino(parent.0), Some(name), &e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = tracing::debug_span!("unlink", ino = parent.0).entered();
        let result = match name.to_str() {
            Some(n) => self.core.unlink(Ino(parent.0), n),
            None => Err(Error::NotFound),
        };
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("unlink", Ino(parent.0), Some(name), &e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = tracing::debug_span!("rmdir", ino = parent.0).entered();
        let result = match name.to_str() {
            Some(n) => self.core.rmdir(Ino(parent.0), n),
            None => Err(Error::NotFound),
        };
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("rmdir", Ino(parent.0), Some(name), &e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _span = tracing::debug_span!("rename", ino = parent.0).entered();
        let result =
            if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
                Err(Error::Invalid(
                    "RENAME_EXCHANGE and RENAME_WHITEOUT are not supported".into(),
                ))
            } else {
                match (name.to_str(), newname.to_str()) {
                    (Some(n), Some(nn)) => self.core.rename(
                        Ino(parent.0),
                        n,
                        Ino(newparent.0),
                        nn,
                        flags.contains(RenameFlags::RENAME_NOREPLACE),
                    ),
                    (None, _) => Err(Error::NotFound),
                    (_, None) => Err(Error::NotUtf8),
                }
            };
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("rename", Ino(parent.0), Some(name), &e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _span = tracing::debug_span!("getxattr", ino = ino.0).entered();
        let result = match name.to_str() {
            Some(n) => self.core.getxattr(Ino(ino.0), n),
            None => Err(Error::NoAttribute),
        };
        match result {
            Ok(bytes) => reply_xattr(reply, size, &bytes),
            Err(e) => reply.error(self.fail("getxattr", Ino(ino.0), Some(name), &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _span = tracing::debug_span!("listxattr", ino = ino.0).entered();
        match self.core.listxattr(Ino(ino.0)) {
            Ok(names) => {
                // Each name followed by a NUL, as listxattr(2) returns them.
                let mut bytes = Vec::new();
                for name in names {
                    bytes.extend_from_slice(name.as_bytes());
                    bytes.push(0);
                }
                reply_xattr(reply, size, &bytes);
            }
            Err(e) => reply.error(self.fail("listxattr", Ino(ino.0), None, &e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _span = tracing::debug_span!("opendir", ino = ino.0).entered();
        match self.core.opendir(Ino(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh.0), FopenFlags::empty()),
            Err(e) => reply.error(self.fail("opendir", Ino(ino.0), None, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let _span = tracing::debug_span!("readdir", ino = ino.0, fh = fh.0).entered();
        let mut out = Entries {
            adapter: self,
            op: "readdir",
            reply,
        };
        match self.core.readdir(Fh(fh.0), offset, false, &mut out) {
            Ok(()) => out.reply.ok(),
            Err(e) => out.reply.error(self.fail("readdir", Ino(ino.0), None, &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let _span = tracing::debug_span!("readdirplus", ino = ino.0, fh = fh.0).entered();
        let mut out = Entries {
            adapter: self,
            op: "readdirplus",
            reply,
        };
        match self.core.readdir(Fh(fh.0), offset, true, &mut out) {
            Ok(()) => out.reply.ok(),
            Err(e) => out
                .reply
                .error(self.fail("readdirplus", Ino(ino.0), None, &e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.release(Fh(fh.0));
        reply.ok();
    }
}
