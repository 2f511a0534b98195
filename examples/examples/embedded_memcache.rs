//! Sharding memcached in-process: a [`Pool`] over the given memcached
//! servers, built with [`Pool::builder`], used through
//! [`MemcacheClient`](twem_core::pool::MemcacheClient). Stores a few hundred
//! keys, reads them back with one multi-key `get` split across the shards,
//! shows optimistic locking with `gets` + `cas` (the first cas succeeds, a
//! second one with the same now-stale unique gets `EXISTS`), then deletes.
//!
//! ```sh
//! memcached -p 11311 & memcached -p 11312 &
//! cargo run -p twem-examples --example embedded_memcache -- 127.0.0.1:11311 127.0.0.1:11312
//! ```
//!
//! Exits 0 when every reply is the expected one, 1 with a message otherwise.

use std::process::ExitCode;
use std::time::Duration;

use twem_core::pool::{Pool, Stored};
use twem_core::HashKind;

const KEYS: usize = 300;

#[tokio::main]
async fn main() -> ExitCode {
    twem_examples::main_over_servers(
        "embedded_memcache",
        |addrs| async move { run(&addrs).await },
    )
    .await
}

async fn run(addrs: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    // memcached is the builder's default protocol, as it is nutcracker's.
    // murmur rather than nutcracker's default fnv1a_64: fnv1a_64 keeps only
    // the low 32 bits of its product, so keys that differ only in their last
    // characters (user:1, user:2, ...) hash close together and sequential
    // keys bunch on one server. Any hash works; a twemproxy must use the same.
    let mut builder = Pool::builder("embedded")
        .hash(HashKind::Murmur)
        .timeout(Duration::from_secs(2));
    for a in addrs {
        builder = builder.server(&format!("{a}:1"));
    }
    let pool = builder.build()?;
    let mc = pool.memcache();

    let prefix = format!("twem-example:{}:", std::process::id());
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{prefix}{i}")).collect();
    let value = |i: usize| format!("value-{i}-{}", i * 7919);

    for (i, k) in keys.iter().enumerate() {
        // The flags travel with the item; use them to carry the index.
        let stored = mc.set(k, i as u32, 0, value(i)).await?;
        expect(stored == Stored::Stored, || format!("set {k}: {stored:?}"))?;
    }
    twem_examples::print_spread(&pool, &keys, &format!("{KEYS} keys stored with set:"))?;

    // One `get` of every key: split per server, merged back in key order.
    let got = mc.get_multi(&keys).await?;
    expect(got.len() == KEYS, || {
        format!("get of {KEYS} keys returned {} values", got.len())
    })?;
    for (i, ((key, v), want)) in got.iter().zip(&keys).enumerate() {
        expect(&key[..] == want.as_bytes(), || {
            format!("value {i} is for key {key:?}, expected {want}")
        })?;
        expect(v.data == value(i).as_bytes() && v.flags == i as u32, || {
            format!("get {want}: got {v:?}")
        })?;
    }
    println!("get of {KEYS} keys: every value and flag matches, in key order");

    // Optimistic locking: read the cas unique, update with it (succeeds),
    // then try again with the same unique, which the first update made stale.
    let key = keys.first().ok_or("no keys")?;
    let item = mc
        .gets(key)
        .await?
        .ok_or_else(|| format!("gets {key}: miss"))?;
    let unique = item
        .cas
        .ok_or_else(|| format!("gets {key}: no cas unique"))?;
    let first = mc.cas(key, 0, 0, "updated", unique).await?;
    expect(first == Stored::Stored, || {
        format!("cas with a fresh unique: {first:?}")
    })?;
    let second = mc.cas(key, 0, 0, "lost update", unique).await?;
    expect(second == Stored::Exists, || {
        format!("cas with a stale unique: {second:?}, expected Exists")
    })?;
    let now = mc.get(key).await?.map(|v| v.data);
    expect(now.as_deref() == Some(&b"updated"[..]), || {
        format!("after cas {key} holds {now:?}")
    })?;
    println!("gets + cas: first cas STORED, stale cas EXISTS, value is the first update");

    for k in &keys {
        expect(mc.delete(k).await?, || format!("delete {k}: NOT_FOUND"))?;
    }
    let left = mc.get_multi(&keys).await?;
    expect(left.is_empty(), || {
        format!("{} keys still there after delete", left.len())
    })?;
    println!("delete: all {KEYS} keys gone");
    pool.close().await;
    Ok(())
}

fn expect(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}
