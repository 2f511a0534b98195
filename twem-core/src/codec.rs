//! [`Codec`]: one request codec for either protocol a [`Pool`](crate::Pool)
//! speaks, so a tool or a proxy can be written once for Redis and memcached.
//!
//! It wraps the twem-proto codecs (re-exported here as [`resp`],
//! [`memcache`] and [`command`]): decoding yields a [`Request`] of the pool's
//! protocol, encoding writes reply bytes as the pool returned them.
//!
//! ```
//! use bytes::BytesMut;
//! use tokio_util::codec::Decoder;
//! use twem_core::codec::{Codec, Request};
//!
//! let mut codec = Codec::redis();
//! let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n"[..]);
//! let Some(Request::Redis(get)) = codec.decode(&mut buf).unwrap() else { panic!() };
//! assert_eq!(get.name(), b"GET");
//! let Some(Request::Redis(ping)) = codec.decode(&mut buf).unwrap() else { panic!() };
//! assert!(ping.is_inline());
//!
//! let mut mc = Codec::memcache();
//! let mut buf = BytesMut::from(&b"get a b\r\nbogus\r\n"[..]);
//! assert!(matches!(mc.decode(&mut buf).unwrap(), Some(Request::Memcache(_))));
//! assert!(matches!(mc.decode(&mut buf).unwrap(), Some(Request::Invalid(_))));
//! ```

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use twem_proto::{command, memcache, resp, ProtoError};

use crate::pool::Protocol;

/// One decoded client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A Redis command (array or inline).
    Redis(resp::Request),
    /// A well-formed memcached command.
    Memcache(memcache::Request),
    /// A memcached command line that is wrong but whose extent is known: answer
    /// [`memcache::RequestError::reply`] and carry on.
    Invalid(memcache::RequestError),
}

#[derive(Debug)]
enum Inner {
    Redis(resp::RequestCodec),
    Memcache(memcache::RequestCodec),
}

/// The request codec of a pool's protocol. Decodes [`Request`]s, encodes
/// reply bytes (what [`Pool::dispatch`](crate::Pool::dispatch) resolves to).
#[derive(Debug)]
pub struct Codec {
    inner: Inner,
}

impl Codec {
    /// The Redis (RESP) request codec with default limits.
    pub fn redis() -> Codec {
        Codec {
            inner: Inner::Redis(resp::RequestCodec::default()),
        }
    }

    /// The memcached request codec with the proxy's limits.
    pub fn memcache() -> Codec {
        Codec {
            inner: Inner::Memcache(memcache::RequestCodec::new(crate::pool::memcache_limits())),
        }
    }

    /// The codec for `protocol`.
    pub fn for_protocol(protocol: Protocol) -> Codec {
        match protocol {
            Protocol::Redis => Codec::redis(),
            Protocol::Memcache => Codec::memcache(),
        }
    }

    /// How a failed call is worded in this protocol (`-ERR ...` or
    /// `SERVER_ERROR ...`), as nutcracker words it.
    pub fn error_reply(&self, e: &crate::pool::CallError) -> Bytes {
        match &self.inner {
            Inner::Redis(_) => e.reply::<twem_proto::Resp>(),
            Inner::Memcache(_) => e.reply::<twem_proto::Memcache>(),
        }
    }
}

impl Decoder for Codec {
    type Item = Request;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, ProtoError> {
        match &mut self.inner {
            Inner::Redis(c) => Ok(c.decode(src)?.map(Request::Redis)),
            Inner::Memcache(c) => Ok(c.decode(src)?.map(|r| match r {
                Ok(req) => Request::Memcache(req),
                Err(e) => Request::Invalid(e),
            })),
        }
    }
}

impl Encoder<Bytes> for Codec {
    type Error = ProtoError;

    fn encode(&mut self, reply: Bytes, dst: &mut BytesMut) -> Result<(), ProtoError> {
        dst.extend_from_slice(&reply);
        Ok(())
    }
}
