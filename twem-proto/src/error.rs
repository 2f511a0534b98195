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
    /// The underlying transport failed (required by `tokio_util::codec`).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtoError {
    /// A framing error with a fixed description.
    pub fn protocol(msg: impl Into<Cow<'static, str>>) -> Self {
        ProtoError::Protocol(msg.into())
    }
}
