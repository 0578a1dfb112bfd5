//! Soft deletes, hidden: a store whose deletes are soft (KV v2) keeps
//! listing a deleted secret, and a folder that holds only deleted secrets.
//! [`HideDeleted`] wraps such a store and leaves out of its listings what
//! was deleted through it, until a read or a write finds it live again
//! (`bao kv undelete`, a new version). Secrets deleted by others may still
//! be listed: the core shows those only when they read (see
//! docs/SEMANTICS.md).

use crate::store::Deadline;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use super::{Listing, Precondition, Revision, Secret, SecretData, SecretPath, SecretStore};
use crate::error::Result;

/// How deep below a listed folder deleted secrets are looked for.
const MAX_DEPTH: usize = 32;

/// A store whose listings leave out the secrets deleted through it.
pub struct HideDeleted<S> {
    inner: S,
    /// Secrets deleted through us and not seen live since.
    deleted: Mutex<HashSet<SecretPath>>,
}

impl<S: SecretStore> HideDeleted<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        HideDeleted {
            inner,
            deleted: Mutex::new(HashSet::new()),
        }
    }

    fn marks(&self) -> MutexGuard<'_, HashSet<SecretPath>> {
        self.deleted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn any_below(&self, folder: &SecretPath) -> bool {
        let prefix = format!("{}/", folder.as_str());
        self.marks()
            .iter()
            .any(|d| folder.is_root() || d.as_str().starts_with(&prefix))
    }

    /// Whether the listed secret at `path` still stands: not deleted
    /// through us, or live again since.
    fn secret_stands(&self, deadline: &Deadline, path: &SecretPath) -> Result<bool> {
        if !self.marks().contains(path) {
            return Ok(true);
        }
        Ok(SecretStore::read(self, deadline, path)?.is_some())
    }

    /// Whether the folder at `path` holds nothing but secrets deleted
    /// through us (at any depth).
    fn hollow(&self, deadline: &Deadline, path: &SecretPath, depth: usize) -> Result<bool> {
        if depth > MAX_DEPTH || !self.any_below(path) {
            return Ok(false);
        }
        match self.inner.list(deadline, path)? {
            None => Ok(true),
            // It may hold names its listing leaves out.
            Some(listing) if listing.partial => Ok(false),
            Some(listing) => {
                for e in &listing {
                    if self.stands(deadline, path, e, depth + 1)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }

    fn stands(
        &self,
        deadline: &Deadline,
        folder: &SecretPath,
        e: &super::ListEntry,
        depth: usize,
    ) -> Result<bool> {
        let path = folder.join(&e.name);
        if e.folder {
            Ok(!self.hollow(deadline, &path, depth)?)
        } else {
            self.secret_stands(deadline, &path)
        }
    }
}

impl<S: SecretStore> super::Forwarding for HideDeleted<S> {
    type Inner = S;

    fn inner(&self) -> &S {
        &self.inner
    }

    fn list(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        let Some(listing) = self.inner.list(deadline, path)? else {
            return Ok(None);
        };
        if !self.any_below(path) {
            return Ok(Some(listing));
        }
        let mut kept = Listing {
            entries: Vec::with_capacity(listing.len()),
            partial: listing.partial,
        };
        for e in listing {
            if self.stands(deadline, path, &e, 0)? {
                kept.entries.push(e);
            }
        }
        // No folder is left when nothing stands in it; what is left of a
        // partial listing is partial still, even with nothing left.
        Ok((!kept.is_empty() || kept.partial).then_some(kept))
    }

    fn read(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        let secret = self.inner.read(deadline, path)?;
        if secret.is_some() {
            self.marks().remove(path);
        }
        Ok(secret)
    }

    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        let revision = self.inner.write(deadline, path, data, when)?;
        self.marks().remove(path);
        Ok(revision)
    }

    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        self.inner.delete(deadline, path)?;
        self.marks().insert(path.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use serde_json::json;
    use std::sync::Arc;

    fn names(store: &dyn SecretStore, path: &str) -> Vec<String> {
        store
            .list(&Deadline::per_request(), &SecretPath::parse(path))
            .unwrap()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect()
    }

    /// Over layers whose bottom one may not list: what the listing names
    /// goes when deleted, and the listing still says it is partial.
    #[test]
    fn a_partial_listing_stays_partial_when_what_it_names_is_deleted() {
        use crate::store::layered::{Layer, Layered};
        use crate::store::memory::{Call, Scope};
        let (bottom, top) = (Arc::new(MemoryStore::kv2()), Arc::new(MemoryStore::kv2()));
        top.put("app/db", json!({"K": "v"}));
        bottom.fail(
            Call::List,
            Scope::Everywhere,
            crate::error::Error::PermissionDenied("403".into()),
        );
        let layer = |name: &str, store: &Arc<MemoryStore>| Layer {
            name: name.to_string(),
            store: store.clone(),
            root: SecretPath::root(),
        };
        let layered = Layered::new(vec![layer("bottom", &bottom), layer("top", &top)]).unwrap();
        let store = HideDeleted::new(Arc::new(layered));
        let listing = |store: &HideDeleted<_>| {
            store
                .list(&Deadline::per_request(), &SecretPath::parse("app"))
                .unwrap()
                .unwrap()
        };
        let before = listing(&store);
        assert!(before.partial && before.len() == 1, "{before:?}");
        store
            .delete(&Deadline::per_request(), &SecretPath::parse("app/db"))
            .unwrap();
        assert_eq!(listing(&store), Listing::partial(Vec::new()));
    }

    #[test]
    fn a_secret_deleted_through_it_leaves_the_listing_until_it_lives_again() {
        let memory = Arc::new(MemoryStore::kv2());
        memory.put("app/db", json!({"K": "v"}));
        memory.put("app/api", json!({"K": "v"}));
        let store = HideDeleted::new(memory.clone());
        store
            .delete(&Deadline::per_request(), &SecretPath::parse("app/db"))
            .unwrap();
        // The store itself still lists it (KV v2 keeps the metadata).
        assert_eq!(names(&*memory, "app"), ["api", "db"]);
        assert_eq!(names(&store, "app"), ["api"]);
        memory.undelete("app/db");
        assert_eq!(names(&store, "app"), ["api", "db"]);
    }

    #[test]
    fn a_folder_holding_only_deleted_secrets_leaves_the_listing() {
        let memory = Arc::new(MemoryStore::kv2());
        memory.put("app/db/one", json!({"K": "v"}));
        memory.put("app/db/two/three", json!({"K": "v"}));
        memory.put("other", json!({"K": "v"}));
        let store = HideDeleted::new(memory.clone());
        store
            .delete(&Deadline::per_request(), &SecretPath::parse("app/db/one"))
            .unwrap();
        assert_eq!(
            names(&store, ""),
            ["app/", "other"].map(|n| n.trim_end_matches('/'))
        );
        store
            .delete(
                &Deadline::per_request(),
                &SecretPath::parse("app/db/two/three"),
            )
            .unwrap();
        assert_eq!(names(&store, ""), ["other"]);
        assert!(store
            .list(&Deadline::per_request(), &SecretPath::parse("app"))
            .unwrap()
            .is_none());
        // Written again: back.
        let data = SecretData::new();
        store
            .write(
                &Deadline::per_request(),
                &SecretPath::parse("app/db/one"),
                &data,
                &Precondition::Any,
            )
            .unwrap();
        assert_eq!(names(&store, ""), ["app", "other"]);
    }
}
