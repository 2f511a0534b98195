//! Redis Cluster as a pool's backend: hash slots, the slot map and the
//! redirections a cluster answers with, as data and pure functions.
//!
//! A pool with `cluster: true` places keys by the cluster's own rules, not
//! nutcracker's: a key's hash slot is CRC16 (XMODEM) of the key, or of its
//! `{tag}`, modulo 16384 ([`key_slot`]); the node that owns the slot now is
//! read from a [`SlotMap`], an immutable snapshot swapped atomically like
//! the ring. The map is built from `CLUSTER SHARDS` (or `CLUSTER SLOTS` on
//! servers older than 7.0) by [`Topology::from_shards`] /
//! [`Topology::from_slots`], kept current by the pool (`pool/cluster.rs`:
//! periodic refresh, a refresh after a `-MOVED` or a failed node) and
//! corrected at once by a `-MOVED` ([`Redirect`]).
//!
//! The planner (`pool/route.rs`) sees the map through
//! [`Placement`](crate::pool::route::Placement): a multi-key command is
//! split by slot, not by node, as a cluster client must (a slot may move
//! between two requests), and a command whose keys must share a slot is
//! refused with Redis's own `-CROSSSLOT` when they don't.

mod map;
mod topology;

pub use map::SlotMap;
pub use topology::{Shard, Topology, TopologyError};

use crate::hash::{HashKind, HashTag};

/// Hash slots of a Redis Cluster.
pub const SLOTS: usize = 16384;

/// Redirections one request may follow (`-MOVED`, `-ASK`, `-TRYAGAIN`)
/// before the last error reply goes to its client: a slot that moves
/// again and again means a cluster in trouble, and the client should know.
pub const MAX_REDIRECTS: u8 = 5;

/// The hash slot of `key`, as Redis Cluster computes it: CRC16 (XMODEM)
/// of the part between the first `{` and the first `}` after it when that
/// part is not empty, else of the whole key, modulo 16384.
#[inline]
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = HashTag::new(b'{', b'}').apply(key);
    // `HashKind::Crc16` keeps nutcracker's unmasked 32-bit state; its low
    // 16 bits are the XMODEM CRC, and 16384 divides 65536.
    (HashKind::Crc16.hash(hashed) & 0x3fff) as u16
}

/// What a cluster's error reply asks of the client, when it is a
/// redirection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `-MOVED <slot> <host>:<port>`: the slot lives there now, for good.
    Moved {
        /// The slot.
        slot: u16,
        /// `host:port` of the node that owns it.
        addr: String,
    },
    /// `-ASK <slot> <host>:<port>`: the slot is migrating and this key is
    /// there already: send `ASKING` and the command there, once.
    Ask {
        /// The slot.
        slot: u16,
        /// `host:port` of the node the slot is migrating to.
        addr: String,
    },
    /// `-TRYAGAIN ...`: a multi-key command during a slot's migration,
    /// some keys moved and some not: try again a little later.
    TryAgain,
}

impl Redirect {
    /// The redirection an error reply (`raw`: its bytes as the server sent
    /// them, `-...\r\n`) stands for, if it is one.
    pub fn parse(raw: &[u8]) -> Option<Redirect> {
        let line = raw.strip_prefix(b"-")?;
        let line = line.strip_suffix(b"\r\n").unwrap_or(line);
        if line.starts_with(b"TRYAGAIN") {
            return Some(Redirect::TryAgain);
        }
        let text = std::str::from_utf8(line).ok()?;
        let mut words = text.split(' ');
        let kind = words.next()?;
        let slot: u16 = words
            .next()?
            .parse()
            .ok()
            .filter(|s| usize::from(*s) < SLOTS)?;
        let addr = words.next()?;
        if words.next().is_some() || !addr.contains(':') {
            return None;
        }
        let addr = normalize_addr(addr)?;
        match kind {
            "MOVED" => Some(Redirect::Moved { slot, addr }),
            "ASK" => Some(Redirect::Ask { slot, addr }),
            _ => None,
        }
    }

    /// What the replies to a transaction's queued commands ask of the
    /// transaction as a whole. Each reply comes with whether its command
    /// has keys, and the redirection it is, if any. A refused queued
    /// command makes Redis abort `EXEC` (nothing applied), so the whole
    /// transaction can be sent again:
    /// - a `-MOVED` anywhere: the slot lives elsewhere now, go there;
    /// - a `-TRYAGAIN`: wait, send again to the same node;
    /// - `-ASK` for every command that has keys: none of its keys are on
    ///   the old owner any more, so the importing node (after `ASKING`,
    ///   which Redis keeps for a whole `MULTI`) has all of them;
    /// - `-ASK` for some keyed commands only: the keys are split by the
    ///   migration and no node can run the transaction now: wait, as for
    ///   `-TRYAGAIN`, until the slot has moved.
    ///
    /// `None`: no redirection, the transaction ran (or failed on its own).
    pub fn for_transaction<I>(replies: I) -> Option<Redirect>
    where
        I: IntoIterator<Item = (bool, Option<Redirect>)>,
    {
        let mut ask = None;
        let mut every_keyed_asked = true;
        let mut wait = false;
        for (keyed, redirect) in replies {
            match redirect {
                Some(moved @ Redirect::Moved { .. }) => return Some(moved),
                Some(Redirect::TryAgain) => wait = true,
                Some(a @ Redirect::Ask { .. }) => {
                    ask.get_or_insert(a);
                }
                None => every_keyed_asked &= !keyed,
            }
        }
        if wait || (ask.is_some() && !every_keyed_asked) {
            return Some(Redirect::TryAgain);
        }
        ask
    }
}

/// `host:port` with a port that is a number, IPv6 hosts in brackets
/// (`[::1]:7000`, as nutcracker's server entries write them); `None` for
/// anything else. A cluster names a node `:port` when it does not know its
/// own address (Redis answers `-MOVED 1 :7001` before `cluster-announce-ip`
/// is learned); such a name cannot be connected to and is refused.
pub(crate) fn normalize_addr(addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Redis's own values (`CLUSTER KEYSLOT`), taken from redis-server 7.0:
    // the e2e test checks a thousand more against a live cluster.
    #[test]
    fn key_slots_are_redis_cluster_slots() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b""), 0);
        // Hash tags: the first `{...}` with something inside.
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn a_transaction_follows_what_its_replies_agree_on() {
        let moved = Some(Redirect::Moved {
            slot: 7,
            addr: "127.0.0.1:7001".into(),
        });
        let ask = Some(Redirect::Ask {
            slot: 7,
            addr: "127.0.0.1:7002".into(),
        });
        let again = Some(Redirect::TryAgain);
        let t = |r: &[(bool, Option<Redirect>)]| Redirect::for_transaction(r.iter().cloned());
        // Nothing redirected: the transaction ran.
        assert_eq!(t(&[]), None);
        assert_eq!(t(&[(true, None), (false, None)]), None);
        // MOVED wins over everything, wherever it is.
        assert_eq!(t(&[(true, None), (true, moved.clone())]), moved);
        assert_eq!(t(&[(true, ask.clone()), (true, moved.clone())]), moved);
        assert_eq!(t(&[(true, again.clone()), (true, moved.clone())]), moved);
        // Every keyed command asked (keyless ones queued): follow the ASK.
        assert_eq!(
            t(&[(false, None), (true, ask.clone()), (true, ask.clone())]),
            ask
        );
        // Keys on both sides of a migration, or a TRYAGAIN: wait.
        assert_eq!(t(&[(true, None), (true, ask.clone())]), again);
        assert_eq!(t(&[(true, ask.clone()), (true, None)]), again);
        assert_eq!(t(&[(true, ask), (true, again.clone())]), again);
        assert_eq!(t(&[(true, again.clone())]), again);
    }

    #[test]
    fn redirections_are_parsed() {
        let moved = |slot, addr: &str| Redirect::Moved {
            slot,
            addr: addr.into(),
        };
        let ask = |slot, addr: &str| Redirect::Ask {
            slot,
            addr: addr.into(),
        };
        for (reply, want) in [
            (
                &b"-MOVED 3999 127.0.0.1:6381\r\n"[..],
                moved(3999, "127.0.0.1:6381"),
            ),
            (b"-ASK 16383 [::1]:7000\r\n", ask(16383, "[::1]:7000")),
            (b"-ASK 1 ::1:7000\r\n", ask(1, "[::1]:7000")),
        ] {
            assert_eq!(Redirect::parse(reply), Some(want));
        }
        assert_eq!(
            Redirect::parse(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
            Some(Redirect::TryAgain)
        );
        for not in [
            &b"-MOVED 16384 127.0.0.1:1\r\n"[..],
            b"-MOVED 1 :7001\r\n",
            b"-MOVED x 127.0.0.1:1\r\n",
            b"-MOVED 1 127.0.0.1\r\n",
            b"-MOVED 1 127.0.0.1:1 extra\r\n",
            b"-ERR MOVED 1 127.0.0.1:1\r\n",
            b"-CROSSSLOT Keys in request don't hash to the same slot\r\n",
            b"+MOVED 1 127.0.0.1:1\r\n",
        ] {
            assert_eq!(
                Redirect::parse(not),
                None,
                "{}",
                String::from_utf8_lossy(not)
            );
        }
    }
}
