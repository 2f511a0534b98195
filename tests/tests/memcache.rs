//! twemproxy in front of real memcached shards, end to end.
//!
//! Each test starts three memcached shards (`s0 s1 s2`), a fourth reference
//! memcached that is not in the pool, and a twemproxy on a memcached pool
//! over the shards. A reply through the proxy is compared byte for byte with
//! the reply of the reference to the same command, and every key's placement
//! is checked by asking the shard the `Ring` names directly.
//!
//! Run: `cargo build -p twem-server && cargo test -p twem-tests --test memcache`
//! (set `TWEMPROXY_BIN` when the binary is built in another target dir).

use std::collections::{BTreeSet, HashMap};
use std::io::Write;

use twem_core::config::Config;
use twem_core::Ring;
use twem_tests::{free_port, Client, Memcached, ProxyProc};

/// The shards' names in the pool config, in order.
const SHARDS: [&str; 3] = ["s0", "s1", "s2"];

/// What a proxy answers for a request to a server that refuses connections.
const REFUSED: &[u8] = b"SERVER_ERROR Connection refused\r\n";

/// A twemproxy over three memcached shards, plus a reference memcached.
struct Cluster {
    /// The shards in `SHARDS` order; `None` for a shard nobody listens for.
    shards: Vec<Option<Memcached>>,
    /// Compared with the proxy byte for byte; not in the pool.
    reference: Memcached,
    ring: Ring,
    port: u16,
    /// Held so the proxy lives as long as the cluster.
    _proxy: ProxyProc,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with_dead(None)
    }

    /// Start the cluster; shard `dead` gets a port nobody listens on.
    fn start_with_dead(dead: Option<usize>) -> Cluster {
        let shards: Vec<Option<Memcached>> = (0..SHARDS.len())
            .map(|i| (Some(i) != dead).then(Memcached::start))
            .collect();
        let ports: Vec<u16> = shards
            .iter()
            .map(|s| s.as_ref().map_or_else(free_port, |m| m.port))
            .collect();
        let port = free_port();
        let mut yaml = format!(
            "mc:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  \
             timeout: 3000\n  servers:\n"
        );
        for (name, p) in SHARDS.iter().zip(&ports) {
            yaml.push_str(&format!("    - 127.0.0.1:{p}:1 {name}\n"));
        }
        let ring = Config::from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("config rejected: {e}\n{yaml}"))
            .pools[0]
            .ring()
            .expect("ring");
        let proxy = ProxyProc::twem(&yaml, port, &[]);
        Cluster {
            shards,
            reference: Memcached::start(),
            ring,
            port,
            _proxy: proxy,
        }
    }

    fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// The index in `SHARDS` of the shard the Ring puts `key` on.
    fn owner(&self, key: &str) -> usize {
        let name = self
            .ring
            .locate_name(key.as_bytes())
            .expect("a live server");
        SHARDS
            .iter()
            .position(|s| *s == name)
            .unwrap_or_else(|| panic!("ring named unknown server {name}"))
    }

    /// A client talking to shard `i` directly.
    fn shard(&self, i: usize) -> Client {
        self.shards[i]
            .as_ref()
            .unwrap_or_else(|| panic!("shard {i} is dead"))
            .client()
    }

    /// The first key `<prefix><n>` that the Ring puts on shard `i`.
    fn key_on(&self, prefix: &str, i: usize) -> String {
        (0..10_000)
            .map(|n| format!("{prefix}{n}"))
            .find(|k| self.owner(k) == i)
            .unwrap_or_else(|| panic!("no key {prefix}N lands on {}", SHARDS[i]))
    }
}

/// A storage command line plus its data block.
fn store(cmd: &str, key: &str, flags: u32, exptime: i64, data: &[u8], tail: &str) -> Vec<u8> {
    let mut v = format!("{cmd} {key} {flags} {exptime} {}{tail}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// One `VALUE key flags bytes [cas]` item.
fn value(key: &str, flags: u32, data: &[u8]) -> Vec<u8> {
    let mut v = format!("VALUE {key} {flags} {}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

fn is_retrieval(req: &[u8]) -> bool {
    req.starts_with(b"get ") || req.starts_with(b"gets ")
}

/// Send `req` to the proxy and to the reference; the two replies must be
/// identical and equal `want`.
fn same(proxy: &mut Client, reference: &mut Client, req: &[u8], want: &[u8]) {
    proxy.send(req);
    reference.send(req);
    let got = proxy.read_mc(is_retrieval(req));
    let refr = reference.read_mc(is_retrieval(req));
    assert_eq!(
        show(&refr),
        show(want),
        "the reference memcached disagrees with the test about {:?}",
        show(req)
    );
    assert_eq!(show(&got), show(want), "proxy reply to {:?}", show(req));
}

/// Bytes as text for assertion messages, long runs shortened.
fn show(b: &[u8]) -> String {
    if b.len() > 300 {
        format!(
            "{}...({} bytes)...{}",
            String::from_utf8_lossy(&b[..150]),
            b.len(),
            String::from_utf8_lossy(&b[b.len() - 100..])
        )
    } else {
        String::from_utf8_lossy(b).into_owned()
    }
}

/// One item of a `get`/`gets` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    key: String,
    flags: u32,
    cas: Option<u64>,
    data: Vec<u8>,
}

/// Parse a whole `get`/`gets` reply: items then exactly one `END` that ends
/// the bytes. Panics (failing the test) on anything else.
fn parse_values(reply: &[u8]) -> Vec<Item> {
    let mut items = Vec::new();
    let mut at = 0;
    loop {
        let rest = &reply[at..];
        let nl = twem_tests::find(rest, b"\r\n")
            .unwrap_or_else(|| panic!("unterminated line in {:?}", show(reply)));
        let line = std::str::from_utf8(&rest[..nl]).expect("ascii line");
        if line == "END" {
            assert_eq!(
                at + nl + 2,
                reply.len(),
                "bytes after END: {:?}",
                show(reply)
            );
            return items;
        }
        let w: Vec<&str> = line.split(' ').collect();
        assert!(
            w[0] == "VALUE" && (w.len() == 4 || w.len() == 5),
            "not a VALUE line: {line:?} in {:?}",
            show(reply)
        );
        let len: usize = w[3].parse().expect("byte count");
        let start = at + nl + 2;
        assert_eq!(
            &reply[start + len..start + len + 2],
            b"\r\n",
            "data block end"
        );
        items.push(Item {
            key: w[1].to_string(),
            flags: w[2].parse().expect("flags"),
            cas: w.get(4).map(|c| c.parse().expect("cas unique")),
            data: reply[start..start + len].to_vec(),
        });
        at = start + len + 2;
    }
}

/// The reply with every cas unique replaced by `#`: `gets` replies from
/// different servers agree on everything else.
fn mask_cas(reply: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for it in parse_values(reply) {
        out.extend_from_slice(
            format!("VALUE {} {} {} #\r\n", it.key, it.flags, it.data.len()).as_bytes(),
        );
        out.extend_from_slice(&it.data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"END\r\n");
    out
}

/// The cas unique of the single item in a `gets` reply.
fn cas_of(reply: &[u8]) -> u64 {
    match &parse_values(reply)[..] {
        [it] => it.cas.expect("gets answers a cas unique"),
        other => panic!("expected one item, got {other:?}"),
    }
}

/// Seconds left to live of `key`, read from the shard with the meta command
/// `mg <key> t` (memcached answers `HD t<secs>`, `t-1` for no expiry).
fn ttl_on(shard: &mut Client, key: &str) -> i64 {
    let line = shard.mc(format!("mg {key} t\r\n").as_bytes());
    let text = String::from_utf8_lossy(&line);
    text.trim_end()
        .strip_prefix("HD t")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("mg {key} t answered {text:?}"))
}

/// Deterministic bytes covering all 256 values, `\r\n` included, so a value
/// that the proxy cut at a line end would be caught.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// Every command, for keys on each of the three shards, answers through the
/// proxy exactly what a lone memcached answers, and the effects land on the
/// shard the Ring names.
#[test]
fn every_command_matches_a_lone_memcached() {
    let c = Cluster::start();
    let mut p = c.client();
    let mut r = c.reference.client();
    for (i, name) in SHARDS.iter().enumerate() {
        let k = c.key_on("cmd:", i);
        let miss = c.key_on("cmd-miss:", i);
        let added = c.key_on("cmd-add:", i);
        let n = c.key_on("cmd-num:", i);
        let f = c.key_on("cmd-flags:", i);
        let e = c.key_on("cmd-expired:", i);
        let req = |s: String| s.into_bytes();

        same(&mut p, &mut r, &req(format!("get {k}\r\n")), b"END\r\n");
        same(
            &mut p,
            &mut r,
            &store("set", &k, 7, 0, b"abc", ""),
            b"STORED\r\n",
        );
        same(
            &mut p,
            &mut r,
            &req(format!("get {k}\r\n")),
            &[&value(&k, 7, b"abc")[..], b"END\r\n"].concat(),
        );
        // add: a hit refuses, a miss stores.
        same(
            &mut p,
            &mut r,
            &store("add", &k, 0, 0, b"x", ""),
            b"NOT_STORED\r\n",
        );
        same(
            &mut p,
            &mut r,
            &store("add", &added, 1, 0, b"x", ""),
            b"STORED\r\n",
        );
        // replace: a hit stores (flags replaced), a miss refuses.
        same(
            &mut p,
            &mut r,
            &store("replace", &k, 8, 0, b"def", ""),
            b"STORED\r\n",
        );
        same(
            &mut p,
            &mut r,
            &store("replace", &miss, 0, 0, b"x", ""),
            b"NOT_STORED\r\n",
        );
        // append/prepend: hits extend the value and keep its flags.
        same(
            &mut p,
            &mut r,
            &store("append", &k, 0, 0, b"gh", ""),
            b"STORED\r\n",
        );
        same(
            &mut p,
            &mut r,
            &store("append", &miss, 0, 0, b"x", ""),
            b"NOT_STORED\r\n",
        );
        same(
            &mut p,
            &mut r,
            &store("prepend", &k, 0, 0, b"12", ""),
            b"STORED\r\n",
        );
        same(
            &mut p,
            &mut r,
            &store("prepend", &miss, 0, 0, b"x", ""),
            b"NOT_STORED\r\n",
        );
        same(
            &mut p,
            &mut r,
            &req(format!("get {k}\r\n")),
            &[&value(&k, 8, b"12defgh")[..], b"END\r\n"].concat(),
        );
        same(&mut p, &mut r, &req(format!("get {miss}\r\n")), b"END\r\n");
        // touch
        same(
            &mut p,
            &mut r,
            &req(format!("touch {k} 1000\r\n")),
            b"TOUCHED\r\n",
        );
        same(
            &mut p,
            &mut r,
            &req(format!("touch {miss} 1000\r\n")),
            b"NOT_FOUND\r\n",
        );
        // incr/decr: memcached's own CLIENT_ERROR on a non-numeric value
        // passes through; decr stops at 0; incr wraps at 2^64.
        same(
            &mut p,
            &mut r,
            &req(format!("incr {k} 1\r\n")),
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        );
        same(
            &mut p,
            &mut r,
            &store("set", &n, 0, 0, b"10", ""),
            b"STORED\r\n",
        );
        same(&mut p, &mut r, &req(format!("incr {n} 5\r\n")), b"15\r\n");
        same(&mut p, &mut r, &req(format!("decr {n} 20\r\n")), b"0\r\n");
        same(
            &mut p,
            &mut r,
            &req(format!("incr {n} 18446744073709551615\r\n")),
            b"18446744073709551615\r\n",
        );
        same(&mut p, &mut r, &req(format!("incr {n} 2\r\n")), b"1\r\n");
        same(
            &mut p,
            &mut r,
            &req(format!("incr {miss} 1\r\n")),
            b"NOT_FOUND\r\n",
        );
        same(
            &mut p,
            &mut r,
            &req(format!("decr {miss} 1\r\n")),
            b"NOT_FOUND\r\n",
        );
        // Largest flags survive the trip; an already expired item is gone.
        same(
            &mut p,
            &mut r,
            &store("set", &f, u32::MAX, 0, b"z", ""),
            b"STORED\r\n",
        );
        same(
            &mut p,
            &mut r,
            &req(format!("get {f}\r\n")),
            &[&value(&f, u32::MAX, b"z")[..], b"END\r\n"].concat(),
        );
        same(
            &mut p,
            &mut r,
            &store("set", &e, 0, -1, b"z", ""),
            b"STORED\r\n",
        );
        same(&mut p, &mut r, &req(format!("get {e}\r\n")), b"END\r\n");

        // The effects are on the owning shard and nowhere else.
        for (j, _) in SHARDS.iter().enumerate() {
            let mut s = c.shard(j);
            let got = s.mc(format!("get {k} {added} {n} {f}\r\n").as_bytes());
            let keys: Vec<String> = parse_values(&got).into_iter().map(|it| it.key).collect();
            let want: Vec<String> = if j == i {
                vec![k.clone(), added.clone(), n.clone(), f.clone()]
            } else {
                Vec::new()
            };
            assert_eq!(keys, want, "keys of shard {name} on {}", SHARDS[j]);
        }

        // delete: a hit, then a miss.
        same(
            &mut p,
            &mut r,
            &req(format!("delete {k}\r\n")),
            b"DELETED\r\n",
        );
        same(
            &mut p,
            &mut r,
            &req(format!("delete {k}\r\n")),
            b"NOT_FOUND\r\n",
        );
        same(&mut p, &mut r, &req(format!("get {k}\r\n")), b"END\r\n");
        assert_eq!(c.shard(i).mc(&req(format!("get {k}\r\n"))), b"END\r\n");
    }
    // version goes to one shard; every memcached here is the same build.
    p.send(b"version\r\n");
    r.send(b"version\r\n");
    let got = p.read_mc(false);
    assert!(
        got.starts_with(b"VERSION "),
        "version answered {:?}",
        show(&got)
    );
    assert_eq!(show(&got), show(&r.read_mc(false)));
}

/// Exptime given through the proxy (set, touch) is what the shard stores.
#[test]
fn exptime_and_flags_reach_the_shard() {
    let c = Cluster::start();
    let mut p = c.client();
    for i in 0..SHARDS.len() {
        let k = c.key_on("ttl:", i);
        assert_eq!(p.mc(&store("set", &k, 3, 5000, b"z", "")), b"STORED\r\n");
        let mut s = c.shard(i);
        // A second may tick between the set and the check.
        let ttl = ttl_on(&mut s, &k);
        assert!((4998..=5000).contains(&ttl), "ttl after set: {ttl}");
        assert_eq!(
            s.mc(format!("get {k}\r\n").as_bytes()),
            [&value(&k, 3, b"z")[..], b"END\r\n"].concat()
        );
        assert_eq!(
            p.mc(format!("touch {k} 9000\r\n").as_bytes()),
            b"TOUCHED\r\n"
        );
        let ttl = ttl_on(&mut s, &k);
        assert!((8998..=9000).contains(&ttl), "ttl after touch: {ttl}");
        // exptime 0 means "never".
        assert_eq!(p.mc(&store("set", &k, 3, 0, b"z", "")), b"STORED\r\n");
        assert_eq!(ttl_on(&mut s, &k), -1);
    }
}

/// gets through the proxy answers the owning shard's cas unique; cas with it
/// stores, with another value answers EXISTS, on a missing key NOT_FOUND.
#[test]
fn gets_and_cas() {
    let c = Cluster::start();
    let mut p = c.client();
    let mut r = c.reference.client();
    let keys: Vec<String> = (0..SHARDS.len()).map(|i| c.key_on("cas:", i)).collect();
    for (i, k) in keys.iter().enumerate() {
        let miss = c.key_on("cas-miss:", i);
        same(
            &mut p,
            &mut r,
            &store("set", k, 5, 0, b"one", ""),
            b"STORED\r\n",
        );
        let gets = format!("gets {k}\r\n");
        let via_proxy = p.mc(gets.as_bytes());
        // Byte for byte what the owner says (gets changes no cas)...
        assert_eq!(show(&via_proxy), show(&c.shard(i).mc(gets.as_bytes())));
        // ...and shaped like a lone memcached's answer.
        let via_ref = r.mc(gets.as_bytes());
        assert_eq!(show(&mask_cas(&via_proxy)), show(&mask_cas(&via_ref)));
        assert_eq!(
            show(&mask_cas(&via_proxy)),
            format!("VALUE {k} 5 3 #\r\none\r\nEND\r\n")
        );
        let (pc, rc) = (cas_of(&via_proxy), cas_of(&via_ref));

        // A stale cas unique: EXISTS, value unchanged.
        p.send(&store("cas", k, 0, 0, b"two", &format!(" {}", pc + 1)));
        r.send(&store("cas", k, 0, 0, b"two", &format!(" {}", rc + 1)));
        assert_eq!(show(&p.read_mc(false)), "EXISTS\r\n");
        assert_eq!(show(&r.read_mc(false)), "EXISTS\r\n");
        same(
            &mut p,
            &mut r,
            &store("cas", &miss, 0, 0, b"two", " 1"),
            b"NOT_FOUND\r\n",
        );
        // The right one: STORED, and the value and flags change.
        p.send(&store("cas", k, 6, 0, b"two", &format!(" {pc}")));
        r.send(&store("cas", k, 6, 0, b"two", &format!(" {rc}")));
        assert_eq!(show(&p.read_mc(false)), "STORED\r\n");
        assert_eq!(show(&r.read_mc(false)), "STORED\r\n");
        let want = [&value(k, 6, b"two")[..], b"END\r\n"].concat();
        same(&mut p, &mut r, format!("get {k}\r\n").as_bytes(), &want);
        assert_eq!(
            show(&c.shard(i).mc(format!("get {k}\r\n").as_bytes())),
            show(&want)
        );
        // The used cas unique is now stale.
        assert_eq!(
            p.mc(&store("cas", k, 0, 0, b"3", &format!(" {pc}"))),
            b"EXISTS\r\n"
        );
    }
    // A multi-key gets across the shards: each item is its owner's, cas
    // included, in the client's order, one END.
    let line = format!("gets {} {} {}\r\n", keys[2], keys[0], keys[1]);
    let got = parse_values(&p.mc(line.as_bytes()));
    let want: Vec<Item> = [2, 0, 1]
        .iter()
        .flat_map(|&i| parse_values(&c.shard(i).mc(format!("gets {}\r\n", keys[i]).as_bytes())))
        .collect();
    assert_eq!(got, want);
}

/// What a shard should hold for a key: `(flags, data)`, or nothing.
type Stored<'a> = Option<(u32, &'a [u8])>;

/// noreply storage, delete, incr, decr and touch commands answer nothing
/// (hits and misses alike), and their effects land on the owning shard.
#[test]
fn noreply_commands_answer_nothing_and_take_effect() {
    let c = Cluster::start();
    let mut p = c.client();
    // Keys spread round-robin over the shards.
    let mut n = 0;
    let mut key = |name: &str| {
        n += 1;
        c.key_on(&format!("nr-{name}:"), n % SHARDS.len())
    };
    let (set, add, add_hit, rep, rep_miss) = (
        key("set"),
        key("add"),
        key("addhit"),
        key("rep"),
        key("repmiss"),
    );
    let (app, pre, app_miss, cas, cas_bad) = (
        key("app"),
        key("pre"),
        key("appmiss"),
        key("cas"),
        key("casbad"),
    );
    let (inc, dec, inc_miss, inc_nan, touch) = (
        key("inc"),
        key("dec"),
        key("incmiss"),
        key("incnan"),
        key("touch"),
    );
    let (del, del_miss, touch_miss) = (key("del"), key("delmiss"), key("touchmiss"));

    // Set up with replies, so the only silent commands are the ones tested.
    for (k, v) in [
        (&add_hit, "old"),
        (&rep, "old"),
        (&app, "mid"),
        (&pre, "mid"),
        (&cas, "old"),
        (&cas_bad, "old"),
        (&inc, "10"),
        (&dec, "10"),
        (&inc_nan, "abc"),
        (&touch, "t"),
        (&del, "d"),
    ] {
        assert_eq!(
            p.mc(&store("set", k, 0, 0, v.as_bytes(), "")),
            b"STORED\r\n"
        );
    }
    let cas_unique = cas_of(&p.mc(format!("gets {cas}\r\n").as_bytes()));
    let bad_unique = cas_of(&p.mc(format!("gets {cas_bad}\r\n").as_bytes())) + 1;

    let mut batch = Vec::new();
    batch.extend(store("set", &set, 1, 0, b"new", " noreply"));
    batch.extend(store("add", &add, 2, 0, b"new", " noreply"));
    batch.extend(store("add", &add_hit, 2, 0, b"new", " noreply"));
    batch.extend(store("replace", &rep, 3, 0, b"new", " noreply"));
    batch.extend(store("replace", &rep_miss, 3, 0, b"new", " noreply"));
    batch.extend(store("append", &app, 0, 0, b">", " noreply"));
    batch.extend(store("prepend", &pre, 0, 0, b"<", " noreply"));
    batch.extend(store("append", &app_miss, 0, 0, b">", " noreply"));
    batch.extend(store(
        "cas",
        &cas,
        4,
        0,
        b"new",
        &format!(" {cas_unique} noreply"),
    ));
    batch.extend(store(
        "cas",
        &cas_bad,
        4,
        0,
        b"new",
        &format!(" {bad_unique} noreply"),
    ));
    for line in [
        format!("incr {inc} 5 noreply\r\n"),
        format!("decr {dec} 3 noreply\r\n"),
        format!("incr {inc_miss} 1 noreply\r\n"),
        format!("incr {inc_nan} 1 noreply\r\n"),
        format!("touch {touch} 7000 noreply\r\n"),
        format!("touch {touch_miss} 7000 noreply\r\n"),
        format!("delete {del} noreply\r\n"),
        format!("delete {del_miss} noreply\r\n"),
    ] {
        batch.extend_from_slice(line.as_bytes());
    }
    batch.extend_from_slice(format!("get {set}\r\n").as_bytes());
    p.send(&batch);
    // The first bytes back are the get's reply: nothing came for the rest.
    assert_eq!(
        show(&p.read_mc(true)),
        show(&[&value(&set, 1, b"new")[..], b"END\r\n"].concat())
    );

    let expect: [(&String, Stored<'_>); 18] = [
        (&set, Some((1, b"new"))),
        (&add, Some((2, b"new"))),
        (&add_hit, Some((0, b"old"))),
        (&rep, Some((3, b"new"))),
        (&rep_miss, None),
        (&app, Some((0, b"mid>"))),
        (&pre, Some((0, b"<mid"))),
        (&app_miss, None),
        (&cas, Some((4, b"new"))),
        (&cas_bad, Some((0, b"old"))),
        (&inc, Some((0, b"15"))),
        // memcached decrements in place: the shorter number is blank-padded.
        (&dec, Some((0, b"7 "))),
        (&inc_miss, None),
        (&inc_nan, Some((0, b"abc"))),
        (&touch, Some((0, b"t"))),
        (&touch_miss, None),
        (&del, None),
        (&del_miss, None),
    ];
    let mut shards: Vec<Client> = (0..SHARDS.len()).map(|i| c.shard(i)).collect();
    let mut owners = BTreeSet::new();
    for (k, want) in expect {
        let o = c.owner(k);
        owners.insert(o);
        for (j, s) in shards.iter_mut().enumerate() {
            let want = match want {
                Some((flags, data)) if j == o => [&value(k, flags, data)[..], b"END\r\n"].concat(),
                _ => b"END\r\n".to_vec(),
            };
            // noreply requests to other shards travel on other backend
            // connections: the get's reply proves nothing about them having
            // arrived yet, so allow them a moment (they must still arrive).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            let mut got = s.mc(format!("get {k}\r\n").as_bytes());
            while got != want && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
                got = s.mc(format!("get {k}\r\n").as_bytes());
            }
            assert_eq!(show(&got), show(&want), "{k} on {}", SHARDS[j]);
        }
    }
    assert_eq!(owners.len(), SHARDS.len(), "the keys cover every shard");
    // Same allowance as above for the noreply touch to arrive.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut ttl = ttl_on(&mut shards[c.owner(&touch)], &touch);
    while !(6998..=7000).contains(&ttl) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        ttl = ttl_on(&mut shards[c.owner(&touch)], &touch);
    }
    assert!((6998..=7000).contains(&ttl), "touch noreply set ttl {ttl}");
    // The connection is still in step.
    assert_eq!(p.mc(b"get nothing-here\r\n"), b"END\r\n");
}

/// A 200-key get across the shards, with misses and duplicates, answers
/// the values in the client's key order with one END, as a lone memcached
/// does; each key is stored on the shard the Ring names.
#[test]
fn multiget_of_200_keys_in_client_order() {
    let c = Cluster::start();
    let mut p = c.client();
    let mut r = c.reference.client();
    // The number leads: fnv1a_64 (nutcracker's default, truncated to 32
    // bits) barely moves keys that differ only in their last bytes, so
    // `mg:hit:N` would all land on one or two shards.
    let present: Vec<String> = (0..140).map(|i| format!("{i}:mg-hit")).collect();
    let missing: Vec<String> = (0..45).map(|i| format!("{i}:mg-miss")).collect();
    let data = |i: usize| noise((i * 37) % 300, i as u64);

    let mut sets = Vec::new();
    for (i, k) in present.iter().enumerate() {
        sets.extend(store("set", k, i as u32, 0, &data(i), ""));
    }
    p.send(&sets);
    r.send(&sets);
    for k in &present {
        assert_eq!(show(&p.read_mc(false)), "STORED\r\n", "set {k}");
        assert_eq!(r.read_mc(false), b"STORED\r\n");
    }

    // 185 distinct keys in a scrambled order, then 15 repeats of hits.
    let mut order: Vec<&String> = present.iter().chain(&missing).collect();
    let mut x = 7u64;
    for i in (1..order.len()).rev() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        order.swap(i, (x >> 33) as usize % (i + 1));
    }
    for d in 0..15 {
        let at = (d * 13 + 5) % order.len();
        order.insert(at, &present[d * 9]);
    }
    assert_eq!(order.len(), 200);
    let line = format!(
        "get {}\r\n",
        order
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );

    let mut want = Vec::new();
    for k in &order {
        if let Some(i) = present.iter().position(|p| p == *k) {
            want.extend(value(k, i as u32, &data(i)));
        }
    }
    want.extend_from_slice(b"END\r\n");
    same(&mut p, &mut r, line.as_bytes(), &want);
    assert_eq!(parse_values(&want).len(), 140 + 15);

    // Each shard holds exactly the present keys the Ring gives it.
    let all = format!(
        "get {}\r\n",
        present
            .iter()
            .chain(&missing)
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (i, name) in SHARDS.iter().enumerate() {
        let held: BTreeSet<String> = parse_values(&c.shard(i).mc(all.as_bytes()))
            .into_iter()
            .map(|it| it.key)
            .collect();
        let owned: BTreeSet<String> = present
            .iter()
            .filter(|k| c.owner(k) == i)
            .cloned()
            .collect();
        assert!(owned.len() > 10, "{} owns only {} keys", name, owned.len());
        assert_eq!(held, owned, "keys held by {name}");
    }
}

/// Values of 0 B, 1 KiB, 100 KiB and 1 MiB go through whole, alone and in a
/// multi-get carrying three 1 MiB values from three shards.
#[test]
fn values_up_to_one_mebibyte() {
    let c = Cluster::start();
    let mut p = c.client();
    let sizes = [0, 1024, 100 * 1024, 1024 * 1024];
    for (n, &len) in sizes.iter().enumerate() {
        let k = c.key_on(&format!("size{len}:"), n % SHARDS.len());
        let v = noise(len, n as u64);
        assert_eq!(
            show(&p.mc(&store("set", &k, 9, 0, &v, ""))),
            "STORED\r\n",
            "set {len} B"
        );
        let want = [&value(&k, 9, &v)[..], b"END\r\n"].concat();
        let got = p.mc(format!("get {k}\r\n").as_bytes());
        assert!(got == want, "get of {len} B: {:?}", show(&got));
        let direct = c.shard(c.owner(&k)).mc(format!("get {k}\r\n").as_bytes());
        assert!(direct == want, "{len} B on its shard: {:?}", show(&direct));
    }

    let mut keys = Vec::new();
    let mut want = Vec::new();
    for i in 0..SHARDS.len() {
        let big = c.key_on("big:", i);
        let small = c.key_on("small:", (i + 1) % SHARDS.len());
        let (bv, sv) = (noise(1024 * 1024, 100 + i as u64), noise(i * 10, 200));
        assert_eq!(p.mc(&store("set", &big, 1, 0, &bv, "")), b"STORED\r\n");
        assert_eq!(p.mc(&store("set", &small, 2, 0, &sv, "")), b"STORED\r\n");
        want.extend(value(&big, 1, &bv));
        want.extend(value(&small, 2, &sv));
        keys.push(big);
        keys.push(small);
    }
    want.extend_from_slice(b"END\r\n");
    let got = p.mc(format!("get {}\r\n", keys.join(" ")).as_bytes());
    assert!(got == want, "multi-get of 3 MiB: {:?}", show(&got));
}

/// Values over 1 MiB that the shards accept (`-I 2m`) pass both ways, as
/// through nutcracker, which bounds no value; one stored directly on the
/// shard fails neither its own `get` nor the next request on that backend.
#[test]
fn values_over_one_mebibyte_pass_like_nutcracker() {
    let c = Cluster::start();
    let mut p = c.client();
    let k = c.key_on("huge:", 0);
    let small = c.key_on("huge-small:", 0);
    let v = noise(1536 * 1024, 7);
    let want = [&value(&k, 0, &v)[..], b"END\r\n"].concat();
    let mut s = c.shard(0);
    assert_eq!(s.mc(&store("set", &k, 0, 0, &v, "")), b"STORED\r\n");
    assert_eq!(s.mc(&store("set", &small, 0, 0, b"s", "")), b"STORED\r\n");
    // Read through the proxy, pipelined with a small get to the same shard.
    p.send(format!("get {k}\r\nget {small}\r\n").as_bytes());
    let got = p.read_mc(true);
    assert!(got == want, "get of 1.5 MiB: {:?}", show(&got));
    assert_eq!(
        show(&p.read_mc(true)),
        show(&[&value(&small, 0, b"s")[..], b"END\r\n"].concat())
    );
    // Written through the proxy.
    assert_eq!(show(&p.mc(&store("set", &k, 1, 0, &v, ""))), "STORED\r\n");
    let direct = s.mc(format!("get {k}\r\n").as_bytes());
    assert!(
        direct == [&value(&k, 1, &v)[..], b"END\r\n"].concat(),
        "on the shard: {:?}",
        show(&direct)
    );
}

/// 5,000 sets and gets written in one go are answered in order.
#[test]
fn pipeline_of_5000_mixed_requests_stays_in_order() {
    let c = Cluster::start();
    let mut p = c.client();
    let mut model: HashMap<String, (u32, Vec<u8>)> = HashMap::new();
    let mut reqs = Vec::new();
    let mut replies: Vec<(bool, Vec<u8>)> = Vec::new();
    for i in 0..5000usize {
        let k = format!("pl:{}", (i * 7919) % 331);
        if i % 3 == 0 {
            reqs.extend_from_slice(format!("get {k}\r\n").as_bytes());
            let mut want = match model.get(&k) {
                Some((f, v)) => value(&k, *f, v),
                None => Vec::new(),
            };
            want.extend_from_slice(b"END\r\n");
            replies.push((true, want));
        } else {
            let v = format!("v{i}-{}", "x".repeat(i % 40)).into_bytes();
            reqs.extend(store("set", &k, i as u32, 0, &v, ""));
            model.insert(k, (i as u32, v));
            replies.push((false, b"STORED\r\n".to_vec()));
        }
    }
    // A writer thread, so a proxy that answers while we are still writing
    // cannot deadlock us on full socket buffers.
    let mut sock = p.sock.try_clone().expect("clone socket");
    let writer = std::thread::spawn(move || sock.write_all(&reqs));
    for (i, (retrieval, want)) in replies.iter().enumerate() {
        let got = p.read_mc(*retrieval);
        assert_eq!(show(&got), show(want), "reply {i} of 5000");
    }
    writer
        .join()
        .expect("writer thread")
        .expect("write 5000 requests");
    assert!(
        p.pending().is_empty(),
        "extra bytes: {:?}",
        show(p.pending())
    );
}

/// Eight clients pipelining at once over the shared backend connections
/// each get their own replies, in their own order.
#[test]
fn concurrent_pipelines_keep_replies_apart() {
    let c = Cluster::start();
    let port = c.port;
    let workers: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut p = Client::connect(port);
                let mut reqs = Vec::new();
                let mut want = Vec::new();
                for i in 0..500 {
                    // Keys shared by all clients would race; each writes its own.
                    let k = format!("{i}:conc:{t}");
                    let v = format!("{t}-{i}").into_bytes();
                    reqs.extend(store("set", &k, t, 0, &v, ""));
                    reqs.extend_from_slice(format!("get {k} {}:conc:{t}\r\n", i + 1).as_bytes());
                    want.push((false, b"STORED\r\n".to_vec()));
                    want.push((true, [&value(&k, t, &v)[..], b"END\r\n"].concat()));
                }
                let mut sock = p.sock.try_clone().expect("clone socket");
                let writer = std::thread::spawn(move || sock.write_all(&reqs));
                for (i, (retrieval, w)) in want.iter().enumerate() {
                    let got = p.read_mc(*retrieval);
                    assert_eq!(show(&got), show(w), "client {t}, reply {i}");
                }
                writer.join().expect("writer").expect("write");
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client saw a wrong reply");
    }
}

/// Values that look like protocol (`END`, `VALUE` lines, `\r\n`) are data:
/// the proxy cuts replies by byte count, not by scanning for lines.
#[test]
fn values_that_look_like_protocol() {
    let c = Cluster::start();
    let mut p = c.client();
    let mut r = c.reference.client();
    let tricky: [&[u8]; 5] = [
        b"END\r\n",
        b"\r\nEND\r\n",
        b"VALUE x 0 1\r\ny\r\nEND\r\n",
        b"STORED\r\n",
        b"SERVER_ERROR x\r\n",
    ];
    let mut keys = Vec::new();
    let mut want = Vec::new();
    for (i, v) in tricky.iter().enumerate() {
        let k = c.key_on(&format!("tricky{i}:"), i % SHARDS.len());
        same(
            &mut p,
            &mut r,
            &store("set", &k, 0, 0, v, ""),
            b"STORED\r\n",
        );
        let one = [&value(&k, 0, v)[..], b"END\r\n"].concat();
        same(&mut p, &mut r, format!("get {k}\r\n").as_bytes(), &one);
        want.extend(value(&k, 0, v));
        keys.push(k);
    }
    want.extend_from_slice(b"END\r\n");
    same(
        &mut p,
        &mut r,
        format!("get {}\r\n", keys.join(" ")).as_bytes(),
        &want,
    );
}

/// Bad command lines get memcached's error words and the connection goes
/// on; a 250-byte key is fine, 251 is not.
#[test]
fn bad_input_is_answered_and_the_connection_survives() {
    let c = Cluster::start();
    let mut p = c.client();
    let mut r = c.reference.client();
    same(
        &mut p,
        &mut r,
        &store("set", "ok", 0, 0, b"v", ""),
        b"STORED\r\n",
    );
    let get_ok = [&value("ok", 0, b"v")[..], b"END\r\n"].concat();
    let long = "k".repeat(251);
    let max = "m".repeat(250);
    for bad in [
        "foo bar\r\n".to_string(),
        "GET ok\r\n".to_string(),
        "\r\n".to_string(),
        "incr ok\r\n".to_string(),
    ] {
        same(&mut p, &mut r, bad.as_bytes(), b"ERROR\r\n");
        same(&mut p, &mut r, b"get ok\r\n", &get_ok);
    }
    same(
        &mut p,
        &mut r,
        format!("get {long}\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\n",
    );
    same(&mut p, &mut r, b"get ok\r\n", &get_ok);
    same(
        &mut p,
        &mut r,
        format!("delete {long}\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\n",
    );
    same(&mut p, &mut r, b"get ok\r\n", &get_ok);
    // A storage command with a long key: the proxy skips its data block
    // (docs/design.md section 4) where memcached would run it as a command.
    p.send(&store("set", &long, 0, 0, b"get ok", ""));
    p.send(b"get ok\r\n");
    assert_eq!(
        show(&p.read_mc(false)),
        "CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(show(&p.read_mc(true)), show(&get_ok));
    // 250 bytes is a legal key.
    same(
        &mut p,
        &mut r,
        &store("set", &max, 3, 0, b"w", ""),
        b"STORED\r\n",
    );
    same(
        &mut p,
        &mut r,
        format!("get {max}\r\n").as_bytes(),
        &[&value(&max, 3, b"w")[..], b"END\r\n"].concat(),
    );
}

/// `quit` closes the connection once every earlier reply is written, a
/// 1 MiB one included; later commands are not run.
#[test]
fn quit_closes_after_earlier_replies() {
    let c = Cluster::start();
    let mut p = c.client();
    let big = noise(1024 * 1024, 42);
    let mut batch = store("set", "q:big", 0, 0, &big, "");
    batch.extend(store("set", "q:small", 5, 0, b"x", ""));
    batch.extend_from_slice(b"get q:big q:small\r\nquit\r\nset q:after 0 0 1\r\ny\r\n");
    p.send(&batch);
    assert!(p.is_closed(), "connection still open after quit");
    let mut want = b"STORED\r\nSTORED\r\n".to_vec();
    want.extend(value("q:big", 0, &big));
    want.extend(value("q:small", 5, b"x"));
    want.extend_from_slice(b"END\r\n");
    assert!(p.pending() == want, "before close: {:?}", show(p.pending()));
    // The command after quit never ran.
    let mut fresh = c.client();
    assert_eq!(fresh.mc(b"get q:after\r\n"), b"END\r\n");
}

/// With one shard down, its keys get `SERVER_ERROR Connection refused`, other
/// keys are served, and a multi-get touching it answers one error line.
#[test]
fn a_dead_shard_fails_only_its_keys() {
    let c = Cluster::start_with_dead(Some(2));
    let mut p = c.client();
    let live0 = c.key_on("live:", 0);
    let live1 = c.key_on("live:", 1);
    let dead = c.key_on("dead:", 2);
    assert_eq!(p.mc(&store("set", &live0, 0, 0, b"a", "")), b"STORED\r\n");
    assert_eq!(p.mc(&store("set", &live1, 0, 0, b"b", "")), b"STORED\r\n");
    for req in [
        format!("get {dead}\r\n").into_bytes(),
        format!("gets {dead}\r\n").into_bytes(),
        store("set", &dead, 0, 0, b"x", ""),
        store("add", &dead, 0, 0, b"x", ""),
        store("cas", &dead, 0, 0, b"x", " 1"),
        format!("incr {dead} 1\r\n").into_bytes(),
        format!("touch {dead} 1\r\n").into_bytes(),
        format!("delete {dead}\r\n").into_bytes(),
    ] {
        assert_eq!(show(&p.mc(&req)), show(REFUSED), "{:?}", show(&req));
    }
    let both = [
        &value(&live0, 0, b"a")[..],
        &value(&live1, 0, b"b"),
        b"END\r\n",
    ]
    .concat();
    assert_eq!(
        show(&p.mc(format!("get {live0} {live1}\r\n").as_bytes())),
        show(&both)
    );
    // One error line for the whole multi-get, then the connection goes on.
    assert_eq!(
        show(&p.mc(format!("get {live0} {dead} {live1}\r\n").as_bytes())),
        show(REFUSED)
    );
    // Pipelined: the failure sits in its place among the answers.
    p.send(format!("get {live0}\r\nget {dead}\r\nget {live1}\r\n").as_bytes());
    assert_eq!(
        show(&p.read_mc(true)),
        show(&[&value(&live0, 0, b"a")[..], b"END\r\n"].concat())
    );
    assert_eq!(show(&p.read_mc(true)), show(REFUSED));
    assert_eq!(
        show(&p.read_mc(true)),
        show(&[&value(&live1, 0, b"b")[..], b"END\r\n"].concat())
    );
}

/// A noreply command for a dead shard answers nothing, like any noreply.
#[test]
fn noreply_to_a_dead_shard_answers_nothing() {
    let c = Cluster::start_with_dead(Some(2));
    let mut p = c.client();
    let live0 = c.key_on("live:", 0);
    let dead = c.key_on("dead:", 2);
    let mut batch = store("set", &dead, 0, 0, b"x", " noreply");
    batch.extend_from_slice(format!("delete {dead} noreply\r\nget {live0}\r\n").as_bytes());
    p.send(&batch);
    assert_eq!(show(&p.read_mc(true)), "END\r\n");
}
