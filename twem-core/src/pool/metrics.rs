//! Prometheus metrics that counters alone can't give: latency histograms per
//! pool and per server, and request counts per command class.
//!
//! Recording is lock-free: the `prometheus` crate's histograms and counters
//! are atomics, and each pool takes its labelled children once, at start, so
//! the request path never looks a label up. Everything lives in one
//! process-wide [`registry`]; the proxy's `/metrics` endpoint encodes it
//! beside the stats-JSON counters, and an embedder can register it in its
//! own exporter.
//!
//! Without the default feature `metrics` nothing is registered or recorded:
//! [`Histogram`], [`LocalHistogram`] and [`IntCounter`] are then no-op
//! stand-ins with the same methods, so an embedder with its own metrics
//! stack links no `prometheus` and owns no process-global registry.

#[cfg(feature = "metrics")]
use std::sync::OnceLock;

#[cfg(feature = "metrics")]
pub use prometheus::{local::LocalHistogram, Histogram, IntCounter};
#[cfg(feature = "metrics")]
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use twem_proto::command::Class;
use twem_proto::memcache as mc;

/// Latency buckets in seconds: 50 µs (a pipelined hit on loopback) to 10 s
/// (a timeout), roughly 2.5x apart.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The process-wide metric families.
#[cfg(feature = "metrics")]
#[derive(Debug)]
pub struct Metrics {
    /// `twem_pool_request_duration_seconds{pool}`: from a request decoded to
    /// its reply written to the client (recorded by the proxy's sessions).
    pub pool_latency: HistogramVec,
    /// `twem_server_request_duration_seconds{pool,server}`: from a request
    /// handed to a backend connection to its reply parsed.
    pub server_latency: HistogramVec,
    /// `twem_requests_total{pool,class}`: requests by command class.
    pub requests: IntCounterVec,
}

#[cfg(feature = "metrics")]
static METRICS: OnceLock<(Registry, Metrics)> = OnceLock::new();

// The options are constants: they either always build or never do, and the
// unit tests build them, so `expect` here cannot fire in a released binary.
#[cfg(feature = "metrics")]
#[allow(clippy::expect_used)]
fn init() -> &'static (Registry, Metrics) {
    METRICS.get_or_init(|| {
        let registry = Registry::new();
        let pool_latency = HistogramVec::new(
            HistogramOpts::new(
                "twem_pool_request_duration_seconds",
                "Time from a request decoded to its reply written to the client",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["pool"],
        )
        .expect("static histogram options are valid");
        let server_latency = HistogramVec::new(
            HistogramOpts::new(
                "twem_server_request_duration_seconds",
                "Time from a request queued for a backend connection to its reply parsed",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["pool", "server"],
        )
        .expect("static histogram options are valid");
        let requests = IntCounterVec::new(
            Opts::new("twem_requests_total", "Requests by command class"),
            &["pool", "class"],
        )
        .expect("static counter options are valid");
        // Registering distinct names in a fresh registry cannot collide.
        let _ = registry.register(Box::new(pool_latency.clone()));
        let _ = registry.register(Box::new(server_latency.clone()));
        let _ = registry.register(Box::new(requests.clone()));
        (
            registry,
            Metrics {
                pool_latency,
                server_latency,
                requests,
            },
        )
    })
}

/// The registry holding twem's histograms and class counters.
#[cfg(feature = "metrics")]
pub fn registry() -> &'static Registry {
    &init().0
}

/// The metric families.
#[cfg(feature = "metrics")]
pub fn metrics() -> &'static Metrics {
    &init().1
}

/// Redis command classes as counted, in [`redis_class_index`] order.
pub const REDIS_CLASSES: &[&str] = &[
    "local",
    "single",
    "same_server",
    "mget",
    "sum",
    "mset",
    "script",
    "placeholder",
    "refused",
    "fan_out",
    "session",
    "blocking",
    "rejected",
];

/// The counter index of a Redis command class; `None` (a request the command
/// table rejected: unknown command or wrong arity) counts as "rejected".
pub fn redis_class_index(class: Option<&Class>) -> usize {
    match class {
        Some(Class::Local) => 0,
        Some(Class::Single | Class::Channel) => 1,
        Some(Class::SameServer) => 2,
        Some(Class::Mget) => 3,
        Some(Class::SumInt) => 4,
        Some(Class::Mset) => 5,
        Some(Class::Script) => 6,
        Some(Class::Placeholder) => 7,
        Some(Class::Refused(_)) => 8,
        // SCAN visits every server, one call at a time: counted with the
        // commands that visit every server at once.
        Some(Class::FanOut(_) | Class::Scan) => 9,
        Some(Class::Session) => 10,
        // A container is never a request's class (classify goes on to the
        // subcommand); count it as rejected, as an unknown subcommand is.
        Some(Class::Blocking(_)) => 11,
        Some(Class::Container) | None => 12,
    }
}

/// The counter index of a memcached command: its position in
/// [`mc::Command::ALL`] (the enum's own order), so the request path does no
/// name lookup and the list of commands is written only once, in twem-proto.
pub fn memcache_class_index(cmd: mc::Command) -> usize {
    cmd as usize
}

fn class_names(redis: bool) -> Vec<&'static str> {
    if redis {
        REDIS_CLASSES.to_vec()
    } else {
        mc::Command::ALL.iter().map(|c| c.name()).collect()
    }
}

/// Most classes a pool counts (memcached's commands: 25).
const MAX_CLASSES: usize = 32;

/// One copy of a pool's per-class request counts: one per connection set
/// ([`crate::worker`]), so each worker event loop counts in its own cache
/// lines; summed into the Prometheus counters by [`PoolMetrics::flush`].
#[derive(Debug)]
#[repr(align(128))]
struct ClassShard([AtomicU64; MAX_CLASSES]);

/// The per-class counts of a pool, kept per connection set.
#[derive(Debug)]
struct ClassCounts {
    shards: Box<[ClassShard]>,
    /// What each class's Prometheus counter has been given so far.
    flushed: Mutex<[u64; MAX_CLASSES]>,
}

/// A client session's handle on its pool's latency histogram. Observations
/// go into the calling thread's local copy of it, flushed by
/// [`SessionLatency::flush`]: a session holds 16 bytes instead of a local
/// histogram of its own (~200 bytes, most of them allocated, per client:
/// the idle-connection memory bound has no room for them).
#[derive(Debug, Clone)]
// Read only with the `metrics` feature (the stand-in records nothing).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub struct SessionLatency {
    /// Which local copy (unique per [`PoolMetrics`]).
    key: usize,
    hist: Histogram,
}

#[cfg(feature = "metrics")]
thread_local! {
    /// This thread's local copies, by [`SessionLatency::key`]. A handful
    /// (one per pool, and per reload generation until swept).
    static LOCAL_LATENCY: std::cell::RefCell<Vec<(usize, LocalHistogram)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// More local copies than this on one thread (reloads that replaced pools)
/// and they are all flushed and dropped: they stay few.
#[cfg(feature = "metrics")]
const MAX_LOCAL_LATENCY: usize = 64;

impl SessionLatency {
    /// Run `f` on this thread's local copy, made on first use.
    #[cfg(feature = "metrics")]
    #[inline]
    fn with_local(&self, f: impl FnOnce(&LocalHistogram)) {
        LOCAL_LATENCY.with(|cell| {
            let Ok(mut locals) = cell.try_borrow_mut() else {
                // Re-entered (cannot happen: `f` does not come back here);
                // record straight into the shared histogram instead.
                return f(&self.hist.local());
            };
            if let Some((_, h)) = locals.iter().find(|(k, _)| *k == self.key) {
                return f(h);
            }
            if locals.len() >= MAX_LOCAL_LATENCY {
                for (_, h) in locals.drain(..) {
                    h.flush();
                }
            }
            let h = self.hist.local();
            f(&h);
            locals.push((self.key, h));
        });
    }

    /// Record one reply's latency, in seconds.
    #[inline]
    pub fn observe(&self, secs: f64) {
        #[cfg(feature = "metrics")]
        self.with_local(|h| h.observe(secs));
        #[cfg(not(feature = "metrics"))]
        let _ = secs;
    }

    /// Make what this thread observed visible in the shared histogram.
    #[inline]
    pub fn flush(&self) {
        #[cfg(feature = "metrics")]
        self.with_local(LocalHistogram::flush);
    }
}

/// A key for a new [`PoolMetrics`]'s local latency copies.
fn next_latency_key() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Relaxed)
}

/// One pool's labelled children, taken once at start.
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    /// Client-side latency.
    pub latency: Histogram,
    /// Identifies this instance's local latency copies ([`SessionLatency`]).
    latency_key: usize,
    /// Requests per class, indexed by [`redis_class_index`] or
    /// [`memcache_class_index`]: up to date after [`PoolMetrics::flush`]
    /// (the pool's snapshot flushes, and the proxy's `/metrics` takes one
    /// per scrape).
    pub classes: Vec<IntCounter>,
    counts: Arc<ClassCounts>,
}

impl ClassCounts {
    fn new() -> ClassCounts {
        ClassCounts {
            shards: (0..crate::worker::sets())
                .map(|_| ClassShard(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            flushed: Mutex::new([0; MAX_CLASSES]),
        }
    }
}

impl PoolMetrics {
    /// The children for pool `name` speaking Redis (`redis`) or memcached.
    #[cfg(feature = "metrics")]
    pub fn new(name: &str, redis: bool) -> PoolMetrics {
        let m = metrics();
        PoolMetrics {
            latency: m.pool_latency.with_label_values(&[name]),
            latency_key: next_latency_key(),
            classes: class_names(redis)
                .iter()
                .take(MAX_CLASSES)
                .map(|c| m.requests.with_label_values(&[name, c]))
                .collect(),
            counts: Arc::new(ClassCounts::new()),
        }
    }

    /// The children for pool `name`, recording nothing (feature `metrics`
    /// is off).
    #[cfg(not(feature = "metrics"))]
    pub fn new(_name: &str, redis: bool) -> PoolMetrics {
        PoolMetrics {
            latency: Histogram,
            latency_key: next_latency_key(),
            classes: vec![IntCounter; class_names(redis).len().min(MAX_CLASSES)],
            counts: Arc::new(ClassCounts::new()),
        }
    }

    /// A client session's handle on [`PoolMetrics::latency`].
    // The stand-in `Histogram` (feature `metrics` off) is `Copy`.
    #[allow(clippy::clone_on_copy)]
    pub fn session_latency(&self) -> SessionLatency {
        SessionLatency {
            key: self.latency_key,
            hist: self.latency.clone(),
        }
    }

    /// Count one request of class `idx`, in the calling thread's copy.
    #[inline]
    pub fn count(&self, idx: usize) {
        let shards = &self.counts.shards;
        let at = crate::worker::set_for(crate::worker::current(), shards.len());
        if let Some(c) = shards.get(at).and_then(|s| s.0.get(idx)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Add what was counted since the last flush to the Prometheus
    /// counters ([`PoolMetrics::classes`]).
    pub fn flush(&self) {
        let mut flushed = match self.counts.flushed.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (idx, counter) in self.classes.iter().enumerate() {
            let total = self
                .counts
                .shards
                .iter()
                .filter_map(|s| s.0.get(idx))
                .map(|c| c.load(Relaxed))
                .fold(0u64, u64::wrapping_add);
            if let Some(done) = flushed.get_mut(idx) {
                counter.inc_by(total.wrapping_sub(*done));
                *done = total;
            }
        }
    }
}

/// The latency histogram of server `server` in pool `pool`.
#[cfg(feature = "metrics")]
pub fn server_latency(pool: &str, server: &str) -> Histogram {
    metrics().server_latency.with_label_values(&[pool, server])
}

/// The latency histogram of server `server` in pool `pool` (recording
/// nothing: feature `metrics` is off).
#[cfg(not(feature = "metrics"))]
pub fn server_latency(_pool: &str, _server: &str) -> Histogram {
    Histogram
}

/// A histogram that records nothing (feature `metrics` is off).
#[cfg(not(feature = "metrics"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct Histogram;

#[cfg(not(feature = "metrics"))]
impl Histogram {
    /// Records nothing.
    pub fn observe(&self, _v: f64) {}

    /// A thread-local view, recording nothing.
    pub fn local(&self) -> LocalHistogram {
        LocalHistogram
    }
}

/// A thread-local histogram that records nothing (feature `metrics` is off).
#[cfg(not(feature = "metrics"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalHistogram;

#[cfg(not(feature = "metrics"))]
impl LocalHistogram {
    /// Records nothing.
    pub fn observe(&self, _v: f64) {}

    /// Nothing to flush.
    pub fn flush(&self) {}
}

/// A counter that counts nothing (feature `metrics` is off).
#[cfg(not(feature = "metrics"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct IntCounter;

#[cfg(not(feature = "metrics"))]
impl IntCounter {
    /// Counts nothing.
    pub fn inc(&self) {}

    /// Counts nothing.
    pub fn inc_by(&self, _v: u64) {}

    /// Always 0.
    pub fn get(&self) -> u64 {
        0
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    // Every class has a counter and indexes stay in range.
    #[test]
    fn class_indexes_in_range() {
        let pm = PoolMetrics::new("metrics-unit-test", true);
        assert_eq!(pm.classes.len(), REDIS_CLASSES.len());
        assert_eq!(redis_class_index(None), REDIS_CLASSES.len() - 1);
        assert_eq!(REDIS_CLASSES[redis_class_index(Some(&Class::Mget))], "mget");
        assert_eq!(
            REDIS_CLASSES[redis_class_index(Some(&Class::SameServer))],
            "same_server"
        );
        assert_eq!(
            REDIS_CLASSES[redis_class_index(Some(&Class::Session))],
            "session"
        );
        pm.count(redis_class_index(Some(&Class::Single)));
        pm.count(redis_class_index(Some(&Class::Single)));
        // Counted per thread, summed into the Prometheus counter by a
        // flush (a snapshot), once: a second flush adds nothing.
        pm.flush();
        assert_eq!(pm.classes[1].get(), 2);
        pm.flush();
        assert_eq!(pm.classes[1].get(), 2);
        pm.count(redis_class_index(Some(&Class::Single)));
        pm.flush();
        assert_eq!(pm.classes[1].get(), 3);
        for cmd in mc::Command::ALL {
            assert_eq!(mc::Command::ALL[memcache_class_index(cmd)], cmd);
        }
    }

    // Observations land in the registry's text exposition with their labels.
    #[test]
    fn histograms_are_exposed() {
        let h = server_latency("metrics-unit-pool", "srv-a");
        h.observe(0.003);
        let families = registry().gather();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .expect("encodes");
        assert!(text.contains("twem_server_request_duration_seconds_bucket{pool=\"metrics-unit-pool\",server=\"srv-a\",le=\"0.005\"} 1"), "{text}");
    }
}
