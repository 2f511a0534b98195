//! The running proxy: every pool's listener and accept loop, the stats port,
//! signals and shutdown.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use twem_core::config::{Config, PoolConfig};
use twem_core::pool::Pool;

use crate::fdlimit::FdBudget;
use crate::listener::{self, Listener};
use crate::logging::Logger;
use crate::stats::{self, Globals};
use twem_core::session::serve_connection;

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
    /// The config file, re-read on SIGHUP / SIGUSR1 (absolute: `-d` changes
    /// the working directory). `None` disables reload.
    pub conf_file: Option<PathBuf>,
    /// Where to serve Prometheus `/metrics` (`--metrics-addr`), if anywhere.
    pub metrics_addr: Option<String>,
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

/// The pool a listener's clients use now. Reload swaps the pool inside;
/// sessions load it per request, so a changed pool takes over for new
/// requests while requests already sent finish on the old one (which
/// drains and closes once nothing refers to it).
pub type PoolSlot = Arc<ArcSwap<Pool>>;

/// One configured pool while the proxy runs.
struct Running {
    config: PoolConfig,
    slot: PoolSlot,
    /// Stops this pool's accept loop (a listen change, removal, shutdown).
    accept_stop: CancellationToken,
    accept_task: JoinHandle<()>,
    /// Tells this pool's client sessions to finish and close (removal, shutdown).
    sessions_stop: CancellationToken,
}

/// The running proxy's mutable state: its pools, in config order.
struct Proxy {
    pools: Vec<Running>,
    stop: CancellationToken,
    sessions: TaskTracker,
    globals: Arc<Globals>,
    /// What the stats port reports: the current pool of every running pool.
    stats_slots: Arc<ArcSwap<Vec<PoolSlot>>>,
    /// Client connections allowed over all pools (descriptors kept for
    /// backend connections).
    fds: Arc<FdBudget>,
}

impl Proxy {
    fn start_pool(&mut self, pool: Pool, listener: Listener) {
        let config = pool.config().clone();
        tracing::info!(pool = %config.name, listen = %config.listen, servers = config.servers.len(),
            protocol = if config.redis { "redis" } else { "memcache" }, "pool listening");
        let slot: PoolSlot = Arc::new(ArcSwap::from_pointee(pool));
        let accept_stop = self.stop.child_token();
        let sessions_stop = self.stop.child_token();
        let accept_task = self.spawn_accept(&slot, listener, &accept_stop, &sessions_stop);
        self.pools.push(Running {
            config,
            slot,
            accept_stop,
            accept_task,
            sessions_stop,
        });
    }

    fn spawn_accept(
        &self,
        slot: &PoolSlot,
        listener: Listener,
        accept_stop: &CancellationToken,
        sessions_stop: &CancellationToken,
    ) -> JoinHandle<()> {
        self.globals.total_connections.fetch_add(1, Relaxed);
        self.globals.curr_connections.fetch_add(1, Relaxed);
        tokio::spawn(accept_loop(
            Arc::clone(slot),
            listener,
            accept_stop.clone(),
            sessions_stop.clone(),
            self.sessions.clone(),
            Arc::clone(&self.globals),
            Arc::clone(&self.fds),
        ))
    }

    fn publish_stats(&self) {
        self.stats_slots.store(Arc::new(
            self.pools.iter().map(|r| Arc::clone(&r.slot)).collect(),
        ));
    }

    /// Re-read the config and apply it without dropping anything that did
    /// not change. On any problem (unreadable file, invalid config, an
    /// address that cannot be bound) nothing changes and the reason is logged.
    fn reload(&mut self, path: &Path) {
        let config = match load_config(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(file = %path.display(), "reload rejected, keeping the running config: {}", e.replace('\n', "; "));
                return;
            }
        };
        self.fds.configure(&config);
        // Phase 1: everything that can fail, with nothing changed yet.
        enum Plan {
            Keep(usize),
            Swap {
                at: usize,
                pool: Pool,
                listener: Option<Listener>,
            },
            Add {
                pool: Pool,
                listener: Listener,
            },
        }
        let mut plans = Vec::with_capacity(config.pools.len());
        for pc in &config.pools {
            let old = self.pools.iter().position(|r| r.config.name == pc.name);
            let same_protocol = old.is_some_and(|i| self.pools[i].config.redis == pc.redis);
            let plan = match old {
                Some(i) if self.pools[i].config == *pc => Ok(Plan::Keep(i)),
                Some(i) if same_protocol => {
                    let listener = if self.pools[i].config.listen == pc.listen {
                        Ok(None)
                    } else {
                        listener::bind(pc).map(Some)
                    };
                    listener.map_err(|e| e.to_string()).and_then(|listener| {
                        let prev = self.pools[i].slot.load_full();
                        Pool::replacing(pc.clone(), Some(&prev))
                            .map(|pool| Plan::Swap {
                                at: i,
                                pool,
                                listener,
                            })
                            .map_err(|e| e.to_string())
                    })
                }
                _ => {
                    // A new pool (or one whose protocol changed: its clients speak
                    // the other protocol, so it restarts as a new pool).
                    let taken = old.is_some_and(|i| self.pools[i].config.listen == pc.listen);
                    if taken {
                        Err(format!("pool \"{}\": changing redis/memcached on the same listen address needs a restart", pc.name))
                    } else {
                        listener::bind(pc).map_err(|e| e.to_string()).and_then(|l| {
                            Pool::new(pc.clone())
                                .map(|pool| Plan::Add { pool, listener: l })
                                .map_err(|e| e.to_string())
                        })
                    }
                }
            };
            match plan {
                Ok(p) => plans.push(p),
                Err(e) => {
                    tracing::error!(file = %path.display(), "reload rejected, keeping the running config: {e}");
                    return; // bound listeners and started pools in `plans` drop here
                }
            }
        }
        // Phase 2: apply.
        let mut old: Vec<Option<Running>> = std::mem::take(&mut self.pools)
            .into_iter()
            .map(Some)
            .collect();
        let (mut kept, mut changed, mut added) = (0, 0, 0);
        for plan in plans {
            match plan {
                Plan::Keep(i) => {
                    if let Some(r) = old[i].take() {
                        self.pools.push(r);
                        kept += 1;
                    }
                }
                Plan::Swap { at, pool, listener } => {
                    let Some(mut r) = old[at].take() else {
                        continue;
                    };
                    r.config = pool.config().clone();
                    r.slot.store(Arc::new(pool));
                    if let Some(l) = listener {
                        r.accept_stop.cancel();
                        r.accept_stop = self.stop.child_token();
                        r.accept_task =
                            self.spawn_accept(&r.slot, l, &r.accept_stop, &r.sessions_stop);
                    }
                    tracing::info!(pool = %r.config.name, listen = %r.config.listen, "pool reconfigured; requests in flight finish on the old definition");
                    self.pools.push(r);
                    changed += 1;
                }
                Plan::Add { pool, listener } => {
                    self.start_pool(pool, listener);
                    added += 1;
                }
            }
        }
        let mut removed = 0;
        for r in old.into_iter().flatten() {
            tracing::info!(pool = %r.config.name, "pool removed: no new connections; its clients close once their replies are written");
            r.accept_stop.cancel();
            // The clients are told to close only once the accept loop has
            // ended and dropped the listener: a client that sees its
            // connection closed must not then find the port still accepting
            // (the two tasks would otherwise race on a multi-thread runtime).
            let Running {
                accept_task,
                sessions_stop,
                ..
            } = r;
            tokio::spawn(async move {
                let _ = accept_task.await;
                sessions_stop.cancel();
            });
            removed += 1;
        }
        self.publish_stats();
        tracing::info!(file = %path.display(), kept, changed, added, removed, "configuration reloaded");
    }
}

/// Run the proxy until SIGTERM/SIGINT, then drain and return.
pub async fn serve(config: Config, opts: Options, logger: Arc<Logger>) -> Result<(), ServeError> {
    // Install every handler first: until a handler exists, SIGTTIN would stop
    // the process and SIGHUP would kill it (their default actions).
    let _early = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
        SignalKind::user_defined1(),
        SignalKind::from_raw(libc::SIGTTIN),
        SignalKind::from_raw(libc::SIGTTOU),
    ]
    .map(|k| signal(k).ok());
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
    let metrics_listener =
        match &opts.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr.as_str()).await.map_err(|source| {
                ServeError::Stats {
                    addr: format!("{addr} (metrics)"),
                    source,
                }
            })?),
            None => None,
        };
    let mut pools = Vec::with_capacity(config.pools.len());
    for p in &config.pools {
        pools.push(Pool::new(p.clone())?);
    }
    if let Some(path) = &opts.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            ServeError::PidFile {
                path: path.clone(),
                source,
            }
        })?;
    }

    let mut proxy = Proxy {
        pools: Vec::new(),
        stop: CancellationToken::new(),
        sessions: TaskTracker::new(),
        globals: Arc::new(Globals::default()),
        stats_slots: Arc::new(ArcSwap::from_pointee(Vec::new())),
        fds: Arc::new(FdBudget::new(&config)),
    };
    for (pool, l) in pools.into_iter().zip(listeners) {
        proxy.start_pool(pool, l);
    }
    proxy.publish_stats();
    let slots = Arc::clone(&proxy.stats_slots);
    let stats_task = tokio::spawn(stats::serve(
        stats_listener,
        opts.stats_interval,
        move || slots.load().iter().map(|s| s.load().snapshot()).collect(),
        Arc::clone(&proxy.globals),
        proxy.stop.clone(),
    ));
    if let Some(l) = metrics_listener {
        let slots = Arc::clone(&proxy.stats_slots);
        tokio::spawn(crate::metrics::serve(
            l,
            move || slots.load().iter().map(|s| s.load().snapshot()).collect(),
            Arc::clone(&proxy.globals),
            proxy.stop.clone(),
        ));
    }
    tracing::info!(stats = %stats_addr, pid = std::process::id(), "twem started");

    wait_for_exit(&logger, &mut proxy, opts.conf_file.as_deref()).await;
    tracing::info!(
        grace_ms = opts.shutdown_grace.as_millis() as u64,
        "shutting down: no new connections, draining in-flight requests"
    );
    proxy.stop.cancel();
    for r in &mut proxy.pools {
        let _ = (&mut r.accept_task).await;
    }
    proxy.sessions.close();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        () = proxy.sessions.wait() => tracing::info!("all clients drained"),
        () = tokio::time::sleep(opts.shutdown_grace) => tracing::warn!("shutdown grace period over; closing remaining clients"),
        _ = recv_opt(&mut term) => tracing::warn!("second signal: exiting at once"),
        _ = recv_opt(&mut int) => tracing::warn!("second signal: exiting at once"),
    }
    for r in &proxy.pools {
        r.slot.load().close().await;
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
async fn wait_for_exit(logger: &Logger, proxy: &mut Proxy, conf: Option<&Path>) {
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut usr1 = signal(SignalKind::user_defined1()).ok();
    let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN)).ok();
    let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU)).ok();
    loop {
        tokio::select! {
            _ = recv_opt(&mut term) => { tracing::info!("SIGTERM received"); return; }
            _ = recv_opt(&mut int) => { tracing::info!("SIGINT received"); return; }
            _ = recv_opt(&mut hup) => {
                // nutcracker's SIGHUP reopens the log (logrotate); twem also reloads.
                logger.reopen();
                tracing::info!("SIGHUP: log file reopened, reloading the configuration");
                if let Some(c) = conf { proxy.reload(c); }
            }
            _ = recv_opt(&mut usr1) => {
                tracing::info!("SIGUSR1: reloading the configuration");
                if let Some(c) = conf { proxy.reload(c); }
            }
            _ = recv_opt(&mut ttin) => logger.step(true),
            _ = recv_opt(&mut ttou) => logger.step(false),
        }
    }
}

async fn accept_loop(
    slot: PoolSlot,
    listener: Listener,
    stop: CancellationToken,
    sessions_stop: CancellationToken,
    sessions: TaskTracker,
    globals: Arc<Globals>,
    fds: Arc<FdBudget>,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            r = accept(&listener) => r,
            () = stop.cancelled() => break,
        };
        let pool = slot.load_full();
        let conn = match accepted {
            Ok(c) => {
                backoff.succeeded();
                c
            }
            Err(e) => {
                // EMFILE and friends: back off (growing, up to a second)
                // rather than spin, and say so at most once a second.
                let pause = backoff.failed(pool.name(), &e);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => break,
                }
                continue;
            }
        };
        if !fds.try_acquire() {
            pool.stats().client_rejected.fetch_add(1, Relaxed);
            if backoff.log_due() {
                tracing::warn!(
                    pool = pool.name(),
                    limit = fds.limit(),
                    "client connection refused: descriptors are kept for backend connections (raise ulimit -n)"
                );
            }
            drop(conn);
            continue;
        }
        let limit = pool.config().client_connections;
        let stats = pool.stats();
        if limit > 0 && stats.client_connections.load(Relaxed) >= i64::from(limit) {
            stats.client_rejected.fetch_add(1, Relaxed);
            tracing::info!(
                pool = pool.name(),
                limit,
                "client connection refused: client_connections limit reached"
            );
            fds.release();
            drop(conn);
            continue;
        }
        stats.client_connections.fetch_add(1, Relaxed);
        globals.total_connections.fetch_add(1, Relaxed);
        globals.curr_connections.fetch_add(1, Relaxed);
        let hint = NEXT_CLIENT.fetch_add(1, Relaxed);
        let keepalive = pool.config().tcpkeepalive;
        let stats = Arc::clone(pool.stats_arc());
        drop(pool);
        let slot = Arc::clone(&slot);
        let stop = sessions_stop.clone();
        let globals = Arc::clone(&globals);
        let fds = Arc::clone(&fds);
        sessions.spawn(async move {
            // Both lines name the client by id and peer, so that an
            // operator can pair them.
            let peer = match &conn {
                Accepted::Tcp(s) => s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
                Accepted::Unix(_) => "unix".to_string(),
            };
            tracing::info!(pool = %slot.load().name(), client = hint, peer = %peer, "client connected");
            let end = match conn {
                Accepted::Tcp(s) => {
                    let _ = s.set_nodelay(true);
                    if keepalive {
                        let _ = socket2::SockRef::from(&s).set_keepalive(true);
                    }
                    let (r, w) = s.into_split();
                    serve_connection(Arc::clone(&slot), hint, r, w, stop).await
                }
                Accepted::Unix(s) => {
                    let (r, w) = s.into_split();
                    serve_connection(Arc::clone(&slot), hint, r, w, stop).await
                }
            };
            tracing::info!(pool = %slot.load().name(), client = hint, peer = %peer, end = ?end, "client closed");
            stats.client_connections.fetch_sub(1, Relaxed);
            globals.curr_connections.fetch_sub(1, Relaxed);
            fds.release();
        });
    }
    globals.curr_connections.fetch_sub(1, Relaxed);
}

/// Pacing of an accept loop after failed accepts (EMFILE, ENFILE, ENOBUFS):
/// the pause doubles from 10 ms to 1 s while they go on, and the warning is
/// logged at most once a second with the number of failures since.
#[derive(Debug)]
struct AcceptBackoff {
    pause: Duration,
    failures: u64,
    last_log: Option<std::time::Instant>,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            pause: Self::FIRST,
            failures: 0,
            last_log: None,
        }
    }
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// An accept succeeded: the next failure starts from the shortest pause.
    fn succeeded(&mut self) {
        self.pause = Self::FIRST;
    }

    /// An accept failed with `e`: how long to pause before the next one.
    fn failed(&mut self, pool: &str, e: &std::io::Error) -> Duration {
        self.failures += 1;
        if self.log_due() {
            tracing::warn!(pool, error = %e, failures = self.failures, pause_ms = self.pause.as_millis() as u64,
                "accept failed; pausing the listener");
            self.failures = 0;
        }
        let pause = self.pause;
        self.pause = (self.pause * 2).min(Self::MAX);
        pause
    }

    /// Whether a warning may be logged now (at most one a second).
    fn log_due(&mut self) -> bool {
        let now = std::time::Instant::now();
        match self.last_log {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => false,
            _ => {
                self.last_log = Some(now);
                true
            }
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

/// Read a config file, choosing YAML or TOML by its extension: the same
/// loader as the start and `-t` (size cap, listen hosts resolved).
pub fn load_config(path: &Path) -> Result<Config, String> {
    crate::conf::load(path).map_err(|e| e.to_string())
}
