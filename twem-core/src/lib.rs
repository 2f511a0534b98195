//! # twem-core
//!
//! Sharding for Redis and memcached, bit-exact with nutcracker (twemproxy)
//! 0.5.0, for services that want the proxy's placement and semantics
//! in-process, without the extra hop:
//!
//! - [`Ring`]: which server holds a key (nutcracker's 12 hashes, ketama,
//!   modula and random distributions, hash tags, ejection); no I/O.
//! - [`Config`]: `nutcracker.yml` (or the same pools in TOML), validated in
//!   one place with every problem named by pool and key.
//! - [`Pool`]: live connections to a pool's servers; routes, splits and merges
//!   multi-key commands, times out, ejects and re-admits servers, counts
//!   stats, exactly as the `twemproxy` binary (which is a `Pool` plus
//!   listeners) does.
//! - [`Codec`]: the request codec of either protocol; [`codec`] re-exports the
//!   RESP and memcached codecs of `twem-proto`.
//! - [`sentinel`]: servers named by Redis Sentinel master, followed through
//!   failovers without moving a key; with [`pool::replica`], read-only
//!   commands to healthy replicas (`read_from`).
//!
//! Add it with `twem-core = "0.1"` (or `{ path = "twem-core" }` in this
//! workspace) and a tokio runtime.
//!
//! ## Where does a key live?
//!
//! ```
//! use twem_core::Config;
//!
//! let cfg = Config::from_yaml(
//!     "cache:\n  listen: 127.0.0.1:22121\n  hash: fnv1a_64\n  distribution: ketama\n  \
//!      servers:\n   - 10.0.0.1:11211:1\n   - 10.0.0.2:11211:1\n   - 10.0.0.3:11211:1\n",
//! )?;
//! let ring = cfg.pools[0].ring()?;
//! let server = ring.locate_name(b"user:42").expect("a live server");
//! assert!(["10.0.0.1", "10.0.0.2", "10.0.0.3"].contains(&server));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Sharding Redis traffic in-process
//!
//! ```no_run
//! use twem_core::Pool;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::builder("sessions")
//!     .redis()
//!     .server("127.0.0.1:6379:1 redis-a")
//!     .server("127.0.0.1:6380:1 redis-b")
//!     .timeout(std::time::Duration::from_millis(500))
//!     .build()?;
//! let redis = pool.redis();
//! redis.set("user:1", "alice").await?;
//! redis.mset(&[("user:2", "bob"), ("user:3", "carol")]).await?; // split per server
//! let names = redis.mget(&["user:1", "user:2", "user:3"]).await?; // merged in key order
//! println!("{names:?}; user:1 lives on {:?}", pool.server_for(b"user:1"));
//! pool.close().await;
//! # Ok(()) }
//! ```
//!
//! Failures come back as [`pool::CallError`], saying whether the request,
//! a server or the network, or the pool failed, with nutcracker's wording:
//!
//! ```
//! use twem_core::pool::{BackendErrorKind, CallError};
//! use twem_core::Pool;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Nothing listens on port 1.
//! let pool = Pool::builder("down").redis().server("127.0.0.1:1:1").build()?;
//! match pool.redis().get("k").await {
//!     Err(CallError::Backend(e)) => assert_eq!(e.kind, BackendErrorKind::ConnectionRefused),
//!     other => panic!("expected a refused connection, got {other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! - `metrics` (default): latency histograms and per-class counters in a
//!   process-wide prometheus registry ([`pool::metrics::registry`]). Turn
//!   it off (`default-features = false`) to link no prometheus.
//! - `redis-rs`: [`Pool`] implements `redis::aio::ConnectionLike` (redis
//!   1.x), so redis-rs code runs unchanged on the embedded pool; see
//!   `pool::redis_rs`. Needs Rust 1.88 (redis's own minimum).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
// A panic in a connection task goes unseen (tokio keeps the process up):
// outside tests, failures are values.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod codec;
pub mod config;
pub mod hash;
pub mod net;
pub mod pool;
pub mod ring;
pub mod sentinel;
pub mod session;
mod since;
pub mod tls;
pub mod worker;

pub use codec::Codec;
pub use config::Config;
pub use hash::{HashKind, HashTag};
pub use pool::Pool;
pub use ring::{Distribution, Ring, RingError, RingServer};
