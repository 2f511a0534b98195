//! TLS on both sides of a pool (issue #19), against a real `redis-server`
//! built with TLS (`--tls-port`), through `redis-cli --tls` and redis-py.
//! Certificates are made at test time with rcgen; no key is committed.
//!
//! `cargo build -p twem-server && cargo test -p twem-tests --test tls`

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
};
use twem_tests::{
    free_port, run_bounded, twemproxy_bin, wait_for_port, Proc, ProxyProc, TempDir, Twem,
};

/// A test CA.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(p, key).expect("CA certificate"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for 127.0.0.1 and localhost; `expired`: valid
    /// only in 2000. Returns (certificate PEM, key PEM).
    fn leaf(&self, cn: &str, expired: bool) -> (String, String) {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            p.not_before = date_time_ymd(2000, 1, 1);
            p.not_after = date_time_ymd(2000, 12, 31);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &*self.issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }
}

/// Write `text` to `dir/name`; its path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write pem");
    p
}

/// PEM files of a CA and one leaf it signed, in `dir` under `tag`.
struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn files(dir: &Path, tag: &str, ca: &Ca, expired: bool) -> Files {
    let (cert, key) = ca.leaf(tag, expired);
    Files {
        ca: write(dir, &format!("{tag}-ca.pem"), &ca.pem()),
        cert: write(dir, &format!("{tag}.pem"), &cert),
        key: write(dir, &format!("{tag}.key"), &key),
    }
}

/// `redis-server` with TLS only (`--port 0`), requiring client
/// certificates signed by `client_ca` when given.
fn tls_redis(dir: &TempDir, server: &Files, client_ca: Option<&Path>) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--dir", &dir.path().display().to_string()])
        .arg("--tls-cert-file")
        .arg(&server.cert)
        .arg("--tls-key-file")
        .arg(&server.key)
        .arg("--tls-ca-cert-file")
        .arg(client_ca.unwrap_or(&server.ca))
        .args([
            "--tls-auth-clients",
            if client_ca.is_some() { "yes" } else { "no" },
        ])
        .stdout(Stdio::null());
    let proc = Proc::spawn("redis-server --tls-port", &mut cmd);
    wait_for_port(port, Duration::from_secs(10));
    (proc, port)
}

/// `redis-cli` on `port` running `args`; `tls`: (CA file, client
/// certificate and key).
fn cli_output(port: u16, tls: Option<(&Path, Option<(&Path, &Path)>)>, args: &[&str]) -> Output {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((ca, client)) = tls {
        cmd.arg("--tls").arg("--cacert").arg(ca);
        if let Some((c, k)) = client {
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
    }
    cmd.args(args);
    run_bounded(&mut cmd, Duration::from_secs(30))
}

/// [`cli_output`]'s stdout and stderr, as text.
fn cli(port: u16, tls: Option<(&Path, Option<(&Path, &Path)>)>, args: &[&str]) -> String {
    text(&cli_output(port, tls, args))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Wait (10 s at most) until the proxy's log has `needle`.
fn log_has(proxy: &ProxyProc, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if proxy.log().contains(needle) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `twemproxy -t -c conf`: whether it passed, and its stderr.
fn test_conf(conf: &Path) -> (bool, String) {
    let o = run_bounded(
        Command::new(twemproxy_bin()).args(["-t", "-c"]).arg(conf),
        Duration::from_secs(30),
    );
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The proxy's log has `needle` within 10 s; the log is the message if not.
fn assert_logged(proxy: &ProxyProc, needle: &str) {
    assert!(
        log_has(proxy, needle),
        "no {needle:?} in the log: {}",
        proxy.log()
    );
}

/// A temp dir named after `tag` and the test CA whose certificates
/// ([`files`]) the tests put in it.
fn pki(tag: &str) -> (TempDir, Ca) {
    (TempDir::new(tag), Ca::new("twem test CA"))
}

/// The pool lines of a TLS listener serving `f`'s certificate.
fn tls_listener(f: &Files) -> String {
    format!("  tls_cert: {}\n  tls_key: {}\n", p(&f.cert), p(&f.key))
}

/// The pool lines of a pool reaching its servers over TLS, trusting `ca`.
fn tls_servers(ca: &Path) -> String {
    format!("  tls_servers: true\n  tls_ca: {}\n", p(ca))
}

/// twem in front of the redis-server on `rport`: pool `name` with
/// `settings`.
fn twem_on(name: &str, settings: &str, rport: u16) -> Twem {
    Twem::start(name, settings, &[(format!("127.0.0.1:{rport}"), "")])
}

/// `program` (redis-cli, redis-benchmark) aimed at twem's TLS listener on
/// `port`, trusting `ca`.
fn tls_tool(program: &str, port: u16, ca: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["--tls", "--cacert"])
        .arg(ca);
    cmd
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The Python of the clients venv (`scripts/setup-clients.sh`):
/// `$TWEM_CLIENTS_VENV`, else `target/clients-venv` of this checkout.
fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("TWEM_CLIENTS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/clients-venv"));
    let py = venv.join("bin/python");
    py.exists().then_some(py)
}

// TLS towards clients and towards a redis-server that wants a client
// certificate: redis-cli --tls and redis-py through the TLS listener, a
// plain pool on the same TLS backend beside it, and a pool without the
// client certificate refused by the server with an -ERR naming TLS.
#[test]
fn tls_both_sides_with_redis_cli_and_redis_py() {
    let (dir, ca) = pki("tls");
    let server = files(dir.path(), "redis", &ca, false);
    let proxy_files = files(dir.path(), "proxy", &ca, false);
    let twem_client = files(dir.path(), "twem-client", &ca, false);
    let (_redis, rport) = tls_redis(&dir, &server, Some(&server.ca));
    let (tls_port, plain_port, nocert_port) = (free_port(), free_port(), free_port());
    let backend = format!(
        "  redis: true\n  timeout: 2000\n  tls_servers: true\n  tls_ca: {}\n  servers:\n   - 127.0.0.1:{rport}:1\n",
        p(&server.ca)
    );
    let client_cert = format!(
        "  tls_client_cert: {}\n  tls_client_key: {}\n",
        p(&twem_client.cert),
        p(&twem_client.key)
    );
    let yaml = format!(
        "tls:\n  listen: 127.0.0.1:{tls_port}\n{}{client_cert}{backend}\
         plain:\n  listen: 127.0.0.1:{plain_port}\n{client_cert}{backend}\
         nocert:\n  listen: 127.0.0.1:{nocert_port}\n{backend}",
        tls_listener(&proxy_files),
    );
    let _proxy = ProxyProc::twem(&yaml, tls_port, &[]);

    let ca_only = Some((proxy_files.ca.as_path(), None));
    let o = cli(tls_port, ca_only, &["SET", "tls:k", "v1"]);
    assert_eq!(o.trim(), "OK", "SET over TLS: {}", o);
    let o = cli(tls_port, ca_only, &["GET", "tls:k"]);
    assert_eq!(o.trim(), "v1", "GET over TLS: {}", o);
    // The plain pool beside it reaches the same TLS server.
    let o = cli(plain_port, None, &["GET", "tls:k"]);
    assert_eq!(o.trim(), "v1", "plain pool: {}", o);
    // A plain client on the TLS port gets no reply.
    let o = cli(tls_port, None, &["PING"]);
    assert!(!o.contains("PONG"), "{}", o);
    // The server wants a client certificate: the pool without one is
    // refused, and says so.
    let o = cli(nocert_port, None, &["GET", "tls:k"]);
    let out = o;
    assert!(
        out.contains("TLS: the server refused the connection")
            && out.contains(&format!("127.0.0.1:{rport}")),
        "no TLS error naming the server: {out}"
    );

    // A pipeline of many large values: the write side never leaves bytes
    // in the TLS buffer (the reply to the last one must arrive).
    let big = "x".repeat(120_000);
    let o = cli(tls_port, ca_only, &["SET", "tls:big", &big]);
    assert_eq!(o.trim(), "OK");
    let o = cli_output(tls_port, ca_only, &["GET", "tls:big"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim().len(), big.len());

    match python() {
        // CI installs the venv (.ci/run): there, its absence is a failure.
        None if std::env::var_os("CI").is_some() => {
            panic!("CI is set but the clients venv is missing (scripts/setup-clients.sh)")
        }
        None => eprintln!("no clients venv: redis-py part skipped (scripts/setup-clients.sh)"),
        Some(py) => {
            let script = format!(
                "import redis\n\
                 r = redis.Redis(host='127.0.0.1', port={tls_port}, ssl=True, ssl_ca_certs='{}')\n\
                 for i in range(200):\n\
                 \x20   assert r.set(f'py:{{i}}', i)\n\
                 \x20   assert r.get(f'py:{{i}}') == str(i).encode()\n\
                 assert r.mget([f'py:{{i}}' for i in range(200)])[199] == b'199'\n\
                 print('ok')\n",
                p(&proxy_files.ca)
            );
            let o = run_bounded(
                Command::new(py).arg("-c").arg(script),
                Duration::from_secs(120),
            );
            assert_eq!(text(&o).trim(), "ok", "redis-py over TLS: {}", text(&o));
        }
    }
}

// tls_client_ca: a client certificate from that CA is accepted; none, or
// one from another CA, is refused, and the log says why.
#[test]
fn mutual_tls_clients_accepted_and_refused() {
    let (dir, ca) = pki("tls-mutual");
    let other = Ca::new("another CA");
    let server = files(dir.path(), "redis", &ca, false);
    let proxy_files = files(dir.path(), "proxy", &ca, false);
    let good = files(dir.path(), "good-client", &ca, false);
    let bad = files(dir.path(), "bad-client", &other, false);
    let (_redis, rport) = tls_redis(&dir, &server, None);
    let settings = format!(
        "  redis: true\n{}  tls_client_ca: {}\n{}",
        tls_listener(&proxy_files),
        p(&ca_file(dir.path(), &ca)),
        tls_servers(&server.ca),
    );
    let (proxy, port) = twem_on("mtls", &settings, rport).parts();
    let cafile = proxy_files.ca.as_path();
    let o = cli(
        port,
        Some((cafile, Some((&good.cert, &good.key)))),
        &["PING"],
    );
    assert_eq!(o.trim(), "PONG", "{}", o);
    let o = cli(port, Some((cafile, None)), &["PING"]);
    assert!(!o.contains("PONG"), "no certificate accepted: {}", o);
    let o = cli(port, Some((cafile, Some((&bad.cert, &bad.key)))), &["PING"]);
    assert!(!o.contains("PONG"), "foreign certificate accepted: {}", o);
    assert_logged(&proxy, "TLS handshake with the client failed");
}

fn ca_file(dir: &Path, ca: &Ca) -> PathBuf {
    write(dir, "client-ca.pem", &ca.pem())
}

// A server whose certificate expired is refused: the client reads an -ERR
// naming TLS and the server, the log has rustls's reason.
#[test]
fn expired_server_certificate_refused() {
    let (dir, ca) = pki("tls-expired");
    let server = files(dir.path(), "redis", &ca, true);
    let (_redis, rport) = tls_redis(&dir, &server, None);
    let settings = format!(
        "  redis: true\n  timeout: 2000\n{}",
        tls_servers(&server.ca)
    );
    let (proxy, port) = twem_on("old", &settings, rport).parts();
    let o = cli(port, None, &["GET", "k"]);
    let out = o;
    assert!(
        out.contains("TLS: the server's certificate has expired")
            && out.contains(&format!("127.0.0.1:{rport}")),
        "{out}"
    );
    assert_logged(&proxy, "TLS handshake with the server failed");
    assert!(
        proxy.log().contains("xpired"),
        "the log does not say expired: {}",
        proxy.log()
    );
}

// SIGHUP re-reads the certificate files: a client looping requests on one
// connection loses none, and new connections get the new certificate.
#[test]
fn sighup_rotates_the_listener_certificate() {
    let dir = TempDir::new("tls-rotate");
    let ca_a = Ca::new("CA A");
    let ca_b = Ca::new("CA B");
    let a = files(dir.path(), "a", &ca_a, false);
    let b = files(dir.path(), "b", &ca_b, false);
    let both = write(
        dir.path(),
        "both.pem",
        &format!("{}{}", ca_a.pem(), ca_b.pem()),
    );
    let live_cert = write(
        dir.path(),
        "live.pem",
        &std::fs::read_to_string(&a.cert).expect("a"),
    );
    let live_key = write(
        dir.path(),
        "live.key",
        &std::fs::read_to_string(&a.key).expect("a"),
    );
    let redis_files = files(dir.path(), "redis", &ca_a, false);
    let (_redis, rport) = tls_redis(&dir, &redis_files, None);
    let settings = format!(
        "  redis: true\n  tls_cert: {}\n  tls_key: {}\n{}",
        p(&live_cert),
        p(&live_key),
        tls_servers(&redis_files.ca),
    );
    let (proxy, port) = twem_on("rot", &settings, rport).parts();
    // One connection, 300 INCRs 10 ms apart, across the reload.
    let looping = tls_tool("redis-cli", port, &both)
        .args(["-r", "300", "-i", "0.01", "INCR", "rot:n"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli loop");
    std::thread::sleep(Duration::from_millis(300));
    // Nothing changed: the pool is kept (a logrotate SIGHUP reconnects nothing).
    proxy.proc.signal(1);
    assert_logged(&proxy, "configuration reloaded");
    assert!(
        proxy.log().contains("kept=1 changed=0"),
        "unchanged TLS files rebuilt the pool: {}",
        proxy.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&live_cert, std::fs::read(&b.cert).expect("b")).expect("rotate");
    std::fs::write(&live_key, std::fs::read(&b.key).expect("b")).expect("rotate");
    proxy.proc.signal(1);
    assert_logged(&proxy, "kept=0 changed=1");
    // 300 x 10 ms: about 3 s plus the reloads; a minute is a hang.
    let o = twem_tests::wait_bounded(looping, Duration::from_secs(60));
    let out = text(&o);
    let replies: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(replies.len(), 300, "{out}");
    assert!(
        replies.iter().all(|l| l.trim().parse::<u64>().is_ok()),
        "a request failed: {out}"
    );
    assert_eq!(replies.last().map(|l| l.trim()), Some("300"));
    // New connections see certificate B: CA B verifies it, CA A does not.
    let o = cli(port, Some((&b.ca, None)), &["GET", "rot:n"]);
    assert_eq!(o.trim(), "300", "{}", o);
    let o = cli(port, Some((&a.ca, None)), &["GET", "rot:n"]);
    // Compared as a reply, not searched for "300": the refusal names the
    // port, which may contain it (127.0.0.1:21300 did).
    assert_ne!(o.trim(), "300", "old CA still verifies: {o}");
    assert!(o.contains("certificate verify failed"), "old CA: {o}");
    // A bad key is refused, naming the file and the problem; the running
    // certificate stays.
    std::fs::write(&live_key, "garbage\n").expect("break the key");
    proxy.proc.signal(1);
    assert_logged(&proxy, "reload rejected");
    let log = proxy.log();
    let line = log
        .lines()
        .find(|l| l.contains("reload rejected"))
        .unwrap_or_default();
    assert!(
        line.contains("live.key") && line.contains("no PEM private key"),
        "{line}"
    );
    let o = cli(port, Some((&b.ca, None)), &["GET", "rot:n"]);
    assert_eq!(o.trim(), "300", "{}", o);
}

// Missing and bad TLS files are refused by -t (and so before any port is
// bound at start and by reload), naming the pool, the key and the file.
#[test]
fn bad_tls_files_refused_by_test_conf() {
    let (dir, ca) = pki("tls-conf");
    let good = files(dir.path(), "good", &ca, false);
    let junk = write(dir.path(), "junk.pem", "not a certificate\n");
    let missing = dir.path().join("missing.pem");
    let port = free_port();
    let cases = [
        ("tls_cert", p(&missing), p(&good.key), "missing.pem"),
        ("tls_cert", p(&junk), p(&good.key), "no PEM certificate"),
        ("tls_key", p(&good.cert), p(&junk), "no PEM private key"),
        // A key that is not the certificate's.
        (
            "tls_key",
            p(&good.cert),
            p(&files(dir.path(), "x", &ca, false).key),
            "tls_key",
        ),
    ];
    for (i, (key, cert, keyfile, needle)) in cases.iter().enumerate() {
        let conf = write(
            dir.path(),
            &format!("c{i}.yml"),
            &format!(
                "alpha:\n  listen: 127.0.0.1:{port}\n  tls_cert: {cert}\n  tls_key: {keyfile}\n  servers:\n   - 127.0.0.1:6379:1\n"
            ),
        );
        let (ok, err) = test_conf(&conf);
        assert!(!ok, "case {i} accepted: {err}");
        for n in ["pool \"alpha\"", key, needle] {
            assert!(
                err.contains(n),
                "case {i}: stderr does not name {n:?}: {err}"
            );
        }
    }
    let conf = write(
        dir.path(),
        "ca.yml",
        &format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  tls_servers: true\n  tls_ca: {}\n  servers:\n   - 127.0.0.1:6379:1\n",
            p(&missing)
        ),
    );
    let (ok, err) = test_conf(&conf);
    assert!(
        !ok && err.contains("tls_ca") && err.contains("missing.pem"),
        "{err}"
    );
}

// The embedded Pool connects to its servers with TLS from the same keys,
// client certificate included; SELECT (redis_db) runs over it.
#[test]
fn embedded_pool_uses_backend_tls() {
    use twem_core::pool::Pool;
    use twem_proto::resp::{Reply, Request};
    let (dir, ca) = pki("tls-embedded");
    let server = files(dir.path(), "redis", &ca, false);
    let client = files(dir.path(), "client", &ca, false);
    let (_redis, rport) = tls_redis(&dir, &server, Some(&server.ca));
    let yaml = format!(
        "emb:\n  listen: 127.0.0.1:1\n  redis: true\n  redis_db: 2\n  timeout: 2000\n  tls_servers: true\n  tls_ca: {}\n  tls_server_name: localhost\n  tls_client_cert: {}\n  tls_client_key: {}\n  servers:\n   - 127.0.0.1:{rport}:1\n",
        p(&server.ca),
        p(&client.cert),
        p(&client.key),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pool = Pool::from_yaml(&yaml, None).expect("pool");
        let r = pool.call(Request::from_args(["SET", "emb:k", "v"])).await;
        assert!(
            matches!(r, Ok(Reply::Status(ref s)) if &s[..] == b"OK"),
            "{r:?}"
        );
        let r = pool.call(Request::from_args(["GET", "emb:k"])).await;
        assert!(
            matches!(r, Ok(Reply::Bulk(Some(ref v))) if &v[..] == b"v"),
            "{r:?}"
        );
        pool.close().await;
    });
    // It landed in db 2 of the TLS server.
    let o = cli(
        rport,
        Some((&server.ca, Some((&client.cert, &client.key)))),
        &["-n", "2", "GET", "emb:k"],
    );
    assert_eq!(o.trim(), "v", "{}", o);
}

// Clients that connect and never finish their handshake cost bounded
// memory and are closed after the handshake timeout (10 s), logged.
#[test]
fn stalled_handshakes_time_out_with_bounded_memory() {
    use std::io::{Read, Write};
    let (dir, ca) = pki("tls-stall");
    let proxy_files = files(dir.path(), "proxy", &ca, false);
    let port = free_port();
    let yaml = format!(
        "stall:\n  listen: 127.0.0.1:{port}\n  redis: true\n{}  servers:\n   - 127.0.0.1:1:1\n",
        tls_listener(&proxy_files),
    );
    let proxy = ProxyProc::twem(&yaml, port, &[]);
    let pid = proxy.proc.pid();
    let before = twem_tests::rss_kib(pid).expect("rss");
    let start = Instant::now();
    let mut conns: Vec<std::net::TcpStream> = (0..300)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            // Half send a record header promising 16 KiB and stop there.
            if i % 2 == 0 {
                s.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01])
                    .expect("partial hello");
            }
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = twem_tests::rss_kib(pid).expect("rss");
    let grown = during.saturating_sub(before);
    // rustls holds a few KiB per handshake; 300 stay far under 32 MiB.
    assert!(
        grown < 32 * 1024,
        "300 stalled handshakes grew RSS by {grown} KiB"
    );
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if twem_tests::is_reset(&e) => {}
            other => panic!("a stalled handshake was not closed: {other:?}"),
        }
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(14),
        "closed after {took:?}"
    );
    assert_logged(&proxy, "TLS handshake with the client timed out");
}

// A memcached pool serves its clients with TLS the same way (the session
// is shared). Debian's memcached is built without TLS, so the backend side
// stays plain here. The client is Python's standard ssl module.
#[test]
fn memcached_pool_with_tls_listener() {
    let Some(py) = python3_or_skip("memcached TLS listener") else {
        return;
    };
    let (dir, ca) = pki("tls-mc");
    let proxy_files = files(dir.path(), "proxy", &ca, false);
    let mc = twem_tests::Memcached::start();
    let servers = [(mc.addr(), "")];
    let t = Twem::start("mc", &tls_listener(&proxy_files), &servers);
    let port = t.port;
    let script = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(cafile='{}')\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})), server_hostname='localhost')\n\
         s.sendall(b'set k 0 0 2\\r\\nhi\\r\\nget k\\r\\n')\n\
         want = b'STORED\\r\\nVALUE k 0 2\\r\\nhi\\r\\nEND\\r\\n'\n\
         got = b''\n\
         while len(got) < len(want):\n\
         \x20   chunk = s.recv(4096)\n\
         \x20   if not chunk: break\n\
         \x20   got += chunk\n\
         print('ok' if got == want else repr(got))\n",
        p(&proxy_files.ca)
    );
    let o = run_bounded(
        Command::new(py).arg("-c").arg(script),
        Duration::from_secs(120),
    );
    assert_eq!(text(&o).trim(), "ok", "{}", text(&o));
}

// A memcached pool talks TLS to its servers the same way. Debian's
// memcached has no TLS, so the server here is memcached behind a TLS
// terminator (Python's ssl + asyncio, started by the test) that counts the
// TLS handshakes it completed: twem's requests must reach memcached through
// it, and a terminator with another CA's certificate is refused.
#[test]
fn memcached_pool_with_tls_servers_through_a_terminator() {
    let Some(py) = python3_or_skip("memcached backend TLS") else {
        return;
    };
    let (dir, ca) = pki("tls-mc-backend");
    let server = files(dir.path(), "terminator", &ca, false);
    let mc = twem_tests::Memcached::start();
    let tport = free_port();
    let count = dir.path().join("handshakes");
    let terminator = format!(
        "import asyncio, ssl\n\
         ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)\n\
         ctx.load_cert_chain('{cert}', '{key}')\n\
         n = 0\n\
         async def pipe(r, w):\n\
         \x20   try:\n\
         \x20       while (b := await r.read(65536)):\n\
         \x20           w.write(b); await w.drain()\n\
         \x20   finally:\n\
         \x20       w.close()\n\
         async def serve(r, w):\n\
         \x20   global n\n\
         \x20   n += 1\n\
         \x20   open('{count}', 'w').write(str(n))\n\
         \x20   ur, uw = await asyncio.open_connection('127.0.0.1', {mport})\n\
         \x20   await asyncio.gather(pipe(r, uw), pipe(ur, w))\n\
         async def main():\n\
         \x20   s = await asyncio.start_server(serve, '127.0.0.1', {tport}, ssl=ctx)\n\
         \x20   await s.serve_forever()\n\
         asyncio.run(main())\n",
        cert = p(&server.cert),
        key = p(&server.key),
        count = p(&count),
        mport = mc.port,
    );
    let mut cmd = Command::new(&py);
    cmd.arg("-c").arg(terminator).stdout(Stdio::null());
    let _terminator = Proc::spawn("tls terminator", &mut cmd);
    wait_for_port(tport, Duration::from_secs(10));

    let port = free_port();
    let yaml = format!(
        "mc:\n  listen: 127.0.0.1:{port}\n  timeout: 2000\n  tls_servers: true\n  tls_ca: {}\n  tls_server_name: localhost\n  servers:\n   - 127.0.0.1:{tport}:1\n",
        p(&server.ca),
    );
    let _proxy = ProxyProc::twem(&yaml, port, &[]);
    let mut c = twem_tests::Client::connect(port);
    assert_eq!(c.mc(b"set tk 0 0 3\r\nabc\r\n"), b"STORED\r\n");
    assert_eq!(c.mc(b"get tk\r\n"), b"VALUE tk 0 3\r\nabc\r\nEND\r\n");
    // It went through TLS to memcached: the terminator completed a
    // handshake, and memcached holds the value.
    let n: u32 = std::fs::read_to_string(&count)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    assert!(n >= 1, "no TLS handshake reached the terminator");
    assert_eq!(
        mc.client().mc(b"get tk\r\n"),
        b"VALUE tk 0 3\r\nabc\r\nEND\r\n"
    );

    // A pool trusting another CA refuses the terminator's certificate.
    let other = Ca::new("another CA");
    let other_ca = ca_file(dir.path(), &other);
    let port2 = free_port();
    let yaml2 = format!(
        "mc2:\n  listen: 127.0.0.1:{port2}\n  timeout: 2000\n  tls_servers: true\n  tls_ca: {}\n  tls_server_name: localhost\n  servers:\n   - 127.0.0.1:{tport}:1\n",
        p(&other_ca),
    );
    let _proxy2 = ProxyProc::twem(&yaml2, port2, &[]);
    let mut c2 = twem_tests::Client::connect(port2);
    let r = c2.mc(b"get tk\r\n");
    assert!(
        r.starts_with(b"SERVER_ERROR") && twem_tests::find(&r, b"TLS").is_some(),
        "{}",
        String::from_utf8_lossy(&r)
    );
}

/// `python3` with its ssl module, or `None` after a skip notice naming
/// `test`; under CI (which installs it) its absence fails the test.
fn python3_or_skip(test: &str) -> Option<PathBuf> {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import ssl")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but python3 lacks ssl"
        );
        eprintln!("no python3: {test} test skipped");
    }
    ok.then(|| PathBuf::from("python3"))
}

// A certificate for another name, or from an unknown CA, is refused with
// an -ERR saying which key to look at.
#[test]
fn wrong_name_and_unknown_ca_named() {
    let (dir, ca) = pki("tls-names");
    let other = Ca::new("another CA");
    let server = files(dir.path(), "redis", &ca, false);
    let other_ca = write(dir.path(), "other-ca.pem", &other.pem());
    let (_redis, rport) = tls_redis(&dir, &server, None);
    let (p1, p2) = (free_port(), free_port());
    let yaml = format!(
        "name:\n  listen: 127.0.0.1:{p1}\n  redis: true\n  timeout: 2000\n  tls_servers: true\n  tls_ca: {}\n  tls_server_name: other.example\n  servers:\n   - 127.0.0.1:{rport}:1\n\
         ca:\n  listen: 127.0.0.1:{p2}\n  redis: true\n  timeout: 2000\n  tls_servers: true\n  tls_ca: {}\n  servers:\n   - 127.0.0.1:{rport}:1\n",
        p(&server.ca),
        p(&other_ca),
    );
    let _proxy = ProxyProc::twem(&yaml, p1, &[]);
    let out = cli(p1, None, &["GET", "k"]);
    assert!(out.contains("does not name it (tls_server_name)"), "{out}");
    let out = cli(p2, None, &["GET", "k"]);
    assert!(out.contains("not signed by a trusted CA (tls_ca)"), "{out}");
}

// Pipelines through TLS on both sides, many clients at once: every reply
// arrives (a byte left in a TLS buffer would stall redis-benchmark).
#[test]
fn pipelined_load_through_tls_both_sides() {
    let (dir, ca) = pki("tls-load");
    let server = files(dir.path(), "redis", &ca, false);
    let proxy_files = files(dir.path(), "proxy", &ca, false);
    let (_redis, rport) = tls_redis(&dir, &server, None);
    let settings = format!(
        "  redis: true\n{}{}",
        tls_listener(&proxy_files),
        tls_servers(&server.ca)
    );
    let t = twem_on("load", &settings, rport);
    let start = Instant::now();
    let o = run_bounded(
        tls_tool("redis-benchmark", t.port, &proxy_files.ca).args([
            "-t", "set,get", "-n", "20000", "-c", "20", "-P", "16", "-d", "2000", "-q",
        ]),
        Duration::from_secs(180),
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert_eq!(out.matches("requests per second").count(), 2, "{out}");
    assert!(start.elapsed() < Duration::from_secs(60), "{out}");
}
