//! How the core's background threads learn that they are to end: one
//! flag and a condition variable, shared by every thread the builder
//! (`fs/builder.rs`) starts; sleeping threads are woken at once.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::lock;

/// Tells the background threads to end.
#[derive(Default)]
pub struct Halt {
    halted: Mutex<bool>,
    wake: Condvar,
}

impl Halt {
    /// Tells every thread to end, and wakes those asleep.
    pub(super) fn halt(&self) {
        *lock(&self.halted) = true;
        self.wake.notify_all();
    }

    /// Whether the threads were told to end.
    pub(super) fn is_halted(&self) -> bool {
        *lock(&self.halted)
    }

    /// Sleeps for `d`, unless told to end first: `true` once told.
    pub(super) fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut halted = lock(&self.halted);
        while !*halted {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            halted = self
                .wake
                .wait_timeout(halted, left)
                .map(|(h, _)| h)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }
}
