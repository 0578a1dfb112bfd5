//! Where the core gets "now" from: the real monotonic clock in the daemon,
//! a clock moved by hand in tests (so that expiry is tested without sleeping).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of "now".
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told: tests advance it past a TTL instead
/// of sleeping.
pub struct ManualClock {
    base: Instant,
    offset_micros: AtomicU64,
}

impl ManualClock {
    /// A clock standing at the moment it was made.
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock {
            base: Instant::now(),
            offset_micros: AtomicU64::new(0),
        })
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.offset_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_micros(self.offset_micros.load(Ordering::SeqCst))
    }
}
