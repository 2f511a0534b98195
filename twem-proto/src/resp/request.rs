//! The request codec: client requests in, replies and passed-through reply
//! frames out. Array requests are parsed here; inline lines in
//! [`super::inline`].

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use tokio_util::codec::Decoder;

use super::{header, put_header, show_byte, Limits, Reply, ReplyFrame};
use crate::encode::{encoders, Encode};
use crate::error::ProtoError;
use crate::wire::crlf_at;

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
    pub(super) fn encoded<T: AsRef<[u8]>>(owned: &[T], inline: bool) -> Request {
        let size: usize = owned.iter().map(|a| a.as_ref().len() + 16).sum::<usize>() + 16;
        let mut buf = BytesMut::with_capacity(size);
        put_header(&mut buf, b'*', owned.len());
        let mut ranges = Vec::with_capacity(owned.len());
        for a in owned {
            let a = a.as_ref();
            put_header(&mut buf, b'$', a.len());
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

/// Where [`RequestCodec`] is within the request at the front of the buffer.
#[derive(Clone, Copy, Debug)]
pub(super) enum ReqState {
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
    pub(super) limits: Limits,
    pub(super) state: ReqState,
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
                    return Err(ProtoError::too_large(
                        "bulk length",
                        len,
                        self.limits.max_bulk_len,
                    ));
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
                if !crlf_at(src, end - 2) {
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
                return Err(ProtoError::too_large(
                    "bulk length",
                    len,
                    self.limits.max_bulk_len,
                ));
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
                        return Err(ProtoError::too_large(
                            "multibulk length",
                            n,
                            self.limits.max_array_len,
                        ));
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

/// A request is sent to a backend as its wire form, byte for byte.
impl Encode for Request {
    fn encode(&self, dst: &mut BytesMut) {
        dst.extend_from_slice(&self.wire);
    }
}

encoders!(RequestCodec: Reply, ReplyFrame);

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use tokio_util::codec::Encoder;

    use super::super::testing::{args_of, feed, only_ping, request_err, requests, too_large};
    use super::*;
    use crate::error::foreign_seen;

    /// Feeds `input` in pieces ending at `cuts`, decoding after each piece,
    /// and stops at the first error: the requests decoded before it (what a
    /// session would have run) and the error.
    fn decode_until_error(input: &[u8], cuts: &[usize]) -> (Vec<Request>, Option<ProtoError>) {
        let (out, err, _) = feed(&mut RequestCodec::default(), input, cuts);
        (out, err)
    }

    // The HTTP request: the commands before it run, the POST line
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
        only_ping(b"*0\r\n*-1\r\n*-5\r\n*1\r\n$4\r\nPING\r\n");
    }

    // A `$` length over the limit is rejected from the header alone, without
    // growing the buffer.
    #[test]
    fn bulk_over_limit_rejected_from_header() {
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::from(&b"*1\r\n$999999999999\r\n"[..]);
        let cap = buf.capacity();
        let got = too_large(codec.decode(&mut buf));
        assert_eq!(got, ("bulk length", 999_999_999_999, 512 * 1024 * 1024));
        assert_eq!(buf.capacity(), cap);
    }

    // An argument count over the limit is rejected from the header alone.
    #[test]
    fn multibulk_over_limit_rejected() {
        let mut codec = RequestCodec::new(crate::test_limits(|l: &mut Limits| l.max_array_len = 3));
        let mut buf = BytesMut::from(&b"*4\r\n"[..]);
        let got = too_large(codec.decode(&mut buf));
        assert_eq!(got, ("multibulk length", 4, 3));
    }

    // Framing errors, one a row, with the message each gets.
    #[test]
    fn request_framing_errors() {
        for (input, message) in [
            // A negative bulk length is invalid in a request.
            (&b"*1\r\n$-2\r\n"[..], "invalid bulk length"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            // A length that overflows i64 is invalid, not wrapped.
            (b"*1\r\n$99999999999999999999999\r\n", "invalid bulk length"),
            (b"*99999999999999999999\r\n", "invalid multibulk length"),
            // A header line that does not end within a valid header's length
            // is an error, not a reason to buffer more.
            (
                b"*111111111111111111111111111111",
                "invalid multibulk length",
            ),
            // A header terminated by a bare LF is invalid, as in Redis.
            (b"*1\n$4\nPING\r\n", "invalid multibulk length"),
            // Something other than `$` where a bulk string should start.
            (b"*3\r\n*abc\r\n", "expected '$', got '*'"),
            (b"*1\r\n\x01\r\n", "expected '$', got '\\x01'"),
            // Bulk data must be followed by CRLF (stricter than Redis, which
            // skips two bytes unread).
            (b"*1\r\n$3\r\nabcXY", "expected CRLF after bulk data"),
        ] {
            assert_eq!(request_err(input), message, "{input:?}");
        }
    }

    // Numbers are read as Redis's string2ll reads them: no sign, blank or
    // leading zero.
    #[test]
    fn malformed_lengths() {
        let inputs = [
            "*abc\r\n", "*+1\r\n", "* 1\r\n", "*01\r\n", "*\r\n", "*1x\r\n",
        ];
        for input in inputs.map(str::as_bytes) {
            assert_eq!(request_err(input), "invalid multibulk length", "{input:?}");
        }
        for input in [
            &b"*1\r\n$abc\r\n"[..],
            b"*1\r\n$+4\r\n",
            b"*1\r\n$04\r\n",
            b"*1\r\n$4PING\r\n",
        ] {
            assert_eq!(request_err(input), "invalid bulk length", "{input:?}");
        }
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
}
