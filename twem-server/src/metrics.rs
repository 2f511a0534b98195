//! `--metrics-addr`: Prometheus text exposition on `GET /metrics`.
//!
//! Two sources, one page: the latency histograms and per-class request
//! counters that pools record as they go (twem-core's registry), and the
//! stats-JSON facts (requests, errors, connections, ejections, queues), read
//! from the same counters the stats port reads, at scrape time. The `prometheus`
//! crate does the exposition. The HTTP side is the few lines a GET-only,
//! close-after-reply endpoint needs; a full HTTP stack would add far more
//! code than it saves here.
//!
//! Served on the admin thread (see [`crate::admin`]). Encoding a large
//! pool's page takes milliseconds, so the page is encoded at most once per
//! [`CACHE_TTL`] and every scrape in between gets the same bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use twem_core::pool::stats::{POOL_FIELD_DESCRIPTIONS, SERVER_FIELD_DESCRIPTIONS};
use twem_core::pool::{PoolSnapshot, ServerPlace};

use crate::admin::{self, Limiter, Snapshot};
use crate::stats::{connection_counts, Globals};

/// How long an encoded page is served before it is encoded again. Short
/// enough for any scrape interval in use, long enough that a scrape flood
/// costs one encoding a second.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

/// The metric name of a stats field: counters get `_total`, the ejection
/// timestamp says its unit.
fn metric_name(prefix: &str, field: &str, kind: &str) -> String {
    match kind {
        "counter" => format!("twem_{prefix}_{field}_total"),
        "timestamp" => format!("twem_{prefix}_{field}_microseconds"),
        _ => format!("twem_{prefix}_{field}"),
    }
}

fn help(desc: &str) -> String {
    desc.trim_start_matches("# ").to_string()
}

/// Render the exposition for these pools.
pub fn render(pools: &[PoolSnapshot], globals: &Globals) -> String {
    let reg = Registry::new();
    let mut counters: Vec<(String, IntCounterVec)> = Vec::new();
    let mut gauges: Vec<(String, IntGaugeVec)> = Vec::new();
    let mut make = |prefix: &str, labels: &[&str], table: &[(&str, &str, &str)]| {
        for (field, kind, desc) in table {
            let name = metric_name(prefix, field, kind);
            let opts = Opts::new(name.clone(), help(desc));
            if *kind == "counter" {
                if let Ok(v) = IntCounterVec::new(opts, labels) {
                    let _ = reg.register(Box::new(v.clone()));
                    counters.push((format!("{prefix}:{field}"), v));
                }
            } else if let Ok(v) = IntGaugeVec::new(opts, labels) {
                let _ = reg.register(Box::new(v.clone()));
                gauges.push((format!("{prefix}:{field}"), v));
            }
        }
    };
    make("pool", &["pool"], POOL_FIELD_DESCRIPTIONS);
    make("server", &["pool", "server"], SERVER_FIELD_DESCRIPTIONS);
    let set = |key: &str, labels: &[&str], v: i64| {
        if let Some((_, c)) = counters.iter().find(|(k, _)| k == key) {
            c.with_label_values(labels).inc_by(v.max(0) as u64);
        } else if let Some((_, g)) = gauges.iter().find(|(k, _)| k == key) {
            g.with_label_values(labels).set(v);
        }
    };
    for p in pools {
        for (f, v) in &p.fields {
            set(&format!("pool:{f}"), &[&p.name], *v);
        }
        for s in &p.servers {
            for (f, v) in &s.fields {
                set(&format!("server:{f}"), &[&p.name, &s.name], *v);
            }
        }
    }
    // twem's own per-pool counters, which the stats JSON does not carry.
    let twem_counter = |name: &str, help: &str, field: &str| {
        if let Ok(c) = IntCounterVec::new(Opts::new(name, help), &["pool"]) {
            for p in pools {
                if let Some((_, v)) = p.twem_fields.iter().find(|f| f.0 == field) {
                    c.with_label_values(&[&p.name]).inc_by((*v).max(0) as u64);
                }
            }
            let _ = reg.register(Box::new(c));
        }
    };
    twem_counter(
        "twem_pool_client_rejected_total",
        "Client connections closed at accept because of client_connections",
        "client_rejected",
    );
    twem_counter(
        "twem_pool_client_foreign_protocol_total",
        "Client connections closed for speaking another protocol (HTTP, memcached binary): possible cross-protocol attacks",
        "client_foreign_protocol",
    );
    // A cluster pool's redirections followed and slot map reads.
    for (name, help, field) in [
        ("twem_pool_cluster_moved_total", "-MOVED redirections followed (cluster pools)", "cluster_moved"),
        ("twem_pool_cluster_ask_total", "-ASK redirections followed (cluster pools)", "cluster_ask"),
        ("twem_pool_cluster_tryagain_total", "-TRYAGAIN replies retried (cluster pools)", "cluster_tryagain"),
        ("twem_pool_cluster_redirect_failed_total", "Redirections not followed (bound reached, node table full): the error went to the client", "cluster_redirect_failed"),
        ("twem_pool_cluster_refreshes_total", "Slot map reads (CLUSTER SHARDS) that succeeded", "cluster_refreshes"),
        ("twem_pool_cluster_refresh_failed_total", "Slot map reads that no node answered", "cluster_refresh_failed"),
    ] {
        twem_counter(name, help, field);
    }
    // Connections dedicated to one client, per server (transactions,
    // blocking commands, subscriptions).
    if let Ok(g) = IntGaugeVec::new(
        Opts::new(
            "twem_server_dedicated_connections",
            "Backend connections dedicated to one client (transactions, blocking commands, subscriptions), held or idle",
        ),
        &["pool", "server"],
    ) {
        for p in pools {
            for s in &p.servers {
                if let Some((_, v)) = s.twem_fields.iter().find(|f| f.0 == "dedicated_connections") {
                    g.with_label_values(&[&p.name, &s.name]).set(*v);
                }
            }
        }
        let _ = reg.register(Box::new(g));
    }
    sentinel_places(&reg, pools);
    let (opened, open) = connection_counts(globals, pools);
    if let Ok(total) = prometheus::IntCounter::new(
        "twem_connections_opened_total",
        "Connections opened (listeners, clients, servers)",
    ) {
        total.inc_by(opened);
        let _ = reg.register(Box::new(total));
    }
    if let Ok(curr) = prometheus::IntGauge::new(
        "twem_connections",
        "Connections open now (listeners, clients, servers)",
    ) {
        curr.set(i64::try_from(open).unwrap_or(i64::MAX));
        let _ = reg.register(Box::new(curr));
    }
    let mut families = reg.gather();
    families.extend(twem_core::pool::metrics::registry().gather());
    TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_default()
}

/// A per-server figure of a [`ServerPlace`]: metric name, help, whether a
/// counter (else a gauge), and how to read it.
type PlaceFigure = (&'static str, &'static str, bool, fn(&ServerPlace) -> u64);

/// Where the servers of Sentinel pools (and of pools reading from
/// replicas) are: failovers seen, replica reads, healthy replicas, and an
/// info-style gauge (always 1) whose labels are the current address and
/// role. Absent for other pools.
fn sentinel_places(reg: &Registry, pools: &[PoolSnapshot]) {
    let placed = || {
        pools.iter().flat_map(|p| {
            p.servers
                .iter()
                .filter_map(move |s| s.place.as_ref().map(|place| (p, s, place)))
        })
    };
    if placed().next().is_none() {
        return;
    }
    // One family per figure, the same labels: a counter, a counter, a gauge.
    let figures: [PlaceFigure; 3] = [
        (
            "twem_server_failovers_total",
            "Sentinel failovers seen: the server's master moved to another address",
            true,
            |p| p.failovers,
        ),
        (
            "twem_server_replica_reads_total",
            "Reads sent to the server's replicas (read_from)",
            true,
            |p| p.replica_reads,
        ),
        (
            "twem_server_replicas_healthy",
            "The server's replicas reads may go to now (read_from)",
            false,
            |p| p.replicas_healthy,
        ),
    ];
    for (name, help, counter, value) in figures {
        let labels = ["pool", "server"];
        let registered = if counter {
            IntCounterVec::new(Opts::new(name, help), &labels).map(|c| {
                for (p, s, place) in placed() {
                    c.with_label_values(&[&p.name, &s.name])
                        .inc_by(value(place));
                }
                reg.register(Box::new(c))
            })
        } else {
            IntGaugeVec::new(Opts::new(name, help), &labels).map(|g| {
                for (p, s, place) in placed() {
                    g.with_label_values(&[&p.name, &s.name])
                        .set(i64::try_from(value(place)).unwrap_or(i64::MAX));
                }
                reg.register(Box::new(g))
            })
        };
        let _ = registered;
    }
    if let Ok(g) = IntGaugeVec::new(
        Opts::new(
            "twem_server_address",
            "Where a Sentinel pool's server is now (address and role as labels); always 1",
        ),
        &["pool", "server", "address", "role"],
    ) {
        for (p, s, place) in placed() {
            g.with_label_values(&[&p.name, &s.name, &place.address, place.role])
                .set(1);
        }
        let _ = reg.register(Box::new(g));
    }
}

/// The last encoded `/metrics` response and when it was encoded. An async
/// lock: the scrape that encodes holds it across its wait for the serving
/// runtime, so scrapes arriving meanwhile reuse its page instead of each
/// encoding one.
type Cached = tokio::sync::Mutex<Option<(Instant, Arc<Vec<u8>>)>>;

/// The longest a scrape waits for the serving runtime before reading the
/// counters anyway.
const SYNC_WAIT: Duration = Duration::from_millis(100);

/// The full `/metrics` response, encoded again only when the cached one is
/// older than [`CACHE_TTL`].
///
/// Before reading the counters the scrape waits (at most [`SYNC_WAIT`]) for
/// the serving runtime to finish the polls it is in: a session observes a
/// reply's latency in the same poll that writes the reply, so a client that
/// has read its reply and then scrapes must find it counted, even when the
/// OS preempted that worker between the write and the observation.
async fn page(cache: &Cached, ep: &Endpoint) -> Arc<Vec<u8>> {
    let mut c = cache.lock().await;
    if let Some((at, bytes)) = c.as_ref() {
        if at.elapsed() < CACHE_TTL {
            return Arc::clone(bytes);
        }
    }
    let _ = tokio::time::timeout(SYNC_WAIT, async {
        for h in &ep.serving {
            settle(h).await;
        }
    })
    .await;
    let bytes = Arc::new(response(
        "200 OK",
        "text/plain; version=0.0.4; charset=utf-8",
        &render(&(ep.snapshot)(), &ep.globals),
    ));
    *c = Some((Instant::now(), Arc::clone(&bytes)));
    bytes
}

/// Resolve once every poll the serving runtime was in when called has ended.
///
/// One empty task's round trip covers the current-thread runtime: it runs
/// only after the poll in progress. On the multi-thread runtime it may run
/// on another worker, so each worker that was active (an even park/unpark
/// count, tokio's documented meaning) must also have parked since (its count
/// moved): a worker parks only between polls.
async fn settle(h: &tokio::runtime::Handle) {
    let m = h.metrics();
    let before: Vec<u64> = (0..m.num_workers())
        .map(|w| m.worker_park_unpark_count(w))
        .collect();
    let _ = h.spawn(async {}).await;
    if h.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return;
    }
    loop {
        let settled = before
            .iter()
            .enumerate()
            .all(|(w, &n)| n % 2 == 1 || m.worker_park_unpark_count(w) != n);
        if settled {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What `/metrics` reads.
#[derive(Clone)]
pub struct Endpoint {
    /// The pools' counters.
    pub snapshot: Snapshot,
    /// Process-wide connection counters.
    pub globals: Arc<Globals>,
    /// The runtime serving clients, to sync with before a fresh encoding.
    pub serving: Vec<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

fn response(status: &str, ctype: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serve `/metrics` until `stop` fires.
pub async fn serve(listener: TcpListener, ep: Endpoint, stop: CancellationToken) {
    let cache: Arc<Cached> = Arc::new(tokio::sync::Mutex::new(None));
    let limiter = Limiter::new(admin::MAX_CONNECTIONS);
    while let Some(mut sock) = admin::accept(&listener, "metrics", &stop).await {
        let permit = limiter.admit();
        let ep = ep.clone();
        let cache = Arc::clone(&cache);
        let conn = async move {
            // Read the request head, bounded in size and time: a peer that
            // sends nothing, or half a request, is dropped after READ_TIMEOUT.
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(admin::READ_TIMEOUT, async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            });
            if !matches!(read.await, Ok(true)) {
                return;
            }
            let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            let mut parts = line.split(|&b| b == b' ');
            let (method, path) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let resp =
                if method == b"GET" && (path == b"/metrics" || path.starts_with(b"/metrics?")) {
                    page(&cache, &ep).await
                } else if method == b"GET" && path == b"/" {
                    Arc::new(response(
                        "200 OK",
                        "text/plain; charset=utf-8",
                        "twem: metrics at /metrics\n",
                    ))
                } else {
                    Arc::new(response(
                        "404 Not Found",
                        "text/plain; charset=utf-8",
                        "not found: try GET /metrics\n",
                    ))
                };
            admin::write_and_close(&mut sock, &resp).await;
        };
        permit.spawn(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twem_core::pool::ServerSnapshot;

    // Stats fields become labelled metrics with Prometheus naming: counters
    // end in _total, gauges don't.
    #[test]
    fn stats_fields_exposed() {
        let pools = vec![PoolSnapshot {
            name: "alpha".into(),
            fields: vec![("client_eof", 3), ("client_connections", 2)],
            servers: vec![ServerSnapshot {
                name: "s1".into(),
                fields: vec![("requests", 7), ("in_queue", 1)],
                twem_fields: vec![("dedicated_connections", 3)],
                place: Some(twem_core::pool::ServerPlace {
                    address: "127.0.0.1:7001".into(),
                    role: "master",
                    failovers: 1,
                    replica_reads: 9,
                    replicas_healthy: 2,
                }),
            }],
            twem_fields: vec![("client_rejected", 5), ("client_foreign_protocol", 6)],
        }];
        let g = Globals::default();
        g.curr_connections
            .store(4, std::sync::atomic::Ordering::Relaxed);
        let text = render(&pools, &g);
        assert!(
            text.contains("twem_pool_client_eof_total{pool=\"alpha\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("twem_pool_client_rejected_total{pool=\"alpha\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("twem_pool_client_foreign_protocol_total{pool=\"alpha\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("twem_pool_client_connections{pool=\"alpha\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("twem_server_requests_total{pool=\"alpha\",server=\"s1\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("twem_server_in_queue{pool=\"alpha\",server=\"s1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE twem_server_requests_total counter"),
            "{text}"
        );
        assert!(text.contains("twem_connections 4"), "{text}");
        assert!(
            text.contains("twem_server_dedicated_connections{pool=\"alpha\",server=\"s1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("twem_server_failovers_total{pool=\"alpha\",server=\"s1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("twem_server_replica_reads_total{pool=\"alpha\",server=\"s1\"} 9"),
            "{text}"
        );
        assert!(
            text.contains("twem_server_replicas_healthy{pool=\"alpha\",server=\"s1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("twem_server_address{address=\"127.0.0.1:7001\",pool=\"alpha\",role=\"master\",server=\"s1\"} 1"),
            "{text}"
        );
    }
}
