//! Telling programs that a secret changed (`--on-change`): a FUSE
//! filesystem cannot make the kernel send inotify events for what changed
//! in the store, so the core reports each secret whose data a refresh found
//! changed, and, for as long as someone listens, re-reads every secret it
//! holds once per TTL, so that a change is found even when nobody reads
//! (a server that loaded its certificate once). Running a command or
//! sending a signal is the mount's business (`crate::hook`).

use crate::fs::OpContext;
use std::sync::{Arc, Weak};

use super::cache::Refresh;
use super::{Background, SecretFs};
use crate::store::{Secret, SecretPath};

impl SecretFs {
    /// Starts re-reading every held secret once per TTL, so that changes
    /// are reported (to where [`super::Builder::report_changes_to`] said)
    /// even when nobody reads.
    pub(super) fn start_watcher(self: &Arc<Self>, background: &mut Background) {
        let (fs, halt) = (Arc::downgrade(self), background.halt());
        let every = self.config.cache.ttl.max(std::time::Duration::from_secs(1));
        let spawned = std::thread::Builder::new()
            .name("secretfs-watch".into())
            .spawn(move || {
                while !halt.sleep(every) {
                    if !watch_once(&fs) {
                        return;
                    }
                }
            });
        match spawned {
            Ok(thread) => background.spawned(thread),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the thread that watches held secrets")
            }
        }
    }

    /// A fresh answer replaced `before` for the secret at `path`: reports
    /// it when its data changed (or it is gone).
    pub(super) fn report_change(
        &self,
        path: &SecretPath,
        before: Option<&Arc<Secret>>,
        now: Option<&Arc<Secret>>,
    ) {
        let Some(tx) = &self.changes else {
            return;
        };
        let changed = match (before, now) {
            (Some(a), Some(b)) => !a.same_data(b),
            (Some(_), None) => true,
            // Nobody was shown it before: nothing to reload.
            (None, _) => false,
        };
        if changed {
            let _ = tx.send(self.in_mount(path));
        }
    }
}

/// Re-reads every secret `fs` holds; false once the filesystem is gone.
fn watch_once(fs: &Weak<SecretFs>) -> bool {
    let Some(fs) = fs.upgrade() else {
        return false;
    };
    for path in fs.source.held_secrets() {
        let job = Refresh::Secret(path);
        match fs.source.refresh(&OpContext::background(), &job) {
            Ok(change) => fs.notice(change),
            Err(e) => {
                tracing::debug!(?job, error = %e, "watching: re-read failed");
                // Down: the probe finds it back; the next round tries again.
                if fs.source.is_down() {
                    break;
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use serde_json::json;

    use super::super::clock::ManualClock;
    use super::super::tests::config;
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn a_changed_or_deleted_secret_is_reported_once_by_its_path_in_the_mount() {
        let store = Arc::new(MemoryStore::new());
        store.put("team/app/db", json!({"PASSWORD": "p"}));
        store.put("team/app/tls", json!({"CERT": "c"}));
        let (tx, rx) = channel();
        let (fs, _background) = SecretFs::builder(
            store.clone(),
            SecretPath::parse("team/app"),
            config(Duration::from_secs(30)),
            ManualClock::new(),
        )
        .report_changes_to(tx)
        .build();
        for secret in ["db", "tls"] {
            let dir = fs
                .lookup(
                    &OpContext::background(),
                    super::super::inode::ROOT_INO,
                    secret,
                )
                .unwrap()
                .ino;
            fs.lookup(
                &OpContext::background(),
                dir,
                if secret == "db" { "PASSWORD" } else { "CERT" },
            )
            .unwrap();
        }
        store.put("team/app/db", json!({"PASSWORD": "rotated"}));
        assert!(watch_once(&Arc::downgrade(&fs)));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["db"]);
        // Nothing changed since: nothing reported.
        assert!(watch_once(&Arc::downgrade(&fs)));
        assert_eq!(rx.try_iter().count(), 0);
        store.remove("team/app/tls");
        assert!(watch_once(&Arc::downgrade(&fs)));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["tls"]);
    }
}
