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

/// A client's subscriptions; see the module docs.
pub(super) struct Subs {
    resp3: bool,
    sink: PushSink,
    rx: mpsc::UnboundedReceiver<PushItem>,
    conns: Vec<Conn>,
    /// Subscriptions the servers confirmed: the counts the client reads.
    confirmed: HashMap<Family, HashSet<Bytes>>,
    /// Confirmations to swallow, by (family, subscribe?, name): a pattern
    /// is confirmed by every server, the client expects one confirmation.
    dupes: HashMap<(Family, bool, Bytes), usize>,
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
            dupes: HashMap::new(),
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
                let name = pool
                    .ring()
                    .servers()
                    .get(server)
                    .map_or_else(|| server.to_string(), |s| s.name.clone());
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
        // Which servers get which names.
        let mut plan: Vec<(usize, Vec<Bytes>)> = Vec::new();
        let mut add = |server: usize, name: Bytes| match plan.iter_mut().find(|(s, _)| *s == server)
        {
            Some((_, v)) => v.push(name),
            None => plan.push((server, vec![name])),
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
                    *self
                        .dupes
                        .entry((family, subscribe, name.clone()))
                        .or_default() += live.len() - 1;
                }
            }
            (_, false) => {
                for name in &names {
                    let Some(s) = ring.locate(name) else {
                        return Err(pool.failure_error(crate::pool::route::Failure::AllEjected));
                    };
                    add(s, name.clone());
                }
            }
            // UNSUBSCRIBE with no name: every connection that has some.
            (_, true) => {
                let mut seen: HashMap<Bytes, usize> = HashMap::new();
                for c in &self.conns {
                    let Some(set) = c.sent.get(&family).filter(|s| !s.is_empty()) else {
                        continue;
                    };
                    plan.push((c.server, Vec::new()));
                    for name in set {
                        *seen.entry(name.clone()).or_default() += 1;
                    }
                }
                if plan.is_empty() {
                    // Nothing to unsubscribe from: Redis still confirms once.
                    self.out
                        .push_back(Push::Data(self.confirmation(family, false, None)));
                    return Ok(());
                }
                // A pattern on several connections is confirmed by each:
                // the first confirmation is the client's.
                for (name, n) in seen {
                    if n > 1 {
                        *self.dupes.entry((family, false, name)).or_default() += n - 1;
                    }
                }
            }
        }
        for (server, names) in plan {
            // An UNSUBSCRIBE for a channel never subscribed: confirmed here,
            // as Redis would, without opening a connection for it.
            if !subscribe && !names.is_empty() && !self.conns.iter().any(|c| c.server == server) {
                for n in names {
                    self.out
                        .push_back(Push::Data(self.confirmation(family, false, Some(&n))));
                }
                continue;
            }
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

    /// A frame from server `server`: a confirmation is counted and
    /// re-encoded (or swallowed when another server already confirmed it);
    /// anything else (messages, `pong`) passes as the server sent it.
    fn on_frame(&mut self, frame: resp::ReplyFrame) {
        let items = match frame.parse() {
            Reply::Push(v) => v,
            Reply::Array(Some(v)) => v,
            _ => {
                self.out.push_back(Push::Data(frame.into_raw()));
                return;
            }
        };
        let kind = match items.first() {
            Some(Reply::Bulk(Some(k))) => k.clone(),
            _ => {
                self.out.push_back(Push::Data(frame.into_raw()));
                return;
            }
        };
        let Some((family, subscribe)) = Family::of_command(&kind) else {
            self.out.push_back(Push::Data(frame.into_raw()));
            return;
        };
        if subscribe {
            self.unconfirmed = self.unconfirmed.saturating_sub(1);
        }
        let name = match items.get(1) {
            Some(Reply::Bulk(Some(n))) => Some(n.clone()),
            _ => None,
        };
        if let Some(n) = &name {
            let key = (family, subscribe, n.clone());
            let already = self.already(family, subscribe, n);
            if let Some(left) = self.dupes.get_mut(&key) {
                if *left > 0 && already {
                    *left -= 1;
                    if *left == 0 {
                        self.dupes.remove(&key);
                    }
                    return;
                }
            }
            let set = self.confirmed.entry(family).or_default();
            if subscribe {
                set.insert(n.clone());
            } else {
                set.remove(n);
            }
        }
        self.out.push_back(Push::Data(self.confirmation(
            family,
            subscribe,
            name.as_ref(),
        )));
    }

    /// Whether the client already saw this confirmation (from another
    /// server): the pattern is already in (or already out of) its set.
    fn already(&self, family: Family, subscribe: bool, name: &Bytes) -> bool {
        let has = self
            .confirmed
            .get(&family)
            .is_some_and(|s| s.contains(name));
        has == subscribe
    }

    /// Poll for what to write next: moves what the connections read into
    /// the output queue. `Ready` when there is something.
    pub(super) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.out.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(PushItem::Frame(frame))) => {
                    self.sink.bytes.fetch_sub(frame.raw().len(), Relaxed);
                    self.on_frame(frame);
                }
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
