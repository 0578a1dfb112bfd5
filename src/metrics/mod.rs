//! Prometheus metrics, opt-in with `--metrics ADDR`.
//!
//! The families live in one process-wide [`Metrics`], created only when a
//! mount asks for them: until then every `record_*` call is one atomic
//! load that finds nothing, so an unmetered mount pays nothing. Counts are
//! recorded where things happen (the store wrapper in `store::metered`,
//! the cache, the refresher, the FUSE adapter, the notifier); levels that
//! already exist elsewhere (open handles, inodes, cache entries, whether
//! the store is down) are read at scrape time through [`Levels`].
//! No label ever holds a path or a value: only operation names and
//! outcomes from fixed sets.

mod serve;

use std::fmt;
use std::sync::OnceLock;
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

struct LevelCollector(Levels);

impl fmt::Debug for LevelCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LevelCollector")
    }
}

impl Collector for LevelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for level in (self.0)() {
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
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

impl Metrics {
    fn new(levels: Levels) -> Self {
        let mut registry = Registry::with_prefix("secretfs");
        let store_requests: Histograms = Family::new_with_constructor(store_buckets);
        registry.register(
            "store_request_duration_seconds",
            "Requests to the store by operation (list, read, write, delete, health, permissions, read_version, set_metadata) and outcome (ok, not_found, denied, conflict, timeout, unavailable, error)",
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
        registry.register_collector(Box::new(LevelCollector(levels)));
        Metrics {
            registry,
            store_requests,
            cache_lookups,
            refreshes,
            fuse_ops,
            invalidations,
            token_expiry,
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

/// Turns metrics on for this process, with `levels` read at each scrape.
/// A second call keeps the first set of families.
pub fn enable(levels: Levels) -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(levels))
}

/// The families, when metrics are on.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// How a store request ended, as a label value.
pub fn outcome_of<T>(result: &crate::error::Result<T>) -> &'static str {
    use crate::error::Error;
    match result {
        Ok(_) => "ok",
        Err(Error::NotFound) => "not_found",
        Err(Error::PermissionDenied(_)) => "denied",
        Err(Error::CasConflict) => "conflict",
        Err(Error::Timeout(_) | Error::OutOfTime(_)) => "timeout",
        Err(Error::Unavailable(_) | Error::Unanswered(_)) => "unavailable",
        Err(_) => "error",
    }
}

/// One request to the store: `op`, how it ended, how long it took.
pub fn record_store_request(op: &'static str, outcome: &'static str, took: Duration) {
    if let Some(m) = get() {
        m.store_requests
            .get_or_create(&[("op", op), ("outcome", outcome)])
            .observe(took.as_secs_f64());
    }
}

/// One cache lookup of `kind` (secret, listing) and its `result`.
pub fn record_cache_lookup(kind: &'static str, result: &'static str) {
    if let Some(m) = get() {
        m.cache_lookups
            .get_or_create(&[("kind", kind), ("result", result)])
            .inc();
    }
}

/// One background refresh of `kind` and its `result`.
pub fn record_refresh(kind: &'static str, result: &'static str) {
    if let Some(m) = get() {
        m.refreshes
            .get_or_create(&[("kind", kind), ("result", result)])
            .inc();
    }
}

/// One FUSE request of `op`.
pub fn record_fuse_op(op: &'static str) {
    if let Some(m) = get() {
        m.fuse_ops.get_or_create(&[("op", op)]).inc();
    }
}

/// One invalidation of `kind` sent to the kernel.
pub fn record_invalidation(kind: &'static str) {
    if let Some(m) = get() {
        m.invalidations.get_or_create(&[("kind", kind)]).inc();
    }
}

/// The token in use expires in `ttl` from now (`None`: never).
pub fn record_token_ttl(ttl: Option<Duration>) {
    if let Some(m) = get() {
        let at = ttl
            .and_then(|t| SystemTime::now().checked_add(t))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        m.token_expiry.set(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_with_their_labels_and_levels() {
        let m = Metrics::new(Box::new(|| {
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
        m.store_requests
            .get_or_create(&[("op", "read"), ("outcome", "ok")])
            .observe(0.002);
        m.cache_lookups
            .get_or_create(&[("kind", "secret"), ("result", "hit")])
            .inc();
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
    fn outcomes_name_the_error_kind() {
        use crate::error::Error;
        assert_eq!(outcome_of::<()>(&Ok(())), "ok");
        assert_eq!(outcome_of::<()>(&Err(Error::CasConflict)), "conflict");
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
