//! One client connection of the proxy: decode requests, dispatch each through
//! the pool in order, and write the replies back in that same order, in
//! batches. [`serve_connection`] is the whole of it; the server crate only
//! accepts sockets and hands them here.
//!
//! Memory is bounded per client: the session stops decoding (and so stops
//! reading) while too many replies are outstanding, too many request bytes
//! are in flight or too many reply bytes wait for a client that does not
//! read. The bound on outstanding requests adapts to the size of this
//! client's replies, so a client fetching 1 MiB values pipelines a few dozen
//! at a time while one fetching small values pipelines hundreds.
//!
//! A [`Session`] turns in steps, each a method: [`Session::decode_and_dispatch`]
//! (as far as the bounds allow), [`Session::collect_ready`] (replies that
//! are there, in order, into the write queue), [`Session::should_close`],
//! then one wait for whichever can make progress: the socket readable
//! ([`Session::on_readable`]), the reply at the front of the queue, the
//! write queue written ([`Session::on_written`]) or shutdown.

mod frontend;
mod pubsub;
mod redis;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

pub use frontend::{Frontend, MemcacheFrontend, RedisFrontend, Step};
pub use pubsub::Push;

use crate::pool::{Inbox, Pool, Protocol, ReplyChunks, ReplyFuture};

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

/// The read half of a client socket, read by readiness so that no buffer is
/// needed while the client is idle.
pub trait ClientRead: AsyncRead + Send + Unpin {
    /// Poll until the socket may be readable. A poll, not an `async fn`:
    /// tokio's `readable()` future links a waiter into the socket's list under
    /// its lock and unlinks it on drop, on every session loop turn; the poll
    /// keeps the socket's one reader waker.
    /// `&mut`: a TLS stream has no readiness without reading (see
    /// [`crate::tls::TlsRead`]).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl ClientRead for tokio::net::tcp::OwnedReadHalf {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

impl ClientRead for tokio::net::unix::OwnedReadHalf {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
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

/// Serve one client of the pool in `slot` (reloads swap the pool inside;
/// each request uses the pool current when it is decoded) until it leaves,
/// errs, or `shutdown` fires and its outstanding replies are written. `id`
/// names the client in logs and keeps its requests to a server on one
/// backend connection.
// Not an `async fn` on purpose (see the body's first comment).
#[allow(clippy::manual_async_fn)]
pub fn serve_connection<R, W>(
    slot: Arc<ArcSwap<Pool>>,
    id: usize,
    rd: R,
    wr: W,
    shutdown: CancellationToken,
) -> impl Future<Output = End>
where
    R: ClientRead,
    W: AsyncWrite + Unpin,
{
    // An async block over its captures, not an `async fn` (whose arguments
    // would be kept twice in every client's task; see `Session::run`).
    async move {
        let protocol = slot.load().protocol();
        match protocol {
            Protocol::Redis => {
                Session::new(RedisFrontend::new(), slot, id, rd, wr)
                    .run(shutdown)
                    .await
            }
            Protocol::Memcache => {
                Session::new(MemcacheFrontend::new(), slot, id, rd, wr)
                    .run(shutdown)
                    .await
            }
        }
    }
}

/// Requests that may be outstanding for a client whose replies average
/// `avg_reply` bytes: the reply budget over that size, within bounds.
fn window_for(avg_reply: usize) -> usize {
    (OUTSTANDING_BUDGET / avg_reply.max(1)).clamp(MIN_WINDOW, MAX_WINDOW)
}

/// A request dispatched and not yet answered (or, for `noreply`, written).
struct Pending {
    fut: ReplyFuture,
    close_after: bool,
    /// Bytes of the client's request it answers (what the decoder consumed).
    req_bytes: usize,
    /// When the request was decoded, for the pool latency histogram.
    start: Instant,
}

/// Where the session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and answering.
    Serving,
    /// The client closed its side: answer what was sent, then end.
    PeerClosed,
    /// A reply that ends the connection is queued: read no more.
    Closing,
    /// That reply reached the write queue: end once it is written.
    CloseReady,
    /// The proxy is shutting down: answer what was sent, then end.
    Draining,
}

/// One client connection's state; see the module docs for its steps.
pub struct Session<F: Frontend, R, W> {
    fe: F,
    codec: F::Codec,
    slot: Arc<ArcSwap<Pool>>,
    /// Where this client's single-server replies land (no channel per request).
    inbox: Inbox,
    rd: R,
    wr: W,
    rbuf: BytesMut,
    /// Size of the next read: doubles while reads fill the buffer, back to
    /// the minimum when the buffer is released.
    chunk: usize,
    /// Requests dispatched, in order.
    queue: VecDeque<Pending>,
    /// Bytes of the requests in `queue`.
    req_bytes: usize,
    /// Replies ready to write, in order.
    wq: VecDeque<Bytes>,
    wq_bytes: usize,
    /// (bytes left to write, decode time) of each reply in `wq`.
    unwritten: VecDeque<(usize, Instant)>,
    avg_reply: usize,
    /// Requests that may be outstanding: the reply budget over `avg_reply`,
    /// recomputed when replies move it (not per decoded request).
    window: usize,
    phase: Phase,
    /// The pool's latency histogram: the same across reloads (same name).
    /// Observed into the worker's own copy: nothing to flush, and a scrape
    /// that follows a reply finds it counted.
    latency: Arc<crate::pool::metrics::PoolLatency>,
}

impl<F, R, W> Session<F, R, W>
where
    F: Frontend,
    R: ClientRead,
    W: AsyncWrite + Unpin,
{
    /// A session for a client just accepted.
    pub fn new(fe: F, slot: Arc<ArcSwap<Pool>>, id: usize, rd: R, wr: W) -> Self {
        let latency = Arc::clone(&slot.load().metrics().latency);
        Session {
            codec: fe.codec(),
            fe,
            slot,
            inbox: Inbox::new(id),
            rd,
            wr,
            rbuf: BytesMut::new(),
            chunk: MIN_READ_CHUNK,
            queue: VecDeque::new(),
            req_bytes: 0,
            wq: VecDeque::new(),
            wq_bytes: 0,
            unwritten: VecDeque::new(),
            avg_reply: INITIAL_AVG_REPLY,
            window: window_for(INITIAL_AVG_REPLY),
            phase: Phase::Serving,
            latency,
        }
    }

    /// Whether another request may be decoded now: none of the bounds is
    /// reached and nothing ends the connection.
    fn room(&self) -> bool {
        !matches!(self.phase, Phase::Closing | Phase::CloseReady)
            && self.queue.len() < self.window
            && self.wq_bytes < MAX_UNWRITTEN
            && self.req_bytes < MAX_REQUEST_BYTES_IN_FLIGHT
    }

    /// Decode and dispatch what the bounds allow, through the pool that is
    /// current now (a reload may have replaced it). Returns whether the
    /// decoder ran out of bytes (only then is reading more useful: if a
    /// bound stopped decoding, complete requests are already buffered, and
    /// reading on would buffer a client that never reads without bound).
    pub fn decode_and_dispatch(&mut self) -> bool {
        // A guard, not a clone: cloning the Arc every turn made all sessions
        // bump one shared reference count. Dropped before any await.
        let pool = self.slot.load();
        // One clock read per turn: the requests decoded together arrived together.
        let mut now: Option<Instant> = None;
        while self.room() {
            let before = self.rbuf.len();
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(item)) => {
                    let consumed = before - self.rbuf.len();
                    let start = *now.get_or_insert_with(Instant::now);
                    match self.fe.handle(item, &pool, &mut self.inbox) {
                        Step::Reply(fut) => self.push(fut, false, consumed, start),
                        Step::Close(fut) => self.push(fut, true, 0, start),
                        Step::Nothing => {}
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    self.on_protocol_error(&pool, &e);
                    let reply = match self.fe.protocol_error(&e) {
                        Some(b) => ReplyFuture::ready(Ok(b)),
                        None => ReplyFuture::no_reply(),
                    };
                    self.push(reply, true, 0, *now.get_or_insert_with(Instant::now));
                }
            }
        }
        false
    }

    fn push(&mut self, fut: ReplyFuture, close_after: bool, req_bytes: usize, start: Instant) {
        if close_after {
            self.phase = Phase::Closing;
        }
        self.req_bytes += req_bytes;
        self.queue.push_back(Pending {
            fut,
            close_after,
            req_bytes,
            start,
        });
    }

    /// Count and log a client whose framing broke.
    fn on_protocol_error(&self, pool: &Pool, e: &twem_proto::ProtoError) {
        if e.is_foreign_protocol() {
            pool.stats().client_foreign_protocol.fetch_add(1, Relaxed);
            // Once per connection: decoding stops here (the connection is
            // closing), so a flood of lines costs one log line.
            tracing::warn!(
                pool = pool.name(),
                client = self.inbox.hint(),
                "closing a client that speaks another protocol: {e}"
            );
        } else {
            tracing::debug!(pool = pool.name(), error = %e, "client protocol error");
        }
        pool.stats().client_err.fetch_add(1, Relaxed);
    }

    /// Move every reply that is already there to the write queue, in order,
    /// while the unwritten bytes allow.
    pub fn collect_ready(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        while self.wq_bytes < MAX_UNWRITTEN {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            let Poll::Ready(res) = front.fut.poll_answer(&mut cx) else {
                break;
            };
            let (close_after, start) = (front.close_after, front.start);
            self.req_bytes -= front.req_bytes;
            self.queue.pop_front();
            // A server's reply is written as its own buffer (no copy, no
            // reference-count bump); `None` is nothing to read.
            let reply = match res {
                Ok(answer) => answer.into_chunks(),
                Err(e) => Some(ReplyChunks::One(self.fe.error_reply(&e))),
            };
            let len = reply.as_ref().map_or(0, ReplyChunks::len);
            self.avg_reply = self.avg_reply - self.avg_reply / 8 + len / 8;
            match reply {
                Some(reply) if len > 0 => {
                    self.wq_bytes += len;
                    self.unwritten.push_back((len, start));
                    // A merged reply may be a chain: its large values are the
                    // servers' own buffers, written without a copy.
                    match reply {
                        ReplyChunks::One(b) => self.wq.push_back(b),
                        chain => self.wq.extend(chain.into_parts().filter(|b| !b.is_empty())),
                    }
                }
                // `None`: a noreply request, done once written to its
                // server, or a quit. A built reply without bytes (a
                // frontend's) has nothing to write either, and must not wait
                // for a write that never comes.
                _ => {
                    self.latency.observe(start.elapsed());
                }
            }
            if close_after {
                self.phase = Phase::CloseReady;
                break;
            }
        }
        self.window = window_for(self.avg_reply);
        self.collect_pushes(&mut cx);
    }

    /// Move pub/sub output to the write queue, after every reply before it
    /// (a confirmation never overtakes the reply to an earlier command).
    fn collect_pushes(&mut self, cx: &mut Context<'_>) {
        if !self.queue.is_empty() || self.phase == Phase::CloseReady || !self.fe.has_pushes() {
            return;
        }
        while self.wq_bytes < MAX_UNWRITTEN {
            let push = match self.fe.take_push() {
                Some(p) => p,
                None => match self.fe.poll_push(cx) {
                    Poll::Ready(()) => continue,
                    Poll::Pending => break,
                },
            };
            let (bytes, close) = match push {
                Push::Data(b) => (b, false),
                Push::Close(b) => (b, true),
            };
            self.wq_bytes += bytes.len();
            self.unwritten.push_back((bytes.len(), Instant::now()));
            self.wq.push_back(bytes);
            if close {
                self.phase = Phase::CloseReady;
                break;
            }
        }
    }

    /// How the session ends now, if it does: everything it owed is written.
    pub fn should_close(&self) -> Option<End> {
        if !self.wq.is_empty() {
            return None;
        }
        match self.phase {
            Phase::CloseReady => Some(End::Closed),
            Phase::PeerClosed if self.queue.is_empty() => Some(End::Eof),
            Phase::Draining if self.queue.is_empty() => Some(End::Shutdown),
            // A blocked client that left (or a shutdown) does not wait for
            // its blocking command, which may never be answered: Redis, too,
            // unblocks and frees a client that disconnects. Dropping the
            // reply closes its borrowed backend connection.
            Phase::PeerClosed if self.front_blocks() => Some(End::Eof),
            Phase::Draining if self.front_blocks() => Some(End::Shutdown),
            _ => None,
        }
    }

    /// Whether the reply next in line is a blocking command's.
    fn front_blocks(&self) -> bool {
        self.queue.front().is_some_and(|p| p.fut.is_blocking())
    }

    /// An idle client (nothing buffered, nothing outstanding) holds no read
    /// buffer: thousands of idle connections cost only their task. The
    /// buffer is allocated again when the socket becomes readable.
    fn release_if_idle(&mut self) {
        if self.rbuf.is_empty() && self.queue.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
            self.chunk = MIN_READ_CHUNK;
            self.inbox.release_idle();
        }
    }

    /// The socket said it may be readable: read what it has. `Err` ends the
    /// session.
    pub fn on_readable(&mut self) -> Result<(), End> {
        match read_some(&mut self.rd, &mut self.rbuf, &mut self.chunk) {
            Ok(0) => {
                if self.phase == Phase::Serving {
                    self.phase = Phase::PeerClosed;
                }
                self.slot.load().stats().client_eof.fetch_add(1, Relaxed);
                Ok(())
            }
            Ok(_) => Ok(()),
            // Readiness can be spurious; wait again.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err(self.on_socket_error()),
        }
    }

    fn on_socket_error(&self) -> End {
        self.slot.load().stats().client_err.fetch_add(1, Relaxed);
        End::Error
    }

    /// `n` bytes of the write queue went out: replies fully written now
    /// have their latency complete.
    pub fn on_written(&mut self, mut n: usize) {
        self.wq_bytes = self.wq_bytes.saturating_sub(n);
        // One clock read for every reply this write completed.
        let mut since: Option<crate::since::Since> = None;
        while let Some((left, start)) = self.unwritten.front_mut() {
            if n < *left {
                *left -= n;
                break;
            }
            n -= *left;
            let since = since.get_or_insert_with(|| crate::since::Since::new(Instant::now()));
            self.latency.observe(since.of(*start));
            self.unwritten.pop_front();
        }
    }

    /// Serve until the client leaves, errs, or `shutdown` fires and its
    /// outstanding replies are written.
    pub fn run(self, shutdown: CancellationToken) -> impl Future<Output = End> {
        // An async block that uses its captures in place, not an `async fn`:
        // an async fn's arguments are kept in its future beside the locals
        // they are moved into, so the session (400 bytes) was held twice in
        // every client's task (measured: the future was 1,024 bytes).
        let mut this = self;
        async move {
            // Registered once: a fresh `cancelled()` per loop turn would lock the
            // token's waiter list twice per request, shared by every session.
            let waiting = std::pin::pin!(shutdown.cancelled());
            let mut cancelled = ShutdownSignal::new(&shutdown, waiting);
            loop {
                let need_more = this.decode_and_dispatch();
                this.collect_ready();
                // Decoding stopped at a bound and replies have since left the
                // queue: decode on before deciding to wait. A burst of `noreply`
                // requests empties the queue without writing anything, so
                // progress is judged by what can be decoded, not by replies
                // produced.
                if !need_more && this.room() {
                    continue;
                }
                if let Some(end) = this.should_close() {
                    let _ = this.wr.shutdown().await;
                    return end;
                }
                this.release_if_idle();

                let can_read =
                    this.phase == Phase::Serving && need_more && this.wq_bytes < MAX_UNWRITTEN;
                let wait_front = this.phase != Phase::CloseReady
                    && !this.queue.is_empty()
                    && this.wq_bytes < MAX_UNWRITTEN;
                let can_write = !this.wq.is_empty();
                let wait_push = this.fe.has_pushes()
                    && this.queue.is_empty()
                    && this.phase == Phase::Serving
                    && this.wq_bytes < MAX_UNWRITTEN;
                if !can_read && !wait_front && !can_write && !wait_push {
                    // Unreachable by the rules above (a bound that stops decoding
                    // always leaves a reply to wait for); if it ever happens,
                    // say so instead of closing silently.
                    tracing::warn!(
                        pool = this.slot.load().name(),
                        client = this.inbox.hint(),
                        "client session cannot make progress; closing it"
                    );
                    let _ = this.wr.shutdown().await;
                    return End::Closed;
                }
                let draining = this.phase == Phase::Draining;
                let Session {
                    rd,
                    queue,
                    wr,
                    wq,
                    fe,
                    ..
                } = &mut this;
                // One poll_fn that polls the enabled branches in a fixed order,
                // not a `select!` of futures: the futures would be kept in this
                // future, in every client's task, idle or not (the select's
                // branch futures were ~500 bytes of a 1,040-byte session
                // future). Reads first, so a busy client's requests are batched
                // before its replies are flushed.
                let event = std::future::poll_fn(|cx| {
                    if can_read {
                        if let Poll::Ready(res) = rd.poll_read_ready(cx) {
                            return Poll::Ready(Event::Readable(res));
                        }
                    }
                    // The front reply, or (none outstanding) pub/sub output.
                    if (wait_front || wait_push) && poll_front(cx, queue, fe, wait_push).is_ready()
                    {
                        return Poll::Ready(Event::FrontReady);
                    }
                    if can_write {
                        if let Poll::Ready(res) = crate::net::poll_write_some(cx, wr, wq) {
                            return Poll::Ready(Event::Written(res));
                        }
                    }
                    if !draining && std::pin::Pin::new(&mut cancelled).poll(cx).is_ready() {
                        return Poll::Ready(Event::Shutdown);
                    }
                    Poll::Pending
                })
                .await;
                match event {
                    Event::Readable(Ok(())) => {
                        if let Err(end) = this.on_readable() {
                            return end;
                        }
                    }
                    Event::Readable(Err(_)) | Event::Written(Err(_)) => {
                        return this.on_socket_error();
                    }
                    Event::FrontReady => {}
                    Event::Written(Ok(n)) => this.on_written(n),
                    Event::Shutdown => this.phase = Phase::Draining,
                }
            }
        }
    }
}

/// A shutdown token's `cancelled()` future, polled for real only until it
/// has registered the task's waker. The session loop polls its shutdown
/// branch on every turn in which nothing else is ready, and tokio's
/// `Notify` takes the token's waiter lock on every poll of a waiting
/// future, a lock shared by every session of the process (~100
/// instructions a request at pipeline 1). After registration the token's
/// flag is read instead; the cancel wakes the registered waker. (A waker
/// of our own that notes the wake would save the flag's read too, but
/// costs an allocation per client, which the idle-connection memory
/// bound has no room for.)
struct ShutdownSignal<'a, 'b> {
    token: &'a CancellationToken,
    fut: std::pin::Pin<&'b mut tokio_util::sync::WaitForCancellationFuture<'a>>,
    /// The waker the inner future holds (polled again if the task's
    /// waker ever changes).
    registered: Option<Waker>,
}

impl<'a, 'b> ShutdownSignal<'a, 'b> {
    /// `fut` is `token.cancelled()`, pinned by the caller (in its own
    /// future: nothing allocated for it).
    fn new(
        token: &'a CancellationToken,
        fut: std::pin::Pin<&'b mut tokio_util::sync::WaitForCancellationFuture<'a>>,
    ) -> Self {
        ShutdownSignal {
            token,
            fut,
            registered: None,
        }
    }
}

impl Future for ShutdownSignal<'_, '_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.token.is_cancelled() {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        match self.fut.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                self.registered = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// What one wait of [`Session::run`] brought.
enum Event {
    Readable(std::io::Result<()>),
    FrontReady,
    Written(std::io::Result<usize>),
    Shutdown,
}

/// Whether the reply at the front of `queue` is there (the next turn takes
/// it; the reply is kept in the future, resolved). With nothing
/// outstanding and `pushes`, whether the frontend has pub/sub output.
#[inline]
fn poll_front<F: Frontend>(
    cx: &mut Context<'_>,
    queue: &mut VecDeque<Pending>,
    fe: &mut F,
    pushes: bool,
) -> Poll<()> {
    if let Some(front) = queue.front_mut() {
        front
            .fut
            .poll_answer(cx)
            .map(|r| front.fut = ReplyFuture::resolved(r))
    } else if pushes {
        fe.poll_push(cx)
    } else {
        // Nothing to wait for (the branch is not polled then).
        Poll::Ready(())
    }
}

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
    let mut cx = Context::from_waker(Waker::noop());
    // One poll of an AsyncRead read: unlike try_read_buf, a short read clears
    // the readiness, which saves a read() that would only say EAGAIN on the
    // next turn.
    let (r, room) = if rbuf.capacity() == 0 {
        // Uninitialised: zeroing 1 KiB per read showed up as memset.
        let mut tmp = [std::mem::MaybeUninit::<u8>::uninit(); MIN_READ_CHUNK];
        let mut rb = tokio::io::ReadBuf::uninit(&mut tmp);
        let r = match std::pin::Pin::new(&mut *rd).poll_read(&mut cx, &mut rb) {
            Poll::Ready(r) => r.map(|()| {
                rbuf.extend_from_slice(rb.filled());
                rb.filled().len()
            }),
            Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        };
        (r, MIN_READ_CHUNK)
    } else {
        if rbuf.capacity() - rbuf.len() < *chunk / 2 {
            rbuf.reserve(*chunk);
        }
        let room = rbuf.capacity() - rbuf.len();
        let r = match std::pin::pin!(rd.read_buf(rbuf)).poll(&mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        };
        (r, room)
    };
    // A read that filled all the room asks for more next time.
    if matches!(r, Ok(n) if n == room) {
        *chunk = (*chunk * 2).min(READ_CHUNK);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A session on a real loopback socket for `pool`; returns the client's
    /// end and the session's outcome.
    async fn start(
        pool: Pool,
        shutdown: CancellationToken,
    ) -> (TcpStream, tokio::task::JoinHandle<End>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (rd, wr) = server.into_split();
        let slot = Arc::new(ArcSwap::from_pointee(pool));
        let task = tokio::spawn(serve_connection(slot, 7, rd, wr, shutdown));
        (client, task)
    }

    /// A Redis pool whose only server refuses connections (nothing in these
    /// tests needs a server: local commands and failures).
    fn redis_pool() -> Pool {
        Pool::builder("t")
            .redis()
            .server("127.0.0.1:1:1 nobody")
            .timeout(Duration::from_millis(500))
            .build()
            .expect("pool")
    }

    async fn read_to_end(c: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out))
            .await
            .expect("the session closes")
            .expect("read");
        out
    }

    async fn outcome(task: tokio::task::JoinHandle<End>) -> End {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the session ends")
            .expect("no panic")
    }

    #[tokio::test]
    async fn local_commands_in_order_then_quit_closes() {
        let (mut c, task) = start(redis_pool(), CancellationToken::new()).await;
        c.write_all(b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nQUIT\r\nPING\r\n")
            .await
            .expect("write");
        // Nothing after QUIT is answered.
        assert_eq!(read_to_end(&mut c).await, b"+PONG\r\n$2\r\nhi\r\n+OK\r\n");
        assert_eq!(outcome(task).await, End::Closed);
    }

    #[tokio::test]
    async fn a_failed_server_is_worded_and_the_session_goes_on() {
        let (mut c, task) = start(redis_pool(), CancellationToken::new()).await;
        c.write_all(b"GET k\r\nPING\r\n").await.expect("write");
        c.shutdown().await.expect("half close");
        assert_eq!(
            read_to_end(&mut c).await,
            b"-ERR Connection refused\r\n+PONG\r\n"
        );
        assert_eq!(outcome(task).await, End::Eof);
    }

    #[tokio::test]
    async fn broken_framing_answers_then_closes() {
        let pool = redis_pool();
        let stats = Arc::clone(pool.stats_arc());
        let (mut c, task) = start(pool, CancellationToken::new()).await;
        c.write_all(b"PING\r\n*1\r\n$x\r\n").await.expect("write");
        let got = read_to_end(&mut c).await;
        assert!(
            got.starts_with(b"+PONG\r\n-ERR Protocol error"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(outcome(task).await, End::Closed);
        assert_eq!(stats.client_err.load(Relaxed), 1);
        assert_eq!(stats.client_foreign_protocol.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn another_protocol_is_closed_silently_and_counted() {
        let pool = redis_pool();
        let stats = Arc::clone(pool.stats_arc());
        let (mut c, task) = start(pool, CancellationToken::new()).await;
        c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n\r\nSET pwned 1\r\n")
            .await
            .expect("write");
        assert_eq!(read_to_end(&mut c).await, b"");
        assert_eq!(outcome(task).await, End::Closed);
        assert_eq!(stats.client_foreign_protocol.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn auth_is_the_session_s_business() {
        let pool = Pool::builder("t")
            .redis()
            .server("127.0.0.1:1:1 nobody")
            .redis_auth("pw")
            .build()
            .expect("pool");
        let (mut c, task) = start(pool, CancellationToken::new()).await;
        c.write_all(b"PING\r\nAUTH nope\r\nAUTH pw\r\nPING\r\n")
            .await
            .expect("write");
        c.shutdown().await.expect("half close");
        assert_eq!(
            read_to_end(&mut c).await,
            b"-NOAUTH Authentication required\r\n-ERR invalid password\r\n+OK\r\n+PONG\r\n"
        );
        assert_eq!(outcome(task).await, End::Eof);
    }

    /// Counts its wakes.
    struct CountWaker(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for CountWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    // The shutdown branch stays pending without touching the token, wakes
    // the task once the token fires, and is then ready; a token already
    // fired is ready at the first poll.
    #[test]
    fn shutdown_signal_wakes_and_fires() {
        let token = CancellationToken::new();
        let count = Arc::new(CountWaker(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let waiting = std::pin::pin!(token.cancelled());
        let mut signal = ShutdownSignal::new(&token, waiting);
        for _ in 0..3 {
            assert!(std::pin::Pin::new(&mut signal).poll(&mut cx).is_pending());
        }
        assert_eq!(count.0.load(Relaxed), 0);
        token.cancel();
        assert_eq!(count.0.load(Relaxed), 1, "the cancel woke the task");
        assert!(std::pin::Pin::new(&mut signal).poll(&mut cx).is_ready());

        let fired = CancellationToken::new();
        fired.cancel();
        let waiting = std::pin::pin!(fired.cancelled());
        let mut signal = ShutdownSignal::new(&fired, waiting);
        assert!(std::pin::Pin::new(&mut signal).poll(&mut cx).is_ready());
    }

    #[tokio::test]
    async fn shutdown_answers_what_was_sent_then_ends() {
        let token = CancellationToken::new();
        let (mut c, task) = start(redis_pool(), token.clone()).await;
        c.write_all(b"PING\r\n").await.expect("write");
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).await.expect("pong");
        assert_eq!(&buf, b"+PONG\r\n");
        token.cancel();
        assert_eq!(outcome(task).await, End::Shutdown);
        assert_eq!(read_to_end(&mut c).await, b"");
    }

    // 500 noreply requests in one write (their server refuses: each fails
    // silently), then `version`: the session answers it. The request window
    // fills and empties without a single reply written; that used to look
    // like "no progress possible" and close the connection.
    #[tokio::test]
    async fn memcached_noreply_burst_is_not_a_stall() {
        let pool = Pool::builder("m")
            .server("127.0.0.1:1:1 nobody")
            .build()
            .expect("pool");
        let (mut c, task) = start(pool, CancellationToken::new()).await;
        let mut burst = Vec::new();
        for i in 0..500 {
            burst.extend_from_slice(format!("delete k{i} noreply\r\n").as_bytes());
        }
        burst.extend_from_slice(b"bogus\r\nversion\r\nquit\r\n");
        c.write_all(&burst).await.expect("write");
        assert_eq!(
            read_to_end(&mut c).await,
            b"ERROR\r\nSERVER_ERROR Connection refused\r\n"
        );
        assert_eq!(outcome(task).await, End::Closed);
    }
}
