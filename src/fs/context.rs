//! What one operation carries down to the store: its deadline, who asked,
//! and whether it may wait on the store. Made once per operation (by the
//! FUSE adapter for a request, by background work for its own) and passed
//! as an argument, never kept in thread-locals.

use crate::audit::Caller;
use crate::error::{Error, Result};
use crate::store::Deadline;

/// The context of one operation.
#[derive(Debug, Clone)]
pub struct OpContext {
    deadline: Deadline,
    caller: Option<Caller>,
    may_wait: bool,
}

impl OpContext {
    /// A request made by `caller`: its store requests share one deadline,
    /// measured from now.
    pub fn request(caller: Caller) -> Self {
        OpContext {
            deadline: Deadline::starting_now(),
            caller: Some(caller),
            may_wait: true,
        }
    }

    /// The daemon's own work as one operation (a settler's commit): its
    /// store requests share one deadline, measured from now.
    pub fn own_operation() -> Self {
        OpContext {
            deadline: Deadline::starting_now(),
            caller: None,
            may_wait: true,
        }
    }

    /// The daemon's own work outside any operation (refresh ahead, probes,
    /// status): each store request gets the whole timeout.
    pub fn background() -> Self {
        OpContext {
            deadline: Deadline::per_request(),
            caller: None,
            may_wait: true,
        }
    }

    /// A request made by `caller` that may not wait on the store: whatever
    /// would ask the store fails with [`Error::WouldBlock`] instead, so that
    /// a request thread answers what the cache can answer and hands the
    /// rest on (to a [`OpContext::request`]). It sends no request, so its
    /// deadline is never read (and the clock not asked).
    pub fn cache_only(caller: Caller) -> Self {
        OpContext {
            deadline: Deadline::per_request(),
            caller: Some(caller),
            may_wait: false,
        }
    }

    /// The same operation keeping a quarter of its time for what follows
    /// (see [`Deadline::keeping_a_reserve`]): for a write that may get no
    /// answer, so that the read finding out whether it landed has time.
    pub fn keeping_a_reserve(&self) -> OpContext {
        OpContext {
            deadline: self.deadline.keeping_a_reserve(),
            caller: self.caller,
            may_wait: self.may_wait,
        }
    }

    /// The deadline the store requests of this operation share.
    pub fn deadline(&self) -> &Deadline {
        &self.deadline
    }

    /// Who made the request; `None` for the daemon's own work.
    pub fn caller(&self) -> Option<Caller> {
        self.caller
    }

    /// `Err(WouldBlock)` when this operation may not wait on the store.
    pub fn may_wait(&self) -> Result<()> {
        if self.may_wait {
            Ok(())
        } else {
            Err(Error::WouldBlock)
        }
    }
}
