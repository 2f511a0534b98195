//! The config model through its public API: every nutcracker rule with the
//! message a user sees, the defaults, the 30 golden pools in YAML and TOML,
//! and inputs that must never panic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use twem_core::config::*;
use twem_core::hash::{HashKind, HashTag};
use twem_core::ring::Distribution;

const POOLS_YML: &str = include_str!("data/config/pools.yml");
const POOLS_TOML: &str = include_str!("data/config/pools.toml");
const EVERY_KEY_YML: &str = include_str!("data/config/every_key.yml");
const EVERY_KEY_TOML: &str = include_str!("data/config/every_key.toml");
const MANY_PROBLEMS_YML: &str = include_str!("data/config/many_problems.yml");

/// A valid one-pool config with `extra` (indented key lines) added.
fn pool_with(extra: &str) -> String {
    format!("alpha:\n  listen: 127.0.0.1:22121\n{extra}  servers:\n   - 127.0.0.1:6379:1\n")
}

/// The single problem of a config with exactly one thing wrong.
fn only_problem(yaml: &str) -> Problem {
    match Config::from_yaml(yaml) {
        Ok(config) => panic!("accepted {yaml:?} as {config:?}"),
        Err(mut err) => {
            assert_eq!(err.problems.len(), 1, "{err}");
            err.problems.remove(0)
        }
    }
}

fn accepted(yaml: &str) -> PoolConfig {
    match Config::from_yaml(yaml) {
        Ok(mut config) => config.pools.remove(0),
        Err(err) => panic!("refused {yaml:?}: {err}"),
    }
}

// ---- every rejection rule, with its message ----

// An unknown key is named, with the pool and the known keys.
#[test]
fn unknown_key() {
    let p = only_problem(&pool_with("  bogus: 1\n"));
    assert_eq!(p.pool.as_deref(), Some("alpha"));
    assert_eq!(p.key.as_deref(), Some("bogus"));
    assert_eq!(p.line, Some(3));
    assert!(
        p.to_string()
            .starts_with("pool \"alpha\": unknown key \"bogus\" (known keys: listen, hash, "),
        "{p}"
    );
}

// A key given twice is refused, pointing at the first.
#[test]
fn duplicate_key() {
    let p = only_problem(&pool_with("  hash: md5\n  hash: md5\n"));
    assert_eq!(p.key.as_deref(), Some("hash"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": duplicate key \"hash\" (first given on line 3)"
    );
}

// `servers` given twice is a duplicate too, not a concatenation.
#[test]
fn duplicate_servers_key() {
    let p = only_problem(&pool_with("  servers:\n   - 127.0.0.1:6380:1\n"));
    assert_eq!(p.key.as_deref(), Some("servers"));
    assert!(p.message.starts_with("duplicate key \"servers\""), "{p}");
}

// Two pools with one name are refused (YAML would silently keep the last).
#[test]
fn duplicate_pool_name() {
    let text = format!(
        "{}{}",
        pool_with(""),
        pool_with("").replace("22121", "22122")
    );
    let p = only_problem(&text);
    assert_eq!(p.pool.as_deref(), Some("alpha"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": duplicate pool name (first defined on line 1)"
    );
}

// Two pools may not listen on one address.
#[test]
fn duplicate_listen() {
    let text = format!(
        "{}{}",
        pool_with(""),
        pool_with("").replace("alpha", "beta")
    );
    let p = only_problem(&text);
    assert_eq!(p.pool.as_deref(), Some("beta"));
    assert_eq!(p.key.as_deref(), Some("listen"));
    assert_eq!(
        p.to_string(),
        "pool \"beta\": listen \"127.0.0.1:22121\" is also used by pool \"alpha\""
    );
}

// The same unix socket path in two pools clashes too, whatever the mode.
#[test]
fn duplicate_unix_listen() {
    let a = pool_with("").replace("127.0.0.1:22121", "/tmp/twem.sock 0666");
    let b = pool_with("")
        .replace("127.0.0.1:22121", "/tmp/twem.sock")
        .replace("alpha", "beta");
    let p = only_problem(&format!("{a}{b}"));
    assert_eq!(p.pool.as_deref(), Some("beta"));
    assert!(
        p.message
            .contains("\"/tmp/twem.sock\" is also used by pool \"alpha\""),
        "{p}"
    );
}

// listen is required.
#[test]
fn missing_listen() {
    let p = only_problem("alpha:\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert_eq!(p.key.as_deref(), Some("listen"));
    assert_eq!(p.to_string(), "pool \"alpha\": listen is missing");
}

// servers is required.
#[test]
fn missing_servers() {
    let p = only_problem("alpha:\n  listen: 127.0.0.1:22121\n");
    assert_eq!(p.key.as_deref(), Some("servers"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": servers is missing (a list of host:port:weight [name] entries)"
    );
}

// servers must not be empty, whether written `servers:` or `servers: []`.
#[test]
fn empty_servers() {
    for text in [
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n",
        "alpha:\n  listen: 127.0.0.1:22121\n  servers: []\n",
    ] {
        let p = only_problem(text);
        assert_eq!(p.key.as_deref(), Some("servers"));
        assert_eq!(
            p.to_string(),
            "pool \"alpha\": servers is empty; a pool needs at least one server"
        );
    }
}

// servers must be a list of strings.
#[test]
fn servers_of_the_wrong_shape() {
    let p = only_problem("alpha:\n  listen: 127.0.0.1:22121\n  servers: 127.0.0.1:6379:1\n");
    assert!(p.message.contains("must be a list"), "{p}");
    let p = only_problem("alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - a: b\n");
    assert_eq!(
        p.message,
        "servers entry 1 must be a host:port:weight [name] string, not a mapping"
    );
}

// Malformed server entries name the entry, its position and what is wrong.
#[test]
fn bad_server_entries() {
    let cases = [
        (
            "127.0.0.1:6379",
            "\"127.0.0.1:6379\" is not host:port:weight [name]",
        ),
        ("127.0.0.1", "\"127.0.0.1\" is not host:port:weight [name]"),
        ("127.0.0.1:x:1", "has an invalid port \"x\" (1..=65535)"),
        ("127.0.0.1:0:1", "has an invalid port \"0\""),
        ("127.0.0.1:65536:1", "has an invalid port \"65536\""),
        ("127.0.0.1:6379:w", "has an invalid weight \"w\""),
        ("127.0.0.1:6379:-1", "has an invalid weight \"-1\""),
        (
            "127.0.0.1:6379:1 a b",
            "a server name cannot contain spaces",
        ),
        ("127.0.0.1:6379:1  a", "a server name cannot contain spaces"),
        ("\"127.0.0.1:6379:1 \"", "has an empty name"),
        ("\":6379:1\"", "has no host"),
        (
            "/tmp/a:b.sock:1",
            "is not host:port:weight [name] or /path/to.sock:weight [name]",
        ),
    ];
    for (entry, want) in cases {
        let text = format!(
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 10.0.0.1:6379:1\n   - {entry}\n"
        );
        let p = only_problem(&text);
        assert_eq!(p.key.as_deref(), Some("servers"), "{entry}");
        assert_eq!(p.line, Some(5), "{entry}");
        assert!(p.message.starts_with("servers entry 2 \""), "{entry}: {p}");
        assert!(p.message.contains(want), "{entry}: {p}");
    }
}

// A zero weight is refused with its own message.
#[test]
fn zero_weight() {
    let p = only_problem("alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:0\n");
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": servers entry 1 \"127.0.0.1:6379:0\" has weight 0; weights must be at least 1"
    );
}

// Weights whose sum overflows the ring's 32-bit total are refused at load,
// so ring() cannot fail later.
#[test]
fn total_weight_too_large() {
    let p = only_problem(
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - a:1:2147483647\n   - b:1:2147483647\n   - c:1:2147483647\n",
    );
    assert_eq!(p.key.as_deref(), Some("servers"));
    assert!(p.message.starts_with("servers cannot form a ring:"), "{p}");
}

// An unknown hash lists every valid name, siphash included.
#[test]
fn bad_hash() {
    let p = only_problem(&pool_with("  hash: nosuchhash\n"));
    assert_eq!(p.key.as_deref(), Some("hash"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": hash \"nosuchhash\" is not one of one_at_a_time, md5, crc16, crc32, crc32a, \
         fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, hsieh, murmur, jenkins, siphash"
    );
    // Names are case-sensitive, as in nutcracker.
    assert!(only_problem(&pool_with("  hash: MD5\n"))
        .message
        .starts_with("hash \"MD5\" is not one of"));
}

// siphash is accepted as a twem-only hash.
#[test]
fn siphash_is_accepted() {
    assert_eq!(
        accepted(&pool_with("  hash: siphash\n")).hash,
        HashKind::Siphash
    );
}

// An unknown distribution lists the valid ones.
#[test]
fn bad_distribution() {
    let p = only_problem(&pool_with("  distribution: consistent\n"));
    assert_eq!(p.key.as_deref(), Some("distribution"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": distribution \"consistent\" is not one of ketama, modula, random"
    );
}

// hash_tag must be exactly two bytes; a two-byte UTF-8 character counts as
// two bytes, as in nutcracker.
#[test]
fn hash_tag_length() {
    for tag in ["\"{\"", "\"{}}\""] {
        let p = only_problem(&pool_with(&format!("  hash_tag: {tag}\n")));
        assert_eq!(p.key.as_deref(), Some("hash_tag"));
        assert!(
            p.message.ends_with("must be exactly 2 bytes, e.g. \"{}\""),
            "{p}"
        );
    }
    let pool = accepted(&pool_with("  hash_tag: \"é\"\n"));
    assert_eq!(pool.hash_tag, Some(HashTag::new(0xc3, 0xa9)));
}

// timeout (like every number) is decimal digits only.
#[test]
fn timeout_not_digits() {
    for value in ["1s", "-1", "+5", "0x10", "1.5", "1_000"] {
        let p = only_problem(&pool_with(&format!("  timeout: {value}\n")));
        assert_eq!(p.key.as_deref(), Some("timeout"));
        assert_eq!(
            p.to_string(),
            format!("pool \"alpha\": timeout \"{value}\" is not a number (decimal digits only)")
        );
    }
}

// Numbers beyond nutcracker's int are refused rather than wrapped.
#[test]
fn numbers_too_large() {
    let p = only_problem(&pool_with("  backlog: 2147483648\n"));
    assert_eq!(
        p.message,
        "backlog \"2147483648\" is too large (at most 2147483647)"
    );
    assert_eq!(
        accepted(&pool_with("  backlog: 2147483647\n")).backlog,
        2_147_483_647
    );
}

// timeout is milliseconds; 0 means no timeout, as nutcracker arms no timer.
#[test]
fn timeout_values() {
    assert_eq!(
        accepted(&pool_with("  timeout: 400\n")).timeout,
        Some(Duration::from_millis(400))
    );
    assert_eq!(accepted(&pool_with("  timeout: 0\n")).timeout, None);
}

// Booleans are exactly true/false by text: quoted "true" passes, YAML's
// other spellings do not (as nutcracker).
#[test]
fn redis_not_bool() {
    for value in ["True", "yes", "1", "on", "TRUE"] {
        let p = only_problem(&pool_with(&format!("  redis: {value}\n")));
        assert_eq!(p.key.as_deref(), Some("redis"));
        assert_eq!(
            p.to_string(),
            format!("pool \"alpha\": redis \"{value}\" is not true or false")
        );
    }
    assert!(accepted(&pool_with("  redis: \"true\"\n")).redis);
}

// redis_auth needs redis: true.
#[test]
fn redis_auth_without_redis() {
    let p = only_problem(&pool_with("  redis_auth: secret\n"));
    assert_eq!(p.key.as_deref(), Some("redis_auth"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": redis_auth is only valid for a redis pool (redis: true)"
    );
    let pool = accepted(&pool_with("  redis: true\n  redis_auth: secret\n"));
    assert_eq!(pool.redis_auth.as_deref(), Some("secret"));
}

// allow_flush (twem-only) is off by default, a boolean, and only for a
// redis pool: a memcached pool sends flush_all everywhere regardless.
#[test]
fn allow_flush() {
    assert!(!accepted(&pool_with("  redis: true\n")).allow_flush);
    assert!(accepted(&pool_with("  redis: true\n  allow_flush: true\n")).allow_flush);
    assert!(!accepted(&pool_with("  redis: true\n  allow_flush: false\n")).allow_flush);
    let p = only_problem(&pool_with("  allow_flush: true\n"));
    assert_eq!(p.key.as_deref(), Some("allow_flush"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": allow_flush is only valid for a redis pool (redis: true)"
    );
    let p = only_problem(&pool_with("  redis: true\n  allow_flush: yes\n"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": allow_flush \"yes\" is not true or false"
    );
}

// The tls_* keys (twem-only): off by default; which need which is checked
// here, the files themselves when a pool is built (twem_core::tls).
#[test]
fn tls_keys() {
    assert_eq!(accepted(&pool_with("")).tls, TlsConfig::default());
    let t = accepted(&pool_with("  tls_cert: /a.crt\n  tls_key: /a.key\n")).tls;
    assert!(t.listens() && !t.servers);
    let t = accepted(&pool_with(
        "  tls_servers: true\n  tls_server_name: 10.0.0.1\n",
    ))
    .tls;
    assert_eq!(t.server_name.as_deref(), Some("10.0.0.1"));
    let p = only_problem(&pool_with("  tls_cert: /a.crt\n"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": tls_cert needs tls_key (the certificate's private key)"
    );
    let p = only_problem(&pool_with("  tls_client_ca: /ca.crt\n"));
    assert_eq!(p.key.as_deref(), Some("tls_client_ca"));
    let p = only_problem(&pool_with("  tls_ca: /ca.crt\n"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": tls_ca needs tls_servers: true (it is about the TLS connections to the servers)"
    );
    let p = only_problem(&pool_with(
        "  tls_servers: true\n  tls_client_cert: /c.crt\n",
    ));
    assert_eq!(p.key.as_deref(), Some("tls_client_cert"));
    let p = only_problem(&pool_with(
        "  tls_servers: true\n  tls_server_name: \"not a name\"\n",
    ));
    assert_eq!(p.key.as_deref(), Some("tls_server_name"));
    let p = only_problem(&pool_with("  tls_servers: yes\n"));
    assert_eq!(p.key.as_deref(), Some("tls_servers"));
    let unix =
        "alpha:\n  listen: 127.0.0.1:22121\n  tls_servers: true\n  servers:\n   - /tmp/r.sock:1\n";
    let p = only_problem(unix);
    assert!(p.to_string().contains("needs tls_server_name"), "{p}");
}

// server_connections must be at least 1.
#[test]
fn server_connections_zero() {
    let p = only_problem(&pool_with("  server_connections: 0\n"));
    assert_eq!(p.key.as_deref(), Some("server_connections"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": server_connections must be at least 1"
    );
}

// server_connections has an upper bound (each is a descriptor and a
// backend client slot); the largest int used to pass and fail at start.
#[test]
fn server_connections_too_large() {
    let max = MAX_SERVER_CONNECTIONS;
    assert_eq!(
        accepted(&pool_with(&format!("  server_connections: {max}\n"))).server_connections,
        max
    );
    let p = only_problem(&pool_with("  server_connections: 2147483647\n"));
    assert_eq!(p.key.as_deref(), Some("server_connections"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": server_connections 2147483647 is too large (at most 1024 per server)"
    );
    let err = Config::from_toml(&format!(
        "[alpha]\nlisten = \"h:1\"\nserver_connections = {}\nservers = [\"h:2:1\"]\n",
        max + 1
    ))
    .unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].key.as_deref(), Some("server_connections"));
}

// Other counts may be 0, as nutcracker allows.
#[test]
fn zero_is_fine_elsewhere() {
    let pool = accepted(&pool_with(
        "  backlog: 0\n  server_failure_limit: 0\n  server_retry_timeout: 0\n  client_connections: 0\n",
    ));
    assert_eq!(pool.backlog, 0);
    assert_eq!(pool.server_failure_limit, 0);
    assert_eq!(pool.server_retry_timeout, Duration::ZERO);
}

// Two servers with the same identity are refused; names are the identity,
// so the same address with two names is fine.
#[test]
fn duplicate_server_names() {
    let p = only_problem(
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n   - 127.0.0.1:6379:2\n",
    );
    assert_eq!(p.key.as_deref(), Some("servers"));
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": servers entries 1 \"127.0.0.1:6379:1\" and 2 \"127.0.0.1:6379:2\" have the same \
         name \"127.0.0.1:6379\"; names must be unique (add a name after the weight)"
    );
    let p = only_problem(
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 10.0.0.1:6379:1 a\n   - 10.0.0.2:6379:1 a\n",
    );
    assert!(p.message.contains("have the same name \"a\""), "{p}");
    // Port 11211 drops out of the identity, so these two clash.
    let p = only_problem(
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 10.0.0.1:11211:1\n   - 10.0.0.1:11211:2\n",
    );
    assert!(p.message.contains("have the same name \"10.0.0.1\""), "{p}");
    let pool = accepted(
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1 a\n   - 127.0.0.1:6379:1 b\n",
    );
    assert_eq!(pool.servers.len(), 2);
}

// Malformed listen values say what is wrong.
#[test]
fn bad_listen() {
    let cases = [
        ("127.0.0.1", "listen \"127.0.0.1\" is not host:port or /path/to.sock [permissions]"),
        ("127.0.0.1:0", "listen \"127.0.0.1:0\" has an invalid port \"0\" (1..=65535)"),
        ("127.0.0.1:65536", "listen \"127.0.0.1:65536\" has an invalid port \"65536\" (1..=65535)"),
        ("127.0.0.1:http", "listen \"127.0.0.1:http\" has an invalid port \"http\" (1..=65535)"),
        ("\":22121\"", "listen \":22121\" has no host (use 0.0.0.0 for every address)"),
        (
            "/tmp/x.sock 0888",
            "listen \"/tmp/x.sock 0888\" has invalid permissions \"0888\" (octal digits, at most 0777)",
        ),
        ("/tmp/x.sock 01777", "has invalid permissions \"01777\""),
        ("\"/tmp/x.sock \"", "has invalid permissions \"\""),
        ("relative.sock", "is not host:port or /path/to.sock"),
    ];
    for (value, want) in cases {
        let p = only_problem(&pool_with("").replace("127.0.0.1:22121", value));
        assert_eq!(p.key.as_deref(), Some("listen"), "{value}");
        assert!(p.message.contains(want), "{value}: {p}");
    }
}

// Values of the wrong shape or empty are refused by key.
#[test]
fn wrong_shapes_and_empty_values() {
    let p = only_problem(&pool_with("  hash: [md5]\n"));
    assert_eq!(p.message, "hash must be a single value, not a list");
    let p = only_problem(&pool_with("  hash:\n"));
    assert_eq!(p.message, "hash has no value");
    let p = only_problem("alpha: 1\n");
    assert_eq!(
        p.to_string(),
        "pool \"alpha\": must be a mapping of keys to values, not a single value"
    );
    let p = only_problem("- alpha\n");
    assert_eq!(
        p.to_string(),
        "the top level must map pool names to pools, not be a list"
    );
}

// A file with no pools is refused.
#[test]
fn no_pools() {
    for text in ["", "# only a comment\n", "---\n", "~\n"] {
        let p = only_problem(text);
        assert_eq!(p.pool, None);
        assert_eq!(
            p.to_string(),
            "no pools defined: the file must map pool names to pools",
            "{text:?}"
        );
    }
    assert_eq!(
        Config::from_toml("").unwrap_err().to_string(),
        "no pools defined: the file must map pool names to pools"
    );
}

// YAML syntax errors name the line and column.
#[test]
fn invalid_yaml_syntax_has_line() {
    let p = only_problem("alpha:\n  listen: 127.0.0.1:22121\n  servers: [\n   - a\n  hash: md5\n");
    assert_eq!(p.pool, None);
    assert!(p.line.is_some());
    assert!(p.message.starts_with("invalid YAML at line "), "{p}");
    let p = only_problem("alpha:\n  listen: 127.0.0.1:22121\n   hash: md5\n");
    assert_eq!(p.line, Some(3), "{p}");
    assert!(
        p.message.starts_with("invalid YAML at line 3 column "),
        "{p}"
    );
}

// TOML syntax errors name the line too.
#[test]
fn invalid_toml_syntax_has_line() {
    let err =
        Config::from_toml("[alpha]\nlisten = \"127.0.0.1:22121\"\nservers = [\n").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(
        err.problems[0].message.starts_with("invalid TOML at line "),
        "{err}"
    );
}

// Every problem in a file is reported at once, each with its pool and key,
// in file order within a pool.
#[test]
fn several_problems_at_once() {
    let err = Config::from_yaml(MANY_PROBLEMS_YML).unwrap_err();
    let lines: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
    let want = [
        "pool \"alpha\": hash \"nosuchhash\" is not one of one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, \
         fnv1a_64, fnv1_32, fnv1a_32, hsieh, murmur, jenkins, siphash",
        "pool \"alpha\": timeout \"1s\" is not a number (decimal digits only)",
        "pool \"alpha\": redis \"yes\" is not true or false",
        "pool \"alpha\": unknown key \"bogus\" (known keys: listen, hash, hash_tag, distribution, timeout, \
         backlog, client_connections, redis, redis_auth, redis_db, preconnect, auto_eject_hosts, \
         server_connections, pinned_connections, allow_flush, tls_cert, tls_key, tls_client_ca, tls_servers, tls_ca, tls_server_name, tls_client_cert, tls_client_key, server_retry_timeout, server_failure_limit, tcpkeepalive, reuseport, sentinels, sentinel_auth, read_from, replicas, cluster, cluster_refresh, cluster_max_nodes, servers)",
        "pool \"alpha\": servers entry 2 \"127.0.0.1:6380:0\" has weight 0; weights must be at least 1",
        "pool \"beta\": listen is missing",
        "pool \"beta\": hash_tag \"{\" must be exactly 2 bytes, e.g. \"{}\"",
        "pool \"beta\": server_connections must be at least 1",
        "pool \"beta\": servers is empty; a pool needs at least one server",
        "pool \"gamma\": listen \"127.0.0.1:22121\" is also used by pool \"alpha\"",
        "pool \"alpha\": duplicate pool name (first defined on line 1)",
    ];
    assert_eq!(lines, want);
    // Display is one line per problem.
    assert_eq!(err.to_string(), want.join("\n"));
}

// ---- what is accepted ----

// Every default, checked against both the named constant and the value
// NUTCRACKER.md documents.
#[test]
fn every_default() {
    let pool = accepted(&pool_with(""));
    assert_eq!(pool.name, "alpha");
    assert_eq!(pool.hash, DEFAULT_HASH);
    assert_eq!(pool.hash, HashKind::Fnv1a_64);
    assert_eq!(pool.hash_tag, None);
    assert_eq!(pool.distribution, DEFAULT_DISTRIBUTION);
    assert_eq!(pool.distribution, Distribution::Ketama);
    assert_eq!(pool.timeout, DEFAULT_TIMEOUT);
    assert_eq!(pool.timeout, None);
    assert_eq!(pool.backlog, DEFAULT_BACKLOG);
    assert_eq!(pool.backlog, 512);
    assert_eq!(pool.client_connections, DEFAULT_CLIENT_CONNECTIONS);
    assert_eq!(pool.client_connections, 0);
    assert_eq!(pool.redis, DEFAULT_REDIS);
    assert!(!pool.redis);
    assert_eq!(pool.redis_auth, None);
    assert_eq!(pool.redis_db, DEFAULT_REDIS_DB);
    assert_eq!(pool.redis_db, 0);
    assert_eq!(pool.preconnect, DEFAULT_PRECONNECT);
    assert!(!pool.preconnect);
    assert_eq!(pool.auto_eject_hosts, DEFAULT_AUTO_EJECT_HOSTS);
    assert!(!pool.auto_eject_hosts);
    assert_eq!(pool.server_connections, DEFAULT_SERVER_CONNECTIONS);
    assert_eq!(pool.server_connections, 1);
    assert_eq!(pool.server_retry_timeout, DEFAULT_SERVER_RETRY_TIMEOUT);
    assert_eq!(pool.server_retry_timeout, Duration::from_millis(30_000));
    assert_eq!(pool.server_failure_limit, DEFAULT_SERVER_FAILURE_LIMIT);
    assert_eq!(pool.server_failure_limit, 2);
    assert_eq!(pool.tcpkeepalive, DEFAULT_TCPKEEPALIVE);
    assert!(!pool.tcpkeepalive);
    assert_eq!(pool.reuseport, DEFAULT_REUSEPORT);
    assert!(!pool.reuseport);
    // PoolConfig::new gives the same defaults.
    assert_eq!(
        PoolConfig::new("alpha", pool.listen.clone(), pool.servers.clone()),
        pool
    );
}

// Every key set to a non-default value lands in its field.
#[test]
fn every_key_set() {
    let config = Config::from_yaml(EVERY_KEY_YML).unwrap();
    let pool = config.pool("alpha").unwrap();
    let want = PoolConfig {
        name: "alpha".into(),
        listen: Listen::Tcp {
            host: "0.0.0.0".into(),
            port: 22121,
        },
        hash: HashKind::Murmur,
        hash_tag: Some(HashTag::new(b'{', b'}')),
        distribution: Distribution::Modula,
        timeout: Some(Duration::from_millis(400)),
        backlog: 1024,
        client_connections: 100,
        redis: true,
        redis_auth: Some("s3cret".into()),
        redis_db: 3,
        preconnect: true,
        auto_eject_hosts: true,
        server_connections: 4,
        pinned_connections: 8,
        allow_flush: true,
        tls: TlsConfig {
            cert: Some("/etc/twem/proxy.crt".into()),
            key: Some("/etc/twem/proxy.key".into()),
            client_ca: Some("/etc/twem/clients-ca.crt".into()),
            servers: true,
            ca: Some("/etc/twem/redis-ca.crt".into()),
            server_name: Some("redis.internal".into()),
            client_cert: Some("/etc/twem/twem-client.crt".into()),
            client_key: Some("/etc/twem/twem-client.key".into()),
        },
        server_retry_timeout: Duration::from_millis(2000),
        server_failure_limit: 5,
        tcpkeepalive: true,
        reuseport: true,
        sentinel: None,
        read_from: twem_core::config::ReadFrom::Master,
        replicas: vec![],
        servers: vec![
            ServerConfig {
                addr: ServerAddr::Tcp {
                    host: "127.0.0.1".into(),
                    port: 6379,
                },
                weight: 1,
                name: Some("server1".into()),
            },
            ServerConfig {
                addr: ServerAddr::Unix {
                    path: PathBuf::from("/var/run/redis.sock"),
                },
                weight: 2,
                name: None,
            },
        ],
        cluster: None,
    };
    assert_eq!(pool, &want);
    assert_eq!(Config::from_toml(EVERY_KEY_TOML).unwrap(), config);
}

// A unix listen socket with permissions, and without.
#[test]
fn unix_listen_with_permissions() {
    let pool = accepted(&pool_with("").replace("127.0.0.1:22121", "/tmp/twem.sock 0666"));
    assert_eq!(
        pool.listen,
        Listen::Unix {
            path: PathBuf::from("/tmp/twem.sock"),
            mode: Some(0o666),
        }
    );
    assert_eq!(pool.listen.to_string(), "/tmp/twem.sock 0666");
    // nutcracker takes the permissions after the last space: paths may have spaces.
    let pool = accepted(&pool_with("").replace("127.0.0.1:22121", "/tmp/my dir/twem.sock 600"));
    assert_eq!(
        pool.listen,
        Listen::Unix {
            path: PathBuf::from("/tmp/my dir/twem.sock"),
            mode: Some(0o600),
        }
    );
    let pool = accepted(&pool_with("").replace("127.0.0.1:22121", "/tmp/twem.sock"));
    assert_eq!(
        pool.listen,
        Listen::Unix {
            path: PathBuf::from("/tmp/twem.sock"),
            mode: None,
        }
    );
}

// IPv6 addresses split at the last colon, as nutcracker does.
#[test]
fn ipv6_hosts() {
    let pool = accepted(
        "alpha:\n  listen: \"::1:22121\"\n  servers:\n   - ::1:6379:1\n   - fe80::2:11211:1\n",
    );
    assert_eq!(
        pool.listen,
        Listen::Tcp {
            host: "::1".into(),
            port: 22121,
        }
    );
    assert_eq!(pool.servers[0].name(), "::1:6379");
    assert_eq!(pool.servers[1].name(), "fe80::2");
}

// Flow style and an explicit document start are plain YAML and accepted.
#[test]
fn flow_style_and_document_start() {
    let flow = "---\nalpha: {listen: 127.0.0.1:22121, servers: [127.0.0.1:6379:1]}\n";
    assert_eq!(
        Config::from_yaml(flow).unwrap(),
        Config::from_yaml(&pool_with("")).unwrap()
    );
}

// The 30 golden pools parse, in file order, with the right servers.
#[test]
fn golden_pools_parse() {
    let config = Config::from_yaml(POOLS_YML).unwrap();
    assert_eq!(config.pools.len(), 30);
    assert_eq!(config.pools[0].name, "p00_one_at_a_time_ketama");
    assert_eq!(config.pools[29].name, "p95_weights");
    let unix = config.pool("p93_unix").unwrap();
    assert_eq!(unix.hash, HashKind::Hsieh);
    assert!(unix.auto_eject_hosts);
    let names: Vec<String> = unix.servers.iter().map(ServerConfig::name).collect();
    assert_eq!(
        names,
        [
            "/var/run/redis/r0.sock:",
            "/var/run/redis/r1.sock:",
            "127.0.0.1",
            "named"
        ]
    );
    assert_eq!(config.pool("p92_hundred").unwrap().servers.len(), 100);
    assert_eq!(
        config
            .pool("p95_weights")
            .unwrap()
            .server("gamma")
            .unwrap()
            .weight,
        13
    );
}

// The same 30 pools written in TOML give an equal Config.
#[test]
fn yaml_and_toml_agree() {
    let yaml = Config::from_yaml(POOLS_YML).unwrap();
    let toml = Config::from_toml(POOLS_TOML).unwrap();
    assert_eq!(yaml, toml);
    assert_eq!(Config::parse(POOLS_TOML, Format::Toml).unwrap(), yaml);
}

// sorted_servers is the Ring's order, for every golden pool.
#[test]
fn sorted_servers_match_the_ring() {
    let config = Config::from_yaml(POOLS_YML).unwrap();
    for pool in &config.pools {
        let ring = pool.ring().unwrap();
        let ring_names: Vec<&str> = ring.servers().iter().map(|s| s.name.as_str()).collect();
        let sorted: Vec<String> = pool.sorted_servers().iter().map(|s| s.name()).collect();
        assert_eq!(ring_names, sorted, "pool {}", pool.name);
        let weights: Vec<u32> = ring.servers().iter().map(|s| s.weight).collect();
        let sorted_weights: Vec<u32> = pool.sorted_servers().iter().map(|s| s.weight).collect();
        assert_eq!(weights, sorted_weights, "pool {}", pool.name);
    }
}

// Pools read through the config place every golden key where nutcracker
// did: names, weights, hashes, distributions and tags all came through.
#[test]
fn golden_placement_through_the_config() {
    const PLACEMENT: &str = include_str!("data/placement.tsv");
    let config = Config::from_yaml(POOLS_YML).unwrap();
    let rings: Vec<(&str, twem_core::ring::Ring)> = config
        .pools
        .iter()
        .map(|pool| (pool.name.as_str(), pool.ring().unwrap()))
        .collect();
    let mut checked = 0;
    for line in PLACEMENT
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let [pool, key_hex, want] = cols[..] else {
            panic!("malformed row {line:?}")
        };
        let key: Vec<u8> = (0..key_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).unwrap())
            .collect();
        let ring = &rings.iter().find(|(name, _)| *name == pool).unwrap().1;
        assert_eq!(
            ring.locate_name(&key),
            Some(want),
            "pool {pool} key {key_hex}"
        );
        checked += 1;
    }
    assert_eq!(checked, 30 * 1000);
}

// Format follows the file extension.
#[test]
fn format_from_path() {
    assert_eq!(
        Format::from_path(Path::new("conf/nutcracker.yml")),
        Format::Yaml
    );
    assert_eq!(
        Format::from_path(Path::new("conf/nutcracker.yaml")),
        Format::Yaml
    );
    assert_eq!(Format::from_path(Path::new("twem.toml")), Format::Toml);
    assert_eq!(Format::from_path(Path::new("TWEM.TOML")), Format::Toml);
    assert_eq!(Format::from_path(Path::new("nutcracker")), Format::Yaml);
}

// Listen and server entries print as written and parse back.
#[test]
fn display_round_trips() {
    for text in [
        "127.0.0.1:22121",
        "::1:22121",
        "/tmp/twem.sock",
        "/tmp/twem.sock 0600",
    ] {
        let listen: Listen = text.parse().unwrap();
        assert_eq!(listen.to_string(), text);
    }
    for text in [
        "127.0.0.1:6379:1",
        "127.0.0.1:6379:10 cache-a",
        "/tmp/r.sock:2",
        "/tmp/r.sock:1 r",
    ] {
        let server: ServerConfig = text.parse().unwrap();
        assert_eq!(server.to_string(), text);
    }
    let err = "127.0.0.1:6379:0".parse::<ServerConfig>().unwrap_err();
    assert_eq!(err.problems[0].key.as_deref(), Some("servers"));
}

// ---- never panic ----

/// Pieces of nutcracker.yml, so random strings of them reach deep into
/// validation instead of failing at the first byte.
const YAMLISH_PIECES: &[&str] = &[
    "alpha:",
    "beta:",
    "\n",
    "\n  ",
    "\n   - ",
    " ",
    "listen: ",
    "servers:",
    "hash: ",
    "hash_tag: ",
    "timeout: ",
    "redis: ",
    "redis_auth: ",
    "server_connections: ",
    "distribution: ",
    "127.0.0.1:22121",
    "127.0.0.1:6379:1",
    "/tmp/x.sock 0666",
    "/tmp/x.sock:1 n",
    "::1:6379:0",
    "true",
    "md5",
    "\"{}\"",
    "0",
    "4294967296",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "---\n",
    "'",
    "\"",
    "#",
    "\t",
    "é",
    "\u{0}",
];

/// Random strings of [`YAMLISH_PIECES`].
fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(YAMLISH_PIECES), 0..80)
        .prop_map(|pieces| pieces.concat())
}

/// The same idea for TOML.
const TOMLISH_PIECES: &[&str] = &[
    "[alpha]",
    "[beta]",
    "\n",
    "listen = ",
    "servers = ",
    "hash = ",
    "timeout = ",
    "redis = ",
    "\"127.0.0.1:22121\"",
    "\"127.0.0.1:6379:1\"",
    "true",
    "0",
    "-1",
    "1.5",
    "1979-05-27",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "a.b = 1",
];

/// Random strings of [`TOMLISH_PIECES`].
fn tomlish() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOMLISH_PIECES), 0..80)
        .prop_map(|pieces| pieces.concat())
}

/// A valid config with a few bytes changed, to probe just past the happy
/// path.
fn mutated() -> impl Strategy<Value = String> {
    let base = format!(
        "{}{}",
        POOLS_YML.get(..600).unwrap_or(POOLS_YML),
        pool_with("  redis: true\n")
    );
    (
        Just(base),
        prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0..3u8), 1..6),
    )
        .prop_map(|(mut text, edits)| {
            for (index, ch, op) in edits {
                let mut at = index.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                match op {
                    0 => text.insert(at, ch),
                    1 if at < text.len() => {
                        text.remove(at);
                    }
                    _ => text.truncate(at),
                }
            }
            text
        })
}

/// Parsing must return, never panic; when it fails, every problem has a
/// message and the error displays one line per problem.
fn check(text: &str) {
    for format in [Format::Yaml, Format::Toml] {
        match Config::parse(text, format) {
            Ok(config) => {
                for pool in &config.pools {
                    assert!(
                        pool.ring().is_ok(),
                        "validated pool {} has no ring",
                        pool.name
                    );
                }
            }
            Err(err) => {
                assert!(!err.problems.is_empty());
                assert!(err.problems.iter().all(|p| !p.message.is_empty()));
                assert!(err.to_string().lines().count() >= err.problems.len());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    // Random bytes never panic either parser.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    // Random nutcracker-like YAML never panics.
    #[test]
    fn random_yamlish_never_panics(text in yamlish()) {
        check(&text);
    }

    // Random TOML-like text never panics.
    #[test]
    fn random_tomlish_never_panics(text in tomlish()) {
        check(&text);
    }

    // Small edits to a valid config never panic.
    #[test]
    fn mutated_config_never_panics(text in mutated()) {
        check(&text);
    }
}

// ---- cluster pools ----

// `cluster: true` with its keys lands in `PoolConfig::cluster`; defaults
// when only `cluster` is given; absent for other pools.
#[test]
fn cluster_keys() {
    let p = accepted(&pool_with(
        "  redis: true\n  cluster: true\n  cluster_refresh: 2500\n  cluster_max_nodes: 12\n  hash_tag: \"{}\"\n  read_from: prefer-replica\n",
    ));
    assert_eq!(
        p.cluster,
        Some(ClusterConfig {
            refresh: Duration::from_millis(2500),
            max_nodes: 12,
        })
    );
    assert_eq!(p.read_from, ReadFrom::PreferReplica);
    let p = accepted(&pool_with("  redis: true\n  cluster: true\n"));
    assert_eq!(
        p.cluster,
        Some(ClusterConfig {
            refresh: DEFAULT_CLUSTER_REFRESH,
            max_nodes: DEFAULT_CLUSTER_MAX_NODES,
        })
    );
    assert_eq!(p.read_from, ReadFrom::Master);
    assert_eq!(accepted(&pool_with("  redis: true\n")).cluster, None);
    assert_eq!(
        accepted(&pool_with("  redis: true\n  cluster: false\n")).cluster,
        None
    );
}

// Keys that a cluster pool would ignore or that contradict it are refused,
// each naming the pool and the key.
#[test]
fn cluster_refusals() {
    let cases: [(&str, &str, &str); 13] = [
        (
            "  redis: true\n  cluster: true\n  read_from: slave\n",
            "read_from",
            "is not one of master, prefer-replica, replica",
        ),
        (
            "  read_from: replica\n",
            "read_from",
            "only valid for a redis pool",
        ),
        (
            "  redis: true\n  cluster: true\n  sentinels:\n   - 127.0.0.1:26379\n",
            "sentinels",
            "do not go together",
        ),
        (
            "  redis: true\n  cluster: true\n  read_from: replica\n  replicas:\n   - 127.0.0.1:6379 127.0.0.1:7001\n",
            "replicas",
            "learns its replicas from the cluster",
        ),
        (
            "  cluster: true\n",
            "cluster",
            "only valid for a redis pool",
        ),
        (
            "  redis: true\n  cluster: yes\n",
            "cluster",
            "is not true or false",
        ),
        (
            "  redis: true\n  cluster: true\n  hash: murmur\n",
            "hash",
            "placed by the cluster's hash slots",
        ),
        (
            "  redis: true\n  cluster: true\n  distribution: modula\n",
            "distribution",
            "placed by the cluster's hash slots",
        ),
        (
            "  redis: true\n  cluster: true\n  hash_tag: \"[]\"\n",
            "hash_tag",
            "Redis Cluster's own",
        ),
        (
            "  redis: true\n  cluster: true\n  auto_eject_hosts: true\n",
            "auto_eject_hosts",
            "fails nodes over itself",
        ),
        (
            "  redis: true\n  cluster: true\n  redis_db: 2\n",
            "redis_db",
            "only database 0",
        ),
        (
            "  redis: true\n  cluster_refresh: 100\n",
            "cluster_refresh",
            "only valid for a cluster pool",
        ),
        (
            "  redis: true\n  cluster: true\n  cluster_max_nodes: 0\n",
            "cluster_max_nodes",
            "at least 1",
        ),
    ];
    for (extra, key, words) in cases {
        let p = only_problem(&pool_with(extra));
        assert_eq!(p.pool.as_deref(), Some("alpha"), "{extra}");
        assert_eq!(p.key.as_deref(), Some(key), "{extra}: {p}");
        assert!(p.to_string().contains(words), "{extra}: {p}");
    }
    let p = only_problem(&pool_with(
        "  redis: true\n  cluster: true\n  cluster_refresh: 0\n",
    ));
    assert_eq!(p.key.as_deref(), Some("cluster_refresh"));
    let p = only_problem(
        "alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n  cluster: true\n  servers:\n   - /tmp/redis.sock:1\n",
    );
    assert_eq!(p.key.as_deref(), Some("servers"));
    assert!(p.to_string().contains("not a unix socket"), "{p}");
}
