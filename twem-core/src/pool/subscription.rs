//! Pub/sub for embedders: [`Pool::subscribe`] gives a [`Subscription`],
//! whose [`next_message`](Subscription::next_message) yields what is
//! published on its channels (and patterns), with the proxy's placement: a
//! channel lives where a key of the same name would, so a `PUBLISH` through
//! the pool, through a twemproxy on the same config, or straight to that
//! server reaches it.
//!
//! Each subscription holds one connection per server its channels map to
//! (patterns: every live server), counted in the pool's
//! `pinned_connections`; dropping it closes them. A connection lost ends the
//! subscription with an error (subscribe again), never silently.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

use twem_proto::resp::{self, Reply};

use super::backend::{PushItem, PushSink};
use super::{CallError, Pinned, Pool, RequestError, ServerError};

/// One message of a [`Subscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The channel it was published on.
    pub channel: Bytes,
    /// The pattern that matched it, for a pattern subscription.
    pub pattern: Option<Bytes>,
    /// What was published.
    pub payload: Bytes,
}

/// An embedder's subscriptions; see the module docs.
#[derive(Debug)]
pub struct Subscription {
    pool: Pool,
    sink: PushSink,
    rx: mpsc::UnboundedReceiver<PushItem>,
    conns: Vec<(usize, Pinned)>,
    /// Messages that arrived while waiting for confirmations.
    early: VecDeque<Message>,
}

impl Pool {
    /// Subscribe to `channels`; returns once every server confirmed.
    pub async fn subscribe<C: AsRef<[u8]>>(
        &self,
        channels: &[C],
    ) -> Result<Subscription, CallError> {
        let mut s = self.subscription();
        s.subscribe(channels).await?;
        Ok(s)
    }

    /// An empty subscription, to add channels and patterns to.
    pub fn subscription(&self) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        Subscription {
            pool: self.clone(),
            sink: PushSink {
                tx,
                bytes: Arc::new(AtomicUsize::new(0)),
            },
            rx,
            conns: Vec::new(),
            early: VecDeque::new(),
        }
    }
}

impl Subscription {
    /// The connection to `server`, opened if needed.
    fn conn(&mut self, server: usize) -> Result<&Pinned, CallError> {
        if !self.conns.iter().any(|(s, _)| *s == server) {
            let pin = self.pool.pin_subscriber(server, false, self.sink.clone())?;
            self.conns.push((server, pin));
        }
        self.conns
            .iter()
            .find(|(s, _)| *s == server)
            .map(|(_, p)| p)
            .ok_or_else(|| CallError::Request(RequestError::uncoded("no subscription connection")))
    }

    /// Send `verb names` to each server in `targets`, then wait for
    /// `expect` confirmations.
    async fn send(
        &mut self,
        verb: &'static [u8],
        targets: Vec<(usize, Vec<Bytes>)>,
    ) -> Result<(), CallError> {
        let mut expect = 0;
        for (server, names) in targets {
            expect += names.len();
            let mut args = vec![Bytes::from_static(verb)];
            args.extend(names);
            let wire = resp::Request::from_args(args).wire().clone();
            let pool = self.pool.clone();
            let pin = self.conn(server)?;
            pool.send_subscription(pin, wire)?;
        }
        while expect > 0 {
            match self.recv().await? {
                Item::Confirmed => expect -= 1,
                Item::Message(m) => self.early.push_back(m),
            }
        }
        Ok(())
    }

    /// Subscribe to more channels; returns once confirmed.
    pub async fn subscribe<C: AsRef<[u8]>>(&mut self, channels: &[C]) -> Result<(), CallError> {
        let ring = self.pool.ring();
        let mut targets: Vec<(usize, Vec<Bytes>)> = Vec::new();
        for c in channels {
            let Some(server) = ring.locate(c.as_ref()) else {
                return Err(self.pool.failure_error(super::route::Failure::AllEjected));
            };
            let name = Bytes::copy_from_slice(c.as_ref());
            match targets.iter_mut().find(|(s, _)| *s == server) {
                Some((_, v)) => v.push(name),
                None => targets.push((server, vec![name])),
            }
        }
        self.send(b"SUBSCRIBE", targets).await
    }

    /// Subscribe to patterns (on every live server); returns once every
    /// server confirmed.
    pub async fn psubscribe<P: AsRef<[u8]>>(&mut self, patterns: &[P]) -> Result<(), CallError> {
        let ring = self.pool.ring();
        let names: Vec<Bytes> = patterns
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_ref()))
            .collect();
        let targets: Vec<(usize, Vec<Bytes>)> = (0..ring.servers().len())
            .filter(|&s| ring.is_live(s))
            .map(|s| (s, names.clone()))
            .collect();
        if targets.is_empty() {
            return Err(self.pool.failure_error(super::route::Failure::AllEjected));
        }
        self.send(b"PSUBSCRIBE", targets).await
    }

    /// The next message; an error when a connection of the subscription
    /// was lost (its subscriptions are gone: subscribe again).
    pub async fn next_message(&mut self) -> Result<Message, CallError> {
        if let Some(m) = self.early.pop_front() {
            return Ok(m);
        }
        loop {
            if let Item::Message(m) = self.recv().await? {
                return Ok(m);
            }
        }
    }

    async fn recv(&mut self) -> Result<Item, CallError> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Result<Item, CallError>> {
        self.rx.poll_recv(cx).map(|got| match got {
            Some(PushItem::Frame(frame)) => {
                self.sink.bytes.fetch_sub(frame.raw().len(), Relaxed);
                Ok(item(frame.parse()))
            }
            Some(PushItem::Lost(_, why)) => {
                self.conns.clear();
                Err(CallError::Server(ServerError::Unexpected(format!(
                    "subscription connection ended: {why}"
                ))))
            }
            // The sink is held here, so the channel never closes.
            None => Err(CallError::Request(RequestError::uncoded(
                "subscription closed",
            ))),
        })
    }
}

/// The messages as a `Stream` (what [`Subscription::next_message`]
/// yields): an error item when a connection was lost, then the stream
/// ends; it never ends otherwise.
impl futures_core::Stream for Subscription {
    type Item = Result<Message, CallError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(m) = this.early.pop_front() {
            return Poll::Ready(Some(Ok(m)));
        }
        if this.conns.is_empty() {
            // Lost (or never subscribed): nothing more will come.
            return Poll::Ready(None);
        }
        loop {
            match this.poll_item(cx) {
                Poll::Ready(Ok(Item::Message(m))) => return Poll::Ready(Some(Ok(m))),
                Poll::Ready(Ok(Item::Confirmed)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What a frame of a subscription connection is.
enum Item {
    Confirmed,
    Message(Message),
}

fn item(reply: Reply) -> Item {
    let v = match reply {
        Reply::Array(Some(v)) | Reply::Push(v) => v,
        _ => return Item::Confirmed,
    };
    let bulk = |i: usize| match v.get(i) {
        Some(Reply::Bulk(Some(b))) => b.clone(),
        _ => Bytes::new(),
    };
    match v.first() {
        Some(Reply::Bulk(Some(k))) if k.eq_ignore_ascii_case(b"message") => {
            Item::Message(Message {
                channel: bulk(1),
                pattern: None,
                payload: bulk(2),
            })
        }
        Some(Reply::Bulk(Some(k))) if k.eq_ignore_ascii_case(b"pmessage") => {
            Item::Message(Message {
                pattern: Some(bulk(1)),
                channel: bulk(2),
                payload: bulk(3),
            })
        }
        _ => Item::Confirmed,
    }
}
