//! Sentinel failover through the proxy, with real processes on loopback:
//! two shards (a master and a replica each, `--replicaof`), three
//! sentinels (`redis-server --sentinel`, `down-after-milliseconds` 1000),
//! passwords on both the data nodes and the sentinels, `redis_db` 1, and
//! twem in front naming the shards by their Sentinel master names.
//!
//! While 16 clients pipeline SET/GET pairs whose values encode (client,
//! key, sequence), a sentinel is killed (nothing may change), then shard
//! A's master is SIGKILLed: Sentinel promotes its replica and twem must
//! follow. Measured and printed: the time from the kill to the first
//! success on shard A's keys against Sentinel's own `+switch-master`, the
//! errors per shard, crossed replies. Shard B must never fail, no reply
//! may reach the wrong client or come out of order, `--locate` answers
//! the same before and after. Then the old master comes back as a
//! replica and `SENTINEL FAILOVER` moves shard A back; twem follows again.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use twem_core::config::Config;
use twem_core::sentinel::monitor::POLL_INTERVAL;
use twem_tests::{free_port, wait_for_port, Client, Proc, ProxyProc, Redis, TempDir};

const DATA_PW: &str = "data-secret";
const SENTINEL_PW: &str = "sentinel-secret";
const CLIENTS: usize = 16;
const SHARDS: [&str; 2] = ["shard-a", "shard-b"];

/// A parsed RESP reply, as much of it as these checks need.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Str(String),
    Int(i64),
    Arr(Vec<V>),
    Nil,
    Err(String),
}

impl V {
    fn parse(b: &[u8]) -> V {
        let mut pos = 0;
        parse_at(b, &mut pos)
    }

    /// A flat `[k1, v1, k2, v2, ...]` array as a map.
    fn fields(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        if let V::Arr(items) = self {
            for kv in items.chunks(2) {
                if let [V::Str(k), V::Str(v)] = kv {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        m
    }
}

fn parse_at(b: &[u8], pos: &mut usize) -> V {
    let end = *pos
        + b[*pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("line");
    let line = String::from_utf8_lossy(&b[*pos + 1..end]).into_owned();
    let kind = b[*pos];
    *pos = end + 2;
    match kind {
        b'+' => V::Str(line),
        b'-' => V::Err(line),
        b':' => V::Int(line.parse().expect("int")),
        b'$' => {
            let n: i64 = line.parse().expect("len");
            if n < 0 {
                return V::Nil;
            }
            let s = String::from_utf8_lossy(&b[*pos..*pos + n as usize]).into_owned();
            *pos += n as usize + 2;
            V::Str(s)
        }
        b'*' => {
            let n: i64 = line.parse().expect("len");
            if n < 0 {
                return V::Nil;
            }
            V::Arr((0..n).map(|_| parse_at(b, pos)).collect())
        }
        other => panic!("unexpected RESP type {:?}", other as char),
    }
}

/// A command to a password-protected node (sentinel or data node).
fn ask(port: u16, pw: &str, args: &[&str]) -> Option<V> {
    // A dead node is `None` (the harness's client would panic).
    TcpStream::connect(("127.0.0.1", port)).ok()?;
    let mut c = Client::connect(port);
    let auth = c.cmd(&[b"AUTH", pw.as_bytes()]);
    if auth != b"+OK\r\n" {
        return None;
    }
    let words: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    Some(V::parse(&c.cmd(&words)))
}

struct Sentinel {
    port: u16,
    proc: Proc,
    conf: std::path::PathBuf,
    _dir: TempDir,
}

impl Sentinel {
    /// A sentinel watching `masters` with quorum `quorum`; with
    /// `secured`, its clients and the data nodes need passwords; `extra`
    /// lines end its config.
    fn start(masters: &[(&str, u16)], quorum: u32, secured: bool, extra: &str) -> Sentinel {
        let dir = TempDir::new("sentinel");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n",
            dir.path().display()
        );
        if secured {
            text.push_str(&format!(
                "requirepass {SENTINEL_PW}\nsentinel sentinel-pass {SENTINEL_PW}\n"
            ));
        }
        for (name, mport) in masters {
            text.push_str(&format!(
                "sentinel monitor {name} 127.0.0.1 {mport} {quorum}\nsentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 4000\nsentinel parallel-syncs {name} 1\n"
            ));
            if secured {
                text.push_str(&format!("sentinel auth-pass {name} {DATA_PW}\n"));
            }
        }
        text.push_str(extra);
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let proc = Sentinel::spawn(&conf);
        wait_for_port(port, Duration::from_secs(10));
        Sentinel {
            port,
            proc,
            conf,
            _dir: dir,
        }
    }

    fn spawn(conf: &std::path::Path) -> Proc {
        let mut cmd = Command::new("redis-server");
        cmd.arg(conf).arg("--sentinel").stdout(Stdio::null());
        Proc::spawn("redis-sentinel", &mut cmd)
    }

    /// Bring a killed sentinel back on its (rewritten) config.
    fn restart(&mut self) {
        self.proc = Sentinel::spawn(&self.conf);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    fn master(&self, name: &str) -> HashMap<String, String> {
        ask(self.port, SENTINEL_PW, &["SENTINEL", "MASTER", name])
            .map(|v| v.fields())
            .unwrap_or_default()
    }
}

fn data_node(extra: &[&str]) -> Redis {
    let mut args = vec!["--requirepass", DATA_PW, "--masterauth", DATA_PW];
    args.extend_from_slice(extra);
    Redis::start_with(&args)
}

fn data_node_on(port: u16, extra: &[&str]) -> Redis {
    let mut args = vec!["--requirepass", DATA_PW, "--masterauth", DATA_PW];
    args.extend_from_slice(extra);
    Redis::start_on_with(port, &args)
}

/// Wait until `ready` holds, or fail saying `what`.
fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Wait until every live sentinel knows the replica and the other
/// sentinels of every master (a failover needs both).
fn wait_sentinels_ready(sentinels: &[&Sentinel], others: usize) {
    wait_until(
        "sentinels know each other and the replicas",
        Duration::from_secs(30),
        || {
            sentinels.iter().all(|s| {
                SHARDS.iter().all(|m| {
                    let f = s.master(m);
                    f.get("num-slaves").is_some_and(|n| n != "0")
                        && f.get("num-other-sentinels")
                            .and_then(|n| n.parse::<usize>().ok())
                            .is_some_and(|n| n >= others)
                        && f.get("flags").is_some_and(|fl| fl == "master")
                })
            })
        },
    );
}

/// What one client thread saw.
#[derive(Default)]
struct Seen {
    ok: [u64; 2],
    errors: [u64; 2],
    /// Errors per [`Phase`] and shard.
    errors_in: [[u64; 2]; 4],
    /// A reply of the wrong type, or a value another client (or another
    /// key) wrote: a reply crossed to the wrong request.
    crossed: u64,
    /// This client's own value for the key, but not the one just written.
    stale: u64,
    /// Per shard: (time, failed) at every change from success to failure
    /// and back.
    transitions: [Vec<(Instant, bool)>; 2],
    error_samples: Vec<String>,
    /// Every distinct error text seen during the failback.
    failback_errors: std::collections::BTreeSet<String>,
}

impl Seen {
    fn record(&mut self, shard: usize, ok: bool, at: Instant, phase: usize) {
        if ok {
            self.ok[shard] += 1;
        } else {
            self.errors[shard] += 1;
            self.errors_in[phase.min(3)][shard] += 1;
        }
        let failing = self.transitions[shard].last().is_some_and(|(_, f)| *f);
        if failing == ok {
            self.transitions[shard].push((at, !ok));
        }
    }
}

/// Where the test is: 0 before the kill, 1 from the master's kill until
/// twem followed, 2 in between, 3 from `SENTINEL FAILOVER` on.
type Phase = Arc<AtomicUsize>;

/// One client: pipelines SET/GET pairs on two keys of each shard until
/// told to stop.
fn client_loop(
    port: u16,
    id: usize,
    keys: Vec<(String, usize)>,
    stop: Arc<AtomicBool>,
    phase: Phase,
) -> Seen {
    let mut seen = Seen::default();
    let mut c = proxy_client(port);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::new();
        let mut wire = Vec::new();
        for (k, (key, shard)) in keys.iter().enumerate() {
            // Two keys per shard in each batch, a different pair each time.
            if (k + seq as usize) % 2 != 0 {
                continue;
            }
            let value = format!("c{id}:{key}:{seq}");
            wire.extend(twem_tests::resp_cmd(&[
                b"SET",
                key.as_bytes(),
                value.as_bytes(),
            ]));
            wire.extend(twem_tests::resp_cmd(&[b"GET", key.as_bytes()]));
            batch.push((key.clone(), *shard, value));
        }
        c.send(&wire);
        for (key, shard, value) in batch {
            let set = V::parse(&c.read_resp());
            let get = V::parse(&c.read_resp());
            let now = Instant::now();
            let set_ok = match &set {
                V::Str(s) if s == "OK" => true,
                V::Err(e) => {
                    if seen.error_samples.len() < 3 {
                        seen.error_samples.push(e.clone());
                    }
                    if phase.load(Ordering::Relaxed) == 3 {
                        seen.failback_errors.insert(e.clone());
                    }
                    false
                }
                _ => {
                    seen.crossed += 1;
                    false
                }
            };
            let get_ok = match &get {
                V::Str(v) if *v == value => true,
                V::Str(v) if v.starts_with(&format!("c{id}:{key}:")) => {
                    seen.stale += 1;
                    true
                }
                V::Str(_) | V::Int(_) | V::Arr(_) => {
                    seen.crossed += 1;
                    false
                }
                V::Nil if set_ok => {
                    seen.stale += 1;
                    true
                }
                V::Nil => true,
                V::Err(_) => false,
            };
            seen.record(shard, set_ok && get_ok, now, phase.load(Ordering::Relaxed));
        }
        seq += 1;
    }
    seen
}

/// A client of the proxy: `redis_auth` is its clients' password too, as
/// in nutcracker.
fn proxy_client(port: u16) -> Client {
    let mut c = Client::connect(port);
    assert_eq!(c.cmd(&[b"AUTH", DATA_PW.as_bytes()]), b"+OK\r\n");
    c
}

/// Keys for client `id`: `per` on each shard, by the pool's own ring.
fn keys_for(config: &Config, id: usize, per: usize) -> Vec<(String, usize)> {
    let ring = config.pools[0].ring().expect("ring");
    let mut out = Vec::new();
    for (shard, name) in SHARDS.iter().enumerate() {
        out.extend(
            (0..)
                .map(|j| format!("k{id}:{j}"))
                .filter(|k| ring.locate_name(k.as_bytes()) == Some(name))
                .take(per)
                .map(|k| (k, shard)),
        );
    }
    out
}

/// Records when a sentinel announced each `+switch-master`.
fn watch_switches(port: u16, stop: Arc<AtomicBool>) -> Arc<Mutex<Vec<(Instant, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&seen);
    thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("sentinel");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut wire = twem_tests::resp_cmd(&[b"AUTH", SENTINEL_PW.as_bytes()]);
        wire.extend(twem_tests::resp_cmd(&[b"SUBSCRIBE", b"+switch-master"]));
        s.write_all(&wire).expect("subscribe");
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut tmp) {
                Ok(0) => return,
                Ok(n) => {
                    let at = Instant::now();
                    buf.extend_from_slice(&tmp[..n]);
                    // Whole lines only; a message may come in pieces.
                    let Some(end) = buf.windows(2).rposition(|w| w == b"\r\n") else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
                    for line in text.split("\r\n") {
                        // The payload is the one line with spaces in it.
                        if line.contains(' ') && !line.starts_with(['*', '$', '+', ':']) {
                            out.lock().expect("lock").push((at, line.to_owned()));
                        }
                    }
                    buf.drain(..end + 2);
                }
                Err(_) => continue,
            }
        }
    });
    seen
}

fn locate(proxy: &ProxyProc, keys: &str) -> String {
    let out = twem_tests::run_bounded_with_input(
        Command::new(twem_tests::twemproxy_bin())
            .arg("-c")
            .arg(&proxy.conf)
            .arg("--locate"),
        keys.as_bytes(),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "--locate failed");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn server_stats(proxy: &ProxyProc, shard: &str) -> serde_json::Value {
    proxy.stats_after_refresh()["sentinel"][shard].clone()
}

/// Summary of one failover window.
struct Window {
    /// From the kill (or the failover command) to the first success on
    /// shard A's keys after its errors.
    first_ok: Option<Duration>,
    /// From the kill to the last client's recovery.
    all_ok: Option<Duration>,
    /// From the kill to Sentinel's `+switch-master`.
    switched: Option<Duration>,
}

fn window(seen: &[Seen], from: Instant, to: Instant, switches: &[(Instant, String)]) -> Window {
    let recoveries: Vec<Instant> = seen
        .iter()
        .filter_map(|s| {
            let t = &s.transitions[0];
            // The last recovery inside the window, if errors started in it.
            let failed = t.iter().any(|(at, f)| *f && *at >= from && *at < to);
            failed
                .then(|| {
                    t.iter()
                        .filter(|(at, f)| !*f && *at >= from && *at < to)
                        .map(|(at, _)| *at)
                        .next_back()
                })
                .flatten()
        })
        .collect();
    let firsts: Vec<Instant> = seen
        .iter()
        .filter_map(|s| {
            s.transitions[0]
                .iter()
                .find(|(at, f)| !*f && *at >= from && *at < to)
                .map(|(at, _)| *at)
        })
        .collect();
    Window {
        first_ok: firsts.iter().min().map(|t| *t - from),
        all_ok: recoveries.iter().max().map(|t| *t - from),
        switched: switches
            .iter()
            .find(|(at, m)| *at >= from && *at < to && m.starts_with("shard-a "))
            .map(|(at, _)| *at - from),
    }
}

/// Wait (at most 30 s) until the stats show shard A at `127.0.0.1:port`,
/// then 1.5 s more for every client to see it; how long the first took.
fn follow_shard_a(proxy: &ProxyProc, port: u16, what: &str) -> Duration {
    let at = wait_until(what, Duration::from_secs(30), || {
        proxy.stats()["sentinel"]["shard-a"]["address"] == format!("127.0.0.1:{port}").as_str()
    });
    thread::sleep(Duration::from_millis(1500));
    at
}

#[test]
fn failover_is_followed_without_moving_keys() {
    let test_start = Instant::now();
    // Two shards: a master and a replica each.
    let mut master_a = data_node(&[]);
    let master_b = data_node(&[]);
    let replica_a = data_node(&["--replicaof", "127.0.0.1", &master_a.port.to_string()]);
    let _replica_b = data_node(&["--replicaof", "127.0.0.1", &master_b.port.to_string()]);
    let masters = [("shard-a", master_a.port), ("shard-b", master_b.port)];
    let mut sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start(&masters, 2, true, ""))
        .collect();
    wait_sentinels_ready(&sentinels.iter().collect::<Vec<_>>(), 2);
    println!(
        "setup: 4 data nodes and 3 sentinels ready in {:?}",
        test_start.elapsed()
    );

    let port = free_port();
    let yaml = format!(
        "sentinel:\n  listen: 127.0.0.1:{port}\n  redis: true\n  redis_auth: {DATA_PW}\n  redis_db: 1\n  timeout: 2000\n  server_connections: 2\n  sentinel_auth: {SENTINEL_PW}\n  sentinels:\n{}  servers:\n   - shard-a:1\n   - shard-b:1\n",
        sentinels
            .iter()
            .map(|s| format!("   - 127.0.0.1:{}\n", s.port))
            .collect::<String>()
    );
    let config = Config::from_yaml(&yaml).expect("config");

    // `-t` accepts the pool.
    let dir = TempDir::new("sentinel-t");
    let conf = dir.path().join("nutcracker.yml");
    std::fs::write(&conf, &yaml).expect("write");
    let test_conf = || {
        twem_tests::run_bounded(
            Command::new(twem_tests::twemproxy_bin())
                .arg("-t")
                .arg("-c")
                .arg(&conf),
            Duration::from_secs(30),
        )
    };
    let out = test_conf();
    assert!(out.status.success(), "-t refused a sentinel pool: {out:?}");
    // And names what is wrong in a broken one.
    std::fs::write(
        &conf,
        yaml.replace("   - shard-b:1\n", "   - 127.0.0.1:6379:1\n"),
    )
    .expect("write");
    let out = test_conf();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "-t accepted an address among masters"
    );
    assert!(
        stderr.contains(
            "pool \"sentinel\": servers entry 2 \"127.0.0.1:6379:1\" is not master-name:weight"
        ),
        "{stderr}"
    );

    let (proxy, metrics_port) = ProxyProc::twem_with_metrics(&yaml, port, &[]);
    let locate_keys: String = (0..200).map(|i| format!("key:{i}\n")).collect();
    let placed_before = locate(&proxy, &locate_keys);

    // The masters were found: a write lands on shard A's master, db 1.
    let mut c = proxy_client(port);
    let probe_key = keys_for(&config, 999, 1)[0].0.clone();
    assert_eq!(c.cmd(&[b"SET", probe_key.as_bytes(), b"v"]), b"+OK\r\n");
    let mut direct = Client::connect(master_a.port);
    direct.cmd(&[b"AUTH", DATA_PW.as_bytes()]);
    direct.cmd(&[b"SELECT", b"1"]);
    assert_eq!(
        direct.cmd(&[b"GET", probe_key.as_bytes()]),
        b"$1\r\nv\r\n",
        "the proxy's write is on shard A's master, in redis_db 1"
    );
    let st = server_stats(&proxy, "shard-a");
    assert_eq!(st["address"], format!("127.0.0.1:{}", master_a.port));
    assert_eq!(st["role"], "master");
    assert_eq!(st["failovers"], 0);

    // 16 clients pipelining SET/GET on both shards.
    let stop = Arc::new(AtomicBool::new(false));
    let phase: Phase = Arc::new(AtomicUsize::new(0));
    let switches = watch_switches(sentinels[2].port, Arc::clone(&stop));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let keys = keys_for(&config, id, 2);
            let (stop, phase) = (Arc::clone(&stop), Arc::clone(&phase));
            thread::spawn(move || client_loop(port, id, keys, stop, phase))
        })
        .collect();
    thread::sleep(Duration::from_millis(700));

    // A sentinel dies: nothing changes (the others still watch and vote).
    sentinels[0].proc.kill();
    thread::sleep(Duration::from_millis(500));

    // Shard A's master dies.
    // Timed from just before the signal: a client may see the first
    // failure before `kill` has reaped the process.
    phase.store(1, Ordering::Relaxed);
    let killed_at = Instant::now();
    master_a.proc.kill();
    let new_port = replica_a.port;
    let followed = follow_shard_a(
        &proxy,
        new_port,
        "twem follows shard A to its promoted replica",
    );
    phase.store(2, Ordering::Relaxed);
    let kill_window_end = Instant::now();

    // --locate answers exactly as before: no key changed server.
    assert_eq!(
        locate(&proxy, &locate_keys),
        placed_before,
        "--locate changed"
    );
    let st = server_stats(&proxy, "shard-a");
    assert_eq!(st["failovers"], 1, "{st}");
    assert_eq!(st["role"], "master");
    let log = proxy.log();
    assert!(
        log.contains("failover: the server's master moved"),
        "no log line for the switch:\n{log}"
    );
    assert!(
        log.contains("subscription to a sentinel lost; reconnecting"),
        "the killed sentinel went unnoticed:\n{log}"
    );
    // The new master got the redis_db handshake: a write after the
    // failover is in its db 1.
    let mut c = proxy_client(port);
    assert_eq!(c.cmd(&[b"SET", probe_key.as_bytes(), b"w"]), b"+OK\r\n");
    let mut direct = Client::connect(new_port);
    direct.cmd(&[b"AUTH", DATA_PW.as_bytes()]);
    direct.cmd(&[b"SELECT", b"1"]);
    assert_eq!(
        direct.cmd(&[b"GET", probe_key.as_bytes()]),
        b"$1\r\nw\r\n",
        "the write after the failover is on the new master, in redis_db 1"
    );

    // The killed sentinel comes back; the old master returns as a replica
    // of the new one; a manual failover moves shard A back.
    sentinels[0].restart();
    wait_until(
        "twem subscribes to the restarted sentinel again",
        Duration::from_secs(10),
        || proxy.log().contains("sentinel reachable again"),
    );
    let old_port = master_a.port;
    drop(master_a);
    let _old_master = data_node_on(
        old_port,
        &["--replicaof", "127.0.0.1", &new_port.to_string()],
    );
    wait_until(
        "the old master is a healthy replica again, seen by the sentinels",
        Duration::from_secs(30),
        || {
            let replicas = ask(
                sentinels[1].port,
                SENTINEL_PW,
                &["SENTINEL", "REPLICAS", "shard-a"],
            );
            let Some(V::Arr(list)) = replicas else {
                return false;
            };
            list.iter().any(|r| {
                let f = r.fields();
                f.get("port").map(String::as_str) == Some(old_port.to_string().as_str())
                    && f.get("flags").map(String::as_str) == Some("slave")
                    && f.get("master-link-status").map(String::as_str) == Some("ok")
            })
        },
    );
    wait_sentinels_ready(&sentinels.iter().collect::<Vec<_>>(), 2);
    phase.store(3, Ordering::Relaxed);
    let failback_at = Instant::now();
    let reply = ask(
        sentinels[1].port,
        SENTINEL_PW,
        &["SENTINEL", "FAILOVER", "shard-a"],
    );
    assert_eq!(reply, Some(V::Str("OK".into())));
    follow_shard_a(
        &proxy,
        old_port,
        "twem follows shard A back to its first address",
    );
    let failback_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = workers
        .into_iter()
        .map(|w| w.join().expect("client thread"))
        .collect();

    let switches = switches.lock().expect("lock").clone();
    let kill = window(&seen, killed_at, kill_window_end, &switches);
    let back = window(&seen, failback_at, failback_end, &switches);
    let total = |f: fn(&Seen) -> u64| seen.iter().map(f).sum::<u64>();
    let (ok_a, ok_b) = (total(|s| s.ok[0]), total(|s| s.ok[1]));
    let (err_a, err_b) = (total(|s| s.errors[0]), total(|s| s.errors[1]));
    let (crossed, stale) = (total(|s| s.crossed), total(|s| s.stale));
    let errors_in =
        |p: usize, shard: usize| seen.iter().map(|s| s.errors_in[p][shard]).sum::<u64>();
    let samples: Vec<&String> = seen.iter().flat_map(|s| &s.error_samples).take(3).collect();
    println!("sentinel failover figures ({CLIENTS} clients pipelining SET+GET pairs):");
    println!(
        "  kill: sentinel +switch-master after {:?}; twem's stats showed the new address after {followed:?}; first success on shard A after {:?}; every client back after {:?}",
        kill.switched, kill.first_ok, kill.all_ok
    );
    println!(
        "  failback (SENTINEL FAILOVER): +switch-master after {:?}; first success after {:?}; every client back after {:?}",
        back.switched, back.first_ok, back.all_ok
    );
    println!(
        "  shard A errors: before the kill {}, kill to follow (+1.5 s) {}, in between {}, failback {}",
        errors_in(0, 0),
        errors_in(1, 0),
        errors_in(2, 0),
        errors_in(3, 0)
    );
    println!(
        "  pairs ok: shard A {ok_a}, shard B {ok_b}; errors: shard A {err_a}, shard B {err_b}; crossed {crossed}; stale {stale}; samples {samples:?}"
    );
    let failback_errors: std::collections::BTreeSet<&String> =
        seen.iter().flat_map(|s| &s.failback_errors).collect();
    println!("  failback errors: {failback_errors:?}");
    println!("  whole test {:?}", test_start.elapsed());

    assert_eq!(crossed, 0, "replies crossed or out of order");
    assert_eq!(err_b, 0, "shard B failed while shard A failed over");
    assert!(
        ok_b > 1000 && ok_a > 1000,
        "too little traffic: {ok_a} {ok_b}"
    );
    assert!(err_a > 0, "killing shard A's master failed nothing?");
    // Errors on shard A only inside the two failover windows.
    for s in &seen {
        for (at, failed) in &s.transitions[0] {
            if *failed {
                let in_kill = *at >= killed_at && *at < kill_window_end;
                let in_back = *at >= failback_at && *at < failback_end;
                assert!(in_kill || in_back, "shard A failed outside a failover");
            }
        }
    }
    // Recovery within Sentinel's own failover time plus a second.
    let switched = kill.switched.expect("sentinel announced the switch");
    let first_ok = kill.first_ok.expect("shard A recovered");
    assert!(
        first_ok <= switched + Duration::from_secs(1),
        "first success {first_ok:?} vs switch {switched:?}"
    );
    let all_ok = kill.all_ok.expect("every client recovered");
    assert!(
        all_ok <= switched + Duration::from_secs(1),
        "last recovery {all_ok:?} vs switch {switched:?}"
    );
    // What was in flight on the old master when twem switched fails with
    // words that say so (a write that reached the demoted old master
    // first would read READONLY, Redis's own words).
    for e in &failback_errors {
        assert!(
            e.contains("(Sentinel failover) while the request was in flight (server shard-a)")
                || e.starts_with("READONLY"),
            "unclear failback error: {e}"
        );
    }
    if let (Some(sw), Some(ok)) = (back.switched, back.all_ok) {
        assert!(
            ok <= sw + Duration::from_secs(1),
            "failback: {ok:?} vs {sw:?}"
        );
    }
    let st = server_stats(&proxy, "shard-a");
    assert_eq!(st["failovers"], 2, "{st}");
    assert_eq!(
        locate(&proxy, &locate_keys),
        placed_before,
        "--locate changed"
    );
    // /metrics shows the same.
    let mut m = TcpStream::connect(("127.0.0.1", metrics_port)).expect("metrics");
    m.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    m.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("get");
    let mut text = String::new();
    m.read_to_string(&mut text).expect("read");
    assert!(
        text.contains("twem_server_failovers_total{pool=\"sentinel\",server=\"shard-a\"} 2"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "twem_server_address{{address=\"127.0.0.1:{old_port}\",pool=\"sentinel\",role=\"master\",server=\"shard-a\"}} 1"
        )),
        "{text}"
    );
}

// The embedded `Pool` built from a config with sentinels (the TOML form
// here) finds its master and follows a failover, as the proxy does.
#[test]
fn embedded_pool_follows_a_failover() {
    let mut master = Redis::start();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let sentinel = solo_sentinel(&master, "");
    let toml = format!(
        "[embedded]\nlisten = \"127.0.0.1:1\"\nredis = true\ntimeout = 2000\nsentinels = [\"127.0.0.1:{}\"]\nservers = [\"solo:1\"]\n",
        sentinel.port
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pool = twem_core::Pool::from_config_text(&toml, twem_core::config::Format::Toml, None)
            .expect("pool");
        let redis = pool.redis();
        redis.set("k", "before").await.expect("set before");
        let place =
            |pool: &twem_core::Pool| pool.snapshot().servers[0].place.clone().expect("place");
        assert_eq!(place(&pool).address, format!("127.0.0.1:{}", master.port));
        master.proc.kill();
        let start = Instant::now();
        let mut errors = 0;
        loop {
            match redis.set("k", "after").await {
                Ok(()) => break,
                Err(e) => {
                    errors += 1;
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "never recovered: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        println!(
            "embedded pool: recovered {:?} after the kill ({errors} failed calls)",
            start.elapsed()
        );
        assert_eq!(
            redis.get("k").await.expect("get").as_deref(),
            Some(&b"after"[..])
        );
        let p = place(&pool);
        assert_eq!(p.address, format!("127.0.0.1:{}", replica.port));
        assert_eq!((p.role, p.failovers), ("master", 1));
        // A reload's new pool starts where the old one's servers were,
        // with their failover counts: no wait for discovery, no false
        // failover.
        let again =
            twem_core::Pool::replacing(pool.config().clone(), Some(&pool)).expect("replacement");
        assert_eq!(place(&again), p);
        drop(pool);
        assert_eq!(
            again.redis().get("k").await.expect("get").as_deref(),
            Some(&b"after"[..])
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(place(&again), p, "the sentinels' answers changed nothing");
    });
}

/// One sentinel (no passwords, quorum 1) watching `master` as `solo`,
/// once it knows the master's replica; `extra` ends its config.
fn solo_sentinel(master: &Redis, extra: &str) -> Sentinel {
    let sentinel = Sentinel::start(&[("solo", master.port)], 1, false, extra);
    wait_until(
        "the sentinel knows the replica",
        Duration::from_secs(30),
        || {
            let mut c = Client::connect(sentinel.port);
            V::parse(&c.cmd(&[b"SENTINEL", b"MASTER", b"solo"]))
                .fields()
                .get("num-slaves")
                .is_some_and(|n| n != "0")
        },
    );
    sentinel
}

/// `INFO commandstats` of a node as `command -> (calls, rejected_calls)`.
fn commandstats(port: u16, pw: Option<&str>) -> HashMap<String, (u64, u64)> {
    let mut c = Client::connect(port);
    if let Some(pw) = pw {
        c.cmd(&[b"AUTH", pw.as_bytes()]);
    }
    let V::Str(text) = V::parse(&c.cmd(&[b"INFO", b"commandstats"])) else {
        panic!("INFO commandstats");
    };
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |f: &str| -> u64 {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('=')?.parse().ok())
                    .unwrap_or(0)
            };
            Some((name.to_owned(), (field("calls"), field("rejected_calls"))))
        })
        .collect()
}

/// Wait until `key` reached the replica (asked directly, before its
/// command counts are read).
fn replicated(port: u16, key: &str) {
    let mut r = Client::connect(port);
    wait_until(
        "the write reached the replica",
        Duration::from_secs(5),
        || r.cmd(&[b"EXISTS", key.as_bytes()]) == b":1\r\n",
    );
}

fn calls(stats: &HashMap<String, (u64, u64)>, cmd: &str) -> u64 {
    stats.get(cmd).map_or(0, |s| s.0)
}

fn rejected(stats: &HashMap<String, (u64, u64)>, cmd: &str) -> u64 {
    stats.get(cmd).map_or(0, |s| s.1)
}

/// One master, its replica, one sentinel watching it as `solo`, and twem
/// in front (pool `pool`, `settings` added, the sentinel's ACL lines
/// `acl`).
struct Solo {
    master: Redis,
    replica: Redis,
    sentinel: Sentinel,
    proxy: ProxyProc,
    port: u16,
}

fn solo(pool: &str, settings: &str, acl: &str) -> Solo {
    let master = Redis::start();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let sentinel = solo_sentinel(&master, acl);
    let port = free_port();
    let yaml = format!(
        "{pool}:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 2000\n{settings}  sentinels:\n   - 127.0.0.1:{}\n  servers:\n   - solo:1\n",
        sentinel.port
    );
    let proxy = ProxyProc::twem(&yaml, port, &[]);
    Solo {
        master,
        replica,
        sentinel,
        proxy,
        port,
    }
}

// read_from prefer-replica in a Sentinel pool: the replica comes from
// SENTINEL REPLICAS; GETs reach it (its INFO commandstats), writes,
// transactions and scripts never do; the stats count the replica reads.
#[test]
fn prefer_replica_reads_reach_the_sentinels_replica() {
    let Solo {
        master,
        mut replica,
        sentinel: _sentinel,
        proxy,
        port,
    } = solo("reads", "  read_from: prefer-replica\n", "");
    let healthy =
        |n: u64| move |st: &serde_json::Value| st["reads"]["solo"]["replicas_healthy"] == n;
    let st = proxy.stats_when(healthy(1));
    assert_eq!(st["reads"]["solo"]["replicas_healthy"], 1, "{st}");

    let mut c = Client::connect(port);
    const N: u64 = 300;
    for i in 0..N {
        assert_eq!(c.cmds(&format!("SET rk{i} v{i}")), b"+OK\r\n");
    }
    // Replicated before it is read (in order: the last key there means
    // all are).
    replicated(replica.port, &format!("rk{}", N - 1));
    let (m0, r0) = (
        commandstats(master.port, None),
        commandstats(replica.port, None),
    );
    for i in 0..N {
        let want = format!("v{i}");
        assert_eq!(
            c.cmds(&format!("GET rk{i}")),
            twem_tests::bulk(want.as_bytes()),
            "GET rk{i}"
        );
    }
    // A transaction and a read-only script go to the master.
    assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmds("GET rk1"), b"+QUEUED\r\n");
    assert_eq!(c.cmds("EXEC"), b"*1\r\n$2\r\nv1\r\n");
    assert_eq!(
        c.cmd(&[
            b"EVAL_RO",
            b"return redis.call('GET', KEYS[1])",
            b"1",
            b"rk2"
        ]),
        b"$2\r\nv2\r\n"
    );
    let (m1, r1) = (
        commandstats(master.port, None),
        commandstats(replica.port, None),
    );
    let replica_gets = calls(&r1, "get") - calls(&r0, "get");
    let master_gets = calls(&m1, "get") - calls(&m0, "get");
    println!("prefer-replica: {replica_gets} GETs on the replica, {master_gets} on the master");
    assert_eq!(replica_gets, N, "every plain GET read the replica");
    // The transaction's GET, and the script's own redis.call('GET').
    assert_eq!(
        master_gets, 2,
        "only the transaction and the script read the master"
    );
    assert_eq!(calls(&m1, "eval_ro") - calls(&m0, "eval_ro"), 1);
    assert_eq!(calls(&r1, "eval_ro"), 0, "a script reached the replica");
    assert_eq!(calls(&r1, "exec"), 0, "a transaction reached the replica");
    assert_eq!(rejected(&r1, "set"), 0, "a write reached the replica");
    let st = proxy.stats_when(|st| st["reads"]["solo"]["replica_reads"] == N);
    assert_eq!(st["reads"]["solo"]["replica_reads"], N, "{st}");

    // The replica dies: what was on its connection fails, then the reads
    // go to the master (the failed connection takes it out at once).
    replica.proc.kill();
    let before = calls(&commandstats(master.port, None), "get");
    let mut failed = 0;
    for i in 0..N {
        let reply = c.cmds(&format!("GET rk{i}"));
        if reply.starts_with(b"-") {
            failed += 1;
        } else {
            assert_eq!(reply, twem_tests::bulk(format!("v{i}").as_bytes()));
        }
    }
    let to_master = calls(&commandstats(master.port, None), "get") - before;
    println!("replica killed: {failed} of {N} GETs failed, {to_master} answered by the master");
    assert!(failed <= 2, "{failed} reads failed after the replica died");
    assert_eq!(to_master, N - failed);
    let st = proxy.stats_when(|st| st["reads"]["solo"]["replicas_healthy"] == 0);
    assert_eq!(st["reads"]["solo"]["replicas_healthy"], 0, "{st}");
}

// read_from replica with a static replicas list: reads only from a
// replica whose link to its master is up; none healthy, the read fails
// saying so; writes stay on the master.
#[test]
fn static_replica_that_lags_is_not_read_from() {
    let master = Redis::start();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let port = free_port();
    let yaml = format!(
        "lag:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 2000\n  read_from: replica\n  replicas:\n   - a 127.0.0.1:{}\n  servers:\n   - 127.0.0.1:{}:1 a\n",
        replica.port, master.port
    );
    let proxy = ProxyProc::twem(&yaml, port, &[]);
    let st = proxy.stats_when(|st| st["lag"]["a"]["replicas_healthy"] == 1);
    assert_eq!(st["lag"]["a"]["replicas_healthy"], 1, "{st}");
    let mut c = Client::connect(port);
    assert_eq!(c.cmds("SET lk 1"), b"+OK\r\n");
    replicated(replica.port, "lk");
    assert_eq!(c.cmds("GET lk"), b"$1\r\n1\r\n");
    assert_eq!(calls(&commandstats(replica.port, None), "get"), 1);
    assert_eq!(calls(&commandstats(master.port, None), "get"), 0);

    // The replica's link to its master goes down: it is not read from.
    let dead = free_port();
    let mut r = Client::connect(replica.port);
    assert_eq!(r.cmds(&format!("REPLICAOF 127.0.0.1 {dead}")), b"+OK\r\n");
    let took = wait_until(
        "the lagging replica is taken out",
        Duration::from_secs(5),
        || proxy.stats()["lag"]["a"]["replicas_healthy"] == 0,
    );
    println!("a replica whose link went down was taken out of reads after {took:?}");
    let reply = c.cmds("GET lk");
    assert_eq!(
        reply,
        b"-ERR no healthy replica to read from (read_from replica) (server a)\r\n",
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(calls(&commandstats(replica.port, None), "get"), 1);
    // Writes never needed the replica.
    assert_eq!(c.cmds("SET lk 2"), b"+OK\r\n");

    // Back in step with the master: read from again.
    assert_eq!(
        r.cmds(&format!("REPLICAOF 127.0.0.1 {}", master.port)),
        b"+OK\r\n"
    );
    wait_until("the replica is back", Duration::from_secs(10), || {
        proxy.stats()["lag"]["a"]["replicas_healthy"] == 1
    });
    assert_eq!(c.cmds("SET lk2 2"), b"+OK\r\n");
    replicated(replica.port, "lk2");
    assert_eq!(c.cmds("GET lk2"), b"$1\r\n2\r\n");
    let rs = commandstats(replica.port, None);
    assert_eq!(calls(&rs, "get"), 2);
    assert_eq!(rejected(&rs, "set"), 0, "a write reached the replica");
}

// The poll alone follows a failover: a sentinel that refuses SUBSCRIBE
// (its ACL) still answers SENTINEL MASTER, and twem moves within a poll
// interval of the sentinels' own answer changing.
#[test]
fn polling_alone_follows_a_failover() {
    let Solo {
        mut master,
        replica,
        sentinel,
        proxy,
        port,
    } = solo(
        "polled",
        "",
        "user default on nopass ~* &* +@all -subscribe\n",
    );
    let mut c = Client::connect(port);
    assert_eq!(c.cmds("SET pk 1"), b"+OK\r\n");
    master.proc.kill();
    let killed = Instant::now();
    let new_addr = format!("127.0.0.1:{}", replica.port);
    let mut s = Client::connect(sentinel.port);
    let answered = wait_until(
        "the sentinel names the new master",
        Duration::from_secs(30),
        || {
            V::parse(&s.cmd(&[b"SENTINEL", b"get-master-addr-by-name", b"solo"]))
                == V::Arr(vec![
                    V::Str("127.0.0.1".into()),
                    V::Str(replica.port.to_string()),
                ])
        },
    );
    wait_until("twem follows by polling", Duration::from_secs(5), || {
        proxy.stats()["polled"]["solo"]["address"] == new_addr.as_str()
    });
    let followed = killed.elapsed();
    println!("polling only: the sentinel named the new master {answered:?} after the kill, twem followed after {followed:?}");
    assert!(
        followed <= answered + Duration::from_millis(1500),
        "{followed:?} vs {answered:?}"
    );
    assert_eq!(c.cmds("SET pk 2"), b"+OK\r\n");
    let log = proxy.log();
    assert!(
        log.contains("NOPERM"),
        "the subscription was not refused?\n{log}"
    );
    assert!(log.contains("source=\"poll\""), "{log}");
    // Refused again every 0.5 s, said once.
    assert_eq!(
        log.matches("subscription to a sentinel lost").count(),
        1,
        "{log}"
    );
}

// A master no sentinel knows (a misspelt name): its requests fail after
// the discovery wait, saying so, and the log says which master, once.
#[test]
fn unknown_master_is_said() {
    let sentinel = Sentinel::start(&[], 1, false, "");
    let port = free_port();
    let yaml = format!(
        "ghostly:\n  listen: 127.0.0.1:{port}\n  redis: true\n  sentinels:\n   - 127.0.0.1:{}\n  servers:\n   - ghost:1\n",
        sentinel.port
    );
    let proxy = ProxyProc::twem(&yaml, port, &[]);
    let mut c = Client::connect(port);
    let asked = Instant::now();
    assert_eq!(
        c.cmds("GET k"),
        b"-ERR no master address known from the sentinels (server ghost)\r\n"
    );
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    wait_until("the log names the master", Duration::from_secs(10), || {
        proxy
            .log()
            .contains("no sentinel named this master's address yet")
    });
    let log = proxy.log();
    assert!(log.contains("master=ghost"), "{log}");
    assert_eq!(
        log.matches("no sentinel named this master's address yet")
            .count(),
        1,
        "{log}"
    );
}

/// The ids of the sentinel's clients whose last command was one of the
/// poll's (`SENTINEL MASTER`, `get-master-addr-by-name`, `REPLICAS`).
fn poll_connections(sentinel_port: u16) -> Vec<String> {
    let mut c = Client::connect(sentinel_port);
    let V::Str(list) = V::parse(&c.cmd(&[b"CLIENT", b"LIST"])) else {
        panic!("CLIENT LIST");
    };
    list.lines()
        .filter(|l| l.contains(" cmd=sentinel|"))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

// The poll asks each sentinel every second on one connection kept from
// round to round, not a new connection a round; a sentinel restarted
// under it is asked on a new one (the failover test restarts one too).
#[test]
fn the_poll_keeps_its_connection() {
    let Solo {
        sentinel, proxy, ..
    } = solo("kept", "", "");
    wait_until(
        "the poll reached the sentinel",
        Duration::from_secs(10),
        || poll_connections(sentinel.port).len() == 1,
    );
    let first = poll_connections(sentinel.port);
    // Three poll rounds later: the same connection, still the only one.
    thread::sleep(POLL_INTERVAL * 3);
    assert_eq!(poll_connections(sentinel.port), first);
    assert!(
        proxy.stats()["kept"]["solo"]["address"].is_string(),
        "{}",
        proxy.stats()
    );
}
