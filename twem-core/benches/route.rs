//! Criterion benches for planning a request (`pool::route`): the pure part
//! of the request path between decode and send, for a single-key command
//! (the hot path), a local one, and multi-key splits of both protocols.
//!
//! Run: `cargo bench -p twem-core --bench route`
//! (quick look: `cargo bench -p twem-core --bench route -- --warm-up-time 1 --measurement-time 2`).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use twem_core::hash::HashKind;
use twem_core::pool::route::{plan_memcache, plan_redis};
use twem_core::ring::{Distribution, Ring, RingServer};
use twem_proto::{memcache as mc, resp};

fn ring() -> Ring {
    let servers = (0..4)
        .map(|i| RingServer::new(format!("10.0.0.{i}:6379"), 1))
        .collect();
    Ring::new(servers, HashKind::Fnv1a_64, Distribution::Ketama, None).expect("valid ring")
}

fn redis(args: &[&str]) -> resp::Request {
    resp::Request::from_args(args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())))
}

fn plan(c: &mut Criterion) {
    let ring = ring();
    let keys: Vec<String> = (0..10).map(|i| format!("user:{i}:profile")).collect();
    let mut mget: Vec<&str> = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let cases = [
        ("redis_get", redis(&["GET", "user:42:profile"])),
        ("redis_ping", redis(&["PING"])),
        ("redis_mget10", redis(&mget)),
        // Two keys found by the key specs, on one server (a hash tag).
        (
            "redis_rpoplpush",
            redis(&["RPOPLPUSH", "{u}:src", "{u}:dst"]),
        ),
    ];
    let mut group = c.benchmark_group("plan");
    for (name, req) in &cases {
        group.bench_function(*name, |b| b.iter(|| plan_redis(black_box(req), &ring)));
    }
    let get = mc::Request::get(&["user:42:profile"]).expect("valid");
    let get10 = mc::Request::get(&keys).expect("valid");
    group.bench_function("mc_get", |b| {
        b.iter(|| plan_memcache(black_box(&get), &ring))
    });
    group.bench_function("mc_get10", |b| {
        b.iter(|| plan_memcache(black_box(&get10), &ring))
    });
    group.finish();
}

criterion_group!(benches, plan);
criterion_main!(benches);
