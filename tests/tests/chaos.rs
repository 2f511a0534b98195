//! Chaos and fault injection: twem keeps every client's replies its own and
//! in order while shards die and come back, and a backend that misbehaves
//! (slow, cut mid-reply, reset, garbage) fails only the requests it holds,
//! worded as nutcracker words them.
//!
//! Tier 1 (default) runs each chaos variant for ~8 s with 16 clients;
//! `TWEM_TIER2=1` runs 60 s with 32 clients. Every figure is printed with
//! `eprintln!` (run with `--nocapture` to see it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use twem_tests::{
    free_port, key_on, resp_cmd, resp_len, tier2, Client, Fault, FaultProxy, ProxyProc, Redis, Rng,
    Twem,
};

/// The tests of this file share 2 cores with their proxies and backends;
/// running them one at a time keeps the timing assertions meaningful.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a reply could not be read.
#[derive(Debug)]
enum ReadFail {
    /// Nothing complete within the hang limit.
    Hang,
    /// The proxy closed the connection (or it broke).
    Closed,
}

/// A pipelining client that reports hangs and closes instead of panicking,
/// so the chaos run can count them.
struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
    hang_limit: Duration,
}

impl Conn {
    fn connect(port: u16, hang_limit: Duration) -> Option<Conn> {
        let sock = TcpStream::connect(("127.0.0.1", port)).ok()?;
        sock.set_nodelay(true).ok()?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .ok()?;
        Some(Conn {
            sock,
            buf: Vec::new(),
            hang_limit,
        })
    }

    fn read_reply(&mut self) -> Result<Vec<u8>, ReadFail> {
        let start = Instant::now();
        let mut tmp = [0u8; 16 * 1024];
        loop {
            if let Some(n) = resp_len(&self.buf) {
                return Ok(self.buf.drain(..n).collect());
            }
            if start.elapsed() > self.hang_limit {
                return Err(ReadFail::Hang);
            }
            match self.sock.read(&mut tmp) {
                Ok(0) => return Err(ReadFail::Closed),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if twem_tests::is_timeout(&e) => {}
                Err(_) => return Err(ReadFail::Closed),
            }
        }
    }
}

/// What the clients of one chaos run saw.
#[derive(Debug, Default)]
struct Tally {
    ops: u64,
    errors: u64,
    crossed: u64,
    out_of_order: u64,
    hangs: u64,
    closed: u64,
    nils: u64,
    stale: u64,
    error_words: BTreeMap<String, u64>,
    examples: Vec<String>,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.ops += o.ops;
        self.errors += o.errors;
        self.crossed += o.crossed;
        self.out_of_order += o.out_of_order;
        self.hangs += o.hangs;
        self.closed += o.closed;
        self.nils += o.nils;
        self.stale += o.stale;
        for (w, n) in &o.error_words {
            *self.error_words.entry(w.clone()).or_default() += n;
        }
        for e in &o.examples {
            if self.examples.len() < 10 {
                self.examples.push(e.clone());
            }
        }
    }

    fn note(&mut self, what: String) {
        if self.examples.len() < 10 {
            self.examples.push(what);
        }
    }

    fn error(&mut self, reply: &[u8]) {
        self.errors += 1;
        let words = String::from_utf8_lossy(reply).trim_end().to_string();
        *self.error_words.entry(words).or_default() += 1;
    }
}

/// The value client `c` writes to its key `k` at sequence `s`.
fn value(c: usize, k: u64, s: u64) -> String {
    format!("c{c}:k{k}:s{s}")
}

/// Parse a bulk reply written by [`value`]: (client, key, seq).
fn parse_value(reply: &[u8]) -> Option<(usize, u64, u64)> {
    let start = reply.iter().position(|&b| b == b'\n')? + 1;
    let body = std::str::from_utf8(reply.get(start..reply.len().checked_sub(2)?)?).ok()?;
    let mut it = body.split(':');
    let c = it.next()?.strip_prefix('c')?.parse().ok()?;
    let k = it.next()?.strip_prefix('k')?.parse().ok()?;
    let s = it.next()?.strip_prefix('s')?.parse().ok()?;
    Some((c, k, s))
}

/// How a chaos run is set up.
struct Plan {
    eject: bool,
    clients: usize,
    duration: Duration,
    keys: u64,
    batch: usize,
}

/// One client: pipelines batches of `SET k v; GET k` until `stop`, checking
/// every reply against what this client may legitimately see.
fn client_loop(
    me: usize,
    port: u16,
    plan: &Plan,
    hang_limit: Duration,
    stop: &AtomicBool,
) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng::new(0x5eed ^ ((me as u64 + 1) * 7919));
    let mut seq = 0u64;
    // Per key: the last sequence the proxy acknowledged with +OK.
    let mut acked = vec![0u64; plan.keys as usize];
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(port, hang_limit) {
                Some(c) => conn.insert(c),
                None => {
                    t.note(format!("client {me}: connect failed"));
                    t.closed += 1;
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let mut batch = Vec::new();
        let mut wire = Vec::new();
        for _ in 0..plan.batch {
            let k = rng.below(plan.keys);
            seq += 1;
            let key = format!("chaos:{me}:{k}");
            let v = value(me, k, seq);
            wire.extend(resp_cmd(&[b"SET", key.as_bytes(), v.as_bytes()]));
            wire.extend(resp_cmd(&[b"GET", key.as_bytes()]));
            batch.push((k, seq));
        }
        if c.sock.write_all(&wire).is_err() {
            t.closed += 1;
            conn = None;
            continue;
        }
        let mut broken = false;
        for &(k, s) in &batch {
            let set = match read_counted(c, &mut t, me) {
                Ok(r) => r,
                Err(b) => {
                    broken = b;
                    break;
                }
            };
            let set_ok = if set == b"+OK\r\n" {
                true
            } else if set.first() == Some(&b'-') {
                t.error(&set);
                false
            } else {
                t.crossed += 1;
                t.note(format!(
                    "client {me}: SET k{k} s{s} answered {:?}",
                    String::from_utf8_lossy(&set)
                ));
                false
            };
            let get = match read_counted(c, &mut t, me) {
                Ok(r) => r,
                Err(b) => {
                    broken = b;
                    break;
                }
            };
            let slot = &mut acked[k as usize];
            match get.first() {
                Some(b'-') => t.error(&get),
                _ if get == b"$-1\r\n" => t.nils += 1,
                Some(b'$') => match parse_value(&get) {
                    Some((gc, gk, gs)) if gc == me && gk == k => {
                        match gs.cmp(&s) {
                            std::cmp::Ordering::Equal => {}
                            std::cmp::Ordering::Greater => {
                                t.out_of_order += 1;
                                t.note(format!(
                                    "client {me}: GET k{k} after s{s} saw future s{gs}"
                                ));
                            }
                            // The ring may have moved the key between the
                            // SET and the GET: an older value of our own is
                            // stale, not crossed.
                            std::cmp::Ordering::Less if plan.eject => t.stale += 1,
                            std::cmp::Ordering::Less if set_ok || gs < *slot => {
                                t.out_of_order += 1;
                                t.note(format!(
                                    "client {me}: GET k{k} after s{s} (acked s{}) saw s{gs}",
                                    *slot
                                ));
                            }
                            // The SET failed and may not have been applied.
                            std::cmp::Ordering::Less => t.stale += 1,
                        }
                    }
                    _ => {
                        t.crossed += 1;
                        t.note(format!(
                            "client {me}: GET k{k} s{s} answered {:?}",
                            String::from_utf8_lossy(&get)
                        ));
                    }
                },
                _ => {
                    t.crossed += 1;
                    t.note(format!(
                        "client {me}: GET k{k} s{s} answered {:?}",
                        String::from_utf8_lossy(&get)
                    ));
                }
            }
            if set_ok {
                *slot = s;
            }
        }
        if broken {
            conn = None;
        }
    }
    t
}

/// Count a failed read; true (the connection must be replaced).
/// The next reply on `c`, counted in `t.ops`; on a failed read, what
/// [`fail`] says of it (whether the connection broke).
fn read_counted(c: &mut Conn, t: &mut Tally, me: usize) -> Result<Vec<u8>, bool> {
    let r = c.read_reply().map_err(|f| fail(t, me, f))?;
    t.ops += 1;
    Ok(r)
}

fn fail(t: &mut Tally, me: usize, f: ReadFail) -> bool {
    match f {
        ReadFail::Hang => {
            t.hangs += 1;
            t.note(format!("client {me}: no reply within the hang limit"));
        }
        ReadFail::Closed => {
            t.closed += 1;
            t.note(format!("client {me}: proxy closed the connection"));
        }
    }
    true
}

/// Run 4 shards, a proxy in front, `plan.clients` pipelining clients, and a
/// killer that SIGKILLs a random shard every 1-2 s and restarts it on its
/// port; then check nothing crossed, nothing hung, the proxy lives and every
/// shard is served again.
fn chaos(plan: Plan) {
    let timeout_ms = 500u64;
    let hang_limit = Duration::from_millis(timeout_ms + 2000);
    let mut shards: Vec<Redis> = (0..4).map(|_| Redis::start()).collect();
    let ports: Vec<u16> = shards.iter().map(|r| r.port).collect();
    let port = free_port();
    let extra = if plan.eject {
        "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 300\n"
    } else {
        "  auto_eject_hosts: false\n"
    };
    let mut yaml = format!(
        "chaos:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: {timeout_ms}\n{extra}  servers:\n"
    );
    for (i, p) in ports.iter().enumerate() {
        yaml.push_str(&format!("   - 127.0.0.1:{p}:1 s{i}\n"));
    }
    let mut proxy = ProxyProc::twem_capture(&yaml, port, &[]);
    let (mut rng, seed) = Rng::from_time();

    let stop = Arc::new(AtomicBool::new(false));
    let plan = Arc::new(plan);
    let workers: Vec<_> = (0..plan.clients)
        .map(|me| {
            let (stop, plan) = (Arc::clone(&stop), Arc::clone(&plan));
            thread::spawn(move || client_loop(me, port, &plan, hang_limit, &stop))
        })
        .collect();

    // The killer runs here: SIGKILL, 200 ms down, restart on the same port.
    let deadline = Instant::now() + plan.duration;
    let mut kills = 0usize;
    let mut downtime = Duration::ZERO;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1000 + rng.below(1000)));
        if Instant::now() >= deadline {
            break;
        }
        let i = rng.below(4) as usize;
        let t0 = Instant::now();
        shards[i].proc.kill();
        thread::sleep(Duration::from_millis(200));
        shards[i] = Redis::start_on(ports[i]);
        downtime += t0.elapsed();
        kills += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for w in workers {
        total.add(&w.join().expect("client thread"));
    }
    let mode = if plan.eject { "eject" } else { "no-eject" };
    eprintln!(
        "chaos: ops={} errors={} crossed={} out_of_order={} hangs={} ({mode}, {} clients, {:?}, kills={kills}, downtime={:?}, nil={}, stale={}, closed={}, seed={seed})",
        total.ops,
        total.errors,
        total.crossed,
        total.out_of_order,
        total.hangs,
        plan.clients,
        plan.duration,
        downtime,
        total.nils,
        total.stale,
        total.closed,
    );
    eprintln!("chaos: error replies ({mode}): {:?}", total.error_words);
    for e in &total.examples {
        eprintln!("chaos: example ({mode}): {e}");
    }

    assert!(proxy.proc.is_running(), "the proxy died");
    let stderr = proxy.stderr_text();
    assert!(!stderr.contains("panicked"), "proxy panicked:\n{stderr}");
    assert_eq!(total.crossed, 0, "replies crossed: {:?}", total.examples);
    assert_eq!(total.out_of_order, 0, "out of order: {:?}", total.examples);
    assert_eq!(total.hangs, 0, "hangs: {:?}", total.examples);
    assert_eq!(
        total.closed, 0,
        "client connections lost: {:?}",
        total.examples
    );
    assert!(kills >= 2, "only {kills} kills in {:?}", plan.duration);
    assert!(total.ops >= 1000, "only {} ops: clients starved", total.ops);
    // Outages that no client noticed would mean the faults never reached
    // the clients (or were hidden): the test would prove nothing.
    assert!(total.errors > 0, "no client saw an outage in {kills} kills");
    for e in total.error_words.keys() {
        assert!(
            e.starts_with("-ERR "),
            "error reply not in nutcracker's form: {e}"
        );
    }

    // Everything back: every shard serves its keys again within a few
    // seconds (a re-admitted server needs its retry timeout and a probe).
    let mut c = Client::connect(port);
    for (i, _) in ports.iter().enumerate() {
        let key = key_on(&yaml, &format!("s{i}"), "after");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let set = c.cmd(&[b"SET", key.as_bytes(), b"back"]);
            if set == b"+OK\r\n" && c.cmd(&[b"GET", key.as_bytes()]) == b"$4\r\nback\r\n" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "shard s{i} not served 5 s after the chaos: {:?}",
                String::from_utf8_lossy(&set)
            );
            thread::sleep(Duration::from_millis(100));
        }
        // In the no-eject pool the key must be on its own shard, not moved.
        if !plan.eject {
            assert_eq!(
                shards[i].client().cmd(&[b"GET", key.as_bytes()]),
                b"$4\r\nback\r\n"
            );
        }
    }
}

fn plan(eject: bool) -> Plan {
    if tier2() {
        Plan {
            eject,
            clients: 32,
            duration: Duration::from_secs(60),
            keys: 64,
            batch: 8,
        }
    } else {
        Plan {
            eject,
            clients: 16,
            duration: Duration::from_secs(8),
            keys: 32,
            batch: 8,
        }
    }
}

/// Shards SIGKILLed and restarted under 16 pipelining clients, no ejection:
/// requests to a dead shard fail with an error reply, nothing else changes.
#[test]
fn chaos_kill_restart_no_eject() {
    let _g = serial();
    chaos(plan(false));
}

/// The same with auto_eject_hosts (failure limit 1, retry 300 ms): keys
/// move while a shard is out and come back after a probe; still nothing
/// crossed, nothing hung.
#[test]
fn chaos_kill_restart_with_eject() {
    let _g = serial();
    chaos(plan(true));
}

// ---------------------------------------------------------------------------
// Fault injection: pool of two servers, `a` a real redis, `b` the same kind of
// redis behind a FaultProxy.

struct Faulty {
    _a: Redis,
    _b: Redis,
    fault: FaultProxy,
    proxy: ProxyProc,
    port: u16,
    yaml: String,
    ka: Vec<String>,
    kb: String,
}

const FAULT_TIMEOUT_MS: u64 = 400;

/// twem (pool `name`, `settings`, the fault tests' timeout, stderr kept)
/// over the server at `a` and the one on `b_port` reached through a
/// [`FaultProxy`]: servers `a` and `b`.
fn fault_pool(name: &str, settings: &str, a: String, b_port: u16) -> (FaultProxy, Twem) {
    let fault = FaultProxy::start(b_port);
    let servers = [(a, "a"), (format!("127.0.0.1:{}", fault.port), "b")];
    let settings = format!("{settings}  timeout: {FAULT_TIMEOUT_MS}\n");
    (fault, Twem::capture(name, &settings, &servers))
}

fn faulty() -> Faulty {
    let a = Redis::start();
    let b = Redis::start();
    let (fault, Twem { proxy, port, yaml }) = fault_pool("p", "  redis: true\n", a.addr(), b.port);
    let ka = (0..3)
        .map(|i| key_on(&yaml, "a", &format!("fa{i}-")))
        .collect();
    let kb = key_on(&yaml, "b", "fb");
    // A 100-byte value so a cut reply is cut inside its data. This first
    // request also opens the proxy's connection to b (through the fault
    // proxy's accept thread and two new forwarding threads), and all of that
    // must fit in the 400 ms timeout the tests need; a starved machine may
    // not manage it the first time, so warm up until b answers (the proxy
    // reconnects after a timeout). Timeouts are what the tests check, with
    // the connection already open.
    let mut c = Client::connect(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.cmd(&[b"SET", kb.as_bytes(), &[b'v'; 100]]);
        if r == b"+OK\r\n" {
            break;
        }
        assert!(
            r == b"-ERR Connection timed out\r\n" && Instant::now() < deadline,
            "b reachable through the fault proxy: {:?}\n{}",
            String::from_utf8_lossy(&r),
            proxy.log()
        );
    }
    Faulty {
        _a: a,
        _b: b,
        fault,
        proxy,
        port,
        yaml,
        ka,
        kb,
    }
}

impl Faulty {
    /// Pipeline `SET ka0; GET kb; GET ka0; SET ka1; GET ka1; SET ka2; GET
    /// ka2` and return the reply to `GET kb`, asserting the six replies
    /// about `a` are exact and in order.
    fn pipeline(&self, c: &mut Client, round: usize) -> Vec<u8> {
        let v = |i: usize| format!("r{round}-{i}");
        let mut wire = resp_cmd(&[b"SET", self.ka[0].as_bytes(), v(0).as_bytes()]);
        wire.extend(resp_cmd(&[b"GET", self.kb.as_bytes()]));
        wire.extend(resp_cmd(&[b"GET", self.ka[0].as_bytes()]));
        for i in 1..3 {
            wire.extend(resp_cmd(&[b"SET", self.ka[i].as_bytes(), v(i).as_bytes()]));
            wire.extend(resp_cmd(&[b"GET", self.ka[i].as_bytes()]));
        }
        c.send(&wire);
        assert_eq!(c.read_resp(), b"+OK\r\n", "round {round}: SET on a");
        let kb_reply = c.read_resp();
        assert_eq!(
            c.read_resp(),
            twem_tests::bulk(v(0).as_bytes()),
            "round {round}: GET on a"
        );
        for i in 1..3 {
            assert_eq!(c.read_resp(), b"+OK\r\n", "round {round}: SET {i} on a");
            assert_eq!(
                c.read_resp(),
                twem_tests::bulk(v(i).as_bytes()),
                "round {round}: GET {i} on a"
            );
        }
        kb_reply
    }

    /// b answers normally again (within a second: the proxy reconnects).
    fn assert_b_recovers(&self, c: &mut Client) {
        self.fault.set(Fault::Pass);
        let want = twem_tests::bulk(&[b'v'; 100]);
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let r = c.cmd(&[b"GET", self.kb.as_bytes()]);
            if r == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "b not served after the fault was lifted: {:?}",
                String::from_utf8_lossy(&r)
            );
        }
    }

    fn assert_alive(&mut self) {
        assert!(self.proxy.proc.is_running(), "the proxy died");
        let stderr = self.proxy.stderr_text();
        assert!(!stderr.contains("panicked"), "proxy panicked:\n{stderr}");
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Latency under the timeout only slows b's replies; over it, b's request
/// fails with `-ERR Connection timed out` within about the timeout, and a's
/// replies in the same pipeline are untouched and in order.
#[test]
fn fault_delay_below_and_above_timeout() {
    let _g = serial();
    let mut f = faulty();
    let mut c = Client::connect(f.port);
    f.fault.set_delay(100);
    f.fault.set(Fault::Delay);
    for round in 0..3 {
        let t0 = Instant::now();
        let r = f.pipeline(&mut c, round);
        assert_eq!(r, twem_tests::bulk(&[b'v'; 100]), "round {round}");
        assert!(
            t0.elapsed() >= Duration::from_millis(90),
            "{:?}",
            t0.elapsed()
        );
    }
    f.fault.set_delay(1500);
    for round in 3..5 {
        let t0 = Instant::now();
        let r = f.pipeline(&mut c, round);
        let took = t0.elapsed();
        assert_eq!(text(&r), "-ERR Connection timed out\r\n", "round {round}");
        assert!(
            took < Duration::from_millis(FAULT_TIMEOUT_MS + 1000),
            "timed out only after {took:?}"
        );
    }
    f.assert_b_recovers(&mut c);
    // The late replies held by the delay must reach nobody.
    thread::sleep(Duration::from_millis(1600));
    let r = f.pipeline(&mut c, 9);
    assert_eq!(r, twem_tests::bulk(&[b'v'; 100]));
    c.assert_nothing_pending("stray bytes");
    f.assert_alive();
}

/// A reply cut mid-frame and the connection closed: b's request fails with
/// `-ERR unknown` (nutcracker's words for a backend that closed with
/// requests pending), a's replies are untouched, b is reconnected.
#[test]
fn fault_reply_cut_mid_frame() {
    fault_rounds(
        Fault::Cut,
        "-ERR unknown\r\n",
        Some("the proxy must reconnect to b"),
    );
}

/// A connection reset (RST) instead of the reply: `-ERR Connection reset by
/// peer` for b's request only.
#[test]
fn fault_connection_reset() {
    fault_rounds(Fault::Reset, "-ERR Connection reset by peer\r\n", None);
}

/// A backend answering garbage (`@@@`): `-ERR Invalid argument` for b's
/// request, the backend connection is dropped (it is out of step), and a
/// fresh one serves b afterwards.
#[test]
fn fault_garbage_reply() {
    fault_rounds(
        Fault::Garbage,
        "-ERR Invalid argument\r\n",
        Some("a backend connection that sent garbage must be replaced"),
    );
}

/// Three rounds of `fault` on b's reply: b's request gets `reply` while a's
/// is untouched, b recovers (over a new backend connection, when `reconnect`
/// says why it must), nothing stray reaches the client, the proxy lives.
fn fault_rounds(fault: Fault, reply: &str, reconnect: Option<&str>) {
    let _g = serial();
    let mut f = faulty();
    let mut c = Client::connect(f.port);
    for round in 0..3 {
        f.fault.set(fault);
        let before = f.fault.accepted();
        let r = f.pipeline(&mut c, round);
        assert_eq!(text(&r), reply, "round {round}");
        f.assert_b_recovers(&mut c);
        if let Some(why) = reconnect {
            assert!(f.fault.accepted() > before, "{why}");
        }
    }
    c.assert_nothing_pending("stray bytes");
    f.assert_alive();
}

/// Every fault in turn under 4 pipelining clients, each checking its own
/// replies: faults on b never reach requests for a, and never cross.
#[test]
fn fault_rotation_under_concurrent_clients() {
    let _g = serial();
    let mut f = faulty();
    let stop = Arc::new(AtomicBool::new(false));
    let b_errors = Arc::new(AtomicUsize::new(0));
    let (port, kb) = (f.port, f.kb.clone());
    // One key on a per client, so each checks only its own values.
    let ka: Vec<String> = (0..4)
        .map(|me| key_on(&f.yaml, "a", &format!("w{me}-")))
        .collect();
    let workers: Vec<_> = (0..4)
        .map(|me| {
            let (stop, b_errors, ka, kb) = (
                Arc::clone(&stop),
                Arc::clone(&b_errors),
                ka.clone(),
                kb.clone(),
            );
            thread::spawn(move || {
                let mut c = Client::connect(port);
                let mut n = 0u64;
                let want_b = twem_tests::bulk(&[b'v'; 100]);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = &ka[me];
                    let v = format!("w{me}:{n}");
                    let mut wire = resp_cmd(&[b"SET", key.as_bytes(), v.as_bytes()]);
                    wire.extend(resp_cmd(&[b"GET", kb.as_bytes()]));
                    wire.extend(resp_cmd(&[b"GET", key.as_bytes()]));
                    c.send(&wire);
                    assert_eq!(c.read_resp(), b"+OK\r\n", "client {me} round {n}");
                    let b = c.read_resp();
                    assert_eq!(
                        c.read_resp(),
                        twem_tests::bulk(v.as_bytes()),
                        "client {me} round {n}"
                    );
                    if b != want_b {
                        assert!(
                            [
                                &b"-ERR Connection timed out\r\n"[..],
                                b"-ERR unknown\r\n",
                                b"-ERR Connection reset by peer\r\n",
                                b"-ERR Invalid argument\r\n",
                                b"-ERR Broken pipe\r\n",
                            ]
                            .contains(&&b[..]),
                            "client {me}: GET kb answered {:?}",
                            text(&b)
                        );
                        b_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n
            })
        })
        .collect();
    f.fault.set_delay(FAULT_TIMEOUT_MS + 300);
    let faults = [Fault::Delay, Fault::Cut, Fault::Reset, Fault::Garbage];
    let rounds = if tier2() { 20 } else { 2 };
    for _ in 0..rounds {
        for fault in faults {
            f.fault.set(fault);
            thread::sleep(Duration::from_millis(FAULT_TIMEOUT_MS + 200));
            f.fault.set(Fault::Pass);
            thread::sleep(Duration::from_millis(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = workers.into_iter().map(|w| w.join().expect("client")).sum();
    let errs = b_errors.load(Ordering::Relaxed);
    eprintln!(
        "fault rotation: pipelines={ops} b_errors={errs} reconnects={}",
        f.fault.accepted()
    );
    assert!(errs > 0, "no fault reached a client");
    assert!(ops > 20, "clients starved: {ops} pipelines");
    f.assert_alive();
}

/// The same faults on a memcached pool: the request held by the fault gets
/// nutcracker's words after `SERVER_ERROR `, the other server's `get` in the
/// same pipeline is exact, and the faulty server is served again after.
#[test]
fn fault_memcached_words() {
    let _g = serial();
    let (a, b) = (
        twem_tests::Memcached::start(),
        twem_tests::Memcached::start(),
    );
    let (
        fault,
        Twem {
            mut proxy,
            port,
            yaml,
        },
    ) = fault_pool("m", "", a.addr(), b.port);
    let (ka, kb) = (key_on(&yaml, "a", "ma"), key_on(&yaml, "b", "mb"));
    let mut c = Client::connect(port);
    let data = [b'v'; 100];
    for k in [&ka, &kb] {
        let mut set = format!("set {k} 0 0 100\r\n").into_bytes();
        set.extend_from_slice(&data);
        set.extend_from_slice(b"\r\n");
        assert_eq!(c.mc(&set), b"STORED\r\n");
    }
    let value = |k: &str| {
        let mut v = format!("VALUE {k} 0 100\r\n").into_bytes();
        v.extend_from_slice(&data);
        v.extend_from_slice(b"\r\nEND\r\n");
        v
    };
    fault.set_delay(FAULT_TIMEOUT_MS + 600);
    for (f, words) in [
        (Fault::Delay, "SERVER_ERROR Connection timed out\r\n"),
        (Fault::Cut, "SERVER_ERROR unknown\r\n"),
        (Fault::Reset, "SERVER_ERROR Connection reset by peer\r\n"),
        (Fault::Garbage, "SERVER_ERROR Invalid argument\r\n"),
    ] {
        fault.set(f);
        c.send(format!("get {ka}\r\nget {kb}\r\nget {ka}\r\n").as_bytes());
        assert_eq!(c.read_mc(true), value(&ka), "{f:?}: a before");
        assert_eq!(text(&c.read_mc(true)), words, "{f:?}: b");
        assert_eq!(c.read_mc(true), value(&ka), "{f:?}: a after");
        fault.set(Fault::Pass);
        let deadline = Instant::now() + Duration::from_secs(2);
        while c.mc(format!("get {kb}\r\n").as_bytes()) != value(&kb) {
            assert!(Instant::now() < deadline, "{f:?}: b not served again");
        }
    }
    // Late replies held by the delay reach nobody.
    thread::sleep(Duration::from_millis(FAULT_TIMEOUT_MS + 700));
    assert_eq!(c.mc(format!("get {kb}\r\n").as_bytes()), value(&kb));
    c.assert_nothing_pending("stray bytes");
    assert!(proxy.proc.is_running(), "the proxy died");
    assert!(!proxy.stderr_text().contains("panicked"));
}
