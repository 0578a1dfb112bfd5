//! Extended attributes. The mount's root has `user.secretfs.status`: how
//! `secretfs status` asks a running mount how it is, in a name space no
//! secret can collide with. On a store that keeps metadata (KV v2), a
//! secret's directory, the file it shows as and each of its key files
//! carry the secret's metadata: `user.secretfs.version`,
//! `user.secretfs.created_time` (of the version shown) and one
//! `user.secretfs.meta.NAME` per `custom_metadata` entry (on a store that
//! keeps it apart from the value, asked of the cache only for these and
//! the description: `Source::metadata`), which a writable
//! mount lets `setfattr` set and remove; on a store whose secrets carry a
//! description (AWS Secrets Manager), `user.secretfs.description` too,
//! outside `meta.` so that no entry's name can clash with it. On a mount
//! with layers
//! (`--layer`), each key file also has `user.secretfs.source`: the SOURCE
//! of the layer its value comes from.

use crate::fs::OpContext;
use std::sync::Arc;

use super::inode::{Ino, NodeKind, ROOT_INO};
use super::SecretFs;
use crate::error::{Error, Result};
use crate::store::{Metadata, Secret, SecretPath};

/// The extended attribute of the mount's root that holds its status (JSON).
pub const STATUS_XATTR: &str = "user.secretfs.status";

/// The extended attribute of a key file of a layered mount that names the
/// layer its value comes from.
pub const SOURCE_XATTR: &str = "user.secretfs.source";

/// The version of the secret shown (KV v2).
pub const VERSION_XATTR: &str = "user.secretfs.version";

/// When the version shown was written, RFC 3339 (KV v2).
pub const CREATED_XATTR: &str = "user.secretfs.created_time";

/// The secret's description (stores that keep one: AWS Secrets Manager).
pub const DESCRIPTION_XATTR: &str = "user.secretfs.description";

/// The prefix of the attributes that hold the secret's custom metadata.
pub const META_PREFIX: &str = "user.secretfs.meta.";

/// The prefix of every attribute secretfs has.
const OURS: &str = "user.secretfs.";

/// Whether `name` may be one of ours (`user.secretfs.*`): only those can
/// need the store; any other is answered at once (see [`foreign_xattr`]).
pub fn is_ours(name: &str) -> bool {
    name.starts_with(OURS)
}

/// The answer to a getxattr of a name that is not ours: `ENODATA` in the
/// `user.` namespace (which we have), `ENOTSUP` in any other (`security.`,
/// `system.`, `trusted.`: none of them is kept, and the kernel checks no
/// ACL here since the mount does not negotiate POSIX ACLs). `ENOTSUP` is
/// what `ls -l` caches per device: coreutils asks `security.selinux` and
/// `system.posix_acl_access` (and `_default` of directories) of every file
/// until one answers "not supported", then stops asking for that device.
/// `ENODATA` made it ask all three of every file.
pub fn foreign_xattr(name: &str) -> Error {
    if name.starts_with("user.") {
        Error::NoAttribute
    } else {
        Error::NotSupported("only user.secretfs.* attributes are kept")
    }
}

/// `setxattr` flags (`XATTR_CREATE`, `XATTR_REPLACE`).
const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;

impl SecretFs {
    /// The secret whose metadata `ino` carries: its directory's, its
    /// file's; `None` for folders, scratch files, or a store without
    /// metadata.
    fn metadata_of(&self, ctx: &OpContext, ino: Ino) -> Result<Option<(SecretPath, Arc<Secret>)>> {
        if !self.source.capabilities().metadata {
            return Ok(None);
        }
        let path = match self.node(ino)? {
            NodeKind::Dir { path } if ino != ROOT_INO && self.views.any_inside() => path,
            NodeKind::File { secret, .. } => {
                // A retired file: the version it keeps, which its bytes are.
                if let Some(kept) = self.names.kept(ino) {
                    return Ok(Some((secret, kept)));
                }
                secret
            }
            _ => return Ok(None),
        };
        let cached = self.secret(ctx, &path)?;
        Ok(cached.value.map(|s| (path, s)))
    }

    /// The value of the extended attribute `name` of `ino`
    /// ([`Error::NoAttribute`] when it has none of that name).
    pub fn getxattr(&self, ctx: &OpContext, ino: Ino, name: &str) -> Result<Vec<u8>> {
        if ino == ROOT_INO && name == STATUS_XATTR {
            return Ok(self.status_json(ctx).to_string().into_bytes());
        }
        if name == SOURCE_XATTR {
            if let Some((secret, key)) = self.layered_key(ino) {
                if let Some(layer) = self.source.origin(ctx, &secret, &key)? {
                    return Ok(layer.into_bytes());
                }
            }
            return Err(Error::NoAttribute);
        }
        if !is_ours(name) {
            return Err(foreign_xattr(name));
        }
        let (path, secret) = self.metadata_of(ctx, ino)?.ok_or(Error::NoAttribute)?;
        let value = match name {
            VERSION_XATTR => secret.revision.as_ref().map(|r| r.as_str().to_string()),
            CREATED_XATTR => secret
                .modified
                .map(|t| humantime::format_rfc3339_nanos(t).to_string()),
            // Only these may ask the store for the metadata.
            DESCRIPTION_XATTR => self
                .source
                .metadata(ctx, &path, &secret)?
                .description
                .clone(),
            _ => match name.strip_prefix(META_PREFIX) {
                Some(k) => self
                    .source
                    .metadata(ctx, &path, &secret)?
                    .custom_metadata
                    .get(k)
                    .cloned(),
                None => None,
            },
        };
        value.map(String::into_bytes).ok_or(Error::NoAttribute)
    }

    /// The names of the extended attributes of `ino`.
    pub fn listxattr(&self, ctx: &OpContext, ino: Ino) -> Result<Vec<String>> {
        let mut names = Vec::new();
        if ino == ROOT_INO {
            names.push(STATUS_XATTR.to_string());
        } else if self.layered_key(ino).is_some() {
            names.push(SOURCE_XATTR.to_string());
        }
        if let Some((path, secret)) = self.metadata_of(ctx, ino)? {
            if secret.revision.is_some() {
                names.push(VERSION_XATTR.to_string());
            }
            if secret.modified.is_some() {
                names.push(CREATED_XATTR.to_string());
            }
            let metadata = self.source.metadata(ctx, &path, &secret)?;
            if metadata.description.is_some() {
                names.push(DESCRIPTION_XATTR.to_string());
            }
            names.extend(
                metadata
                    .custom_metadata
                    .keys()
                    .map(|k| format!("{META_PREFIX}{k}")),
            );
        }
        Ok(names)
    }

    /// Sets the extended attribute `name` of `ino` to `value`: only
    /// `user.secretfs.meta.NAME`, one custom metadata write of the secret
    /// (the other entries kept), and `user.secretfs.description` where
    /// the store keeps descriptions. `flags`: `XATTR_CREATE`, `XATTR_REPLACE`.
    pub fn setxattr(
        &self,
        ctx: &OpContext,
        ino: Ino,
        name: &str,
        value: &[u8],
        flags: i32,
    ) -> Result<()> {
        if name == DESCRIPTION_XATTR && self.source.capabilities().descriptions {
            let value = std::str::from_utf8(value)
                .map_err(|_| Error::Invalid("a description is UTF-8 text".into()))?;
            let (path, metadata) = self.metadata_target(ctx, ino)?;
            let exists = metadata.description.is_some();
            if flags & XATTR_CREATE != 0 && exists {
                return Err(Error::Exists);
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(Error::NoAttribute);
            }
            return self.source.set_description(ctx, &path, Some(value));
        }
        let key = self.custom_key(name)?;
        let value = std::str::from_utf8(value)
            .map_err(|_| Error::Invalid("metadata is UTF-8 text".into()))?;
        let (path, metadata) = self.metadata_target(ctx, ino)?;
        let exists = metadata.custom_metadata.contains_key(key);
        if flags & XATTR_CREATE != 0 && exists {
            return Err(Error::Exists);
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(Error::NoAttribute);
        }
        self.source
            .set_custom_metadata(ctx, &path, key, Some(value))
    }

    /// Removes the extended attribute `name` of `ino`: one custom metadata
    /// entry of the secret, or its description.
    pub fn removexattr(&self, ctx: &OpContext, ino: Ino, name: &str) -> Result<()> {
        if name == DESCRIPTION_XATTR && self.source.capabilities().descriptions {
            let (path, metadata) = self.metadata_target(ctx, ino)?;
            if metadata.description.is_none() {
                return Err(Error::NoAttribute);
            }
            return self.source.set_description(ctx, &path, None);
        }
        let key = self.custom_key(name)?;
        let (path, metadata) = self.metadata_target(ctx, ino)?;
        if !metadata.custom_metadata.contains_key(key) {
            return Err(Error::NoAttribute);
        }
        self.source.set_custom_metadata(ctx, &path, key, None)
    }

    /// The custom metadata entry an attribute name stands for; others
    /// cannot be set or removed.
    fn custom_key<'a>(&self, name: &'a str) -> Result<&'a str> {
        match name.strip_prefix(META_PREFIX) {
            Some(key) if !key.is_empty() => Ok(key),
            _ if name == VERSION_XATTR || name == CREATED_XATTR || name == STATUS_XATTR => Err(
                Error::NotPermitted("the version and its time are the store's to set"),
            ),
            _ => Err(Error::NotSupported(
                "only user.secretfs.meta.NAME can be set",
            )),
        }
    }

    /// The secret whose custom metadata a change of `ino`'s attributes
    /// writes, on a writable mount of a store that keeps metadata, and
    /// its metadata now.
    fn metadata_target(&self, ctx: &OpContext, ino: Ino) -> Result<(SecretPath, Arc<Metadata>)> {
        if self.config.read_only {
            return Err(Error::ReadOnly);
        }
        if !self.source.capabilities().metadata {
            return Err(Error::NotSupported("this store keeps no metadata"));
        }
        let (path, secret) = self.metadata_of(ctx, ino)?.ok_or(Error::NotSupported(
            "only a secret's directory and files carry its metadata",
        ))?;
        if path.version().is_some() {
            // A version only reads; its secret's metadata is set on the secret.
            return Err(Error::ReadOnly);
        }
        let metadata = self.source.metadata(ctx, &path, &secret)?;
        Ok((path, metadata))
    }

    /// The secret and key of a key file of a layered mount.
    fn layered_key(&self, ino: Ino) -> Option<(crate::store::SecretPath, String)> {
        if !self.source.is_layered() {
            return None;
        }
        match self.names.get(ino)? {
            NodeKind::File { secret, view, name } if self.views.get(view).name() == "keys" => {
                Some((secret, name))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::fs::clock::ManualClock;
    use crate::store::memory::MemoryStore;
    use crate::store::SecretPath;

    fn over(store: Arc<MemoryStore>, read_only: bool) -> Arc<SecretFs> {
        let mut config = crate::fs::tests::config(Duration::from_secs(30));
        config.read_only = read_only;
        SecretFs::builder(store, SecretPath::root(), config, ManualClock::new())
            .build()
            .0
    }

    fn fs() -> Arc<SecretFs> {
        let store = Arc::new(MemoryStore::new());
        store.put("app", json!({"K": "v"}));
        over(store, false)
    }

    #[test]
    fn the_root_answers_its_status_as_json() {
        let fs = fs();
        let bytes = fs
            .getxattr(&OpContext::background(), ROOT_INO, "user.secretfs.status")
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status["mounted"], json!(true));
        assert_eq!(
            fs.listxattr(&OpContext::background(), ROOT_INO).unwrap(),
            [STATUS_XATTR]
        );
    }

    #[test]
    fn any_other_attribute_is_no_data() {
        let fs = fs();
        let app = fs
            .lookup(&OpContext::background(), ROOT_INO, "app")
            .unwrap()
            .ino;
        let no_data = |r: Result<Vec<u8>>| r.unwrap_err().errno() == libc::ENODATA;
        assert!(no_data(fs.getxattr(
            &OpContext::background(),
            ROOT_INO,
            "user.other"
        )));
        assert!(no_data(fs.getxattr(
            &OpContext::background(),
            app,
            STATUS_XATTR
        )));
        assert!(no_data(fs.getxattr(
            &OpContext::background(),
            app,
            "user.secretfs.meta.none"
        )));
        // Other namespaces are not kept at all: "not supported", which
        // `ls -l` remembers per device instead of asking every file.
        let unsupported = |r: Result<Vec<u8>>| r.unwrap_err().errno() == libc::ENOTSUP;
        for name in [
            "security.selinux",
            "system.posix_acl_access",
            "system.posix_acl_default",
            "trusted.x",
        ] {
            assert!(
                unsupported(fs.getxattr(&OpContext::background(), app, name)),
                "{name}"
            );
            assert!(
                unsupported(fs.getxattr(&OpContext::background(), ROOT_INO, name)),
                "{name}"
            );
        }
    }

    #[test]
    fn a_secret_and_its_keys_carry_its_version_time_and_custom_metadata() {
        let store = Arc::new(MemoryStore::new());
        store.put("app", json!({"K": "v"}));
        store.put("app", json!({"K": "w"}));
        store.put_custom_metadata("app", "owner", "team-a");
        let fs = over(store, false);
        let app = fs
            .lookup(&OpContext::background(), ROOT_INO, "app")
            .unwrap()
            .ino;
        let k = fs.lookup(&OpContext::background(), app, "K").unwrap().ino;
        for ino in [app, k] {
            assert_eq!(
                fs.listxattr(&OpContext::background(), ino).unwrap(),
                [VERSION_XATTR, CREATED_XATTR, "user.secretfs.meta.owner"]
            );
            assert_eq!(
                fs.getxattr(&OpContext::background(), ino, VERSION_XATTR)
                    .unwrap(),
                b"2"
            );
            assert_eq!(
                fs.getxattr(&OpContext::background(), ino, "user.secretfs.meta.owner")
                    .unwrap(),
                b"team-a"
            );
            let t = fs
                .getxattr(&OpContext::background(), ino, CREATED_XATTR)
                .unwrap();
            humantime::parse_rfc3339(std::str::from_utf8(&t).unwrap()).unwrap();
        }
        // A version view: that version's number.
        let v1 = fs
            .lookup(&OpContext::background(), ROOT_INO, "app@1")
            .unwrap()
            .ino;
        assert_eq!(
            fs.getxattr(&OpContext::background(), v1, VERSION_XATTR)
                .unwrap(),
            b"1"
        );
    }

    #[test]
    fn setfattr_writes_one_entry_of_custom_metadata_and_keeps_the_rest() {
        let store = Arc::new(MemoryStore::new());
        store.put("app", json!({"K": "v"}));
        store.put_custom_metadata("app", "owner", "team-a");
        let fs = over(store.clone(), false);
        let app = fs
            .lookup(&OpContext::background(), ROOT_INO, "app")
            .unwrap()
            .ino;
        let k = fs.lookup(&OpContext::background(), app, "K").unwrap().ino;
        let writes = store.write_calls();
        fs.setxattr(
            &OpContext::background(),
            k,
            "user.secretfs.meta.description",
            "the app's key".as_bytes(),
            0,
        )
        .unwrap();
        assert_eq!(store.write_calls() - writes, 1);
        let custom = store.custom_metadata("app");
        assert_eq!(custom.get("owner").map(String::as_str), Some("team-a"));
        assert_eq!(
            custom.get("description").map(String::as_str),
            Some("the app's key")
        );
        // Seen at once.
        assert_eq!(
            fs.getxattr(
                &OpContext::background(),
                app,
                "user.secretfs.meta.description"
            )
            .unwrap(),
            "the app's key".as_bytes()
        );
        assert_eq!(
            fs.setxattr(
                &OpContext::background(),
                app,
                "user.secretfs.meta.owner",
                b"x",
                XATTR_CREATE
            )
            .unwrap_err()
            .errno(),
            libc::EEXIST
        );
        fs.removexattr(&OpContext::background(), app, "user.secretfs.meta.owner")
            .unwrap();
        assert!(!store.custom_metadata("app").contains_key("owner"));
        assert_eq!(
            fs.removexattr(&OpContext::background(), app, "user.secretfs.meta.owner")
                .unwrap_err()
                .errno(),
            libc::ENODATA
        );
        // The data is untouched, and so is its version.
        assert_eq!(store.version("app"), Some(1));
        // Only meta.* may be set.
        let errno = |r: Result<()>| r.unwrap_err().errno();
        assert_eq!(
            errno(fs.setxattr(&OpContext::background(), app, VERSION_XATTR, b"9", 0)),
            libc::EPERM
        );
        assert_eq!(
            errno(fs.setxattr(&OpContext::background(), app, "user.other", b"9", 0)),
            libc::ENOTSUP
        );
        let v1 = fs
            .lookup(&OpContext::background(), ROOT_INO, "app@1")
            .unwrap()
            .ino;
        assert_eq!(
            errno(fs.setxattr(
                &OpContext::background(),
                v1,
                "user.secretfs.meta.x",
                b"9",
                0
            )),
            libc::EROFS
        );
    }

    /// A store that keeps the metadata apart from the value, as AWS
    /// does: a read comes without it, `read_metadata` asks (counted).
    struct Apart {
        inner: Arc<MemoryStore>,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl crate::store::Forwarding for Apart {
        type Inner = MemoryStore;

        fn inner(&self) -> &MemoryStore {
            &self.inner
        }
        fn capabilities(&self) -> crate::store::Capabilities {
            crate::store::Capabilities {
                metadata_apart: true,
                ..self.inner.capabilities()
            }
        }
        fn read(
            &self,
            deadline: &crate::store::Deadline,
            path: &SecretPath,
        ) -> Result<Option<Secret>> {
            Ok(self.inner.read(deadline, path)?.map(|mut s| {
                s.custom_metadata.clear();
                s
            }))
        }
        fn read_metadata(
            &self,
            deadline: &crate::store::Deadline,
            path: &SecretPath,
        ) -> Result<Option<Metadata>> {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.inner.read(deadline, path)?.as_ref().map(Metadata::of))
        }
    }

    #[test]
    fn metadata_kept_apart_is_asked_only_for_its_attributes_once_per_ttl() {
        use crate::store::SecretStore as _;
        use std::sync::atomic::Ordering::SeqCst;

        let inner = Arc::new(MemoryStore::new());
        inner.put("app", json!({"K": "v"}));
        inner.put_custom_metadata("app", "owner", "team-a");
        let store = Arc::new(Apart {
            inner,
            asked: Default::default(),
        });
        let clock = ManualClock::new();
        let config = crate::fs::tests::config(Duration::from_secs(30));
        let fs = SecretFs::builder(store.clone(), SecretPath::root(), config, clock.clone())
            .build()
            .0;
        let ctx = OpContext::background();
        let app = fs.lookup(&ctx, ROOT_INO, "app").unwrap().ino;
        let k = fs.lookup(&ctx, app, "K").unwrap().ino;
        // The value and the version's attributes: not asked.
        assert_eq!(fs.getxattr(&ctx, k, VERSION_XATTR).unwrap(), b"1");
        assert_eq!(store.asked.load(SeqCst), 0);
        // Every attribute of both: asked once.
        for ino in [app, k] {
            let names = fs.listxattr(&ctx, ino).unwrap();
            assert_eq!(
                names,
                [VERSION_XATTR, CREATED_XATTR, "user.secretfs.meta.owner"]
            );
            for name in names {
                fs.getxattr(&ctx, ino, &name).unwrap();
            }
        }
        assert_eq!(store.asked.load(SeqCst), 1);
        // A change made elsewhere shows once the TTL is over.
        store.inner.put_custom_metadata("app", "tier", "gold");
        assert_eq!(
            fs.getxattr(&ctx, app, "user.secretfs.meta.tier")
                .unwrap_err()
                .errno(),
            libc::ENODATA
        );
        clock.advance(Duration::from_secs(31));
        assert_eq!(
            fs.getxattr(&ctx, app, "user.secretfs.meta.tier").unwrap(),
            b"gold"
        );
        assert_eq!(store.asked.load(SeqCst), 2);
        // One set through the mount shows at once; only the metadata is
        // read again (here through the inner store's read), not the value.
        let (reads, asked) = (store.inner.read_calls(), store.asked.load(SeqCst));
        fs.setxattr(&ctx, k, "user.secretfs.meta.tier", b"silver", 0)
            .unwrap();
        assert_eq!(
            fs.getxattr(&ctx, app, "user.secretfs.meta.tier").unwrap(),
            b"silver"
        );
        fs.removexattr(&ctx, app, "user.secretfs.meta.owner")
            .unwrap();
        assert_eq!(
            fs.listxattr(&ctx, k).unwrap(),
            [VERSION_XATTR, CREATED_XATTR, "user.secretfs.meta.tier"]
        );
        assert!(store.capabilities().metadata_apart);
        let asked_again = store.asked.load(SeqCst) - asked;
        assert_eq!(asked_again, 2, "once after each change");
        assert_eq!(store.inner.read_calls() - reads, asked_again as u64);
    }

    #[test]
    fn a_read_only_mount_refuses_and_kv1_has_no_metadata() {
        let store = Arc::new(MemoryStore::new());
        store.put("app", json!({"K": "v"}));
        let fs = over(store, true);
        let app = fs
            .lookup(&OpContext::background(), ROOT_INO, "app")
            .unwrap()
            .ino;
        let e = fs
            .setxattr(
                &OpContext::background(),
                app,
                "user.secretfs.meta.x",
                b"1",
                0,
            )
            .unwrap_err();
        assert_eq!(e.errno(), libc::EROFS);

        let store = Arc::new(MemoryStore::kv1());
        store.put("app", json!({"K": "v"}));
        let fs = over(store, false);
        let app = fs
            .lookup(&OpContext::background(), ROOT_INO, "app")
            .unwrap()
            .ino;
        assert!(fs
            .listxattr(&OpContext::background(), app)
            .unwrap()
            .is_empty());
        assert_eq!(
            fs.getxattr(&OpContext::background(), app, VERSION_XATTR)
                .unwrap_err()
                .errno(),
            libc::ENODATA
        );
        let e = fs
            .setxattr(
                &OpContext::background(),
                app,
                "user.secretfs.meta.x",
                b"1",
                0,
            )
            .unwrap_err();
        assert_eq!(e.errno(), libc::ENOTSUP);
    }
}
