//! The test tiers of scripts/test (`core`, `mount`, `cluster`; see
//! docs/DEVELOPMENT.md) name every test target exactly once, and nothing
//! else: a new tests/NAME.rs (or tests/NAME/main.rs) must be put in a
//! tier, or `scripts/test TIER` would leave it out. No FUSE and no OpenBao
//! needed.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;

const TIERS: [&str; 3] = ["core", "mount", "cluster"];

/// The names in `NAME=(...)` of the script, which may span lines.
fn tier(script: &str, name: &str) -> Vec<String> {
    let start = format!("\n{name}=(");
    let Some(at) = script.find(&start) else {
        panic!("scripts/test has no tier {name}=(...)");
    };
    let rest = &script[at + start.len()..];
    let Some(end) = rest.find(')') else {
        panic!("scripts/test: {name}=( is not closed");
    };
    rest[..end].split_whitespace().map(str::to_string).collect()
}

/// Cargo's test targets: tests/NAME.rs and tests/NAME/main.rs.
fn test_targets(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("tests/") {
        let path = entry.expect("an entry of tests/").path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string);
        let Some(stem) = stem else { continue };
        let is_rs = path.extension().is_some_and(|e| e == "rs");
        if (path.is_file() && is_rs) || path.join("main.rs").is_file() {
            names.insert(stem);
        }
    }
    names
}

#[test]
fn every_test_target_is_in_exactly_one_tier_of_scripts_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(root.join("scripts/test")).expect("scripts/test");
    let mut tier_of: BTreeMap<String, &str> = BTreeMap::new();
    for name in TIERS {
        let members = tier(&script, name);
        assert!(!members.is_empty(), "tier {name} is empty");
        for member in members {
            if let Some(other) = tier_of.insert(member.clone(), name) {
                panic!("{member} is in tiers {other} and {name}");
            }
        }
    }
    let targets = test_targets(&root.join("tests"));
    let missing: Vec<&String> = targets
        .iter()
        .filter(|t| !tier_of.contains_key(*t))
        .collect();
    assert!(
        missing.is_empty(),
        "test targets in no tier of scripts/test (add each to core, mount or cluster): {missing:?}"
    );
    let unknown: Vec<&String> = tier_of.keys().filter(|t| !targets.contains(*t)).collect();
    assert!(
        unknown.is_empty(),
        "scripts/test names tests that do not exist: {unknown:?}"
    );
}
