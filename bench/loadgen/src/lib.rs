//! Load and memory probes used by `bench/run.sh`.
//!
//! `redis-benchmark` drives the Redis scenarios; Debian has no memcached load tool
//! that reports latency percentiles (`memcslap` from libmemcached-tools only prints
//! a total time, and `memtier_benchmark` is not packaged), so [`memcache`] is a
//! small closed-loop client that does: N connections, each sending a pipeline of P
//! requests and waiting for all P replies before the next batch, with every
//! request's latency recorded. [`probe`] holds the two memory scenarios (idle
//! client connections, and a client that pipelines large GETs and never reads),
//! sampling the proxy's RSS from `/proc`.
//!
//! Build and run: `cargo run --release --manifest-path bench/loadgen/Cargo.toml -- help`.
#![forbid(unsafe_code)]

pub mod args;
pub mod error;
pub mod memcache;
pub mod probe;
pub mod procfs;
pub mod stats;

pub use error::Error;

/// Test support: a listener on a free loopback port, handed to `serve` on a
/// thread of its own; the listener's address and the thread.
#[cfg(test)]
pub(crate) fn fake_server<T: Send + 'static>(
    serve: impl FnOnce(std::net::TcpListener) -> T + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, std::thread::spawn(move || serve(listener)))
}
