//! The requests of one backend connection between the channel and their
//! replies, and the stats gauges that describe them.
//!
//! A request is first *unwritten* (counted in `in_queue`), then *in flight*
//! once all its bytes are written (`out_queue`), then answered. Every
//! gauge update happens here, once per batch, write or read, so that the
//! gauges always return to zero however a connection ends.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{BackendReq, Expect, Frame, ReplyTx};
use crate::pool::error::BackendError;
use crate::pool::stats::ServerStats;

/// A request queued for writing (all of it not yet written).
struct Unwritten {
    bytes: i64,
    /// Whether a reply will come (an [`InFlight`] entry waits for it).
    wants_reply: bool,
    /// A `noreply` request's sender, told when the request is written.
    written_tx: Option<ReplyTx>,
}

/// A request that waits for its reply (written or not yet).
pub(super) struct InFlight {
    /// When the connection took it: the start of its server latency and of
    /// its `timeout` (nutcracker, too, times a request from when it is sent).
    pub start: Instant,
    pub expect: Expect,
    pub reply: Option<ReplyTx>,
    deadline: Option<Instant>,
    pub bytes: i64,
}

/// The requests of one connection, in write order.
pub(super) struct InFlightQueue<'a> {
    stats: &'a ServerStats,
    timeout: Option<Duration>,
    unwritten: VecDeque<Unwritten>,
    /// Bytes of the front unwritten request already written.
    written_into_front: usize,
    inflight: VecDeque<InFlight>,
}

impl<'a> InFlightQueue<'a> {
    pub(super) fn new(stats: &'a ServerStats, timeout: Option<Duration>) -> Self {
        InFlightQueue {
            stats,
            timeout,
            unwritten: VecDeque::new(),
            written_into_front: 0,
            inflight: VecDeque::new(),
        }
    }

    /// Requests waiting for a reply.
    pub(super) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Nothing unwritten and nothing waiting.
    pub(super) fn is_idle(&self) -> bool {
        self.inflight.is_empty() && self.unwritten.is_empty()
    }

    /// When the oldest request waiting for a reply times out.
    pub(super) fn oldest_deadline(&self) -> Option<Instant> {
        self.inflight.front().and_then(|f| f.deadline)
    }

    /// How the reply at the front must be parsed, if one is awaited.
    pub(super) fn front_expect(&self) -> Option<Expect> {
        self.inflight.front().map(|f| f.expect)
    }

    /// The front request's `ASKING` was answered: its own reply is next.
    pub(super) fn asked(&mut self) {
        if let Some(f) = self.inflight.front_mut() {
            f.expect = Expect::Resp;
        }
    }

    /// Take `r`, taken from the channel at `now`; returns its bytes to write.
    pub(super) fn push(&mut self, r: BackendReq, now: Instant) -> Bytes {
        let len = r.wire.len() as i64;
        match r.expect {
            Some(expect) => {
                self.unwritten.push_back(Unwritten {
                    bytes: len,
                    wants_reply: true,
                    written_tx: None,
                });
                self.inflight.push_back(InFlight {
                    start: now,
                    expect,
                    reply: r.reply,
                    deadline: self.timeout.map(|t| now + t),
                    bytes: len,
                });
            }
            None => self.unwritten.push_back(Unwritten {
                bytes: len,
                wants_reply: false,
                written_tx: r.reply,
            }),
        }
        r.wire
    }

    /// `n` more bytes were written: move fully written requests from
    /// `in_queue` to `out_queue` (one update of each gauge per write) and
    /// tell `noreply` senders their request left.
    pub(super) fn written(&mut self, mut n: usize) {
        let (mut done, mut done_bytes, mut out, mut out_bytes) = (0i64, 0i64, 0i64, 0i64);
        while n > 0 {
            let Some(front) = self.unwritten.front() else {
                break;
            };
            let left = front.bytes as usize - self.written_into_front;
            if n < left {
                self.written_into_front += n;
                break;
            }
            n -= left;
            self.written_into_front = 0;
            let Some(front) = self.unwritten.pop_front() else {
                break;
            };
            done += 1;
            done_bytes += front.bytes;
            if front.wants_reply {
                out += 1;
                out_bytes += front.bytes;
            }
            if let Some(tx) = front.written_tx {
                tx.send(Ok(Frame::NoReply));
            }
        }
        // This thread's copy, looked up once per written batch.
        let stats = self.stats.local();
        if done > 0 {
            stats.in_queue.fetch_sub(done, Relaxed);
            stats.in_queue_bytes.fetch_sub(done_bytes, Relaxed);
        }
        if out > 0 {
            stats.out_queue.fetch_add(out, Relaxed);
            stats.out_queue_bytes.fetch_add(out_bytes, Relaxed);
        }
    }

    /// The request at the front got its reply.
    pub(super) fn pop_answered(&mut self) -> Option<InFlight> {
        self.inflight.pop_front()
    }

    /// Count `got` replies (`got_bytes` long, answering requests of
    /// `sent_bytes`) as received: out of `out_queue`, into `responses`.
    pub(super) fn settle(&self, got: u64, got_bytes: u64, sent_bytes: i64) {
        if got == 0 {
            return;
        }
        let stats = self.stats.local();
        stats.responses.fetch_add(got, Relaxed);
        stats.response_bytes.fetch_add(got_bytes, Relaxed);
        stats.out_queue.fetch_sub(got as i64, Relaxed);
        stats.out_queue_bytes.fetch_sub(sent_bytes, Relaxed);
    }

    /// The connection is gone: every request on it fails with `err` (a
    /// `noreply` one silently), every gauge gives back what it counted.
    /// Returns how many requests failed.
    pub(super) fn fail_all(&mut self, err: &BackendError) -> usize {
        let stats = self.stats.local();
        // In-flight requests are in write order, so the written ones (in
        // out_queue) are the first `inflight - unwritten-with-reply` of them.
        let unwritten_replies = self.unwritten.iter().filter(|r| r.wants_reply).count();
        let written = self.inflight.len().saturating_sub(unwritten_replies);
        let written_bytes: i64 = self.inflight.iter().take(written).map(|f| f.bytes).sum();
        stats.out_queue.fetch_sub(written as i64, Relaxed);
        stats.out_queue_bytes.fetch_sub(written_bytes, Relaxed);
        let unwritten: i64 = self.unwritten.iter().map(|r| r.bytes).sum();
        stats
            .in_queue
            .fetch_sub(self.unwritten.len() as i64, Relaxed);
        stats.in_queue_bytes.fetch_sub(unwritten, Relaxed);
        self.written_into_front = 0;
        // Unwritten noreply requests are lost with the connection, silently
        // (no reply was ever due); their clients' budgets are freed.
        for u in self.unwritten.drain(..) {
            if let Some(tx) = u.written_tx {
                tx.send(Ok(Frame::NoReply));
            }
        }
        let failed = self.inflight.len();
        for f in self.inflight.drain(..) {
            if let Some(tx) = f.reply {
                tx.send(Err(err.clone()));
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::error::BackendErrorKind;
    use std::sync::Arc;
    use tokio::sync::oneshot;

    fn req(
        wire: &'static [u8],
        reply: bool,
    ) -> (BackendReq, oneshot::Receiver<Result<Frame, BackendError>>) {
        let (tx, rx) = oneshot::channel();
        (
            BackendReq {
                wire: Bytes::from_static(wire),
                expect: reply.then_some(Expect::Resp),
                reply: Some(ReplyTx::Oneshot(tx)),
            },
            rx,
        )
    }

    fn gauges(s: &ServerStats) -> [i64; 4] {
        [
            s.total_i64(|c| &c.in_queue),
            s.total_i64(|c| &c.in_queue_bytes),
            s.total_i64(|c| &c.out_queue),
            s.total_i64(|c| &c.out_queue_bytes),
        ]
    }

    // The pool counts a request into in_queue when it sends it; the queue
    // moves it along as bytes are written and gives everything back when
    // the connection fails, whatever was half written.
    #[test]
    fn gauges_follow_writes_and_return_to_zero_on_failure() {
        let stats = ServerStats::default();
        let mut q = InFlightQueue::new(&stats, None);
        let mut rxs = Vec::new();
        for (w, reply) in [(&b"abcd"[..], true), (b"ef", false), (b"ghij", true)] {
            let (r, rx) = req(w, reply);
            stats.local().in_queue.fetch_add(1, Relaxed);
            stats
                .local()
                .in_queue_bytes
                .fetch_add(w.len() as i64, Relaxed);
            q.push(r, Instant::now());
            rxs.push(rx);
        }
        assert_eq!(gauges(&stats), [3, 10, 0, 0]);
        q.written(5); // the first request and one byte of the noreply one
        assert_eq!(gauges(&stats), [2, 6, 1, 4]);
        q.written(1); // the noreply request is out: its sender is told
        assert_eq!(gauges(&stats), [1, 4, 1, 4]);
        assert!(matches!(rxs[1].try_recv(), Ok(Ok(Frame::NoReply))));
        q.written(2); // half of the third
        let err = BackendError::new(BackendErrorKind::ConnectionReset, Arc::from("s"));
        assert_eq!(q.fail_all(&err), 2);
        assert_eq!(gauges(&stats), [0, 0, 0, 0]);
        assert!(matches!(rxs[0].try_recv(), Ok(Err(_))));
        assert!(matches!(rxs[2].try_recv(), Ok(Err(_))));
        assert!(q.is_idle());
    }

    #[test]
    fn deadline_is_the_oldest_waiting_request() {
        let stats = ServerStats::default();
        let mut q = InFlightQueue::new(&stats, Some(Duration::from_millis(100)));
        assert_eq!(q.oldest_deadline(), None);
        let t0 = Instant::now();
        let (a, _ra) = req(b"a", true);
        let (b, _rb) = req(b"b", true);
        q.push(a, t0);
        q.push(b, t0 + Duration::from_millis(5));
        assert_eq!(q.oldest_deadline(), Some(t0 + Duration::from_millis(100)));
        assert!(q.pop_answered().is_some());
        assert_eq!(q.oldest_deadline(), Some(t0 + Duration::from_millis(105)));
    }
}
