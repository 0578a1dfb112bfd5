//! Extended attributes. The mount's root has one, `user.secretfs.status`:
//! how `secretfs status` asks a running mount how it is, in a name space no
//! secret can collide with. On a mount with layers (`--layer`), each key
//! file has `user.secretfs.source`: the SOURCE of the layer its value comes
//! from. No other node has any.

use super::inode::{Ino, NodeKind, ROOT_INO};
use super::SecretFs;
use crate::error::{Error, Result};

/// The extended attribute of the mount's root that holds its status (JSON).
pub const STATUS_XATTR: &str = "user.secretfs.status";

/// The extended attribute of a key file of a layered mount that names the
/// layer its value comes from.
pub const SOURCE_XATTR: &str = "user.secretfs.source";

impl SecretFs {
    /// The value of the extended attribute `name` of `ino`
    /// ([`Error::NoAttribute`] when it has none of that name).
    pub fn getxattr(&self, ino: Ino, name: &str) -> Result<Vec<u8>> {
        if ino == ROOT_INO && name == STATUS_XATTR {
            return Ok(self.status_json().to_string().into_bytes());
        }
        if name == SOURCE_XATTR {
            if let Some((secret, key)) = self.layered_key(ino) {
                if let Some(layer) = self.source.origin(&secret, &key)? {
                    return Ok(layer.into_bytes());
                }
            }
        }
        Err(Error::NoAttribute)
    }

    /// The names of the extended attributes of `ino`.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<String>> {
        Ok(if ino == ROOT_INO {
            vec![STATUS_XATTR.to_string()]
        } else if self.layered_key(ino).is_some() {
            vec![SOURCE_XATTR.to_string()]
        } else {
            Vec::new()
        })
    }

    /// The secret and key of a key file of a layered mount.
    fn layered_key(&self, ino: Ino) -> Option<(crate::store::SecretPath, String)> {
        if !self.source.is_layered() {
            return None;
        }
        match self.names.get(ino)? {
            NodeKind::File { secret, view, name } if self.views.get(view).name() == "keys" => {
                Some((secret, name))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::fs::clock::ManualClock;
    use crate::store::memory::MemoryStore;
    use crate::store::SecretPath;

    fn fs() -> SecretFs {
        let store = Arc::new(MemoryStore::new());
        store.put("app", json!({"K": "v"}));
        let config = crate::fs::tests::config(Duration::from_secs(30));
        SecretFs::new(store, SecretPath::root(), config, ManualClock::new())
    }

    #[test]
    fn the_root_answers_its_status_as_json() {
        let fs = fs();
        let bytes = fs.getxattr(ROOT_INO, "user.secretfs.status").unwrap();
        let status: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status["mounted"], json!(true));
        assert_eq!(fs.listxattr(ROOT_INO).unwrap(), [STATUS_XATTR]);
    }

    #[test]
    fn any_other_attribute_is_no_data() {
        let fs = fs();
        let app = fs.lookup(ROOT_INO, "app").unwrap().ino;
        let no_data = |r: Result<Vec<u8>>| r.unwrap_err().errno() == libc::ENODATA;
        assert!(no_data(fs.getxattr(ROOT_INO, "user.other")));
        assert!(no_data(fs.getxattr(app, STATUS_XATTR)));
        assert!(fs.listxattr(app).unwrap().is_empty());
    }
}
