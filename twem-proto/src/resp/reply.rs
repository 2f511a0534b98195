//! The reply side: [`Reply`] built in memory, [`ReplyFrame`] as received
//! from a backend, and [`ReplyCodec`], which cuts frames from a backend
//! connection and encodes requests to it.
//!
//! Both RESP2 and RESP3 replies are cut: a backend connection negotiated with
//! `HELLO 3` answers with RESP3 types, which are passed through byte for byte.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::{header, put_header, show_byte, Limits, Request};
use crate::encode::{encoders, Encode};
use crate::error::ProtoError;
use crate::wire::{crlf_at, parse_i64_canonical, put_i64};

/// A RESP2 or RESP3 reply, as built by the proxy or parsed from a
/// [`ReplyFrame`].
///
/// Equality compares [`Reply::Double`] by its bits, so that `Reply` can be
/// `Eq`: a NaN equals itself and `0.0` differs from `-0.0` (which Redis
/// writes differently, `,0` and `,-0`).
#[derive(Clone, Debug)]
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
    /// RESP3 `_`: the one null of RESP3 (a missing key, a missing element).
    Null,
    /// RESP3 `,<double>`; written as redis-server 7.0 writes it (`%.17g`,
    /// `inf`, `-inf`, `nan`).
    Double(f64),
    /// RESP3 `#t` or `#f`.
    Boolean(bool),
    /// RESP3 `!<len>` and the text: an error that may hold any bytes.
    BlobError(Bytes),
    /// RESP3 `=<len>` and `<format>:<text>`, e.g. `txt` for plain text.
    Verbatim {
        /// The three-byte format, `txt` or `mkd`.
        format: [u8; 3],
        /// The text after `<format>:`.
        text: Bytes,
    },
    /// RESP3 `(<digits>`: an integer too large for `i64`, as its decimal
    /// text (an optional `-` and digits).
    BigNumber(Bytes),
    /// RESP3 `%<n>` and `n` key-value pairs, in the order received.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~<n>` and `n` replies.
    Set(Vec<Reply>),
    /// RESP3 `><n>`: an out-of-band push (a pub/sub message, a client
    /// tracking invalidation), not the answer to a request.
    Push(Vec<Reply>),
    /// RESP3 `|<n>`, `n` key-value pairs annotating the reply that follows
    /// them; both are one reply on the wire.
    Attribute {
        /// The key-value pairs of the attribute.
        attributes: Vec<(Reply, Reply)>,
        /// The reply they annotate.
        reply: Box<Reply>,
    },
}

impl PartialEq for Reply {
    fn eq(&self, other: &Reply) -> bool {
        use Reply as R;
        match (self, other) {
            (R::Status(a), R::Status(b))
            | (R::Error(a), R::Error(b))
            | (R::BlobError(a), R::BlobError(b))
            | (R::BigNumber(a), R::BigNumber(b)) => a == b,
            (R::Integer(a), R::Integer(b)) => a == b,
            (R::Bulk(a), R::Bulk(b)) => a == b,
            (R::Array(a), R::Array(b)) => a == b,
            (R::Null, R::Null) => true,
            (R::Double(a), R::Double(b)) => a.to_bits() == b.to_bits(),
            (R::Boolean(a), R::Boolean(b)) => a == b,
            (
                R::Verbatim { format, text },
                R::Verbatim {
                    format: f2,
                    text: t2,
                },
            ) => format == f2 && text == t2,
            (R::Map(a), R::Map(b)) => a == b,
            (R::Set(a), R::Set(b)) | (R::Push(a), R::Push(b)) => a == b,
            (
                R::Attribute { attributes, reply },
                R::Attribute {
                    attributes: a2,
                    reply: r2,
                },
            ) => attributes == a2 && reply == r2,
            _ => false,
        }
    }
}

impl Eq for Reply {}

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

    /// The reply without the attributes that annotate it: for
    /// [`Reply::Attribute`] the annotated reply (past any nested
    /// attributes), otherwise `self`.
    pub fn value(&self) -> &Reply {
        let mut r = self;
        while let Reply::Attribute { reply, .. } = r {
            r = reply;
        }
        r
    }

    /// Appends the RESP encoding to `dst`. A `\r` or `\n` inside a status,
    /// error or big number text is written as a space (as Redis does for
    /// status and error lines), so a message that quotes client input cannot
    /// break the framing. RESP3 types are written in RESP3: the caller only
    /// builds them for a client that asked for RESP3.
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
            Reply::Bulk(Some(b)) => put_blob(dst, b'$', &[], b),
            Reply::Array(None) => dst.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => put_aggregate(dst, b'*', items),
            Reply::Null => dst.extend_from_slice(b"_\r\n"),
            Reply::Double(d) => {
                dst.reserve(32);
                dst.put_u8(b',');
                put_double(dst, *d);
                dst.extend_from_slice(b"\r\n");
            }
            Reply::Boolean(true) => dst.extend_from_slice(b"#t\r\n"),
            Reply::Boolean(false) => dst.extend_from_slice(b"#f\r\n"),
            Reply::BlobError(b) => put_blob(dst, b'!', &[], b),
            Reply::Verbatim { format, text } => {
                let [a, b, c] = *format;
                put_blob(dst, b'=', &[a, b, c, b':'], text);
            }
            Reply::BigNumber(n) => put_line(dst, b'(', n),
            Reply::Map(pairs) => put_pairs(dst, b'%', pairs),
            Reply::Set(items) => put_aggregate(dst, b'~', items),
            Reply::Push(items) => put_aggregate(dst, b'>', items),
            Reply::Attribute { attributes, reply } => {
                put_pairs(dst, b'|', attributes);
                reply.encode(dst);
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

/// Appends `<kind><len>\r\n<prefix><data>\r\n`: a bulk string, a blob error
/// or (with its `fmt:` prefix) a verbatim string.
fn put_blob(dst: &mut BytesMut, kind: u8, prefix: &[u8], data: &[u8]) {
    let len = prefix.len() + data.len();
    dst.reserve(len + 24);
    put_header(dst, kind, len);
    dst.extend_from_slice(prefix);
    dst.extend_from_slice(data);
    dst.extend_from_slice(b"\r\n");
}

/// Appends `<kind><n>\r\n` and the `n` items.
fn put_aggregate(dst: &mut BytesMut, kind: u8, items: &[Reply]) {
    put_header(dst, kind, items.len());
    for item in items {
        item.encode(dst);
    }
}

/// Appends `<kind><n>\r\n` and the `n` key-value pairs (a map or an
/// attribute).
fn put_pairs(dst: &mut BytesMut, kind: u8, pairs: &[(Reply, Reply)]) {
    put_header(dst, kind, pairs.len());
    for (k, v) in pairs {
        k.encode(dst);
        v.encode(dst);
    }
}

/// Appends `d` as redis-server 7.0 writes a double: `inf` and `-inf`
/// spelled out, otherwise C's `%.17g` (17 significant digits, trailing
/// zeros dropped, an exponent of two digits or more past 1e17 or below
/// 1e-4). Clients compare scores as text, so the proxy's own doubles must
/// read exactly as the server's. NaN is `nan` whatever its sign bit: Redis
/// never sends a NaN, and `-nan` is a glibc spelling clients may not read.
fn put_double(dst: &mut BytesMut, d: f64) {
    if d.is_nan() {
        dst.extend_from_slice(b"nan");
    } else if d.is_infinite() {
        dst.extend_from_slice(if d > 0.0 { b"inf" } else { b"-inf" });
    } else {
        dst.extend_from_slice(format_g17(d).as_bytes());
    }
}

/// C's `%.17g` for a finite `d`. Rust's `{:e}` and `{:.N}` round exactly,
/// as glibc does, so the digits are the same.
fn format_g17(d: f64) -> String {
    const PRECISION: i32 = 17;
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // The exponent after rounding to 17 digits decides the style, as C does.
    let sci = format!("{:.16e}", d);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..PRECISION).contains(&exp) {
        let mantissa = strip_fraction_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    } else {
        let decimals = usize::try_from(PRECISION - 1 - exp).unwrap_or(0);
        strip_fraction_zeros(&format!("{d:.decimals$}")).to_string()
    }
}

/// `s` without the trailing zeros of its fraction, and without the `.` if
/// nothing is left after it (`%g` drops both).
fn strip_fraction_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
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
    #[inline]
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The bytes received, without a reference-count bump.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// The first type byte: `+`, `-`, `:`, `$`, `*`, or a RESP3 type
    /// (`_ , # ! = ( % ~ > |`). For an attribute (`|`) the reply it
    /// annotates may be of another type: see [`ReplyFrame::value_kind`].
    #[inline]
    pub fn kind(&self) -> u8 {
        self.raw.first().copied().unwrap_or(0)
    }

    /// The type byte of the reply itself, past any attributes (`|`) that
    /// annotate it; the same as [`ReplyFrame::kind`] for every other frame.
    #[inline]
    pub fn value_kind(&self) -> u8 {
        self.raw
            .get(self.value_start())
            .copied()
            .unwrap_or_default()
    }

    /// Where the reply starts past its attributes. Attributes are rare
    /// (Redis 7 sends them for `DEBUG PROTOCOL attrib` only), so skipping
    /// them by parsing is fine.
    #[inline]
    fn value_start(&self) -> usize {
        if self.kind() != b'|' {
            return 0;
        }
        self.attributes_end()
    }

    /// [`ReplyFrame::value_start`] for a reply with attributes (kept out
    /// of line: the common case is the inlined check above).
    #[inline(never)]
    fn attributes_end(&self) -> usize {
        let mut pos = 0;
        while self.raw.get(pos) == Some(&b'|') {
            if parse_attribute_pairs(&self.raw, &mut pos).is_none() {
                return 0;
            }
        }
        pos
    }

    /// True for an error reply: RESP2's `-...` or RESP3's blob error
    /// `!<len>`, also when annotated by an attribute.
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(self.value_kind(), b'-' | b'!')
    }

    /// True for a RESP3 push (`><n>`): out-of-band data (pub/sub, client
    /// tracking) that answers no request, so a backend connection must not
    /// match it with the request in flight.
    #[inline]
    pub fn is_push(&self) -> bool {
        self.value_kind() == b'>'
    }

    /// The value of an integer reply (`:<n>`, also past attributes), `None`
    /// for any other type.
    pub fn integer(&self) -> Option<i64> {
        let start = self.value_start();
        if self.raw.get(start) != Some(&b':') {
            return None;
        }
        let line = self.raw.get(start + 1..)?;
        let end = memchr::memchr(b'\r', line)?;
        parse_i64_canonical(line.get(..end)?)
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
        b'_' => Reply::Null,
        b',' => Reply::Double(parse_double(line)?),
        b'#' => Reply::Boolean(parse_boolean(line)?),
        b'(' => Reply::BigNumber(raw.slice(line_start..cr)),
        b'$' | b'!' | b'=' => {
            let n = parse_i64_canonical(line)?;
            if n < 0 {
                return (kind == b'$').then_some(Reply::Bulk(None));
            }
            let start = *pos;
            let end = start.checked_add(usize::try_from(n).ok()?)?;
            raw.get(start..end.checked_add(2)?)?;
            *pos = end + 2;
            match kind {
                b'$' => Reply::Bulk(Some(raw.slice(start..end))),
                b'!' => Reply::BlobError(raw.slice(start..end)),
                _ => {
                    let text_start = start.checked_add(4)?;
                    let Some(&[a, b, c, b':']) = raw.get(start..text_start) else {
                        return None;
                    };
                    Reply::Verbatim {
                        format: [a, b, c],
                        text: raw.slice(text_start..end),
                    }
                }
            }
        }
        b'*' | b'~' | b'>' => {
            let n = parse_i64_canonical(line)?;
            if n < 0 {
                return (kind == b'*').then_some(Reply::Array(None));
            }
            let items = parse_items(raw, pos, usize::try_from(n).ok()?)?;
            match kind {
                b'*' => Reply::Array(Some(items)),
                b'~' => Reply::Set(items),
                _ => Reply::Push(items),
            }
        }
        b'%' => Reply::Map(parse_pairs(
            raw,
            pos,
            usize::try_from(parse_i64_canonical(line)?).ok()?,
        )?),
        b'|' => {
            *pos = line_start - 1;
            let attributes = parse_attribute_pairs(raw, pos)?;
            let reply = Box::new(parse_reply(raw, pos)?);
            Reply::Attribute { attributes, reply }
        }
        _ => return None,
    })
}

/// Parses `n` replies from `*pos`.
fn parse_items(raw: &Bytes, pos: &mut usize, n: usize) -> Option<Vec<Reply>> {
    // Each element takes at least 3 bytes, which bounds the allocation by
    // the frame's size whatever the header says.
    let mut items = Vec::with_capacity(n.min(raw.len() / 3));
    for _ in 0..n {
        items.push(parse_reply(raw, pos)?);
    }
    Some(items)
}

/// Parses `n` key-value pairs from `*pos`.
fn parse_pairs(raw: &Bytes, pos: &mut usize, n: usize) -> Option<Vec<(Reply, Reply)>> {
    let mut pairs = Vec::with_capacity(n.min(raw.len() / 6));
    for _ in 0..n {
        let k = parse_reply(raw, pos)?;
        let v = parse_reply(raw, pos)?;
        pairs.push((k, v));
    }
    Some(pairs)
}

/// Parses the `|<n>` header at `*pos` and its pairs, leaving `*pos` at the
/// reply they annotate.
fn parse_attribute_pairs(raw: &Bytes, pos: &mut usize) -> Option<Vec<(Reply, Reply)>> {
    let line_start = pos.checked_add(1)?;
    let cr = line_start + memchr::memchr(b'\r', raw.get(line_start..)?)?;
    let n = usize::try_from(parse_i64_canonical(raw.get(line_start..cr)?)?).ok()?;
    *pos = cr + 2;
    parse_pairs(raw, pos, n)
}

/// The value of a RESP3 double line, as a Redis client reads it: `inf`,
/// `-inf`, `nan` (any case, as hiredis), or a decimal number that `strtod`
/// reads whole. Only the characters of a decimal are allowed, so Rust's
/// `infinity` or `NaN` spellings inside a number do not slip through.
fn parse_double(line: &[u8]) -> Option<f64> {
    let lower = line.to_ascii_lowercase();
    match &lower[..] {
        b"inf" | b"+inf" => return Some(f64::INFINITY),
        b"-inf" => return Some(f64::NEG_INFINITY),
        // One NaN whatever the sign, so that parsing and encoding agree.
        b"nan" | b"-nan" => return Some(f64::NAN),
        _ => {}
    }
    if line.is_empty()
        || !line
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    std::str::from_utf8(line).ok()?.parse().ok()
}

/// `#t` is true and `#f` false; nothing else is a boolean.
fn parse_boolean(line: &[u8]) -> Option<bool> {
    match line {
        b"t" => Some(true),
        b"f" => Some(false),
        _ => None,
    }
}

/// A big number is an optional `-` and at least one digit (hiredis's rule).
fn valid_big_number(line: &[u8]) -> bool {
    let digits = line.strip_prefix(b"-").unwrap_or(line);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// What a malformed simple line of type `kind` is called in errors, and
/// whether `line` is valid for it.
fn check_line(kind: u8, line: &[u8]) -> Result<(), &'static str> {
    let ok = match kind {
        b':' => parse_i64_canonical(line).is_some(),
        b'_' => line.is_empty(),
        b',' => parse_double(line).is_some(),
        b'#' => parse_boolean(line).is_some(),
        b'(' => valid_big_number(line),
        _ => true,
    };
    if ok {
        return Ok(());
    }
    Err(match kind {
        b':' => "invalid integer reply",
        b'_' => "invalid null reply: '_' must be followed by CRLF",
        b',' => "invalid double reply",
        b'#' => "invalid boolean reply: expected 't' or 'f'",
        _ => "invalid big number reply",
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
    /// Elements still missing in each open aggregate, outermost first (a map
    /// counts keys and values; an attribute also counts the reply it
    /// annotates).
    stack: Vec<usize>,
    /// Set while waiting for a blob's data (bulk string, blob error,
    /// verbatim string): the offset of its `\r\n`.
    bulk_end: Option<usize>,
    /// The type byte of that blob, for its checks and error messages.
    bulk_kind: u8,
    /// How far a simple line starting at `pos` has been searched for its
    /// `\r`.
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
            bulk_kind: b'$',
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
            // This aggregate is complete, which finishes one element of its
            // parent.
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

    /// The blob (`$`, `!`, `=`) whose header is at `self.pos`: `Ok(true)`
    /// when its data is now awaited (or it was a null bulk and is done:
    /// `Ok(false)`), `Ok(None)` when the header has not arrived.
    fn blob_header(&mut self, src: &BytesMut, kind: u8) -> Result<Option<bool>, ProtoError> {
        let (err, what) = match kind {
            b'$' => ("invalid bulk length", "bulk length"),
            b'!' => ("invalid blob error length", "blob error length"),
            _ => ("invalid verbatim string length", "verbatim string length"),
        };
        streamed_check(src, self.pos)?;
        let Some((n, next)) = header(src, self.pos, err)? else {
            return Ok(None);
        };
        // Only a bulk string has a null form; a verbatim string holds at
        // least its `fmt:` prefix.
        let min = match kind {
            b'$' => -1,
            b'!' => 0,
            _ => 4,
        };
        if n < min {
            return Err(ProtoError::protocol(err));
        }
        self.pos = next;
        if n < 0 {
            return Ok(Some(false));
        }
        let len = usize::try_from(n).unwrap_or(usize::MAX);
        let max = self.limits.max_bulk_len;
        if len > max {
            return Err(ProtoError::too_large(what, len, max));
        }
        let end = next
            .checked_add(len)
            .ok_or_else(|| ProtoError::too_large(what, len, max))?;
        self.bulk_end = Some(end);
        self.bulk_kind = kind;
        Ok(Some(true))
    }

    /// The aggregate (`*`, `%`, `~`, `>`, `|`) whose header is at
    /// `self.pos`: `Ok(true)` when it is open and awaits its elements,
    /// `Ok(false)` when it is complete (null or empty), `Ok(None)` when the
    /// header has not arrived.
    fn aggregate_header(&mut self, src: &BytesMut, kind: u8) -> Result<Option<bool>, ProtoError> {
        let (err, what) = match kind {
            b'*' => ("invalid multibulk length", "multibulk length"),
            b'%' => ("invalid map length", "map elements"),
            b'~' => ("invalid set length", "set length"),
            b'>' => ("invalid push length", "push length"),
            _ => ("invalid attribute length", "attribute elements"),
        };
        streamed_check(src, self.pos)?;
        let Some((n, next)) = header(src, self.pos, err)? else {
            return Ok(None);
        };
        // Only an array has a null form (`*-1`).
        if n < -1 || (n == -1 && kind != b'*') {
            return Err(ProtoError::protocol(err));
        }
        self.pos = next;
        let n = usize::try_from(n).unwrap_or(0);
        // Maps and attributes count keys and values, so a map is held to
        // the same bound as the RESP2 array it replaces (HGETALL).
        let per = if matches!(kind, b'%' | b'|') { 2 } else { 1 };
        let elements = n.saturating_mul(per);
        if elements > self.limits.max_array_len {
            return Err(ProtoError::too_large(
                what,
                elements,
                self.limits.max_array_len,
            ));
        }
        // The reply an attribute annotates belongs to the same frame.
        let elements = elements + usize::from(kind == b'|');
        if elements == 0 {
            return Ok(Some(false));
        }
        if self.stack.len() >= self.limits.max_depth {
            return Err(ProtoError::too_large(
                "reply nesting depth",
                self.stack.len() + 1,
                self.limits.max_depth,
            ));
        }
        self.stack.push(elements);
        Ok(Some(true))
    }
}

/// RESP3's streamed strings and aggregates (`$?`, `*?`, ...) are refused
/// by name: redis-server 7 never sends them, and a length of `?` would
/// otherwise read as a puzzling "invalid length".
fn streamed_check(src: &[u8], at: usize) -> Result<(), ProtoError> {
    if src.get(at + 1) == Some(&b'?') {
        return Err(ProtoError::protocol(
            "RESP3 streamed strings and aggregates are not supported",
        ));
    }
    Ok(())
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
                    return Err(ProtoError::protocol(match self.bulk_kind {
                        b'!' => "expected CRLF after blob error data",
                        b'=' => "expected CRLF after verbatim string data",
                        _ => "expected CRLF after bulk data",
                    }));
                }
                // `self.pos` is still the start of the data.
                if self.bulk_kind == b'=' && src.get(self.pos + 3) != Some(&b':') {
                    return Err(ProtoError::protocol(
                        "verbatim string without its 'fmt:' prefix",
                    ));
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
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                    let Some(cr) = self.simple_line(src)? else {
                        return Ok(None);
                    };
                    check_line(kind, src.get(self.pos + 1..cr).unwrap_or_default())
                        .map_err(ProtoError::protocol)?;
                    self.pos = cr + 2;
                    self.scanned = 0;
                }
                b'$' | b'!' | b'=' => match self.blob_header(src, kind)? {
                    None => return Ok(None),
                    Some(true) => continue,
                    // A null bulk: one element.
                    Some(false) => {}
                },
                b'*' | b'%' | b'~' | b'>' | b'|' => match self.aggregate_header(src, kind)? {
                    None => return Ok(None),
                    Some(true) => continue,
                    // A null or empty aggregate: one element.
                    Some(false) => {}
                },
                other => {
                    return Err(ProtoError::Protocol(Cow::Owned(format!(
                        "unexpected reply type byte '{}'",
                        show_byte(other)
                    ))));
                }
            }
            // A simple line, a null bulk, a null or empty aggregate: one
            // element.
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

    use super::super::testing::{after_more, feed, reply, reply_err, requests, too_large};
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

    /// Replies captured from redis-server 7.0.15 after `HELLO 3`: the
    /// command, the exact bytes, and the frames they hold (`DEBUG PROTOCOL
    /// push` answers a push and then the reply).
    const REDIS_RESP3: &[(&str, &[u8], usize)] = &[
        (
            "HELLO 3",
            b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:8\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
            1,
        ),
        ("HGETALL h", b"%2\r\n$2\r\nf1\r\n$2\r\nv1\r\n$2\r\nf2\r\n$2\r\nv2\r\n", 1),
        ("ZSCORE z a", b",1.5\r\n", 1),
        ("ZSCORE z b", b",0.10000000000000001\r\n", 1),
        ("ZSCORE z c", b",inf\r\n", 1),
        ("ZINCRBY z -inf d", b",-inf\r\n", 1),
        ("SMEMBERS s", b"~1\r\n$2\r\nm1\r\n", 1),
        ("GET missing", b"_\r\n", 1),
        ("EXISTS k", b":1\r\n", 1),
        ("MGET k missing", b"*2\r\n$1\r\nv\r\n_\r\n", 1),
        (
            "ZRANGE z 0 -1 WITHSCORES",
            b"*4\r\n*2\r\n$1\r\nd\r\n,-inf\r\n*2\r\n$1\r\nb\r\n,0.10000000000000001\r\n*2\r\n$1\r\na\r\n,1.5\r\n*2\r\n$1\r\nc\r\n,inf\r\n",
            1,
        ),
        ("DEBUG PROTOCOL map", b"%3\r\n:0\r\n#f\r\n:1\r\n#t\r\n:2\r\n#f\r\n", 1),
        ("DEBUG PROTOCOL set", b"~3\r\n:0\r\n:1\r\n:2\r\n", 1),
        ("DEBUG PROTOCOL double", b",3.141\r\n", 1),
        (
            "DEBUG PROTOCOL bignum",
            b"(1234567999999999999999999999999999999\r\n",
            1,
        ),
        ("DEBUG PROTOCOL true", b"#t\r\n", 1),
        ("DEBUG PROTOCOL false", b"#f\r\n", 1),
        ("DEBUG PROTOCOL null", b"_\r\n", 1),
        (
            "DEBUG PROTOCOL verbatim",
            b"=29\r\ntxt:This is a verbatim\nstring\r\n",
            1,
        ),
        (
            "DEBUG PROTOCOL attrib",
            b"|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n$39\r\nSome real reply following the attribute\r\n",
            1,
        ),
        (
            "DEBUG PROTOCOL push",
            b">2\r\n$16\r\nserver-cpu-usage\r\n:42\r\n$40\r\nSome real reply following the push reply\r\n",
            2,
        ),
        ("HGETALL missing", b"%0\r\n", 1),
        ("SMEMBERS missing", b"~0\r\n", 1),
        ("ZSCORE z missing", b"_\r\n", 1),
        (
            "CONFIG GET maxmemory",
            b"%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n",
            1,
        ),
        (
            "NOSUCHCMD",
            b"-ERR unknown command 'NOSUCHCMD', with args beginning with: \r\n",
            1,
        ),
        // Pushes: a client tracking invalidation, and pub/sub, whose
        // confirmations are pushes too in RESP3.
        (
            "(invalidation after CLIENT TRACKING on)",
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n",
            1,
        ),
        (
            "SUBSCRIBE ch",
            b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n",
            1,
        ),
        (
            "(message after PUBLISH ch hi)",
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            1,
        ),
    ];

    // Every captured redis-server RESP3 reply is cut the same whole and fed
    // byte by byte, and re-encoding the parsed reply gives the server's
    // exact bytes.
    #[test]
    fn redis_resp3_replies() {
        for &(cmd, bytes, frames) in REDIS_RESP3 {
            let (whole, err, rest) = feed(&mut ReplyCodec::default(), bytes, &[]);
            assert!(err.is_none() && rest.is_empty(), "{cmd}: {err:?}");
            assert_eq!(whole.len(), frames, "{cmd}");
            let cuts: Vec<usize> = (1..bytes.len()).collect();
            let (bytewise, err, rest) = feed(&mut ReplyCodec::default(), bytes, &cuts);
            assert!(err.is_none() && rest.is_empty(), "{cmd}: {err:?}");
            assert_eq!(bytewise, whole, "{cmd}");
            let joined: Vec<u8> = whole.iter().flat_map(|f| f.raw().to_vec()).collect();
            assert_eq!(joined, bytes, "{cmd}");
            for f in &whole {
                assert_eq!(ReplyFrame::from_reply(&f.parse()).raw(), f.raw(), "{cmd}");
                assert_eq!(f.is_error(), cmd == "NOSUCHCMD", "{cmd}");
                assert_eq!(f.is_push(), f.raw()[0] == b'>', "{cmd}");
            }
        }
    }

    // The captured replies parse to the RESP3 types.
    #[test]
    fn redis_resp3_parsed() {
        let parsed = |cmd: &str| {
            let (_, bytes, _) = REDIS_RESP3.iter().find(|v| v.0 == cmd).unwrap();
            let (frames, _, _) = feed(&mut ReplyCodec::default(), bytes, &[]);
            frames.into_iter().map(|f| f.parse()).collect::<Vec<_>>()
        };
        let b = |s: &'static str| Reply::Bulk(Some(Bytes::from_static(s.as_bytes())));
        assert_eq!(
            parsed("HGETALL h"),
            [Reply::Map(vec![(b("f1"), b("v1")), (b("f2"), b("v2"))])]
        );
        assert_eq!(parsed("ZSCORE z a"), [Reply::Double(1.5)]);
        assert_eq!(parsed("ZSCORE z b"), [Reply::Double(0.1)]);
        assert_eq!(parsed("ZSCORE z c"), [Reply::Double(f64::INFINITY)]);
        assert_eq!(
            parsed("ZINCRBY z -inf d"),
            [Reply::Double(f64::NEG_INFINITY)]
        );
        assert_eq!(parsed("SMEMBERS s"), [Reply::Set(vec![b("m1")])]);
        assert_eq!(parsed("GET missing"), [Reply::Null]);
        assert_eq!(
            parsed("MGET k missing"),
            [Reply::Array(Some(vec![b("v"), Reply::Null]))]
        );
        assert_eq!(
            parsed("DEBUG PROTOCOL map"),
            [Reply::Map(vec![
                (Reply::Integer(0), Reply::Boolean(false)),
                (Reply::Integer(1), Reply::Boolean(true)),
                (Reply::Integer(2), Reply::Boolean(false)),
            ])]
        );
        assert_eq!(
            parsed("DEBUG PROTOCOL bignum"),
            [Reply::BigNumber(Bytes::from_static(
                b"1234567999999999999999999999999999999"
            ))]
        );
        assert_eq!(
            parsed("DEBUG PROTOCOL verbatim"),
            [Reply::Verbatim {
                format: *b"txt",
                text: Bytes::from_static(b"This is a verbatim\nstring"),
            }]
        );
        assert_eq!(
            parsed("DEBUG PROTOCOL attrib"),
            [Reply::Attribute {
                attributes: vec![(
                    b("key-popularity"),
                    Reply::Array(Some(vec![b("key:123"), Reply::Integer(90)]))
                )],
                reply: Box::new(b("Some real reply following the attribute")),
            }]
        );
        assert_eq!(
            parsed("DEBUG PROTOCOL push"),
            [
                Reply::Push(vec![b("server-cpu-usage"), Reply::Integer(42)]),
                b("Some real reply following the push reply"),
            ]
        );
    }

    // A push is told from a reply; an attribute's frame answers for the
    // reply it annotates.
    #[test]
    fn push_and_attribute_frames() {
        let (_, bytes, _) = REDIS_RESP3
            .iter()
            .find(|v| v.0 == "DEBUG PROTOCOL push")
            .unwrap();
        let (frames, _, _) = feed(&mut ReplyCodec::default(), bytes, &[]);
        assert!(frames[0].is_push());
        assert!(!frames[1].is_push());
        let attr = reply(b"|1\r\n+k\r\n+v\r\n:7\r\n").unwrap();
        assert_eq!(attr.kind(), b'|');
        assert_eq!(attr.value_kind(), b':');
        assert_eq!(attr.integer(), Some(7));
        assert_eq!(attr.parse().value(), &Reply::Integer(7));
        let attr_err = reply(b"|0\r\n|1\r\n_\r\n_\r\n-ERR x\r\n").unwrap();
        assert!(attr_err.is_error());
        assert!(reply(b"|1\r\n+k\r\n+v\r\n>1\r\n+m\r\n").unwrap().is_push());
        assert!(!reply(b"*1\r\n>1\r\n+m\r\n").unwrap().is_push());
    }

    // A blob error is an error; its text may hold any bytes.
    #[test]
    fn blob_error() {
        let f = reply(b"!22\r\nSYNTAX invalid\r\nsyntax\r\n").unwrap();
        assert!(f.is_error());
        assert_eq!(
            f.parse(),
            Reply::BlobError(Bytes::from_static(b"SYNTAX invalid\r\nsyntax"))
        );
    }

    // The merge code reads arrays of RESP3 elements, and integers.
    #[test]
    fn array_of_resp3_elements() {
        let f = reply(b"*4\r\n_\r\n%1\r\n+a\r\n,1.5\r\n,nan\r\n#t\r\n").unwrap();
        let Reply::Array(Some(items)) = f.parse() else {
            panic!("not an array")
        };
        assert_eq!(
            items,
            [
                Reply::Null,
                Reply::Map(vec![(
                    Reply::Status(Bytes::from_static(b"a")),
                    Reply::Double(1.5)
                )]),
                Reply::Double(f64::NAN),
                Reply::Boolean(true),
            ]
        );
        assert_eq!(f.integer(), None);
        assert!(!f.is_error() && !f.is_push());
    }

    // Doubles as a Redis client reads them.
    #[test]
    fn double_forms() {
        for (line, want) in [
            (&b",1e3\r\n"[..], 1000.0),
            (b",-0\r\n", -0.0),
            (b",INF\r\n", f64::INFINITY),
            (b",-nan\r\n", f64::NAN),
            (b",.5\r\n", 0.5),
        ] {
            assert_eq!(reply(line).unwrap().parse(), Reply::Double(want));
        }
    }

    // Malformed RESP3 replies say what was malformed.
    #[test]
    fn resp3_malformed() {
        for (input, msg) in [
            (&b"#x\r\n"[..], "invalid boolean reply: expected 't' or 'f'"),
            (b"#tt\r\n", "invalid boolean reply: expected 't' or 'f'"),
            (
                b"_x\r\n",
                "invalid null reply: '_' must be followed by CRLF",
            ),
            (b",abc\r\n", "invalid double reply"),
            (b",1.5x\r\n", "invalid double reply"),
            (b",\r\n", "invalid double reply"),
            (b",infinity\r\n", "invalid double reply"),
            (b"(12a\r\n", "invalid big number reply"),
            (b"(\r\n", "invalid big number reply"),
            (b"%x\r\n", "invalid map length"),
            (b"%-1\r\n", "invalid map length"),
            (b"~-1\r\n", "invalid set length"),
            (b">1x\r\n", "invalid push length"),
            (b"|-1\r\n", "invalid attribute length"),
            (b"!-1\r\n", "invalid blob error length"),
            (b"!ab\r\n", "invalid blob error length"),
            (b"=3\r\nabc\r\n", "invalid verbatim string length"),
            (b"!3\r\nabcXY", "expected CRLF after blob error data"),
            (b"=5\r\ntxt:aXY", "expected CRLF after verbatim string data"),
            (
                b"=5\r\ntxt-a\r\n",
                "verbatim string without its 'fmt:' prefix",
            ),
            (
                b"$?\r\n;4\r\nabcd\r\n;0\r\n",
                "RESP3 streamed strings and aggregates are not supported",
            ),
            (
                b"*?\r\n:1\r\n.\r\n",
                "RESP3 streamed strings and aggregates are not supported",
            ),
            (
                b"%1\r\n+k\r\n#?\r\n",
                "invalid boolean reply: expected 't' or 'f'",
            ),
        ] {
            assert_eq!(
                reply_err(input),
                msg,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    // RESP3 aggregates are held to the array limits; a map counts its keys
    // and values, and an attribute nests the reply it annotates.
    #[test]
    fn resp3_limits() {
        let limits = Limits {
            max_array_len: 4,
            max_depth: 2,
            max_bulk_len: 3,
            ..Limits::default()
        };
        let decode = |input: &[u8]| ReplyCodec::new(limits).decode(&mut BytesMut::from(input));
        assert!(decode(b"%2\r\n_\r\n_\r\n_\r\n_\r\n").unwrap().is_some());
        assert_eq!(too_large(decode(b"%3\r\n")), ("map elements", 6, 4));
        assert_eq!(too_large(decode(b"~5\r\n")), ("set length", 5, 4));
        assert_eq!(too_large(decode(b">5\r\n")), ("push length", 5, 4));
        assert_eq!(too_large(decode(b"|3\r\n")), ("attribute elements", 6, 4));
        assert_eq!(too_large(decode(b"!4\r\n")), ("blob error length", 4, 3));
        assert_eq!(
            too_large(decode(b"=4\r\n")),
            ("verbatim string length", 4, 3)
        );
        assert!(decode(b"%1\r\n~1\r\n:1\r\n_\r\n").unwrap().is_some());
        assert_eq!(
            too_large(decode(b"%1\r\n~1\r\n>1\r\n")),
            ("reply nesting depth", 3, 2)
        );
        assert_eq!(
            too_large(decode(b"*1\r\n|1\r\n+k\r\n+v\r\n~1\r\n")),
            ("reply nesting depth", 3, 2)
        );
    }

    // Empty aggregates are one element; an empty attribute still takes the
    // reply it annotates.
    #[test]
    fn resp3_empty_aggregates() {
        let input = b"*4\r\n%0\r\n~0\r\n>0\r\n|0\r\n_\r\n+next\r\n";
        let mut buf = BytesMut::from(&input[..]);
        let f = ReplyCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..], b"+next\r\n");
        assert_eq!(
            f.parse(),
            Reply::Array(Some(vec![
                Reply::Map(vec![]),
                Reply::Set(vec![]),
                Reply::Push(vec![]),
                Reply::Attribute {
                    attributes: vec![],
                    reply: Box::new(Reply::Null)
                },
            ]))
        );
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
        let mut codec = ReplyCodec::new(crate::test_limits(|l: &mut Limits| l.max_bulk_len = 10));
        let mut buf = BytesMut::from(&b"$11\r\n"[..]);
        let cap = buf.capacity();
        let got = too_large(codec.decode(&mut buf));
        assert_eq!(got, ("bulk length", 11, 10));
        assert_eq!(buf.capacity(), cap);
    }

    // A reply array over the limit is rejected from its header.
    #[test]
    fn reply_array_over_limit() {
        let mut codec = ReplyCodec::new(crate::test_limits(|l: &mut Limits| l.max_array_len = 2));
        let mut buf = BytesMut::from(&b"*3\r\n"[..]);
        let (what, _, _) = too_large(codec.decode(&mut buf));
        assert_eq!(what, "multibulk length");
    }

    // Nesting deeper than max_depth is rejected; max_depth itself is fine.
    #[test]
    fn reply_depth_limit() {
        let limits = crate::test_limits(|l: &mut Limits| l.max_depth = 3);
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
        let mut codec = ReplyCodec::new(crate::test_limits(|l: &mut Limits| l.max_inline_len = 4));
        let (what, _, _) = too_large(after_more(&mut codec, b"+OKOK", b"K"));
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

    // RESP3 replies encode as redis-server 7.0 writes them.
    // 3.141 is what `DEBUG PROTOCOL double` sends, not an approximate PI.
    #[allow(clippy::approx_constant)]
    #[test]
    fn resp3_encoding() {
        let b = |s: &'static str| Reply::Bulk(Some(Bytes::from_static(s.as_bytes())));
        let cases: Vec<(Reply, &[u8])> = vec![
            (Reply::Null, b"_\r\n"),
            (Reply::Boolean(true), b"#t\r\n"),
            (Reply::Boolean(false), b"#f\r\n"),
            (Reply::Double(1.5), b",1.5\r\n"),
            (Reply::Double(3.141), b",3.141\r\n"),
            (Reply::Double(0.1), b",0.10000000000000001\r\n"),
            (Reply::Double(2.0), b",2\r\n"),
            (Reply::Double(1e20), b",1e+20\r\n"),
            (Reply::Double(1e-5), b",1.0000000000000001e-05\r\n"),
            (Reply::Double(1e-4), b",0.0001\r\n"),
            (
                Reply::Double(123456789012345678.0),
                b",1.2345678901234568e+17\r\n",
            ),
            (Reply::Double(1e16), b",10000000000000000\r\n"),
            (Reply::Double(-2.5e-300), b",-2.5e-300\r\n"),
            (Reply::Double(0.0), b",0\r\n"),
            (Reply::Double(-0.0), b",-0\r\n"),
            (Reply::Double(f64::INFINITY), b",inf\r\n"),
            (Reply::Double(f64::NEG_INFINITY), b",-inf\r\n"),
            (Reply::Double(-f64::NAN), b",nan\r\n"),
            (
                Reply::BigNumber(Bytes::from_static(b"1234567999999999999999999999999999999")),
                b"(1234567999999999999999999999999999999\r\n",
            ),
            (
                Reply::Verbatim {
                    format: *b"txt",
                    text: Bytes::from_static(b"This is a verbatim\nstring"),
                },
                b"=29\r\ntxt:This is a verbatim\nstring\r\n",
            ),
            (
                Reply::BlobError(Bytes::from_static(b"ERR x\r\ny")),
                b"!8\r\nERR x\r\ny\r\n",
            ),
            (
                Reply::Map(vec![(b("f1"), b("v1")), (b("f2"), b("v2"))]),
                b"%2\r\n$2\r\nf1\r\n$2\r\nv1\r\n$2\r\nf2\r\n$2\r\nv2\r\n",
            ),
            (Reply::Set(vec![b("m1")]), b"~1\r\n$2\r\nm1\r\n"),
            (
                Reply::Push(vec![b("server-cpu-usage"), Reply::Integer(42)]),
                b">2\r\n$16\r\nserver-cpu-usage\r\n:42\r\n",
            ),
            (
                Reply::Attribute {
                    attributes: vec![(b("k"), Reply::Integer(1))],
                    reply: Box::new(Reply::Null),
                },
                b"|1\r\n$1\r\nk\r\n:1\r\n_\r\n",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(&r.to_bytes()[..], want, "{r:?}");
        }
    }

    // Doubles compare by their bits, so Reply stays Eq.
    #[test]
    fn double_equality_by_bits() {
        assert_eq!(Reply::Double(f64::NAN), Reply::Double(f64::NAN));
        assert_ne!(Reply::Double(0.0), Reply::Double(-0.0));
        assert_ne!(Reply::Double(1.0), Reply::Integer(1));
        assert_ne!(Reply::Null, Reply::Bulk(None));
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
