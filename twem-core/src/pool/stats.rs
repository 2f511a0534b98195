//! Counters and gauges behind nutcracker's stats JSON (and the Prometheus
//! endpoint). Plain relaxed atomics: the request path never takes a lock, and
//! a reader may see figures a few microseconds apart, which the stats port
//! (refreshed every `-i` ms) tolerates by design.
//!
//! A server's counters, touched by every request, are kept once per
//! connection set ([`crate::worker`]): each worker event loop writes its own
//! copy, in its own cache lines, and readers sum them. One shared copy
//! would bounce its cache line between the cores on every request.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Per-pool counters, named as in nutcracker's stats JSON.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Clients that closed their connection (end of file).
    pub client_eof: AtomicU64,
    /// Client connections closed on an error (I/O or protocol).
    pub client_err: AtomicU64,
    /// Client connections open now (gauge).
    pub client_connections: AtomicI64,
    /// Client connections refused because of `client_connections` (twem only).
    pub client_rejected: AtomicU64,
    /// Client connections closed because they spoke another protocol (HTTP,
    /// memcached binary): possible cross-protocol attacks (twem only).
    pub client_foreign_protocol: AtomicU64,
    /// Times a server was ejected from the ring.
    pub server_ejects: AtomicU64,
    /// Requests that could not be forwarded (no live server, connect failure...).
    pub forward_error: AtomicU64,
    /// Sub-requests created by splitting multi-key commands.
    pub fragments: AtomicU64,
    /// Backend connections this pool ever opened (twem only: nutcracker
    /// counts them in its process-wide `total_connections`, which the stats
    /// port sums from this). Per pool rather than per server, so the figure
    /// survives a reload that removes a server; bumped per connect, never
    /// per request.
    pub server_connections_opened: AtomicU64,
}

/// Per-server counters, named as in nutcracker's stats JSON: one
/// [`ServerCounters`] per connection set, summed when read. The request
/// path writes the calling thread's copy ([`ServerStats::local`]); readers
/// use [`ServerStats::fields`] and the `total_*` methods. (No `Deref` to
/// the local copy: a `.load()` through it read one copy of several, and a
/// cluster pool's "is this node connected?" check was wrong by it.)
#[derive(Debug)]
pub struct ServerStats {
    shards: Box<[ServerCounters]>,
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            shards: (0..crate::worker::sets())
                .map(|_| ServerCounters::default())
                .collect(),
        }
    }
}

impl ServerStats {
    /// The calling thread's copy (its worker's, or the one other threads
    /// share): what the request path adds to. Never read a figure from it
    /// alone: another thread's copy holds the rest (use the `total_*`
    /// methods or [`ServerStats::fields`]).
    #[inline]
    pub fn local(&self) -> &ServerCounters {
        // `shards` is never empty (`sets()` is at least 1).
        crate::worker::local(&self.shards)
    }

    /// The one copy that holds gauges set to a value rather than added to
    /// (`dedicated_connections`, set from its own count under a lock): set
    /// in the caller's copy, every copy that was ever set would add up.
    pub fn whole(&self) -> &ServerCounters {
        // `shards` is never empty (`sets()` is at least 1).
        &self.shards[0]
    }

    /// A counter summed over every copy.
    pub fn total_u64(&self, field: impl Fn(&ServerCounters) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|c| field(c).load(Relaxed))
            .fold(0u64, u64::wrapping_add)
    }

    /// A gauge summed over every copy (a copy alone may be negative: a
    /// request counted in by one thread and out by another).
    pub fn total_i64(&self, field: impl Fn(&ServerCounters) -> &AtomicI64) -> i64 {
        self.shards
            .iter()
            .map(|c| field(c).load(Relaxed))
            .fold(0i64, i64::wrapping_add)
    }
}

/// One copy of a server's counters (see [`ServerStats`]). Aligned so that
/// two copies never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ServerCounters {
    /// The server closed a connection.
    pub server_eof: AtomicU64,
    /// A connection to the server failed (connect error, reset, bad reply).
    pub server_err: AtomicU64,
    /// Requests that timed out on this server.
    pub server_timedout: AtomicU64,
    /// Connections open to the server now (gauge).
    pub server_connections: AtomicI64,
    /// When the server was last ejected, microseconds since the epoch (0: never).
    pub server_ejected_at: AtomicU64,
    /// Requests forwarded.
    pub requests: AtomicU64,
    /// Bytes of requests forwarded.
    pub request_bytes: AtomicU64,
    /// Replies received.
    pub responses: AtomicU64,
    /// Bytes of replies received.
    pub response_bytes: AtomicU64,
    /// Requests waiting to be written to the server (gauge).
    pub in_queue: AtomicI64,
    /// Bytes of requests waiting to be written (gauge).
    pub in_queue_bytes: AtomicI64,
    /// Requests written and waiting for their reply (gauge).
    pub out_queue: AtomicI64,
    /// Bytes of requests written and waiting for their reply (gauge).
    pub out_queue_bytes: AtomicI64,
    /// Connections dedicated to one client (transactions, blocking
    /// commands, subscriptions), held or kept idle for reuse (gauge; they
    /// are counted in `server_connections` too once connected). twem's own:
    /// on `/metrics`, not in nutcracker's JSON.
    pub dedicated_connections: AtomicI64,
}

/// A copy of one server's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSnapshot {
    /// The server's name (its identity, as in the ring).
    pub name: String,
    /// The counters, in nutcracker's order: `(field name, value)`.
    pub fields: Vec<(&'static str, i64)>,
    /// twem's own gauges, kept out of nutcracker's JSON:
    /// `dedicated_connections`.
    pub twem_fields: Vec<(&'static str, i64)>,
    /// Where a Sentinel pool's server is now; `None` in a pool of fixed
    /// addresses (whose stats JSON stays nutcracker's, byte for byte).
    pub place: Option<ServerPlace>,
}

/// Where a server of a Sentinel pool (or of a pool reading from replicas)
/// is, as the stats port and `/metrics` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerPlace {
    /// The current address (`host:port`), empty until the sentinels named
    /// the master.
    pub address: String,
    /// The role of the node the server's connections go to: `master`.
    pub role: &'static str,
    /// Failovers seen: switches of address after the first.
    pub failovers: u64,
    /// Reads sent to the server's replicas (`read_from`).
    pub replica_reads: u64,
    /// The server's replicas that reads may go to now.
    pub replicas_healthy: u64,
}

/// A copy of one pool's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// The pool's name.
    pub name: String,
    /// The pool counters, in nutcracker's order: `(field name, value)`.
    pub fields: Vec<(&'static str, i64)>,
    /// Every server of the pool, in ring order.
    pub servers: Vec<ServerSnapshot>,
    /// Counters twem adds, kept out of nutcracker's JSON (which must stay
    /// byte-compatible): `client_rejected` and `client_foreign_protocol`
    /// (shown on `/metrics`), `server_connections_opened` (summed into the
    /// connection totals).
    pub twem_fields: Vec<(&'static str, i64)>,
}

fn u(v: &AtomicU64) -> i64 {
    i64::try_from(v.load(Relaxed)).unwrap_or(i64::MAX)
}

fn g(v: &AtomicI64) -> i64 {
    v.load(Relaxed).max(0)
}

impl PoolStats {
    /// nutcracker's pool fields with their values.
    pub fn fields(&self) -> Vec<(&'static str, i64)> {
        vec![
            ("client_eof", u(&self.client_eof)),
            ("client_err", u(&self.client_err)),
            ("client_connections", g(&self.client_connections)),
            ("server_ejects", u(&self.server_ejects)),
            ("forward_error", u(&self.forward_error)),
            ("fragments", u(&self.fragments)),
        ]
    }
}

impl ServerStats {
    /// nutcracker's server fields with their values, summed over the
    /// copies (`server_ejected_at`, a time, is the latest).
    pub fn fields(&self) -> Vec<(&'static str, i64)> {
        let u = |f: fn(&ServerCounters) -> &AtomicU64| {
            i64::try_from(self.total_u64(f)).unwrap_or(i64::MAX)
        };
        let g = |f: fn(&ServerCounters) -> &AtomicI64| self.total_i64(f).max(0);
        let ejected_at = self
            .shards
            .iter()
            .map(|c| c.server_ejected_at.load(Relaxed))
            .max()
            .unwrap_or(0);
        vec![
            ("server_eof", u(|c| &c.server_eof)),
            ("server_err", u(|c| &c.server_err)),
            ("server_timedout", u(|c| &c.server_timedout)),
            ("server_connections", g(|c| &c.server_connections)),
            (
                "server_ejected_at",
                i64::try_from(ejected_at).unwrap_or(i64::MAX),
            ),
            ("requests", u(|c| &c.requests)),
            ("request_bytes", u(|c| &c.request_bytes)),
            ("responses", u(|c| &c.responses)),
            ("response_bytes", u(|c| &c.response_bytes)),
            ("in_queue", g(|c| &c.in_queue)),
            ("in_queue_bytes", g(|c| &c.in_queue_bytes)),
            ("out_queue", g(|c| &c.out_queue)),
            ("out_queue_bytes", g(|c| &c.out_queue_bytes)),
        ]
    }
}

/// What each stats field means, for `--describe-stats` (nutcracker's wording).
pub const POOL_FIELD_DESCRIPTIONS: &[(&str, &str, &str)] = &[
    ("client_eof", "counter", "# eof on client connections"),
    ("client_err", "counter", "# errors on client connections"),
    ("client_connections", "gauge", "# active client connections"),
    (
        "server_ejects",
        "counter",
        "# times backend server was ejected",
    ),
    (
        "forward_error",
        "counter",
        "# times we encountered a forwarding error",
    ),
    (
        "fragments",
        "counter",
        "# fragments created from a multi-vector request",
    ),
];

/// What each server stats field means, for `--describe-stats`.
pub const SERVER_FIELD_DESCRIPTIONS: &[(&str, &str, &str)] = &[
    ("server_eof", "counter", "# eof on server connections"),
    ("server_err", "counter", "# errors on server connections"),
    (
        "server_timedout",
        "counter",
        "# timeouts on server connections",
    ),
    ("server_connections", "gauge", "# active server connections"),
    (
        "server_ejected_at",
        "timestamp",
        "timestamp when server was ejected in usec since epoch",
    ),
    ("requests", "counter", "# requests"),
    ("request_bytes", "counter", "total request bytes"),
    ("responses", "counter", "# responses"),
    ("response_bytes", "counter", "total response bytes"),
    ("in_queue", "gauge", "# requests in incoming queue"),
    (
        "in_queue_bytes",
        "gauge",
        "current request bytes in incoming queue",
    ),
    ("out_queue", "gauge", "# requests in outgoing queue"),
    (
        "out_queue_bytes",
        "gauge",
        "current request bytes in outgoing queue",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    // The field lists and their descriptions must name the same fields in the
    // same order, or `-D` would describe a document the stats port never sends.
    #[test]
    fn descriptions_match_fields() {
        let pool: Vec<_> = PoolStats::default()
            .fields()
            .into_iter()
            .map(|f| f.0)
            .collect();
        let pool_desc: Vec<_> = POOL_FIELD_DESCRIPTIONS.iter().map(|d| d.0).collect();
        assert_eq!(pool, pool_desc);
        let srv: Vec<_> = ServerStats::default()
            .fields()
            .into_iter()
            .map(|f| f.0)
            .collect();
        let srv_desc: Vec<_> = SERVER_FIELD_DESCRIPTIONS.iter().map(|d| d.0).collect();
        assert_eq!(srv, srv_desc);
    }

    // A gauge that briefly dips below zero (decrement seen before increment by
    // a reader) must not be reported as a negative count.
    #[test]
    fn gauges_never_negative() {
        let s = ServerStats::default();
        s.local().in_queue.fetch_sub(1, Relaxed);
        let f = s.fields();
        assert_eq!(f.iter().find(|x| x.0 == "in_queue").map(|x| x.1), Some(0));
    }
}
