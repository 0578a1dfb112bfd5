//! The cache: every answer of the store the core keeps, and for how long.
//!
//! [`Source`] is the store behind the cache, in parts: the read-through
//! path (`source.rs`), the "store is down" state and its probe
//! (`outage.rs`), refresh ahead and the quiet switch (`refresh.rs`),
//! writes that land in the cache at once (`write_through.rs`), and what
//! the kernel may keep (`kernel.rs`). Each of its caches is a [`Cache`]
//! (`entries.rs`: TTL, LRU, negative answers, coalesced misses, stale
//! answers, answers held back), over an injectable [`Clock`] (`clock.rs`).

pub mod clock;
mod entries;
mod kernel;
mod outage;
mod refresh;
mod source;
mod write_through;

pub use clock::{Clock, ManualClock, SystemClock};
pub use entries::{Cache, CachePolicy, Cached, Switched};
pub use kernel::PageCache;
use outage::Reach;
pub use refresh::{Change, Refresh, Refreshing, MAX_HOLD, QUIET};
pub(in crate::fs) use source::named;
use source::Kind;
pub use source::{Fetched, Source};
