//! A client connection's reply inbox: the replies to its single-server
//! requests land in one shared, growing queue of slots instead of a oneshot
//! channel each.
//!
//! Why: a oneshot is one heap allocation per request, made by the session and
//! freed by whichever side lets go last. With dozens of clients each
//! pipelining, hundreds are alive at once, more than glibc's per-thread cache
//! holds, so every one went through malloc's locked bins (callgrind at
//! pipeline 16: the allocation alone averaged 200 instructions, the free
//! 110). An inbox allocates only when its queue grows past its high-water
//! mark.
//!
//! Each slot keeps its own waker, so replies may be awaited from any task, in
//! any order, like oneshots. A sender dropped without sending (its connection
//! task gone) resolves its slot to an error, never leaves it waiting; a
//! receiver dropped first frees its slot, and a late reply to it is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::backend::Frame;
use super::error::{BackendError, BackendErrorKind};

/// Slots an idle inbox may keep room for (VecDeque's smallest allocation).
const KEEP_IDLE_SLOTS: usize = 4;

/// The replies of one client's requests, in the order they were sent.
///
/// Hand it to [`Pool::dispatch_redis_in`](super::Pool::dispatch_redis_in)
/// (or the memcached and generic variants) for every request of that client;
/// it also carries the client's `hint`, which keeps its requests to a server
/// on one connection.
#[derive(Debug)]
pub struct Inbox {
    shared: Arc<Shared>,
    next: u64,
    hint: usize,
    resp3: bool,
}

impl Inbox {
    /// An empty inbox for the client `hint` (any id; clients with different
    /// ids spread over a server's connections).
    pub fn new(hint: usize) -> Inbox {
        Inbox {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    base: 0,
                    slots: VecDeque::new(),
                }),
            }),
            next: 0,
            hint,
            resp3: false,
        }
    }

    /// Whether this client speaks RESP3 (`HELLO 3`): its requests then go
    /// to connections negotiated with `HELLO 3`, whose replies are RESP3.
    pub fn resp3(&self) -> bool {
        self.resp3
    }

    /// Switch the client's protocol (its `HELLO`); later requests use the
    /// matching connections.
    pub fn set_resp3(&mut self, resp3: bool) {
        self.resp3 = resp3;
    }

    /// The client id given to [`Inbox::new`].
    pub fn hint(&self) -> usize {
        self.hint
    }

    /// Give back the memory of the slot queue if nothing is outstanding and
    /// it grew past a few slots: a client that pipelined a thousand requests
    /// once should not hold room for a thousand replies while idle, and one
    /// that sends a request at a time should not reallocate for each.
    pub fn release_idle(&self) {
        let mut st = self.shared.lock();
        if st.slots.is_empty() && st.slots.capacity() > KEEP_IDLE_SLOTS {
            st.slots = VecDeque::new();
        }
    }

    /// A new slot: the sending half for a backend connection and the
    /// receiving half for the caller. Takes no lock; the slot exists in the
    /// queue once either half first touches it.
    pub(crate) fn slot(&mut self) -> (SlotTx, SlotRx) {
        let seq = self.next;
        self.next += 1;
        (
            SlotTx {
                shared: Some(self.shared.clone()),
                seq,
            },
            SlotRx {
                shared: self.shared.clone(),
                seq,
                done: false,
            },
        )
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// The state, even if a thread panicked holding it: every update below
    /// leaves it consistent, so the data is still good.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct State {
    /// Sequence number of `slots[0]`; every lower one is finished.
    base: u64,
    slots: VecDeque<Slot>,
}

type Outcome = Result<Frame, BackendError>;

#[derive(Debug)]
enum Slot {
    /// No reply yet; the waker of whoever polled last.
    Waiting(Option<Waker>),
    /// The reply, not yet taken.
    Done(Outcome),
    /// Taken, or nobody wants it any more.
    Gone,
}

impl State {
    /// The slot of `seq`, created (waiting) if neither half touched it yet;
    /// `None` once it is finished and released.
    #[inline]
    fn get(&mut self, seq: u64) -> Option<&mut Slot> {
        let idx = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        while self.slots.len() <= idx {
            self.slots.push_back(Slot::Waiting(None));
        }
        self.slots.get_mut(idx)
    }

    /// Release finished slots at the front.
    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(Slot::Gone)) {
            self.slots.pop_front();
            self.base += 1;
        }
    }
}

/// The sending half of a slot, carried with the request to its connection.
#[derive(Debug)]
pub(crate) struct SlotTx {
    shared: Option<Arc<Shared>>,
    seq: u64,
}

impl SlotTx {
    /// Deliver the reply and wake whoever waits for it.
    #[inline]
    pub(crate) fn send(mut self, outcome: Outcome) {
        if let Some(shared) = self.shared.take() {
            put(&shared, self.seq, outcome);
        }
    }
}

impl Drop for SlotTx {
    fn drop(&mut self) {
        // Dropped unsent: the connection task went away with the request.
        if let Some(shared) = self.shared.take() {
            let err = BackendError::new(BackendErrorKind::Unknown, Arc::from(""));
            put(&shared, self.seq, Err(err));
        }
    }
}

fn put(shared: &Shared, seq: u64, outcome: Outcome) {
    let waker = {
        let mut st = shared.lock();
        match st.get(seq) {
            Some(slot @ Slot::Waiting(_)) => match std::mem::replace(slot, Slot::Done(outcome)) {
                Slot::Waiting(w) => w,
                _ => None,
            },
            // The receiver is gone (or the slot long released): drop it.
            _ => None,
        }
    };
    if let Some(w) = waker {
        w.wake();
    }
}

/// The receiving half of a slot.
#[derive(Debug)]
pub(crate) struct SlotRx {
    shared: Arc<Shared>,
    seq: u64,
    done: bool,
}

impl SlotRx {
    // Inlined into `ReplyFuture::poll_answer`, as it was into the old
    // `poll_chunks` by itself: callgrind counted ~20 instructions a request
    // for the call once the reply future returned a decoded `Answer`.
    #[inline]
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        if self.done {
            let err = BackendError::new(BackendErrorKind::Unknown, Arc::from(""));
            return Poll::Ready(Err(err));
        }
        let mut st = self.shared.lock();
        let Some(slot) = st.get(self.seq) else {
            self.done = true;
            let err = BackendError::new(BackendErrorKind::Unknown, Arc::from(""));
            return Poll::Ready(Err(err));
        };
        match slot {
            Slot::Waiting(w) => {
                match w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Slot::Done(_) => {
                let Slot::Done(outcome) = std::mem::replace(slot, Slot::Gone) else {
                    unreachable!("matched Done above")
                };
                st.trim();
                self.done = true;
                Poll::Ready(outcome)
            }
            Slot::Gone => {
                self.done = true;
                let err = BackendError::new(BackendErrorKind::Unknown, Arc::from(""));
                Poll::Ready(Err(err))
            }
        }
    }
}

impl Drop for SlotRx {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.shared.lock();
        if let Some(slot) = st.get(self.seq) {
            *slot = Slot::Gone;
            st.trim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use twem_proto::resp;

    fn frame(s: &'static [u8]) -> Frame {
        let mut buf = bytes::BytesMut::from(s);
        let mut codec = resp::ReplyCodec::new(resp::Limits::default());
        let f = tokio_util::codec::Decoder::decode(&mut codec, &mut buf)
            .expect("valid")
            .expect("complete");
        Frame::Resp(f)
    }

    fn raw(o: Outcome) -> Vec<u8> {
        match o {
            Ok(f) => f.raw().to_vec(),
            Err(e) => format!("err {}", e.kind.words()).into_bytes(),
        }
    }

    fn len(inbox: &Inbox) -> usize {
        inbox.shared.lock().slots.len()
    }

    #[tokio::test]
    async fn replies_reach_their_own_slot_in_any_order() {
        let mut inbox = Inbox::new(7);
        assert_eq!(inbox.hint(), 7);
        let (t1, mut r1) = inbox.slot();
        let (t2, mut r2) = inbox.slot();
        let (t3, mut r3) = inbox.slot();
        t3.send(Ok(frame(b":3\r\n")));
        t1.send(Ok(frame(b":1\r\n")));
        assert_eq!(raw(poll_fn(|cx| r3.poll(cx)).await), b":3\r\n");
        assert_eq!(raw(poll_fn(|cx| r1.poll(cx)).await), b":1\r\n");
        t2.send(Ok(frame(b":2\r\n")));
        assert_eq!(raw(poll_fn(|cx| r2.poll(cx)).await), b":2\r\n");
        // Every slot finished: the queue is empty again.
        assert_eq!(len(&inbox), 0);
        // Three slots fit the smallest allocation: kept while idle.
        inbox.release_idle();
        assert!(inbox.shared.lock().slots.capacity() > 0);
        // A hundred outstanding at once (senders dropped unsent, so each
        // slot holds an error): the queue grew, and is released once idle.
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..100).map(|_| inbox.slot()).unzip();
        drop(txs);
        assert_eq!(len(&inbox), 100);
        drop(rxs);
        assert_eq!(len(&inbox), 0);
        inbox.release_idle();
        assert_eq!(inbox.shared.lock().slots.capacity(), 0);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let mut inbox = Inbox::new(0);
        let (tx, mut rx) = inbox.slot();
        let h = tokio::spawn(async move { raw(poll_fn(|cx| rx.poll(cx)).await) });
        tokio::task::yield_now().await;
        tx.send(Ok(frame(b"+OK\r\n")));
        assert_eq!(h.await.expect("join"), b"+OK\r\n");
    }

    #[tokio::test]
    async fn a_dropped_sender_resolves_to_an_error() {
        let mut inbox = Inbox::new(0);
        let (tx, mut rx) = inbox.slot();
        drop(tx);
        assert_eq!(raw(poll_fn(|cx| rx.poll(cx)).await), b"err unknown");
    }

    #[tokio::test]
    async fn a_dropped_receiver_frees_its_slot() {
        let mut inbox = Inbox::new(0);
        let (t1, r1) = inbox.slot();
        let (t2, mut r2) = inbox.slot();
        drop(r1);
        t1.send(Ok(frame(b":1\r\n"))); // nobody wants it: dropped
        t2.send(Ok(frame(b":2\r\n")));
        assert_eq!(raw(poll_fn(|cx| r2.poll(cx)).await), b":2\r\n");
        assert_eq!(len(&inbox), 0);
        // A receiver dropped before its reply came: the late reply is dropped
        // and the queue does not grow.
        let (t3, r3) = inbox.slot();
        drop(r3);
        t3.send(Ok(frame(b":3\r\n")));
        assert_eq!(len(&inbox), 0);
    }
}
