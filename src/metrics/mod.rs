//! Prometheus metrics, opt-in with `--metrics ADDR`.
//!
//! The families live in one [`Metrics`], made by the mount only when it
//! serves them, and reached through a [`Meter`]: one cheap handle the
//! mount makes once and hands, at construction, to everything that
//! records (the store wrapper `store::metered`, the Vault token keeper,
//! the cache and refresher in the core, the FUSE adapter and its
//! notifier). An unmetered mount (and every test) hands out
//! [`Meter::off`], with which a record costs one branch. Levels that
//! already exist elsewhere (open handles, inodes, cache entries, whether
//! the store is down) are read at scrape time through the [`Levels`] the
//! core attaches when it is built ([`Meter::attach_levels`]).
//! No label ever holds a path or a value: only operation names and
//! outcomes from fixed sets.

mod serve;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use serve::{serve, Server};

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
type Histograms = Family<Labels2, Histogram, fn() -> Histogram>;

/// Latency buckets for store requests: 0.5 ms to ~33 s, doubling.
fn store_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Levels read when scraped: what the mount holds right now.
pub struct Level {
    /// Metric name (without the `secretfs_` prefix).
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Its value.
    pub value: i64,
    /// One label, for an information metric (`node="…"`), if any.
    pub label: Option<(&'static str, String)>,
}

/// Where scrape-time levels come from (the mounted core).
pub type Levels = Box<dyn Fn() -> Vec<Level> + Send + Sync>;

/// The levels, once the core is built: none before.
struct LevelCollector(Arc<OnceLock<Levels>>);

impl fmt::Debug for LevelCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LevelCollector")
    }
}

impl Collector for LevelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(levels) = self.0.get() else {
            return Ok(());
        };
        for level in levels() {
            let gauge = ConstGauge::new(level.value);
            let mut metric =
                encoder.encode_descriptor(level.name, level.help, None, gauge.metric_type())?;
            match &level.label {
                Some((key, value)) => {
                    let labels = [(*key, value.as_str())];
                    gauge.encode(metric.encode_family(&labels)?)?;
                }
                None => gauge.encode(metric)?,
            }
        }
        Ok(())
    }
}

/// The metric families of this process.
pub struct Metrics {
    registry: Registry,
    store_requests: Histograms,
    cache_lookups: Family<Labels2, Counter>,
    refreshes: Family<Labels2, Counter>,
    fuse_ops: Family<Labels1, Counter>,
    invalidations: Family<Labels1, Counter>,
    token_expiry: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Shared with the registry's collector of levels.
    levels: Arc<OnceLock<Levels>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, empty, with no levels until some are attached.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("secretfs");
        let store_requests: Histograms = Family::new_with_constructor(store_buckets);
        registry.register(
            "store_request_duration_seconds",
            "Requests to the store by operation (list, read, write, delete, health, permissions, read_version, read_metadata, set_metadata) and outcome (ok, not_found, denied, conflict, timeout, unavailable, error)",
            store_requests.clone(),
        );
        let cache_lookups = Family::<Labels2, Counter>::default();
        registry.register(
            "cache_lookups",
            "Answers looked up in the cache by kind (secret, listing) and result: hit, miss (fetched from the store), coalesced (waited for another caller's fetch), stale (served past the TTL because the store failed), failed",
            cache_lookups.clone(),
        );
        let refreshes = Family::<Labels2, Counter>::default();
        registry.register(
            "refreshes",
            "Background refreshes of cached answers ahead of their expiry, by kind (secret, listing) and result (ok, failed)",
            refreshes.clone(),
        );
        let fuse_ops = Family::<Labels1, Counter>::default();
        registry.register(
            "fuse_operations",
            "FUSE requests received, by operation",
            fuse_ops.clone(),
        );
        let invalidations = Family::<Labels1, Counter>::default();
        registry.register(
            "kernel_invalidations",
            "Invalidations sent to the kernel's caches, by kind (inode, entry)",
            invalidations.clone(),
        );
        let token_expiry = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "token_expiry_timestamp_seconds",
            "When the store token in use expires (Unix time; 0 when it never expires or is not known yet)",
            token_expiry.clone(),
        );
        let levels = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(LevelCollector(levels.clone())));
        Metrics {
            registry,
            store_requests,
            cache_lookups,
            refreshes,
            fuse_ops,
            invalidations,
            token_expiry,
            levels,
        }
    }

    /// The text exposition of every family (OpenMetrics text format).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// How a store request ended, as a label value.
pub fn outcome_of<T>(result: &crate::error::Result<T>) -> &'static str {
    use crate::error::Error;
    match result {
        Ok(_) => "ok",
        Err(Error::NotFound) => "not_found",
        Err(Error::PermissionDenied(_)) => "denied",
        Err(Error::CasConflict | Error::Locked(_)) => "conflict",
        Err(Error::Timeout(_) | Error::OutOfTime(_)) => "timeout",
        Err(Error::Unavailable(_) | Error::Unanswered(_)) => "unavailable",
        Err(_) => "error",
    }
}

/// Where a mount's counts go: the [`Metrics`] it serves, or nowhere
/// ([`Meter::off`], the default). Cheap to clone; every clone records
/// into the same families.
#[derive(Clone, Default)]
pub struct Meter(Option<Arc<Metrics>>);

impl fmt::Debug for Meter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Meter(on)"
        } else {
            "Meter(off)"
        })
    }
}

impl Meter {
    /// Records nothing: an unmetered mount, `exec`, tests.
    pub fn off() -> Self {
        Meter(None)
    }

    /// Records into `metrics`.
    pub fn to(metrics: Arc<Metrics>) -> Self {
        Meter(Some(metrics))
    }

    /// Whether anything is recorded (worth timing a request for).
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Reads `levels` at each scrape from now on: the core's, attached
    /// when it is built. A mount builds one core; a second set is ignored.
    pub fn attach_levels(&self, levels: Levels) {
        if let Some(m) = &self.0 {
            if m.levels.set(levels).is_err() {
                tracing::debug!("metrics: levels attached already; the first set is kept");
            }
        }
    }

    /// One request to the store: `op`, how it ended, how long it took.
    pub fn store_request(&self, op: &'static str, outcome: &'static str, took: Duration) {
        if let Some(m) = &self.0 {
            m.store_requests
                .get_or_create(&[("op", op), ("outcome", outcome)])
                .observe(took.as_secs_f64());
        }
    }

    /// One cache lookup of `kind` (secret, listing) and its `result`.
    pub fn cache_lookup(&self, kind: &'static str, result: &'static str) {
        if let Some(m) = &self.0 {
            m.cache_lookups
                .get_or_create(&[("kind", kind), ("result", result)])
                .inc();
        }
    }

    /// One background refresh of `kind` and its `result`.
    pub fn refresh(&self, kind: &'static str, result: &'static str) {
        if let Some(m) = &self.0 {
            m.refreshes
                .get_or_create(&[("kind", kind), ("result", result)])
                .inc();
        }
    }

    /// One FUSE request of `op`.
    pub fn fuse_op(&self, op: &'static str) {
        if let Some(m) = &self.0 {
            m.fuse_ops.get_or_create(&[("op", op)]).inc();
        }
    }

    /// One invalidation of `kind` sent to the kernel.
    pub fn invalidation(&self, kind: &'static str) {
        if let Some(m) = &self.0 {
            m.invalidations.get_or_create(&[("kind", kind)]).inc();
        }
    }

    /// The token in use expires in `ttl` from now (`None`: never).
    pub fn token_ttl(&self, ttl: Option<Duration>) {
        if let Some(m) = &self.0 {
            let at = ttl
                .and_then(|t| SystemTime::now().checked_add(t))
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            m.token_expiry.set(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_with_their_labels_and_levels() {
        let m = Arc::new(Metrics::new());
        let meter = Meter::to(m.clone());
        meter.attach_levels(Box::new(|| {
            vec![
                Level {
                    name: "open_handles",
                    help: "Open file handles",
                    value: 3,
                    label: None,
                },
                Level {
                    name: "store_node_info",
                    help: "The node requests go to",
                    value: 1,
                    label: Some(("node", "http://10.0.0.2:8200".into())),
                },
            ]
        }));
        meter.store_request("read", "ok", Duration::from_millis(2));
        meter.cache_lookup("secret", "hit");
        let text = m.encode();
        assert!(
            text.contains(
                "secretfs_store_request_duration_seconds_count{op=\"read\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("secretfs_cache_lookups_total{kind=\"secret\",result=\"hit\"} 1"),
            "{text}"
        );
        assert!(text.contains("secretfs_open_handles 3"), "{text}");
        assert!(
            text.contains("secretfs_store_node_info{node=\"http://10.0.0.2:8200\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn levels_show_once_attached_and_each_meter_counts_into_its_own_families() {
        let m = Arc::new(Metrics::new());
        let meter = Meter::to(m.clone());
        let other = Meter::to(Arc::new(Metrics::new()));
        other.fuse_op("lookup");
        Meter::off().fuse_op("lookup");
        let before = m.encode();
        assert!(!before.contains("secretfs_open_handles"), "{before}");
        assert!(
            !before.contains("secretfs_fuse_operations_total{"),
            "{before}"
        );
        meter.clone().fuse_op("lookup");
        meter.attach_levels(Box::new(|| {
            vec![Level {
                name: "open_handles",
                help: "Open file handles",
                value: 1,
                label: None,
            }]
        }));
        let after = m.encode();
        assert!(
            after.contains("secretfs_fuse_operations_total{op=\"lookup\"} 1"),
            "{after}"
        );
        assert!(after.contains("secretfs_open_handles 1"), "{after}");
    }

    #[test]
    fn outcomes_name_the_error_kind() {
        use crate::error::Error;
        assert_eq!(outcome_of::<()>(&Ok(())), "ok");
        assert_eq!(outcome_of::<()>(&Err(Error::CasConflict)), "conflict");
        assert_eq!(
            outcome_of::<()>(&Err(Error::Locked("x".into()))),
            "conflict"
        );
        assert_eq!(
            outcome_of::<()>(&Err(Error::Timeout(Duration::from_secs(1)))),
            "timeout"
        );
        assert_eq!(
            outcome_of::<()>(&Err(Error::PermissionDenied("x".into()))),
            "denied"
        );
    }
}
