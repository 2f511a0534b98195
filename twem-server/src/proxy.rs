//! The running proxy: every pool's listener and accept loop, the stats port,
//! signals and shutdown.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use twem_core::config::Config;
use twem_core::pool::{Pool, Protocol};

use crate::listener::{self, Listener};
use crate::logging::Logger;
use crate::session::{self, MemcacheFrontend, RedisFrontend};
use crate::stats::{self, Globals};

/// How the proxy runs, beyond the pools' own config.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stats port address (`-a`).
    pub stats_addr: String,
    /// Stats port (`-s`).
    pub stats_port: u16,
    /// Stats refresh interval (`-i`).
    pub stats_interval: Duration,
    /// Pid file (`-p`), removed on a clean exit.
    pub pid_file: Option<PathBuf>,
    /// How long SIGTERM/SIGINT wait for in-flight requests.
    pub shutdown_grace: Duration,
}

/// Why the proxy could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A pool's listen address could not be bound.
    #[error(transparent)]
    Listen(#[from] listener::ListenError),
    /// The stats port could not be bound.
    #[error("cannot listen on stats address {addr}: {source}")]
    Stats {
        /// `-a:-s`.
        addr: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A pool could not be started.
    #[error(transparent)]
    Pool(#[from] twem_core::pool::PoolError),
    /// The pid file could not be written.
    #[error("cannot write pid file '{path}': {source}")]
    PidFile {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

static NEXT_CLIENT: AtomicUsize = AtomicUsize::new(0);

/// Run the proxy until SIGTERM/SIGINT, then drain and return.
pub async fn serve(config: Config, opts: Options, logger: Arc<Logger>) -> Result<(), ServeError> {
    // Bind everything before starting anything, so a bad address fails the
    // start with nothing half-running.
    let mut listeners = Vec::with_capacity(config.pools.len());
    for p in &config.pools {
        listeners.push(listener::bind(p)?);
    }
    let stats_addr = format!("{}:{}", opts.stats_addr, opts.stats_port);
    let stats_listener = TcpListener::bind((opts.stats_addr.as_str(), opts.stats_port))
        .await
        .map_err(|source| ServeError::Stats {
            addr: stats_addr.clone(),
            source,
        })?;
    if let Some(path) = &opts.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            ServeError::PidFile {
                path: path.clone(),
                source,
            }
        })?;
    }

    let globals = Arc::new(Globals::default());
    let mut pools = Vec::with_capacity(config.pools.len());
    for p in &config.pools {
        pools.push(Pool::new(p.clone())?);
    }
    let stop = CancellationToken::new();
    let sessions = TaskTracker::new();
    let mut accept_tasks = Vec::new();
    for (pool, l) in pools.iter().cloned().zip(listeners) {
        tracing::info!(pool = pool.name(), listen = %pool.config().listen, servers = pool.ring().servers().len(),
            protocol = if pool.protocol() == Protocol::Redis { "redis" } else { "memcache" }, "pool listening");
        globals.total_connections.fetch_add(1, Relaxed);
        globals.curr_connections.fetch_add(1, Relaxed);
        accept_tasks.push(tokio::spawn(accept_loop(
            pool,
            l,
            stop.clone(),
            sessions.clone(),
            Arc::clone(&globals),
        )));
    }
    let snap_pools = pools.clone();
    let stats_task = tokio::spawn(stats::serve(
        stats_listener,
        opts.stats_interval,
        move || snap_pools.iter().map(Pool::snapshot).collect(),
        Arc::clone(&globals),
        stop.clone(),
    ));
    tracing::info!(stats = %stats_addr, pid = std::process::id(), "twem started");

    wait_for_exit(&logger).await;
    tracing::info!(
        grace_ms = opts.shutdown_grace.as_millis() as u64,
        "shutting down: no new connections, draining in-flight requests"
    );
    stop.cancel();
    for t in accept_tasks {
        let _ = t.await;
    }
    sessions.close();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        () = sessions.wait() => tracing::info!("all clients drained"),
        () = tokio::time::sleep(opts.shutdown_grace) => tracing::warn!("shutdown grace period over; closing remaining clients"),
        _ = recv_opt(&mut term) => tracing::warn!("second signal: exiting at once"),
        _ = recv_opt(&mut int) => tracing::warn!("second signal: exiting at once"),
    }
    for p in &pools {
        p.close().await;
    }
    let _ = stats_task.await;
    if let Some(path) = &opts.pid_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

async fn recv_opt(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Handle signals until one asks the process to exit.
async fn wait_for_exit(logger: &Logger) {
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN)).ok();
    let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU)).ok();
    loop {
        tokio::select! {
            _ = recv_opt(&mut term) => { tracing::info!("SIGTERM received"); return; }
            _ = recv_opt(&mut int) => { tracing::info!("SIGINT received"); return; }
            _ = recv_opt(&mut hup) => { logger.reopen(); tracing::info!("SIGHUP: log file reopened"); }
            _ = recv_opt(&mut ttin) => logger.step(true),
            _ = recv_opt(&mut ttou) => logger.step(false),
        }
    }
}

async fn accept_loop(
    pool: Pool,
    listener: Listener,
    stop: CancellationToken,
    sessions: TaskTracker,
    globals: Arc<Globals>,
) {
    let limit = pool.config().client_connections;
    let keepalive = pool.config().tcpkeepalive;
    loop {
        let accepted = tokio::select! {
            r = accept(&listener) => r,
            () = stop.cancelled() => break,
        };
        let conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(pool = pool.name(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let stats = pool.stats();
        if limit > 0 && stats.client_connections.load(Relaxed) >= i64::from(limit) {
            stats.client_rejected.fetch_add(1, Relaxed);
            tracing::info!(
                pool = pool.name(),
                limit,
                "client connection refused: client_connections limit reached"
            );
            drop(conn);
            continue;
        }
        stats.client_connections.fetch_add(1, Relaxed);
        globals.total_connections.fetch_add(1, Relaxed);
        globals.curr_connections.fetch_add(1, Relaxed);
        let hint = NEXT_CLIENT.fetch_add(1, Relaxed);
        let pool = pool.clone();
        let stop = stop.clone();
        let globals = Arc::clone(&globals);
        sessions.spawn(async move {
            let end = match conn {
                Accepted::Tcp(s) => {
                    let _ = s.set_nodelay(true);
                    if keepalive {
                        let _ = socket2::SockRef::from(&s).set_keepalive(true);
                    }
                    let (r, w) = s.into_split();
                    run_session(&pool, hint, r, w, stop).await
                }
                Accepted::Unix(s) => {
                    let (r, w) = s.into_split();
                    run_session(&pool, hint, r, w, stop).await
                }
            };
            tracing::debug!(pool = pool.name(), client = hint, end = ?end, "client closed");
            pool.stats().client_connections.fetch_sub(1, Relaxed);
            globals.curr_connections.fetch_sub(1, Relaxed);
        });
    }
    globals.curr_connections.fetch_sub(1, Relaxed);
}

async fn run_session<R, W>(
    pool: &Pool,
    hint: usize,
    r: R,
    w: W,
    stop: CancellationToken,
) -> session::End
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    match pool.protocol() {
        Protocol::Redis => {
            let pw = pool.config().redis_auth.as_deref().map(Arc::from);
            session::run(RedisFrontend::new(pw), pool.clone(), hint, r, w, stop).await
        }
        Protocol::Memcache => {
            session::run(MemcacheFrontend::new(), pool.clone(), hint, r, w, stop).await
        }
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<Accepted> {
    match l {
        Listener::Tcp(t) => t.accept().await.map(|(s, _)| Accepted::Tcp(s)),
        Listener::Unix(u, _) => u.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// Read a config file, choosing YAML or TOML by its extension.
pub fn load_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read configuration file '{}': {e}", path.display()))?;
    let format = twem_core::config::Format::from_path(path);
    Config::parse(&text, format).map_err(|e| e.to_string())
}
