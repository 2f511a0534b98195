//! Connections pinned to one client: a transaction (`WATCH` ... `EXEC`) must
//! run on one backend connection, alone, because the server keeps its state
//! (the watched keys, the queued commands) per connection.
//!
//! A [`Pinned`] is taken with [`Pool::pin`] for one server and lane, used
//! with [`Pool::send_pinned`], and either [released](Pinned::release) clean
//! (the server holds no state for it any more: after `EXEC`, `DISCARD` or
//! `UNWATCH` were sent) and kept for the next transaction, or dropped, which
//! closes the connection once what was sent on it is answered. A pinned
//! connection that is lost is not replaced (see `Lane::pinned`): what its
//! client sends next fails, so a watch can never be silently lost.
//!
//! The pinned connections of a server, held and idle, are at most the pool's
//! `pinned_connections`; past it [`Pool::pin`] says so instead of waiting.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::backend::{Expect, Lane, Msg, ReplyTx};
use super::cluster::{Hop, ASKING, TRYAGAIN_WAIT};
use super::error::{CallError, RequestError};
use super::inbox::Inbox;
use super::{Handles, Inner, Pool, ReplyFuture};
use crate::cluster::Redirect;

/// A backend connection held by one client; see the module docs.
#[derive(Debug)]
pub struct Pinned {
    handles: Arc<Handles>,
    server: usize,
    lane: Lane,
    tx: Option<mpsc::UnboundedSender<Msg>>,
}

impl Pinned {
    /// The server (index in the pool's ring order) it is connected to.
    pub fn server(&self) -> usize {
        self.server
    }

    /// Whether it speaks RESP3.
    pub fn resp3(&self) -> bool {
        self.lane.resp3
    }

    /// Give it back for reuse: the caller has ended whatever state the
    /// server kept for it (sent `EXEC`, `DISCARD` or `UNWATCH` last). Requests
    /// still in flight on it are answered before the next user's.
    pub fn release(mut self) {
        let Some(tx) = self.tx.take() else { return };
        let Some(set) = self.handles.pins.get(self.server) else {
            return;
        };
        if tx.is_closed() {
            // Lost while held: it no longer counts.
            set.forget();
            return;
        }
        set.lock_idle().push((tx, self.lane));
    }
}

impl Drop for Pinned {
    /// Dropped without [`release`](Pinned::release) (the client left
    /// mid-transaction, or the transaction failed): the channel closes, so
    /// the connection closes once its in-flight requests are answered, and
    /// no other client ever sees its state.
    fn drop(&mut self) {
        if self.tx.take().is_some() {
            if let Some(set) = self.handles.pins.get(self.server) {
                set.forget();
            }
        }
    }
}

impl super::PinSet {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(mpsc::UnboundedSender<Msg>, Lane)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_count(&self) -> std::sync::MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pinned connection is gone (dropped, or found closed).
    fn forget(&self) {
        let mut n = self.lock_count();
        *n = n.saturating_sub(1);
        self.show(*n);
    }

    /// Mirror the count in the server's `dedicated_connections` gauge.
    fn show(&self, n: usize) {
        self.stats
            .whole()
            .dedicated_connections
            .store(i64::try_from(n).unwrap_or(i64::MAX), Relaxed);
    }
}

impl Pool {
    /// A connection to server `server` (ring order) for one client alone,
    /// negotiated with `HELLO 3` if `resp3`: an idle clean one if there is
    /// one, else a new one (it connects on its first request). Fails when
    /// the server already has `pinned_connections` of them.
    pub fn pin(&self, server: usize, resp3: bool) -> Result<Pinned, CallError> {
        self.pin_lane(
            server,
            Lane {
                resp3,
                pinned: true,
                ..Default::default()
            },
        )
    }

    /// [`Pool::pin`] for a connection of kind `lane`.
    pub(crate) fn pin_lane(&self, server: usize, lane: Lane) -> Result<Pinned, CallError> {
        self.pin_with(server, lane, None)
    }

    /// A new subscription connection to `server` for one client, sending
    /// what it reads to `sink` (never reused: it carries the client's
    /// subscriptions). Counted in the server's `pinned_connections`.
    pub(crate) fn pin_subscriber(
        &self,
        server: usize,
        resp3: bool,
        sink: super::backend::PushSink,
    ) -> Result<Pinned, CallError> {
        let lane = Lane {
            resp3,
            pinned: true,
            blocking: false,
            pubsub: true,
            replica: None,
        };
        self.pin_with(server, lane, Some(sink))
    }

    fn pin_with(
        &self,
        server: usize,
        lane: Lane,
        sink: Option<super::backend::PushSink>,
    ) -> Result<Pinned, CallError> {
        let handles = &self.inner;
        let Some(set) = handles.pins.get(server) else {
            return Err(CallError::Request(RequestError::uncoded(
                "no such server in the pool",
            )));
        };
        let max = handles.shared.config.pinned_connections.max(1) as usize;
        let pinned = |tx| Pinned {
            handles: Arc::clone(handles),
            server,
            lane,
            tx: Some(tx),
        };
        {
            let mut idle = set.lock_idle();
            // Connections lost while idle no longer count.
            let before = idle.len();
            idle.retain(|(tx, _)| !tx.is_closed());
            let lost = before - idle.len();
            if lost > 0 {
                let mut n = set.lock_count();
                *n = n.saturating_sub(lost);
                set.show(*n);
            }
            if let Some(i) = idle.iter().rposition(|(_, l)| *l == lane && sink.is_none()) {
                let (tx, _) = idle.swap_remove(i);
                return Ok(pinned(tx));
            }
            let mut n = set.lock_count();
            if *n >= max {
                // At the bound: an idle connection of another kind makes
                // room, if there is one.
                if idle.pop().is_none() {
                    let name = &handles.shared.servers[server].name;
                    return Err(CallError::Request(RequestError::new(
                        "ERR",
                        format!(
                            "twem: all {max} pinned connections to server {name} are in use \
                             by transactions (pool setting pinned_connections); retry later"
                        ),
                    )));
                }
            } else {
                *n += 1;
                set.show(*n);
            }
        }
        Ok(pinned(handles.spawn_conn(server, lane, usize::MAX, sink)))
    }

    /// Send `wire` (one request) on a pinned connection; its reply is the
    /// caller's, into `inbox` (in that inbox's order) if given.
    pub fn send_pinned(&self, pin: &Pinned, wire: Bytes, inbox: Option<&mut Inbox>) -> ReplyFuture {
        let (reply, fut) = match inbox {
            Some(inbox) => {
                let (stx, srx) = inbox.slot();
                (ReplyTx::Slot(stx), Inner::Slot(srx))
            }
            None => {
                let (otx, orx) = tokio::sync::oneshot::channel();
                (ReplyTx::Oneshot(otx), Inner::One(orx))
            }
        };
        match send(pin, wire, Some(reply)) {
            Ok(()) => ReplyFuture { inner: fut },
            Err(e) => ReplyFuture::ready(Err(e)),
        }
    }

    /// Send `wire` on a pinned connection and drop its reply when it comes
    /// (`MULTI` and the queued commands of a transaction, whose results
    /// come with `EXEC`'s reply; `UNWATCH` on the way out). A lost
    /// connection fails what is sent next on it.
    pub fn send_pinned_quietly(&self, pin: &Pinned, wire: Bytes) {
        let _ = send(pin, wire, None);
    }

    /// Send `wire` on a subscription connection, whose replies are not
    /// matched to requests (they reach the client's session as they come).
    pub(crate) fn send_subscription(&self, pin: &Pinned, wire: Bytes) -> Result<(), CallError> {
        let Some(tx) = pin.tx.as_ref().filter(|tx| !tx.is_closed()) else {
            return Err(CallError::Request(RequestError::new(
                "ERR",
                "twem: the subscription connection was lost",
            )));
        };
        pin.handles.send_on(tx, pin.server, wire, None, None)
    }
}

/// Hand `wire` to the pinned connection, its reply to `reply`.
fn send(pin: &Pinned, wire: Bytes, reply: Option<ReplyTx>) -> Result<(), CallError> {
    let lost = || {
        CallError::Request(RequestError::new(
            "ERR",
            "twem: the server connection of this transaction was lost; \
             nothing sent after the loss was applied (retry the transaction)",
        ))
    };
    let Some(tx) = pin.tx.as_ref().filter(|tx| !tx.is_closed()) else {
        return Err(lost());
    };
    pin.handles
        .send_on(tx, pin.server, wire, Some(Expect::Resp), reply)
        .map_err(|_| lost())
}

/// `redis_version:` of an `INFO server` reply, as numbers for ordering.
fn version_of(info: &[u8]) -> Option<(Vec<u64>, String)> {
    let text = std::str::from_utf8(info).ok()?;
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?
        .trim();
    let nums = v
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0))
        .collect();
    Some((nums, v.to_owned()))
}

/// The lowest of the versions found in `infos` (`INFO server` replies).
fn lowest_version<'a>(infos: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    infos
        .filter_map(version_of)
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v)
}

impl Pool {
    /// The lowest `redis_version` among the pool's live servers (what the
    /// proxy reports in `HELLO` and `INFO`: a client checking for a feature
    /// must not be told a version some server lacks). Asked of every live
    /// server with `INFO server` the first time, then remembered; servers
    /// that fail to answer are left out, and if none answers, that is the
    /// error.
    pub async fn server_version(&self) -> Result<Arc<str>, CallError> {
        let shared = &self.inner.shared;
        if let Some(v) = shared
            .version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(v);
        }
        let ring = shared.ring.load();
        let wire = twem_proto::resp::Request::from_args([
            Bytes::from_static(b"INFO"),
            Bytes::from_static(b"server"),
        ])
        .wire()
        .clone();
        let mut parts = Vec::new();
        let mut first_err = None;
        for idx in 0..shared.servers.len() {
            if !ring.is_live(idx) {
                continue;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            // Not refused at the queue bound: the scripts' check reads one
            // small reply per server, as it always did.
            let sent = self.send_checked(
                idx,
                wire.clone(),
                Some(Expect::Resp),
                Some(ReplyTx::Oneshot(tx)),
                (0, false),
                false,
            );
            match sent {
                Ok(()) => parts.push(rx),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let mut infos = Vec::new();
        for rx in parts {
            match rx.await {
                Ok(Ok(frame)) if !frame.is_error() => infos.push(frame.into_raw()),
                Ok(Ok(frame)) => {
                    // The error line without its `-` and CRLF.
                    let raw = frame.into_raw();
                    let text = raw.slice(1..raw.len().saturating_sub(2).max(1));
                    first_err.get_or_insert(CallError::Server(super::ServerError::Reply(text)));
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(CallError::Backend(e));
                }
                Err(_) => {}
            }
        }
        match lowest_version(infos.iter().map(|b| &b[..])) {
            Some(v) => {
                let v: Arc<str> = Arc::from(v);
                *shared.version.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&v));
                Ok(v)
            }
            None => Err(first_err.unwrap_or_else(|| {
                CallError::Request(RequestError::new(
                    "ERR",
                    "twem: no server answered INFO (is every server ejected?)",
                ))
            })),
        }
    }
}

impl ReplyFuture {
    /// Whether this is a blocking command's reply (see
    /// `Pool::send_blocking`): one that may not come for a long time, or
    /// ever, which a session whose client has gone must not wait for.
    pub fn is_blocking(&self) -> bool {
        matches!(self.inner, Inner::Blocking(_))
    }

    /// A reply the caller computes itself, asynchronously (rare replies
    /// that need a round trip first, such as `HELLO`'s server version).
    pub fn from_future<F>(f: F) -> ReplyFuture
    where
        F: std::future::Future<Output = Result<Bytes, CallError>> + Send + 'static,
    {
        ReplyFuture {
            inner: Inner::Boxed(Box::pin(
                async move { f.await.map(super::ReplyChunks::One) },
            )),
        }
    }
}

impl ReplyFuture {
    /// [`from_future`](ReplyFuture::from_future) for a reply that comes
    /// as chunks (a server's frame passed on as it is).
    pub(crate) fn from_chunks_future<F>(f: F) -> ReplyFuture
    where
        F: std::future::Future<Output = Result<super::ReplyChunks, CallError>> + Send + 'static,
    {
        ReplyFuture {
            inner: Inner::Boxed(Box::pin(f)),
        }
    }
}

impl Pool {
    /// Run one blocking command (`BLPOP`, `XREAD BLOCK`, ...) on a
    /// connection of server `server` borrowed for it, so that the shared
    /// pipelined connections never wait behind it. `wait` is the command's
    /// own timeout (`None`: it may block for ever); the pool's `timeout` (or
    /// a second) is added as the margin for the server's reply. The
    /// connection is given back once the reply came; if the caller goes
    /// away first, or the wait runs out, it is closed instead, because a
    /// reply might still come on it.
    pub(crate) fn send_blocking(
        &self,
        server: usize,
        wire: Bytes,
        resp3: bool,
        wait: Option<std::time::Duration>,
    ) -> ReplyFuture {
        let lane = Lane {
            resp3,
            pinned: true,
            blocking: true,
            pubsub: false,
            replica: None,
        };
        let pin = match self.pin_lane(server, lane) {
            Ok(p) => p,
            Err(e) => return ReplyFuture::ready(Err(e)),
        };
        let fut = self.send_pinned(&pin, wire.clone(), None);
        let margin = self
            .config()
            .timeout
            .unwrap_or(std::time::Duration::from_secs(1));
        // A cluster pool follows a redirection of the command (its slot
        // moved or is migrating) as a shared request's would be.
        let cluster = self.inner.shared.cluster.is_some().then(|| self.clone());
        let mut name = Arc::clone(&self.inner.shared.servers[server].name);
        let fut = async move {
            let (mut pin, mut fut, mut server, mut redirects) = (pin, fut, server, 0u8);
            loop {
                let r = match wait {
                    Some(w) => match tokio::time::timeout(w.saturating_add(margin), fut).await {
                        Ok(r) => r,
                        // `pin` is dropped: the connection closes.
                        Err(_) => {
                            return Err(CallError::Backend(super::BackendError::new(
                                super::BackendErrorKind::TimedOut,
                                name,
                            )))
                        }
                    },
                    None => fut.await,
                };
                // On an error `pin` is dropped: the connection closes.
                let reply = r?;
                pin.release();
                let redirect = match &cluster {
                    Some(pool) if reply.first() == Some(&b'-') => {
                        Redirect::parse(&reply).map(|r| (pool, r))
                    }
                    _ => None,
                };
                let Some((pool, redirect)) = redirect else {
                    return Ok(super::ReplyChunks::One(reply));
                };
                let asking = match pool.next_hop(redirect, redirects) {
                    Hop::Node { idx, asking } => {
                        server = idx;
                        asking
                    }
                    Hop::Wait => {
                        tokio::time::sleep(TRYAGAIN_WAIT).await;
                        false
                    }
                    Hop::GiveUp => return Ok(super::ReplyChunks::One(reply)),
                };
                redirects += 1;
                pin = pool.pin_lane(server, lane)?;
                if asking {
                    pool.send_pinned_quietly(&pin, Bytes::from_static(ASKING));
                }
                fut = pool.send_pinned(&pin, wire.clone(), None);
                name = Arc::clone(&pool.inner.shared.servers[server].name);
            }
        };
        ReplyFuture {
            inner: Inner::Blocking(Box::pin(fut)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_version_compares_numbers_not_text() {
        let a = b"$30\r\n# Server\r\nredis_version:7.0.15\r\nx:1\r\n";
        let b = b"# Server\r\nredis_version:10.0.0\r\n";
        let c = b"# Server\r\nredis_version:7.0.9\r\n";
        let got = lowest_version([&a[..], &b[..], &c[..]].into_iter());
        assert_eq!(got.as_deref(), Some("7.0.9"));
        assert_eq!(lowest_version([&b"nothing"[..]].into_iter()), None);
    }
}
