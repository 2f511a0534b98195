//! RESP, the Redis protocol: client requests in, backend replies (RESP2
//! and RESP3) out.
//!
//! Two codecs, one per side of the proxy:
//!
//! - [`RequestCodec`] (server side, facing clients) decodes [`Request`]s and
//!   encodes [`Reply`]s or pass-through [`ReplyFrame`]s.
//! - [`ReplyCodec`] (client side, facing backends, also for Rust tools)
//!   decodes [`ReplyFrame`]s and encodes [`Request`]s.
//!
//! Both are zero copy: a decoded item holds [`Bytes`](bytes::Bytes) slices of the read
//! buffer, cut with `split_to(..).freeze()`; a request is forwarded with
//! [`Request::wire`] and a reply with [`ReplyFrame::raw`], byte for byte.
//!
//! # Requests
//!
//! A request is either a RESP array of bulk strings (`*<n>\r\n` then `n` times
//! `$<len>\r\n<bytes>\r\n`) or, as Redis allows for telnet users, an *inline*
//! line (anything not starting with `*`), split on blanks with Redis's quoting
//! rules (`"..."` with `\n \r \t \b \a \xHH` escapes, `'...'` with `\'`).
//! Inline requests are re-encoded once as a RESP array, because backends are
//! always sent RESP. As in Redis, empty lines and `*0` / `*-1` arrays are
//! skipped without a reply. Errors use Redis's words (`invalid multibulk
//! length`, `invalid bulk length`, `expected '$', got 'x'`, `unbalanced
//! quotes in request`, `too big inline request`). One place is stricter than
//! Redis: the two bytes after a bulk string must be `\r\n` (Redis skips them
//! unread), so a client that miscounts is told at once instead of having its
//! next command parsed from the middle of a value.
//!
//! A request named `POST` or `Host:` (any case, inline or array) and an
//! inline HTTP request line (`GET / HTTP/1.1`) are a
//! [`ProtoError::ForeignProtocol`], not a request: it is an HTTP request sent
//! to the port (a browser can be made to send one), whose body would
//! otherwise run as inline commands. redis-server closes the connection on
//! `POST` and `Host:` for the same reason.
//!
//! # Replies
//!
//! Backend replies are RESP2 (`+ - : $ *`, including the null bulk `$-1`,
//! the null array `*-1`, the empty array and nested arrays) or RESP3, from a
//! connection negotiated with `HELLO 3`: null `_`, double `,`, boolean `#`,
//! blob error `!`, verbatim string `=`, big number `(`, map `%`, set `~`,
//! push `>` and attribute `|` (whose pairs and the reply they annotate are
//! one frame). Each line and length is checked as a Redis client would (a
//! `#x`, a `,1.5x`, a blob without its CRLF are a [`ProtoError::Protocol`]
//! saying what was malformed) and the frame is passed through byte for byte.
//! Maps count their keys and values against [`Limits::max_array_len`], as
//! the RESP2 array they replace does. Streamed strings and aggregates
//! (`$?`, `*?`) are refused by name: redis-server 7 never sends them.
//! [`ReplyFrame::is_push`] tells an out-of-band push from a reply.

//! # Limits
//!
//! Every length is checked against [`Limits`] when its header is read, before
//! anything is buffered, and a buffer is only grown (with
//! [`BytesMut::reserve`]) to a size the limits allow. A length over a limit is
//! a [`ProtoError::TooLarge`]. Status, error and integer reply lines are bounded
//! by [`Limits::max_inline_len`] too.
//!
//! # Resuming
//!
//! Both decoders keep their progress between calls: a frame arriving in many
//! small reads is scanned once, not from the start on every read.
//!
//! # Example
//!
//! A tiny server loop over an in-memory pipe:
//!
//! ```
//! use futures::{SinkExt, StreamExt};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio_util::codec::Framed;
//! use twem_proto::resp::{Reply, RequestCodec};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (mut client, server) = tokio::io::duplex(1024);
//! let mut framed = Framed::new(server, RequestCodec::default());
//!
//! // One RESP array request and one inline request, in one write.
//! client.write_all(b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nPING\r\n").await?;
//!
//! let echo = framed.next().await.expect("a request")?;
//! assert_eq!(echo.name(), b"ECHO");
//! assert_eq!(echo.args()[1], "hi");
//! framed.send(&Reply::Bulk(Some(echo.args()[1].clone()))).await?;
//!
//! let ping = framed.next().await.expect("a request")?;
//! assert!(ping.is_inline());
//! // Inline requests are re-encoded as RESP for the backends.
//! assert_eq!(&ping.wire()[..], b"*1\r\n$4\r\nPING\r\n");
//! framed.send(&Reply::Status("PONG".into())).await?;
//!
//! let mut buf = [0u8; 15];
//! client.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"$2\r\nhi\r\n+PONG\r\n");
//! # Ok(())
//! # }
//! ```

mod inline;
#[cfg(test)]
mod prop;
mod reply;
mod request;

pub use reply::{Reply, ReplyCodec, ReplyFrame};
pub use request::{Request, RequestCodec};

use bytes::{BufMut, BytesMut};

use crate::error::ProtoError;
use crate::wire::{len_u64, parse_i64_canonical, put_u64};

/// Bounds a decoder enforces; a peer that announces more gets a
/// [`ProtoError::TooLarge`] before anything is buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string, in bytes (default 512 MiB, Redis's
    /// `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Most elements in one array: the arguments of a request, or one
    /// (possibly nested) array, set or push of a reply (a map or an
    /// attribute counts its keys and values). Default 1 Mi (1 048 576),
    /// Redis 6's multibulk limit: with it a request's argument vector stays
    /// under 32 MiB. Backends answering with bigger arrays or maps (a
    /// `HGETALL` of a hash with more than 512 Ki fields) need a larger value.
    pub max_array_len: usize,
    /// Deepest nesting of aggregates in a reply (default 32); requests are
    /// flat. The reply an attribute annotates counts one level deeper.
    pub max_depth: usize,
    /// Longest inline request line, and longest simple reply line (status,
    /// error, integer, double, big number...), in bytes (default 64 KiB,
    /// Redis's `PROTO_INLINE_MAX_SIZE`).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1 << 20,
            max_depth: 32,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A `*` or `$` header is a sign and at most 19 digits; a longer line without
/// `\r` cannot be valid, so we stop looking (and buffering) there.
const MAX_HEADER: usize = 24;

/// Reads the `*<n>\r\n` or `$<n>\r\n` header whose type byte is at `at`.
/// Returns the number and the offset after the `\r\n`, or `Ok(None)` if the
/// line is not complete; `err` is the Redis wording for a bad number.
#[inline]
fn header(src: &[u8], at: usize, err: &'static str) -> Result<Option<(i64, usize)>, ProtoError> {
    let start = at + 1;
    let end = src.len().min(start + MAX_HEADER);
    let window = src.get(start..end).unwrap_or(&[]);
    // A plain scan: headers are a few bytes, shorter than what memchr's
    // vector setup pays for (it was a tenth of request decoding).
    let Some(i) = window.iter().position(|&b| b == b'\r') else {
        if src.len() >= start + MAX_HEADER {
            return Err(ProtoError::protocol(err));
        }
        return Ok(None);
    };
    let cr = start + i;
    match src.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => {
            let n = window
                .get(..i)
                .and_then(parse_i64_canonical)
                .ok_or_else(|| ProtoError::protocol(err))?;
            Ok(Some((n, cr + 2)))
        }
        Some(_) => Err(ProtoError::protocol(err)),
    }
}

/// Appends `<kind><len>\r\n`, the header of an array or a bulk string.
#[inline]
fn put_header(dst: &mut BytesMut, kind: u8, len: usize) {
    dst.reserve(24);
    dst.put_u8(kind);
    put_u64(dst, len_u64(len));
    dst.extend_from_slice(b"\r\n");
}

/// A byte as it may appear in an error message (which must be UTF-8).
fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        (b as char).to_string()
    } else {
        format!("\\x{b:02x}")
    }
}

/// Helpers shared by the unit tests of the RESP modules.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod testing {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    use super::{ReplyCodec, ReplyFrame, Request, RequestCodec};
    use crate::ProtoError;

    /// Decodes every request in `input` with default limits.
    pub(super) fn requests(input: &[u8]) -> Result<Vec<Request>, ProtoError> {
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(req) = codec.decode(&mut buf)? {
            out.push(req);
        }
        Ok(out)
    }

    /// Decodes the single reply in `input`; fails the test if it is not
    /// exactly one complete reply.
    pub(super) fn reply(input: &[u8]) -> Result<ReplyFrame, ProtoError> {
        let mut codec = ReplyCodec::default();
        let mut buf = BytesMut::from(input);
        let frame = codec.decode(&mut buf)?.expect("a complete reply");
        assert!(buf.is_empty(), "bytes left after the reply: {buf:?}");
        Ok(frame)
    }

    pub(super) fn protocol_msg(err: ProtoError) -> String {
        match err {
            ProtoError::Protocol(m) => m.into_owned(),
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    /// The protocol error message for requests `input`, which must fail.
    pub(super) fn request_err(input: &[u8]) -> String {
        protocol_msg(requests(input).unwrap_err())
    }

    /// The protocol error message for the reply `input`, which must fail.
    pub(super) fn reply_err(input: &[u8]) -> String {
        protocol_msg(reply(input).unwrap_err())
    }

    /// The fields of the [`ProtoError::TooLarge`] that `result` must be.
    pub(super) fn too_large<T: std::fmt::Debug>(
        result: Result<T, ProtoError>,
    ) -> (&'static str, u64, u64) {
        match result {
            Err(ProtoError::TooLarge { what, len, limit }) => (what, len, limit),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    /// Feeds `input` to `codec` in pieces ending at `cuts`, decoding as much
    /// as possible after each piece, and stops at the first error: the items
    /// decoded before it, the error, and the bytes left undecoded.
    pub(super) fn feed<D: Decoder>(
        codec: &mut D,
        input: &[u8],
        cuts: &[usize],
    ) -> (Vec<D::Item>, Option<D::Error>, BytesMut) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let cut = cut.clamp(start, input.len());
            buf.extend_from_slice(&input[start..cut]);
            start = cut;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(item)) => out.push(item),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e), buf),
                }
            }
        }
        (out, None, buf)
    }

    /// `input` decodes to one request, a PING: all before it is skipped.
    pub(super) fn only_ping(input: &[u8]) {
        let reqs = requests(input).unwrap();
        let names: Vec<&[u8]> = reqs.iter().map(Request::name).collect();
        assert_eq!(names, [&b"PING"[..]], "{input:?}");
    }

    /// `codec` waits for more after `first` (nothing decoded); the result
    /// once `more` came too.
    pub(super) fn after_more<D: Decoder>(
        codec: &mut D,
        first: &[u8],
        more: &[u8],
    ) -> Result<Option<D::Item>, D::Error>
    where
        D::Item: std::fmt::Debug,
        D::Error: std::fmt::Debug,
    {
        let mut buf = BytesMut::from(first);
        assert!(codec.decode(&mut buf).unwrap().is_none(), "{first:?}");
        buf.extend_from_slice(more);
        codec.decode(&mut buf)
    }

    pub(super) fn args_of(req: &Request) -> Vec<&[u8]> {
        req.args().iter().map(|a| &a[..]).collect()
    }
}
