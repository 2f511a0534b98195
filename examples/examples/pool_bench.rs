//! Throughput of the embedded [`Pool`] next to the same load through a
//! `twemproxy` process, straight to one redis-server, and through redis-rs's
//! `MultiplexedConnection` (straight and through the twemproxy): half `SET`,
//! half `GET` of the key just set, 32-byte values, with 1, 16 and 128
//! concurrent callers, reported as ops/s in a Markdown table on stdout,
//! followed by the ratios of the embedded Pool to redis-rs.
//!
//! ```sh
//! cargo build --release -p twem-server -p twem-examples
//! cargo run --release -p twem-examples --example pool_bench -- --twemproxy target/release/twemproxy
//! # issue #15's comparison (what bench/embedded.sh runs): the Pool and
//! # redis-rs only, 2 s per run, 5 alternating rounds, medians
//! cargo run --release -p twem-examples --example pool_bench -- \
//!     --rows pool,redis-rs,redis-rs-twemproxy --seconds 2 --repeat 5 --stat median
//! ```
//!
//! Options: `--ops N` (operations per run, default 200000), `--seconds S`
//! (each run lasts S seconds instead of a fixed number of operations),
//! `--shards N` (redis-servers it starts on loopback, default 2),
//! `--twemproxy PATH` (default `$TWEMPROXY_BIN`, else
//! `target/release/twemproxy`), `--twemproxy-args "ARGS"` (extra flags for
//! it, split on spaces; default none: its default flags),
//! `--concurrency 1,16,128`, `--nutcracker PATH` (default `$NUTCRACKER_BIN`;
//! adds a row for nutcracker itself when given), `--repeat N` (rounds per
//! cell, default 1), `--stat best|median` (which round each cell reports,
//! default best), `--rows LIST` (the rows to run, by the ids below; default
//! all). It starts its own redis-servers and twemproxy (killed by pid when it
//! exits) and needs `redis-server` on the PATH.
//!
//! What is compared, with `C` concurrent callers (row ids in brackets):
//! - *embedded Pool, C tasks* [`pool`]: `C` tokio tasks calling
//!   [`RedisClient::set`] / [`RedisClient::get`](twem_core::pool::RedisClient::get)
//!   on one `Pool` over the shards (one connection per server, shared and
//!   pipelined);
//! - *embedded Pool, 1 task* [`pool-1task`]: one task keeping `C` of those
//!   calls in flight (`StreamExt::buffered`), the pool's cost without `C`
//!   tasks to wake;
//! - *redis-rs MultiplexedConnection, C tasks, to one redis-server*
//!   [`redis-rs`]: `C` tasks sharing clones of one redis-rs 1.x
//!   `MultiplexedConnection` (its defaults, so a 500 ms response timeout per
//!   call) to the first shard: what an application uses without twem;
//! - *redis-rs MultiplexedConnection, C tasks, through twemproxy*
//!   [`redis-rs-twemproxy`]: the same to the twemproxy process over the same
//!   shards: the hop the embedded Pool replaces;
//! - *twemproxy* [`twemproxy`]: a client keeping `C` requests in flight on
//!   one connection to a twemproxy over the same shards;
//! - *nutcracker* [`nutcracker`] (when given): the same client through the C
//!   original;
//! - *redis-server direct* [`direct`]: the same client against one of the
//!   shards, the ceiling for a single connection.
//!
//! All of it runs on `#[tokio::main]`, tokio's default multi-thread runtime,
//! as an application would. Within a round the rows run one after the other,
//! in an order that rotates every round, so a burst of other load on the
//! machine hits one round of each row rather than one row. The ratios
//! (Pool / redis-rs) are the median over rounds of the ratio within a
//! round. Everything (servers, proxy, client) shares the machine's cores, so
//! the figures compare configurations on one machine; they are not absolute.

use std::error::Error;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use twem_core::pool::{Pool, RedisClient};
use twem_proto::resp;

type BoxError = Box<dyn Error + Send + Sync>;

const VALUE: &[u8] = b"0123456789abcdef0123456789abcdef";
/// Distinct keys per caller, so the working set stays small and GETs hit.
const KEYS_PER_CALLER: u64 = 1000;

/// How long one run of one row lasts.
#[derive(Clone, Copy, Debug)]
enum Budget {
    /// This many operations, shared among the callers.
    Ops(u64),
    /// Callers keep going until this much time has passed.
    Time(Duration),
}

/// When one caller stops: after its share of operations, or at a deadline.
#[derive(Clone, Copy, Debug)]
enum Quota {
    Ops(u64),
    Until(Instant),
}

impl Quota {
    /// Caller `t` of `c`'s quota under `budget`, for a run started at `start`.
    fn of(budget: Budget, start: Instant, c: u64, t: u64) -> Quota {
        match budget {
            Budget::Ops(ops) => Quota::Ops(ops / c + u64::from(t < ops % c)),
            Budget::Time(d) => Quota::Until(start + d),
        }
    }

    /// Whether a caller that has done `done` operations does another.
    fn more(&self, done: u64) -> bool {
        match *self {
            Quota::Ops(n) => done < n,
            Quota::Until(deadline) => Instant::now() < deadline,
        }
    }
}

/// What one run did: operations completed and the time they took.
#[derive(Clone, Copy, Debug)]
struct Run {
    ops: u64,
    took: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.took.as_secs_f64()
    }
}

/// Which cell of a row each table shows when there are several rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stat {
    Best,
    Median,
}

/// The rows, in table order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Row {
    PoolTasks,
    PoolOneTask,
    RedisRsDirect,
    RedisRsTwemproxy,
    Twemproxy,
    Nutcracker,
    Direct,
}

impl Row {
    const ALL: [Row; 7] = [
        Row::PoolTasks,
        Row::PoolOneTask,
        Row::RedisRsDirect,
        Row::RedisRsTwemproxy,
        Row::Twemproxy,
        Row::Nutcracker,
        Row::Direct,
    ];

    /// The id `--rows` takes.
    fn id(self) -> &'static str {
        match self {
            Row::PoolTasks => "pool",
            Row::PoolOneTask => "pool-1task",
            Row::RedisRsDirect => "redis-rs",
            Row::RedisRsTwemproxy => "redis-rs-twemproxy",
            Row::Twemproxy => "twemproxy",
            Row::Nutcracker => "nutcracker",
            Row::Direct => "direct",
        }
    }

    fn label(self, shards: usize) -> String {
        match self {
            Row::PoolTasks => format!("embedded Pool ({shards} shards), C tasks"),
            Row::PoolOneTask => {
                format!("embedded Pool ({shards} shards), 1 task, C calls in flight")
            }
            Row::RedisRsDirect => {
                "redis-rs MultiplexedConnection, C tasks, one redis-server".to_string()
            }
            Row::RedisRsTwemproxy => {
                format!("redis-rs MultiplexedConnection, C tasks, via twemproxy ({shards} shards)")
            }
            Row::Twemproxy => format!("twemproxy ({shards} shards), 1 connection"),
            Row::Nutcracker => format!("nutcracker 0.5.0 ({shards} shards), 1 connection"),
            Row::Direct => "redis-server direct, 1 connection".to_string(),
        }
    }

    fn from_id(id: &str) -> Option<Row> {
        Row::ALL.into_iter().find(|r| r.id() == id)
    }
}

struct Options {
    budget: Budget,
    shards: usize,
    twemproxy: PathBuf,
    twemproxy_args: Vec<String>,
    nutcracker: Option<PathBuf>,
    concurrency: Vec<usize>,
    repeat: usize,
    stat: Stat,
    rows: Vec<Row>,
}

fn options() -> Result<Options, BoxError> {
    let mut ops = 200_000u64;
    let mut seconds: Option<f64> = None;
    let mut rows: Option<Vec<Row>> = None;
    let mut o = Options {
        budget: Budget::Ops(ops),
        shards: 2,
        twemproxy: std::env::var_os("TWEMPROXY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/release/twemproxy")),
        twemproxy_args: Vec::new(),
        nutcracker: std::env::var_os("NUTCRACKER_BIN").map(PathBuf::from),
        concurrency: vec![1, 16, 128],
        repeat: 1,
        stat: Stat::Best,
        rows: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--ops" => ops = value()?.parse()?,
            "--seconds" => seconds = Some(value()?.parse()?),
            "--shards" => o.shards = value()?.parse()?,
            "--twemproxy" => o.twemproxy = PathBuf::from(value()?),
            "--twemproxy-args" => {
                o.twemproxy_args = value()?.split_whitespace().map(String::from).collect()
            }
            "--repeat" => o.repeat = value()?.parse()?,
            "--nutcracker" => o.nutcracker = Some(PathBuf::from(value()?)),
            "--stat" => {
                o.stat = match value()?.as_str() {
                    "best" => Stat::Best,
                    "median" => Stat::Median,
                    other => return Err(format!("--stat {other}: best or median").into()),
                }
            }
            "--rows" => {
                rows = Some(
                    value()?
                        .split(',')
                        .map(|id| {
                            Row::from_id(id).ok_or_else(|| {
                                let ids: Vec<_> = Row::ALL.iter().map(|r| r.id()).collect();
                                format!("--rows: no row {id:?} (rows: {})", ids.join(", "))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            "--concurrency" => {
                o.concurrency = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown option {other} (see the file's doc)").into()),
        }
    }
    if o.shards == 0 || ops == 0 || o.repeat == 0 || o.concurrency.contains(&0) {
        return Err("--ops, --shards, --repeat and every --concurrency must be at least 1".into());
    }
    o.budget = match seconds {
        Some(s) if s.is_finite() && s > 0.0 => Budget::Time(Duration::from_secs_f64(s)),
        Some(s) => return Err(format!("--seconds {s}: must be more than 0").into()),
        None => Budget::Ops(ops),
    };
    o.rows = match rows {
        Some(rows) => {
            if rows.contains(&Row::Nutcracker) && o.nutcracker.is_none() {
                return Err("--rows nutcracker needs --nutcracker PATH".into());
            }
            // Table order, each once, whatever order they were given in.
            Row::ALL.into_iter().filter(|r| rows.contains(r)).collect()
        }
        None => Row::ALL
            .into_iter()
            .filter(|r| *r != Row::Nutcracker || o.nutcracker.is_some())
            .collect(),
    };
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

/// What the rows run against: the pool, the processes' addresses and the
/// redis-rs connections.
struct Targets {
    pool: Pool,
    proxy: String,
    nutcracker: Option<String>,
    direct: String,
    rr_direct: Option<MultiplexedConnection>,
    rr_proxy: Option<MultiplexedConnection>,
}

impl Targets {
    /// One run of `row` with `c` callers.
    async fn run(&self, row: Row, c: usize, budget: Budget) -> Result<Run, BoxError> {
        match row {
            Row::PoolTasks => pool_run(self.pool.redis(), c, budget).await,
            Row::PoolOneTask => spawned(pool_window_run(self.pool.redis(), c, budget)).await,
            Row::RedisRsDirect => {
                let conn = self.rr_direct.clone().ok_or("no redis-rs connection")?;
                redis_rs_run(conn, "rr", c, budget).await
            }
            Row::RedisRsTwemproxy => {
                let conn = self.rr_proxy.clone().ok_or("no redis-rs connection")?;
                redis_rs_run(conn, "rrp", c, budget).await
            }
            Row::Twemproxy => spawned(window_run(self.proxy.clone(), c, budget)).await,
            Row::Nutcracker => {
                let addr = self.nutcracker.clone().ok_or("no nutcracker")?;
                spawned(window_run(addr, c, budget)).await
            }
            Row::Direct => spawned(window_run(self.direct.clone(), c, budget)).await,
        }
    }
}

/// A redis-rs `MultiplexedConnection` to `addr`, with redis-rs's defaults.
async fn redis_rs_connect(addr: &str) -> Result<MultiplexedConnection, BoxError> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    Ok(client.get_multiplexed_async_connection().await?)
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
    let (child, proxy) =
        start_proxy(&o.twemproxy, &o.twemproxy_args, &yaml, &dir.0, "twemproxy").await?;
    procs.push(child);
    let nutcracker = match (&o.nutcracker, o.rows.contains(&Row::Nutcracker)) {
        (Some(bin), true) => {
            let port = free_port()?;
            let (child, addr) =
                start_proxy(bin, &[], &pool_yaml(port, &shards), &dir.0, "nutcracker").await?;
            procs.push(child);
            Some(addr)
        }
        _ => None,
    };

    let direct = shards.first().ok_or("no shard")?.clone();
    let rr_direct = match o.rows.contains(&Row::RedisRsDirect) {
        true => Some(redis_rs_connect(&direct).await?),
        false => None,
    };
    let rr_proxy = match o.rows.contains(&Row::RedisRsTwemproxy) {
        true => Some(redis_rs_connect(&proxy).await?),
        false => None,
    };
    let targets = Targets {
        pool: Pool::from_yaml(&yaml, None)?,
        proxy,
        nutcracker,
        direct,
        rr_direct,
        rr_proxy,
    };

    eprintln!(
        "pool_bench: {} per run, {} round(s) ({} reported), {} shard(s), twemproxy {}{}",
        match o.budget {
            Budget::Ops(n) => format!("{n} ops"),
            Budget::Time(d) => format!("{:.1} s", d.as_secs_f64()),
        },
        o.repeat,
        match o.stat {
            Stat::Best => "best",
            Stat::Median => "median",
        },
        o.shards,
        o.twemproxy.display(),
        if o.twemproxy_args.is_empty() {
            String::new()
        } else {
            format!(" {}", o.twemproxy_args.join(" "))
        }
    );
    // rates[row][concurrency][round]
    let mut rates = vec![vec![Vec::new(); o.concurrency.len()]; o.rows.len()];
    let mut turn = 0;
    for (ci, &c) in o.concurrency.iter().enumerate() {
        for round in 0..o.repeat {
            for k in 0..o.rows.len() {
                let ri = (k + turn) % o.rows.len();
                let run = targets.run(o.rows[ri], c, o.budget).await?;
                eprintln!(
                    "  {:<66} C={c:<4} round {} {:>10.0} ops/s",
                    o.rows[ri].label(o.shards),
                    round + 1,
                    run.rate()
                );
                rates[ri][ci].push(run.rate());
            }
            turn += 1;
        }
    }
    targets.pool.close().await;

    let what = match o.budget {
        Budget::Ops(n) => format!("{n} ops"),
        Budget::Time(d) => format!("{:.1} s", d.as_secs_f64()),
    };
    let stat = match o.stat {
        Stat::Best => "best",
        Stat::Median => "median",
    };
    println!(
        "| {what} per run, half SET half GET, {stat} of {} round(s) | {} |",
        o.repeat,
        o.concurrency
            .iter()
            .map(|c| format!("{c} caller{}", if *c == 1 { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---:|".repeat(o.concurrency.len()));
    for (ri, row) in o.rows.iter().enumerate() {
        let cells: Vec<String> = rates[ri]
            .iter()
            .map(|r| format!("{} ops/s", group(pick(r, o.stat))))
            .collect();
        println!("| {} | {} |", row.label(o.shards), cells.join(" | "));
    }

    let index = |row: Row| o.rows.iter().position(|r| *r == row);
    if let Some(pool) = index(Row::PoolTasks) {
        let peers = [
            (
                Row::RedisRsDirect,
                "redis-rs MultiplexedConnection straight to one redis-server",
                0.8,
            ),
            (
                Row::RedisRsTwemproxy,
                "redis-rs MultiplexedConnection through twemproxy",
                1.0,
            ),
        ];
        let peers: Vec<_> = peers
            .into_iter()
            .filter_map(|(row, name, target)| index(row).map(|i| (i, name, target)))
            .collect();
        if !peers.is_empty() {
            println!();
            println!(
                "| embedded Pool (C tasks) over: median of per-round ratios | {} |",
                o.concurrency
                    .iter()
                    .map(|c| format!("C = {c}"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            println!("|---|{}", "---:|".repeat(o.concurrency.len()));
            for (peer, name, target) in peers {
                let cells: Vec<String> = (0..o.concurrency.len())
                    .map(|ci| {
                        let r = paired_ratio(&rates[pool][ci], &rates[peer][ci]);
                        let verdict = if r >= target { "met" } else { "**missed**" };
                        format!("{r:.2}x ({verdict})")
                    })
                    .collect();
                println!(
                    "| {name} (target >= {target:.1}x) | {} |",
                    cells.join(" | ")
                );
            }
        }
    }
    drop(procs);
    Ok(())
}

/// The cell a row shows for one concurrency: the best or the median round.
fn pick(rates: &[f64], stat: Stat) -> f64 {
    match stat {
        Stat::Best => rates.iter().copied().fold(0.0, f64::max),
        Stat::Median => median(rates.to_vec()),
    }
}

/// The median over rounds of `a[i] / b[i]`: both ran in the same round, a
/// few seconds apart, so each ratio saw about the same load from the rest
/// of the machine.
fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| x / y).collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A one-pool config over `shards` named shard0.., listening on `port`.
fn pool_yaml(port: u16, shards: &[String]) -> String {
    let mut yaml = format!("bench:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n");
    for (i, s) in shards.iter().enumerate() {
        yaml.push_str(&format!("   - {s}:1 shard{i}\n"));
    }
    yaml
}

/// Start a proxy binary (twemproxy or nutcracker, same flags, `extra`
/// added) on `yaml`; returns it and its listen address once it accepts
/// connections.
async fn start_proxy(
    bin: &Path,
    extra: &[String],
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
        .args(extra)
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

/// `c` spawned tasks, task `t` running `body(t, its quota)`, which returns
/// the operations it did; the run ends when the last task does.
async fn tasks_run<F, Fut>(c: usize, budget: Budget, body: F) -> Result<Run, BoxError>
where
    F: Fn(u64, Quota) -> Fut,
    Fut: Future<Output = Result<u64, BoxError>> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..c as u64)
        .map(|t| tokio::spawn(body(t, Quota::of(budget, start, c as u64, t))))
        .collect();
    let mut ops = 0;
    for task in tasks {
        ops += task.await??;
    }
    Ok(Run {
        ops,
        took: start.elapsed(),
    })
}

/// `c` tasks on the pool, each looping SET a key, GET it back.
async fn pool_run(redis: RedisClient, c: usize, budget: Budget) -> Result<Run, BoxError> {
    tasks_run(c, budget, |t, quota| {
        let redis = redis.clone();
        async move {
            let mut done = 0u64;
            while quota.more(done) {
                let key = format!("pool:{t}:{}", (done / 2) % KEYS_PER_CALLER);
                redis.set(key.clone(), VALUE).await?;
                done += 1;
                // An odd share ends with one more SET.
                if !quota.more(done) {
                    break;
                }
                if redis.get(key).await?.as_deref() != Some(VALUE) {
                    return Err("GET did not return the value just set".into());
                }
                done += 1;
            }
            Ok(done)
        }
    })
    .await
}

/// `c` tasks sharing one redis-rs `MultiplexedConnection` (each a clone, as
/// redis-rs means it to be shared), each looping SET a key, GET it back.
async fn redis_rs_run(
    conn: MultiplexedConnection,
    prefix: &'static str,
    c: usize,
    budget: Budget,
) -> Result<Run, BoxError> {
    tasks_run(c, budget, |t, quota| {
        let mut conn = conn.clone();
        async move {
            let mut done = 0u64;
            while quota.more(done) {
                let key = format!("{prefix}:{t}:{}", (done / 2) % KEYS_PER_CALLER);
                let () = conn.set(&key, VALUE).await?;
                done += 1;
                if !quota.more(done) {
                    break;
                }
                let got: Option<Vec<u8>> = conn.get(&key).await?;
                if got.as_deref() != Some(VALUE) {
                    return Err("GET did not return the value just set".into());
                }
                done += 1;
            }
            Ok(done)
        }
    })
    .await
}

/// Run `f` on a worker thread: the main task of `#[tokio::main]` is driven
/// by `block_on` on its own thread, and every wakeup of it crosses threads,
/// which would handicap whichever client ran there.
async fn spawned<F>(f: F) -> Result<Run, BoxError>
where
    F: Future<Output = Result<Run, BoxError>> + Send + 'static,
{
    tokio::spawn(f).await?
}

/// One task keeping `c` pool calls in flight (`buffered` polls them in
/// order), alternating SET and GET of the same key: the pool's own cost
/// without `c` tasks to wake.
async fn pool_window_run(redis: RedisClient, c: usize, budget: Budget) -> Result<Run, BoxError> {
    use futures::StreamExt;
    let start = Instant::now();
    let quota = Quota::of(budget, start, 1, 0);
    // Lazily: `buffered` asks for the next call only when one completes.
    let calls = (0u64..).take_while(move |i| quota.more(*i));
    let mut replies = futures::stream::iter(calls)
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
    let mut ops = 0;
    while let Some(r) = replies.next().await {
        if !r? {
            return Err("GET did not return the value just set".into());
        }
        ops += 1;
    }
    Ok(Run {
        ops,
        took: start.elapsed(),
    })
}

/// One connection to `addr` keeping up to `c` requests in flight
/// (alternating SET and GET of the same key) until the budget is spent;
/// every reply is checked.
async fn window_run(addr: String, c: usize, budget: Budget) -> Result<Run, BoxError> {
    let mut sock = TcpStream::connect(&addr).await?;
    sock.set_nodelay(true)?;
    let mut codec = resp::ReplyCodec::default();
    let (mut wbuf, mut rbuf) = (BytesMut::new(), BytesMut::with_capacity(64 * 1024));
    let (mut sent, mut received, mut in_flight) = (0u64, 0u64, 0usize);
    let start = Instant::now();
    let quota = Quota::of(budget, start, 1, 0);
    loop {
        while in_flight < c && quota.more(sent) {
            let key = format!("win:{}", (sent / 2) % (KEYS_PER_CALLER * 16));
            put_request(&mut wbuf, sent % 2 == 0, key.as_bytes());
            sent += 1;
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
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
    Ok(Run {
        ops: received,
        took: start.elapsed(),
    })
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
