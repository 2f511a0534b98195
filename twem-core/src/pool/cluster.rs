//! A cluster pool's live side (`cluster: true`): its node table, the slot
//! map snapshot, redirections followed for the client, and the refresh
//! task. The pure parts (slots, the map, parsing) are in
//! [`crate::cluster`].
//!
//! Nodes and server indexes: the pool is built with `cluster_max_nodes`
//! server entries (stats, connection slots, pinned sets). The seeds take
//! the first ones; a node learned later (from the map or a `-MOVED`) takes
//! the next free entry, keyed by its `host:port`, so the per-server
//! machinery (lazy connection slots, counters) needs no locking to grow. A
//! node that leaves the map has its shared connections closed
//! ([`Msg::Disconnect`]); they reconnect if it comes back. When every
//! entry is taken, a new node takes the entry of one that left: absent
//! from [`REUSE_AFTER_READS`] map reads in a row, with no connection open
//! (nodes whose address changes on every restart, as in Kubernetes, would
//! otherwise use the table up). A request or map snapshot that still holds
//! the old index reaches the new node, which answers `-MOVED` for a slot it
//! does not serve, followed as any redirection; a connection still open to
//! the old address closes when the entry's address changes.
//!
//! Redirections: for a cluster pool every shared-connection request that
//! expects a reply carries a [`Retry`] around its reply channel. A
//! `-MOVED`, `-ASK` or `-TRYAGAIN` reply is not delivered: the request is
//! sent again (to the node named, with `ASKING` before it for `-ASK`, after
//! a short wait for `-TRYAGAIN`) with the same reply channel, so the
//! retried reply fills the original request's place in its client's reply
//! order. At most [`MAX_REDIRECTS`] times; then the error goes to the
//! client. Transactions follow redirections whole (see
//! `transaction.rs`), through the same [`Pool::next_hop`].

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio::sync::{oneshot, Notify};
use twem_proto::resp;

use super::backend::{Expect, Msg, ReplyTx};
use super::error::BackendError;
use super::{Frame, Handles, Pool, ServerShared};
use crate::cluster::{Redirect, SlotMap, Topology, TopologyError, MAX_REDIRECTS};
use crate::config::ServerAddr;

/// `ASKING`, sent before a command that follows an `-ASK`.
pub(super) const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// How long a `-TRYAGAIN` request waits before it is sent again.
pub(super) const TRYAGAIN_WAIT: Duration = Duration::from_millis(25);
/// Map reads in a row that a node must be absent from (and hold no
/// connection) before a new node may take its entry.
pub(crate) const REUSE_AFTER_READS: u8 = 2;
/// The least time between two reads of the slot map: a burst of
/// `-MOVED` replies (a resharding) or failures asks for one read.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(100);
/// How long one node may take to answer `CLUSTER SHARDS`.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(1);

/// A cluster pool's state beside the pool's: the current slot map, the
/// node table and the redirection counters.
#[derive(Debug)]
pub(crate) struct ClusterState {
    /// The slot map now; swapped, never locked, by routing.
    pub map: ArcSwap<SlotMap>,
    /// `host:port` -> server index, for every node that holds an entry.
    nodes: Mutex<HashMap<String, u16>>,
    /// Per entry: the map reads in a row its node was absent from (0:
    /// listed by the last read). Locked after `nodes` when both are.
    absent: Mutex<Vec<u8>>,
    /// The seeds' entries (the first ones) are never given to another node.
    seeds: usize,
    /// Asks the refresh task for a read of the map now.
    refresh_now: Notify,
    /// Counters (the stats port's `cluster_*` fields).
    pub counters: ClusterCounters,
}

/// What a cluster pool counts: redirections followed and map reads.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// `-MOVED` replies followed.
    pub moved: AtomicU64,
    /// `-ASK` replies followed.
    pub ask: AtomicU64,
    /// `-TRYAGAIN` replies waited out and retried.
    pub tryagain: AtomicU64,
    /// Redirections not followed: the bound was reached or the node could
    /// not be taken; the error went to the client.
    pub redirect_failed: AtomicU64,
    /// Successful reads of the slot map.
    pub refreshes: AtomicU64,
    /// Reads of the slot map that no node answered.
    pub refresh_failed: AtomicU64,
}

impl ClusterState {
    /// The state of a pool whose first `seeds` entries are the seed nodes
    /// (named by their `host:port`), before the map is read.
    pub(crate) fn new(seeds: &[String], entries: usize) -> ClusterState {
        let nodes = seeds
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), i as u16))
            .collect();
        ClusterState {
            map: ArcSwap::from_pointee(SlotMap::all_on(0, entries)),
            nodes: Mutex::new(nodes),
            absent: Mutex::new(vec![0; entries]),
            seeds: seeds.len(),
            refresh_now: Notify::new(),
            counters: ClusterCounters::default(),
        }
    }

    /// Ask for a read of the slot map soon (a node failed, a slot moved).
    pub(crate) fn refresh_soon(&self) {
        self.refresh_now.notify_one();
    }

    /// The server index of node `addr`, taking a free entry of `servers`
    /// for a node not seen before, or the entry of a node that left (see
    /// the module docs); `None` when there is neither.
    fn index_of(&self, addr: &str, servers: &[ServerShared]) -> Option<u16> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = nodes.get(addr) {
            return Some(i);
        }
        let next = if nodes.len() < servers.len() {
            nodes.len()
        } else {
            let absent = self.absent.lock().unwrap_or_else(|p| p.into_inner());
            let left = reusable_entry(&absent, self.seeds, |i| {
                servers.get(i).is_some_and(ServerShared::connected)
            })?;
            let i = u16::try_from(left).ok()?;
            nodes.retain(|_, v| *v != i);
            tracing::info!(entry = left, old = %servers[left].label(), new = addr,
                "cluster node entry reused: its node left the cluster");
            left
        };
        let entry = servers.get(next)?;
        let (host, port) = addr.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let at = ServerAddr::Tcp {
            host: host.to_owned(),
            port,
        };
        let i = u16::try_from(next).ok()?;
        entry.set_node(addr, at);
        nodes.insert(addr.to_owned(), i);
        if let Some(a) = self
            .absent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(next)
        {
            *a = 0;
        }
        Some(i)
    }

    /// A map read listed the nodes at `listed`: their entries are
    /// present, every other taken entry absent one read more. Called
    /// before the read's new nodes look for an entry, so a node that came
    /// back keeps its own.
    fn count_absent<'a>(&self, listed: impl Iterator<Item = &'a String>) {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut absent = self.absent.lock().unwrap_or_else(|p| p.into_inner());
        let listed: Vec<u16> = listed
            .filter_map(|a| nodes.get(a.as_str()).copied())
            .collect();
        for &i in nodes.values() {
            if let Some(a) = absent.get_mut(usize::from(i)) {
                *a = if listed.contains(&i) {
                    0
                } else {
                    a.saturating_add(1)
                };
            }
        }
    }

    /// Slot `slot` is served by entry `idx` now (a `-MOVED`): for every
    /// client at once, and the rest of the map is likely stale too (a
    /// resharding or failover), so it is read again soon.
    fn learn_moved(&self, slot: u16, idx: u16) {
        let map = self.map.load();
        if let Some(next) = map.with_moved(slot, idx) {
            self.map.store(Arc::new(next));
        }
        self.refresh_soon();
    }

    /// How many entries are taken.
    pub(crate) fn known(&self) -> usize {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A request's reply channel on a cluster pool, with what it takes to
/// send the request again when the reply is a redirection.
pub(crate) struct Retry {
    pool: Weak<Handles>,
    /// Where the reply finally goes.
    inner: ReplyTx,
    /// The request as the client's plan made it (never with `ASKING`).
    wire: Bytes,
    /// The server index it went to last.
    idx: usize,
    lane: (usize, bool),
    attempts: u8,
}

impl Retry {
    /// Hand over the reply, or follow it when it is a redirection that
    /// may still be followed.
    pub(crate) fn deliver(self: Box<Self>, r: Result<Frame, BackendError>) {
        let redirect = match &r {
            Ok(Frame::Resp(f)) if f.is_error() => Redirect::parse(f.raw()),
            _ => None,
        };
        let (Some(redirect), Some(handles)) = (redirect, self.pool.upgrade()) else {
            return self.inner.send(r);
        };
        let pool = Pool { inner: handles };
        let hop = pool.next_hop(redirect, self.attempts);
        pool.follow(self, hop, r);
    }
}

/// Where a redirection sends a request next (see [`Pool::next_hop`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Hop {
    /// To server `idx`, after `ASKING` when `asking`.
    Node {
        /// The node's server index.
        idx: usize,
        /// Whether `ASKING` goes first (an `-ASK`).
        asking: bool,
    },
    /// To the same node again, after [`TRYAGAIN_WAIT`].
    Wait,
    /// Not followed: the bound is reached, or the node named has no entry
    /// left; the reply goes to the client as it is.
    GiveUp,
}

/// The entry a new node may take when every entry is held: the first past
/// the `seeds` whose node was absent from at least [`REUSE_AFTER_READS`]
/// map reads in a row and has no connection open (`connected`).
fn reusable_entry(absent: &[u8], seeds: usize, connected: impl Fn(usize) -> bool) -> Option<usize> {
    absent
        .iter()
        .enumerate()
        .skip(seeds)
        .find(|&(i, &a)| a >= REUSE_AFTER_READS && !connected(i))
        .map(|(i, _)| i)
}

impl Pool {
    /// The reply channel for a request to server `idx` of a cluster pool:
    /// wrapped in a [`Retry`] so that a redirection is followed.
    pub(super) fn cluster_reply(
        &self,
        reply: ReplyTx,
        wire: &Bytes,
        idx: usize,
        lane: (usize, bool),
    ) -> ReplyTx {
        ReplyTx::Cluster(Box::new(Retry {
            pool: Arc::downgrade(&self.inner),
            inner: reply,
            wire: wire.clone(),
            idx,
            lane,
            attempts: 0,
        }))
    }

    /// Where `redirect` leads a request that followed `attempts`
    /// redirections already, counted; a `-MOVED` also updates the slot map
    /// for every client and asks for a fresh read of it. The one place
    /// that decides, for shared requests ([`Retry`]) and transactions
    /// alike.
    pub(super) fn next_hop(&self, redirect: Redirect, attempts: u8) -> Hop {
        let sh = &self.inner.shared;
        let Some(cluster) = sh.cluster.as_deref() else {
            return Hop::GiveUp;
        };
        let c = &cluster.counters;
        if attempts >= MAX_REDIRECTS {
            c.redirect_failed.fetch_add(1, Relaxed);
            return Hop::GiveUp;
        }
        // `moved`: the slot that lives elsewhere for good (not for an ASK).
        let (addr, moved) = match redirect {
            Redirect::TryAgain => {
                c.tryagain.fetch_add(1, Relaxed);
                return Hop::Wait;
            }
            Redirect::Moved { slot, addr } => {
                c.moved.fetch_add(1, Relaxed);
                (addr, Some(slot))
            }
            Redirect::Ask { addr, .. } => {
                c.ask.fetch_add(1, Relaxed);
                (addr, None)
            }
        };
        let Some(idx) = cluster.index_of(&addr, &sh.servers) else {
            c.redirect_failed.fetch_add(1, Relaxed);
            table_full(sh, &addr);
            return Hop::GiveUp;
        };
        let asking = moved.is_none();
        if let Some(slot) = moved {
            cluster.learn_moved(slot, idx);
        }
        Hop::Node {
            idx: usize::from(idx),
            asking,
        }
    }

    /// A redirection that is not followed but passed to the client (the
    /// reply to a `WATCH`, whose connection is the transaction's): counted
    /// as not followed, and for a `-MOVED` the slot map learns the slot's
    /// new owner at once, so the client's next try goes there.
    pub(super) fn redirect_not_followed(&self, redirect: &Redirect) {
        let sh = &self.inner.shared;
        let Some(cluster) = sh.cluster.as_deref() else {
            return;
        };
        cluster.counters.redirect_failed.fetch_add(1, Relaxed);
        if let Redirect::Moved { slot, addr } = redirect {
            match cluster.index_of(addr, &sh.servers) {
                Some(idx) => cluster.learn_moved(*slot, idx),
                None => cluster.refresh_soon(),
            }
        }
    }

    /// Take `hop` for `retry` (`original` is the reply that asked for it,
    /// delivered as it is when the hop is [`Hop::GiveUp`]).
    fn follow(&self, mut retry: Box<Retry>, hop: Hop, original: Result<Frame, BackendError>) {
        retry.attempts += 1;
        match hop {
            Hop::Node { idx, asking } => {
                retry.idx = idx;
                self.resend(retry, asking);
            }
            Hop::Wait => {
                let pool = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(TRYAGAIN_WAIT).await;
                    pool.resend(retry, false);
                });
            }
            Hop::GiveUp => retry.inner.send(original),
        }
    }

    /// Send `retry`'s request to its server again on the client's shared
    /// connection, after `ASKING` when `asking` (both in one write, with
    /// one reply expected after `ASKING`'s, so no other request can come
    /// between them on the connection).
    fn resend(&self, retry: Box<Retry>, asking: bool) {
        let idx = retry.idx;
        let (hint, resp3) = retry.lane;
        let (wire, expect) = if asking {
            let mut w = BytesMut::with_capacity(ASKING.len() + retry.wire.len());
            w.extend_from_slice(ASKING);
            w.extend_from_slice(&retry.wire);
            (w.freeze(), Expect::Asking)
        } else {
            (retry.wire.clone(), Expect::Resp)
        };
        let slots = self.inner.slots;
        if self.is_closed() {
            let err = BackendError::new(super::BackendErrorKind::Unknown, Arc::from(""));
            return retry.inner.send(Err(err));
        }
        let Some(tx) = self.inner.conn(idx, hint % slots, resp3) else {
            let err = BackendError::new(super::BackendErrorKind::Unknown, Arc::from(""));
            return retry.inner.send(Err(err));
        };
        // On failure the reply channel is dropped with the message, which
        // answers the client with an error.
        let _ = self
            .inner
            .send_on(tx, idx, wire, Some(expect), Some(ReplyTx::Cluster(retry)));
    }

    /// Read the slot map from the first node that gives one (the masters
    /// of the current map, then every other node known, seeds included)
    /// and swap it in; nodes that left have their shared connections
    /// closed. `false` when no node answered with a map.
    pub(crate) async fn refresh_cluster_map(&self) -> bool {
        let sh = &self.inner.shared;
        let Some(cluster) = sh.cluster.as_deref() else {
            return false;
        };
        let current = cluster.map.load_full();
        let mut order: Vec<usize> = current.masters().collect();
        for i in 0..cluster.known() {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        // Nodes with an open connection first: a dead master (the usual
        // reason to read the map) would cost a refused connect, or a
        // whole timeout when its host is gone.
        order.sort_by_key(|&i| !sh.servers[i].connected());
        for idx in order {
            let Some(topology) = self.ask_topology(idx).await else {
                continue;
            };
            if topology.shards.is_empty() {
                continue;
            }
            let entries = sh.servers.len();
            let read_from = sh.config.read_from;
            cluster.count_absent(
                topology
                    .shards
                    .iter()
                    .flat_map(|s| std::iter::once(&s.master).chain(&s.replicas)),
            );
            let map = SlotMap::from_topology(&topology, entries, read_from, |addr| {
                cluster.index_of(addr, &sh.servers)
            });
            let kept: Vec<usize> = topology
                .shards
                .iter()
                .flat_map(|s| std::iter::once(&s.master).chain(&s.replicas))
                .filter_map(|a| cluster.index_of(a, &sh.servers))
                .map(usize::from)
                .collect();
            // A node the map no longer lists (removed, forgotten, failed)
            // keeps no connection; the node just asked is kept (a seed
            // named by another address than the cluster's).
            let open = |i: usize| sh.servers[i].connected();
            for gone in (0..cluster.known()).filter(|&i| i != idx && !kept.contains(&i) && open(i))
            {
                tracing::info!(pool = %sh.config.name, node = %sh.servers[gone].label(),
                    "cluster node left the slot map: closing its connections");
                self.disconnect(gone);
            }
            if *current != map {
                tracing::debug!(pool = %sh.config.name, masters = map.masters().count(), "cluster slot map changed");
            }
            cluster.map.store(Arc::new(map));
            cluster.counters.refreshes.fetch_add(1, Relaxed);
            return true;
        }
        cluster.counters.refresh_failed.fetch_add(1, Relaxed);
        false
    }

    /// `CLUSTER SHARDS` (then `CLUSTER SLOTS` for a server older than 7.0)
    /// asked of server `idx`, parsed; `None` when it did not answer with a
    /// map.
    async fn ask_topology(&self, idx: usize) -> Option<Topology> {
        let sh = &self.inner.shared;
        let host = match sh.servers.get(idx)?.current_addr().as_deref() {
            Some(ServerAddr::Tcp { host, .. }) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let reply = self.ask(idx, &[b"CLUSTER", b"SHARDS"]).await?;
        match Topology::from_shards(&reply, &host) {
            Ok(t) => Some(t),
            Err(TopologyError::Refused(e)) if e.contains("nknown subcommand") => {
                let reply = self.ask(idx, &[b"CLUSTER", b"SLOTS"]).await?;
                Topology::from_slots(&reply, &host).ok()
            }
            Err(e) => {
                tracing::warn!(pool = %sh.config.name, node = %sh.servers[idx].label(), error = %e,
                    "cluster node gave no slot map");
                None
            }
        }
    }

    /// One request to server `idx` on its first shared connection, its
    /// reply parsed; `None` on any failure or after [`REFRESH_TIMEOUT`].
    async fn ask(&self, idx: usize, args: &[&'static [u8]]) -> Option<resp::Reply> {
        let req = resp::Request::from_args(args.iter().map(|a| Bytes::from_static(a)));
        let (tx, rx) = oneshot::channel();
        let conn = self.inner.conn(idx, 0, false)?;
        self.inner
            .send_on(
                conn,
                idx,
                req.wire().clone(),
                Some(Expect::Resp),
                Some(ReplyTx::Oneshot(tx)),
            )
            .ok()?;
        match tokio::time::timeout(REFRESH_TIMEOUT, rx).await {
            Ok(Ok(Ok(Frame::Resp(f)))) => Some(f.parse()),
            _ => None,
        }
    }

    /// Close the shared connections of server `idx` (a node that left):
    /// their tasks wait for a next request, which would reconnect.
    fn disconnect(&self, idx: usize) {
        for tx in self.inner.server_conns(idx) {
            let _ = tx.send(Msg::Disconnect);
        }
    }

    /// The server a shard channel (`SSUBSCRIBE`) lives on: its slot's
    /// node in a cluster pool, else where the ring puts it.
    pub(crate) fn locate_shard_channel(&self, channel: &[u8]) -> Option<usize> {
        match self.inner.shared.cluster.as_deref() {
            Some(c) => c.map.load().owner(crate::cluster::key_slot(channel)),
            None => self.inner.shared.ring.load().locate(channel),
        }
    }

    /// Server `idx`'s name as the stats show it (a cluster node's
    /// `host:port`).
    pub(crate) fn server_label(&self, idx: usize) -> String {
        self.inner
            .shared
            .servers
            .get(idx)
            .map_or_else(|| idx.to_string(), |s| s.label().to_string())
    }

    /// Counters of a cluster pool (`None` for a static pool).
    pub fn cluster_counters(&self) -> Option<&ClusterCounters> {
        self.inner.shared.cluster.as_deref().map(|c| &c.counters)
    }

    /// A cluster pool: the hash slot of `key` and the `host:port` of the
    /// node serving it now, by the current map (`None` for the node when
    /// no node serves the slot). `None` for a static pool.
    pub fn cluster_locate(&self, key: &[u8]) -> Option<(u16, Option<String>)> {
        let cluster = self.inner.shared.cluster.as_deref()?;
        let slot = crate::cluster::key_slot(key);
        let node = cluster
            .map
            .load()
            .owner(slot)
            .and_then(|i| self.inner.shared.servers.get(i))
            .map(|s| s.label().to_string());
        Some((slot, node))
    }

    /// A cluster pool: wait until the slot map has been read from the
    /// cluster (at once when it has), at most `wait`. `false` if it was
    /// not read in time, or for a static pool.
    pub async fn cluster_ready(&self, wait: Duration) -> bool {
        let Some(cluster) = self.inner.shared.cluster.as_deref() else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if cluster.counters.refreshes.load(Relaxed) > 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            cluster.refresh_soon();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A redirection named a node the pool has no entry left for: say so (at
/// most once a second), since every request for its slots now fails.
fn table_full(sh: &super::PoolShared, addr: &str) {
    if sh.local_failure_log_due() {
        tracing::warn!(pool = %sh.config.name, node = addr,
            max_nodes = sh.servers.len(), "cluster node not followed: cluster_max_nodes is used up (raise it)");
    }
}

/// Keep a cluster pool's slot map current: read it at start, every
/// `every`, and soon after a redirection or a failed node asked for it
/// ([`ClusterState::refresh_soon`]), at most once per
/// [`MIN_REFRESH_GAP`]. Holds the pool weakly: it ends once the pool is
/// dropped or closed.
pub(super) async fn refresh_loop(pool: Weak<Handles>, cluster: Arc<ClusterState>, every: Duration) {
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                () = cluster.refresh_now.notified() => {}
                () = tokio::time::sleep(every) => {}
            }
        }
        first = false;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let pool_now = Pool { inner };
        if pool_now.is_closed() {
            return;
        }
        let ok = pool_now.refresh_cluster_map().await;
        if !ok && pool_now.inner.shared.local_failure_log_due() {
            tracing::warn!(pool = %pool_now.name(), "no cluster node answered CLUSTER SHARDS; keeping the last slot map");
        }
        drop(pool_now);
        tokio::time::sleep(MIN_REFRESH_GAP).await;
    }
}

/// A cluster pool's counters for the stats port (nothing for a static
/// pool).
pub(super) fn fields(cluster: Option<&ClusterState>) -> Vec<(&'static str, i64)> {
    let Some(c) = cluster else {
        return Vec::new();
    };
    let n = |a: &AtomicU64| i64::try_from(a.load(Relaxed)).unwrap_or(i64::MAX);
    let k = &c.counters;
    vec![
        ("cluster_moved", n(&k.moved)),
        ("cluster_ask", n(&k.ask)),
        ("cluster_tryagain", n(&k.tryagain)),
        ("cluster_redirect_failed", n(&k.redirect_failed)),
        ("cluster_refreshes", n(&k.refreshes)),
        ("cluster_refresh_failed", n(&k.refresh_failed)),
        ("cluster_nodes", c.known() as i64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_node_takes_the_entry_of_one_that_left() {
        let none = |_: usize| false;
        // Entries 0-1 are seeds; 2 was absent from two reads, 3 from one.
        let absent = [5, 5, 2, 1];
        assert_eq!(reusable_entry(&absent, 2, none), Some(2));
        // A seed is never given away, however long it was absent.
        assert_eq!(reusable_entry(&absent, 3, none), None);
        // Not while a connection to it is open.
        assert_eq!(reusable_entry(&absent, 2, |i| i == 2), None);
        // Present, or absent once: kept.
        assert_eq!(reusable_entry(&[0, 0, 0, 1], 1, none), None);
        assert_eq!(reusable_entry(&[0, REUSE_AFTER_READS, 0], 1, none), Some(1));
    }
}
