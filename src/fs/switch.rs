//! Switching refreshed secrets in at a quiet moment. A refresh ahead is
//! queued by a read, and lands a few milliseconds later: switched in at
//! once, it would fall between the reads of a program that reads a
//! certificate and then its key, nearly every time the secret changed. So
//! a changed secret is held back (its old data served, and fresh) until
//! none of its keys was served for [`QUIET`] (or at the latest after the
//! hold, a tenth of the TTL up to [`MAX_HOLD`]), and then every key of it
//! switches at once: the kernel is told to forget each file whose bytes
//! changed, templates that used it and `--on-change` hear of it then.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::cache::{Source, MAX_HOLD, QUIET};
use super::halt::Halt;
use super::{Background, SecretFs};

/// The longest the switcher sleeps while a secret is held back: it wakes
/// at the moment it computed, this only bounds a clock moved by hand.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// How long the switcher sleeps with nothing held (it wakes when a secret
/// is held back, or when told to end, `Source::stop_switcher`; this only
/// lets it see that the filesystem is gone).
const IDLE: Duration = Duration::from_secs(1);

impl SecretFs {
    /// Starts the thread that switches held-back secrets in (the source
    /// holds refreshed secrets whose data changed back for it). `false`
    /// when it cannot start: then no refresher is started either.
    pub(super) fn start_switcher(self: &Arc<Self>, background: &mut Background) -> bool {
        let (fs, source, halt) = (Arc::downgrade(self), self.source.clone(), background.halt());
        let spawned = std::thread::Builder::new()
            .name("secretfs-switch".into())
            .spawn(move || switch_loop(fs, source, &halt));
        match spawned {
            Ok(thread) => {
                background.spawned(thread);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the switcher: no refresh ahead, values are fetched again when they expire");
                false
            }
        }
    }
}

/// The switcher: switches in what is due, then waits for a secret held
/// back or the time it computed. Ends when the source tells it to
/// (`Background::stop`, after the halt: the halt alone does not end it,
/// so that a stop that forgot to wake it would hang, not wait out
/// [`IDLE`]), or when the filesystem is gone. `halt` only counts its
/// waits, in tests.
fn switch_loop(fs: Weak<SecretFs>, source: Arc<Source>, halt: &Halt) {
    debug_assert!(QUIET < MAX_HOLD);
    loop {
        let Some(fs) = fs.upgrade() else { return };
        let (changes, again) = source.switch_due();
        for change in changes {
            fs.notice(change);
        }
        drop(fs);
        let sleep = match again {
            Some(at) => at
                .saturating_duration_since(std::time::Instant::now())
                .clamp(Duration::from_millis(1), LOOK_EVERY),
            None => IDLE,
        };
        halt.dozing();
        let told = !source.wait_for_held(sleep);
        halt.woke(told);
        if told {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Receiver};

    use serde_json::json;

    use super::super::clock::ManualClock;
    use super::super::tests::{config, path_ino, read_all, seeded, soon};
    use super::super::{FsConfig, Invalidation, OpContext};
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::SecretPath;

    /// A filesystem refreshing ahead (30 s TTL) over a clock moved by hand,
    /// the invalidations it sends the kernel, and its threads (which run
    /// until the [`Background`] goes).
    fn refreshing(
        store: Arc<MemoryStore>,
    ) -> (
        Arc<SecretFs>,
        Arc<ManualClock>,
        Receiver<Invalidation>,
        Background,
    ) {
        let clock = ManualClock::new();
        let (tx, rx) = channel();
        let (fs, background) = SecretFs::builder(
            store,
            SecretPath::root(),
            FsConfig {
                background_refresh: true,
                ..config(Duration::from_secs(30))
            },
            clock.clone(),
        )
        .send_invalidations_to(tx)
        .build();
        (fs, clock, rx, background)
    }

    /// A certificate and its key read one after the other: the refresh the
    /// first read queues lands before the second read. Both must come from
    /// one version; the new one is switched in once neither was read for
    /// a while, and then the kernel is told to forget both files.
    #[test]
    fn a_refresh_landing_between_two_reads_of_a_pair_waits_for_a_quiet_moment() {
        let store = seeded();
        let (fs, clock, rx, _background) = refreshing(store.clone());
        let db = path_ino(&fs, "myapp/db").unwrap();
        let password = path_ino(&fs, "myapp/db/PASSWORD").unwrap();
        let user = path_ino(&fs, "myapp/db/USER").unwrap();
        assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
        assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"app");
        store.put(
            "myapp/db",
            json!({"PASSWORD": "new-pass", "USER": "new-user", "PORT": 5432}),
        );
        // In the last tenth of the TTL: the first read queues a refresh...
        clock.advance(Duration::from_secs(28));
        let reads = store.read_calls();
        assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"hunter2");
        soon("the refresh to ask the store", || {
            store.read_calls() > reads
        });
        // The memory store answers at once: the refresh has landed after this.
        std::thread::sleep(Duration::from_millis(100));
        // ...which landed before the second read: that one reads the same
        // version as the first.
        assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"app");
        assert!(rx.try_recv().is_err(), "invalidated before the switch");
        // Nothing read for a while: both switch, and the kernel hears it.
        clock.advance(QUIET);
        let mut forgotten = Vec::new();
        soon("the kernel to be told of both files", || {
            forgotten.extend(rx.try_iter());
            ["PASSWORD", "USER"].iter().all(|name| {
                forgotten.contains(&Invalidation::Entry {
                    parent: db,
                    name: name.to_string(),
                })
            })
        });
        // Both old inodes keep the old pair; both names lead to new ones.
        let old = |ino| {
            fs.read_ino(&OpContext::background(), ino, 0, 64, |b| b.to_vec())
                .unwrap()
        };
        assert_eq!(
            (old(password), old(user)),
            (b"hunter2".to_vec(), b"app".to_vec())
        );
        assert_ne!(path_ino(&fs, "myapp/db/PASSWORD").unwrap(), password);
        assert_ne!(path_ino(&fs, "myapp/db/USER").unwrap(), user);
        assert_eq!(read_all(&fs, "myapp/db/PASSWORD").unwrap(), b"new-pass");
        assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"new-user");
        assert_eq!(store.read_calls(), reads + 1);
    }

    /// A secret read without pause is switched in all the same, once it
    /// was held back as long as it may be: freshness stays bounded.
    #[test]
    fn a_secret_read_without_pause_switches_after_the_hold() {
        let store = seeded();
        let (fs, clock, _rx, _background) = refreshing(store.clone());
        assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"app");
        store.put("myapp/db", json!({"USER": "new-user"}));
        clock.advance(Duration::from_secs(29));
        assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"app");
        soon("the refresh to land", || fs.source.held_back() == 1);
        // Read every 10 ms (never quiet), past the old value's TTL too.
        let mut waited = Duration::ZERO;
        while read_all(&fs, "myapp/db/USER").unwrap() == b"app" {
            assert!(
                waited <= MAX_HOLD,
                "still the old value {waited:?} after the refresh"
            );
            clock.advance(Duration::from_millis(10));
            waited += Duration::from_millis(10);
            // Let the switcher look (it sleeps at most LOOK_EVERY).
            std::thread::sleep(LOOK_EVERY + Duration::from_millis(5));
        }
        assert!(waited >= QUIET, "switched after {waited:?} of reads");
        assert_eq!(read_all(&fs, "myapp/db/USER").unwrap(), b"new-user");
    }

    /// Issue 21 §3: in the last tenth of the TTL the kernel was told 0, so
    /// every open became a LOOKUP and a GETATTR until the refresh landed.
    /// Now it keeps the value for the rest of its life: the refresh tells
    /// it to forget the value if it changed.
    #[test]
    fn in_the_last_tenth_of_the_ttl_the_kernel_keeps_a_value_for_the_rest_of_its_life() {
        let store = seeded();
        let (fs, clock, _rx, _background) = refreshing(store.clone());
        let ino = path_ino(&fs, "myapp/db/USER").unwrap();
        assert_eq!(
            fs.getattr(&OpContext::background(), ino).unwrap().valid_for,
            Duration::from_secs(27)
        );
        // Paused: the refresh this getattr queues cannot land meanwhile.
        store.set_delay(Duration::from_millis(300));
        clock.advance(Duration::from_secs(28));
        assert_eq!(
            fs.getattr(&OpContext::background(), ino).unwrap().valid_for,
            Duration::from_secs(2)
        );
        clock.advance(Duration::from_millis(1500));
        assert_eq!(
            fs.getattr(&OpContext::background(), ino).unwrap().valid_for,
            Duration::from_millis(500)
        );
    }
}
