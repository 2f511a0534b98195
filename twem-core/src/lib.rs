//! # twem-core
//!
//! Sharding for Redis and memcached, bit-exact with nutcracker (twemproxy)
//! 0.5.0: the [`Ring`] that maps a key to a server, the config model that reads
//! `nutcracker.yml` unchanged, and the `Pool` that shards traffic.
#![forbid(unsafe_code)]

pub mod config;
pub mod hash;
pub mod net;
pub mod pool;
pub mod ring;

pub use hash::{HashKind, HashTag};
pub use ring::{Distribution, Ring, RingError, RingServer};
