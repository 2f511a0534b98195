//! Criterion benches for the routing hot path: every key hash, building a
//! ketama continuum, and `Ring::locate`.
//!
//! Run: `cargo bench -p twem-core --bench ring`
//! (quick look: `cargo bench -p twem-core --bench ring -- --warm-up-time 1 --measurement-time 2`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use twem_core::hash::HashKind;
use twem_core::ring::{Distribution, Ring, RingServer};

/// Deterministic key bytes of `len`, mixing high bytes in so the signed-char
/// paths are exercised.
fn key(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(151).wrapping_add(7))
        .collect()
}

fn servers(n: usize) -> Vec<RingServer> {
    (0..n)
        .map(|i| {
            RingServer::new(
                format!("10.0.{}.{}:6379", i / 250, i % 250),
                1 + (i % 3) as u32,
            )
        })
        .collect()
}

fn hashes(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    for len in [8usize, 32, 128] {
        let k = key(len);
        group.throughput(Throughput::Bytes(len as u64));
        for kind in HashKind::ALL {
            group.bench_with_input(BenchmarkId::new(kind.name(), len), &k, |b, k| {
                b.iter(|| kind.hash(black_box(k)))
            });
        }
    }
    group.finish();
}

fn ketama_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("ketama_build");
    for n in [10usize, 100, 1000] {
        let list = servers(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &list, |b, list| {
            b.iter(|| {
                Ring::new(
                    black_box(list.clone()),
                    HashKind::Fnv1a_64,
                    Distribution::Ketama,
                    None,
                )
            })
        });
    }
    group.finish();
}

fn locate(c: &mut Criterion) {
    let mut group = c.benchmark_group("locate");
    let keys: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("user:{i}:profile").into_bytes())
        .collect();
    for dist in [Distribution::Ketama, Distribution::Modula] {
        for n in [10usize, 100] {
            let ring = Ring::new(servers(n), HashKind::Fnv1a_64, dist, None).expect("valid ring");
            group.bench_function(BenchmarkId::new(dist.name(), n), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & 1023;
                    ring.locate(black_box(&keys[i]))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hashes, ketama_build, locate);
criterion_main!(benches);
