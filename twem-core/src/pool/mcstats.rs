//! memcached `stats` through the proxy: one reply in memcached's format,
//! built from the proxy's numbers and the servers' general `stats`, pure and
//! unit-tested.
//!
//! Clients (pymemcache `Client.stats()`, python-memcached `get_stats()`,
//! libmemcached's `memcached_stat`) read `STAT <name> <value>` lines up to
//! `END` into a map, and monitoring sums them across a pool: so the counters
//! only the servers know (`cmd_get`, `get_hits`, `curr_items`, `bytes`,
//! `evictions`, ...) are the servers' sums, and the fields that describe a
//! process (`pid`, `uptime`, `time`, the client connections) are the
//! proxy's. `version` is the lowest of the servers', the one a client may
//! rely on (as INFO's `redis_version`).

use std::fmt::Write as _;

use bytes::Bytes;

use super::info::ProxyNumbers;

/// Fields the proxy answers with its own value, whatever the servers say.
const PROXY_FIELDS: [&str; 6] = [
    "pid",
    "uptime",
    "time",
    "version",
    "curr_connections",
    "total_connections",
];

/// Fields that describe the machine, not a load: the first server's value.
const KEEP_FIRST: [&str; 1] = ["pointer_size"];

/// The `stats` reply (`STAT` lines then `END`, CRLF) from the proxy's numbers
/// and the `(name, value)` pairs of each server that answered. Field order is
/// the first server's (memcached's own order), then fields only later
/// servers have; the proxy's fields come first, as memcached writes them.
pub fn build(proxy: &ProxyNumbers, now_unix: u64, answers: &[Vec<(Bytes, Bytes)>]) -> Bytes {
    // (name, summed value or first text), in first-seen order.
    let mut fields: Vec<(Bytes, Acc)> = Vec::new();
    for answer in answers {
        for (name, value) in answer {
            let text = std::str::from_utf8(value).unwrap_or("");
            match fields.iter_mut().find(|(n, _)| n == name) {
                Some((n, acc)) => {
                    if !KEEP_FIRST.iter().any(|k| k.as_bytes() == &n[..]) {
                        acc.add(text);
                    }
                }
                None => fields.push((name.clone(), Acc::new(text))),
            }
        }
    }
    let lowest_version = answers
        .iter()
        .filter_map(|a| a.iter().find(|(n, _)| &n[..] == b"version"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .min_by(|a, b| version_key(a).cmp(&version_key(b)))
        .unwrap_or(env!("CARGO_PKG_VERSION"));
    let mut out = String::with_capacity(64 * (fields.len() + PROXY_FIELDS.len()));
    for name in PROXY_FIELDS {
        let value = match name {
            "pid" => std::process::id().to_string(),
            "uptime" => proxy.uptime_in_seconds.to_string(),
            "time" => now_unix.to_string(),
            "version" => lowest_version.to_string(),
            "curr_connections" => proxy.connected_clients.to_string(),
            _ => proxy.total_connections_received.to_string(),
        };
        let _ = write!(out, "STAT {name} {value}\r\n");
    }
    for (name, acc) in &fields {
        if PROXY_FIELDS.iter().any(|p| p.as_bytes() == &name[..]) {
            continue;
        }
        let _ = write!(out, "STAT {} {}\r\n", String::from_utf8_lossy(name), acc);
    }
    out.push_str("END\r\n");
    Bytes::from(out)
}

/// One field across the servers: integers and decimals (`rusage_user
/// 0.123456`) are summed; any other text is the first server's.
enum Acc {
    Int(u64),
    Decimal(f64),
    Text(String),
}

impl Acc {
    fn new(text: &str) -> Acc {
        if let Ok(n) = text.parse::<u64>() {
            Acc::Int(n)
        } else if let Some(x) = decimal(text) {
            Acc::Decimal(x)
        } else {
            Acc::Text(text.to_string())
        }
    }

    fn add(&mut self, text: &str) {
        match self {
            Acc::Int(n) => {
                if let Ok(m) = text.parse::<u64>() {
                    *n = n.saturating_add(m);
                }
            }
            Acc::Decimal(x) => {
                if let Some(y) = decimal(text) {
                    *x += y;
                }
            }
            Acc::Text(_) => {}
        }
    }
}

impl std::fmt::Display for Acc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Acc::Int(n) => write!(f, "{n}"),
            // memcached writes rusage with six decimals.
            Acc::Decimal(x) => write!(f, "{x:.6}"),
            Acc::Text(t) => f.write_str(t),
        }
    }
}

/// `123.456` (digits, one dot, digits), not a version like `1.6.18`.
fn decimal(text: &str) -> Option<f64> {
    let (a, b) = text.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if digits(a) && digits(b) {
        text.parse().ok()
    } else {
        None
    }
}

/// `1.6.18` -> [1, 6, 18], for comparing versions numerically (`1.6.9` is
/// older than `1.6.18`); a part's leading digits only (`1.6.0-rc1`).
fn version_key(v: &str) -> Vec<u64> {
    v.split('.')
        .map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap_or(0)
        })
        .collect()
}

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::*;

    fn answer(lines: &[(&'static str, &'static str)]) -> Vec<(Bytes, Bytes)> {
        lines
            .iter()
            .map(|(n, v)| {
                (
                    Bytes::from_static(n.as_bytes()),
                    Bytes::from_static(v.as_bytes()),
                )
            })
            .collect()
    }

    fn field(reply: &[u8], name: &str) -> Option<String> {
        let text = std::str::from_utf8(reply).unwrap();
        text.lines().find_map(|l| {
            let rest = l.strip_prefix("STAT ")?;
            let (n, v) = rest.split_once(' ')?;
            (n == name).then(|| v.to_string())
        })
    }

    // Counters are summed, the proxy's fields are its own, the version is
    // the lowest, text is the first server's, and the reply ends in END.
    #[test]
    fn sums_counters_and_keeps_the_proxy_fields() {
        let a = answer(&[
            ("pid", "11"),
            ("uptime", "500"),
            ("time", "1"),
            ("version", "1.6.18"),
            ("libevent", "2.1.12-stable"),
            ("pointer_size", "64"),
            ("rusage_user", "0.100000"),
            ("curr_connections", "3"),
            ("total_connections", "30"),
            ("cmd_get", "5"),
            ("curr_items", "2"),
        ]);
        let b = answer(&[
            ("pid", "12"),
            ("version", "1.6.9"),
            ("libevent", "other"),
            ("pointer_size", "64"),
            ("rusage_user", "0.250000"),
            ("cmd_get", "7"),
            ("curr_items", "3"),
            ("evictions", "1"),
        ]);
        let proxy = ProxyNumbers {
            connected_clients: 4,
            total_connections_received: 9,
            total_commands_processed: 0,
            uptime_in_seconds: 77,
        };
        let reply = build(&proxy, 1_700_000_000, &[a, b]);
        assert!(reply.ends_with(b"\r\nEND\r\n"));
        assert!(reply.starts_with(b"STAT pid "));
        let f = |n| field(&reply, n);
        assert_eq!(f("pid"), Some(std::process::id().to_string()));
        assert_eq!(f("uptime").as_deref(), Some("77"));
        assert_eq!(f("time").as_deref(), Some("1700000000"));
        assert_eq!(f("version").as_deref(), Some("1.6.9"));
        assert_eq!(f("curr_connections").as_deref(), Some("4"));
        assert_eq!(f("total_connections").as_deref(), Some("9"));
        assert_eq!(f("cmd_get").as_deref(), Some("12"));
        assert_eq!(f("curr_items").as_deref(), Some("5"));
        assert_eq!(f("evictions").as_deref(), Some("1"));
        assert_eq!(f("rusage_user").as_deref(), Some("0.350000"));
        assert_eq!(f("libevent").as_deref(), Some("2.1.12-stable"));
        assert_eq!(f("pointer_size").as_deref(), Some("64"));
        // Each field once, every line a STAT line but the last.
        let text = std::str::from_utf8(&reply).unwrap();
        let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.last(), Some(&"END"));
        assert!(lines[..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("STAT ")));
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("STAT pid ")).count(),
            1
        );
    }

    // No server answered: the proxy's fields alone, its own version.
    #[test]
    fn no_server_answers() {
        let reply = build(&ProxyNumbers::default(), 5, &[]);
        assert_eq!(
            field(&reply, "version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert!(reply.ends_with(b"END\r\n"));
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_key("1.6.9") < version_key("1.6.18"));
        assert!(version_key("1.5.22") < version_key("1.6.0-rc1"));
        assert_eq!(decimal("1.6.18"), None);
        assert_eq!(decimal("0.5"), Some(0.5));
    }
}
