//! One deadline per operation: the store requests one filesystem operation
//! makes (a lookup's listing and read, a commit's reads, writes and
//! retries) share one budget, the store's request timeout, instead of
//! each having it anew. The operation's context (`fs::OpContext`) carries
//! its [`Deadline`], made where the operation starts, and hands it to
//! every store call; requests made outside an operation (background
//! refreshes, the probe) get [`Deadline::per_request`]: each the whole
//! timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The share of the budget (1/RESERVE) that [`Deadline::keeping_a_reserve`]
/// keeps.
const RESERVE: u32 = 4;

/// When the operation a store request belongs to started, and so how long
/// the request may take: every store method is given one.
#[derive(Debug, Default)]
pub struct Deadline {
    /// When the operation started; `None` outside one.
    started: Option<Instant>,
    /// Whether requests leave [`RESERVE`] of the budget unused.
    reserving: bool,
    /// Whether a request made with this (reserving) deadline found no time
    /// left, and so was never sent.
    not_sent: AtomicBool,
    /// Whether one was sent.
    sent: AtomicBool,
}

/// The same deadline, for more requests of the operation (what was sent
/// with it so far included).
impl Clone for Deadline {
    fn clone(&self) -> Self {
        Deadline {
            started: self.started,
            reserving: self.reserving,
            not_sent: AtomicBool::new(self.not_sent.load(Ordering::Relaxed)),
            sent: AtomicBool::new(self.sent.load(Ordering::Relaxed)),
        }
    }
}

impl Deadline {
    /// An operation's deadline, measured from now: every store request
    /// made with it counts against one budget.
    pub fn starting_now() -> Self {
        Deadline {
            started: Some(Instant::now()),
            ..Deadline::default()
        }
    }

    /// No operation's: each request gets the whole budget (background
    /// work, the probe, a command's one-off call).
    pub fn per_request() -> Self {
        Deadline::default()
    }

    /// The same deadline, keeping a quarter of the budget for what
    /// follows: its requests must end that much earlier. A write that
    /// gets no answer in time leaves time for the read that finds out
    /// whether it was applied. [`Deadline::not_sent`] then says whether
    /// the requests made with it sent nothing.
    pub fn keeping_a_reserve(&self) -> Deadline {
        Deadline {
            started: self.started,
            reserving: true,
            ..Deadline::default()
        }
    }

    /// Whether the requests made with this deadline (from
    /// [`Deadline::keeping_a_reserve`]) sent nothing because the (first)
    /// one found no time left: their failure then says nothing happened.
    /// Once one request was sent, a later one that found no time (a read
    /// finding out whether the write landed) does not make it unsent.
    pub fn not_sent(&self) -> bool {
        self.not_sent.load(Ordering::Relaxed) && !self.sent.load(Ordering::Relaxed)
    }

    /// How long a request may take now, when the whole operation may take
    /// `budget`: all of it outside an operation, what is left inside one
    /// (less the reserve when keeping one); `None` once the operation has
    /// used it up.
    pub fn left(&self, budget: Duration) -> Option<Duration> {
        let reserve = if self.reserving {
            budget / RESERVE
        } else {
            Duration::ZERO
        };
        let used = self.started.map_or(Duration::ZERO, |s| s.elapsed());
        let left = budget.checked_sub(used + reserve).filter(|d| !d.is_zero());
        if self.reserving {
            match left {
                None => self.not_sent.store(true, Ordering::Relaxed),
                Some(_) => self.sent.store(true, Ordering::Relaxed),
            }
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_of_one_operation_share_its_budget() {
        let budget = Duration::from_millis(200);
        assert_eq!(Deadline::per_request().left(budget), Some(budget));
        let op = Deadline::starting_now();
        std::thread::sleep(Duration::from_millis(50));
        let l = op.left(budget).unwrap();
        assert!(l <= Duration::from_millis(150), "{l:?}");
        assert!(op.left(budget).unwrap() <= l);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(op.left(budget), None);
        assert_eq!(Deadline::per_request().left(budget), Some(budget));
    }

    #[test]
    fn a_reserve_is_kept_for_what_follows() {
        let budget = Duration::from_millis(400);
        let reserving = Deadline::per_request().keeping_a_reserve();
        assert_eq!(reserving.left(budget), Some(Duration::from_millis(300)));
        assert!(!reserving.not_sent());
        assert_eq!(Deadline::per_request().left(budget), Some(budget));
        let op = Deadline::starting_now();
        std::thread::sleep(Duration::from_millis(50));
        let kept = op.keeping_a_reserve().left(budget).unwrap();
        assert!(kept <= Duration::from_millis(250), "{kept:?}");
        assert!(op.left(budget).unwrap() > kept + Duration::from_millis(90));
        std::thread::sleep(Duration::from_millis(260));
        // Within the reserve: a request gets no time, and is known not to
        // have been sent.
        let reserving = op.keeping_a_reserve();
        assert_eq!(reserving.left(budget), None);
        assert!(reserving.not_sent());
    }
}
