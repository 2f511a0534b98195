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

use twem_proto::{memcache as mc, resp};

use super::error::{BackendError, BackendErrorKind};
use super::{PoolShared, Protocol};
use crate::config::ServerAddr;

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
}

/// A reply as it came from a server.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A Redis reply.
    Resp(resp::ReplyFrame),
    /// A memcached reply.
    Mc(mc::ReplyFrame),
}

impl Frame {
    /// Whether the server answered with an error.
    pub fn is_error(&self) -> bool {
        match self {
            Frame::Resp(f) => f.is_error(),
            Frame::Mc(f) => f.is_error(),
        }
    }

    /// The exact bytes the server sent.
    pub fn raw(&self) -> &Bytes {
        match self {
            Frame::Resp(f) => f.raw(),
            Frame::Mc(f) => f.raw(),
        }
    }
}

/// Where the reply to one request goes.
pub(crate) enum ReplyTx {
    /// A oneshot channel: embedded calls and the fragments of split commands.
    Oneshot(oneshot::Sender<Result<Frame, BackendError>>),
    /// A slot of the client's inbox: sessions' single-server requests.
    Slot(super::inbox::SlotTx),
}

impl ReplyTx {
    /// Hand over the reply; nobody waiting is not an error.
    pub(crate) fn send(self, r: Result<Frame, BackendError>) {
        match self {
            ReplyTx::Oneshot(tx) => {
                let _ = tx.send(r);
            }
            ReplyTx::Slot(tx) => tx.send(r),
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
    /// Where the reply goes; `None` when nobody waits (noreply).
    pub reply: Option<ReplyTx>,
}

/// A message for a connection task.
pub(crate) enum Msg {
    /// Forward a request.
    Req(BackendReq),
    /// Finish what is in flight, then close (pool closing or replaced).
    Close,
}

struct InFlight {
    /// When the connection took it: the start of its server latency and of
    /// its `timeout` (nutcracker, too, times a request from when it is sent).
    start: Instant,
    expect: Expect,
    reply: Option<ReplyTx>,
    deadline: Option<Instant>,
    bytes: i64,
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
                ReplyDecoder::Resp(resp::ReplyCodec::new(super::redis_reply_limits()))
            }
            Protocol::Memcache => {
                ReplyDecoder::Mc(mc::ReplyDecoder::new(), super::memcache_limits())
            }
        }
    }

    fn decode(&mut self, expect: Expect, buf: &mut BytesMut) -> Result<Option<Frame>, ()> {
        match (self, expect) {
            (ReplyDecoder::Resp(codec), _) => match codec.decode(buf) {
                Ok(f) => Ok(f.map(Frame::Resp)),
                Err(_) => Err(()),
            },
            (ReplyDecoder::Mc(dec, limits), Expect::Mc(cmd)) => {
                match dec.decode(cmd, buf, limits) {
                    Ok(f) => Ok(f.map(Frame::Mc)),
                    Err(_) => Err(()),
                }
            }
            (ReplyDecoder::Mc(..), Expect::Resp) => Err(()),
        }
    }
}

/// The connection task of server `idx`, slot `slot`. Runs until the pool is
/// dropped or closed.
pub(crate) async fn run(shared: Arc<PoolShared>, idx: usize, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let preconnect = shared.config.preconnect;
    let mut pending: Option<BackendReq> = None;
    let mut first_round = true;
    loop {
        if !(first_round && preconnect) && pending.is_none() {
            match rx.recv().await {
                Some(Msg::Req(r)) => pending = Some(r),
                Some(Msg::Close) | None => return,
            }
        }
        first_round = false;
        // Requests that wait for this connect are timed from its start, so
        // that a slow connect and a slow reply together stay within one
        // `timeout`, as in nutcracker (which queues them on the connecting
        // connection with their timers running).
        let connect_started = Instant::now();
        match connect(&shared, idx).await {
            Ok(conn) => {
                let server = &shared.servers[idx];
                server.stats.server_connections.fetch_add(1, Relaxed);
                shared.stats.server_connections_opened.fetch_add(1, Relaxed);
                let close = match conn {
                    Conn::Tcp(s) => {
                        let (r, w) = s.into_split();
                        let first = pending.take().map(|r| (r, connect_started));
                        drive(&shared, idx, r, w, first, &mut rx).await
                    }
                    Conn::Unix(s) => {
                        let (r, w) = s.into_split();
                        let first = pending.take().map(|r| (r, connect_started));
                        drive(&shared, idx, r, w, first, &mut rx).await
                    }
                };
                server.stats.server_connections.fetch_sub(1, Relaxed);
                if close {
                    return;
                }
            }
            Err(kind) => {
                // Fail the request that asked for the connection and every one
                // queued behind it: retrying a refused connect once per queued
                // request would only add latency to an outage.
                let err = BackendError::new(kind, shared.servers[idx].name.clone());
                let mut failed = 0u64;
                if let Some(r) = pending.take() {
                    fail_req(&shared, idx, r, &err);
                    failed += 1;
                }
                while let Ok(msg) = rx.try_recv() {
                    match msg {
                        Msg::Req(r) => {
                            fail_req(&shared, idx, r, &err);
                            failed += 1;
                        }
                        Msg::Close => return,
                    }
                }
                tracing::debug!(pool = %shared.config.name, server = %shared.servers[idx].name,
                    error = kind.words(), failed, "connect failed");
                shared.servers[idx].stats.server_err.fetch_add(1, Relaxed);
                shared.record_failure(idx);
            }
        }
    }
}

fn fail_req(shared: &PoolShared, idx: usize, r: BackendReq, err: &BackendError) {
    let stats = &shared.servers[idx].stats;
    stats.in_queue.fetch_sub(1, Relaxed);
    stats.in_queue_bytes.fetch_sub(r.wire.len() as i64, Relaxed);
    shared.stats.forward_error.fetch_add(1, Relaxed);
    if let Some(tx) = r.reply {
        tx.send(Err(err.clone()));
    }
}

/// A connected socket of either family.
pub(crate) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Open a connection to server `idx`, resolving its host name afresh, and run
/// the Redis handshake (AUTH, then SELECT) when the pool needs one. The whole
/// of it is bounded by the pool's `timeout`.
pub(crate) async fn connect(shared: &PoolShared, idx: usize) -> Result<Conn, BackendErrorKind> {
    let fut = connect_inner(shared, idx);
    match shared.config.timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => Err(BackendErrorKind::TimedOut),
        },
        None => fut.await,
    }
}

async fn connect_inner(shared: &PoolShared, idx: usize) -> Result<Conn, BackendErrorKind> {
    let server = &shared.servers[idx];
    let mut conn = match &server.addr {
        ServerAddr::Tcp { host, port } => {
            let mut addrs = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|_| BackendErrorKind::HostDown)?;
            let addr = addrs.next().ok_or(BackendErrorKind::HostDown)?;
            let s = TcpStream::connect(addr)
                .await
                .map_err(|e| BackendErrorKind::from_io(&e))?;
            let _ = s.set_nodelay(true);
            if shared.config.tcpkeepalive {
                let _ = socket2::SockRef::from(&s).set_keepalive(true);
            }
            Conn::Tcp(s)
        }
        ServerAddr::Unix { path } => Conn::Unix(
            UnixStream::connect(path)
                .await
                .map_err(|e| BackendErrorKind::from_io(&e))?,
        ),
    };
    let init = shared.handshake();
    if !init.is_empty() {
        let n = init.len();
        let wire: Vec<u8> = init.iter().flat_map(|r| r.wire().iter().copied()).collect();
        match conn.exchange(&wire, n, Expect::Resp).await {
            Ok(()) => {}
            Err(Exchange::Failed(kind)) => return Err(kind),
            // An error reply (wrong password, bad db) makes the connection
            // unusable; logged with the server's own words because the
            // client only sees the consequence.
            Err(Exchange::Rejected(frame)) => {
                tracing::warn!(pool = %shared.config.name, server = %server.name,
                    reply = %String::from_utf8_lossy(frame.raw()).trim_end(),
                    "backend rejected the connection handshake (redis_auth / redis_db)");
                return Err(BackendErrorKind::InvalidReply);
            }
        }
    }
    Ok(conn)
}

/// Why [`Conn::exchange`] failed.
pub(crate) enum Exchange {
    /// The socket failed, closed, or sent something unparsable.
    Failed(BackendErrorKind),
    /// The server answered with this error reply.
    Rejected(Frame),
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
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    wire: &[u8],
    n: usize,
    expect: Expect,
) -> Result<(), Exchange> {
    let io = |e: std::io::Error| Exchange::Failed(BackendErrorKind::from_io(&e));
    s.write_all(wire).await.map_err(io)?;
    let mut decoder = ReplyDecoder::new(match expect {
        Expect::Resp => Protocol::Redis,
        Expect::Mc(_) => Protocol::Memcache,
    });
    let mut buf = BytesMut::with_capacity(256);
    let mut got = 0;
    while got < n {
        match decoder.decode(expect, &mut buf) {
            Ok(Some(frame)) if frame.is_error() => return Err(Exchange::Rejected(frame)),
            Ok(Some(_)) => got += 1,
            Ok(None) => {
                if s.read_buf(&mut buf).await.map_err(io)? == 0 {
                    return Err(Exchange::Failed(BackendErrorKind::Unknown));
                }
            }
            Err(()) => return Err(Exchange::Failed(BackendErrorKind::InvalidReply)),
        }
    }
    Ok(())
}

/// Run one connected socket until it fails, the server closes it, or the pool
/// asks it to close. `first` is the request that asked for the connection,
/// with the time the connect started. Returns true when the task should end
/// (close requested or channel gone), false to go back to waiting for a
/// request and reconnect.
async fn drive<R, W>(
    shared: &Arc<PoolShared>,
    idx: usize,
    mut rd: R,
    mut wr: W,
    first: Option<(BackendReq, Instant)>,
    rx: &mut mpsc::UnboundedReceiver<Msg>,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let server = &shared.servers[idx];
    let stats = &server.stats;
    let mut decoder = ReplyDecoder::new(shared.protocol);
    let mut wq: VecDeque<Bytes> = VecDeque::new();
    // (size, expects a reply) of each request not fully written yet.
    let mut wq_reqs: VecDeque<(i64, bool)> = VecDeque::new();

    let mut written_into_front = 0usize; // bytes of wq's front request already written
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut rbuf = BytesMut::new();
    let mut closing = false;
    let mut sleep: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(Duration::from_secs(3600)));
    let mut armed: Option<Instant> = None;

    // Server latency is observed into this connection's own copy of the histogram
    // that `deliver` flushes once per read: one atomic update per bucket hit
    // per read, not four per reply.
    let mut latency = server.latency.local();
    let timeout = shared.config.timeout;
    // `now` is read once per batch taken from the channel: the requests of one
    // batch are written together, and a clock read per request was a
    // measurable share of the pipelined request path.
    let push = |r: BackendReq,
                now: Instant,
                wq: &mut VecDeque<Bytes>,
                wq_reqs: &mut VecDeque<(i64, bool)>,
                inflight: &mut VecDeque<InFlight>|
     -> u64 {
        let len = r.wire.len() as i64;
        wq_reqs.push_back((len, r.expect.is_some()));
        wq.push_back(r.wire);
        if let Some(expect) = r.expect {
            inflight.push_back(InFlight {
                start: now,
                expect,
                reply: r.reply,
                deadline: timeout.map(|t| now + t),
                bytes: len,
            });
        }
        len as u64
    };
    // The requests and request_bytes counters, updated once per batch.
    let count = |n: u64, bytes: u64| {
        stats.requests.fetch_add(n, Relaxed);
        stats.request_bytes.fetch_add(bytes, Relaxed);
    };
    if let Some((r, connect_started)) = first {
        // It and whatever queued behind it waited for the connect: timed
        // from its start.
        let (mut n, mut bytes) = (
            1,
            push(r, connect_started, &mut wq, &mut wq_reqs, &mut inflight),
        );
        while inflight.len() < MAX_IN_FLIGHT {
            match rx.try_recv() {
                Ok(Msg::Req(r)) => {
                    n += 1;
                    bytes += push(r, connect_started, &mut wq, &mut wq_reqs, &mut inflight);
                }
                Ok(Msg::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        count(n, bytes);
    }

    let outcome: Result<(), BackendErrorKind> = loop {
        if closing && inflight.is_empty() && wq.is_empty() {
            let _ = wr.shutdown().await;
            return true;
        }
        // Re-arm the timer only when the oldest deadline changes: resetting a
        // Sleep costs a timer-wheel update, and most loop turns don't need one.
        let want = inflight.front().and_then(|f| f.deadline);
        if want != armed {
            if let Some(d) = want {
                sleep.as_mut().reset(d);
            }
            armed = want;
        }
        let can_take = !closing && inflight.len() < MAX_IN_FLIGHT;
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            res = rd.read_buf(&mut rbuf) => {
                match res {
                    Ok(0) => {
                        stats.server_eof.fetch_add(1, Relaxed);
                        break Err(BackendErrorKind::Unknown);
                    }
                    Ok(_) => {
                        if let Err(kind) = deliver(shared, idx, &mut decoder, &mut rbuf, &mut inflight, &mut latency) {
                            stats.server_err.fetch_add(1, Relaxed);
                            break Err(kind);
                        }
                        if rbuf.is_empty() && rbuf.capacity() > 4 * READ_CHUNK {
                            // A large reply grew the buffer; don't keep it for an idle connection.
                            rbuf = BytesMut::new();
                        }
                    }
                    Err(e) => {
                        stats.server_err.fetch_add(1, Relaxed);
                        break Err(BackendErrorKind::from_io(&e));
                    }
                }
            }
            // New requests before the write: whatever is queued now joins
            // this write, so a busy connection sends batches, not singles.
            msg = rx.recv(), if can_take => {
                match msg {
                    Some(Msg::Req(r)) => {
                        let now = Instant::now();
                        let (mut n, mut bytes) = (1, push(r, now, &mut wq, &mut wq_reqs, &mut inflight));
                        for _ in 0..BATCH {
                            match rx.try_recv() {
                                Ok(Msg::Req(r)) => {
                                    n += 1;
                                    bytes += push(r, now, &mut wq, &mut wq_reqs, &mut inflight);
                                }
                                Ok(Msg::Close) => { closing = true; break }
                                Err(_) => break,
                            }
                        }
                        count(n, bytes);
                    }
                    Some(Msg::Close) | None => closing = true,
                }
            }
            res = crate::net::write_some(&mut wr, &mut wq), if !wq.is_empty() => {
                match res {
                    Ok(mut n) => {
                        // Move fully written requests from in_queue to
                        // out_queue, with one update of each gauge per write.
                        let (mut done, mut done_bytes, mut out, mut out_bytes) = (0i64, 0i64, 0i64, 0i64);
                        while n > 0 {
                            let Some((front, wants_reply)) = wq_reqs.front().copied() else { break };
                            let left = front as usize - written_into_front;
                            if n >= left {
                                n -= left;
                                written_into_front = 0;
                                wq_reqs.pop_front();
                                done += 1;
                                done_bytes += front;
                                if wants_reply {
                                    out += 1;
                                    out_bytes += front;
                                }
                            } else {
                                written_into_front += n;
                                n = 0;
                            }
                        }
                        if done > 0 {
                            stats.in_queue.fetch_sub(done, Relaxed);
                            stats.in_queue_bytes.fetch_sub(done_bytes, Relaxed);
                        }
                        if out > 0 {
                            stats.out_queue.fetch_add(out, Relaxed);
                            stats.out_queue_bytes.fetch_add(out_bytes, Relaxed);
                        }
                    }
                    Err(e) => {
                        stats.server_err.fetch_add(1, Relaxed);
                        break Err(BackendErrorKind::from_io(&e));
                    }
                }
            }
            () = sleep.as_mut(), if armed.is_some() => {
                stats.server_timedout.fetch_add(1, Relaxed);
                tracing::debug!(pool = %shared.config.name, server = %server.name, "request timed out; closing the connection");
                break Err(BackendErrorKind::TimedOut);
            }
        }
    };

    // The connection is broken: everything written or queued on it fails, so
    // no late reply can ever be matched to a later request.
    let kind = outcome.err().unwrap_or(BackendErrorKind::Unknown);
    let err = BackendError::new(kind, server.name.clone());
    // Gauges: whatever was counted in a queue leaves it. In-flight requests
    // are in write order, so the written ones (in out_queue) are the first
    // `inflight - unwritten-with-reply` of them.
    let unwritten_replies = wq_reqs.iter().filter(|r| r.1).count();
    let written = inflight.len().saturating_sub(unwritten_replies);
    let written_bytes: i64 = inflight.iter().take(written).map(|f| f.bytes).sum();
    stats.out_queue.fetch_sub(written as i64, Relaxed);
    stats.out_queue_bytes.fetch_sub(written_bytes, Relaxed);
    let unwritten: i64 = wq_reqs.iter().map(|r| r.0).sum();
    stats.in_queue.fetch_sub(wq_reqs.len() as i64, Relaxed);
    stats.in_queue_bytes.fetch_sub(unwritten, Relaxed);
    let mut failed = 0usize;
    for f in inflight.drain(..) {
        failed += 1;
        if let Some(tx) = f.reply {
            tx.send(Err(err.clone()));
        }
    }
    if failed > 0 || kind != BackendErrorKind::Unknown {
        shared.stats.forward_error.fetch_add(failed as u64, Relaxed);
        shared.record_failure(idx);
    }
    tracing::debug!(pool = %shared.config.name, server = %server.name, error = kind.words(), failed,
        "backend connection closed");
    closing
}

/// Parse every complete reply in `rbuf` and hand each to its request.
fn deliver(
    shared: &PoolShared,
    idx: usize,
    decoder: &mut ReplyDecoder,
    rbuf: &mut BytesMut,
    inflight: &mut VecDeque<InFlight>,
    latency: &mut prometheus::local::LocalHistogram,
) -> Result<(), BackendErrorKind> {
    let server = &shared.servers[idx];
    let stats = &server.stats;
    // Counted here and added to the shared counters once per read.
    let (mut got, mut got_bytes, mut sent_bytes) = (0u64, 0u64, 0i64);
    // One clock read for every reply this read completed: they arrived together.
    let mut now: Option<Instant> = None;
    loop {
        let Some(front) = inflight.front() else {
            if rbuf.is_empty() {
                break;
            }
            // Bytes nobody asked for: the stream is out of step.
            settle(stats, got, got_bytes, sent_bytes);
            return Err(BackendErrorKind::InvalidReply);
        };
        match decoder.decode(front.expect, rbuf) {
            Ok(Some(frame)) => {
                let Some(f) = inflight.pop_front() else { break };
                let now = *now.get_or_insert_with(Instant::now);
                latency.observe(now.saturating_duration_since(f.start).as_secs_f64());
                got += 1;
                got_bytes += frame.raw().len() as u64;
                sent_bytes += f.bytes;
                if let Some(tx) = f.reply {
                    tx.send(Ok(frame));
                }
            }
            Ok(None) => break,
            Err(()) => {
                settle(stats, got, got_bytes, sent_bytes);
                return Err(BackendErrorKind::InvalidReply);
            }
        }
    }
    if got > 0 {
        settle(stats, got, got_bytes, sent_bytes);
        latency.flush();
        shared.record_success(idx);
    }
    Ok(())
}

/// Count `got` replies (`got_bytes` long, answering requests of `sent_bytes`)
/// as received: out of out_queue, into responses.
fn settle(stats: &super::stats::ServerStats, got: u64, got_bytes: u64, sent_bytes: i64) {
    if got == 0 {
        return;
    }
    stats.responses.fetch_add(got, Relaxed);
    stats.response_bytes.fetch_add(got_bytes, Relaxed);
    stats.out_queue.fetch_sub(got as i64, Relaxed);
    stats.out_queue_bytes.fetch_sub(sent_bytes, Relaxed);
}
