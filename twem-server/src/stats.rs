//! nutcracker's stats port: every TCP connection to `-a:-s` gets one JSON
//! document and is closed. The document is at most `-i` ms old, as
//! nutcracker aggregates per interval, so readers see figures up to one
//! interval old. Field names, order and spacing follow nutcracker 0.5.0 byte
//! for byte, so dashboards and scripts that parse it keep working.
//!
//! Served on the admin thread (see [`crate::admin`]), never on the runtime
//! that serves clients.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use twem_core::pool::stats::{POOL_FIELD_DESCRIPTIONS, SERVER_FIELD_DESCRIPTIONS};
use twem_core::pool::PoolSnapshot;

use crate::admin::{self, Limiter, Snapshot};

/// Process-wide counters of the proxy's own connections: listeners and
/// clients. Backend connections are counted by the pools and added when the
/// figures are read ([`connection_counts`]), so the request path bumps no
/// extra atomic.
#[derive(Debug, Default)]
pub struct Globals {
    /// Listener and client connections ever opened.
    pub total_connections: AtomicU64,
    /// Listener and client connections open now.
    pub curr_connections: AtomicU64,
}

/// `(total, current)` connections as nutcracker counts them: every
/// connection object, i.e. listeners, clients and backend connections
/// (nutcracker 0.5.0 with `preconnect` and two servers reports
/// `total_connections: 3` before any client: one listener, two servers).
pub fn connection_counts(globals: &Globals, pools: &[PoolSnapshot]) -> (u64, u64) {
    let field = |fields: &[(&'static str, i64)], name: &str| -> u64 {
        fields
            .iter()
            .find(|f| f.0 == name)
            .map_or(0, |f| u64::try_from(f.1).unwrap_or(0))
    };
    let mut total = globals.total_connections.load(Relaxed);
    let mut curr = globals.curr_connections.load(Relaxed);
    for p in pools {
        total = total.saturating_add(field(&p.twem_fields, "server_connections_opened"));
        for s in &p.servers {
            curr = curr.saturating_add(field(&s.fields, "server_connections"));
        }
    }
    // The gauge and the counter are read apart: never show more open than opened.
    (total.max(curr), curr)
}

/// Render the stats document.
pub fn render(source: &str, uptime: Duration, globals: &Globals, pools: &[PoolSnapshot]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (total, curr) = connection_counts(globals, pools);
    let mut s = String::with_capacity(1024);
    let _ = write!(
        s,
        "{{\"service\":\"nutcracker\", \"source\":{}, \"version\":\"{}\", \"uptime\":{}, \"timestamp\":{}, \"total_connections\":{}, \"curr_connections\":{}",
        json_str(source),
        crate::cli::NUTCRACKER_VERSION,
        uptime.as_secs(),
        now,
        total,
        curr,
    );
    for p in pools {
        let _ = write!(s, ", {}: {{", json_str(&p.name));
        write_fields(&mut s, &p.fields);
        for (i, srv) in p.servers.iter().enumerate() {
            s.push_str(if i == 0 { ", " } else { "," });
            let _ = write!(s, "{}: {{", json_str(&srv.name));
            write_fields(&mut s, &srv.fields);
            // A Sentinel pool's servers (or a pool reading from replicas)
            // say where they are now; other pools keep nutcracker's layout
            // byte for byte.
            if let Some(place) = &srv.place {
                let _ = write!(
                    s,
                    ", \"address\":{}, \"role\":{}, \"failovers\":{}, \"replica_reads\":{}, \"replicas_healthy\":{}",
                    json_str(&place.address),
                    json_str(place.role),
                    place.failovers,
                    place.replica_reads,
                    place.replicas_healthy
                );
            }
            s.push('}');
        }
        s.push('}');
    }
    s.push_str("}\n");
    s
}

/// `"name":value` pairs separated by ", ", as nutcracker lays out a pool's
/// or a server's fields.
fn write_fields(s: &mut String, fields: &[(&str, i64)]) {
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "\"{k}\":{v}");
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The `-D` text, laid out as nutcracker prints it.
pub fn describe() -> String {
    let mut s = String::from("pool stats:\n");
    for (name, _, desc) in POOL_FIELD_DESCRIPTIONS {
        let _ = writeln!(s, "  {name:<20}\"{desc}\"");
    }
    s.push_str("\nserver stats:\n");
    for (name, _, desc) in SERVER_FIELD_DESCRIPTIONS {
        let _ = writeln!(s, "  {name:<20}\"{desc}\"");
    }
    s
}

/// The host name for the `source` field.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// Serve the stats port until `stop` fires. Each connection gets the
/// current document and is closed, as in nutcracker (nothing is read from
/// the peer). The document is rebuilt when a reader finds it older than
/// `interval`: never older than that when read, as with nutcracker's
/// per-interval aggregation, and nothing is rendered while nobody reads (a
/// timer on a starved thread could also serve a document many intervals
/// old).
pub async fn serve(
    listener: TcpListener,
    interval: Duration,
    snapshot: Snapshot,
    globals: Arc<Globals>,
    stop: CancellationToken,
) {
    let started = Instant::now();
    let source = hostname();
    let mut doc: Option<(Instant, Arc<String>)> = None;
    let limiter = Limiter::new(admin::MAX_CONNECTIONS);
    while let Some(mut sock) = admin::accept(&listener, "stats", &stop).await {
        let permit = limiter.admit();
        let body = match &doc {
            Some((at, body)) if at.elapsed() < interval => Arc::clone(body),
            _ => {
                let body = Arc::new(render(&source, started.elapsed(), &globals, &snapshot()));
                doc = Some((Instant::now(), Arc::clone(&body)));
                body
            }
        };
        // A peer that does not read a large document is cut off by the
        // deadline, or sooner by eviction.
        permit.spawn(async move { admin::write_and_close(&mut sock, body.as_bytes()).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twem_core::pool::ServerSnapshot;

    // The layout nutcracker 0.5.0 sends (captured from the Debian package):
    // ", " between fields, "," between servers, a newline at the end.
    #[test]
    fn layout_matches_nutcracker() {
        let g = Globals::default();
        g.total_connections.store(1, Relaxed);
        g.curr_connections.store(1, Relaxed);
        let pools = vec![PoolSnapshot {
            name: "alpha".into(),
            fields: vec![("client_eof", 0), ("client_err", 0)],
            servers: vec![
                ServerSnapshot {
                    name: "named".into(),
                    fields: vec![("server_eof", 0), ("requests", 3)],
                    twem_fields: vec![("dedicated_connections", 2)],
                    place: None,
                },
                ServerSnapshot {
                    name: "127.0.0.1:6399".into(),
                    fields: vec![("server_eof", 1)],
                    twem_fields: vec![],
                    place: None,
                },
            ],
            ..Default::default()
        }];
        let s = render("vm", Duration::from_secs(1), &g, &pools);
        let (head, tail) = s.split_at(s.find(", \"total_connections\"").expect("has totals"));
        assert!(head.starts_with("{\"service\":\"nutcracker\", \"source\":\"vm\", \"version\":\"0.5.0\", \"uptime\":1, \"timestamp\":"));
        assert_eq!(
            tail,
            ", \"total_connections\":1, \"curr_connections\":1, \"alpha\": {\"client_eof\":0, \"client_err\":0, \"named\": {\"server_eof\":0, \"requests\":3},\"127.0.0.1:6399\": {\"server_eof\":1}}}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v["alpha"]["named"]["requests"], 3);
    }

    // A Sentinel pool's server adds where it is now after nutcracker's
    // fields.
    #[test]
    fn sentinel_server_place() {
        let pools = vec![PoolSnapshot {
            name: "p".into(),
            fields: vec![("client_eof", 0)],
            servers: vec![ServerSnapshot {
                name: "shard-a".into(),
                fields: vec![("server_eof", 0)],
                place: Some(twem_core::pool::ServerPlace {
                    address: "127.0.0.1:7001".into(),
                    role: "master",
                    failovers: 2,
                    replica_reads: 7,
                    replicas_healthy: 1,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }];
        let s = render("h", Duration::ZERO, &Globals::default(), &pools);
        assert!(
            s.contains("\"shard-a\": {\"server_eof\":0, \"address\":\"127.0.0.1:7001\", \"role\":\"master\", \"failovers\":2, \"replica_reads\":7, \"replicas_healthy\":1}"),
            "{s}"
        );
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v["p"]["shard-a"]["failovers"], 2);
    }

    // Backend connections count as nutcracker counts them: open ones from
    // every server's gauge, opened ones from each pool's counter.
    #[test]
    fn totals_include_backend_connections() {
        let g = Globals::default();
        g.total_connections.store(3, Relaxed);
        g.curr_connections.store(2, Relaxed);
        let server = |n: i64| ServerSnapshot {
            name: "s".into(),
            fields: vec![("server_eof", 0), ("server_connections", n)],
            twem_fields: vec![],
            place: None,
        };
        let pools = vec![PoolSnapshot {
            name: "p".into(),
            fields: vec![],
            servers: vec![server(2), server(1)],
            twem_fields: vec![("client_rejected", 9), ("server_connections_opened", 4)],
        }];
        assert_eq!(connection_counts(&g, &pools), (7, 5));
        let s = render("h", Duration::ZERO, &g, &pools);
        assert!(
            s.contains("\"total_connections\":7, \"curr_connections\":5"),
            "{s}"
        );
    }

    // Names are user-controlled (pool and server names): they must be escaped.
    #[test]
    fn names_escaped() {
        let pools = vec![PoolSnapshot {
            name: "a\"b".into(),
            fields: vec![],
            servers: vec![],
            ..Default::default()
        }];
        let s = render("h", Duration::ZERO, &Globals::default(), &pools);
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        assert!(v.get("a\"b").is_some());
    }

    #[test]
    fn describe_lists_every_field() {
        let d = describe();
        assert!(
            d.starts_with("pool stats:\n  client_eof          \"# eof on client connections\"\n")
        );
        assert!(
            d.contains("\nserver stats:\n  server_eof          \"# eof on server connections\"\n")
        );
        assert!(d.contains("out_queue_bytes"));
    }
}
