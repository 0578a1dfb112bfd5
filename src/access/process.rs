//! The caller's facts, from `/proc`: its supplementary groups, the file
//! it runs and that file's SHA-256, each looked up only when a rule asks.
//! The file a caller runs is known by what opening `/proc/TID/exe` gives
//! (the running image itself, even when its path was replaced or is
//! shown otherwise in another mount namespace), never by the name that
//! link shows. Digests are cached by the file's identity (device, inode,
//! size, mtime and ctime), so a binary is hashed once, not per open, and
//! hashed again when it changes.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::rules::{Facts, Sha256};

/// Most digests remembered; past it the cache starts over.
const MAX_DIGESTS: usize = 4096;

/// A file as the kernel knows it: a change of content changes one of these
/// (ctime cannot be set back by a user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether `meta` describes the same file (device and inode).
    fn same_file(&self, meta: &std::fs::Metadata) -> bool {
        (self.dev, self.ino) == (meta.dev(), meta.ino())
    }
}

/// The file a process runs, opened through `/proc/TID/exe`.
struct Image {
    file: File,
    id: FileId,
}

impl Image {
    fn of(tid: u32) -> Option<Image> {
        let file = File::open(format!("/proc/{tid}/exe")).ok()?;
        let id = FileId::of(&file.metadata().ok()?);
        Some(Image { file, id })
    }
}

/// Digests of executables, by file identity.
#[derive(Default)]
pub struct ExeDigests {
    known: Mutex<HashMap<FileId, Sha256>>,
}

impl ExeDigests {
    fn known(&self) -> MutexGuard<'_, HashMap<FileId, Sha256>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The SHA-256 of what thread `tid` runs: the file `/proc/TID/exe`
    /// opens (the running image even if its path was replaced since).
    pub fn of(&self, tid: u32) -> Option<Sha256> {
        self.of_image(&Image::of(tid)?)
    }

    fn of_image(&self, image: &Image) -> Option<Sha256> {
        if let Some(d) = self.known().get(&image.id) {
            return Some(*d);
        }
        let started = std::time::Instant::now();
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0u64;
        loop {
            match image.file.read_at(&mut buf, at) {
                Ok(0) => break,
                Ok(n) => {
                    ctx.update(&buf[..n]);
                    at += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ctx.finish().as_ref());
        tracing::debug!(
            bytes = image.id.size,
            micros = started.elapsed().as_micros() as u64,
            "hashed an executable"
        );
        let mut known = self.known();
        if known.len() >= MAX_DIGESTS {
            known.clear();
        }
        known.insert(image.id, digest);
        Some(digest)
    }

    /// How many digests are remembered.
    pub fn len(&self) -> usize {
        self.known().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The facts of the thread that made a request, looked up as rules ask.
pub struct Caller<'a> {
    tid: u32,
    uid: u32,
    gid: u32,
    digests: &'a ExeDigests,
    groups: Option<Vec<u32>>,
    image: Option<Option<Image>>,
    sha256: Option<Option<Sha256>>,
}

impl<'a> Caller<'a> {
    /// The caller `tid` (the FUSE request's "pid", a thread id) with the
    /// ids the request carries.
    pub fn new(tid: u32, uid: u32, gid: u32, digests: &'a ExeDigests) -> Self {
        Caller {
            tid,
            uid,
            gid,
            digests,
            groups: None,
            image: None,
            sha256: None,
        }
    }

    /// The name `/proc/TID/exe` shows, for logs and audit records only
    /// (it decides nothing: see [`Facts::runs`]).
    pub fn exe_name(&self) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{}/exe", self.tid)).ok()
    }

    fn image(&mut self) -> Option<&Image> {
        let tid = self.tid;
        self.image.get_or_insert_with(|| Image::of(tid)).as_ref()
    }
}

impl Facts for Caller<'_> {
    fn uid(&self) -> u32 {
        self.uid
    }

    fn gid(&self) -> u32 {
        self.gid
    }

    fn groups(&mut self) -> &[u32] {
        let tid = self.tid;
        self.groups.get_or_insert_with(|| {
            std::fs::read_to_string(format!("/proc/{tid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                        g.split_whitespace()
                            .filter_map(|n| n.parse().ok())
                            .collect()
                    })
                })
                .unwrap_or_default()
        })
    }

    fn runs(&mut self, path: &Path) -> bool {
        // The daemon's own view of `path`, looked up at each decision, so
        // a file put in its place (an upgrade) is the one let in.
        let Ok(wanted) = std::fs::metadata(path) else {
            return false;
        };
        self.image()
            .is_some_and(|image| image.id.same_file(&wanted))
    }

    fn exe_sha256(&mut self) -> Option<Sha256> {
        if let Some(known) = self.sha256 {
            return known;
        }
        let digests = self.digests;
        // The same opened image as `runs` compared, not a second open.
        let digest = self.image().and_then(|image| digests.of_image(image));
        self.sha256 = Some(digest);
        digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> u32 {
        // SAFETY: a plain syscall without arguments.
        u32::try_from(unsafe { libc::gettid() }).unwrap()
    }

    #[test]
    fn this_thread_s_executable_and_digest_are_found_and_the_digest_cached() {
        let digests = ExeDigests::default();
        let mut caller = Caller::new(me(), 0, 0, &digests);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(caller.exe_name().unwrap(), exe);
        assert!(caller.runs(&exe));
        assert!(!caller.runs(Path::new("/usr/bin/cat")));
        let digest = caller.exe_sha256().unwrap();
        let bytes = std::fs::read(&exe).unwrap();
        let want = ring::digest::digest(&ring::digest::SHA256, &bytes);
        assert_eq!(&digest[..], want.as_ref());
        assert_eq!(digests.len(), 1);
        // Another caller running the same file: the cached digest.
        let mut again = Caller::new(std::process::id(), 0, 0, &digests);
        assert_eq!(again.exe_sha256(), Some(digest));
        assert_eq!(digests.len(), 1);
    }

    #[test]
    fn a_caller_that_is_gone_has_no_executable() {
        let digests = ExeDigests::default();
        let mut gone = Caller::new(u32::MAX - 1, 0, 0, &digests);
        assert!(gone.exe_name().is_none());
        assert!(!gone.runs(&std::env::current_exe().unwrap()));
        assert!(gone.exe_sha256().is_none());
        assert!(gone.groups().is_empty());
    }
}
