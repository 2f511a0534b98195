//! Decode throughput of the RESP codecs and the cost of a command lookup.
//!
//! Run: `cargo bench -p twem-proto --bench resp`
//! (briefly: `cargo bench -p twem-proto --bench resp -- --warm-up-time 1 --measurement-time 3`)

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokio_util::codec::Decoder;
use twem_proto::command;
use twem_proto::resp::{Reply, ReplyCodec, Request, RequestCodec};

/// Decodes every request in `input`, returning how many there were.
fn decode_all(input: &BytesMut) -> usize {
    let mut codec = RequestCodec::default();
    let mut buf = input.clone();
    let mut n = 0;
    while let Some(req) = codec.decode(&mut buf).expect("valid input") {
        black_box(&req);
        n += 1;
    }
    n
}

fn wire(args: Vec<Vec<u8>>) -> BytesMut {
    BytesMut::from(&Request::from_args(args).wire()[..])
}

fn requests(c: &mut Criterion) {
    let mut cases: Vec<(&str, BytesMut, u64)> = vec![(
        "get",
        wire(vec![b"GET".to_vec(), b"key:000000001".to_vec()]),
        1,
    )];
    for (name, size) in [
        ("set_16B", 16),
        ("set_1KiB", 1024),
        ("set_64KiB", 64 * 1024),
    ] {
        cases.push((
            name,
            wire(vec![
                b"SET".to_vec(),
                b"key:000000001".to_vec(),
                vec![b'v'; size],
            ]),
            1,
        ));
    }
    let mut mget = vec![b"MGET".to_vec()];
    mget.extend((0..100).map(|i| format!("key:{i:09}").into_bytes()));
    cases.push(("mget_100_keys", wire(mget), 1));
    let mut pipeline = BytesMut::new();
    for i in 0..100 {
        let req = if i % 2 == 0 {
            vec![b"GET".to_vec(), format!("key:{i:09}").into_bytes()]
        } else {
            vec![
                b"SET".to_vec(),
                format!("key:{i:09}").into_bytes(),
                vec![b'v'; 32],
            ]
        };
        pipeline.extend_from_slice(&wire(req));
    }
    cases.push(("pipeline_100", pipeline, 100));

    for (name, input, items) in &cases {
        let mut g = c.benchmark_group(format!("request/{name}"));
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function("bytes", |b| b.iter(|| decode_all(input)));
        g.throughput(Throughput::Elements(*items));
        g.bench_function("items", |b| b.iter(|| decode_all(input)));
        g.finish();
    }

    // A 64 KiB value arriving in 1 KiB reads: resumable parsing keeps this
    // linear instead of rescanning the frame on every read.
    let big = wire(vec![b"SET".to_vec(), b"k".to_vec(), vec![b'v'; 64 * 1024]]);
    let mut g = c.benchmark_group("request/set_64KiB_in_1KiB_reads");
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("bytes", |b| {
        b.iter(|| {
            let mut codec = RequestCodec::default();
            let mut buf = BytesMut::new();
            let mut got = None;
            for chunk in big.chunks(1024) {
                buf.extend_from_slice(chunk);
                if let Some(req) = codec.decode(&mut buf).expect("valid") {
                    got = Some(req);
                }
            }
            got.expect("decoded")
        })
    });
    g.finish();
}

fn replies(c: &mut Criterion) {
    let mut array = Vec::new();
    for i in 0..100 {
        array.push(Reply::Bulk(Some(format!("value:{i:09}").into())));
    }
    let cases = [
        ("status_ok", Reply::ok().to_bytes()),
        (
            "bulk_1KiB",
            Reply::Bulk(Some(vec![b'v'; 1024].into())).to_bytes(),
        ),
        ("mget_100_values", Reply::Array(Some(array)).to_bytes()),
    ];
    for (name, bytes) in cases {
        let mut g = c.benchmark_group(format!("reply/{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("bytes", |b| {
            b.iter_batched(
                || BytesMut::from(&bytes[..]),
                |mut buf| ReplyCodec::default().decode(&mut buf).expect("valid"),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

fn lookup(c: &mut Criterion) {
    let names: [&[u8]; 6] = [
        b"GET",
        b"set",
        b"MGet",
        b"zrevrangebyscore",
        b"ping",
        b"nosuch",
    ];
    let mut g = c.benchmark_group("command");
    g.throughput(Throughput::Elements(names.len() as u64));
    g.bench_function("lookup", |b| {
        b.iter(|| {
            names
                .iter()
                .filter(|n| command::lookup(black_box(n)).is_some())
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, requests, replies, lookup);
criterion_main!(benches);
