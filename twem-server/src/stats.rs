//! nutcracker's stats port: every TCP connection to `-a:-s` gets one JSON
//! document and is closed. The document is rebuilt every `-i` ms, as
//! nutcracker aggregates per interval, so readers see figures up to one
//! interval old. Field names, order and spacing follow nutcracker 0.5.0 byte
//! for byte, so dashboards and scripts that parse it keep working.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use twem_core::pool::stats::{POOL_FIELD_DESCRIPTIONS, SERVER_FIELD_DESCRIPTIONS};
use twem_core::pool::PoolSnapshot;

/// Process-wide connection counters (nutcracker counts every connection
/// object: listeners, clients and server connections).
#[derive(Debug, Default)]
pub struct Globals {
    /// Connections ever opened.
    pub total_connections: AtomicU64,
    /// Connections open now.
    pub curr_connections: AtomicU64,
}

/// Render the stats document.
pub fn render(source: &str, uptime: Duration, globals: &Globals, pools: &[PoolSnapshot]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut s = String::with_capacity(1024);
    let _ = write!(
        s,
        "{{\"service\":\"nutcracker\", \"source\":{}, \"version\":\"{}\", \"uptime\":{}, \"timestamp\":{}, \"total_connections\":{}, \"curr_connections\":{}",
        json_str(source),
        crate::cli::NUTCRACKER_VERSION,
        uptime.as_secs(),
        now,
        globals.total_connections.load(Relaxed),
        globals.curr_connections.load(Relaxed),
    );
    for p in pools {
        let _ = write!(s, ", {}: {{", json_str(&p.name));
        let mut first = true;
        for (k, v) in &p.fields {
            if !first {
                s.push_str(", ");
            }
            first = false;
            let _ = write!(s, "\"{k}\":{v}");
        }
        for (i, srv) in p.servers.iter().enumerate() {
            s.push_str(if i == 0 { ", " } else { "," });
            let _ = write!(s, "{}: {{", json_str(&srv.name));
            let mut first = true;
            for (k, v) in &srv.fields {
                if !first {
                    s.push_str(", ");
                }
                first = false;
                let _ = write!(s, "\"{k}\":{v}");
            }
            s.push('}');
        }
        s.push('}');
    }
    s.push_str("}\n");
    s
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

/// Serve the stats port until `stop` fires. `snapshot` is called every
/// `interval` to refresh the document.
pub async fn serve<F>(
    listener: TcpListener,
    interval: Duration,
    snapshot: F,
    globals: Arc<Globals>,
    stop: CancellationToken,
) where
    F: Fn() -> Vec<PoolSnapshot> + Send + Sync + 'static,
{
    let started = Instant::now();
    let source = hostname();
    let doc = Arc::new(ArcSwap::from_pointee(render(
        &source,
        started.elapsed(),
        &globals,
        &snapshot(),
    )));
    let refresher = {
        let doc = Arc::clone(&doc);
        let globals = Arc::clone(&globals);
        let stop = stop.clone();
        let source = source.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => doc.store(Arc::new(render(&source, started.elapsed(), &globals, &snapshot()))),
                    () = stop.cancelled() => return,
                }
            }
        })
    };
    loop {
        tokio::select! {
            res = listener.accept() => {
                if let Ok((mut sock, _)) = res {
                    let body = doc.load_full();
                    tokio::spawn(async move {
                        let _ = sock.write_all(body.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    });
                }
            }
            () = stop.cancelled() => break,
        }
    }
    refresher.abort();
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
                },
                ServerSnapshot {
                    name: "127.0.0.1:6399".into(),
                    fields: vec![("server_eof", 1)],
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
