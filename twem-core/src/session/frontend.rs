//! The protocol-specific rules of a client session: how requests are
//! decoded, which ones the session answers itself (AUTH and QUIT for Redis,
//! `quit` and bad lines for memcached) and how failures are worded. They
//! live only here: the [`Pool`] routes everything else the same way for the
//! proxy and for embedders.

use bytes::Bytes;
use tokio_util::codec::Decoder;

use twem_proto::{memcache as mc, resp, Memcache, ProtoError, Resp, Wire};

use crate::pool::{CallError, Inbox, Pool, ReplyFuture};

/// What the session does with one decoded item.
pub enum Step {
    /// Queue this reply.
    Reply(ReplyFuture),
    /// Queue this reply, then close once everything before it is written.
    Close(ReplyFuture),
    /// Nothing to answer (a memcached `noreply` request the pool handles
    /// resolves to [`Frame::NoReply`](crate::pool::Frame::NoReply) instead,
    /// once written; this is for items the frontend swallows).
    Nothing,
}

/// The protocol-specific part of a session.
pub trait Frontend: Send + 'static {
    /// The request decoder.
    type Codec: Decoder<Error = ProtoError> + Send;
    /// A fresh decoder for a new connection.
    fn codec(&self) -> Self::Codec;
    /// Dispatch one decoded item; single-server replies go into `inbox`.
    fn handle(
        &mut self,
        item: <Self::Codec as Decoder>::Item,
        pool: &Pool,
        inbox: &mut Inbox,
    ) -> Step;
    /// The protocol its clients speak: how a failure is worded to them.
    type Wire: Wire;
    /// How a failed call is worded to this client.
    fn error_reply(&self, e: &CallError) -> Bytes {
        e.reply::<Self::Wire>()
    }
    /// What a client whose framing broke reads before the connection
    /// closes; `None` when it reads nothing.
    fn protocol_error(&self, e: &ProtoError) -> Option<Bytes> {
        Self::Wire::protocol_error(e)
    }
    /// Whether output may come that answers no request (pub/sub messages):
    /// the session then also waits on [`Frontend::poll_push`].
    fn has_pushes(&self) -> bool {
        false
    }
    /// `Ready` when [`Frontend::take_push`] has something to write.
    fn poll_push(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Pending
    }
    /// The next unsolicited output, in order.
    fn take_push(&mut self) -> Option<super::pubsub::Push> {
        None
    }
}

/// Redis clients: AUTH handled here (the session knows whether this client
/// authenticated), QUIT answered `+OK` then closed, everything else goes to
/// the pool.
pub struct RedisFrontend {
    authed: bool,
    limits: resp::Limits,
    /// When the client connected (`CLIENT INFO`'s age).
    created: std::time::Instant,
    /// What `HELLO`, `CLIENT` and a transaction set, made on first use:
    /// boxed so that the many clients that never use them stay small
    /// (thousands of idle connections are a case the proxy is measured on).
    state: Option<Box<SessionState>>,
}

/// A Redis client's own state beyond authentication.
#[derive(Default)]
struct SessionState {
    client: super::redis::ClientState,
    txn: super::redis::Txn,
    subs: Option<super::pubsub::Subs>,
}

impl SessionState {
    /// In RESP2 subscriber mode: only subscription commands, PING, QUIT
    /// and RESET are allowed.
    fn subscriber_mode(&self) -> bool {
        self.client.proto == 2 && self.subs.as_ref().is_some_and(|s| s.active())
    }
}

/// Whether `name` may be a command the session answers itself (QUIT, AUTH,
/// HELLO, CLIENT, INFO, MULTI, EXEC, DISCARD, WATCH, UNWATCH, RESET): a
/// test on length and first letter, so that GET, SET and the other
/// commands of the hot path pass with one comparison instead of eleven.
fn session_candidate(name: &[u8]) -> bool {
    let first = name.first().map_or(0, |b| b.to_ascii_lowercase());
    match name.len() {
        4 => matches!(first, b'q' | b'a' | b'e' | b'i'),
        5 => matches!(first, b'h' | b'm' | b'w' | b'r'),
        6 => first == b'c',
        7 => matches!(first, b'd' | b'u'),
        // (P|S)(UN)SUBSCRIBE.
        9..=12 => matches!(first, b's' | b'u' | b'p'),
        _ => false,
    }
}

impl RedisFrontend {
    /// A frontend for a new client. The password checked is the pool's
    /// current `redis_auth`, so a reload that sets one applies to clients
    /// already connected.
    pub fn new() -> Self {
        RedisFrontend {
            authed: false,
            limits: resp::Limits::default(),
            created: std::time::Instant::now(),
            state: None,
        }
    }
}

impl Default for RedisFrontend {
    fn default() -> Self {
        Self::new()
    }
}

use super::redis::ready;

impl Frontend for RedisFrontend {
    type Wire = Resp;
    type Codec = resp::RequestCodec;

    fn codec(&self) -> resp::RequestCodec {
        resp::RequestCodec::new(self.limits)
    }

    fn handle(&mut self, req: resp::Request, pool: &Pool, inbox: &mut Inbox) -> Step {
        let name = req.name();
        // Per-request lines only at nutcracker levels 8+ (TRACE).
        tracing::trace!(pool = pool.name(), client = inbox.hint(),
            command = %String::from_utf8_lossy(name), "request");
        let special = self
            .state
            .as_ref()
            .is_some_and(|s| s.txn.queuing() || s.subscriber_mode());
        if !special && !session_candidate(name) {
            if !self.authed && pool.config().redis_auth.is_some() {
                return Step::Reply(ready(b"-NOAUTH Authentication required\r\n"));
            }
            return Step::Reply(pool.dispatch_redis_in(&req, inbox));
        }
        if name.eq_ignore_ascii_case(b"quit") {
            return Step::Close(ready(b"+OK\r\n"));
        }
        if name.eq_ignore_ascii_case(b"auth") {
            let reply: &'static [u8] = match (&pool.config().redis_auth, req.args().len()) {
                (None, _) => b"-ERR Client sent AUTH, but no password is set\r\n",
                (Some(_), n) if n != 2 => b"-ERR wrong number of arguments for 'auth' command\r\n",
                (Some(pw), _) => {
                    // Constant time: the comparison must not tell an
                    // attacker, by its duration, how much of a guess was
                    // right (lengths still differ in time, which tells only
                    // the length).
                    use subtle::ConstantTimeEq;
                    if bool::from(req.args()[1][..].ct_eq(pw.as_bytes())) {
                        self.authed = true;
                        b"+OK\r\n"
                    } else {
                        self.authed = false;
                        b"-ERR invalid password\r\n"
                    }
                }
            };
            return Step::Reply(ready(reply));
        }
        if name.eq_ignore_ascii_case(b"hello") {
            let state = self.state.get_or_insert_with(Default::default);
            return Step::Reply(super::redis::hello(
                &req,
                pool,
                inbox,
                &mut state.client,
                &mut self.authed,
            ));
        }
        if !self.authed && pool.config().redis_auth.is_some() {
            return Step::Reply(ready(b"-NOAUTH Authentication required\r\n"));
        }
        self.session_command(name, &req, pool, inbox)
    }

    fn has_pushes(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.subs.is_some())
    }

    fn poll_push(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self.state.as_mut().and_then(|s| s.subs.as_mut()) {
            Some(subs) => subs.poll_ready(cx),
            None => std::task::Poll::Pending,
        }
    }

    fn take_push(&mut self) -> Option<super::pubsub::Push> {
        self.state.as_mut()?.subs.as_mut()?.take()
    }
}

impl RedisFrontend {
    /// Commands about this client's session (its name, its transaction),
    /// answered or carried out here; everything else goes to the pool.
    fn session_command(
        &mut self,
        name: &[u8],
        req: &resp::Request,
        pool: &Pool,
        inbox: &mut Inbox,
    ) -> Step {
        let state = self.state.get_or_insert_with(Default::default);
        if !state.txn.queuing() {
            if super::pubsub::is_subscription_command(name) {
                let subs = state
                    .subs
                    .get_or_insert_with(|| super::pubsub::Subs::new(inbox.resp3()));
                return match subs.command(req, pool) {
                    Ok(()) => Step::Nothing,
                    Err(e) => Step::Reply(ReplyFuture::ready(Err(e))),
                };
            }
            if state.subscriber_mode() {
                let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
                if is(b"ping") {
                    if let Some(subs) = state.subs.as_mut() {
                        return match subs.ping(req, pool) {
                            Ok(()) => Step::Nothing,
                            Err(e) => Step::Reply(ReplyFuture::ready(Err(e))),
                        };
                    }
                } else if !is(b"reset") {
                    return Step::Reply(ReplyFuture::ready(Ok(Bytes::from(format!(
                        "-ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / \
                         PING / QUIT / RESET are allowed in this context\r\n",
                        String::from_utf8_lossy(name).to_lowercase()
                    )))));
                }
            }
        }
        Step::Reply(self.command_reply(name, req, pool, inbox))
    }

    /// The reply to a session command that has one.
    fn command_reply(
        &mut self,
        name: &[u8],
        req: &resp::Request,
        pool: &Pool,
        inbox: &mut Inbox,
    ) -> ReplyFuture {
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        let created = self.created;
        let state = self.state.get_or_insert_with(Default::default);
        let txn = &mut state.txn;
        if txn.queuing() {
            return if is(b"exec") {
                txn.exec(pool, inbox)
            } else if is(b"discard") {
                txn.discard()
            } else if is(b"multi") {
                txn.multi()
            } else if is(b"watch") {
                txn.watch(req, pool, inbox)
            } else if is(b"reset") {
                self.reset(inbox)
            } else {
                txn.queue(req, pool)
            };
        }
        if is(b"multi") {
            txn.multi()
        } else if is(b"exec") {
            txn.exec(pool, inbox)
        } else if is(b"discard") {
            txn.discard()
        } else if is(b"watch") {
            txn.watch(req, pool, inbox)
        } else if is(b"unwatch") {
            txn.unwatch(inbox)
        } else if is(b"client") {
            super::redis::client(req, inbox, &mut state.client, created)
        } else if is(b"reset") {
            self.reset(inbox)
        } else if is(b"info") && inbox.resp3() {
            // Redis sends INFO's text as a verbatim string in RESP3.
            let fut = pool.dispatch_redis_in(req, inbox);
            ReplyFuture::from_future(async move { Ok(super::redis::bulk_to_verbatim(fut.await?)) })
        } else {
            pool.dispatch_redis_in(req, inbox)
        }
    }

    /// `RESET`: as a new connection (RESP2, no name, no transaction; with
    /// `redis_auth` set, not authenticated). A pinned connection is dropped
    /// (closed once idle), not reused: what it watched is unknown here.
    fn reset(&mut self, inbox: &mut Inbox) -> ReplyFuture {
        self.state = None;
        self.authed = false;
        inbox.set_resp3(false);
        ready(b"+RESET\r\n")
    }
}

/// memcached clients: bad command lines answered with the codec's
/// `ERROR`/`CLIENT_ERROR`, `quit` closes, everything else goes to the pool.
pub struct MemcacheFrontend {
    limits: mc::Limits,
}

impl MemcacheFrontend {
    /// A frontend with the default limits.
    pub fn new() -> Self {
        MemcacheFrontend {
            limits: crate::pool::memcache_limits(),
        }
    }
}

impl Default for MemcacheFrontend {
    fn default() -> Self {
        Self::new()
    }
}

impl Frontend for MemcacheFrontend {
    type Wire = Memcache;
    type Codec = mc::RequestCodec;

    fn codec(&self) -> mc::RequestCodec {
        mc::RequestCodec::new(self.limits)
    }

    fn handle(
        &mut self,
        item: Result<mc::Request, mc::RequestError>,
        pool: &Pool,
        inbox: &mut Inbox,
    ) -> Step {
        if let Ok(req) = &item {
            // Per-request lines only at nutcracker levels 8+ (TRACE).
            tracing::trace!(pool = pool.name(), client = inbox.hint(),
                command = ?req.command(), "request");
        }
        match item {
            // memcached stays silent about a bad line that ended in noreply,
            // and drops a connection whose data block can't be delimited.
            Err(e) if e.closes_connection() => Step::Close(ReplyFuture::ready(Ok(e.reply()))),
            Err(e) if e.noreply() => Step::Nothing,
            Err(e) => Step::Reply(ReplyFuture::ready(Ok(e.reply()))),
            Ok(req) if req.command() == mc::Command::Quit => Step::Close(ReplyFuture::no_reply()),
            Ok(req) => Step::Reply(pool.dispatch_memcache_in(&req, inbox)),
        }
    }
}
