//! Prometheus metrics that counters alone can't give: latency histograms per
//! pool and per server, and request counts per command class.
//!
//! Recording is lock-free: the latency histograms are [`Latency`]s, relaxed
//! atomics with one copy per worker, summed by a collector at scrape; the
//! class counts are per-worker atomics added into the `prometheus` counters
//! by [`PoolMetrics::flush`]; and each pool takes its labelled children once,
//! at start, so the request path never looks a label up. Everything lives in
//! one process-wide [`registry`]; the proxy's `/metrics` endpoint encodes it
//! beside the stats-JSON counters, and an embedder can register it in its
//! own exporter.
//!
//! Without the default feature `metrics` nothing is registered or recorded:
//! [`IntCounter`] is then a no-op stand-in with the same methods and
//! [`Latency::observe`] records nothing, so an embedder with its own metrics
//! stack links no `prometheus` and owns no process-global registry.

#[cfg(feature = "metrics")]
use std::sync::OnceLock;

#[cfg(feature = "metrics")]
pub use prometheus::IntCounter;
#[cfg(feature = "metrics")]
use prometheus::{IntCounterVec, Opts, Registry};

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use twem_proto::command::Class;
use twem_proto::memcache as mc;

/// Latency buckets in seconds: 50 µs (a pipelined hit on loopback) to 10 s
/// (a timeout), roughly 2.5x apart.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The process-wide metric families (the latency histograms are
/// [`Latency`] families, registered beside these).
#[cfg(feature = "metrics")]
#[derive(Debug)]
pub struct Metrics {
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
        let requests = IntCounterVec::new(
            Opts::new("twem_requests_total", "Requests by command class"),
            &["pool", "class"],
        )
        .expect("static counter options are valid");
        // Registering distinct names in a fresh registry cannot collide.
        let _ = registry.register(Box::new(POOL_LATENCY.collector()));
        let _ = registry.register(Box::new(SERVER_LATENCY.collector()));
        let _ = registry.register(Box::new(requests.clone()));
        (registry, Metrics { requests })
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

/// A latency histogram in [`LATENCY_BUCKETS`]: a pool's
/// (`twem_pool_request_duration_seconds{pool}`, observed by every client
/// session once per reply) or a server's
/// (`twem_server_request_duration_seconds{pool,server}`, observed by its
/// connections once per reply). Kept in plain relaxed atomics, one copy per
/// connection set ([`crate::worker`]): a worker adds to its own cache
/// lines, and a scrape sums the copies. (The `prometheus` crate's histogram
/// took shared atomics and a sum loop per observation, and its local
/// batching copy a flush per batch and, per client, ~200 bytes or a
/// thread-local lookup a reply.) One per label values, kept across reloads.
#[derive(Debug)]
pub struct Latency {
    /// The label values, in the family's label order.
    labels: Vec<String>,
    sets: Box<[LatencyShard]>,
}

/// The pool latency histogram (the name is historical: every latency
/// histogram is a [`Latency`]).
pub type PoolLatency = Latency;

/// One connection set's copy of a [`Latency`]: a count per bucket (the
/// last for slower than every bound) and the sum, in nanoseconds.
#[derive(Debug, Default)]
#[repr(align(128))]
struct LatencyShard {
    buckets: [AtomicU64; LATENCY_BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

/// [`LATENCY_BUCKETS`] in nanoseconds, for integer comparisons.
const LATENCY_BUCKETS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The bucket of an observation of `ns`: the first bound it does not
/// exceed (Prometheus's `le`), or the last bucket.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
#[inline]
fn bucket_of(ns: u64) -> usize {
    LATENCY_BUCKETS_NS.partition_point(|&b| b < ns)
}

impl Latency {
    fn new(labels: &[&str]) -> Latency {
        Latency {
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            sets: (0..crate::worker::sets())
                .map(|_| LatencyShard::default())
                .collect(),
        }
    }

    /// Record one reply's latency, in the calling thread's copy (nothing
    /// without the `metrics` feature).
    #[inline]
    pub fn observe(&self, took: std::time::Duration) {
        #[cfg(feature = "metrics")]
        self.record(took);
        #[cfg(not(feature = "metrics"))]
        let _ = took;
    }

    #[cfg(feature = "metrics")]
    #[inline]
    fn record(&self, took: std::time::Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // `sets` is never empty (`sets()` is at least 1).
        let shard = crate::worker::local(&self.sets);
        if let Some(b) = shard.buckets.get(bucket_of(ns)) {
            b.fetch_add(1, Relaxed);
        }
        shard.sum_ns.fetch_add(ns, Relaxed);
    }

    /// The label values (the pool's name; then the server's).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The counts per bucket (not cumulative; the last is past every
    /// bound) and the sum in seconds, over every copy.
    pub fn totals(&self) -> (Vec<u64>, f64) {
        let mut counts = vec![0u64; LATENCY_BUCKETS_NS.len() + 1];
        let mut sum_ns = 0u64;
        for shard in self.sets.iter() {
            for (c, b) in counts.iter_mut().zip(&shard.buckets) {
                *c = c.wrapping_add(b.load(Relaxed));
            }
            sum_ns = sum_ns.wrapping_add(shard.sum_ns.load(Relaxed));
        }
        (counts, sum_ns as f64 / 1e9)
    }
}

/// A histogram family: its name, help and label names, and every
/// [`Latency`] made for it, by label values.
#[cfg(feature = "metrics")]
struct LatencyFamily {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    all: Mutex<Vec<Arc<Latency>>>,
}

#[cfg(feature = "metrics")]
static POOL_LATENCY: LatencyFamily = LatencyFamily {
    name: "twem_pool_request_duration_seconds",
    help: "Time from a request decoded to its reply written to the client",
    label_names: &["pool"],
    all: Mutex::new(Vec::new()),
};

#[cfg(feature = "metrics")]
static SERVER_LATENCY: LatencyFamily = LatencyFamily {
    name: "twem_server_request_duration_seconds",
    help: "Time from a request queued for a backend connection to its reply parsed",
    label_names: &["pool", "server"],
    all: Mutex::new(Vec::new()),
};

#[cfg(feature = "metrics")]
impl LatencyFamily {
    /// The [`Latency`] for these label values: the same one every time.
    fn get(&'static self, labels: &[&str]) -> Arc<Latency> {
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = all.iter().find(|l| l.labels.iter().eq(labels.iter())) {
            return Arc::clone(l);
        }
        let l = Arc::new(Latency::new(labels));
        all.push(Arc::clone(&l));
        l
    }

    /// Its collector for a registry.
    // The options are constants: they either always build or never do,
    // and the unit tests build them.
    #[allow(clippy::expect_used)]
    fn collector(&'static self) -> LatencyCollector {
        LatencyCollector {
            family: self,
            desc: prometheus::core::Desc::new(
                self.name.to_owned(),
                self.help.to_owned(),
                self.label_names.iter().map(|l| (*l).to_owned()).collect(),
                std::collections::HashMap::new(),
            )
            .expect("static descriptor is valid"),
        }
    }
}

/// The [`Latency`] of pool `name`: the same one across reloads.
#[cfg(feature = "metrics")]
fn pool_latency(name: &str) -> Arc<Latency> {
    POOL_LATENCY.get(&[name])
}

/// Exposes a [`LatencyFamily`] as a Prometheus histogram family.
#[cfg(feature = "metrics")]
struct LatencyCollector {
    family: &'static LatencyFamily,
    desc: prometheus::core::Desc,
}

#[cfg(feature = "metrics")]
impl prometheus::core::Collector for LatencyCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto;
        let all: Vec<Arc<Latency>> = self
            .family
            .all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut metrics = Vec::with_capacity(all.len());
        for latency in all {
            let (counts, sum) = latency.totals();
            let mut cumulative = 0u64;
            let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
            for (bound, count) in LATENCY_BUCKETS.iter().zip(&counts) {
                cumulative = cumulative.wrapping_add(*count);
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                buckets.push(b);
            }
            // The count includes the observations past every bound
            // (`+Inf`), so it always equals the last cumulative bucket.
            let total = counts.iter().fold(0u64, |a, c| a.wrapping_add(*c));
            let mut h = proto::Histogram::default();
            h.set_sample_count(total);
            h.set_sample_sum(sum);
            h.set_bucket(buckets);
            let labels = self
                .family
                .label_names
                .iter()
                .zip(&latency.labels)
                .map(|(n, v)| {
                    let mut label = proto::LabelPair::default();
                    label.set_name((*n).to_owned());
                    label.set_value(v.clone());
                    label
                })
                .collect();
            let mut m = proto::Metric::from_label(labels);
            m.set_histogram(h);
            metrics.push(m);
        }
        let mut family = proto::MetricFamily::default();
        family.set_name(self.family.name.to_owned());
        family.set_help(self.family.help.to_owned());
        family.set_field_type(proto::MetricType::HISTOGRAM);
        family.set_metric(metrics);
        vec![family]
    }
}

/// One pool's labelled children, taken once at start.
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    /// Client-side latency (the same for a pool name across reloads).
    pub latency: Arc<PoolLatency>,
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
            latency: pool_latency(name),
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
    pub fn new(name: &str, redis: bool) -> PoolMetrics {
        PoolMetrics {
            latency: Arc::new(Latency::new(&[name])),
            classes: vec![IntCounter; class_names(redis).len().min(MAX_CLASSES)],
            counts: Arc::new(ClassCounts::new()),
        }
    }

    /// Count one request of class `idx`, in the calling thread's copy.
    #[inline]
    pub fn count(&self, idx: usize) {
        // `shards` is never empty (`sets()` is at least 1).
        if let Some(c) = crate::worker::local(&self.counts.shards).0.get(idx) {
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

/// The latency histogram of server `server` in pool `pool`: the same one
/// across reloads.
#[cfg(feature = "metrics")]
pub fn server_latency(pool: &str, server: &str) -> Arc<Latency> {
    SERVER_LATENCY.get(&[pool, server])
}

/// The latency histogram of server `server` in pool `pool` (recording
/// nothing: feature `metrics` is off).
#[cfg(not(feature = "metrics"))]
pub fn server_latency(pool: &str, server: &str) -> Arc<Latency> {
    Arc::new(Latency::new(&[pool, server]))
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

    // The bucket bounds are LATENCY_BUCKETS, and an observation lands in
    // the first bucket whose bound it does not exceed (Prometheus's `le`).
    #[test]
    fn pool_latency_buckets_follow_le() {
        assert_eq!(LATENCY_BUCKETS_NS.len(), LATENCY_BUCKETS.len());
        for (ns, secs) in LATENCY_BUCKETS_NS.iter().zip(LATENCY_BUCKETS) {
            assert_eq!(*ns, (secs * 1e9).round() as u64);
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(50_000), 0);
        assert_eq!(bucket_of(50_001), 1);
        assert_eq!(bucket_of(10_000_000_000), LATENCY_BUCKETS_NS.len() - 1);
        assert_eq!(bucket_of(10_000_000_001), LATENCY_BUCKETS_NS.len());
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS_NS.len());
    }

    // Observations from several threads are summed over the copies, and the
    // exposition is cumulative with `_count` equal to the `+Inf` bucket.
    #[test]
    fn pool_latency_is_exposed_cumulative() {
        use std::time::Duration;
        let l = pool_latency("metrics-unit-latency");
        assert!(
            Arc::ptr_eq(&l, &pool_latency("metrics-unit-latency")),
            "one per name"
        );
        l.observe(Duration::from_micros(30)); // le 0.00005
        l.observe(Duration::from_millis(3)); // le 0.005
        let other = Arc::clone(&l);
        std::thread::spawn(move || other.observe(Duration::from_secs(20))) // +Inf only
            .join()
            .expect("thread");
        let (counts, sum) = l.totals();
        assert_eq!(counts.iter().sum::<u64>(), 3);
        assert!((sum - 20.00303).abs() < 1e-9, "{sum}");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry().gather())
            .expect("encodes");
        let line = |le: &str| {
            format!("twem_pool_request_duration_seconds_bucket{{pool=\"metrics-unit-latency\",le=\"{le}\"}}")
        };
        for (le, n) in [
            ("0.00005", 1),
            ("0.0025", 1),
            ("0.005", 2),
            ("10", 2),
            ("+Inf", 3),
        ] {
            assert!(
                text.contains(&format!("{} {n}\n", line(le))),
                "{le}: {text}"
            );
        }
        assert!(
            text.contains(
                "twem_pool_request_duration_seconds_count{pool=\"metrics-unit-latency\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE twem_pool_request_duration_seconds histogram"),
            "{text}"
        );
    }

    // Observations land in the registry's text exposition with their labels.
    #[test]
    fn histograms_are_exposed() {
        let h = server_latency("metrics-unit-pool", "srv-a");
        h.observe(std::time::Duration::from_millis(3));
        let families = registry().gather();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .expect("encodes");
        assert!(text.contains("twem_server_request_duration_seconds_bucket{pool=\"metrics-unit-pool\",server=\"srv-a\",le=\"0.005\"} 1"), "{text}");
    }
}
