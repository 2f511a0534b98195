//! Raw-RESP differential tests for RESP3 sessions and transactions: the same
//! byte sequence is sent to a `redis-server` directly and through twem (a
//! one-server pool, so the replies are comparable) and the replies must be
//! the same bytes. Where Redis's reply holds per-process content (`HELLO`'s
//! id and version, `INFO`), only its shape is checked. A two-server pool
//! checks that a transaction over keys on both servers is refused whole.
//!
//! Reference replies (redis-server 7.0.15) are written out in the comments,
//! so a failure here can be read without running Redis.
//!
//! `TWEM_RESP3_DIRECT=1` puts a second redis-server where twem would be:
//! every comparison must then pass (it proves the tests right); the
//! two-server test, which needs twem, is skipped.

use std::io::{Read, Write};
use std::net::TcpStream;

use twem_tests::{key_on, resp_cmd, test_socket, ProxyProc, Redis, Twem};

/// A parsed RESP2/RESP3 reply, for the checks that look at shape only.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` or RESP3 `_`.
    Null(u8),
    Double(String),
    Bool(bool),
    BigNumber(String),
    Verbatim(Vec<u8>),
    Array(Vec<V>),
    Set(Vec<V>),
    Push(Vec<V>),
    Map(Vec<(V, V)>),
}

/// Parse one reply at the start of `b`: the value and its length, or `None`
/// if incomplete. Panics on bytes that are no RESP at all.
fn parse(b: &[u8]) -> Option<(V, usize)> {
    let line_end = b.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&b[1..line_end]).expect("RESP header is text");
    let after = line_end + 2;
    let num = || -> i64 {
        head.parse()
            .unwrap_or_else(|_| panic!("bad length {head:?} in {:?}", show(b)))
    };
    let blob = |n: i64| -> Option<(Vec<u8>, usize)> {
        let end = after + n as usize + 2;
        (b.len() >= end).then(|| (b[after..after + n as usize].to_vec(), end))
    };
    let items = |n: i64| -> Option<(Vec<V>, usize)> {
        let mut at = after;
        let mut out = Vec::new();
        for _ in 0..n {
            let (v, used) = parse(&b[at..])?;
            out.push(v);
            at += used;
        }
        Some((out, at))
    };
    Some(match b[0] {
        b'+' => (V::Simple(head.to_string()), after),
        b'-' => (V::Error(head.to_string()), after),
        b':' => (V::Int(num()), after),
        b'_' => (V::Null(b'_'), after),
        b',' => (V::Double(head.to_string()), after),
        b'#' => (V::Bool(head == "t"), after),
        b'(' => (V::BigNumber(head.to_string()), after),
        b'$' if num() < 0 => (V::Null(b'$'), after),
        b'*' if num() < 0 => (V::Null(b'*'), after),
        b'$' => blob(num()).map(|(v, end)| (V::Bulk(v), end))?,
        b'=' => blob(num()).map(|(v, end)| (V::Verbatim(v), end))?,
        b'*' => items(num()).map(|(v, end)| (V::Array(v), end))?,
        b'~' => items(num()).map(|(v, end)| (V::Set(v), end))?,
        b'>' => items(num()).map(|(v, end)| (V::Push(v), end))?,
        b'%' => {
            let (v, end) = items(2 * num())?;
            let mut it = v.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            (V::Map(pairs), end)
        }
        other => panic!("not a RESP type byte {:?} in {:?}", other as char, show(b)),
    })
}

/// Bytes as readable text (`\r\n` kept visible).
fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

/// A blocking connection that reads RESP3 as well as RESP2 replies.
struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
    what: &'static str,
}

impl Conn {
    fn connect(port: u16, what: &'static str) -> Conn {
        Conn {
            sock: test_socket(port),
            buf: Vec::new(),
            what,
        }
    }

    /// Send `line` (space-separated words) as a RESP command.
    fn send(&mut self, line: &str) {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.send_args(&words);
    }

    fn send_args(&mut self, args: &[&[u8]]) {
        self.sock.write_all(&resp_cmd(args)).expect("send");
    }

    /// One complete reply, raw.
    fn read(&mut self) -> Vec<u8> {
        loop {
            if let Some((_, n)) = parse(&self.buf) {
                return self.buf.drain(..n).collect();
            }
            let mut tmp = [0u8; 65536];
            match self.sock.read(&mut tmp) {
                Ok(0) => panic!(
                    "{}: connection closed; have {:?}",
                    self.what,
                    show(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "{}: read failed (timeout?): {e}; have {:?}",
                    self.what,
                    show(&self.buf)
                ),
            }
        }
    }

    /// Send `line`, read its reply.
    /// `MULTI`, `cmds`, `EXEC`: every reply, in order.
    fn transaction(&mut self, cmds: &[String]) -> Vec<Vec<u8>> {
        let lines = std::iter::once("MULTI").chain(cmds.iter().map(String::as_str));
        let mut replies: Vec<Vec<u8>> = lines.map(|l| self.cmd(l)).collect();
        replies.push(self.cmd("EXEC"));
        replies
    }

    fn cmd(&mut self, line: &str) -> Vec<u8> {
        self.send(line);
        self.read()
    }

    fn args(&mut self, args: &[&str]) -> Vec<u8> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.send_args(&a);
        self.read()
    }

    /// Send `line`; its reply must be `want` (`what` names the check).
    fn expect(&mut self, line: &str, want: &[u8], what: &str) {
        let got = self.cmd(line);
        assert!(
            got == want,
            "{} {what}: {line}: want {}, got {}",
            self.what,
            show(want),
            show(&got)
        );
    }

    fn value(&mut self, line: &str) -> V {
        let raw = self.cmd(line);
        parse(&raw).expect("complete reply").0
    }
}

/// twem with a one-server pool, and a separate reference redis-server.
struct Pair {
    _shard: Redis,
    reference: Redis,
    /// None under `TWEM_RESP3_DIRECT=1`: `port` is then the shard's.
    proxy: Option<ProxyProc>,
    port: u16,
}

fn direct_mode() -> bool {
    std::env::var("TWEM_RESP3_DIRECT").as_deref() == Ok("1")
}

fn pair() -> Pair {
    let shard = Redis::start();
    let reference = Redis::start();
    if direct_mode() {
        let port = shard.port;
        return Pair {
            _shard: shard,
            reference,
            proxy: None,
            port,
        };
    }
    let (proxy, port) = Twem::start("r3", "  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n  hash_tag: \"{}\"\n  timeout: 5000\n",
        &[(shard.addr(), "s0")]).parts();
    Pair {
        _shard: shard,
        reference,
        proxy: Some(proxy),
        port,
    }
}

impl Pair {
    /// Run `script` on a fresh connection to Redis and to twem (it gets the
    /// port of the side it runs on, to open more connections there) and
    /// compare what each returns, reply by reply.
    fn same(&self, what: &str, script: impl Fn(&mut Conn, u16) -> Vec<Vec<u8>>) {
        let want = script(
            &mut Conn::connect(self.reference.port, "redis"),
            self.reference.port,
        );
        let got = script(&mut Conn::connect(self.port, "twem"), self.port);
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert!(
                w == g,
                "{what}: reply {i} differs\n redis: {}\n twem:  {}\n(all redis: {:?})\n(all twem:  {:?})\ntwem log tail:\n{}",
                show(w),
                show(g),
                want.iter().map(|r| show(r)).collect::<Vec<_>>(),
                got.iter().map(|r| show(r)).collect::<Vec<_>>(),
                self.log_tail()
            );
        }
        assert_eq!(want.len(), got.len(), "{what}: reply counts");
    }

    fn log_tail(&self) -> String {
        let Some(proxy) = &self.proxy else {
            return "(direct mode: no twem)".to_string();
        };
        proxy.log_tail(10)
    }
}

/// Map keys of a HELLO reply, as text, in order.
fn map_keys(v: &V) -> Vec<String> {
    match v {
        V::Map(pairs) => pairs
            .iter()
            .map(|(k, _)| match k {
                V::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("HELLO map key is not a bulk string: {other:?}"),
            })
            .collect(),
        V::Array(items) => items
            .iter()
            .step_by(2)
            .map(|k| match k {
                V::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("HELLO key is not a bulk string: {other:?}"),
            })
            .collect(),
        other => panic!("HELLO reply is neither a map nor an array: {other:?}"),
    }
}

fn map_get<'a>(v: &'a V, key: &str) -> &'a V {
    let pairs: Vec<(&V, &V)> = match v {
        V::Map(p) => p.iter().map(|(k, v)| (k, v)).collect(),
        V::Array(items) => items.chunks(2).map(|c| (&c[0], &c[1])).collect(),
        other => panic!("not a map: {other:?}"),
    };
    pairs
        .into_iter()
        .find(|(k, _)| **k == V::Bulk(key.as_bytes().to_vec()))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key} in {v:?}"))
}

const HELLO_KEYS: [&str; 7] = [
    "server", "version", "proto", "id", "mode", "role", "modules",
];

/// The HELLO reply's shape: Redis's seven keys in Redis's order, `proto`
/// as asked, an integer `id`, text `server`/`version`/`mode`/`role`, an
/// array `modules`; a map under RESP3, a flat array under RESP2.
fn assert_hello_shape(v: &V, proto: i64, who: &str) {
    match (proto, v) {
        (3, V::Map(_)) | (2, V::Array(_)) => {}
        _ => panic!("{who}: HELLO {proto} reply has the wrong type: {v:?}"),
    }
    assert_eq!(map_keys(v), HELLO_KEYS, "{who}: HELLO keys");
    assert_eq!(*map_get(v, "proto"), V::Int(proto), "{who}: proto");
    assert!(matches!(map_get(v, "id"), V::Int(_)), "{who}: id: {v:?}");
    for k in ["server", "version", "mode", "role"] {
        assert!(matches!(map_get(v, k), V::Bulk(_)), "{who}: {k}: {v:?}");
    }
    assert!(
        matches!(map_get(v, "modules"), V::Array(_)),
        "{who}: modules: {v:?}"
    );
    // coredis refuses commands newer than HELLO's version: it must look
    // like a Redis version (digits and dots), not twem's own.
    let V::Bulk(version) = map_get(v, "version") else {
        unreachable!()
    };
    let version = String::from_utf8_lossy(version);
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "{who}: version {version:?} is not a Redis version"
    );
}

/// `HELLO 3` (also as ioredis sends it, lower-case): a RESP3 map of Redis's
/// shape, on both sides.
#[test]
fn hello3_reply_shape() {
    let p = pair();
    for (port, who) in [(p.reference.port, "redis"), (p.port, "twem")] {
        for hello in ["HELLO 3", "hello 3"] {
            let mut c = Conn::connect(port, who);
            let v = c.value(hello);
            assert_hello_shape(&v, 3, &format!("{who} {hello}"));
            // The session is RESP3 afterwards.
            c.expect(
                "GET r3:hello:missing",
                b"_\r\n",
                &format!("{who}: RESP3 null"),
            );
        }
        // HELLO without a version reports the current protocol: RESP2 here.
        let mut c = Conn::connect(port, who);
        assert_hello_shape(&c.value("HELLO"), 2, &format!("{who} HELLO"));
        // HELLO 2 after HELLO 3 goes back to RESP2.
        assert_hello_shape(&c.value("HELLO 3"), 3, who);
        assert_hello_shape(&c.value("HELLO 2"), 2, who);
        c.expect(
            "GET r3:hello:missing",
            b"$-1\r\n",
            &format!("{who}: RESP2 null"),
        );
    }
}

/// The HELLO errors and options clients rely on: `NOPROTO` (ioredis falls
/// back to RESP2 on it), `SETNAME` inside HELLO (node-redis), the name read
/// back by CLIENT GETNAME.
#[test]
fn hello_errors_and_setname() {
    let p = pair();
    p.same("HELLO 4, HELLO x, HELLO 3 SETNAME", |c, _| {
        let mut out = vec![
            // -NOPROTO unsupported protocol version
            c.cmd("HELLO 4"),
            // -NOPROTO unsupported protocol version
            c.cmd("HELLO 1"),
            // -ERR Protocol version is not an integer or out of range
            c.cmd("HELLO x"),
            // Still RESP2: $-1
            c.cmd("GET r3:missing"),
        ];
        let v = c.value("HELLO 3 SETNAME r3-name");
        assert_hello_shape(&v, 3, c.what);
        // $7\r\nr3-name\r\n
        out.push(c.cmd("CLIENT GETNAME"));
        // +OK, then $5 other
        out.push(c.cmd("CLIENT SETNAME other"));
        out.push(c.cmd("CLIENT GETNAME"));
        out
    });
}

/// After `HELLO 3`, each reply type in RESP3 form, byte for byte.
#[test]
fn resp3_types_match_redis() {
    let p = pair();
    p.same("RESP3 types", |c, _| {
        let hello = c.value("HELLO 3");
        assert_hello_shape(&hello, 3, c.what);
        vec![
            c.cmd("HSET r3:h a 1 b 2"), // :2
            c.cmd("HGETALL r3:h"),      // %2 $1 a $1 1 $1 b $1 2  (map)
            c.cmd("HGETALL r3:nohash"), // %0
            // Integers only: an intset, whose order does not depend on the
            // process's hash seed (a hashtable set's does).
            c.cmd("SADD r3:s 30 1 2"), // :3
            c.cmd("SMEMBERS r3:s"),    // ~3 $1 1 $1 2 $2 30 (set)
            c.cmd("ZADD r3:z 1.5 m inf n -0.25 o"),
            c.cmd("ZSCORE r3:z m"),               // ,1.5   (double)
            c.cmd("ZSCORE r3:z n"),               // ,inf
            c.cmd("ZSCORE r3:z nope"),            // _
            c.cmd("ZRANGE r3:z 0 -1 WITHSCORES"), // *3 of *2 [$ member, ,score]
            c.cmd("ZINCRBY r3:z 0.5 m"),          // ,2
            c.cmd("GET r3:missing"),              // _      (null)
            c.cmd("EXISTS r3:h"),                 // :1
            c.cmd("SET r3:k v"),                  // +OK
            c.cmd("MGET r3:k r3:missing"),        // *2 $1 v _
            c.cmd("HMGET r3:h a nofield"),        // *2 $1 1 _
            c.cmd("LPOP r3:nolist"),              // _
            c.cmd("INCR r3:k"),                   // -ERR value is not an integer ...
            c.cmd("TTL r3:k"),                    // :-1
            c.cmd("XADD r3:st 1-1 f v"),          // $3 1-1
            c.cmd("XRANGE r3:st - +"),            // *1 *2 $3 1-1 *2 $1 f $1 v
            c.cmd("SCRIPT EXISTS 0000000000000000000000000000000000000000"), // *1 :0
            // Lua under RESP3 (redis.setresp(3)): boolean, big number, verbatim,
            // double, map and set; without setresp, `true` is :1.
            c.args(&["EVAL", "redis.setresp(3) return true", "1", "r3:k"]), // #t
            c.args(&["EVAL", "redis.setresp(3) return false", "1", "r3:k"]), // #f
            c.args(&["EVAL", "return true", "1", "r3:k"]),                  // :1
            c.args(&["EVAL", "return false", "1", "r3:k"]),                 // _
            c.args(&["EVAL", "return {double=3.5}", "1", "r3:k"]),          // ,3.5
            c.args(&[
                "EVAL",
                "return {big_number='123456789012345678901234567890'}",
                "1",
                "r3:k",
            ]), // (123456789012345678901234567890
            c.args(&[
                "EVAL",
                "return {verbatim_string={format='txt', string='hi'}}",
                "1",
                "r3:k",
            ]), // =6 txt:hi
            c.args(&["EVAL", "return {map={a=1}}", "1", "r3:k"]),           // %1 $1 a :1
            c.args(&["EVAL", "return {set={a=true}}", "1", "r3:k"]),        // ~1 $1 a
            c.args(&[
                "EVAL",
                "redis.setresp(3) return redis.call('HGETALL', KEYS[1])",
                "1",
                "r3:h",
            ]), // %2 ...
        ]
    });
}

/// `INFO` under RESP3 is a verbatim string (`=`, format `txt`) with
/// `redis_version` and `loading:0` (ioredis's ready check reads it); its
/// content is twem's own, so only the type and those fields are checked.
#[test]
fn info_is_verbatim_under_resp3() {
    let p = pair();
    for (port, who) in [(p.reference.port, "redis"), (p.port, "twem")] {
        let mut c = Conn::connect(port, who);
        assert_hello_shape(&c.value("HELLO 3"), 3, who);
        for info in ["INFO", "info", "INFO server"] {
            let raw = c.cmd(info);
            assert_eq!(
                raw[0],
                b'=',
                "{who} {info}: {}",
                show(&raw[..raw.len().min(80)])
            );
            let V::Verbatim(body) = parse(&raw).expect("complete").0 else {
                unreachable!()
            };
            let text = String::from_utf8_lossy(&body);
            assert!(text.starts_with("txt:"), "{who} {info}: {text:.80}");
            assert!(
                text.lines().any(|l| l.starts_with("redis_version:")),
                "{who} {info}: no redis_version in {text:.300}"
            );
            if info != "INFO server" {
                assert!(
                    !text
                        .lines()
                        .any(|l| l.starts_with("loading:") && l != "loading:0"),
                    "{who} {info}: loading"
                );
            }
        }
        // And a RESP2 session gets a bulk string.
        let mut c2 = Conn::connect(port, who);
        let raw = c2.cmd("INFO");
        assert_eq!(
            raw[0],
            b'$',
            "{who} RESP2 INFO: {}",
            show(&raw[..raw.len().min(80)])
        );
    }
}

/// A RESP2 connection keeps getting RESP2 while another connection to the
/// same proxy (so, possibly, the same server connection) speaks RESP3.
#[test]
fn resp2_and_resp3_sessions_side_by_side() {
    let p = pair();
    p.same("RESP2 next to RESP3", |c2, port| {
        let mut c3 = Conn::connect(port, c2.what);
        assert_hello_shape(&c3.value("HELLO 3"), 3, c2.what);
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(c2.cmd("HSET r3:mix a 1"));
            out.push(c3.cmd("HGETALL r3:mix")); // %1
            out.push(c2.cmd("HGETALL r3:mix")); // *2
            out.push(c3.cmd("GET r3:nope")); // _
            out.push(c2.cmd("GET r3:nope")); // $-1
            out.push(c3.cmd("ZADD r3:mixz 2.5 m"));
            out.push(c2.cmd("ZSCORE r3:mixz m")); // $3 2.5
            out.push(c3.cmd("ZSCORE r3:mixz m")); // ,2.5
        }
        // Pipelined on both at once.
        for i in 0..50 {
            c2.send(&format!("HGETALL r3:mix{}", i % 2));
            c3.send(&format!("MGET r3:nope r3:mix{}", i % 2));
        }
        for _ in 0..50 {
            out.push(c2.read());
            out.push(c3.read());
        }
        out
    });
}

/// Transactions in RESP2: queued replies, an EXEC array holding a command's
/// error, EXECABORT after a queue-time error, the MULTI/EXEC/DISCARD misuse
/// errors, DISCARD applying nothing.
#[test]
fn transactions_match_redis() {
    let p = pair();
    p.same("MULTI SET INCR EXEC", |c, _| {
        vec![
            c.cmd("MULTI"),       // +OK
            c.cmd("SET r3:tx v"), // +QUEUED
            c.cmd("INCR r3:tx"),  // +QUEUED
            c.cmd("EXEC"),        // *2 +OK -ERR value is not an integer or out of range
            c.cmd("GET r3:tx"),   // $1 v
        ]
    });
    p.same("MULTI SET BADCMD EXEC", |c, _| {
        vec![
            c.cmd("MULTI"),        // +OK
            c.cmd("SET r3:tx2 v"), // +QUEUED
            c.cmd("BADCMD"),       // -ERR unknown command 'BADCMD', with args beginning with:
            c.cmd("EXEC"),         // -EXECABORT Transaction discarded because of previous errors.
            c.cmd("GET r3:tx2"),   // $-1: nothing applied
        ]
    });
    p.same("MULTI wrong arity EXEC", |c, _| {
        vec![
            c.cmd("MULTI"),
            c.cmd("INCR r3:tx3"),
            c.cmd("GET"),        // -ERR wrong number of arguments for 'get' command
            c.cmd("EXEC"),       // -EXECABORT ...
            c.cmd("GET r3:tx3"), // $-1
        ]
    });
    p.same("EXEC, DISCARD without MULTI; nested MULTI", |c, _| {
        vec![
            c.cmd("EXEC"),         // -ERR EXEC without MULTI
            c.cmd("DISCARD"),      // -ERR DISCARD without MULTI
            c.cmd("MULTI"),        // +OK
            c.cmd("MULTI"),        // -ERR MULTI calls can not be nested
            c.cmd("SET r3:tx4 v"), // +QUEUED: the nested MULTI did not abort
            c.cmd("EXEC"),         // *1 +OK
            c.cmd("GET r3:tx4"),   // $1 v
        ]
    });
    p.same("MULTI DISCARD", |c, _| {
        vec![
            c.cmd("MULTI"),
            c.cmd("SET r3:tx5 v"),
            c.cmd("DISCARD"),    // +OK
            c.cmd("GET r3:tx5"), // $-1
            c.cmd("EXEC"),       // -ERR EXEC without MULTI
        ]
    });
    p.same("pipelined MULTI..EXEC", |c, _| {
        // As redis-py and node-redis send it: in one write.
        let mut batch = Vec::new();
        for line in ["MULTI", "INCR r3:tx6", "INCR r3:tx6", "GET r3:tx6", "EXEC"] {
            let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            batch.extend(resp_cmd(&words));
        }
        c.sock.write_all(&batch).expect("send");
        let mut out: Vec<Vec<u8>> = (0..5).map(|_| c.read()).collect();
        out.push(c.cmd("GET r3:tx6")); // $1 2: applied exactly once
        out
    });
}

/// The same transactions in a RESP3 session: EXEC's array and the null of
/// an aborted WATCH (`_`) are RESP3.
#[test]
fn transactions_match_redis_resp3() {
    let p = pair();
    p.same("RESP3 MULTI HGETALL ZSCORE GET EXEC", |c, _| {
        assert_hello_shape(&c.value("HELLO 3"), 3, c.what);
        vec![
            c.cmd("HSET r3:t3h a 1"),
            c.cmd("ZADD r3:t3z 1.5 m"),
            c.cmd("MULTI"),
            c.cmd("HGETALL r3:t3h"),
            c.cmd("ZSCORE r3:t3z m"),
            c.cmd("GET r3:t3missing"),
            c.cmd("INCR r3:t3h"),
            c.cmd("EXEC"), // *4 %1.. ,1.5 _ -WRONGTYPE ...
        ]
    });
}

/// WATCH: a key changed by another connection between WATCH and EXEC makes
/// EXEC answer null (`*-1` in RESP2, `_` in RESP3) and apply nothing; an
/// unchanged key lets it through; UNWATCH forgets.
#[test]
fn watch_matches_redis() {
    let p = pair();
    for resp3 in [false, true] {
        p.same(&format!("WATCH (RESP3: {resp3})"), |c, port| {
            if resp3 {
                assert_hello_shape(&c.value("HELLO 3"), 3, c.what);
            }
            let k = if resp3 { "r3:w3" } else { "r3:w2" };
            let mut other = Conn::connect(port, c.what);
            let mut out = vec![
                c.cmd(&format!("SET {k} 1")),
                c.cmd(&format!("WATCH {k}")), // +OK
            ];
            out.push(other.cmd(&format!("SET {k} 2"))); // changed from elsewhere
            out.push(c.cmd("MULTI"));
            out.push(c.cmd(&format!("SET {k} 3")));
            out.push(c.cmd("EXEC")); // *-1 / _
            out.push(c.cmd(&format!("GET {k}"))); // 2
                                                  // Unchanged: applied.
            out.push(c.cmd(&format!("WATCH {k}")));
            out.push(c.cmd("MULTI"));
            out.push(c.cmd(&format!("SET {k} 4")));
            out.push(c.cmd("EXEC")); // *1 +OK
            out.push(c.cmd(&format!("GET {k}"))); // 4
                                                  // UNWATCH: a later change does not abort.
            out.push(c.cmd(&format!("WATCH {k}")));
            out.push(c.cmd("UNWATCH"));
            out.push(other.cmd(&format!("SET {k} 5")));
            out.push(c.cmd("MULTI"));
            out.push(c.cmd(&format!("SET {k} 6")));
            out.push(c.cmd("EXEC")); // *1 +OK
            out.push(c.cmd("WATCH")); // -ERR wrong number of arguments
            out.push(c.cmd("MULTI"));
            out.push(c.cmd(&format!("WATCH {k}"))); // -ERR WATCH inside MULTI is not allowed
            out.push(c.cmd("DISCARD"));
            out
        });
    }
}

/// Two servers: a transaction whose keys live on both is refused whole at
/// EXEC with `-EXECABORT` and applies nothing on either server; one whose
/// keys share a server (a hash tag, or two keys that happen to) is applied.
#[test]
fn transaction_across_servers_is_refused_whole() {
    if direct_mode() {
        eprintln!("skipped under TWEM_RESP3_DIRECT=1: needs twem in front of two servers");
        return;
    }
    let shards = [Redis::start(), Redis::start()];
    let settings = "  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n  hash_tag: \"{}\"\n  timeout: 5000\n";
    let t = Twem::start(
        "r3x",
        settings,
        &[(shards[0].addr(), "s0"), (shards[1].addr(), "s1")],
    );
    let port = t.port;
    let on_a = key_on(&t.yaml, "s0", "r3x:a:");
    let on_b = key_on(&t.yaml, "s1", "r3x:b:");
    let also_a = key_on(&t.yaml, "s0", "r3x:c:");
    let mut direct = [
        Conn::connect(shards[0].port, "s0"),
        Conn::connect(shards[1].port, "s1"),
    ];

    for resp3 in [false, true] {
        let mut c = Conn::connect(port, "twem");
        if resp3 {
            assert_hello_shape(&c.value("HELLO 3"), 3, "twem");
        }
        let replies = c.transaction(&[
            format!("SET {on_a} 1"),
            format!("SET {on_b} 1"),
            format!("INCR {on_a}"),
        ]);
        let all: Vec<String> = replies.iter().map(|r| show(r)).collect();
        assert_eq!(all[0], "+OK\\r\\n", "MULTI: {all:?}");
        assert_eq!(all[1], "+QUEUED\\r\\n", "first SET: {all:?}");
        assert!(
            replies[4].starts_with(b"-EXECABORT"),
            "EXEC of a cross-server transaction (RESP3: {resp3}): {all:?}"
        );
        for (i, d) in direct.iter_mut().enumerate() {
            for k in [&on_a, &on_b] {
                d.expect(
                    &format!("EXISTS {k}"),
                    b":0\r\n",
                    &format!("{k} was written on s{i}: {all:?}"),
                );
            }
        }
        // The connection is usable afterwards, out of the transaction.
        c.expect("EXEC", b"-ERR EXEC without MULTI\r\n", "");
        c.expect(&format!("SET {on_b} x"), b"+OK\r\n", "");
        direct[1].expect(&format!("GET {on_b}"), b"$1\r\nx\r\n", "");
        direct[1].expect(&format!("DEL {on_b}"), b":1\r\n", "");
    }

    // Same server: a hash tag, then two untagged keys both on s0.
    let mut c = Conn::connect(port, "twem");
    for (k1, k2, server) in [
        ("{r3x}:one".to_string(), "{r3x}:two".to_string(), None),
        (on_a.clone(), also_a.clone(), Some(0)),
    ] {
        let replies = c.transaction(&[
            format!("SET {k1} 1"),
            format!("INCR {k2}"),
            format!("INCR {k2}"),
        ]);
        let all: Vec<String> = replies.iter().map(|r| show(r)).collect();
        assert_eq!(
            all,
            [
                "+OK\\r\\n",
                "+QUEUED\\r\\n",
                "+QUEUED\\r\\n",
                "+QUEUED\\r\\n",
                "*3\\r\\n+OK\\r\\n:1\\r\\n:2\\r\\n"
            ],
            "same-server transaction on {k1}, {k2}"
        );
        c.expect(&format!("GET {k2}"), b"$1\r\n2\r\n", "");
        if let Some(s) = server {
            direct[s].expect(&format!("GET {k2}"), b"$1\r\n2\r\n", &format!("on s{s}"));
        }
    }
}
