//! Foreign protocols and smuggled payloads on the proxy ports (issue #11,
//! items 1 and 4): an HTTP request sent to a Redis or memcached port (what a
//! web page can make a browser do) must close the connection without running
//! the commands in its body; the data block of a memcached meta `ms` must be
//! taken as data by its length, never run as a command; a memcached binary-protocol
//! request closes the connection. Each case is checked on the real backend,
//! behind the proxy's back, and the proxy must log a warning once per
//! connection and count it in `twem_pool_client_foreign_protocol_total`.

use std::time::{Duration, Instant};

use twem_tests::{free_port, wait_for_port, Client, Memcached, ProxyProc, Redis};

/// The request of the issue, byte for byte as
/// `printf '...' | socat - TCP:127.0.0.1:PORT` sends it.
const HTTP_SET: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\nSET pwned 1\r\n";

/// The words of the proxy's warning, one per closed connection.
const WARNING: &str = "closing a client that speaks another protocol";

/// A proxy with one pool named `p` in front of `backend` (`kind` is the
/// pool's protocol line), with Prometheus metrics on; (proxy, port, metrics
/// port).
fn proxy(kind: &str, backend: &str) -> (ProxyProc, u16, u16) {
    let port = free_port();
    let mport = free_port();
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n{kind}  timeout: 2000\n  servers:\n   - {backend}:1 b\n"
    );
    let addr = format!("127.0.0.1:{mport}");
    let p = ProxyProc::twem_capture(&yaml, port, &["--metrics-addr", &addr]);
    wait_for_port(mport, Duration::from_secs(5));
    (p, port, mport)
}

fn redis_proxy(backend: &Redis) -> (ProxyProc, u16, u16) {
    proxy("  redis: true\n", &backend.addr())
}

fn mc_proxy(backend: &Memcached) -> (ProxyProc, u16, u16) {
    proxy("", &backend.addr())
}

/// A client straight to `backend`, which now holds the key `victim` (`v`)
/// that a smuggled command would delete.
fn with_victim(backend: &Memcached) -> Client {
    let mut direct = backend.client();
    assert_eq!(direct.mc(b"set victim 0 0 1\r\nv\r\n"), b"STORED\r\n");
    direct
}

/// Asserts that the proxy answered nothing (it closed silently).
fn assert_unanswered(answered: &[u8]) {
    assert!(
        answered.is_empty(),
        "the proxy answered {:?}",
        String::from_utf8_lossy(answered)
    );
}

/// Sends `payload` as socat does (all of it, then end of input) and returns
/// what the proxy answered before closing; panics if it did not close.
fn send_and_expect_close(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut c = Client::connect(port);
    c.send(payload);
    let _ = c.sock.shutdown(std::net::Shutdown::Write);
    assert!(c.is_closed(), "the proxy kept the connection open");
    c.pending().to_vec()
}

/// The value of `twem_pool_client_foreign_protocol_total` for pool `p`,
/// waiting up to 5 s for it to reach `want` (metrics may be cached for a
/// refresh interval).
fn foreign_counter(mport: u16, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = twem_tests::scrape_metrics(mport);
        let v = text
            .lines()
            .find(|l| l.starts_with("twem_pool_client_foreign_protocol_total{pool=\"p\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if v >= want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many warning lines the proxy logged, waiting up to 5 s for `want`.
fn warnings(p: &ProxyProc, want: usize) -> (usize, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = p.log();
        let n = log.matches(WARNING).count();
        if n >= want || Instant::now() > deadline {
            // A moment more, so a duplicate line would be seen too.
            std::thread::sleep(Duration::from_millis(200));
            let log = p.log();
            return (log.matches(WARNING).count(), log);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The issue's `POST` to the Redis port: closed with no reply, `pwned` not
/// set on the backend, one warning, counted. A second connection sending
/// `Host:` as a RESP array adds one warning and one count: the warning is
/// per connection, though the first request held both a POST and a Host:
/// line. Other clients are served throughout.
#[test]
fn http_post_to_redis_port_runs_nothing() {
    let backend = Redis::start();
    let (mut p, port, mport) = redis_proxy(&backend);

    let answered = send_and_expect_close(port, HTTP_SET);
    let mut direct = backend.client();
    assert_eq!(direct.cmd(&[b"GET", b"pwned"]), b"$-1\r\n", "the body ran");
    assert_unanswered(&answered);
    let (n, log) = warnings(&p, 1);
    assert_eq!(n, 1, "one warning per connection:\n{log}");
    assert!(log.contains("WARN"), "logged at warning level:\n{log}");
    assert!(
        log.contains("POST"),
        "the warning says what was seen:\n{log}"
    );
    assert_eq!(foreign_counter(mport, 1), 1);

    // The RESP array form of `Host:`, then a SET.
    let mut payload = twem_tests::resp_cmd(&[b"Host:", b"x"]);
    payload.extend(twem_tests::resp_cmd(&[b"SET", b"pwned", b"2"]));
    assert!(send_and_expect_close(port, &payload).is_empty());
    assert_eq!(direct.cmd(&[b"GET", b"pwned"]), b"$-1\r\n", "the SET ran");
    assert_eq!(warnings(&p, 2).0, 2);
    assert_eq!(foreign_counter(mport, 2), 2);

    // An inline HTTP GET request line is enough.
    assert!(send_and_expect_close(port, b"GET / HTTP/1.1\r\nSET pwned 3\r\n").is_empty());
    assert_eq!(direct.cmd(&[b"GET", b"pwned"]), b"$-1\r\n", "the SET ran");
    assert_eq!(foreign_counter(mport, 3), 3);

    let mut c = Client::connect(port);
    assert_eq!(c.cmd(&[b"SET", b"ok", b"1"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"GET", b"/index.html"]), b"$-1\r\n");
    assert!(p.proc.is_running());
}

/// The same attack on a memcached port, with a `set` in the body: closed
/// with no reply, `pwned` not stored on the backend, one warning per
/// connection, counted; for a POST and for a GET request.
#[test]
fn http_request_to_memcached_port_runs_nothing() {
    let backend = Memcached::start();
    let (mut p, port, mport) = mc_proxy(&backend);
    let post: &[u8] =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 19\r\n\r\nset pwned 0 0 1\r\n1\r\n";
    let get: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nset pwned 0 0 1\r\n1\r\n";
    let mut direct = backend.client();
    for (i, payload) in [post, get].into_iter().enumerate() {
        let answered = send_and_expect_close(port, payload);
        assert_eq!(direct.mc(b"get pwned\r\n"), b"END\r\n", "the body ran");
        assert_unanswered(&answered);
        let (n, log) = warnings(&p, i + 1);
        assert_eq!(n, i + 1, "one warning per connection:\n{log}");
        assert_eq!(foreign_counter(mport, i as u64 + 1), i as u64 + 1);
    }
    let mut c = Client::connect(port);
    assert_eq!(c.mc(b"set ok 0 0 1\r\n1\r\n"), b"STORED\r\n");
    assert!(p.proc.is_running());
}

/// The smuggling case: the data block of `ms k 13` holds
/// `delete victim`. The proxy takes the block by its length and stores it
/// as `k`'s value (`HD`), and answers the next command; `victim` is still on
/// the backend. An `ms` whose length cannot be read closes the connection
/// before its data is read as a command.
#[test]
fn ms_data_block_is_not_run_as_a_command() {
    let backend = Memcached::start();
    let (_p, port, _) = mc_proxy(&backend);
    let mut direct = with_victim(&backend);

    let mut c = Client::connect(port);
    c.send(b"ms k 13\r\ndelete victim\r\n");
    let first = c.read_line();
    // Whatever the proxy answered, the victim must still be there; read
    // after the reply so that a forwarded delete would have happened.
    let version = c.mc(b"version\r\n");
    assert_eq!(
        direct.mc(b"get victim\r\n"),
        b"VALUE victim 0 1\r\nv\r\nEND\r\n",
        "the data block ran as a command"
    );
    assert_eq!(first, b"HD\r\n");
    assert_eq!(
        direct.mc(b"get k\r\n"),
        b"VALUE k 0 13\r\ndelete victim\r\nEND\r\n"
    );
    assert!(version.starts_with(b"VERSION "), "{version:?}");
    // Split across reads, the block is still taken by its length.
    c.send(b"ms k 13\r\ndele");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"te victim\r\nget victim\r\n");
    assert_eq!(c.read_line(), b"HD\r\n");
    assert_eq!(c.read_mc(true), b"VALUE victim 0 1\r\nv\r\nEND\r\n");

    // memcached would answer CLIENT_ERROR and then run the data.
    let answered = send_and_expect_close(port, b"ms k S13\r\ndelete victim\r\n");
    assert_eq!(answered, b"CLIENT_ERROR bad command line format\r\n");
    assert_eq!(
        direct.mc(b"get victim\r\n"),
        b"VALUE victim 0 1\r\nv\r\nEND\r\n",
        "the data ran as a command"
    );
}

/// A memcached binary-protocol `set` whose value is a text `delete`: the
/// connection is closed with no reply, the value never runs, and it is
/// logged and counted as another protocol.
#[test]
fn binary_protocol_request_is_closed() {
    let backend = Memcached::start();
    let (p, port, mport) = mc_proxy(&backend);
    let mut direct = with_victim(&backend);

    let value = b"\r\ndelete victim\r\n";
    let mut req = vec![0x80, 0x01, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00];
    req.extend_from_slice(&(8 + 1 + value.len() as u32).to_be_bytes());
    req.extend_from_slice(&[0; 12]); // opaque, cas
    req.extend_from_slice(&[0; 8]); // flags, expiry
    req.push(b'k');
    req.extend_from_slice(value);
    let answered = send_and_expect_close(port, &req);
    assert_eq!(
        direct.mc(b"get victim\r\n"),
        b"VALUE victim 0 1\r\nv\r\nEND\r\n",
        "the value ran as a command"
    );
    assert_unanswered(&answered);
    let (n, log) = warnings(&p, 1);
    assert_eq!(n, 1, "{log}");
    assert!(log.contains("binary"), "{log}");
    assert_eq!(foreign_counter(mport, 1), 1);
}
