//! Swapping a redis-rs connection for the embedded pool: one function,
//! written against `redis::aio::ConnectionLike` only, runs first on a
//! `redis::Client` connection through a twemproxy, then on a [`Pool`] (feature
//! `redis-rs` of twem-core) built with the proxy's settings. Then every key
//! each run wrote is looked for on the backends themselves: both runs put
//! each key on the server the ring names.
//!
//! ```sh
//! redis-server --port 7001 --save '' & redis-server --port 7002 --save '' &
//! cat > /tmp/rr.yml <<'YML'
//! rr:
//!   listen: 127.0.0.1:22121
//!   redis: true
//!   hash: murmur
//!   hash_tag: "{}"
//!   servers:
//!    - 127.0.0.1:7001:1
//!    - 127.0.0.1:7002:1
//! YML
//! cargo run -p twem-server -- -c /tmp/rr.yml -s 22222 &
//! cargo run -p twem-examples --example embedded_redis_rs -- 127.0.0.1:22121 127.0.0.1:7001 127.0.0.1:7002
//! ```
//!
//! The first address is the twemproxy, the others its servers in its
//! config's order. Exits 0 when both runs read back what they wrote and
//! every key is where the ring says, 1 with a message otherwise.

use std::collections::HashMap;
use std::error::Error;
use std::process::ExitCode;

use redis::aio::ConnectionLike;
use redis::AsyncCommands;
use twem_core::pool::Pool;
use twem_core::HashKind;

const KEYS: usize = 200;

#[tokio::main]
async fn main() -> ExitCode {
    twem_examples::main_over_servers("embedded_redis_rs", |addrs| async move {
        match addrs.split_first() {
            Some((proxy, servers)) if !servers.is_empty() => run(proxy, servers).await,
            _ => Err("usage: embedded_redis_rs PROXY_HOST:PORT SERVER_HOST:PORT...".into()),
        }
    })
    .await
}

/// The application code: it knows redis-rs, not twem.
async fn workload<C: ConnectionLike + Send + Sync>(
    con: &mut C,
    prefix: &str,
) -> Result<Vec<String>, Box<dyn Error>> {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{i}:{prefix}")).collect();
    // One pipeline for every SET: split across servers by the pool, replies
    // in order.
    let mut pipe = redis::pipe();
    for (i, k) in keys.iter().enumerate() {
        pipe.set(k, i).ignore();
    }
    let () = pipe.query_async(con).await?;
    let back: Vec<usize> = con.mget(&keys).await?;
    if back != (0..KEYS).collect::<Vec<_>>() {
        return Err(format!("{prefix}: MGET read back other values").into());
    }
    // A hash, a script and a transaction on one hash tag.
    let h = format!("{{{prefix}}}:profile");
    let () = con
        .hset_multiple(&h, &[("name", "ada"), ("lang", "rust")])
        .await?;
    let profile: HashMap<String, String> = con.hgetall(&h).await?;
    let counter = format!("{{{prefix}}}:visits");
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let n: i64 = script.key(&counter).arg(5).invoke_async(con).await?;
    let (visits, name): (i64, String) = redis::pipe()
        .atomic()
        .incr(&counter, 1)
        .hget(&h, "name")
        .query_async(con)
        .await?;
    if profile.get("lang").map(String::as_str) != Some("rust") || n != 5 || visits != 6 {
        return Err(format!("{prefix}: unexpected {profile:?} {n} {visits} {name}").into());
    }
    let mut written = keys;
    written.extend([h, counter]);
    Ok(written)
}

async fn run(proxy: &str, servers: &[String]) -> Result<(), Box<dyn Error>> {
    // The twemproxy's settings: hash murmur, ketama, hash tag "{}", the
    // same servers in the same order (so the same names).
    let mut builder = Pool::builder("rr")
        .redis()
        .hash(HashKind::Murmur)
        .hash_tag(b'{', b'}');
    for s in servers {
        builder = builder.server(&format!("{s}:1"));
    }
    let pool = builder.build()?;
    let run_id = std::process::id();

    let client = redis::Client::open(format!("redis://{proxy}/"))?;
    let mut through_proxy = client.get_multiplexed_async_connection().await?;
    let by_proxy = workload(&mut through_proxy, &format!("proxy-{run_id}")).await?;
    println!(
        "through twemproxy with redis::Client: {} keys",
        by_proxy.len()
    );

    let mut embedded = pool.clone();
    let by_pool = workload(&mut embedded, &format!("pool-{run_id}")).await?;
    println!("on the embedded Pool: {} keys", by_pool.len());

    // Ask each backend which keys it holds.
    let mut backends = Vec::new();
    for s in servers {
        let c = redis::Client::open(format!("redis://{s}/"))?;
        backends.push(c.get_multiplexed_async_connection().await?);
    }
    let mut per_server = vec![0usize; servers.len()];
    for k in by_proxy.iter().chain(&by_pool) {
        let named = pool.server_for(k.as_bytes()).ok_or("no live server")?;
        let mut holders = Vec::new();
        for (i, b) in backends.iter_mut().enumerate() {
            if b.exists::<_, bool>(k).await? {
                holders.push(i);
            }
        }
        match holders[..] {
            [i] if named.starts_with(servers[i].as_str()) => per_server[i] += 1,
            _ => return Err(format!("{k}: ring names {named}, found on {holders:?}").into()),
        }
    }
    for (s, n) in servers.iter().zip(&per_server) {
        println!("  {s:<22} {n} keys");
    }
    // Clean up through the pool: DEL is split per server.
    let _: i64 = embedded.del(&by_pool).await?;
    let _: i64 = embedded.del(&by_proxy).await?;
    pool.close().await;
    println!("both runs put every key on the server the ring names");
    Ok(())
}
