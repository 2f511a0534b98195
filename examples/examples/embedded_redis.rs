//! Sharding Redis in-process: a [`Pool`] over the given redis-servers, built
//! with [`Pool::builder`], used through its typed helpers. Writes a few
//! hundred keys with `SET`, reads them back with `GET` and with `MGET`
//! across shards, prints how many keys each server got
//! ([`Pool::server_for`]), checks every value, then deletes the keys.
//!
//! ```sh
//! redis-server --port 7001 --save '' & redis-server --port 7002 --save '' &
//! cargo run -p twem-examples --example embedded_redis -- 127.0.0.1:7001 127.0.0.1:7002
//! ```
//!
//! Exits 0 when every value read back is the one written, 1 with a message on
//! the first mismatch or error. A twemproxy on the same servers (same hash,
//! distribution and server names) would put every key on the same server.

use std::process::ExitCode;
use std::time::Duration;

use twem_core::pool::Pool;
use twem_core::HashKind;

const KEYS: usize = 300;

#[tokio::main]
async fn main() -> ExitCode {
    twem_examples::main_over_servers("embedded_redis", |addrs| async move { run(&addrs).await })
        .await
}

async fn run(addrs: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    // murmur rather than nutcracker's default fnv1a_64: fnv1a_64 keeps only
    // the low 32 bits of its product, so keys that differ only in their last
    // characters (user:1, user:2, ...) hash close together and sequential
    // keys bunch on one server. Any hash works; a twemproxy must use the same.
    let mut builder = Pool::builder("embedded")
        .redis()
        .hash(HashKind::Murmur)
        .timeout(Duration::from_secs(2));
    for a in addrs {
        // A servers entry as in nutcracker.yml: host:port:weight.
        builder = builder.server(&format!("{a}:1"));
    }
    let pool = builder.build()?;
    let redis = pool.redis();

    // A per-run prefix, so a rerun never reads the previous run's values.
    let prefix = format!("twem-example:{}:", std::process::id());
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{prefix}{i}")).collect();
    let value = |i: usize| format!("value-{i}-{}", i * 7919);

    // SETs issued concurrently: the pool pipelines them on one connection
    // per server.
    let sets = keys.iter().enumerate().map(|(i, k)| {
        let redis = redis.clone();
        let (k, v) = (k.clone(), value(i));
        async move { redis.set(k, v).await }
    });
    for r in futures::future::join_all(sets).await {
        r?;
    }

    twem_examples::print_spread(&pool, &keys, &format!("{KEYS} keys written with SET:"))?;

    for (i, k) in keys.iter().enumerate() {
        let got = redis.get(k.clone()).await?;
        check(k, got.as_deref(), &value(i), "GET")?;
    }
    println!("GET: all {KEYS} values match");

    // MGET of 50 keys at a time: each call is split per server and the
    // replies merged back in key order.
    for (c, chunk) in keys.chunks(50).enumerate() {
        let got = redis.mget(chunk).await?;
        if got.len() != chunk.len() {
            return Err(format!("MGET of {} keys returned {}", chunk.len(), got.len()).into());
        }
        for (j, (k, v)) in chunk.iter().zip(&got).enumerate() {
            check(k, v.as_deref(), &value(c * 50 + j), "MGET")?;
        }
    }
    println!("MGET: all {KEYS} values match, in key order");

    let deleted = redis.del(&keys).await?;
    if deleted != KEYS as i64 {
        return Err(format!("DEL across shards removed {deleted} keys, expected {KEYS}").into());
    }
    println!("DEL: {deleted} keys removed across shards");
    pool.close().await;
    Ok(())
}

fn check(key: &str, got: Option<&[u8]>, want: &str, how: &str) -> Result<(), String> {
    match got {
        Some(v) if v == want.as_bytes() => Ok(()),
        other => Err(format!(
            "{how} {key}: expected {want:?}, got {:?}",
            other.map(String::from_utf8_lossy)
        )),
    }
}
