//! A property of the `--allow` decision's input (issue 19 §1): whatever
//! name shows a value — a key file, a version view (`db@2/K`,
//! `db@2.json`), a whole-secret layout — the node reached by that name
//! says it reaches that value's key, and a change of its metadata
//! reaches every key of its secret. Every file of a random store is
//! walked to in every layout, every version asked for by name, and each
//! file's bytes searched for the values (each unique) it shows. A view
//! added later that forgets to say what it reaches fails here.

use crate::fs::OpContext;
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::fs::shows::Through;
use crate::fs::view::{Layout, Views};

/// Secret paths: folders and secrets overlap (`a` is both when both `a`
/// and `a/b` are drawn).
const PATHS: [&str; 5] = ["a", "a/b", "c/d", "a/b/e", "f"];
const KEYS: [&str; 3] = ["K", "L", "M"];

/// A store: for each secret drawn, 1–3 versions of 1–3 keys each.
fn stores() -> impl Strategy<Value = BTreeMap<usize, Vec<BTreeSet<usize>>>> {
    let version = proptest::collection::btree_set(0..KEYS.len(), 1..=KEYS.len());
    let versions = proptest::collection::vec(version, 1..=3);
    proptest::collection::btree_map(0..PATHS.len(), versions, 1..=3)
}

/// The value of key `k` in version `v` of secret `s`: found in no other.
fn marker(s: usize, v: usize, k: usize) -> String {
    format!("zz{s}q{v}q{k}zz")
}

/// One file the walk reached: its inode and bytes.
struct Seen {
    ino: Ino,
    bytes: Vec<u8>,
}

/// Every file reachable from the root by listing, plus each version of
/// each secret asked for by name as each layout spells it; and every
/// directory.
fn walk(fs: &SecretFs, store: &BTreeMap<usize, Vec<BTreeSet<usize>>>) -> (Vec<Seen>, Vec<Ino>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut todo = vec![ROOT_INO];
    let mut seen_dirs = BTreeSet::new();
    while let Some(dir) = todo.pop() {
        if !seen_dirs.insert(dir.0) {
            continue;
        }
        dirs.push(dir);
        let fh = fs.opendir(&OpContext::background(), dir).unwrap();
        let (_, entries) = fs.dir_entries(fh).unwrap();
        fs.release(&OpContext::background(), fh);
        let mut names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
        // Version views are looked up, never listed.
        let here = fs.describe(dir);
        for (&s, versions) in store {
            let (folder, name) = PATHS[s].rsplit_once('/').unwrap_or(("", PATHS[s]));
            if here.trim_matches('/') == folder {
                for v in 1..=versions.len() {
                    for suffix in ["", ".json", ".env"] {
                        names.push(format!("{name}@{v}{suffix}"));
                    }
                }
            }
        }
        for name in names {
            let Ok(attr) = fs.lookup(&OpContext::background(), dir, &name) else {
                continue;
            };
            if attr.is_dir {
                todo.push(attr.ino);
            } else {
                let fh = fs
                    .open(&OpContext::background(), attr.ino, false, false)
                    .unwrap();
                let bytes = fs
                    .read_handle(&OpContext::background(), fh, 0, 1 << 20, |b| b.to_vec())
                    .unwrap();
                fs.release(&OpContext::background(), fh);
                files.push(Seen {
                    ino: attr.ino,
                    bytes,
                });
            }
        }
    }
    (files, dirs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_name_of_a_value_reaches_its_key(store in stores(), layout in 0..3usize) {
        let memory = Arc::new(MemoryStore::new());
        for (&s, versions) in &store {
            for (v, keys) in versions.iter().enumerate() {
                let data: serde_json::Map<String, serde_json::Value> = keys
                    .iter()
                    .map(|&k| (KEYS[k].to_string(), json!(marker(s, v + 1, k))))
                    .collect();
                memory.put(PATHS[s], serde_json::Value::Object(data));
            }
        }
        let layout = [Layout::Keys, Layout::Json, Layout::Env][layout].clone();
        let fs = SecretFs::builder(memory, SecretPath::root(), config(Duration::from_secs(30)), ManualClock::new())
.views(Views::of_layout(&layout))
.build()
.0;
        let (files, dirs) = walk(&fs, &store);
        let mut shown = BTreeSet::new();
        for file in &files {
            let bytes = String::from_utf8_lossy(&file.bytes);
            let value = fs.reached(&OpContext::background(), file.ino, Through::Value).unwrap();
            let metadata = fs.reached(&OpContext::background(), file.ino, Through::Metadata).unwrap();
            for (&s, versions) in &store {
                for (v, keys) in versions.iter().enumerate() {
                    for &k in keys {
                        if !bytes.contains(&marker(s, v + 1, k)) {
                            continue;
                        }
                        shown.insert((s, v + 1, k));
                        let key = format!("{}/{}", PATHS[s], KEYS[k]);
                        prop_assert!(value.contains(&key), "{key} (v{}) shown by {:?}, which reaches {value:?}", v + 1, fs.describe(file.ino));
                        for &other in keys {
                            let key = format!("{}/{}", PATHS[s], KEYS[other]);
                            prop_assert!(metadata.contains(&key), "metadata of {:?} reaches {metadata:?}, not {key}", fs.describe(file.ino));
                        }
                    }
                }
            }
        }
        // The walk reached every value of every version.
        let all: BTreeSet<(usize, usize, usize)> = store
            .iter()
            .flat_map(|(&s, versions)| {
                versions.iter().enumerate().flat_map(move |(v, keys)| keys.iter().map(move |&k| (s, v + 1, k)))
            })
            .collect();
        prop_assert_eq!(&shown, &all);
        // A directory's metadata is its secret's, if it is one: every key.
        for dir in dirs {
            let reached = fs.reached(&OpContext::background(), dir, Through::Metadata).unwrap();
            for key in &reached {
                let (secret, _) = key.rsplit_once('/').unwrap();
                let s = PATHS.iter().position(|p| *p == secret);
                prop_assert!(s.is_some_and(|s| store.contains_key(&s)), "{key}");
            }
        }
    }
}
