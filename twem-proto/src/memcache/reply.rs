//! Backend replies: [`Reply`] (parsed), [`ReplyFrame`] (raw, zero copy),
//! decoding in the context of a request, and [`ClientCodec`].

use std::collections::VecDeque;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{Command, Limits, Request, Tokens};
use crate::encode::Encode;
use crate::wire::{crlf_at, len_u64, parse_u32, parse_u64, put_u64};
use crate::ProtoError;

/// One item of a `get`/`gets` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The key.
    pub key: Bytes,
    /// The client's opaque flags.
    pub flags: u32,
    /// The cas unique (sent for `gets` only).
    pub cas: Option<u64>,
    /// The data, without its `\r\n`.
    pub data: Bytes,
}

/// A memcached reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `VALUE ...` blocks then `END` (no values: all keys missed).
    Values(Vec<Value>),
    /// `STORED`
    Stored,
    /// `NOT_STORED`
    NotStored,
    /// `EXISTS` (cas mismatch)
    Exists,
    /// `NOT_FOUND`
    NotFound,
    /// `DELETED`
    Deleted,
    /// `TOUCHED`
    Touched,
    /// The new value after `incr`/`decr`.
    Number(u64),
    /// `VERSION <version>`
    Version(Bytes),
    /// `ERROR`: unknown command.
    Error,
    /// `CLIENT_ERROR <message>`
    ClientError(Bytes),
    /// `SERVER_ERROR <message>`
    ServerError(Bytes),
    /// `OK` (`flush_all`, `verbosity`).
    Ok,
    /// `STAT <name> <value>` lines then `END` (`stats`), in order.
    Stats(Vec<(Bytes, Bytes)>),
    /// A meta command's reply, whole (`HD ...`, `VA <len> ...` with its
    /// data block, `EN`, `MN`, ...); empty when a quiet request was
    /// answered with nothing.
    Meta(Bytes),
}

impl Reply {
    /// Appends the reply's wire form to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let line: &[u8] = match self {
            Reply::Values(values) => {
                for v in values {
                    dst.reserve(v.key.len() + v.data.len() + 64);
                    dst.put_slice(b"VALUE ");
                    dst.put_slice(&v.key);
                    dst.put_u8(b' ');
                    put_u64(dst, u64::from(v.flags));
                    dst.put_u8(b' ');
                    put_u64(dst, len_u64(v.data.len()));
                    if let Some(cas) = v.cas {
                        dst.put_u8(b' ');
                        put_u64(dst, cas);
                    }
                    dst.put_slice(b"\r\n");
                    dst.put_slice(&v.data);
                    dst.put_slice(b"\r\n");
                }
                b"END\r\n"
            }
            Reply::Stored => b"STORED\r\n",
            Reply::NotStored => b"NOT_STORED\r\n",
            Reply::Exists => b"EXISTS\r\n",
            Reply::NotFound => b"NOT_FOUND\r\n",
            Reply::Deleted => b"DELETED\r\n",
            Reply::Touched => b"TOUCHED\r\n",
            Reply::Error => b"ERROR\r\n",
            Reply::Number(n) => {
                put_u64(dst, *n);
                b"\r\n"
            }
            Reply::Version(v) => return put_line(dst, b"VERSION", v),
            Reply::ClientError(m) => return put_line(dst, b"CLIENT_ERROR", m),
            Reply::ServerError(m) => return put_line(dst, b"SERVER_ERROR", m),
            Reply::Ok => b"OK\r\n",
            Reply::Stats(stats) => {
                for (name, value) in stats {
                    dst.reserve(name.len() + value.len() + 8);
                    dst.put_slice(b"STAT ");
                    dst.put_slice(name);
                    dst.put_u8(b' ');
                    dst.put_slice(value);
                    dst.put_slice(b"\r\n");
                }
                b"END\r\n"
            }
            Reply::Meta(raw) => raw,
        };
        dst.put_slice(line);
    }

    /// The reply's wire form.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    /// `SERVER_ERROR <msg>`, the way a proxy reports a backend failure
    /// (`SERVER_ERROR Connection refused`). Line breaks in `msg` become
    /// blanks so the reply stays one line.
    pub fn server_error(msg: impl AsRef<[u8]>) -> Reply {
        Reply::ServerError(one_line(msg.as_ref()))
    }

    /// `CLIENT_ERROR <msg>`, line breaks in `msg` made blanks.
    pub fn client_error(msg: impl AsRef<[u8]>) -> Reply {
        Reply::ClientError(one_line(msg.as_ref()))
    }

    /// Whether this is `ERROR`, `CLIENT_ERROR` or `SERVER_ERROR`.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Reply::Error | Reply::ClientError(_) | Reply::ServerError(_)
        )
    }
}

/// Replies built by the proxy are encoded; see [`Reply::encode`].
impl Encode for Reply {
    fn encode(&self, dst: &mut BytesMut) {
        Reply::encode(self, dst);
    }
}

fn one_line(msg: &[u8]) -> Bytes {
    msg.iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect::<Vec<u8>>()
        .into()
}

/// `<word>[ <text>]\r\n`: an empty text gets no blank, so the reply decodes
/// back to the same text.
fn put_line(dst: &mut BytesMut, word: &[u8], text: &[u8]) {
    dst.reserve(word.len() + text.len() + 3);
    dst.put_slice(word);
    if !text.is_empty() {
        dst.put_u8(b' ');
        dst.put_slice(text);
    }
    dst.put_slice(b"\r\n");
}

/// What kind of reply a frame holds; the details stay in the raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Values,
    Stored,
    NotStored,
    Exists,
    NotFound,
    Deleted,
    Touched,
    Number(u64),
    Version,
    Error,
    ClientError,
    ServerError,
    Ok,
    Stats,
    Meta,
}

/// One complete backend reply, as received: pass it through with
/// [`ReplyFrame::raw`], or look inside with [`ReplyFrame::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyFrame {
    raw: Bytes,
    kind: Kind,
    /// Where the last line (`END`, or the only line) starts; the `VALUE`
    /// blocks of a get reply are `raw[..last_line]`.
    last_line: usize,
    values: usize,
}

impl ReplyFrame {
    /// The exact bytes received, for zero-copy pass-through.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The bytes received, without a reference-count bump.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Whether the reply is `ERROR`, `CLIENT_ERROR ...` or `SERVER_ERROR ...`.
    pub fn is_error(&self) -> bool {
        matches!(
            self.kind,
            Kind::Error | Kind::ClientError | Kind::ServerError
        )
    }

    /// The `VALUE` blocks of a get reply without the closing `END\r\n`, for
    /// concatenating the parts of a split get: everything before the last
    /// line, so empty for one-line replies (and the values before the error
    /// line of a get that failed midway).
    pub fn values_raw(&self) -> Bytes {
        self.raw.slice(..self.last_line)
    }

    /// How many `VALUE` blocks the reply holds.
    pub fn value_count(&self) -> usize {
        self.values
    }

    /// The reply, parsed; keys, data and messages are slices of
    /// [`ReplyFrame::raw`]. An error line after some values is returned as
    /// the error.
    pub fn parse(&self) -> Reply {
        let last = self
            .raw
            .slice(self.last_line..self.raw.len().saturating_sub(2));
        // "CLIENT_ERROR msg" -> "msg"
        let text = |word: &str| {
            let rest = last.slice(word.len().min(last.len())..);
            if rest.first() == Some(&b' ') {
                rest.slice(1..)
            } else {
                rest
            }
        };
        match self.kind {
            Kind::Values => Reply::Values(
                self.blocks()
                    .map(|b| Value {
                        key: self.raw.slice(b.key),
                        flags: b.flags,
                        cas: b.cas,
                        data: self.raw.slice(b.data),
                    })
                    .collect(),
            ),
            Kind::Stored => Reply::Stored,
            Kind::NotStored => Reply::NotStored,
            Kind::Exists => Reply::Exists,
            Kind::NotFound => Reply::NotFound,
            Kind::Deleted => Reply::Deleted,
            Kind::Touched => Reply::Touched,
            Kind::Number(n) => Reply::Number(n),
            Kind::Version => Reply::Version(text("VERSION")),
            Kind::Error => Reply::Error,
            Kind::ClientError => Reply::ClientError(text("CLIENT_ERROR")),
            Kind::ServerError => Reply::ServerError(text("SERVER_ERROR")),
            Kind::Ok => Reply::Ok,
            Kind::Stats => Reply::Stats(self.stats()),
            Kind::Meta => Reply::Meta(self.raw.clone()),
        }
    }

    /// The `STAT <name> <value>` lines of a `stats` reply, as (name, value)
    /// slices of [`ReplyFrame::raw`]; a value may hold blanks.
    fn stats(&self) -> Vec<(Bytes, Bytes)> {
        let body = self.raw.slice(..self.last_line);
        let mut out = Vec::with_capacity(self.values);
        let mut pos = 0;
        while let Some(nl) = body.get(pos..).and_then(|r| memchr::memchr(b'\n', r)) {
            let line = body.slice(pos..pos + nl.saturating_sub(1));
            pos += nl + 1;
            let Some(rest) = line.strip_prefix(b"STAT ") else {
                continue;
            };
            let at = line.len() - rest.len();
            let blank = memchr::memchr(b' ', rest).unwrap_or(rest.len());
            let name = line.slice(at..at + blank);
            let value = line.slice((at + blank + 1).min(line.len())..);
            out.push((name, value));
        }
        out
    }

    /// The `VALUE` blocks, as ranges of `raw`.
    pub(super) fn blocks(&self) -> ValueBlocks<'_> {
        ValueBlocks {
            buf: self.raw.get(..self.last_line).unwrap_or_default(),
            pos: 0,
        }
    }

    /// The frame's bytes, shared.
    pub(super) fn raw_slice(&self, r: Range<usize>) -> Bytes {
        self.raw.slice(r)
    }
}

/// One `VALUE` block, located in its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) key: Range<usize>,
    pub(super) flags: u32,
    pub(super) cas: Option<u64>,
    pub(super) data: Range<usize>,
    /// Header, data and `\r\n`.
    pub(super) whole: Range<usize>,
}

/// Walks `VALUE` blocks a decoder has already validated.
pub(super) struct ValueBlocks<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Iterator for ValueBlocks<'_> {
    type Item = Block;

    fn next(&mut self) -> Option<Block> {
        let start = self.pos;
        let rest = self.buf.get(start..)?;
        let nl = memchr::memchr(b'\n', rest)?;
        let line = rest.get(..nl.checked_sub(1)?)?;
        let h = parse_value_header(line)?;
        let data = start + nl + 1..start + nl + 1 + h.len;
        let end = data.end + 2;
        if end > self.buf.len() {
            return None;
        }
        self.pos = end;
        Some(Block {
            key: start + h.key.start..start + h.key.end,
            flags: h.flags,
            cas: h.cas,
            data,
            whole: start..end,
        })
    }
}

struct ValueHeader {
    key: Range<usize>,
    flags: u32,
    len: usize,
    cas: Option<u64>,
}

/// `VALUE <key> <flags> <bytes> [<cas unique>]`, `\r\n` excluded.
fn parse_value_header(line: &[u8]) -> Option<ValueHeader> {
    let mut t = Tokens::new(line);
    if line.get(t.next()?)? != b"VALUE" {
        return None;
    }
    let key = t.next()?;
    let flags = parse_u32(line.get(t.next()?)?)?;
    let len = usize::try_from(parse_u64(line.get(t.next()?)?)?).ok()?;
    let cas = match t.next() {
        Some(r) => Some(parse_u64(line.get(r)?)?),
        None => None,
    };
    if t.next().is_some() {
        return None;
    }
    Some(ValueHeader {
        key,
        flags,
        len,
        cas,
    })
}

/// `word` alone or followed by a blank and text.
fn is_word_line(line: &[u8], word: &[u8]) -> bool {
    line.strip_prefix(word)
        .is_some_and(|rest| rest.first().is_none_or(|&b| b == b' '))
}

fn error_kind(line: &[u8]) -> Option<Kind> {
    if is_word_line(line, b"ERROR") {
        Some(Kind::Error)
    } else if is_word_line(line, b"CLIENT_ERROR") {
        Some(Kind::ClientError)
    } else if is_word_line(line, b"SERVER_ERROR") {
        Some(Kind::ServerError)
    } else {
        None
    }
}

/// The one-line replies `command` can get (errors aside).
fn single_line_kind(command: Command, line: &[u8]) -> Option<Kind> {
    let kind = match line {
        b"STORED" => Kind::Stored,
        b"NOT_STORED" => Kind::NotStored,
        b"EXISTS" => Kind::Exists,
        b"NOT_FOUND" => Kind::NotFound,
        b"DELETED" => Kind::Deleted,
        b"TOUCHED" => Kind::Touched,
        b"OK" => Kind::Ok,
        _ if command == Command::Version && is_word_line(line, b"VERSION") => Kind::Version,
        _ => Kind::Number(parse_u64(line)?),
    };
    let fits = match command {
        Command::Set
        | Command::Add
        | Command::Replace
        | Command::Append
        | Command::Prepend
        | Command::Cas => matches!(
            kind,
            Kind::Stored | Kind::NotStored | Kind::Exists | Kind::NotFound
        ),
        Command::Incr | Command::Decr => matches!(kind, Kind::Number(_) | Kind::NotFound),
        Command::Touch => matches!(kind, Kind::Touched | Kind::NotFound),
        Command::Delete => matches!(kind, Kind::Deleted | Kind::NotFound),
        Command::Version => kind == Kind::Version,
        Command::FlushAll | Command::Verbosity => kind == Kind::Ok,
        // Multi-line replies, cut elsewhere.
        Command::Get
        | Command::Gets
        | Command::Gat
        | Command::Gats
        | Command::Stats
        | Command::Quit
        | Command::MetaGet
        | Command::MetaSet
        | Command::MetaDelete
        | Command::MetaArithmetic
        | Command::MetaNoop
        | Command::MetaDebug => false,
    };
    fits.then_some(kind)
}

/// Cuts backend replies in the context of their request, resuming where the
/// last call stopped: `VALUE` headers already checked are not parsed again
/// and data blocks are jumped over, never scanned.
///
/// One decoder follows one reply at a time; use it for the same command
/// until it returns a frame or an error (then it is ready for the next).
#[derive(Debug, Clone, Default)]
pub struct ReplyDecoder {
    /// Start of the next unread line (after complete `VALUE` blocks).
    offset: usize,
    /// End of the data block whose header has been read, if any.
    data_end: Option<usize>,
    values: usize,
}

impl ReplyDecoder {
    /// A decoder at the start of a reply.
    pub fn new() -> Self {
        ReplyDecoder::default()
    }

    /// Forgets any partial progress (after the buffer was replaced).
    pub fn reset(&mut self) {
        *self = ReplyDecoder::default();
    }

    /// Cuts the reply to `command` from the front of `src`: `Ok(None)` if it
    /// has not all arrived. An error means the backend stream is no longer
    /// understood and the connection must be closed.
    pub fn decode(
        &mut self,
        command: Command,
        src: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<ReplyFrame>, ProtoError> {
        let result = if command.is_meta() {
            meta_reply(src, limits, false)
        } else {
            self.step(command, src, limits)
        };
        if !matches!(result, Ok(None)) {
            self.reset();
        }
        result
    }

    /// Cuts the reply to a quiet meta request sent as
    /// [`Request::wire_with_noop`]: the server's reply, if it sent one, then
    /// its `MN`. The frame holds the reply without the `MN` (empty when the
    /// server stayed silent, as quiet mode lets it), which is exactly what
    /// the client would have read from memcached.
    pub fn decode_quiet(
        &mut self,
        src: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<ReplyFrame>, ProtoError> {
        self.reset();
        meta_reply(src, limits, true)
    }

    fn step(
        &mut self,
        command: Command,
        src: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<ReplyFrame>, ProtoError> {
        if command == Command::Quit {
            return if src.is_empty() {
                Ok(None)
            } else {
                Err(ProtoError::protocol("reply to 'quit', which has none"))
            };
        }
        loop {
            if let Some(end) = self.data_end {
                if src.len() < end {
                    src.reserve(end - src.len());
                    return Ok(None);
                }
                if !crlf_at(src, end - 2) {
                    return Err(ProtoError::protocol(
                        "VALUE data block not followed by \\r\\n",
                    ));
                }
                self.offset = end;
                self.data_end = None;
            }
            let Some(rest) = src.get(self.offset..) else {
                return Err(ProtoError::protocol(
                    "reply buffer shrank while a reply was being decoded",
                ));
            };
            let Some((line, nl)) = reply_line(rest, limits)? else {
                return Ok(None);
            };
            let line_start = self.offset;
            let next = self.offset + nl + 1;
            let kind = if let Some(kind) = error_kind(line) {
                kind
            } else if command == Command::Stats {
                if line == b"END" {
                    Kind::Stats
                } else if line.starts_with(b"STAT ") {
                    // Bounded like the values of a get: a server cannot
                    // make the proxy buffer a reply without end.
                    self.values += 1;
                    if self.values > limits.max_keys {
                        return Err(ProtoError::too_large(
                            "lines in a stats reply",
                            self.values,
                            limits.max_keys,
                        ));
                    }
                    self.offset = next;
                    continue;
                } else {
                    return Err(unexpected(command, line));
                }
            } else if command.is_retrieval() {
                if line == b"END" {
                    Kind::Values
                } else if let Some(h) = parse_value_header(line) {
                    if h.len > limits.max_value_len {
                        return Err(ProtoError::too_large(
                            "VALUE length",
                            h.len,
                            limits.max_value_len,
                        ));
                    }
                    self.values += 1;
                    if self.values > limits.max_keys {
                        return Err(ProtoError::too_large(
                            "values in a get reply",
                            self.values,
                            limits.max_keys,
                        ));
                    }
                    self.offset = next;
                    self.data_end = Some(next + h.len + 2);
                    continue;
                } else {
                    return Err(unexpected(command, line));
                }
            } else {
                single_line_kind(command, line).ok_or_else(|| unexpected(command, line))?
            };
            let raw = src.split_to(next).freeze();
            return Ok(Some(ReplyFrame {
                raw,
                kind,
                last_line: line_start,
                values: self.values,
            }));
        }
    }
}

/// The first line of `rest` without its `\r\n`, and where its `\n` is;
/// `None` until the whole line is in. A line longer than
/// `limits.max_line_len` is refused as soon as that many bytes came
/// without a `\n` (never buffered to its end).
#[inline]
fn reply_line<'a>(
    rest: &'a [u8],
    limits: &Limits,
) -> Result<Option<(&'a [u8], usize)>, ProtoError> {
    let Some(nl) = memchr::memchr(b'\n', rest) else {
        // +1 for the '\r' of a line exactly at the limit.
        if rest.len() > limits.max_line_len + 1 {
            return Err(ProtoError::too_large(
                "reply line",
                rest.len(),
                limits.max_line_len,
            ));
        }
        return Ok(None);
    };
    let Some(line) = rest.get(..nl).and_then(|l| l.strip_suffix(b"\r")) else {
        return Err(ProtoError::protocol("reply line not ended by \\r\\n"));
    };
    if line.len() > limits.max_line_len {
        return Err(ProtoError::too_large(
            "reply line",
            line.len(),
            limits.max_line_len,
        ));
    }
    Ok(Some((line, nl)))
}

/// Whether `line` is a meta reply line: a two-letter upper-case code
/// (`HD NS EX NF EN MN ME`), alone or followed by a blank and flags.
fn is_meta_code(line: &[u8]) -> bool {
    matches!(line, [a, b, rest @ ..] if a.is_ascii_uppercase() && b.is_ascii_uppercase()
        && rest.first().is_none_or(|&c| c == b' '))
}

/// Cuts one meta reply from the front of `src`: `VA <len> <flags>*` and
/// its data block (jumped over by length), any other code line, or an
/// error line. With `noop`, the reply (possibly none) must be followed by
/// the `MN` of the `mn` sent after a quiet request, which is consumed and
/// left out of the frame. Stateless: only the first line is searched on
/// each call, never the data.
fn meta_reply(
    src: &mut BytesMut,
    limits: &Limits,
    noop: bool,
) -> Result<Option<ReplyFrame>, ProtoError> {
    let Some((line, nl)) = reply_line(src, limits)? else {
        return Ok(None);
    };
    if noop && line == b"MN" {
        // The server said nothing to the quiet request.
        let _ = src.split_to(nl + 1);
        return Ok(Some(ReplyFrame {
            raw: Bytes::new(),
            kind: Kind::Meta,
            last_line: 0,
            values: 0,
        }));
    }
    let (kind, end) = if let Some(kind) = error_kind(line) {
        (kind, nl + 1)
    } else if let Some(rest) = line.strip_prefix(b"VA ") {
        let len = Tokens::new(rest)
            .next()
            .and_then(|t| rest.get(t))
            .and_then(parse_u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| unexpected(Command::MetaGet, line))?;
        if len > limits.max_value_len {
            return Err(ProtoError::too_large(
                "VA length",
                len,
                limits.max_value_len,
            ));
        }
        let end = nl + 1 + len + 2;
        if src.len() < end {
            src.reserve(end - src.len());
            return Ok(None);
        }
        if !crlf_at(src, end - 2) {
            return Err(ProtoError::protocol("VA data block not followed by \\r\\n"));
        }
        (Kind::Meta, end)
    } else if is_meta_code(line) {
        (Kind::Meta, nl + 1)
    } else {
        return Err(unexpected(Command::MetaGet, line));
    };
    let total = if noop {
        let after = src.get(end..).unwrap_or_default();
        // A server without meta commands (memcached before 1.6) answers
        // both the request and its `mn` with `ERROR`: that is its one
        // reply, not a stream out of step.
        let trailers: &[&[u8]] = if kind == Kind::Error {
            &[b"MN\r\n", b"ERROR\r\n"]
        } else {
            &[b"MN\r\n"]
        };
        if let Some(t) = trailers.iter().find(|t| after.starts_with(t)) {
            end + t.len()
        } else if trailers.iter().any(|t| t.starts_with(after)) {
            src.reserve(trailers.iter().map(|t| t.len()).max().unwrap_or(0));
            return Ok(None);
        } else {
            return Err(ProtoError::protocol(
                "reply to a quiet meta request not followed by the MN of its mn",
            ));
        }
    } else {
        end
    };
    let mut raw = src.split_to(total);
    raw.truncate(end);
    Ok(Some(ReplyFrame {
        raw: raw.freeze(),
        kind,
        last_line: 0,
        values: 0,
    }))
}

fn unexpected(command: Command, line: &[u8]) -> ProtoError {
    let shown = String::from_utf8_lossy(line.get(..64).unwrap_or(line));
    ProtoError::protocol(format!("unexpected reply to '{command}': {shown:?}"))
}

/// Cuts the reply to `command` from the front of `src` (`Ok(None)` if it is
/// incomplete). Stateless: a `get` reply arriving in pieces has its `VALUE`
/// headers parsed again on each call (data blocks are still jumped over);
/// keep a [`ReplyDecoder`] to avoid even that.
pub fn decode_reply(
    command: Command,
    src: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<ReplyFrame>, ProtoError> {
    ReplyDecoder::new().decode(command, src, limits)
}

/// The client-side codec, for `Framed` users talking to a memcached (tools,
/// embedders): encodes [`Request`]s and decodes each reply in the context
/// of the oldest request still waiting for one.
#[derive(Debug, Clone, Default)]
pub struct ClientCodec {
    limits: Limits,
    /// Commands sent whose reply has not been decoded yet (`noreply` and
    /// `quit` expect none and are not queued), and whether each was a quiet
    /// meta request (sent with an `mn` after it).
    in_flight: VecDeque<(Command, bool)>,
    reply: ReplyDecoder,
}

impl ClientCodec {
    /// A codec enforcing `limits` on replies.
    pub fn new(limits: Limits) -> Self {
        ClientCodec {
            limits,
            in_flight: VecDeque::new(),
            reply: ReplyDecoder::new(),
        }
    }

    /// How many requests are waiting for their reply.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

impl Encoder<&Request> for ClientCodec {
    type Error = ProtoError;

    fn encode(&mut self, item: &Request, dst: &mut BytesMut) -> Result<(), ProtoError> {
        // A quiet meta request may get no reply: the `mn` after it makes
        // the server say where its reply (if any) ends.
        if item.quiet() {
            dst.extend_from_slice(&item.wire_with_noop());
        } else {
            dst.extend_from_slice(item.wire());
        }
        if item.expects_reply() {
            self.in_flight.push_back((item.command(), item.quiet()));
        }
        Ok(())
    }
}

impl Encoder<Request> for ClientCodec {
    type Error = ProtoError;

    fn encode(&mut self, item: Request, dst: &mut BytesMut) -> Result<(), ProtoError> {
        self.encode(&item, dst)
    }
}

impl Decoder for ClientCodec {
    type Item = ReplyFrame;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ReplyFrame>, ProtoError> {
        let Some(&(command, quiet)) = self.in_flight.front() else {
            return if src.is_empty() {
                Ok(None)
            } else {
                Err(ProtoError::protocol(
                    "reply received with no request in flight",
                ))
            };
        };
        let frame = if quiet {
            self.reply.decode_quiet(src, &self.limits)?
        } else {
            self.reply.decode(command, src, &self.limits)?
        };
        if frame.is_some() {
            self.in_flight.pop_front();
        }
        Ok(frame)
    }
}

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(command: Command, input: &[u8]) -> Result<Option<ReplyFrame>, ProtoError> {
        let mut buf = BytesMut::from(input);
        let r = decode_reply(command, &mut buf, &Limits::default());
        if let Ok(Some(f)) = &r {
            assert_eq!(&f.raw()[..], &input[..f.raw().len()]);
        }
        r
    }

    fn parse(command: Command, input: &[u8]) -> Reply {
        decode_one(command, input).unwrap().unwrap().parse()
    }

    // Every single-line reply parses to its variant in its command's context.
    #[test]
    fn single_line_replies() {
        let cases: [(Command, &[u8], Reply); 12] = [
            (Command::Set, b"STORED\r\n", Reply::Stored),
            (Command::Add, b"NOT_STORED\r\n", Reply::NotStored),
            (Command::Cas, b"EXISTS\r\n", Reply::Exists),
            (Command::Cas, b"NOT_FOUND\r\n", Reply::NotFound),
            (Command::Delete, b"DELETED\r\n", Reply::Deleted),
            (Command::Delete, b"NOT_FOUND\r\n", Reply::NotFound),
            (Command::Touch, b"TOUCHED\r\n", Reply::Touched),
            (
                Command::Incr,
                b"18446744073709551615\r\n",
                Reply::Number(u64::MAX),
            ),
            (Command::Decr, b"NOT_FOUND\r\n", Reply::NotFound),
            (
                Command::Version,
                b"VERSION 1.6.18\r\n",
                Reply::Version(Bytes::from_static(b"1.6.18")),
            ),
            (
                Command::Set,
                b"SERVER_ERROR out of memory storing object\r\n",
                Reply::ServerError(Bytes::from_static(b"out of memory storing object")),
            ),
            (
                Command::Incr,
                b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
                Reply::ClientError(Bytes::from_static(
                    b"cannot increment or decrement non-numeric value",
                )),
            ),
        ];
        for (command, wire, reply) in cases {
            assert_eq!(parse(command, wire), reply, "{command}");
            // and the parsed reply encodes back to the same bytes
            assert_eq!(&reply.to_bytes()[..], wire);
        }
        assert_eq!(parse(Command::Get, b"ERROR\r\n"), Reply::Error);
    }

    // A reply that is not one the command can get is a framing error.
    #[test]
    fn reply_out_of_context() {
        assert!(decode_one(Command::Delete, b"STORED\r\n").is_err());
        assert!(decode_one(Command::Set, b"12\r\n").is_err());
        assert!(decode_one(Command::Get, b"STORED\r\n").is_err());
        assert!(decode_one(Command::Quit, b"OK\r\n").is_err());
        assert!(decode_one(Command::Quit, b"").unwrap().is_none());
    }

    // Lines must end in \r\n.
    #[test]
    fn reply_needs_crlf() {
        assert!(decode_one(Command::Set, b"STORED\n").is_err());
        assert!(decode_one(Command::Set, b"STORED\r").unwrap().is_none());
    }

    // VALUE without cas (get) and with cas (gets).
    #[test]
    fn value_with_and_without_cas() {
        let v = parse(Command::Get, b"VALUE k 5 3\r\nabc\r\nEND\r\n");
        let want = Value {
            key: Bytes::from_static(b"k"),
            flags: 5,
            cas: None,
            data: Bytes::from_static(b"abc"),
        };
        assert_eq!(v, Reply::Values(vec![want.clone()]));
        let v = parse(Command::Gets, b"VALUE k 5 3 42\r\nabc\r\nEND\r\n");
        assert_eq!(
            v,
            Reply::Values(vec![Value {
                cas: Some(42),
                ..want
            }])
        );
    }

    // Several values, one reply; values_raw is everything but END.
    #[test]
    fn several_values() {
        let wire = b"VALUE a 0 1\r\nx\r\nVALUE b 0 2\r\n\r\n\r\nEND\r\n";
        let f = decode_one(Command::Get, wire).unwrap().unwrap();
        assert_eq!(f.value_count(), 2);
        assert_eq!(&f.values_raw()[..], &wire[..wire.len() - 5]);
        match f.parse() {
            Reply::Values(v) => {
                assert_eq!(&v[1].data[..], b"\r\n", "data may contain CRLF");
                assert_eq!(&v[1].key[..], b"b");
            }
            other => panic!("{other:?}"),
        }
        assert!(!f.is_error());
    }

    // An empty get reply is just END.
    #[test]
    fn all_missed() {
        assert_eq!(parse(Command::Get, b"END\r\n"), Reply::Values(vec![]));
    }

    // A get answered by SERVER_ERROR, alone or after some values.
    #[test]
    fn get_with_server_error() {
        let f = decode_one(Command::Get, b"SERVER_ERROR busy\r\n")
            .unwrap()
            .unwrap();
        assert!(f.is_error());
        assert_eq!(f.parse(), Reply::ServerError(Bytes::from_static(b"busy")));
        let f = decode_one(
            Command::Get,
            b"VALUE a 0 1\r\nx\r\nSERVER_ERROR busy\r\nEND\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(f.is_error());
        assert_eq!(f.raw().len(), 35, "the frame ends at the error line");
        assert_eq!(f.value_count(), 1);
    }

    // A VALUE data block that is not followed by \r\n is a framing error.
    #[test]
    fn value_bad_terminator() {
        assert!(decode_one(Command::Get, b"VALUE a 0 1\r\nxyEND\r\n").is_err());
    }

    // A VALUE over max_value_len is refused from its header.
    #[test]
    fn value_over_limit() {
        let limits = crate::test_limits(|l: &mut Limits| l.max_value_len = 10);
        let mut buf = BytesMut::from(&b"VALUE a 0 11\r\n"[..]);
        let e = decode_reply(Command::Get, &mut buf, &limits).unwrap_err();
        assert!(matches!(
            e,
            ProtoError::TooLarge {
                what: "VALUE length",
                len: 11,
                limit: 10
            }
        ));
    }

    // More values than max_keys cannot be an answer to a valid get.
    #[test]
    fn too_many_values() {
        let limits = crate::test_limits(|l: &mut Limits| l.max_keys = 1);
        let mut buf = BytesMut::from(&b"VALUE a 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n"[..]);
        assert!(decode_reply(Command::Get, &mut buf, &limits).is_err());
    }

    // A long reply line without newline is a framing error.
    #[test]
    fn reply_line_too_long() {
        let limits = crate::test_limits(|l: &mut Limits| l.max_line_len = 8);
        let mut buf = BytesMut::from(&b"SERVER_ERROR abcdef"[..]);
        assert!(decode_reply(Command::Set, &mut buf, &limits).is_err());
    }

    // The resumable decoder skips a value arriving in pieces without
    // rescanning, and only consumes the buffer once the reply is complete.
    #[test]
    fn resumable_get() {
        let mut d = ReplyDecoder::new();
        let limits = Limits::default();
        let mut buf = BytesMut::from(&b"VALUE big 0 100000\r\n"[..]);
        for _ in 0..100 {
            assert!(d.decode(Command::Get, &mut buf, &limits).unwrap().is_none());
            assert_eq!(d.data_end, Some(20 + 100_002), "the header is parsed once");
            buf.extend_from_slice(&[b'\n'; 1000]);
        }
        buf.extend_from_slice(b"\r\nEND\r\nSTORED\r\n");
        let f = d.decode(Command::Get, &mut buf, &limits).unwrap().unwrap();
        assert_eq!(f.value_count(), 1);
        assert_eq!(&buf[..], b"STORED\r\n");
        assert_eq!(
            d.decode(Command::Set, &mut buf, &limits)
                .unwrap()
                .unwrap()
                .parse(),
            Reply::Stored
        );
    }

    // server_error keeps the reply on one line.
    #[test]
    fn server_error_one_line() {
        let r = Reply::server_error("Connection\r\nrefused");
        assert_eq!(&r.to_bytes()[..], b"SERVER_ERROR Connection  refused\r\n");
        assert!(r.is_error());
        assert!(!Reply::Stored.is_error());
    }

    // ClientCodec matches replies to requests and skips noreply ones.
    #[test]
    fn client_codec_tracks_requests() {
        let mut c = ClientCodec::default();
        let mut out = BytesMut::new();
        c.encode(Request::set("k", 0, 0, "v", true).unwrap(), &mut out)
            .unwrap();
        c.encode(Request::get(&["k"]).unwrap(), &mut out).unwrap();
        c.encode(Request::delete("k", false).unwrap(), &mut out)
            .unwrap();
        assert_eq!(c.in_flight(), 2);
        assert!(out.starts_with(b"set k 0 0 1 noreply\r\nv\r\nget k\r\n"));
        let mut buf = BytesMut::from(&b"VALUE k 0 1\r\nv\r\nEND\r\nDELETED\r\n"[..]);
        assert!(
            matches!(c.decode(&mut buf).unwrap().unwrap().parse(), Reply::Values(v) if v.len() == 1)
        );
        assert_eq!(c.decode(&mut buf).unwrap().unwrap().parse(), Reply::Deleted);
        assert_eq!(c.in_flight(), 0);
        buf.extend_from_slice(b"STORED\r\n");
        assert!(c.decode(&mut buf).is_err(), "a reply nobody asked for");
    }

    // Meta replies: code lines and VA blocks, whole, at every split point;
    // a data block holding \r\n is jumped over by its length.
    #[test]
    fn meta_replies() {
        let cases: [&[u8]; 7] = [
            b"HD\r\n",
            b"HD ka O1\r\n",
            b"EN\r\n",
            b"VA 4 f5 t-1\r\na\r\nb\r\n",
            b"NS\r\n",
            b"ME k exp=-1 la=1 cas=5 fetch=no cls=1 size=61\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        ];
        for wire in cases {
            let mut twice = wire.to_vec();
            twice.extend_from_slice(wire);
            for cut in 0..wire.len() {
                let mut buf = BytesMut::from(&twice[..cut]);
                let mut dec = ReplyDecoder::new();
                assert!(dec
                    .decode(Command::MetaGet, &mut buf, &Limits::default())
                    .unwrap()
                    .is_none());
            }
            let mut buf = BytesMut::from(&twice[..]);
            let f = decode_reply(Command::MetaGet, &mut buf, &Limits::default())
                .unwrap()
                .unwrap();
            assert_eq!(&f.raw()[..], wire);
            assert_eq!(&buf[..], wire, "the next reply is left alone");
            assert_eq!(f.is_error(), wire.starts_with(b"CLIENT"));
        }
        assert_eq!(
            parse(Command::MetaNoop, b"MN\r\n"),
            Reply::Meta(Bytes::from_static(b"MN\r\n"))
        );
        assert!(decode_one(Command::MetaGet, b"VALUE a 0 1\r\n1\r\nEND\r\n").is_err());
        assert!(decode_one(Command::MetaGet, b"VA 1\r\nab\r\n").is_err());
        assert!(decode_one(Command::MetaGet, b"hd\r\n").is_err());
    }

    // A quiet request's reply ends at the MN of the mn sent after it: an
    // empty frame when the server was silent, the reply without MN when
    // not; nothing is cut until the MN is there.
    #[test]
    fn quiet_meta_replies() {
        let limits = Limits::default();
        let cases: [(&[u8], &[u8]); 4] = [
            (b"MN\r\n", b""),
            (b"HD\r\nMN\r\n", b"HD\r\n"),
            (b"VA 2 Oab\r\nhi\r\nMN\r\n", b"VA 2 Oab\r\nhi\r\n"),
            (
                b"CLIENT_ERROR invalid flag\r\nMN\r\n",
                b"CLIENT_ERROR invalid flag\r\n",
            ),
        ];
        for (wire, client) in cases {
            for cut in 0..wire.len() {
                let mut buf = BytesMut::from(&wire[..cut]);
                assert!(ReplyDecoder::new()
                    .decode_quiet(&mut buf, &limits)
                    .unwrap()
                    .is_none());
            }
            let mut buf = BytesMut::from(&[wire, b"HD\r\n"].concat()[..]);
            let f = ReplyDecoder::new()
                .decode_quiet(&mut buf, &limits)
                .unwrap()
                .unwrap();
            assert_eq!(&f.raw()[..], client);
            assert_eq!(&buf[..], b"HD\r\n");
        }
        let mut buf = BytesMut::from(&b"HD\r\nHD\r\n"[..]);
        assert!(ReplyDecoder::new().decode_quiet(&mut buf, &limits).is_err());
        // A server without meta commands: ERROR for the request and its mn.
        let wire = b"ERROR\r\nERROR\r\nHD\r\n";
        for cut in 0..14 {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert!(ReplyDecoder::new()
                .decode_quiet(&mut buf, &limits)
                .unwrap()
                .is_none());
        }
        let mut buf = BytesMut::from(&wire[..]);
        let f = ReplyDecoder::new()
            .decode_quiet(&mut buf, &limits)
            .unwrap()
            .unwrap();
        assert_eq!(&f.raw()[..], b"ERROR\r\n");
        assert_eq!(&buf[..], b"HD\r\n");
        let mut buf = BytesMut::from(&b"HD\r\nERROR\r\n"[..]);
        assert!(ReplyDecoder::new().decode_quiet(&mut buf, &limits).is_err());
    }

    // stats: STAT lines until END, values may hold blanks; OK for
    // flush_all and verbosity.
    #[test]
    fn stats_and_ok_replies() {
        let wire = b"STAT pid 12\r\nSTAT libevent 2.1.12-stable x\r\nEND\r\n";
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut dec = ReplyDecoder::new();
            assert!(dec
                .decode(Command::Stats, &mut buf, &Limits::default())
                .unwrap()
                .is_none());
            buf.extend_from_slice(&wire[cut..]);
            let f = dec
                .decode(Command::Stats, &mut buf, &Limits::default())
                .unwrap()
                .unwrap();
            assert_eq!(&f.raw()[..], wire);
        }
        let s = |a: &'static str, b: &'static str| {
            (
                Bytes::from_static(a.as_bytes()),
                Bytes::from_static(b.as_bytes()),
            )
        };
        let parsed = parse(Command::Stats, wire);
        assert_eq!(
            parsed,
            Reply::Stats(vec![s("pid", "12"), s("libevent", "2.1.12-stable x")])
        );
        assert_eq!(&parsed.to_bytes()[..], wire);
        assert_eq!(
            parse(Command::Stats, b"SERVER_ERROR x\r\n"),
            Reply::ServerError(Bytes::from_static(b"x"))
        );
        assert!(decode_one(Command::Stats, b"VALUE a 0 1\r\n").is_err());
        assert_eq!(parse(Command::FlushAll, b"OK\r\n"), Reply::Ok);
        assert!(decode_one(Command::Set, b"OK\r\n").is_err());
        assert!(
            matches!(parse(Command::Gat, b"VALUE a 0 1\r\n1\r\nEND\r\n"), Reply::Values(v) if v.len() == 1)
        );
    }

    // The client codec sends a quiet request with an mn and hands back the
    // reply the server gave (or an empty one), in order.
    #[test]
    fn client_codec_quiet_requests() {
        let mut c = ClientCodec::default();
        let mut out = BytesMut::new();
        let mut dec = super::super::RequestCodec::default();
        let mut reqs = BytesMut::from(&b"mg a v q\r\nmg b v\r\n"[..]);
        while let Some(r) = dec.decode(&mut reqs).unwrap() {
            c.encode(r.unwrap(), &mut out).unwrap();
        }
        assert_eq!(&out[..], b"mg a v q\r\nmn\r\nmg b v\r\n");
        let mut buf = BytesMut::from(&b"MN\r\nEN\r\n"[..]);
        assert_eq!(c.decode(&mut buf).unwrap().unwrap().raw().len(), 0);
        assert_eq!(&c.decode(&mut buf).unwrap().unwrap().raw()[..], b"EN\r\n");
    }
}
