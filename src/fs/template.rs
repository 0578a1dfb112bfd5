//! The `templates:DIR` layout: each file `DIR/X.tmpl` shows as a file `X`
//! at the mount root, rendered on read with minijinja from the secrets it
//! names. Every secret a template reads comes through the core's cache
//! (`Source::secret`, like key files): many readers of a cold template
//! make one GET per secret, and stale-if-error applies.
//!
//! A template is rendered once per lookup/getattr; reads serve that
//! rendering, so the size the kernel was told and the bytes agree. One
//! that fails to render is `EIO` at lookup, getattr, open and read. The
//! rendering remembers which secrets it used: a change of any of them
//! invalidates the template's inode.
//!
//! What a template says is what the mount shows, to whoever may read it:
//! the folder and every template must be owned by root or the daemon's
//! user and writable by no one else ([`crate::trusted`]; checked at start,
//! where a bad one fails the mount, and at each read), and a template is
//! opened relative to the folder without following a symbolic link (a
//! link is skipped, with a warning), so no file outside the folder is
//! ever served.

use crate::fs::OpContext;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use secrecy::{ExposeSecret, SecretSlice};

use super::cache::Change;
use super::inode::{Ino, ROOT_INO};
use super::namespace::Name;
use super::{lock, names, Attr, SecretFs};
use crate::error::{Error, Result};
use crate::store::SecretPath;

/// The file name ending that makes a file of DIR a template.
const SUFFIX: &str = ".tmpl";

/// The templates of a mount and their last renderings.
pub struct Templates {
    dir: PathBuf,
    rendered: Mutex<HashMap<String, Arc<Rendering>>>,
    /// Files of the folder refused or skipped, and why: each logged once
    /// per reason.
    refused: Mutex<HashMap<String, String>>,
}

/// Checks the templates folder `dir` and the templates in it, at start:
/// why the mount must not start with them, naming the folder or file and
/// the fix. Symbolic links are not refused here; they are skipped (and
/// logged) when the mount runs.
pub fn check_folder(dir: &Path) -> std::result::Result<(), String> {
    let meta =
        std::fs::metadata(dir).map_err(|e| format!("templates folder {}: {e}", dir.display()))?;
    crate::trusted::check(&meta).map_err(|why| {
        format!(
            "templates folder {}: {why} (whoever can write it chooses what the mount shows)",
            dir.display()
        )
    })?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("templates folder {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("templates folder {}: {e}", dir.display()))?;
        if !entry.file_name().as_bytes().ends_with(SUFFIX.as_bytes()) {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("template {}: {e}", path.display()))?;
        if meta.is_file() {
            crate::trusted::check(&meta).map_err(|why| {
                format!(
                    "template {}: {why} (whoever can write it chooses what the mount shows)",
                    path.display()
                )
            })?;
        }
    }
    Ok(())
}

/// One rendering of a template.
pub struct Rendering {
    /// The bytes, or why the template failed to render (never a value).
    pub bytes: std::result::Result<SecretSlice<u8>, String>,
    /// The secrets it read.
    pub secrets: Vec<SecretPath>,
    /// The folders it listed.
    pub folders: Vec<SecretPath>,
    /// The newest modified time of the secrets it read.
    pub mtime: Option<SystemTime>,
    /// How long the answers it used stay valid.
    pub valid_for: Duration,
}

impl Rendering {
    fn uses(&self, path: &SecretPath) -> bool {
        self.secrets.contains(path) || self.folders.contains(path)
    }
}

impl Templates {
    /// The templates in `dir` (`DIR/X.tmpl` shows as `X`).
    pub fn new(dir: PathBuf) -> Self {
        let templates = Templates {
            dir,
            rendered: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
        };
        // Links skipped are logged at start, not at the first `ls`.
        if let Err(e) = templates.names() {
            tracing::warn!(error = %e, "templates folder");
        }
        templates
    }

    /// Logs (once per file and reason) that `file` of the folder is not
    /// served, and why.
    fn refuse(&self, file: &str, why: &str) {
        let mut refused = lock(&self.refused);
        if refused.get(file).map(String::as_str) != Some(why) {
            tracing::warn!("template {}: {why}", self.dir.join(file).display());
            refused.insert(file.to_string(), why.to_string());
        }
    }

    /// The names of the files the templates show, sorted. Symbolic links
    /// are not templates: skipped, with a warning.
    pub fn names(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            Error::Unavailable(format!("templates folder {}: {e}", self.dir.display()))
        })?;
        let mut out = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let Ok(file) = entry.file_name().into_string() else {
                continue;
            };
            let Some(name) = file.strip_suffix(SUFFIX) else {
                continue;
            };
            match entry.file_type() {
                Ok(t) if t.is_file() => {}
                Ok(t) if t.is_symlink() => {
                    self.refuse(
                        &file,
                        "a symbolic link, not followed: not shown (copy the template into the folder)",
                    );
                    continue;
                }
                _ => continue,
            }
            if names::is_showable(name) && name.len() <= names::NAME_MAX {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// The text of the template showing as `name`: the file opened
    /// relative to the folder, without following a symbolic link, and
    /// checked (as the folder is) as it is opened.
    fn source(&self, name: &str) -> Result<String> {
        if name.contains('/') || !names::is_showable(name) {
            return Err(Error::NotFound);
        }
        let file = format!("{name}{SUFFIX}");
        let unavailable = |e: std::io::Error| {
            Error::Unavailable(format!("{}: {e}", self.dir.join(&file).display()))
        };
        let dir = File::open(&self.dir).map_err(|e| {
            Error::Unavailable(format!("templates folder {}: {e}", self.dir.display()))
        })?;
        let meta = dir.metadata().map_err(unavailable)?;
        if let Err(why) = crate::trusted::check(&meta) {
            let why = format!("the templates folder: {why}");
            self.refuse(&file, &why);
            return Err(Error::PermissionDenied(why));
        }
        let c_name = std::ffi::CString::new(file.as_bytes()).map_err(|_| Error::NotFound)?;
        // SAFETY: openat with an open folder's descriptor and a
        // NUL-terminated name without '/'; the descriptor returned is
        // owned by the `File` made from it below.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c_name.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Err(Error::NotFound),
                Some(libc::ELOOP) => {
                    self.refuse(
                        &file,
                        "a symbolic link, not followed: not shown (copy the template into the folder)",
                    );
                    Err(Error::NotFound)
                }
                _ => Err(unavailable(e)),
            };
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let mut opened = unsafe { File::from_raw_fd(fd) };
        let meta = opened.metadata().map_err(unavailable)?;
        if !meta.is_file() {
            return Err(Error::NotFound);
        }
        if let Err(why) = crate::trusted::check(&meta) {
            self.refuse(&file, &why);
            return Err(Error::PermissionDenied(why));
        }
        let mut bytes = Vec::new();
        opened.read_to_end(&mut bytes).map_err(unavailable)?;
        String::from_utf8(bytes).map_err(|_| Error::NotUtf8)
    }

    /// The last rendering of `name`.
    pub fn last(&self, name: &str) -> Option<Arc<Rendering>> {
        lock(&self.rendered).get(name).cloned()
    }

    /// Forgets the renderings `gone` says no longer may be served.
    fn forget_where(&self, gone: impl Fn(&Rendering) -> bool) {
        lock(&self.rendered).retain(|_, r| !gone(r));
    }

    /// The templates whose last rendering used `path`.
    fn using(&self, path: &SecretPath) -> Vec<String> {
        lock(&self.rendered)
            .iter()
            .filter(|(_, r)| r.uses(path))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// What a rendering read, gathered by the template functions.
#[derive(Default)]
struct Reads {
    secrets: Vec<SecretPath>,
    folders: Vec<SecretPath>,
    mtime: Option<SystemTime>,
    valid_for: Option<Duration>,
    changes: Vec<Change>,
    /// The version of each secret this rendering read.
    snapshot: HashMap<SecretPath, Arc<crate::store::Secret>>,
    /// The first store error met (a `WouldBlock` is handed on).
    error: Option<Error>,
}

impl Reads {
    fn valid(&mut self, d: Duration) {
        self.valid_for = Some(self.valid_for.map_or(d, |v| v.min(d)));
    }
}

/// The store path a template names (relative to the mount's source folder).
fn resolve(root: &SecretPath, rel: &str) -> std::result::Result<SecretPath, minijinja::Error> {
    let mut path = root.clone();
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("{rel:?}: paths are relative to the mount's source, without . or .."),
            ));
        }
        path = path.join(seg);
    }
    Ok(path)
}

fn failed(msg: String) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, msg)
}

fn b64encode(v: Value) -> std::result::Result<String, minijinja::Error> {
    let bytes: Vec<u8> = match v.as_bytes() {
        Some(b) => b.to_vec(),
        None => v.to_string().into_bytes(),
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn b64decode(v: String) -> std::result::Result<String, minijinja::Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|e| failed(format!("b64decode: not base64 ({e})")))?;
    String::from_utf8(bytes)
        .map_err(|_| failed("b64decode: the decoded bytes are not UTF-8".into()))
}

/// A minijinja environment whose `secret` and `secrets` read through `fs`'s cache.
fn environment(
    ctx: Arc<OpContext>,
    source: Arc<super::cache::Source>,
    root: SecretPath,
    reads: Arc<Mutex<Reads>>,
) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    {
        let (ctx, source, root, reads) = (ctx.clone(), source.clone(), root.clone(), reads.clone());
        env.add_function(
            "secret",
            move |rel: String| -> std::result::Result<Value, minijinja::Error> {
                let path = resolve(&root, &rel)?;
                // One snapshot of each secret per rendering: a secret used
                // twice (a certificate, then its key) is read once, so a
                // refresh landing meanwhile cannot mix two versions.
                let taken = lock(&reads).snapshot.get(&path).cloned();
                let mut r;
                let secret = match taken {
                    Some(secret) => {
                        r = lock(&reads);
                        secret
                    }
                    None => {
                        let fetched = match source.secret(&ctx, &path) {
                            Ok(f) => f,
                            Err(e) => {
                                let msg = format!("secret({rel:?}): {e}");
                                lock(&reads).error.get_or_insert(e);
                                return Err(failed(msg));
                            }
                        };
                        r = lock(&reads);
                        r.changes.extend(fetched.change);
                        r.valid(fetched.answer.valid_for);
                        r.secrets.push(path.clone());
                        let secret = fetched
                            .answer
                            .value
                            .ok_or_else(|| failed(format!("secret({rel:?}): no such secret")))?;
                        r.snapshot.insert(path, secret.clone());
                        secret
                    }
                };
                if let Some(m) = secret.modified {
                    r.mtime = Some(r.mtime.map_or(m, |t| t.max(m)));
                }
                // A key whose value cannot be known now (a layer that may
                // override it cannot be read): no rendering without it.
                if let Some(e) = secret.withheld.values().next() {
                    let msg = format!("secret({rel:?}): {e}");
                    r.error.get_or_insert(e.clone());
                    return Err(failed(msg));
                }
                let map: serde_json::Map<String, serde_json::Value> = secret
                    .keys
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_json()))
                    .collect();
                Ok(Value::from_serialize(&map))
            },
        );
    }
    env.add_function(
        "secrets",
        move |rel: String| -> std::result::Result<Value, minijinja::Error> {
            let path = resolve(&root, &rel)?;
            let fetched = match source.listing(&ctx, &path) {
                Ok(f) => f,
                Err(e) => {
                    let msg = format!("secrets({rel:?}): {e}");
                    lock(&reads).error.get_or_insert(e);
                    return Err(failed(msg));
                }
            };
            let mut r = lock(&reads);
            r.changes.extend(fetched.change);
            r.valid(fetched.answer.valid_for);
            r.folders.push(path);
            let listing = fetched
                .answer
                .value
                .filter(|l| l.shows_folder())
                .ok_or_else(|| failed(format!("secrets({rel:?}): no such folder")))?;
            let mut names: Vec<String> = listing
                .iter()
                .filter(|e| !e.folder)
                .map(|e| e.name.clone())
                .collect();
            names.sort();
            names.dedup();
            Ok(Value::from_serialize(&names))
        },
    );
    env
}

impl SecretFs {
    /// Renders the template showing as `name` now (through the cache) and
    /// keeps the rendering for reads. A template that fails to render is
    /// kept as failed (reads get `EIO`) and logged once per reason.
    pub(super) fn render_template(&self, ctx: &OpContext, name: &str) -> Result<Arc<Rendering>> {
        let templates = self.templates.as_ref().ok_or(Error::NotFound)?;
        let text = templates.source(name)?;
        let root = self.dir_path(ROOT_INO)?;
        let reads = Arc::new(Mutex::new(Reads::default()));
        // The functions of the environment keep the operation's context.
        let env = environment(
            Arc::new(ctx.clone()),
            self.source.clone(),
            root,
            reads.clone(),
        );
        let result = env
            .render_str(&text, ())
            .map_err(|e| template_error(name, &e));
        let reads = std::mem::take(&mut *lock(&reads));
        for change in reads.changes {
            self.notice(change);
        }
        if let (Err(_), Some(Error::WouldBlock)) = (&result, &reads.error) {
            return Err(Error::WouldBlock);
        }
        let rendering = Arc::new(Rendering {
            bytes: result.map(|s| SecretSlice::from(s.into_bytes())),
            secrets: reads.secrets,
            folders: reads.folders,
            mtime: reads.mtime,
            valid_for: reads.valid_for.unwrap_or(self.config.cache.ttl),
        });
        let before = lock(&templates.rendered).insert(name.to_string(), rendering.clone());
        if let Err(reason) = &rendering.bytes {
            let again = before.is_some_and(|b| b.bytes.as_ref().err() == Some(reason));
            if !again {
                tracing::warn!(template = %name, %reason, "template fails to render: reads of it get EIO");
                self.record_error(format!("template {name}: {reason}"));
            }
        }
        Ok(rendering)
    }

    /// The rendering reads of `name` serve: the one the kernel was last
    /// told the size of, else a new one.
    pub(super) fn template_rendering(&self, ctx: &OpContext, name: &str) -> Result<Arc<Rendering>> {
        match self.templates.as_ref().and_then(|t| t.last(name)) {
            Some(r) => Ok(r),
            None => self.render_template(ctx, name),
        }
    }

    /// The bytes of a rendering, or `EIO` for a template that failed.
    pub(super) fn template_bytes(rendering: &Rendering) -> Result<&[u8]> {
        match &rendering.bytes {
            Ok(b) => Ok(b.expose_secret()),
            Err(reason) => Err(Error::Template(reason.clone())),
        }
    }

    /// Attributes of the template file `ino` showing as `name`, rendered
    /// now. A template that fails to render is `EIO` here already: opens
    /// of rendered files may skip the daemon ("no open"), and the kernel
    /// would read a size it was told (0) as an empty file.
    pub(super) fn template_attr(&self, ctx: &OpContext, ino: Ino, name: &str) -> Result<Attr> {
        let r = self.render_template(ctx, name)?;
        let size = Self::template_bytes(&r)?.len() as u64;
        let mtime = r.mtime.unwrap_or(self.source.started());
        Ok(self.file_attr(ino, size, mtime, r.valid_for))
    }

    /// Whether `name` in `dir` is a template's file (only at the root).
    pub(super) fn is_template(&self, dir: &SecretPath, name: &str) -> Result<bool> {
        let Some(t) = &self.templates else {
            return Ok(false);
        };
        Ok(dir == &self.dir_path(ROOT_INO)? && t.names()?.iter().any(|n| n == name))
    }

    /// The files of the templates layout in `dir`: the templates' at the root.
    pub(super) fn template_names(&self, dir: &SecretPath) -> Result<Vec<String>> {
        match &self.templates {
            Some(t) if dir == &self.dir_path(ROOT_INO)? => t.names(),
            _ => Ok(Vec::new()),
        }
    }

    /// Lets renderings leave memory with the values they were made of:
    /// when a secret one used was swept or is no longer held (the next
    /// `stat` or read renders again).
    pub(super) fn sweep_templates(&self, swept: &std::collections::HashSet<SecretPath>) {
        let Some(t) = &self.templates else { return };
        t.forget_where(|r| {
            r.secrets
                .iter()
                .any(|p| swept.contains(p) || self.source.held(p).is_none())
        });
    }

    /// The store changed at `path`: templates whose last rendering used it
    /// are invalidated (their bytes may differ).
    pub(super) fn notice_templates(&self, path: &SecretPath) {
        let Some(t) = &self.templates else { return };
        for name in t.using(path) {
            let at = Name {
                parent: ROOT_INO,
                name: &name,
            };
            if let Some(ino) = self.names.lookup_name(at) {
                tracing::debug!(template = %name, %path, ino = ino.0, "a secret a template uses changed: invalidating");
                self.invalidate(super::Invalidation::Inode(ino));
            }
        }
    }
}

/// Why a template failed, for the log: minijinja's message, which names
/// the template's line but holds no value of a secret.
fn template_error(name: &str, e: &minijinja::Error) -> String {
    let mut msg = e.kind().to_string();
    if let Some(detail) = e.detail() {
        msg = format!("{msg}: {detail}");
    }
    if let Some(line) = e.line() {
        msg = format!("{msg} (line {line} of {name}{SUFFIX})");
    }
    msg
}
