//! # twem-server
//!
//! The library behind the `twemproxy` binary: nutcracker's command line,
//! listeners (each accepted client is served by `twem_core::session`), the
//! stats port and signal handling. `main`
//! only calls [`run`].
//!
//! ```text
//! cargo build --release -p twem-server
//! target/release/twemproxy -c examples/conf/nutcracker.yml
//! ```
#![forbid(unsafe_code)]
// Outside tests, failures are values, not panics.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod backoff;
pub mod cli;
pub mod conf;
pub mod fdlimit;
pub mod listener;
pub mod locate;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub use twem_core::session;
pub mod stats;
pub mod workers;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cli::Cli;

/// Run the binary with parsed options; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    if cli.version {
        // nutcracker writes its version to stderr; scripts capture it there.
        eprint!("{}", Cli::version_text());
        return 0;
    }
    if cli.describe_stats {
        // On stderr, as nutcracker prints it.
        eprint!("{}", Cli::version_text());
        eprint!("\n{}", stats::describe());
        return 0;
    }
    let conf_shown = cli.conf_file.display().to_string();
    let config = match conf::load(&cli.conf_file) {
        Ok(c) => c,
        Err(e) => {
            // Every problem on its own line (pool and key named), then
            // nutcracker's summary line.
            eprintln!("{e}");
            eprintln!("nutcracker: configuration file '{conf_shown}' syntax is invalid");
            return 1;
        }
    };
    if cli.test_conf {
        eprintln!("nutcracker: configuration file '{conf_shown}' syntax is ok");
        return 0;
    }
    if cli.locate {
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        return match locate::run(
            &config,
            cli.pool.as_deref(),
            cli.hex,
            &cli.eject,
            stdin.lock(),
            stdout.lock(),
        ) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("twemproxy: {e}");
                1
            }
        };
    }

    // Every path is made absolute here, before daemon() changes directory
    // to `/`: a relative `-c` resolved later made every reload read
    // `/<name>`.
    let abs = |p: &Path| -> PathBuf { std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()) };
    let output = cli.output.as_deref().map(abs);
    let pid_file = cli.pid_file.as_deref().map(abs);
    let conf_file = abs(&cli.conf_file);
    if cli.daemonize {
        // Before any thread exists: fork() in a multi-threaded process is unsafe.
        if let Err(e) = nix::unistd::daemon(false, false) {
            eprintln!("twemproxy: daemonize failed: {e}");
            return 1;
        }
    }
    let logger = match logging::Logger::init(cli.verbose, output.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("twemproxy: cannot open log file: {e}");
            return 1;
        }
    };
    // Thread-per-core: one single-threaded event loop per worker, no work
    // stealing (see `workers`). With one worker there is no control thread
    // either: everything runs on one current-thread runtime, nutcracker's
    // single event loop. With more, the control runtime (accept loops,
    // signals, reload, drain) runs on this thread and hands each client to
    // a worker, whose thread also runs the backend connections its clients
    // use: a request never wakes another thread.
    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let workers = if threads > 1 {
        match workers::Workers::start(threads) {
            Ok(w) => Some(std::sync::Arc::new(w)),
            Err(e) => {
                eprintln!("twemproxy: cannot start the worker threads: {e}");
                return 1;
            }
        }
    } else {
        // This thread is the one worker: pools keep its connection set and
        // one for the blocking threads a reload plans on.
        twem_core::worker::set_count(1);
        twem_core::worker::enter(0);
        None
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("twem-worker")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twemproxy: cannot start the runtime: {e}");
            return 1;
        }
    };
    let opts = proxy::Options {
        stats_addr: cli.stats_addr.clone(),
        stats_port: cli.stats_port,
        stats_interval: Duration::from_millis(cli.stats_interval),
        pid_file,
        shutdown_grace: Duration::from_millis(cli.shutdown_grace),
        conf_file: Some(conf_file),
        metrics_addr: cli.metrics_addr.clone(),
        workers: workers.clone(),
    };
    let res = rt.block_on(proxy::serve(config, opts, logger));
    rt.shutdown_timeout(Duration::from_millis(100));
    if let Some(w) = workers.and_then(std::sync::Arc::into_inner) {
        w.stop();
    }
    match res {
        Ok(()) => 0,
        Err(e) => {
            // Once: the log goes to stderr unless `-o` names a file, and
            // then the operator who started us still reads why on stderr
            // (a daemon's stderr is /dev/null).
            tracing::error!("{e}");
            if output.is_some() {
                eprintln!("twemproxy: {e}");
                let _ = std::io::stderr().flush();
            }
            1
        }
    }
}
