//! The embedding API against real servers: an in-process `Pool` and a
//! twemproxy on the same config put every key on the same server (checked on
//! the backends themselves, both directions), the typed Redis and memcached
//! helpers round-trip, concurrent callers each get their own replies, and
//! failures surface as the `CallError` variant that names them.
//!
//! Pool work runs inside a tokio runtime; the backend checks use the
//! harness's blocking clients outside it.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use twem_core::pool::{BackendErrorKind, CallError, Pool, ServerError, Stored};
use twem_proto::resp::{Reply, Request};
use twem_tests::{
    build_over, bulk, free_port, holders, pool_yaml, runtime, shard_servers, Memcached, ProxyProc,
    Redis,
};

/// A Redis pool over `shards` named shard0.., with nutcracker's default
/// hash and distribution, listening on `port` when run by a proxy.
fn redis_yaml(port: u16, shards: &[Redis]) -> String {
    let settings = "  redis: true\n  hash_tag: \"{}\"\n  timeout: 2000\n";
    pool_yaml("alpha", port, settings, &shard_servers(shards))
}

/// The one shard holding `key`, found by asking every shard directly;
/// panics if it is on none or on several.
fn holder(shards: &[Redis], key: &str) -> usize {
    let found = holders(shards, key);
    assert_eq!(found.len(), 1, "{key} is on shards {found:?}");
    found[0]
}

fn shard_index(name: &str) -> usize {
    name.trim_start_matches("shard")
        .parse()
        .unwrap_or_else(|_| panic!("server name {name} is not shardN"))
}

/// Keys written in-process are where twemproxy looks for them, and keys
/// written through twemproxy are where the pool looks: each key is on exactly
/// the backend `Pool::server_for` names, and every shard holds some.
#[test]
fn pool_and_proxy_agree_on_placement_redis() {
    let shards: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let port = free_port();
    let yaml = redis_yaml(port, &shards);
    let proxy = ProxyProc::twem(&yaml, port, &[]);
    let rt = runtime();
    let pool = rt
        .block_on(async { Pool::from_yaml(&yaml, None) })
        .expect("pool");
    // Keys whose varying part comes first: fnv1a_64 spreads those well.
    let from_pool: Vec<String> = (0..150).map(|i| format!("{i}:from-pool")).collect();
    let from_proxy: Vec<String> = (0..150).map(|i| format!("{i}:from-proxy")).collect();

    rt.block_on(async {
        let r = pool.redis();
        for k in &from_pool {
            r.set(k.clone(), format!("pool {k}"))
                .await
                .expect("SET through the pool");
        }
    });
    let mut proxy_client = twem_tests::Client::connect(port);
    for k in &from_proxy {
        assert_eq!(
            proxy_client.cmd(&[b"SET", k.as_bytes(), format!("proxy {k}").as_bytes()]),
            b"+OK\r\n"
        );
    }

    // Read each set through the other side.
    for k in &from_pool {
        assert_eq!(
            proxy_client.cmd(&[b"GET", k.as_bytes()]),
            bulk(format!("pool {k}").as_bytes()),
            "twemproxy reading {k} written by the pool"
        );
    }
    rt.block_on(async {
        let r = pool.redis();
        let got = r.mget(&from_proxy).await.expect("MGET through the pool");
        let want: Vec<Option<Bytes>> = from_proxy
            .iter()
            .map(|k| Some(Bytes::from(format!("proxy {k}"))))
            .collect();
        assert_eq!(got, want, "pool reading keys written by twemproxy");
    });

    // And on the backends: every key on the one shard the ring names.
    let mut per_shard = BTreeMap::new();
    for k in from_pool.iter().chain(&from_proxy) {
        let named = pool.server_for(k.as_bytes()).expect("a live server");
        assert_eq!(holder(&shards, k), shard_index(&named), "{k}");
        *per_shard.entry(named).or_insert(0) += 1;
    }
    assert_eq!(
        per_shard.len(),
        3,
        "keys spread over every shard: {per_shard:?}"
    );
    drop(proxy);
    rt.block_on(pool.close());
}

/// The same agreement for memcached, and a multi-key get through the pool
/// merges values from every server in key order.
#[test]
fn pool_and_proxy_agree_on_placement_memcache() {
    let servers: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let port = free_port();
    let mut yaml = format!("beta:\n  listen: 127.0.0.1:{port}\n  timeout: 2000\n  servers:\n");
    for (i, s) in servers.iter().enumerate() {
        yaml.push_str(&format!("   - {}:1 mc{i}\n", s.addr()));
    }
    let _proxy = ProxyProc::twem(&yaml, port, &[]);
    let rt = runtime();
    let pool = rt
        .block_on(async { Pool::from_yaml(&yaml, None) })
        .expect("pool");
    let keys: Vec<String> = (0..100).map(|i| format!("{i}:mc")).collect();

    rt.block_on(async {
        let mc = pool.memcache();
        for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            assert_eq!(
                mc.set(k, i as u32, 0, k).await.expect("set"),
                Stored::Stored
            );
        }
    });
    let mut proxy_client = twem_tests::Client::connect(port);
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        let line = format!("set {k} {i} 0 {}\r\n{k}\r\n", k.len());
        assert_eq!(proxy_client.mc(line.as_bytes()), b"STORED\r\n");
    }

    // Every key from both writers, read in one multi-get through the pool.
    let got = rt.block_on(async { pool.memcache().get_multi(&keys).await.expect("get") });
    let got: Vec<(String, u32, String)> = got
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                v.flags,
                String::from_utf8_lossy(&v.data).into_owned(),
            )
        })
        .collect();
    let want: Vec<(String, u32, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i as u32, k.clone()))
        .collect();
    assert_eq!(got, want);

    let mut per_server = BTreeMap::new();
    for k in &keys {
        let named = pool.server_for(k.as_bytes()).expect("a live server");
        let found: Vec<usize> = servers
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.client()
                    .mc(format!("get {k}\r\n").as_bytes())
                    .starts_with(b"VALUE ")
            })
            .map(|(i, _)| i)
            .collect();
        let idx: usize = named.trim_start_matches("mc").parse().expect("mcN");
        assert_eq!(found, vec![idx], "{k}");
        *per_server.entry(named).or_insert(0) += 1;
    }
    assert_eq!(per_server.len(), 2, "keys on both servers: {per_server:?}");
    rt.block_on(pool.close());
}

/// Every typed Redis helper gives back what Redis answered, across shards.
#[test]
fn redis_helpers_round_trip() {
    let shards: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let rt = runtime();
    rt.block_on(async {
        let pool = build_over(
            Pool::builder("typed").redis().hash_tag(b'{', b'}'),
            shards.iter().map(|s| s.addr()),
        );
        let r = pool.redis();

        // set / get, and a miss.
        r.set("a", "1").await.expect("set");
        assert_eq!(r.get("a").await.expect("get"), Some(Bytes::from("1")));
        assert_eq!(r.get("missing").await.expect("get"), None);

        // mset / mget across shards, a miss in the middle keeps its place.
        let pairs: Vec<(String, String)> = (0..40)
            .map(|i| (format!("m{i}"), format!("v{i}")))
            .collect();
        r.mset(&pairs).await.expect("mset");
        let mut keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
        keys.insert(20, "nope".into());
        let got = r.mget(&keys).await.expect("mget");
        assert_eq!(got.len(), 41);
        assert_eq!(got[20], None);
        assert_eq!(got[0], Some(Bytes::from("v0")));
        assert_eq!(got[40], Some(Bytes::from("v39")));
        assert!(got.iter().filter(|v| v.is_some()).count() == 40);

        // exists / del sum their per-shard counts; a repeated key counts twice.
        assert_eq!(
            r.exists(&["m1", "m2", "nope", "m1"]).await.expect("exists"),
            3
        );
        assert_eq!(r.del(&["m1", "m2", "nope"]).await.expect("del"), 2);
        assert_eq!(r.exists(&["m1", "m2"]).await.expect("exists"), 0);

        // incr, and the server's error reply for a non-integer.
        assert_eq!(r.incr("n").await.expect("incr"), 1);
        assert_eq!(r.incr("n").await.expect("incr"), 2);
        r.set("s", "x").await.expect("set");
        match r.incr("s").await {
            Err(CallError::Server(msg)) => {
                assert!(msg.to_string().contains("not an integer"), "{msg}")
            }
            other => panic!("INCR of a string: {other:?}"),
        }

        // expire: true for an existing key (and the TTL is set), false otherwise.
        assert!(r.expire("a", 100).await.expect("expire"));
        assert!(!r.expire("missing", 100).await.expect("expire"));
        let ttl = pool
            .call(Request::from_args(["TTL", "a"]))
            .await
            .expect("ttl");
        assert!(
            matches!(ttl, Reply::Integer(t) if t > 90 && t <= 100),
            "{ttl:?}"
        );

        // eval on hash-tagged keys, which share a server.
        let out = r
            .eval(
                "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[2])",
                &["{u}:x", "{u}:y"],
                &["v"],
            )
            .await
            .expect("eval");
        assert_eq!(out, Reply::Bulk(None));
        assert_eq!(r.get("{u}:x").await.expect("get"), Some(Bytes::from("v")));

        // A server's error reply through `call` is Ok(Reply::Error)...
        let err = pool
            .call(Request::from_args(["LPUSH", "a", "x"]))
            .await
            .expect("call");
        assert!(
            matches!(&err, Reply::Error(e) if e.starts_with(b"WRONGTYPE")),
            "{err:?}"
        );
        // ...while a request the pool refuses is CallError::Request.
        match pool.call(Request::from_args(["NOSUCHCMD", "x"])).await {
            Err(CallError::Request(msg)) => {
                assert!(msg.to_string().contains("unknown command"), "{msg}")
            }
            other => panic!("unknown command: {other:?}"),
        }
        pool.close().await;
    });
}

/// Every typed memcached helper maps memcached's replies as documented.
#[test]
fn memcache_helpers_round_trip() {
    let servers: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let rt = runtime();
    rt.block_on(async {
        let pool = build_over(Pool::builder("typed-mc"), servers.iter().map(|s| s.addr()));
        let mc = pool.memcache();

        assert_eq!(mc.set("k", 5, 0, "v1").await.expect("set"), Stored::Stored);
        let v = mc.get("k").await.expect("get").expect("hit");
        assert_eq!((v.flags, &v.data[..], v.cas), (5, &b"v1"[..], None));
        assert_eq!(mc.get("missing").await.expect("get"), None);

        assert_eq!(
            mc.add("k", 0, 0, "x").await.expect("add"),
            Stored::NotStored
        );
        assert_eq!(mc.add("k2", 0, 0, "x").await.expect("add"), Stored::Stored);
        assert_eq!(
            mc.replace("k3", 0, 0, "x").await.expect("replace"),
            Stored::NotStored
        );
        assert_eq!(
            mc.replace("k2", 0, 0, "y").await.expect("replace"),
            Stored::Stored
        );

        // gets + cas: fresh unique stores, stale one is EXISTS, missing key NOT_FOUND.
        let unique = mc
            .gets("k")
            .await
            .expect("gets")
            .and_then(|v| v.cas)
            .expect("cas unique");
        assert_eq!(
            mc.cas("k", 0, 0, "v2", unique).await.expect("cas"),
            Stored::Stored
        );
        assert_eq!(
            mc.cas("k", 0, 0, "v3", unique).await.expect("cas"),
            Stored::Exists
        );
        assert_eq!(
            mc.cas("gone", 0, 0, "v", unique).await.expect("cas"),
            Stored::NotFound
        );
        assert_eq!(
            mc.get("k").await.expect("get").map(|v| v.data),
            Some(Bytes::from("v2"))
        );

        // incr / decr: the new value, None for a missing key.
        mc.set("n", 0, 0, "10").await.expect("set");
        assert_eq!(mc.incr("n", 5).await.expect("incr"), Some(15));
        assert_eq!(
            mc.decr("n", 20).await.expect("decr"),
            Some(0),
            "decr stops at 0"
        );
        assert_eq!(mc.incr("nn", 1).await.expect("incr"), None);

        assert!(mc.touch("n", 100).await.expect("touch"));
        assert!(!mc.touch("nn", 100).await.expect("touch"));
        assert!(mc.delete("n").await.expect("delete"));
        assert!(!mc.delete("n").await.expect("delete"));

        // Multi-gets across both servers, misses left out, key order kept.
        let keys: Vec<String> = (0..30).map(|i| format!("{i}:multi")).collect();
        for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
            mc.set(k, i as u32, 0, format!("d{i}")).await.expect("set");
        }
        let got = mc.get_multi(&keys).await.expect("get_multi");
        let want: Vec<String> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, k)| k.clone())
            .collect();
        let got_keys: Vec<String> = got
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(got_keys, want);
        assert!(got.iter().all(|(k, v)| {
            let i: usize = String::from_utf8_lossy(k)
                .split(':')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            v.flags == i as u32 && v.data == format!("d{i}").as_bytes() && v.cas.is_none()
        }));
        let with_cas = mc.gets_multi(&keys).await.expect("gets_multi");
        assert_eq!(with_cas.len(), 20);
        assert!(with_cas.iter().all(|(_, v)| v.cas.is_some()));

        // An invalid key is refused before anything is sent.
        match mc.get("bad key").await {
            Err(CallError::Request(_)) => {}
            other => panic!("key with a space: {other:?}"),
        }
        pool.close().await;
    });
}

/// 64 tasks x 200 operations on one pool: every reply is the caller's own
/// (each value names its task and sequence number, and a per-task counter
/// ends at exactly 200).
#[test]
fn concurrent_callers_get_their_own_replies() {
    let shards: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let rt = runtime();
    rt.block_on(async {
        let pool = build_over(
            Pool::builder("many").redis().server_connections(2),
            shards.iter().map(|s| s.addr()),
        );
        let mut tasks = Vec::new();
        for t in 0..64u32 {
            let r = pool.redis();
            tasks.push(tokio::spawn(async move {
                for s in 0..200u32 {
                    let key = format!("{t}:{s}:c");
                    let value = format!("task {t} seq {s}");
                    r.set(key.clone(), value.clone()).await?;
                    let got = r.get(key.clone()).await?;
                    if got.as_deref() != Some(value.as_bytes()) {
                        return Err(CallError::Server(ServerError::Unexpected(format!(
                            "{key}: got {got:?}, want {value}"
                        ))));
                    }
                    let n = r.incr(format!("{t}:counter")).await?;
                    if n != i64::from(s) + 1 {
                        return Err(CallError::Server(ServerError::Unexpected(format!(
                            "task {t} counter {n} at seq {s}"
                        ))));
                    }
                }
                Ok::<u32, CallError>(t)
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            let done = task.await.expect("task did not panic");
            assert_eq!(done.expect("every reply is the caller's own"), i as u32);
        }
        pool.close().await;
    });
}

/// A server nobody listens on: calls routed to it fail with
/// `CallError::Backend` of kind ConnectionRefused naming that server, while
/// keys of a live server are still served.
#[test]
fn dead_server_is_connection_refused() {
    let live = Redis::start();
    let dead_port = free_port();
    let rt = runtime();
    rt.block_on(async {
        let pool = Pool::builder("half")
            .redis()
            .timeout(Duration::from_secs(2))
            .server(&format!("{}:1 live", live.addr()))
            .server(&format!("127.0.0.1:{dead_port}:1 dead"))
            .build()
            .expect("pool");
        let key_on = |name: &str| {
            (0..10_000)
                .map(|i| format!("{i}:k"))
                .find(|k| pool.server_for(k.as_bytes()).as_deref() == Some(name))
                .expect("a key for each server")
        };
        let (live_key, dead_key) = (key_on("live"), key_on("dead"));
        let r = pool.redis();
        r.set(live_key.clone(), "ok")
            .await
            .expect("live server answers");
        match r.get(dead_key.clone()).await {
            Err(CallError::Backend(e)) => {
                assert_eq!(e.kind, BackendErrorKind::ConnectionRefused, "{e}");
                assert_eq!(&*e.server, "dead", "the error names the server");
            }
            other => panic!("GET on a dead server: {other:?}"),
        }
        // The live server is unaffected.
        assert_eq!(r.get(live_key).await.expect("get"), Some(Bytes::from("ok")));
        pool.close().await;
    });

    // memcached pools report it the same way.
    rt.block_on(async {
        let pool = Pool::builder("dead-mc")
            .server(&format!("127.0.0.1:{dead_port}:1"))
            .build()
            .expect("pool");
        match pool.memcache().set("k", 0, 0, "v").await {
            Err(CallError::Backend(e)) => assert_eq!(e.kind, BackendErrorKind::ConnectionRefused),
            other => panic!("set on a dead server: {other:?}"),
        }
        pool.close().await;
    });
}

/// After `close().await` every call on the pool and its clones fails with
/// `CallError::Closed` naming the pool; a request dispatched before the
/// close still gets its reply.
#[test]
fn closed_pool_refuses_calls() {
    let server = Redis::start();
    let rt = runtime();
    rt.block_on(async {
        let pool = Pool::builder("shut")
            .redis()
            .server(&format!("{}:1", server.addr()))
            .build()
            .expect("pool");
        let clone = pool.clone();
        pool.redis().set("k", "v").await.expect("set before close");
        assert!(!pool.is_closed());

        let in_flight = pool.dispatch_redis(&Request::from_args(["GET", "k"]), 0);
        pool.close().await;
        assert!(clone.is_closed());
        assert_eq!(in_flight.await.expect("in-flight reply"), bulk(b"v"));

        match clone.redis().get("k").await {
            Err(CallError::Closed(name)) => assert_eq!(&*name, "shut"),
            other => panic!("GET after close: {other:?}"),
        }
        match pool.call(Request::from_args(["SET", "k", "w"])).await {
            Err(CallError::Closed(_)) => {}
            other => panic!("SET after close: {other:?}"),
        }
    });
    // The SET after close never reached the server.
    assert_eq!(server.client().cmd(&[b"GET", b"k"]), bulk(b"v"));
}

/// The embedded transaction API keeps the proxy's rules: keys on one server
/// are applied together, a key on another server is refused before anything
/// is sent, and a watched key changed by someone else applies nothing.
#[test]
fn embedded_transactions_apply_whole_or_not_at_all() {
    let shards: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let yaml = redis_yaml(free_port(), &shards);
    let rt = runtime();
    rt.block_on(async {
        let pool = Pool::from_yaml(&yaml, None).expect("pool");
        let mut tx = pool.transaction();
        tx.queue(&Request::from_args(
            [&b"INCR"[..], b"{t}a"].map(Bytes::from_static),
        ))
        .expect("queued");
        tx.queue(&Request::from_args(
            [&b"INCR"[..], b"{t}b"].map(Bytes::from_static),
        ))
        .expect("queued");
        let got = tx.exec().await.expect("exec");
        assert_eq!(got, Some(vec![Reply::Integer(1), Reply::Integer(1)]));

        // Two servers: the second key is refused, nothing was sent.
        let (a, b) = {
            let ring = pool.ring();
            let mut on = [None, None];
            for i in 0..10_000 {
                let k = format!("k{i}");
                let s = ring.locate(k.as_bytes()).expect("live");
                on[s].get_or_insert(k);
                if on.iter().all(Option::is_some) {
                    break;
                }
            }
            (
                on[0].clone().expect("key on 0"),
                on[1].clone().expect("key on 1"),
            )
        };
        let mut tx = pool.transaction();
        tx.queue(&Request::from_args([
            Bytes::from_static(b"SET"),
            Bytes::from(a.clone()),
            Bytes::from_static(b"x"),
        ]))
        .expect("first key chooses the server");
        let refused = tx
            .queue(&Request::from_args([
                Bytes::from_static(b"SET"),
                Bytes::from(b.clone()),
                Bytes::from_static(b"x"),
            ]))
            .expect_err("another server");
        assert!(refused.to_string().contains("CROSSSLOT"), "{refused}");
        tx.abort();
        assert_eq!(
            pool.call(Request::from_args([
                Bytes::from_static(b"EXISTS"),
                Bytes::from(a.clone())
            ]))
            .await
            .expect("exists"),
            Reply::Integer(0)
        );

        // WATCH, changed by another caller: nothing applied.
        let mut tx = pool.transaction();
        tx.watch(&[a.as_str()]).await.expect("watch");
        pool.call(Request::from_args([
            Bytes::from_static(b"SET"),
            Bytes::from(a.clone()),
            Bytes::from_static(b"theirs"),
        ]))
        .await
        .expect("set");
        tx.queue(&Request::from_args([
            Bytes::from_static(b"SET"),
            Bytes::from(a.clone()),
            Bytes::from_static(b"mine"),
        ]))
        .expect("queued");
        assert_eq!(tx.exec().await.expect("exec"), None);
        assert_eq!(
            pool.call(Request::from_args([
                Bytes::from_static(b"GET"),
                Bytes::from(a.clone())
            ]))
            .await
            .expect("get"),
            Reply::Bulk(Some(Bytes::from_static(b"theirs")))
        );
    });
    drop(shards);
}

/// The command table through `Pool::call`: keys on two servers are a
/// `CallError::Request` with the `CROSSSLOT` code and nothing is sent;
/// per-connection commands say what to use instead; SCRIPT LOAD and INFO
/// reach every server.
#[test]
fn pool_call_follows_the_command_table() {
    let shards: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let rt = runtime();
    rt.block_on(async {
        let pool = build_over(
            Pool::builder("table").redis().hash_tag(b'{', b'}'),
            shards.iter().map(|s| s.addr()),
        );
        let a = "k:0".to_string();
        let other = (1..)
            .map(|i| format!("k:{i}"))
            .find(|k| pool.server_for(k.as_bytes()) != pool.server_for(a.as_bytes()))
            .expect("a key on the other server");
        pool.call(owned(&["RPUSH", a.as_str(), "x"]))
            .await
            .expect("rpush");
        match pool
            .call(owned(&["RPOPLPUSH", a.as_str(), other.as_str()]))
            .await
        {
            Err(CallError::Request(e)) => {
                assert_eq!(e.code(), Some("CROSSSLOT"));
                assert_eq!(
                    e.message(),
                    "Keys in request don't hash to the same server (use a hash tag)"
                );
            }
            other => panic!("cross-server RPOPLPUSH: {other:?}"),
        }
        let len = pool.call(owned(&["LLEN", a.as_str()])).await.expect("llen");
        assert_eq!(len, Reply::Integer(1), "the element stayed");
        match pool.call(owned(&["MULTI"])).await {
            Err(CallError::Request(e)) => assert_eq!(
                e.to_string(),
                "ERR MULTI is per connection: embedders use the Pool's transaction API"
            ),
            other => panic!("MULTI: {other:?}"),
        }
        let sha = match pool
            .call(owned(&[
                "SCRIPT",
                "LOAD",
                "return redis.call('LLEN', KEYS[1])",
            ]))
            .await
            .expect("script load")
        {
            Reply::Bulk(Some(sha)) => sha,
            other => panic!("SCRIPT LOAD: {other:?}"),
        };
        let sha = String::from_utf8(sha.to_vec()).expect("sha");
        for key in [a.as_str(), other.as_str()] {
            let n = pool
                .call(owned(&["EVALSHA", sha.as_str(), "1", key]))
                .await
                .expect("evalsha");
            assert!(matches!(n, Reply::Integer(_)), "{key}: {n:?}");
        }
        match pool.call(owned(&["INFO"])).await.expect("info") {
            Reply::Bulk(Some(text)) => {
                let text = String::from_utf8_lossy(&text);
                assert!(text.contains("redis_version:"), "{text}");
                assert!(text.contains("loading:0\r\n"), "{text}");
                assert!(text.contains("db0:keys=1,"), "{text}");
            }
            other => panic!("INFO: {other:?}"),
        }
        pool.close().await;
    });
}

/// A request from borrowed words (`Request::from_args` wants owned ones).
fn owned(args: &[&str]) -> Request {
    Request::from_args(args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())))
}

/// An embedder subscribes with the proxy's placement and gets what is
/// published through a twemproxy on the same config; a blocking call waits
/// on a connection of its own while other calls go on.
#[test]
fn embedded_subscription_and_blocking_calls() {
    let shards: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let port = free_port();
    let yaml = redis_yaml(port, &shards);
    let proxy = ProxyProc::twem(&yaml, port, &[]);
    let rt = runtime();
    rt.block_on(async {
        let pool = Pool::from_yaml(&yaml, None).expect("pool");
        // Two channels on different servers.
        let ring = pool.ring();
        let mut on = [None, None];
        for i in 0..10_000 {
            let k = format!("ch{i}");
            let s = ring.locate(k.as_bytes()).expect("live");
            on[s].get_or_insert(k);
            if on.iter().all(Option::is_some) {
                break;
            }
        }
        let chans = [on[0].clone().expect("ch0"), on[1].clone().expect("ch1")];
        let mut sub = pool.subscribe(&chans).await.expect("subscribe");
        sub.psubscribe(&["ch*"]).await.expect("psubscribe");
        for ch in &chans {
            // Published through the proxy, a separate process.
            let mut c = twem_tests::Client::connect(port);
            assert_eq!(c.cmd(&[b"PUBLISH", ch.as_bytes(), b"hi"]), b":2\r\n");
            let mut got = [
                sub.next_message().await.expect("message"),
                sub.next_message().await.expect("pmessage"),
            ];
            got.sort_by_key(|m| m.pattern.is_some());
            assert_eq!(got[0].channel, ch.as_bytes());
            assert_eq!(got[0].payload, &b"hi"[..]);
            assert_eq!(got[1].pattern.as_deref(), Some(&b"ch*"[..]));
        }
        // The same subscription read as a Stream.
        {
            let mut c = twem_tests::Client::connect(port);
            assert_eq!(c.cmd(&[b"PUBLISH", chans[0].as_bytes(), b"s"]), b":2\r\n");
            let mut sub = std::pin::Pin::new(&mut sub);
            for _ in 0..2 {
                let m =
                    std::future::poll_fn(|cx| futures_core::Stream::poll_next(sub.as_mut(), cx))
                        .await
                        .expect("an item")
                        .expect("a message");
                assert_eq!(m.payload, &b"s"[..]);
            }
        }
        // BLPOP waits 300 ms on its own connection; a GET meanwhile is
        // answered at once.
        let blocked = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(owned(&["BLPOP", "{q}list", "0.3"])).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = std::time::Instant::now();
        pool.call(owned(&["GET", "{q}other"])).await.expect("get");
        assert!(
            t0.elapsed() < Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
        let r = blocked.await.expect("join").expect("blpop");
        assert_eq!(r, Reply::Array(None));
    });
    drop(proxy);
    drop(shards);
}
