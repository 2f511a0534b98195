//! # twem-proto
//!
//! The wire formats twem speaks, with no I/O: RESP (Redis) and memcached ASCII
//! codecs as [`tokio_util::codec::Decoder`]/[`tokio_util::codec::Encoder`]
//! implementations, and the Redis command table that tells the proxy how each
//! command is routed.
#![forbid(unsafe_code)]

pub mod command;
pub mod error;
pub mod memcache;
pub mod resp;
mod sniff;

pub use error::ProtoError;
