//! The pool as a redis-rs connection (feature `redis-rs`): [`Pool`]
//! implements [`redis::aio::ConnectionLike`], so code written against
//! redis-rs (`AsyncCommands`, `redis::cmd(..).query_async`, `Script`,
//! `redis::pipe()`) runs unchanged on the embedded pool, with the proxy's
//! placement and rules.
//!
//! - One command: [`Pool::call`]'s path (routing, split and merge, the
//!   command table's refusals, which arrive as Redis errors such as
//!   `CROSSSLOT`).
//! - A pipeline: every command is sent before any reply is awaited, each to
//!   its own server, all on one connection slot per server so that commands
//!   on the same key keep their order; replies come back in the pipeline's
//!   order. A command that fails (a refusal, a server down) is an error
//!   value in its place, as the proxy would answer it, so the rest of the
//!   pipeline is not lost.
//! - An atomic pipeline (`redis::pipe().atomic()`, or `MULTI` ... `EXEC`
//!   written into a pipeline): a [`Transaction`] on one server. Every
//!   command is checked before anything is sent; keys on two servers refuse
//!   the whole pipeline with `CROSSSLOT` and nothing is applied.
//! - Not through this trait: pub/sub (use [`Pool::subscribe`]).
//!
//! ```no_run
//! # async fn demo(pool: twem_core::Pool) -> redis::RedisResult<()> {
//! use redis::AsyncCommands;
//! let mut con = pool.clone();
//! let () = con.set("user:1", "ada").await?;
//! let name: String = con.get("user:1").await?;
//! # Ok(()) }
//! ```

use bytes::{Bytes, BytesMut};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio_util::codec::Decoder;
use twem_proto::resp::{self, Reply};

use super::client::{hint, resp_reply};
use super::{CallError, Pool, ReplyFuture, Transaction};

impl redis::aio::ConnectionLike for Pool {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let req = request_of(cmd)?;
            match self.call(req).await {
                Ok(reply) => value_of(reply),
                Err(e) => Err(redis_error(&e)),
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let all = if pipe.is_transaction() {
                atomic(self, pipe).await?
            } else {
                pipelined(self, pipe).await?
            };
            // redis-rs asks for the replies it wants of what it would have
            // read on one connection: for an atomic pipeline, EXEC's reply
            // after MULTI's `OK` and one `QUEUED` per command.
            Ok(all.into_iter().skip(offset).take(count).collect())
        })
    }

    fn get_db(&self) -> i64 {
        i64::from(self.config().redis_db)
    }
}

/// A non-atomic pipeline: all sent first (one hint, so one connection slot
/// per server and per-server order), then awaited in order.
async fn pipelined(pool: &Pool, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
    let span = tracing::debug_span!("pipeline", pool = %pool.name(), commands = pipe.len());
    tracing::Instrument::instrument(pipelined_in(pool, pipe), span).await
}

async fn pipelined_in(pool: &Pool, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
    let h = hint();
    // A `MULTI` ... `EXEC` written into a non-atomic pipeline by hand runs
    // as a transaction too; its commands are checked as they are queued.
    let mut txn: Option<(Transaction, bool)> = None;
    let mut futures = Vec::with_capacity(pipe.len());
    let mut values = Vec::with_capacity(pipe.len());
    for cmd in pipe.cmd_iter() {
        let req = match request_of(cmd) {
            Ok(req) => req,
            Err(e) => {
                futures.push(ReplyFuture::ready(Err(CallError::Request(
                    super::RequestError::new("ERR", e.to_string()),
                ))));
                continue;
            }
        };
        let name = req.name();
        let future = match txn.take() {
            None if name.eq_ignore_ascii_case(b"MULTI") => {
                txn = Some((pool.transaction(), false));
                ReplyFuture::ready(Ok(Bytes::from_static(b"+OK\r\n")))
            }
            None => pool.dispatch_redis(&req, h),
            Some((t, failed)) if name.eq_ignore_ascii_case(b"EXEC") => {
                if failed {
                    t.abort();
                    ReplyFuture::ready(Ok(Bytes::from_static(
                        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
                    )))
                } else {
                    // The transaction runs on a connection of its own: the
                    // commands before it are answered first, and it is
                    // answered before the ones after it are sent, so the
                    // pipeline's order holds across the two connections.
                    flush(&mut futures, &mut values).await?;
                    futures.push(t.exec_in(None));
                    flush(&mut futures, &mut values).await?;
                    continue;
                }
            }
            Some((t, _)) if name.eq_ignore_ascii_case(b"DISCARD") => {
                t.abort();
                ReplyFuture::ready(Ok(Bytes::from_static(b"+OK\r\n")))
            }
            Some((t, failed)) if name.eq_ignore_ascii_case(b"MULTI") => {
                txn = Some((t, failed));
                ReplyFuture::ready(Ok(Bytes::from_static(
                    b"-ERR MULTI calls can not be nested\r\n",
                )))
            }
            Some((mut t, failed)) => {
                let queued = t.queue(&req);
                // As Redis: a refused command is its error now and aborts
                // the transaction at EXEC.
                txn = Some((t, failed || queued.is_err()));
                match queued {
                    Ok(()) => ReplyFuture::ready(Ok(Bytes::from_static(b"+QUEUED\r\n"))),
                    Err(e) => ReplyFuture::ready(Err(e)),
                }
            }
        };
        futures.push(future);
    }
    // A MULTI never closed: nothing of it was sent; give the connection back.
    if let Some((t, _)) = txn {
        t.abort();
    }
    flush(&mut futures, &mut values).await?;
    Ok(values)
}

/// Await `futures` in order into `values`.
async fn flush(futures: &mut Vec<ReplyFuture>, values: &mut Vec<Value>) -> RedisResult<()> {
    for f in futures.drain(..) {
        let value = match f.answer().await.and_then(resp_reply) {
            Ok(reply) => value_of(reply)?,
            // The proxy's answer for this command alone.
            Err(e) => error_value(&e.words())?,
        };
        values.push(value);
    }
    Ok(())
}

/// An atomic pipeline as one single-server transaction: what redis-rs
/// would read for `MULTI`, the commands and `EXEC` on one connection.
async fn atomic(pool: &Pool, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
    let span = tracing::debug_span!("transaction", pool = %pool.name(), commands = pipe.len());
    tracing::Instrument::instrument(atomic_in(pool, pipe), span).await
}

async fn atomic_in(pool: &Pool, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
    let mut txn = pool.transaction();
    let mut n = 0;
    for cmd in pipe.cmd_iter() {
        let queued = request_of(cmd).and_then(|req| txn.queue(&req).map_err(|e| redis_error(&e)));
        if let Err(e) = queued {
            // Nothing was sent: a refused command refuses the transaction.
            txn.abort();
            return Err(e);
        }
        n += 1;
    }
    let exec = match txn.exec().await.map_err(|e| redis_error(&e))? {
        Some(replies) => Value::Array(
            replies
                .into_iter()
                .map(value_of)
                .collect::<RedisResult<_>>()?,
        ),
        // A watched key changed: EXEC's null.
        None => Value::Nil,
    };
    let mut all = Vec::with_capacity(n + 2);
    all.push(Value::Okay);
    all.extend((0..n).map(|_| Value::SimpleString("QUEUED".into())));
    all.push(exec);
    Ok(all)
}

/// The command redis-rs packed, as a request: decoding its packed form
/// (one copy, as a socket write would be) handles cursors and every
/// argument type redis-rs knows.
fn request_of(cmd: &Cmd) -> RedisResult<resp::Request> {
    let mut buf = BytesMut::from(Bytes::from(cmd.get_packed_command()));
    match resp::RequestCodec::default().decode(&mut buf) {
        Ok(Some(req)) if buf.is_empty() => Ok(req),
        Ok(_) => Err(RedisError::from((
            redis::ErrorKind::Client,
            "twem: not one command",
        ))),
        Err(e) => Err(RedisError::from((
            redis::ErrorKind::Client,
            "twem: invalid command",
            e.to_string(),
        ))),
    }
}

/// The failure as redis-rs reports it: refusals and server errors as the
/// server error they are worded as (`CROSSSLOT`, `ERR unknown command`),
/// so `RedisError::kind` and `code` work; a failed backend or a closed pool
/// as an I/O error, as a lost connection is in redis-rs.
fn redis_error(e: &CallError) -> RedisError {
    match e {
        CallError::Request(_) | CallError::Server(_) => match error_value(&e.words()) {
            Ok(v) => match v.extract_error() {
                Err(err) => err,
                Ok(_) => RedisError::from((redis::ErrorKind::Client, "twem", e.to_string())),
            },
            Err(err) => err,
        },
        CallError::Backend(_) | CallError::Closed(_) => {
            RedisError::from(std::io::Error::other(e.words()))
        }
    }
}

/// An error reply with these words, parsed by redis-rs so that its kind
/// (`NOSCRIPT`, `CROSSSLOT`, ...) is the one a real connection would give.
fn error_value(words: &str) -> RedisResult<Value> {
    // One line: a blob error may hold CR or LF.
    let line: String = words
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    redis::parse_redis_value(format!("-{line}\r\n").as_bytes())
}

/// A reply as the [`Value`] redis-rs would have read.
pub fn value_of(reply: Reply) -> RedisResult<Value> {
    Ok(match reply {
        Reply::Status(s) if &s[..] == b"OK" => Value::Okay,
        Reply::Status(s) => Value::SimpleString(String::from_utf8_lossy(&s).into_owned()),
        Reply::Error(e) | Reply::BlobError(e) => error_value(&String::from_utf8_lossy(&e))?,
        Reply::Integer(n) => Value::Int(n),
        Reply::Bulk(Some(b)) => Value::BulkString(b.to_vec()),
        Reply::Bulk(None) | Reply::Array(None) | Reply::Null => Value::Nil,
        Reply::Array(Some(items)) => Value::Array(values_of(items)?),
        Reply::Double(d) => Value::Double(d),
        Reply::Boolean(b) => Value::Boolean(b),
        Reply::Map(pairs) => Value::Map(pairs_of(pairs)?),
        Reply::Set(items) => Value::Set(values_of(items)?),
        Reply::Attribute { attributes, reply } => Value::Attribute {
            data: Box::new(value_of(*reply)?),
            attributes: pairs_of(attributes)?,
        },
        // Their redis-rs types depend on redis-rs's features (`num-bigint`)
        // or are not public to build: redis-rs parses their wire form.
        r @ (Reply::BigNumber(_) | Reply::Verbatim { .. } | Reply::Push(_)) => {
            redis::parse_redis_value(&r.to_bytes())?
        }
    })
}

fn values_of(items: Vec<Reply>) -> RedisResult<Vec<Value>> {
    items.into_iter().map(value_of).collect()
}

fn pairs_of(pairs: Vec<(Reply, Reply)>) -> RedisResult<Vec<(Value, Value)>> {
    pairs
        .into_iter()
        .map(|(k, v)| Ok((value_of(k)?, value_of(v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_become_values() {
        assert_eq!(value_of(Reply::ok()).unwrap(), Value::Okay);
        assert_eq!(
            value_of(Reply::Bulk(Some(Bytes::from_static(b"v")))).unwrap(),
            Value::BulkString(b"v".to_vec())
        );
        assert_eq!(value_of(Reply::Bulk(None)).unwrap(), Value::Nil);
        assert_eq!(
            value_of(Reply::Array(Some(vec![Reply::Integer(1), Reply::Null]))).unwrap(),
            Value::Array(vec![Value::Int(1), Value::Nil])
        );
        let v = value_of(Reply::Verbatim {
            format: *b"txt",
            text: Bytes::from_static(b"hi"),
        })
        .unwrap();
        assert!(matches!(v, Value::VerbatimString { .. }), "{v:?}");
    }

    #[test]
    fn errors_keep_their_kind() {
        let v = value_of(Reply::Error(Bytes::from_static(
            b"NOSCRIPT No matching script",
        )))
        .unwrap();
        let err = v.extract_error().unwrap_err();
        assert_eq!(
            err.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        );
        let cross = redis_error(&CallError::Request(super::super::RequestError::from(
            super::super::route::Failure::CrossSlot,
        )));
        assert_eq!(cross.code(), Some("CROSSSLOT"), "{cross:?}");
    }

    #[test]
    fn packed_commands_become_requests() {
        let mut cmd = redis::cmd("SET");
        cmd.arg("k").arg(42);
        let req = request_of(&cmd).unwrap();
        assert_eq!(req.args(), &[&b"SET"[..], b"k", b"42"]);
    }
}
