//! Reads from replicas (`read_from`): each server's replicas (from the
//! sentinels, or the `replicas` key) sit in a fixed number of slots
//! ([`MAX_REPLICAS`]), each with its address (a watch its connections
//! follow, as a master's), its health and its read count. A task checks
//! every occupied slot every [`CHECK_INTERVAL`] (connect with the pool's
//! handshake, `INFO replication`): a replica is read from only while it
//! answers, says `role:slave` and `master_link_status:up`. A failed
//! connection to it takes it out at once, until the next check passes.
//!
//! Which slot a read goes to is [`read_target`], a pure function.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::backend::{self, Expect, Lane};
use super::PoolShared;
use crate::config::{ReadFrom, ServerAddr, MAX_REPLICAS};

/// How often every replica is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// The bound on one check (connect, handshake, `INFO replication`).
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// One replica slot of a server.
#[derive(Debug)]
pub(crate) struct ReplicaSlot {
    /// The replica in this slot, if any; its connections follow changes.
    pub addr: watch::Sender<Option<Arc<ServerAddr>>>,
    /// Whether reads may go to it now.
    pub healthy: AtomicBool,
    /// Reads sent to it.
    pub reads: AtomicU64,
}

impl ReplicaSlot {
    fn new(addr: Option<ServerAddr>) -> ReplicaSlot {
        ReplicaSlot {
            addr: watch::Sender::new(addr.map(Arc::new)),
            healthy: AtomicBool::new(false),
            reads: AtomicU64::new(0),
        }
    }

    /// The slots of a server: `addrs` first, the rest empty.
    pub(crate) fn slots(addrs: &[ServerAddr]) -> Box<[ReplicaSlot]> {
        (0..MAX_REPLICAS)
            .map(|i| ReplicaSlot::new(addrs.get(i).cloned()))
            .collect()
    }
}

/// Where one read-only command goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadTarget {
    /// The server's master.
    Master,
    /// Replica slot `.0` of the server.
    Replica(usize),
    /// `read_from: replica` and no healthy replica: the read fails.
    NoReplica,
}

/// Where a command goes under `read_from`, given whether a replica may
/// answer it and which of the server's replica slots are healthy. `hint`
/// (the client) picks among the healthy ones, so one client's reads stay
/// on one replica while the set is unchanged.
pub fn read_target(
    read_from: ReadFrom,
    replica_ok: bool,
    healthy: impl Iterator<Item = bool> + Clone,
    hint: usize,
) -> ReadTarget {
    if read_from == ReadFrom::Master || !replica_ok {
        return ReadTarget::Master;
    }
    let n = healthy.clone().filter(|h| *h).count();
    if n == 0 {
        return match read_from {
            ReadFrom::Replica => ReadTarget::NoReplica,
            _ => ReadTarget::Master,
        };
    }
    let pick = hint % n;
    healthy
        .enumerate()
        .filter(|(_, h)| *h)
        .nth(pick)
        .map_or(ReadTarget::Master, |(i, _)| ReadTarget::Replica(i))
}

/// The slots' new contents when the replicas are `wanted`: a replica that
/// stays keeps its slot (its connections live on), one that left frees
/// its slot, a new one takes the first free slot; past [`MAX_REPLICAS`]
/// the rest are left out.
pub fn assign_slots(
    current: &[Option<ServerAddr>],
    wanted: &[ServerAddr],
) -> Vec<Option<ServerAddr>> {
    let mut next: Vec<Option<ServerAddr>> = current
        .iter()
        .map(|c| c.clone().filter(|a| wanted.contains(a)))
        .collect();
    for w in wanted {
        if next.iter().any(|n| n.as_ref() == Some(w)) {
            continue;
        }
        if let Some(free) = next.iter_mut().find(|n| n.is_none()) {
            *free = Some(w.clone());
        }
    }
    next
}

/// Whether an `INFO replication` reply says the node is a replica whose
/// link to its master is up (a replica whose link is down serves stale
/// data, or refuses reads with `replica-serve-stale-data no`).
pub fn replica_ready(info: &[u8]) -> bool {
    let text = String::from_utf8_lossy(info);
    let mut role = false;
    let mut link = false;
    for line in text.lines() {
        match line.trim_end().split_once(':') {
            Some(("role", "slave")) => role = true,
            Some(("master_link_status", "up")) => link = true,
            _ => {}
        }
    }
    role && link
}

impl PoolShared {
    /// Put `wanted` (the sentinels' list) into server `idx`'s replica
    /// slots; connections of a slot whose replica changed close.
    pub(crate) fn set_replicas(&self, idx: usize, wanted: &[ServerAddr]) {
        let slots = &self.servers[idx].replicas;
        let current: Vec<Option<ServerAddr>> = slots
            .iter()
            .map(|s| s.addr.borrow().as_deref().cloned())
            .collect();
        let next = assign_slots(&current, wanted);
        for ((slot, old), new) in slots.iter().zip(&current).zip(next) {
            if *old != new {
                slot.healthy.store(false, Release);
                if let Some(a) = &new {
                    tracing::info!(pool = %self.config.name, server = %self.servers[idx].name,
                        replica = %a, "replica added");
                }
                slot.addr.send_replace(new.map(Arc::new));
            }
        }
    }

    /// A connection to replica slot `r` of server `idx` failed: no reads go
    /// there until a check passes again.
    pub(crate) fn replica_failed(&self, idx: usize, r: usize) {
        if let Some(slot) = self.servers[idx].replicas.get(r) {
            if slot.healthy.swap(false, Release) {
                tracing::warn!(pool = %self.config.name, server = %self.servers[idx].name,
                    replica = %slot.addr.borrow().as_deref().map(ToString::to_string).unwrap_or_default(),
                    "replica failed; not read from until it checks healthy");
            }
        }
    }

    /// Check every replica slot of every server once, all at once (a
    /// replica that hangs costs the round [`CHECK_TIMEOUT`], not one each).
    async fn check_replicas(self: &Arc<Self>) {
        let mut checks = tokio::task::JoinSet::new();
        for (idx, server) in self.servers.iter().enumerate() {
            for (r, slot) in server.replicas.iter().enumerate() {
                let Some(addr) = slot.addr.borrow().clone() else {
                    continue;
                };
                let me = Arc::clone(self);
                let check = async move {
                    let ok = tokio::time::timeout(CHECK_TIMEOUT, me.check_one(idx, r, &addr))
                        .await
                        .unwrap_or(false);
                    (idx, r, addr, ok)
                };
                // In the checks' own span (pool), as every spawned task.
                checks.spawn(tracing::Instrument::instrument(
                    check,
                    tracing::Span::current(),
                ));
            }
        }
        while let Some(done) = checks.join_next().await {
            let Ok((idx, r, addr, ok)) = done else {
                continue;
            };
            let server = &self.servers[idx];
            let slot = &server.replicas[r];
            // The slot may have changed hands meanwhile.
            if slot.addr.borrow().as_ref() != Some(&addr) {
                continue;
            }
            if slot.healthy.swap(ok, Release) != ok {
                let state = if ok {
                    "healthy: read from"
                } else {
                    "unhealthy (down, or its link to the master is down): not read from"
                };
                tracing::warn!(pool = %self.config.name, server = %server.name,
                    replica = %addr, "replica {state}");
            }
        }
    }

    /// One check: connect with the pool's handshake and ask `INFO
    /// replication`.
    async fn check_one(&self, idx: usize, r: usize, addr: &ServerAddr) -> bool {
        let lane = Lane {
            replica: Some(r as u8),
            ..Lane::default()
        };
        let Ok(mut conn) = backend::connect_to(self, idx, lane, addr).await else {
            return false;
        };
        let wire = Bytes::from_static(b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n");
        match conn.query(&wire, Expect::Resp).await {
            Ok(frame) => replica_ready(frame.raw()),
            Err(_) => false,
        }
    }
}

/// Check the replicas of `shared`'s pool every [`CHECK_INTERVAL`], until
/// the pool closes. Nothing for a pool that reads from masters only.
pub(crate) fn start_checks(shared: &Arc<PoolShared>) {
    if shared.config.read_from == ReadFrom::Master {
        return;
    }
    let pool: Weak<PoolShared> = Arc::downgrade(shared);
    let span = tracing::info_span!(parent: None, "replica_checks", pool = %shared.config.name);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            loop {
                let Some(p) = pool.upgrade().filter(|p| !p.closed.load(Acquire)) else {
                    return;
                };
                p.check_replicas().await;
                drop(p);
                tokio::time::sleep(CHECK_INTERVAL).await;
            }
        },
        span,
    ));
}

/// Count a read sent to replica slot `r` of a server.
pub(crate) fn count_read(slot: &ReplicaSlot) {
    slot.reads.fetch_add(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> ServerAddr {
        ServerAddr::loopback(port)
    }

    #[test]
    fn targets() {
        let h = |v: &'static [bool]| v.iter().copied();
        use ReadFrom::*;
        assert_eq!(read_target(Master, true, h(&[true]), 0), ReadTarget::Master);
        assert_eq!(
            read_target(PreferReplica, false, h(&[true]), 0),
            ReadTarget::Master
        );
        assert_eq!(
            read_target(Replica, false, h(&[true]), 0),
            ReadTarget::Master
        );
        assert_eq!(
            read_target(PreferReplica, true, h(&[false, false]), 0),
            ReadTarget::Master
        );
        assert_eq!(
            read_target(Replica, true, h(&[false, false]), 0),
            ReadTarget::NoReplica
        );
        // Spread by client over the healthy slots only.
        let healthy = h(&[false, true, false, true]);
        assert_eq!(
            read_target(PreferReplica, true, healthy.clone(), 0),
            ReadTarget::Replica(1)
        );
        assert_eq!(
            read_target(PreferReplica, true, healthy.clone(), 1),
            ReadTarget::Replica(3)
        );
        assert_eq!(
            read_target(Replica, true, healthy, 2),
            ReadTarget::Replica(1)
        );
    }

    #[test]
    fn slots_keep_their_replica() {
        let current = vec![Some(addr(1)), None, Some(addr(3))];
        assert_eq!(
            assign_slots(&current, &[addr(3), addr(4)]),
            vec![Some(addr(4)), None, Some(addr(3))]
        );
        assert_eq!(assign_slots(&current, &[]), vec![None, None, None]);
        assert_eq!(
            assign_slots(&[None], &[addr(1), addr(2)]),
            vec![Some(addr(1))],
            "past the slots, the rest are left out"
        );
    }

    #[test]
    fn ready_replicas() {
        let up = b"$80\r\n# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_link_status:up\r\n";
        assert!(replica_ready(up));
        let down = b"# Replication\r\nrole:slave\r\nmaster_link_status:down\r\n";
        assert!(!replica_ready(down));
        assert!(!replica_ready(
            b"# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
        ));
        assert!(!replica_ready(b"-NOAUTH Authentication required.\r\n"));
    }
}
