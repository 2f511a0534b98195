//! The slot map: which node (by the pool's server index) serves each of
//! the 16384 hash slots now.

use super::{key_slot, Topology, SLOTS};
use crate::config::ReadFrom;
use crate::pool::route::{Failure, Placement};

/// No node serves the slot.
const NONE: u16 = u16::MAX;

/// An immutable snapshot of a cluster's slot map, as server indexes of the
/// pool: a new one is built and swapped in on every change, so routing
/// reads it without a lock. Cloning copies 32 KiB: done per change, never
/// per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// `owner[slot]`: the server index, or [`NONE`].
    owner: Box<[u16]>,
    /// `replica[slot]`: the server index of the replica reads of the slot
    /// go to (the shard's online replicas taken in turn by slot), or
    /// [`NONE`].
    replica: Box<[u16]>,
    /// Where read-only commands go (`read_from`).
    read_from: ReadFrom,
    /// Per server index: a master serving at least one slot.
    live: Box<[bool]>,
    live_count: usize,
}

impl SlotMap {
    /// Every slot on server `idx` (of `servers`): the map before the
    /// cluster has been asked, so that the first requests reach a node,
    /// which redirects them (`-MOVED`) until the real map is read.
    pub fn all_on(idx: u16, servers: usize) -> SlotMap {
        let mut live = vec![false; servers].into_boxed_slice();
        if let Some(l) = live.get_mut(usize::from(idx)) {
            *l = true;
        }
        SlotMap {
            owner: vec![idx; SLOTS].into_boxed_slice(),
            replica: vec![NONE; SLOTS].into_boxed_slice(),
            read_from: ReadFrom::Master,
            live,
            live_count: 1,
        }
    }

    /// The map of `topology`, each node's address turned into its server
    /// index by `index_of` (`None`: the pool has no room for that node; a
    /// master's slots then stay unserved). Replicas are looked up only
    /// when `read_from` reads from them.
    pub fn from_topology(
        topology: &Topology,
        servers: usize,
        read_from: ReadFrom,
        mut index_of: impl FnMut(&str) -> Option<u16>,
    ) -> SlotMap {
        let mut owner = vec![NONE; SLOTS].into_boxed_slice();
        let mut replica = vec![NONE; SLOTS].into_boxed_slice();
        let mut live = vec![false; servers].into_boxed_slice();
        let fits = |i: &u16| usize::from(*i) < servers;
        for shard in &topology.shards {
            let Some(idx) = index_of(&shard.master).filter(fits) else {
                continue;
            };
            let replicas: Vec<u16> = match read_from {
                ReadFrom::Master => Vec::new(),
                _ => shard
                    .replicas
                    .iter()
                    .filter_map(|r| index_of(r).filter(fits))
                    .collect(),
            };
            live[usize::from(idx)] = true;
            for &(a, b) in &shard.ranges {
                for slot in a..=b {
                    owner[usize::from(slot)] = idx;
                    if !replicas.is_empty() {
                        replica[usize::from(slot)] = replicas[usize::from(slot) % replicas.len()];
                    }
                }
            }
        }
        let live_count = live.iter().filter(|l| **l).count();
        SlotMap {
            owner,
            replica,
            read_from,
            live,
            live_count,
        }
    }

    /// This map with `slot` on server `idx` (what a `-MOVED` says); `None`
    /// when the map says so already.
    pub fn with_moved(&self, slot: u16, idx: u16) -> Option<SlotMap> {
        let at = usize::from(slot);
        if self.owner.get(at) == Some(&idx) || usize::from(idx) >= self.live.len() {
            return None;
        }
        let mut next = self.clone();
        next.owner[at] = idx;
        // Its replicas are not known until the next full read: reads go
        // to the new owner meanwhile.
        next.replica[at] = NONE;
        // The previous owner may have lost its last slot: it stays live
        // until the next full refresh says otherwise (fan-outs to it are
        // harmless: it answers for no key).
        if !next.live[usize::from(idx)] {
            next.live[usize::from(idx)] = true;
            next.live_count += 1;
        }
        Some(next)
    }

    /// The server index serving `slot`, if any.
    #[inline]
    pub fn owner(&self, slot: u16) -> Option<usize> {
        match self.owner.get(usize::from(slot)) {
            Some(&NONE) | None => None,
            Some(&i) => Some(usize::from(i)),
        }
    }

    /// The server indexes of the masters serving slots, ascending.
    pub fn masters(&self) -> impl Iterator<Item = usize> + '_ {
        self.live
            .iter()
            .enumerate()
            .filter(|(_, l)| **l)
            .map(|(i, _)| i)
    }
}

impl Placement for SlotMap {
    #[inline]
    fn locate(&self, key: &[u8]) -> Option<usize> {
        self.owner(key_slot(key))
    }
    #[inline]
    fn group(&self, key: &[u8]) -> Option<u32> {
        let slot = key_slot(key);
        self.owner(slot).map(|_| u32::from(slot))
    }
    #[inline]
    fn locate_read(&self, key: &[u8]) -> Option<usize> {
        let slot = key_slot(key);
        let replica = match self.replica.get(usize::from(slot)) {
            Some(&NONE) | None => None,
            Some(&i) => Some(usize::from(i)),
        };
        match self.read_from {
            ReadFrom::Master => self.owner(slot),
            ReadFrom::PreferReplica => replica.or_else(|| self.owner(slot)),
            ReadFrom::Replica => replica,
        }
    }
    fn server_count(&self) -> usize {
        self.live.len()
    }
    fn is_live(&self, idx: usize) -> bool {
        self.live.get(idx).copied().unwrap_or(false)
    }
    fn live_count(&self) -> usize {
        self.live_count
    }
    fn cross_slot(&self) -> Failure {
        Failure::CrossSlotCluster
    }
    fn unplaced(&self) -> Failure {
        Failure::SlotUnserved
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use twem_proto::resp;

    use super::*;
    use crate::cluster::Shard;
    use crate::pool::route::{plan_redis, plan_redis_with, MergePolicy, Plan, PlanOptions};

    /// Three masters at indexes 0, 1, 2 with Redis's default split.
    fn three() -> SlotMap {
        let t = Topology {
            shards: vec![
                Shard {
                    ranges: vec![(0, 5460)],
                    master: "a:1".into(),
                    replicas: vec![],
                },
                Shard {
                    ranges: vec![(5461, 10922)],
                    master: "b:1".into(),
                    replicas: vec![],
                },
                Shard {
                    ranges: vec![(10923, 16383)],
                    master: "c:1".into(),
                    replicas: vec![],
                },
            ],
        };
        SlotMap::from_topology(&t, 8, ReadFrom::Master, |a| match a {
            "a:1" => Some(0),
            "b:1" => Some(1),
            "c:1" => Some(2),
            _ => None,
        })
    }

    fn req(args: &[&str]) -> resp::Request {
        resp::Request::from_args(args.iter().map(|a| Bytes::from(a.to_string())))
    }

    fn plan(m: &SlotMap, args: &[&str]) -> Plan {
        plan_redis_with(&req(args), m, PlanOptions::default()).plan
    }

    #[test]
    fn keys_go_to_their_slots_owner() {
        let m = three();
        assert_eq!(m.locate(b"foo"), Some(2)); // slot 12182
        assert_eq!(m.locate(b"bar"), Some(0)); // slot 5061
        assert_eq!(m.live_count(), 3);
        assert_eq!(m.masters().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(matches!(
            plan(&m, &["GET", "foo"]),
            Plan::One { server: 2, .. }
        ));
    }

    // Two keys on one node but in two slots are two parts, as a cluster
    // client must send them: each part must be one slot.
    #[test]
    fn multi_key_commands_split_by_slot_not_by_node() {
        let m = three();
        // "bar" (5061) and "b" (3300) are both on node 0, different slots.
        assert_eq!(m.locate(b"b"), Some(0));
        match plan(&m, &["MGET", "bar", "foo", "b", "{bar}x"]) {
            Plan::Split(s) => {
                let servers: Vec<usize> = s.parts.iter().map(|p| p.0).collect();
                assert_eq!(servers, vec![0, 2, 0]);
                assert_eq!(s.part_of, vec![0, 1, 2, 0]);
                assert_eq!(s.merge, MergePolicy::Mget);
                assert_eq!(s.parts[0].1, req(&["MGET", "bar", "{bar}x"]).wire().clone());
            }
            other => panic!("{other:?}"),
        }
        // One slot: forwarded whole.
        assert!(matches!(
            plan(&m, &["MSET", "{t}a", "1", "{t}b", "2"]),
            Plan::One { .. }
        ));
    }

    #[test]
    fn same_slot_commands_are_forwarded_or_crossslot() {
        let m = three();
        assert!(matches!(
            plan(&m, &["RPOPLPUSH", "{q}a", "{q}b"]),
            Plan::One { .. }
        ));
        // Same node, different slots: still refused, in Redis's words.
        let p = plan(&m, &["RPOPLPUSH", "bar", "b"]);
        assert_eq!(p, Plan::Fail(Failure::CrossSlotCluster));
        assert_eq!(
            Failure::CrossSlotCluster.to_string(),
            "CROSSSLOT Keys in request don't hash to the same slot"
        );
        // The ring's planner keeps twem's wording for static pools.
        let ring = crate::ring::Ring::new(
            vec![crate::ring::RingServer::new("a", 1)],
            crate::hash::HashKind::Fnv1a_64,
            crate::ring::Distribution::Ketama,
            None,
        )
        .expect("ring");
        assert!(matches!(
            plan_redis(&req(&["RPOPLPUSH", "bar", "b"]), &ring).plan,
            Plan::One { .. }
        ));
    }

    #[test]
    fn unserved_slots_fail_as_clusterdown() {
        let t = Topology {
            shards: vec![Shard {
                ranges: vec![(0, 100)],
                master: "a:1".into(),
                replicas: vec![],
            }],
        };
        let m = SlotMap::from_topology(&t, 4, ReadFrom::Master, |_| Some(0));
        assert_eq!(plan(&m, &["GET", "foo"]), Plan::Fail(Failure::SlotUnserved));
        assert_eq!(
            plan(&m, &["MGET", "foo", "bar"]),
            Plan::Fail(Failure::SlotUnserved)
        );
    }

    #[test]
    fn fan_outs_and_scan_visit_masters() {
        let m = three();
        match plan(&m, &["DBSIZE"]) {
            Plan::Split(s) => {
                let servers: Vec<usize> = s.parts.iter().map(|p| p.0).collect();
                assert_eq!(servers, vec![0, 1, 2]);
            }
            other => panic!("{other:?}"),
        }
        match plan(&m, &["SCAN", "0"]) {
            Plan::Split(s) => {
                assert_eq!(
                    s.merge,
                    MergePolicy::Scan {
                        server: 0,
                        next: Some(1)
                    }
                )
            }
            other => panic!("{other:?}"),
        }
    }

    /// Two shards with replicas, the second with two.
    fn with_replicas(read_from: ReadFrom) -> SlotMap {
        let t = Topology {
            shards: vec![
                Shard {
                    ranges: vec![(0, 8191)],
                    master: "a:1".into(),
                    replicas: vec!["a:2".into()],
                },
                Shard {
                    ranges: vec![(8192, 16383)],
                    master: "b:1".into(),
                    replicas: vec!["b:2".into(), "b:3".into()],
                },
            ],
        };
        SlotMap::from_topology(&t, 8, read_from, |a| match a {
            "a:1" => Some(0),
            "b:1" => Some(1),
            "a:2" => Some(2),
            "b:2" => Some(3),
            "b:3" => Some(4),
            _ => None,
        })
    }

    // read_from: reads of one key (and MGET's parts) go to a replica of
    // their slot; writes, and every read of a transaction's planning
    // (replica_reads off), to the master.
    #[test]
    fn reads_go_to_replicas_by_policy() {
        let read = PlanOptions {
            replica_reads: true,
            ..PlanOptions::default()
        };
        let m = with_replicas(ReadFrom::PreferReplica);
        // "bar" is slot 5061 (shard a), "foo" 12182 (shard b: 12182 is even).
        let at = |args: &[&str], o| match plan_redis_with(&req(args), &m, o).plan {
            Plan::One { server, .. } => server,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(&["GET", "bar"], read), 2);
        assert_eq!(at(&["GET", "foo"], read), 3);
        assert_eq!(at(&["GET", "foo"], PlanOptions::default()), 1);
        assert_eq!(at(&["SET", "foo", "1"], read), 1);
        assert_eq!(at(&["INCR", "bar"], read), 0);
        match plan_redis_with(&req(&["MGET", "bar", "foo"]), &m, read).plan {
            Plan::Split(s) => {
                assert_eq!(s.parts.iter().map(|p| p.0).collect::<Vec<_>>(), vec![2, 3])
            }
            other => panic!("{other:?}"),
        }
        match plan_redis_with(&req(&["DEL", "bar", "foo"]), &m, read).plan {
            Plan::Split(s) => {
                assert_eq!(s.parts.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1])
            }
            other => panic!("{other:?}"),
        }
        // The masters alone are live: fan-outs and SCAN skip replicas.
        assert_eq!(m.live_count(), 2);
        // A moved slot reads from its new owner until the next full read.
        let moved = m.with_moved(12182, 0).expect("changed");
        assert_eq!(moved.locate_read(b"foo"), Some(0));
        // master: replicas are not even looked up.
        assert_eq!(with_replicas(ReadFrom::Master).locate_read(b"foo"), Some(1));
        // replica only: no replica, no read.
        let t = Topology {
            shards: vec![Shard {
                ranges: vec![(0, 16383)],
                master: "a:1".into(),
                replicas: vec![],
            }],
        };
        let lone = SlotMap::from_topology(&t, 4, ReadFrom::Replica, |_| Some(0));
        assert_eq!(lone.locate_read(b"foo"), None);
        assert_eq!(
            plan_redis_with(&req(&["GET", "foo"]), &lone, read).plan,
            Plan::Fail(Failure::SlotUnserved)
        );
        let prefer = SlotMap::from_topology(&t, 4, ReadFrom::PreferReplica, |_| Some(0));
        assert_eq!(prefer.locate_read(b"foo"), Some(0));
    }

    #[test]
    fn moved_updates_one_slot() {
        let m = three();
        assert_eq!(m.with_moved(12182, 2), None);
        let next = m.with_moved(12182, 5).expect("changed");
        assert_eq!(next.locate(b"foo"), Some(5));
        assert!(next.is_live(5));
        assert_eq!(next.live_count(), 4);
        assert_eq!(next.owner(12181), Some(2));
        // An index past the pool's table is not taken.
        assert_eq!(m.with_moved(1, 8), None);
        let first = SlotMap::all_on(0, 4);
        assert_eq!(first.locate(b"anything"), Some(0));
        assert_eq!(first.live_count(), 1);
    }
}
