//! RESP2, the Redis protocol: client requests in, backend replies out.
//!
//! Two codecs, one per side of the proxy:
//!
//! - [`RequestCodec`] (server side, facing clients) decodes [`Request`]s and
//!   encodes [`Reply`]s or pass-through [`ReplyFrame`]s.
//! - [`ReplyCodec`] (client side, facing backends, also for Rust tools)
//!   decodes [`ReplyFrame`]s and encodes [`Request`]s.
//!
//! Both are zero copy: a decoded item holds [`Bytes`] slices of the read
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
//! # Replies
//!
//! Backend replies are RESP2: `+ - : $ *`, including the null bulk `$-1`, the
//! null array `*-1`, the empty array and nested arrays. RESP3 types
//! (`_ , # ! = ( | ~ > %`) are rejected with `RESP3 reply type 'x' not
//! supported`: nutcracker speaks RESP2 and twem never sends `HELLO 3`, so such
//! a byte means the stream is not what we think it is.
//!
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
//! let mut buf = [0u8; 13];
//! client.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"$2\r\nhi\r\n+PONG\r\n");
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtoError;

/// Bounds a decoder enforces; a peer that announces more gets a
/// [`ProtoError::TooLarge`] before anything is buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string, in bytes (default 512 MiB, Redis's
    /// `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Most elements in one array: the arguments of a request, or one
    /// (possibly nested) array of a reply. Default 1 Mi (1 048 576), Redis 6's
    /// multibulk limit: with it a request's argument vector stays under
    /// 32 MiB. Backends answering with bigger arrays (a `HGETALL` of a hash
    /// with more than 512 Ki fields) need a larger value.
    pub max_array_len: usize,
    /// Deepest nesting of arrays in a reply (default 32); requests are flat.
    pub max_depth: usize,
    /// Longest inline request line, and longest status, error or integer
    /// reply line, in bytes (default 64 KiB, Redis's `PROTO_INLINE_MAX_SIZE`).
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

/// One client command, as Redis sees it: the command name and its arguments.
///
/// The arguments are slices of [`Request::wire`], which is the request as it
/// travels to a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    args: Vec<Bytes>,
    wire: Bytes,
    inline: bool,
}

impl Request {
    /// Builds a request from its arguments (the command name first) and encodes
    /// its RESP form once.
    pub fn from_args<I, B>(args: I) -> Request
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let owned: Vec<Bytes> = args.into_iter().map(Into::into).collect();
        Self::encoded(&owned, false)
    }

    /// Encodes `owned` as a RESP array and slices the arguments out of it, so
    /// a request always holds one buffer.
    fn encoded<T: AsRef<[u8]>>(owned: &[T], inline: bool) -> Request {
        let size: usize = owned.iter().map(|a| a.as_ref().len() + 16).sum::<usize>() + 16;
        let mut buf = BytesMut::with_capacity(size);
        put_header(&mut buf, b'*', owned.len() as i64);
        let mut ranges = Vec::with_capacity(owned.len());
        for a in owned {
            let a = a.as_ref();
            put_header(&mut buf, b'$', a.len() as i64);
            let start = buf.len();
            buf.extend_from_slice(a);
            ranges.push((start, buf.len()));
            buf.extend_from_slice(b"\r\n");
        }
        let wire = buf.freeze();
        let args = ranges.iter().map(|&(s, e)| wire.slice(s..e)).collect();
        Request { args, wire, inline }
    }

    /// The arguments, the command name at index 0.
    pub fn args(&self) -> &[Bytes] {
        &self.args
    }

    /// The command name as the client sent it (any case); empty for an empty
    /// request.
    pub fn name(&self) -> &[u8] {
        self.args.first().map(|b| &b[..]).unwrap_or(&[])
    }

    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// True if the request has no arguments at all (only built by
    /// [`Request::from_args`]; the decoder skips empty requests).
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// The request as a RESP array: the exact bytes received for an array
    /// request, the re-encoded form of an inline one.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// True if the client sent the request as an inline line.
    pub fn is_inline(&self) -> bool {
        self.inline
    }
}

/// A RESP2 reply, as built by the proxy or parsed from a [`ReplyFrame`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+<text>`: a status line such as `OK` or `PONG`.
    Status(Bytes),
    /// `-<text>`: an error, e.g. `ERR unknown command` (without the `-`).
    Error(Bytes),
    /// `:<n>`.
    Integer(i64),
    /// `$<len>` and the bytes; `None` is the null bulk `$-1`.
    Bulk(Option<Bytes>),
    /// `*<n>` and `n` replies; `None` is the null array `*-1`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// An error reply; `msg` is the text without the leading `-`, e.g.
    /// `"ERR Connection refused"`.
    pub fn error(msg: impl Into<Bytes>) -> Reply {
        Reply::Error(msg.into())
    }

    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Status(Bytes::from_static(b"OK"))
    }

    /// Appends the RESP encoding to `dst`. A `\r` or `\n` inside a status or
    /// error text is written as a space (as Redis does), so a message that
    /// quotes client input cannot break the framing.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Reply::Status(s) => put_line(dst, b'+', s),
            Reply::Error(s) => put_line(dst, b'-', s),
            Reply::Integer(n) => {
                dst.reserve(22);
                dst.put_u8(b':');
                put_int(dst, *n);
                dst.extend_from_slice(b"\r\n");
            }
            Reply::Bulk(None) => dst.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                dst.reserve(b.len() + 24);
                put_header(dst, b'$', b.len() as i64);
                dst.extend_from_slice(b);
                dst.extend_from_slice(b"\r\n");
            }
            Reply::Array(None) => dst.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                put_header(dst, b'*', items.len() as i64);
                for item in items {
                    item.encode(dst);
                }
            }
        }
    }

    /// The RESP encoding as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

/// One complete reply as received from a backend, kept as its exact bytes so
/// it can be passed through to a client without copying or re-encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyFrame {
    raw: Bytes,
}

impl ReplyFrame {
    /// The exact bytes of the reply.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The type byte: `+`, `-`, `:`, `$` or `*`.
    pub fn kind(&self) -> u8 {
        self.raw.first().copied().unwrap_or(0)
    }

    /// True for an error reply (`-...`).
    pub fn is_error(&self) -> bool {
        self.kind() == b'-'
    }

    /// The value of an integer reply (`:<n>`), `None` for any other type.
    pub fn integer(&self) -> Option<i64> {
        if self.kind() != b':' {
            return None;
        }
        let end = memchr::memchr(b'\r', &self.raw)?;
        parse_i64(self.raw.get(1..end)?)
    }

    /// The reply as a tree; strings are slices of [`ReplyFrame::raw`].
    ///
    /// Cannot fail: the frame was validated by [`ReplyCodec`] or built by
    /// [`ReplyFrame::from_reply`]. Should that promise ever be broken, the
    /// result is an error reply saying so rather than a panic.
    pub fn parse(&self) -> Reply {
        let mut pos = 0;
        parse_reply(&self.raw, &mut pos)
            .unwrap_or_else(|| Reply::error("ERR twem: malformed reply frame"))
    }

    /// The frame of a reply built in memory.
    pub fn from_reply(reply: &Reply) -> ReplyFrame {
        ReplyFrame {
            raw: reply.to_bytes(),
        }
    }
}

impl From<&Reply> for ReplyFrame {
    fn from(reply: &Reply) -> Self {
        ReplyFrame::from_reply(reply)
    }
}

/// Parses the reply starting at `*pos` in an already validated frame.
fn parse_reply(raw: &Bytes, pos: &mut usize) -> Option<Reply> {
    let kind = *raw.get(*pos)?;
    let line_start = *pos + 1;
    let cr = line_start + memchr::memchr(b'\r', raw.get(line_start..)?)?;
    let line = raw.get(line_start..cr)?;
    *pos = cr + 2;
    Some(match kind {
        b'+' => Reply::Status(raw.slice(line_start..cr)),
        b'-' => Reply::Error(raw.slice(line_start..cr)),
        b':' => Reply::Integer(parse_i64(line)?),
        b'$' => {
            let n = parse_i64(line)?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let start = *pos;
                let end = start.checked_add(usize::try_from(n).ok()?)?;
                raw.get(start..end.checked_add(2)?)?;
                *pos = end + 2;
                Reply::Bulk(Some(raw.slice(start..end)))
            }
        }
        b'*' => {
            let n = parse_i64(line)?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let n = usize::try_from(n).ok()?;
                // Each element takes at least 3 bytes, which bounds the
                // allocation by the frame's size whatever the header says.
                let mut items = Vec::with_capacity(n.min(raw.len() / 3));
                for _ in 0..n {
                    items.push(parse_reply(raw, pos)?);
                }
                Reply::Array(Some(items))
            }
        }
        _ => return None,
    })
}

/// Where [`RequestCodec`] is within the request at the front of the buffer.
#[derive(Clone, Copy, Debug)]
enum ReqState {
    /// Nothing of the next request is parsed yet.
    Start,
    /// An inline line; `scanned` bytes hold no `\n`.
    Inline { scanned: usize },
    /// An array of `expected` bulk strings; everything before `pos` is parsed
    /// and the parsed arguments are in `RequestCodec::ranges`. `bulk` is the
    /// length of the bulk string whose header ends at `pos`, if any.
    Array {
        expected: usize,
        pos: usize,
        bulk: Option<usize>,
    },
}

/// Decodes client requests and encodes replies: the codec of a client
/// connection.
#[derive(Debug)]
pub struct RequestCodec {
    limits: Limits,
    state: ReqState,
    /// Argument positions within the request being parsed; kept between
    /// requests so its allocation is reused.
    ranges: Vec<(usize, usize)>,
}

impl RequestCodec {
    /// A codec enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestCodec {
            limits,
            state: ReqState::Start,
            ranges: Vec::new(),
        }
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Parses an inline line; `Ok(None)` when the line is not complete.
    fn decode_inline(
        &mut self,
        src: &mut BytesMut,
        scanned: usize,
    ) -> Result<Option<Option<Request>>, ProtoError> {
        let max = self.limits.max_inline_len;
        // Look at one byte past the limit: a line of exactly `max` bytes plus
        // its `\n` is still allowed.
        let window = src.get(scanned..src.len().min(max.saturating_add(1)));
        let Some(nl) = window.and_then(|w| memchr::memchr(b'\n', w)) else {
            if src.len() > max {
                return Err(ProtoError::protocol("too big inline request"));
            }
            self.state = ReqState::Inline { scanned: src.len() };
            return Ok(None);
        };
        let nl = scanned + nl;
        let line = src.split_to(nl + 1);
        self.state = ReqState::Start;
        let mut line = line.get(..nl).unwrap_or(&[]);
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let args =
            split_args(line).ok_or_else(|| ProtoError::protocol("unbalanced quotes in request"))?;
        if args.is_empty() {
            // Redis ignores empty lines: no command, no reply.
            return Ok(Some(None));
        }
        if args.len() > self.limits.max_array_len {
            return Err(too_large(
                "multibulk length",
                args.len(),
                self.limits.max_array_len,
            ));
        }
        Ok(Some(Some(Request::encoded(&args, true))))
    }

    /// Parses (the rest of) an array request; `Ok(None)` when it is not
    /// complete.
    fn decode_array(
        &mut self,
        src: &mut BytesMut,
        expected: usize,
        mut pos: usize,
        mut bulk: Option<usize>,
    ) -> Result<Option<Request>, ProtoError> {
        loop {
            if let Some(len) = bulk {
                let end = pos.checked_add(len).and_then(|e| e.checked_add(2));
                let Some(end) = end else {
                    return Err(too_large("bulk length", len, self.limits.max_bulk_len));
                };
                if src.len() < end {
                    // `len` was checked against the limit, so this reserve is
                    // bounded; it saves regrowing the buffer for big values.
                    src.reserve(end - src.len());
                    self.state = ReqState::Array {
                        expected,
                        pos,
                        bulk,
                    };
                    return Ok(None);
                }
                if src.get(end - 2..end) != Some(b"\r\n") {
                    return Err(ProtoError::protocol("expected CRLF after bulk data"));
                }
                self.ranges.push((pos, end - 2));
                pos = end;
                bulk = None;
                if self.ranges.len() >= expected {
                    let frame = src.split_to(pos).freeze();
                    let args = self
                        .ranges
                        .drain(..)
                        .map(|(s, e)| frame.slice(s..e))
                        .collect();
                    self.state = ReqState::Start;
                    return Ok(Some(Request {
                        args,
                        wire: frame,
                        inline: false,
                    }));
                }
            }
            let Some(&b) = src.get(pos) else {
                self.state = ReqState::Array {
                    expected,
                    pos,
                    bulk,
                };
                return Ok(None);
            };
            if b != b'$' {
                return Err(ProtoError::Protocol(Cow::Owned(format!(
                    "expected '$', got '{}'",
                    show_byte(b)
                ))));
            }
            let Some((n, next)) = header(src, pos, "invalid bulk length")? else {
                self.state = ReqState::Array {
                    expected,
                    pos,
                    bulk,
                };
                return Ok(None);
            };
            let len =
                usize::try_from(n).map_err(|_| ProtoError::protocol("invalid bulk length"))?;
            if len > self.limits.max_bulk_len {
                return Err(too_large("bulk length", len, self.limits.max_bulk_len));
            }
            bulk = Some(len);
            pos = next;
        }
    }
}

impl Default for RequestCodec {
    fn default() -> Self {
        RequestCodec::new(Limits::default())
    }
}

impl Decoder for RequestCodec {
    type Item = Request;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, ProtoError> {
        loop {
            match self.state {
                ReqState::Start => {
                    let Some(&first) = src.first() else {
                        return Ok(None);
                    };
                    if first != b'*' {
                        self.state = ReqState::Inline { scanned: 0 };
                        continue;
                    }
                    let Some((n, next)) = header(src, 0, "invalid multibulk length")? else {
                        return Ok(None);
                    };
                    if n <= 0 {
                        // `*0` and `*-1` carry no command; Redis skips them.
                        let _ = src.split_to(next);
                        continue;
                    }
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    if n > self.limits.max_array_len {
                        return Err(too_large("multibulk length", n, self.limits.max_array_len));
                    }
                    self.ranges.clear();
                    // Each argument takes at least 6 bytes on the wire; don't
                    // let a header alone size the vector.
                    self.ranges.reserve(n.min(1024));
                    self.state = ReqState::Array {
                        expected: n,
                        pos: next,
                        bulk: None,
                    };
                }
                ReqState::Inline { scanned } => match self.decode_inline(src, scanned)? {
                    None => return Ok(None),
                    Some(None) => continue,
                    Some(Some(req)) => return Ok(Some(req)),
                },
                ReqState::Array {
                    expected,
                    pos,
                    bulk,
                } => return self.decode_array(src, expected, pos, bulk),
            }
        }
    }
}

impl Encoder<&Reply> for RequestCodec {
    type Error = ProtoError;

    fn encode(&mut self, item: &Reply, dst: &mut BytesMut) -> Result<(), ProtoError> {
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<Reply> for RequestCodec {
    type Error = ProtoError;

    fn encode(&mut self, item: Reply, dst: &mut BytesMut) -> Result<(), ProtoError> {
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<ReplyFrame> for RequestCodec {
    type Error = ProtoError;

    fn encode(&mut self, item: ReplyFrame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        dst.extend_from_slice(&item.raw);
        Ok(())
    }
}

impl Encoder<&ReplyFrame> for RequestCodec {
    type Error = ProtoError;

    fn encode(&mut self, item: &ReplyFrame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        dst.extend_from_slice(&item.raw);
        Ok(())
    }
}

/// Decodes backend replies and encodes requests: the codec of a backend
/// connection.
#[derive(Debug)]
pub struct ReplyCodec {
    limits: Limits,
    /// Everything before `pos` belongs to the reply being decoded and is
    /// validated.
    pos: usize,
    /// Elements still missing in each open array, outermost first.
    stack: Vec<usize>,
    /// Set while waiting for a bulk string's data: the offset of its `\r\n`.
    bulk_end: Option<usize>,
    /// How far a status/error/integer line starting at `pos` has been searched
    /// for its `\r`.
    scanned: usize,
}

impl ReplyCodec {
    /// A codec enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ReplyCodec {
            limits,
            pos: 0,
            stack: Vec::new(),
            bulk_end: None,
            scanned: 0,
        }
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts one finished element; true when that completes the reply.
    fn element_done(&mut self) -> bool {
        while let Some(top) = self.stack.last_mut() {
            *top -= 1;
            if *top > 0 {
                return false;
            }
            // This array is complete, which finishes one element of its parent.
            self.stack.pop();
        }
        true
    }

    /// Cuts the finished reply off the buffer and resets for the next one.
    fn cut(&mut self, src: &mut BytesMut) -> ReplyFrame {
        let raw = src.split_to(self.pos).freeze();
        self.pos = 0;
        self.scanned = 0;
        self.bulk_end = None;
        self.stack.clear();
        ReplyFrame { raw }
    }

    /// Finds the `\r\n` ending the simple line at `self.pos`; `Ok(None)` when
    /// it has not arrived yet.
    fn simple_line(&mut self, src: &BytesMut) -> Result<Option<usize>, ProtoError> {
        let start = self.pos + 1;
        let max = self.limits.max_inline_len;
        let from = self.scanned.max(start);
        let limit_end = start.saturating_add(max).saturating_add(1);
        let window = src.get(from..src.len().min(limit_end)).unwrap_or(&[]);
        match memchr::memchr(b'\r', window) {
            Some(i) => {
                let cr = from + i;
                match src.get(cr + 1) {
                    None => {
                        self.scanned = cr;
                        Ok(None)
                    }
                    Some(b'\n') => Ok(Some(cr)),
                    Some(_) => Err(ProtoError::protocol("expected CRLF after reply line")),
                }
            }
            None if src.len() >= limit_end => Err(too_large("reply line", src.len() - start, max)),
            None => {
                self.scanned = src.len();
                Ok(None)
            }
        }
    }
}

impl Default for ReplyCodec {
    fn default() -> Self {
        ReplyCodec::new(Limits::default())
    }
}

impl Decoder for ReplyCodec {
    type Item = ReplyFrame;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ReplyFrame>, ProtoError> {
        loop {
            if let Some(end) = self.bulk_end {
                let need = end + 2;
                if src.len() < need {
                    src.reserve(need - src.len());
                    return Ok(None);
                }
                if src.get(end..need) != Some(b"\r\n") {
                    return Err(ProtoError::protocol("expected CRLF after bulk data"));
                }
                self.pos = need;
                self.bulk_end = None;
                if self.element_done() {
                    return Ok(Some(self.cut(src)));
                }
                continue;
            }
            let Some(&kind) = src.get(self.pos) else {
                return Ok(None);
            };
            match kind {
                b'+' | b'-' | b':' => {
                    let Some(cr) = self.simple_line(src)? else {
                        return Ok(None);
                    };
                    if kind == b':' && src.get(self.pos + 1..cr).and_then(parse_i64).is_none() {
                        return Err(ProtoError::protocol("invalid integer reply"));
                    }
                    self.pos = cr + 2;
                    self.scanned = 0;
                }
                b'$' => {
                    let Some((n, next)) = header(src, self.pos, "invalid bulk length")? else {
                        return Ok(None);
                    };
                    if n >= 0 {
                        let len = usize::try_from(n).unwrap_or(usize::MAX);
                        if len > self.limits.max_bulk_len {
                            return Err(too_large("bulk length", len, self.limits.max_bulk_len));
                        }
                        self.pos = next;
                        self.bulk_end = Some(next.checked_add(len).ok_or_else(|| {
                            too_large("bulk length", len, self.limits.max_bulk_len)
                        })?);
                        continue;
                    }
                    if n != -1 {
                        return Err(ProtoError::protocol("invalid bulk length"));
                    }
                    self.pos = next;
                }
                b'*' => {
                    let Some((n, next)) = header(src, self.pos, "invalid multibulk length")? else {
                        return Ok(None);
                    };
                    if n < -1 {
                        return Err(ProtoError::protocol("invalid multibulk length"));
                    }
                    self.pos = next;
                    if n > 0 {
                        let n = usize::try_from(n).unwrap_or(usize::MAX);
                        if n > self.limits.max_array_len {
                            return Err(too_large(
                                "multibulk length",
                                n,
                                self.limits.max_array_len,
                            ));
                        }
                        if self.stack.len() >= self.limits.max_depth {
                            return Err(too_large(
                                "reply nesting depth",
                                self.stack.len() + 1,
                                self.limits.max_depth,
                            ));
                        }
                        self.stack.push(n);
                        continue;
                    }
                }
                b'_' | b',' | b'#' | b'!' | b'=' | b'(' | b'|' | b'~' | b'>' | b'%' => {
                    return Err(ProtoError::Protocol(Cow::Owned(format!(
                        "RESP3 reply type '{}' not supported",
                        kind as char
                    ))));
                }
                other => {
                    return Err(ProtoError::Protocol(Cow::Owned(format!(
                        "unexpected reply type byte '{}'",
                        show_byte(other)
                    ))));
                }
            }
            // A simple line, a null bulk, a null or empty array: one element.
            if self.element_done() {
                return Ok(Some(self.cut(src)));
            }
        }
    }
}

impl Encoder<&Request> for ReplyCodec {
    type Error = ProtoError;

    fn encode(&mut self, item: &Request, dst: &mut BytesMut) -> Result<(), ProtoError> {
        dst.extend_from_slice(&item.wire);
        Ok(())
    }
}

impl Encoder<Request> for ReplyCodec {
    type Error = ProtoError;

    fn encode(&mut self, item: Request, dst: &mut BytesMut) -> Result<(), ProtoError> {
        dst.extend_from_slice(&item.wire);
        Ok(())
    }
}

fn too_large(what: &'static str, len: usize, limit: usize) -> ProtoError {
    ProtoError::TooLarge {
        what,
        len: len as u64,
        limit: limit as u64,
    }
}

/// Reads the `*<n>\r\n` or `$<n>\r\n` header whose type byte is at `at`.
/// Returns the number and the offset after the `\r\n`, or `Ok(None)` if the
/// line is not complete; `err` is the Redis wording for a bad number.
fn header(src: &[u8], at: usize, err: &'static str) -> Result<Option<(i64, usize)>, ProtoError> {
    let start = at + 1;
    let end = src.len().min(start + MAX_HEADER);
    let window = src.get(start..end).unwrap_or(&[]);
    let Some(i) = memchr::memchr(b'\r', window) else {
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
                .and_then(parse_i64)
                .ok_or_else(|| ProtoError::protocol(err))?;
            Ok(Some((n, cr + 2)))
        }
        Some(_) => Err(ProtoError::protocol(err)),
    }
}

/// Parses a decimal integer the way Redis's `string2ll` does: an optional
/// `-`, no `+`, no blanks, no leading zeros, no overflow.
fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, s),
    };
    let (&first, _) = digits.split_first()?;
    if first == b'0' {
        return (digits.len() == 1 && !neg).then_some(0);
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        // i64::MIN's magnitude is one more than i64::MAX.
        (v <= i64::MAX as u64 + 1).then(|| 0i64.wrapping_sub_unsigned(v))
    } else {
        i64::try_from(v).ok()
    }
}

/// Appends the decimal form of `n`.
fn put_int(dst: &mut BytesMut, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        dst.put_u8(b'-');
    }
    dst.extend_from_slice(&buf[i..]);
}

/// Appends `<kind><n>\r\n`.
fn put_header(dst: &mut BytesMut, kind: u8, n: i64) {
    dst.reserve(24);
    dst.put_u8(kind);
    put_int(dst, n);
    dst.extend_from_slice(b"\r\n");
}

/// Appends `<kind><text>\r\n`, with any `\r`/`\n` of `text` as a space.
fn put_line(dst: &mut BytesMut, kind: u8, text: &[u8]) {
    dst.reserve(text.len() + 3);
    dst.put_u8(kind);
    if memchr::memchr2(b'\r', b'\n', text).is_some() {
        dst.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        dst.extend_from_slice(text);
    }
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

/// Splits an inline line as Redis's `sdssplitargs` does; `None` for unbalanced
/// quotes (including a closing quote not followed by a blank).
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // sdssplitargs works on a C string: a NUL ends the line.
    let line = match memchr::memchr(0, line) {
        Some(nul) => line.get(..nul).unwrap_or(&[]),
        None => line,
    };
    let is_space = |b: u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while line.get(p).is_some_and(|&b| is_space(b)) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            let c = line.get(p).copied();
            let next = line.get(p + 1).copied();
            if in_dq {
                match (c, next) {
                    (None, _) => return None,
                    (Some(b'\\'), Some(b'x'))
                        if line.get(p + 2).and_then(|&h| hex(h)).is_some()
                            && line.get(p + 3).and_then(|&h| hex(h)).is_some() =>
                    {
                        let hi = line.get(p + 2).and_then(|&h| hex(h)).unwrap_or(0);
                        let lo = line.get(p + 3).and_then(|&h| hex(h)).unwrap_or(0);
                        cur.push(hi * 16 + lo);
                        p += 3;
                    }
                    (Some(b'\\'), Some(e)) => {
                        cur.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        p += 1;
                    }
                    (Some(b'"'), n) => {
                        // The closing quote must end the argument.
                        if n.is_some_and(|b| !is_space(b)) {
                            return None;
                        }
                        p += 1;
                        break;
                    }
                    (Some(b), _) => cur.push(b),
                }
            } else if in_sq {
                match (c, next) {
                    (None, _) => return None,
                    (Some(b'\\'), Some(b'\'')) => {
                        cur.push(b'\'');
                        p += 1;
                    }
                    (Some(b'\''), n) => {
                        if n.is_some_and(|b| !is_space(b)) {
                            return None;
                        }
                        p += 1;
                        break;
                    }
                    (Some(b), _) => cur.push(b),
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(b) => cur.push(b),
                }
            }
            p += 1;
        }
        args.push(cur);
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
