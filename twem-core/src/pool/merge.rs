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
use super::route::MergePolicy;
use super::ReplyChunks;

/// Values at least this long are passed through as slices of the parts'
/// replies; shorter ones are copied into the chunk being built (a slice per
/// small value would make the client's write a long iovec for little gain).
const PASS_THROUGH: usize = 16 * 1024;

type Part = oneshot::Receiver<Result<Frame, BackendError>>;

/// A split command in flight.
pub(crate) struct Merge {
    policy: MergePolicy,
    parts: Vec<Part>,
    done: Vec<Option<Frame>>,
    /// For each key (group) of the client's request, the part it went to.
    part_of: Vec<usize>,
    left: usize,
}

impl Merge {
    pub(crate) fn new(policy: MergePolicy, parts: Vec<Part>, part_of: Vec<usize>) -> Merge {
        let n = parts.len();
        Merge {
            policy,
            parts,
            done: (0..n).map(|_| None).collect(),
            part_of,
            left: n,
        }
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<ReplyChunks, CallError>> {
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
        Poll::Ready(Ok(combine(&self.policy, &frames, &self.part_of)))
    }
}

/// Merge complete parts (`frames[i]` the reply to part `i`; `part_of` as in
/// [`Split`](super::route::Split)) into the client's one reply, by the
/// policy planned for the command. Any part that is an error reply (or not
/// the shape its command calls for) is what the client gets for the whole
/// command. Pure: no I/O, unit-tested below.
pub(crate) fn combine(policy: &MergePolicy, frames: &[Frame], part_of: &[usize]) -> ReplyChunks {
    match policy {
        MergePolicy::Mget => mget(frames, part_of),
        _ => ReplyChunks::One(combine_one(policy, frames, part_of)),
    }
}

/// MGET: the values in the client's key order. Large values are not
/// copied: the reply is a chain whose long values are slices of the parts.
fn mget(frames: &[Frame], part_of: &[usize]) -> ReplyChunks {
    let mut values: Vec<std::vec::IntoIter<resp::Reply>> = Vec::with_capacity(frames.len());
    for f in frames {
        let Frame::Resp(r) = f else {
            return ReplyChunks::One(f.raw().clone());
        };
        match r.parse() {
            resp::Reply::Array(Some(items)) => values.push(items.into_iter()),
            _ => return ReplyChunks::One(r.raw().clone()),
        }
    }
    let mut out = Chain::default();
    out.cur
        .extend_from_slice(format!("*{}\r\n", part_of.len()).as_bytes());
    for &p in part_of {
        let v = values
            .get_mut(p)
            .and_then(Iterator::next)
            .unwrap_or(resp::Reply::Bulk(None));
        match v {
            resp::Reply::Bulk(Some(b)) if b.len() >= PASS_THROUGH => {
                out.cur
                    .extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.push(b);
                out.cur.extend_from_slice(b"\r\n");
            }
            other => other.encode(&mut out.cur),
        }
    }
    out.finish()
}

/// Builds a reply from copied bytes and passed-through slices, in order.
#[derive(Default)]
struct Chain {
    done: Vec<Bytes>,
    cur: bytes::BytesMut,
}

impl Chain {
    /// Append `b` without copying it.
    fn push(&mut self, b: Bytes) {
        if !self.cur.is_empty() {
            self.done.push(self.cur.split().freeze());
        }
        self.done.push(b);
    }

    fn finish(mut self) -> ReplyChunks {
        if self.done.is_empty() {
            return ReplyChunks::One(self.cur.freeze());
        }
        if !self.cur.is_empty() {
            self.done.push(self.cur.freeze());
        }
        ReplyChunks::Chain(self.done)
    }
}

/// The merges whose reply is small and built in one buffer.
fn combine_one(policy: &MergePolicy, frames: &[Frame], part_of: &[usize]) -> Bytes {
    match policy {
        MergePolicy::Sum => {
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
        MergePolicy::AllOk => {
            for f in frames {
                let raw = f.raw();
                if &raw[..] != b"+OK\r\n" {
                    return raw.clone();
                }
            }
            resp::Reply::ok().to_bytes()
        }
        MergePolicy::Mget => mget(frames, part_of).into_bytes(),
        MergePolicy::McGet(req) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    fn frame(reply: &resp::Reply) -> Frame {
        let mut buf = BytesMut::from(&reply.to_bytes()[..]);
        let mut codec = resp::ReplyCodec::new(crate::pool::redis_reply_limits());
        match codec.decode(&mut buf) {
            Ok(Some(f)) => Frame::Resp(f),
            other => panic!("not a reply: {other:?}"),
        }
    }

    fn bulk(v: &[u8]) -> resp::Reply {
        resp::Reply::Bulk(Some(Bytes::copy_from_slice(v)))
    }

    // The chain is byte for byte the reply a copy would build, and its
    // large values are the parts' own buffers (no copy).
    #[test]
    fn mget_chain_passes_large_values_through() {
        let big = vec![b'b'; PASS_THROUGH + 1];
        let a = frame(&resp::Reply::Array(Some(vec![
            bulk(b"a1"),
            bulk(&big),
            resp::Reply::Bulk(None),
        ])));
        let b = frame(&resp::Reply::Array(Some(vec![bulk(&big), bulk(b"b2")])));
        // Client keys: a1 b-big a-big b2 a-nil.
        let part_of = [0, 1, 0, 1, 0];
        let want = resp::Reply::Array(Some(vec![
            bulk(b"a1"),
            bulk(&big),
            bulk(&big),
            bulk(b"b2"),
            resp::Reply::Bulk(None),
        ]))
        .to_bytes();
        let frames = [a, b];
        let got = mget(&frames, &part_of);
        let ReplyChunks::Chain(parts) = &got else {
            panic!("large values must make a chain: {got:?}");
        };
        let raw_a = frames[0].raw();
        let inside_a = parts.iter().any(|p| {
            p.len() == big.len()
                && raw_a.as_ptr() <= p.as_ptr()
                && p.as_ptr() as usize + p.len() <= raw_a.as_ptr() as usize + raw_a.len()
        });
        assert!(inside_a, "the large value of part 0 was copied");
        assert_eq!(got.into_bytes(), want);
    }

    #[test]
    fn small_mget_is_one_buffer() {
        let a = frame(&resp::Reply::Array(Some(vec![bulk(b"x")])));
        let b = frame(&resp::Reply::Array(Some(vec![resp::Reply::Bulk(None)])));
        let got = combine(&MergePolicy::Mget, &[a, b], &[1, 0]);
        assert_eq!(
            got,
            ReplyChunks::One(Bytes::from_static(b"*2\r\n$-1\r\n$1\r\nx\r\n"))
        );
    }

    #[test]
    fn an_error_part_is_the_reply() {
        let a = frame(&resp::Reply::Array(Some(vec![bulk(b"x")])));
        let b = frame(&resp::Reply::error("WRONGTYPE no"));
        let got = combine(&MergePolicy::Mget, &[a, b], &[0, 1]);
        assert_eq!(
            got,
            ReplyChunks::One(Bytes::from_static(b"-WRONGTYPE no\r\n"))
        );
    }

    fn mc_frame(command: mc::Command, raw: &[u8]) -> Frame {
        let mut buf = BytesMut::from(raw);
        match mc::decode_reply(command, &mut buf, &mc::Limits::default()) {
            Ok(Some(f)) => Frame::Mc(f),
            other => panic!("not a reply: {other:?}"),
        }
    }

    fn one(b: &'static [u8]) -> ReplyChunks {
        ReplyChunks::One(Bytes::from_static(b))
    }

    #[test]
    fn sum_adds_the_parts_integers() {
        let parts = [
            frame(&resp::Reply::Integer(2)),
            frame(&resp::Reply::Integer(0)),
            frame(&resp::Reply::Integer(5)),
        ];
        assert_eq!(
            combine(&MergePolicy::Sum, &parts, &[0, 1, 2, 0]),
            one(b":7\r\n")
        );
    }

    #[test]
    fn sum_answers_the_first_part_that_is_no_integer() {
        let parts = [
            frame(&resp::Reply::Integer(2)),
            frame(&resp::Reply::error("ERR busy")),
            frame(&resp::Reply::error("ERR later")),
        ];
        assert_eq!(
            combine(&MergePolicy::Sum, &parts, &[0, 1, 2]),
            one(b"-ERR busy\r\n")
        );
    }

    #[test]
    fn all_ok_is_one_ok_or_the_first_other_reply() {
        let ok = || frame(&resp::Reply::ok());
        assert_eq!(
            combine(&MergePolicy::AllOk, &[ok(), ok()], &[0, 1]),
            one(b"+OK\r\n")
        );
        let oom = frame(&resp::Reply::error("OOM full"));
        assert_eq!(
            combine(&MergePolicy::AllOk, &[ok(), oom], &[0, 1]),
            one(b"-OOM full\r\n")
        );
    }

    // memcached: values come back in the client's key order, one END.
    #[test]
    fn mc_get_merges_in_key_order() {
        let req = mc::Request::get(&["a", "b", "c"]).expect("valid");
        let p0 = mc_frame(
            mc::Command::Get,
            b"VALUE a 0 1\r\n1\r\nVALUE c 0 1\r\n3\r\nEND\r\n",
        );
        let p1 = mc_frame(mc::Command::Get, b"VALUE b 0 1\r\n2\r\nEND\r\n");
        assert_eq!(
            combine(&MergePolicy::McGet(req), &[p0, p1], &[0, 1, 0]),
            one(b"VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nVALUE c 0 1\r\n3\r\nEND\r\n")
        );
    }

    #[test]
    fn mc_get_error_part_is_the_reply() {
        let req = mc::Request::get(&["a", "b"]).expect("valid");
        let p0 = mc_frame(mc::Command::Get, b"VALUE a 0 1\r\n1\r\nEND\r\n");
        let p1 = mc_frame(mc::Command::Get, b"SERVER_ERROR out of memory\r\n");
        assert_eq!(
            combine(&MergePolicy::McGet(req), &[p0, p1], &[0, 1]),
            one(b"SERVER_ERROR out of memory\r\n")
        );
    }

    // A part that is no RESP reply (a memcached frame where RESP was
    // expected) is passed on as it is rather than misread.
    #[test]
    fn a_part_of_the_wrong_protocol_is_passed_on() {
        let stray = mc_frame(mc::Command::Set, b"STORED\r\n");
        let ok = frame(&resp::Reply::ok());
        assert_eq!(
            combine(&MergePolicy::AllOk, &[ok, stray.clone()], &[0, 1]),
            one(b"STORED\r\n")
        );
        assert_eq!(
            combine(&MergePolicy::Sum, &[stray], &[0]),
            one(b"STORED\r\n")
        );
    }
}
