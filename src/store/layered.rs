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
//!
//! A lower layer that cannot be read (the store says 403, or it does not
//! answer) degrades only what depends on it: the other layers are served.
//! A key keeps its value when a readable layer holds it and no unreadable
//! layer sits above that one (an unreadable layer below is overridden
//! anyway); a key a readable layer holds under an unreadable one is
//! withheld ([`Secret::withheld`]: it is listed, and any use of its file
//! fails with [`Error::LayerUnreadable`]); what only an unreadable layer
//! could hold does not show. The top layer is the mount's own: its errors
//! are the mount's, as without layers. Each layer's trouble is logged when
//! it starts and when it ends (not per request), and `secretfs status`
//! shows it. A probe asks the layer again until the trouble is over: a
//! layer that does not answer is not asked anything else meanwhile.

use crate::store::Deadline;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{
    Capabilities, Degraded, Health, Listing, Metadata, Permissions, Precondition, Revision, Secret,
    SecretData, SecretPath, SecretStore,
};
use crate::error::{Error, Result};
use trouble::{is_outage, probe, LayerState, Request};

mod trouble;

/// One layer: a store, the folder of its SOURCE, and the SOURCE's name.
#[derive(Clone)]
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
        path.under(&self.root)
    }
}

/// The layers, bottom first; seen from the mount's root (the empty path).
pub struct Layered {
    layers: Vec<Layer>,
    /// One per layer (the top's stays unused: its errors are the mount's).
    states: Vec<Arc<LayerState>>,
}

/// The revision string of a top layer that does not hold the secret.
const TOP_ABSENT: &str = "top:-";

/// A layer's answer: known, or not (why).
enum Answer<T> {
    Known(T),
    Unknown(Error),
}

impl Layered {
    /// Layers `layers` (bottom first, at least one).
    pub fn new(layers: Vec<Layer>) -> Result<Layered> {
        if layers.is_empty() {
            return Err(Error::Invalid("no layers".into()));
        }
        let states = layers.iter().map(|_| Arc::default()).collect();
        Ok(Layered { layers, states })
    }

    fn top(&self) -> &Layer {
        &self.layers[self.layers.len() - 1]
    }

    fn top_index(&self) -> usize {
        self.layers.len() - 1
    }

    /// Asks layer `i` `request` (done by `f`): the top layer's errors
    /// are the caller's; a lower layer that refuses or does not answer
    /// gives an unknown answer, noted for status and probed.
    fn ask<T>(
        &self,
        i: usize,
        request: Request,
        f: impl FnOnce(&dyn SecretStore, &SecretPath) -> Result<T>,
    ) -> Result<Answer<T>> {
        let layer = &self.layers[i];
        let path = match &request {
            Request::Read(p) | Request::List(p) => p,
        };
        let at = layer.at(path);
        if i == self.top_index() {
            return f(layer.store.as_ref(), &at).map(Answer::Known);
        }
        let state = &self.states[i];
        let unknown = |cause: Error| {
            Answer::Unknown(Error::LayerUnreadable {
                layer: layer.name.clone(),
                cause: Box::new(cause),
            })
        };
        if state.down.load(Ordering::SeqCst) {
            return Ok(unknown(Error::Unavailable("it does not answer".into())));
        }
        match f(layer.store.as_ref(), &at) {
            Ok(v) => {
                state.answered(&layer.name, Some(&request));
                Ok(Answer::Known(v))
            }
            // The operation's time ran out before this layer was asked:
            // nothing is wrong with the layer, its answer is unknown.
            Err(e @ Error::OutOfTime(_)) => Ok(unknown(e)),
            Err(e) if matches!(e, Error::PermissionDenied(_)) || e.is_transient() => {
                state.failed(&layer.name, &request, &e);
                if is_outage(&e) {
                    state.down.store(true, Ordering::SeqCst);
                }
                self.start_probe(i);
                Ok(unknown(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Starts the probe of layer `i` unless one runs.
    fn start_probe(&self, i: usize) {
        let state = &self.states[i];
        if state.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let layer = self.layers[i].clone();
        let weak: Weak<LayerState> = Arc::downgrade(state);
        let started = std::thread::Builder::new()
            .name("secretfs-layer-probe".into())
            .spawn(move || probe(layer, weak));
        if started.is_err() {
            // No probe: ask the layer again on the next request.
            state.down.store(false, Ordering::SeqCst);
            state.probing.store(false, Ordering::SeqCst);
        }
    }

    /// The merge of the secrets of layers `0..upto` at `path`: `None` when
    /// no readable one holds it. The top-most layer is asked first, so
    /// that a lower one that does not answer cannot use up its time.
    fn merged(
        &self,
        deadline: &Deadline,
        upto: usize,
        path: &SecretPath,
    ) -> Result<Option<Merged>> {
        let mut answers = Vec::with_capacity(upto);
        for i in (0..upto).rev() {
            answers.push(self.ask(i, Request::Read(path.clone()), |s, at| s.read(deadline, at))?);
        }
        answers.reverse();
        let mut out: Option<Merged> = None;
        for (i, answer) in answers.into_iter().enumerate() {
            let secret = match answer {
                Answer::Known(Some(secret)) => secret,
                Answer::Known(None) => continue,
                Answer::Unknown(e) => {
                    // Every key below may be overridden here.
                    if let Some(m) = out.as_mut() {
                        for (k, _) in std::mem::take(&mut m.secret.keys) {
                            m.origin.remove(k.as_str());
                            m.secret.withheld.insert(k, e.clone());
                        }
                        for why in m.secret.withheld.values_mut() {
                            *why = e.clone();
                        }
                    }
                    continue;
                }
            };
            let merged = out.get_or_insert_with(Merged::default);
            if i + 1 == self.layers.len() {
                // Metadata is the top layer's secret's (where it is set).
                merged.secret.custom_metadata = secret.custom_metadata.clone();
            }
            for (k, v) in secret.keys {
                merged.origin.insert(k.to_string(), i);
                merged.secret.withheld.remove(k.as_str());
                merged.secret.keys.insert(k, v);
            }
            merged.secret.modified = merged.secret.modified.max(secret.modified);
            if i + 1 == self.layers.len() {
                merged.last = Some(secret.revision);
            }
        }
        Ok(out)
    }

    /// The SOURCE of the layer whose value `key` of the secret at `path`
    /// shows; the unreadable layer's error when that cannot be known.
    pub fn origin_of(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        key: &str,
    ) -> Result<Option<&str>> {
        let Some(m) = self.merged(deadline, self.layers.len(), path)? else {
            return Ok(None);
        };
        if let Some(e) = m.secret.withheld.get(key) {
            return Err(e.clone());
        }
        Ok(m.origin.get(key).map(|&i| self.layers[i].name.as_str()))
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
    origin: BTreeMap<String, usize>,
    /// The last layer's revision, when the last layer holds the secret.
    last: Option<Option<Revision>>,
}

impl SecretStore for Layered {
    fn capabilities(&self) -> Capabilities {
        self.top().store.capabilities()
    }

    /// Changes are written to the top layer: its permissions decide.
    fn permissions(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Permissions>> {
        let top = self.top();
        top.store.permissions(deadline, &top.at(path))
    }

    fn node(&self) -> Option<String> {
        self.top().store.node()
    }

    /// A version is the top layer's (merged revisions are `top:REV`).
    fn read_version(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        version: u64,
    ) -> Result<Option<Secret>> {
        let top = self.top();
        top.store.read_version(deadline, &top.at(path), version)
    }

    /// Metadata belongs to the secret in the top layer.
    fn set_custom_metadata(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        name: &str,
        value: Option<&str>,
    ) -> Result<()> {
        let top = self.top();
        top.store
            .set_custom_metadata(deadline, &top.at(path), name, value)
    }

    /// As its other metadata: the top layer's.
    fn set_description(
        &self,
        deadline: &Deadline,
        path: &SecretPath,
        value: Option<&str>,
    ) -> Result<()> {
        let top = self.top();
        top.store.set_description(deadline, &top.at(path), value)
    }

    /// As its other metadata: the top layer's (none when the top layer
    /// does not hold the secret).
    fn read_metadata(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Metadata>> {
        let top = self.top();
        top.store.read_metadata(deadline, &top.at(path))
    }

    /// The union of the readable layers' listings (what only an
    /// unreadable layer holds does not show): partial when a lower layer
    /// refused to list the folder, since a read may still reach its names
    /// (`Some` then even when no other layer holds the folder, to say so).
    fn list(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Listing>> {
        let mut answers = Vec::with_capacity(self.layers.len());
        for i in (0..self.layers.len()).rev() {
            answers.push(self.ask(i, Request::List(path.clone()), |s, at| s.list(deadline, at))?);
        }
        // A layer that refused says nothing of which names it holds (one
        // that does not answer cannot be read either: nothing to reach).
        let refused = answers.iter().any(|a| match a {
            Answer::Unknown(Error::LayerUnreadable { cause, .. }) => {
                matches!(**cause, Error::PermissionDenied(_))
            }
            _ => false,
        });
        let mut out: Option<Listing> = refused.then(|| Listing::partial(Vec::new()));
        for answer in answers.into_iter().rev() {
            if let Answer::Known(Some(listing)) = answer {
                let all = out.get_or_insert_with(Listing::default);
                all.partial |= listing.partial;
                for e in listing {
                    if !all.entries.contains(&e) {
                        all.entries.push(e);
                    }
                }
            }
        }
        Ok(out)
    }

    fn read(&self, deadline: &Deadline, path: &SecretPath) -> Result<Option<Secret>> {
        let Some(Merged {
            mut secret, last, ..
        }) = self.merged(deadline, self.layers.len(), path)?
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
        deadline: &Deadline,
        path: &SecretPath,
        data: &SecretData,
        when: &Precondition,
    ) -> Result<Option<Revision>> {
        let top = self.top();
        let at = top.at(path);
        let top_now = top.store.read(deadline, &at)?;
        let below = self.merged(deadline, self.top_index(), path)?;
        let held_on_top = |k: &str| top_now.as_ref().is_some_and(|s| s.keys.contains_key(k));
        // A key that only a lower layer holds cannot be removed here. (A
        // key withheld below was never in `data`: it is left as it is.)
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
        // from below (or cannot be known to be the same).
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
        let revision = top.store.write(deadline, &at, &own, &when)?;
        Ok(Some(Revision::new(format!(
            "top:{}",
            revision.map(|r| r.to_string()).unwrap_or_default()
        ))))
    }

    /// Removes the top layer's secret; refused when a lower layer holds it,
    /// and when a lower layer that cannot be read might (its error).
    fn delete(&self, deadline: &Deadline, path: &SecretPath) -> Result<()> {
        for i in (0..self.top_index()).rev() {
            match self.ask(i, Request::Read(path.clone()), |s, at| s.read(deadline, at))? {
                Answer::Known(None) => {}
                Answer::Known(Some(_)) => {
                    tracing::warn!(path = %path, layer = %self.layers[i].name, "a secret a lower layer holds cannot be removed");
                    return Err(Error::NotPermitted("the secret comes from a lower layer"));
                }
                Answer::Unknown(e) => return Err(e),
            }
        }
        let top = self.top();
        top.store.delete(deadline, &top.at(path))
    }

    /// The top layer's health: a lower layer's trouble shows in
    /// [`SecretStore::degraded`] instead, and a lower layer that hangs
    /// cannot hold up the answer.
    fn health(&self, deadline: &Deadline) -> Result<Health> {
        self.top().store.health(deadline)
    }

    fn origin(&self, deadline: &Deadline, path: &SecretPath, key: &str) -> Result<Option<String>> {
        Ok(self.origin_of(deadline, path, key)?.map(str::to_string))
    }

    fn rereads_after_write(&self) -> bool {
        true
    }

    fn degraded(&self) -> Vec<Degraded> {
        self.layers
            .iter()
            .zip(&self.states)
            .filter_map(|(layer, state)| {
                state.trouble().as_ref().map(|t| Degraded {
                    part: layer.name.clone(),
                    state: t.state,
                    since: t.since,
                    why: format!("{}: {}", t.request, t.why),
                })
            })
            .collect()
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
        let s = l
            .read(&Deadline::per_request(), &path("shop/api"))
            .unwrap()
            .unwrap();
        assert_eq!(
            keys(&s),
            [("A", "project"), ("B", "env"), ("C", "service")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            l.origin(&Deadline::per_request(), &path("shop/api"), "B")
                .unwrap()
                .as_deref(),
            Some("secret/e")
        );
        assert_eq!(
            l.origin(&Deadline::per_request(), &path("shop/api"), "A")
                .unwrap()
                .as_deref(),
            Some("secret/p")
        );
        let listing = l
            .list(&Deadline::per_request(), &path("shop"))
            .unwrap()
            .unwrap();
        assert!(!listing.partial);
        let names: Vec<String> = listing.into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["api", "only-below"]);
    }

    #[test]
    fn metadata_read_apart_is_the_top_layers_as_with_the_value() {
        let (l, stores) = three();
        stores[0].put_custom_metadata("shop/api", "owner", "project");
        stores[2].put_custom_metadata("shop/api", "owner", "service");
        let at = Deadline::per_request();
        let apart = l.read_metadata(&at, &path("shop/api")).unwrap().unwrap();
        assert_eq!(
            apart.custom_metadata.get("owner").map(String::as_str),
            Some("service")
        );
        let with_value = l.read(&at, &path("shop/api")).unwrap().unwrap();
        assert_eq!(apart, Metadata::of(&with_value));
        // Only a lower layer holds it: the top layer has no metadata for it.
        assert_eq!(
            l.read_metadata(&at, &path("shop/only-below")).unwrap(),
            None
        );
    }

    fn change(l: &Layered, p: &str, f: impl FnOnce(&mut SecretData)) -> Result<Option<Revision>> {
        let latest = l.read(&Deadline::per_request(), &path(p)).unwrap();
        let when = match latest.as_ref().and_then(|s| s.revision.clone()) {
            Some(r) => Precondition::At(r),
            None => Precondition::Absent,
        };
        let mut data = latest.map(|s| s.keys).unwrap_or_default();
        f(&mut data);
        l.write(&Deadline::per_request(), &path(p), &data, &when)
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
            l.origin(&Deadline::per_request(), &path("shop/api"), "A")
                .unwrap()
                .as_deref(),
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
        let s = l
            .read(&Deadline::per_request(), &path("shop/api"))
            .unwrap()
            .unwrap();
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
            l.delete(&Deadline::per_request(), &path("shop/only-below"))
                .unwrap_err()
                .errno(),
            libc::EPERM
        );
    }

    #[test]
    fn check_and_set_guards_the_top_layer() {
        let (l, stores) = three();
        let stale = l
            .read(&Deadline::per_request(), &path("shop/api"))
            .unwrap()
            .unwrap()
            .revision
            .unwrap();
        stores[2].put("shop/api", json!({"C": "changed meanwhile"}));
        let data = l
            .read(&Deadline::per_request(), &path("shop/api"))
            .unwrap()
            .unwrap()
            .keys;
        let err = l
            .write(
                &Deadline::per_request(),
                &path("shop/api"),
                &data,
                &Precondition::At(stale),
            )
            .unwrap_err();
        assert!(matches!(err, Error::CasConflict), "{err:?}");
    }

    fn forbidden() -> Error {
        Error::PermissionDenied("1 error occurred: permission denied".into())
    }

    #[test]
    fn a_forbidden_bottom_layer_leaves_the_keys_above_it_and_hides_what_only_it_holds() {
        let (l, stores) = three();
        stores[0].set_fault(Some(forbidden()));
        let s = l
            .read(&Deadline::per_request(), &path("shop/api"))
            .unwrap()
            .unwrap();
        // B and C come from layers above the forbidden one: their values
        // stand; A only the forbidden layer holds: it is not known.
        assert_eq!(
            keys(&s),
            [("B", "env"), ("C", "service")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(s.withheld.is_empty());
        assert!(l
            .read(&Deadline::per_request(), &path("shop/only-below"))
            .unwrap()
            .is_none());
        let listing = l
            .list(&Deadline::per_request(), &path("shop"))
            .unwrap()
            .unwrap();
        // A read may reach what that listing leaves out: it says so.
        assert!(listing.partial);
        let names: Vec<String> = listing.into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["api"]);
        // A folder no readable layer lists: no folder found, and the
        // answer still says the listing is partial.
        let nothing = l
            .list(&Deadline::per_request(), &path("elsewhere"))
            .unwrap()
            .unwrap();
        assert!(nothing.partial && nothing.is_empty() && !nothing.shows_folder());
        let degraded = l.degraded();
        assert_eq!(degraded.len(), 1, "{degraded:?}");
        assert_eq!(
            (degraded[0].part.as_str(), degraded[0].state),
            ("secret/p", "forbidden")
        );
    }

    #[test]
    fn a_key_a_forbidden_layer_may_override_is_withheld_with_its_error() {
        let (l, stores) = three();
        stores[1].set_fault(Some(forbidden()));
        let s = l
            .read(&Deadline::per_request(), &path("shop/api"))
            .unwrap()
            .unwrap();
        assert_eq!(keys(&s), [("C".to_string(), "service".to_string())]);
        let withheld: Vec<(&str, i32)> = s
            .withheld
            .iter()
            .map(|(k, e)| (k.as_str(), e.errno()))
            .collect();
        assert_eq!(withheld, [("A", libc::EACCES), ("B", libc::EACCES)]);
        assert_eq!(
            l.origin(&Deadline::per_request(), &path("shop/api"), "A")
                .unwrap_err()
                .errno(),
            libc::EACCES
        );
        assert_eq!(
            l.origin(&Deadline::per_request(), &path("shop/api"), "C")
                .unwrap()
                .as_deref(),
            Some("secret/s")
        );
    }

    #[test]
    fn writes_to_the_top_layer_go_on_while_a_lower_layer_is_forbidden() {
        let (l, stores) = three();
        stores[1].set_fault(Some(forbidden()));
        change(&l, "shop/api", |d| {
            d.insert(
                KeyName::from("C"),
                SecretValue::written(b"new".to_vec(), None).unwrap(),
            );
        })
        .unwrap();
        assert_eq!(stores[2].get("shop/api"), Some(json!({"C": "new"})));
        // Whether a lower layer holds the secret cannot be known: no rmdir.
        assert_eq!(
            l.delete(&Deadline::per_request(), &path("shop/api"))
                .unwrap_err()
                .errno(),
            libc::EACCES
        );
        stores[1].heal();
        let s = l
            .read(&Deadline::per_request(), &path("shop/api"))
            .unwrap()
            .unwrap();
        assert_eq!(
            keys(&s),
            [("A", "project"), ("B", "env"), ("C", "new")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(l.degraded().is_empty());
    }

    #[test]
    fn a_lower_layer_that_does_not_answer_is_left_out_not_asked_again_and_reported() {
        let (l, stores) = three();
        stores[0].set_fault(Some(Error::Unavailable("connection refused".into())));
        let s = l
            .read(&Deadline::per_request(), &path("shop/api"))
            .unwrap()
            .unwrap();
        assert_eq!(
            keys(&s),
            [("B", "env"), ("C", "service")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let reads = stores[0].read_calls();
        l.read(&Deadline::per_request(), &path("shop/api")).unwrap();
        assert_eq!(stores[0].read_calls(), reads, "asked while known down");
        assert_eq!(l.degraded()[0].state, "unreachable");
        // The top layer's errors are the mount's.
        stores[2].set_fault(Some(forbidden()));
        assert_eq!(
            l.read(&Deadline::per_request(), &path("shop/api"))
                .unwrap_err()
                .errno(),
            libc::EACCES
        );
    }
}
