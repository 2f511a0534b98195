//! `--metrics-addr`: Prometheus text exposition on `GET /metrics`.
//!
//! Two sources, one page: the latency histograms and per-class request
//! counters that pools record as they go (twem-core's registry), and the
//! stats-JSON facts (requests, errors, connections, ejections, queues), read
//! from the same counters the stats port reads, at scrape time. The `prometheus`
//! crate does the exposition. The HTTP side is the few lines a GET-only,
//! close-after-reply endpoint needs; a full HTTP stack would add far more
//! code than it saves here.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use twem_core::pool::stats::{POOL_FIELD_DESCRIPTIONS, SERVER_FIELD_DESCRIPTIONS};
use twem_core::pool::PoolSnapshot;

use crate::stats::Globals;

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
    if let Ok(rej) = IntCounterVec::new(
        Opts::new(
            "twem_pool_client_rejected_total",
            "Client connections closed at accept because of client_connections",
        ),
        &["pool"],
    ) {
        for p in pools {
            if let Some((_, v)) = p.twem_fields.iter().find(|f| f.0 == "client_rejected") {
                rej.with_label_values(&[&p.name]).inc_by((*v).max(0) as u64);
            }
        }
        let _ = reg.register(Box::new(rej));
    }
    if let Ok(foreign) = IntCounterVec::new(
        Opts::new(
            "twem_pool_client_foreign_protocol_total",
            "Client connections closed for speaking another protocol (HTTP, memcached binary): possible cross-protocol attacks",
        ),
        &["pool"],
    ) {
        for p in pools {
            if let Some((_, v)) = p
                .twem_fields
                .iter()
                .find(|f| f.0 == "client_foreign_protocol")
            {
                foreign.with_label_values(&[&p.name]).inc_by((*v).max(0) as u64);
            }
        }
        let _ = reg.register(Box::new(foreign));
    }
    if let Ok(total) = prometheus::IntCounter::new(
        "twem_connections_opened_total",
        "Connections opened (listeners, clients, servers)",
    ) {
        total.inc_by(globals.total_connections.load(Relaxed));
        let _ = reg.register(Box::new(total));
    }
    if let Ok(curr) = prometheus::IntGauge::new(
        "twem_connections",
        "Connections open now (listeners, clients, servers)",
    ) {
        curr.set(i64::try_from(globals.curr_connections.load(Relaxed)).unwrap_or(i64::MAX));
        let _ = reg.register(Box::new(curr));
    }
    let mut families = reg.gather();
    families.extend(twem_core::pool::metrics::registry().gather());
    TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_default()
}

/// Serve `/metrics` until `stop` fires.
pub async fn serve<F>(
    listener: TcpListener,
    snapshot: F,
    globals: Arc<Globals>,
    stop: CancellationToken,
) where
    F: Fn() -> Vec<PoolSnapshot> + Send + Sync + 'static,
{
    let snapshot = Arc::new(snapshot);
    loop {
        let (mut sock, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            () = stop.cancelled() => return,
        };
        let snapshot = Arc::clone(&snapshot);
        let globals = Arc::clone(&globals);
        tokio::spawn(async move {
            // Read the request head, bounded in size and time.
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            });
            if read.await.is_err() {
                return;
            }
            let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            let mut parts = line.split(|&b| b == b' ');
            let (method, path) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let (status, ctype, body) =
                if method == b"GET" && (path == b"/metrics" || path.starts_with(b"/metrics?")) {
                    (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        render(&snapshot(), &globals),
                    )
                } else if method == b"GET" && path == b"/" {
                    (
                        "200 OK",
                        "text/plain; charset=utf-8",
                        "twem: metrics at /metrics\n".to_string(),
                    )
                } else {
                    (
                        "404 Not Found",
                        "text/plain; charset=utf-8",
                        "not found: try GET /metrics\n".to_string(),
                    )
                };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
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
            }],
            twem_fields: vec![("client_rejected", 5), ("client_foreign_protocol", 6)],
        }];
        let g = Globals::default();
        g.curr_connections.store(4, Relaxed);
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
    }
}
