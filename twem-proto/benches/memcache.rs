//! Decode throughput of the memcached codecs, and the cost of splitting and
//! merging a multiget.
//!
//! Run: `cargo bench -p twem-proto --bench memcache`
//! (briefly: `cargo bench -p twem-proto --bench memcache -- --warm-up-time 1 --measurement-time 3`)

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokio_util::codec::Decoder;
use twem_proto::memcache::{
    decode_reply, merge_get, split_get, Command, Limits, Reply, ReplyFrame, Request, RequestCodec,
    Value,
};

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key:{i:09}")).collect()
}

/// Decodes the one request in `buf` (the input is cloned outside the timing).
fn decode_request(mut buf: BytesMut) -> Request {
    RequestCodec::default()
        .decode(&mut buf)
        .expect("valid framing")
        .expect("complete request")
        .expect("valid request")
}

fn requests(c: &mut Criterion) {
    let mut cases: Vec<(String, Bytes)> = vec![
        (
            "get_1_key".into(),
            Request::get(&keys(1)).expect("valid").into_wire(),
        ),
        (
            "get_100_keys".into(),
            Request::get(&keys(100)).expect("valid").into_wire(),
        ),
    ];
    for (name, size) in [
        ("set_16B", 16),
        ("set_1KiB", 1024),
        ("set_64KiB", 64 * 1024),
    ] {
        let req = Request::set("key:000000001", 0, 0, vec![b'v'; size], false).expect("valid");
        cases.push((name.into(), req.into_wire()));
    }
    let mut g = c.benchmark_group("memcache_request_decode");
    for (name, wire) in cases {
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(&name, |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |buf| black_box(decode_request(buf)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn get_reply(keys: &[String], len: usize) -> Bytes {
    let values = keys
        .iter()
        .map(|k| Value {
            key: Bytes::copy_from_slice(k.as_bytes()),
            flags: 0,
            cas: None,
            data: Bytes::from(vec![b'v'; len]),
        })
        .collect();
    Reply::Values(values).to_bytes()
}

fn replies(c: &mut Criterion) {
    let wire = get_reply(&keys(1), 1024);
    let limits = Limits::default();
    let mut g = c.benchmark_group("memcache_reply_decode");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("get_1KiB_value", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| {
                let f = decode_reply(Command::Get, &mut buf, &limits)
                    .expect("valid")
                    .expect("complete");
                black_box(f.parse())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn split_merge(c: &mut Criterion) {
    let ks = keys(100);
    let req = Request::get(&ks).expect("valid");
    let server_of = |k: &[u8]| k.iter().map(|&b| usize::from(b)).sum::<usize>() % 4;
    let parts: Vec<ReplyFrame> = split_get(&req, server_of)
        .iter()
        .map(|(_, part)| {
            let keys: Vec<String> = part
                .keys()
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let mut buf = BytesMut::from(&get_reply(&keys, 32)[..]);
            decode_reply(Command::Get, &mut buf, &Limits::default())
                .expect("valid")
                .expect("complete")
        })
        .collect();
    let mut g = c.benchmark_group("memcache_multiget_100_keys_4_servers");
    g.throughput(Throughput::Bytes(req.wire().len() as u64));
    g.bench_function("split_get", |b| {
        b.iter(|| black_box(split_get(&req, server_of)))
    });
    let merged_len: usize = parts.iter().map(|p| p.raw().len()).sum();
    g.throughput(Throughput::Bytes(merged_len as u64));
    g.bench_function("merge_get", |b| {
        b.iter(|| black_box(merge_get(&req, &parts)))
    });
    g.finish();
}

criterion_group!(benches, requests, replies, split_merge);
criterion_main!(benches);
