//! The [`Pool`]: one configured pool of Redis or memcached servers, live.
//!
//! A pool owns, per server, `server_connections` connection tasks (see
//! [`backend`]), the current [`Ring`] snapshot (swapped atomically on
//! ejection and re-admission, so routing takes no lock), failure accounting
//! for `auto_eject_hosts`, and the counters behind the stats port.
//!
//! The proxy is a `Pool` plus listeners: its client sessions call
//! [`Pool::dispatch_redis`] / [`Pool::dispatch_memcache`] for every request, in
//! request order, and write what the returned [`ReplyFuture`]s resolve to in
//! that same order. Embedders call the same functions through [`Pool::call`]
//! and the typed helpers, and so get exactly the proxy's placement and
//! semantics without the extra hop.

pub mod backend;
mod client;
mod cluster;
pub mod error;
mod health;
mod inbox;
pub mod info;
pub mod mcstats;
mod merge;
pub mod metrics;
mod pin;
#[cfg(feature = "redis-rs")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-rs")))]
pub mod redis_rs;
pub mod replica;
pub mod route;
pub mod scan;
pub mod stats;
mod subscription;
mod transaction;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use twem_proto::{memcache as mc, resp};

use crate::config::{PoolConfig, ServerAddr};
use crate::ring::Ring;

pub use backend::Frame;
pub use client::{McValue, MemcacheClient, PoolBuilder, RedisClient, Stored};
pub use cluster::ClusterCounters;
pub use error::{
    BackendError, BackendErrorKind, CallError, PoolError, RequestCause, RequestError, ServerError,
    TlsProblem,
};
pub use inbox::Inbox;
pub use pin::Pinned;
pub use scan::{Scan, ScanOptions};
pub use stats::{
    PoolSnapshot, PoolStats, ServerCounters, ServerPlace, ServerSnapshot, ServerStats,
};
pub use subscription::{Message, Subscription};
pub use transaction::{Transaction, MAX_TXN_BYTES, MAX_TXN_COMMANDS};

use backend::{BackendReq, Expect, Msg, ReplyTx};
pub(crate) use backend::{PushItem, PushSink};
use merge::Merge;
use route::{Failure, Plan};

/// Which protocol a pool speaks (`redis: true` in the config, or memcached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Redis (RESP).
    Redis,
    /// memcached ASCII.
    Memcache,
}

pub use route::PLACEHOLDER_KEY;

/// The memcached limits a pool uses, for client requests and for server
/// replies. memcached's own item limit (`-I`, 1 MiB by default, up to 1 GiB)
/// is the server's business: nutcracker forwards values of any size and lets
/// memcached refuse them, so the proxy only bounds a frame the way Redis
/// bounds a bulk string (512 MiB), to keep a hostile client from making it
/// buffer without end.
pub fn memcache_limits() -> mc::Limits {
    mc::Limits {
        max_value_len: 512 * 1024 * 1024,
        ..mc::Limits::default()
    }
}

/// The RESP limits for replies from Redis servers. A server is not a hostile
/// client: a large `HGETALL`, `SMEMBERS` or `LRANGE` legitimately returns
/// more elements than a client request may carry, so arrays are bounded far
/// higher than the codec's client-side default.
pub fn redis_reply_limits() -> resp::Limits {
    resp::Limits {
        max_array_len: 1 << 30,
        ..resp::Limits::default()
    }
}

/// Unwritten request bytes one server may have queued (over all its
/// connections) before new requests to it are refused with
/// [`BackendErrorKind::Backlogged`]. Each client is held back by its own
/// budget first (the proxy stops reading it); this bounds what many clients
/// together can pin while a server is stalled. With worker event loops
/// ([`crate::worker`]) each worker's connections hold an equal share: a
/// worker checks its own count, not a sum over the others' cache lines on
/// every request.
pub const MAX_QUEUED_BYTES_PER_SERVER: i64 = 64 * 1024 * 1024;

/// Whether `queued` bytes on one connection set's connections to a server
/// are past the set's share of [`MAX_QUEUED_BYTES_PER_SERVER`], with
/// `workers` worker event loops each holding an equal share (0: an
/// embedder's threads, one set with all of it). A multiplication, not a
/// division: it runs for every request.
#[inline]
fn past_share(queued: i64, workers: usize) -> bool {
    let n = i64::try_from(workers.max(1)).unwrap_or(i64::MAX);
    queued.saturating_mul(n) > MAX_QUEUED_BYTES_PER_SERVER
}

/// How long a re-admission probe may take when the pool has no `timeout`.
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a connection waits for a Sentinel master's first address
/// (the sentinels are asked as the pool starts) before its requests fail.
pub(crate) const DISCOVERY_WAIT: Duration = Duration::from_secs(2);

/// One server of a pool, shared by its connection tasks and the pool.
#[derive(Debug)]
pub(crate) struct ServerShared {
    pub name: Arc<str>,
    /// Where the server is now: its configured address, or for a Sentinel
    /// master what the sentinels last said (`None` until they answered).
    /// Every connection task reads it when it connects and, in a Sentinel
    /// pool, watches it while connected: a failover ends the connection
    /// (see [`ServerShared::switch_to`]) whatever set of connections it
    /// belongs to.
    pub addr: tokio::sync::watch::Sender<Option<Arc<ServerAddr>>>,
    /// Switches of address seen after the first (Sentinel failovers).
    pub failovers: AtomicU64,
    /// Replica slots for `read_from` ([`MAX_REPLICAS`](crate::config::MAX_REPLICAS));
    /// empty when the pool reads from masters only.
    pub replicas: Box<[replica::ReplicaSlot]>,
    pub stats: Arc<ServerStats>,
    /// Reply latency of this server (Prometheus).
    pub latency: Arc<metrics::Latency>,
    failures: AtomicU32,
    ejected: AtomicBool,
    /// A cluster pool's node entry: its `host:port` and address, set when
    /// a node takes the entry (see `pool/cluster.rs`; `addr` then holds the
    /// same address; an entry whose node left the cluster may be taken
    /// again by another node). Empty for a static or Sentinel pool's
    /// servers.
    pub node: ArcSwapOption<(Arc<str>, ServerAddr)>,
}

impl ServerShared {
    /// A cluster pool's entry becomes node `name` at `addr`: its
    /// connections go there from now on (a connection still open to a node
    /// that had the entry before sees the address change and closes).
    pub(crate) fn set_node(&self, name: &str, addr: ServerAddr) {
        self.node
            .store(Some(Arc::new((Arc::from(name), addr.clone()))));
        self.addr.send_replace(Some(Arc::new(addr)));
    }

    /// Whether any connection to the server is open now, in any worker's
    /// set (the gauge summed over every copy).
    pub(crate) fn connected(&self) -> bool {
        self.stats.total_i64(|c| &c.server_connections) > 0
    }

    /// The server's name for stats and logs: a cluster node's `host:port`,
    /// else its configured name.
    pub(crate) fn label(&self) -> Arc<str> {
        self.node
            .load()
            .as_ref()
            .map_or_else(|| Arc::clone(&self.name), |n| Arc::clone(&n.0))
    }
}

/// State shared by a pool's handles, connection tasks and probe tasks.
#[derive(Debug)]
pub(crate) struct PoolShared {
    pub config: PoolConfig,
    pub protocol: Protocol,
    /// In ring order: index i is `base_ring.servers()[i]`.
    pub servers: Vec<ServerShared>,
    base_ring: Ring,
    ring: ArcSwap<Ring>,
    pub stats: Arc<PoolStats>,
    /// Latency and per-class counters (Prometheus).
    pub metrics: metrics::PoolMetrics,
    rebuild: Mutex<()>,
    pub(crate) closed: AtomicBool,
    /// Requests every new Redis backend connection starts with.
    handshake: Vec<resp::Request>,
    /// The same, then `HELLO 3`: for the connections of RESP3 clients.
    handshake3: Vec<resp::Request>,
    /// The lowest `redis_version` among the servers, once learned (see
    /// [`Pool::server_version`]).
    version: Mutex<Option<Arc<str>>>,
    /// When a local failure (out of descriptors) was last logged, seconds
    /// since the epoch: such lines are rate-limited to one a second.
    last_local_log: AtomicU64,
    /// TLS material read from the `tls_*` files when the pool was built.
    pub tls: crate::tls::PoolTls,
    /// `cluster: true`: the slot map, node table and redirection counters.
    pub(crate) cluster: Option<Arc<cluster::ClusterState>>,
}

impl ServerShared {
    /// The server's address now; `None` for a Sentinel master the
    /// sentinels have not named yet.
    pub(crate) fn current_addr(&self) -> Option<Arc<ServerAddr>> {
        self.addr.borrow().clone()
    }

    /// The server's address, waiting (at most [`DISCOVERY_WAIT`]) for a
    /// Sentinel master's first one.
    pub(crate) async fn wait_addr(&self) -> Option<Arc<ServerAddr>> {
        if let Some(a) = self.current_addr() {
            return Some(a);
        }
        let mut rx = self.addr.subscribe();
        let known = async { rx.wait_for(Option::is_some).await.ok()?.clone() };
        tokio::time::timeout(DISCOVERY_WAIT, known)
            .await
            .ok()
            .flatten()
    }

    /// The server is now at `addr` (the sentinels said so): connections
    /// to the old address notice and close, new ones go to `addr`. Returns
    /// the address it was at before, if it had one (a failover).
    pub(crate) fn switch_to(&self, addr: ServerAddr) -> Option<Arc<ServerAddr>> {
        let old = self.addr.send_replace(Some(Arc::new(addr)));
        if old.is_some() {
            self.failovers.fetch_add(1, Relaxed);
        }
        old
    }
}

impl PoolShared {
    /// The requests a new connection starts with: AUTH and SELECT as
    /// configured, and `HELLO 3` for the connections of RESP3 clients.
    pub(crate) fn handshake(&self, resp3: bool) -> &[resp::Request] {
        if resp3 {
            &self.handshake3
        } else {
            &self.handshake
        }
    }

    /// Whether a line about a local failure may be logged now (at most one
    /// a second per pool: under a descriptor flood it would be per request).
    pub(crate) fn local_failure_log_due(&self) -> bool {
        let now = now_micros() / 1_000_000;
        let last = self.last_local_log.load(Relaxed);
        now != last
            && self
                .last_local_log
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A client counted in its pool's `client_connections` (see
/// [`Pool::admit_client`]); the count drops with it. It holds the pool's
/// counters, not the pool, so a reload that replaces the pool keeps the
/// count right (the counters carry over to the new pool).
#[derive(Debug)]
pub struct ClientAdmission {
    stats: Arc<PoolStats>,
}

impl Drop for ClientAdmission {
    fn drop(&mut self) {
        self.stats.client_connections.fetch_sub(1, Relaxed);
    }
}

/// A connection slot: its task's channel, once a request (or `preconnect`)
/// started it.
type Lazy = OnceLock<mpsc::UnboundedSender<Msg>>;

/// One event loop's shared connections to every server of the pool (see
/// [`crate::worker`]): a proxy worker's requests go only to connections its
/// own thread runs, so no request wakes another thread.
#[derive(Debug)]
struct ConnSet {
    /// `conns[server][slot]`: the shared connections of RESP2 clients.
    conns: Box<[Box<[Lazy]>]>,
    /// `conns3[server][slot]`: the same for RESP3 clients (`HELLO 3`),
    /// started only when such a client sends to that server.
    conns3: Box<[Box<[Lazy]>]>,
    /// `replica_conns[server * MAX_REPLICAS + r][slot]`: the shared
    /// connections to replica slot `r` of a server (RESP2 clients' reads
    /// under `read_from`); empty when the pool reads from masters only.
    replica_conns: Box<[Box<[Lazy]>]>,
}

impl ConnSet {
    /// `servers` x `slots` empty slots in each lane (and `replicas` x
    /// `slots` per server for replica reads): a slot costs a pointer until
    /// a request picks it (a large `server_connections` used to cost ~8 KiB
    /// per slot at start).
    fn new(servers: usize, slots: usize, replicas: usize) -> ConnSet {
        let lane = |n: usize| -> Box<[Box<[Lazy]>]> {
            (0..n)
                .map(|_| (0..slots).map(|_| OnceLock::new()).collect())
                .collect()
        };
        ConnSet {
            conns: lane(servers),
            conns3: lane(servers),
            replica_conns: lane(servers * replicas),
        }
    }

    /// Every started connection's channel, every lane.
    fn started(&self) -> impl Iterator<Item = &mpsc::UnboundedSender<Msg>> {
        self.conns
            .iter()
            .chain(self.conns3.iter())
            .chain(self.replica_conns.iter())
            .flat_map(|per| per.iter().filter_map(OnceLock::get))
    }
}

/// The handles' part: the senders to the connection tasks. Dropping the last
/// handle closes the channels, which ends the tasks once their in-flight
/// requests are answered, and stops the probes.
#[derive(Debug)]
struct Handles {
    shared: Arc<PoolShared>,
    /// One connection set per worker event loop, and a last one for every
    /// other thread ([`crate::worker::set_for`]); each made on first use.
    sets: Box<[OnceLock<ConnSet>]>,
    /// `server_connections`: the connections of one set to one server.
    slots: usize,
    /// Per server: the connections pinned to clients (transactions).
    pins: Vec<PinSet>,
}

/// One server's pinned connections: how many exist (held or idle), and the
/// idle ones, clean, kept for the next transaction.
#[derive(Debug)]
struct PinSet {
    count: Mutex<usize>,
    /// The server's counters: `dedicated_connections` mirrors `count`.
    stats: Arc<ServerStats>,
    /// Idle pinned connections, with the kind each is.
    idle: Mutex<Vec<(mpsc::UnboundedSender<Msg>, backend::Lane)>>,
}

impl Handles {
    /// The calling thread's connection set (its worker's own, or the one
    /// shared by other threads), made on first use.
    #[inline]
    fn set(&self) -> &ConnSet {
        // `sets` is never empty (`Pool::replacing` makes at least one).
        let cell = crate::worker::local(&self.sets);
        cell.get_or_init(|| {
            // Replica slots only when the pool reads from replicas.
            let replicas = if self.shared.config.read_from == crate::config::ReadFrom::Master {
                0
            } else {
                crate::config::MAX_REPLICAS
            };
            ConnSet::new(self.shared.servers.len(), self.slots, replicas)
        })
    }

    /// The channel of server `idx`'s shared connection `slot` (of the RESP3
    /// lane if `resp3`) in the calling thread's set, starting its task on
    /// first use: on this thread's runtime, so a worker's connections run
    /// on the worker. Runs inside the runtime (every caller is async or was
    /// called from a task).
    #[inline]
    fn conn(&self, idx: usize, slot: usize, resp3: bool) -> Option<&mpsc::UnboundedSender<Msg>> {
        let set = self.set();
        let lanes = if resp3 { &set.conns3 } else { &set.conns };
        let lazy = lanes.get(idx)?.get(slot)?;
        Some(lazy.get_or_init(|| {
            self.spawn_conn(
                idx,
                backend::Lane {
                    resp3,
                    ..Default::default()
                },
                slot,
                None,
            )
        }))
    }

    /// Every started shared connection of server `idx`, in every set and
    /// lane (a cluster node that left is disconnected through them).
    fn server_conns(&self, idx: usize) -> impl Iterator<Item = &mpsc::UnboundedSender<Msg>> {
        self.sets
            .iter()
            .filter_map(OnceLock::get)
            .flat_map(move |set| {
                [&set.conns, &set.conns3]
                    .into_iter()
                    .filter_map(move |lane| lane.get(idx))
                    .flat_map(|slots| slots.iter().filter_map(OnceLock::get))
            })
    }

    /// Start every RESP2 connection of the calling thread's set
    /// (`preconnect`).
    fn preconnect(&self) {
        for idx in 0..self.shared.servers.len() {
            for slot in 0..self.slots {
                self.conn(idx, slot, false);
            }
        }
    }

    /// The channel of replica slot `r` of server `idx`, connection `slot`,
    /// in the calling thread's set, starting its task on first use.
    fn replica_conn(
        &self,
        idx: usize,
        r: usize,
        slot: usize,
    ) -> Option<&mpsc::UnboundedSender<Msg>> {
        let lazy = self
            .set()
            .replica_conns
            .get(idx * crate::config::MAX_REPLICAS + r)?
            .get(slot)?;
        Some(lazy.get_or_init(|| {
            self.spawn_conn(
                idx,
                backend::Lane {
                    replica: u8::try_from(r).ok(),
                    ..Default::default()
                },
                slot,
                None,
            )
        }))
    }

    /// Hand `wire` to the connection task behind `tx` (of server `idx`),
    /// counting it in the server's queue gauges until it is written.
    // Inlined into `send`, the hot path's one caller (the pinned paths
    // share it): a call with six arguments per request.
    #[inline]
    fn send_on(
        &self,
        tx: &mpsc::UnboundedSender<Msg>,
        idx: usize,
        wire: Bytes,
        expect: Option<Expect>,
        reply: Option<ReplyTx>,
    ) -> Result<(), CallError> {
        let stats: &ServerCounters = self.shared.servers[idx].stats.local();
        self.send_counted(stats, tx, wire, expect, reply)
    }

    /// [`Handles::send_on`] with the calling thread's copy of the server's
    /// counters already looked up (the shared path checks the queue bound
    /// against the same copy first).
    // Always inlined: it runs for every request, and a call of six
    // arguments cost ~20 instructions of prologue and epilogue (callgrind).
    #[inline(always)]
    fn send_counted(
        &self,
        stats: &ServerCounters,
        tx: &mpsc::UnboundedSender<Msg>,
        wire: Bytes,
        expect: Option<Expect>,
        reply: Option<ReplyTx>,
    ) -> Result<(), CallError> {
        let sh = &self.shared;
        let len = wire.len() as i64;
        stats.in_queue.fetch_add(1, Relaxed);
        stats.in_queue_bytes.fetch_add(len, Relaxed);
        if tx
            .send(Msg::Req(BackendReq {
                wire,
                expect,
                reply,
            }))
            .is_err()
        {
            stats.in_queue.fetch_sub(1, Relaxed);
            stats.in_queue_bytes.fetch_sub(len, Relaxed);
            return Err(CallError::Closed(Arc::from(sh.config.name.as_str())));
        }
        Ok(())
    }

    /// Start a connection task for server `idx`; its channel.
    fn spawn_conn(
        &self,
        idx: usize,
        lane: backend::Lane,
        slot: usize,
        sink: Option<backend::PushSink>,
    ) -> mpsc::UnboundedSender<Msg> {
        let (tx, rx) = mpsc::unbounded_channel();
        // Debug level: disabled (and free) at the default log level.
        let span = tracing::debug_span!(parent: None, "backend", pool = %self.shared.config.name,
            server = %self.shared.servers[idx].name, slot, resp3 = lane.resp3, pinned = lane.pinned);
        tokio::spawn(tracing::Instrument::instrument(
            backend::ConnTask::new(Arc::clone(&self.shared), idx, lane, rx, sink).run(),
            span,
        ));
        tx
    }
}

impl Drop for Handles {
    fn drop(&mut self) {
        self.shared.closed.store(true, Release);
    }
}

/// A live pool of Redis or memcached servers: routing, connections, failure
/// handling and stats. Cheap to clone; every clone is the same pool.
///
/// Build it inside a tokio runtime (it spawns one task per backend
/// connection slot).
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<Handles>,
}

impl Pool {
    /// Start a pool from its validated configuration.
    ///
    /// Must be called from within a tokio runtime
    /// ([`PoolError::NoRuntime`] otherwise).
    pub fn new(config: PoolConfig) -> Result<Pool, PoolError> {
        Pool::replacing(config, None)
    }

    /// Start a pool that takes over from `prev` (a config reload): the pool
    /// counters, and the counters of servers that keep their name, carry on
    /// from `prev`'s, so the stats port shows one continuous history and
    /// gauges count the connections of both while `prev` drains.
    ///
    /// Must be called from within a tokio runtime.
    pub fn replacing(config: PoolConfig, prev: Option<&Pool>) -> Result<Pool, PoolError> {
        // Connection tasks are spawned on the caller's runtime (the
        // worker's own, in the proxy): without one the first call would
        // panic far from the mistake, so refuse here.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(PoolError::NoRuntime {
                pool: config.name.clone(),
            });
        }
        // INFO's uptime counts from the first pool, the proxy's start.
        info::process_started();
        let base_ring = config.ring().map_err(|source| PoolError::Ring {
            pool: config.name.clone(),
            source,
        })?;
        // Read on every build, so that a reload picks up rotated files.
        let tls = crate::tls::load(&config)?;
        let (base_ring, servers, cluster) = if config.cluster.is_some() {
            cluster_servers(&config, prev)?
        } else {
            let servers = static_servers(&config, &base_ring, prev);
            (base_ring, servers, None)
        };
        let protocol = if config.redis {
            Protocol::Redis
        } else {
            Protocol::Memcache
        };
        let mut handshake = Vec::new();
        if protocol == Protocol::Redis {
            if let Some(pw) = &config.redis_auth {
                handshake.push(resp::Request::from_args([
                    Bytes::from_static(b"AUTH"),
                    Bytes::from(pw.clone()),
                ]));
            }
            if config.redis_db != 0 {
                handshake.push(resp::Request::from_args([
                    Bytes::from_static(b"SELECT"),
                    Bytes::from(config.redis_db.to_string()),
                ]));
            }
            // A cluster pool that reads from replicas: every connection
            // may serve reads of a slot its node replicates (harmless on
            // a master, and a node's role changes with failovers).
            if config.cluster.is_some() && config.read_from != crate::config::ReadFrom::Master {
                handshake.push(resp::Request::from_args([Bytes::from_static(b"READONLY")]));
            }
        }
        let slots = config.server_connections.max(1) as usize;
        let shared = Arc::new(PoolShared {
            ring: ArcSwap::from_pointee(base_ring.clone()),
            base_ring,
            servers,
            protocol,
            stats: prev
                .map(|p| Arc::clone(&p.inner.shared.stats))
                .unwrap_or_default(),
            metrics: metrics::PoolMetrics::new(&config.name, config.redis),
            rebuild: Mutex::new(()),
            closed: AtomicBool::new(false),
            handshake3: {
                let mut h = handshake.clone();
                h.push(resp::Request::from_args([
                    Bytes::from_static(b"HELLO"),
                    Bytes::from_static(b"3"),
                ]));
                h
            },
            handshake,
            version: Mutex::new(None),
            last_local_log: AtomicU64::new(0),
            tls,
            cluster,
            config,
        });
        // One connection set per declared worker and one for other threads
        // (an embedder: that one, see `crate::worker`); a set is made
        // (pointers only) when its thread first sends, and its connections
        // start when a request picks them. With
        // `preconnect` the creating thread's set connects now when that
        // thread is a worker or no workers are declared (an embedder); the
        // proxy, building pools off its workers, calls
        // [`Pool::preconnect`] on each worker.
        let workers = crate::worker::count();
        let sets = (0..crate::worker::sets())
            .map(|_| OnceLock::new())
            .collect();
        let pins = shared
            .servers
            .iter()
            .map(|s| PinSet {
                count: Mutex::new(0),
                stats: Arc::clone(&s.stats),
                idle: Mutex::new(Vec::new()),
            })
            .collect();
        // A Sentinel pool's servers get their addresses from the sentinels.
        crate::sentinel::start(&shared);
        replica::start_checks(&shared);
        let handles = Handles {
            sets,
            slots,
            pins,
            shared,
        };
        if handles.shared.config.preconnect && (workers == 0 || crate::worker::current().is_some())
        {
            handles.preconnect();
        }
        let pool = Pool {
            inner: Arc::new(handles),
        };
        if let (Some(state), Some(cc)) = (
            &pool.inner.shared.cluster,
            &pool.inner.shared.config.cluster,
        ) {
            let span = tracing::info_span!(parent: None, "cluster_refresh", pool = %pool.name());
            tokio::spawn(tracing::Instrument::instrument(
                cluster::refresh_loop(Arc::downgrade(&pool.inner), Arc::clone(state), cc.refresh),
                span,
            ));
        }
        Ok(pool)
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.shared.config
    }

    /// The TLS acceptor for this pool's clients (`tls_cert`), read from
    /// its files when the pool was built: a reload that rebuilds the pool
    /// serves new clients the rotated certificate.
    pub fn tls_acceptor(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.inner.shared.tls.acceptor()
    }

    /// Whether the TLS files this pool was built from still hold the same
    /// bytes (a reload keeps such a pool when its config is unchanged too).
    pub fn tls_files_unchanged(&self) -> bool {
        let shared = &self.inner.shared;
        shared.tls.files_unchanged(&shared.config.tls)
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.config.name
    }

    /// The protocol the pool speaks.
    pub fn protocol(&self) -> Protocol {
        self.inner.shared.protocol
    }

    /// The current ring snapshot (live servers only); cheap.
    pub fn ring(&self) -> Arc<Ring> {
        self.inner.shared.ring.load_full()
    }

    /// The name of the server `key` maps to now, or `None` when every server
    /// is ejected.
    pub fn server_for(&self, key: &[u8]) -> Option<String> {
        if let Some((_, node)) = self.cluster_locate(key) {
            return node;
        }
        let ring = self.inner.shared.ring.load();
        ring.locate(key).map(|i| ring.servers()[i].name.clone())
    }

    /// The pool's Prometheus children: client-side latency histogram and
    /// per-class request counters.
    pub fn metrics(&self) -> &metrics::PoolMetrics {
        &self.inner.shared.metrics
    }

    /// The pool's counters (client and forwarding side).
    pub fn stats(&self) -> &PoolStats {
        &self.inner.shared.stats
    }

    /// The pool's counters as a shared handle, for a holder that must outlive
    /// this pool (a client session across a reload).
    pub fn stats_arc(&self) -> &Arc<PoolStats> {
        &self.inner.shared.stats
    }

    /// The proxy's numbers for an `INFO` reply (see [`info`]).
    fn proxy_numbers(&self) -> info::ProxyNumbers {
        let sh = &self.inner.shared;
        let st = &sh.stats;
        let now = u64::try_from(st.client_connections.load(Relaxed)).unwrap_or(0);
        info::ProxyNumbers {
            connected_clients: now,
            // Every client accepted is connected now or ended (EOF or error).
            total_connections_received: now
                + st.client_eof.load(Relaxed)
                + st.client_err.load(Relaxed),
            total_commands_processed: sh
                .servers
                .iter()
                .map(|s| s.stats.total_u64(|c| &c.requests))
                .sum(),
            uptime_in_seconds: info::process_started().elapsed().as_secs(),
        }
    }

    /// A copy of every counter of the pool and its servers. Also brings
    /// the pool's per-class Prometheus counters up to date
    /// ([`metrics::PoolMetrics::flush`]).
    pub fn snapshot(&self) -> PoolSnapshot {
        let sh = &self.inner.shared;
        sh.metrics.flush();
        PoolSnapshot {
            name: sh.config.name.clone(),
            // A cluster pool's redirections and map reads are in the stats
            // JSON too: an operator watching a resharding looks there.
            fields: sh
                .stats
                .fields()
                .into_iter()
                .chain(cluster::fields(sh.cluster.as_deref()))
                .collect(),
            servers: sh
                .servers
                .iter()
                // A cluster pool lists the nodes it knows, by `host:port`.
                .take(sh.cluster.as_ref().map_or(sh.servers.len(), |c| c.known()))
                .map(|s| ServerSnapshot {
                    name: s.label().to_string(),
                    fields: s.stats.fields(),
                    twem_fields: vec![(
                        "dedicated_connections",
                        s.stats.total_i64(|c| &c.dedicated_connections).max(0),
                    )],
                    place: (sh.config.sentinel.is_some() || !s.replicas.is_empty()).then(|| {
                        stats::ServerPlace {
                            address: s.current_addr().map(|a| a.to_string()).unwrap_or_default(),
                            role: "master",
                            failovers: s.failovers.load(Relaxed),
                            replica_reads: s.replicas.iter().map(|r| r.reads.load(Relaxed)).sum(),
                            replicas_healthy: s
                                .replicas
                                .iter()
                                .filter(|r| r.healthy.load(Relaxed))
                                .count() as u64,
                        }
                    }),
                })
                .collect(),
            twem_fields: [
                (
                    "client_rejected",
                    i64::try_from(sh.stats.client_rejected.load(Relaxed)).unwrap_or(i64::MAX),
                ),
                (
                    "client_foreign_protocol",
                    i64::try_from(sh.stats.client_foreign_protocol.load(Relaxed))
                        .unwrap_or(i64::MAX),
                ),
                (
                    "server_connections_opened",
                    i64::try_from(sh.stats.server_connections_opened.load(Relaxed))
                        .unwrap_or(i64::MAX),
                ),
            ]
            .into_iter()
            .chain(cluster::fields(sh.cluster.as_deref()))
            .collect(),
        }
    }

    /// Admit a client just accepted: `None` (counted in `client_rejected`)
    /// when the pool's `client_connections` limit is reached, else a guard
    /// that counts it in `client_connections` until dropped. The proxy's
    /// accept loops use this rather than the counters themselves.
    pub fn admit_client(&self) -> Option<ClientAdmission> {
        let stats = &self.inner.shared.stats;
        let limit = self.inner.shared.config.client_connections;
        if limit > 0 && stats.client_connections.load(Relaxed) >= i64::from(limit) {
            stats.client_rejected.fetch_add(1, Relaxed);
            return None;
        }
        stats.client_connections.fetch_add(1, Relaxed);
        Some(ClientAdmission {
            stats: Arc::clone(stats),
        })
    }

    /// A client was turned away before admission (the proxy's descriptor
    /// budget is used up): counted in `client_rejected`.
    pub fn reject_client(&self) {
        self.inner
            .shared
            .stats
            .client_rejected
            .fetch_add(1, Relaxed);
    }

    /// Start this thread's connections to every server now, as
    /// `preconnect` asks (a proxy worker calls it for each pool it serves:
    /// pools are built off the workers). Does nothing for a pool without
    /// `preconnect`, or once the connections exist.
    pub fn preconnect(&self) {
        if self.inner.shared.config.preconnect && !self.is_closed() {
            self.inner.preconnect();
        }
    }

    /// Ask every connection to finish its in-flight requests and close. New
    /// calls fail with [`CallError::Closed`]. Resolves once every connection
    /// task has been told; in-flight replies still reach their callers.
    pub async fn close(&self) {
        let sh = &self.inner.shared;
        sh.closed.store(true, Release);
        for set in self.inner.sets.iter().filter_map(OnceLock::get) {
            for tx in set.started() {
                let _ = tx.send(Msg::Close);
            }
        }
        // Let the tasks see the message before the caller moves on.
        tokio::task::yield_now().await;
    }

    /// Whether [`close`](Pool::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.load(Acquire)
    }

    fn fail_now(&self, kind: BackendErrorKind) -> ReplyFuture {
        if kind == BackendErrorKind::AllEjected && self.inner.shared.local_failure_log_due() {
            tracing::warn!(
                pool = self.name(),
                "request failed: every server of the pool is ejected"
            );
        }
        self.inner.shared.stats.forward_error.fetch_add(1, Relaxed);
        ReplyFuture::ready(Err(CallError::Backend(BackendError::new(
            kind,
            Arc::from(""),
        ))))
    }

    /// Hand `wire` to a connection of server `idx`, its reply to go to
    /// `reply` (`None` for a memcached `noreply` request); `hint` picks the
    /// connection so that one client's requests to a server stay on one
    /// connection, in order. Refused when the server's queue is past its
    /// bound ([`MAX_QUEUED_BYTES_PER_SERVER`]).
    #[inline(always)]
    fn send(
        &self,
        idx: usize,
        wire: Bytes,
        expect: Option<Expect>,
        reply: Option<ReplyTx>,
        lane: (usize, bool),
    ) -> Result<(), CallError> {
        self.send_checked(idx, wire, expect, reply, lane, true)
    }

    /// [`Pool::send`]; `bounded: false` for a part of a request whose
    /// targets were all checked before any part was sent (a split MSET
    /// must not be refused half way by its own earlier parts).
    // Always inlined into the request path: each call level there cost
    // ~20 instructions of prologue and epilogue a request (callgrind).
    #[inline(always)]
    fn send_checked(
        &self,
        idx: usize,
        wire: Bytes,
        expect: Option<Expect>,
        reply: Option<ReplyTx>,
        (hint, resp3): (usize, bool),
        bounded: bool,
    ) -> Result<(), CallError> {
        let sh = &self.inner.shared;
        if sh.closed.load(Relaxed) {
            return Err(CallError::Closed(Arc::from(sh.config.name.as_str())));
        }
        let Some(tx) = self.inner.conn(idx, hint % self.inner.slots, resp3) else {
            return Err(CallError::Closed(Arc::from(sh.config.name.as_str())));
        };
        // This thread's copy of the counters, looked up once for the
        // queue bound and the queue gauges.
        let stats: &ServerCounters = sh.servers[idx].stats.local();
        if bounded && past_share(stats.in_queue_bytes.load(Relaxed), crate::worker::count()) {
            return Err(self.backlogged(idx));
        }
        // A cluster node may answer with a redirection: the reply channel
        // then carries what it takes to follow it.
        let reply = match (reply, &sh.cluster) {
            (Some(r), Some(_)) if matches!(expect, Some(Expect::Resp)) => {
                Some(self.cluster_reply(r, &wire, idx, (hint, resp3)))
            }
            (r, _) => r,
        };
        self.inner.send_counted(stats, tx, wire, expect, reply)
    }

    /// Refuse a request for server `idx` when its unwritten bytes are past
    /// the bound (the server is stalled or cannot keep up), before anything
    /// of the request is sent.
    fn refuse_if_backlogged(&self, idx: usize) -> Result<(), CallError> {
        let sh = &self.inner.shared;
        // This thread's connections to the server, against their share.
        let queued = sh.servers[idx].stats.local().in_queue_bytes.load(Relaxed);
        if !past_share(queued, crate::worker::count()) {
            return Ok(());
        }
        Err(self.backlogged(idx))
    }

    /// The refusal of a request for server `idx`, whose queue is past its
    /// bound: counted, logged (at most once a second), worded.
    #[cold]
    fn backlogged(&self, idx: usize) -> CallError {
        let sh = &self.inner.shared;
        let server = &sh.servers[idx];
        let queued = server.stats.local().in_queue_bytes.load(Relaxed);
        sh.stats.forward_error.fetch_add(1, Relaxed);
        if sh.local_failure_log_due() {
            tracing::warn!(pool = %sh.config.name, server = %server.name, queued,
                "request refused: the server is not taking requests (stalled?) and its queue is full");
        }
        CallError::Backend(BackendError::new(
            BackendErrorKind::Backlogged,
            Arc::clone(&server.name),
        ))
    }

    /// Send the fragments of a split command, each to its server, and count
    /// them in the pool's `fragments` when `fragments` says they are (a
    /// SCAN is one whole request to one server, not a fragment). Every
    /// target is checked for a full queue first: refusing a later fragment
    /// after earlier ones were sent would half-apply an MSET or a DEL.
    fn send_fragments(
        &self,
        frags: Vec<(usize, Bytes)>,
        expect: Expect,
        hint: (usize, bool),
        fragments: bool,
    ) -> Result<Vec<oneshot::Receiver<Result<Frame, BackendError>>>, CallError> {
        for (srv, _) in &frags {
            self.refuse_if_backlogged(*srv)?;
        }
        let mut parts = Vec::with_capacity(frags.len());
        for (srv, wire) in frags {
            let (tx, rx) = oneshot::channel();
            // Checked above, every target before any part.
            self.send_checked(
                srv,
                wire,
                Some(expect),
                Some(ReplyTx::Oneshot(tx)),
                hint,
                false,
            )?;
            parts.push(rx);
        }
        if fragments {
            self.inner
                .shared
                .stats
                .fragments
                .fetch_add(parts.len() as u64, Relaxed);
        }
        Ok(parts)
    }

    /// Send a request whose one reply is the client's: into the caller's
    /// inbox if it has one, else through a oneshot.
    fn send_one(&self, idx: usize, wire: Bytes, expect: Expect, caller: Caller<'_>) -> ReplyFuture {
        self.send_caller(idx, wire, Some(expect), caller)
    }

    /// [`send_one`](Pool::send_one), for a request that may expect no
    /// reply (`expect: None`: memcached `noreply`), whose future then
    /// resolves to nothing once the request is written.
    #[inline(always)]
    fn send_caller(
        &self,
        idx: usize,
        wire: Bytes,
        expect: Option<Expect>,
        caller: Caller<'_>,
    ) -> ReplyFuture {
        // `send` refuses a request for a server past its queue bound.
        let hint = caller.lane();
        let (tx, inner) = caller.reply_channel();
        match self.send(idx, wire, expect, Some(tx), hint) {
            Ok(()) => ReplyFuture { inner },
            // A noreply request is refused silently, as memcached would.
            Err(_) if expect.is_none() => ReplyFuture::no_reply(),
            Err(e) => ReplyFuture::ready(Err(e)),
        }
    }

    /// Route any decoded request (see [`Codec`](crate::Codec)) and send it;
    /// resolves to the reply bytes for the client. A request of the other
    /// protocol is refused; a memcached line the codec found invalid is
    /// answered with memcached's own error line.
    pub fn dispatch(&self, req: &crate::codec::Request, hint: usize) -> ReplyFuture {
        self.route(req, Caller::Hint(hint))
    }

    /// [`dispatch`](Pool::dispatch) for a client with an [`Inbox`]: the same
    /// routing, with single-server replies delivered into the inbox instead
    /// of a channel allocated per request.
    pub fn dispatch_in(&self, req: &crate::codec::Request, inbox: &mut Inbox) -> ReplyFuture {
        self.route(req, Caller::Inbox(inbox))
    }

    fn route(&self, req: &crate::codec::Request, caller: Caller<'_>) -> ReplyFuture {
        use crate::codec::Request;
        match (req, self.protocol()) {
            (Request::Redis(r), Protocol::Redis) => self.route_redis(r, caller),
            (Request::Memcache(r), Protocol::Memcache) => self.route_memcache(r, caller),
            (Request::Invalid(e), _) => ReplyFuture::ready(Ok(e.reply())),
            _ => ReplyFuture::ready(Err(CallError::Request(RequestError::new(
                "ERR",
                format!("pool {} does not speak this protocol", self.name()),
            )))),
        }
    }

    /// Route a Redis request and send it; the future resolves to the reply
    /// bytes the client should get (a server's own error replies included),
    /// or to the error the proxy words as nutcracker does.
    ///
    /// The request is sent before this returns, so calling it for a client's
    /// requests in order keeps them in order on each backend connection.
    /// `hint` (a client id) keeps one client's requests on one connection
    /// when `server_connections` > 1.
    pub fn dispatch_redis(&self, req: &resp::Request, hint: usize) -> ReplyFuture {
        self.route_redis(req, Caller::Hint(hint))
    }

    /// [`dispatch_redis`](Pool::dispatch_redis) for a client with an
    /// [`Inbox`] (a proxy session): single-server replies go into the inbox.
    pub fn dispatch_redis_in(&self, req: &resp::Request, inbox: &mut Inbox) -> ReplyFuture {
        self.route_redis(req, Caller::Inbox(inbox))
    }

    fn route_redis(&self, req: &resp::Request, caller: Caller<'_>) -> ReplyFuture {
        let sh = &self.inner.shared;
        let planned = match &sh.cluster {
            None => route::plan_redis_with(req, &**sh.ring.load(), self.route_options()),
            Some(c) => route::plan_redis_with(req, &**c.map.load(), self.route_options()),
        };
        self.inner
            .shared
            .metrics
            .count(metrics::redis_class_index(planned.class));
        if let Plan::Local(_) = planned.plan {
            if let Some(reply) = self.auth_reply(req) {
                return ReplyFuture::ready(Ok(reply));
            }
        }
        // One comparison for a pool that reads from masters only. A
        // cluster pool's replicas are chosen by its slot map (above).
        if sh.config.read_from != crate::config::ReadFrom::Master
            && planned.replica_ok
            && sh.cluster.is_none()
        {
            if let Plan::One {
                server,
                noreply: false,
                ..
            } = &planned.plan
            {
                let server = *server;
                let (hint, resp3) = caller.lane();
                let slots = &sh.servers[server].replicas;
                // RESP3 clients read from masters: replica connections
                // speak RESP2.
                let healthy = slots.iter().map(|r| !resp3 && r.healthy.load(Relaxed));
                match replica::read_target(sh.config.read_from, true, healthy, hint) {
                    replica::ReadTarget::Master => {}
                    replica::ReadTarget::Replica(r) => {
                        if let Plan::One { wire, .. } = planned.plan {
                            return self.send_replica(server, r, wire, caller);
                        }
                        unreachable!("matched above");
                    }
                    replica::ReadTarget::NoReplica => {
                        sh.stats.forward_error.fetch_add(1, Relaxed);
                        return ReplyFuture::ready(Err(CallError::Backend(BackendError::new(
                            BackendErrorKind::NoReplica,
                            Arc::clone(&sh.servers[server].name),
                        ))));
                    }
                }
            }
        }
        self.execute(planned.plan, Expect::Resp, caller)
    }

    /// Send a read to replica slot `r` of server `idx` (see
    /// [`replica::read_target`]); counted in the slot's reads.
    fn send_replica(&self, idx: usize, r: usize, wire: Bytes, caller: Caller<'_>) -> ReplyFuture {
        if let Err(e) = self.refuse_if_backlogged(idx) {
            return ReplyFuture::ready(Err(e));
        }
        let sh = &self.inner.shared;
        let (hint, _) = caller.lane();
        let slots = sh.config.server_connections.max(1) as usize;
        let Some(tx) = self.inner.replica_conn(idx, r, hint % slots) else {
            return ReplyFuture::ready(Err(CallError::Closed(Arc::from(sh.config.name.as_str()))));
        };
        let (reply, inner) = caller.reply_channel();
        replica::count_read(&sh.servers[idx].replicas[r]);
        match self
            .inner
            .send_on(tx, idx, wire, Some(Expect::Resp), Some(reply))
        {
            Ok(()) => ReplyFuture { inner },
            Err(e) => ReplyFuture::ready(Err(e)),
        }
    }

    /// Where a Redis request would go (what [`Pool::dispatch_redis`] would
    /// do with it), without sending anything: for a session that must know
    /// a command's server before deciding (a transaction's queued commands).
    #[inline]
    pub fn plan_redis(&self, req: &resp::Request) -> route::RedisPlan {
        let sh = &self.inner.shared;
        match &sh.cluster {
            None => route::plan_redis_with(req, &**sh.ring.load(), self.plan_options()),
            Some(c) => route::plan_redis_with(req, &**c.map.load(), self.plan_options()),
        }
    }

    /// What this pool's config allows the planner (`allow_flush`), for
    /// what must run on masters (a transaction's commands, `WATCH`).
    #[inline]
    fn plan_options(&self) -> route::PlanOptions {
        route::PlanOptions {
            allow_flush: self.inner.shared.config.allow_flush,
            replica_reads: false,
        }
    }

    /// [`plan_options`](Pool::plan_options) for a request on its own: a
    /// cluster pool's reads may go to replicas (`read_from`).
    #[inline]
    fn route_options(&self) -> route::PlanOptions {
        let sh = &self.inner.shared;
        route::PlanOptions {
            allow_flush: sh.config.allow_flush,
            replica_reads: sh.config.cluster.is_some()
                && sh.config.read_from != crate::config::ReadFrom::Master,
        }
    }

    /// Scan every server of the pool for keys (see
    /// [`pool::scan`](crate::pool::scan) for the cursor and its guarantees): `scan.next().await` yields each key, `None`
    /// once every server has been scanned.
    pub fn scan(&self, options: scan::ScanOptions) -> scan::Scan {
        scan::Scan::new(self.clone(), &options)
    }

    /// The error a client reads for a plan that failed.
    pub fn failure_error(&self, f: Failure) -> CallError {
        match f {
            Failure::Command(e) => CallError::Request(RequestError::from(e)),
            Failure::AllEjected => CallError::Backend(BackendError::new(
                BackendErrorKind::AllEjected,
                Arc::from(""),
            )),
            f @ (Failure::CrossSlot
            | Failure::CrossSlotCluster
            | Failure::SlotUnserved
            | Failure::Session(_)
            | Failure::InvalidCursor
            | Failure::FlushOff(_)) => CallError::Request(RequestError::from(f)),
        }
    }

    /// `AUTH` reaching the pool itself (an embedder's call; the proxy's
    /// sessions answer their clients' AUTH before this): with `redis_auth`
    /// set it is checked against it, as the proxy would, instead of the
    /// route's "no password is set". `None` for any other command.
    fn auth_reply(&self, req: &resp::Request) -> Option<Bytes> {
        if !req.name().eq_ignore_ascii_case(b"auth") {
            return None;
        }
        let password = self.inner.shared.config.redis_auth.as_ref()?;
        let given = req.args().get(1)?;
        // Constant time, as the session compares it.
        use subtle::ConstantTimeEq;
        let ok = bool::from(given[..].ct_eq(password.as_bytes()));
        Some(Bytes::from_static(if ok {
            b"+OK\r\n"
        } else {
            b"-ERR invalid password\r\n"
        }))
    }

    /// Route a memcached request and send it; resolves to the reply the
    /// client should get ([`Frame::NoReply`] for `noreply` and `quit`).
    pub fn dispatch_memcache(&self, req: &mc::Request, hint: usize) -> ReplyFuture {
        self.route_memcache(req, Caller::Hint(hint))
    }

    /// [`dispatch_memcache`](Pool::dispatch_memcache) for a client with an
    /// [`Inbox`] (a proxy session): single-server replies go into the inbox.
    pub fn dispatch_memcache_in(&self, req: &mc::Request, inbox: &mut Inbox) -> ReplyFuture {
        self.route_memcache(req, Caller::Inbox(inbox))
    }

    fn route_memcache(&self, req: &mc::Request, caller: Caller<'_>) -> ReplyFuture {
        let cmd = req.command();
        self.inner
            .shared
            .metrics
            .count(metrics::memcache_class_index(cmd));
        let plan = route::plan_memcache(req, &self.inner.shared.ring.load());
        // A quiet meta request is sent with an `mn` after it (see
        // `plan_memcache`), and its reply is cut at the server's `MN`.
        let expect = if req.quiet() {
            Expect::McQuiet
        } else {
            Expect::Mc(cmd)
        };
        self.execute(plan, expect, caller)
    }

    /// Carry out a [`Plan`]: answer, send to one server, or send the parts
    /// and merge their replies. `expect` is how the servers' replies parse.
    // Always inlined (into its two callers) so a plan is matched where it
    // was made rather than moved into a call: callgrind counted ~35
    // instructions a request for the call at pipeline 1.
    #[inline(always)]
    fn execute(&self, plan: Plan, expect: Expect, caller: Caller<'_>) -> ReplyFuture {
        match plan {
            // The route plans memcached `quit` as an empty local reply: the
            // session closes the connection and nothing is read.
            Plan::Local(reply) if reply.is_empty() => ReplyFuture::no_reply(),
            Plan::Local(reply) => ReplyFuture::ready(Ok(reply)),
            Plan::One {
                server,
                wire,
                noreply: false,
            } => self.send_one(server, wire, expect, caller),
            // Resolves (to nothing) once written: until then it counts
            // against its client's budget of requests in flight.
            Plan::One {
                server,
                wire,
                noreply: true,
            } => self.send_caller(server, wire, None, caller),
            Plan::Split(split) => {
                let route::Split {
                    parts,
                    part_of,
                    mut merge,
                } = *split;
                if let route::MergePolicy::Info(info) = &mut merge {
                    info.proxy = self.proxy_numbers();
                }
                if let route::MergePolicy::McStats(proxy) = &mut merge {
                    **proxy = self.proxy_numbers();
                }
                let fragments = !matches!(merge, route::MergePolicy::Scan { .. });
                let parts = match self.send_fragments(parts, expect, caller.lane(), fragments) {
                    Ok(p) => p,
                    Err(e) => return ReplyFuture::ready(Err(e)),
                };
                ReplyFuture::merge(Merge::new(merge, parts, part_of))
            }
            Plan::Blocking(b) => {
                let route::Blocking { server, wire, wait } = *b;
                self.send_blocking(server, wire, caller.lane().1, wait)
            }
            Plan::Fail(Failure::AllEjected) => self.fail_now(BackendErrorKind::AllEjected),
            Plan::Fail(f) => ReplyFuture::ready(Err(self.failure_error(f))),
        }
    }
}

/// A static pool's servers, in ring order; counters carried over from
/// `prev`'s servers of the same name.
fn static_servers(config: &PoolConfig, base_ring: &Ring, prev: Option<&Pool>) -> Vec<ServerShared> {
    base_ring
        .servers()
        .iter()
        .map(|rs| {
            let before =
                prev.and_then(|p| p.inner.shared.servers.iter().find(|s| *s.name == *rs.name));
            let addr = match config.server(&rs.name).map(|s| &s.addr) {
                // Its address comes from the sentinels; across a reload
                // the same master keeps the address it was at.
                Some(a @ ServerAddr::Sentinel { .. }) => before
                    .filter(|b| {
                        prev.and_then(|p| p.config().server(&b.name))
                            .is_some_and(|c| c.addr == *a)
                    })
                    .and_then(ServerShared::current_addr),
                Some(a) => Some(Arc::new(a.clone())),
                None => Some(Arc::new(ServerAddr::Tcp {
                    host: rs.name.clone(),
                    port: 0,
                })),
            };
            let replicas = if config.read_from == crate::config::ReadFrom::Master {
                Box::default()
            } else {
                let listed: Vec<ServerAddr> = config
                    .replicas
                    .iter()
                    .filter(|(server, _)| *server == rs.name)
                    .map(|(_, a)| a.clone())
                    .collect();
                replica::ReplicaSlot::slots(&listed)
            };
            let failovers = before
                .filter(|_| addr.is_some())
                .map_or(0, |b| b.failovers.load(Relaxed));
            let mut entry = server_shared(config, &rs.name, addr, prev);
            entry.failovers = AtomicU64::new(failovers);
            entry.replicas = replicas;
            entry
        })
        .collect()
}

/// One server entry named `name` at `addr` (`None`: not known yet), its
/// counters carried over from `prev`'s server of that name.
fn server_shared(
    config: &PoolConfig,
    name: &str,
    addr: Option<Arc<ServerAddr>>,
    prev: Option<&Pool>,
) -> ServerShared {
    ServerShared {
        name: Arc::from(name),
        addr: tokio::sync::watch::Sender::new(addr),
        failovers: AtomicU64::new(0),
        replicas: Box::default(),
        stats: prev
            .and_then(|p| p.inner.shared.servers.iter().find(|s| *s.name == *name))
            .map(|s| Arc::clone(&s.stats))
            .unwrap_or_default(),
        latency: metrics::server_latency(&config.name, name),
        failures: AtomicU32::new(0),
        ejected: AtomicBool::new(false),
        node: ArcSwapOption::empty(),
    }
}

/// A cluster pool's server entries (`cluster_max_nodes` of them: the seeds
/// first, named by their `host:port`, then free entries for the nodes
/// learned later), its ring (the first seed alone: what is still placed by
/// the ring, classic pub/sub and keyless transactions, goes to one node,
/// and a cluster broadcasts classic pub/sub messages to every node) and
/// its cluster state.
#[allow(clippy::type_complexity)]
fn cluster_servers(
    config: &PoolConfig,
    prev: Option<&Pool>,
) -> Result<(Ring, Vec<ServerShared>, Option<Arc<cluster::ClusterState>>), PoolError> {
    let entries = config
        .cluster
        .map_or(0, |c| c.max_nodes as usize)
        .max(config.servers.len());
    let mut servers = Vec::with_capacity(entries);
    let mut seeds = Vec::new();
    for sc in &config.servers {
        let name = match &sc.addr {
            ServerAddr::Tcp { host, port } => {
                crate::cluster::normalize_addr(&format!("{host}:{port}"))
                    .unwrap_or_else(|| format!("{host}:{port}"))
            }
            ServerAddr::Unix { path } => path.display().to_string(),
            // Refused by validation (sentinels and cluster exclude each
            // other); named as written if it ever gets here.
            ServerAddr::Sentinel { .. } => sc.addr.to_string(),
        };
        let entry = server_shared(config, &name, None, prev);
        entry.set_node(&name, sc.addr.clone());
        seeds.push(name);
        servers.push(entry);
    }
    for i in servers.len()..entries {
        let name = format!("cluster-node-{i}");
        // No address until a node takes the entry, and no counters
        // carried over: the entry of that name in `prev` may have been
        // another node.
        servers.push(server_shared(config, &name, None, None));
    }
    let first = seeds.first().cloned().unwrap_or_default();
    let ring = Ring::new(
        vec![crate::ring::RingServer::new(first, 1)],
        config.hash,
        config.distribution,
        None,
    )
    .map_err(|source| PoolError::Ring {
        pool: config.name.clone(),
        source,
    })?;
    let state = cluster::ClusterState::new(&seeds, entries);
    Ok((ring, servers, Some(Arc::new(state))))
}

/// Who a request is for: a bare client id, or a client with an inbox.
enum Caller<'a> {
    Hint(usize),
    Inbox(&'a mut Inbox),
}

impl Caller<'_> {
    /// The client id (which connection slot) and whether it speaks RESP3
    /// (which lane of connections).
    #[inline]
    fn lane(&self) -> (usize, bool) {
        match self {
            Caller::Hint(h) => (*h, false),
            Caller::Inbox(i) => (i.hint(), i.resp3()),
        }
    }

    /// Where the one reply goes: a slot of the caller's inbox, else a
    /// oneshot; and what its future waits on.
    #[inline]
    fn reply_channel(self) -> (ReplyTx, Inner) {
        match self {
            Caller::Inbox(inbox) => {
                let (tx, rx) = inbox.slot();
                (ReplyTx::Slot(tx), Inner::Slot(rx))
            }
            Caller::Hint(_) => {
                let (tx, rx) = oneshot::channel();
                (ReplyTx::Oneshot(tx), Inner::One(rx))
            }
        }
    }
}

/// A reply as the client reads it: one buffer, or for a merged reply with
/// large values, several buffers written in order, the values passed through
/// as slices of the servers' replies. A merged 1 GiB MGET reply used to be
/// copied into a new buffer while its parts were still held (2.09 GB peak);
/// as a chain it costs its parts and a few headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyChunks {
    /// The whole reply in one buffer.
    One(Bytes),
    /// The reply is these buffers, concatenated.
    Chain(Vec<Bytes>),
}

impl ReplyChunks {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        match self {
            ReplyChunks::One(b) => b.len(),
            ReplyChunks::Chain(v) => v.iter().map(Bytes::len).sum(),
        }
    }

    /// Whether the reply has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The reply in one buffer (copies a chain: for callers that want
    /// contiguous bytes, such as the embedded API).
    pub fn into_bytes(self) -> Bytes {
        match self {
            ReplyChunks::One(b) => b,
            ReplyChunks::Chain(v) => {
                let mut out = bytes::BytesMut::with_capacity(v.iter().map(Bytes::len).sum());
                for b in v {
                    out.extend_from_slice(&b);
                }
                out.freeze()
            }
        }
    }

    /// The buffers, in order.
    pub fn into_parts(self) -> impl Iterator<Item = Bytes> {
        let v = match self {
            ReplyChunks::One(b) => vec![b],
            ReplyChunks::Chain(v) => v,
        };
        v.into_iter()
    }
}

/// What a dispatched request resolves to, decoded as far as the pool went:
/// one server's reply as its connection decoded it (written as its own
/// bytes, or looked into with its frame's `parse()`: never decoded twice),
/// or a reply the pool built and encoded itself.
#[derive(Debug, Clone)]
pub enum Answer {
    /// One server's reply, as its connection task decoded it. For a
    /// memcached `noreply` request (once written, or refused) and `quit`
    /// it is [`Frame::NoReply`]: there is nothing for the client to read.
    Frame(Frame),
    /// A reply the pool built: a local command's (`PING`), a split
    /// command's merge, a request error worded for the client.
    Built(ReplyChunks),
}

impl Answer {
    /// The bytes the client reads, in order; `None` for [`Frame::NoReply`].
    /// A server's reply is its own buffer, taken without a copy.
    pub fn into_chunks(self) -> Option<ReplyChunks> {
        match self {
            Answer::Frame(Frame::NoReply) => None,
            Answer::Frame(f) => Some(ReplyChunks::One(f.into_raw())),
            Answer::Built(c) => Some(c),
        }
    }
}

// Kept small (no `Frame` inline: a memcached frame is 64 bytes): every
// request's future is moved into and through its session's queue.
enum Inner {
    Ready(Option<Result<ReplyChunks, CallError>>),
    /// Nothing to read ([`Frame::NoReply`]), until polled.
    NoReply,
    /// Polled already.
    Taken,
    One(oneshot::Receiver<Result<Frame, BackendError>>),
    Slot(inbox::SlotRx),
    Merge(Box<Merge>),
    /// A reply computed by a future of its own (see
    /// [`ReplyFuture::from_future`]).
    Boxed(Pin<Box<dyn Future<Output = Result<ReplyChunks, CallError>> + Send>>),
    /// A blocking command's reply, on its borrowed connection: it may never
    /// come, so a session whose client left does not wait for it.
    Blocking(Pin<Box<dyn Future<Output = Result<ReplyChunks, CallError>> + Send>>),
}

/// The reply to one dispatched request, resolving to the [`Answer`] (or the
/// error to word for the client). Requests are already on their way when
/// this exists; polling only collects the reply.
pub struct ReplyFuture {
    inner: Inner,
}

impl std::fmt::Debug for ReplyFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.inner {
            Inner::Ready(_) | Inner::NoReply | Inner::Taken => "ready",
            Inner::One(_) | Inner::Slot(_) => "waiting",
            Inner::Merge(_) => "merging",
            Inner::Boxed(_) => "computing",
            Inner::Blocking(_) => "blocking",
        };
        f.debug_struct("ReplyFuture")
            .field("state", &state)
            .finish()
    }
}

impl ReplyFuture {
    /// A reply that is known already (local command or immediate error),
    /// as the bytes the client reads.
    pub fn ready(r: Result<Bytes, CallError>) -> ReplyFuture {
        ReplyFuture::ready_chunks(r.map(ReplyChunks::One))
    }

    /// A reply that is known already, in chunks (see [`ReplyChunks`]).
    pub fn ready_chunks(r: Result<ReplyChunks, CallError>) -> ReplyFuture {
        ReplyFuture {
            inner: Inner::Ready(Some(r)),
        }
    }

    /// An answer polled already, kept to be taken again as the bytes to
    /// write: a server's frame comes back as [`Answer::Built`] (its bytes,
    /// not copied), so the future stays small. For the proxy session,
    /// which only writes replies.
    pub(crate) fn resolved(r: Result<Answer, CallError>) -> ReplyFuture {
        match r.map(Answer::into_chunks) {
            Ok(None) => ReplyFuture::no_reply(),
            Ok(Some(chunks)) => ReplyFuture::ready_chunks(Ok(chunks)),
            Err(e) => ReplyFuture::ready_chunks(Err(e)),
        }
    }

    /// Nothing for the client to read ([`Frame::NoReply`]): a `noreply`
    /// request refused, or a `quit`.
    pub fn no_reply() -> ReplyFuture {
        ReplyFuture {
            inner: Inner::NoReply,
        }
    }

    /// Poll for the reply, decoded: a server's frame as its connection
    /// parsed it, or the reply the pool built. The proxy session writes
    /// [`Answer::into_chunks`]; the embedding API looks into the frame.
    pub fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Result<Answer, CallError>> {
        match &mut self.inner {
            Inner::Ready(r) => Poll::Ready(match r.take() {
                Some(r) => r.map(Answer::Built),
                None => Err(taken()),
            }),
            Inner::NoReply => {
                self.inner = Inner::Taken;
                Poll::Ready(Ok(Answer::Frame(Frame::NoReply)))
            }
            Inner::Taken => Poll::Ready(Err(taken())),
            Inner::One(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(Ok(frame))) => Poll::Ready(Ok(Answer::Frame(frame))),
                Poll::Ready(Ok(Err(e))) => Poll::Ready(Err(CallError::Backend(e))),
                Poll::Ready(Err(_)) => Poll::Ready(Err(CallError::Backend(BackendError::new(
                    BackendErrorKind::Unknown,
                    Arc::from(""),
                )))),
                Poll::Pending => Poll::Pending,
            },
            Inner::Slot(rx) => match rx.poll(cx) {
                Poll::Ready(Ok(frame)) => Poll::Ready(Ok(Answer::Frame(frame))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(CallError::Backend(e))),
                Poll::Pending => Poll::Pending,
            },
            Inner::Merge(m) => m.poll(cx).map(|r| r.map(Answer::Built)),
            Inner::Boxed(f) | Inner::Blocking(f) => {
                f.as_mut().poll(cx).map(|r| r.map(Answer::Built))
            }
        }
    }

    /// Poll for the reply as the chunks to write (empty for
    /// [`Frame::NoReply`]): a merged reply with large values comes as a
    /// chain of slices instead of one copied buffer.
    pub fn poll_chunks(&mut self, cx: &mut Context<'_>) -> Poll<Result<ReplyChunks, CallError>> {
        self.poll_answer(cx).map(|r| {
            r.map(|a| {
                a.into_chunks()
                    .unwrap_or_else(|| ReplyChunks::One(Bytes::new()))
            })
        })
    }

    /// The decoded reply (see [`poll_answer`](ReplyFuture::poll_answer)).
    pub async fn answer(mut self) -> Result<Answer, CallError> {
        std::future::poll_fn(|cx| self.poll_answer(cx)).await
    }

    fn merge(m: Merge) -> ReplyFuture {
        ReplyFuture {
            inner: Inner::Merge(Box::new(m)),
        }
    }
}

/// A future polled again after it resolved.
fn taken() -> CallError {
    CallError::Request(RequestError::uncoded("reply already taken"))
}

/// Resolves to the bytes the client reads in one buffer (empty when there
/// is nothing to read): for callers that only pass bytes on.
impl Future for ReplyFuture {
    type Output = Result<Bytes, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_chunks(cx).map(|r| r.map(ReplyChunks::into_bytes))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    // The workers' shares add up to the bound, never past it; an embedder
    // (no workers) has the whole of it.
    #[test]
    fn queue_shares_add_up_to_the_bound() {
        let max = MAX_QUEUED_BYTES_PER_SERVER;
        assert!(!past_share(max, 0) && past_share(max + 1, 0));
        assert!(!past_share(max, 1) && past_share(max + 1, 1));
        for n in [2usize, 3, 8, 64] {
            // The largest count a set may hold is max / n: times the
            // sets, within the bound; one byte more is refused.
            let sets = i64::try_from(n).unwrap_or(i64::MAX);
            let share = max / sets;
            assert!(!past_share(share, n), "{n} workers");
            assert!(past_share(share + 1, n), "{n} workers");
            assert!(share * sets <= max && (share + 1) * sets > max);
        }
        assert!(past_share(i64::MAX, 64), "no overflow");
    }

    // Every request's future is moved into and through its session's
    // queue: callgrind counted ~75 instructions a request more when a
    // boxed-less RequestError and an inline Frame made it 96 bytes.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn reply_future_stays_small() {
        assert!(std::mem::size_of::<ReplyFuture>() <= 40);
        assert!(std::mem::size_of::<CallError>() <= 40);
    }

    // Outside a runtime the pool could not spawn its connection tasks:
    // an error naming the pool, not a panic at the first call.
    #[test]
    fn new_outside_a_runtime_is_an_error() {
        let built = Pool::builder("lonely")
            .redis()
            .server("127.0.0.1:6379:1")
            .build();
        assert!(
            matches!(&built, Err(PoolError::NoRuntime { pool }) if pool == "lonely"),
            "{built:?}"
        );
    }

    // No reply is said, not implied by empty bytes: the embedding API
    // sees `Frame::NoReply`, the session nothing to write.
    #[test]
    fn no_reply_is_explicit() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut fut = ReplyFuture::no_reply();
        assert!(matches!(
            fut.poll_answer(&mut cx),
            Poll::Ready(Ok(Answer::Frame(Frame::NoReply)))
        ));
        assert!(matches!(fut.poll_answer(&mut cx), Poll::Ready(Err(_))));
        assert!(Answer::Frame(Frame::NoReply).into_chunks().is_none());
        let pong = Bytes::from_static(b"+PONG\r\n");
        let mut fut = ReplyFuture::ready(Ok(pong.clone()));
        match fut.poll_answer(&mut cx) {
            Poll::Ready(Ok(a)) => assert_eq!(a.into_chunks(), Some(ReplyChunks::One(pong))),
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod admission_tests {
    use super::*;

    // client_connections is enforced by the pool: past the limit a client is
    // refused and counted; a client leaving frees its place.
    #[tokio::test]
    async fn admission_follows_client_connections() {
        let pool = Pool::from_yaml(
            "p:\n  listen: 127.0.0.1:22121\n  redis: true\n  client_connections: 1\n  servers:\n   - 127.0.0.1:1:1 a\n",
            None,
        )
        .expect("pool");
        let first = pool.admit_client().expect("room for one");
        assert_eq!(pool.stats().client_connections.load(Relaxed), 1);
        assert!(pool.admit_client().is_none());
        assert_eq!(pool.stats().client_rejected.load(Relaxed), 1);
        pool.reject_client();
        assert_eq!(pool.stats().client_rejected.load(Relaxed), 2);
        drop(first);
        assert_eq!(pool.stats().client_connections.load(Relaxed), 0);
        assert!(pool.admit_client().is_some());
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    // An embedder's AUTH is checked against redis_auth (it used to be told
    // "no password is set" even when one was).
    #[tokio::test]
    async fn embedded_auth_checks_redis_auth() {
        let pool = Pool::builder("t")
            .redis()
            .server("127.0.0.1:1:1 a")
            .redis_auth("pw")
            .build()
            .expect("pool");
        let auth = |pw: &'static str| {
            resp::Request::from_args([
                Bytes::from_static(b"AUTH"),
                Bytes::from_static(pw.as_bytes()),
            ])
        };
        assert_eq!(
            pool.call(auth("pw")).await.expect("reply"),
            resp::Reply::ok()
        );
        assert_eq!(
            pool.call(auth("nope")).await.expect("reply"),
            resp::Reply::error("ERR invalid password")
        );
        let open = Pool::builder("o")
            .redis()
            .server("127.0.0.1:1:1 a")
            .build()
            .expect("pool");
        assert_eq!(
            open.call(auth("pw")).await.expect("reply"),
            resp::Reply::error("ERR Client sent AUTH, but no password is set")
        );
    }
}
