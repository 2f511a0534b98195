//! Transactions and per-client session commands through twem, against two
//! real redis-server shards: MULTI/EXEC applied whole on one server or not
//! at all (checked on the shards directly), WATCH on a pinned connection,
//! the pinned-connection bound, a lost pinned connection, HELLO and CLIENT.

use twem_tests::{bulk, free_port, Client, ProxyProc, Redis, Shards};

/// Two shards behind twem (3 s timeout), with the pool lines `extra`.
fn setup(extra: &str) -> Shards {
    Shards::start(2, &format!("  timeout: 3000\n{extra}"))
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_same_server_transaction_is_applied_once_with_redis_replies() {
    let t = setup("");
    let mut c = t.client();
    assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmds("INCR {rate}n"), b"+QUEUED\r\n");
    assert_eq!(c.cmds("EXPIRE {rate}n 60"), b"+QUEUED\r\n");
    assert_eq!(c.cmds("LPUSH {rate}n x"), b"+QUEUED\r\n");
    let exec = c.cmds("EXEC");
    // Redis's own EXEC array: the runtime WRONGTYPE error is an element.
    assert!(
        exec.starts_with(b"*3\r\n:1\r\n:1\r\n-WRONGTYPE"),
        "{}",
        s(&exec)
    );
    assert_eq!(c.cmds("GET {rate}n"), bulk(b"1"));
    // An empty transaction, and one with only keyless commands.
    assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmds("EXEC"), b"*0\r\n");
    assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmds("PING"), b"+QUEUED\r\n");
    assert_eq!(c.cmds("EXEC"), b"*1\r\n+PONG\r\n");
}

#[test]
fn a_cross_server_transaction_aborts_and_applies_nothing() {
    let t = setup("");
    let (a, b) = (t.key(0, "a"), t.key(1, "b"));
    let mut c = t.client();
    for attempt in 0..3 {
        assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
        assert_eq!(c.cmd(&[b"INCR", a.as_bytes()]), b"+QUEUED\r\n");
        let refused = c.cmd(&[b"INCR", b.as_bytes()]);
        assert!(
            refused.starts_with(b"-CROSSSLOT Keys in request don't hash to the same server"),
            "attempt {attempt}: {}",
            s(&refused)
        );
        assert_eq!(
            c.cmds("EXEC"),
            b"-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
    }
    assert_eq!(t.get_on(0, &a), b"$-1\r\n", "nothing applied on shard0");
    assert_eq!(t.get_on(1, &b), b"$-1\r\n", "nothing applied on shard1");
    // The connection is usable and out of the transaction.
    assert_eq!(c.cmds("EXEC"), b"-ERR EXEC without MULTI\r\n");
    assert_eq!(c.cmd(&[b"INCR", a.as_bytes()]), b":1\r\n");
}

#[test]
fn a_refused_command_aborts_the_transaction() {
    let t = setup("");
    let a = t.key(0, "a");
    let mut c = t.client();
    assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"SET", a.as_bytes(), b"1"]), b"+QUEUED\r\n");
    assert!(c
        .cmds("NOSUCHCOMMAND x")
        .starts_with(b"-ERR unknown command"));
    assert!(c
        .cmd(&[b"GET", a.as_bytes(), b"extra"])
        .starts_with(b"-ERR wrong number of arguments"));
    assert!(c.cmds("EXEC").starts_with(b"-EXECABORT"));
    assert_eq!(t.get_on(0, &a), b"$-1\r\n");
    // DISCARD applies nothing either.
    assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"SET", a.as_bytes(), b"1"]), b"+QUEUED\r\n");
    assert_eq!(c.cmds("DISCARD"), b"+OK\r\n");
    assert_eq!(t.get_on(0, &a), b"$-1\r\n");
    assert_eq!(c.cmds("DISCARD"), b"-ERR DISCARD without MULTI\r\n");
    assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmds("MULTI"), b"-ERR MULTI calls can not be nested\r\n");
    assert_eq!(
        c.cmds("WATCH x"),
        b"-ERR WATCH inside MULTI is not allowed\r\n"
    );
    assert_eq!(c.cmds("EXEC"), b"*0\r\n");
}

#[test]
fn watch_runs_on_a_pinned_connection() {
    let t = setup("");
    let k = t.key(1, "w");
    let mut c = t.client();
    let mut other = t.client();
    // Modified by another client after WATCH: EXEC answers null, nothing set.
    assert_eq!(c.cmd(&[b"WATCH", k.as_bytes()]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"GET", k.as_bytes()]), b"$-1\r\n");
    assert_eq!(other.cmd(&[b"SET", k.as_bytes(), b"theirs"]), b"+OK\r\n");
    assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"SET", k.as_bytes(), b"mine"]), b"+QUEUED\r\n");
    assert_eq!(c.cmds("EXEC"), b"*-1\r\n");
    assert_eq!(t.get_on(1, &k), bulk(b"theirs"));
    // Not modified: applied.
    assert_eq!(c.cmd(&[b"WATCH", k.as_bytes()]), b"+OK\r\n");
    assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"SET", k.as_bytes(), b"mine"]), b"+QUEUED\r\n");
    assert_eq!(c.cmds("EXEC"), b"*1\r\n+OK\r\n");
    assert_eq!(t.get_on(1, &k), bulk(b"mine"));
    // WATCH over two servers is refused; UNWATCH without a watch is fine.
    let a = t.key(0, "a");
    let refused = c.cmd(&[b"WATCH", a.as_bytes(), k.as_bytes()]);
    assert!(refused.starts_with(b"-CROSSSLOT"), "{}", s(&refused));
    assert_eq!(c.cmds("UNWATCH"), b"+OK\r\n");
}

#[test]
fn a_client_gone_mid_watch_leaves_no_state_behind() {
    let t = setup("  pinned_connections: 1\n");
    let k = t.key(0, "g");
    for round in 0..20 {
        let mut c = t.client();
        assert_eq!(
            c.cmd(&[b"WATCH", k.as_bytes()]),
            b"+OK\r\n",
            "round {round}"
        );
        drop(c);
        // Another client's transaction on the same server (the only pinned
        // slot frees once the dropped one closes) must not inherit the
        // watch: touching the key first would otherwise fail its EXEC.
        let mut d = t.client();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            assert_eq!(d.cmd(&[b"SET", k.as_bytes(), b"x"]), b"+OK\r\n");
            assert_eq!(d.cmds("MULTI"), b"+OK\r\n");
            assert_eq!(d.cmd(&[b"INCR", k.as_bytes()]), b"+QUEUED\r\n");
            let r = d.cmds("EXEC");
            if r.starts_with(b"-ERR twem: all 1 pinned connections") {
                assert!(std::time::Instant::now() < deadline, "slot never freed");
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            assert!(
                r.starts_with(b"*1\r\n-ERR value is not an integer"),
                "{}",
                s(&r)
            );
            break;
        }
    }
}

#[test]
fn pinned_connections_are_bounded_with_a_clear_error() {
    let t = setup("  pinned_connections: 2\n");
    let k = t.key(0, "p");
    let watch = |c: &mut Client| assert_eq!(c.cmd(&[b"WATCH", k.as_bytes()]), b"+OK\r\n");
    let mut held = t.clients_holding(2, watch);
    let mut third = t.client();
    let refused = third.cmd(&[b"WATCH", k.as_bytes()]);
    assert!(
        refused.starts_with(b"-ERR twem: all 2 pinned connections to server shard0 are in use"),
        "{}",
        s(&refused)
    );
    // Another server has its own bound.
    let other = t.key(1, "q");
    assert_eq!(third.cmd(&[b"WATCH", other.as_bytes()]), b"+OK\r\n");
    assert_eq!(third.cmds("UNWATCH"), b"+OK\r\n");
    // A clean release makes room.
    assert_eq!(held[0].cmds("UNWATCH"), b"+OK\r\n");
    assert_eq!(third.cmd(&[b"WATCH", k.as_bytes()]), b"+OK\r\n");
    held.clear();
}

#[test]
fn a_lost_pinned_connection_fails_the_transaction() {
    let t = setup("");
    let k = t.key(0, "l");
    let mut c = t.client();
    assert_eq!(c.cmd(&[b"WATCH", k.as_bytes()]), b"+OK\r\n");
    // The server drops every client connection (the proxy's included).
    let mut admin = t.shards[0].client();
    let killed = admin.cmds("CLIENT KILL TYPE normal SKIPME yes");
    assert!(killed.starts_with(b":"), "{}", s(&killed));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"SET", k.as_bytes(), b"blind"]), b"+QUEUED\r\n");
    let r = c.cmds("EXEC");
    assert!(r.starts_with(b"-ERR"), "{}", s(&r));
    assert_eq!(t.get_on(0, &k), b"$-1\r\n", "a watch lost must not commit");
    // The client can start over.
    assert_eq!(c.cmd(&[b"WATCH", k.as_bytes()]), b"+OK\r\n");
    assert_eq!(c.cmds("MULTI"), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"SET", k.as_bytes(), b"seen"]), b"+QUEUED\r\n");
    assert_eq!(c.cmds("EXEC"), b"*1\r\n+OK\r\n");
}

#[test]
fn hello_and_client_are_answered_per_session() {
    let t = setup("");
    let mut c = t.client();
    let hello = c.cmds("HELLO 2");
    assert!(hello.starts_with(b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n"));
    let version = {
        let mut r = t.shards[0].client();
        let info = s(&r.cmds("INFO server"));
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .expect("redis_version")
            .trim()
            .to_owned()
    };
    assert!(
        s(&hello).contains(&format!("\r\n{version}\r\n")),
        "{}",
        s(&hello)
    );
    assert_eq!(
        c.cmds("HELLO 4"),
        b"-NOPROTO unsupported protocol version\r\n"
    );
    assert_eq!(c.cmds("CLIENT GETNAME"), b"$-1\r\n");
    assert_eq!(c.cmds("CLIENT SETNAME worker-1"), b"+OK\r\n");
    assert_eq!(c.cmds("CLIENT GETNAME"), bulk(b"worker-1"));
    assert!(c
        .cmd(&[b"CLIENT", b"SETNAME", b"two words"])
        .starts_with(b"-ERR Client names cannot contain spaces"));
    assert_eq!(c.cmds("CLIENT SETINFO LIB-NAME redis-py"), b"+OK\r\n");
    assert_eq!(c.cmds("CLIENT SETINFO LIB-VER 8.1.0"), b"+OK\r\n");
    let id = c.cmds("CLIENT ID");
    assert!(id.starts_with(b":"));
    let info = s(&c.cmds("CLIENT INFO"));
    assert!(info.contains("name=worker-1"), "{info}");
    assert!(info.contains("lib-name=redis-py lib-ver=8.1.0"), "{info}");
    let id_num = s(&id[1..id.len() - 2]);
    assert!(info.contains(&format!("id={id_num} ")), "{info}");
    assert!(c
        .cmds("CLIENT TRACKING on")
        .starts_with(b"-ERR twem: client-side caching"));
    assert!(c
        .cmds("CLIENT KILL ID 1")
        .starts_with(b"-ERR twem: CLIENT KILL is not supported"));
    // HELLO SETNAME names the client too; RESET forgets it.
    assert!(c.cmds("HELLO 2 SETNAME other").starts_with(b"*14\r\n"));
    assert_eq!(c.cmds("CLIENT GETNAME"), bulk(b"other"));
    assert_eq!(c.cmds("RESET"), b"+RESET\r\n");
    assert_eq!(c.cmds("CLIENT GETNAME"), b"$-1\r\n");
}

#[test]
fn hello_auth_honours_redis_auth() {
    let shard = Redis::start_with(&["--requirepass", "sekret"]);
    let port = free_port();
    let yaml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  redis_auth: sekret\n  servers:\n   - {}:1\n",
        shard.addr()
    );
    let _proxy = ProxyProc::twem(&yaml, port, &[]);
    let mut c = Client::connect(port);
    assert!(c
        .cmds("HELLO 2")
        .starts_with(b"-NOAUTH HELLO must be called"));
    assert!(c.cmds("GET k").starts_with(b"-NOAUTH"));
    assert_eq!(
        c.cmds("HELLO 2 AUTH default wrong"),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert!(c
        .cmds("HELLO 2 AUTH default sekret")
        .starts_with(b"*14\r\n"));
    assert_eq!(c.cmds("SET k v"), b"+OK\r\n");
}
