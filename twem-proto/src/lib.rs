//! # twem-proto
//!
//! The wire formats twem speaks, with no I/O: RESP (Redis) and memcached ASCII
//! codecs as [`tokio_util::codec::Decoder`]/[`tokio_util::codec::Encoder`]
//! implementations, and the Redis command table that tells the proxy how each
//! command is routed. [`Wire`] puts what differs between the two
//! protocols in one trait.
#![forbid(unsafe_code)]
// Bytes from the network decide every offset here: a slice out of range must
// be an error the caller can answer, never a panic that drops a connection
// (or, in an embedder, a thread). Test modules opt back in.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

pub mod command;
mod encode;
pub mod error;
pub mod memcache;
mod protocol;
pub mod resp;
mod sniff;
mod wire;

pub use encode::Encode;
pub use error::ProtoError;
pub use protocol::{Memcache, Resp, Wire};

/// The default `L` with `set` applied: the limits of a test of one bound
/// (RESP's or memcached's `Limits`).
#[cfg(test)]
pub(crate) fn test_limits<L: Default>(set: impl FnOnce(&mut L)) -> L {
    let mut limits = L::default();
    set(&mut limits);
    limits
}
