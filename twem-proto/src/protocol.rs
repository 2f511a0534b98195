//! [`Wire`]: what differs between the two protocols twem speaks, in one
//! trait, so the proxy chooses a protocol once (a type parameter, or enum
//! dispatch over [`Resp`] and [`Memcache`]) instead of matching on it at each
//! place: the request and reply types, the server reply decoder, and how a
//! client is told of a failure the proxy met.
//!
//! ```
//! use twem_proto::{Memcache, Resp, Wire};
//!
//! assert_eq!(&Resp::server_error("Connection refused")[..], b"-ERR Connection refused\r\n");
//! assert_eq!(
//!     &Memcache::server_error("Connection refused")[..],
//!     b"SERVER_ERROR Connection refused\r\n"
//! );
//! ```

use bytes::Bytes;

use crate::{memcache, resp, ProtoError};

/// One protocol's types and wording.
pub trait Wire {
    /// A client request, decoded.
    type Request;
    /// A server reply as it was framed (its bytes kept whole).
    type ReplyFrame;
    /// The limits its decoders enforce.
    type Limits;
    /// The reply decoding state of one server connection.
    type ReplyDecoder;

    /// A reply decoder for a new server connection.
    fn reply_decoder(limits: &Self::Limits) -> Self::ReplyDecoder;

    /// What a client reads when the proxy failed its request on the way
    /// (a server down, a timeout, the pool closed): `words` as nutcracker
    /// words them, after `-ERR ` or `SERVER_ERROR `.
    fn server_error(words: &str) -> Bytes;

    /// What a client reads when the proxy refused its request before
    /// sending it; `words` carry the RESP error code (`ERR ...`,
    /// `CROSSSLOT ...`), kept after memcached's `CLIENT_ERROR ` too.
    fn client_error(words: &str) -> Bytes;

    /// A server's own error line (without the line end, and for RESP
    /// without the `-`), relayed to the client as the server worded it.
    fn relayed_error(line: &str) -> Bytes;

    /// What a client whose framing broke reads before its connection
    /// closes; `None` for bytes of another protocol altogether (a browser,
    /// a binary client), which have no use for a text error.
    fn protocol_error(e: &ProtoError) -> Option<Bytes>;
}

/// Redis's RESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resp;

/// memcached's ASCII protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memcache;

/// `<prefix><words>\r\n`, with any line end in `words` made a blank so the
/// reply stays one line.
fn line(prefix: &str, words: &str) -> Bytes {
    let words = words.replace(['\r', '\n'], " ");
    Bytes::from(format!("{prefix}{words}\r\n"))
}

impl Wire for Resp {
    type Request = resp::Request;
    type ReplyFrame = resp::ReplyFrame;
    type Limits = resp::Limits;
    type ReplyDecoder = resp::ReplyCodec;

    fn reply_decoder(limits: &resp::Limits) -> resp::ReplyCodec {
        resp::ReplyCodec::new(*limits)
    }

    fn server_error(words: &str) -> Bytes {
        line("-ERR ", words)
    }

    fn client_error(words: &str) -> Bytes {
        line("-", words)
    }

    fn relayed_error(line_text: &str) -> Bytes {
        line("-", line_text)
    }

    fn protocol_error(e: &ProtoError) -> Option<Bytes> {
        // As redis-server: nothing for another protocol.
        (!e.is_foreign_protocol()).then(|| line("-ERR ", &e.to_string()))
    }
}

impl Wire for Memcache {
    type Request = memcache::Request;
    type ReplyFrame = memcache::ReplyFrame;
    type Limits = memcache::Limits;
    /// The limits are passed on each decode call
    /// ([`memcache::ReplyDecoder::decode`]), so the decoder holds none.
    type ReplyDecoder = memcache::ReplyDecoder;

    fn reply_decoder(_limits: &memcache::Limits) -> memcache::ReplyDecoder {
        memcache::ReplyDecoder::new()
    }

    fn server_error(words: &str) -> Bytes {
        line("SERVER_ERROR ", words)
    }

    fn client_error(words: &str) -> Bytes {
        line("CLIENT_ERROR ", words)
    }

    fn relayed_error(line_text: &str) -> Bytes {
        line("", line_text)
    }

    fn protocol_error(e: &ProtoError) -> Option<Bytes> {
        (!e.is_foreign_protocol()).then(|| memcache::protocol_error_reply(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each protocol's wording, byte for byte: the lines nutcracker and the
    // servers send.
    #[test]
    fn wording_per_protocol() {
        let cases: [(Bytes, &[u8]); 8] = [
            (
                Resp::server_error("Connection refused"),
                b"-ERR Connection refused\r\n",
            ),
            (Resp::client_error("CROSSSLOT x"), b"-CROSSSLOT x\r\n"),
            (Resp::relayed_error("WRONGTYPE no"), b"-WRONGTYPE no\r\n"),
            (
                Memcache::server_error("pool p is closed"),
                b"SERVER_ERROR pool p is closed\r\n",
            ),
            (
                Memcache::client_error("ERR bad"),
                b"CLIENT_ERROR ERR bad\r\n",
            ),
            (
                Memcache::relayed_error("SERVER_ERROR out of memory"),
                b"SERVER_ERROR out of memory\r\n",
            ),
            (Memcache::relayed_error("ERROR"), b"ERROR\r\n"),
            (Resp::server_error("a\r\nb"), b"-ERR a  b\r\n"),
        ];
        for (got, want) in cases {
            assert_eq!(&got[..], want, "{got:?}");
        }
    }

    // A broken frame is answered in the client's protocol; bytes of another
    // protocol get nothing.
    #[test]
    fn protocol_errors() {
        let e = ProtoError::protocol("invalid bulk length");
        assert_eq!(
            Resp::protocol_error(&e).as_deref(),
            Some(&b"-ERR Protocol error: invalid bulk length\r\n"[..])
        );
        assert_eq!(
            Memcache::protocol_error(&e),
            Some(memcache::protocol_error_reply(&e))
        );
    }

    // The decoders a new server connection starts with.
    #[test]
    fn reply_decoders_decode() {
        use tokio_util::codec::Decoder;
        let mut codec = Resp::reply_decoder(&resp::Limits::default());
        let mut buf = bytes::BytesMut::from(&b"+OK\r\n"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_some());
        let limits = memcache::Limits::default();
        let mut dec = Memcache::reply_decoder(&limits);
        let mut buf = bytes::BytesMut::from(&b"STORED\r\n"[..]);
        let got = dec
            .decode(memcache::Command::Set, &mut buf, &limits)
            .unwrap();
        assert!(got.is_some());
    }
}
