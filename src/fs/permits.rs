//! Saying no before a change starts: what the store's policy lets the
//! credential do to a secret (Vault's `sys/capabilities-self`, cached like
//! other answers) is checked when a file is opened for writing or created,
//! and before an unlink, a rename or a truncation, so that a refusal
//! reaches the program there (`EACCES`) — shells ignore what `close()`
//! says. When the store cannot tell, the change goes ahead and the commit
//! says whether it was allowed, as before.

use super::SecretFs;
use crate::error::{Error, Result};
use crate::fs::OpContext;
use crate::store::SecretPath;

impl SecretFs {
    /// Refuses a write of the secret at `secret` that the credential may
    /// not make: a new version of an existing secret needs `update`; a
    /// secret not known to exist needs `create` (or `update`, which the
    /// store may find it needs after all).
    pub(super) fn may_write(&self, ctx: &OpContext, secret: &SecretPath) -> Result<()> {
        let Some(may) = self.source.permissions(ctx, secret)? else {
            return Ok(());
        };
        let exists = match self.secret(ctx, secret) {
            Ok(cached) => Some(cached.value.is_some()),
            Err(Error::WouldBlock) => return Err(Error::WouldBlock),
            // A policy may allow writing what it does not allow reading.
            Err(_) => None,
        };
        let allowed = match exists {
            Some(true) => may.update,
            _ => may.create || may.update,
        };
        if allowed {
            Ok(())
        } else {
            Err(Self::refused(secret, "write"))
        }
    }

    /// Refuses a delete of the secret at `secret` that the credential may
    /// not make.
    pub(super) fn may_delete(&self, ctx: &OpContext, secret: &SecretPath) -> Result<()> {
        match self.source.permissions(ctx, secret)? {
            Some(may) if !may.delete => Err(Self::refused(secret, "delete")),
            _ => Ok(()),
        }
    }

    fn refused(secret: &SecretPath, what: &str) -> Error {
        Error::PermissionDenied(format!(
            "the token's policy does not allow it to {what} {secret} (sys/capabilities-self)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::super::clock::ManualClock;
    use super::super::inode::{Ino, ROOT_INO};
    use super::super::tests::config;
    use super::*;
    use crate::store::memory::{MemoryStore, Scope};
    use crate::store::Permissions;

    fn fs_over(store: &Arc<MemoryStore>) -> Arc<SecretFs> {
        SecretFs::builder(
            store.clone(),
            SecretPath::root(),
            config(Duration::from_secs(30)),
            ManualClock::new(),
        )
        .build()
        .0
    }

    fn ino(fs: &SecretFs, path: &str) -> Ino {
        path.split('/').fold(ROOT_INO, |at, name| {
            fs.lookup(&OpContext::background(), at, name).unwrap().ino
        })
    }

    fn store() -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore::new());
        store.put("app/db", json!({"PASSWORD": "old", "USER": "app"}));
        store.put("app/other", json!({"K": "v"}));
        store
    }

    fn denied<T: std::fmt::Debug>(r: Result<T>) {
        match r {
            Err(e) => assert_eq!(e.errno(), libc::EACCES, "{e}"),
            Ok(v) => panic!("allowed: {v:?}"),
        }
    }

    #[test]
    fn a_read_only_policy_refuses_every_change_before_it_starts() {
        let store = store();
        store.restrict(Scope::Under("app/db"), Some(Permissions::read_only()));
        let fs = fs_over(&store);
        let db = ino(&fs, "app/db");
        let key = ino(&fs, "app/db/PASSWORD");
        denied(fs.open(&OpContext::background(), key, true, true));
        denied(fs.open(&OpContext::background(), key, true, false));
        denied(fs.create(&OpContext::background(), db, "NEW"));
        denied(fs.unlink(&OpContext::background(), db, "USER"));
        denied(fs.rename(&OpContext::background(), db, "USER", db, "LOGIN", false));
        // An editor's backup (KEY~) is a change on its way: refused too.
        denied(fs.rename(&OpContext::background(), db, "USER", db, "USER~", false));
        denied(fs.setattr(&OpContext::background(), key, None, Some(0), None, None));
        assert!(
            fs.lookup(&OpContext::background(), db, "NEW").is_err(),
            "a refused create left a name"
        );
        assert_eq!(
            fs.lookup(&OpContext::background(), db, "USER")
                .unwrap()
                .size,
            3
        );
        assert_eq!(store.write_calls(), 0);
        assert_eq!(
            store.get("app/db").unwrap(),
            json!({"PASSWORD": "old", "USER": "app"})
        );
        // Reads, and other secrets, are untouched.
        let fh = fs
            .open(&OpContext::background(), key, false, false)
            .unwrap();
        fs.release(&OpContext::background(), fh);
        let other = ino(&fs, "app/other/K");
        let fh = fs
            .open(&OpContext::background(), other, true, true)
            .unwrap();
        fs.write_handle(fh, 0, b"new").unwrap();
        fs.flush(&OpContext::background(), fh).unwrap();
        fs.release(&OpContext::background(), fh);
        assert_eq!(store.get("app/other").unwrap(), json!({"K": "new"}));
    }

    #[test]
    fn create_only_allows_a_new_secret_but_not_a_new_version() {
        let store = store();
        let may = Permissions {
            create: true,
            ..Permissions::default()
        };
        store.restrict(Scope::Everywhere, Some(may));
        let fs = fs_over(&store);
        denied(fs.open(
            &OpContext::background(),
            ino(&fs, "app/db/USER"),
            true,
            true,
        ));
        let app = ino(&fs, "app");
        let dir = fs
            .mkdir(&OpContext::background(), app, "fresh")
            .unwrap()
            .ino;
        let (_, fh) = fs.create(&OpContext::background(), dir, "K").unwrap();
        fs.write_handle(fh, 0, b"v").unwrap();
        fs.flush(&OpContext::background(), fh).unwrap();
        fs.release(&OpContext::background(), fh);
        assert_eq!(store.get("app/fresh").unwrap(), json!({"K": "v"}));
        // rmdir (of a secret with no keys) needs delete.
        store.put("app/empty", json!({}));
        denied(fs.rmdir(&OpContext::background(), app, "empty"));
        assert!(store.get("app/empty").is_some());
    }

    #[test]
    fn when_the_store_cannot_say_the_commit_refuses_as_before() {
        let store = store();
        store.restrict(Scope::Under("app"), None);
        let fs = fs_over(&store);
        let key = ino(&fs, "app/db/USER");
        let fh = fs.open(&OpContext::background(), key, true, true).unwrap();
        fs.write_handle(fh, 0, b"x").unwrap();
        denied(fs.flush(&OpContext::background(), fh));
        fs.release(&OpContext::background(), fh);
        assert_eq!(store.get("app/db").unwrap()["USER"], json!("app"));
    }

    #[test]
    fn what_the_token_may_do_is_asked_once_per_ttl() {
        let store = store();
        store.restrict(Scope::Under("app/db"), Some(Permissions::read_only()));
        let fs = fs_over(&store);
        let key = ino(&fs, "app/db/USER");
        for _ in 0..5 {
            denied(fs.open(&OpContext::background(), key, true, true));
        }
        assert_eq!(store.permission_asks(), 1);
    }
}
