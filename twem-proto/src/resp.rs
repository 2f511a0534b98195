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
//! A request named `POST` or `Host:` (any case, inline or array) and an
//! inline HTTP request line (`GET / HTTP/1.1`) are a
//! [`ProtoError::ForeignProtocol`], not a request: it is an HTTP request sent
//! to the port (a browser can be made to send one), whose body would
//! otherwise run as inline commands. redis-server closes the connection on
//! `POST` and `Host:` for the same reason.
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
//! let mut buf = [0u8; 15];
//! client.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"$2\r\nhi\r\n+PONG\r\n");
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;
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
    /// Inline room for three arguments (`GET k`, `SET k v`): most requests
    /// then allocate nothing but their share of the read buffer.
    args: SmallVec<[Bytes; 3]>,
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
        // Before the quotes are parsed: an HTTP line is closed on even if it
        // would not split (a quote in a URL).
        if let Some(seen) = src.get(..nl).and_then(crate::sniff::http_line) {
            return Err(ProtoError::ForeignProtocol { seen });
        }
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
                    Some(Some(req)) => return foreign_checked(req),
                },
                ReqState::Array {
                    expected,
                    pos,
                    bulk,
                } => {
                    return match self.decode_array(src, expected, pos, bulk)? {
                        Some(req) => foreign_checked(req),
                        None => Ok(None),
                    }
                }
            }
        }
    }
}

/// Refuses a request named `POST` or `Host:`, in either form, as
/// redis-server does: no Redis command has these names, and they are what an
/// HTTP request sent to the port looks like.
fn foreign_checked(req: Request) -> Result<Option<Request>, ProtoError> {
    match crate::sniff::http_command(req.name()) {
        Some(seen) => Err(ProtoError::ForeignProtocol { seen }),
        None => Ok(Some(req)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes every request in `input` with default limits.
    fn requests(input: &[u8]) -> Result<Vec<Request>, ProtoError> {
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
    fn reply(input: &[u8]) -> Result<ReplyFrame, ProtoError> {
        let mut codec = ReplyCodec::default();
        let mut buf = BytesMut::from(input);
        let frame = codec.decode(&mut buf)?.expect("a complete reply");
        assert!(buf.is_empty(), "bytes left after the reply: {buf:?}");
        Ok(frame)
    }

    fn protocol_msg(err: ProtoError) -> String {
        match err {
            ProtoError::Protocol(m) => m.into_owned(),
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    fn args_of(req: &Request) -> Vec<&[u8]> {
        req.args().iter().map(|a| &a[..]).collect()
    }

    // ---- requests ----

    /// Feeds `input` in pieces ending at `cuts`, decoding after each piece,
    /// and stops at the first error: the requests decoded before it (what a
    /// session would have run) and the error.
    fn decode_until_error(input: &[u8], cuts: &[usize]) -> (Vec<Request>, Option<ProtoError>) {
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let cut = cut.clamp(start, input.len());
            buf.extend_from_slice(&input[start..cut]);
            start = cut;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(req)) => out.push(req),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    fn foreign_seen(err: Option<ProtoError>) -> &'static str {
        match err {
            Some(ProtoError::ForeignProtocol { seen }) => seen,
            other => panic!("expected a foreign protocol error, got {other:?}"),
        }
    }

    // The issue's HTTP request: the commands before it run, the POST line
    // stops the stream, the body's SET is never decoded, however the bytes
    // arrive (split at every byte, and one byte at a time).
    #[test]
    fn http_post_stops_before_its_body_in_every_chunking() {
        let input: &[u8] =
            b"PING\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\nSET pwned 1\r\n";
        let mut splits: Vec<Vec<usize>> = (0..=input.len()).map(|c| vec![c]).collect();
        splits.push((1..input.len()).collect());
        for cuts in splits {
            let (reqs, err) = decode_until_error(input, &cuts);
            assert_eq!(reqs.len(), 1, "cuts {cuts:?}");
            assert_eq!(reqs[0].name(), b"PING");
            assert_eq!(
                foreign_seen(err),
                "HTTP 'POST' request line",
                "cuts {cuts:?}"
            );
        }
    }

    // POST and Host: are refused as commands in any case and in both forms,
    // as redis-server does; a quoted name or a line that would not split is
    // no way around it.
    #[test]
    fn post_and_host_in_every_form() {
        let cases: [(&[u8], &str); 7] = [
            (b"*2\r\n$5\r\nHOST:\r\n$1\r\nx\r\n", "HTTP 'Host:' header"),
            (b"*1\r\n$4\r\npost\r\n", "HTTP 'POST' request line"),
            (b"host: example.com\r\n", "HTTP 'Host:' header"),
            (b"Post /x\n", "HTTP 'POST' request line"),
            (b"\"POST\" x\r\n", "HTTP 'POST' request line"),
            (b"POST /?a=\"b HTTP/1.1\r\n", "HTTP 'POST' request line"),
            (b"PUT /k HTTP/1.0\r\n", "HTTP request line"),
        ];
        for (input, want) in cases {
            for cut in 0..=input.len() {
                let (reqs, err) = decode_until_error(input, &[cut]);
                assert!(reqs.is_empty(), "{input:?}");
                assert_eq!(foreign_seen(err), want, "{input:?} cut at {cut}");
            }
        }
    }

    // An inline HTTP GET request line closes (DESIGN: "closes at the first
    // GET / line"); a GET of a key that looks like a path is a command, and
    // so is the same request line sent as a RESP array.
    #[test]
    fn http_get_request_line() {
        let (reqs, err) = decode_until_error(b"GET / HTTP/1.1\r\nSET pwned 1\r\n", &[]);
        assert!(reqs.is_empty());
        assert_eq!(foreign_seen(err), "HTTP request line");
        let reqs = requests(b"GET /index.html\r\nSET / HTTP/1.1\r\n").unwrap();
        assert_eq!(args_of(&reqs[0]), [&b"GET"[..], b"/index.html"]);
        assert_eq!(args_of(&reqs[1]), [&b"SET"[..], b"/", b"HTTP/1.1"]);
        let array = Request::from_args(["GET", "/", "HTTP/1.1"]);
        let reqs = requests(array.wire()).unwrap();
        assert_eq!(reqs, [array]);
    }

    // An array request: args are its bulk strings, wire is the exact input.
    #[test]
    fn array_request_is_cut_whole() {
        let input = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        let reqs = requests(input).unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(args_of(&reqs[0]), [&b"GET"[..], b"key"]);
        assert_eq!(&reqs[0].wire()[..], input);
        assert_eq!(reqs[0].name(), b"GET");
        assert_eq!(reqs[0].len(), 2);
        assert!(!reqs[0].is_inline());
    }

    // Arguments are slices of the wire buffer, not copies.
    #[test]
    fn array_request_args_share_the_wire_buffer() {
        let reqs = requests(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n").unwrap();
        let wire = reqs[0].wire().as_ptr_range();
        for arg in reqs[0].args() {
            assert!(wire.contains(&arg.as_ptr()));
        }
    }

    // An empty bulk string is a valid (empty) argument.
    #[test]
    fn empty_bulk_argument() {
        let reqs = requests(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n").unwrap();
        assert_eq!(args_of(&reqs[0]), [&b"ECHO"[..], b""]);
    }

    // A bulk string may contain CR, LF and NUL bytes.
    #[test]
    fn binary_bulk_argument() {
        let reqs = requests(b"*2\r\n$4\r\nECHO\r\n$4\r\n\r\n\0x\r\n").unwrap();
        assert_eq!(reqs[0].args()[1], &b"\r\n\0x"[..]);
    }

    // Several requests in one buffer come out in order.
    #[test]
    fn pipelined_requests() {
        let reqs =
            requests(b"*1\r\n$4\r\nPING\r\nECHO a\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
        let names: Vec<_> = reqs.iter().map(|r| r.name().to_vec()).collect();
        assert_eq!(names, [b"PING".to_vec(), b"ECHO".to_vec(), b"GET".to_vec()]);
    }

    // An incomplete request is Ok(None) and leaves the bytes in the buffer.
    #[test]
    fn partial_request_waits() {
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nke"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 19);
        buf.extend_from_slice(b"y\r\n");
        let req = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(args_of(&req), [&b"GET"[..], b"key"]);
        assert!(buf.is_empty());
    }

    // Progress is kept: after a partial read the codec resumes at the bulk it
    // was waiting for, with the arguments already found.
    #[test]
    fn partial_request_keeps_progress() {
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$10\r\nabc"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        match codec.state {
            ReqState::Array {
                expected: 2,
                pos: 18,
                bulk: Some(10),
            } => {}
            other => panic!("unexpected state {other:?}"),
        }
        assert_eq!(codec.ranges, [(8, 11)]);
    }

    // Waiting for a big bulk grows the buffer once, to what the header
    // announced, instead of doubling it read after read.
    #[test]
    fn big_bulk_reserves_announced_size() {
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$65536\r\n"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= buf.len() + 65536 + 2);
    }

    // `*0` and `*-1` carry no command and are skipped, as Redis does.
    #[test]
    fn empty_and_null_arrays_are_skipped() {
        let reqs = requests(b"*0\r\n*-1\r\n*-5\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].name(), b"PING");
    }

    // A `$` length over the limit is rejected from the header alone, without
    // growing the buffer.
    #[test]
    fn bulk_over_limit_rejected_from_header() {
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::from(&b"*1\r\n$999999999999\r\n"[..]);
        let cap = buf.capacity();
        match codec.decode(&mut buf) {
            Err(ProtoError::TooLarge {
                what: "bulk length",
                len: 999_999_999_999,
                limit,
            }) => assert_eq!(limit, 512 * 1024 * 1024),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(buf.capacity(), cap);
    }

    // An argument count over the limit is rejected from the header alone.
    #[test]
    fn multibulk_over_limit_rejected() {
        let mut codec = RequestCodec::new(Limits {
            max_array_len: 3,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"*4\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(ProtoError::TooLarge {
                what: "multibulk length",
                len: 4,
                limit: 3
            })
        ));
    }

    // A negative bulk length is invalid in a request.
    #[test]
    fn negative_bulk_length() {
        let err = requests(b"*1\r\n$-2\r\n").unwrap_err();
        assert_eq!(protocol_msg(err), "invalid bulk length");
        let err = requests(b"*1\r\n$-1\r\n").unwrap_err();
        assert_eq!(protocol_msg(err), "invalid bulk length");
    }

    // A length that overflows i64 is invalid, not wrapped.
    #[test]
    fn overflowing_lengths() {
        let err = requests(b"*1\r\n$99999999999999999999999\r\n").unwrap_err();
        assert_eq!(protocol_msg(err), "invalid bulk length");
        let err = requests(b"*99999999999999999999\r\n").unwrap_err();
        assert_eq!(protocol_msg(err), "invalid multibulk length");
    }

    // Numbers are read as Redis's string2ll reads them: no sign, blank or
    // leading zero.
    #[test]
    fn malformed_lengths() {
        for input in [
            &b"*abc\r\n"[..],
            b"*+1\r\n",
            b"* 1\r\n",
            b"*01\r\n",
            b"*\r\n",
            b"*1x\r\n",
        ] {
            let err = requests(input).unwrap_err();
            assert_eq!(protocol_msg(err), "invalid multibulk length", "{input:?}");
        }
        for input in [
            &b"*1\r\n$abc\r\n"[..],
            b"*1\r\n$+4\r\n",
            b"*1\r\n$04\r\n",
            b"*1\r\n$4PING\r\n",
        ] {
            let err = requests(input).unwrap_err();
            assert_eq!(protocol_msg(err), "invalid bulk length", "{input:?}");
        }
    }

    // A header line that does not end within a valid header's length is an
    // error, not a reason to buffer more.
    #[test]
    fn endless_header_rejected() {
        let err = requests(b"*111111111111111111111111111111").unwrap_err();
        assert_eq!(protocol_msg(err), "invalid multibulk length");
    }

    // A header terminated by a bare LF is invalid, as in Redis.
    #[test]
    fn header_needs_crlf() {
        let err = requests(b"*1\n$4\nPING\r\n").unwrap_err();
        assert_eq!(protocol_msg(err), "invalid multibulk length");
    }

    // Something other than `$` where a bulk string should start.
    #[test]
    fn expected_dollar() {
        let err = requests(b"*3\r\n*abc\r\n").unwrap_err();
        assert_eq!(protocol_msg(err), "expected '$', got '*'");
        let err = requests(b"*1\r\n\x01\r\n").unwrap_err();
        assert_eq!(protocol_msg(err), "expected '$', got '\\x01'");
    }

    // Bulk data must be followed by CRLF (stricter than Redis, which skips
    // two bytes unread).
    #[test]
    fn bulk_without_crlf() {
        let err = requests(b"*1\r\n$3\r\nabcXY").unwrap_err();
        assert_eq!(protocol_msg(err), "expected CRLF after bulk data");
    }

    // ---- inline requests ----

    // A telnet-style line is split on blanks and re-encoded as RESP.
    #[test]
    fn inline_request() {
        let reqs = requests(b"set  key\tvalue\r\n").unwrap();
        assert_eq!(args_of(&reqs[0]), [&b"set"[..], b"key", b"value"]);
        assert!(reqs[0].is_inline());
        assert_eq!(
            &reqs[0].wire()[..],
            b"*3\r\n$3\r\nset\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
        );
    }

    // An inline line arriving in pieces is not rescanned from its start.
    #[test]
    fn partial_inline_keeps_progress() {
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::from(&b"ECHO a"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(codec.state, ReqState::Inline { scanned: 6 }));
        buf.extend_from_slice(b"bc\r\n");
        let req = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(args_of(&req), [&b"ECHO"[..], b"abc"]);
    }

    // A bare LF ends an inline line too.
    #[test]
    fn inline_request_lf_only() {
        let reqs = requests(b"PING\n").unwrap();
        assert_eq!(args_of(&reqs[0]), [&b"PING"[..]]);
    }

    // Quotes follow sdssplitargs: escapes in "...", \' in '...'.
    #[test]
    fn inline_quotes() {
        let reqs = requests(b"echo \"a\\x41b\\n\\q\" 'c d' 'it\\'s' \"\"\r\n").unwrap();
        assert_eq!(
            args_of(&reqs[0]),
            [&b"echo"[..], b"aAb\nq", b"c d", b"it's", b""]
        );
    }

    // An unterminated quote is an error.
    #[test]
    fn inline_unbalanced_quotes() {
        for input in [
            &b"\"abc\r\n"[..],
            b"'abc\r\n",
            b"echo \"a\"b\r\n",
            b"echo 'a'b\r\n",
        ] {
            let err = requests(input).unwrap_err();
            assert_eq!(
                protocol_msg(err),
                "unbalanced quotes in request",
                "{input:?}"
            );
        }
    }

    // Empty and blank lines are skipped without a request.
    #[test]
    fn inline_empty_lines_skipped() {
        let reqs = requests(b"\r\n\n  \t \r\nPING\r\n").unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].name(), b"PING");
    }

    // A line longer than the limit without a newline is an error.
    #[test]
    fn inline_too_big() {
        let mut codec = RequestCodec::new(Limits {
            max_inline_len: 8,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"PINGPING"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"P");
        let err = codec.decode(&mut buf).unwrap_err();
        assert_eq!(protocol_msg(err), "too big inline request");
    }

    // A line of exactly the limit is accepted.
    #[test]
    fn inline_at_limit() {
        let mut codec = RequestCodec::new(Limits {
            max_inline_len: 8,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"ECHO abc\n"[..]);
        let req = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(args_of(&req), [&b"ECHO"[..], b"abc"]);
    }

    // from_args builds the same wire the decoder would have received.
    #[test]
    fn request_from_args() {
        let req = Request::from_args(["GET", "key"]);
        assert_eq!(&req.wire()[..], b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
        assert_eq!(args_of(&req), [&b"GET"[..], b"key"]);
        let empty = Request::from_args(Vec::<Bytes>::new());
        assert!(empty.is_empty());
        assert_eq!(empty.name(), b"");
    }

    // ---- replies ----

    // Status, error and integer replies.
    #[test]
    fn simple_replies() {
        assert_eq!(reply(b"+OK\r\n").unwrap().parse(), Reply::ok());
        let err = reply(b"-ERR bad\r\n").unwrap();
        assert!(err.is_error());
        assert_eq!(err.parse(), Reply::error("ERR bad"));
        let int = reply(b":-42\r\n").unwrap();
        assert_eq!(int.kind(), b':');
        assert_eq!(int.integer(), Some(-42));
        assert_eq!(int.parse(), Reply::Integer(-42));
        assert_eq!(reply(b"+OK\r\n").unwrap().integer(), None);
    }

    // Bulk strings, empty and with binary content.
    #[test]
    fn bulk_replies() {
        assert_eq!(
            reply(b"$5\r\nhe\r\no\r\n").unwrap().parse(),
            Reply::Bulk(Some(Bytes::from_static(b"he\r\no")))
        );
        assert_eq!(
            reply(b"$0\r\n\r\n").unwrap().parse(),
            Reply::Bulk(Some(Bytes::new()))
        );
    }

    // The null bulk string.
    #[test]
    fn null_bulk() {
        assert_eq!(reply(b"$-1\r\n").unwrap().parse(), Reply::Bulk(None));
    }

    // The null array and the empty array are different replies.
    #[test]
    fn null_and_empty_array() {
        assert_eq!(reply(b"*-1\r\n").unwrap().parse(), Reply::Array(None));
        assert_eq!(
            reply(b"*0\r\n").unwrap().parse(),
            Reply::Array(Some(vec![]))
        );
    }

    // Nested arrays, with nulls and empty arrays inside, form one frame.
    #[test]
    fn nested_arrays() {
        let input = b"*3\r\n*2\r\n:1\r\n$1\r\na\r\n*0\r\n*2\r\n$-1\r\n*-1\r\n+x\r\n";
        let mut codec = ReplyCodec::default();
        let mut buf = BytesMut::from(&input[..]);
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..], b"+x\r\n");
        assert_eq!(
            frame.parse(),
            Reply::Array(Some(vec![
                Reply::Array(Some(vec![
                    Reply::Integer(1),
                    Reply::Bulk(Some(Bytes::from_static(b"a")))
                ])),
                Reply::Array(Some(vec![])),
                Reply::Array(Some(vec![Reply::Bulk(None), Reply::Array(None)])),
            ]))
        );
    }

    // A frame split anywhere inside a nested array resumes where it stopped.
    #[test]
    fn partial_nested_reply_keeps_progress() {
        let mut codec = ReplyCodec::default();
        let mut buf = BytesMut::from(&b"*2\r\n*2\r\n:1\r\n$5\r\nab"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(codec.stack, [2, 1]);
        assert_eq!(codec.bulk_end, Some(21));
        buf.extend_from_slice(b"cde\r\n:2\r\n");
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.raw().len(), 27);
        assert!(buf.is_empty());
    }

    // Parsed strings are slices of the raw frame.
    #[test]
    fn parsed_reply_shares_raw() {
        let frame = reply(b"*1\r\n$3\r\nabc\r\n").unwrap();
        let Reply::Array(Some(items)) = frame.parse() else {
            panic!("not an array")
        };
        let Reply::Bulk(Some(b)) = &items[0] else {
            panic!("not a bulk")
        };
        assert!(frame.raw().as_ptr_range().contains(&b.as_ptr()));
    }

    // RESP3 types are rejected with a clear message.
    #[test]
    fn resp3_rejected() {
        for t in [b'_', b',', b'#', b'!', b'=', b'(', b'|', b'~', b'>', b'%'] {
            let err = reply(&[t, b'1', b'\r', b'\n']).unwrap_err();
            assert_eq!(
                protocol_msg(err),
                format!("RESP3 reply type '{}' not supported", t as char)
            );
        }
    }

    // A byte that starts no reply type is an error.
    #[test]
    fn garbage_reply_type() {
        let err = reply(b"?x\r\n").unwrap_err();
        assert_eq!(protocol_msg(err), "unexpected reply type byte '?'");
        let err = reply(b"\xff\r\n").unwrap_err();
        assert_eq!(protocol_msg(err), "unexpected reply type byte '\\xff'");
    }

    // Lengths below -1 are invalid in replies.
    #[test]
    fn reply_negative_lengths() {
        assert_eq!(
            protocol_msg(reply(b"$-2\r\n").unwrap_err()),
            "invalid bulk length"
        );
        assert_eq!(
            protocol_msg(reply(b"*-5\r\n").unwrap_err()),
            "invalid multibulk length"
        );
    }

    // An integer reply must hold an integer.
    #[test]
    fn invalid_integer_reply() {
        assert_eq!(
            protocol_msg(reply(b":12a\r\n").unwrap_err()),
            "invalid integer reply"
        );
        assert_eq!(
            protocol_msg(reply(b":99999999999999999999\r\n").unwrap_err()),
            "invalid integer reply"
        );
    }

    // A reply line ended by a bare CR is broken framing.
    #[test]
    fn reply_line_needs_crlf() {
        assert_eq!(
            protocol_msg(reply(b"+OK\rX").unwrap_err()),
            "expected CRLF after reply line"
        );
    }

    // Bulk data in a reply must be followed by CRLF.
    #[test]
    fn reply_bulk_without_crlf() {
        assert_eq!(
            protocol_msg(reply(b"$2\r\nabXY").unwrap_err()),
            "expected CRLF after bulk data"
        );
    }

    // A reply bulk over the limit is rejected from its header, unbuffered.
    #[test]
    fn reply_bulk_over_limit() {
        let mut codec = ReplyCodec::new(Limits {
            max_bulk_len: 10,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"$11\r\n"[..]);
        let cap = buf.capacity();
        assert!(matches!(
            codec.decode(&mut buf),
            Err(ProtoError::TooLarge {
                what: "bulk length",
                len: 11,
                limit: 10
            })
        ));
        assert_eq!(buf.capacity(), cap);
    }

    // A reply array over the limit is rejected from its header.
    #[test]
    fn reply_array_over_limit() {
        let mut codec = ReplyCodec::new(Limits {
            max_array_len: 2,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"*3\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(ProtoError::TooLarge {
                what: "multibulk length",
                ..
            })
        ));
    }

    // Nesting deeper than max_depth is rejected; max_depth itself is fine.
    #[test]
    fn reply_depth_limit() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        let mut ok = BytesMut::from(&b"*1\r\n*1\r\n*1\r\n:1\r\n"[..]);
        assert!(ReplyCodec::new(limits).decode(&mut ok).unwrap().is_some());
        let mut deep = BytesMut::from(&b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"[..]);
        assert!(matches!(
            ReplyCodec::new(limits).decode(&mut deep),
            Err(ProtoError::TooLarge {
                what: "reply nesting depth",
                len: 4,
                limit: 3
            })
        ));
    }

    // A status line longer than max_inline_len is rejected before more of it
    // is buffered.
    #[test]
    fn reply_line_too_long() {
        let mut codec = ReplyCodec::new(Limits {
            max_inline_len: 4,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"+OKOK"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"K");
        assert!(matches!(
            codec.decode(&mut buf),
            Err(ProtoError::TooLarge {
                what: "reply line",
                ..
            })
        ));
    }

    // ---- encoding ----

    // Every reply type encodes as RESP2.
    #[test]
    fn reply_encoding() {
        let r = Reply::Array(Some(vec![
            Reply::ok(),
            Reply::error("ERR x"),
            Reply::Integer(i64::MIN),
            Reply::Bulk(Some(Bytes::from_static(b"v"))),
            Reply::Bulk(None),
            Reply::Array(None),
            Reply::Array(Some(vec![])),
        ]));
        assert_eq!(
            &r.to_bytes()[..],
            b"*7\r\n+OK\r\n-ERR x\r\n:-9223372036854775808\r\n$1\r\nv\r\n$-1\r\n*-1\r\n*0\r\n"
        );
    }

    // Line breaks inside a status or error become spaces, so a message
    // quoting client input cannot inject a reply.
    #[test]
    fn reply_line_breaks_sanitised() {
        assert_eq!(
            &Reply::error("ERR a\r\n+OK").to_bytes()[..],
            b"-ERR a  +OK\r\n"
        );
    }

    // The request codec writes replies and passes frames through verbatim.
    #[test]
    fn request_codec_encoders() {
        let mut codec = RequestCodec::default();
        let mut dst = BytesMut::new();
        codec.encode(&Reply::Integer(3), &mut dst).unwrap();
        let frame = ReplyFrame::from_reply(&Reply::Bulk(None));
        codec.encode(frame, &mut dst).unwrap();
        assert_eq!(&dst[..], b":3\r\n$-1\r\n");
    }

    // The reply codec writes a request's wire form.
    #[test]
    fn reply_codec_encodes_requests() {
        let mut codec = ReplyCodec::default();
        let mut dst = BytesMut::new();
        let req = requests(b"PING\r\n").unwrap().remove(0);
        codec.encode(&req, &mut dst).unwrap();
        assert_eq!(&dst[..], b"*1\r\n$4\r\nPING\r\n");
    }

    // parse_i64 follows string2ll.
    #[test]
    fn integer_parsing() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        assert_eq!(parse_i64(b"-0"), None);
        assert_eq!(parse_i64(b"007"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
    }

    // ---- properties ----

    fn arb_request() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8)
    }

    fn arb_line() -> impl Strategy<Value = Vec<u8>> {
        // Status and error texts cannot hold CR or LF.
        prop::collection::vec(
            any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
            0..20,
        )
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            arb_line().prop_map(|l| Reply::Status(l.into())),
            arb_line().prop_map(|l| Reply::Error(l.into())),
            any::<i64>().prop_map(Reply::Integer),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..40))
                .prop_map(|b| Reply::Bulk(b.map(Bytes::from))),
            Just(Reply::Array(None)),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop::collection::vec(inner, 0..6).prop_map(|v| Reply::Array(Some(v)))
        })
    }

    /// An inline line of plain words, and the arguments it stands for.
    fn arb_inline() -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
        prop::collection::vec("[a-zA-Z0-9:_{}-]{1,12}", 1..6).prop_map(|words| {
            let line = format!("{}\r\n", words.join(" ")).into_bytes();
            (line, words.into_iter().map(String::into_bytes).collect())
        })
    }

    /// Feeds `input` to `codec` in pieces ending at `cuts` (sorted offsets),
    /// decoding as much as possible after each piece.
    fn decode_chunked<D: Decoder>(codec: &mut D, input: &[u8], cuts: &[usize]) -> Vec<D::Item>
    where
        D::Error: std::fmt::Debug,
    {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let cut = cut.clamp(start, input.len());
            buf.extend_from_slice(&input[start..cut]);
            start = cut;
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                out.push(item);
            }
        }
        assert!(buf.is_empty(), "undecoded bytes left: {buf:?}");
        out
    }

    proptest! {
        // Encoding a request and decoding it gives the same arguments and wire.
        #[test]
        fn request_round_trip(args in arb_request()) {
            let built = Request::from_args(args.clone());
            let mut buf = BytesMut::from(&built.wire()[..]);
            let decoded = RequestCodec::default().decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(&decoded, &built);
            prop_assert_eq!(decoded.args().iter().map(|a| a.to_vec()).collect::<Vec<_>>(), args);
            prop_assert!(buf.is_empty());
        }

        // Encoding a reply and decoding it gives the same reply.
        #[test]
        fn reply_round_trip(r in arb_reply()) {
            let bytes = r.to_bytes();
            let mut buf = BytesMut::from(&bytes[..]);
            let frame = ReplyCodec::default().decode(&mut buf).unwrap().unwrap();
            prop_assert!(buf.is_empty());
            prop_assert_eq!(frame.raw(), &bytes);
            prop_assert_eq!(frame.parse(), r);
        }

        // A request split at any byte decodes to the same request.
        #[test]
        fn request_split_anywhere(args in arb_request()) {
            let wire = Request::from_args(args).wire().clone();
            for cut in 0..=wire.len() {
                let got = decode_chunked(&mut RequestCodec::default(), &wire, &[cut]);
                prop_assert_eq!(got.len(), 1);
                prop_assert_eq!(got[0].wire(), &wire);
            }
        }

        // A reply split at any byte decodes to the same frame.
        #[test]
        fn reply_split_anywhere(r in arb_reply()) {
            let bytes = r.to_bytes();
            for cut in 0..=bytes.len() {
                let got = decode_chunked(&mut ReplyCodec::default(), &bytes, &[cut]);
                prop_assert_eq!(got.len(), 1);
                prop_assert_eq!(got[0].raw(), &bytes);
            }
        }

        // A pipeline of array and inline requests (and skipped empty lines)
        // decodes to the same sequence whatever the read sizes.
        #[test]
        fn request_pipeline_any_chunking(
            items in prop::collection::vec(prop_oneof![
                arb_request().prop_map(|a| (Request::from_args(a.clone()).wire().to_vec(), Some(a), false)),
                arb_inline().prop_map(|(l, a)| (l, Some(a), true)),
                Just((b"\r\n".to_vec(), None, true)),
                Just((b"*0\r\n".to_vec(), None, false)),
            ], 1..12),
            mut cuts in prop::collection::vec(0usize..2000, 0..20),
        ) {
            let input: Vec<u8> = items.iter().flat_map(|(w, _, _)| w.clone()).collect();
            cuts.sort_unstable();
            let got = decode_chunked(&mut RequestCodec::default(), &input, &cuts);
            let want: Vec<_> = items.iter().filter_map(|(_, a, inline)| a.clone().map(|a| (a, *inline))).collect();
            prop_assert_eq!(got.len(), want.len());
            for (req, (args, inline)) in got.iter().zip(want) {
                prop_assert_eq!(req.args().iter().map(|a| a.to_vec()).collect::<Vec<_>>(), args.clone());
                prop_assert_eq!(req.is_inline(), inline);
                let built = Request::from_args(args);
                prop_assert_eq!(req.wire(), built.wire());
            }
        }

        // A pipeline of replies decodes to the same frames whatever the read
        // sizes.
        #[test]
        fn reply_pipeline_any_chunking(
            replies in prop::collection::vec(arb_reply(), 1..10),
            mut cuts in prop::collection::vec(0usize..2000, 0..20),
        ) {
            let input: Vec<u8> = replies.iter().flat_map(|r| r.to_bytes().to_vec()).collect();
            cuts.sort_unstable();
            let got = decode_chunked(&mut ReplyCodec::default(), &input, &cuts);
            prop_assert_eq!(got.iter().map(ReplyFrame::parse).collect::<Vec<_>>(), replies);
        }

        // Arbitrary bytes never panic either decoder.
        #[test]
        fn garbage_never_panics(input in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = BytesMut::from(&input[..]);
            let mut codec = RequestCodec::default();
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            let mut buf = BytesMut::from(&input[..]);
            let mut codec = ReplyCodec::default();
            while let Ok(Some(f)) = codec.decode(&mut buf) {
                let _ = f.parse();
            }
        }
    }
}
