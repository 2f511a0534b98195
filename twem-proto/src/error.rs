//! The one error type of the codecs.
//!
//! Only broken framing is an error: a stream the decoder can no longer cut into
//! frames. A client mistake that leaves framing intact (unknown command, wrong
//! arity, a key that is too long) is an item the caller answers with an error
//! reply, never a `ProtoError`.

use std::borrow::Cow;

/// Why a stream could not be decoded (or encoded).
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The bytes do not follow the protocol; the text says what was wrong, in
    /// the words Redis uses after `Protocol error: `.
    #[error("Protocol error: {0}")]
    Protocol(Cow<'static, str>),
    /// A length in a header is over a configured limit; rejected when the
    /// header is read, before anything is buffered.
    #[error("Protocol error: {what} of {len} exceeds the limit of {limit}")]
    TooLarge {
        /// Which length: "bulk length", "multibulk length", "inline request", ...
        what: &'static str,
        /// The length the peer announced (or had sent so far).
        len: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The peer speaks another protocol: an HTTP request line or header, or
    /// memcached's binary protocol. A web page can make a browser send an
    /// HTTP request to any port (cross-protocol scripting); a text protocol
    /// that skips lines it does not know would then run the commands in the
    /// request's body. The connection must be closed at once, with nothing
    /// after this point executed, as redis-server does for `POST` and
    /// `Host:`.
    #[error("foreign protocol, possible security attack: {seen}")]
    ForeignProtocol {
        /// What gave the peer away, e.g. `HTTP 'POST' command`.
        seen: &'static str,
    },
    /// The underlying transport failed (required by `tokio_util::codec`).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtoError {
    /// A framing error with a fixed description.
    pub fn protocol(msg: impl Into<Cow<'static, str>>) -> Self {
        ProtoError::Protocol(msg.into())
    }

    /// A [`ProtoError::TooLarge`] for `what`, whose `len` is over `limit`.
    pub(crate) fn too_large(what: &'static str, len: usize, limit: usize) -> Self {
        ProtoError::TooLarge {
            what,
            len: crate::wire::len_u64(len),
            limit: crate::wire::len_u64(limit),
        }
    }

    /// True for [`ProtoError::ForeignProtocol`]: the caller should log it as
    /// a possible attack rather than as a client bug.
    pub fn is_foreign_protocol(&self) -> bool {
        matches!(self, ProtoError::ForeignProtocol { .. })
    }
}

/// What gave a foreign protocol away, for tests of both codecs: `err` must
/// be a [`ProtoError::ForeignProtocol`].
#[cfg(test)]
pub(crate) fn foreign_seen(err: Option<ProtoError>) -> &'static str {
    match err {
        Some(ProtoError::ForeignProtocol { seen }) => seen,
        other => panic!("expected a foreign protocol error, got {other:?}"),
    }
}
