//! Where a request goes, decided as data: [`plan_redis`] and
//! [`plan_memcache`] turn a decoded request and a [`Ring`] snapshot into a
//! [`Plan`] (answer here, send to one server, or split over several and
//! merge by a [`MergePolicy`], or fail), without I/O and without a pool.
//!
//! The [`Pool`](super::Pool) only carries a plan out, so every routing rule
//! (the command table's verdict, hash tags, the multi-key splits, the
//! all-on-one-server shortcut, `noreply`, "every server is ejected") is
//! unit-tested here, apart from sockets. Modelled on redis-rs's cluster
//! `RoutingInfo` + `ResponsePolicy`.

use bytes::Bytes;

use twem_proto::command::spec::F_READONLY;
use twem_proto::command::{self, Class, Command, CommandError, FanOut, Route};
use twem_proto::{memcache as mc, resp};

use super::info::{InfoRequest, ProxyNumbers};
use super::scan::{self, ScanCursor};
use crate::ring::Ring;

/// Where keys live, as the planner asks it: the pool's [`Ring`] (servers
/// by nutcracker's hashing) or a Redis Cluster's slot map
/// ([`SlotMap`](crate::cluster::SlotMap)). Both are immutable snapshots
/// swapped atomically, so planning never takes a lock.
pub trait Placement {
    /// The server (by index) that holds `key` now; `None` when no server
    /// can take it.
    fn locate(&self, key: &[u8]) -> Option<usize>;
    /// The group of `key` a split keeps together and a same-server command
    /// must not leave: its server for a ring, its hash slot for a cluster
    /// (a cluster client splits by slot, not by node, since a slot can
    /// move to another node between two requests). `None` when no server
    /// can take it.
    fn group(&self, key: &[u8]) -> Option<u32>;
    /// The server a read-only command for `key` goes to: where
    /// [`locate`](Placement::locate) says, unless the placement reads from
    /// replicas (a cluster pool's `read_from`).
    #[inline]
    fn locate_read(&self, key: &[u8]) -> Option<usize> {
        self.locate(key)
    }
    /// How many server indexes there are (live or not).
    fn server_count(&self) -> usize;
    /// Whether server `idx` takes requests now (fan-outs and SCAN visit
    /// only these).
    fn is_live(&self, idx: usize) -> bool;
    /// How many servers take requests now.
    fn live_count(&self) -> usize;
    /// The refusal of a command whose keys are in different groups.
    fn cross_slot(&self) -> Failure {
        Failure::CrossSlot
    }
    /// The refusal of a key no server can take.
    fn unplaced(&self) -> Failure {
        Failure::AllEjected
    }
}

impl Placement for Ring {
    #[inline]
    fn locate(&self, key: &[u8]) -> Option<usize> {
        Ring::locate(self, key)
    }
    #[inline]
    fn group(&self, key: &[u8]) -> Option<u32> {
        Ring::locate(self, key).map(|s| s as u32)
    }
    fn server_count(&self) -> usize {
        self.servers().len()
    }
    fn is_live(&self, idx: usize) -> bool {
        Ring::is_live(self, idx)
    }
    fn live_count(&self) -> usize {
        Ring::live_count(self)
    }
}

/// The routing key nutcracker uses for commands that carry no key (COMMAND,
/// LOLWUT, memcached `version`).
pub const PLACEHOLDER_KEY: &[u8] = b"placeholder";

/// What to do with one client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Answer the client with these bytes, sending nothing (PING, ECHO,
    /// SELECT 0, ...). Empty for memcached `quit`: there is nothing to write.
    Local(Bytes),
    /// Send `wire` to server `server` (an index into the ring's servers);
    /// its reply is the client's. The request's own bytes, not a copy: this
    /// is the hot path and costs no allocation.
    One {
        /// The server, by ring index.
        server: usize,
        /// The bytes to write to it.
        wire: Bytes,
        /// The server will not answer (memcached `noreply`): the request is
        /// done once written.
        noreply: bool,
    },
    /// Send each part to its server and merge their replies into one.
    /// Boxed: a split allocates its parts anyway, and the box keeps every
    /// plan at 56 bytes instead of 176 (plans are made per request).
    Split(Box<Split>),
    /// A blocking command: sent on a connection borrowed for it. Boxed:
    /// rare, and every plan stays as small as the hot path's.
    Blocking(Box<Blocking>),
    /// Do not send anything: answer the client with this failure.
    Fail(Failure),
}

impl Plan {
    /// The one server this plan sends to, if it sends to exactly one:
    /// how a client session learns where `WATCH` keys or a transaction's
    /// commands live (a `Split` or a `Fail` has no single server).
    pub fn single_server(&self) -> Option<usize> {
        match self {
            Plan::One { server, .. } => Some(*server),
            Plan::Blocking(b) => Some(b.server),
            _ => None,
        }
    }
}

/// A blocking command's plan: send `wire` to server `server` on a
/// connection borrowed for it, which may wait `wait` (`None`: without
/// limit) for the reply, plus a margin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocking {
    /// The server, by ring index.
    pub server: usize,
    /// The bytes to write to it.
    pub wire: Bytes,
    /// The command's own timeout.
    pub wait: Option<std::time::Duration>,
}

/// A request split over several servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// `(server, wire)` per part, in the order each group first appears
    /// among the client's keys; each group (a server, or a cluster's hash
    /// slot) is one part, so a cluster node may get several.
    pub parts: Vec<(usize, Bytes)>,
    /// For each key (or key/value pair) of the client's request, in order,
    /// the index in `parts` of the part that carries it: how the merge puts
    /// the replies back in the client's order.
    pub part_of: Vec<usize>,
    /// How the parts' replies become the client's one reply.
    pub merge: MergePolicy,
}

/// How the replies of a split request's parts combine (the pool's pure
/// `merge::combine` applies it). Decided once, when the request is planned,
/// not re-derived from the command later. Any part that is an error reply
/// is the whole command's reply, whatever the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergePolicy {
    /// MGET: one array of the parts' values, in the client's key order.
    Mget,
    /// DEL, UNLINK, TOUCH, EXISTS: the sum of the parts' integers.
    Sum,
    /// MSET: one `+OK` when every part said `+OK`.
    AllOk,
    /// memcached get/gets/gat/gats: the values in the order of this (the
    /// client's) request's keys, then one `END`.
    McGet(mc::Request),
    /// memcached `stats` sent to every server: the proxy's `stats` reply,
    /// its own numbers (filled in by the pool when it sends the request)
    /// with the servers' counters summed. A server that failed is left out.
    McStats(Box<ProxyNumbers>),
    /// memcached `flush_all` sent to every server: `OK` when every server
    /// said `OK`, else the first other reply; nothing at all when the
    /// client asked for `noreply` (the servers are still asked for a reply,
    /// so that each backend connection stays in step).
    McAllOk {
        /// The client's line ended in `noreply`.
        noreply: bool,
    },
    /// A command sent to every server (`SCRIPT LOAD`, `FUNCTION LOAD`,
    /// `SCRIPT FLUSH`): every reply must be the same, and is the client's;
    /// different replies are an error saying the servers disagree.
    AllEqual,
    /// `SCRIPT EXISTS` sent to every server: element-wise, 1 only where
    /// every server said 1 (a script missing anywhere would fail there).
    AllOnes,
    /// `PUBSUB CHANNELS`: the union of the servers' arrays, each name once.
    Union,
    /// `PUBSUB NUMSUB`: `[channel, count, ...]` with each channel's counts
    /// summed over the servers.
    SumPairs,
    /// `PUBSUB NUMPAT`: the largest of the servers' integers.
    Max,
    /// `INFO` sent to every server: the proxy's INFO text, with the lowest
    /// `redis_version` and the servers' keyspaces summed. A server that
    /// failed is left out. The pool fills in its own numbers before
    /// sending.
    Info(Box<InfoRequest>),
    /// `KEYS` sent to every server: the arrays one after another (each key
    /// lives on one server, so there is nothing to deduplicate).
    Concat,
    /// `RANDOMKEY` sent to every server, the parts in a random order: the
    /// first key; null only when every server answered null (the pool's
    /// keyspace is empty).
    FirstKey,
    /// `SCAN` sent to one server (`server`): its reply with the cursor
    /// rewritten to name the server, or `next`'s start once its scan ends
    /// (`None`: the scan is over). See `pool/scan.rs`.
    Scan {
        /// The server scanned, by ring index.
        server: usize,
        /// The next live server, by ring index.
        next: Option<usize>,
    },
}

/// Why a request is answered with an error without being sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The command table refused it: unknown, not forwarded, wrong arity,
    /// a bad `numkeys`. The text is the error reply.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// No server of the pool is live (`BackendErrorKind::AllEjected`).
    #[error("every server of the pool is ejected")]
    AllEjected,
    /// The keys of a command that must run on one server (`RPOPLPUSH`,
    /// `SUNIONSTORE`, a script's keys) live on different servers. Nothing
    /// was sent: running it on one of them would lose data.
    #[error("CROSSSLOT Keys in request don't hash to the same server (use a hash tag)")]
    CrossSlot,
    /// A per-connection command (`MULTI`, `HELLO`, `CLIENT`, ...) reached a
    /// pool, not a client session: the text says what to use instead.
    #[error("{0}")]
    Session(&'static str),
    /// A SCAN cursor that is not a number, or names a server the pool
    /// does not have (Redis's wording for a cursor it cannot read).
    #[error("ERR invalid cursor")]
    InvalidCursor,
    /// `FLUSHDB`/`FLUSHALL` (upper case, as named) in a pool whose config
    /// does not allow emptying every server.
    #[error("ERR twem: {0} is off for this pool: set allow_flush: true in its config")]
    FlushOff(&'static str),
    /// A cluster pool: the keys of a command that must run in one slot are
    /// in different hash slots (Redis Cluster's own words).
    #[error("CROSSSLOT Keys in request don't hash to the same slot")]
    CrossSlotCluster,
    /// A cluster pool: no node serves the key's hash slot now (Redis
    /// Cluster's own words).
    #[error("CLUSTERDOWN Hash slot not served")]
    SlotUnserved,
}

impl Failure {
    /// The error code of the reply (`ERR`, `CROSSSLOT`), `None` for
    /// [`Failure::AllEjected`] (worded by the backend error).
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Failure::CrossSlot | Failure::CrossSlotCluster => Some("CROSSSLOT"),
            Failure::SlotUnserved => Some("CLUSTERDOWN"),
            Failure::Session(_) | Failure::InvalidCursor | Failure::FlushOff(_) => Some("ERR"),
            Failure::Command(_) | Failure::AllEjected => None,
        }
    }
}

/// A Redis request's plan, with the class of its command for the per-class
/// counters (`None` for a command the table does not know or rejected for
/// its arguments; refused commands count as refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisPlan {
    /// The command's class (in the command table), for
    /// [`redis_class_index`](super::metrics::redis_class_index).
    pub class: Option<&'static Class>,
    /// What to do.
    pub plan: Plan,
    /// Whether a replica may answer it (`read_from`): Redis flags the
    /// command read-only and it is not a script (`EVAL_RO` and `FCALL_RO`
    /// go to the master with the other scripts).
    pub replica_ok: bool,
}

/// Whether a replica may answer `cmd` (see [`RedisPlan::replica_ok`]).
#[inline]
pub fn replica_ok(cmd: &Command) -> bool {
    cmd.flags & command::spec::F_READONLY != 0
        && cmd.flags & (command::spec::F_BLOCKING | command::spec::F_PUBSUB) == 0
        && !matches!(cmd.class, Class::Script)
}

/// What a pool's config allows beyond the command table, for
/// [`plan_redis_with`]. The default allows nothing extra.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// `FLUSHDB`/`FLUSHALL` go to every server (pool key `allow_flush`);
    /// otherwise they are refused, naming the key.
    pub allow_flush: bool,
    /// Read-only commands of one key, and the parts of MGET and EXISTS,
    /// may go where [`Placement::locate_read`] says (a replica). Off for
    /// what a transaction or `WATCH` plans: those run on the master.
    pub replica_reads: bool,
}

/// Plan a Redis request against `ring`, with the default [`PlanOptions`]
/// (`FLUSHDB`/`FLUSHALL` refused).
#[inline]
pub fn plan_redis(req: &resp::Request, ring: &Ring) -> RedisPlan {
    plan_redis_with(req, ring, PlanOptions::default())
}

/// Plan a Redis request against `ring`, with what the pool's config allows.
// Inlined into the Pool's one caller: the plan is then built where it is
// used instead of being returned through memory (callgrind: ~30
// instructions a request at pipeline 1). Always: it has several callers
// now, and a plain hint was not taken.
#[inline(always)]
pub fn plan_redis_with<P: Placement + ?Sized>(
    req: &resp::Request,
    ring: &P,
    options: PlanOptions,
) -> RedisPlan {
    let (cmd, route) = match command::classify(req) {
        Ok(x) => x,
        Err(e) => {
            // Only a refused command has a class worth counting; an unknown
            // one or a wrong arity counts as "rejected". The second lookup
            // is on this cold path only.
            let class = command::resolve(req)
                .map(|c| &c.class)
                .filter(|c| matches!(c, Class::Refused(_)));
            return RedisPlan {
                class,
                plan: Plan::Fail(Failure::Command(e)),
                replica_ok: false,
            };
        }
    };
    // Built in place, one struct literal: no plan is moved on the hot path.
    RedisPlan {
        class: Some(&cmd.class),
        replica_ok: replica_ok(cmd),
        plan: match route {
            Route::Local(c) => Plan::Local(local_reply(c.name, req)),
            Route::Key(i) => {
                let key = req.args().get(i).map_or(&b""[..], |b| &b[..]);
                let server = if options.replica_reads && cmd.flags & F_READONLY != 0 {
                    ring.locate_read(key)
                } else {
                    ring.locate(key)
                };
                one(ring, server, req.wire())
            }
            Route::Placeholder => one(ring, ring.locate(PLACEHOLDER_KEY), req.wire()),
            Route::Split { cmd, first, step } => {
                let merge = match cmd.class {
                    Class::Mget => MergePolicy::Mget,
                    Class::Mset => MergePolicy::AllOk,
                    _ => MergePolicy::Sum,
                };
                let read = options.replica_reads && cmd.flags & F_READONLY != 0;
                split_redis(ring, req, (first, step), merge, read)
            }
            Route::SameServer(cmd) => same_server(ring, req, cmd),
            Route::FanOut(cmd, FanOut::Flush) if !options.allow_flush => {
                Plan::Fail(Failure::FlushOff(if cmd.name == "flushall" {
                    "FLUSHALL"
                } else {
                    "FLUSHDB"
                }))
            }
            Route::FanOut(_, how) => fan_out(ring, req, how),
            Route::Scan(_) => scan(ring, req),
            Route::Session(cmd) => Plan::Fail(Failure::Session(session_words(cmd))),
            Route::Blocking(cmd, wait) => match same_server(ring, req, cmd) {
                Plan::One { server, wire, .. } => Plan::Blocking(Box::new(Blocking {
                    server,
                    wire,
                    wait: wait.duration(req.args()),
                })),
                other => other,
            },
        },
    }
}

/// Forward a command whose keys must share a server to that server, or
/// fail it with `CROSSSLOT` (never run on one server while another holds a
/// key: a `RPOPLPUSH` to a list on another server would lose the element).
/// No allocation: the keys are walked in place.
fn same_server<P: Placement + ?Sized>(
    ring: &P,
    req: &resp::Request,
    cmd: &'static Command,
) -> Plan {
    let args = req.args();
    let mut target: Option<(u32, &[u8])> = None;
    for i in command::keys(cmd, args) {
        let key = args.get(i).map_or(&b""[..], |b| &b[..]);
        let Some(group) = ring.group(key) else {
            return Plan::Fail(ring.unplaced());
        };
        match target {
            Some((t, _)) if t != group => return Plan::Fail(ring.cross_slot()),
            Some(_) => {}
            None => target = Some((group, key)),
        }
    }
    // No key found (a bad numkeys, a keyword missing): the server answers
    // its own syntax error, so any server will do.
    let key = target.map_or(PLACEHOLDER_KEY, |(_, k)| k);
    one(ring, ring.locate(key), req.wire())
}

/// Send the request as it came to every live server.
fn fan_out<P: Placement + ?Sized>(ring: &P, req: &resp::Request, how: FanOut) -> Plan {
    let mut parts: Vec<(usize, Bytes)> = (0..ring.server_count())
        .filter(|&s| ring.is_live(s))
        .map(|s| (s, req.wire().clone()))
        .collect();
    if parts.is_empty() {
        return Plan::Fail(Failure::AllEjected);
    }
    let merge = match how {
        FanOut::AllEqual => MergePolicy::AllEqual,
        FanOut::Sum => MergePolicy::Sum,
        FanOut::Concat => MergePolicy::Concat,
        FanOut::Flush => MergePolicy::AllOk,
        FanOut::AnyKey => {
            // Start at a random live server: the first key among the
            // parts is the reply, so each server with keys gets its turn.
            let start = crate::ring::random_below(parts.len());
            parts.rotate_left(start);
            MergePolicy::FirstKey
        }
        FanOut::AllOnes => MergePolicy::AllOnes,
        FanOut::Union => MergePolicy::Union,
        FanOut::SumPairs => MergePolicy::SumPairs,
        FanOut::Max => MergePolicy::Max,
        FanOut::Info => MergePolicy::Info(Box::new(InfoRequest::new(
            req.args().iter().skip(1).cloned().collect(),
        ))),
    };
    Plan::Split(Box::new(Split {
        part_of: (0..parts.len()).collect(),
        parts,
        merge,
    }))
}

/// `SCAN`: to the one server the composite cursor names, with that
/// server's own cursor (see `pool/scan.rs` for the encoding and what an
/// ejected server means). The reply's cursor is rewritten by
/// [`MergePolicy::Scan`].
fn scan<P: Placement + ?Sized>(ring: &P, req: &resp::Request) -> Plan {
    let args = req.args();
    let Some(at) = args
        .get(1)
        .and_then(|c| scan::parse_cursor(c))
        .map(ScanCursor::decode)
        .filter(|at| at.server < ring.server_count())
    else {
        return Plan::Fail(Failure::InvalidCursor);
    };
    if ring.live_count() == 0 {
        return Plan::Fail(Failure::AllEjected);
    }
    // An ejected server's keys are out of the pool while it is out: go on
    // at the next live server's start.
    let (server, cursor) = if ring.is_live(at.server) {
        (at.server, at.cursor)
    } else {
        match next_live(ring, at.server) {
            Some(next) => (next, 0),
            None => return Plan::Local(scan::finished()),
        }
    };
    let mut sub: Vec<Bytes> = args.to_vec();
    if let Some(c) = sub.get_mut(1) {
        *c = Bytes::from(cursor.to_string());
    }
    Plan::Split(Box::new(Split {
        parts: vec![(server, resp::Request::from_args(sub).wire().clone())],
        part_of: vec![0],
        merge: MergePolicy::Scan {
            server,
            next: next_live(ring, server),
        },
    }))
}

/// The first live server after `server`, by ring index.
fn next_live<P: Placement + ?Sized>(ring: &P, server: usize) -> Option<usize> {
    (server + 1..ring.server_count()).find(|&s| ring.is_live(s))
}

/// What a pool answers to a per-connection command: the proxy's client
/// sessions handle these; an embedder has the Pool's own API.
fn session_words(cmd: &Command) -> &'static str {
    match cmd.name {
        "multi" => "ERR MULTI is per connection: embedders use the Pool's transaction API",
        "exec" => "ERR EXEC is per connection: embedders use the Pool's transaction API",
        "discard" => "ERR DISCARD is per connection: embedders use the Pool's transaction API",
        "unwatch" => "ERR UNWATCH is per connection: embedders use the Pool's transaction API",
        "hello" => "ERR HELLO is per connection: the proxy's client sessions answer it, a Pool has no connection state",
        "reset" => "ERR RESET is per connection: the proxy's client sessions answer it, a Pool has no connection state",
        "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "ssubscribe"
        | "sunsubscribe" => "ERR subscriptions are per connection: the proxy's client sessions serve them on connections of their own; embedders connect to the server of the channel (Pool::server_for) directly",
        _ => "ERR CLIENT is per connection: the proxy's client sessions answer it, a Pool has no connection state",
    }
}

/// Forward `wire` whole to the located server, if any can take it.
#[inline]
fn one<P: Placement + ?Sized>(ring: &P, server: Option<usize>, wire: &Bytes) -> Plan {
    match server {
        Some(server) => Plan::One {
            server,
            wire: wire.clone(),
            noreply: false,
        },
        None => Plan::Fail(ring.unplaced()),
    }
}

/// Split a multi-key Redis request whose keys are at `first`, `first +
/// step`, ... (each followed by `step - 1` values).
fn split_redis<P: Placement + ?Sized>(
    ring: &P,
    req: &resp::Request,
    (first, step): (usize, usize),
    merge: MergePolicy,
    read: bool,
) -> Plan {
    // A read-only split (MGET, EXISTS) may read from replicas.
    let locate = |key: &[u8]| {
        if read {
            ring.locate_read(key)
        } else {
            ring.locate(key)
        }
    };
    if ring.live_count() == 0 {
        return Plan::Fail(Failure::AllEjected);
    }
    let args = req.args();
    let step = step.max(1);
    // Which group (server, or a cluster's slot) each key group goes to, in
    // request order.
    let mut owner: Vec<usize> = Vec::with_capacity(args.len() / step);
    for key in args.iter().skip(first).step_by(step) {
        match ring.group(key) {
            Some(g) => owner.push(g as usize),
            None => return Plan::Fail(ring.unplaced()),
        }
    }
    // All keys in one group: forward the request as it came, no split.
    if owner.iter().all(|&o| Some(&o) == owner.first()) {
        let key = args.get(first).map_or(PLACEHOLDER_KEY, |k| &k[..]);
        return one(ring, locate(key), req.wire());
    }
    let (groups, part_of) = group(&owner);
    let mut parts = Vec::with_capacity(groups.len());
    for p in 0..groups.len() {
        let mut sub: Vec<Bytes> = Vec::with_capacity(1 + step * owner.len());
        sub.extend(args.first().cloned());
        let mut server = None;
        for (g, _) in part_of.iter().enumerate().filter(|&(_, &pp)| pp == p) {
            let at = first + g * step;
            if server.is_none() {
                server = args.get(at).and_then(|k| locate(k));
            }
            sub.extend(
                args.get(at..(at + step).min(args.len()))
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        let Some(server) = server else {
            return Plan::Fail(ring.unplaced());
        };
        parts.push((server, resp::Request::from_args(sub).wire().clone()));
    }
    Plan::Split(Box::new(Split {
        parts,
        part_of,
        merge,
    }))
}

/// The distinct servers of `owner` in order of first appearance, and for
/// each entry of `owner` the position of its server among them. Servers per
/// request are few, so a linear search beats hashing.
fn group(owner: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut servers: Vec<usize> = Vec::new();
    let part_of = owner
        .iter()
        .map(|&o| match servers.iter().position(|&s| s == o) {
            Some(p) => p,
            None => {
                servers.push(o);
                servers.len() - 1
            }
        })
        .collect();
    (servers, part_of)
}

/// Plan a memcached request against `ring`.
#[inline]
pub fn plan_memcache(req: &mc::Request, ring: &Ring) -> Plan {
    let cmd = req.command();
    match cmd {
        // The session closes the connection; nothing goes to a server.
        mc::Command::Quit => return Plan::Local(Bytes::new()),
        // Answered in pipeline order like any reply: every reply to the
        // client's earlier requests (quiet ones included) is written
        // before it, which is all `mn` promises.
        mc::Command::MetaNoop => return Plan::Local(Bytes::from_static(b"MN\r\n")),
        // The proxy's log level is its command line's; servers keep theirs.
        mc::Command::Verbosity if req.noreply() => return Plan::Local(Bytes::new()),
        mc::Command::Verbosity => return Plan::Local(Bytes::from_static(b"OK\r\n")),
        _ => {}
    }
    if ring.live_count() == 0 {
        return Plan::Fail(Failure::AllEjected);
    }
    match cmd {
        mc::Command::Stats => {
            return mc_fan_out(
                ring,
                req.wire().clone(),
                MergePolicy::McStats(Box::default()),
            )
        }
        mc::Command::FlushAll => return flush_all(ring, req),
        _ => {}
    }
    if cmd.is_retrieval() && req.keys().len() > 1 {
        return split_memcache(ring, req);
    }
    let key: &[u8] = if cmd == mc::Command::Version {
        PLACEHOLDER_KEY
    } else {
        req.key().map_or(&b""[..], |k| &k[..])
    };
    // A quiet meta request goes with an `mn` after it: the server's `MN`
    // ends its reply, or stands for the reply quiet mode left out.
    let wire = if req.quiet() {
        req.wire_with_noop()
    } else {
        req.wire().clone()
    };
    match ring.locate(key) {
        Some(server) => Plan::One {
            server,
            wire,
            noreply: req.noreply(),
        },
        None => Plan::Fail(Failure::AllEjected),
    }
}

/// Send `wire` to every live server, merged by `merge`.
fn mc_fan_out(ring: &Ring, wire: Bytes, merge: MergePolicy) -> Plan {
    let parts: Vec<(usize, Bytes)> = (0..ring.servers().len())
        .filter(|&s| ring.is_live(s))
        .map(|s| (s, wire.clone()))
        .collect();
    if parts.is_empty() {
        return Plan::Fail(Failure::AllEjected);
    }
    Plan::Split(Box::new(Split {
        part_of: (0..parts.len()).collect(),
        parts,
        merge,
    }))
}

/// `flush_all [delay] [noreply]` to every live server. Sent without
/// `noreply` even when the client gave it: a fan-out waits for every part,
/// and the proxy, not the servers, stays silent.
fn flush_all(ring: &Ring, req: &mc::Request) -> Plan {
    let wire = match (req.noreply(), req.exptime()) {
        (false, _) => req.wire().clone(),
        (true, Some(delay)) if delay != 0 => Bytes::from(format!("flush_all {delay}\r\n")),
        (true, _) => Bytes::from_static(b"flush_all\r\n"),
    };
    mc_fan_out(
        ring,
        wire,
        MergePolicy::McAllOk {
            noreply: req.noreply(),
        },
    )
}

/// Split a multi-key `get`/`gets` per server (see [`mc::split_get`]).
fn split_memcache(ring: &Ring, req: &mc::Request) -> Plan {
    let mut owner = Vec::with_capacity(req.keys().len());
    let subs = mc::split_get(req, |k| {
        let server = ring.locate(k).unwrap_or(0);
        owner.push(server);
        server
    });
    if let [(server, only)] = &subs[..] {
        return one(ring, Some(*server), only.wire());
    }
    // split_get orders its parts by first appearance among the keys, as
    // `group` does, so the part indexes agree.
    let (_, part_of) = group(&owner);
    Plan::Split(Box::new(Split {
        parts: subs
            .into_iter()
            .map(|(server, sub)| (server, sub.into_wire()))
            .collect(),
        part_of,
        merge: MergePolicy::McGet(req.clone()),
    }))
}

/// Commands the pool answers itself: PING, ECHO, SELECT 0, QUIT. (AUTH is the
/// client session's business: it knows whether that client has authenticated;
/// an embedder's AUTH is checked against `redis_auth` by `Pool::route_redis`,
/// which has the config this pure function does not.)
fn local_reply(name: &str, req: &resp::Request) -> Bytes {
    let args = req.args();
    let reply = if name.eq_ignore_ascii_case("ping") {
        match args.get(1) {
            Some(msg) => resp::Reply::Bulk(Some(msg.clone())),
            None => resp::Reply::Status(Bytes::from_static(b"PONG")),
        }
    } else if name.eq_ignore_ascii_case("echo") {
        resp::Reply::Bulk(args.get(1).cloned())
    } else if name.eq_ignore_ascii_case("select") {
        match args.get(1).map(|a| &a[..]) {
            Some(b"0") => resp::Reply::ok(),
            _ => resp::Reply::error(
                "ERR SELECT is not allowed in twem: set redis_db in the pool config",
            ),
        }
    } else if name.eq_ignore_ascii_case("quit") {
        resp::Reply::ok()
    } else if name.eq_ignore_ascii_case("auth") {
        resp::Reply::error("ERR Client sent AUTH, but no password is set")
    } else {
        resp::Reply::error(format!("ERR unknown command '{name}'"))
    };
    reply.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{HashKind, HashTag};
    use crate::ring::{Distribution, RingServer};

    fn ring_with(tag: Option<HashTag>) -> Ring {
        let servers = ["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"]
            .into_iter()
            .map(|n| RingServer::new(n, 1))
            .collect();
        Ring::new(servers, HashKind::Fnv1a_64, Distribution::Ketama, tag).expect("valid ring")
    }

    fn ring() -> Ring {
        ring_with(None)
    }

    fn redis(args: &[&str]) -> resp::Request {
        resp::Request::from_args(args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())))
    }

    fn at(ring: &Ring, key: &str) -> usize {
        ring.locate(key.as_bytes()).expect("a live server")
    }

    /// `n` keys spread over every live server (no server gets more than
    /// its share), in the order they were found, so servers interleave.
    fn spread_keys(ring: &Ring, n: usize) -> Vec<String> {
        let share = n.div_ceil(ring.live_count());
        let mut per_server = vec![0usize; ring.servers().len()];
        let keys: Vec<String> = (0..)
            .map(|i| format!("key:{i}"))
            .filter(|k| {
                let s = at(ring, k);
                per_server[s] += 1;
                per_server[s] <= share
            })
            .take(n)
            .collect();
        let first = at(ring, &keys[0]);
        assert!(
            keys.iter().any(|k| at(ring, k) != first),
            "keys on one server"
        );
        keys
    }

    /// Two keys that live on the same server.
    fn colocated_keys(ring: &Ring) -> (String, String) {
        let a = "key:0".to_string();
        let b = (1..)
            .map(|i| format!("key:{i}"))
            .find(|k| at(ring, k) == at(ring, &a))
            .expect("a second key on the same server");
        (a, b)
    }

    /// Checks a split against the keys: one part per server in order of
    /// first appearance, `part_of` naming each key's part, each part's wire
    /// the command with exactly its keys (with their `step - 1` values) in
    /// the client's order.
    fn assert_redis_split(ring: &Ring, name: &str, args: &[&str], step: usize, split: &Split) {
        let keys: Vec<&str> = args.iter().step_by(step).copied().collect();
        let mut servers: Vec<usize> = Vec::new();
        for k in &keys {
            if !servers.contains(&at(ring, k)) {
                servers.push(at(ring, k));
            }
        }
        let got: Vec<usize> = split.parts.iter().map(|(s, _)| *s).collect();
        assert_eq!(got, servers);
        assert_eq!(split.part_of.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(split.parts[split.part_of[i]].0, at(ring, k), "key {k}");
        }
        for (p, (server, wire)) in split.parts.iter().enumerate() {
            let mut want = vec![name];
            for (g, group) in args.chunks(step).enumerate() {
                if split.part_of[g] == p {
                    assert_eq!(at(ring, group[0]), *server);
                    want.extend_from_slice(group);
                }
            }
            assert_eq!(wire, redis(&want).wire(), "part {p}");
        }
    }

    fn local(args: &[&str]) -> Bytes {
        match plan_redis(&redis(args), &ring()) {
            RedisPlan {
                class: Some(Class::Local),
                plan: Plan::Local(b),
                ..
            } => b,
            other => panic!("{args:?} not local: {other:?}"),
        }
    }

    // Read-only commands may go to a replica; writes, scripts (even the
    // _RO ones), blocking and pub/sub commands never.
    #[test]
    fn replica_ok_from_the_command_table() {
        let ok = |args: &[&str]| plan_redis(&redis(args), &ring()).replica_ok;
        assert!(ok(&["GET", "k"]));
        assert!(ok(&["MGET", "a", "b"]));
        assert!(ok(&["HGETALL", "h"]));
        assert!(ok(&["EXISTS", "k"]));
        assert!(!ok(&["SET", "k", "v"]));
        assert!(!ok(&["INCR", "k"]));
        assert!(!ok(&["DEL", "k"]));
        assert!(!ok(&["EVAL_RO", "return 1", "1", "k"]));
        assert!(!ok(&["EVALSHA_RO", "abc", "1", "k"]));
        assert!(!ok(&["EVAL", "return 1", "1", "k"]));
        assert!(!ok(&["BLPOP", "k", "0"]));
        assert!(!ok(&["GETDEL", "k"]));
        assert!(!ok(&["NOSUCH"]));
    }

    #[test]
    fn local_commands_are_answered_here() {
        assert_eq!(local(&["PING"]), "+PONG\r\n");
        assert_eq!(local(&["ping", "hi"]), "$2\r\nhi\r\n");
        assert_eq!(local(&["ECHO", "x"]), "$1\r\nx\r\n");
        assert_eq!(local(&["SELECT", "0"]), "+OK\r\n");
        assert_eq!(local(&["QUIT"]), "+OK\r\n");
        assert_eq!(
            local(&["AUTH", "pw"]),
            "-ERR Client sent AUTH, but no password is set\r\n"
        );
        assert_eq!(
            local(&["SELECT", "1"]),
            "-ERR SELECT is not allowed in twem: set redis_db in the pool config\r\n"
        );
    }

    // A local command needs no server, so it is answered with all ejected.
    #[test]
    fn local_commands_need_no_live_server() {
        let down = ring().with_ejected(&[0, 1, 2]);
        let planned = plan_redis(&redis(&["PING"]), &down);
        assert_eq!(planned.plan, Plan::Local(Bytes::from_static(b"+PONG\r\n")));
    }

    // What the table rejects fails with the table's own error, and counts
    // as refused only when the command is refused.
    #[test]
    fn rejected_commands_fail_with_the_table_error() {
        for (args, class) in [
            (
                &["MOVE", "k", "1"][..],
                Some(Class::Refused(
                    "the proxy serves one database (redis_db in the pool config): prefix your keys instead of moving them between databases",
                )),
            ),
            (&["NOSUCH", "a"][..], None),
            (&["GET"][..], None),
            (&["MSET", "a", "1", "b"][..], None),
        ] {
            let req = redis(args);
            let want = command::classify(&req).expect_err("rejected");
            let planned = plan_redis(&req, &ring());
            assert_eq!(planned.class.copied(), class, "{args:?}");
            assert_eq!(planned.plan, Plan::Fail(Failure::Command(want)), "{args:?}");
        }
    }

    #[test]
    fn a_key_goes_whole_to_its_server() {
        let ring = ring();
        for i in 0..50 {
            let key = format!("user:{i}");
            let req = redis(&["SET", &key, "v"]);
            let planned = plan_redis(&req, &ring);
            assert_eq!(planned.class, Some(&Class::Single));
            let Plan::One {
                server,
                wire,
                noreply,
            } = planned.plan
            else {
                panic!("not one server: {planned:?}");
            };
            assert_eq!(server, at(&ring, &key));
            // The request's own buffer, not a copy.
            assert_eq!(wire.as_ptr(), req.wire().as_ptr());
            assert_eq!(wire, *req.wire());
            assert!(!noreply);
        }
    }

    #[test]
    fn a_keyless_command_goes_to_the_placeholder_server() {
        let ring = ring();
        let want = ring.locate(PLACEHOLDER_KEY).expect("live");
        for name in ["COMMAND", "LOLWUT"] {
            let req = redis(&[name]);
            let planned = plan_redis(&req, &ring);
            assert_eq!(planned.class, Some(&Class::Placeholder));
            assert_eq!(
                planned.plan,
                Plan::One {
                    server: want,
                    wire: req.wire().clone(),
                    noreply: false
                }
            );
        }
    }

    #[test]
    fn mget_splits_per_server_in_key_order() {
        let ring = ring();
        let keys = spread_keys(&ring, 12);
        let mut args: Vec<&str> = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        let planned = plan_redis(&redis(&args), &ring);
        assert_eq!(planned.class, Some(&Class::Mget));
        let Plan::Split(split) = planned.plan else {
            panic!("not split: {planned:?}");
        };
        assert_eq!(split.merge, MergePolicy::Mget);
        assert_redis_split(&ring, "MGET", &args[1..], 1, &split);
    }

    #[test]
    fn mset_splits_in_pairs() {
        let ring = ring();
        let keys = spread_keys(&ring, 8);
        let mut args: Vec<&str> = vec!["MSET"];
        for k in &keys {
            args.push(k);
            args.push("v");
        }
        let planned = plan_redis(&redis(&args), &ring);
        assert_eq!(planned.class, Some(&Class::Mset));
        let Plan::Split(split) = planned.plan else {
            panic!("not split: {planned:?}");
        };
        assert_eq!(split.merge, MergePolicy::AllOk);
        assert_redis_split(&ring, "MSET", &args[1..], 2, &split);
    }

    #[test]
    fn counting_commands_split_and_sum() {
        let ring = ring();
        let keys = spread_keys(&ring, 6);
        for name in ["DEL", "UNLINK", "TOUCH", "EXISTS"] {
            let mut args: Vec<&str> = vec![name];
            args.extend(keys.iter().map(String::as_str));
            let planned = plan_redis(&redis(&args), &ring);
            assert_eq!(planned.class, Some(&Class::SumInt));
            let Plan::Split(split) = planned.plan else {
                panic!("{name} not split: {planned:?}");
            };
            assert_eq!(split.merge, MergePolicy::Sum);
            assert_redis_split(&ring, name, &args[1..], 1, &split);
        }
    }

    // Keys on one server (here by chance, or by a hash tag): the request is
    // forwarded as it came, without a split.
    #[test]
    fn keys_on_one_server_are_not_split() {
        let ring = ring();
        let (a, b) = colocated_keys(&ring);
        for args in [
            vec!["MGET", a.as_str(), b.as_str(), a.as_str()],
            vec!["MSET", a.as_str(), "1", b.as_str(), "2"],
            vec!["DEL", a.as_str()],
        ] {
            let req = redis(&args);
            let plan = plan_redis(&req, &ring).plan;
            assert_eq!(
                plan,
                Plan::One {
                    server: at(&ring, &a),
                    wire: req.wire().clone(),
                    noreply: false
                },
                "{args:?}"
            );
        }
        let tagged = ring_with(HashTag::from_bytes(b"{}"));
        let req = redis(&["MGET", "{u}:1", "{u}:2", "{u}:3", "{u}:4"]);
        let Plan::One { server, .. } = plan_redis(&req, &tagged).plan else {
            panic!("hash-tagged keys were split");
        };
        assert_eq!(Some(server), tagged.locate(b"u"));
    }

    #[test]
    fn no_live_server_fails_every_forwarded_command() {
        let down = ring().with_ejected(&[0, 1, 2]);
        for args in [
            &["GET", "a"][..],
            &["COMMAND"][..],
            &["MGET", "a", "b"][..],
            &["MSET", "a", "1"][..],
            &["DEL", "a", "b", "c"][..],
        ] {
            let plan = plan_redis(&redis(args), &down).plan;
            assert_eq!(plan, Plan::Fail(Failure::AllEjected), "{args:?}");
        }
        for req in [
            mc::Request::get(&["a"]).expect("valid"),
            mc::Request::get(&["a", "b", "c"]).expect("valid"),
            mc::Request::set("a", 0, 0, "v", true).expect("valid"),
            mc::Request::version(),
        ] {
            let plan = plan_memcache(&req, &down);
            assert_eq!(plan, Plan::Fail(Failure::AllEjected), "{req:?}");
        }
    }

    // An ejected server gets nothing; its keys go to the remaining ones.
    #[test]
    fn ejected_servers_get_no_parts() {
        let ring = ring().with_ejected(&[1]);
        let keys = spread_keys(&ring, 20);
        let mut args: Vec<&str> = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        let Plan::Split(split) = plan_redis(&redis(&args), &ring).plan else {
            panic!("not split");
        };
        assert!(split.parts.iter().all(|(s, _)| *s != 1));
        assert_redis_split(&ring, "MGET", &args[1..], 1, &split);
    }

    #[test]
    fn memcache_quit_is_answered_here_with_nothing() {
        let down = ring().with_ejected(&[0, 1, 2]);
        for ring in [ring(), down] {
            assert_eq!(
                plan_memcache(&mc::Request::quit(), &ring),
                Plan::Local(Bytes::new())
            );
        }
    }

    #[test]
    fn memcache_version_goes_to_the_placeholder_server() {
        let ring = ring();
        let req = mc::Request::version();
        assert_eq!(
            plan_memcache(&req, &ring),
            Plan::One {
                server: ring.locate(PLACEHOLDER_KEY).expect("live"),
                wire: req.wire().clone(),
                noreply: false
            }
        );
    }

    /// A memcached request decoded from its wire, as a client sends it.
    fn mc_decode(wire: &str) -> mc::Request {
        use tokio_util::codec::Decoder;
        let mut buf = bytes::BytesMut::from(wire.as_bytes());
        let mut codec = mc::RequestCodec::default();
        codec
            .decode(&mut buf)
            .expect("framing")
            .expect("complete")
            .expect("valid")
    }

    // mn and verbosity are answered here, even with no live server.
    #[test]
    fn memcache_noop_and_verbosity_are_local() {
        let down = ring().with_ejected(&[0, 1, 2]);
        for ring in [ring(), down] {
            let local = |w: &str| plan_memcache(&mc_decode(w), &ring);
            assert_eq!(local("mn\r\n"), Plan::Local(Bytes::from_static(b"MN\r\n")));
            assert_eq!(
                local("verbosity 1\r\n"),
                Plan::Local(Bytes::from_static(b"OK\r\n"))
            );
            assert_eq!(local("verbosity 1 noreply\r\n"), Plan::Local(Bytes::new()));
        }
    }

    // stats and flush_all go to every live server; flush_all's noreply is
    // the proxy's to keep, not the servers'.
    #[test]
    fn memcache_stats_and_flush_all_fan_out() {
        let ring = ring().with_ejected(&[1]);
        let Plan::Split(split) = plan_memcache(&mc_decode("stats\r\n"), &ring) else {
            panic!("not a fan-out");
        };
        let servers: Vec<usize> = split.parts.iter().map(|(s, _)| *s).collect();
        assert_eq!(servers, [0, 2]);
        assert!(split.parts.iter().all(|(_, w)| &w[..] == b"stats\r\n"));
        assert!(matches!(split.merge, MergePolicy::McStats(_)));
        for (line, sent, noreply) in [
            ("flush_all\r\n", "flush_all\r\n", false),
            ("flush_all 30\r\n", "flush_all 30\r\n", false),
            ("flush_all noreply\r\n", "flush_all\r\n", true),
            ("flush_all 30 noreply\r\n", "flush_all 30\r\n", true),
        ] {
            let Plan::Split(split) = plan_memcache(&mc_decode(line), &ring) else {
                panic!("not a fan-out: {line}");
            };
            assert_eq!(split.parts.len(), 2);
            assert!(
                split.parts.iter().all(|(_, w)| &w[..] == sent.as_bytes()),
                "{line}"
            );
            assert_eq!(split.merge, MergePolicy::McAllOk { noreply });
        }
        let down = ring.with_ejected(&[0, 1, 2]);
        assert_eq!(
            plan_memcache(&mc_decode("stats\r\n"), &down),
            Plan::Fail(Failure::AllEjected)
        );
    }

    // gat/gats split like get, each part keeping the exptime.
    #[test]
    fn memcache_gat_splits_with_its_exptime() {
        let ring = ring();
        let keys = spread_keys(&ring, 6);
        let req = mc::Request::gats(42, &keys).expect("valid");
        let Plan::Split(split) = plan_memcache(&req, &ring) else {
            panic!("not split");
        };
        assert_eq!(split.merge, MergePolicy::McGet(req.clone()));
        for (server, wire) in &split.parts {
            let mine: Vec<&String> = keys.iter().filter(|k| at(&ring, k) == *server).collect();
            let want = mc::Request::gats(42, &mine).expect("valid");
            assert_eq!(wire, want.wire());
        }
    }

    // Meta commands go whole to their key's server; a base64 key is placed
    // by what it decodes to; a quiet one is followed by an mn.
    #[test]
    fn memcache_meta_commands_go_to_their_key() {
        let ring = ring();
        let keys = spread_keys(&ring, 3);
        for key in &keys {
            let b64 = base64(key.as_bytes());
            let server = at(&ring, key);
            for (line, quiet) in [
                (format!("mg {key} v\r\n"), false),
                (format!("mg {b64} b v k\r\n"), false),
                (format!("md {b64} b q\r\n"), true),
                (format!("ma {key} q N0\r\n"), true),
                (format!("me {key}\r\n"), false),
                (format!("ms {b64} 2 b T0 q\r\nhi\r\n"), true),
            ] {
                let req = mc_decode(&line);
                let sent = if quiet {
                    format!("{line}mn\r\n")
                } else {
                    line.clone()
                };
                assert_eq!(
                    plan_memcache(&req, &ring),
                    Plan::One {
                        server,
                        wire: Bytes::from(sent),
                        noreply: false
                    },
                    "{line}"
                );
            }
        }
    }

    /// Standard padded base64, for the tests' keys.
    fn base64(bytes: &[u8]) -> String {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn memcache_key_commands_go_whole_to_their_server() {
        let ring = ring();
        for i in 0..30 {
            let key = format!("k{i}");
            for (req, noreply) in [
                (mc::Request::get(&[&key]).expect("valid"), false),
                (
                    mc::Request::set(&key, 1, 0, "v", false).expect("valid"),
                    false,
                ),
                (
                    mc::Request::set(&key, 1, 0, "v", true).expect("valid"),
                    true,
                ),
                (mc::Request::delete(&key, true).expect("valid"), true),
            ] {
                let Plan::One {
                    server,
                    wire,
                    noreply: got,
                } = plan_memcache(&req, &ring)
                else {
                    panic!("not one server: {req:?}");
                };
                assert_eq!(server, at(&ring, &key));
                assert_eq!(wire.as_ptr(), req.wire().as_ptr());
                assert_eq!(got, noreply, "{req:?}");
            }
        }
    }

    #[test]
    fn memcache_multi_get_splits_per_server() {
        let ring = ring();
        let keys = spread_keys(&ring, 10);
        for req in [
            mc::Request::get(&keys).expect("valid"),
            mc::Request::gets(&keys).expect("valid"),
        ] {
            let Plan::Split(split) = plan_memcache(&req, &ring) else {
                panic!("not split: {req:?}");
            };
            assert_eq!(split.merge, MergePolicy::McGet(req.clone()));
            assert_eq!(split.part_of.len(), keys.len());
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(split.parts[split.part_of[i]].0, at(&ring, k));
            }
            let servers: Vec<usize> = split.parts.iter().map(|(s, _)| *s).collect();
            let mut seen = Vec::new();
            for k in &keys {
                if !seen.contains(&at(&ring, k)) {
                    seen.push(at(&ring, k));
                }
            }
            assert_eq!(servers, seen);
            for (p, (_, wire)) in split.parts.iter().enumerate() {
                let mine: Vec<&String> = keys
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| split.part_of[i] == p)
                    .map(|(_, k)| k)
                    .collect();
                let want = match req.command() {
                    mc::Command::Gets => mc::Request::gets(&mine),
                    _ => mc::Request::get(&mine),
                };
                assert_eq!(wire, want.expect("valid").wire(), "part {p}");
            }
        }
    }

    #[test]
    fn memcache_multi_get_on_one_server_is_not_split() {
        let ring = ring();
        let (a, b) = colocated_keys(&ring);
        let req = mc::Request::get(&[&a, &b, &a]).expect("valid");
        let plan = plan_memcache(&req, &ring);
        assert_eq!(
            plan,
            Plan::One {
                server: at(&ring, &a),
                wire: req.wire().clone(),
                noreply: false
            }
        );
    }

    // Plans are returned by value for every request: keep them small.
    #[test]
    fn a_plan_is_small() {
        assert!(
            std::mem::size_of::<Plan>() <= 56,
            "{}",
            std::mem::size_of::<Plan>()
        );
    }

    /// Two keys on different servers.
    fn split_keys(ring: &Ring) -> (String, String) {
        let a = "key:0".to_string();
        let b = (1..)
            .map(|i| format!("key:{i}"))
            .find(|k| at(ring, k) != at(ring, &a))
            .expect("a key on another server");
        (a, b)
    }

    fn cross(args: &[&str], ring: &Ring) {
        let planned = plan_redis(&redis(args), ring);
        assert_eq!(planned.plan, Plan::Fail(Failure::CrossSlot), "{args:?}");
    }

    fn forwarded_to(args: &[&str], ring: &Ring, server: usize) {
        let req = redis(args);
        let planned = plan_redis(&req, ring);
        assert_eq!(
            planned.plan,
            Plan::One {
                server,
                wire: req.wire().clone(),
                noreply: false
            },
            "{args:?}"
        );
    }

    // A same-server command whose keys live on two servers is refused, not
    // run on the first key's server (silent loss); the reply says why.
    #[test]
    fn cross_server_keys_are_crossslot() {
        let ring = ring();
        let (a, b) = split_keys(&ring);
        let (a, b) = (a.as_str(), b.as_str());
        cross(&["RPOPLPUSH", a, b], &ring);
        cross(&["SMOVE", a, b, "m"], &ring);
        cross(&["SUNIONSTORE", a, b], &ring);
        cross(&["RENAME", a, b], &ring);
        cross(&["SORT", a, "STORE", b], &ring);
        cross(&["GEORADIUS", a, "0", "0", "1", "km", "STORE", b], &ring);
        cross(&["XREAD", "COUNT", "1", "STREAMS", a, b, "0", "0"], &ring);
        cross(&["EVAL", "return 1", "2", a, b], &ring);
        cross(&["ZUNIONSTORE", a, "1", b], &ring);
        cross(&["LMPOP", "2", a, b, "LEFT"], &ring);
        cross(&["WATCH", a, b], &ring);
        assert_eq!(
            Failure::CrossSlot.to_string(),
            "CROSSSLOT Keys in request don't hash to the same server (use a hash tag)"
        );
        assert_eq!(Failure::CrossSlot.code(), Some("CROSSSLOT"));
    }

    // Keys sharing a server (by chance or by hash tag), or a script's
    // arguments that are not keys, forward the request as it came.
    #[test]
    fn same_server_keys_are_forwarded() {
        let ring = ring();
        let (a, b) = colocated_keys(&ring);
        let (x, y) = split_keys(&ring);
        let s = at(&ring, &a);
        forwarded_to(&["RPOPLPUSH", &a, &b], &ring, s);
        forwarded_to(&["SORT", &a, "BY", &y, "STORE", &b], &ring, s);
        forwarded_to(&["EVAL", "s", "2", &a, &b, &x, &y], &ring, s);
        forwarded_to(&["EVAL", "s", "1", &x, &y], &ring, at(&ring, &x));
        forwarded_to(&["XREAD", "STREAMS", &a, &b, &x, &y], &ring, s);
        let tagged = ring_with(HashTag::from_bytes(b"{}"));
        let t = tagged.locate(b"u").expect("live");
        forwarded_to(&["RPOPLPUSH", "{u}:src", "{u}:dst"], &tagged, t);
        forwarded_to(&["SUNIONSTORE", "{u}d", "{u}a", "{u}b"], &tagged, t);
    }

    // Single-key commands Redis 7 added, or nutcracker refused, are
    // forwarded by their key.
    #[test]
    fn every_single_key_command_is_forwarded() {
        let ring = ring();
        for args in [
            &["XADD", "s", "*", "f", "v"][..],
            &["XLEN", "s"],
            &["XRANGE", "s", "-", "+"],
            &["GETEX", "s", "PERSIST"],
            &["GETDEL", "s"],
            &["LPOS", "s", "x"],
            &["EXPIRETIME", "s"],
            &["SORT_RO", "s"],
        ] {
            forwarded_to(args, &ring, at(&ring, "s"));
        }
        for args in [
            &["OBJECT", "ENCODING", "s"][..],
            &["MEMORY", "USAGE", "s"],
            &["XINFO", "STREAM", "s"],
            &["XGROUP", "CREATE", "s", "g", "$"],
        ] {
            forwarded_to(args, &ring, at(&ring, "s"));
        }
    }

    // SCRIPT LOAD and friends go to every live server, whole.
    #[test]
    fn fan_out_goes_to_every_live_server() {
        let ring = ring().with_ejected(&[1]);
        for (args, merge) in [
            (&["SCRIPT", "LOAD", "return 1"][..], MergePolicy::AllEqual),
            (&["SCRIPT", "EXISTS", "abc"], MergePolicy::AllOnes),
            (&["FUNCTION", "FLUSH"], MergePolicy::AllEqual),
            (
                &["INFO", "keyspace"],
                MergePolicy::Info(Box::new(InfoRequest::new(vec![Bytes::from_static(
                    b"keyspace",
                )]))),
            ),
        ] {
            let req = redis(args);
            let Plan::Split(split) = plan_redis(&req, &ring).plan else {
                panic!("{args:?} not fanned out");
            };
            let servers: Vec<usize> = split.parts.iter().map(|(s, _)| *s).collect();
            assert_eq!(servers, [0, 2], "{args:?}");
            assert!(split.parts.iter().all(|(_, w)| w == req.wire()));
            assert_eq!(split.merge, merge);
        }
        let down = ring.with_ejected(&[0, 1, 2]);
        let plan = plan_redis(&redis(&["SCRIPT", "FLUSH"]), &down).plan;
        assert_eq!(plan, Plan::Fail(Failure::AllEjected));
    }

    // The pool's keyspace commands go to every live server; RANDOMKEY
    // starts at a random one.
    #[test]
    fn keyspace_commands_fan_out() {
        let ring = ring().with_ejected(&[1]);
        for (args, merge) in [
            (&["KEYS", "*"][..], MergePolicy::Concat),
            (&["DBSIZE"], MergePolicy::Sum),
        ] {
            let req = redis(args);
            let Plan::Split(split) = plan_redis(&req, &ring).plan else {
                panic!("{args:?} not fanned out");
            };
            let servers: Vec<usize> = split.parts.iter().map(|(s, _)| *s).collect();
            assert_eq!(servers, [0, 2], "{args:?}");
            assert_eq!(split.merge, merge);
        }
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let Plan::Split(split) = plan_redis(&redis(&["RANDOMKEY"]), &ring).plan else {
                panic!("RANDOMKEY not fanned out");
            };
            assert_eq!(split.merge, MergePolicy::FirstKey);
            let mut servers: Vec<usize> = split.parts.iter().map(|(s, _)| *s).collect();
            firsts.insert(servers[0]);
            servers.sort_unstable();
            assert_eq!(servers, [0, 2]);
        }
        assert_eq!(firsts.len(), 2, "RANDOMKEY always starts at one server");
        let plan = plan_redis(&redis(&["TIME"]), &ring).plan;
        assert!(matches!(plan, Plan::One { .. }), "{plan:?}");
    }

    // FLUSHDB/FLUSHALL only where the pool allows them, then to every
    // live server.
    #[test]
    fn flush_needs_allow_flush() {
        let ring = ring();
        for (args, name) in [
            (&["FLUSHALL"][..], "FLUSHALL"),
            (&["flushdb", "ASYNC"], "FLUSHDB"),
        ] {
            let planned = plan_redis(&redis(args), &ring);
            assert_eq!(planned.plan, Plan::Fail(Failure::FlushOff(name)));
            assert_eq!(
                Failure::FlushOff(name).to_string(),
                format!(
                    "ERR twem: {name} is off for this pool: set allow_flush: true in its config"
                )
            );
            let allow = PlanOptions {
                allow_flush: true,
                ..PlanOptions::default()
            };
            let Plan::Split(split) = plan_redis_with(&redis(args), &ring, allow).plan else {
                panic!("{args:?} not fanned out");
            };
            assert_eq!(split.parts.len(), 3);
            assert_eq!(split.merge, MergePolicy::AllOk);
        }
    }

    fn scan_part(plan: Plan) -> (usize, Vec<Bytes>, MergePolicy) {
        let Plan::Split(split) = plan else {
            panic!("not a scan: {plan:?}");
        };
        assert_eq!(split.parts.len(), 1);
        assert_eq!(split.part_of, [0]);
        let (server, wire) = split.parts[0].clone();
        let mut codec = resp::RequestCodec::default();
        let mut buf = bytes::BytesMut::from(&wire[..]);
        let req = tokio_util::codec::Decoder::decode(&mut codec, &mut buf)
            .expect("valid")
            .expect("whole");
        (server, req.args().to_vec(), split.merge)
    }

    // SCAN goes to the one server its cursor names, with that server's
    // own cursor; the options go along untouched.
    #[test]
    fn scan_goes_to_the_cursor_server() {
        let ring = ring();
        let (server, args, merge) = scan_part(plan_redis(&redis(&["SCAN", "0"]), &ring).plan);
        assert_eq!(server, 0);
        assert_eq!(args, [&b"SCAN"[..], b"0"]);
        assert_eq!(
            merge,
            MergePolicy::Scan {
                server: 0,
                next: Some(1)
            }
        );
        let c = (ScanCursor {
            server: 2,
            cursor: 40,
        })
        .encode()
        .expect("fits")
        .to_string();
        let (server, args, merge) =
            scan_part(plan_redis(&redis(&["scan", &c, "MATCH", "a*", "COUNT", "5"]), &ring).plan);
        assert_eq!(server, 2);
        assert_eq!(args, [&b"scan"[..], b"40", b"MATCH", b"a*", b"COUNT", b"5"]);
        assert_eq!(
            merge,
            MergePolicy::Scan {
                server: 2,
                next: None
            }
        );
    }

    // An ejected server is skipped: the scan goes on at the next live
    // server's start, and is over when none is left.
    #[test]
    fn scan_skips_ejected_servers() {
        let ring = ring().with_ejected(&[0, 1]);
        let (server, args, merge) = scan_part(plan_redis(&redis(&["SCAN", "0"]), &ring).plan);
        assert_eq!((server, &args[1][..]), (2, &b"0"[..]));
        assert_eq!(
            merge,
            MergePolicy::Scan {
                server: 2,
                next: None
            }
        );
        let mid = (ScanCursor {
            server: 1,
            cursor: 9,
        })
        .encode()
        .expect("fits");
        let (server, args, _) =
            scan_part(plan_redis(&redis(&["SCAN", &mid.to_string()]), &ring).plan);
        assert_eq!((server, &args[1][..]), (2, &b"0"[..]));
        let ring = self::ring().with_ejected(&[2]);
        let (_, _, merge) = scan_part(plan_redis(&redis(&["SCAN", "0"]), &ring).plan);
        assert_eq!(
            merge,
            MergePolicy::Scan {
                server: 0,
                next: Some(1)
            }
        );
        let (_, _, merge) = scan_part(plan_redis(&redis(&["SCAN", "1"]), &ring).plan);
        assert_eq!(
            merge,
            MergePolicy::Scan {
                server: 1,
                next: None
            }
        );
        let plan = plan_redis(&redis(&["SCAN", "2"]), &ring).plan;
        assert_eq!(plan, Plan::Local(scan::finished()));
        let down = ring.with_ejected(&[0, 1, 2]);
        let plan = plan_redis(&redis(&["SCAN", "0"]), &down).plan;
        assert_eq!(plan, Plan::Fail(Failure::AllEjected));
    }

    // A cursor that is not a number, or names a server the pool does not
    // have, is Redis's "invalid cursor".
    #[test]
    fn scan_refuses_invalid_cursors() {
        for c in ["x", "-1", "3", "65535", "18446744073709551616", ""] {
            let plan = plan_redis(&redis(&["SCAN", c]), &ring()).plan;
            assert_eq!(plan, Plan::Fail(Failure::InvalidCursor), "{c:?}");
        }
        assert_eq!(Failure::InvalidCursor.to_string(), "ERR invalid cursor");
    }

    // Session commands reaching a pool fail with what to use instead.
    #[test]
    fn session_commands_fail_in_a_pool() {
        for (args, words) in [
            (
                &["MULTI"][..],
                "ERR MULTI is per connection: embedders use the Pool's transaction API",
            ),
            (
                &["CLIENT", "SETNAME", "x"],
                "ERR CLIENT is per connection: the proxy's client sessions answer it, a Pool has no connection state",
            ),
        ] {
            let planned = plan_redis(&redis(args), &ring());
            assert_eq!(planned.class, Some(&Class::Session));
            assert_eq!(planned.plan, Plan::Fail(Failure::Session(words)));
        }
    }

    // A session learns WATCH's server from the plan; keys on two servers
    // have none.
    #[test]
    fn watch_names_its_server() {
        let ring = ring();
        let (a, b) = colocated_keys(&ring);
        let plan = plan_redis(&redis(&["WATCH", &a, &b]), &ring).plan;
        assert_eq!(plan.single_server(), Some(at(&ring, &a)));
        let (x, y) = split_keys(&ring);
        let plan = plan_redis(&redis(&["WATCH", &x, &y]), &ring).plan;
        assert_eq!(plan, Plan::Fail(Failure::CrossSlot));
        assert_eq!(plan.single_server(), None);
    }

    // A refused subcommand counts as refused, with its own class.
    #[test]
    fn refused_subcommands_count_as_refused() {
        let planned = plan_redis(&redis(&["CONFIG", "GET", "maxmemory"]), &ring());
        assert!(matches!(planned.class, Some(Class::Refused(_))));
        let planned = plan_redis(&redis(&["CONFIG", "NOSUCH"]), &ring());
        assert_eq!(planned.class, None);
    }

    #[test]
    fn group_numbers_servers_by_first_appearance() {
        assert_eq!(
            group(&[2, 0, 2, 1, 0]),
            (vec![2, 0, 1], vec![0, 1, 0, 2, 1])
        );
        assert_eq!(group(&[]), (vec![], vec![]));
    }
}
