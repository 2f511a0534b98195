//! The embedded pool through redis-rs's own API (feature `redis-rs`):
//! `AsyncCommands`, `redis::cmd`, `Script`, pipelines and atomic pipelines
//! run on a `Pool` over real redis-servers, and every key lands on the
//! server the ring names (checked on the backends).

use std::collections::HashMap;

use redis::AsyncCommands;
use tokio::runtime::Runtime;
use twem_core::pool::Pool;
use twem_tests::{holders, pool_yaml, runtime, shard_servers, Redis};

fn pool_over(shards: &[Redis]) -> String {
    let settings = "  redis: true\n  hash: murmur\n  hash_tag: \"{}\"\n  timeout: 2000\n";
    pool_yaml("alpha", 22121, settings, &shard_servers(shards))
}

/// The shard (by index) that holds `key`, asked of the backends.
fn holder(shards: &[Redis], key: &str) -> Option<usize> {
    let found = holders(shards, key);
    assert!(found.len() <= 1, "{key} is on shards {found:?}");
    found.first().copied()
}

fn shard_of(pool: &Pool, key: &str) -> usize {
    let name = pool.server_for(key.as_bytes()).expect("a live server");
    name.trim_start_matches("shard").parse().expect("shardN")
}

struct Setup {
    shards: Vec<Redis>,
    rt: Runtime,
    pool: Pool,
}

fn setup() -> Setup {
    let shards: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let rt = runtime();
    let yaml = pool_over(&shards);
    let pool = rt
        .block_on(async { Pool::from_yaml(&yaml, None) })
        .expect("pool");
    Setup { shards, rt, pool }
}

#[test]
fn commands_land_where_the_ring_says() {
    let Setup { shards, rt, pool } = setup();
    let keys: Vec<String> = (0..40).map(|i| format!("rr:{i}")).collect();
    rt.block_on(async {
        let mut con = pool.clone();
        for (i, k) in keys.iter().enumerate() {
            let () = con.set(k, i).await.expect("SET");
        }
        let got: Option<String> = con.get("rr:7").await.expect("GET");
        assert_eq!(got.as_deref(), Some("7"));
        let missing: Option<String> = con.get("rr:missing").await.expect("GET");
        assert_eq!(missing, None);
        // MGET across both shards, merged in key order.
        let all: Vec<usize> = con.mget(&keys).await.expect("MGET");
        assert_eq!(all, (0..40).collect::<Vec<_>>());
        // redis::cmd and query_async, with a key-less command.
        let pong: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .expect("PING");
        assert_eq!(pong, "PONG");
        // HGETALL into a HashMap.
        let () = con
            .hset_multiple("rr:h", &[("a", "1"), ("b", "2")])
            .await
            .expect("HSET");
        let h: HashMap<String, i64> = con.hgetall("rr:h").await.expect("HGETALL");
        assert_eq!(h, HashMap::from([("a".into(), 1), ("b".into(), 2)]));
        // A server's error keeps its kind.
        let err = con
            .incr::<_, _, i64>("rr:h", 1)
            .await
            .expect_err("WRONGTYPE");
        assert_eq!(err.code(), Some("WRONGTYPE"), "{err:?}");
    });
    let mut per_shard = [0; 2];
    for k in &keys {
        let on = holder(&shards, k).expect("written");
        assert_eq!(on, shard_of(&pool, k), "{k}");
        per_shard[on] += 1;
    }
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");
    rt.block_on(pool.close());
}

#[test]
fn a_pipeline_of_a_thousand_commands_keeps_its_order() {
    let Setup { shards, rt, pool } = setup();
    rt.block_on(async {
        let mut con = pool.clone();
        let mut pipe = redis::pipe();
        for i in 0..250 {
            let k = format!("pl:{i}");
            // Same key in one pipeline: order per key must hold.
            pipe.set(&k, i).incr(&k, 1000).get(&k).del(&k).ignore();
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut con).await.expect("pipeline");
        assert_eq!(replies.len(), 750);
        for (i, trio) in replies.chunks(3).enumerate() {
            let n = i64::try_from(i + 1000).expect("small");
            assert_eq!(trio[0], redis::Value::Okay);
            assert_eq!(trio[1], redis::Value::Int(n));
            assert_eq!(
                trio[2],
                redis::Value::BulkString(n.to_string().into_bytes())
            );
        }
        // A refused command (keys on two servers) fails the pipeline as a
        // Redis error would.
        let other = (1..1000)
            .map(|i| format!("pl:b{i}"))
            .find(|k| shard_of(&pool, k) != shard_of(&pool, "pl:a"))
            .expect("a key on the other server");
        let err = redis::pipe()
            .set("pl:x", 1)
            .cmd("MSETNX")
            .arg("pl:a")
            .arg(1)
            .arg(&other)
            .arg(2)
            .query_async::<Vec<redis::Value>>(&mut con)
            .await
            .expect_err("CROSSSLOT");
        assert_eq!(err.code(), Some("CROSSSLOT"), "{err:?}");
        // The pipeline's other commands ran.
        let x: i64 = con.get("pl:x").await.expect("GET");
        assert_eq!(x, 1);
    });
    // Each key was deleted by its own last command, on its own server.
    for i in [0, 99, 249] {
        assert_eq!(holder(&shards, &format!("pl:{i}")), None);
    }
    rt.block_on(pool.close());
}

#[test]
fn scripts_load_on_every_server() {
    let Setup { shards, rt, pool } = setup();
    let script = redis::Script::new("return redis.call('SET', KEYS[1], ARGV[1])");
    rt.block_on(async {
        let mut con = pool.clone();
        // EVALSHA fails with NOSCRIPT, redis-rs sends SCRIPT LOAD (to every
        // server) and retries.
        for i in 0..10 {
            let k = format!("sc:{i}");
            let () = script
                .key(&k)
                .arg(i)
                .invoke_async(&mut con)
                .await
                .expect("script");
        }
    });
    let sha = script.get_hash();
    for s in &shards {
        assert_eq!(
            s.client().cmd(&[b"SCRIPT", b"EXISTS", sha.as_bytes()]),
            b"*1\r\n:1\r\n",
            "the script is loaded on {}",
            s.addr()
        );
    }
    for i in 0..10 {
        let k = format!("sc:{i}");
        assert_eq!(holder(&shards, &k), Some(shard_of(&pool, &k)), "{k}");
    }
    rt.block_on(pool.close());
}

#[test]
fn atomic_pipelines_run_on_one_server_or_not_at_all() {
    let Setup { shards, rt, pool } = setup();
    rt.block_on(async {
        let mut con = pool.clone();
        let (a, b): (i64, String) = redis::pipe()
            .atomic()
            .set("{acct}:x", 5)
            .ignore()
            .incr("{acct}:x", 2)
            .set("{acct}:y", "ok")
            .ignore()
            .get("{acct}:y")
            .query_async(&mut con)
            .await
            .expect("atomic pipeline");
        assert_eq!((a, b.as_str()), (7, "ok"));
    });
    let on = shard_of(&pool, "{acct}:x");
    assert_eq!(holder(&shards, "{acct}:x"), Some(on));
    assert_eq!(holder(&shards, "{acct}:y"), Some(on));

    // Two keys on two servers: refused, and neither is written.
    let k1 = "tx:0".to_string();
    let k2 = (1..1000)
        .map(|i| format!("tx:{i}"))
        .find(|k| shard_of(&pool, k) != shard_of(&pool, &k1))
        .expect("a key on the other server");
    rt.block_on(async {
        let mut con = pool.clone();
        let err = redis::pipe()
            .atomic()
            .set(&k1, 1)
            .set(&k2, 2)
            .query_async::<()>(&mut con)
            .await
            .expect_err("two servers");
        assert_eq!(err.code(), Some("CROSSSLOT"), "{err:?}");
    });
    assert_eq!(holder(&shards, &k1), None, "nothing applied");
    assert_eq!(holder(&shards, &k2), None, "nothing applied");
    rt.block_on(pool.close());
}

/// `MULTI` ... `EXEC` written into a plain pipeline runs as a transaction
/// between the commands around it, in the pipeline's order.
#[test]
fn multi_exec_inside_a_pipeline() {
    let Setup { shards, rt, pool } = setup();
    rt.block_on(async {
        let mut con = pool.clone();
        let replies: Vec<redis::Value> = redis::pipe()
            .set("{m}:a", 1)
            .cmd("MULTI")
            .incr("{m}:a", 10)
            .incr("{m}:b", 1)
            .cmd("EXEC")
            .get("{m}:a")
            .query_async(&mut con)
            .await
            .expect("pipeline");
        use redis::Value as V;
        assert_eq!(
            replies,
            vec![
                V::Okay,
                V::Okay,
                V::SimpleString("QUEUED".into()),
                V::SimpleString("QUEUED".into()),
                V::Array(vec![V::Int(11), V::Int(1)]),
                V::BulkString(b"11".to_vec()),
            ]
        );
        // A command refused while queued aborts the transaction.
        let other = (0..1000)
            .map(|i| format!("m2:{i}"))
            .find(|k| shard_of(&pool, k) != shard_of(&pool, "{m}:a"))
            .expect("a key on the other server");
        let err = redis::pipe()
            .cmd("MULTI")
            .incr("{m}:a", 1)
            .incr(&other, 1)
            .cmd("EXEC")
            .query_async::<Vec<redis::Value>>(&mut con)
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Some("CROSSSLOT"), "{err:?}");
        let a: i64 = con.get("{m}:a").await.expect("GET");
        assert_eq!(a, 11, "nothing of the aborted transaction applied");
        assert_eq!(holder(&shards, &other), None);
    });
    rt.block_on(pool.close());
}

/// A server down: a command fails as a lost connection does in redis-rs (an
/// I/O error); in a pipeline, the proxy's error reply in its place.
#[test]
fn a_server_down_is_an_io_error() {
    let rt = runtime();
    rt.block_on(async {
        // Nothing listens on port 1.
        let mut con = Pool::builder("down")
            .redis()
            .server("127.0.0.1:1:1")
            .build()
            .expect("pool");
        let err = con
            .get::<_, Option<String>>("k")
            .await
            .expect_err("refused");
        assert!(err.is_io_error(), "{err:?}");
        let replies: Vec<redis::Value> = redis::pipe()
            .ignore_errors()
            .get("k")
            .cmd("PING")
            .query_async(&mut con)
            .await
            .expect("errors kept as values");
        match &replies[..] {
            [redis::Value::ServerError(e), redis::Value::SimpleString(pong)] => {
                assert_eq!(e.details(), Some("Connection refused"), "{e:?}");
                assert_eq!(pong, "PONG");
            }
            other => panic!("{other:?}"),
        }
    });
}
