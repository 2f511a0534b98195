//! A Redis Cluster behind twem (`cluster: true`): six real redis-server
//! nodes (three masters, a replica each, made by `redis-cli --cluster
//! create`), twem in front with two of them as seeds.
//!
//! - correctness: twem's slots are the cluster's (`CLUSTER KEYSLOT`), MSET
//!   and MGET over keys in every master's range, split by slot; same-slot
//!   commands forwarded, others refused with Redis's own `-CROSSSLOT`;
//!   hash-tag transactions; SCAN over every master; per-node stats;
//! - live resharding: 16 clients pipeline SETs and GETs whose values name
//!   (client, sequence) while `redis-cli --cluster reshard` moves 1,000
//!   slots: no crossed, reordered or redirection error reply, every key
//!   readable afterwards, and the redirections were followed (counted);
//! - failover: a master SIGKILLed, its replica promoted: the time until
//!   every key answers again, and the errors in the window (only for the
//!   dead master's slots) are printed;
//! - transactions: a slot moved or migrating under a transaction, which
//!   twem sends again whole, or refuses with nothing applied;
//! - node churn: nodes replaced by new ones (new addresses) twice under a
//!   full `cluster_max_nodes` table, whose entries the new nodes take.
//!
//! TRYAGAIN and endless MOVED: a fake node shows that the waits and
//! redirections are followed and bounded.
//!
//! The tests with a real cluster share the machine's two cores, so they
//! run one at a time (a lock), each with its own cluster.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use twem_core::cluster::key_slot;
use twem_tests::{
    free_port, resp_cmd, run_bounded, run_within, twemproxy_bin, Client, ProxyProc, Redis,
};

/// One test's cluster at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Six nodes made into a cluster of three masters with a replica each.
struct Cluster {
    nodes: Vec<Redis>,
}

/// A master as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
struct Master {
    id: String,
    port: u16,
    ranges: Vec<(u16, u16)>,
}

impl Cluster {
    fn start() -> Cluster {
        // `redis-cli --cluster create` waits without end for the nodes to
        // agree ("Waiting for the cluster to join"); on a loaded machine
        // that wait has been seen not to end. What is under test is twem,
        // not the tool: fresh nodes and a new try, three at most.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Cluster::try_start() {
                Ok(c) => return c,
                Err(e) => {
                    eprintln!("cluster create failed, trying again with new nodes: {e}");
                    failures.push(e);
                }
            }
        }
        panic!("no cluster could be made: {failures:#?}");
    }

    fn try_start() -> Result<Cluster, String> {
        let nodes: Vec<Redis> = (0..6).map(|_| cluster_node()).collect();
        let addrs: Vec<String> = nodes.iter().map(Redis::addr).collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]).args(&addrs).args([
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ]);
        let out = run_within(&mut create, b"", Duration::from_secs(60))?;
        if !out.status.success() {
            return Err(format!(
                "cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        let c = Cluster { nodes };
        c.wait_consistent(Duration::from_secs(30));
        c.wait_replicas(Duration::from_secs(30));
        Ok(c)
    }

    /// Wait until every replica has synced with its master: a replica that
    /// never did would not be promoted (its data counts as too old).
    fn wait_replicas(&self, limit: Duration) {
        let start = Instant::now();
        for n in &self.nodes {
            loop {
                let info = cli(n.port, &["INFO", "replication"]);
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(start.elapsed() < limit, "a replica did not sync: {info}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Wait until every live node says the cluster is ok and they all
    /// agree on the masters' slots.
    fn wait_consistent(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let views: Vec<Option<String>> = self
                .nodes
                .iter()
                .map(|n| {
                    let info = cli(n.port, &["CLUSTER", "INFO"]);
                    if !info.contains("cluster_state:ok") {
                        return None;
                    }
                    let mut m = masters_of(n.port);
                    m.sort_by_key(|m| m.port);
                    Some(format!(
                        "{:?}",
                        m.iter()
                            .map(|m| (m.port, m.ranges.clone()))
                            .collect::<Vec<_>>()
                    ))
                })
                .collect();
            if views.iter().all(|v| v.is_some() && *v == views[0]) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "the cluster did not settle in {limit:?}: {views:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn masters(&self) -> Vec<Master> {
        let mut m = masters_of(self.nodes[0].port);
        m.sort_by_key(|m| m.ranges.first().map_or(u16::MAX, |r| r.0));
        m
    }

    /// twem in front, seeded with the first two nodes.
    fn twem(&self, port: u16) -> ProxyProc {
        self.twem_refreshing(port, 1000)
    }

    /// twem in front, reading the slot map every `refresh_ms` (and after
    /// a `-MOVED`).
    fn twem_refreshing(&self, port: u16, refresh_ms: u64) -> ProxyProc {
        let yaml = format!(
            "c:\n  listen: 127.0.0.1:{port}\n  redis: true\n  cluster: true\n  cluster_refresh: {refresh_ms}\n  timeout: 3000\n  servers:\n   - 127.0.0.1:{}:1\n   - 127.0.0.1:{}:1\n",
            self.nodes[0].port, self.nodes[1].port
        );
        ProxyProc::twem(&yaml, port, &[])
    }
}

/// `redis-cli -p port args...`, its output as text.
fn cli(port: u16, args: &[&str]) -> String {
    let out = run_bounded(
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args),
        Duration::from_secs(30),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The masters serving slots, from `CLUSTER NODES` asked of `port`.
fn masters_of(port: u16) -> Vec<Master> {
    cli(port, &["CLUSTER", "NODES"])
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 8 || !f[2].contains("master") || f[2].contains("fail") {
                return None;
            }
            let port: u16 = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let ranges: Vec<(u16, u16)> = f[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|a| (a, a)),
                })
                .collect();
            (!ranges.is_empty()).then(|| Master {
                id: f[0].to_owned(),
                port,
                ranges,
            })
        })
        .collect()
}

fn in_ranges(slot: u16, ranges: &[(u16, u16)]) -> bool {
    ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
}

/// A bulk reply's bytes.
fn bulk(v: &str) -> Vec<u8> {
    format!("${}\r\n{v}\r\n", v.len()).into_bytes()
}

fn stats_field(p: &ProxyProc, field: &str) -> i64 {
    p.stats()["c"][field].as_i64().unwrap_or(-1)
}

#[test]
fn cluster_correctness() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start();
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{masters:?}");
    // twem's slots are Redis's.
    let mut node = Client::connect(cluster.nodes[0].port);
    for i in 0..300 {
        let key = match i % 3 {
            0 => format!("key:{i}"),
            1 => format!("{{user{i}}}.followers"),
            _ => format!("a{{}}{{b{i}}}"),
        };
        let want = format!(":{}\r\n", key_slot(key.as_bytes()));
        assert_eq!(
            String::from_utf8_lossy(&node.cmd(&[b"CLUSTER", b"KEYSLOT", key.as_bytes()])),
            want,
            "{key}"
        );
    }

    let port = free_port();
    let proxy = cluster.twem(port);
    let mut c = Client::connect(port);
    // 300 keys over every master's range, in one MSET and one MGET.
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for m in &masters {
        assert!(
            keys.iter()
                .any(|k| in_ranges(key_slot(k.as_bytes()), &m.ranges)),
            "no key on {m:?}"
        );
    }
    let mut mset: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
    for k in &keys {
        mset.push(k.clone().into_bytes());
        mset.push(format!("v-{k}").into_bytes());
    }
    let args: Vec<&[u8]> = mset.iter().map(Vec::as_slice).collect();
    assert_eq!(c.cmd(&args), b"+OK\r\n");
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(keys.iter().map(|k| k.as_bytes()));
    let mut want = format!("*{}\r\n", keys.len()).into_bytes();
    for k in &keys {
        want.extend(bulk(&format!("v-{k}")));
    }
    assert_eq!(c.cmd(&mget), want);
    // Each master holds exactly its slots' keys: the split went by slot.
    for m in &masters {
        let mut direct = Client::connect(m.port);
        let n = keys
            .iter()
            .filter(|k| in_ranges(key_slot(k.as_bytes()), &m.ranges))
            .count();
        assert_eq!(
            String::from_utf8_lossy(&direct.cmd(&[b"DBSIZE"])),
            format!(":{n}\r\n"),
            "{m:?}"
        );
    }
    // Counting commands split and summed.
    let mut exists: Vec<&[u8]> = vec![b"EXISTS"];
    exists.extend(keys.iter().map(|k| k.as_bytes()));
    exists.push(b"missing");
    assert_eq!(c.cmd(&exists), b":300\r\n");
    assert_eq!(c.cmd(&[b"DBSIZE"]), b":300\r\n");

    // SCAN visits every master: every key once.
    let mut cursor = b"0".to_vec();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        c.send_cmd(&[b"SCAN", &cursor, b"COUNT", b"100"]);
        let reply = c.read_resp();
        let text = String::from_utf8_lossy(&reply).into_owned();
        let lines: Vec<&str> = text.split("\r\n").collect();
        cursor = lines[2].as_bytes().to_vec();
        // `*2`, `$n`, the cursor, `*k`, then `$n` and a key, k times.
        for key in lines.iter().skip(5).step_by(2).filter(|l| !l.is_empty()) {
            seen.insert(key.to_string());
        }
        if cursor == b"0" {
            break;
        }
    }
    assert_eq!(seen.len(), 300, "SCAN saw {} keys", seen.len());

    // Same-slot commands go through; others get Redis's own CROSSSLOT,
    // even when both slots are on one node.
    assert_eq!(c.cmd(&[b"RPUSH", b"{q}a", b"x"]), b":1\r\n");
    assert_eq!(c.cmd(&[b"RPOPLPUSH", b"{q}a", b"{q}b"]), bulk("x"));
    let (a, b) = {
        let m = &masters[0];
        let on: Vec<&String> = keys
            .iter()
            .filter(|k| in_ranges(key_slot(k.as_bytes()), &m.ranges))
            .collect();
        let b = on
            .iter()
            .find(|k| key_slot(k.as_bytes()) != key_slot(on[0].as_bytes()))
            .expect("two slots on one master");
        (on[0].clone(), (*b).clone())
    };
    assert_eq!(
        c.cmd(&[b"RENAME", a.as_bytes(), b.as_bytes()]),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(
        c.cmd(&[b"SUNIONSTORE", b"{x}d", b"{x}s", b"{y}s"]),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    // Scripts run on the node of their keys when they share a slot.
    assert_eq!(
        c.cmd(&[
            b"EVAL",
            b"return redis.call('SET', KEYS[1], ARGV[1])",
            b"1",
            b"{s}a",
            b"x"
        ]),
        b"+OK\r\n"
    );
    assert_eq!(
        c.cmd(&[
            b"EVAL",
            b"return redis.call('GET', KEYS[2])",
            b"2",
            b"{s}b",
            b"{s}a"
        ]),
        bulk("x")
    );
    assert_eq!(
        c.cmd(&[b"EVAL", b"return 1", b"2", b"{s}a", b"{t}a"]),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    // Hash-tag transactions run whole; a transaction over two slots does
    // not run at all.
    assert_eq!(c.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"SET", b"{u}name", b"ann"]), b"+QUEUED\r\n");
    assert_eq!(c.cmd(&[b"INCR", b"{u}visits"]), b"+QUEUED\r\n");
    assert_eq!(c.cmd(&[b"EXEC"]), b"*2\r\n+OK\r\n:1\r\n");
    assert_eq!(c.cmd(&[b"GET", b"{u}name"]), bulk("ann"));
    assert_eq!(c.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"SET", b"{u}x", b"1"]), b"+QUEUED\r\n");
    let other = c.cmd(&[b"SET", b"{v}x", b"1"]);
    if other == b"+QUEUED\r\n" {
        let exec = c.cmd(&[b"EXEC"]);
        assert!(exec.starts_with(b"-"), "{}", String::from_utf8_lossy(&exec));
    } else {
        assert!(
            other.starts_with(b"-"),
            "{}",
            String::from_utf8_lossy(&other)
        );
        let _ = c.cmd(&[b"DISCARD"]);
    }
    assert_eq!(c.cmd(&[b"EXISTS", b"{u}x", b"{v}x"]), b":0\r\n");

    // -ASK: a slot half-migrated by hand; a key not on its old owner is
    // on the importing node, and twem sends ASKING and the command there.
    let slot = key_slot(b"askkey");
    let from = owner_of(&masters, b"askkey");
    let to = other_master(&masters, from);
    let s = slot.to_string();
    start_migration(&s, from, to);
    assert_eq!(c.cmd(&[b"SET", b"askkey", b"there"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"GET", b"askkey"]), bulk("there"));
    let mut direct = Client::connect(to.port);
    assert_eq!(direct.cmd(&[b"ASKING"]), b"+OK\r\n");
    assert_eq!(direct.cmd(&[b"GET", b"askkey"]), bulk("there"));
    assert!(stats_field(&proxy, "cluster_ask") >= 2);
    // Pipelined with keys elsewhere: the replies stay in order.
    let mut batch = Vec::new();
    for k in keys.iter().take(50) {
        batch.extend(resp_cmd(&[b"GET", b"askkey"]));
        batch.extend(resp_cmd(&[b"GET", k.as_bytes()]));
    }
    c.send(&batch);
    for k in keys.iter().take(50) {
        assert_eq!(c.read_resp(), bulk("there"));
        assert_eq!(c.read_resp(), bulk(&format!("v-{k}")));
    }
    for port in [from.port, to.port] {
        assert_eq!(
            cli(port, &["CLUSTER", "SETSLOT", &s, "STABLE"]).trim(),
            "OK"
        );
    }

    // Pub/sub: shard channels on their slot's node, classic channels
    // broadcast by the cluster.
    let shard_ch = (0..)
        .map(|i| format!("ch{i}"))
        .find(|ch| {
            let slot = key_slot(ch.as_bytes());
            masters
                .iter()
                .any(|m| m.port != cluster.nodes[0].port && in_ranges(slot, &m.ranges))
        })
        .expect("a channel on another node");
    let mut sub = Client::connect(port);
    let conf = sub.cmd(&[b"SSUBSCRIBE", shard_ch.as_bytes()]);
    assert_eq!(
        conf,
        format!(
            "*3\r\n$10\r\nssubscribe\r\n${}\r\n{shard_ch}\r\n:1\r\n",
            shard_ch.len()
        )
        .into_bytes()
    );
    assert_eq!(
        c.cmd(&[b"SPUBLISH", shard_ch.as_bytes(), b"hello"]),
        b":1\r\n"
    );
    assert_eq!(
        sub.read_resp(),
        format!(
            "*3\r\n$8\r\nsmessage\r\n${}\r\n{shard_ch}\r\n$5\r\nhello\r\n",
            shard_ch.len()
        )
        .into_bytes()
    );
    let mut csub = Client::connect(port);
    assert_eq!(
        csub.cmd(&[b"SUBSCRIBE", b"news"]),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    let published = c.cmd(&[b"PUBLISH", b"news", b"hi"]);
    assert!(
        published.starts_with(b":"),
        "{}",
        String::from_utf8_lossy(&published)
    );
    assert_eq!(
        csub.read_resp(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    );

    // --locate asks the cluster: each key's slot and the node serving it.
    let input: String = keys.iter().take(40).map(|k| format!("{k}\n")).collect();
    let out = twem_tests::run_bounded_with_input(
        Command::new(twemproxy_bin())
            .args(["--locate", "-c"])
            .arg(&proxy.conf),
        input.as_bytes(),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 40);
    for (k, line) in keys.iter().zip(&lines) {
        let slot = key_slot(k.as_bytes());
        let owner = masters
            .iter()
            .find(|m| in_ranges(slot, &m.ranges))
            .expect("owner");
        assert_eq!(line, &format!("{slot} 127.0.0.1:{}", owner.port), "{k}");
    }

    // The embedded Pool is a cluster client too: same placement, same
    // splits, same redirections.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let conf = std::fs::read_to_string(&proxy.conf).expect("config");
    rt.block_on(async {
        let pool = twem_core::Pool::from_yaml(&conf, None).expect("pool");
        let mut mget = vec![bytes::Bytes::from_static(b"MGET")];
        mget.extend(keys.iter().take(50).map(|k| bytes::Bytes::from(k.clone())));
        let reply = pool
            .call(twem_proto::resp::Request::from_args(mget))
            .await
            .expect("MGET through the embedded pool");
        let want = twem_proto::resp::Reply::Array(Some(
            keys.iter()
                .take(50)
                .map(|k| twem_proto::resp::Reply::Bulk(Some(bytes::Bytes::from(format!("v-{k}")))))
                .collect(),
        ));
        assert_eq!(reply, want);
        assert_eq!(pool.server_for(b"k1"), {
            let slot = key_slot(b"k1");
            masters
                .iter()
                .find(|m| in_ranges(slot, &m.ranges))
                .map(|m| format!("127.0.0.1:{}", m.port))
        });
    });

    // read_from: prefer-replica: reads of one key and MGET's parts go to
    // the replicas (READONLY on their connections), writes never do.
    let rport = free_port();
    let ryaml = std::fs::read_to_string(&proxy.conf)
        .expect("config")
        .replace(
            &format!("listen: 127.0.0.1:{port}"),
            &format!("listen: 127.0.0.1:{rport}"),
        )
        .replace(
            "cluster: true\n",
            "cluster: true\n  read_from: prefer-replica\n",
        );
    let rproxy = ProxyProc::twem(&ryaml, rport, &[]);
    // Until it has read a map listing every replica online, the proxy
    // reads from masters: a replica just synced shows as `loading` in
    // CLUSTER SHARDS until the cluster's gossip carries its offset.
    let st = rproxy.stats_when(|s| s["c"]["cluster_nodes"].as_i64().unwrap_or(0) >= 6);
    assert_eq!(st["c"]["cluster_nodes"], 6, "{st}");
    for m in &masters {
        let mut direct = Client::connect(m.port);
        let acked = direct.cmd(&[b"WAIT", b"1", b"2000"]);
        assert_eq!(acked, b":1\r\n", "replica of {m:?} not caught up");
    }
    let mut rc = Client::connect(rport);
    assert_eq!(rc.cmd(&[b"SET", b"{r}written", b"w"]), b"+OK\r\n");
    for k in keys.iter().take(60) {
        assert_eq!(
            rc.cmd(&[b"GET", k.as_bytes()]),
            bulk(&format!("v-{k}")),
            "{k}"
        );
    }
    assert_eq!(rc.cmd(&mget), want);
    let replicas: Vec<u16> = cluster
        .nodes
        .iter()
        .map(|n| n.port)
        .filter(|p| masters.iter().all(|m| m.port != *p))
        .collect();
    assert_eq!(replicas.len(), 3);
    for p in &replicas {
        let stats = cli(*p, &["INFO", "commandstats"]);
        assert!(
            stats.contains("cmdstat_get:calls="),
            "replica {p} served no GET:\n{stats}"
        );
        assert!(
            stats.contains("cmdstat_mget:calls="),
            "replica {p} served no MGET:\n{stats}"
        );
        assert!(stats.contains("cmdstat_readonly:calls="), "{stats}");
        // A write sent to a replica would be refused there (-MOVED):
        // none was (the SETs it shows came by replication).
        assert!(
            stats
                .lines()
                .all(|l| !l.starts_with("cmdstat_set:") || l.contains("rejected_calls=0")),
            "replica {p} refused a write:\n{stats}"
        );
    }
    let st = rproxy.stats();
    assert_eq!(
        st["c"]["cluster_moved"], 0,
        "a request went to a node that does not serve it: {st}"
    );
    // A replica the cluster forgets (alive, but out of the map for 60 s)
    // has its connections closed, and its slots are read from the master.
    let gone = replicas[0];
    let gone_id = cli(gone, &["CLUSTER", "MYID"]).trim().to_owned();
    for n in cluster.nodes.iter().filter(|n| n.port != gone) {
        assert_eq!(cli(n.port, &["CLUSTER", "FORGET", &gone_id]).trim(), "OK");
    }
    let name = format!("127.0.0.1:{gone}");
    let st = rproxy.stats_when(|s| s["c"][&name]["server_connections"] == 0);
    assert_eq!(
        st["c"][&name]["server_connections"],
        0,
        "{name} forgotten, still connected: {st}\nlog:\n{}",
        rproxy.log_tail(30)
    );
    for k in keys.iter().take(60) {
        assert_eq!(
            rc.cmd(&[b"GET", k.as_bytes()]),
            bulk(&format!("v-{k}")),
            "{k}"
        );
    }
    drop(rproxy);

    // cluster_max_nodes used up: the nodes past it are not followed, their
    // slots answer an error, the others still work.
    let sport = free_port();
    let syaml = std::fs::read_to_string(&proxy.conf)
        .expect("config")
        .replace(
            &format!("listen: 127.0.0.1:{port}"),
            &format!("listen: 127.0.0.1:{sport}"),
        )
        .replace("cluster: true\n", "cluster: true\n  cluster_max_nodes: 2\n");
    let small = ProxyProc::twem(&syaml, sport, &[]);
    let st = small.stats_when(|s| s["c"]["cluster_refreshes"].as_i64().unwrap_or(0) >= 1);
    assert_eq!(st["c"]["cluster_nodes"], 2, "{st}");
    let third = masters
        .iter()
        .find(|m| m.port != cluster.nodes[0].port && m.port != cluster.nodes[1].port)
        .expect("a master that is no seed");
    let mut sc = Client::connect(sport);
    for k in keys.iter().take(40) {
        let got = sc.cmd(&[b"GET", k.as_bytes()]);
        if in_ranges(key_slot(k.as_bytes()), &third.ranges) {
            assert!(
                got.starts_with(b"-"),
                "{k}: {}",
                String::from_utf8_lossy(&got)
            );
        } else {
            assert_eq!(got, bulk(&format!("v-{k}")), "{k}");
        }
    }
    drop(small);

    // Stats per node, by address: every master served requests.
    let st = proxy.stats();
    for m in &masters {
        let name = format!("127.0.0.1:{}", m.port);
        let reqs = st["c"][&name]["requests"].as_i64().unwrap_or(0);
        assert!(reqs > 0, "{name}: {st}");
    }
    assert!(stats_field(&proxy, "cluster_refreshes") >= 1, "{st}");
}

/// `MULTI` ... `EXEC` for `cmds` on `c`: the `+OK`/`+QUEUED` replies
/// checked, `EXEC`'s reply returned.
fn transaction(c: &mut Client, cmds: &[&[&[u8]]]) -> Vec<u8> {
    assert_eq!(c.cmd(&[b"MULTI"]), b"+OK\r\n");
    for cmd in cmds {
        assert_eq!(c.cmd(cmd), b"+QUEUED\r\n", "{cmd:?}");
    }
    c.cmd(&[b"EXEC"])
}

// A transaction (no WATCH) whose slot moved or is migrating is sent again
// where the cluster points: Redis aborted its EXEC, so nothing was applied
// and the client sees one transaction that ran. twem's map is made stale on
// purpose (read every 10 minutes). Keys split by a migration are refused,
// with nothing applied on either node. A blocking command whose slot moved
// follows the -MOVED as well.
#[test]
fn cluster_transactions_follow_their_slot() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start();
    let masters = cluster.masters();
    let slot = key_slot(b"txk");
    let from = owner_of(&masters, b"txk");
    let to = other_master(&masters, from);
    let port = free_port();
    let proxy = cluster.twem_refreshing(port, 600_000);
    proxy.stats_when(|s| s["c"]["cluster_refreshes"].as_i64().unwrap_or(0) >= 1);
    let mut c = Client::connect(port);
    assert_eq!(
        transaction(&mut c, &[&[b"SET", b"{txk}a", b"1"], &[b"INCR", b"{txk}b"]]),
        b"*2\r\n+OK\r\n:1\r\n"
    );
    let mut src = Client::connect(from.port);
    assert_eq!(src.cmd(&[b"SET", b"{txk}c", b"5"]), b"+OK\r\n");

    // The slot half-migrated by hand: {txk}a and {txk}b moved, {txk}c not.
    let s = slot.to_string();
    let to_port = to.port.to_string();
    start_migration(&s, from, to);
    let migrate = |keys: &[&str]| {
        let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
        args.extend_from_slice(keys);
        assert_eq!(cli(from.port, &args).trim(), "OK");
    };
    migrate(&["{txk}a", "{txk}b"]);
    // Every key it uses moved: the old owner answers -ASK, twem sends
    // ASKING, MULTI, the commands and EXEC to the importing node.
    assert_eq!(
        transaction(&mut c, &[&[b"INCR", b"{txk}b"], &[b"GET", b"{txk}a"]]),
        b"*2\r\n:2\r\n$1\r\n1\r\n"
    );
    let st = proxy.stats_when(|s| s["c"]["cluster_ask"].as_i64().unwrap_or(0) >= 1);
    assert!(st["c"]["cluster_ask"].as_i64().unwrap_or(0) >= 1, "{st}");
    // Keys on both sides: no node can run it; refused after the waits,
    // and neither INCR was applied.
    let refused = transaction(&mut c, &[&[b"INCR", b"{txk}c"], &[b"INCR", b"{txk}b"]]);
    let text = String::from_utf8_lossy(&refused);
    assert!(
        text.starts_with("-EXECABORT") && text.contains("ASK"),
        "{text}"
    );
    assert_eq!(src.cmd(&[b"GET", b"{txk}c"]), bulk("5"));
    let mut dst = Client::connect(to.port);
    assert_eq!(dst.cmd(&[b"ASKING"]), b"+OK\r\n");
    assert_eq!(dst.cmd(&[b"GET", b"{txk}b"]), bulk("2"));
    let st = proxy.stats_when(|s| s["c"]["cluster_redirect_failed"].as_i64().unwrap_or(0) >= 1);
    assert!(
        st["c"]["cluster_redirect_failed"].as_i64().unwrap_or(0) >= 1,
        "{st}"
    );

    // The migration finished: the old owner answers -MOVED, twem follows
    // it with the whole transaction (and its map learns the slot).
    migrate(&["{txk}c"]);
    for m in &masters {
        assert_eq!(
            cli(m.port, &["CLUSTER", "SETSLOT", &s, "NODE", &to.id]).trim(),
            "OK"
        );
    }
    let moved_before = proxy.stats_after_refresh()["c"]["cluster_moved"]
        .as_i64()
        .unwrap_or(0);
    assert_eq!(
        transaction(
            &mut c,
            &[&[b"INCR", b"{txk}c"], &[b"INCR", b"{txk}b"], &[b"PING"]]
        ),
        b"*3\r\n:6\r\n:3\r\n+PONG\r\n"
    );
    let st = proxy.stats_when(|s| s["c"]["cluster_moved"].as_i64().unwrap_or(0) > moved_before);
    assert!(
        st["c"]["cluster_moved"].as_i64().unwrap_or(0) > moved_before,
        "{st}"
    );
    assert_eq!(dst.cmd(&[b"GET", b"{txk}c"]), bulk("6"));
    // A plain command after it goes straight to the new owner.
    assert_eq!(c.cmd(&[b"GET", b"{txk}a"]), bulk("1"));

    // A blocking command on a borrowed connection follows -MOVED too: a
    // list's slot moved (with the list) behind twem's back; BLPOP gets
    // its element from the new owner.
    let mut owner = Client::connect(owner_of(&masters, b"blk").port);
    assert_eq!(owner.cmd(&[b"RPUSH", b"{blk}q", b"job"]), b":1\r\n");
    let bto = move_slot_by_hand(&masters, b"blk", &["{blk}q"]);
    let moved_before = proxy.stats_after_refresh()["c"]["cluster_moved"]
        .as_i64()
        .unwrap_or(0);
    assert_eq!(
        c.cmd(&[b"BLPOP", b"{blk}q", b"5"]),
        b"*2\r\n$6\r\n{blk}q\r\n$3\r\njob\r\n"
    );
    let mut new_owner = Client::connect(bto.port);
    assert_eq!(new_owner.cmd(&[b"LLEN", b"{blk}q"]), b":0\r\n");
    let st = proxy.stats_when(|s| s["c"]["cluster_moved"].as_i64().unwrap_or(0) > moved_before);
    assert!(
        st["c"]["cluster_moved"].as_i64().unwrap_or(0) > moved_before,
        "{st}"
    );

    // WATCH on a moved slot: its connection is the transaction's, so the
    // -MOVED goes to the client, but the map learns the move: after
    // UNWATCH the next try reaches the new owner and commits.
    let mut owner = Client::connect(owner_of(&masters, b"wk").port);
    assert_eq!(owner.cmd(&[b"SET", b"{wk}x", b"old"]), b"+OK\r\n");
    let wto = move_slot_by_hand(&masters, b"wk", &["{wk}x"]);
    let refused = c.cmd(&[b"WATCH", b"{wk}x"]);
    assert!(
        refused.starts_with(b"-MOVED "),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    assert_eq!(c.cmd(&[b"UNWATCH"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"WATCH", b"{wk}x"]), b"+OK\r\n");
    assert_eq!(
        transaction(&mut c, &[&[b"SET", b"{wk}x", b"new"]]),
        b"*1\r\n+OK\r\n"
    );
    let mut new_owner = Client::connect(wto.port);
    assert_eq!(new_owner.cmd(&[b"GET", b"{wk}x"]), bulk("new"));
}

/// The master serving the slot of `tag`.
fn owner_of<'a>(masters: &'a [Master], tag: &[u8]) -> &'a Master {
    let slot = key_slot(tag);
    masters
        .iter()
        .find(|m| in_ranges(slot, &m.ranges))
        .expect("owner")
}

/// Mark slot `s` as migrating from `from` to `to` on both nodes (keys
/// are moved by the caller, with MIGRATE).
fn start_migration(s: &str, from: &Master, to: &Master) {
    assert_eq!(
        cli(to.port, &["CLUSTER", "SETSLOT", s, "IMPORTING", &from.id]).trim(),
        "OK"
    );
    assert_eq!(
        cli(from.port, &["CLUSTER", "SETSLOT", s, "MIGRATING", &to.id]).trim(),
        "OK"
    );
}

/// A master other than `than`.
fn other_master<'a>(masters: &'a [Master], than: &Master) -> &'a Master {
    masters
        .iter()
        .find(|m| m.id != than.id)
        .expect("another master")
}

/// Move the slot of `tag` from its master (by `masters`, as they were at
/// the start) to another, with `keys`, and tell every master; the new
/// owner.
fn move_slot_by_hand<'a>(masters: &'a [Master], tag: &[u8], keys: &[&str]) -> &'a Master {
    let from = owner_of(masters, tag);
    let to = other_master(masters, from);
    let s = key_slot(tag).to_string();
    start_migration(&s, from, to);
    let to_port = to.port.to_string();
    let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
    args.extend_from_slice(keys);
    assert_eq!(cli(from.port, &args).trim(), "OK");
    for m in masters {
        assert_eq!(
            cli(m.port, &["CLUSTER", "SETSLOT", &s, "NODE", &to.id]).trim(),
            "OK"
        );
    }
    to
}

/// What one pipelining client saw.
#[derive(Debug, Default)]
struct Seen {
    sets: u64,
    gets: u64,
    errors: Vec<String>,
    crossed: Vec<String>,
    last_seq: u64,
}

/// Pipeline batches of 8 SETs of new keys and 8 GETs of the previous
/// batch's keys (acknowledged already), each value naming (client,
/// sequence), until `stop`.
fn pipeline_client(port: u16, client: u64, stop: Arc<AtomicBool>, total: Arc<AtomicU64>) -> Seen {
    let mut c = Client::connect(port);
    let mut seen = Seen::default();
    let mut seq = 0u64;
    let value = |s: u64| format!("c{client}:s{s}");
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::new();
        let mut expect: Vec<(String, Vec<u8>)> = Vec::new();
        for i in 0..8 {
            let s = seq + i;
            let key = format!("r:{client}:{s}");
            batch.extend(resp_cmd(&[b"SET", key.as_bytes(), value(s).as_bytes()]));
            expect.push((format!("SET {key}"), b"+OK\r\n".to_vec()));
        }
        if seq >= 8 {
            for i in 0..8 {
                let s = seq - 8 + i;
                let key = format!("r:{client}:{s}");
                batch.extend(resp_cmd(&[b"GET", key.as_bytes()]));
                expect.push((format!("GET {key}"), bulk(&value(s))));
            }
        }
        c.send(&batch);
        for (what, want) in expect {
            let got = c.read_resp();
            if got.starts_with(b"-") {
                seen.errors
                    .push(format!("{what}: {}", String::from_utf8_lossy(&got)));
            } else if got != want {
                seen.crossed.push(format!(
                    "{what}: got {} want {}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want)
                ));
            } else if what.starts_with("SET") {
                seen.sets += 1;
            } else {
                seen.gets += 1;
            }
        }
        seq += 8;
        total.fetch_add(16, Ordering::Relaxed);
    }
    seen.last_seq = seq;
    seen
}

#[test]
fn cluster_live_resharding() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start();
    let masters = cluster.masters();
    let port = free_port();
    let proxy = cluster.twem(port);
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (stop, total) = (Arc::clone(&stop), Arc::clone(&total));
            thread::spawn(move || pipeline_client(port, i, stop, total))
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let before = total.load(Ordering::Relaxed);
    let started = Instant::now();
    let out = run_bounded(
        Command::new("redis-cli")
            .args([
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{}", masters[0].port),
            ])
            .args(["--cluster-from", &masters[0].id])
            .args(["--cluster-to", &masters[1].id])
            .args(["--cluster-slots", "1000", "--cluster-yes"]),
        Duration::from_secs(180),
    );
    let took = started.elapsed();
    let during = total.load(Ordering::Relaxed) - before;
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = clients
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    assert!(
        out.status.success(),
        "reshard failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    cluster.wait_consistent(Duration::from_secs(20));
    let now = cluster.masters();
    let size = |m: &Master| {
        m.ranges
            .iter()
            .map(|r| usize::from(r.1 - r.0) + 1)
            .sum::<usize>()
    };
    let grown = now.iter().find(|m| m.id == masters[1].id).map_or(0, size);
    assert_eq!(grown, size(&masters[1]) + 1000, "{now:?}");

    let errors: Vec<&String> = seen.iter().flat_map(|s| &s.errors).collect();
    let crossed: Vec<&String> = seen.iter().flat_map(|s| &s.crossed).collect();
    let (sets, gets): (u64, u64) = seen
        .iter()
        .fold((0, 0), |a, s| (a.0 + s.sets, a.1 + s.gets));
    let st = proxy.stats();
    let c = &st["c"];
    println!(
        "resharding 1000 slots took {took:?}; {during} requests during it; {sets} SETs and {gets} GETs in all; MOVED followed {}, ASK {}, TRYAGAIN {}, map reads {}",
        c["cluster_moved"], c["cluster_ask"], c["cluster_tryagain"], c["cluster_refreshes"]
    );
    assert!(
        crossed.is_empty(),
        "crossed or reordered replies: {crossed:?}"
    );
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    assert!(during > 0, "no traffic while resharding");
    assert!(
        c["cluster_moved"].as_i64().unwrap_or(0) + c["cluster_ask"].as_i64().unwrap_or(0) > 0,
        "no redirection was followed: the test moved no slot under traffic? {st}"
    );

    // Every key written is readable, with its value, after the move.
    let mut r = Client::connect(port);
    for (client, s) in seen.iter().enumerate() {
        let keys: Vec<String> = (0..s.last_seq).map(|q| format!("r:{client}:{q}")).collect();
        for chunk in keys.chunks(500) {
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(chunk.iter().map(|k| k.as_bytes()));
            let got = r.cmd(&args);
            let mut want = format!("*{}\r\n", chunk.len()).into_bytes();
            for k in chunk {
                let q = k.rsplit(':').next().unwrap_or("");
                want.extend(bulk(&format!("c{client}:s{q}")));
            }
            assert!(
                got == want,
                "client {client}: keys unreadable after the move"
            );
        }
    }
}

#[test]
fn cluster_failover() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start();
    let masters = cluster.masters();
    let port = free_port();
    let proxy = cluster.twem(port);
    // Keys on every master, written once.
    let keys: Vec<String> = (0..60).map(|i| format!("f{i}")).collect();
    let mut c = Client::connect(port);
    for k in &keys {
        assert_eq!(c.cmd(&[b"SET", k.as_bytes(), b"1"]), b"+OK\r\n");
    }
    // Let the replicas catch up before the master dies.
    thread::sleep(Duration::from_millis(500));
    let victim = masters
        .iter()
        .find(|m| m.port != cluster.nodes[0].port && m.port != cluster.nodes[1].port)
        .unwrap_or(&masters[2])
        .clone();
    let at = cluster
        .nodes
        .iter()
        .position(|n| n.port == victim.port)
        .expect("victim is a node");
    let killed = Instant::now();
    cluster.nodes[at].proc.kill();
    // One client: GET every key in turn until a whole round succeeds.
    let mut errors = 0u64;
    let mut other_slot_errors = Vec::new();
    let mut last_error = None;
    let recovered = loop {
        let mut clean = true;
        for k in &keys {
            c.send(&resp_cmd(&[b"INCR", k.as_bytes()]));
            let got = c.read_resp();
            if got.starts_with(b"-") {
                clean = false;
                errors += 1;
                last_error = Some(String::from_utf8_lossy(&got).into_owned());
                if !in_ranges(key_slot(k.as_bytes()), &victim.ranges) {
                    other_slot_errors.push(format!("{k}: {}", String::from_utf8_lossy(&got)));
                }
            }
        }
        if clean {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no recovery after 30 s; last error {last_error:?}; the cluster says:\n{}\nproxy stats: {}\nlog:\n{}",
            cli(cluster.nodes[0].port, &["CLUSTER", "NODES"]),
            proxy.stats(),
            proxy.log()
        );
        thread::sleep(Duration::from_millis(20));
    };
    println!(
        "failover: every key answered again {recovered:?} after SIGKILL of the master at port {}; {errors} errors in the window (last: {last_error:?})",
        victim.port
    );
    assert!(
        other_slot_errors.is_empty(),
        "errors outside the dead master's slots: {other_slot_errors:?}"
    );
    // The promoted replica serves the slots through twem from now on.
    for k in &keys {
        let got = c.cmd(&[b"GET", k.as_bytes()]);
        assert!(
            got.starts_with(b"$"),
            "{k}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    assert!(stats_field(&proxy, "cluster_refreshes") >= 2);
}

/// What a fake node answers a `GET`: given its arguments (upper-cased),
/// how many GETs it saw before, and its own port.
type Answer = fn(&[String], u64, u16) -> String;

/// A fake cluster node: every `GET` is answered by `answer`, anything else
/// (`CLUSTER SHARDS`) with an error; counts GETs.
fn fake_node(listener: std::net::TcpListener, gets: Arc<AtomicU64>, answer: Answer) {
    use std::io::{BufRead, BufReader, Write};
    let port = listener.local_addr().expect("addr").port();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { return };
        let gets = Arc::clone(&gets);
        thread::spawn(move || {
            let mut out = conn.try_clone().expect("clone");
            let mut rd = BufReader::new(conn);
            let mut line = String::new();
            loop {
                // One RESP array of bulk strings a command.
                line.clear();
                if rd.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let n: usize = line.trim_start_matches('*').trim().parse().unwrap_or(0);
                let mut args = Vec::new();
                for _ in 0..n {
                    line.clear();
                    let _ = rd.read_line(&mut line);
                    line.clear();
                    let _ = rd.read_line(&mut line);
                    args.push(line.trim().to_uppercase());
                }
                let reply = if args.first().map(String::as_str) == Some("GET") {
                    let seen = gets.fetch_add(1, Ordering::Relaxed);
                    answer(&args, seen, port)
                } else {
                    "-ERR not a cluster here\r\n".to_owned()
                };
                if out.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}

/// A fake node on a fresh port, answering GETs with `answer`; its port
/// and its GET count.
fn start_fake_node(answer: Answer) -> (u16, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let node = listener.local_addr().expect("addr").port();
    let gets = Arc::new(AtomicU64::new(0));
    let g = Arc::clone(&gets);
    thread::spawn(move || fake_node(listener, g, answer));
    (node, gets)
}

/// A cluster pool whose one seed is `node`.
fn fake_cluster_yaml(port: u16, node: u16) -> String {
    format!(
        "c:\n  listen: 127.0.0.1:{port}\n  redis: true\n  cluster: true\n  timeout: 2000\n  servers:\n   - 127.0.0.1:{node}:1\n"
    )
}

// A slot that redirects for ever: the request is sent 1 + 5 times, then
// the last -MOVED goes to the client (and is counted), the connection and
// the next request unharmed.
#[test]
fn redirections_are_bounded() {
    // Every GET is redirected to the node itself.
    let (node, gets) = start_fake_node(|_, _, port| format!("-MOVED 1 127.0.0.1:{port}\r\n"));
    let port = free_port();
    let (proxy, metrics) = ProxyProc::twem_with_metrics(&fake_cluster_yaml(port, node), port, &[]);
    let mut c = Client::connect(port);
    let want = format!("-MOVED 1 127.0.0.1:{node}\r\n").into_bytes();
    assert_eq!(c.cmd(&[b"GET", b"k"]), want);
    assert_eq!(gets.load(Ordering::Relaxed), 6);
    assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(c.cmd(&[b"GET", b"k"]), want);
    assert_eq!(gets.load(Ordering::Relaxed), 12);
    let st = proxy.stats_when(|s| s["c"]["cluster_redirect_failed"] == 2);
    assert_eq!(st["c"]["cluster_redirect_failed"], 2, "{st}");
    assert_eq!(st["c"]["cluster_moved"], 10, "{st}");
    // The same counters in Prometheus, and the node by its address.
    let text = twem_tests::scrape_metrics(metrics);
    for line in [
        "twem_pool_cluster_moved_total{pool=\"c\"} 10".to_owned(),
        "twem_pool_cluster_redirect_failed_total{pool=\"c\"} 2".to_owned(),
        format!("twem_server_requests_total{{pool=\"c\",server=\"127.0.0.1:{node}\"}}"),
    ] {
        assert!(text.contains(&line), "no {line} in:\n{text}");
    }
}

const TRYAGAIN: &str = "-TRYAGAIN Multiple keys request during rehashing of slot\r\n";

// `-TRYAGAIN` (a multi-key command while its slot migrates) is waited out
// and the request sent again, its reply in the request's place; a slot that
// never settles gives the client the last `-TRYAGAIN` after 1 + 5 sends.
#[test]
fn tryagain_is_waited_out() {
    // Key "K": two TRYAGAINs, then its value, in turn; key "STUCK": always TRYAGAIN.
    let (node, gets) = start_fake_node(|args, seen, _| {
        if args.get(1).map(String::as_str) == Some("STUCK") || seen % 3 < 2 {
            TRYAGAIN.to_owned()
        } else {
            "$5\r\nvalue\r\n".to_owned()
        }
    });
    let port = free_port();
    let (proxy, metrics) = ProxyProc::twem_with_metrics(&fake_cluster_yaml(port, node), port, &[]);
    let mut c = Client::connect(port);
    assert_eq!(c.cmd(&[b"GET", b"k"]), b"$5\r\nvalue\r\n");
    assert_eq!(gets.load(Ordering::Relaxed), 3);
    // Pipelined behind a retried request, a PING keeps its place.
    let mut both = resp_cmd(&[b"GET", b"k"]);
    both.extend_from_slice(&resp_cmd(&[b"PING"]));
    c.send(&both);
    assert_eq!(c.read_resp(), b"$5\r\nvalue\r\n");
    assert_eq!(c.read_resp(), b"+PONG\r\n");
    assert_eq!(gets.load(Ordering::Relaxed), 6);
    assert_eq!(c.cmd(&[b"GET", b"stuck"]), TRYAGAIN.as_bytes());
    assert_eq!(gets.load(Ordering::Relaxed), 12);
    let st = proxy.stats_when(|s| s["c"]["cluster_redirect_failed"] == 1);
    assert_eq!(st["c"]["cluster_tryagain"], 4 + 5, "{st}");
    assert_eq!(st["c"]["cluster_redirect_failed"], 1, "{st}");
    assert_eq!(st["c"]["cluster_moved"], 0, "{st}");
    let text = twem_tests::scrape_metrics(metrics);
    let line = "twem_pool_cluster_tryagain_total{pool=\"c\"} 9";
    assert!(text.contains(line), "no {line} in:\n{text}");
}

/// A cluster-enabled redis-server. The bus port on a free port of its
/// own: the default (port + 10000) may be in the ephemeral range, where an
/// outgoing connection's TIME-WAIT blocks the bind. `cluster-require-full-
/// coverage no`: the other masters' slots stay served while one master is
/// down, so errors in a failover are only the dead master's.
fn cluster_node() -> Redis {
    let bus = free_port().to_string();
    Redis::start_with(&[
        "--cluster-port",
        &bus,
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        "--cluster-require-full-coverage",
        "no",
    ])
}

/// `CLUSTER MEET` from node `at` to node `port`, on its bus port (its own,
/// not port + 10000: see [`cluster_node`]).
fn meet(at: u16, port: u16) {
    let nodes = cli(port, &["CLUSTER", "NODES"]);
    let bus = nodes
        .lines()
        .find(|l| l.contains("myself"))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|a| a.split('@').nth(1))
        .and_then(|b| b.split(',').next())
        .unwrap_or_else(|| panic!("no bus port in {nodes}"))
        .to_owned();
    assert_eq!(
        cli(
            at,
            &["CLUSTER", "MEET", "127.0.0.1", &port.to_string(), &bus]
        )
        .trim(),
        "OK"
    );
}

/// Wait until every node of `ports` says the cluster is ok and knows
/// `known` nodes.
fn wait_cluster_ok(ports: &[u16], known: usize) {
    let start = Instant::now();
    let want = format!("cluster_known_nodes:{known}");
    loop {
        let ok = ports.iter().all(|&p| {
            let info = cli(p, &["CLUSTER", "INFO"]);
            info.contains("cluster_state:ok") && info.contains(&want)
        });
        if ok {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "cluster not ok: {:?}",
            ports
                .iter()
                .map(|&p| cli(p, &["CLUSTER", "NODES"]))
                .collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Move every slot of `slots` from node `from` to node `to` (keys and
/// all), tell every node in `all`, then make the cluster forget `from`.
fn hand_over(slots: &[u16], from: &Redis, to: &Redis, all: &[u16]) {
    let id = |p: u16| cli(p, &["CLUSTER", "MYID"]).trim().to_owned();
    let (from_id, to_id) = (id(from.port), id(to.port));
    let to_port = to.port.to_string();
    for slot in slots {
        let s = slot.to_string();
        assert_eq!(
            cli(to.port, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]).trim(),
            "OK"
        );
        assert_eq!(
            cli(from.port, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]).trim(),
            "OK"
        );
        let keys = cli(from.port, &["CLUSTER", "GETKEYSINSLOT", &s, "1000"]);
        let keys: Vec<&str> = keys
            .lines()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if !keys.is_empty() {
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend_from_slice(&keys);
            assert_eq!(cli(from.port, &args).trim(), "OK");
        }
        // The old owner first: once the others tell it (by gossip) that it
        // lost its last slot, it turns replica and refuses SETSLOT.
        for &p in std::iter::once(&from.port).chain(all) {
            assert_eq!(
                cli(p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]).trim(),
                "OK"
            );
        }
    }
    for &p in all {
        assert_eq!(cli(p, &["CLUSTER", "FORGET", &from_id]).trim(), "OK");
    }
}

// A node whose address changes (a restarted pod with a new IP) is a new
// node to twem. With every entry of `cluster_max_nodes` taken, a new node
// takes the entry of one that left the cluster, so the churn does not use
// the table up: twice here, each time with the keys readable through twem
// on the new node, and the stats naming it instead of the old one.
#[test]
fn node_entries_are_reused_when_nodes_leave() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = cluster_node();
    let b = cluster_node();
    let mut c = cluster_node();
    // A and B hold almost everything; C the last four slots.
    for (n, range) in [
        (&a, ("0", "8191")),
        (&b, ("8192", "16379")),
        (&c, ("16380", "16383")),
    ] {
        assert_eq!(
            cli(n.port, &["CLUSTER", "ADDSLOTSRANGE", range.0, range.1]).trim(),
            "OK"
        );
    }
    for n in [&b, &c] {
        meet(a.port, n.port);
    }
    wait_cluster_ok(&[a.port, b.port, c.port], 3);
    let slots: Vec<u16> = (16380..=16383).collect();
    let keys: Vec<String> = (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| slots.contains(&key_slot(k.as_bytes())))
        .take(8)
        .collect();

    let port = free_port();
    let yaml = format!(
        "c:\n  listen: 127.0.0.1:{port}\n  redis: true\n  cluster: true\n  cluster_refresh: 200\n  cluster_max_nodes: 3\n  timeout: 2000\n  servers:\n   - 127.0.0.1:{}:1\n",
        a.port
    );
    let proxy = ProxyProc::twem(&yaml, port, &[]);
    let mut client = Client::connect(port);
    for k in &keys {
        assert_eq!(
            client.cmd(&[b"SET", k.as_bytes(), k.as_bytes()]),
            b"+OK\r\n"
        );
    }
    let st = proxy.stats_when(|s| s["c"]["cluster_nodes"] == 3);
    assert_eq!(st["c"]["cluster_nodes"], 3, "{st}");

    let mut leaving = c.port;
    let mut others = vec![a.port, b.port];
    let mut last = None;
    for round in 0..2 {
        let next = cluster_node();
        meet(a.port, next.port);
        let mut all = others.clone();
        all.push(leaving);
        all.push(next.port);
        wait_cluster_ok(&all, 4);
        let old: &mut Redis = last.as_mut().unwrap_or(&mut c);
        let mut stay = others.clone();
        stay.push(next.port);
        hand_over(&slots, old, &next, &stay);
        old.proc.kill();
        wait_cluster_ok(&stay, 3);
        // Every key answers from the new node through twem once it has
        // taken the old node's entry (two map reads without the old one).
        let start = Instant::now();
        for k in &keys {
            loop {
                let got = client.cmd(&[b"GET", k.as_bytes()]);
                if got == bulk(k) {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "round {round}: {k} answered {} through twem; stats {}\nlog:\n{}",
                    String::from_utf8_lossy(&got),
                    proxy.stats(),
                    proxy.log_tail(20)
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
        let new_name = format!("127.0.0.1:{}", next.port);
        let old_name = format!("127.0.0.1:{leaving}");
        let st =
            proxy.stats_when(|s| s["c"][&new_name].is_object() && !s["c"][&old_name].is_object());
        assert!(st["c"][&new_name].is_object(), "round {round}: {st}");
        assert!(!st["c"][&old_name].is_object(), "round {round}: {st}");
        assert_eq!(st["c"]["cluster_nodes"], 3, "{st}");
        assert!(proxy.log().contains("cluster node entry reused"));
        leaving = next.port;
        others = vec![a.port, b.port];
        last = Some(next);
    }
}
