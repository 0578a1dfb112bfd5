//! Several stores laid over one another, like overlayfs's lower
//! directories: `secretfs mount SOURCE --layer SOURCE2 --layer SOURCE3`.
//!
//! A path is a folder if any layer has that folder, a secret if any layer
//! has that secret; a secret's keys are the union of the layers' keys, the
//! top-most layer holding a key giving its value. Writes go to the top
//! layer, and only what differs from the layers below: a key written that
//! exists only below becomes an override in the top layer; a key removed
//! from the top layer uncovers the value below; removing a key that only a
//! lower layer holds is refused (`EPERM`), as is removing a secret a lower
//! layer holds.
//!
//! A merged secret's revision is the top layer's (`top:REV`, or `top:-`
//! when the top layer does not hold it), so check-and-set guards the one
//! layer that is written.

use std::sync::Arc;

use super::{
    Capabilities, Health, Listing, Permissions, Precondition, Revision, Secret, SecretData,
    SecretPath, SecretStore,
};
use crate::error::{Error, Result};

/// One layer: a store, the folder of its SOURCE, and the SOURCE's name.
pub struct Layer {
    /// The SOURCE as the user wrote it (what `user.secretfs.source` shows).
    pub name: String,
    /// Its store.
    pub store: Arc<dyn SecretStore>,
    /// The folder of the SOURCE in that store.
    pub root: SecretPath,
}

impl Layer {
    fn at(&self, path: &SecretPath) -> SecretPath {
        if path.is_root() {
            self.root.clone()
        } else if self.root.is_root() {
            path.clone()
        } else {
            SecretPath::parse(&format!("{}/{}", self.root, path))
        }
    }
}

/// The layers, bottom first; seen from the mount's root (the empty path).
pub struct Layered {
    layers: Vec<Layer>,
}

/// The revision string of a top layer that does not hold the secret.
const TOP_ABSENT: &str = "top:-";

impl Layered {
    /// Layers `layers` (bottom first, at least one).
    pub fn new(layers: Vec<Layer>) -> Result<Layered> {
        if layers.is_empty() {
            return Err(Error::Invalid("no layers".into()));
        }
        Ok(Layered { layers })
    }

    fn top(&self) -> &Layer {
        &self.layers[self.layers.len() - 1]
    }

    fn below_top(&self) -> &[Layer] {
        &self.layers[..self.layers.len() - 1]
    }

    /// The merge of `layers`' secrets at `path`: `None` when none holds it.
    fn merged(layers: &[Layer], path: &SecretPath) -> Result<Option<Merged>> {
        let mut out: Option<Merged> = None;
        for (i, layer) in layers.iter().enumerate() {
            let Some(secret) = layer.store.read(&layer.at(path))? else {
                continue;
            };
            let merged = out.get_or_insert_with(Merged::default);
            if i + 1 == layers.len() {
                // Metadata is the top layer's secret's (where it is set).
                merged.secret.custom_metadata = secret.custom_metadata.clone();
            }
            for (k, v) in secret.keys {
                merged.origin.insert(k.to_string(), i);
                merged.secret.keys.insert(k, v);
            }
            merged.secret.modified = merged.secret.modified.max(secret.modified);
            if i + 1 == layers.len() {
                merged.last = Some(secret.revision);
            }
        }
        Ok(out)
    }

    /// The SOURCE of the layer whose value `key` of the secret at `path`
    /// shows.
    pub fn origin_of(&self, path: &SecretPath, key: &str) -> Result<Option<&str>> {
        Ok(Self::merged(&self.layers, path)?
            .and_then(|m| m.origin.get(key).copied())
            .map(|i| self.layers[i].name.as_str()))
    }

    /// The SOURCE of the layer below the top that holds `key`.
    fn lower_holder(&self, below: &Option<Merged>, key: &str) -> String {
        below
            .as_ref()
            .and_then(|m| m.origin.get(key))
            .map(|&i| self.layers[i].name.clone())
            .unwrap_or_default()
    }
}

/// Several layers' secrets at one path, merged.
#[derive(Default)]
struct Merged {
    secret: Secret,
    /// Key → index of the layer its value comes from.
    origin: std::collections::BTreeMap<String, usize>,
    /// The last layer's revision, when the last layer holds the secret.
    last: Option<Option<Revision>>,
}

impl SecretStore for Layered {
    fn capabilities(&self) -> Capabilities {
        self.top().store.capabilities()
    }

    /// Changes are written to the top layer: its permissions decide.
    fn permissions(&self, path: &SecretPath) -> Result<Option<Permissions>> {
        let top = self.top();
        top.store.permissions(&top.at(path))
    }

    fn node(&self) -> Option<String> {
        self.top().store.node()
    }

    /// A version is the top layer's (merged revisions are `top:REV`).
    fn read_version(&self, path: &SecretPath, version: u64) -> Result<Option<Secret>> {
        let top = self.top();
        top.store.read_version(&top.at(path), version)
    }

    /// Metadata belongs to the secret in the top layer.
    fn set_custom_metadata(
        &self,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        let top = self.top();
        top.store.set_custom_metadata(&top.at(path), name, value)
    }

    fn list(&self, path: &SecretPath) -> Result<Option<Listing>> {
        let mut out: Option<Listing> = None;
        for layer in &self.layers {
            if let Some(listing) = layer.store.list(&layer.at(path))? {
                let all = out.get_or_insert_with(Vec::new);
                for e in listing {
                    if !all.contains(&e) {
                        all.push(e);
                    }
                }
            }
        }
        Ok(out)
    }

    fn read(&self, path: &SecretPath) -> Result<Option<Secret>> {
        let Some(Merged {
            mut secret, last, ..
        }) = Self::merged(&self.layers, path)?
        else {
            return Ok(None);
        };
        secret.revision = Some(match last {
            Some(Some(r)) => Revision::new(format!("top:{r}")),
            Some(None) => Revision::new("top:"),
            None => Revision::new(TOP_ABSENT),
        });
        Ok(Some(secret))
    }

    fn write(
        &self,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        let top = self.top();
        let at = top.at(path);
        let below = Self::merged(self.below_top(), path)?;
        let top_now = top.store.read(&at)?;
        let held_on_top = |k: &str| top_now.as_ref().is_some_and(|s| s.keys.contains_key(k));
        // A key that only a lower layer holds cannot be removed here.
        if let Some(lower) = &below {
            if let Some(key) = lower
                .secret
                .keys
                .keys()
                .find(|k| !data.contains_key(k.as_str()) && !held_on_top(k))
            {
                tracing::warn!(path = %path, key = %key, layer = %self.lower_holder(&below, key), "a key only a lower layer holds cannot be removed");
                return Err(Error::NotPermitted("the key comes from a lower layer"));
            }
        }
        // What the top layer must hold: its own keys, and what differs
        // from below.
        let own: SecretData = data
            .iter()
            .filter(|(k, v)| {
                held_on_top(k)
                    || below.as_ref().and_then(|l| l.secret.keys.get(k.as_str())) != Some(*v)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if top_now.is_none() && own.is_empty() && below.is_some() {
            // Nothing of the top layer's own: nothing to write.
            return Ok(Some(Revision::new(TOP_ABSENT)));
        }
        let when = match when {
            Precondition::At(r) if r.as_str() == TOP_ABSENT => Precondition::Absent,
            Precondition::At(r) => match r.as_str().strip_prefix("top:") {
                Some(rev) if !rev.is_empty() => Precondition::At(Revision::new(rev)),
                _ => Precondition::Any,
            },
            other => other.clone(),
        };
        let revision = top.store.write(&at, &own, &when)?;
        Ok(Some(Revision::new(format!(
            "top:{}",
            revision.map(|r| r.to_string()).unwrap_or_default()
        ))))
    }

    fn delete(&self, path: &SecretPath) -> Result<()> {
        for layer in self.below_top() {
            if layer.store.read(&layer.at(path))?.is_some() {
                tracing::warn!(path = %path, layer = %layer.name, "a secret a lower layer holds cannot be removed");
                return Err(Error::NotPermitted("the secret comes from a lower layer"));
            }
        }
        let top = self.top();
        top.store.delete(&top.at(path))
    }

    fn health(&self) -> Result<Health> {
        let mut health = Health::default();
        for layer in &self.layers {
            let h = layer.store.health()?;
            health.credential_ttl = match (health.credential_ttl, h.credential_ttl) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(health)
    }

    fn origin(&self, path: &SecretPath, key: &str) -> Result<Option<String>> {
        Ok(self.origin_of(path, key)?.map(str::to_string))
    }

    fn rereads_after_write(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{KeyName, SecretValue};
    use serde_json::json;

    /// project → environment → service, in three stores.
    fn three() -> (Layered, Vec<Arc<MemoryStore>>) {
        let stores: Vec<Arc<MemoryStore>> = (0..3).map(|_| Arc::new(MemoryStore::kv2())).collect();
        stores[0].put(
            "shop/api",
            json!({"A": "project", "B": "project", "C": "project"}),
        );
        stores[1].put("shop/api", json!({"B": "env"}));
        stores[2].put("shop/api", json!({"C": "service"}));
        stores[0].put("shop/only-below", json!({"X": "x"}));
        let layered = Layered::new(
            ["secret/p", "secret/e", "secret/s"]
                .iter()
                .zip(&stores)
                .map(|(name, s)| Layer {
                    name: name.to_string(),
                    store: s.clone(),
                    root: SecretPath::root(),
                })
                .collect(),
        )
        .unwrap();
        (layered, stores)
    }

    fn keys(s: &Secret) -> Vec<(String, String)> {
        s.keys
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.expose()).into_owned(),
                )
            })
            .collect()
    }

    fn path(p: &str) -> SecretPath {
        SecretPath::parse(p)
    }

    #[test]
    fn a_secret_shows_the_union_of_its_keys_the_top_most_value_winning() {
        let (l, _) = three();
        let s = l.read(&path("shop/api")).unwrap().unwrap();
        assert_eq!(
            keys(&s),
            [("A", "project"), ("B", "env"), ("C", "service")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            l.origin(&path("shop/api"), "B").unwrap().as_deref(),
            Some("secret/e")
        );
        assert_eq!(
            l.origin(&path("shop/api"), "A").unwrap().as_deref(),
            Some("secret/p")
        );
        let names: Vec<String> = l
            .list(&path("shop"))
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["api", "only-below"]);
    }

    fn change(l: &Layered, p: &str, f: impl FnOnce(&mut SecretData)) -> Result<Option<Revision>> {
        let latest = l.read(&path(p)).unwrap();
        let when = match latest.as_ref().and_then(|s| s.revision.clone()) {
            Some(r) => Precondition::At(r),
            None => Precondition::Absent,
        };
        let mut data = latest.map(|s| s.keys).unwrap_or_default();
        f(&mut data);
        l.write(&path(p), &data, &when)
    }

    #[test]
    fn a_write_lands_in_the_top_layer_only_and_holds_only_what_differs() {
        let (l, stores) = three();
        change(&l, "shop/api", |d| {
            d.insert(
                KeyName::from("A"),
                SecretValue::written(b"mine".to_vec(), None).unwrap(),
            );
        })
        .unwrap();
        assert_eq!(
            stores[2].get("shop/api"),
            Some(json!({"A": "mine", "C": "service"}))
        );
        assert_eq!(
            stores[0].get("shop/api"),
            Some(json!({"A": "project", "B": "project", "C": "project"}))
        );
        assert_eq!(
            l.origin(&path("shop/api"), "A").unwrap().as_deref(),
            Some("secret/s")
        );
        // A secret only below: the override creates it in the top layer.
        change(&l, "shop/only-below", |d| {
            d.insert(
                KeyName::from("Y"),
                SecretValue::written(b"y".to_vec(), None).unwrap(),
            );
        })
        .unwrap();
        assert_eq!(stores[2].get("shop/only-below"), Some(json!({"Y": "y"})));
    }

    #[test]
    fn removing_a_top_key_uncovers_the_value_below() {
        let (l, stores) = three();
        change(&l, "shop/api", |d| {
            d.remove("C");
        })
        .unwrap();
        assert_eq!(stores[2].get("shop/api"), Some(json!({})));
        let s = l.read(&path("shop/api")).unwrap().unwrap();
        assert!(keys(&s).contains(&("C".to_string(), "project".to_string())));
    }

    #[test]
    fn removing_a_key_only_a_lower_layer_holds_is_refused_and_changes_nothing() {
        let (l, stores) = three();
        let err = change(&l, "shop/api", |d| {
            d.remove("A");
        })
        .unwrap_err();
        assert_eq!(err.errno(), libc::EPERM);
        assert_eq!(stores[2].get("shop/api"), Some(json!({"C": "service"})));
        assert_eq!(
            l.delete(&path("shop/only-below")).unwrap_err().errno(),
            libc::EPERM
        );
    }

    #[test]
    fn check_and_set_guards_the_top_layer() {
        let (l, stores) = three();
        let stale = l
            .read(&path("shop/api"))
            .unwrap()
            .unwrap()
            .revision
            .unwrap();
        stores[2].put("shop/api", json!({"C": "changed meanwhile"}));
        let data = l.read(&path("shop/api")).unwrap().unwrap().keys;
        let err = l
            .write(&path("shop/api"), &data, &Precondition::At(stale))
            .unwrap_err();
        assert!(matches!(err, Error::CasConflict), "{err:?}");
    }
}
