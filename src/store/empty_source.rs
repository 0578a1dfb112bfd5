//! A SOURCE that shows nothing: a folder that lists nothing (a typo, the
//! KV v2 API path `secret/data/app` for `secret/app`), or a secret given
//! where a folder is expected in a layout that shows a secret as a file of
//! its folder. Found from what the store answers at start, so that the
//! mount can say why it is empty and what to give instead.

use super::{Connected, Deadline, SecretPath};
use crate::error::Error;

/// Why the mount of `source` (connected as `c`) would be empty, with the
/// fix; `None` when it shows something, or when the store cannot say now.
/// `secret_shows_keys`: whether a secret at the root shows its keys (the
/// `keys` layout), as it does not in a layout of one file per secret.
pub fn why_empty(source: &str, c: &Connected, secret_shows_keys: bool) -> Option<String> {
    let store = &c.store;
    // A one-off check at start: no operation's deadline.
    let deadline = Deadline::per_request();
    match store.list(&deadline, &c.root) {
        Ok(Some(listing)) if !listing.is_empty() => return None,
        Ok(_) | Err(Error::NotFound) => {}
        // Refused or unreachable: nothing to tell from.
        Err(_) => return None,
    }
    let shown = source.trim_end_matches('/');
    match store.read(&deadline, &c.root) {
        Ok(Some(_)) if secret_shows_keys => None,
        Ok(Some(_)) => {
            let fix = match c.root.split_last() {
                Some((folder, name)) => {
                    let mount = mount_part(source, &c.root).unwrap_or_default();
                    format!(
                        "mount its folder {mount}{} to see it as a file of that folder ({name}.json, {name}.env), or use --layout keys to see its keys as files",
                        folder.as_str()
                    )
                }
                None => "use --layout keys to see its keys as files".into(),
            };
            Some(format!(
                "{shown} is a secret, not a folder, and this layout shows a secret as a file of its folder: the mount is empty; {fix}"
            ))
        }
        Ok(None) | Err(Error::NotFound) => Some(nothing_there(source, c)),
        Err(_) => None,
    }
}

/// The message for a SOURCE where the store has neither a folder nor a
/// secret, with the path meant when the KV v2 API prefix was given.
fn nothing_there(source: &str, c: &Connected) -> String {
    let shown = source.trim_end_matches('/');
    let mut msg = format!(
        "{shown} lists nothing: no folder or secret is there, so the mount is empty (secretfs shows what is there when it appears)"
    );
    if let Some(meant) = api_prefix_removed(source, c) {
        msg = format!(
            "{shown} lists nothing: {} is the KV v2 API's prefix, which secretfs adds itself; mount {meant} instead",
            api_prefix(&c.root).unwrap_or("data")
        );
    }
    msg
}

/// `data` or `metadata` when `root` begins with it.
fn api_prefix(root: &SecretPath) -> Option<&'static str> {
    let first = root.as_str().split('/').next()?;
    ["data", "metadata"].into_iter().find(|p| *p == first)
}

/// On a KV v2 mount, for a folder that begins with `data/` or
/// `metadata/`: the SOURCE without it, when the store has something there.
fn api_prefix_removed(source: &str, c: &Connected) -> Option<String> {
    if !c.store.capabilities().versions {
        return None;
    }
    let prefix = api_prefix(&c.root)?;
    let rest = c
        .root
        .as_str()
        .strip_prefix(prefix)?
        .trim_start_matches('/');
    let meant = SecretPath::parse(rest);
    let lists =
        matches!(c.store.list(&Deadline::per_request(), &meant), Ok(Some(l)) if !l.is_empty());
    let holds =
        !meant.is_root() && matches!(c.store.read(&Deadline::per_request(), &meant), Ok(Some(_)));
    if !(lists || holds) {
        return None;
    }
    let mount = mount_part(source, &c.root)?;
    Some(format!("{mount}{}", meant.as_str()))
}

/// The KV mount part of `source` (`secret/`): SOURCE without its folder.
fn mount_part(source: &str, root: &SecretPath) -> Option<String> {
    let trimmed = source.trim_matches('/');
    let mount = trimmed.strip_suffix(root.as_str())?.trim_end_matches('/');
    (!mount.is_empty()).then(|| format!("{mount}/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use serde_json::json;
    use std::sync::Arc;

    fn at(store: &Arc<MemoryStore>, root: &str) -> Connected {
        Connected {
            store: store.clone(),
            root: SecretPath::parse(root),
        }
    }

    #[test]
    fn a_folder_with_secrets_is_not_empty_and_a_missing_one_is() {
        let store = Arc::new(MemoryStore::kv2());
        store.put("myapp/db", json!({"K": "v"}));
        assert_eq!(why_empty("secret/myapp", &at(&store, "myapp"), true), None);
        let msg = why_empty("secret/nope/", &at(&store, "nope"), true).unwrap();
        assert!(msg.starts_with("secret/nope lists nothing"), "{msg}");
    }

    #[test]
    fn the_kv2_api_path_names_the_path_meant() {
        let store = Arc::new(MemoryStore::kv2());
        store.put("myapp/db", json!({"K": "v"}));
        let msg = why_empty("secret/data/myapp", &at(&store, "data/myapp"), true).unwrap();
        assert!(msg.contains("mount secret/myapp instead"), "{msg}");
        let msg = why_empty(
            "secret/metadata/myapp/",
            &at(&store, "metadata/myapp"),
            true,
        )
        .unwrap();
        assert!(msg.contains("mount secret/myapp instead"), "{msg}");
        // Nothing at the path meant either: no suggestion.
        let msg = why_empty("secret/data/other", &at(&store, "data/other"), true).unwrap();
        assert!(!msg.contains("instead"), "{msg}");
    }

    #[test]
    fn a_secret_shows_in_the_keys_layout_only() {
        let store = Arc::new(MemoryStore::kv2());
        store.put("app/db", json!({"K": "v"}));
        assert_eq!(
            why_empty("secret/app/db", &at(&store, "app/db"), true),
            None
        );
        let msg = why_empty("secret/app/db", &at(&store, "app/db"), false).unwrap();
        assert!(msg.contains("is a secret, not a folder"), "{msg}");
        assert!(msg.contains("mount its folder secret/app"), "{msg}");
    }
}
