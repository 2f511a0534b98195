//! The pool's keyspace commands through the twem binary, with three real
//! redis-server backends: a SCAN loop over the composite cursor returns
//! every key of every server exactly once (checked against the backends
//! directly), with MATCH, COUNT and TYPE, and every pre-existing key while
//! keys are added; KEYS is the union and DBSIZE the sum of the backends';
//! RANDOMKEY finds a key on any server and answers null only for an empty
//! pool; FLUSHALL/FLUSHDB are refused unless the pool sets `allow_flush`;
//! the embedded `Pool::scan` returns every key once.
//!
//! Run: `cargo test -p twem-tests --test fanout`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use twem_core::pool::{Pool, ScanOptions};
use twem_tests::{free_port, key_on, pool_yaml, runtime, Client, ProxyProc, Redis};

/// Three backends behind one Redis pool.
struct Three {
    servers: Vec<Redis>,
    proxy: ProxyProc,
    port: u16,
    yaml: String,
}

fn setup(settings: &str) -> Three {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let port = free_port();
    let names = ["a", "b", "c"];
    let list: Vec<(String, &str)> = servers
        .iter()
        .zip(names)
        .map(|(s, n)| (s.addr(), n))
        .collect();
    let yaml = pool_yaml(
        "alpha",
        port,
        // murmur spreads keys that differ only in their last digits.
        &format!("  redis: true\n  hash: murmur\n  timeout: 2000\n{settings}"),
        &list,
    );
    let proxy = ProxyProc::twem(&yaml, port, &[]);
    Three {
        servers,
        proxy,
        port,
        yaml,
    }
}

/// A pool with no extra settings, holding `n` keys `prefix<i>` for each
/// `(prefix, n)` of `keys`.
fn filled(keys: &[(&str, usize)]) -> Three {
    let t = setup("");
    for (prefix, n) in keys {
        t.fill(prefix, *n);
    }
    t
}

/// A pool that ejects a server at its first failure, holding `n` keys
/// `k:<i>` spread over its three servers.
fn ejecting_setup(n: usize) -> Three {
    let t = setup(
        "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n",
    );
    t.fill("k:", n);
    t
}

impl Three {
    fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// Kill server `b`, then fail a request on it through `c`: the failure
    /// that ejects it (with `auto_eject_hosts`).
    fn eject_b(&mut self, c: &mut Client) {
        let on_b = key_on(&self.yaml, "b", "probe:");
        self.servers[1].proc.kill();
        let failed = c.cmd(&[b"GET", on_b.as_bytes()]);
        assert!(
            failed.starts_with(b"-"),
            "{}",
            String::from_utf8_lossy(&failed)
        );
    }

    /// Every key each backend holds, asked directly.
    fn backend_keys(&self) -> Vec<BTreeSet<String>> {
        self.servers
            .iter()
            .map(|s| strings(&parse(&s.client().cmd(&[b"KEYS", b"*"]))))
            .collect()
    }

    /// Every key of the pool: the union of the backends'.
    fn all_keys(&self) -> BTreeSet<String> {
        self.backend_keys().into_iter().flatten().collect()
    }

    /// `n` string keys `prefix<i>` through the proxy; every backend gets
    /// some.
    fn fill(&self, prefix: &str, n: usize) {
        let mut c = self.client();
        for i in 0..n {
            let k = format!("{prefix}{i}");
            assert_eq!(c.cmd(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");
        }
    }
}

/// A decoded RESP2 reply, enough for these tests.
#[derive(Debug, Clone, PartialEq, Eq)]
enum V {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Option<Vec<V>>),
}

/// The one whole reply in `b`.
fn parse(b: &[u8]) -> V {
    let (v, used) = parse_at(b);
    assert_eq!(used, b.len(), "one reply: {:?}", String::from_utf8_lossy(b));
    v
}

fn parse_at(b: &[u8]) -> (V, usize) {
    let end = twem_tests::find(b, b"\r\n").expect("a line");
    let line = String::from_utf8_lossy(&b[1..end]).into_owned();
    let after = end + 2;
    match b[0] {
        b'+' => (V::Status(line), after),
        b'-' => (V::Error(line), after),
        b':' => (V::Int(line.parse().expect("integer")), after),
        b'$' => {
            let n: i64 = line.parse().expect("length");
            if n < 0 {
                return (V::Bulk(None), after);
            }
            let n = n as usize;
            let s = String::from_utf8_lossy(&b[after..after + n]).into_owned();
            (V::Bulk(Some(s)), after + n + 2)
        }
        b'*' => {
            let n: i64 = line.parse().expect("count");
            if n < 0 {
                return (V::Array(None), after);
            }
            let mut at = after;
            let mut items = Vec::new();
            for _ in 0..n {
                let (v, used) = parse_at(&b[at..]);
                items.push(v);
                at += used;
            }
            (V::Array(Some(items)), at)
        }
        other => panic!("not RESP2: {:?}", other as char),
    }
}

/// The strings of an array of bulk strings, as a set (asserting no
/// duplicates).
fn strings(v: &V) -> BTreeSet<String> {
    let list = string_list(v);
    let set: BTreeSet<String> = list.iter().cloned().collect();
    assert_eq!(set.len(), list.len(), "duplicates in {list:?}");
    set
}

fn string_list(v: &V) -> Vec<String> {
    let V::Array(Some(items)) = v else {
        panic!("not an array: {v:?}");
    };
    items
        .iter()
        .map(|i| match i {
            V::Bulk(Some(s)) => s.clone(),
            other => panic!("not a bulk string: {other:?}"),
        })
        .collect()
}

/// One SCAN call: the reply's cursor (as the client reads it: a decimal
/// string) and keys.
fn scan_once(c: &mut Client, cursor: &str, extra: &[&str]) -> (String, Vec<String>) {
    let mut args: Vec<&[u8]> = vec![b"SCAN", cursor.as_bytes()];
    args.extend(extra.iter().map(|a| a.as_bytes()));
    let reply = parse(&c.cmd(&args));
    let V::Array(Some(items)) = &reply else {
        panic!("SCAN answered {reply:?}");
    };
    let [V::Bulk(Some(next)), keys] = &items[..] else {
        panic!("SCAN answered {reply:?}");
    };
    // What redis-py does with it: an int, and it must be a u64.
    next.parse::<u64>().expect("a cursor below 2^64");
    (next.clone(), string_list(keys))
}

/// A client's SCAN loop (redis-py's scan_iter): every key returned, in
/// order, duplicates kept; and how many calls it took.
fn scan_all(c: &mut Client, extra: &[&str]) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    let mut calls = 0;
    loop {
        let (next, page) = scan_once(c, &cursor, extra);
        keys.extend(page);
        calls += 1;
        assert!(calls < 100_000, "the scan does not end");
        if next == "0" {
            return (keys, calls);
        }
        cursor = next;
    }
}

/// The keys of `all` that start with `prefix`.
fn with_prefix(all: &BTreeSet<String>, prefix: &str) -> BTreeSet<String> {
    let matching = all.iter().filter(|k| k.starts_with(prefix));
    matching.cloned().collect()
}

fn exactly_once(keys: &[String]) -> BTreeSet<String> {
    let mut seen = BTreeMap::new();
    for k in keys {
        *seen.entry(k.clone()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "returned more than once: {twice:?}");
    seen.into_keys().collect()
}

// A SCAN loop walks every server: every key of every backend, each once.
#[test]
fn scan_returns_every_key_of_every_server_once() {
    let t = filled(&[("k:", 600)]);
    let per_server = t.backend_keys();
    assert!(
        per_server.iter().all(|s| s.len() > 50),
        "keys on every server: {:?}",
        per_server.iter().map(BTreeSet::len).collect::<Vec<_>>()
    );
    let mut c = t.client();
    let (keys, calls) = scan_all(&mut c, &["COUNT", "20"]);
    assert_eq!(exactly_once(&keys), t.all_keys());
    assert!(calls > 3, "pages of 20 from 3 servers took {calls} calls");
    // Without COUNT too (Redis's default of 10).
    let (keys, _) = scan_all(&mut c, &[]);
    assert_eq!(exactly_once(&keys), t.all_keys());
    // SCAN calls are whole requests to one server, not fragments: only the
    // KEYS below (3 parts) counts.
    strings(&parse(&c.cmd(&[b"KEYS", b"*"])));
    let stats = t
        .proxy
        .stats_when(|st| st["alpha"]["fragments"].as_u64().unwrap_or(0) >= 3);
    assert_eq!(stats["alpha"]["fragments"].as_u64(), Some(3), "{stats}");
}

// MATCH and TYPE apply on every server; COUNT per call.
#[test]
fn scan_with_match_count_and_type() {
    let t = filled(&[("user:", 200), ("other:", 200)]);
    let mut c = t.client();
    for i in 0..60 {
        let h = format!("hash:{i}");
        assert_eq!(c.cmd(&[b"HSET", h.as_bytes(), b"f", b"v"]), b":1\r\n");
    }
    let all = t.all_keys();
    let users = with_prefix(&all, "user:");
    let hashes = with_prefix(&all, "hash:");
    assert_eq!(users.len(), 200);
    let (keys, _) = scan_all(&mut c, &["MATCH", "user:*", "COUNT", "50"]);
    assert_eq!(exactly_once(&keys), users);
    let (keys, _) = scan_all(&mut c, &["COUNT", "1000", "TYPE", "hash"]);
    assert_eq!(exactly_once(&keys), hashes);
    // A large COUNT takes a server in one call: 3 servers, 3 calls.
    let (keys, calls) = scan_all(&mut c, &["COUNT", "100000"]);
    assert_eq!(exactly_once(&keys), all);
    assert_eq!(calls, 3);
}

// Redis's guarantee across servers: a key present for the whole scan comes
// back, however many keys are added meanwhile (some servers rehash).
#[test]
fn scan_returns_every_existing_key_while_keys_are_added() {
    let t = filled(&[("old:", 500)]);
    let before = t.all_keys();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
        let mut c = t.client();
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 50_000 {
                let k = format!("new:{i}");
                assert_eq!(c.cmd(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
        })
    };
    // The writer is under way before the scan starts.
    while written.load(Ordering::Relaxed) < 20 {
        thread::sleep(Duration::from_millis(1));
    }
    let at_start = written.load(Ordering::Relaxed);
    let mut c = t.client();
    let (keys, _) = scan_all(&mut c, &["COUNT", "5"]);
    let at_end = written.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(
        at_end > at_start,
        "no key added during the scan ({at_start} before, {at_end} after)"
    );
    let got: BTreeSet<String> = keys.into_iter().collect();
    let missing: Vec<_> = before.difference(&got).collect();
    assert!(missing.is_empty(), "missed pre-existing keys: {missing:?}");
    // Nothing that never existed.
    let now = t.all_keys();
    assert!(got.is_subset(&now));
}

// A cursor that is not a number, or names a server the pool lacks, is
// Redis's own "invalid cursor"; the connection goes on.
#[test]
fn scan_refuses_invalid_cursors() {
    let t = setup("");
    let mut c = t.client();
    for bad in ["abc", "-1", "3", "65539", "18446744073709551616"] {
        assert_eq!(
            c.cmd(&[b"SCAN", bad.as_bytes()]),
            b"-ERR invalid cursor\r\n",
            "{bad}"
        );
    }
    assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
    // An empty pool: one call per server, then 0.
    let (keys, calls) = scan_all(&mut c, &[]);
    assert!(keys.is_empty());
    assert_eq!(calls, 3);
}

// An ejected server's keys are out of the pool: the scan skips it and
// still ends, with every key of the other servers once.
#[test]
fn scan_skips_an_ejected_server() {
    let mut t = ejecting_setup(300);
    let per_server = t.backend_keys();
    let mut c = t.client();
    t.eject_b(&mut c);
    let (keys, _) = scan_all(&mut c, &["COUNT", "30"]);
    let want: BTreeSet<String> = per_server[0].union(&per_server[2]).cloned().collect();
    assert_eq!(exactly_once(&keys), want);
}

// A server ejected while it is being scanned: the next call with its
// cursor goes on at the next server's start; the scan ends without an
// error and every key of the live servers still comes back once.
#[test]
fn scan_goes_on_when_a_server_is_ejected_mid_scan() {
    let mut t = ejecting_setup(600);
    let per_server = t.backend_keys();
    // Servers a, b, c are ring indexes 0, 1, 2 (sorted by name).
    let mut c = t.client();
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    let mut killed = false;
    loop {
        let (next, page) = scan_once(&mut c, &cursor, &["COUNT", "10"]);
        keys.extend(page);
        if next == "0" {
            break;
        }
        let at: u64 = next.parse().expect("cursor");
        // Mid-scan of b: its own cursor is not 0.
        if !killed && at & 0xffff == 1 && at >> 16 != 0 {
            t.eject_b(&mut c);
            killed = true;
        }
        cursor = next;
    }
    assert!(killed, "the scan never was in the middle of b");
    let got = exactly_once(&keys);
    assert!(got.is_superset(&per_server[0]));
    assert!(got.is_superset(&per_server[2]));
    let before: BTreeSet<String> = per_server.iter().flatten().cloned().collect();
    assert!(got.is_subset(&before));
}

// KEYS is the union of the servers' keys; DBSIZE their sum.
#[test]
fn keys_and_dbsize_cover_every_server() {
    let t = filled(&[("user:", 150), ("x:", 90)]);
    let mut c = t.client();
    assert_eq!(strings(&parse(&c.cmd(&[b"KEYS", b"*"]))), t.all_keys());
    let users = with_prefix(&t.all_keys(), "user:");
    assert_eq!(strings(&parse(&c.cmd(&[b"KEYS", b"user:*"]))), users);
    let sum: i64 = t
        .servers
        .iter()
        .map(|s| match parse(&s.client().cmd(&[b"DBSIZE"])) {
            V::Int(n) => n,
            other => panic!("DBSIZE answered {other:?}"),
        })
        .sum();
    assert_eq!(sum, 240);
    assert_eq!(parse(&c.cmd(&[b"DBSIZE"])), V::Int(sum));
    assert_eq!(
        parse(&c.cmd(&[b"KEYS", b"nothing:*"])),
        V::Array(Some(vec![]))
    );
}

// RANDOMKEY: null only when every server is empty; a key on one server is
// found whichever server is asked first.
#[test]
fn randomkey_finds_a_key_on_any_server() {
    let t = setup("");
    let mut c = t.client();
    assert_eq!(c.cmd(&[b"RANDOMKEY"]), b"$-1\r\n");
    let only = key_on(&t.yaml, "c", "only:");
    assert_eq!(c.cmd(&[b"SET", only.as_bytes(), b"v"]), b"+OK\r\n");
    for _ in 0..20 {
        assert_eq!(parse(&c.cmd(&[b"RANDOMKEY"])), V::Bulk(Some(only.clone())));
    }
    t.fill("k:", 60);
    let all = t.all_keys();
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        let V::Bulk(Some(k)) = parse(&c.cmd(&[b"RANDOMKEY"])) else {
            panic!("RANDOMKEY answered null with keys in the pool");
        };
        assert!(all.contains(&k), "{k} does not exist");
        seen.insert(k);
    }
    assert!(seen.len() > 3, "RANDOMKEY is not random: {seen:?}");
    // TIME: from a server, as Redis answers it.
    let V::Array(Some(time)) = parse(&c.cmd(&[b"TIME"])) else {
        panic!("TIME");
    };
    assert_eq!(time.len(), 2);
}

// A RESP3 client (HELLO 3) reads the same shapes: SCAN pages are arrays
// with the composite cursor, RANDOMKEY of an empty pool is RESP3's null.
#[test]
fn resp3_clients_scan_too() {
    let t = setup("");
    let mut c = t.client();
    c.send_cmd(&[b"HELLO", b"3"]);
    // The end of HELLO's map: its last field, `modules`, an empty array.
    c.read_until(b"modules\r\n*0\r\n");
    c.send_cmd(&[b"RANDOMKEY"]);
    assert_eq!(c.read_line(), b"_\r\n");
    t.fill("k:", 200);
    let (keys, _) = scan_all(&mut c, &["COUNT", "25"]);
    assert_eq!(exactly_once(&keys), t.all_keys());
    let V::Bulk(Some(k)) = parse(&c.cmd(&[b"RANDOMKEY"])) else {
        panic!("RANDOMKEY");
    };
    assert!(t.all_keys().contains(&k));
}

// FLUSHALL/FLUSHDB are refused by default, naming the key; nothing is
// emptied. Server administration stays refused.
#[test]
fn flush_is_refused_by_default() {
    let t = filled(&[("k:", 30)]);
    let mut c = t.client();
    assert_eq!(
        c.cmd(&[b"FLUSHALL"]),
        b"-ERR twem: FLUSHALL is off for this pool: set allow_flush: true in its config\r\n"
    );
    assert_eq!(
        c.cmd(&[b"FLUSHDB", b"ASYNC"]),
        b"-ERR twem: FLUSHDB is off for this pool: set allow_flush: true in its config\r\n"
    );
    assert_eq!(t.all_keys().len(), 30);
    for args in [
        &[&b"CONFIG"[..], b"SET", b"maxmemory", b"1"][..],
        &[b"DEBUG", b"SLEEP", b"0"],
        &[b"SHUTDOWN"],
        &[b"SAVE"],
    ] {
        let reply = c.cmd(args);
        assert!(
            reply.starts_with(b"-ERR command '"),
            "{args:?}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
}

// With allow_flush: true they empty every server.
#[test]
fn flush_empties_every_server_when_allowed() {
    let t = setup("  allow_flush: true\n");
    t.fill("k:", 300);
    let mut c = t.client();
    let sizes: Vec<usize> = t.backend_keys().iter().map(BTreeSet::len).collect();
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
    assert_eq!(c.cmd(&[b"FLUSHALL"]), b"+OK\r\n");
    assert!(t.backend_keys().iter().all(BTreeSet::is_empty));
    t.fill("k:", 300);
    assert_eq!(c.cmd(&[b"FLUSHDB", b"SYNC"]), b"+OK\r\n");
    assert!(t.backend_keys().iter().all(BTreeSet::is_empty));
    assert_eq!(parse(&c.cmd(&[b"DBSIZE"])), V::Int(0));
}

// The embedded Pool's scan: every key of every server once, with options;
// keys() and dbsize() agree with the backends.
#[test]
fn embedded_scan_returns_every_key_once() {
    let t = filled(&[("user:", 250), ("x:", 50)]);
    let all = t.all_keys();
    let users = with_prefix(&all, "user:");
    let rt = runtime();
    let pool = rt
        .block_on(async { Pool::from_yaml(&t.yaml, None) })
        .expect("pool");
    rt.block_on(async {
        let collect = |options: ScanOptions| {
            let mut scan = pool.scan(options);
            async move {
                let mut keys = Vec::new();
                while let Some(k) = scan.next().await {
                    let k = k.expect("a key");
                    keys.push(String::from_utf8(k.to_vec()).expect("utf-8"));
                }
                assert_eq!(scan.cursor(), 0);
                keys
            }
        };
        assert_eq!(exactly_once(&collect(ScanOptions::new()).await), all);
        let matched = collect(ScanOptions::new().pattern("user:*").count(40)).await;
        assert_eq!(exactly_once(&matched), users);
        let none = collect(ScanOptions::new().kind("hash")).await;
        assert!(none.is_empty());
        let r = pool.redis();
        let keys: BTreeSet<String> = r
            .keys("*")
            .await
            .expect("KEYS")
            .into_iter()
            .map(|k| String::from_utf8(k.to_vec()).expect("utf-8"))
            .collect();
        assert_eq!(keys, all);
        assert_eq!(r.dbsize().await.expect("DBSIZE"), 300);
    });
    rt.block_on(pool.close());
}
