//! The proxy's own `redis_auth` against a backend that refuses it: as in
//! nutcracker (its own tests/test_redis/test_auth.py), the connection is kept
//! and every command gets the backend's own answer, `-NOAUTH Authentication
//! required.`, never `-ERR Invalid argument`; the refusal is logged.

use twem_tests::{Client, ProxyProc, Redis, Twem};

/// The password the backends in these tests require.
const PASSWORD: &str = "hellopasswd";

/// A proxy for one pool over `r` with `settings`, and a client of it.
fn proxy(r: &Redis, settings: &str) -> (ProxyProc, Client) {
    let (proc, port) = Twem::start(
        "p",
        &format!("  redis: true\n{settings}"),
        &[(r.addr(), "a")],
    )
    .parts();
    (proc, Client::connect(port))
}

/// A wrong `redis_auth`: every command the backend should run gets the
/// backend's own `NOAUTH` (nutcracker's test_badpass_on_proxy), and the
/// server, up and answering, is not ejected for it (ejecting would only
/// hide the error).
#[test]
fn wrong_redis_auth_answers_the_backends_error() {
    let r = Redis::start_with(&["--requirepass", PASSWORD]);
    let (_proxy, mut c) = proxy(
        &r,
        "  redis_auth: badpasswd\n  auto_eject_hosts: true\n  server_failure_limit: 1\n",
    );
    // The proxy asks its clients for its own redis_auth first, as nutcracker.
    assert_eq!(c.cmds("GET k"), b"-NOAUTH Authentication required\r\n");
    assert_eq!(c.cmds("AUTH badpasswd"), b"+OK\r\n");
    assert_eq!(c.cmds("PING"), b"+PONG\r\n");
    let wrongpass: &[u8] = b"-NOAUTH Authentication required.\r\n";
    for _ in 0..3 {
        assert_eq!(c.cmds("GET k"), wrongpass);
        assert_eq!(c.cmds("SET k v"), wrongpass);
    }
    // A split command answers it too, once.
    assert_eq!(c.cmds("MGET k1 k2 k3"), wrongpass);
    assert_eq!(c.cmds("DEL k1 k2"), wrongpass);
}

/// No `redis_auth` for a backend that requires a password: the backend's
/// own `NOAUTH`, as with nutcracker.
#[test]
fn missing_redis_auth_answers_noauth() {
    let r = Redis::start_with(&["--requirepass", PASSWORD]);
    let (_proxy, mut c) = proxy(&r, "");
    let noauth: &[u8] = b"-NOAUTH Authentication required.\r\n";
    assert_eq!(c.cmds("GET k"), noauth);
    assert_eq!(c.cmds("SET k v"), noauth);
    assert_eq!(c.cmds("MGET k1 k2"), noauth);
}

/// A `redis_auth` for a backend without a password: the backend's refusal
/// of the AUTH is logged and commands run, as with nutcracker.
#[test]
fn redis_auth_for_a_backend_without_password() {
    let r = Redis::start();
    let (proxy, mut c) = proxy(&r, "  redis_auth: sekret\n");
    assert_eq!(c.cmds("AUTH sekret"), b"+OK\r\n");
    assert_eq!(c.cmds("SET k v"), b"+OK\r\n");
    assert_eq!(c.cmds("GET k"), b"$1\r\nv\r\n");
    let log = proxy.log();
    assert!(
        log.contains("backend refused redis_auth") && log.contains("called without any password"),
        "{log}"
    );
}

/// The right `redis_auth` still works.
#[test]
fn right_redis_auth_serves() {
    let r = Redis::start_with(&["--requirepass", PASSWORD]);
    let (_proxy, mut c) = proxy(&r, &format!("  redis_auth: {PASSWORD}\n"));
    assert_eq!(c.cmds(&format!("AUTH {PASSWORD}")), b"+OK\r\n");
    assert_eq!(c.cmds("SET k v"), b"+OK\r\n");
    assert_eq!(c.cmds("GET k"), b"$1\r\nv\r\n");
}
