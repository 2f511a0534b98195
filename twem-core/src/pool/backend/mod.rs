//! One backend connection: a task that owns the socket to a server, writes the
//! requests it is handed in batches and matches replies to them in FIFO order.
//!
//! Many clients share it: requests arrive on an unbounded channel (each
//! client bounds its own in-flight requests, so the channel is bounded by the
//! sum of those bounds) and each carries where its reply goes (a oneshot, or
//! a slot of its client's [`Inbox`](super::Inbox)). The task
//! connects lazily on the first request (or at start with `preconnect`),
//! reconnects on the next request after a failure, and never lets a reply be
//! matched to the wrong request: on timeout, EOF, a reset or a reply it cannot
//! parse, it closes the socket and fails every request that was on it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::codec::Decoder;

use twem_proto::{memcache as mc, resp, Memcache, ProtoError, Resp, Wire};

mod queue;

use queue::InFlightQueue;

use super::error::{BackendError, BackendErrorKind, TlsProblem};
use super::{PoolShared, Protocol};
use crate::config::ServerAddr;
use crate::tls::{BackendTls, FlushingWrite};
use rustls_pki_types::ServerName;
use tokio_rustls::client::TlsStream;

/// Most requests written to one connection and not yet answered. Past this
/// the task stops taking new requests until replies come back, which bounds
/// the memory one slow server can pin.
const MAX_IN_FLIGHT: usize = 4096;
/// Requests taken from the channel in one go, so one write carries many.
const BATCH: usize = 256;
/// Initial read buffer; grows as replies need.
const READ_CHUNK: usize = 16 * 1024;

/// What a reply must be parsed as: RESP needs no context, memcached replies
/// are parsed in the context of their request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// A RESP reply.
    Resp,
    /// The reply to this memcached command.
    Mc(mc::Command),
    /// The reply to a quiet memcached meta request sent with an `mn` after
    /// it: whatever the server sent before its `MN` (maybe nothing).
    McQuiet,
    /// A cluster node's `+OK` to `ASKING`, then the RESP reply of the
    /// request written right after it in the same message: the first is
    /// read and dropped (see `pool/cluster.rs`).
    Asking,
}

/// A reply as it came from a server.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A Redis reply.
    Resp(resp::ReplyFrame),
    /// A memcached reply.
    Mc(mc::ReplyFrame),
    /// A memcached `noreply` request left the proxy (written to its server,
    /// or dropped with its connection): there is nothing to read, but its
    /// client's budget of bytes in flight is free again.
    NoReply,
}

/// The bytes of [`Frame::NoReply`].
static NO_REPLY: Bytes = Bytes::new();

impl Frame {
    /// Whether the server answered with an error.
    pub fn is_error(&self) -> bool {
        match self {
            Frame::Resp(f) => f.is_error(),
            Frame::Mc(f) => f.is_error(),
            Frame::NoReply => false,
        }
    }

    /// The exact bytes the server sent (empty for [`Frame::NoReply`]).
    pub fn raw(&self) -> &Bytes {
        match self {
            Frame::Resp(f) => f.raw(),
            Frame::Mc(f) => f.raw(),
            Frame::NoReply => &NO_REPLY,
        }
    }

    /// The bytes the server sent, taken out of the frame (no reference-count
    /// bump); empty for [`Frame::NoReply`].
    pub fn into_raw(self) -> Bytes {
        match self {
            Frame::Resp(f) => f.into_raw(),
            Frame::Mc(f) => f.into_raw(),
            Frame::NoReply => Bytes::new(),
        }
    }
}

/// Where the reply to one request goes.
pub(crate) enum ReplyTx {
    /// A oneshot channel: embedded calls and the fragments of split commands.
    Oneshot(oneshot::Sender<Result<Frame, BackendError>>),
    /// A slot of the client's inbox: sessions' single-server requests.
    Slot(super::inbox::SlotTx),
    /// A cluster pool's request: a redirection in its reply is followed
    /// before the reply goes on (see `pool/cluster.rs`).
    Cluster(Box<super::cluster::Retry>),
}

impl ReplyTx {
    /// Hand over the reply; nobody waiting is not an error.
    #[inline]
    pub(crate) fn send(self, r: Result<Frame, BackendError>) {
        match self {
            ReplyTx::Oneshot(tx) => {
                let _ = tx.send(r);
            }
            ReplyTx::Slot(tx) => tx.send(r),
            ReplyTx::Cluster(retry) => retry.deliver(r),
        }
    }
}

/// One request for a backend connection.
pub(crate) struct BackendReq {
    /// The bytes to write.
    pub wire: Bytes,
    /// How to parse its reply; `None` for a memcached `noreply` request,
    /// which gets none.
    pub expect: Option<Expect>,
    /// Where the reply goes; `None` when nobody waits. A `noreply` request's
    /// sender gets [`Frame::NoReply`] once the request is written (or lost
    /// with its connection), so that its client counts it as in flight
    /// until then: a stalled server holds that client back instead of
    /// letting it queue without bound.
    pub reply: Option<ReplyTx>,
}

/// A message for a connection task.
pub(crate) enum Msg {
    /// Forward a request.
    Req(BackendReq),
    /// Finish what is in flight, then close (pool closing or replaced).
    Close,
    /// Finish what is in flight, then close the socket but keep the task,
    /// which connects again on its next request (a cluster node that left
    /// the slot map; it may come back).
    Disconnect,
}

/// Reply parser state for one connection.
enum ReplyDecoder {
    Resp(resp::ReplyCodec),
    Mc(mc::ReplyDecoder, mc::Limits),
}

impl ReplyDecoder {
    fn new(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Redis => {
                ReplyDecoder::Resp(Resp::reply_decoder(&super::redis_reply_limits()))
            }
            Protocol::Memcache => ReplyDecoder::Mc(
                Memcache::reply_decoder(&super::memcache_limits()),
                super::memcache_limits(),
            ),
        }
    }

    /// The next reply in `buf`, parsed as `expect`; the error says what was
    /// malformed (logged when the connection is dropped for it).
    #[inline]
    fn decode(&mut self, expect: Expect, buf: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        match (self, expect) {
            (ReplyDecoder::Resp(codec), _) => codec.decode(buf).map(|f| f.map(Frame::Resp)),
            (ReplyDecoder::Mc(dec, limits), Expect::Mc(cmd)) => {
                dec.decode(cmd, buf, limits).map(|f| f.map(Frame::Mc))
            }
            (ReplyDecoder::Mc(dec, limits), Expect::McQuiet) => {
                dec.decode_quiet(buf, limits).map(|f| f.map(Frame::Mc))
            }
            (ReplyDecoder::Mc(..), Expect::Resp | Expect::Asking) => Err(ProtoError::protocol(
                "a RESP reply was expected on a memcached connection",
            )),
        }
    }
}

/// Which kind of connection a task serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Lane {
    /// Negotiated with `HELLO 3`: its replies are RESP3, for clients that
    /// asked for RESP3 (they never share a connection with RESP2 clients,
    /// whose replies would otherwise change type under them).
    pub resp3: bool,
    /// Held by one client (a transaction): the connection carries that
    /// client's state (`WATCH`, `MULTI`), so when it is lost the task ends
    /// instead of reconnecting. A fresh connection would silently drop the
    /// watched keys and the client would commit blind.
    pub pinned: bool,
    /// Borrowed for one blocking command (`BLPOP`, `XREAD BLOCK`): no pool
    /// `timeout` on its replies, the borrower bounds the wait.
    pub blocking: bool,
    /// A client's subscriptions: every frame read goes to its
    /// [`PushSink`], none is matched to a request.
    pub pubsub: bool,
    /// Reads sent to replica slot `r` of the server (`read_from`), not to
    /// its master: the address comes from the slot, a failure takes the
    /// replica out of reads instead of counting against the server.
    pub replica: Option<u8>,
}

/// Most bytes of pub/sub messages one client may have waiting (read from
/// its servers, not yet written to it) before its subscriptions are ended:
/// Redis's own default `client-output-buffer-limit pubsub` hard limit.
pub(crate) const MAX_PUSH_BYTES: usize = 32 * 1024 * 1024;

/// What a subscription connection hands its client's session.
#[derive(Debug)]
pub(crate) enum PushItem {
    /// A frame the server sent: a confirmation, a message, a `pong`.
    Frame(resp::ReplyFrame),
    /// The connection to server `.0` ended; the subscriptions on it with it.
    Lost(usize, String),
}

/// Where a subscription connection sends what it reads: its client's
/// session, which counts the bytes waiting there against
/// [`MAX_PUSH_BYTES`].
#[derive(Debug, Clone)]
pub(crate) struct PushSink {
    pub tx: mpsc::UnboundedSender<PushItem>,
    pub bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl PushSink {
    /// Hand a frame over; `false` when the client's bound is reached (or
    /// the session is gone).
    fn send(&self, frame: resp::ReplyFrame) -> bool {
        let len = frame.raw().len();
        let waiting = self.bytes.fetch_add(len, Relaxed) + len;
        waiting <= MAX_PUSH_BYTES && self.tx.send(PushItem::Frame(frame)).is_ok()
    }
}

/// The task behind one connection slot of a server: it waits for a
/// request (or connects at once with `preconnect`), connects, serves the
/// connection until it fails or the pool closes it, and starts again on the
/// next request. Runs until the pool is dropped or closed.
pub(crate) struct ConnTask {
    shared: Arc<PoolShared>,
    idx: usize,
    lane: Lane,
    rx: mpsc::UnboundedReceiver<Msg>,
    sink: Option<PushSink>,
    /// The server's address, watched while connected in a Sentinel pool.
    switch: Switch,
}

/// A connection's watch on its server's address (see
/// [`ServerShared::addr`](super::ServerShared)): in a Sentinel pool a
/// failover ends every connection to the old master. In a pool of fixed
/// addresses nothing ever changes and the watch is never polled.
pub(crate) struct Switch {
    rx: AddrRx,
    active: bool,
    /// The address the connection is for.
    at: Option<Arc<ServerAddr>>,
    /// The wait for the next change, kept across turns of the connection's
    /// loop (boxed once, on the first turn of a Sentinel pool's
    /// connection): a `changed()` future made afresh on every turn cost
    /// every pool ~17 instructions a request (callgrind).
    waiting: Option<AddrWait>,
}

/// A watch on a server's (or replica slot's) address.
type AddrRx = tokio::sync::watch::Receiver<Option<Arc<ServerAddr>>>;

/// The wait for the next change of an address: the receiver back, and
/// whether the watch is still open.
type AddrWait = Pin<Box<dyn std::future::Future<Output = (AddrRx, bool)> + Send>>;

/// Wait on `rx` (its own receiver) for the next change.
fn wait_next(mut rx: AddrRx) -> AddrWait {
    Box::pin(async move {
        let open = rx.changed().await.is_ok();
        (rx, open)
    })
}

impl Switch {
    fn new(shared: &PoolShared, idx: usize, lane: Lane) -> Switch {
        let server = &shared.servers[idx];
        let replica = lane
            .replica
            .and_then(|r| server.replicas.get(usize::from(r)));
        Switch {
            rx: match replica {
                Some(slot) => slot.addr.subscribe(),
                None => server.addr.subscribe(),
            },
            // A replica slot changes hands when the sentinels say so, a
            // cluster node entry when a new node takes it.
            active: shared.config.sentinel.is_some()
                || shared.cluster.is_some()
                || replica.is_some(),
            at: None,
            waiting: None,
        }
    }

    /// Ready when the address changed since the last time this was ready
    /// (`false`: the watch ended, nothing will change any more). Its own
    /// copy of the receiver waits, so `rx` stays free for [`Switch::moved`].
    fn poll_changed(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        let waiting = self
            .waiting
            .get_or_insert_with(|| wait_next(self.rx.clone()));
        let std::task::Poll::Ready((rx, open)) = waiting.as_mut().poll(cx) else {
            return std::task::Poll::Pending;
        };
        // Wait for the change after this one next.
        self.waiting = open.then(|| wait_next(rx));
        std::task::Poll::Ready(open)
    }

    /// The address to connect to now, marked as seen (so only a later
    /// change ends the connection); for a Sentinel master not named yet,
    /// waits for the sentinels' answer at most
    /// [`DISCOVERY_WAIT`](super::DISCOVERY_WAIT).
    async fn settle(&mut self) -> Option<Arc<ServerAddr>> {
        let mut now = self.rx.borrow_and_update().clone();
        if now.is_none() {
            let named =
                tokio::time::timeout(super::DISCOVERY_WAIT, self.rx.wait_for(Option::is_some));
            now = match named.await {
                Ok(Ok(addr)) => addr.clone(),
                _ => None,
            };
        }
        self.at.clone_from(&now);
        now
    }

    /// The address changed to another one than the connection's: where
    /// it is now, in words.
    fn moved(&mut self) -> Option<String> {
        let now = self.rx.borrow_and_update().clone();
        (now != self.at).then(|| match now {
            Some(a) => format!("now at {a}"),
            None => "removed".to_owned(),
        })
    }
}

impl ConnTask {
    /// The task of server `idx` fed by `rx`.
    pub(crate) fn new(
        shared: Arc<PoolShared>,
        idx: usize,
        lane: Lane,
        rx: mpsc::UnboundedReceiver<Msg>,
        sink: Option<PushSink>,
    ) -> Self {
        ConnTask {
            switch: Switch::new(&shared, idx, lane),
            shared,
            idx,
            lane,
            rx,
            sink,
        }
    }

    /// Connect and serve, again and again, until told to close.
    pub(crate) async fn run(mut self) {
        let mut pending: Option<BackendReq> = None;
        let mut connect_now = self.shared.config.preconnect && !self.lane.pinned;
        loop {
            if !connect_now && pending.is_none() {
                match self.rx.recv().await {
                    Some(Msg::Req(r)) => pending = Some(r),
                    // Not connected: nothing to close.
                    Some(Msg::Disconnect) => continue,
                    Some(Msg::Close) | None => return,
                }
            }
            connect_now = false;
            // Requests that wait for this connect are timed from its start,
            // so that a slow connect and a slow reply together stay within
            // one `timeout`, as in nutcracker (which queues them on the
            // connecting connection with their timers running).
            let started = Instant::now();
            let first = pending.take();
            let connected = match self.switch.settle().await {
                Some(addr) => connect_to(&self.shared, self.idx, self.lane, &addr).await,
                None => Err(Exchange::Failed(BackendErrorKind::NoMaster)),
            };
            let done = match connected {
                Ok(conn) => self.serve(conn, first.map(|r| (r, started))).await,
                Err(Exchange::Failed(kind)) => self.connect_failed(first, kind),
                Err(Exchange::Rejected(reply)) => self.handshake_rejected(first, &reply),
            };
            if done {
                return;
            }
            if self.lane.pinned {
                self.end_pinned();
                return;
            }
        }
    }

    /// A pinned connection was lost: it is not replaced (see
    /// [`Lane::pinned`]); what its client sent after the loss fails, and
    /// nothing more can be sent to it.
    fn end_pinned(&mut self) {
        self.rx.close();
        if let Some(sink) = &self.sink {
            let _ = sink.tx.send(PushItem::Lost(
                self.idx,
                "the connection to the server was lost".into(),
            ));
        }
        let server = &self.shared.servers[self.idx];
        let err = BackendError::new(BackendErrorKind::Unknown, server.name.clone());
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Req(r) = msg {
                fail_req(&self.shared, self.idx, r, Err(err.clone()));
            }
        }
    }

    /// Serve a connected socket; true when the task should end.
    async fn serve(&mut self, conn: Conn, first: Option<(BackendReq, Instant)>) -> bool {
        let server = &self.shared.servers[self.idx];
        server
            .stats
            .local()
            .server_connections
            .fetch_add(1, Relaxed);
        self.shared
            .stats
            .server_connections_opened
            .fetch_add(1, Relaxed);
        // At -v 7 (debug) an operator sees healthy backends too.
        tracing::debug!(pool = %self.shared.config.name, server = %server.name, "backend connected");
        let close = match conn {
            Conn::Tcp(s) => {
                let (r, w) = s.into_split();
                Connection::new(&self.shared, self.idx, self.lane, r, w)
                    .with_sink(self.sink.as_ref())
                    .drive(first, &mut self.rx, &mut self.switch)
                    .await
            }
            Conn::Unix(s) => {
                let (r, w) = s.into_split();
                Connection::new(&self.shared, self.idx, self.lane, r, w)
                    .with_sink(self.sink.as_ref())
                    .drive(first, &mut self.rx, &mut self.switch)
                    .await
            }
            Conn::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                Connection::new(&self.shared, self.idx, self.lane, r, FlushingWrite::new(w))
                    .with_sink(self.sink.as_ref())
                    .drive(first, &mut self.rx, &mut self.switch)
                    .await
            }
            Conn::TlsUnix(s) => {
                let (r, w) = tokio::io::split(*s);
                Connection::new(&self.shared, self.idx, self.lane, r, FlushingWrite::new(w))
                    .with_sink(self.sink.as_ref())
                    .drive(first, &mut self.rx, &mut self.switch)
                    .await
            }
        };
        server
            .stats
            .local()
            .server_connections
            .fetch_sub(1, Relaxed);
        close
    }

    /// The connect failed: fail the request that asked for it and every one
    /// queued behind it (retrying a refused connect once per queued request
    /// would only add latency to an outage). True when the task should end.
    fn connect_failed(&mut self, first: Option<BackendReq>, kind: BackendErrorKind) -> bool {
        let shared = Arc::clone(&self.shared);
        let server = &shared.servers[self.idx];
        let err = BackendError::new(kind, server.name.clone());
        let (failed, close) = self.answer_queued(first, || Err(err.clone()));
        if kind.is_local() {
            // The proxy's own descriptor table is full: not the server's
            // fault, so it is neither counted as a server error nor a step
            // towards ejecting a healthy server. Rate-limited: a flood of
            // clients makes this happen per request.
            if shared.local_failure_log_due() {
                tracing::warn!(pool = %shared.config.name, server = %server.name,
                    error = kind.words(), failed, "cannot connect to server: the proxy is out of file descriptors (raise ulimit -n)");
            }
        } else {
            tracing::debug!(pool = %shared.config.name, server = %server.name,
                error = kind.words(), failed, "connect failed");
            server.stats.local().server_err.fetch_add(1, Relaxed);
            shared.record_failure_on(self.idx, self.lane);
        }
        close
    }

    /// The server refused the connection handshake (AUTH with a wrong or
    /// missing `redis_auth`, SELECT of a `redis_db` it does not have): the
    /// request that asked for the connection and every one queued behind
    /// it get the server's own error reply (`-WRONGPASS ...`, `-ERR invalid
    /// password`), which says what to fix where nutcracker's `Invalid
    /// argument` did not. The server is up and answering, so this is not a
    /// step towards ejecting it: ejection would only move its keys to
    /// servers configured the same way, and hide the error. True when the
    /// task should end.
    fn handshake_rejected(&mut self, first: Option<BackendReq>, reply: &Frame) -> bool {
        let shared = Arc::clone(&self.shared);
        let (_, close) = self.answer_queued(first, || Ok(reply.clone()));
        shared.servers[self.idx]
            .stats
            .local()
            .server_err
            .fetch_add(1, Relaxed);
        close
    }

    /// Answers `first` and every request queued behind it with `answer()`,
    /// without connecting. Returns how many were answered, and whether a
    /// close was asked for meanwhile.
    fn answer_queued(
        &mut self,
        first: Option<BackendReq>,
        answer: impl Fn() -> Result<Frame, BackendError>,
    ) -> (u64, bool) {
        let shared = &self.shared;
        let mut answered = 0u64;
        if let Some(r) = first {
            fail_req(shared, self.idx, r, answer());
            answered += 1;
        }
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Req(r) => {
                    fail_req(shared, self.idx, r, answer());
                    answered += 1;
                }
                Msg::Close => return (answered, true),
                Msg::Disconnect => {}
            }
        }
        (answered, false)
    }
}

/// Answers a request that was never forwarded with `answer`: an error, or
/// the server's refusal of the connection handshake.
fn fail_req(shared: &PoolShared, idx: usize, r: BackendReq, answer: Result<Frame, BackendError>) {
    let stats = shared.servers[idx].stats.local();
    stats.in_queue.fetch_sub(1, Relaxed);
    stats.in_queue_bytes.fetch_sub(r.wire.len() as i64, Relaxed);
    shared.stats.forward_error.fetch_add(1, Relaxed);
    if let Some(tx) = r.reply {
        // A noreply request fails silently, as memcached would have it.
        tx.send(match r.expect {
            Some(_) => answer,
            None => Ok(Frame::NoReply),
        });
    }
}

/// A connected socket of either family.
pub(crate) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// `tls_servers`: boxed, a TLS stream is some 1 KiB of state.
    Tls(Box<TlsStream<TcpStream>>),
    /// `tls_servers` to a unix socket server (`tls_server_name` names it).
    TlsUnix(Box<TlsStream<UnixStream>>),
}

/// Open a connection to server `idx`, resolving its host name afresh, and run
/// the Redis handshake (AUTH, then SELECT) when the pool needs one. The whole
/// of it is bounded by the pool's `timeout`. A handshake the server refuses
/// is [`Exchange::Rejected`] with the server's error reply.
pub(crate) async fn connect(shared: &PoolShared, idx: usize, lane: Lane) -> Result<Conn, Exchange> {
    let server = &shared.servers[idx];
    let addr = server.wait_addr().await.ok_or(BackendErrorKind::NoMaster)?;
    connect_to(shared, idx, lane, &addr).await
}

/// [`connect`] to `addr`: the server's address as its connection task
/// last saw it (or one of its replicas').
pub(crate) async fn connect_to(
    shared: &PoolShared,
    idx: usize,
    lane: Lane,
    addr: &ServerAddr,
) -> Result<Conn, Exchange> {
    let fut = connect_inner(shared, idx, lane, addr);
    match shared.config.timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => Err(Exchange::Failed(BackendErrorKind::TimedOut)),
        },
        None => fut.await,
    }
}

async fn connect_inner(
    shared: &PoolShared,
    idx: usize,
    lane: Lane,
    addr: &ServerAddr,
) -> Result<Conn, Exchange> {
    let server = &shared.servers[idx];
    let tls = shared.tls.backend();
    let mut conn = match addr {
        ServerAddr::Tcp { host, port } => {
            let mut addrs = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| match BackendErrorKind::from_io(&e) {
                    BackendErrorKind::ProxyFdLimit => BackendErrorKind::ProxyFdLimit,
                    _ => BackendErrorKind::HostDown,
                })?;
            let addr = addrs.next().ok_or(BackendErrorKind::HostDown)?;
            let s = TcpStream::connect(addr)
                .await
                .map_err(|e| BackendErrorKind::from_io(&e))?;
            let _ = s.set_nodelay(true);
            if shared.config.tcpkeepalive {
                let _ = socket2::SockRef::from(&s).set_keepalive(true);
            }
            match tls {
                Some(tls) => Conn::Tls(Box::new(tls_connect(shared, idx, tls, host, s).await?)),
                None => Conn::Tcp(s),
            }
        }
        ServerAddr::Unix { path } => {
            let s = UnixStream::connect(path)
                .await
                .map_err(|e| BackendErrorKind::from_io(&e))?;
            match tls {
                // Validation made sure `tls_server_name` is set.
                Some(tls) => Conn::TlsUnix(Box::new(tls_connect(shared, idx, tls, "", s).await?)),
                None => Conn::Unix(s),
            }
        }
        // The server's current address is always a socket's; a master name
        // is resolved by the sentinels before it gets here.
        ServerAddr::Sentinel { .. } => return Err(Exchange::Failed(BackendErrorKind::NoMaster)),
    };
    let mut init = shared.handshake(lane.resp3);
    // A refused AUTH does not end the connection, as in nutcracker: the
    // server then answers each command with its own `-NOAUTH Authentication
    // required.`, which is what the client reads (nothing can land in the
    // wrong place unauthenticated). SELECT and HELLO must succeed: a
    // connection left on the wrong database would misplace writes.
    if shared.config.redis_auth.is_some() {
        if let Some((auth, rest)) = init.split_first() {
            match conn.exchange(auth.wire(), 1, Expect::Resp).await {
                Ok(()) => {}
                Err(e @ Exchange::Failed(_)) => return Err(e),
                Err(Exchange::Rejected(frame)) => {
                    tracing::warn!(pool = %shared.config.name, server = %server.name,
                        reply = %String::from_utf8_lossy(frame.raw()).trim_end(),
                        "backend refused redis_auth; its commands will get the server's own error");
                }
            }
            init = rest;
        }
    }
    if !init.is_empty() {
        let n = init.len();
        let wire: Vec<u8> = init.iter().flat_map(|r| r.wire().iter().copied()).collect();
        match conn.exchange(&wire, n, Expect::Resp).await {
            Ok(()) => {}
            Err(e @ Exchange::Failed(_)) => return Err(e),
            // An error reply (wrong password, bad db) makes the connection
            // unusable; logged with the server's own words, which the
            // waiting clients get too.
            Err(Exchange::Rejected(frame)) => {
                tracing::warn!(pool = %shared.config.name, server = %server.name,
                    reply = %String::from_utf8_lossy(frame.raw()).trim_end(),
                    "backend rejected the connection handshake (redis_auth / redis_db)");
                return Err(Exchange::Rejected(frame));
            }
        }
    }
    Ok(conn)
}

/// The TLS handshake on a connected socket, checking the server's
/// certificate for `tls_server_name`, else for `host`. A failure is logged
/// with rustls's words (expired, unknown issuer, another name) and reaches
/// clients as [`BackendErrorKind::Tls`].
async fn tls_connect<S>(
    shared: &PoolShared,
    idx: usize,
    tls: &BackendTls,
    host: &str,
    s: S,
) -> Result<TlsStream<S>, BackendErrorKind>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let server = &shared.servers[idx];
    let name = match &tls.server_name {
        Some(n) => n.clone(),
        None => match ServerName::try_from(host.to_owned()) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(pool = %shared.config.name, server = %server.name, error = %e,
                    "TLS to the server impossible: its host is no DNS name or IP address; set tls_server_name");
                return Err(BackendErrorKind::Tls(TlsProblem::Other));
            }
        },
    };
    tls.connector.connect(name, s).await.map_err(|e| {
        // A certificate check or an alert is a TLS problem (rustls's error
        // inside the io::Error); a reset or EOF mid-handshake stays an I/O
        // failure with nutcracker's words. Logged either way, with rustls's
        // words (`invalid peer certificate: Expired...`).
        tracing::warn!(pool = %shared.config.name, server = %server.name, error = %e,
            "TLS handshake with the server failed");
        BackendErrorKind::from_io(&e)
    })
}

/// Why [`Conn::exchange`] or [`connect`] failed.
pub(crate) enum Exchange {
    /// The socket failed, closed, or sent something unparsable.
    Failed(BackendErrorKind),
    /// The server answered with this error reply.
    Rejected(Frame),
}

/// A failure before any reply (resolve, connect) is [`Exchange::Failed`].
impl From<BackendErrorKind> for Exchange {
    fn from(kind: BackendErrorKind) -> Exchange {
        Exchange::Failed(kind)
    }
}

/// For callers that only need the kind (the re-admission probe): a refused
/// handshake is a reply the proxy cannot use, nutcracker's `Invalid
/// argument`.
impl From<Exchange> for BackendErrorKind {
    fn from(e: Exchange) -> BackendErrorKind {
        match e {
            Exchange::Failed(kind) => kind,
            Exchange::Rejected(_) => BackendErrorKind::InvalidReply,
        }
    }
}

impl Conn {
    /// Write `wire` (`n` requests), then read their `n` replies parsed as
    /// `expect`; the first error reply ends it. For the connection handshake
    /// and the re-admission probe, which run before a connection serves.
    pub(crate) async fn exchange(
        &mut self,
        wire: &[u8],
        n: usize,
        expect: Expect,
    ) -> Result<(), Exchange> {
        match self {
            Conn::Tcp(s) => exchange(s, wire, n, expect).await,
            Conn::Unix(s) => exchange(s, wire, n, expect).await,
            Conn::Tls(s) => exchange(&mut **s, wire, n, expect).await,
            Conn::TlsUnix(s) => exchange(&mut **s, wire, n, expect).await,
        }
    }
}

impl Conn {
    /// Write one request and read its reply (an error reply is
    /// [`Exchange::Rejected`]): for health checks.
    pub(crate) async fn query(&mut self, wire: &[u8], expect: Expect) -> Result<Frame, Exchange> {
        let last = match self {
            Conn::Tcp(s) => exchange_last(s, wire, 1, expect).await,
            Conn::Unix(s) => exchange_last(s, wire, 1, expect).await,
            Conn::Tls(s) => exchange_last(&mut **s, wire, 1, expect).await,
            Conn::TlsUnix(s) => exchange_last(&mut **s, wire, 1, expect).await,
        }?;
        last.ok_or(Exchange::Failed(BackendErrorKind::Unknown))
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    wire: &[u8],
    n: usize,
    expect: Expect,
) -> Result<(), Exchange> {
    exchange_last(s, wire, n, expect).await.map(drop)
}

/// [`exchange`], keeping the last reply.
async fn exchange_last<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    wire: &[u8],
    n: usize,
    expect: Expect,
) -> Result<Option<Frame>, Exchange> {
    let io = |e: std::io::Error| Exchange::Failed(BackendErrorKind::from_io(&e));
    s.write_all(wire).await.map_err(io)?;
    // A TLS stream may keep the bytes until flushed; a socket ignores it.
    s.flush().await.map_err(io)?;
    let mut decoder = ReplyDecoder::new(match expect {
        Expect::Resp | Expect::Asking => Protocol::Redis,
        Expect::Mc(_) | Expect::McQuiet => Protocol::Memcache,
    });
    let mut buf = BytesMut::with_capacity(256);
    let mut got = 0;
    let mut last = None;
    while got < n {
        match decoder.decode(expect, &mut buf) {
            Ok(Some(frame)) if frame.is_error() => return Err(Exchange::Rejected(frame)),
            Ok(Some(frame)) => {
                got += 1;
                last = Some(frame);
            }
            Ok(None) => {
                if s.read_buf(&mut buf).await.map_err(io)? == 0 {
                    return Err(Exchange::Failed(BackendErrorKind::Unknown));
                }
            }
            Err(_) => return Err(Exchange::Failed(BackendErrorKind::InvalidReply)),
        }
    }
    Ok(last)
}

/// One connected socket and the requests on it: takes requests in
/// batches, writes them, matches replies in FIFO order, and times out the
/// oldest. Dropped (and everything on it failed) on the first error, so no
/// late reply is ever matched to a later request.
struct Connection<'a, R, W> {
    shared: &'a Arc<PoolShared>,
    idx: usize,
    lane: Lane,
    /// A subscription connection's client (see [`Lane::pubsub`]).
    sink: Option<&'a PushSink>,
    rd: R,
    wr: W,
    decoder: ReplyDecoder,
    /// Bytes to write, in order.
    wq: VecDeque<Bytes>,
    queue: InFlightQueue<'a>,
    rbuf: BytesMut,
    /// The pool closes this connection once what is in flight is answered.
    closing: bool,
    /// The close asked for is [`Msg::Disconnect`]: the task stays.
    reconnect: bool,
    timer: Pin<Box<Sleep>>,
    /// The deadline `timer` is armed for.
    armed: Option<Instant>,
    /// Server latency: two relaxed atomics of this worker's copy per reply
    /// ([`crate::pool::metrics::Latency`]).
    latency: Arc<crate::pool::metrics::Latency>,
}

/// Why a connection was dropped, for the log and the requests on it.
struct Dropped {
    kind: BackendErrorKind,
    /// What the server sent that could not be parsed, if that was it.
    detail: Option<String>,
}

impl From<BackendErrorKind> for Dropped {
    fn from(kind: BackendErrorKind) -> Self {
        Dropped { kind, detail: None }
    }
}

impl<'a, R, W> Connection<'a, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    fn new(shared: &'a Arc<PoolShared>, idx: usize, lane: Lane, rd: R, wr: W) -> Self {
        let server = &shared.servers[idx];
        // A blocking command waits as long as it asked to: the pool's
        // `timeout` is not its bound (its borrower times it).
        let timeout = if lane.blocking {
            None
        } else {
            shared.config.timeout
        };
        Connection {
            shared,
            idx,
            lane,
            sink: None,
            rd,
            wr,
            decoder: ReplyDecoder::new(shared.protocol),
            wq: VecDeque::new(),
            queue: InFlightQueue::new(&server.stats, timeout),
            rbuf: BytesMut::new(),
            closing: false,
            reconnect: false,
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            armed: None,
            latency: Arc::clone(&server.latency),
        }
    }

    /// Take `first` and whatever else the channel holds, up to `limit`
    /// requests, all timed from `now` (the requests of one batch are written
    /// together; a clock read per request was a measurable share of the
    /// pipelined path). Counts them once for the batch.
    fn take_batch(
        &mut self,
        first: BackendReq,
        now: Instant,
        limit: usize,
        rx: &mut mpsc::UnboundedReceiver<Msg>,
    ) {
        let (mut n, mut bytes) = (1u64, first.wire.len() as u64);
        let wire = self.queue.push(first, now);
        self.wq.push_back(wire);
        while (n as usize) < limit {
            match rx.try_recv() {
                Ok(Msg::Req(r)) => {
                    n += 1;
                    bytes += r.wire.len() as u64;
                    let wire = self.queue.push(r, now);
                    self.wq.push_back(wire);
                }
                Ok(Msg::Close) => {
                    self.closing = true;
                    break;
                }
                Ok(Msg::Disconnect) => {
                    self.closing = true;
                    self.reconnect = true;
                    break;
                }
                Err(_) => break,
            }
        }
        // This thread's copy of the counters, looked up once.
        let stats: &super::ServerCounters = self.shared.servers[self.idx].stats.local();
        stats.requests.fetch_add(n, Relaxed);
        stats.request_bytes.fetch_add(bytes, Relaxed);
    }

    /// Re-arm the timer only when the oldest deadline changes: resetting a
    /// Sleep costs a timer-wheel update, and most turns don't need one.
    fn arm_timer(&mut self) {
        let want = self.queue.oldest_deadline();
        if want != self.armed {
            if let Some(d) = want {
                self.timer.as_mut().reset(d);
            }
            self.armed = want;
        }
    }

    fn with_sink(mut self, sink: Option<&'a PushSink>) -> Self {
        self.sink = sink;
        self
    }

    /// Bytes arrived on a subscription connection: every frame goes to the
    /// client's session, in order.
    fn on_read_pushes(&mut self, sink: &PushSink) -> Result<(), Dropped> {
        loop {
            match self.decoder.decode(Expect::Resp, &mut self.rbuf) {
                Ok(Some(Frame::Resp(frame))) => {
                    if !sink.send(frame) {
                        return Err(Dropped {
                            kind: BackendErrorKind::Unknown,
                            detail: Some(
                                "a subscriber reads too slowly: over 32 MiB of messages waiting"
                                    .into(),
                            ),
                        });
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(Dropped {
                        kind: BackendErrorKind::InvalidReply,
                        detail: Some(e.to_string()),
                    })
                }
            }
        }
    }

    /// Bytes arrived: parse every complete reply and hand each to its request.
    fn on_read(&mut self) -> Result<(), Dropped> {
        if let Some(sink) = self.sink {
            return self.on_read_pushes(sink);
        }
        // Counted here and added to the shared counters once per read.
        let (mut got, mut got_bytes, mut sent_bytes) = (0u64, 0u64, 0i64);
        // One clock read for every reply this read completed: they arrived together.
        let mut since: Option<crate::since::Since> = None;
        let outcome = loop {
            let Some(expect) = self.queue.front_expect() else {
                if self.rbuf.is_empty() {
                    break Ok(());
                }
                // Bytes nobody asked for: the stream is out of step.
                break Err(Dropped {
                    kind: BackendErrorKind::InvalidReply,
                    detail: Some("bytes arrived with no request waiting for them".into()),
                });
            };
            match self.decoder.decode(expect, &mut self.rbuf) {
                // Out-of-band data on a RESP3 connection answers no request:
                // matching it to the one in flight would shift every reply
                // after it to the wrong client. The proxy never asks for
                // pushes on these connections (no subscriptions, no
                // tracking), so one is dropped, and logged.
                Ok(Some(Frame::Resp(frame))) if frame.is_push() => {
                    tracing::debug!(pool = %self.shared.config.name,
                        server = %self.shared.servers[self.idx].name,
                        "dropped an unsolicited RESP3 push");
                    continue;
                }
                // `ASKING`'s own `+OK`: the reply wanted comes next.
                Ok(Some(_)) if matches!(expect, Expect::Asking) => {
                    self.queue.asked();
                    continue;
                }
                Ok(Some(frame)) => {
                    let Some(f) = self.queue.pop_answered() else {
                        break Ok(());
                    };
                    let since = since
                        .get_or_insert_with(|| crate::since::Since::new(Instant::now().into_std()));
                    self.latency.observe(since.of(f.start.into_std()));
                    got += 1;
                    got_bytes += frame.raw().len() as u64;
                    sent_bytes += f.bytes;
                    if let Some(tx) = f.reply {
                        tx.send(Ok(frame));
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => {
                    break Err(Dropped {
                        kind: BackendErrorKind::InvalidReply,
                        detail: Some(e.to_string()),
                    })
                }
            }
        };
        self.queue.settle(got, got_bytes, sent_bytes);
        if got > 0 {
            self.shared.record_success(self.idx);
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * READ_CHUNK {
            // A large reply grew the buffer; don't keep it for an idle connection.
            self.rbuf = BytesMut::new();
        }
        outcome
    }

    /// Run until the connection fails, the server closes it, or the pool
    /// asks it to close. `first` is the request that asked for the
    /// connection, with the time the connect started. Returns true when the
    /// task should end (close requested or channel gone), false to go back
    /// to waiting for a request and reconnect.
    async fn drive(
        mut self,
        first: Option<(BackendReq, Instant)>,
        rx: &mut mpsc::UnboundedReceiver<Msg>,
        switch: &mut Switch,
    ) -> bool {
        if let Some((r, connect_started)) = first {
            // It and whatever queued behind it waited for the connect.
            self.take_batch(r, connect_started, MAX_IN_FLIGHT, rx);
        }
        let stats = &self.shared.servers[self.idx].stats;
        let dropped: Dropped = loop {
            if self.closing && self.queue.is_idle() && self.wq.is_empty() {
                let _ = self.wr.shutdown().await;
                return !self.reconnect;
            }
            self.arm_timer();
            let can_take = !self.closing && self.queue.in_flight() < MAX_IN_FLIGHT;
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            let Connection {
                rd,
                wr,
                wq,
                rbuf,
                timer,
                armed,
                ..
            } = &mut self;
            let can_write = !wq.is_empty();
            let timed = armed.is_some();
            let watching = switch.active;
            // A closure over `switch`, cheap to make on every turn.
            let changed = std::future::poll_fn(|cx| switch.poll_changed(cx));
            let event = tokio::select! {
                biased;
                // A failover first: nothing more is sent to the old master.
                open = changed, if watching => Event::Switched(open),
                res = rd.read_buf(rbuf) => Event::Read(res),
                // New requests before the write: whatever is queued now joins
                // this write, so a busy connection sends batches, not singles.
                msg = rx.recv(), if can_take => Event::Msg(msg),
                res = crate::net::write_some(wr, wq), if can_write => Event::Written(res),
                () = timer.as_mut(), if timed => Event::Deadline,
            };
            match event {
                Event::Read(Ok(0)) => {
                    stats.local().server_eof.fetch_add(1, Relaxed);
                    break BackendErrorKind::Unknown.into();
                }
                Event::Read(Ok(_)) => {
                    if let Err(d) = self.on_read() {
                        stats.local().server_err.fetch_add(1, Relaxed);
                        break d;
                    }
                }
                Event::Read(Err(e)) | Event::Written(Err(e)) => {
                    stats.local().server_err.fetch_add(1, Relaxed);
                    let kind = BackendErrorKind::from_io(&e);
                    if matches!(kind, BackendErrorKind::Tls(_)) {
                        // TLS 1.3: a server that refuses our certificate (or
                        // lack of one) says so after the handshake, at the
                        // first read; the alert's words go to the log.
                        tracing::warn!(pool = %self.shared.config.name, server = %self.shared.servers[self.idx].name,
                            error = %e, "TLS failure on the connection to the server");
                    }
                    break kind.into();
                }
                Event::Msg(Some(Msg::Req(r))) => {
                    self.take_batch(r, Instant::now(), 1 + BATCH, rx);
                }
                // Its one client let go of a pinned connection without
                // giving it back (gone mid-transaction, or while blocked):
                // close now; a reply that may still come is for nobody, and
                // the connection's state must not outlive its client.
                Event::Msg(None) if self.lane.pinned => {
                    let err = BackendError::new(
                        BackendErrorKind::Unknown,
                        self.shared.servers[self.idx].name.clone(),
                    );
                    self.queue.fail_all(&err);
                    return true;
                }
                Event::Msg(Some(Msg::Close) | None) => self.closing = true,
                Event::Msg(Some(Msg::Disconnect)) => {
                    self.closing = true;
                    self.reconnect = true;
                }
                Event::Written(Ok(n)) => self.queue.written(n),
                Event::Switched(false) => switch.active = false,
                Event::Switched(true) => {
                    if let Some(to) = switch.moved() {
                        break Dropped {
                            kind: if self.lane.replica.is_some() {
                                BackendErrorKind::ReplicaGone
                            } else if self.shared.cluster.is_some() {
                                BackendErrorKind::NodeReplaced
                            } else {
                                BackendErrorKind::Failover
                            },
                            detail: Some(to),
                        };
                    }
                }
                Event::Deadline => {
                    stats.local().server_timedout.fetch_add(1, Relaxed);
                    tracing::debug!(pool = %self.shared.config.name, server = %self.shared.servers[self.idx].name,
                        "request timed out; closing the connection");
                    break BackendErrorKind::TimedOut.into();
                }
            }
        };
        self.fail(dropped)
    }

    /// The connection is broken: everything written or queued on it fails,
    /// so no late reply can ever be matched to a later request. Returns
    /// whether the task should end.
    fn fail(mut self, dropped: Dropped) -> bool {
        let shared = self.shared;
        let server = &shared.servers[self.idx];
        let kind = dropped.kind;
        let err = BackendError::new(kind, server.name.clone());
        let failed = self.queue.fail_all(&err);
        if failed > 0 || kind != BackendErrorKind::Unknown {
            shared.stats.forward_error.fetch_add(failed as u64, Relaxed);
            if !kind.is_local()
                && !matches!(
                    kind,
                    BackendErrorKind::Failover
                        | BackendErrorKind::ReplicaGone
                        | BackendErrorKind::NodeReplaced
                )
            {
                shared.record_failure_on(self.idx, self.lane);
            }
        }
        match &dropped.detail {
            // The pool logs the switch itself, once per server.
            Some(detail)
                if matches!(
                    kind,
                    BackendErrorKind::Failover
                        | BackendErrorKind::ReplicaGone
                        | BackendErrorKind::NodeReplaced
                ) =>
            {
                tracing::debug!(pool = %shared.config.name,
                server = %server.name, failed, detail = %detail, "backend connection closed: failover")
            }
            // An operator must learn why: a server (or something posing as
            // one) sent what no reply may look like.
            Some(detail) => tracing::warn!(pool = %shared.config.name, server = %server.name,
                error = kind.words(), failed, detail = %detail, "backend connection dropped: invalid reply"),
            None => tracing::debug!(pool = %shared.config.name, server = %server.name,
                error = kind.words(), failed, "backend connection closed"),
        }
        self.closing && !self.reconnect
    }
}

/// What one wait of [`Connection::drive`] brought.
enum Event {
    Read(std::io::Result<usize>),
    Msg(Option<Msg>),
    Written(std::io::Result<usize>),
    Deadline,
    /// The server's address changed (`false`: the watch ended).
    Switched(bool),
}
