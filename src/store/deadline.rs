//! One deadline per operation: the store requests one filesystem operation
//! makes (a lookup's listing and read, a commit's reads, writes and
//! retries) share one budget, the store's request timeout, instead of
//! each having it anew. The FUSE adapter marks where an operation starts;
//! requests made outside one (background refreshes, the probe) each get
//! the whole timeout.

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    /// When the operation running on this thread started.
    static STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether requests now leave [`RESERVE`] of the budget unused.
    static RESERVING: Cell<bool> = const { Cell::new(false) };
    /// Whether a request inside [`keeping_a_reserve`] found no time left
    /// (and so was never sent).
    static NOT_SENT: Cell<bool> = const { Cell::new(false) };
    static SENT: Cell<bool> = const { Cell::new(false) };
}

/// The share of the budget (1/RESERVE) that [`keeping_a_reserve`] keeps.
const RESERVE: u32 = 4;

/// Runs `f` as one operation: every store request it makes on this thread
/// counts against one deadline, measured from now (an operation inside
/// another keeps the outer one's).
pub fn operation<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Instant>);
    impl Drop for Reset {
        fn drop(&mut self) {
            STARTED.with(|s| s.set(self.0));
        }
    }
    let outer = STARTED.with(|s| s.get());
    let _reset = Reset(outer);
    STARTED.with(|s| s.set(Some(outer.unwrap_or_else(Instant::now))));
    f()
}

/// Runs `f` keeping a quarter of the budget for what follows: its requests
/// must end that much earlier. A write that gets no answer in time leaves
/// time for the read that finds out whether it was applied. Also says
/// whether `f` sent nothing because its (first) request found no time
/// left: its failure then says nothing happened. Once one request of `f`
/// was sent, a later one that found no time (a read finding out whether
/// the write landed) does not make the write unsent.
pub fn keeping_a_reserve<T>(f: impl FnOnce() -> T) -> (T, bool) {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            RESERVING.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(RESERVING.with(|r| r.replace(true)));
    NOT_SENT.with(|n| n.set(false));
    SENT.with(|n| n.set(false));
    let result = f();
    let sent = SENT.with(|n| n.replace(false));
    (result, NOT_SENT.with(|n| n.replace(false)) && !sent)
}

/// How long a request may take now, when the whole operation may take
/// `budget`: all of it outside an operation, what is left inside one (less
/// the reserve inside [`keeping_a_reserve`]); `None` once the operation
/// has used it up.
pub fn left(budget: Duration) -> Option<Duration> {
    let reserve = if RESERVING.with(|r| r.get()) {
        budget / RESERVE
    } else {
        Duration::ZERO
    };
    let used = STARTED
        .with(|s| s.get())
        .map_or(Duration::ZERO, |s| s.elapsed());
    let left = budget.checked_sub(used + reserve).filter(|d| !d.is_zero());
    if !reserve.is_zero() {
        match left {
            None => NOT_SENT.with(|n| n.set(true)),
            Some(_) => SENT.with(|n| n.set(true)),
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_of_one_operation_share_its_budget() {
        let budget = Duration::from_millis(200);
        assert_eq!(left(budget), Some(budget));
        operation(|| {
            std::thread::sleep(Duration::from_millis(50));
            let l = left(budget).unwrap();
            assert!(l <= Duration::from_millis(150), "{l:?}");
            operation(|| assert!(left(budget).unwrap() <= l));
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(left(budget), None);
        });
        assert_eq!(left(budget), Some(budget));
    }

    #[test]
    fn a_reserve_is_kept_for_what_follows() {
        let budget = Duration::from_millis(400);
        let (kept, not_sent) = keeping_a_reserve(|| left(budget));
        assert_eq!((kept, not_sent), (Some(Duration::from_millis(300)), false));
        assert_eq!(left(budget), Some(budget));
        operation(|| {
            std::thread::sleep(Duration::from_millis(50));
            let (kept, _) = keeping_a_reserve(|| left(budget).unwrap());
            assert!(kept <= Duration::from_millis(250), "{kept:?}");
            assert!(left(budget).unwrap() > kept + Duration::from_millis(90));
            std::thread::sleep(Duration::from_millis(260));
            // Within the reserve: a request inside gets no time, and is
            // known not to have been sent.
            assert_eq!(keeping_a_reserve(|| left(budget)), (None, true));
        });
    }
}
