//! Operations nutcracker never had: config reload on SIGHUP/SIGUSR1 without
//! dropping clients, and graceful shutdown on SIGTERM/SIGINT. Real processes,
//! real signals, real redis-servers.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use twem_tests::{free_port, wait_for_port, Client, ProxyProc, Redis};

const SIGHUP: i32 = 1;
const SIGINT: i32 = 2;
const SIGUSR1: i32 = 10;
const SIGTERM: i32 = 15;

fn pool(name: &str, port: u16, backends: &[&Redis], extra: &str) -> String {
    let names: Vec<String> = (0..backends.len()).map(|i| format!("{name}{i}")).collect();
    let servers: Vec<(String, &str)> = backends
        .iter()
        .zip(&names)
        .map(|(b, n)| (b.addr(), n.as_str()))
        .collect();
    twem_tests::pool_yaml(name, port, &format!("  redis: true\n{extra}"), &servers)
}

/// 8 clients SET/GET continuously while the config changes three times (a
/// timeout changed, a pool added, then an invalid file): no error, no
/// disconnect, and the added pool answers.
#[test]
fn reload_keeps_clients_and_applies_changes() {
    let r1 = Redis::start();
    let r2 = Redis::start();
    let port = free_port();
    let port2 = free_port();
    let v1 = pool("alpha", port, &[&r1, &r2], "  timeout: 1000\n");
    let proxy = ProxyProc::twem(&v1, port, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let stop = Arc::clone(&stop);
            let ops = Arc::clone(&ops);
            thread::spawn(move || {
                let mut c = Client::connect(port);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}:{}", i % 50);
                    let val = format!("{w}-{i}");
                    let set = c.cmd(&[b"SET", key.as_bytes(), val.as_bytes()]);
                    assert_eq!(
                        set,
                        b"+OK\r\n",
                        "worker {w} op {i}: SET failed: {}",
                        String::from_utf8_lossy(&set)
                    );
                    let got = c.cmd(&[b"GET", key.as_bytes()]);
                    assert_eq!(
                        got,
                        twem_tests::bulk(val.as_bytes()),
                        "worker {w} op {i}: GET got another value"
                    );
                    i += 1;
                    ops.fetch_add(2, Ordering::Relaxed);
                }
                i
            })
        })
        .collect();
    let settle = || thread::sleep(Duration::from_millis(400));
    settle();
    // 1: a timeout changed (the pool is rebuilt; its listener and clients stay).
    std::fs::write(
        &proxy.conf,
        pool("alpha", port, &[&r1, &r2], "  timeout: 2000\n"),
    )
    .expect("write v2");
    proxy.proc.signal(SIGHUP);
    settle();
    // 2: a pool added (SIGUSR1 reloads too).
    let v3 = format!(
        "{}{}",
        pool("alpha", port, &[&r1, &r2], "  timeout: 2000\n"),
        pool("beta", port2, &[&r2], "")
    );
    std::fs::write(&proxy.conf, &v3).expect("write v3");
    proxy.proc.signal(SIGUSR1);
    wait_for_port(port2, Duration::from_secs(5));
    let mut b = Client::connect(port2);
    assert_eq!(b.cmds("SET beta-key 1"), b"+OK\r\n");
    assert_eq!(
        r2.client().cmds("GET beta-key"),
        b"$1\r\n1\r\n",
        "beta routes to its only server"
    );
    // 3: an invalid file: rejected, everything keeps running.
    std::fs::write(
        &proxy.conf,
        "alpha:\n  listen: 127.0.0.1:1\n  hash: nosuchhash\n  servers:\n   - 127.0.0.1:1:1\n",
    )
    .expect("write bad");
    proxy.proc.signal(SIGHUP);
    settle();
    assert_eq!(
        b.cmds("GET beta-key"),
        b"$1\r\n1\r\n",
        "beta survives an invalid reload"
    );
    stop.store(true, Ordering::Relaxed);
    let per_worker: Vec<u64> = workers
        .into_iter()
        .map(|w| w.join().expect("worker ran without error"))
        .collect();
    assert!(
        per_worker.iter().all(|&n| n > 10),
        "every worker made progress: {per_worker:?}"
    );
    let log = proxy.log();
    assert!(
        log.contains("reload rejected"),
        "the invalid file is logged:\n{log}"
    );
    assert!(
        log.contains("hash"),
        "the log line names the problem:\n{log}"
    );
    eprintln!(
        "reload test: {} ops across 8 clients, 3 reloads, 0 errors",
        ops.load(Ordering::Relaxed)
    );
}

/// A pool removed by a reload stops accepting and closes its idle clients.
#[test]
fn reload_removes_a_pool() {
    let r1 = Redis::start();
    let (pa, pb) = (free_port(), free_port());
    let both = format!(
        "{}{}",
        pool("alpha", pa, &[&r1], ""),
        pool("beta", pb, &[&r1], "")
    );
    let proxy = ProxyProc::twem(&both, pa, &[]);
    wait_for_port(pb, Duration::from_secs(5));
    let mut a = Client::connect(pa);
    let mut b = Client::connect(pb);
    assert_eq!(b.cmds("PING"), b"+PONG\r\n");
    std::fs::write(&proxy.conf, pool("alpha", pa, &[&r1], "")).expect("write");
    proxy.proc.signal(SIGHUP);
    assert!(b.is_closed(), "beta's client is closed after the reload");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", pb)).is_err(),
        "beta no longer listens"
    );
    assert_eq!(a.cmds("PING"), b"+PONG\r\n", "alpha is untouched");
}

/// A redis stand-in for the shutdown tests that holds its replies until the
/// test lets them go, so "the request is still in flight when the signal is
/// handled" is a fact the test arranges, not a guess about how fast a
/// loaded machine runs. Every request is answered `$4\r\ndone\r\n`.
struct HeldBackend {
    port: u16,
    /// One message per request, as it reaches the backend.
    arrived: mpsc::Receiver<()>,
    /// Each message lets one held reply go.
    release: mpsc::Sender<()>,
}

impl HeldBackend {
    fn start() -> HeldBackend {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind held backend");
        let port = l.local_addr().expect("addr").port();
        let (arrived_tx, arrived) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let (arrived_tx, release_rx) = (arrived_tx.clone(), Arc::clone(&release_rx));
                thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    loop {
                        while let Some(n) = twem_tests::resp_len(&buf) {
                            buf.drain(..n);
                            let _ = arrived_tx.send(());
                            let go = release_rx.lock().is_ok_and(|r| r.recv().is_ok());
                            if !go || s.write_all(b"$4\r\ndone\r\n").is_err() {
                                return;
                            }
                        }
                        match s.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                });
            }
        });
        HeldBackend {
            port,
            arrived,
            release,
        }
    }

    fn yaml(&self, port: u16) -> String {
        format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - 127.0.0.1:{}:1 alpha0\n",
            self.port
        )
    }

    /// Wait until a request has reached the backend (and is held there).
    fn wait_arrived(&self) {
        self.arrived
            .recv_timeout(Duration::from_secs(10))
            .expect("the request reaches the backend");
    }
}

/// Wait until nothing accepts on `port` any more: the proxy has handled its
/// shutdown signal (it closes its listeners first, then drains).
fn wait_until_not_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still listening 10 s after the signal"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM while a request is in flight: the reply still arrives, then the
/// proxy exits 0 and removes its pid file.
#[test]
fn sigterm_drains_in_flight_requests() {
    let backend = HeldBackend::start();
    let port = free_port();
    let dir = twem_tests::TempDir::new("pidfile");
    let pid_file = dir.path().join("twem.pid");
    let mut proxy = ProxyProc::twem(
        &backend.yaml(port),
        port,
        &["-p", pid_file.to_str().expect("utf-8 path")],
    );
    assert!(
        pid_file.exists(),
        "pid file written before the port accepts"
    );
    let mut c = Client::connect(port);
    c.send_cmd(&[b"GET", b"k"]);
    backend.wait_arrived();
    proxy.proc.signal(SIGTERM);
    wait_until_not_listening(port);
    // The signal is handled and the request still in flight: let it finish.
    backend.release.send(()).expect("release");
    assert_eq!(
        c.read_resp(),
        b"$4\r\ndone\r\n",
        "the in-flight reply is delivered"
    );
    assert!(c.is_closed(), "then the connection closes");
    let status = proxy
        .proc
        .wait_timeout(Duration::from_secs(10))
        .expect("proxy exits after draining");
    assert!(status.success(), "exit status {status:?}");
    assert!(!pid_file.exists(), "pid file removed on a clean exit");
}

/// A second signal during the drain exits at once, with the in-flight
/// reply still held by the backend and the grace period (60 s) far off.
#[test]
fn second_signal_exits_at_once() {
    let backend = HeldBackend::start();
    let port = free_port();
    let mut proxy = ProxyProc::twem(&backend.yaml(port), port, &["--shutdown-grace", "60000"]);
    let mut c = Client::connect(port);
    c.send_cmd(&[b"GET", b"k"]);
    backend.wait_arrived();
    proxy.proc.signal(SIGINT);
    // The first signal is handled (the drain waits on the held reply)...
    wait_until_not_listening(port);
    // ...so this one is a second signal, not the same one twice.
    proxy.proc.signal(SIGINT);
    let status = proxy
        .proc
        .wait_timeout(Duration::from_secs(20))
        .expect("the second signal ends the drain (grace is 60 s)");
    assert!(status.success(), "{status:?}");
    assert!(c.is_closed(), "the held client is closed");
}

/// `--metrics-addr` serves Prometheus text: per-pool and per-server latency
/// histograms that count the requests made, per-class counters, and the
/// stats-JSON facts as labelled metrics; the stats port keeps working beside it.
#[test]
fn prometheus_metrics_after_traffic() {
    let r1 = Redis::start();
    let r2 = Redis::start();
    let port = free_port();
    let yaml = pool("mpool", port, &[&r1, &r2], "");
    let (proxy, mport) = ProxyProc::twem_with_metrics(&yaml, port, &[]);
    let mut c = Client::connect(port);
    for i in 0..50 {
        assert_eq!(
            c.cmd(&[b"SET", format!("m{i}").as_bytes(), b"v"]),
            b"+OK\r\n"
        );
    }
    let mget: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(mget.iter().map(|k| k.as_bytes()));
    let _ = c.cmd(&args);
    let _ = c.cmds("NOSUCH x");
    let scrape = || twem_tests::scrape_metrics(mport);
    let metric = |text: &str, needle: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    // 50 SET + 1 MGET + 1 rejected = 52 replies written to the client. A
    // reply's latency is observed once its write has completed, so the
    // client can read the last reply a moment before the histogram counts
    // it (the scrape may run on another worker thread): scrape until that
    // count is reached, then check every figure exactly.
    let pool_count = "twem_pool_request_duration_seconds_count{pool=\"mpool\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape();
        if metric(&text, pool_count) >= Some(52.0) || Instant::now() >= deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let value = |needle: &str| -> f64 {
        metric(&text, needle).unwrap_or_else(|| panic!("no line starting {needle:?} in:\n{text}"))
    };
    assert_eq!(value(pool_count), 52.0);
    let server_count =
        value("twem_server_request_duration_seconds_count{pool=\"mpool\",server=\"mpool0\"}")
            + value("twem_server_request_duration_seconds_count{pool=\"mpool\",server=\"mpool1\"}");
    assert!(
        server_count >= 51.0,
        "every forwarded request (and fragment) is timed: {server_count}"
    );
    assert_eq!(
        value("twem_requests_total{class=\"single\",pool=\"mpool\"}"),
        50.0
    );
    assert_eq!(
        value("twem_requests_total{class=\"mget\",pool=\"mpool\"}"),
        1.0
    );
    assert_eq!(
        value("twem_requests_total{class=\"rejected\",pool=\"mpool\"}"),
        1.0
    );
    assert!(text.contains("# TYPE twem_server_requests_total counter"));
    assert!(
        text.contains("twem_pool_client_connections{pool=\"mpool\"} 1"),
        "{text}"
    );
    // The stats port is unchanged beside it.
    let st = proxy.stats();
    assert_eq!(st["service"], "nutcracker");
    assert!(st["mpool"]["mpool0"].is_object());
    let out = twem_tests::http_request(mport, b"GET /nope HTTP/1.1\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
}

/// The per-server counters balance on a single-threaded proxy (`--threads
/// 1`, the current-thread runtime): after pipelined traffic every request
/// has its response and the queue gauges are back at zero, and they stay at
/// zero after requests failed on a killed backend. (The backend counts these
/// per batch, not per request.)
#[test]
fn server_counters_balance_after_pipelines_and_a_failure() {
    let r1 = Redis::start();
    let mut r2 = Redis::start();
    let port = free_port();
    let yaml = pool("cpool", port, &[&r1, &r2], "  timeout: 2000\n");
    let proxy = ProxyProc::twem(&yaml, port, &["--threads", "1"]);
    let mut c = Client::connect(port);
    // 500 SETs in one write, then 500 GETs in one write.
    let mut burst = Vec::new();
    for i in 0..500 {
        burst.extend(twem_tests::resp_cmd(&[
            b"SET",
            format!("c{i}").as_bytes(),
            b"v",
        ]));
    }
    c.send(&burst);
    for i in 0..500 {
        assert_eq!(c.read_resp(), b"+OK\r\n", "SET {i}");
    }
    burst.clear();
    for i in 0..500 {
        burst.extend(twem_tests::resp_cmd(&[b"GET", format!("c{i}").as_bytes()]));
    }
    c.send(&burst);
    for i in 0..500 {
        assert_eq!(c.read_resp(), b"$1\r\nv\r\n", "GET {i}");
    }
    let gauges = |st: &serde_json::Value| -> Vec<(String, i64)> {
        let mut v = Vec::new();
        for s in ["cpool0", "cpool1"] {
            for g in ["in_queue", "in_queue_bytes", "out_queue", "out_queue_bytes"] {
                v.push((
                    format!("{s}.{g}"),
                    st["cpool"][s][g].as_i64().expect("gauge"),
                ));
            }
        }
        v
    };
    let responses = |st: &serde_json::Value| -> i64 {
        ["cpool0", "cpool1"]
            .iter()
            .map(|s| st["cpool"][s]["responses"].as_i64().unwrap_or(0))
            .sum()
    };
    let st = proxy.stats_when(|st| responses(st) >= 1000 && gauges(st).iter().all(|g| g.1 == 0));
    let mut total = 0;
    for s in ["cpool0", "cpool1"] {
        let srv = &st["cpool"][s];
        let req = srv["requests"].as_i64().expect("requests");
        assert_eq!(
            req,
            srv["responses"].as_i64().expect("responses"),
            "{s}: {srv}"
        );
        assert!(srv["request_bytes"].as_i64() > Some(0), "{s}: {srv}");
        assert!(srv["response_bytes"].as_i64() > Some(0), "{s}: {srv}");
        total += req;
    }
    assert_eq!(total, 1000, "{st}");
    assert!(gauges(&st).iter().all(|g| g.1 == 0), "{:?}", gauges(&st));

    // Kill one backend, then pipeline GETs to its keys and the other's.
    let k2 = twem_tests::key_on(&yaml, "cpool1", "dead");
    let k1 = twem_tests::key_on(&yaml, "cpool0", "live");
    r2.proc.kill();
    burst.clear();
    for _ in 0..20 {
        burst.extend(twem_tests::resp_cmd(&[b"GET", k2.as_bytes()]));
        burst.extend(twem_tests::resp_cmd(&[b"GET", k1.as_bytes()]));
    }
    c.send(&burst);
    for i in 0..20 {
        let dead = c.read_resp();
        assert!(
            dead.starts_with(b"-ERR "),
            "GET on the dead server {i}: {dead:?}"
        );
        assert_eq!(c.read_resp(), b"$-1\r\n", "GET on the live server {i}");
    }
    let st = proxy.stats_when(|st| {
        st["cpool"]["forward_error"].as_i64() >= Some(20) && gauges(st).iter().all(|g| g.1 == 0)
    });
    assert!(gauges(&st).iter().all(|g| g.1 == 0), "{:?}", gauges(&st));
    assert!(st["cpool"]["forward_error"].as_i64() >= Some(20), "{st}");
}
