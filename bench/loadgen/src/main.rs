//! `twem-load`: the load and memory probes of `bench/run.sh`.
//!
//! ```text
//! twem-load mc    --port P --test get|set|mget [--clients 50] [--pipeline 1] [--requests 100000]
//!                 [--keyspace 100000] [--value-size 3] [--mget-keys 10] [--seed 1] [--host 127.0.0.1]
//! twem-load idle  --port P --pid PID [--conns 2000] [--settle-ms 1000]
//! twem-load flood --port P --pid PID [--count 400] [--value-size 1048576] [--hold-ms 3000] [--sample-ms 20]
//! ```
//! Each prints a CSV header and one row; `mc` prints `redis-benchmark --csv`'s columns.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use twem_load::args::Args;
use twem_load::memcache::{self, LoadSpec, Test};
use twem_load::stats::{csv_row, CSV_HEADER};
use twem_load::{probe, Error};

fn addr(a: &Args) -> Result<SocketAddr, Error> {
    let host: IpAddr = a
        .str_or("host", "127.0.0.1")
        .parse()
        .map_err(|_| Error::Usage("--host wants an IP address".into()))?;
    // The benchmark only ever targets this machine.
    if !host.is_loopback() {
        return Err(Error::Usage(format!(
            "--host {host} is not a loopback address"
        )));
    }
    let port = u16::try_from(a.u64_required("port")?)
        .map_err(|_| Error::Usage("--port is out of range".into()))?;
    Ok(SocketAddr::new(host, port))
}

fn pid(a: &Args) -> Result<u32, Error> {
    u32::try_from(a.u64_required("pid")?).map_err(|_| Error::Usage("--pid is out of range".into()))
}

fn usize_of(v: u64, name: &str) -> Result<usize, Error> {
    usize::try_from(v).map_err(|_| Error::Usage(format!("--{name} is too large")))
}

fn run(argv: Vec<String>) -> Result<(), Error> {
    let mut it = argv.into_iter().skip(1);
    let cmd = it.next().unwrap_or_default();
    let rest: Vec<String> = it.collect();
    match cmd.as_str() {
        "mc" => {
            let a = Args::parse(
                rest,
                &[
                    "host", "port", "test", "clients", "pipeline", "requests", "keyspace",
                    "value-size", "mget-keys", "seed",
                ],
            )?;
            let spec = LoadSpec {
                addr: addr(&a)?,
                test: Test::parse(a.str_or("test", "get"))?,
                clients: usize_of(a.u64_or("clients", 50)?, "clients")?,
                pipeline: usize_of(a.u64_or("pipeline", 1)?, "pipeline")?,
                requests: a.u64_or("requests", 100_000)?,
                keyspace: a.u64_or("keyspace", 100_000)?,
                value_size: usize_of(a.u64_or("value-size", 3)?, "value-size")?,
                mget_keys: usize_of(a.u64_or("mget-keys", 10)?, "mget-keys")?,
                seed: a.u64_or("seed", 1)?,
            };
            let (summary, first_error) = memcache::run(&spec)?;
            println!("{CSV_HEADER}");
            println!("{}", csv_row(&spec.test.label(spec.mget_keys), &summary));
            if summary.errors > 0 {
                return Err(Error::Protocol(format!(
                    "{} of {} replies were errors, first: {}",
                    summary.errors,
                    summary.count,
                    first_error.unwrap_or_default()
                )));
            }
            Ok(())
        }
        "idle" => {
            let a = Args::parse(rest, &["host", "port", "pid", "conns", "settle-ms"])?;
            let r = probe::idle(
                addr(&a)?,
                pid(&a)?,
                a.u64_or("conns", 2000)?,
                Duration::from_millis(a.u64_or("settle-ms", 1000)?),
            )?;
            println!("\"conns\",\"rss_before_kib\",\"rss_after_kib\",\"kib_per_conn\"");
            println!(
                "\"{}\",\"{}\",\"{}\",\"{:.3}\"",
                r.conns,
                r.before_kib,
                r.after_kib,
                r.kib_per_conn()
            );
            Ok(())
        }
        "flood" => {
            let a = Args::parse(
                rest,
                &["host", "port", "pid", "count", "value-size", "hold-ms", "sample-ms", "key"],
            )?;
            let r = probe::flood(
                addr(&a)?,
                pid(&a)?,
                a.str_or("key", "bench:big"),
                a.u64_or("value-size", 1 << 20)?,
                a.u64_or("count", 400)?,
                Duration::from_millis(a.u64_or("hold-ms", 3000)?),
                Duration::from_millis(a.u64_or("sample-ms", 20)?.max(1)),
            )?;
            println!("\"count\",\"value_bytes\",\"rss_before_kib\",\"rss_peak_kib\",\"rss_after_close_kib\",\"growth_kib\"");
            println!(
                "\"{}\",\"{}\",\"{}\",\"{}\",\"{}\",\"{}\"",
                r.count,
                r.value_bytes,
                r.before_kib,
                r.peak_kib,
                r.after_close_kib,
                r.growth_kib()
            );
            Ok(())
        }
        _ => Err(Error::Usage(
            "twem-load mc|idle|flood --port P [...]: see the doc comment of bench/loadgen/src/main.rs".into(),
        )),
    }
}

fn main() -> ExitCode {
    match run(std::env::args().collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twem-load: {e}");
            ExitCode::FAILURE
        }
    }
}
