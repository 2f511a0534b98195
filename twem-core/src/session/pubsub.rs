//! A Redis client's subscriptions: `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`
//! and their `UNSUBSCRIBE`s, on backend connections dedicated to it.
//!
//! A channel is placed like a key (hash tag, hash, ring), so `PUBLISH ch`
//! through the proxy and `SUBSCRIBE ch` meet on one server. The client gets
//! one subscription connection per server its channels map to; a pattern
//! can match channels of every server, so `PSUBSCRIBE` goes to every live
//! server. Whatever those connections read comes here ([`PushItem`]) and is
//! written to the client in the order each server sent it.
//!
//! Redis's confirmations carry the number of subscriptions of *that*
//! connection; the client must read its own total, so every confirmation is
//! re-encoded with the count kept here, and a pattern confirmed by every
//! server reaches the client once. A subscription connection lost ends the
//! client's connection, with an error saying so: a subscriber that lost
//! messages must know (it reconnects and subscribes again), never silently.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use twem_proto::resp::{self, Reply};

use crate::pool::{CallError, Pinned, Pool, RequestError, PLACEHOLDER_KEY};
use crate::pool::{PushItem, PushSink};

/// What the session writes next for a subscriber.
pub enum Push {
    /// These bytes.
    Data(Bytes),
    /// These bytes, then close the connection.
    Close(Bytes),
}

/// The three families of subscriptions Redis counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Family {
    Channel,
    Pattern,
    Shard,
}

impl Family {
    fn of_command(name: &[u8]) -> Option<(Family, bool)> {
        let lower = name.to_ascii_lowercase();
        Some(match &lower[..] {
            b"subscribe" => (Family::Channel, true),
            b"unsubscribe" => (Family::Channel, false),
            b"psubscribe" => (Family::Pattern, true),
            b"punsubscribe" => (Family::Pattern, false),
            b"ssubscribe" => (Family::Shard, true),
            b"sunsubscribe" => (Family::Shard, false),
            _ => return None,
        })
    }

    fn verb(self, subscribe: bool) -> &'static [u8] {
        match (self, subscribe) {
            (Family::Channel, true) => b"subscribe",
            (Family::Channel, false) => b"unsubscribe",
            (Family::Pattern, true) => b"psubscribe",
            (Family::Pattern, false) => b"punsubscribe",
            (Family::Shard, true) => b"ssubscribe",
            (Family::Shard, false) => b"sunsubscribe",
        }
    }
}

/// Whether `name` is one of the six (un)subscribe commands.
pub(super) fn is_subscription_command(name: &[u8]) -> bool {
    Family::of_command(name).is_some()
}

/// One subscription connection: its server and what was sent on it.
struct Conn {
    server: usize,
    /// The server's name, for the client's error when the connection ends.
    name: String,
    pin: Pinned,
    /// Subscribed on it, as sent (a pipelined UNSUBSCRIBE must find the
    /// connection before the server confirmed the SUBSCRIBE).
    sent: HashMap<Family, HashSet<Bytes>>,
}

/// One (un)subscribe command of the client, until every confirmation of
/// it has come.
struct Batch {
    family: Family,
    subscribe: bool,
    /// The names in the client's order, each with the confirmations still
    /// to come (a pattern: one from every server it was sent to).
    names: Vec<(Bytes, usize)>,
    /// `UNSUBSCRIBE` with no name: confirmations still to come, for names
    /// the servers choose; `arrived` keeps each name once.
    all: Option<usize>,
    arrived: Vec<Bytes>,
}

impl Batch {
    fn complete(&self) -> bool {
        self.all.is_none_or(|n| n == 0) && self.names.iter().all(|(_, n)| *n == 0)
    }

    /// Count one confirmation of `name` against this batch, if it is one of
    /// its own.
    fn take(&mut self, family: Family, subscribe: bool, name: &Bytes) -> bool {
        if self.family != family || self.subscribe != subscribe {
            return false;
        }
        if let Some(n) = self.all.as_mut().filter(|n| **n > 0) {
            *n -= 1;
            if !self.arrived.contains(name) {
                self.arrived.push(name.clone());
            }
            return true;
        }
        match self
            .names
            .iter_mut()
            .find(|(n, left)| n == name && *left > 0)
        {
            Some((_, left)) => {
                *left -= 1;
                true
            }
            None => false,
        }
    }
}

/// A client's subscriptions; see the module docs.
pub(super) struct Subs {
    resp3: bool,
    sink: PushSink,
    rx: mpsc::UnboundedReceiver<PushItem>,
    conns: Vec<Conn>,
    /// Subscriptions the servers confirmed: the counts the client reads.
    confirmed: HashMap<Family, HashSet<Bytes>>,
    /// The client's (un)subscribe commands whose confirmations are still
    /// coming, in the client's order: confirmations reach the client in
    /// the order it named the channels, whichever server answers first.
    batches: VecDeque<Batch>,
    /// Messages that came while confirmations before them were still
    /// awaited (they follow them, as on one Redis connection), with their
    /// sizes, still counted against the client's bound.
    held: VecDeque<Bytes>,
    /// Ready for the client, in order.
    out: VecDeque<Push>,
    /// Subscribe confirmations still to come: while any is, the client is
    /// in subscriber mode even if its confirmed count is 0. (Pending
    /// unsubscribes do not count: a client that read a count of 0 is out.)
    unconfirmed: usize,
}

impl Subs {
    pub(super) fn new(resp3: bool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Subs {
            resp3,
            sink: PushSink {
                tx,
                bytes: Arc::new(AtomicUsize::new(0)),
            },
            rx,
            conns: Vec::new(),
            confirmed: HashMap::new(),
            batches: VecDeque::new(),
            held: VecDeque::new(),
            out: VecDeque::new(),
            unconfirmed: 0,
        }
    }

    /// Whether the client has subscriptions (or is about to): in RESP2 it
    /// may then send only the subscription commands, `PING`, `QUIT` and
    /// `RESET`.
    pub(super) fn active(&self) -> bool {
        self.unconfirmed > 0 || self.confirmed.values().any(|s| !s.is_empty())
    }

    fn count(&self, family: Family) -> usize {
        let n = |f| self.confirmed.get(&f).map_or(0, HashSet::len);
        match family {
            // Redis counts channels and patterns together, shard channels
            // apart.
            Family::Channel | Family::Pattern => n(Family::Channel) + n(Family::Pattern),
            Family::Shard => n(Family::Shard),
        }
    }

    /// The subscription connection to `server`, opened if needed.
    fn conn(&mut self, pool: &Pool, server: usize) -> Result<&mut Conn, CallError> {
        let at = match self.conns.iter().position(|c| c.server == server) {
            Some(i) => i,
            None => {
                let pin = pool.pin_subscriber(server, self.resp3, self.sink.clone())?;
                let name = pool.server_label(server);
                self.conns.push(Conn {
                    server,
                    name,
                    pin,
                    sent: HashMap::new(),
                });
                self.conns.len() - 1
            }
        };
        self.conns
            .get_mut(at)
            .ok_or_else(|| CallError::Request(RequestError::uncoded("no subscription connection")))
    }

    /// A subscription command from the client. `Ok(())` when sent (the
    /// confirmations come later, through [`Subs::poll_ready`]); `Err` is the
    /// error reply.
    pub(super) fn command(&mut self, req: &resp::Request, pool: &Pool) -> Result<(), CallError> {
        let args = req.args();
        let Some((family, subscribe)) = args.first().and_then(|n| Family::of_command(n)) else {
            return Err(CallError::Request(RequestError::uncoded(
                "not a subscription command",
            )));
        };
        let names: Vec<Bytes> = args.get(1..).unwrap_or_default().to_vec();
        if subscribe && names.is_empty() {
            return Err(CallError::Request(RequestError::new(
                "ERR",
                format!(
                    "wrong number of arguments for '{}' command",
                    String::from_utf8_lossy(family.verb(true))
                ),
            )));
        }
        let ring = pool.ring();
        // Which servers get which names, and the batch of confirmations the
        // client will read, in its order.
        let mut plan: Vec<(usize, Vec<Bytes>)> = Vec::new();
        let mut add = |server: usize, name: Bytes| match plan.iter_mut().find(|(s, _)| *s == server)
        {
            Some((_, v)) => v.push(name),
            None => plan.push((server, vec![name])),
        };
        let mut batch = Batch {
            family,
            subscribe,
            names: Vec::new(),
            all: None,
            arrived: Vec::new(),
        };
        match (family, names.is_empty()) {
            (Family::Pattern, false) => {
                let live: Vec<usize> = (0..ring.servers().len())
                    .filter(|&s| ring.is_live(s))
                    .collect();
                if live.is_empty() {
                    return Err(pool.failure_error(crate::pool::route::Failure::AllEjected));
                }
                for name in &names {
                    for &s in &live {
                        add(s, name.clone());
                    }
                    batch.names.push((name.clone(), live.len()));
                }
            }
            (_, false) => {
                for name in &names {
                    // A cluster's shard channels live on their slot's node
                    // (SSUBSCRIBE); classic channels anywhere (broadcast).
                    let at = match family {
                        Family::Shard => pool.locate_shard_channel(name),
                        _ => ring.locate(name),
                    };
                    let Some(s) = at else {
                        return Err(pool.failure_error(crate::pool::route::Failure::AllEjected));
                    };
                    // A channel never subscribed has no connection: Redis
                    // confirms its UNSUBSCRIBE anyway, and so does this.
                    let known = subscribe || self.conns.iter().any(|c| c.server == s);
                    batch.names.push((name.clone(), usize::from(known)));
                    if known {
                        add(s, name.clone());
                    }
                }
            }
            // UNSUBSCRIBE with no name: every connection that has some.
            (_, true) => {
                let mut expected = 0;
                for c in &self.conns {
                    let Some(set) = c.sent.get(&family).filter(|s| !s.is_empty()) else {
                        continue;
                    };
                    plan.push((c.server, Vec::new()));
                    expected += set.len();
                }
                if plan.is_empty() {
                    // Nothing to unsubscribe from: Redis still confirms once.
                    self.out
                        .push_back(Push::Data(self.confirmation(family, false, None)));
                    return Ok(());
                }
                batch.all = Some(expected);
            }
        }
        self.batches.push_back(batch);
        for (server, names) in plan {
            let verb = family.verb(subscribe);
            let conn = self.conn(pool, server)?;
            let set = conn.sent.entry(family).or_default();
            let expected = if names.is_empty() {
                let n = set.len();
                set.clear();
                n
            } else {
                for n in &names {
                    if subscribe {
                        set.insert(n.clone());
                    } else {
                        set.remove(n);
                    }
                }
                names.len()
            };
            let mut args = Vec::with_capacity(names.len() + 1);
            args.push(Bytes::from_static(verb));
            args.extend(names);
            let wire = resp::Request::from_args(args).wire().clone();
            pool.send_subscription(&conn.pin, wire)?;
            if subscribe {
                self.unconfirmed += expected;
            }
        }
        // Confirmations made here (channels never subscribed) may complete
        // the batch at once.
        self.drain();
        Ok(())
    }

    /// `PING` while subscribed (RESP2): answered by a subscription
    /// connection, in order with its confirmations, as Redis answers it
    /// (`*2 pong <arg>`).
    pub(super) fn ping(&mut self, req: &resp::Request, pool: &Pool) -> Result<(), CallError> {
        let server = match self.conns.first() {
            Some(c) => c.server,
            None => pool
                .ring()
                .locate(PLACEHOLDER_KEY)
                .ok_or_else(|| pool.failure_error(crate::pool::route::Failure::AllEjected))?,
        };
        let conn = self.conn(pool, server)?;
        pool.send_subscription(&conn.pin, req.wire().clone())
    }

    /// A confirmation as the client reads it: its own count.
    fn confirmation(&self, family: Family, subscribe: bool, name: Option<&Bytes>) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_slice(if self.resp3 { b">3\r\n" } else { b"*3\r\n" });
        let verb = family.verb(subscribe);
        b.put_slice(format!("${}\r\n", verb.len()).as_bytes());
        b.put_slice(verb);
        b.put_slice(b"\r\n");
        match name {
            Some(n) => {
                b.put_slice(format!("${}\r\n", n.len()).as_bytes());
                b.put_slice(n);
                b.put_slice(b"\r\n");
            }
            None => b.put_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" }),
        }
        b.put_slice(format!(":{}\r\n", self.count(family)).as_bytes());
        b.freeze()
    }

    /// A frame a subscription connection read: a confirmation counts
    /// towards its batch (and reaches the client in the client's order, with
    /// the client's own count); anything else (messages, `pong`) passes as
    /// the server sent it, after the confirmations still awaited.
    fn on_frame(&mut self, frame: resp::ReplyFrame) {
        let len = frame.raw().len();
        let confirmation = match frame.parse() {
            Reply::Push(v) | Reply::Array(Some(v)) => match (v.first(), v.get(1)) {
                (Some(Reply::Bulk(Some(k))), name) => Family::of_command(k).map(|fs| {
                    let name = match name {
                        Some(Reply::Bulk(Some(n))) => Some(n.clone()),
                        _ => None,
                    };
                    (fs, name)
                }),
                _ => None,
            },
            _ => None,
        };
        let Some(((family, subscribe), name)) = confirmation else {
            if self.batches.is_empty() {
                self.sink.bytes.fetch_sub(len, Relaxed);
                self.out.push_back(Push::Data(frame.into_raw()));
            } else {
                self.held.push_back(frame.into_raw());
            }
            return;
        };
        self.sink.bytes.fetch_sub(len, Relaxed);
        if subscribe {
            self.unconfirmed = self.unconfirmed.saturating_sub(1);
        }
        let name = name.unwrap_or_default();
        let counted = self
            .batches
            .iter_mut()
            .any(|b| b.take(family, subscribe, &name));
        if !counted {
            // Not one the client asked for (a server's own): passed on.
            self.apply(family, subscribe, &name);
            let c = self.confirmation(family, subscribe, Some(&name));
            self.out.push_back(Push::Data(c));
        }
        self.drain();
    }

    /// The client's view of a confirmed (un)subscription.
    fn apply(&mut self, family: Family, subscribe: bool, name: &Bytes) {
        let set = self.confirmed.entry(family).or_default();
        if subscribe {
            set.insert(name.clone());
        } else {
            set.remove(name);
        }
    }

    /// Write the confirmations of every complete batch at the front, in the
    /// client's order; then, with none awaited, the messages held.
    fn drain(&mut self) {
        while self.batches.front().is_some_and(Batch::complete) {
            let Some(b) = self.batches.pop_front() else {
                break;
            };
            let names: Vec<Bytes> = match b.all {
                Some(_) => b.arrived,
                None => b.names.into_iter().map(|(n, _)| n).collect(),
            };
            for n in names {
                self.apply(b.family, b.subscribe, &n);
                let c = self.confirmation(b.family, b.subscribe, Some(&n));
                self.out.push_back(Push::Data(c));
            }
        }
        if self.batches.is_empty() {
            while let Some(m) = self.held.pop_front() {
                self.sink.bytes.fetch_sub(m.len(), Relaxed);
                self.out.push_back(Push::Data(m));
            }
            // Nothing subscribed any more: the connections are closed, so a
            // client that unsubscribed holds none (it gets new ones if it
            // subscribes again).
            let idle = self.unconfirmed == 0
                && self.confirmed.values().all(HashSet::is_empty)
                && self
                    .conns
                    .iter()
                    .all(|c| c.sent.values().all(HashSet::is_empty));
            if idle {
                self.conns.clear();
            }
        }
    }

    /// Poll for what to write next: moves what the connections read into
    /// the output queue. `Ready` when there is something.
    pub(super) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.out.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(PushItem::Frame(frame))) => self.on_frame(frame),
                Poll::Ready(Some(PushItem::Lost(server, why))) => {
                    let name = self
                        .conns
                        .iter()
                        .find(|c| c.server == server)
                        .map_or_else(|| server.to_string(), |c| c.name.clone());
                    self.conns.clear();
                    self.out.push_back(Push::Close(Bytes::from(format!(
                        "-ERR twem: the subscription connection to server {name} ended: {why}; \
                         your subscriptions ended with it (reconnect and subscribe again)\r\n"
                    ))));
                }
                // The sink is held here: never closed while Subs lives.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    /// The next thing to write, if any is ready.
    pub(super) fn take(&mut self) -> Option<Push> {
        self.out.pop_front()
    }
}
