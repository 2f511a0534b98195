//! Inline requests: a telnet user's line, split on blanks with Redis's
//! quoting rules and re-encoded once as a RESP array for the backends.

use bytes::BytesMut;

use super::request::{ReqState, Request, RequestCodec};
use crate::error::ProtoError;
use crate::wire::trim_cr;

impl RequestCodec {
    /// Parses an inline line; `Ok(None)` when the line is not complete.
    pub(super) fn decode_inline(
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
        let line = trim_cr(line.get(..nl).unwrap_or(&[]));
        let args =
            split_args(line).ok_or_else(|| ProtoError::protocol("unbalanced quotes in request"))?;
        if args.is_empty() {
            // Redis ignores empty lines: no command, no reply.
            return Ok(Some(None));
        }
        if args.len() > self.limits.max_array_len {
            return Err(ProtoError::too_large(
                "multibulk length",
                args.len(),
                self.limits.max_array_len,
            ));
        }
        Ok(Some(Some(Request::encoded(&args, true))))
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

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use tokio_util::codec::Decoder;

    use super::super::testing::{
        after_more, args_of, only_ping, protocol_msg, request_err, requests,
    };
    use super::super::Limits;
    use super::*;

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
        let inputs = ["\"abc\r\n", "'abc\r\n", "echo \"a\"b\r\n", "echo 'a'b\r\n"];
        for input in inputs.map(str::as_bytes) {
            assert_eq!(
                request_err(input),
                "unbalanced quotes in request",
                "{input:?}"
            );
        }
    }

    // Empty and blank lines are skipped without a request.
    #[test]
    fn inline_empty_lines_skipped() {
        only_ping(b"\r\n\n  \t \r\nPING\r\n");
    }

    // A line longer than the limit without a newline is an error.
    #[test]
    fn inline_too_big() {
        let mut codec =
            RequestCodec::new(crate::test_limits(|l: &mut Limits| l.max_inline_len = 8));
        let err = after_more(&mut codec, b"PINGPING", b"P").unwrap_err();
        assert_eq!(protocol_msg(err), "too big inline request");
    }

    // A line of exactly the limit is accepted.
    #[test]
    fn inline_at_limit() {
        let mut codec =
            RequestCodec::new(crate::test_limits(|l: &mut Limits| l.max_inline_len = 8));
        let mut buf = BytesMut::from(&b"ECHO abc\n"[..]);
        let req = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(args_of(&req), [&b"ECHO"[..], b"abc"]);
    }
}
