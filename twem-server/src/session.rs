//! One client connection: decode requests, dispatch each through the pool in
//! order, and write the replies back in that same order, in batches.
//!
//! Memory is bounded per client: the session stops decoding (and so stops
//! reading) while too many replies are outstanding or too many reply bytes
//! wait for a client that does not read. The bound on outstanding requests
//! adapts to the size of this client's replies, so a client fetching 1 MiB
//! values pipelines a few dozen at a time while one fetching small values
//! pipelines hundreds.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use twem_core::pool::{CallError, Inbox, Pool, ReplyChunks, ReplyFuture};
use twem_proto::{memcache as mc, resp, ProtoError};

/// Reply bytes waiting for a slow client before the session stops taking
/// new requests.
const MAX_UNWRITTEN: usize = 4 * 1024 * 1024;
/// Budget for replies outstanding (dispatched, not yet written): divided by
/// the client's average reply size it gives the request window.
const OUTSTANDING_BUDGET: usize = 16 * 1024 * 1024;
/// Window bounds, whatever the reply sizes.
const MIN_WINDOW: usize = 8;
const MAX_WINDOW: usize = 1024;
/// Assumed reply size until the client's replies teach us better: large, so
/// a fresh connection's first burst can't pin much memory.
const INITIAL_AVG_REPLY: usize = 512 * 1024;
/// Bytes of requests a client may have in flight (dispatched and not yet
/// answered, or for `noreply` not yet written to the server) before the
/// session stops reading it. Without it a client pipelining large values to
/// a stalled server pinned gigabytes: the count window alone allowed 1,024
/// requests of any size. One request larger than this still goes through
/// alone (its size is bounded by the codec's frame limit).
const MAX_REQUEST_BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;
/// Largest amount asked of one read.
const READ_CHUNK: usize = 8 * 1024;
/// First read after the buffer was released (see `read_some`).
const MIN_READ_CHUNK: usize = 1024;

/// One read of what the socket has, without waiting (`WouldBlock` if
/// nothing).
///
/// A released buffer (an idle client's) is refilled through a buffer on the
/// stack, then allocated at the size actually read: a request at pipeline 1
/// then costs a small allocation, which glibc serves from its fast bins,
/// where a 1 KiB one per request (fifty clients each holding one while their
/// request is out) went through its main heap. The stack buffer lives in
/// this function's frame, never in the session's future.
#[inline(never)]
fn read_some<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut BytesMut,
    chunk: &mut usize,
) -> std::io::Result<usize> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // One poll of an AsyncRead read: unlike try_read_buf, a short read clears
    // the readiness, which saves a read() that would only say EAGAIN on the
    // next turn.
    let (r, room) = if rbuf.capacity() == 0 {
        // Uninitialised: zeroing 1 KiB per read showed up as memset.
        let mut tmp = [std::mem::MaybeUninit::<u8>::uninit(); MIN_READ_CHUNK];
        let mut rb = tokio::io::ReadBuf::uninit(&mut tmp);
        let r = match std::pin::Pin::new(&mut *rd).poll_read(&mut cx, &mut rb) {
            std::task::Poll::Ready(r) => r.map(|()| {
                rbuf.extend_from_slice(rb.filled());
                rb.filled().len()
            }),
            std::task::Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        };
        (r, MIN_READ_CHUNK)
    } else {
        if rbuf.capacity() - rbuf.len() < *chunk / 2 {
            rbuf.reserve(*chunk);
        }
        let room = rbuf.capacity() - rbuf.len();
        let r = match std::pin::pin!(rd.read_buf(rbuf)).poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        };
        (r, room)
    };
    // A read that filled all the room asks for more next time.
    if matches!(r, Ok(n) if n == room) {
        *chunk = (*chunk * 2).min(READ_CHUNK);
    }
    r
}

/// What the session does with one decoded item.
pub enum Step {
    /// Queue this reply.
    Reply(ReplyFuture),
    /// Queue this reply, then close once everything before it is written.
    Close(ReplyFuture),
    /// Nothing to answer (memcached `noreply` handled by the pool returns an
    /// empty reply instead; this is for items the frontend swallows).
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
    /// How a failed call is worded to this client.
    fn error_reply(&self, e: &CallError) -> Bytes;
    /// What a client whose framing broke reads before the connection closes.
    fn protocol_error(&self, e: &ProtoError) -> Bytes;
}

/// Redis clients: AUTH handled here (the session knows whether this client
/// authenticated), QUIT answered `+OK` then closed, everything else goes to
/// the pool.
pub struct RedisFrontend {
    authed: bool,
    limits: resp::Limits,
}

impl RedisFrontend {
    /// A frontend for a new client. The password checked is the pool's
    /// current `redis_auth`, so a reload that sets one applies to clients
    /// already connected.
    pub fn new() -> Self {
        RedisFrontend {
            authed: false,
            limits: resp::Limits::default(),
        }
    }
}

impl Default for RedisFrontend {
    fn default() -> Self {
        Self::new()
    }
}

fn ready(b: &'static [u8]) -> ReplyFuture {
    ReplyFuture::ready(Ok(Bytes::from_static(b)))
}

impl Frontend for RedisFrontend {
    type Codec = resp::RequestCodec;

    fn codec(&self) -> resp::RequestCodec {
        resp::RequestCodec::new(self.limits)
    }

    fn handle(&mut self, req: resp::Request, pool: &Pool, inbox: &mut Inbox) -> Step {
        let name = req.name();
        // Per-request lines only at nutcracker levels 8+ (TRACE).
        tracing::trace!(pool = pool.name(), client = inbox.hint(),
            command = %String::from_utf8_lossy(name), "request");
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
        if !self.authed && pool.config().redis_auth.is_some() {
            return Step::Reply(ready(b"-NOAUTH Authentication required\r\n"));
        }
        Step::Reply(pool.dispatch_redis_in(&req, inbox))
    }

    fn error_reply(&self, e: &CallError) -> Bytes {
        e.resp_reply()
    }

    fn protocol_error(&self, e: &ProtoError) -> Bytes {
        // Nothing for another protocol, as redis-server: whatever sent it
        // (a browser) has no use for a RESP error.
        if e.is_foreign_protocol() {
            return Bytes::new();
        }
        Bytes::from(format!("-ERR {e}\r\n"))
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
            limits: twem_core::pool::memcache_limits(),
        }
    }
}

impl Default for MemcacheFrontend {
    fn default() -> Self {
        Self::new()
    }
}

impl Frontend for MemcacheFrontend {
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
            Ok(req) if req.command() == mc::Command::Quit => {
                Step::Close(ReplyFuture::ready(Ok(Bytes::new())))
            }
            Ok(req) => Step::Reply(pool.dispatch_memcache_in(&req, inbox)),
        }
    }

    fn error_reply(&self, e: &CallError) -> Bytes {
        e.memcache_reply()
    }

    fn protocol_error(&self, e: &ProtoError) -> Bytes {
        // Nothing for another protocol: a binary client would read a text
        // line as garbage, and a browser has no use for one.
        if e.is_foreign_protocol() {
            return Bytes::new();
        }
        mc::protocol_error_reply(e)
    }
}

/// The read half of a client socket, read by readiness so that no buffer is
/// needed while the client is idle.
pub trait ClientRead: Send + Unpin {
    /// Poll until the socket may be readable. A poll, not an `async fn`:
    /// tokio's `readable()` future links a waiter into the socket's list under
    /// its lock and unlinks it on drop, on every session loop turn; the poll
    /// keeps the socket's one reader waker.
    fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>>;
}

impl ClientRead for tokio::net::tcp::OwnedReadHalf {
    fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

impl ClientRead for tokio::net::unix::OwnedReadHalf {
    fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

struct Slot {
    fut: ReplyFuture,
    close_after: bool,
    /// Bytes of the client's request it answers (what the decoder consumed).
    req_bytes: usize,
    /// When the request was decoded, for the pool latency histogram.
    start: Instant,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed its side and every reply was written.
    Eof,
    /// QUIT / quit, or a protocol error reply, then closed by us.
    Closed,
    /// The socket failed.
    Error,
    /// The proxy is shutting down and the client's replies were written.
    Shutdown,
}

/// Serve one client until it leaves, errs, or `shutdown` fires and its
/// outstanding replies are written.
pub async fn run<F, R, W>(
    mut fe: F,
    slot: Arc<ArcSwap<Pool>>,
    hint: usize,
    mut rd: R,
    mut wr: W,
    shutdown: CancellationToken,
) -> End
where
    F: Frontend,
    R: ClientRead + AsyncRead,
    W: AsyncWrite + Unpin,
{
    let mut codec = fe.codec();
    // Registered once: a fresh `cancelled()` per loop turn would lock the
    // token's waiter list twice per request, shared by every session.
    let mut cancelled = std::pin::pin!(shutdown.cancelled());
    // The pool's latency histogram: the same child across reloads (same name).
    // Observed into a session-local copy, flushed when replies complete: one
    // atomic update per bucket hit per batch instead of several per reply.
    let latency = slot.load().metrics().latency.local();
    // (bytes left to write, decode time) of each reply in `wq`.
    let mut unwritten: VecDeque<(usize, Instant)> = VecDeque::new();
    // Where this client's single-server replies land (no channel per request).
    let mut inbox = Inbox::new(hint);
    let mut rbuf = BytesMut::new();
    // Size of the next read: doubles while reads fill the buffer, back to
    // the minimum when the buffer is released.
    let mut chunk = MIN_READ_CHUNK;
    let mut queue: VecDeque<Slot> = VecDeque::new();
    let mut wq: VecDeque<Bytes> = VecDeque::new();
    let mut wq_bytes = 0usize;
    let mut avg_reply = INITIAL_AVG_REPLY;
    // Bytes of the requests in `queue`: bounded by MAX_REQUEST_BYTES_IN_FLIGHT.
    let mut req_bytes = 0usize;
    let mut read_open = true;
    let mut closing = false; // a close-after reply is queued: read no more
    let mut close_now = false; // that reply reached the write queue
    let mut draining = false;

    loop {
        let window = (OUTSTANDING_BUDGET / avg_reply.max(1)).clamp(MIN_WINDOW, MAX_WINDOW);
        // Decode and dispatch what the window allows, through the pool that
        // is current now (a reload may have replaced it).
        let mut need_more = false;
        {
            // A guard, not a clone: cloning the Arc every turn made all
            // sessions bump one shared reference count. Dropped before any
            // await below.
            let pool = slot.load();
            // One clock read per turn: the requests decoded together arrived together.
            let mut now: Option<Instant> = None;
            // Read more only when the decoder asked for more bytes: if the window
            // stopped decoding, complete requests are already buffered, and
            // reading on would buffer a client that never reads without bound.
            while !closing
                && queue.len() < window
                && wq_bytes < MAX_UNWRITTEN
                && req_bytes < MAX_REQUEST_BYTES_IN_FLIGHT
            {
                let before = rbuf.len();
                match codec.decode(&mut rbuf) {
                    Ok(Some(item)) => {
                        let consumed = before - rbuf.len();
                        let start = *now.get_or_insert_with(Instant::now);
                        match fe.handle(item, &pool, &mut inbox) {
                            Step::Reply(fut) => {
                                req_bytes += consumed;
                                queue.push_back(Slot {
                                    fut,
                                    close_after: false,
                                    req_bytes: consumed,
                                    start,
                                });
                            }
                            Step::Close(fut) => {
                                queue.push_back(Slot {
                                    fut,
                                    close_after: true,
                                    req_bytes: 0,
                                    start,
                                });
                                closing = true;
                            }
                            Step::Nothing => {}
                        }
                    }
                    Ok(None) => {
                        need_more = true;
                        break;
                    }
                    Err(e) => {
                        if e.is_foreign_protocol() {
                            // Once per connection: decoding stops here
                            // (`closing`), so an attacker's flood of lines
                            // costs one line per connection, not per line.
                            tracing::warn!(
                                pool = pool.name(),
                                client = hint,
                                "closing a client that speaks another protocol: {e}"
                            );
                            pool.stats()
                                .client_foreign_protocol
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        } else {
                            tracing::debug!(pool = pool.name(), error = %e, "client protocol error");
                        }
                        pool.stats()
                            .client_err
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let reply = fe.protocol_error(&e);
                        queue.push_back(Slot {
                            fut: ReplyFuture::ready(Ok(reply)),
                            close_after: true,
                            req_bytes: 0,
                            start: *now.get_or_insert_with(Instant::now),
                        });
                        closing = true;
                    }
                }
            }
        }
        // Move every reply that is already there to the write queue, in order.
        let mut noreply_done = false;
        while wq_bytes < MAX_UNWRITTEN {
            let Some(front) = queue.front_mut() else {
                break;
            };
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let std::task::Poll::Ready(res) = front.fut.poll_chunks(&mut cx) else {
                break;
            };
            let close_after = front.close_after;
            let start = front.start;
            req_bytes -= front.req_bytes;
            queue.pop_front();
            let reply = match res {
                Ok(r) => r,
                Err(e) => ReplyChunks::One(fe.error_reply(&e)),
            };
            let len = reply.len();
            avg_reply = avg_reply - avg_reply / 8 + len / 8;
            if len == 0 {
                // A noreply request: done once written to its server.
                latency.observe(start.elapsed().as_secs_f64());
                noreply_done = true;
            } else {
                wq_bytes += len;
                unwritten.push_back((len, start));
                // A merged reply may be a chain: its large values are the
                // servers' own buffers, written without a copy.
                match reply {
                    ReplyChunks::One(b) => wq.push_back(b),
                    chain => wq.extend(chain.into_parts().filter(|b| !b.is_empty())),
                }
            }
            if close_after {
                close_now = true;
                break;
            }
        }
        if noreply_done {
            latency.flush();
        }
        // Decoding stopped at a bound (window, request bytes) and replies
        // have since left the queue: decode on before deciding to wait. A
        // burst of `noreply` requests empties the queue without writing
        // anything, so progress is judged by what can be decoded, not by
        // replies produced (the "nothing can make progress" guard below
        // used to close such a client silently).
        if !need_more
            && !closing
            && queue.len() < window
            && wq_bytes < MAX_UNWRITTEN
            && req_bytes < MAX_REQUEST_BYTES_IN_FLIGHT
        {
            continue;
        }
        if wq.is_empty() {
            if close_now {
                let _ = wr.shutdown().await;
                return End::Closed;
            }
            if (!read_open || draining) && queue.is_empty() {
                let _ = wr.shutdown().await;
                return if draining { End::Shutdown } else { End::Eof };
            }
        }
        // An idle client (nothing buffered, nothing outstanding) holds no
        // read buffer: thousands of idle connections cost only their task.
        // The buffer is allocated again when the socket becomes readable.
        if rbuf.is_empty() && queue.is_empty() && rbuf.capacity() > 0 {
            rbuf = BytesMut::new();
            chunk = MIN_READ_CHUNK;
            inbox.release_idle();
        }

        let can_read = read_open && !closing && !draining && need_more && wq_bytes < MAX_UNWRITTEN;
        let wait_front = !close_now && !queue.is_empty() && wq_bytes < MAX_UNWRITTEN;
        let can_write = !wq.is_empty();
        if !can_read && !wait_front && !can_write {
            // Nothing can make progress: unreachable by the rules above
            // (a bound that stops decoding always leaves a reply to wait
            // for); if it ever happens, say so instead of closing silently.
            tracing::warn!(
                pool = slot.load().name(),
                client = inbox.hint(),
                "client session cannot make progress; closing it"
            );
            let _ = wr.shutdown().await;
            return End::Closed;
        }
        tokio::select! {
            // Fixed order, no per-turn random pick: reads first, so a busy
            // client's requests are batched before its replies are flushed.
            biased;
            res = std::future::poll_fn(|cx| rd.poll_read_ready(cx)), if can_read => {
                let res = res.and_then(|()| read_some(&mut rd, &mut rbuf, &mut chunk));
                match res {
                    Ok(0) => {
                        read_open = false;
                        slot.load().stats().client_eof.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    // Readiness can be spurious; wait again.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        slot.load().stats().client_err.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return End::Error;
                    }
                }
            },
            _ = async { if let Some(front) = queue.front_mut() { let _ = std::future::poll_fn(|cx| {
                    // Only wake when the front is ready; the next loop turn takes it.
                    front.fut.poll_chunks(cx).map(|r| { front.fut = ReplyFuture::ready_chunks(r); })
                }).await; } }, if wait_front => {}
            res = twem_core::net::write_some(&mut wr, &mut wq), if can_write => match res {
                Ok(n) => {
                    wq_bytes = wq_bytes.saturating_sub(n);
                    // Replies fully written now: their latency is complete.
                    let mut n = n;
                    let mut now: Option<Instant> = None;
                    while let Some((left, start)) = unwritten.front_mut() {
                        if n < *left {
                            *left -= n;
                            break;
                        }
                        n -= *left;
                        let now = *now.get_or_insert_with(Instant::now);
                        latency.observe(now.saturating_duration_since(*start).as_secs_f64());
                        unwritten.pop_front();
                    }
                    // Flushed only when something completed: most turns
                    // complete nothing, and an empty flush still cost ~60
                    // instructions, four times per request at pipeline 1.
                    if now.is_some() {
                        latency.flush();
                    }
                }
                Err(_) => {
                    slot.load().stats().client_err.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return End::Error;
                }
            },
            () = &mut cancelled, if !draining => {
                draining = true;
            }
        }
    }
}
