//! What the kernel is told of cached values: how long it may keep an
//! answer's names and attributes (entry and attribute timeouts).

use super::{Cached, Source};

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
