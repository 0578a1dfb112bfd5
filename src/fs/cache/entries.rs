//! A bounded (LRU), timed (TTL) cache of store answers, with a short
//! negative cache, coalescing of concurrent misses and stale-if-error.
//!
//! The clock is injectable so that expiry is tested without sleeping.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::Clock;
use crate::error::{Error, Result};

/// How long answers live.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// Life of a positive answer.
    pub ttl: Duration,
    /// Life of a "does not exist" answer.
    pub negative_ttl: Duration,
    /// How long past its TTL an answer may still be served while the store is down.
    pub stale_if_error: Duration,
    /// Most entries kept.
    pub capacity: NonZeroUsize,
}

/// An answer from the cache and how much longer it stays valid.
#[derive(Debug)]
pub struct Cached<V> {
    /// The value, or `None` when the store said it does not exist.
    pub value: Option<Arc<V>>,
    /// Remaining validity: what the kernel may be told as entry/attr TTL.
    pub valid_for: Duration,
}

impl<V> Clone for Cached<V> {
    fn clone(&self) -> Self {
        Cached {
            value: self.value.clone(),
            valid_for: self.valid_for,
        }
    }
}

struct Entry<V> {
    value: Option<Arc<V>>,
    fetched: Instant,
    /// A newer answer fetched and held back until it is switched in
    /// ([`Cache::switch_due`]): meanwhile this one is served, and fresh.
    next: Option<Next<V>>,
    /// When this answer was last served.
    served: Option<Instant>,
}

/// An answer held back: switched in once the answer it replaces was not
/// served for a while, or at `due` at the latest.
struct Next<V> {
    value: Option<Arc<V>>,
    fetched: Instant,
    due: Instant,
}

/// An answer switched in: the key, the answer it replaced, the new one.
pub type Switched<K, V> = (K, Option<Arc<V>>, Option<Arc<V>>);

/// One in-flight fetch that followers wait on.
struct Flight<V> {
    result: Mutex<Option<Result<Cached<V>>>>,
    done: Condvar,
}

/// The cache: key → answer.
pub struct Cache<K, V> {
    entries: Mutex<LruCache<K, Entry<V>>>,
    flights: Mutex<HashMap<K, Arc<Flight<V>>>>,
    /// The keys whose entry may hold an answer back (`Entry::next`).
    holding: Mutex<HashSet<K>>,
    policy: CachePolicy,
    clock: Arc<dyn Clock>,
    /// Whether a value found stands for "does not exist" too (lives
    /// `negative_ttl`, like `None`).
    finds_nothing: fn(&V) -> bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the whole mount down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Hash + Eq + Clone, V> Cache<K, V> {
    /// An empty cache.
    pub fn new(policy: CachePolicy, clock: Arc<dyn Clock>) -> Self {
        Cache {
            entries: Mutex::new(LruCache::new(policy.capacity)),
            flights: Mutex::new(HashMap::new()),
            holding: Mutex::new(HashSet::new()),
            policy,
            clock,
            finds_nothing: |_| false,
        }
    }

    /// The cache, where a value for which `finds_nothing` holds is a "does
    /// not exist" answer too (a partial listing of no names).
    pub fn finding_nothing_when(self, finds_nothing: fn(&V) -> bool) -> Self {
        Cache {
            finds_nothing,
            ..self
        }
    }

    fn life(&self, entry: &Entry<V>) -> Duration {
        match &entry.value {
            Some(v) if !(self.finds_nothing)(v) => self.policy.ttl,
            _ => self.policy.negative_ttl.min(self.policy.ttl),
        }
    }

    /// The cached answer if it is still fresh (counted as served now).
    /// An answer a newer one waits to replace stays fresh until then,
    /// past its TTL if need be (by at most the hold: see [`Cache::hold`]).
    pub fn fresh(&self, key: &K) -> Option<Cached<V>> {
        self.fresh_served(key, true)
    }

    /// [`Cache::fresh`], counted as served or not.
    fn fresh_served(&self, key: &K, served: bool) -> Option<Cached<V>> {
        let now = self.clock.now();
        let mut entries = lock(&self.entries);
        let entry = entries.get_mut(key)?;
        let age = now.saturating_duration_since(entry.fetched);
        let life = self.life(entry);
        let valid_for = if age < life {
            life - age
        } else {
            // Until the switch, which tells the kernel to forget it.
            let next = entry.next.as_ref()?;
            next.due
                .saturating_duration_since(now)
                .max(Duration::from_millis(1))
        };
        if served {
            entry.served = Some(now);
        }
        Some(Cached {
            value: entry.value.clone(),
            valid_for,
        })
    }

    /// Counts the answer held for `key` as served now (a read of what it
    /// showed earlier), without touching its place in the LRU order.
    pub fn touch(&self, key: &K) {
        let now = self.clock.now();
        if let Some(entry) = lock(&self.entries).peek_mut(key) {
            entry.served = Some(now);
        }
    }

    /// Holds `value`, fetched now, back behind the answer held for `key`
    /// (which stays served, and fresh) until [`Cache::switch_due`] switches
    /// it in: once the answer held was not served for a while, and at the
    /// latest `hold` from now. Without an answer held, stores it at once.
    /// `true` when held back.
    pub fn hold(&self, key: &K, value: Option<V>, hold: Duration) -> bool {
        let now = self.clock.now();
        let value = value.map(Arc::new);
        {
            let mut entries = lock(&self.entries);
            match entries.peek_mut(key) {
                Some(entry) => {
                    // Held back again: no later than the first time.
                    let due = entry
                        .next
                        .as_ref()
                        .map_or(now + hold, |n| n.due.min(now + hold));
                    entry.next = Some(Next {
                        value,
                        fetched: now,
                        due,
                    });
                }
                None => {
                    entries.put(
                        key.clone(),
                        Entry {
                            value,
                            fetched: now,
                            next: None,
                            served: None,
                        },
                    );
                    return false;
                }
            }
        }
        lock(&self.holding).insert(key.clone());
        true
    }

    /// Whether an answer for `key` is held back.
    pub fn is_holding(&self, key: &K) -> bool {
        lock(&self.holding).contains(key)
    }

    /// How many answers are held back.
    #[cfg(test)]
    pub(super) fn holding(&self) -> usize {
        let holding = lock(&self.holding);
        let mut entries = lock(&self.entries);
        holding
            .iter()
            .filter(|k| entries.peek_mut(*k).is_some_and(|e| e.next.is_some()))
            .count()
    }

    /// Switches in every answer held back whose time came: the answer it
    /// replaces was not served for `quiet`, or its hold ran out. Returns
    /// what was switched, and when to look again (`None`: nothing held).
    pub fn switch_due(&self, quiet: Duration) -> (Vec<Switched<K, V>>, Option<Instant>) {
        let now = self.clock.now();
        let mut holding = lock(&self.holding);
        let mut entries = lock(&self.entries);
        let mut switched = Vec::new();
        let mut again: Option<Instant> = None;
        holding.retain(|key| {
            let Some(entry) = entries.peek_mut(key) else {
                return false;
            };
            let Some(next) = &entry.next else {
                return false;
            };
            let quiet_at = entry.served.map_or(now, |s| s + quiet);
            if now < next.due && now < quiet_at {
                let at = quiet_at.min(next.due);
                again = Some(again.map_or(at, |a| a.min(at)));
                return true;
            }
            if let Some(next) = entry.next.take() {
                let before = std::mem::replace(&mut entry.value, next.value.clone());
                entry.fetched = next.fetched;
                switched.push((key.clone(), before, next.value));
            }
            false
        });
        (switched, again)
    }

    /// The keys holding a positive answer, however old (no LRU touch).
    pub fn held_keys(&self) -> Vec<K> {
        lock(&self.entries)
            .iter()
            .filter(|(_, e)| e.value.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The last positive answer held for `key`, however old (no LRU touch).
    pub fn last(&self, key: &K) -> Option<Arc<V>> {
        lock(&self.entries).peek(key).and_then(|e| e.value.clone())
    }

    /// The cached positive answer, however old, while within the stale-if-error window.
    pub fn stale(&self, key: &K) -> Option<Cached<V>> {
        self.stale_at(key, self.clock.now())
    }

    /// The cached positive answer as it stood at `at`: within the
    /// stale-if-error window then (a request that waited on a hung store
    /// must not lose an answer that was servable when it was asked).
    fn stale_at(&self, key: &K, at: Instant) -> Option<Cached<V>> {
        let mut entries = lock(&self.entries);
        let entry = entries.get(key)?;
        let value = entry.value.clone()?;
        let age = at.saturating_duration_since(entry.fetched);
        (age < self.policy.ttl + self.policy.stale_if_error).then(|| Cached {
            value: Some(value),
            // Ask again soon: the store may be back.
            valid_for: Duration::from_secs(1).min(self.policy.ttl),
        })
    }

    /// Stores an answer fetched now.
    pub fn insert(&self, key: K, value: Option<V>) -> Cached<V> {
        let value = value.map(Arc::new);
        let entry = Entry {
            value: value.clone(),
            fetched: self.clock.now(),
            next: None,
            served: None,
        };
        let valid_for = self.life(&entry);
        lock(&self.holding).remove(&key);
        lock(&self.entries).put(key, entry);
        Cached { value, valid_for }
    }

    /// Drops every answer past its TTL plus the stale-if-error window:
    /// nothing may serve it any more, so its values leave memory (zeroized
    /// as they drop). Returns the keys dropped.
    pub fn sweep(&self) -> Vec<K> {
        let now = self.clock.now();
        let limit = self.policy.ttl + self.policy.stale_if_error;
        let mut entries = lock(&self.entries);
        let old: Vec<K> = entries
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.fetched) >= limit)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            entries.pop(k);
        }
        old
    }

    /// How long ago the answer held for `key` was fetched.
    pub fn age(&self, key: &K) -> Option<Duration> {
        let now = self.clock.now();
        lock(&self.entries)
            .peek(key)
            .map(|e| now.saturating_duration_since(e.fetched))
    }

    /// Forgets a key (after a write, or to force a refresh).
    pub fn invalidate(&self, key: &K) {
        lock(&self.holding).remove(key);
        lock(&self.entries).pop(key);
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fresh answer for `key`, fetching it when missing or expired.
    /// Concurrent callers for one key share a single fetch and its result.
    /// When the fetch fails because the store is unreachable, an answer
    /// within the stale-if-error window is served instead.
    pub fn get_or_fetch(
        &self,
        key: &K,
        fetch: impl FnOnce() -> Result<Option<V>>,
    ) -> Result<Cached<V>> {
        if let Some(hit) = self.fresh(key) {
            return Ok(hit);
        }
        let asked = self.clock.now();
        let (flight, leader) = {
            let mut flights = lock(&self.flights);
            match flights.get(key) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Flight {
                        result: Mutex::new(None),
                        done: Condvar::new(),
                    });
                    flights.insert(key.clone(), f.clone());
                    (f, true)
                }
            }
        };
        if !leader {
            let mut result = lock(&flight.result);
            while result.is_none() {
                result = flight.done.wait(result).unwrap_or_else(|p| p.into_inner());
            }
            return result.clone().unwrap_or(Err(Error::Stale));
        }
        // Whatever happens below (even a panic), the flight lands and its
        // followers wake up.
        let mut landing = Landing {
            cache: self,
            key,
            flight: &flight,
            result: Err(Error::Stale),
        };
        // A fetch that finished between our check and our flight may have filled it.
        landing.result = match self.fresh(key) {
            Some(hit) => Ok(hit),
            None => match fetch() {
                Ok(value) => Ok(self.insert(key.clone(), value)),
                Err(e) if e.is_transient() => match self.stale_at(key, asked) {
                    Some(stale) => {
                        tracing::warn!(error = %e, "store unreachable: serving a cached answer past its TTL (stale-if-error)");
                        Ok(stale)
                    }
                    None => Err(e),
                },
                Err(e) => Err(e),
            },
        };
        landing.result.clone()
    }
}

impl<K: Hash + Eq + Clone, V> Cache<K, V> {
    /// Fetches `key` again now, fresh or not (a refresh ahead of expiry),
    /// as the one fetch in flight for it: a reader that finds the answer
    /// expired meanwhile waits for this fetch instead of making its own.
    /// `Ok(None)` when another fetch of `key` is in flight already (it
    /// does the work); else the answer replaced and the new one. With
    /// `hold`, an answer that differs (as `same` says) from a positive
    /// one held is held back (see [`Cache::hold`]): the answer "replaced"
    /// is then the one still served, unchanged.
    #[allow(clippy::type_complexity)]
    pub fn refetch(
        &self,
        key: &K,
        fetch: impl FnOnce() -> Result<Option<V>>,
        hold: Option<(Duration, &dyn Fn(Option<&V>, Option<&V>) -> bool)>,
    ) -> Result<Option<(Option<Arc<V>>, Cached<V>)>> {
        let asked = self.clock.now();
        let flight = {
            let mut flights = lock(&self.flights);
            if flights.contains_key(key) {
                return Ok(None);
            }
            let f = Arc::new(Flight {
                result: Mutex::new(None),
                done: Condvar::new(),
            });
            flights.insert(key.clone(), f.clone());
            f
        };
        let mut landing = Landing {
            cache: self,
            key,
            flight: &flight,
            result: Err(Error::Stale),
        };
        let before = self.last(key);
        match fetch() {
            Ok(value) => {
                if let (Some((hold, same)), Some(b)) = (hold, &before) {
                    if !same(Some(b), value.as_ref()) {
                        // Held back, or (evicted meanwhile) stored at once:
                        // either way what is served now is fresh.
                        self.hold(key, value, hold);
                        let now = self.fresh_served(key, false).unwrap_or(Cached {
                            value: before.clone(),
                            valid_for: hold,
                        });
                        landing.result = Ok(now.clone());
                        return Ok(Some((before, now)));
                    }
                }
                let now = self.insert(key.clone(), value);
                landing.result = Ok(now.clone());
                Ok(Some((before, now)))
            }
            Err(e) => {
                // Readers waiting on this flight get what they would have
                // got from a fetch of their own.
                landing.result = match self.stale_at(key, asked) {
                    Some(stale) if e.is_transient() => Ok(stale),
                    _ => Err(e.clone()),
                };
                Err(e)
            }
        }
    }
}

/// Ends a flight when dropped: publishes its result to the followers.
struct Landing<'a, K: Hash + Eq + Clone, V> {
    cache: &'a Cache<K, V>,
    key: &'a K,
    flight: &'a Flight<V>,
    result: Result<Cached<V>>,
}

impl<K: Hash + Eq + Clone, V> Drop for Landing<'_, K, V> {
    fn drop(&mut self) {
        lock(&self.cache.flights).remove(self.key);
        *lock(&self.flight.result) = Some(self.result.clone());
        self.flight.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::cache::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn policy(capacity: usize) -> CachePolicy {
        CachePolicy {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            capacity: NonZeroUsize::new(capacity).unwrap(),
        }
    }

    #[test]
    fn a_fresh_answer_is_served_without_fetching() {
        let cache: Cache<&str, u32> = Cache::new(policy(10), ManualClock::new());
        let fetches = AtomicUsize::new(0);
        for _ in 0..3 {
            let got = cache
                .get_or_fetch(&"k", || {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    Ok(Some(7))
                })
                .unwrap();
            assert_eq!(got.value.as_deref(), Some(&7));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_answer_is_fetched_again_after_the_ttl() {
        let clock = ManualClock::new();
        let cache: Cache<&str, u32> = Cache::new(policy(10), clock.clone());
        cache.get_or_fetch(&"k", || Ok(Some(1))).unwrap();
        clock.advance(Duration::from_secs(29));
        let got = cache.get_or_fetch(&"k", || Ok(Some(2))).unwrap();
        assert_eq!(got.value.as_deref(), Some(&1));
        assert_eq!(got.valid_for, Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        let got = cache.get_or_fetch(&"k", || Ok(Some(2))).unwrap();
        assert_eq!(got.value.as_deref(), Some(&2));
    }

    #[test]
    fn missing_names_are_cached_for_the_negative_ttl() {
        let clock = ManualClock::new();
        let cache: Cache<&str, u32> = Cache::new(policy(10), clock.clone());
        let got = cache.get_or_fetch(&"k", || Ok(None)).unwrap();
        assert!(got.value.is_none());
        assert_eq!(got.valid_for, Duration::from_secs(5));
        clock.advance(Duration::from_secs(4));
        assert!(cache
            .get_or_fetch(&"k", || Ok(Some(1)))
            .unwrap()
            .value
            .is_none());
        clock.advance(Duration::from_secs(1));
        assert!(cache
            .get_or_fetch(&"k", || Ok(Some(1)))
            .unwrap()
            .value
            .is_some());
    }

    /// A value that finds nothing (a partial listing of no names) lives as
    /// long as "does not exist"; other values their whole TTL.
    #[test]
    fn a_value_that_finds_nothing_is_cached_for_the_negative_ttl() {
        let cache: Cache<&str, u32> =
            Cache::new(policy(10), ManualClock::new()).finding_nothing_when(|v| *v == 0);
        let nothing = cache.get_or_fetch(&"nothing", || Ok(Some(0))).unwrap();
        assert_eq!(nothing.value.as_deref(), Some(&0));
        assert_eq!(nothing.valid_for, Duration::from_secs(5));
        let found = cache.get_or_fetch(&"found", || Ok(Some(1))).unwrap();
        assert_eq!(found.valid_for, Duration::from_secs(30));
    }

    #[test]
    fn the_least_recently_used_entry_is_evicted_at_capacity() {
        let cache: Cache<u32, u32> = Cache::new(policy(2), ManualClock::new());
        cache.insert(1, Some(1));
        cache.insert(2, Some(2));
        assert!(cache.fresh(&1).is_some()); // 1 is now the most recent
        cache.insert(3, Some(3));
        assert_eq!(cache.len(), 2);
        assert!(cache.fresh(&2).is_none());
        assert!(cache.fresh(&1).is_some());
        assert!(cache.fresh(&3).is_some());
    }

    #[test]
    fn concurrent_misses_make_one_fetch() {
        let cache: Arc<Cache<&str, u32>> = Arc::new(Cache::new(policy(10), ManualClock::new()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(32));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let (cache, fetches, barrier) = (cache.clone(), fetches.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    cache
                        .get_or_fetch(&"k", || {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(100));
                            Ok(Some(9))
                        })
                        .unwrap()
                        .value
                        .map(|v| *v)
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Some(9));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn waiters_share_a_failed_fetch_instead_of_retrying_one_by_one() {
        let cache: Arc<Cache<&str, u32>> = Arc::new(Cache::new(policy(10), ManualClock::new()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, fetches, barrier) = (cache.clone(), fetches.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    cache
                        .get_or_fetch(&"k", || {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                            Err(Error::Unavailable("down".into()))
                        })
                        .is_err()
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        // Threads that arrive after the flight ended start a new one; with all
        // of them released at once and a 200 ms fetch, that is at most a few.
        assert!(
            fetches.load(Ordering::SeqCst) <= 2,
            "{}",
            fetches.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn a_panicking_fetch_still_wakes_its_followers() {
        let cache: Arc<Cache<&str, u32>> = Arc::new(Cache::new(policy(10), ManualClock::new()));
        let leader = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let _ = cache.get_or_fetch(&"k", || {
                    std::thread::sleep(Duration::from_millis(200));
                    panic!("fetch failed hard")
                });
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        // A follower of the doomed flight gets an error, not a hang.
        assert!(cache.get_or_fetch(&"k", || Ok(Some(1))).is_err());
        assert!(leader.join().is_err());
        assert_eq!(
            cache
                .get_or_fetch(&"k", || Ok(Some(1)))
                .unwrap()
                .value
                .as_deref(),
            Some(&1)
        );
    }

    #[test]
    fn stale_answers_are_served_while_the_store_is_down_within_the_window() {
        let clock = ManualClock::new();
        let cache: Cache<&str, u32> = Cache::new(policy(10), clock.clone());
        cache.get_or_fetch(&"k", || Ok(Some(1))).unwrap();
        clock.advance(Duration::from_secs(31));
        let down = || Err(Error::Unavailable("down".into()));
        assert_eq!(
            cache.get_or_fetch(&"k", down).unwrap().value.as_deref(),
            Some(&1)
        );
        clock.advance(Duration::from_secs(60));
        assert!(cache.get_or_fetch(&"k", down).is_err());
    }

    #[test]
    fn an_answer_servable_when_asked_is_served_after_a_slow_failure() {
        let clock = ManualClock::new();
        let cache: Cache<&str, u32> = Cache::new(policy(10), clock.clone());
        cache.insert("k", Some(1));
        // 89 s old when asked: inside TTL + stale-if-error (30 + 60 s).
        clock.advance(Duration::from_secs(89));
        let got = cache.get_or_fetch(&"k", || {
            // The store hangs past the end of the window, then fails.
            clock.advance(Duration::from_secs(5));
            Err(Error::Timeout(Duration::from_secs(5)))
        });
        assert_eq!(got.unwrap().value.as_deref(), Some(&1));
    }

    #[test]
    fn a_sweep_drops_only_answers_past_ttl_and_stale_window() {
        let clock = ManualClock::new();
        let cache: Cache<&str, u32> = Cache::new(policy(10), clock.clone());
        cache.insert("old", Some(1));
        clock.advance(Duration::from_secs(60));
        cache.insert("new", Some(2));
        clock.advance(Duration::from_secs(30));
        // "old" is 90 s old (30 s TTL + 60 s window): gone; "new" stays.
        assert_eq!(cache.sweep(), vec!["old"]);
        assert!(cache.last(&"old").is_none());
        assert_eq!(cache.last(&"new").as_deref(), Some(&2));
    }

    #[test]
    fn a_refusal_is_never_hidden_by_a_stale_answer() {
        let clock = ManualClock::new();
        let cache: Cache<&str, u32> = Cache::new(policy(10), clock.clone());
        cache.get_or_fetch(&"k", || Ok(Some(1))).unwrap();
        clock.advance(Duration::from_secs(31));
        let denied = cache.get_or_fetch(&"k", || Err(Error::PermissionDenied("no".into())));
        assert_eq!(denied.unwrap_err().errno(), libc::EACCES);
    }
}
