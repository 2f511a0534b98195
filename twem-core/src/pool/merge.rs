//! Collecting the parts of a split command and merging them into the one
//! reply the client asked for.
//!
//! Rules (nutcracker's, plus DESIGN.md section 4): MGET values come back in
//! the client's key order; DEL, UNLINK, TOUCH and EXISTS integers are summed;
//! MSET answers one `+OK`; a memcached multi-get answers its values in key
//! order and one `END`. A command sent to every server answers what they
//! all answered (`SCRIPT LOAD`), element-wise AND (`SCRIPT EXISTS`), the
//! proxy's INFO text, the keys of every server (`KEYS`), their sum
//! (`DBSIZE`) or the first key any server has (`RANDOMKEY`). A `SCAN` page
//! gets the pool's composite cursor (`pool/scan.rs`). If any part fails, the whole command answers one
//! error: a transport failure becomes the nutcracker-worded error, a server's
//! own error reply is passed on as it is; only INFO leaves a failed server
//! out, since the servers that answered still describe the pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;

use twem_proto::{memcache as mc, resp};

use super::backend::Frame;
use super::error::{BackendError, BackendErrorKind, CallError};
use super::info::{self, InfoRequest};
use super::mcstats;
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
    /// INFO only: the first failure of a part left out; the reply when no
    /// part answered.
    failed: Option<BackendError>,
    /// INFO only: the parts that failed (left out, not polled again).
    gone: Vec<bool>,
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
            failed: None,
            gone: vec![false; n],
        }
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<ReplyChunks, CallError>> {
        let lenient = matches!(self.policy, MergePolicy::Info(_) | MergePolicy::McStats(_));
        for (i, rx) in self.parts.iter_mut().enumerate() {
            if self.done[i].is_some() || self.gone[i] {
                continue;
            }
            let failure = match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(Ok(frame))) => {
                    self.done[i] = Some(frame);
                    self.left -= 1;
                    continue;
                }
                Poll::Ready(Ok(Err(e))) => e,
                Poll::Ready(Err(_)) => BackendError::new(BackendErrorKind::Unknown, Arc::from("")),
                Poll::Pending => continue,
            };
            // One failed part fails the command; the other parts' replies
            // are simply dropped when they arrive. INFO goes on with the
            // servers that answer.
            if !lenient {
                return Poll::Ready(Err(CallError::Backend(failure)));
            }
            self.left -= 1;
            self.gone[i] = true;
            self.failed.get_or_insert(failure);
        }
        if self.left > 0 {
            return Poll::Pending;
        }
        let frames: Vec<Frame> = self.done.iter_mut().filter_map(Option::take).collect();
        if frames.is_empty() {
            if let Some(e) = self.failed.take() {
                return Poll::Ready(Err(CallError::Backend(e)));
            }
        }
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
        MergePolicy::AllEqual => all_equal(frames),
        MergePolicy::AllOnes => all_ones(frames),
        MergePolicy::Union => union(frames),
        MergePolicy::SumPairs => sum_pairs(frames),
        MergePolicy::Max => max(frames),
        MergePolicy::Info(req) => info(req, frames),
        MergePolicy::Concat => concat(frames),
        MergePolicy::FirstKey => first_key(frames),
        MergePolicy::Scan { server, next } => match frames.first() {
            Some(f) => super::scan::rewrite(f, *server, *next),
            None => super::scan::finished(),
        },
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
        MergePolicy::McStats(proxy) => mc_stats(proxy, frames),
        MergePolicy::McAllOk { noreply } => mc_all_ok(*noreply, frames),
    }
}

/// memcached `stats`: the proxy's reply from the servers that answered with
/// `STAT` lines (an error reply is left out like a failed server); when
/// none did, the first error reply.
fn mc_stats(proxy: &info::ProxyNumbers, frames: &[Frame]) -> Bytes {
    let answers: Vec<Vec<(Bytes, Bytes)>> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Mc(m) => match m.parse() {
                mc::Reply::Stats(s) => Some(s),
                _ => None,
            },
            _ => None,
        })
        .collect();
    if answers.is_empty() {
        if let Some(f) = frames.first() {
            return f.raw().clone();
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    mcstats::build(proxy, now, &answers)
}

/// memcached `flush_all`: `OK` when every server said `OK`, else the first
/// other reply (the client learns that some server was not flushed);
/// nothing for `noreply`.
fn mc_all_ok(noreply: bool, frames: &[Frame]) -> Bytes {
    if noreply {
        return Bytes::new();
    }
    match frames.iter().find(|f| &f.raw()[..] != b"OK\r\n") {
        Some(f) => f.raw().clone(),
        None => mc::Reply::Ok.to_bytes(),
    }
}

/// The servers' replies parsed, or the first that is an error (or no
/// frame of RESP), which is then the client's reply.
fn parsed(frames: &[Frame]) -> Result<Vec<resp::Reply>, Bytes> {
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        match f {
            Frame::Resp(r) if !r.is_error() => out.push(r.parse()),
            other => return Err(other.raw().clone()),
        }
    }
    Ok(out)
}

/// `PUBSUB CHANNELS`: every server's channels, each once, in the order
/// first seen.
fn union(frames: &[Frame]) -> Bytes {
    let replies = match parsed(frames) {
        Ok(r) => r,
        Err(e) => return e,
    };
    // Channel names are bulk strings: compared as their encoding.
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for r in replies {
        let (resp::Reply::Array(Some(items)) | resp::Reply::Set(items)) = r else {
            return r.to_bytes();
        };
        for i in items {
            if seen.insert(i.to_bytes()) {
                out.push(i);
            }
        }
    }
    resp::Reply::Array(Some(out)).to_bytes()
}

/// `PUBSUB NUMSUB ch...`: the channels in the client's order, each with
/// its counts summed (RESP2 sends a flat array, RESP3 a map; the client
/// gets the shape its servers used).
fn sum_pairs(frames: &[Frame]) -> Bytes {
    let replies = match parsed(frames) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut order: Vec<resp::Reply> = Vec::new();
    let mut sums: Vec<i64> = Vec::new();
    let mut map = false;
    for r in replies {
        let pairs: Vec<(resp::Reply, resp::Reply)> = match r {
            resp::Reply::Array(Some(items)) => {
                let mut it = items.into_iter();
                let mut v = Vec::new();
                while let (Some(k), Some(n)) = (it.next(), it.next()) {
                    v.push((k, n));
                }
                v
            }
            resp::Reply::Map(pairs) => {
                map = true;
                pairs
            }
            other => return other.to_bytes(),
        };
        for (k, n) in pairs {
            let n = match n {
                resp::Reply::Integer(n) => n,
                _ => 0,
            };
            match order.iter().position(|o| *o == k) {
                Some(i) => {
                    if let Some(s) = sums.get_mut(i) {
                        *s = s.saturating_add(n);
                    }
                }
                None => {
                    order.push(k);
                    sums.push(n);
                }
            }
        }
    }
    let pairs = order
        .into_iter()
        .zip(sums.into_iter().map(resp::Reply::Integer));
    if map {
        resp::Reply::Map(pairs.collect()).to_bytes()
    } else {
        resp::Reply::Array(Some(pairs.flat_map(|(k, n)| [k, n]).collect())).to_bytes()
    }
}

/// `PUBSUB NUMPAT`: the largest of the servers' integers.
fn max(frames: &[Frame]) -> Bytes {
    let mut best: Option<i64> = None;
    for f in frames {
        match f {
            Frame::Resp(r) => match r.integer() {
                Some(n) => best = Some(best.map_or(n, |b| b.max(n))),
                None => return r.raw().clone(),
            },
            other => return other.raw().clone(),
        }
    }
    resp::Reply::Integer(best.unwrap_or(0)).to_bytes()
}

/// Every server's reply, when they are all the same; an error reply if any
/// server answered one; otherwise an error saying they disagree (a script
/// loaded on some servers only would fail later, on those without it).
fn all_equal(frames: &[Frame]) -> Bytes {
    if let Some(e) = frames.iter().find(|f| f.is_error()) {
        return e.raw().clone();
    }
    match frames.split_first() {
        Some((first, rest)) if rest.iter().all(|f| f.raw() == first.raw()) => first.raw().clone(),
        Some(_) => resp::Reply::error(
            "ERR the pool's servers answered differently: check each server (their scripts or functions differ)",
        )
        .to_bytes(),
        None => resp::Reply::error("ERR no server answered").to_bytes(),
    }
}

/// `SCRIPT EXISTS` over every server: 1 only where every server said 1.
fn all_ones(frames: &[Frame]) -> Bytes {
    let mut acc: Option<Vec<bool>> = None;
    for f in frames {
        let Frame::Resp(r) = f else {
            return f.raw().clone();
        };
        let resp::Reply::Array(Some(items)) = r.parse() else {
            return r.raw().clone();
        };
        let here: Vec<bool> = items
            .iter()
            .map(|i| matches!(i, resp::Reply::Integer(1)))
            .collect();
        acc = Some(match acc {
            None => here,
            Some(prev) if prev.len() == here.len() => {
                prev.iter().zip(&here).map(|(a, b)| *a && *b).collect()
            }
            Some(_) => {
                return resp::Reply::error("ERR the pool's servers answered differently").to_bytes()
            }
        });
    }
    let items = acc
        .unwrap_or_default()
        .into_iter()
        .map(|b| resp::Reply::Integer(i64::from(b)))
        .collect();
    resp::Reply::Array(Some(items)).to_bytes()
}

/// `KEYS` over every server: one array of every server's keys; the first
/// reply that is not an array (an error) is the reply.
fn concat(frames: &[Frame]) -> Bytes {
    let mut all = Vec::new();
    for f in frames {
        let Frame::Resp(r) = f else {
            return f.raw().clone();
        };
        match r.parse() {
            resp::Reply::Array(Some(items)) => all.extend(items),
            _ => return r.raw().clone(),
        }
    }
    resp::Reply::Array(Some(all)).to_bytes()
}

/// `RANDOMKEY` over every server (in a random order): the first key; null
/// (the first server's own null, RESP2 or RESP3) only when no server has
/// one. An error reply wins, as for every merge.
fn first_key(frames: &[Frame]) -> Bytes {
    if let Some(e) = frames.iter().find(|f| f.is_error()) {
        return e.raw().clone();
    }
    let is_null = |f: &&Frame| match f {
        Frame::Resp(r) => matches!(r.parse(), resp::Reply::Bulk(None) | resp::Reply::Null),
        _ => false,
    };
    match frames.iter().find(|f| !is_null(f)).or(frames.first()) {
        Some(f) => f.raw().clone(),
        None => resp::Reply::Bulk(None).to_bytes(),
    }
}

/// `INFO`: the proxy's text from the servers that answered with INFO text
/// (an error reply is left out like a failed server); when none did, the
/// first error reply.
fn info(req: &InfoRequest, frames: &[Frame]) -> Bytes {
    let mut texts: Vec<Bytes> = Vec::with_capacity(frames.len());
    for f in frames {
        if let Frame::Resp(r) = f {
            if let resp::Reply::Bulk(Some(b)) = r.parse() {
                texts.push(b);
            }
        }
    }
    if texts.is_empty() {
        if let Some(f) = frames.first() {
            return f.raw().clone();
        }
    }
    let answers: Vec<&[u8]> = texts.iter().map(|b| &b[..]).collect();
    resp::Reply::Bulk(Some(Bytes::from(info::build(req, &answers)))).to_bytes()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    /// `reply` as the backend's decoder frames it (shared with scan's tests).
    pub(crate) fn frame(reply: &resp::Reply) -> Frame {
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

    /// An MGET merged from the part `[x]` and the part `b`, with `order`
    /// (the part each key came from).
    fn mget_x_and(b: resp::Reply, order: &[usize]) -> ReplyChunks {
        let a = frame(&resp::Reply::Array(Some(vec![bulk(b"x")])));
        combine(&MergePolicy::Mget, &[a, frame(&b)], order)
    }

    #[test]
    fn small_mget_is_one_buffer() {
        let b = resp::Reply::Array(Some(vec![resp::Reply::Bulk(None)]));
        assert_eq!(
            mget_x_and(b, &[1, 0]),
            ReplyChunks::One(Bytes::from_static(b"*2\r\n$-1\r\n$1\r\nx\r\n"))
        );
    }

    #[test]
    fn an_error_part_is_the_reply() {
        let b = resp::Reply::error("WRONGTYPE no");
        assert_eq!(
            mget_x_and(b, &[0, 1]),
            ReplyChunks::One(Bytes::from_static(b"-WRONGTYPE no\r\n"))
        );
    }

    // stats: the servers' counters summed, a failed reply left out; all
    // errors: the first error.
    #[test]
    fn memcache_stats_merge() {
        let a = mc_frame(
            mc::Command::Stats,
            b"STAT pid 1\r\nSTAT version 1.6.18\r\nSTAT curr_items 2\r\nEND\r\n",
        );
        let b = mc_frame(
            mc::Command::Stats,
            b"STAT pid 2\r\nSTAT version 1.6.9\r\nSTAT curr_items 5\r\nEND\r\n",
        );
        let e = mc_frame(mc::Command::Stats, b"SERVER_ERROR out of memory\r\n");
        let policy = MergePolicy::McStats(Box::default());
        let got = combine(&policy, &[a, e.clone(), b], &[0, 1, 2]).into_bytes();
        let text = std::str::from_utf8(&got).expect("text");
        assert!(text.contains("STAT curr_items 7\r\n"), "{text}");
        assert!(text.contains("STAT version 1.6.9\r\n"), "{text}");
        assert!(text.ends_with("\r\nEND\r\n"));
        assert_eq!(
            combine(&policy, std::slice::from_ref(&e), &[0]).into_bytes(),
            Bytes::from_static(b"SERVER_ERROR out of memory\r\n")
        );
    }

    // flush_all: OK only when all said OK; silent for noreply.
    #[test]
    fn memcache_flush_all_merge() {
        let ok = mc_frame(mc::Command::FlushAll, b"OK\r\n");
        let bad = mc_frame(mc::Command::FlushAll, b"SERVER_ERROR busy\r\n");
        let all = |noreply| MergePolicy::McAllOk { noreply };
        assert_eq!(
            combine(&all(false), &[ok.clone(), ok.clone()], &[0, 1]).into_bytes(),
            Bytes::from_static(b"OK\r\n")
        );
        assert_eq!(
            combine(&all(false), &[ok.clone(), bad.clone()], &[0, 1]).into_bytes(),
            Bytes::from_static(b"SERVER_ERROR busy\r\n")
        );
        assert!(combine(&all(true), &[ok, bad], &[0, 1]).is_empty());
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

    fn ints(v: &[i64]) -> resp::Reply {
        resp::Reply::Array(Some(v.iter().map(|&i| resp::Reply::Integer(i)).collect()))
    }

    fn merged(policy: &MergePolicy, frames: &[Frame]) -> Bytes {
        let part_of: Vec<usize> = (0..frames.len()).collect();
        combine(policy, frames, &part_of).into_bytes()
    }

    /// `replies` (each framed as a backend's reply) merge by `policy` into
    /// the bytes of `want`.
    fn assert_merges(policy: &MergePolicy, replies: &[&resp::Reply], want: &resp::Reply) {
        assert_eq!(
            merged_replies(policy, replies),
            want.to_bytes(),
            "{replies:?}"
        );
    }

    /// [`merged`] of `replies`, each framed as a backend's reply.
    fn merged_replies(policy: &MergePolicy, replies: &[&resp::Reply]) -> Bytes {
        let frames: Vec<Frame> = replies.iter().map(|r| frame(r)).collect();
        merged(policy, &frames)
    }

    // SCRIPT LOAD on every server: the same sha is the reply; an error part
    // is the reply; different replies are an error.
    #[test]
    fn all_equal_merges() {
        let sha = || frame(&bulk(b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"));
        assert_eq!(
            merged(&MergePolicy::AllEqual, &[sha(), sha(), sha()]),
            sha().raw().clone()
        );
        let err = frame(&resp::Reply::error("ERR Error compiling script"));
        assert_eq!(
            merged(&MergePolicy::AllEqual, &[sha(), err.clone(), sha()]),
            err.raw().clone()
        );
        let other = frame(&bulk(b"other"));
        let got = merged(&MergePolicy::AllEqual, &[sha(), other]);
        assert!(got.starts_with(b"-ERR the pool's servers answered differently"));
        let ok = || frame(&resp::Reply::ok());
        assert_eq!(
            &merged(&MergePolicy::AllEqual, &[ok(), ok()])[..],
            b"+OK\r\n"
        );
    }

    // SCRIPT EXISTS: 1 only where every server said 1.
    #[test]
    fn all_ones_merges() {
        let a = frame(&ints(&[1, 1, 0]));
        let b = frame(&ints(&[1, 0, 1]));
        assert_eq!(
            merged(&MergePolicy::AllOnes, &[a.clone(), b]),
            ints(&[1, 0, 0]).to_bytes()
        );
        assert_eq!(
            merged(&MergePolicy::AllOnes, std::slice::from_ref(&a)),
            ints(&[1, 1, 0]).to_bytes()
        );
        let err = frame(&resp::Reply::error("NOSCRIPT x"));
        assert_eq!(
            merged(&MergePolicy::AllOnes, &[a, err.clone()]),
            err.raw().clone()
        );
    }

    // INFO: the proxy's text from the answers; error replies are left out
    // unless nothing else came.
    #[test]
    fn concat_joins_the_servers_keys() {
        let a = resp::Reply::Array(Some(vec![bulk(b"a"), bulk(b"b")]));
        let b = resp::Reply::Array(Some(vec![]));
        let c = resp::Reply::Array(Some(vec![bulk(b"c")]));
        let abc = resp::Reply::Array(Some(vec![bulk(b"a"), bulk(b"b"), bulk(b"c")]));
        assert_merges(&MergePolicy::Concat, &[&a, &b, &c], &abc);
        let err = resp::Reply::error("ERR x");
        assert_merges(&MergePolicy::Concat, &[&a, &err], &err);
    }

    #[test]
    fn first_key_is_null_only_when_every_server_is_empty() {
        let null = resp::Reply::Bulk(None);
        let k = bulk(b"k");
        assert_merges(&MergePolicy::FirstKey, &[&null, &k, &null], &k);
        assert_merges(&MergePolicy::FirstKey, &[&null, &null], &null);
        let err = resp::Reply::error("ERR x");
        assert_merges(&MergePolicy::FirstKey, &[&k, &err], &err);
    }

    #[test]
    fn scan_rewrites_the_cursor() {
        let page = resp::Reply::Array(Some(vec![
            bulk(b"0"),
            resp::Reply::Array(Some(vec![bulk(b"k")])),
        ]));
        let want = resp::Reply::Array(Some(vec![
            bulk(b"2"),
            resp::Reply::Array(Some(vec![bulk(b"k")])),
        ]));
        let policy = MergePolicy::Scan {
            server: 1,
            next: Some(2),
        };
        assert_merges(&policy, &[&page], &want);
    }

    #[test]
    fn info_merges_answers() {
        let req = InfoRequest::new(vec![Bytes::from_static(b"keyspace")]);
        let a = frame(&bulk(b"# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n"));
        let b = frame(&bulk(b"# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n"));
        let err = frame(&resp::Reply::error("LOADING Redis is loading"));
        let policy = MergePolicy::Info(Box::new(req));
        let want = bulk(b"# Keyspace\r\ndb0:keys=5,expires=0,avg_ttl=0\r\n").to_bytes();
        assert_eq!(merged(&policy, &[a, err.clone(), b]), want);
        assert_eq!(
            merged(&policy, std::slice::from_ref(&err)),
            err.raw().clone()
        );
    }

    fn bulks(v: &[&str]) -> resp::Reply {
        resp::Reply::Array(Some(v.iter().map(|x| bulk(x.as_bytes())).collect()))
    }

    // PUBSUB CHANNELS: each channel once; NUMSUB: counts summed per
    // channel in the client's order; NUMPAT: the largest count.
    #[test]
    fn pubsub_introspection_merges() {
        let a = frame(&bulks(&["x", "y"]));
        let b = frame(&bulks(&["y", "z"]));
        assert_eq!(
            combine_one(&MergePolicy::Union, &[a, b], &[]),
            bulks(&["x", "y", "z"]).to_bytes()
        );
        let n1 = frame(&resp::Reply::Array(Some(vec![
            bulk(b"x"),
            resp::Reply::Integer(2),
            bulk(b"y"),
            resp::Reply::Integer(0),
        ])));
        let n2 = frame(&resp::Reply::Array(Some(vec![
            bulk(b"x"),
            resp::Reply::Integer(0),
            bulk(b"y"),
            resp::Reply::Integer(3),
        ])));
        assert_eq!(
            combine_one(&MergePolicy::SumPairs, &[n1, n2], &[]),
            resp::Reply::Array(Some(vec![
                bulk(b"x"),
                resp::Reply::Integer(2),
                bulk(b"y"),
                resp::Reply::Integer(3),
            ]))
            .to_bytes()
        );
        let m = |n| frame(&resp::Reply::Integer(n));
        assert_eq!(
            combine_one(&MergePolicy::Max, &[m(1), m(4), m(2)], &[]),
            resp::Reply::Integer(4).to_bytes()
        );
        let err = frame(&resp::Reply::error("ERR boom"));
        // An error part is the reply, whatever else came.
        assert_eq!(
            combine_one(&MergePolicy::Union, &[m(1), err.clone()], &[]),
            err.raw().clone()
        );
        // A part of the wrong shape is passed on.
        assert_eq!(
            combine_one(&MergePolicy::Union, &[m(1)], &[]),
            resp::Reply::Integer(1).to_bytes()
        );
        assert_eq!(
            combine_one(&MergePolicy::Max, &[m(1), err.clone()], &[]),
            err.raw().clone()
        );
    }
}
