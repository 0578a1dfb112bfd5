//! The cache: every answer of the store the core keeps, for how long,
//! and who is told when it changes. The mount, templates and `exec` all
//! read the store through a [`Source`] made here.
//!
//! [`Source`] is the store behind the cache, in named parts:
//!
//! | part | file | what it does |
//! |---|---|---|
//! | read-through | `source.rs` | listings, secrets, versions, permissions, metadata kept apart from the value: a fresh answer, what the parent's listing already says, else one fetch for all who ask at once ([`Source::listing`], [`Source::secret`], [`Source::metadata`]) |
//! | outage | `outage.rs` | the "store is down" state and its probe: cached answers served (stale ones within `--stale-if-error`), the rest failing at once |
//! | refresh | `refresh.rs` | refresh ahead of expiry ([`Refresh`], [`Refreshing`]), changed secrets held for a quiet switch ([`QUIET`], [`MAX_HOLD`]), each replaced answer a [`Change`] |
//! | write-through | `write_through.rs` | writes, deletes and metadata changes that land in the cache at once |
//! | kernel | `kernel.rs` | what the kernel may keep: entry and attribute timeouts of an answer, the page cache of a handle ([`PageCache`]) |
//! | entries | `entries.rs`, `clock.rs` | one [`Cache`]: TTL, LRU, negative answers, coalesced misses, stale answers, answers held back; over an injectable [`Clock`] |
//!
//! # Where a value is kept
//!
//! | value | kept in | for how long | who is told when it changes |
//! |---|---|---|---|
//! | listings, secrets, versions of secrets, permissions (and "no such" answers) | the four [`Cache`]s of a [`Source`] (`source.rs`) | `--ttl` (`--negative-ttl` for "no such"), at most `--cache-entries` each (LRU); served stale up to `--stale-if-error` while the store is down; dropped by the sweep (`SecretFs::sweep`, every half TTL, within 1–30 s) | a refresh or a fetch that replaced an answer returns a [`Change`]: `SecretFs::notice` (`fs/invalidate.rs`) turns it into `Invalidation`s for the kernel, invalidates templates that used it, and reports it to `--on-change` (`fs/watch.rs`); a write through the mount lands here at once (`write_through.rs`) |
//! | a secret's custom metadata and description, on a store that keeps them apart from its value (`Capabilities::metadata_apart`: AWS Secrets Manager's DescribeSecret) | the metadata [`Cache`] of a [`Source`] (`source.rs`), filled by [`Source::metadata`] only when an attribute asks (`fs/xattr.rs`: listxattr, getxattr of `meta.*` or the description, setxattr's checks) | as secrets: `--ttl` (`--negative-ttl` for "no such"), at most `--cache-entries` (LRU), stale up to `--stale-if-error` while the store is down, dropped by the sweep; never refreshed ahead | nobody is told (the kernel does not cache attributes); a change through the mount (`write_through.rs`: a set or removal, a write, a delete) drops it, so the next ask reads it anew |
//! | a refreshed secret whose data changed | the entry's held-back answer (`Cache::hold`, `entries.rs`; `Source::refresh`, `refresh.rs`) | until none of its keys was served for [`QUIET`], at most a tenth of the TTL up to [`MAX_HOLD`] | switched in by the core's switcher (`fs/switch.rs`, `Source::switch_due`), then as any [`Change`] |
//! | whether the store answers | `Reach` in `outage.rs` | until the probe (every second) gets an answer | nobody: readers see it through `Source::is_down` |
//! | the version of a secret each key file was last shown | `shown` of its inode (`fs/inode.rs`, `Namespace::show`) | until the sweep finds the cache no longer holds it; a retired inode (its value changed) keeps it until the kernel's FORGET | `SecretFs::notice` retires the inode (`Inodes::retire`) and tells the kernel to drop its name |
//! | what an open handle reads | `Handle` (`fs/handle.rs`): a key handle reads its inode's `shown`, one opened beside a writer its bytes at open, a directory its entries at open | until release | nobody: a handle keeps what it opened |
//! | bytes written, not yet committed | `WriteBuffer` (`fs/writers.rs`), one per writing open | until flush, fsync or release commits it | the commit writes through the cache (`Source::write`) and shows the version written (`Namespace::show_written`, under the secret's commit lock; `Namespace::own_write` keeps the inode from being retired meanwhile, and only the latest cached version retires one: `SecretFs::replaces`) |
//! | names, attributes and pages in the kernel | the kernel | entry and attribute timeouts: the answer's validity, less the last tenth when refreshed ahead (`kernel.rs`); pages: [`PageCache::of`] per handle | `Invalidation`s (`fs/invalidate.rs`), sent by the adapter's notifier thread (`fuse/session.rs`); `AUTO_INVAL_DATA` drops pages when size or mtime changes |
//! | a template's rendering | `Templates` (`fs/template.rs`), made of answers read through the [`Source`] | until the next lookup or getattr renders it again; the sweep drops one a secret it used left the cache | `SecretFs::notice_templates` (`fs/template.rs`): the kernel is told to forget the template's inode |
//! | `exec`'s environment | `Watched::secrets` (`exec/sources.rs`), each SOURCE a [`Source`] of its own, read with [`Source::refresh`] | read again once per `--ttl` (`exec/watch.rs`) | the supervisor, which restarts or signals the command (`exec/supervisor.rs`) |

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
use refresh::Nudge;
pub use refresh::{Change, Refresh, Refreshing, MAX_HOLD, QUIET};
pub(in crate::fs) use source::named;
use source::Kind;
pub use source::{Fetched, Source};
