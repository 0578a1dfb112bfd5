//! Changes through the cache: a write, a delete or a change of metadata
//! goes to the store, and on success the cache knows at once
//! (read-your-writes): the written version is held, the listings above
//! that do not name it yet are fetched again.

use std::sync::Arc;
use std::time::SystemTime;

use super::{named, Source};
use crate::error::Result;
use crate::fs::context::OpContext;
use crate::store::{Precondition, Secret, SecretData, SecretPath};

impl Source {
    /// `secret`, just read from the store, is what a change would have
    /// written: the cache holds it now, as after a write.
    pub fn found(&self, path: &SecretPath, mut secret: Secret) -> Result<Arc<Secret>> {
        secret.modified = Some(self.modified_time(path, &secret));
        let cached = self.secrets.insert(path.clone(), Some(secret));
        cached
            .value
            .ok_or_else(|| crate::error::Error::Protocol("a read left nothing cached".into()))
    }

    /// Drops the cached copy of the secret at `path` (and the listings
    /// above that do not name it yet): what the store holds is read again
    /// before it is served, stale-if-error included.
    pub fn forget_secret(&self, path: &SecretPath) {
        self.secrets.invalidate(path);
        self.metadata.invalidate(path);
        self.note_written(path);
    }

    /// Writes `data` as the secret at `path` if `when` holds. On success
    /// the cache holds it at once (read-your-writes) and the listings above
    /// are fetched again; the version written is returned.
    pub fn write(
        &self,
        ctx: &OpContext,
        path: &SecretPath,
        data: SecretData,
        when: &Precondition,
    ) -> Result<Arc<Secret>> {
        self.may_change(ctx, path)?;
        let revision = self.noted(self.store.write(ctx.deadline(), path, &data, when))?;
        let fresh = if self.store.rereads_after_write() {
            // Layers: what the write left is not only what was written.
            self.noted(self.fetch_secret(ctx.deadline(), path))?
        } else {
            // A write of the data leaves the secret's metadata as it was.
            let (custom_metadata, description) = self
                .secrets
                .last(path)
                .map(|s| (s.custom_metadata.clone(), s.description.clone()))
                .unwrap_or_default();
            Some(Secret {
                keys: data,
                revision,
                modified: Some(SystemTime::now()),
                custom_metadata,
                description,
                withheld: Default::default(),
            })
        };
        let cached = self.secrets.insert(path.clone(), fresh);
        // A secret this write made may have had no metadata held for it.
        self.metadata.invalidate(path);
        self.note_written(path);
        cached
            .value
            .ok_or_else(|| crate::error::Error::Protocol("a write left nothing cached".into()))
    }

    /// Sets (`Some`) or removes (`None`) one entry of the custom metadata
    /// of the secret at `path`. What holds the old metadata is dropped:
    /// the next read fetches it anew ([`Source::metadata_changed`]).
    pub fn set_custom_metadata(
        &self,
        ctx: &OpContext,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        self.may_change(ctx, path)?;
        self.noted(
            self.store
                .set_custom_metadata(ctx.deadline(), path, name, value),
        )?;
        self.metadata_changed(path);
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) the description of the secret at
    /// `path`. What holds the old one is dropped, as for the custom
    /// metadata.
    pub fn set_description(
        &self,
        ctx: &OpContext,
        path: &SecretPath,
        value: Option<&str>,
    ) -> Result<()> {
        self.may_change(ctx, path)?;
        self.noted(self.store.set_description(ctx.deadline(), path, value))?;
        self.metadata_changed(path);
        Ok(())
    }

    /// The metadata of the secret at `path` was changed through the
    /// mount: what holds the old is dropped, to be read again when next
    /// wanted. On a store that keeps it apart, that is the metadata
    /// cache alone (the value did not change); else the cached secret,
    /// which it came with.
    fn metadata_changed(&self, path: &SecretPath) {
        if self.capabilities().metadata_apart {
            self.metadata.invalidate(path);
        } else {
            self.secrets.invalidate(path);
        }
    }

    /// Whether a change of the secret at `path` may be sent now: only the
    /// latest version changes, not while the store is down (fails at
    /// once), and only by an operation that may wait on the store.
    fn may_change(&self, ctx: &OpContext, path: &SecretPath) -> Result<()> {
        Self::latest_only(path)?;
        if self.is_down() {
            return Err(Self::down_error());
        }
        ctx.may_wait()
    }

    /// Deletes the secret at `path`; the cache knows at once.
    pub fn delete(&self, ctx: &OpContext, path: &SecretPath) -> Result<()> {
        self.may_change(ctx, path)?;
        self.noted(self.store.delete(ctx.deadline(), path))?;
        self.forget_deleted(path);
        Ok(())
    }

    /// Records that nothing is at `path` any more (a directory removed):
    /// its secret and listing are gone, and the listings above change.
    pub fn forget_deleted(&self, path: &SecretPath) {
        self.secrets.insert(path.clone(), None);
        self.metadata.invalidate(path);
        self.listings.invalidate(path);
        self.forget_listings_above(path);
    }

    /// A secret was written at `path`: each listing above must name it (a
    /// new secret, a new folder on the way). Only listings that do not yet
    /// are fetched again; the others stay, and with them what
    /// stale-if-error serves should the store go away right after. Every
    /// level is checked: a listing below that names its child says
    /// nothing of the levels above (an old copy may name what a fresher
    /// listing above does not yet show as a folder).
    fn note_written(&self, path: &SecretPath) {
        let mut child = path.clone();
        let mut folder = false;
        while let Some((parent, name)) = child.split_last() {
            let named = self
                .listings
                .last(&parent)
                .is_some_and(|l| named(&l, name).iter().any(|e| e.folder == folder));
            if !named {
                self.listings.invalidate(&parent);
            }
            child = parent;
            folder = true;
        }
    }

    fn forget_listings_above(&self, path: &SecretPath) {
        let mut p = path.split_last().map(|(parent, _)| parent);
        while let Some(dir) = p {
            self.listings.invalidate(&dir);
            p = dir.split_last().map(|(parent, _)| parent);
        }
    }
}
