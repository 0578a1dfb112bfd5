//! Stores that wrap another and change one or two things about it:
//! [`Forwarding`] passes every other [`SecretStore`] method on to the
//! inner store, so a wrapper writes only [`Forwarding::inner`] and what it
//! changes.
//!
//! The list of methods is kept here twice (the forwarding defaults and the
//! `SecretStore` impl over them): a method added to `SecretStore` with a
//! default of its own would otherwise be left to that default in every
//! wrapper, so clippy's `missing_trait_methods` is denied on the impl
//! (clippy runs with `-D warnings` before every commit), and the impl
//! cannot name a method `Forwarding` lacks.

use super::{
    Capabilities, Degraded, Health, Listing, Metadata, Permissions, Precondition, Revision, Secret,
    SecretData, SecretPath, SecretStore,
};
use crate::error::Result;
use crate::store::Deadline;

/// A store made of an inner one: every method passes the call on to
/// [`Forwarding::inner`] unless the wrapper says otherwise. Implementing
/// it makes the type a [`SecretStore`]. Name it by its path in the impl
/// (`impl store::Forwarding for X`) rather than importing it: where both
/// traits are in scope, `x.read(..)` names two methods.
pub trait Forwarding: Send + Sync + 'static {
    /// The store wrapped.
    type Inner: SecretStore + ?Sized;

    /// The store calls are passed on to.
    fn inner(&self) -> &Self::Inner;

    /// [`SecretStore::capabilities`].
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }

    /// [`SecretStore::list`].
    fn list(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        self.inner().list(deadline, path)
    }

    /// [`SecretStore::read`].
    fn read(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        self.inner().read(deadline, path)
    }

    /// [`SecretStore::write`].
    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        self.inner().write(deadline, path, data, when)
    }

    /// [`SecretStore::delete`].
    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        self.inner().delete(deadline, path)
    }

    /// [`SecretStore::read_version`].
    fn read_version(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        version: u64,
    ) -> Result<Option<Secret>> {
        self.inner().read_version(deadline, path, version)
    }

    /// [`SecretStore::set_custom_metadata`].
    fn set_custom_metadata(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        self.inner()
            .set_custom_metadata(deadline, path, name, value)
    }

    /// [`SecretStore::set_description`].
    fn set_description(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        value: Option<&str>,
    ) -> Result<()> {
        self.inner().set_description(deadline, path, value)
    }

    /// [`SecretStore::read_metadata`].
    fn read_metadata(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Metadata>> {
        self.inner().read_metadata(deadline, path)
    }

    /// [`SecretStore::health`].
    fn health(&self, deadline: &Deadline) -> Result<Health> {
        self.inner().health(deadline)
    }

    /// [`SecretStore::permissions`].
    fn permissions(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Permissions>> {
        self.inner().permissions(deadline, path)
    }

    /// [`SecretStore::node`].
    fn node(&self) -> Option<String> {
        self.inner().node()
    }

    /// [`SecretStore::origin`].
    fn origin(&self, deadline: &Deadline, path: &SecretPath, key: &str) -> Result<Option<String>> {
        self.inner().origin(deadline, path, key)
    }

    /// [`SecretStore::rereads_after_write`].
    fn rereads_after_write(&self) -> bool {
        self.inner().rereads_after_write()
    }

    /// [`SecretStore::degraded`].
    fn degraded(&self) -> Vec<Degraded> {
        self.inner().degraded()
    }
}

/// A forwarding store is a store: each method is the wrapper's.
#[deny(clippy::missing_trait_methods)]
impl<T: Forwarding> SecretStore for T {
    fn capabilities(&self) -> Capabilities {
        Forwarding::capabilities(self)
    }
    fn list(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        Forwarding::list(self, deadline, path)
    }
    fn read(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        Forwarding::read(self, deadline, path)
    }
    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        Forwarding::write(self, deadline, path, data, when)
    }
    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        Forwarding::delete(self, deadline, path)
    }
    fn read_version(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        version: u64,
    ) -> Result<Option<Secret>> {
        Forwarding::read_version(self, deadline, path, version)
    }
    fn set_custom_metadata(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        Forwarding::set_custom_metadata(self, deadline, path, name, value)
    }
    fn set_description(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        value: Option<&str>,
    ) -> Result<()> {
        Forwarding::set_description(self, deadline, path, value)
    }
    fn read_metadata(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Metadata>> {
        Forwarding::read_metadata(self, deadline, path)
    }
    fn health(&self, deadline: &Deadline) -> Result<Health> {
        Forwarding::health(self, deadline)
    }
    fn permissions(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Permissions>> {
        Forwarding::permissions(self, deadline, path)
    }
    fn node(&self) -> Option<String> {
        Forwarding::node(self)
    }
    fn origin(&self, deadline: &Deadline, path: &SecretPath, key: &str) -> Result<Option<String>> {
        Forwarding::origin(self, deadline, path, key)
    }
    fn rereads_after_write(&self) -> bool {
        Forwarding::rereads_after_write(self)
    }
    fn degraded(&self) -> Vec<Degraded> {
        Forwarding::degraded(self)
    }
}

/// A shared store is a store.
impl<S: SecretStore + ?Sized> Forwarding for std::sync::Arc<S> {
    type Inner = S;

    fn inner(&self) -> &S {
        self
    }
}
