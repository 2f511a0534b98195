//! memcached `stats`, `flush_all`, `verbosity`, `gat`/`gats` and the meta
//! protocol (`mg ms md ma mn me`) through twemproxy, end to end (issue #14).
//!
//! Meta replies are compared byte for byte with a lone memcached given the
//! same sequences (the proxy in front of one fresh memcached, the reference
//! another fresh one): hits, misses, opaques, base64 keys, binary data
//! holding `\r\n`, arithmetic, deletes and quiet pipelines ending in `mn`.
//! Two-server pools check placement by the decoded base64 key, the summed
//! `stats`, and that `flush_all` reaches every server.
//!
//! Run: `cargo build -p twem-server && cargo test -p twem-tests --test memcache_meta`
//! (set `TWEMPROXY_BIN` when the binary is built in another target dir).

use twem_tests::{free_port, key_on, Client, Memcached, ProxyProc, Twem};

/// A proxy over `servers` (named `s0`, `s1`, ...), and its yaml.
fn proxy_over(servers: &[&Memcached]) -> (ProxyProc, u16, String) {
    let named = servers.iter().enumerate();
    let list: Vec<(String, String)> = named.map(|(i, m)| (m.addr(), format!("s{i}"))).collect();
    let settings = "  hash: fnv1a_64\n  distribution: ketama\n  timeout: 3000\n";
    let t = Twem::start("mc", settings, &list);
    (t.proxy, t.port, t.yaml)
}

/// Two fresh memcached servers, `s0` and `s1`, behind twem
/// ([`proxy_over`]).
fn two_servers() -> ([Memcached; 2], ProxyProc, u16, String) {
    let servers = [Memcached::start(), Memcached::start()];
    let (proxy, port, yaml) = proxy_over(&[&servers[0], &servers[1]]);
    (servers, proxy, port, yaml)
}

/// A lone memcached, the reference the proxy's answers are compared with,
/// and a client of it.
fn lone_memcached() -> (Memcached, Client) {
    let reference = Memcached::start();
    let direct = reference.client();
    (reference, direct)
}

/// Send `pipeline` (which must end in `mn\r\n` and hold `mn` only as
/// commands) and read every reply up to its last `MN`.
fn run_pipeline(c: &mut Client, pipeline: &[u8]) -> Vec<u8> {
    c.send(pipeline);
    let noops = count_noops(pipeline);
    let mut out = Vec::new();
    for _ in 0..noops {
        out.extend(c.read_until(b"MN\r\n"));
    }
    out
}

/// The `mn` command lines of a pipeline built by this file (data blocks in
/// it never hold `mn\r\n`).
fn count_noops(pipeline: &[u8]) -> usize {
    let mut n = 0;
    let mut line_start = true;
    for (i, &b) in pipeline.iter().enumerate() {
        if line_start && pipeline.get(i..i + 4) == Some(b"mn\r\n") {
            n += 1;
        }
        line_start = b == b'\n';
    }
    n
}

/// Send one meta request and read its reply: one line, or a `VA <len>`
/// line and its data block.
fn meta(c: &mut Client, req: &[u8]) -> Vec<u8> {
    c.send(req);
    let mut line = c.read_line();
    if let Some(rest) = line.strip_prefix(b"VA ") {
        let len: usize = String::from_utf8_lossy(rest)
            .split([' ', '\r'])
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line:?}"));
        line.extend(c.read_exact_n(len + 2));
    }
    line
}

/// `ms <key> <len> <flags>\r\n<data>\r\n`.
fn ms(key: &str, flags: &str, data: &[u8]) -> Vec<u8> {
    let mut v = format!("ms {key} {} {flags}", data.len())
        .trim_end()
        .as_bytes()
        .to_vec();
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// Bytes covering all 256 values, `\r\n` and `mn` excluded from nothing but
/// `mn\r\n` (so the pipeline reader's count stays right).
fn binary(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
    for i in (0..len).step_by(97) {
        if i + 1 < len {
            v[i] = b'\r';
            v[i + 1] = b'\n';
        }
    }
    v
}

/// Base64 (standard, padded) of `bytes`.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The meta sequences compared byte for byte.
fn sequences() -> Vec<Vec<u8>> {
    let mut seqs: Vec<Vec<u8>> = Vec::new();
    // Hits, misses, flags returned, opaque and k.
    seqs.push(
        [
            ms("foo", "T0 F5", b"bar"),
            b"mg foo v f t k s\r\nmg missing v\r\nmg foo v O123 k\r\nmg missing O456 k\r\nmg foo\r\nmn\r\n"
                .to_vec(),
        ]
        .concat(),
    );
    // Binary data with \r\n, small and 100 KB, and the cas flag.
    seqs.push(
        [
            ms("bin", "c", &binary(300)),
            b"mg bin v c f\r\n".to_vec(),
            ms("big", "F7", &binary(100_000)),
            b"mg big v f s\r\nmn\r\n".to_vec(),
        ]
        .concat(),
    );
    // Quiet mode: misses and stored/deleted suppressed, hits and failures
    // answered, all before the MN.
    seqs.push(
        [
            b"mg foo v q\r\nmg missing v q\r\nmg missing2 v q k O9\r\n".to_vec(),
            ms("q1", "q", b"x"),
            ms("q2", "q MA", b"y"),
            ms("q3", "q MR", b"y"),
            b"md nothere q\r\nmd q1 q\r\nmg foo q\r\nmg foo k q O7\r\nmg q1 v q\r\nmn\r\n".to_vec(),
            b"mg foo v q\r\nmg nothere q\r\nmn\r\nmg foo s\r\nmn\r\n".to_vec(),
        ]
        .concat(),
    );
    // Base64 keys, a binary one included; one that does not decode.
    let raw_key = b"k\x00\x01 \r\n\xff";
    seqs.push(
        [
            ms("YmFzZTY0", "b", b"hi"),
            b"mg YmFzZTY0 b v k\r\nmg base64 v k\r\n".to_vec(),
            ms(&base64(raw_key), "b T0", b"binary key"),
            format!("mg {} b v k\r\nmg YQ= b v\r\nmn\r\n", base64(raw_key)).into_bytes(),
        ]
        .concat(),
    );
    // Arithmetic: missing, autovivify, incr, decr, quiet.
    seqs.push(
        b"ma cnt\r\nma cnt N0 J10 v\r\nma cnt v\r\nma cnt MD D3 v\r\nma cnt q\r\nma cnt v t\r\nma nope q\r\nma cnt MI D18446744073709551615 v\r\nmn\r\n"
            .to_vec(),
    );
    // Deletes, a bad flag (its ms block is swallowed by the server), me on a
    // miss, errors in quiet mode.
    seqs.push(
        [
            b"md foo\r\nmd foo\r\nmg foo v\r\nmg foo zz\r\nmg foo v q zz\r\n".to_vec(),
            ms("foo", "MZ", b"hi"),
            b"me nothere\r\nmg foo v\r\nmn\r\n".to_vec(),
        ]
        .concat(),
    );
    seqs
}

/// Every meta sequence answers through a one-server proxy exactly what a
/// lone memcached answers, and the connection stays usable after it.
#[test]
fn meta_matches_memcached_byte_for_byte() {
    let reference = Memcached::start();
    let behind = Memcached::start();
    let (_p, port, _) = proxy_over(&[&behind]);
    let mut direct = reference.client();
    let mut proxied = Client::connect(port);
    for seq in sequences() {
        let want = run_pipeline(&mut direct, &seq);
        let got = run_pipeline(&mut proxied, &seq);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "sequence {:?}",
            String::from_utf8_lossy(&seq[..seq.len().min(200)])
        );
        direct.assert_nothing_pending("reference");
        proxied.assert_nothing_pending("proxy");
    }
    // me on a hit: the same fields (times may differ by a second).
    let want = direct.mc(b"me bin\r\n");
    let got = proxied.mc(b"me bin\r\n");
    assert!(want.starts_with(b"ME bin exp=-1 "), "{want:?}");
    assert!(got.starts_with(b"ME bin exp=-1 "), "{got:?}");
    assert_eq!(proxied.mc(b"version\r\n"), direct.mc(b"version\r\n"));
}

/// A long pipeline of quiet requests over two servers, mostly suppressed,
/// then plain requests: every reply in order, nothing extra, nothing lost.
#[test]
fn quiet_pipelines_stay_in_step_over_two_servers() {
    let (_servers, _p, port, _) = two_servers();
    let (_reference, mut direct) = lone_memcached();
    let mut c = Client::connect(port);
    let mut seq = Vec::new();
    for i in 0..300 {
        seq.extend(ms(&format!("k{i}"), "q T0", format!("v{i}").as_bytes()));
    }
    for i in 0..300 {
        // Even keys hit (answered), odd ones deleted first then miss (not).
        if i % 2 == 1 {
            seq.extend(format!("md k{i} q\r\n").into_bytes());
        }
        seq.extend(format!("mg k{i} v q k O{i}\r\n").into_bytes());
    }
    seq.extend_from_slice(b"mn\r\nmg k0 v\r\nmn\r\n");
    let want = run_pipeline(&mut direct, &seq);
    let got = run_pipeline(&mut c, &seq);
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(got.windows(3).filter(|w| w == b"VA ").count(), 151);
    c.assert_nothing_pending("extra bytes after the pipeline");
    assert_eq!(meta(&mut c, b"mg k2 v\r\n"), b"VA 2\r\nv2\r\n");
}

/// A key with the `b` flag is placed by the key it decodes to: the item
/// set through the proxy is on the server the Ring names for the decoded
/// key, under its decoded name; plain and base64 requests meet.
#[test]
fn base64_keys_are_placed_by_the_decoded_key() {
    let ([a, b], _p, port, yaml) = two_servers();
    let mut c = Client::connect(port);
    let mut shards = [a.client(), b.client()];
    for (i, server) in ["s0", "s1", "s0", "s1"].iter().enumerate() {
        let key = key_on(&yaml, server, &format!("b64-{i}-"));
        let encoded = base64(key.as_bytes());
        assert_eq!(c.mc(&ms(&encoded, "b", b"via-b64")), b"HD\r\n");
        let on: usize = if *server == "s0" { 0 } else { 1 };
        assert_eq!(
            meta(&mut shards[on], format!("mg {key} v\r\n").as_bytes()),
            b"VA 7\r\nvia-b64\r\n",
            "{key} not on {server}"
        );
        assert_eq!(
            shards[1 - on].mc(format!("mg {key} v\r\n").as_bytes()),
            b"EN\r\n"
        );
        // Plain through the proxy finds it; base64 get returns the key
        // base64-encoded, as memcached does.
        assert_eq!(
            meta(&mut c, format!("mg {key} v\r\n").as_bytes()),
            b"VA 7\r\nvia-b64\r\n"
        );
        assert_eq!(
            meta(&mut c, format!("mg {encoded} b k v\r\n").as_bytes()),
            format!("VA 7 k{encoded} b\r\nvia-b64\r\n").as_bytes()
        );
    }
}

/// `stats` through the proxy: memcached's format, the servers' counters
/// summed (`curr_items`), the proxy's own pid and connections, `END`.
/// `stats <sub>` is one SERVER_ERROR line and the connection goes on.
#[test]
fn stats_are_summed_over_the_servers() {
    let ([a, b], p, port, _) = two_servers();
    let (mut da, mut db) = (a.client(), b.client());
    for i in 0..2 {
        assert_eq!(
            da.mc(format!("set a{i} 0 0 1\r\nx\r\n").as_bytes()),
            b"STORED\r\n"
        );
    }
    for i in 0..3 {
        assert_eq!(
            db.mc(format!("set b{i} 0 0 1\r\nx\r\n").as_bytes()),
            b"STORED\r\n"
        );
    }
    let mut c = Client::connect(port);
    // The harness's readiness probe was a client too (it connected and
    // left): wait until the proxy has seen it go, so that the count below
    // is this client's alone (a loaded CI machine once read 2).
    let st = p.stats_when(|s| s["mc"]["client_connections"] == 1);
    assert_eq!(st["mc"]["client_connections"], 1, "{st}");
    c.send(b"stats\r\n");
    let reply = c.read_until(b"END\r\n");
    c.assert_nothing_pending("after END");
    let text = String::from_utf8(reply).expect("text");
    let mut fields = std::collections::HashMap::new();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.last(), Some(&"END"));
    for l in &lines[..lines.len() - 1] {
        let rest = l.strip_prefix("STAT ").unwrap_or_else(|| panic!("{l:?}"));
        let (n, v) = rest.split_once(' ').expect("name value");
        assert!(
            fields.insert(n.to_string(), v.to_string()).is_none(),
            "{n} twice"
        );
    }
    assert_eq!(fields["curr_items"], "5");
    assert_eq!(fields["pid"], p.proc.pid().to_string());
    assert_eq!(fields["curr_connections"], "1");
    let version = String::from_utf8(da.mc(b"version\r\n")).expect("text");
    assert_eq!(
        Some(fields["version"].as_str()),
        version.trim_end().strip_prefix("VERSION ")
    );
    for n in [
        "uptime",
        "time",
        "total_connections",
        "cmd_get",
        "cmd_set",
        "get_hits",
        "get_misses",
        "bytes",
        "evictions",
    ] {
        assert!(fields[n].parse::<u64>().is_ok(), "{n}: {:?}", fields[n]);
    }
    assert!(fields["cmd_set"].parse::<u64>().expect("number") >= 5);
    assert_eq!(
        c.mc(b"stats items\r\n"),
        b"SERVER_ERROR only the general 'stats' is supported by this proxy, not its sub-commands\r\n"
    );
    assert!(c.mc(b"version\r\n").starts_with(b"VERSION "));
}

/// `flush_all` reaches every server; `noreply` is silent; `verbosity` is
/// acknowledged by the proxy.
#[test]
fn flush_all_empties_every_server() {
    let ([a, b], _p, port, _) = two_servers();
    let (mut da, mut db) = (a.client(), b.client());
    let fill = |d: &mut Client| assert_eq!(d.mc(b"set k 0 0 1\r\nx\r\n"), b"STORED\r\n");
    fill(&mut da);
    fill(&mut db);
    let mut c = Client::connect(port);
    assert_eq!(c.mc(b"flush_all\r\n"), b"OK\r\n");
    assert_eq!(da.mc(b"get k\r\n"), b"END\r\n");
    assert_eq!(db.mc(b"get k\r\n"), b"END\r\n");
    fill(&mut da);
    fill(&mut db);
    c.send(b"flush_all noreply\r\nverbosity 1 noreply\r\nverbosity 1\r\n");
    assert_eq!(c.read_line(), b"OK\r\n");
    assert_eq!(da.mc(b"get k\r\n"), b"END\r\n");
    assert_eq!(db.mc(b"get k\r\n"), b"END\r\n");
    assert_eq!(c.mc(b"flush_all 0\r\n"), b"OK\r\n");
    assert_eq!(
        c.mc(b"flush_all x\r\n"),
        b"CLIENT_ERROR invalid exptime argument\r\n"
    );
    assert_eq!(c.mc(b"verbosity\r\n"), b"ERROR\r\n");
    c.assert_nothing_pending("after the replies");
}

/// `gat`/`gats` over keys on both servers: the values in key order, as a
/// lone memcached answers `gat`, and the exptime set on each server.
#[test]
fn gat_and_gats_split_and_merge_in_key_order() {
    let ([a, b], _p, port, yaml) = two_servers();
    let (_reference, mut direct) = lone_memcached();
    let mut c = Client::connect(port);
    let keys = [
        key_on(&yaml, "s0", "g0-"),
        key_on(&yaml, "s1", "g1-"),
        key_on(&yaml, "s0", "g2-"),
        key_on(&yaml, "s1", "g3-"),
    ];
    for (i, k) in keys.iter().enumerate() {
        let set = format!("set {k} {i} 0 2\r\nv{i}\r\n");
        assert_eq!(c.mc(set.as_bytes()), b"STORED\r\n");
        assert_eq!(direct.mc(set.as_bytes()), b"STORED\r\n");
    }
    let line = format!(
        "gat 1000 {} missing {} {} {}\r\n",
        keys[0], keys[1], keys[2], keys[3]
    );
    c.send(line.as_bytes());
    direct.send(line.as_bytes());
    assert_eq!(c.read_mc(true), direct.read_mc(true));
    let mut shards = [a.client(), b.client()];
    for (i, k) in keys.iter().enumerate() {
        let reply = shards[i % 2].mc(format!("mg {k} t\r\n").as_bytes());
        let ttl: i64 = String::from_utf8_lossy(&reply)
            .trim_end()
            .strip_prefix("HD t")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{reply:?}"));
        assert!((990..=1000).contains(&ttl), "{k}: ttl {ttl}");
    }
    c.send(format!("gats 0 {} {}\r\n", keys[3], keys[0]).as_bytes());
    let reply = String::from_utf8(c.read_mc(true)).expect("text");
    let heads: Vec<&str> = reply.lines().filter(|l| l.starts_with("VALUE")).collect();
    assert_eq!(heads.len(), 2, "{reply}");
    assert!(
        heads[0].starts_with(&format!("VALUE {} 3 2 ", keys[3])),
        "{reply}"
    );
    assert!(
        heads[1].starts_with(&format!("VALUE {} 0 2 ", keys[0])),
        "{reply}"
    );
    assert_eq!(
        c.mc(b"gat x k\r\n"),
        b"CLIENT_ERROR invalid exptime argument\r\n"
    );
}

/// Malformed meta lines get one error line each (an `ms` block skipped by
/// its length) and the connection stays usable.
#[test]
fn malformed_meta_lines_get_one_error_each() {
    let backend = Memcached::start();
    let (_p, port, _) = proxy_over(&[&backend]);
    let mut c = Client::connect(port);
    let long = "k".repeat(251);
    let many = vec!["T1"; 17].join(" ");
    let cases: [(Vec<u8>, &[u8]); 6] = [
        // memcached refuses this line without swallowing the block, and
        // would run it as a command: the proxy refuses it and skips it.
        (
            ms("victim", &many, b"delete k\r\n"),
            b"CLIENT_ERROR options flags too long\r\n",
        ),
        (b"mg\r\n".to_vec(), b"ERROR\r\n"),
        (
            b"mg YQ= b v\r\n".to_vec(),
            b"CLIENT_ERROR error decoding key\r\n",
        ),
        (
            format!("mg {long} v\r\n").into_bytes(),
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            ms(&long, "T0", b"delete x\r\n"),
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            ms("YQ=", "b", b"mn\r\n"),
            b"CLIENT_ERROR error decoding key\r\n",
        ),
    ];
    assert_eq!(c.mc(&ms("k", "", b"v")), b"HD\r\n");
    for (req, want) in cases {
        assert_eq!(
            String::from_utf8_lossy(&c.mc(&req)),
            String::from_utf8_lossy(want),
            "{:?}",
            String::from_utf8_lossy(&req)
        );
    }
    assert_eq!(
        meta(&mut c, b"mg k v\r\n"),
        b"VA 1\r\nv\r\n",
        "a data block ran"
    );
    assert_eq!(c.mc(&ms("ok", "", b"fine")), b"HD\r\n");
    assert_eq!(meta(&mut c, b"mg ok v\r\n"), b"VA 4\r\nfine\r\n");
    c.assert_nothing_pending("one reply per request");
}

/// A server that refuses connections is left out of `stats`: the reply is
/// the live server's counters, not an error; `flush_all` says the dead
/// server was not flushed.
#[test]
fn stats_leave_out_a_dead_server() {
    let live = Memcached::start();
    let dead_port = free_port();
    let t = Twem::start(
        "mc",
        "  hash: fnv1a_64\n  distribution: ketama\n  timeout: 3000\n",
        &[
            (live.addr(), "s0"),
            (format!("127.0.0.1:{dead_port}"), "s1"),
        ],
    );
    let mut d = live.client();
    for i in 0..4 {
        assert_eq!(
            d.mc(format!("set k{i} 0 0 1\r\nx\r\n").as_bytes()),
            b"STORED\r\n"
        );
    }
    let mut c = t.client();
    c.send(b"stats\r\n");
    let text = String::from_utf8(c.read_until(b"END\r\n")).expect("text");
    assert!(text.contains("\r\nSTAT curr_items 4\r\n"), "{text}");
    assert_eq!(
        c.mc(b"flush_all\r\n"),
        b"SERVER_ERROR Connection refused\r\n"
    );
    c.assert_nothing_pending("one reply each");
}
