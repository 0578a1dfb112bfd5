//! How the core is made: one [`Builder`] takes everything the core is
//! wired to (how secrets show, templates, the inode bound, where kernel
//! invalidations, changed secrets and its metrics go, whether it keeps
//! house, the `--allow` rules, whether opens are recorded), and
//! [`Builder::build`] makes the core and starts its background threads
//! at once. Nothing is wired into a core after it is built. The
//! [`Background`] it returns stops and joins every thread it started,
//! when told to ([`Background::stop`]) or when dropped.
//!
//! The threads: the refreshers and the switcher (`background_refresh`,
//! `fs/switch.rs`), the sweeper and the settler
//! ([`Builder::housekeeping`]; no settler on a read-only core), the
//! watcher (`--on-change`, [`Builder::report_changes_to`], `fs/watch.rs`).
//! The store probe (`fs/cache/outage.rs`) and a layer's probe are not among
//! them: they run only while the store is down, and end when it answers
//! or the core is gone.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use super::cache::{Refresh, Refreshing, Source};
use super::halt::Halt;
use super::handle::HandleTable;
use super::invalidate::Invalidation;
use super::namespace::Namespace;
use super::view::Views;
use super::writers::Writers;
use super::{settle, template, Clock, FsConfig, MountedOver, SecretFs};
use crate::access::Access;
use crate::metrics::Meter;
use crate::store::{SecretPath, SecretStore};

/// What a core is made of and wired to, until [`Builder::build`].
pub struct Builder {
    store: Arc<dyn SecretStore>,
    root: SecretPath,
    config: FsConfig,
    clock: Arc<dyn Clock>,
    views: Views,
    templates: Option<PathBuf>,
    bound: Option<(usize, MountedOver)>,
    invalidations: Option<Sender<Invalidation>>,
    changes: Option<Sender<String>>,
    meter: Meter,
    housekeeping: bool,
    access: Option<Access>,
    opens_recorded: bool,
}

impl SecretFs {
    /// A builder of a core whose root stands for `root` in `store`,
    /// showing each secret as a directory of key files unless told
    /// otherwise, and starting no thread but what `config` asks for
    /// (`background_refresh`).
    pub fn builder(
        store: Arc<dyn SecretStore>,
        root: SecretPath,
        config: FsConfig,
        clock: Arc<dyn Clock>,
    ) -> Builder {
        Builder {
            store,
            root,
            config,
            clock,
            views: Views::for_layout(),
            templates: None,
            bound: None,
            invalidations: None,
            changes: None,
            meter: Meter::off(),
            housekeeping: false,
            access: None,
            opens_recorded: false,
        }
    }
}

impl Builder {
    /// Shows secrets through `views`.
    pub fn views(mut self, views: Views) -> Self {
        self.views = views;
        self
    }

    /// Shows, at the root, one file `X` per template `dir/X.tmpl`,
    /// rendered on read from the secrets below the root (`--layout
    /// templates:DIR`); the core is then read-only.
    pub fn templates(mut self, dir: PathBuf) -> Self {
        self.templates = Some(dir);
        self.config.read_only = true;
        self
    }

    /// Holds at most about `max` inodes: past it, the kernel is asked to
    /// drop the oldest entries, except those something is mounted on (or
    /// below), as `mounted_over` says (see [`SecretFs::keep_inodes_bounded`]).
    /// Without invalidations ([`Builder::send_invalidations_to`]) nothing
    /// is asked.
    pub fn bound_inodes(mut self, max: usize, mounted_over: MountedOver) -> Self {
        self.bound = Some((max, mounted_over));
        self
    }

    /// Sends what the kernel must forget to `tx` (the adapter's notifier).
    pub fn send_invalidations_to(mut self, tx: Sender<Invalidation>) -> Self {
        self.invalidations = Some(tx);
        self
    }

    /// Sends the path in the mount (from its root, no leading `/`) of every
    /// secret a refresh finds changed to `tx` (`--on-change`), and starts
    /// the thread that re-reads every held secret once per TTL.
    pub fn report_changes_to(mut self, tx: Sender<String>) -> Self {
        self.changes = Some(tx);
        self
    }

    /// Counts cache lookups and refreshes with `meter` (`--metrics`), and
    /// attaches the core's levels ([`SecretFs::levels`]) to it, read at
    /// each scrape.
    pub fn metrics(mut self, meter: Meter) -> Self {
        self.meter = meter;
        self
    }

    /// Admits opens and changes of the files `access`'s rules cover
    /// (`--allow`, see `fs/open.rs`): every open then reaches the daemon.
    /// No rules, no admission.
    pub fn access(mut self, access: Access) -> Self {
        self.access = (!access.rules.is_empty()).then_some(access);
        self
    }

    /// Every open is recorded (an audit log): none may skip the daemon.
    pub fn record_opens(mut self) -> Self {
        self.opens_recorded = true;
        self
    }

    /// Starts the threads that keep house, as a mount does: the sweeper
    /// (old values out of memory, every half TTL) and, unless read-only,
    /// the settler (temporary files nobody renamed become keys). Without
    /// it, [`SecretFs::sweep`] and [`SecretFs::settle`] run when called.
    pub fn housekeeping(mut self) -> Self {
        self.housekeeping = true;
        self
    }

    /// The core, and the handle of the threads it started.
    pub fn build(self) -> (Arc<SecretFs>, Background) {
        let config = self.config;
        let names = Namespace::new(self.root);
        let (bound, mounted_over) = match self.bound {
            Some((max, over)) => (Some(max), Some(over)),
            None => (None, None),
        };
        names.set_bound(bound);
        // The settler's pipe, made first: the core wakes it through its
        // writing end from the start.
        let settler_pipe = if self.housekeeping && !config.read_only {
            settle::pipe()
                .inspect_err(|e| tracing::warn!(error = %e, "cannot start the settler: temporary files left alone wait for the mount's end"))
                .ok()
        } else {
            None
        };
        let (wakes, settler) = match settler_pipe {
            Some((wakes, waker)) => (Some(wakes), settle::Settler::waking(waker)),
            None => (None, settle::Settler::default()),
        };
        // The refreshers' queue, made first: the source sends to it from
        // the start; the threads that read it start below.
        let queue = config
            .background_refresh
            .then(std::sync::mpsc::channel::<Option<Refresh>>);
        let refreshing = match &queue {
            Some((tx, _)) => Refreshing::Ahead(tx.clone()),
            None => Refreshing::OnRequest,
        };
        let source = Source::new(
            self.store,
            config.cache,
            self.clock,
            refreshing,
            self.meter.clone(),
        );
        let fs = Arc::new(SecretFs {
            source: Arc::new(source),
            names,
            handles: HandleTable::default(),
            writers: Writers::default(),
            config,
            views: self.views,
            last_error: Mutex::new(None),
            invalidations: self.invalidations,
            changes: self.changes,
            mounted_over,
            templates: self
                .templates
                .map(|dir| Arc::new(template::Templates::new(dir))),
            settler,
            access: self.access,
            opens_recorded: self.opens_recorded,
        });
        let core = Arc::downgrade(&fs);
        self.meter.attach_levels(Box::new(move || {
            core.upgrade().map(|fs| fs.levels()).unwrap_or_default()
        }));
        let mut background = Background {
            halt: Arc::new(Halt::default()),
            threads: Vec::new(),
            refreshers: None,
            fs: Arc::downgrade(&fs),
        };
        if let Some((tx, rx)) = queue {
            fs.start_refresher(tx, rx, &mut background);
        }
        if self.housekeeping {
            fs.start_sweeper(&mut background);
        }
        if let Some(wakes) = wakes {
            fs.start_settler(wakes, &mut background);
        }
        if fs.changes.is_some() {
            fs.start_watcher(&mut background);
        }
        (fs, background)
    }
}

/// The background threads of a core: stopped and joined by
/// [`Background::stop`], or when dropped.
pub struct Background {
    halt: Arc<Halt>,
    threads: Vec<JoinHandle<()>>,
    /// The refreshers' queue and how many read it: each is sent `None`
    /// to end.
    refreshers: Option<(Sender<Option<Refresh>>, usize)>,
    fs: Weak<SecretFs>,
}

impl Background {
    /// Adds a thread to stop and join.
    pub(super) fn spawned(&mut self, thread: JoinHandle<()>) {
        self.threads.push(thread);
    }

    /// Where threads learn that they are to end.
    pub(super) fn halt(&self) -> Arc<Halt> {
        self.halt.clone()
    }

    /// The refreshers read `tx`'s queue: `count` of them.
    pub(super) fn refreshers(&mut self, tx: Sender<Option<Refresh>>, count: usize) {
        self.refreshers = Some((tx, count));
    }

    /// How many threads run (for tests).
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Stops every thread and waits for each to end. A thread in the
    /// middle of a store request ends once the request does (bounded by
    /// `--timeout`); a commit the settler started is finished first.
    pub fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.halt.halt();
        if let Some((tx, count)) = self.refreshers.take() {
            for _ in 0..count {
                let _ = tx.send(None);
            }
        }
        if let Some(fs) = self.fs.upgrade() {
            fs.settler.wake();
            fs.source.stop_switcher();
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::warn!("a background thread of the core panicked");
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::super::clock::ManualClock;
    use super::super::halt::Sleeps;
    use super::super::tests::{config, soon};
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::time::Duration;

    /// A builder of a core over an empty store and a clock that moves only
    /// when told.
    fn builder(config: FsConfig) -> Builder {
        SecretFs::builder(
            Arc::new(MemoryStore::new()),
            SecretPath::root(),
            config,
            ManualClock::new(),
        )
    }

    fn read_only() -> FsConfig {
        FsConfig {
            read_only: true,
            ..config(Duration::from_secs(30))
        }
    }

    #[test]
    fn a_built_core_runs_the_threads_asked_for_and_stopping_wakes_and_joins_them() {
        let (changes, _heard) = std::sync::mpsc::channel();
        // An hour's TTL: the watcher sleeps an hour and the sweeper half a
        // minute between rounds, the settler until woken, the refreshers and
        // the switcher until told to end (the switcher wakes every second
        // when idle, but only the stop's word ends it); a stop that left
        // any of them to wake on its own would not return before the
        // watchdog below gives up.
        let (fs, mut background) = builder(FsConfig {
            background_refresh: true,
            ..config(Duration::from_secs(3600))
        })
        .report_changes_to(changes)
        .housekeeping()
        .build();
        // 4 refreshers, the switcher, the sweeper, the settler, the watcher.
        assert_eq!(background.threads(), 8);
        let halt = background.halt();
        // The sweeper, the watcher, the settler (in poll) and the switcher
        // asleep, so that the stop must wake them (the refreshers wait on
        // their queue, which only the stop's `None`s end).
        soon(
            "the sweeper, the watcher, the settler and the switcher asleep",
            || halt.sleeps().asleep == 4,
        );
        let (stopped, heard) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            background.stop();
            let _ = stopped.send(background.threads());
        });
        // A watchdog, not a timing: it only bounds a stop that hangs.
        let left = heard
            .recv_timeout(Duration::from_secs(30))
            .expect("stop() returns once every thread is woken and joined");
        assert_eq!(left, 0);
        // Every sleeper left its sleep because it was told to end.
        assert_eq!(
            halt.sleeps(),
            Sleeps {
                asleep: 0,
                halted: 4
            }
        );
        drop(fs);
    }

    #[test]
    fn a_core_built_without_housekeeping_or_refresh_starts_nothing_and_a_read_only_one_no_settler()
    {
        let (_fs, background) = builder(read_only()).build();
        assert_eq!(background.threads(), 0);
        let (_fs, background) = builder(read_only()).housekeeping().build();
        // The sweeper only: nothing can wait to be settled.
        assert_eq!(background.threads(), 1);
    }

    #[test]
    fn a_core_built_with_a_meter_counts_its_lookups_and_reports_its_levels() {
        use super::super::context::OpContext;
        use super::super::inode::ROOT_INO;
        use crate::metrics::Metrics;
        let metrics = Arc::new(Metrics::new());
        let (fs, _background) = SecretFs::builder(
            super::super::tests::seeded(),
            SecretPath::root(),
            config(Duration::from_secs(30)),
            ManualClock::new(),
        )
        .metrics(Meter::to(metrics.clone()))
        .build();
        let ctx = OpContext::background();
        let app = fs.lookup(&ctx, ROOT_INO, "myapp").expect("myapp");
        fs.lookup(&ctx, app.ino, "db").expect("db");
        let text = metrics.encode();
        assert!(
            text.contains("secretfs_cache_lookups_total{kind=\"listing\",result=\"miss\"}"),
            "{text}"
        );
        assert!(text.contains("secretfs_inodes 3"), "{text}");
        assert!(text.contains("secretfs_store_up 1"), "{text}");
        // Once the core is gone, a scrape shows no levels.
        drop(fs);
        let text = metrics.encode();
        assert!(!text.contains("secretfs_inodes"), "{text}");
    }
}
