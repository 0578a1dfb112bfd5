//! A lower layer on a server of its own (`--layer https://HOST/SOURCE`)
//! that did not answer when the mount started: the mount starts without
//! it, and it is connected when it answers. Until then every request fails
//! as a server that does not answer does ([`Error::Unavailable`]), which a
//! store of layers serves around (and probes, through `health`).

use crate::store::Deadline;
use std::sync::{Mutex, OnceLock};

use super::{
    Capabilities, Connected, Health, Listing, Metadata, Permissions, Precondition, Revision,
    Secret, SecretData, SecretPath, SecretStore,
};
use crate::error::{Error, Result};
use crate::start_error::StartError;

/// How a pending layer is connected: what `connect_layered` does for it.
pub type Connect = Box<dyn Fn() -> std::result::Result<Connected, StartError> + Send + Sync>;

/// A layer not connected yet.
pub struct Pending {
    /// The layer's SOURCE as given, for messages.
    name: String,
    connect: Connect,
    connected: OnceLock<Connected>,
    /// One connection attempt at a time.
    trying: Mutex<()>,
}

impl Pending {
    /// A layer named `name`, connected by `connect` when it answers.
    pub fn new(name: String, connect: Connect) -> Self {
        Pending {
            name,
            connect,
            connected: OnceLock::new(),
            trying: Mutex::new(()),
        }
    }

    /// The connected store and its folder, connecting now if it is not yet.
    fn get(&self) -> Result<&Connected> {
        if let Some(c) = self.connected.get() {
            return Ok(c);
        }
        let _one = self.trying.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = self.connected.get() {
            return Ok(c);
        }
        match (self.connect)() {
            Ok(c) => {
                tracing::info!(layer = %self.name, "the layer's server answers: connected");
                Ok(self.connected.get_or_init(|| c))
            }
            Err(e) => Err(Error::Unavailable(format!(
                "the layer {} is not connected yet: {e}",
                self.name
            ))),
        }
    }

    /// `path` in the connected store: below the SOURCE's folder.
    fn at(c: &Connected, path: &SecretPath) -> SecretPath {
        path.under(&c.root)
    }
}

impl SecretStore for Pending {
    /// What the store can do, once known (a layer below the top is never
    /// written, so nothing is promised before).
    fn capabilities(&self) -> Capabilities {
        self.connected
            .get()
            .map(|c| c.store.capabilities())
            .unwrap_or(Capabilities {
                check_and_set: false,
                versions: false,
                metadata: false,
                descriptions: false,
                metadata_apart: false,
                soft_delete: false,
                empty_secrets: false,
            })
    }

    fn list(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        let c = self.get()?;
        c.store.list(deadline, &Self::at(c, path))
    }

    fn read(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        let c = self.get()?;
        c.store.read(deadline, &Self::at(c, path))
    }

    fn write(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        let c = self.get()?;
        c.store.write(deadline, &Self::at(c, path), data, when)
    }

    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        let c = self.get()?;
        c.store.delete(deadline, &Self::at(c, path))
    }

    fn read_version(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        version: u64,
    ) -> Result<Option<Secret>> {
        let c = self.get()?;
        c.store.read_version(deadline, &Self::at(c, path), version)
    }

    fn read_metadata(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Metadata>> {
        let c = self.get()?;
        c.store.read_metadata(deadline, &Self::at(c, path))
    }

    fn health(&self, deadline: &Deadline) -> Result<Health> {
        self.get()?.store.health(deadline)
    }

    fn permissions(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Permissions>> {
        let c = self.get()?;
        c.store.permissions(deadline, &Self::at(c, path))
    }

    fn node(&self) -> Option<String> {
        self.connected.get().and_then(|c| c.store.node())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_pending_layer_fails_as_unreachable_until_it_connects_then_reads_below_its_folder() {
        let up = Arc::new(AtomicBool::new(false));
        let store = Arc::new(MemoryStore::kv2());
        store.put("prod/app", json!({"B": "prod"}));
        let (flag, s) = (up.clone(), store.clone());
        let pending = Pending::new(
            "http://b:8200/secret/prod".into(),
            Box::new(move || {
                if !flag.load(Ordering::SeqCst) {
                    return Err(StartError::Store(
                        "cannot reach Vault at http://b:8200".into(),
                    ));
                }
                Ok(Connected {
                    store: s.clone(),
                    root: SecretPath::parse("prod"),
                })
            }),
        );
        let err = pending
            .read(&Deadline::per_request(), &SecretPath::parse("app"))
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert!(pending.health(&Deadline::per_request()).is_err());
        up.store(true, Ordering::SeqCst);
        let secret = pending
            .read(&Deadline::per_request(), &SecretPath::parse("app"))
            .unwrap()
            .unwrap();
        assert_eq!(secret.keys.get("B").map(|v| v.expose()), Some(&b"prod"[..]));
    }
}
