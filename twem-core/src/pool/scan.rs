//! `SCAN` over every server of a pool: the composite cursor, the rewrite of
//! a server's reply, and the embedded [`Scan`] that walks the whole pool.
//!
//! A pool's keyspace is the union of its servers' keyspaces, so a scan of
//! the pool is a scan of each server in turn, by ring index. Each `SCAN`
//! call goes to ONE server, the one its cursor names, with that server's
//! own cursor; the reply's cursor is rewritten to name the server too.
//!
//! # The cursor
//!
//! `composite = server_cursor << 16 | server_index` ([`SERVER_BITS`]): the
//! server index in the low 16 bits, the server's own cursor above it. It is
//! a non-negative decimal integer below 2^64, as every client parses SCAN
//! cursors (redis-py as an int, node-redis as a string). `0` is server 0's
//! start, which is also where a scan begins, and the reply's cursor is `0`
//! only once the last live server has finished. When a server's own scan
//! ends (its cursor `0`), the reply's cursor is the next live server's
//! start (`composite = index`), so every server is visited in turn.
//!
//! A fixed width rather than "times the number of servers" keeps a cursor's
//! meaning when a reload changes the pool's size: a cursor naming an index
//! the pool no longer has is `-ERR invalid cursor` instead of silently
//! naming another server. Redis's cursor is below its table's size, far
//! below 2^48; one that does not fit is an error reply, never a wrong
//! cursor.
//!
//! # Redis's guarantee, across servers
//!
//! Each server's SCAN returns every key present there for its whole scan,
//! and the servers are scanned one after another, so every key present in
//! the pool for the whole scan is returned at least once (exactly once
//! when nothing changes, as Redis). A key added during the scan may or may
//! not be returned, as in Redis.
//!
//! # An ejected server
//!
//! A server ejected when the scan reaches it (or while it is being
//! scanned) is skipped: the scan goes on at the next live server's start.
//! Its keys are not reachable through the pool while it is out (their
//! commands go to other servers), so they are not part of the pool's
//! keyspace during that time; a server re-admitted after the scan passed
//! it is not visited again. Ejection is the only case where a key present
//! for the whole scan may be missed, and it is missing from every other
//! command too.

use std::collections::VecDeque;

use bytes::Bytes;

use twem_proto::resp;

use super::{CallError, Frame, Pool};

/// Bits of the composite cursor that hold the server index (up to 65,536
/// servers); the server's own cursor is shifted above them.
pub const SERVER_BITS: u32 = 16;

const SERVER_MASK: u64 = (1 << SERVER_BITS) - 1;

/// A position in a scan of a pool: which server, and where in that
/// server's own scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanCursor {
    /// The server, by ring index.
    pub server: usize,
    /// That server's own SCAN cursor (`0`: its start).
    pub cursor: u64,
}

impl ScanCursor {
    /// The position a client's composite cursor names (any `u64` names
    /// one; whether the pool has that server is the caller's check).
    pub fn decode(composite: u64) -> ScanCursor {
        ScanCursor {
            server: (composite & SERVER_MASK) as usize,
            cursor: composite >> SERVER_BITS,
        }
    }

    /// The composite cursor for the client; `None` when the server index
    /// or the server's cursor does not fit (see the module docs).
    pub fn encode(self) -> Option<u64> {
        let server = u64::try_from(self.server)
            .ok()
            .filter(|&s| s <= SERVER_MASK)?;
        if self.cursor >> (u64::BITS - SERVER_BITS) != 0 {
            return None;
        }
        Some(self.cursor << SERVER_BITS | server)
    }
}

/// A SCAN cursor argument as a number: decimal digits only, below 2^64.
/// `None` is Redis's `-ERR invalid cursor`.
pub fn parse_cursor(arg: &[u8]) -> Option<u64> {
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// The reply of a scan that has nothing left to visit: cursor `0`, no keys.
pub(crate) fn finished() -> Bytes {
    Bytes::from_static(b"*2\r\n$1\r\n0\r\n*0\r\n")
}

/// The server's SCAN reply (`frame`, from server `server`) with its cursor
/// rewritten into the composite cursor: the same server while its scan goes
/// on; `next`'s start (`0` when there is no next live server) once it ends.
/// An error reply, or a reply not shaped as SCAN's, is passed on as it is.
pub(crate) fn rewrite(frame: &Frame, server: usize, next: Option<usize>) -> Bytes {
    let Frame::Resp(r) = frame else {
        return frame.raw().clone();
    };
    let resp::Reply::Array(Some(mut items)) = r.parse() else {
        return r.raw().clone();
    };
    let (Some(keys), Some(resp::Reply::Bulk(Some(c))), true) =
        (items.pop(), items.pop(), items.is_empty())
    else {
        return r.raw().clone();
    };
    let Some(own) = parse_cursor(&c) else {
        return r.raw().clone();
    };
    let composite = if own == 0 {
        next.map_or(Some(0), |n| {
            ScanCursor {
                server: n,
                cursor: 0,
            }
            .encode()
        })
    } else {
        ScanCursor {
            server,
            cursor: own,
        }
        .encode()
    };
    let Some(composite) = composite else {
        return resp::Reply::error(
            "ERR twem: the server's SCAN cursor is too large to combine with a server index",
        )
        .to_bytes();
    };
    resp::Reply::Array(Some(vec![
        resp::Reply::Bulk(Some(Bytes::from(composite.to_string()))),
        keys,
    ]))
    .to_bytes()
}

/// The options of a pool-wide scan: `MATCH`, `COUNT` and `TYPE`, as Redis's
/// SCAN takes them (each applies to every server's scan; `COUNT` is per
/// call, so per server).
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    pattern: Option<Bytes>,
    count: Option<u64>,
    kind: Option<Bytes>,
}

impl ScanOptions {
    /// Every key, Redis's default page size.
    pub fn new() -> ScanOptions {
        ScanOptions::default()
    }

    /// `MATCH pattern`: only keys matching the glob-style pattern.
    pub fn pattern(mut self, pattern: impl Into<Bytes>) -> ScanOptions {
        self.pattern = Some(pattern.into());
        self
    }

    /// `COUNT n`: how much work each call does (a hint, as in Redis).
    pub fn count(mut self, n: u64) -> ScanOptions {
        self.count = Some(n);
        self
    }

    /// `TYPE type`: only keys of this type (`string`, `hash`, ...).
    pub fn kind(mut self, kind: impl Into<Bytes>) -> ScanOptions {
        self.kind = Some(kind.into());
        self
    }

    /// The arguments after the cursor.
    fn tail(&self) -> Vec<Bytes> {
        let mut tail = Vec::new();
        if let Some(p) = &self.pattern {
            tail.push(Bytes::from_static(b"MATCH"));
            tail.push(p.clone());
        }
        if let Some(n) = self.count {
            tail.push(Bytes::from_static(b"COUNT"));
            tail.push(Bytes::from(n.to_string()));
        }
        if let Some(t) = &self.kind {
            tail.push(Bytes::from_static(b"TYPE"));
            tail.push(t.clone());
        }
        tail
    }
}

/// A scan of every server of a pool ([`Pool::scan`]): [`Scan::next`] yields
/// the keys one by one, calling `SCAN` through the pool as a client of the
/// proxy would, with the same composite cursor and the same guarantees (see
/// the module docs).
#[derive(Debug)]
pub struct Scan {
    pool: Pool,
    tail: Vec<Bytes>,
    cursor: u64,
    /// The scan has returned cursor 0: nothing is left to ask for.
    done: bool,
    page: VecDeque<Bytes>,
}

impl Scan {
    pub(crate) fn new(pool: Pool, options: &ScanOptions) -> Scan {
        Scan {
            pool,
            tail: options.tail(),
            cursor: 0,
            done: false,
            page: VecDeque::new(),
        }
    }

    /// The next key, `None` once every server has been scanned. A failed
    /// call is returned as an error and leaves the scan where it was:
    /// calling `next` again retries that call.
    pub async fn next(&mut self) -> Option<Result<Bytes, CallError>> {
        loop {
            if let Some(key) = self.page.pop_front() {
                return Some(Ok(key));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fetch().await {
                return Some(Err(e));
            }
        }
    }

    /// The composite cursor of the next call (`0` before the first and
    /// after the last): where a scan could be resumed by a proxy client.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// One `SCAN` call: its keys into the page, its cursor kept.
    async fn fetch(&mut self) -> Result<(), CallError> {
        let mut args = Vec::with_capacity(2 + self.tail.len());
        args.push(Bytes::from_static(b"SCAN"));
        args.push(Bytes::from(self.cursor.to_string()));
        args.extend(self.tail.iter().cloned());
        let reply = self.pool.call(resp::Request::from_args(args)).await?;
        let (cursor, keys) = split_reply(reply)?;
        self.page.extend(keys);
        self.cursor = cursor;
        self.done = cursor == 0;
        Ok(())
    }
}

/// A SCAN reply's cursor and keys, or the error it is.
fn split_reply(reply: resp::Reply) -> Result<(u64, Vec<Bytes>), CallError> {
    let unexpected = |r: &resp::Reply| {
        CallError::Server(super::ServerError::Unexpected(format!(
            "unexpected SCAN reply {r:?}"
        )))
    };
    let items = match reply {
        resp::Reply::Error(e) => return Err(CallError::Server(super::ServerError::Reply(e))),
        resp::Reply::Array(Some(items)) => items,
        other => return Err(unexpected(&other)),
    };
    match &items[..] {
        [first @ resp::Reply::Bulk(Some(c)), resp::Reply::Array(Some(keys))] => {
            let cursor = parse_cursor(c).ok_or_else(|| unexpected(first))?;
            let keys = keys
                .iter()
                .filter_map(|k| match k {
                    resp::Reply::Bulk(Some(k)) => Some(k.clone()),
                    _ => None,
                })
                .collect();
            Ok((cursor, keys))
        }
        _ => Err(unexpected(&resp::Reply::Array(Some(items.clone())))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::merge::tests::frame;

    #[test]
    fn cursor_round_trips() {
        for (server, cursor) in [
            (0, 0),
            (1, 0),
            (2, 17),
            (65_535, 1 << 47),
            (3, (1 << 48) - 1),
        ] {
            let c = ScanCursor { server, cursor };
            let composite = c.encode().expect("fits");
            assert_eq!(ScanCursor::decode(composite), c);
        }
        // The start of the scan is 0, and server i's start is i.
        assert_eq!(
            ScanCursor {
                server: 0,
                cursor: 0
            }
            .encode(),
            Some(0)
        );
        assert_eq!(
            ScanCursor {
                server: 2,
                cursor: 0
            }
            .encode(),
            Some(2)
        );
        assert_eq!(
            ScanCursor {
                server: 1,
                cursor: 5
            }
            .encode(),
            Some(5 << 16 | 1)
        );
        assert_eq!(
            ScanCursor::decode(u64::MAX),
            ScanCursor {
                server: 65_535,
                cursor: (1 << 48) - 1
            }
        );
    }

    #[test]
    fn cursors_that_do_not_fit_are_refused() {
        assert_eq!(
            ScanCursor {
                server: 65_536,
                cursor: 0
            }
            .encode(),
            None
        );
        assert_eq!(
            ScanCursor {
                server: 0,
                cursor: 1 << 48
            }
            .encode(),
            None
        );
        assert_eq!(
            ScanCursor {
                server: 1,
                cursor: u64::MAX
            }
            .encode(),
            None
        );
    }

    #[test]
    fn cursor_arguments_parse_as_redis_does() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        let bad = ["", "-1", "+1", " 1", "1x", "abc", "18446744073709551616"];
        for bad in bad.map(str::as_bytes) {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }

    fn page(cursor: &str, keys: &[&str]) -> resp::Reply {
        resp::Reply::Array(Some(vec![
            resp::Reply::Bulk(Some(Bytes::copy_from_slice(cursor.as_bytes()))),
            resp::Reply::Array(Some(
                keys.iter()
                    .map(|k| resp::Reply::Bulk(Some(Bytes::copy_from_slice(k.as_bytes()))))
                    .collect(),
            )),
        ]))
    }

    #[test]
    fn a_server_page_gets_the_composite_cursor() {
        // Mid-scan: the same server, its own cursor shifted.
        let got = rewrite(&frame(&page("7", &["a", "b"])), 1, Some(2));
        assert_eq!(
            got,
            page(&(7u64 << 16 | 1).to_string(), &["a", "b"]).to_bytes()
        );
        // The server is done: the next live server's start.
        let got = rewrite(&frame(&page("0", &["c"])), 1, Some(2));
        assert_eq!(got, page("2", &["c"]).to_bytes());
        // The last live server is done: the whole scan is.
        let got = rewrite(&frame(&page("0", &[])), 2, None);
        assert_eq!(got, page("0", &[]).to_bytes());
        assert_eq!(finished(), page("0", &[]).to_bytes());
    }

    #[test]
    fn odd_replies_pass_through_and_big_cursors_fail() {
        let err = resp::Reply::error("ERR syntax error");
        assert_eq!(rewrite(&frame(&err), 0, None), err.to_bytes());
        let odd = resp::Reply::Integer(3);
        assert_eq!(rewrite(&frame(&odd), 0, None), odd.to_bytes());
        let big = rewrite(&frame(&page(&(1u64 << 48).to_string(), &[])), 0, None);
        assert!(big.starts_with(b"-ERR twem: the server's SCAN cursor is too large"));
    }

    #[test]
    fn options_become_scan_arguments() {
        let o = ScanOptions::new().pattern("user:*").count(100).kind("hash");
        let args = o.tail();
        let tail: Vec<&[u8]> = args.iter().map(|b| &b[..]).collect();
        assert_eq!(
            tail,
            [&b"MATCH"[..], b"user:*", b"COUNT", b"100", b"TYPE", b"hash"]
        );
        assert!(ScanOptions::new().tail().is_empty());
    }
}
