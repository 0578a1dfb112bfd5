//! What the kernel is told of cached values: how long it may keep an
//! answer's names and attributes (entry and attribute timeouts), and how
//! it caches the pages of an open handle ([`PageCache`]). It is told to
//! forget them by the core's `Invalidation`s (`fs/invalidate.rs`), and
//! drops pages itself when a file's size or mtime changes
//! (`AUTO_INVAL_DATA`).

use super::{Cached, Source};

/// How the kernel caches the pages of one open handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageCache {
    /// Keep the pages cached across opens (FOPEN_KEEP_CACHE).
    pub keep_cache: bool,
    /// Bypass the page cache (FOPEN_DIRECT_IO).
    pub direct_io: bool,
    /// Send no FLUSH on close (FOPEN_NOFLUSH).
    pub no_flush: bool,
}

impl PageCache {
    /// A file a rule covers bypasses the page cache (direct I/O): its
    /// bytes are served to admitted handles only, and left in no kernel
    /// page another open could reach. Other read-only handles keep the
    /// page cache across opens (AUTO_INVAL_DATA drops it when the value
    /// changes) and skip FLUSH on close. A handle that writes (an open
    /// for writing, a created file) keeps no pages across opens and is
    /// flushed on close, which commits it.
    pub fn of(covered: bool, write: bool) -> PageCache {
        PageCache {
            keep_cache: !covered && !write,
            direct_io: covered,
            no_flush: !write,
        }
    }
}

impl Source {
    /// A fresh answer as the kernel may keep it: refreshed ahead
    /// ([`super::Refreshing::Ahead`]),
    /// only until the last part of its life begins, so that a value read
    /// through the kernel's caches comes back to us while it can still be
    /// refreshed ahead, instead of once it has expired (when the reader
    /// would wait for the store). Read in that last part (which queued its
    /// refresh), for the rest of its life: a refresh that finds it changed
    /// tells the kernel to forget it, so asking again on every open until
    /// the refresh lands would only cost requests.
    pub(super) fn for_the_kernel<V>(&self, mut answer: Cached<V>) -> Cached<V> {
        if self.refresher.is_some() && answer.valid_for > self.ahead {
            answer.valid_for -= self.ahead;
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::PageCache;

    /// Every handle's flags, read-only or writing (a created file too),
    /// covered by an `--allow` rule or not.
    #[test]
    fn a_handle_keeps_pages_unless_it_writes_or_a_rule_covers_it() {
        let flags = |covered, write| {
            let c = PageCache::of(covered, write);
            (c.keep_cache, c.direct_io, c.no_flush)
        };
        assert_eq!(flags(false, false), (true, false, true));
        assert_eq!(flags(true, false), (false, true, true));
        assert_eq!(flags(false, true), (false, false, false));
        assert_eq!(flags(true, true), (false, true, false));
    }
}
