//! The map type of the tables every operation looks up: the open handles
//! (by handle number) and the inode table's nodes (by inode number).
//!
//! They hash with foldhash instead of std's SipHash: a look-up by a `u64`
//! costs about 140 instructions of SipHash, and a cached open+read+close
//! on a `--writable` mount does eight of them (docs/BENCHMARKS.md, "A
//! keyed fast hasher"). foldhash is seeded per process and per map, and
//! these keys are numbers the daemon hands out in order, never chosen by a
//! user. Maps keyed by names or paths (which a user can choose) keep std's
//! hasher, keyed from the operating system's random source.

use std::collections::HashMap;

/// A `HashMap` hashed with foldhash; make one with `FastMap::default()`.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
