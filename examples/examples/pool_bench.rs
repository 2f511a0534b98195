//! Throughput of the embedded [`Pool`] next to the same load through a
//! `twemproxy` process and straight to one redis-server: a fixed number of
//! operations (half `SET`, half `GET` of the key just set, 32-byte values)
//! with 1, 16 and 128 concurrent callers, reported as ops/s in a Markdown
//! table on stdout.
//!
//! ```sh
//! cargo build --release -p twem-server -p twem-examples
//! cargo run --release -p twem-examples --example pool_bench -- --twemproxy target/release/twemproxy
//! ```
//!
//! Options: `--ops N` (operations per run, default 200000), `--shards N`
//! (redis-servers it starts on loopback, default 2), `--twemproxy PATH`
//! (default `$TWEMPROXY_BIN`, else `target/release/twemproxy`),
//! `--concurrency 1,16,128`, `--nutcracker PATH` (default
//! `$NUTCRACKER_BIN`; adds a row for nutcracker itself when given),
//! `--repeat N` (rounds per cell, the fastest reported; default 1). It starts its own redis-servers and twemproxy
//! (killed by pid when it exits) and needs `redis-server` on the PATH.
//!
//! What is compared, with `C` concurrent callers:
//! - *embedded Pool, C tasks*: `C` tokio tasks calling [`RedisClient::set`] /
//!   [`RedisClient::get`](twem_core::pool::RedisClient::get) on one `Pool`
//!   over the shards (one connection per server, shared and pipelined);
//! - *embedded Pool, 1 task*: one task keeping `C` of those calls in flight
//!   (`StreamExt::buffered`), the pool's cost without `C` tasks to wake;
//! - *twemproxy*: a client keeping `C` requests in flight on one connection
//!   to a twemproxy over the same shards;
//! - *nutcracker* (when given): the same client through the C original;
//! - *redis-server direct*: the same client against one of the shards, the
//!   ceiling for a single connection.
//!
//! Everything (servers, proxy, client) shares the machine's cores, so the
//! figures compare configurations on one machine; they are not absolute.

use std::error::Error;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use twem_core::pool::{Pool, RedisClient};
use twem_proto::resp;

type BoxError = Box<dyn Error + Send + Sync>;

const VALUE: &[u8] = b"0123456789abcdef0123456789abcdef";
/// Distinct keys per caller, so the working set stays small and GETs hit.
const KEYS_PER_CALLER: u64 = 1000;

struct Options {
    ops: u64,
    shards: usize,
    twemproxy: PathBuf,
    nutcracker: Option<PathBuf>,
    concurrency: Vec<usize>,
    repeat: usize,
}

fn options() -> Result<Options, BoxError> {
    let mut o = Options {
        ops: 200_000,
        shards: 2,
        twemproxy: std::env::var_os("TWEMPROXY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/release/twemproxy")),
        nutcracker: std::env::var_os("NUTCRACKER_BIN").map(PathBuf::from),
        concurrency: vec![1, 16, 128],
        repeat: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--ops" => o.ops = value()?.parse()?,
            "--shards" => o.shards = value()?.parse()?,
            "--twemproxy" => o.twemproxy = PathBuf::from(value()?),
            "--repeat" => o.repeat = value()?.parse()?,
            "--nutcracker" => o.nutcracker = Some(PathBuf::from(value()?)),
            "--concurrency" => {
                o.concurrency = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown option {other} (see the file's doc)").into()),
        }
    }
    if o.shards == 0 || o.ops == 0 || o.repeat == 0 || o.concurrency.contains(&0) {
        return Err("--ops, --shards, --repeat and every --concurrency must be at least 1".into());
    }
    if !o.twemproxy.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p twem-server`, or pass --twemproxy PATH",
            o.twemproxy.display()
        )
        .into());
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pool_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let o = options()?;
    let dir = TempDir::new()?;
    let mut procs = Vec::new();
    let mut shards = Vec::new();
    for i in 0..o.shards {
        let port = free_port()?;
        let data = dir.0.join(format!("redis{i}"));
        std::fs::create_dir_all(&data)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&data)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        procs.push(Killed(child));
        shards.push(format!("127.0.0.1:{port}"));
    }
    for s in &shards {
        wait_for(s).await?;
    }

    let proxy_port = free_port()?;
    let yaml = pool_yaml(proxy_port, &shards);
    let (child, proxy) = start_proxy(&o.twemproxy, &yaml, &dir.0, "twemproxy").await?;
    procs.push(child);
    let nutcracker = match &o.nutcracker {
        Some(bin) => {
            let port = free_port()?;
            let (child, addr) =
                start_proxy(bin, &pool_yaml(port, &shards), &dir.0, "nutcracker").await?;
            procs.push(child);
            Some(addr)
        }
        None => None,
    };

    let pool = Pool::from_yaml(&yaml, None)?;
    let direct = shards.first().ok_or("no shard")?.clone();

    eprintln!(
        "pool_bench: {} ops per run, {} shard(s), twemproxy {}",
        o.ops,
        o.shards,
        o.twemproxy.display()
    );
    let mut rows: Vec<(String, Vec<f64>)> = vec![
        (
            format!("embedded Pool ({} shards), C tasks", o.shards),
            Vec::new(),
        ),
        (
            format!(
                "embedded Pool ({} shards), 1 task, C calls in flight",
                o.shards
            ),
            Vec::new(),
        ),
        (
            format!("twemproxy ({} shards), 1 connection", o.shards),
            Vec::new(),
        ),
    ];
    if nutcracker.is_some() {
        rows.push((
            format!("nutcracker 0.5.0 ({} shards), 1 connection", o.shards),
            Vec::new(),
        ));
    }
    rows.push(("redis-server direct, 1 connection".to_string(), Vec::new()));
    for &c in &o.concurrency {
        // Best of `repeat` rounds, the rows interleaved within each round, so
        // a burst of other load on the machine hits one round, not one row.
        let mut best = vec![Duration::MAX; rows.len()];
        for _ in 0..o.repeat {
            let mut runs = vec![
                pool_run(pool.redis(), c, o.ops).await?,
                spawned(pool_window_run(pool.redis(), c, o.ops)).await?,
                spawned(window_run(proxy.clone(), c, o.ops)).await?,
            ];
            if let Some(addr) = &nutcracker {
                runs.push(spawned(window_run(addr.clone(), c, o.ops)).await?);
            }
            runs.push(spawned(window_run(direct.clone(), c, o.ops)).await?);
            for (b, took) in best.iter_mut().zip(runs) {
                *b = (*b).min(took);
            }
        }
        for (row, took) in rows.iter_mut().zip(best) {
            let rate = o.ops as f64 / took.as_secs_f64();
            eprintln!("  {:<44} C={c:<4} {rate:>10.0} ops/s", row.0);
            row.1.push(rate);
        }
    }
    pool.close().await;

    println!("| {} ops, half SET half GET | {} |", o.ops, {
        let cols: Vec<String> = o
            .concurrency
            .iter()
            .map(|c| format!("{c} caller{}", if *c == 1 { "" } else { "s" }))
            .collect();
        cols.join(" | ")
    });
    println!("|---|{}", "---:|".repeat(o.concurrency.len()));
    for (name, rates) in rows {
        let cells: Vec<String> = rates
            .iter()
            .map(|r| format!("{} ops/s", group(*r)))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    drop(procs);
    Ok(())
}

/// A one-pool config over `shards` named shard0.., listening on `port`.
fn pool_yaml(port: u16, shards: &[String]) -> String {
    let mut yaml = format!("bench:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n");
    for (i, s) in shards.iter().enumerate() {
        yaml.push_str(&format!("   - {s}:1 shard{i}\n"));
    }
    yaml
}

/// Start a proxy binary (twemproxy or nutcracker, same flags) on `yaml`;
/// returns it and its listen address once it accepts connections.
async fn start_proxy(
    bin: &Path,
    yaml: &str,
    dir: &Path,
    tag: &str,
) -> Result<(Killed, String), BoxError> {
    let conf = dir.join(format!("{tag}.yml"));
    std::fs::write(&conf, yaml)?;
    let port = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("listen: 127.0.0.1:"))
        .ok_or("no listen line")?
        .to_string();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .args(["-s", &free_port()?.to_string(), "-a", "127.0.0.1"])
        .arg("-o")
        .arg(dir.join(format!("{tag}.log")))
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let child = Killed(child);
    let addr = format!("127.0.0.1:{port}");
    wait_for(&addr).await?;
    Ok((child, addr))
}

/// `c` tasks sharing `ops` operations on the pool: SET a key, GET it back.
async fn pool_run(redis: RedisClient, c: usize, ops: u64) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(c);
    for t in 0..c as u64 {
        let redis = redis.clone();
        let n = share(ops, c as u64, t);
        tasks.push(tokio::spawn(async move {
            for i in 0..n / 2 {
                let key = format!("pool:{t}:{}", i % KEYS_PER_CALLER);
                redis.set(key.clone(), VALUE).await?;
                if redis.get(key).await?.as_deref() != Some(VALUE) {
                    return Err("GET did not return the value just set".into());
                }
            }
            // An odd share ends with one more SET.
            if n % 2 == 1 {
                redis.set(format!("pool:{t}:last"), VALUE).await?;
            }
            Ok::<(), BoxError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(start.elapsed())
}

/// Run `f` on a worker thread: the main task of `#[tokio::main]` is driven
/// by `block_on` on its own thread, and every wakeup of it crosses threads,
/// which would handicap whichever client ran there.
async fn spawned<F>(f: F) -> Result<Duration, BoxError>
where
    F: std::future::Future<Output = Result<Duration, BoxError>> + Send + 'static,
{
    tokio::spawn(f).await?
}

/// One task keeping `c` pool calls in flight (`buffered` polls them in
/// order), alternating SET and GET of the same key: the pool's own cost
/// without `c` tasks to wake.
async fn pool_window_run(redis: RedisClient, c: usize, ops: u64) -> Result<Duration, BoxError> {
    use futures::StreamExt;
    let start = Instant::now();
    let mut replies = futures::stream::iter(0..ops)
        .map(|i| {
            let redis = redis.clone();
            async move {
                let key = format!("pw:{}", (i / 2) % (KEYS_PER_CALLER * 16));
                if i % 2 == 0 {
                    redis.set(key, VALUE).await.map(|()| true)
                } else {
                    redis.get(key).await.map(|v| v.as_deref() == Some(VALUE))
                }
            }
        })
        .buffered(c);
    while let Some(r) = replies.next().await {
        if !r? {
            return Err("GET did not return the value just set".into());
        }
    }
    Ok(start.elapsed())
}

/// Caller `t`'s share of `ops` split over `c` callers.
fn share(ops: u64, c: u64, t: u64) -> u64 {
    ops / c + u64::from(t < ops % c)
}

/// One connection to `addr` keeping up to `c` requests in flight, `ops`
/// requests in all (alternating SET and GET of the same key); every reply is
/// checked.
async fn window_run(addr: String, c: usize, ops: u64) -> Result<Duration, BoxError> {
    let mut sock = TcpStream::connect(&addr).await?;
    sock.set_nodelay(true)?;
    let mut codec = resp::ReplyCodec::default();
    let (mut wbuf, mut rbuf) = (BytesMut::new(), BytesMut::with_capacity(64 * 1024));
    let (mut sent, mut received, mut in_flight) = (0u64, 0u64, 0usize);
    let start = Instant::now();
    while received < ops {
        while in_flight < c && sent < ops {
            let key = format!("win:{}", (sent / 2) % (KEYS_PER_CALLER * 16));
            put_request(&mut wbuf, sent % 2 == 0, key.as_bytes());
            sent += 1;
            in_flight += 1;
        }
        if !wbuf.is_empty() {
            sock.write_all(&wbuf).await?;
            wbuf.clear();
        }
        if sock.read_buf(&mut rbuf).await? == 0 {
            return Err(format!("{addr} closed the connection").into());
        }
        while let Some(frame) = codec.decode(&mut rbuf)? {
            let ok = match frame.kind() {
                b'+' => &frame.raw()[..] == b"+OK\r\n",
                b'$' => frame.raw().ends_with(b"abcdef\r\n"),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "{addr}: unexpected reply {:?}",
                    String::from_utf8_lossy(frame.raw())
                )
                .into());
            }
            received += 1;
            in_flight -= 1;
        }
    }
    Ok(start.elapsed())
}

fn put_request(buf: &mut BytesMut, set: bool, key: &[u8]) {
    let key = Bytes::copy_from_slice(key);
    let req = if set {
        resp::Request::from_args([Bytes::from_static(b"SET"), key, Bytes::from_static(VALUE)])
    } else {
        resp::Request::from_args([Bytes::from_static(b"GET"), key])
    };
    buf.extend_from_slice(req.wire());
}

/// 123456.7 -> "123,457".
fn group(r: f64) -> String {
    let digits = format!("{:.0}", r);
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn free_port() -> Result<u16, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_for(addr: &str) -> Result<(), BoxError> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("nothing listening on {addr} after 10 s").into())
}

/// A child process killed and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("twem-pool-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Path::new(&self.0));
    }
}
