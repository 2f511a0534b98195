//! The reply side: [`Reply`] built in memory, [`ReplyFrame`] as received
//! from a backend, and [`ReplyCodec`], which cuts frames from a backend
//! connection and encodes requests to it.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::{header, put_header, show_byte, Limits, Request};
use crate::encode::{encoders, Encode};
use crate::error::ProtoError;
use crate::wire::{crlf_at, parse_i64_canonical, put_i64};

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
                put_i64(dst, *n);
                dst.extend_from_slice(b"\r\n");
            }
            Reply::Bulk(None) => dst.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                dst.reserve(b.len() + 24);
                put_header(dst, b'$', b.len());
                dst.extend_from_slice(b);
                dst.extend_from_slice(b"\r\n");
            }
            Reply::Array(None) => dst.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                put_header(dst, b'*', items.len());
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

    /// The bytes received, without a reference-count bump.
    pub fn into_raw(self) -> Bytes {
        self.raw
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
        parse_i64_canonical(self.raw.get(1..end)?)
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
        b':' => Reply::Integer(parse_i64_canonical(line)?),
        b'$' => {
            let n = parse_i64_canonical(line)?;
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
            let n = parse_i64_canonical(line)?;
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
            None if src.len() >= limit_end => {
                Err(ProtoError::too_large("reply line", src.len() - start, max))
            }
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
                if !crlf_at(src, end) {
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
                    if kind == b':'
                        && src
                            .get(self.pos + 1..cr)
                            .and_then(parse_i64_canonical)
                            .is_none()
                    {
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
                            return Err(ProtoError::too_large(
                                "bulk length",
                                len,
                                self.limits.max_bulk_len,
                            ));
                        }
                        self.pos = next;
                        self.bulk_end = Some(next.checked_add(len).ok_or_else(|| {
                            ProtoError::too_large("bulk length", len, self.limits.max_bulk_len)
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
                            return Err(ProtoError::too_large(
                                "multibulk length",
                                n,
                                self.limits.max_array_len,
                            ));
                        }
                        if self.stack.len() >= self.limits.max_depth {
                            return Err(ProtoError::too_large(
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

/// Replies built by the proxy are encoded; see [`Reply::encode`].
impl Encode for Reply {
    fn encode(&self, dst: &mut BytesMut) {
        Reply::encode(self, dst);
    }
}

/// A frame is passed through as received, byte for byte.
impl Encode for ReplyFrame {
    fn encode(&self, dst: &mut BytesMut) {
        dst.extend_from_slice(&self.raw);
    }
}

encoders!(ReplyCodec: Request);

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use tokio_util::codec::Encoder;

    use super::super::testing::{reply, reply_err, requests, too_large};
    use super::*;

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
            assert_eq!(
                reply_err(&[t, b'1', b'\r', b'\n']),
                format!("RESP3 reply type '{}' not supported", t as char)
            );
        }
    }

    // A byte that starts no reply type is an error.
    #[test]
    fn garbage_reply_type() {
        assert_eq!(reply_err(b"?x\r\n"), "unexpected reply type byte '?'");
        assert_eq!(reply_err(b"\xff\r\n"), "unexpected reply type byte '\\xff'");
    }

    // Lengths below -1 are invalid in replies.
    #[test]
    fn reply_negative_lengths() {
        assert_eq!(reply_err(b"$-2\r\n"), "invalid bulk length");
        assert_eq!(reply_err(b"*-5\r\n"), "invalid multibulk length");
    }

    // An integer reply must hold an integer.
    #[test]
    fn invalid_integer_reply() {
        assert_eq!(reply_err(b":12a\r\n"), "invalid integer reply");
        assert_eq!(
            reply_err(b":99999999999999999999\r\n"),
            "invalid integer reply"
        );
    }

    // A reply line ended by a bare CR is broken framing.
    #[test]
    fn reply_line_needs_crlf() {
        assert_eq!(reply_err(b"+OK\rX"), "expected CRLF after reply line");
    }

    // Bulk data in a reply must be followed by CRLF.
    #[test]
    fn reply_bulk_without_crlf() {
        assert_eq!(reply_err(b"$2\r\nabXY"), "expected CRLF after bulk data");
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
        let got = too_large(codec.decode(&mut buf));
        assert_eq!(got, ("bulk length", 11, 10));
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
        let (what, _, _) = too_large(codec.decode(&mut buf));
        assert_eq!(what, "multibulk length");
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
        let got = too_large(ReplyCodec::new(limits).decode(&mut deep));
        assert_eq!(got, ("reply nesting depth", 4, 3));
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
        let (what, _, _) = too_large(codec.decode(&mut buf));
        assert_eq!(what, "reply line");
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
    fn reply_codec_encodes_requests() {
        let mut codec = ReplyCodec::default();
        let mut dst = BytesMut::new();
        let req = requests(b"PING\r\n").unwrap().remove(0);
        codec.encode(&req, &mut dst).unwrap();
        assert_eq!(&dst[..], b"*1\r\n$4\r\nPING\r\n");
    }
}
