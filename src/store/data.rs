//! A secret's data: key → value, as a vector sorted by key.
//!
//! Secrets hold a handful of keys. A `BTreeMap` allocates a whole node of
//! eleven entries for the first one (about 540 bytes for a one-key secret);
//! a vector holds what is there. Every cached secret, and every version a
//! file was shown, holds one of these: for a walk over 50,000 one-key
//! secrets that was most of the daemon's memory.

use std::borrow::Borrow;

use super::{KeyName, SecretValue};

/// Key → value, sorted by key; the `BTreeMap` methods secretfs uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretData(Vec<(KeyName, SecretValue)>);

impl SecretData {
    /// No keys.
    pub fn new() -> Self {
        SecretData(Vec::new())
    }

    fn find<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        KeyName: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&SecretValue>
    where
        KeyName: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    /// Whether `key` is there.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        KeyName: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; the value it had, if any.
    pub fn insert(&mut self, key: KeyName, value: SecretValue) -> Option<SecretValue> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`; the value it had, if any.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<SecretValue>
    where
        KeyName: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&KeyName, &mut SecretValue) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v))
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, by key.
    pub fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&KeyName, &SecretValue)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &KeyName> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    /// The values, by key.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &SecretValue> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }
}

impl serde::Serialize for SecretData {
    /// As a JSON object, as the map it stands for.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl FromIterator<(KeyName, SecretValue)> for SecretData {
    /// Later entries of a key win, as with a map.
    fn from_iter<I: IntoIterator<Item = (KeyName, SecretValue)>>(iter: I) -> Self {
        let mut all: Vec<(KeyName, SecretValue)> = iter.into_iter().collect();
        // Stable: entries of one key stay in the order they came.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(KeyName, SecretValue)> = Vec::with_capacity(all.len());
        for entry in all {
            match kept.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => kept.push(entry),
            }
        }
        kept.shrink_to_fit();
        SecretData(kept)
    }
}

impl Extend<(KeyName, SecretValue)> for SecretData {
    fn extend<I: IntoIterator<Item = (KeyName, SecretValue)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl IntoIterator for SecretData {
    type Item = (KeyName, SecretValue);
    type IntoIter = std::vec::IntoIter<(KeyName, SecretValue)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a SecretData {
    type Item = (&'a KeyName, &'a SecretValue);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (KeyName, SecretValue)>,
        fn(&'a (KeyName, SecretValue)) -> (&'a KeyName, &'a SecretValue),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SecretValue {
        SecretValue::from_json(&serde_json::Value::String(s.into()))
    }

    #[test]
    fn it_behaves_as_a_sorted_map() {
        let mut d: SecretData = [("b", "2"), ("a", "1"), ("b", "3")]
            .into_iter()
            .map(|(k, x)| (KeyName::from(k), v(x)))
            .collect();
        assert_eq!(d.len(), 2);
        assert_eq!(d.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(d.get("b"), Some(&v("3")), "the later entry wins");
        assert_eq!(d.insert("c".into(), v("4")), None);
        assert_eq!(d.insert("a".into(), v("5")), Some(v("1")));
        assert!(d.contains_key("c"));
        assert_eq!(d.remove("b"), Some(v("3")));
        assert_eq!(d.remove("b"), None);
        d.retain(|k, _| k.as_str() != "c");
        assert_eq!(d.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(!d.is_empty());
    }
}
