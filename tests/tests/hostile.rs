//! Hostile clients: one that pipelines big GETs and never reads, slowloris
//! senders, absurd length headers, and thousands of idle connections. Each
//! may cost the proxy only bounded memory, and everyone else keeps being
//! served. Figures (RSS, per-connection cost, latencies) are printed with
//! `eprintln!`; `TWEM_TIER2=1` runs the longer, bigger variants.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use twem_tests::{
    bulk, open_files_soft_limit, resp_cmd, sample_rss, tier2, Client, Memcached, ProxyProc, Redis,
    Twem,
};

/// RSS figures are only meaningful when the proxy under test is the one
/// working; run these tests one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A redis-server behind twem (pool `h`, 2 s timeout, stderr kept): what
/// the redis tests here attack. (backend, proxy, port)
fn redis_target() -> (Redis, ProxyProc, u16) {
    let backend = Redis::start();
    let t = Twem::capture(
        "h",
        "  redis: true\n  timeout: 2000\n",
        &[(backend.addr(), "r")],
    );
    (backend, t.proxy, t.port)
}

/// A client of `proxy` (on `port`) that has been served (`SET k v`), and
/// the proxy's RSS after that: the baseline of the RSS checks.
fn served_then_rss(proxy: &ProxyProc, port: u16) -> (Client, u64) {
    let mut c = Client::connect(port);
    assert_eq!(c.cmds("SET k v"), b"+OK\r\n");
    (c, proxy.rss())
}

/// A well-behaved client for `dur`: small SET/GET round trips and, every
/// fifth round, the 1 MiB value; each reply checked. (ops, max latency).
fn served_client(port: u16, dur: Duration, big: Option<&[u8]>) -> (u64, Duration) {
    let mut c = Client::connect(port);
    let (mut ops, mut worst) = (0u64, Duration::ZERO);
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let t0 = Instant::now();
        let v = format!("ok{ops}");
        assert_eq!(c.cmd(&[b"SET", b"polite", v.as_bytes()]), b"+OK\r\n");
        assert_eq!(c.cmd(&[b"GET", b"polite"]), bulk(v.as_bytes()));
        if let (Some(big), 0) = (big, ops % 5) {
            assert!(c.cmd(&[b"GET", b"big"]) == bulk(big), "big value mangled");
        }
        worst = worst.max(t0.elapsed());
        ops += 1;
    }
    (ops, worst)
}

/// A client pipelines 400 `GET big` (1 MiB each) and never reads: the proxy
/// stops reading it once its reply budget is used, so its RSS stays within
/// 64 MiB of the baseline per such client while another client is served
/// at normal speed. The hostile client's replies, read at last, are intact
/// and in order.
#[test]
fn non_reading_client_of_big_values_is_bounded() {
    let _g = serial();
    let (_backend, mut proxy, port) = redis_target();
    let big: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let mut setup = Client::connect(port);
    assert_eq!(setup.cmd(&[b"SET", b"big", &big]), b"+OK\r\n");
    assert_eq!(setup.cmd(&[b"GET", b"big"]), bulk(&big));
    // Warm the served client's path so the baseline includes it.
    served_client(port, Duration::from_millis(200), Some(&big));
    thread::sleep(Duration::from_millis(200));
    let base = proxy.rss();

    let (hostiles, sample_for) = if tier2() {
        (4, Duration::from_secs(15))
    } else {
        (1, Duration::from_secs(3))
    };
    let pipeline: Vec<u8> = (0..400).flat_map(|_| resp_cmd(&[b"GET", b"big"])).collect();
    let mut hostile: Vec<TcpStream> = (0..hostiles)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_write_timeout(Some(Duration::from_secs(2)))
                .expect("write timeout");
            (&s).write_all(&pipeline)
                .expect("400 GETs fit the socket buffers");
            s
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(proxy.proc.pid(), Arc::clone(&stop));
    let (ops, worst) = served_client(port, sample_for, Some(&big));
    stop.store(true, Ordering::Relaxed);
    let max = sampler.join().expect("sampler");
    let growth = max.saturating_sub(base);
    eprintln!(
        "hostile non-reader: {hostiles} client(s) x 400 GET of 1 MiB unread: proxy RSS base={base} KiB max={max} KiB growth={growth} KiB ({:.1} MiB); served client: {ops} rounds in {sample_for:?}, worst round {worst:?}",
        growth as f64 / 1024.0
    );
    assert!(ops >= 10, "the polite client was starved: {ops} rounds");
    assert!(
        worst < Duration::from_secs(1),
        "polite round took {worst:?}"
    );
    assert!(
        growth < 64 * 1024 * hostiles,
        "RSS grew {growth} KiB for {hostiles} non-reading client(s)"
    );

    // Read some of the first hostile's replies: intact and in order.
    let want = bulk(&big);
    let check = if tier2() { 400 } else { 24 };
    let s = &mut hostile[0];
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut got = vec![0u8; want.len()];
    for i in 0..check {
        s.read_exact(&mut got).expect("hostile reply");
        assert!(got == want, "reply {i} to the non-reader is not the value");
    }
    drop(hostile);
    proxy.assert_healthy();
    assert_eq!(
        Client::connect(port).cmds("GET polite").first(),
        Some(&b'$')
    );
}

/// A client that pipelines small GETs (5-byte `$-1` replies) as fast as it
/// can write and never reads: the proxy must stop reading it once it holds
/// a window of requests and its reply budget, so its RSS stays within 64
/// MiB of the baseline while another client is served.
///
/// Reproduction of the bug: `*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n`
/// written in a loop, nothing read; expected: writes block after a few MiB,
/// RSS flat; received: the proxy keeps reading, RSS grows with the bytes
/// sent (release: 1.5 GiB read and RSS 1.5 GiB after 4.6 s, while only
/// 324k requests (8 MiB) had been dispatched: the undecoded input is
/// buffered without bound, since each reply that frees a window slot lets
/// the session read another chunk but decode only one request).
#[test]
fn non_reading_client_of_small_replies_is_bounded() {
    let _g = serial();
    let (_backend, mut proxy, port) = redis_target();
    let mut polite = Client::connect(port);
    assert_eq!(polite.cmds("SET k v"), b"+OK\r\n");
    thread::sleep(Duration::from_millis(200));
    let base = proxy.rss();
    let dur = if tier2() {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(3)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    let writer = thread::spawn(move || {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .expect("write timeout");
        let chunk: Vec<u8> = (0..1000)
            .flat_map(|_| resp_cmd(&[b"GET", b"missing"]))
            .collect();
        let mut sent = 0usize;
        // Once the proxy stops reading, writes time out: keep trying, as a
        // hostile client would.
        while !st.load(Ordering::Relaxed) {
            if let Ok(n) = (&s).write(&chunk) {
                sent += n;
            }
        }
        (sent, chunk.len() / 1000)
    });
    let t0 = Instant::now();
    let (mut max, mut worst) = (base, Duration::ZERO);
    while t0.elapsed() < dur {
        let t = Instant::now();
        assert_eq!(polite.cmds("GET k"), b"$1\r\nv\r\n");
        worst = worst.max(t.elapsed());
        max = max.max(proxy.rss());
        // Past 4x the bound the verdict is in: stop before the machine
        // (shared with other test runs) feels it.
        if max.saturating_sub(base) > 256 * 1024 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, per) = writer.join().expect("writer");
    let growth = max.saturating_sub(base);
    eprintln!(
        "hostile small-reply non-reader: ~{} GETs ({} KiB) written in {:?}; proxy RSS base={base} KiB max={max} KiB growth={growth} KiB ({:.1} MiB); polite GET worst {worst:?}",
        sent / per,
        sent / 1024,
        t0.elapsed(),
        growth as f64 / 1024.0
    );
    assert!(worst < Duration::from_secs(1), "polite GET took {worst:?}");
    assert!(growth < 64 * 1024, "RSS grew {growth} KiB");
    proxy.assert_healthy();
}

/// Slowloris: clients send a SET frame one byte at a time (every 50 ms in
/// tier 1, every second in tier 2). Nobody else waits for them, and each
/// slow frame is executed once complete.
#[test]
fn slowloris_frames_do_not_block_others() {
    let _g = serial();
    let (_backend, mut proxy, port) = redis_target();
    let (slow_n, gap) = if tier2() {
        (200, Duration::from_secs(1))
    } else {
        (10, Duration::from_millis(50))
    };
    let frames: Vec<Vec<u8>> = (0..slow_n)
        .map(|i| resp_cmd(&[b"SET", format!("slow{i}").as_bytes(), b"patience"]))
        .collect();
    let mut slow: Vec<Client> = (0..slow_n).map(|_| Client::connect(port)).collect();
    let len = frames[0].len();
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    let polite = thread::spawn(move || {
        let mut c = Client::connect(port);
        let (mut ops, mut worst) = (0u64, Duration::ZERO);
        while !st.load(Ordering::Relaxed) {
            let t0 = Instant::now();
            assert_eq!(c.cmds("SET fast 1"), b"+OK\r\n");
            worst = worst.max(t0.elapsed());
            ops += 1;
            thread::sleep(Duration::from_millis(5));
        }
        (ops, worst)
    });
    let t0 = Instant::now();
    for at in 0..len {
        for (c, f) in slow.iter_mut().zip(&frames) {
            // Keys past slow9 make longer frames: their tails go below.
            if let Some(b) = f.get(at) {
                c.send(&[*b]);
            }
        }
        thread::sleep(gap);
    }
    for (c, f) in slow.iter_mut().zip(&frames) {
        if f.len() > len {
            c.send(&f[len..]);
        }
    }
    for (i, c) in slow.iter_mut().enumerate() {
        assert_eq!(c.read_resp(), b"+OK\r\n", "slow client {i}");
    }
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (ops, worst) = polite.join().expect("polite client");
    eprintln!(
        "hostile slowloris: {slow_n} clients, {len}-byte frame at {gap:?}/byte, completed in {took:?}; meanwhile {ops} SETs, worst {worst:?}"
    );
    assert!(ops >= 20, "polite client starved: {ops}");
    assert!(
        worst < Duration::from_millis(500),
        "polite SET took {worst:?}"
    );
    let mut c = Client::connect(port);
    for i in 0..slow_n {
        assert_eq!(
            c.cmd(&[b"GET", format!("slow{i}").as_bytes()]),
            bulk(b"patience")
        );
    }
    proxy.assert_healthy();
}

/// Read everything until the proxy closes (or 5 s pass); (bytes, closed).
fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut out = Vec::new();
    let mut tmp = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        match s.read(&mut tmp) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => {}
        }
    }
    (out, false)
}

/// Length headers no request can honour (4 GiB, i64::MAX, past i64, a
/// negative bulk, a multibulk of i64::MAX elements): `-ERR Protocol error:
/// ...` then close, no allocation (RSS flat), the proxy alive and serving.
#[test]
fn absurd_lengths_are_protocol_errors() {
    let _g = serial();
    let (_backend, mut proxy, port) = redis_target();
    let (mut other, base) = served_then_rss(&proxy, port);
    let frames: [&[u8]; 7] = [
        b"*1\r\n$4294967296\r\n",
        b"*1\r\n$9223372036854775807\r\n",
        b"*2\r\n$3\r\nGET\r\n$18446744073709551616\r\n",
        b"*9223372036854775807\r\n",
        b"*4294967296\r\n$3\r\nGET\r\n",
        b"*1\r\n$-5\r\n",
        b"*1\r\n$99999999999999999999999999999999\r\n",
    ];
    let rounds = if tier2() { 200 } else { 20 };
    for round in 0..rounds {
        for f in frames {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(f).expect("send");
            let (got, closed) = read_to_close(&mut s);
            let text = String::from_utf8_lossy(&got);
            assert!(
                text.starts_with("-ERR Protocol error: ") && text.ends_with("\r\n"),
                "{:?} (round {round}) answered {text:?}",
                String::from_utf8_lossy(f)
            );
            assert_eq!(
                text.matches("\r\n").count(),
                1,
                "one error line, nothing after"
            );
            assert!(
                closed,
                "{:?}: connection not closed",
                String::from_utf8_lossy(f)
            );
            if round == 0 {
                eprintln!(
                    "hostile length {:?} -> {}",
                    String::from_utf8_lossy(f),
                    text.trim_end()
                );
            }
        }
    }
    let growth = proxy.rss().saturating_sub(base);
    eprintln!(
        "hostile absurd lengths: {} connections, RSS growth {growth} KiB",
        rounds * frames.len()
    );
    assert!(growth < 16 * 1024, "RSS grew {growth} KiB");
    assert_eq!(other.cmds("GET k"), b"$1\r\nv\r\n");
    proxy.assert_healthy();
}

/// Bulk lengths just under the 512 MiB limit with only 64 KiB of data sent:
/// the proxy may reserve address space but must not touch it, so RSS grows
/// by about the bytes actually received, and others are served.
#[test]
fn near_limit_bulk_lengths_cost_only_what_is_sent() {
    let _g = serial();
    let (_backend, mut proxy, port) = redis_target();
    let (mut other, base) = served_then_rss(&proxy, port);
    let n = if tier2() { 256 } else { 32 };
    let mut head = b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$536870000\r\n".to_vec();
    head.extend(std::iter::repeat_n(b'z', 64 * 1024));
    let conns: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(&head).expect("send");
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let growth = proxy.rss().saturating_sub(base);
    eprintln!(
        "hostile near-limit bulk: {n} clients x (512 MiB header + 64 KiB): RSS growth {growth} KiB ({} KiB per client)",
        growth / n as u64
    );
    assert_eq!(other.cmds("GET k"), b"$1\r\nv\r\n");
    assert!(
        growth < (n as u64) * 256 + 16 * 1024,
        "RSS grew {growth} KiB for {n} clients that sent 64 KiB each"
    );
    drop(conns);
    proxy.assert_healthy();
}

/// memcached: a data block of 4 GiB or i64::MAX is refused with a
/// CLIENT_ERROR (never buffered), and the proxy lives.
#[test]
fn memcached_absurd_lengths_are_refused() {
    let _g = serial();
    let mc = Memcached::start();
    let (mut proxy, port) = Twem::capture("m", "  timeout: 2000\n", &[(mc.addr(), "m")]).parts();
    let base = proxy.rss();
    let lines = [
        "set k 0 0 4294967296\r\n",
        "set k 0 0 9223372036854775807\r\n",
        "set k 0 0 99999999999999999999999\r\n",
        "cas k 0 0 4294967296 1\r\n",
        "append k 0 0 -1\r\n",
    ];
    for line in lines.map(str::as_bytes) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(line).expect("send");
        let (got, _closed) = read_to_close(&mut s);
        let text = String::from_utf8_lossy(&got);
        eprintln!(
            "hostile memcached length {:?} -> {:?}",
            String::from_utf8_lossy(line),
            text
        );
        assert!(
            text.starts_with("CLIENT_ERROR ") || text.starts_with("SERVER_ERROR "),
            "{:?} answered {text:?}",
            String::from_utf8_lossy(line)
        );
    }
    let growth = proxy.rss().saturating_sub(base);
    assert!(growth < 16 * 1024, "RSS grew {growth} KiB");
    let mut c = Client::connect(port);
    assert_eq!(c.mc(b"set ok 0 0 1\r\n1\r\n"), b"STORED\r\n");
    proxy.assert_healthy();
}

/// Poll the stats port until the pool reports `want` client connections.
fn wait_clients(p: &ProxyProc, pool: &str, want: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let n = p.stats()[pool]["client_connections"].as_u64().unwrap_or(0);
        if n >= want || Instant::now() > end {
            return n;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Thousands of idle connections: the proxy keeps answering new clients,
/// and the RSS each costs is reported (idle from the start, then idle after
/// one request each).
#[test]
fn idle_connections_rss_per_connection() {
    let _g = serial();
    let limit = open_files_soft_limit().unwrap_or(1024);
    let want = if tier2() { 10_000 } else { 5_000 };
    let n = want.min(limit.saturating_sub(200)) as usize;
    assert!(n >= 500, "open files limit {limit} too low for this test");
    let (_backend, mut proxy, port) = redis_target();
    let mut first = Client::connect(port);
    assert_eq!(first.cmds("PING"), b"+PONG\r\n");
    thread::sleep(Duration::from_millis(200));
    let base = proxy.rss();
    let t0 = Instant::now();
    let mut conns: Vec<Client> = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Client::connect(port));
    }
    let seen = wait_clients(&proxy, "h", n as u64 + 1);
    let opened = t0.elapsed();
    assert!(seen > n as u64, "proxy reports {seen} clients of {}", n + 1);
    thread::sleep(Duration::from_millis(300));
    let idle = proxy.rss();
    // Then every connection makes one request and goes idle again.
    let ping = resp_cmd(&[b"PING"]);
    for c in conns.iter_mut() {
        c.send(&ping);
    }
    for c in conns.iter_mut() {
        assert_eq!(c.read_resp(), b"+PONG\r\n");
    }
    thread::sleep(Duration::from_millis(300));
    let used = proxy.rss();
    let per = |kib: u64| kib.saturating_sub(base) as f64 / n as f64;
    let (per_idle, per_used) = (per(idle), per(used));
    eprintln!(
        "hostile idle: {n} connections opened in {opened:?}; proxy RSS base={base} KiB, idle={idle} KiB ({per_idle:.2} KiB/conn), after one PING each={used} KiB ({per_used:.2} KiB/conn)"
    );
    let mut c = Client::connect(port);
    assert_eq!(c.cmds("PING"), b"+PONG\r\n");
    assert_eq!(c.cmds("SET idle yes"), b"+OK\r\n");
    assert_eq!(c.cmds("GET idle"), b"$3\r\nyes\r\n");
    // The target: an idle client holds no buffer, only its task and socket
    // state (measured ~1.7 KiB idle, ~2.1 KiB after a request, debug and
    // release alike); a kept 8 KiB read buffer would break it.
    assert!(per_idle < 3.0, "{per_idle:.2} KiB per idle connection");
    assert!(
        per_used < 3.0,
        "{per_used:.2} KiB per connection after a request"
    );
    drop(conns);
    proxy.assert_healthy();
}
