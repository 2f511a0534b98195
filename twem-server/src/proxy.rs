//! The running proxy: every pool's listener and accept loop, the stats port,
//! signals and shutdown.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use twem_core::config::{Config, PoolConfig};
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

/// `listen(2)` backlog of the stats and metrics ports (what tokio's
/// `TcpListener::bind` uses).
const LISTEN_BACKLOG: u32 = 1024;

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
    // start with nothing half-running; listen only once the pid file is
    // written, so whoever sees a port accept finds the pid file there.
    let mut bound = Vec::with_capacity(config.pools.len());
    for p in &config.pools {
        bound.push(listener::bind_idle(p)?);
    }
    let stats_addr = format!("{}:{}", opts.stats_addr, opts.stats_port);
    let stats_err = |addr: String| move |source| ServeError::Stats { addr, source };
    let stats_socket = listener::bind_tcp_idle((opts.stats_addr.as_str(), opts.stats_port))
        .await
        .map_err(stats_err(stats_addr.clone()))?;
    let metrics_socket = match &opts.metrics_addr {
        Some(addr) => {
            let name = format!("{addr} (metrics)");
            let sock = listener::bind_tcp_idle(addr.as_str())
                .await
                .map_err(stats_err(name.clone()))?;
            Some((sock, name))
        }
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
    // A listen that fails now (another socket bound the same port with
    // SO_REUSEADDR and listened first) must not leave our pid file behind.
    // The stats and metrics ports first: once a pool's port accepts, they do.
    let listening = (|| {
        let stats = stats_socket
            .listen(LISTEN_BACKLOG)
            .map_err(stats_err(stats_addr.clone()))?;
        let metrics = match metrics_socket {
            Some((s, name)) => Some(s.listen(LISTEN_BACKLOG).map_err(stats_err(name))?),
            None => None,
        };
        let mut listeners = Vec::with_capacity(bound.len());
        for b in bound {
            listeners.push(b.listen()?);
        }
        Ok::<_, ServeError>((listeners, stats, metrics))
    })();
    let (listeners, stats_listener, metrics_listener) = match listening {
        Ok(l) => l,
        Err(e) => {
            if let Some(path) = &opts.pid_file {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };

    let mut proxy = Proxy {
        pools: Vec::new(),
        stop: CancellationToken::new(),
        sessions: TaskTracker::new(),
        globals: Arc::new(Globals::default()),
        stats_slots: Arc::new(ArcSwap::from_pointee(Vec::new())),
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

    // One SIGTERM/SIGINT stream each for the whole run: the second signal is
    // read from the same stream as the first, so one sent as soon as the
    // drain starts is not lost (a stream created later misses it).
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    wait_for_exit(
        &logger,
        &mut proxy,
        opts.conf_file.as_deref(),
        (&mut term, &mut int),
    )
    .await;
    tracing::info!(
        grace_ms = opts.shutdown_grace.as_millis() as u64,
        "shutting down: no new connections, draining in-flight requests"
    );
    proxy.stop.cancel();
    for r in &mut proxy.pools {
        let _ = (&mut r.accept_task).await;
    }
    proxy.sessions.close();
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
async fn wait_for_exit(
    logger: &Logger,
    proxy: &mut Proxy,
    conf: Option<&Path>,
    (term, int): (&mut Option<Signal>, &mut Option<Signal>),
) {
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut usr1 = signal(SignalKind::user_defined1()).ok();
    let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN)).ok();
    let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU)).ok();
    loop {
        tokio::select! {
            _ = recv_opt(term) => { tracing::info!("SIGTERM received"); return; }
            _ = recv_opt(int) => { tracing::info!("SIGINT received"); return; }
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
) {
    loop {
        let accepted = tokio::select! {
            r = accept(&listener) => r,
            () = stop.cancelled() => break,
        };
        let pool = slot.load_full();
        let conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(pool = pool.name(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let limit = pool.config().client_connections;
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
        let keepalive = pool.config().tcpkeepalive;
        let redis = pool.protocol() == Protocol::Redis;
        let stats = Arc::clone(pool.stats_arc());
        drop(pool);
        let slot = Arc::clone(&slot);
        let stop = sessions_stop.clone();
        let globals = Arc::clone(&globals);
        sessions.spawn(async move {
            let end = match conn {
                Accepted::Tcp(s) => {
                    let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                    tracing::info!(pool = %slot.load().name(), client = %peer, "client connected");
                    let _ = s.set_nodelay(true);
                    if keepalive {
                        let _ = socket2::SockRef::from(&s).set_keepalive(true);
                    }
                    let (r, w) = s.into_split();
                    run_session(redis, &slot, hint, r, w, stop).await
                }
                Accepted::Unix(s) => {
                    tracing::info!(pool = %slot.load().name(), client = "unix", "client connected");
                    let (r, w) = s.into_split();
                    run_session(redis, &slot, hint, r, w, stop).await
                }
            };
            tracing::info!(pool = %slot.load().name(), client = hint, end = ?end, "client closed");
            stats.client_connections.fetch_sub(1, Relaxed);
            globals.curr_connections.fetch_sub(1, Relaxed);
        });
    }
    globals.curr_connections.fetch_sub(1, Relaxed);
}

async fn run_session<R, W>(
    redis: bool,
    slot: &PoolSlot,
    hint: usize,
    r: R,
    w: W,
    stop: CancellationToken,
) -> session::End
where
    R: session::ClientRead + tokio::io::AsyncRead,
    W: tokio::io::AsyncWrite + Unpin,
{
    if redis {
        session::run(RedisFrontend::new(), Arc::clone(slot), hint, r, w, stop).await
    } else {
        session::run(MemcacheFrontend::new(), Arc::clone(slot), hint, r, w, stop).await
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
