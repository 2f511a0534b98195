//! The command table through the twem binary, with two real redis-server
//! backends: commands whose keys live on different servers are refused with
//! CROSSSLOT and change nothing anywhere (checked on the backends
//! directly), hash-tagged ones run whole on their server, the commands
//! nutcracker refused are forwarded, scripts are loaded everywhere, and
//! INFO describes the pool.

use twem_tests::{bulk, find, key_on, Client, ProxyProc, Redis, Twem};

const CROSSSLOT: &[u8] =
    b"-CROSSSLOT Keys in request don't hash to the same server (use a hash tag)\r\n";

/// Two backends `a` and `b` behind one pool with hash tags `{}`.
struct Two {
    a: Redis,
    b: Redis,
    _proxy: ProxyProc,
    port: u16,
    yaml: String,
}

fn setup() -> Two {
    // DEBUG DIGEST proves a backend's dataset did not change.
    let a = Redis::start_with(&["--enable-debug-command", "yes"]);
    let b = Redis::start_with(&["--enable-debug-command", "yes"]);
    let Twem { proxy, port, yaml } = Twem::start("alpha", "  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n  hash_tag: \"{}\"\n  timeout: 2000\n",
        &[(a.addr(), "a"), (b.addr(), "b")]);
    Two {
        a,
        b,
        _proxy: proxy,
        port,
        yaml,
    }
}

impl Two {
    fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// A key the pool puts on server `name` ("a" or "b").
    fn key_on(&self, name: &str, tag: &str) -> String {
        key_on(&self.yaml, name, tag)
    }

    /// The backend the pool puts `key` on.
    fn server_of(&self, key: &str) -> &Redis {
        let cfg = twem_core::config::Config::from_yaml(&self.yaml).expect("config parses");
        let ring = cfg.pools[0].ring().expect("ring");
        match ring.locate_name(key.as_bytes()) {
            Some("a") => &self.a,
            _ => &self.b,
        }
    }

    fn digests(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.a.client().cmds("DEBUG DIGEST"),
            self.b.client().cmds("DEBUG DIGEST"),
        )
    }
}

fn cmd(c: &mut Client, args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    c.cmd(&args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// Keys on two servers: refused with CROSSSLOT, and neither backend changed.
#[test]
fn cross_server_commands_are_refused_and_change_nothing() {
    let t = setup();
    let [ka, kb, sa, sb] = [("a", "ka:"), ("b", "kb:"), ("a", "sa:"), ("b", "sb:")]
        .map(|(server, tag)| t.key_on(server, tag));
    let mut a = t.a.client();
    let mut b = t.b.client();
    cmd(&mut a, &["RPUSH", &ka, "x", "y"]);
    cmd(&mut b, &["RPUSH", &kb, "z"]);
    cmd(&mut a, &["SADD", &sa, "m1", "m2"]);
    cmd(&mut b, &["SADD", &sb, "m3"]);
    let before = t.digests();
    let mut p = t.client();
    for args in [
        &["RPOPLPUSH", &ka, &kb][..],
        &["LMOVE", &ka, &kb, "LEFT", "RIGHT"],
        &["SMOVE", &sa, &sb, "m1"],
        &["SUNIONSTORE", &sb, &sa, &sb],
        &["SINTERSTORE", &sa, &sb],
        &["COPY", &ka, &kb, "REPLACE"],
        &["RENAME", &ka, &kb],
        &["RENAMENX", &ka, &kb],
        &["SORT", &ka, "ALPHA", "STORE", &kb],
        &["ZUNIONSTORE", &sa, "1", &sb],
        &["MSETNX", &ka, "1", &kb, "2"],
        &[
            "EVAL",
            "return redis.call('DEL', KEYS[1], KEYS[2])",
            "2",
            &ka,
            &kb,
        ],
    ] {
        assert_eq!(text(&cmd(&mut p, args)), text(CROSSSLOT), "{args:?}");
    }
    assert_eq!(t.digests(), before, "a backend changed");
    // The connection is still usable.
    assert_eq!(cmd(&mut p, &["LLEN", &ka]), b":2\r\n");
}

// Keys sharing a hash tag run whole on their server.
#[test]
fn hash_tagged_commands_are_applied() {
    let t = setup();
    let mut p = t.client();
    assert_eq!(cmd(&mut p, &["RPUSH", "{u}src", "a", "b"]), b":2\r\n");
    assert_eq!(cmd(&mut p, &["RPOPLPUSH", "{u}src", "{u}dst"]), bulk(b"b"));
    assert_eq!(cmd(&mut p, &["SADD", "{u}s1", "x", "y"]), b":2\r\n");
    assert_eq!(cmd(&mut p, &["SMOVE", "{u}s1", "{u}s2", "x"]), b":1\r\n");
    assert_eq!(
        cmd(&mut p, &["SUNIONSTORE", "{u}s3", "{u}s1", "{u}s2"]),
        b":2\r\n"
    );
    assert_eq!(cmd(&mut p, &["COPY", "{u}s3", "{u}s4"]), b":1\r\n");
    assert_eq!(cmd(&mut p, &["RENAME", "{u}s4", "{u}s5"]), b"+OK\r\n");
    // Everything is on the server of "u", and only there.
    let home = t.server_of("{u}");
    let mut h = home.client();
    assert_eq!(
        cmd(&mut h, &["LRANGE", "{u}dst", "0", "-1"]),
        b"*1\r\n$1\r\nb\r\n"
    );
    assert_eq!(cmd(&mut h, &["SCARD", "{u}s5"]), b":2\r\n");
    assert_eq!(cmd(&mut h, &["EXISTS", "{u}s4"]), b":0\r\n");
}

// Commands nutcracker refused are forwarded to their key's server.
#[test]
fn single_key_commands_are_forwarded() {
    let t = setup();
    let k = t.key_on("b", "stream:");
    let s = t.key_on("b", "str:");
    let l = t.key_on("b", "list:");
    let mut p = t.client();
    assert_eq!(cmd(&mut p, &["XADD", &k, "1-1", "f", "v"]), bulk(b"1-1"));
    assert_eq!(cmd(&mut p, &["XLEN", &k]), b":1\r\n");
    let range = cmd(&mut p, &["XRANGE", &k, "-", "+"]);
    assert!(
        range.starts_with(b"*1\r\n*2\r\n$3\r\n1-1\r\n"),
        "{}",
        text(&range)
    );
    let info = cmd(&mut p, &["XINFO", "STREAM", &k]);
    assert!(find(&info, b"length").is_some(), "{}", text(&info));
    assert_eq!(cmd(&mut p, &["OBJECT", "ENCODING", &k]), bulk(b"stream"));
    assert_eq!(cmd(&mut p, &["SET", &s, "v", "EX", "100"]), b"+OK\r\n");
    assert_eq!(cmd(&mut p, &["GETEX", &s, "PERSIST"]), bulk(b"v"));
    assert_eq!(cmd(&mut p, &["TTL", &s]), b":-1\r\n");
    assert_eq!(cmd(&mut p, &["RPUSH", &l, "a", "b", "c"]), b":3\r\n");
    assert_eq!(cmd(&mut p, &["LPOS", &l, "c"]), b":2\r\n");
    // On b, not a.
    let mut b = t.b.client();
    assert_eq!(cmd(&mut b, &["EXISTS", &k, &s, &l]), b":3\r\n");
    assert_eq!(cmd(&mut t.a.client(), &["DBSIZE"]), b":0\r\n");
}

// SCRIPT LOAD reaches every server, so EVALSHA works on keys of either;
// SCRIPT EXISTS is 1 only where every server has the script.
#[test]
fn scripts_are_loaded_everywhere() {
    let t = setup();
    let ka = t.key_on("a", "ka:");
    let kb = t.key_on("b", "kb:");
    let mut p = t.client();
    let script = "return redis.call('GET', KEYS[1])";
    let loaded = cmd(&mut p, &["SCRIPT", "LOAD", script]);
    let sha = String::from_utf8(loaded[5..loaded.len() - 2].to_vec()).expect("sha");
    assert_eq!(loaded, bulk(sha.as_bytes()), "{}", text(&loaded));
    for r in [&t.a, &t.b] {
        assert_eq!(
            cmd(&mut r.client(), &["SCRIPT", "EXISTS", &sha]),
            b"*1\r\n:1\r\n"
        );
    }
    cmd(&mut p, &["SET", &ka, "on-a"]);
    cmd(&mut p, &["SET", &kb, "on-b"]);
    assert_eq!(cmd(&mut p, &["EVALSHA", &sha, "1", &ka]), bulk(b"on-a"));
    assert_eq!(cmd(&mut p, &["EVALSHA", &sha, "1", &kb]), bulk(b"on-b"));
    // A script only one server has does not exist for the pool.
    let only_a = cmd(&mut t.a.client(), &["SCRIPT", "LOAD", "return 7"]);
    let only_a = String::from_utf8(only_a[5..only_a.len() - 2].to_vec()).expect("sha");
    assert_eq!(
        cmd(&mut p, &["SCRIPT", "EXISTS", &sha, &only_a, "0000"]),
        b"*3\r\n:1\r\n:0\r\n:0\r\n"
    );
    // No keys: refused with what to do.
    let zero = cmd(&mut p, &["EVAL", "return 1", "0"]);
    assert!(find(&zero, b"pass the keys").is_some(), "{}", text(&zero));
    assert_eq!(cmd(&mut p, &["SCRIPT", "FLUSH"]), b"+OK\r\n");
    assert_eq!(cmd(&mut p, &["SCRIPT", "EXISTS", &sha]), b"*1\r\n:0\r\n");
}

// INFO: the lowest server version, loading:0, the keyspace summed.
#[test]
fn info_describes_the_pool() {
    let t = setup();
    let mut a = t.a.client();
    let mut b = t.b.client();
    for k in ["x1", "x2", "x3"] {
        cmd(&mut a, &["SET", k, "v"]);
    }
    cmd(&mut b, &["SET", "y1", "v"]);
    cmd(&mut b, &["SET", "y2", "v", "EX", "1000"]);
    let version = cmd(&mut a, &["INFO", "server"]);
    let version = text(&version);
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .expect("redis_version")
        .trim()
        .to_string();
    let mut p = t.client();
    let info = text(&cmd(&mut p, &["INFO"]));
    assert!(info.starts_with('$'), "{info}");
    for line in [
        format!("redis_version:{version}\r\n"),
        "redis_mode:proxy\r\n".to_string(),
        "loading:0\r\n".to_string(),
        "connected_clients:".to_string(),
        "total_commands_processed:".to_string(),
        "db0:keys=5,expires=1,avg_ttl=".to_string(),
    ] {
        assert!(info.contains(&line), "{line:?} not in {info}");
    }
    let keyspace = text(&cmd(&mut p, &["INFO", "keyspace"]));
    assert!(keyspace.contains("# Keyspace\r\ndb0:keys=5,"), "{keyspace}");
    assert!(!keyspace.contains("# Server"), "{keyspace}");
}

// XREAD without BLOCK is forwarded like any command whose keys share a
// server (blocking commands: tests/tests/blocking.rs).
#[test]
fn xread_without_block_is_forwarded() {
    let t = setup();
    let mut p = t.client();
    assert_eq!(
        cmd(&mut p, &["XADD", "{s}1", "1-1", "f", "v"]),
        bulk(b"1-1")
    );
    let read = cmd(
        &mut p,
        &["XREAD", "COUNT", "1", "STREAMS", "{s}1", "{s}2", "0", "0"],
    );
    assert!(read.starts_with(b"*1\r\n"), "{}", text(&read));
}

// INFO still answers when a server is down: from the servers that answered.
#[test]
fn info_leaves_out_a_dead_server() {
    let mut t = setup();
    cmd(&mut t.a.client(), &["SET", "x1", "v"]);
    cmd(&mut t.b.client(), &["SET", "y1", "v"]);
    t.b.proc.kill();
    let mut p = t.client();
    let info = text(&cmd(&mut p, &["INFO", "keyspace"]));
    assert!(info.contains("db0:keys=1,"), "{info}");
    // SCRIPT LOAD is not half-reported: the dead server's failure is the reply.
    let load = text(&cmd(&mut p, &["SCRIPT", "LOAD", "return 1"]));
    assert!(load.starts_with("-ERR"), "{load}");
}
