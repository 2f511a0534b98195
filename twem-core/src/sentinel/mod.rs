//! Redis Sentinel: servers whose address is whatever the sentinels say
//! their master's is, followed through failovers.
//!
//! A pool with `sentinels` names Sentinel masters instead of addresses
//! (`servers: [shard-a:1, shard-b:1]`). The ring is built from those names,
//! so a failover changes where a server is, never which server a key
//! belongs to. At start the sentinels are asked
//! (`SENTINEL get-master-addr-by-name`); a task per sentinel stays
//! subscribed to `+switch-master` (reconnecting when its sentinel dies),
//! and every sentinel is polled each second, on a connection kept from
//! poll to poll (`SENTINEL MASTER`, whose
//! `config-epoch` keeps a sentinel that has not caught up from moving a
//! server back). On a switch, every connection of the server fails what it
//! has in flight ([`BackendErrorKind::Failover`](crate::pool::BackendErrorKind::Failover),
//! naming the server) and closes; the next request connects to the new
//! master, with the pool's `redis_auth` and `redis_db` handshake.
//!
//! [`proto`] is the pure part (replies, messages, the decision), unit
//! tested; [`monitor`] does the I/O.

pub mod monitor;
pub mod proto;

pub(crate) use monitor::start;
