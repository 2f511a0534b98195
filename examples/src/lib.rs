//! Runnable examples live in `examples/`; this crate only hosts them, and the
//! few lines the embedding examples share.

use std::collections::BTreeMap;
use std::error::Error;
use std::future::Future;
use std::process::ExitCode;

use twem_core::pool::Pool;

/// The `main` of an example run over the servers named on its command line
/// (`HOST:PORT...`): exit 2 with a usage line when there are none, 1 with
/// the error when `run` fails, 0 when it succeeds.
pub async fn main_over_servers<F, Fut>(example: &str, run: F) -> ExitCode
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = Result<(), Box<dyn Error>>>,
{
    let addrs: Vec<String> = std::env::args().skip(1).collect();
    if addrs.is_empty() {
        eprintln!("usage: {example} HOST:PORT [HOST:PORT...]");
        return ExitCode::from(2);
    }
    match run(addrs).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{example}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Print how many of `keys` each server of `pool` holds, under `heading`.
pub fn print_spread(pool: &Pool, keys: &[String], heading: &str) -> Result<(), Box<dyn Error>> {
    let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
    for k in keys {
        let server = pool
            .server_for(k.as_bytes())
            .ok_or("no live server in the pool")?;
        *per_server.entry(server).or_default() += 1;
    }
    println!("{heading}");
    for (server, n) in &per_server {
        println!("  {server:<22} {n} keys");
    }
    Ok(())
}
