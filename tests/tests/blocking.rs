//! Blocking commands through twem against two real redis-server shards:
//! each runs on a backend connection borrowed for it, so other clients on
//! the shared connections are never held up; the pool `timeout` does not
//! cut a command that blocks by design; keys must share a server; a client
//! that leaves while blocked frees its connection (closed on the server);
//! borrowed connections are bounded with a clear error.

use std::thread;
use std::time::{Duration, Instant};

use twem_tests::{bulk, Client, Shards};

/// Two shards behind twem, with the pool lines `extra`.
fn setup(extra: &str) -> Shards {
    Shards::start(2, extra)
}

/// A client that has been served (a PING), and the clients shard 0 counts
/// after that: the baseline.
fn warm_baseline(t: &Shards) -> (Client, usize) {
    let mut c = t.client();
    assert_eq!(c.cmds("PING"), b"+PONG\r\n");
    (c, t.connected(0))
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_blocked_client_does_not_hold_up_the_others() {
    let t = setup("  timeout: 200\n");
    let q = t.key(0, "q");
    let other = t.key(0, "o");
    let mut blocked = t.client();
    // Waits for 1 s: longer than the pool's 200 ms timeout, which must not
    // cut it.
    let started = Instant::now();
    blocked.send_cmd(&[b"BLPOP", q.as_bytes(), b"1"]);
    // Meanwhile, on the same server, other requests are answered at once.
    let mut c = t.client();
    for i in 0..50 {
        let t0 = Instant::now();
        assert_eq!(
            c.cmd(&[b"SET", other.as_bytes(), i.to_string().as_bytes()]),
            b"+OK\r\n"
        );
        assert!(
            t0.elapsed() < Duration::from_millis(150),
            "request {i} waited {:?}",
            t0.elapsed()
        );
    }
    assert_eq!(blocked.read_resp(), b"*-1\r\n");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn blpop_gets_what_another_client_pushes() {
    let t = setup("  timeout: 500\n");
    let q = t.key(1, "jobs");
    let mut worker = t.client();
    worker.send_cmd(&[b"BLPOP", q.as_bytes(), b"0"]);
    thread::sleep(Duration::from_millis(700));
    let mut producer = t.client();
    assert_eq!(producer.cmd(&[b"RPUSH", q.as_bytes(), b"job-1"]), b":1\r\n");
    let got = worker.read_resp();
    let mut want = b"*2\r\n".to_vec();
    want.extend(bulk(q.as_bytes()));
    want.extend(bulk(b"job-1"));
    assert_eq!(got, want, "{}", s(&got));
    // A queue moved between lists on one server (hash tags), blocking.
    let (src, dst) = ("{jobs}:pending", "{jobs}:working");
    producer.cmd(&[b"RPUSH", src.as_bytes(), b"job-2"]);
    assert_eq!(
        worker.cmd(&[b"BRPOPLPUSH", src.as_bytes(), dst.as_bytes(), b"1"]),
        bulk(b"job-2")
    );
    assert_eq!(
        worker.cmd(&[
            b"BLMOVE",
            dst.as_bytes(),
            src.as_bytes(),
            b"LEFT",
            b"RIGHT",
            b"1"
        ]),
        bulk(b"job-2")
    );
    // XREAD BLOCK and BZPOPMIN.
    let stream = t.key(0, "st");
    worker.send_cmd(&[
        b"XREAD",
        b"BLOCK",
        b"0",
        b"STREAMS",
        stream.as_bytes(),
        b"$",
    ]);
    thread::sleep(Duration::from_millis(300));
    let id = producer.cmd(&[b"XADD", stream.as_bytes(), b"*", b"f", b"v"]);
    let got = s(&worker.read_resp());
    assert!(got.starts_with("*1\r\n*2\r\n"), "{got}");
    assert!(
        got.contains(std::str::from_utf8(&id[5..id.len() - 2]).unwrap()),
        "{got}"
    );
    let z = t.key(1, "z");
    producer.cmd(&[b"ZADD", z.as_bytes(), b"2.5", b"m"]);
    let got = s(&worker.cmd(&[b"BZPOPMIN", z.as_bytes(), b"1"]));
    assert!(got.contains("$1\r\nm\r\n$3\r\n2.5\r\n"), "{got}");
}

#[test]
fn blocking_keys_must_share_a_server() {
    let t = setup("  timeout: 500\n");
    let (a, b) = (t.key(0, "a"), t.key(1, "b"));
    let mut c = t.client();
    c.cmd(&[b"RPUSH", a.as_bytes(), b"x"]);
    let r = c.cmd(&[b"BRPOPLPUSH", a.as_bytes(), b.as_bytes(), b"1"]);
    assert_eq!(
        r,
        b"-CROSSSLOT Keys in request don't hash to the same server (use a hash tag)\r\n"
    );
    assert_eq!(c.cmd(&[b"LLEN", a.as_bytes()]), b":1\r\n", "nothing moved");
    let r = c.cmd(&[b"BLPOP", a.as_bytes(), b.as_bytes(), b"1"]);
    assert!(r.starts_with(b"-CROSSSLOT"), "{}", s(&r));
}

#[test]
fn a_client_gone_while_blocked_frees_its_connection() {
    let t = setup("");
    let q = t.key(0, "gone");
    let (mut c, baseline) = warm_baseline(&t);
    let blpop = |b: &mut Client| b.send_cmd(&[b"BLPOP", q.as_bytes(), b"0"]);
    let mut blocked = t.clients_holding(5, blpop);
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.connected(0) < baseline + 5 {
        assert!(
            Instant::now() < deadline,
            "borrowed connections never opened"
        );
        thread::sleep(Duration::from_millis(20));
    }
    blocked.clear();
    while t.connected(0) > baseline {
        assert!(
            Instant::now() < deadline,
            "connections of gone clients still open: {} > {baseline}",
            t.connected(0)
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Nothing they asked for is taken later: a push stays in the list.
    assert_eq!(c.cmd(&[b"RPUSH", q.as_bytes(), b"v"]), b":1\r\n");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(c.cmd(&[b"LLEN", q.as_bytes()]), b":1\r\n");
}

#[test]
fn borrowed_connections_are_bounded_and_reused() {
    let t = setup("  pinned_connections: 2\n");
    let q = t.key(0, "bound");
    let blpop = |b: &mut Client| b.send_cmd(&[b"BLPOP", q.as_bytes(), b"0"]);
    let mut held = t.clients_holding(2, blpop);
    thread::sleep(Duration::from_millis(300));
    let mut third = t.client();
    let r = third.cmd(&[b"BLPOP", q.as_bytes(), b"0"]);
    assert!(
        r.starts_with(b"-ERR twem: all 2 pinned connections to server shard0 are in use"),
        "{}",
        s(&r)
    );
    // Served, they give their connections back; many short waits in a row
    // reuse them (the server sees no more than the bound).
    let mut p = t.client();
    assert_eq!(p.cmd(&[b"RPUSH", q.as_bytes(), b"1", b"2"]), b":2\r\n");
    for h in held.iter_mut() {
        assert!(h.read_resp().starts_with(b"*2\r\n"));
    }
    let before = t.connected(0);
    for _ in 0..20 {
        assert_eq!(third.cmd(&[b"BLPOP", q.as_bytes(), b"0.01"]), b"*-1\r\n");
    }
    assert!(t.connected(0) <= before, "{} > {before}", t.connected(0));
    held.clear();
}
