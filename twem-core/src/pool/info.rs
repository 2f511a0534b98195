//! `INFO` through the proxy: the proxy's own INFO text, built from its
//! numbers and the servers' `INFO` replies, pure and unit-tested.
//!
//! Clients read INFO to learn what they talk to: ioredis waits for
//! `loading:0` before its first command, libraries gate features on
//! `redis_version` (so the lowest version of the pool's servers is the one
//! a client may rely on), dashboards read `# Keyspace`. The text is Redis's
//! format (`# Section` headers, `field:value` lines, CRLF, a blank line
//! between sections) so the clients' parsers read it unchanged.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;

/// The sections the proxy writes, in Redis's order.
const SECTIONS: &[&str] = &["server", "clients", "persistence", "stats", "keyspace"];

/// An `INFO` request planned for every server: the client's section
/// arguments, and the proxy's numbers (filled in by the pool when it sends
/// the request; the route is pure and has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// The client's arguments after `INFO` (`server`, `keyspace`, `all`, ...).
    pub sections: Vec<Bytes>,
    /// The proxy's own numbers.
    pub proxy: ProxyNumbers,
}

impl InfoRequest {
    /// A request for these sections, with the proxy's numbers still zero.
    pub fn new(sections: Vec<Bytes>) -> InfoRequest {
        InfoRequest {
            sections,
            proxy: ProxyNumbers::default(),
        }
    }
}

/// The proxy's numbers an INFO reply shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyNumbers {
    /// Clients connected to the pool now.
    pub connected_clients: u64,
    /// Client connections accepted since the start (counters survive
    /// reloads).
    pub total_connections_received: u64,
    /// Requests forwarded to the pool's servers.
    pub total_commands_processed: u64,
    /// Seconds since the process started.
    pub uptime_in_seconds: u64,
}

/// When the process started, as near as twem knows: the first time this is
/// called (the first pool built calls it).
pub fn process_started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// The INFO text for `req`, from the replies of the servers that answered
/// (`answers`: each an INFO text; error replies are left out by the
/// caller). Returns the bulk string's payload.
pub fn build(req: &InfoRequest, answers: &[&[u8]]) -> String {
    let wanted = |name: &str| wants(&req.sections, name);
    let mut out = String::new();
    let section = |out: &mut String, title: &str| {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        out.push_str("# ");
        out.push_str(title);
        out.push_str("\r\n");
    };
    let p = &req.proxy;
    if wanted("server") {
        section(&mut out, "Server");
        if let Some(v) = lowest_version(answers) {
            let _ = write!(out, "redis_version:{v}\r\n");
        }
        let _ = write!(
            out,
            "twem_version:{}\r\nredis_mode:proxy\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            p.uptime_in_seconds,
            p.uptime_in_seconds / 86_400
        );
    }
    if wanted("clients") {
        section(&mut out, "Clients");
        let _ = write!(out, "connected_clients:{}\r\n", p.connected_clients);
    }
    if wanted("persistence") {
        section(&mut out, "Persistence");
        // The proxy answers from servers that are up: it is never loading
        // (ioredis waits for this line before its first command).
        out.push_str("loading:0\r\n");
    }
    if wanted("stats") {
        section(&mut out, "Stats");
        let _ = write!(
            out,
            "total_connections_received:{}\r\ntotal_commands_processed:{}\r\n",
            p.total_connections_received, p.total_commands_processed
        );
    }
    if wanted("keyspace") {
        section(&mut out, "Keyspace");
        for (db, ks) in keyspace(answers) {
            let _ = write!(
                out,
                "db{db}:keys={},expires={},avg_ttl={}\r\n",
                ks.keys,
                ks.expires,
                ks.avg_ttl()
            );
        }
    }
    out
}

/// Whether the client's section arguments ask for `name`: no argument,
/// `default`, `all` and `everything` ask for every section the proxy has;
/// otherwise the names, ignoring case (Redis ignores names it lacks, and so
/// does the proxy).
fn wants(args: &[Bytes], name: &str) -> bool {
    debug_assert!(SECTIONS.contains(&name));
    args.is_empty()
        || args.iter().any(|a| {
            a.eq_ignore_ascii_case(name.as_bytes())
                || a.eq_ignore_ascii_case(b"all")
                || a.eq_ignore_ascii_case(b"everything")
                || a.eq_ignore_ascii_case(b"default")
        })
}

/// The `field:value` pairs of one section of an INFO text.
fn fields<'a>(text: &'a [u8], title: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    let text = std::str::from_utf8(text).unwrap_or("");
    let mut inside = false;
    text.lines().filter_map(move |line| {
        let line = line.trim_end_matches('\r');
        if let Some(t) = line.strip_prefix("# ") {
            inside = t.trim().eq_ignore_ascii_case(title);
            return None;
        }
        if !inside {
            return None;
        }
        line.split_once(':')
    })
}

/// The lowest `redis_version` among the answers: the features a client
/// may use are the oldest server's.
fn lowest_version(answers: &[&[u8]]) -> Option<String> {
    answers
        .iter()
        .filter_map(|a| {
            fields(a, "Server")
                .find(|(k, _)| *k == "redis_version")
                .map(|(_, v)| v.trim().to_string())
        })
        .min_by_key(|v| version_key(v))
}

/// "7.0.15" as numbers, for comparing versions (a part that is not a
/// number counts as 0).
fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// One database's keyspace, summed over servers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Keyspace {
    keys: u64,
    expires: u64,
    /// Sum of `avg_ttl * expires`: the mean over every volatile key of the
    /// pool is this divided by the expiring keys (Redis's avg_ttl is a mean
    /// over the keys with a TTL, so they are the weights).
    ttl_weighted: u128,
}

impl Keyspace {
    fn avg_ttl(&self) -> u128 {
        if self.expires == 0 {
            0
        } else {
            self.ttl_weighted / u128::from(self.expires)
        }
    }
}

/// Every database of the answers' `# Keyspace`, summed, by db number.
fn keyspace(answers: &[&[u8]]) -> Vec<(u64, Keyspace)> {
    let mut dbs: Vec<(u64, Keyspace)> = Vec::new();
    for a in answers {
        for (name, value) in fields(a, "Keyspace") {
            let Some(db) = name.strip_prefix("db").and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let mut one = Keyspace::default();
            let mut ttl = 0u128;
            for kv in value.trim().split(',') {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                match k {
                    "keys" => one.keys = v.parse().unwrap_or(0),
                    "expires" => one.expires = v.parse().unwrap_or(0),
                    "avg_ttl" => ttl = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            one.ttl_weighted = ttl * u128::from(one.expires);
            match dbs.iter_mut().find(|(d, _)| *d == db) {
                Some((_, sum)) => {
                    sum.keys += one.keys;
                    sum.expires += one.expires;
                    sum.ttl_weighted += one.ttl_weighted;
                }
                None => dbs.push((db, one)),
            }
        }
    }
    dbs.sort_by_key(|(d, _)| *d);
    dbs
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const A: &[u8] = b"# Server\r\nredis_version:7.2.4\r\nredis_mode:standalone\r\n\r\n# Persistence\r\nloading:0\r\n\r\n# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n";
    const B: &[u8] = b"# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\ndb0:keys=5,expires=6,avg_ttl=3000\r\n";

    fn req(sections: &[&str]) -> InfoRequest {
        InfoRequest {
            sections: sections
                .iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect(),
            proxy: ProxyNumbers {
                connected_clients: 3,
                total_connections_received: 7,
                total_commands_processed: 42,
                uptime_in_seconds: 90_000,
            },
        }
    }

    #[test]
    fn default_info_has_every_section() {
        let text = build(&req(&[]), &[A, B]);
        for line in [
            "# Server\r\n",
            "redis_version:7.0.15\r\n",
            &format!("twem_version:{}\r\n", env!("CARGO_PKG_VERSION")),
            "redis_mode:proxy\r\n",
            &format!("process_id:{}\r\n", std::process::id()),
            "uptime_in_seconds:90000\r\n",
            "uptime_in_days:1\r\n",
            "\r\n# Clients\r\nconnected_clients:3\r\n",
            "\r\n# Persistence\r\nloading:0\r\n",
            "total_connections_received:7\r\n",
            "total_commands_processed:42\r\n",
            // avg_ttl weighted by the expiring keys: (1000*2 + 3000*6) / 8.
            "\r\n# Keyspace\r\ndb0:keys=15,expires=8,avg_ttl=2500\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n",
        ] {
            assert!(text.contains(line), "{line:?} not in {text}");
        }
        assert!(text.starts_with("# Server\r\n"));
        assert!(text.ends_with("avg_ttl=0\r\n"));
        assert_eq!(build(&req(&["all"]), &[A, B]), text);
        assert_eq!(build(&req(&["EVERYTHING"]), &[A, B]), text);
        assert_eq!(build(&req(&["default"]), &[A, B]), text);
    }

    #[test]
    fn sections_are_honoured() {
        let text = build(&req(&["keyspace"]), &[A, B]);
        assert!(text.starts_with("# Keyspace\r\ndb0:keys=15"), "{text}");
        assert!(!text.contains("# Server"));
        let text = build(&req(&["SERVER", "persistence"]), &[A, B]);
        assert!(text.starts_with("# Server\r\n"));
        assert!(text.contains("\r\n\r\n# Persistence\r\nloading:0\r\n"));
        assert!(!text.contains("# Keyspace") && !text.contains("# Clients"));
        assert_eq!(build(&req(&["nosuch"]), &[A, B]), "");
    }

    #[test]
    fn lowest_version_wins_numerically() {
        let a: &[u8] = b"# Server\r\nredis_version:7.10.0\r\n";
        let b: &[u8] = b"# Server\r\nredis_version:7.9.1\r\n";
        assert_eq!(lowest_version(&[a, b]).as_deref(), Some("7.9.1"));
        assert_eq!(lowest_version(&[]), None);
    }

    // With no answer carrying a version, the line is left out rather than
    // made up.
    #[test]
    fn no_version_no_line() {
        let text = build(&req(&["server"]), &[b"# Keyspace\r\n"]);
        assert!(!text.contains("redis_version"));
        assert!(text.contains("redis_mode:proxy"));
    }
}
