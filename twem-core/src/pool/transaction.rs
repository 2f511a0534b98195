//! Transactions: `MULTI` ... `EXEC` (and `WATCH`) with the proxy's rules,
//! for the proxy's sessions and for embedders alike.
//!
//! A [`Transaction`] checks each command as it is queued: every key must map
//! to the one server the transaction's first key chose (hash tags are the
//! user's tool), and the proxy must forward the command. Nothing is sent
//! until [`exec`](Transaction::exec): then `MULTI`, the commands and `EXEC`
//! go together on a connection pinned to this transaction (see
//! [`Pinned`]), so no other client's command comes between them and Redis
//! applies them all or none. [`watch`](Transaction::watch) pins that
//! connection at once, because the server must watch from then on; a
//! pinned connection lost meanwhile fails the transaction instead of
//! committing without the watch.

use bytes::Bytes;

use twem_proto::command::Class;
use twem_proto::resp;

use super::cluster::{Hop, ASKING, TRYAGAIN_WAIT};
use super::route::{Failure, Plan};
use super::{
    Answer, CallError, Frame, Inbox, Pinned, Pool, ReplyChunks, ReplyFuture, RequestError,
};
use crate::cluster::Redirect;

/// Request bytes a transaction may queue: the same bound as a proxy
/// client's requests in flight.
pub const MAX_TXN_BYTES: usize = 32 * 1024 * 1024;
/// Commands a transaction may queue.
pub const MAX_TXN_COMMANDS: usize = 100_000;

fn crossslot() -> CallError {
    CallError::Request(RequestError::from(Failure::CrossSlot))
}

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";
const UNWATCH: &[u8] = b"*1\r\n$7\r\nUNWATCH\r\n";

/// Where a command queued in a transaction must run.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// On the server of its keys.
    Server(usize),
    /// Anywhere: it has no key (`PING`, `TIME`).
    Any,
}

/// A transaction on one pool; see the module docs.
#[derive(Debug)]
pub struct Transaction {
    pool: Pool,
    /// The server every key so far maps to.
    server: Option<usize>,
    /// The connection `WATCH` pinned.
    pin: Option<Pinned>,
    /// The queued commands' bytes, each with whether it has keys (a
    /// cluster pool's redirections are judged by them, see
    /// [`Redirect::for_transaction`]).
    queued: Vec<(Bytes, bool)>,
    queued_bytes: usize,
}

impl Pool {
    /// A new, empty transaction on this pool.
    pub fn transaction(&self) -> Transaction {
        Transaction {
            pool: self.clone(),
            server: None,
            pin: None,
            queued: Vec::new(),
            queued_bytes: 0,
        }
    }
}

impl Transaction {
    /// The server (ring order) the transaction's keys map to, once a key
    /// chose one.
    pub fn server(&self) -> Option<usize> {
        self.server
    }

    /// Commands queued so far.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Where `req` must run, or why it cannot be part of a transaction:
    /// the pool's own plan (one classification, the proxy's rules).
    fn target_of(&self, req: &resp::Request) -> Result<Target, CallError> {
        let planned = self.pool.plan_redis(req);
        match (planned.class, planned.plan) {
            (_, Plan::Fail(f)) => Err(self.pool.failure_error(f)),
            // PING and ECHO run on the server in the transaction; SELECT or
            // AUTH there would leave the connection changed for its next
            // user.
            (Some(Class::Local), _) => {
                let name = req.name();
                if name.eq_ignore_ascii_case(b"ping") || name.eq_ignore_ascii_case(b"echo") {
                    Ok(Target::Any)
                } else {
                    Err(CallError::Request(RequestError::new(
                        "ERR",
                        format!(
                            "twem: {} is not allowed inside MULTI",
                            String::from_utf8_lossy(name).to_uppercase()
                        ),
                    )))
                }
            }
            (Some(Class::Placeholder), _) | (_, Plan::Local(_)) => Ok(Target::Any),
            (_, Plan::One { server, .. }) => Ok(Target::Server(server)),
            // Inside MULTI a blocking command does not block (Redis runs
            // it as its non-blocking form at EXEC).
            (_, Plan::Blocking(b)) => Ok(Target::Server(b.server)),
            (_, Plan::Split(_)) => Err(crossslot()),
        }
    }

    /// Check `req` and queue it: its keys must map to the transaction's
    /// server (the first keyed command chooses it), the proxy must forward
    /// it, and the transaction must stay within its bounds. A refused
    /// command is not queued; the caller decides whether to go on (the
    /// proxy's sessions abort at `EXEC`, as Redis does).
    pub fn queue(&mut self, req: &resp::Request) -> Result<(), CallError> {
        let target = self.target_of(req)?;
        let keyed = target != Target::Any;
        let server = match (target, self.server) {
            (Target::Server(s), Some(prev)) if s != prev => return Err(crossslot()),
            (Target::Server(s), _) => Some(s),
            (Target::Any, _) => None,
        };
        let len = req.wire().len();
        if self.queued.len() >= MAX_TXN_COMMANDS || self.queued_bytes + len > MAX_TXN_BYTES {
            return Err(CallError::Request(RequestError::new(
                "ERR",
                format!(
                    "twem: transaction too large (at most {MAX_TXN_COMMANDS} commands and \
                     {MAX_TXN_BYTES} bytes through the proxy)"
                ),
            )));
        }
        if server.is_some() {
            self.server = server;
        }
        self.queued.push((req.wire().clone(), keyed));
        self.queued_bytes += len;
        Ok(())
    }

    /// `WATCH key...` (`req`, as the client sent it) on a connection pinned
    /// now to the keys' server (a RESP3 one if `resp3`); the reply goes to
    /// `inbox` if given. The keys must share a server (the command table
    /// plans WATCH like any same-server command), and the one of the
    /// transaction's keys so far.
    pub fn watch_in(
        &mut self,
        req: &resp::Request,
        resp3: bool,
        inbox: Option<&mut Inbox>,
    ) -> ReplyFuture {
        let server = match self.target_of(req) {
            Ok(Target::Server(s)) if self.server.is_none_or(|prev| prev == s) => s,
            Ok(Target::Server(_)) => return ReplyFuture::ready(Err(crossslot())),
            Ok(Target::Any) => {
                return ReplyFuture::ready(Err(CallError::Request(RequestError::new(
                    "ERR",
                    "wrong number of arguments for 'watch' command",
                ))))
            }
            Err(e) => return ReplyFuture::ready(Err(e)),
        };
        let pin = match self.pin.take() {
            Some(p) => p,
            None => match self.pool.pin(server, resp3) {
                Ok(p) => p,
                Err(e) => return ReplyFuture::ready(Err(e)),
            },
        };
        self.server = Some(server);
        if self.pool.inner.shared.cluster.is_none() {
            let reply = self.pool.send_pinned(&pin, req.wire().clone(), inbox);
            self.pin = Some(pin);
            return reply;
        }
        // A cluster pool: a WATCH redirected (its slot moved) goes to the
        // client as it is (the connection is the transaction's and cannot
        // follow), but the map learns the move, so the client's next try
        // (after UNWATCH, or in a new transaction) reaches the new owner.
        let reply = self.pool.send_pinned(&pin, req.wire().clone(), None);
        self.pin = Some(pin);
        let pool = self.pool.clone();
        ReplyFuture::from_chunks_future(async move {
            let answer = reply.answer().await?;
            if let Answer::Frame(Frame::Resp(f)) = &answer {
                if let Some(redirect) = f.is_error().then(|| Redirect::parse(f.raw())).flatten() {
                    pool.redirect_not_followed(&redirect);
                }
            }
            Ok(answer
                .into_chunks()
                .unwrap_or_else(|| ReplyChunks::One(Bytes::new())))
        })
    }

    /// `WATCH keys` for an embedder: `Ok` once the server watches them.
    pub async fn watch<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<(), CallError> {
        let mut args = Vec::with_capacity(keys.len() + 1);
        args.push(Bytes::from_static(b"WATCH"));
        args.extend(keys.iter().map(|k| Bytes::copy_from_slice(k.as_ref())));
        let req = resp::Request::from_args(args);
        expect_ok(self.watch_in(&req, false, None).answer().await?)
    }

    /// Send the transaction (`MULTI`, the queued commands, `EXEC`) on its
    /// pinned connection; the future resolves to `EXEC`'s own reply (the
    /// results' array; null when a watched key changed; `-EXECABORT` if the
    /// server refused a command), into `inbox` if given.
    pub fn exec_in(self, inbox: Option<&mut Inbox>) -> ReplyFuture {
        let resp3 = inbox.as_ref().is_some_and(|i| i.resp3());
        let mut this = self;
        let server = match (this.server, &this.pin) {
            (Some(s), _) => Some(s),
            (None, Some(p)) => Some(p.server()),
            // No key at all: any server will do.
            (None, None) => this.pool.ring().locate(super::PLACEHOLDER_KEY),
        };
        let Some(server) = server else {
            return ReplyFuture::ready(Err(this.pool.failure_error(Failure::AllEjected)));
        };
        if this.pin.is_none() && this.pool.inner.shared.cluster.is_some() {
            return this.exec_on_cluster(server, resp3);
        }
        let pin = match this.pin.take() {
            Some(p) => p,
            None => match this.pool.pin(server, resp3) {
                Ok(p) => p,
                Err(e) => return ReplyFuture::ready(Err(e)),
            },
        };
        let pool = &this.pool;
        pool.send_pinned_quietly(&pin, Bytes::from_static(MULTI));
        for (wire, _) in std::mem::take(&mut this.queued) {
            pool.send_pinned_quietly(&pin, wire);
        }
        let reply = pool.send_pinned(&pin, Bytes::from_static(EXEC), inbox);
        // EXEC ends the transaction and every watch on the server: the
        // connection is clean for its next user, whose requests queue behind
        // this EXEC.
        pin.release();
        reply
    }

    /// [`exec_in`](Transaction::exec_in) on a cluster pool, without a
    /// `WATCH`: sent at once like any transaction, but the queued
    /// commands' replies are read, and when they say the slot moved
    /// (`-MOVED`), is migrating (`-ASK`) or must wait (`-TRYAGAIN`), the
    /// whole transaction is sent again where they point (Redis aborted
    /// the `EXEC`, so nothing was applied), at most
    /// [`MAX_REDIRECTS`](crate::cluster::MAX_REDIRECTS) times, counted like
    /// any redirection. With a `WATCH` it is not sent again: the watch
    /// was on the old node, so the client gets the error.
    fn exec_on_cluster(self, server: usize, resp3: bool) -> ReplyFuture {
        let Transaction { pool, queued, .. } = self;
        let first = match Attempt::send(&pool, server, resp3, false, &queued) {
            Ok(a) => a,
            Err(e) => return ReplyFuture::ready(Err(e)),
        };
        ReplyFuture::from_chunks_future(async move {
            let mut attempt = first;
            let mut redirects = 0u8;
            loop {
                let sent_to = attempt.server;
                let (exec, redirect) = attempt.outcome().await?;
                let Some((redirect, said)) = redirect else {
                    return Ok(exec);
                };
                let (server, asking) = match pool.next_hop(redirect, redirects) {
                    Hop::Node { idx, asking } => (idx, asking),
                    Hop::Wait => {
                        tokio::time::sleep(TRYAGAIN_WAIT).await;
                        (sent_to, false)
                    }
                    Hop::GiveUp => return Err(not_followed(&said)),
                };
                redirects += 1;
                attempt = Attempt::send(&pool, server, resp3, asking, &queued)?;
            }
        })
    }

    /// Run the transaction for an embedder: the results of its commands in
    /// order (a command's runtime error is its element, as Redis gives
    /// it), or `None` when a watched key changed and nothing was applied.
    pub async fn exec(self) -> Result<Option<Vec<resp::Reply>>, CallError> {
        match self.exec_in(None).answer().await? {
            Answer::Frame(Frame::Resp(f)) => match f.parse() {
                resp::Reply::Array(Some(v)) => Ok(Some(v)),
                resp::Reply::Array(None) => Ok(None),
                resp::Reply::Bulk(None) => Ok(None),
                resp::Reply::Error(e) => Err(CallError::Server(super::ServerError::Reply(e))),
                other => Err(CallError::Server(super::ServerError::Unexpected(format!(
                    "EXEC answered {other:?}"
                )))),
            },
            Answer::Built(b) => Err(CallError::Server(super::ServerError::Unexpected(format!(
                "EXEC answered {:?}",
                b.into_bytes()
            )))),
            Answer::Frame(other) => Err(CallError::Server(super::ServerError::Unexpected(
                format!("EXEC answered {:?}", other.raw()),
            ))),
        }
    }

    /// `UNWATCH`: the reply into `inbox` if given; the pinned connection,
    /// if any, is given back clean.
    pub fn unwatch_in(mut self, inbox: Option<&mut Inbox>) -> ReplyFuture {
        match self.pin.take() {
            Some(pin) => {
                let reply = self
                    .pool
                    .send_pinned(&pin, Bytes::from_static(UNWATCH), inbox);
                pin.release();
                reply
            }
            None => ReplyFuture::ready(Ok(Bytes::from_static(b"+OK\r\n"))),
        }
    }

    /// Give up: nothing queued is sent; the server's watches end and the
    /// pinned connection is given back.
    pub fn abort(mut self) {
        if let Some(pin) = self.pin.take() {
            self.pool
                .send_pinned_quietly(&pin, Bytes::from_static(UNWATCH));
            pin.release();
        }
    }
}

/// One sending of a cluster transaction: the replies it waits for.
struct Attempt {
    /// Where it went.
    server: usize,
    /// The queued commands' replies, each with whether it has keys.
    queued: Vec<(bool, ReplyFuture)>,
    exec: ReplyFuture,
}

impl Attempt {
    /// Send `ASKING` (if `asking`), `MULTI`, the `queued` commands and
    /// `EXEC` on a connection pinned to `server`, given back at once (the
    /// `EXEC` ends the transaction on it).
    fn send(
        pool: &Pool,
        server: usize,
        resp3: bool,
        asking: bool,
        queued: &[(Bytes, bool)],
    ) -> Result<Attempt, CallError> {
        let pin = pool.pin(server, resp3)?;
        if asking {
            pool.send_pinned_quietly(&pin, Bytes::from_static(ASKING));
        }
        pool.send_pinned_quietly(&pin, Bytes::from_static(MULTI));
        let queued = queued
            .iter()
            .map(|(wire, keyed)| (*keyed, pool.send_pinned(&pin, wire.clone(), None)))
            .collect();
        let exec = pool.send_pinned(&pin, Bytes::from_static(EXEC), None);
        pin.release();
        Ok(Attempt {
            server,
            queued,
            exec,
        })
    }

    /// `EXEC`'s reply, and the redirection the queued commands' replies
    /// ask for (with the error line that said it), if any.
    async fn outcome(self) -> Result<(ReplyChunks, Option<(Redirect, Bytes)>), CallError> {
        let mut replies = Vec::with_capacity(self.queued.len());
        let mut said = None;
        for (keyed, reply) in self.queued {
            // A lost connection fails EXEC too; that error is the answer.
            let redirect = match reply.answer().await {
                Ok(Answer::Frame(Frame::Resp(f))) if f.is_error() => {
                    let r = Redirect::parse(f.raw());
                    if r.is_some() && said.is_none() {
                        said = Some(f.raw().clone());
                    }
                    r
                }
                _ => None,
            };
            replies.push((keyed, redirect));
        }
        let exec = self.exec.answer().await?;
        let exec = exec
            .into_chunks()
            .unwrap_or_else(|| ReplyChunks::One(Bytes::new()));
        eprintln!(
            "DEBUG server {} replies {:?} exec {:?}",
            self.server,
            replies,
            exec.len()
        );
        let redirect = Redirect::for_transaction(replies);
        Ok((exec, redirect.map(|r| (r, said.unwrap_or_default()))))
    }
}

/// A cluster transaction whose redirection was not followed (the bound
/// reached, or no entry for the node): aborted as Redis aborted it, with
/// the redirection that could not be followed.
fn not_followed(said: &Bytes) -> CallError {
    let line = said.strip_suffix(b"\r\n").unwrap_or(said);
    let line = line.strip_prefix(b"-").unwrap_or(line);
    CallError::Request(RequestError::new(
        "EXECABORT",
        format!(
            "Transaction discarded because of previous errors: {} \
             (twem: the redirection was not followed; nothing was applied)",
            String::from_utf8_lossy(line)
        ),
    ))
}

/// `+OK`, or the error it was instead.
fn expect_ok(a: Answer) -> Result<(), CallError> {
    let raw = match &a {
        Answer::Frame(f) => f.raw().clone(),
        Answer::Built(b) => b.clone().into_bytes(),
    };
    if raw.starts_with(b"+OK") {
        return Ok(());
    }
    let text = raw.get(1..raw.len().saturating_sub(2)).unwrap_or_default();
    Err(CallError::Server(super::ServerError::Reply(
        Bytes::copy_from_slice(text),
    )))
}
