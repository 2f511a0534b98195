//! Malformed input at every byte position: for a corpus of valid RESP and
//! memcached request frames, each frame is truncated at every position and
//! has every byte replaced by hostile values. Each case runs on its own
//! connection, after a canary GET whose value names the case, then the
//! client closes its side. The proxy must answer the canary exactly, then
//! answer or refuse the rest (error replies, or a close), close the
//! connection within 5 s, never show another case's canary (crossed), and
//! never panic.
//!
//! Tier 1 replaces each byte with 13 values; `TWEM_TIER2=1` with all 256.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use twem_tests::{find, free_port, resp_cmd, resp_len, tier2, Client, Memcached, ProxyProc, Redis};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Resp,
    Memcache,
}

/// One malformed-input case.
#[derive(Debug, Clone)]
struct Case {
    proto: Proto,
    id: usize,
    /// The mutated frame.
    body: Vec<u8>,
    /// What was done, for messages.
    what: String,
    /// Whether a second canary follows the body (a truncated frame is last).
    after: bool,
}

fn resp_corpus() -> Vec<Vec<u8>> {
    vec![
        resp_cmd(&[b"GET", b"key"]),
        resp_cmd(&[b"SET", b"key", b"value"]),
        resp_cmd(&[b"MGET", b"k1", b"k2"]),
        resp_cmd(&[b"MSET", b"k1", b"v1", b"k2", b"v2"]),
        resp_cmd(&[b"DEL", b"k1", b"k2"]),
        resp_cmd(&[b"EVAL", b"return 1", b"1", b"k"]),
        b"GET key\r\n".to_vec(),
        b"SET key value\r\n".to_vec(),
    ]
}

fn mc_corpus() -> Vec<Vec<u8>> {
    vec![
        b"get key\r\n".to_vec(),
        b"gets k1 k2\r\n".to_vec(),
        b"set key 0 0 5\r\nvalue\r\n".to_vec(),
        b"cas key 0 0 5 1\r\nvalue\r\n".to_vec(),
        b"incr n 1\r\n".to_vec(),
        b"delete key\r\n".to_vec(),
    ]
}

/// The byte values written over each position.
fn bad_bytes() -> Vec<u8> {
    if tier2() {
        (0..=255).collect()
    } else {
        // Framing bytes, digits and signs (lengths), space (memcached
        // separators), and bytes no text protocol expects.
        vec![
            0x00, b'\r', b'\n', b'*', b'$', b'x', 0xff, b' ', b'-', b'0', b'9', b':', 0x7f,
        ]
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let bad = bad_bytes();
    for (proto, corpus) in [(Proto::Resp, resp_corpus()), (Proto::Memcache, mc_corpus())] {
        let mut id = 0;
        for frame in corpus {
            let shown = escape(&frame);
            for at in 1..frame.len() {
                out.push(Case {
                    proto,
                    id,
                    body: frame[..at].to_vec(),
                    what: format!("{shown} truncated to {at} bytes"),
                    after: false,
                });
                id += 1;
            }
            for at in 0..frame.len() {
                for &b in &bad {
                    if frame[at] == b {
                        continue;
                    }
                    let mut body = frame.clone();
                    body[at] = b;
                    out.push(Case {
                        proto,
                        id,
                        body,
                        what: format!("{shown} with byte {at} set to 0x{b:02x}"),
                        after: true,
                    });
                    id += 1;
                }
            }
        }
    }
    out
}

fn escape(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s
}

fn canary_key(id: usize) -> String {
    format!("m{id:06}")
}

fn canary_value(id: usize) -> String {
    format!("CANARY{id:06}")
}

fn canary_request(proto: Proto, id: usize) -> Vec<u8> {
    match proto {
        Proto::Resp => resp_cmd(&[b"GET", canary_key(id).as_bytes()]),
        Proto::Memcache => format!("get {}\r\n", canary_key(id)).into_bytes(),
    }
}

fn canary_reply(proto: Proto, id: usize) -> Vec<u8> {
    let v = canary_value(id);
    match proto {
        Proto::Resp => twem_tests::bulk(v.as_bytes()),
        Proto::Memcache => {
            format!("VALUE {} 0 {}\r\n{v}\r\nEND\r\n", canary_key(id), v.len()).into_bytes()
        }
    }
}

/// Store every case's canary value through the proxy, pipelined.
fn store_canaries(port: u16, proto: Proto, n: usize) {
    let mut c = Client::connect(port);
    let mut wire = Vec::new();
    for id in 0..n {
        let (k, v) = (canary_key(id), canary_value(id));
        match proto {
            Proto::Resp => wire.extend(resp_cmd(&[b"SET", k.as_bytes(), v.as_bytes()])),
            Proto::Memcache => {
                wire.extend(format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()).into_bytes())
            }
        }
    }
    c.send(&wire);
    for id in 0..n {
        match proto {
            Proto::Resp => assert_eq!(c.read_resp(), b"+OK\r\n", "canary {id}"),
            Proto::Memcache => assert_eq!(c.read_line(), b"STORED\r\n", "canary {id}"),
        }
    }
}

/// How a case ended, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Only non-error replies after the canary.
    Served,
    /// At least one error reply after the canary.
    ErrorReply,
    /// Nothing after the canary but the close.
    Closed,
}

/// Run one case on a fresh connection; the failure, if any, described.
fn run(port: u16, case: &Case) -> Result<Outcome, String> {
    let mut sock = None;
    for _ in 0..3 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            sock = Some(s);
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let mut s = sock.ok_or("cannot connect: is the proxy alive?")?;
    let mut wire = canary_request(case.proto, case.id);
    wire.extend_from_slice(&case.body);
    if case.after {
        wire.extend(canary_request(case.proto, case.id));
    }
    s.write_all(&wire).map_err(|e| format!("send: {e}"))?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(5);
    let closed = loop {
        if Instant::now() > end {
            break false;
        }
        match s.read(&mut tmp) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => {}
        }
    };
    let shown = || format!("sent {:?}, received {:?}", escape(&wire), escape(&got));
    if !closed {
        return Err(format!(
            "not closed 5 s after the client's EOF (hang); {}",
            shown()
        ));
    }
    let want = canary_reply(case.proto, case.id);
    if !got.starts_with(&want) {
        return Err(format!(
            "the canary before it was not answered first; {}",
            shown()
        ));
    }
    let rest = &got[want.len()..];
    // Any canary value in the rest must be this case's own.
    let mut at = 0;
    while let Some(i) = find(&rest[at..], b"CANARY") {
        let start = at + i + 6;
        let digits = rest.get(start..start + 6).unwrap_or_default();
        if digits != format!("{:06}", case.id).as_bytes() {
            return Err(format!("crossed: another case's canary; {}", shown()));
        }
        at = start;
    }
    if rest.is_empty() {
        return Ok(Outcome::Closed);
    }
    match case.proto {
        Proto::Resp => {
            // The rest is whole replies; a protocol error is the last.
            let mut at = 0;
            let mut errors = 0;
            while at < rest.len() {
                let Some(n) = resp_len(&rest[at..]) else {
                    return Err(format!("a partial or unparsable reply; {}", shown()));
                };
                let reply = &rest[at..at + n];
                at += n;
                if reply.starts_with(b"-") {
                    errors += 1;
                }
                if reply.starts_with(b"-ERR Protocol error") && at < rest.len() {
                    return Err(format!("replies after a protocol error; {}", shown()));
                }
            }
            Ok(if errors > 0 {
                Outcome::ErrorReply
            } else {
                Outcome::Served
            })
        }
        Proto::Memcache => {
            let err = [&b"ERROR\r\n"[..], b"CLIENT_ERROR ", b"SERVER_ERROR "]
                .iter()
                .any(|e| find(rest, e).is_some());
            if !rest.ends_with(b"\r\n") {
                return Err(format!("a partial reply line; {}", shown()));
            }
            Ok(if err {
                Outcome::ErrorReply
            } else {
                Outcome::Served
            })
        }
    }
}

/// Every case of the corpus against one proxy, from 4 client threads at once
/// (so a crossed reply between connections would surface as a foreign
/// canary).
#[test]
fn malformed_input_at_every_byte() {
    let redis = Redis::start();
    let mc = Memcached::start();
    let (rp, mp) = (free_port(), free_port());
    let yaml = format!(
        "r:\n  listen: 127.0.0.1:{rp}\n  redis: true\n  timeout: 2000\n  servers:\n   - {}:1 r\nm:\n  listen: 127.0.0.1:{mp}\n  timeout: 2000\n  servers:\n   - {}:1 m\n",
        redis.addr(),
        mc.addr()
    );
    let mut proxy = ProxyProc::twem_capture(&yaml, rp, &[]);
    twem_tests::wait_for_port(mp, Duration::from_secs(5));
    let cases = Arc::new(cases());
    for proto in [Proto::Resp, Proto::Memcache] {
        let n = cases.iter().filter(|c| c.proto == proto).count();
        store_canaries(if proto == Proto::Resp { rp } else { mp }, proto, n);
    }
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let outcomes = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (cases, next, failures, outcomes) = (
                Arc::clone(&cases),
                Arc::clone(&next),
                Arc::clone(&failures),
                Arc::clone(&outcomes),
            );
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { return };
                let port = if case.proto == Proto::Resp { rp } else { mp };
                match run(port, case) {
                    Ok(o) => {
                        let mut m = outcomes.lock().unwrap_or_else(|e| e.into_inner());
                        *m.entry((case.proto == Proto::Resp, o)).or_insert(0usize) += 1;
                    }
                    Err(e) => {
                        let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
                        f.push(format!(
                            "{:?} case {}: {}: {e}",
                            case.proto, case.id, case.what
                        ));
                        if e.starts_with("cannot connect") {
                            // The proxy is gone: stop every worker.
                            next.store(usize::MAX / 2, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner());
    let outcomes = outcomes.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "malformed: {} cases ({} byte values per position) in {:?}; failures={}; outcomes (resp?, outcome): {:?}",
        cases.len(),
        bad_bytes().len(),
        t0.elapsed(),
        failures.len(),
        *outcomes
    );
    for f in failures.iter().take(20) {
        eprintln!("malformed: FAIL {f}");
    }
    assert!(proxy.proc.is_running(), "the proxy died");
    let stderr = proxy.stderr_text();
    assert!(!stderr.contains("panicked"), "proxy panicked:\n{stderr}");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed; first: {:?}",
        failures.len(),
        cases.len(),
        failures.first()
    );
    // Every kind of outcome happened: the corpus did exercise refusals.
    for resp in [true, false] {
        assert!(
            outcomes
                .get(&(resp, Outcome::ErrorReply))
                .copied()
                .unwrap_or(0)
                > 0,
            "no error replies (resp={resp}): {:?}",
            *outcomes
        );
    }
    // Still serving both pools.
    assert_eq!(
        Client::connect(rp).cmd(&[b"GET", canary_key(0).as_bytes()]),
        canary_reply(Proto::Resp, 0)
    );
    assert_eq!(
        Client::connect(mp).mc(format!("get {}\r\n", canary_key(0)).as_bytes()),
        canary_reply(Proto::Memcache, 0)
    );
}
