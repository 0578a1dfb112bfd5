//! How the core's background threads learn that they are to end: one
//! flag and a condition variable, shared by every thread the builder
//! (`fs/builder.rs`) starts; sleeping threads are woken at once. The
//! threads that wait on something of their own (the settler in poll(2),
//! the switcher on the source) are woken by `Background::stop` one by one;
//! in tests every such wait is counted here too ([`Sleeps`]).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::lock;

/// Tells the background threads to end.
#[derive(Default)]
pub struct Halt {
    halted: Mutex<bool>,
    wake: Condvar,
    /// Who sleeps in [`Halt::sleep`] (or a wait of its own the stop must
    /// cut short) now, and how many sleeps ended on the halt (for tests).
    #[cfg(test)]
    sleeps: Mutex<Sleeps>,
}

/// What the sleepers of a [`Halt`] did (for tests).
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Sleeps {
    /// Threads inside [`Halt::sleep`], or a wait of their own, now.
    pub asleep: usize,
    /// Sleeps that ended because the threads were told to end.
    pub halted: usize,
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
        self.dozing();
        let told = self.sleep_until(Instant::now() + d);
        self.woke(told);
        told
    }

    /// A thread goes into a wait that the stop must cut short: its own
    /// (the settler's poll, the switcher's wait) or [`Halt::sleep`].
    /// Counted in tests; nothing otherwise.
    pub(super) fn dozing(&self) {
        #[cfg(test)]
        {
            lock(&self.sleeps).asleep += 1;
        }
    }

    /// The thread came out of that wait; `told`: because it was told to
    /// end. Counted in tests; nothing otherwise.
    pub(super) fn woke(&self, told: bool) {
        #[cfg(test)]
        {
            let mut sleeps = lock(&self.sleeps);
            sleeps.asleep -= 1;
            sleeps.halted += usize::from(told);
        }
        #[cfg(not(test))]
        let _ = told;
    }

    fn sleep_until(&self, until: Instant) -> bool {
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

    /// What the sleepers did so far (for tests).
    #[cfg(test)]
    pub(super) fn sleeps(&self) -> Sleeps {
        *lock(&self.sleeps)
    }
}
