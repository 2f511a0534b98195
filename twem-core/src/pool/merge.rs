//! Collecting the parts of a split command and merging them into the one
//! reply the client asked for.
//!
//! Rules (nutcracker's, plus DESIGN.md section 4): MGET values come back in
//! the client's key order; DEL, UNLINK, TOUCH and EXISTS integers are summed;
//! MSET answers one `+OK`; a memcached multi-get answers its values in key
//! order and one `END`. If any part fails, the whole command answers one
//! error: a transport failure becomes the nutcracker-worded error, a server's
//! own error reply is passed on as it is.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;

use twem_proto::{memcache as mc, resp};

use super::backend::Frame;
use super::error::{BackendError, BackendErrorKind, CallError};

/// How the parts combine.
#[derive(Debug)]
pub(crate) enum Kind {
    /// An array of the parts' values in key order.
    Mget,
    /// The sum of the parts' integers.
    Sum,
    /// One `+OK` when every part said `+OK`.
    Mset,
    /// memcached get/gets: the values in the order of this (the client's) request's keys.
    McGet(mc::Request),
}

type Part = oneshot::Receiver<Result<Frame, BackendError>>;

/// A split command in flight.
pub(crate) struct Merge {
    kind: Kind,
    parts: Vec<Part>,
    done: Vec<Option<Frame>>,
    /// For each key (group) of the client's request, the part it went to.
    part_of: Vec<usize>,
    left: usize,
}

impl Merge {
    pub(crate) fn new(kind: Kind, parts: Vec<Part>, part_of: Vec<usize>) -> Merge {
        let n = parts.len();
        Merge {
            kind,
            parts,
            done: (0..n).map(|_| None).collect(),
            part_of,
            left: n,
        }
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, CallError>> {
        for (i, rx) in self.parts.iter_mut().enumerate() {
            if self.done[i].is_some() {
                continue;
            }
            match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(Ok(frame))) => {
                    self.done[i] = Some(frame);
                    self.left -= 1;
                }
                // One failed part fails the command; the other parts' replies
                // are simply dropped when they arrive.
                Poll::Ready(Ok(Err(e))) => return Poll::Ready(Err(CallError::Backend(e))),
                Poll::Ready(Err(_)) => {
                    return Poll::Ready(Err(CallError::Backend(BackendError::new(
                        BackendErrorKind::Unknown,
                        Arc::from(""),
                    ))))
                }
                Poll::Pending => {}
            }
        }
        if self.left > 0 {
            return Poll::Pending;
        }
        let frames: Vec<Frame> = self.done.iter_mut().filter_map(Option::take).collect();
        Poll::Ready(Ok(combine(&self.kind, &frames, &self.part_of)))
    }
}

/// Merge complete parts. Any part that is an error reply (or not the shape
/// its command calls for) is what the client gets for the whole command.
fn combine(kind: &Kind, frames: &[Frame], part_of: &[usize]) -> Bytes {
    match kind {
        Kind::Sum => {
            let mut total: i64 = 0;
            for f in frames {
                match f {
                    Frame::Resp(r) => match r.integer() {
                        Some(n) => total = total.saturating_add(n),
                        None => return r.raw().clone(),
                    },
                    other => return other.raw().clone(),
                }
            }
            resp::Reply::Integer(total).to_bytes()
        }
        Kind::Mset => {
            for f in frames {
                let raw = f.raw();
                if &raw[..] != b"+OK\r\n" {
                    return raw.clone();
                }
            }
            resp::Reply::ok().to_bytes()
        }
        Kind::Mget => {
            let mut values: Vec<std::vec::IntoIter<resp::Reply>> = Vec::with_capacity(frames.len());
            for f in frames {
                let Frame::Resp(r) = f else {
                    return f.raw().clone();
                };
                match r.parse() {
                    resp::Reply::Array(Some(items)) => values.push(items.into_iter()),
                    _ => return r.raw().clone(),
                }
            }
            let mut out = Vec::with_capacity(part_of.len());
            for &p in part_of {
                let v = values
                    .get_mut(p)
                    .and_then(Iterator::next)
                    .unwrap_or(resp::Reply::Bulk(None));
                out.push(v);
            }
            resp::Reply::Array(Some(out)).to_bytes()
        }
        Kind::McGet(req) => {
            let mut parts = Vec::with_capacity(frames.len());
            for f in frames {
                match f {
                    Frame::Mc(m) => parts.push(m.clone()),
                    other => return other.raw().clone(),
                }
            }
            mc::merge_get(req, &parts)
        }
    }
}
