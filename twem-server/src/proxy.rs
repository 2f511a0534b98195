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

use crate::listener::Accepted;
use crate::workers::Workers;
use tracing::Instrument;

use twem_core::config::{Config, PoolConfig};
use twem_core::pool::Pool;

use crate::admin;
use crate::backoff::AcceptBackoff;
use crate::fdlimit::FdBudget;
use crate::listener::{self, Listener};
use crate::logging::Logger;
use crate::stats::Globals;
use twem_core::session::{serve_connection, End};

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
    /// The worker event loops clients are handed to; `None`: clients are
    /// served on the runtime `serve` runs on (one event loop).
    pub workers: Option<Arc<Workers>>,
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
    /// The admin thread (stats port, metrics) could not be started.
    #[error("cannot start the admin thread: {0}")]
    Admin(#[source] std::io::Error),
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

/// Why a reload was rejected (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or is not a valid config.
    #[error(transparent)]
    Load(#[from] crate::conf::LoadError),
    /// A pool's new listen address could not be bound.
    #[error(transparent)]
    Listen(#[from] listener::ListenError),
    /// A changed or new pool could not be started.
    #[error(transparent)]
    Pool(#[from] twem_core::pool::PoolError),
    /// A pool switched between redis and memcached but kept its listen
    /// address: its clients speak the old protocol, so that needs a restart.
    #[error(
        "pool \"{pool}\": changing redis/memcached on the same listen address needs a restart"
    )]
    ProtocolChange {
        /// The pool's name.
        pool: String,
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
    /// Where client sessions run (see [`Options::workers`]).
    workers: Option<Arc<Workers>>,
}

impl Proxy {
    fn start_pool(&mut self, pool: Pool, listener: Listener) {
        let config = pool.config().clone();
        self.start_pool_with(pool, config, listener);
    }

    /// [`Proxy::start_pool`] with the pool's config already copied (a reload
    /// copies it off the runtime: for a large pool that is milliseconds).
    fn start_pool_with(&mut self, pool: Pool, config: PoolConfig, listener: Listener) {
        tracing::info!(pool = %config.name, listen = %config.listen, servers = config.servers.len(),
            protocol = if config.redis { "redis" } else { "memcache" }, "pool listening");
        self.preconnect_on_workers(&pool);
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

    /// `preconnect` for each worker's connection set, on that worker (a
    /// pool built off the workers, as a reload builds them, starts none
    /// itself). Without worker threads this thread is the one worker.
    fn preconnect_on_workers(&self, pool: &Pool) {
        if !pool.config().preconnect {
            return;
        }
        match &self.workers {
            Some(w) => {
                let pool = pool.clone();
                w.on_each(move || {
                    let pool = pool.clone();
                    async move { pool.preconnect() }
                });
            }
            None => pool.preconnect(),
        }
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
        let span = tracing::info_span!("accept", pool = %slot.load().name());
        tokio::spawn(
            AcceptLoop {
                slot: Arc::clone(slot),
                listener,
                stop: accept_stop.clone(),
                sessions_stop: sessions_stop.clone(),
                sessions: self.sessions.clone(),
                globals: Arc::clone(&self.globals),
                fds: Arc::clone(&self.fds),
                workers: self.workers.clone(),
            }
            .run()
            .instrument(span),
        )
    }

    fn publish_stats(&self) {
        self.stats_slots.store(Arc::new(
            self.pools.iter().map(|r| Arc::clone(&r.slot)).collect(),
        ));
    }

    /// Re-read the config and apply it without dropping anything that did
    /// not change. On any problem (unreadable file, invalid config, an
    /// address that cannot be bound) nothing changes and the reason is logged.
    ///
    /// Reading, parsing, validating, resolving and binding listen addresses,
    /// building rings and pools all happen on a blocking-pool thread
    /// ([`plan_reload`]): for a pool of 20,000 servers that is seconds of CPU
    /// that would otherwise stall every client of this runtime. Only the swap
    /// runs here.
    async fn reload(&mut self, path: &Path) {
        let running: Vec<Arc<Pool>> = self.pools.iter().map(|r| r.slot.load_full()).collect();
        let owned = path.to_path_buf();
        let fds = Arc::clone(&self.fds);
        let span = tracing::info_span!("reload", file = %path.display());
        let planned = tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            plan_reload(&owned, &running, &fds)
        })
        .await;
        let plans = match planned {
            Ok(Ok(plans)) => plans,
            Ok(Err(e)) => {
                tracing::error!(file = %path.display(), "reload rejected, keeping the running config: {}", e.to_string().replace('\n', "; "));
                return;
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "reload failed, keeping the running config");
                return;
            }
        };
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
                Plan::Swap {
                    at,
                    pool,
                    config,
                    listener,
                } => {
                    let Some(mut r) = old[at].take() else {
                        continue;
                    };
                    r.config = config;
                    self.preconnect_on_workers(&pool);
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
                Plan::Add {
                    pool,
                    config,
                    listener,
                } => {
                    self.start_pool_with(pool, config, listener);
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
            let r_name = r.config.name.clone();
            let Running {
                accept_task,
                sessions_stop,
                ..
            } = r;
            let span = tracing::info_span!("remove_pool", pool = %r_name);
            tokio::spawn(
                async move {
                    let _ = accept_task.await;
                    sessions_stop.cancel();
                }
                .instrument(span),
            );
            removed += 1;
        }
        self.publish_stats();
        tracing::info!(file = %path.display(), kept, changed, added, removed, "configuration reloaded");
    }
}

/// One pool's part of a reload, decided before anything changes.
enum Plan {
    /// Unchanged: keep the running pool at this index.
    Keep(usize),
    /// Changed: replace the pool at `at` (and its listener, if it moved).
    Swap {
        at: usize,
        pool: Pool,
        config: PoolConfig,
        listener: Option<Listener>,
    },
    /// New (or its protocol changed).
    Add {
        pool: Pool,
        config: PoolConfig,
        listener: Listener,
    },
}

/// Phase 1 of a reload: everything that can fail, with nothing changed yet.
/// `running` is the current pool of every running pool, in order. Runs on a
/// blocking-pool thread of the serving runtime: it blocks (file read, DNS)
/// and burns CPU (validation, rings), and it still has the runtime's context,
/// which registering listeners and starting pools' connection tasks need.
fn plan_reload(
    path: &Path,
    running: &[Arc<Pool>],
    fds: &FdBudget,
) -> Result<Vec<Plan>, ReloadError> {
    let config = load_config(path)?;
    // The descriptor reserve follows the backend slots of the new config
    // (counted now, applied only if the whole plan succeeds).
    let slots = crate::fdlimit::backend_slots(&config);
    let mut plans = Vec::with_capacity(config.pools.len());
    for pc in config.pools {
        let old = running.iter().position(|r| r.config().name == pc.name);
        let same_protocol = old.is_some_and(|i| running[i].config().redis == pc.redis);
        let plan = match old {
            // A pool with TLS files is rebuilt when a file changed, even
            // with the same config: SIGHUP is how rotated certificates are
            // picked up. (The system's roots, used without tls_ca, are not
            // watched: a restart or a config change picks them up.)
            Some(i)
                if *running[i].config() == pc
                    && (!pc.tls.has_files() || running[i].tls_files_unchanged()) =>
            {
                Plan::Keep(i)
            }
            Some(i) if same_protocol => {
                let listener = if running[i].config().listen == pc.listen {
                    None
                } else {
                    Some(listener::bind(&pc)?)
                };
                let pool = Pool::replacing(pc.clone(), Some(&running[i]))?;
                Plan::Swap {
                    at: i,
                    pool,
                    config: pc,
                    listener,
                }
            }
            _ => {
                // A new pool (or one whose protocol changed: its clients speak
                // the other protocol, so it restarts as a new pool).
                if old.is_some_and(|i| running[i].config().listen == pc.listen) {
                    return Err(ReloadError::ProtocolChange { pool: pc.name });
                }
                let listener = listener::bind(&pc)?;
                let pool = Pool::new(pc.clone())?;
                Plan::Add {
                    pool,
                    config: pc,
                    listener,
                }
            }
        };
        // On an error above, the listeners bound and pools started so far
        // drop with `plans`.
        plans.push(plan);
    }
    fds.configure_slots(slots);
    Ok(plans)
}

/// Run the proxy until SIGTERM/SIGINT, then drain and return.
pub async fn serve(config: Config, opts: Options, logger: Arc<Logger>) -> Result<(), ServeError> {
    // Install every handler first: until a handler exists, SIGTTIN would stop
    // the process and SIGHUP would kill it (their default actions).
    // These are also the streams the main loop reads: a signal delivered
    // between here and that loop (while pools and the admin thread start)
    // is kept, not lost as it would be on a stream created later.
    let mut signals = Signals::new();
    // The pid file first, as nutcracker writes it before opening its
    // listeners: whoever sees the port accept finds the pid file there. The
    // guard removes it on every way out, a failed start included.
    let _pid_file = match &opts.pid_file {
        Some(path) => Some(PidFile::write(path)?),
        None => None,
    };
    // Bind everything before starting anything, so a bad address fails the
    // start with nothing half-running. The admin ports first: whoever sees a
    // pool's port accept (the kernel accepts once it listens) must find the
    // stats port there too.
    let stats_addr = format!("{}:{}", opts.stats_addr, opts.stats_port);
    let stats_listener = admin_listener(&opts.stats_addr, opts.stats_port)
        .await
        .map_err(|source| ServeError::Stats {
            addr: stats_addr.clone(),
            source,
        })?;
    warn_if_exposed(&stats_listener, "stats port", "-a 127.0.0.1");
    let metrics_listener = match &opts.metrics_addr {
        Some(addr) => {
            let l = admin_listener(addr, 0)
                .await
                .map_err(|source| ServeError::Stats {
                    addr: format!("{addr} (metrics)"),
                    source,
                })?;
            warn_if_exposed(&l, "metrics endpoint", "--metrics-addr 127.0.0.1:PORT");
            Some(l)
        }
        None => None,
    };
    let mut listeners = Vec::with_capacity(config.pools.len());
    for p in &config.pools {
        listeners.push(listener::bind(p)?);
    }
    let mut pools = Vec::with_capacity(config.pools.len());
    for p in &config.pools {
        pools.push(Pool::new(p.clone())?);
    }

    let mut proxy = Proxy {
        pools: Vec::new(),
        stop: CancellationToken::new(),
        sessions: TaskTracker::new(),
        globals: Arc::new(Globals::default()),
        stats_slots: Arc::new(ArcSwap::from_pointee(Vec::new())),
        fds: Arc::new(FdBudget::new(&config)),
        workers: opts.workers.clone(),
    };
    for (pool, l) in pools.into_iter().zip(listeners) {
        proxy.start_pool(pool, l);
    }
    proxy.publish_stats();
    let slots = Arc::clone(&proxy.stats_slots);
    let admin = admin::spawn(
        admin::Endpoints {
            stats: stats_listener,
            metrics: metrics_listener,
            interval: opts.stats_interval,
            snapshot: Arc::new(move || slots.load().iter().map(|s| s.load().snapshot()).collect()),
            globals: Arc::clone(&proxy.globals),
            serving: serving_runtimes(opts.workers.as_deref()),
        },
        proxy.stop.clone(),
    )
    .map_err(ServeError::Admin)?;
    tracing::info!(stats = %stats_addr, pid = std::process::id(), "twem started");

    wait_for_exit(&logger, &mut proxy, opts.conf_file.as_deref(), &mut signals).await;
    tracing::info!(
        grace_ms = opts.shutdown_grace.as_millis() as u64,
        "shutting down: no new connections, draining in-flight requests"
    );
    proxy.stop.cancel();
    for r in &mut proxy.pools {
        let _ = (&mut r.accept_task).await;
    }
    proxy.sessions.close();
    let Signals { term, int, .. } = &mut signals;
    tokio::select! {
        () = proxy.sessions.wait() => tracing::info!("all clients drained"),
        () = tokio::time::sleep(opts.shutdown_grace) => tracing::warn!("shutdown grace period over; closing remaining clients"),
        _ = recv_opt(term) => tracing::warn!("second signal: exiting at once"),
        _ = recv_opt(int) => tracing::warn!("second signal: exiting at once"),
    }
    for r in &proxy.pools {
        r.slot.load().close().await;
    }
    admin.join().await;
    Ok(())
}

/// The pid file (`-p`) while the proxy runs; removed when dropped.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &Path) -> Result<PidFile, ServeError> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            ServeError::PidFile {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The signal streams the proxy reacts to. Installing them replaces the
/// default actions (SIGHUP would kill the process, SIGTTIN stop it).
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
    usr1: Option<tokio::signal::unix::Signal>,
    usr2: Option<tokio::signal::unix::Signal>,
    ttin: Option<tokio::signal::unix::Signal>,
    ttou: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
            usr1: signal(SignalKind::user_defined1()).ok(),
            // Handled (logged, nothing else) as nutcracker does: its default
            // action would end the process.
            usr2: signal(SignalKind::user_defined2()).ok(),
            ttin: signal(SignalKind::from_raw(libc::SIGTTIN)).ok(),
            ttou: signal(SignalKind::from_raw(libc::SIGTTOU)).ok(),
        }
    }
}

async fn recv_opt(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// The line nutcracker 0.5.0 logs for a signal, `signal <n> (<NAME>)
/// received<action>`: scripts and nutcracker's own test suite look for it.
/// Logged as a warning, so that it shows down to `-v 4` (nutcracker logs it
/// at every level).
fn log_signal(signo: libc::c_int, name: &str, action: &str) {
    tracing::warn!("signal {signo} ({name}) received{action}");
}

/// Handle signals until one asks the process to exit.
async fn wait_for_exit(
    logger: &Logger,
    proxy: &mut Proxy,
    conf: Option<&Path>,
    signals: &mut Signals,
) {
    let Signals {
        term,
        int,
        hup,
        usr1,
        usr2,
        ttin,
        ttou,
    } = signals;
    loop {
        tokio::select! {
            // nutcracker dies on SIGTERM without a word; twem drains, and
            // says so as it says SIGINT.
            _ = recv_opt(term) => { log_signal(libc::SIGTERM, "SIGTERM", ", exiting"); return; }
            _ = recv_opt(int) => { log_signal(libc::SIGINT, "SIGINT", ", exiting"); return; }
            _ = recv_opt(hup) => {
                // nutcracker's SIGHUP reopens the log (logrotate); twem also
                // reloads. Reopened first, so the line lands in the new file.
                logger.reopen();
                log_signal(libc::SIGHUP, "SIGHUP", ", reopening log file");
                if let Some(c) = conf {
                    tracing::info!("reloading the configuration (SIGHUP)");
                    proxy.reload(c).await;
                }
            }
            _ = recv_opt(usr1) => {
                log_signal(libc::SIGUSR1, "SIGUSR1", "");
                if let Some(c) = conf {
                    tracing::info!("reloading the configuration (SIGUSR1)");
                    proxy.reload(c).await;
                }
            }
            _ = recv_opt(usr2) => log_signal(libc::SIGUSR2, "SIGUSR2", ""),
            _ = recv_opt(ttin) => {
                log_signal(libc::SIGTTIN, "SIGTTIN", ", up logging level");
                logger.step(true);
            }
            _ = recv_opt(ttou) => {
                log_signal(libc::SIGTTOU, "SIGTTOU", ", down logging level");
                logger.step(false);
            }
        }
    }
}

/// One pool's accept loop and what it hands each client.
struct AcceptLoop {
    slot: PoolSlot,
    listener: Listener,
    /// Stops accepting.
    stop: CancellationToken,
    /// Tells the sessions to finish.
    sessions_stop: CancellationToken,
    sessions: TaskTracker,
    globals: Arc<Globals>,
    fds: Arc<FdBudget>,
    /// Where sessions run (`None`: here).
    workers: Option<Arc<Workers>>,
}

impl AcceptLoop {
    /// Accept until stopped.
    async fn run(self) {
        let AcceptLoop {
            slot,
            listener,
            stop,
            sessions_stop,
            sessions,
            globals,
            fds,
            workers,
        } = self;
        let mut backoff = AcceptBackoff::new(AcceptBackoff::POOL_MAX);
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
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
                pool.reject_client();
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
            let Some(admission) = pool.admit_client() else {
                tracing::info!(
                    pool = pool.name(),
                    limit = pool.config().client_connections,
                    "client connection refused: client_connections limit reached"
                );
                fds.release();
                drop(conn);
                continue;
            };
            globals.total_connections.fetch_add(1, Relaxed);
            globals.curr_connections.fetch_add(1, Relaxed);
            // Socket options now, not in the session: what the session's task
            // holds for its whole life is kept small (see `Client::peer`).
            if let Accepted::Tcp(s) = &conn {
                let _ = s.set_nodelay(true);
                if pool.config().tcpkeepalive {
                    let _ = socket2::SockRef::from(s).set_keepalive(true);
                }
            }
            let client = Client {
                slot: Arc::clone(&slot),
                hint: NEXT_CLIENT.fetch_add(1, Relaxed),
                peer: peer_of(&conn).into_boxed_str(),
                // The acceptor of the pool current at accept: after a reload,
                // new clients get the new certificate.
                tls: pool.tls_acceptor().cloned(),
                stop: sessions_stop.clone(),
                _counted: Counted {
                    _admission: admission,
                    globals: Arc::clone(&globals),
                    fds: Arc::clone(&fds),
                },
                on_worker: None,
            };
            drop(pool);
            // The session's span (a child of this pool's accept span) is at
            // debug level: at the default level it is disabled and costs
            // nothing per poll.
            let span = tracing::debug_span!("session", client = client.hint, peer = %client.peer);
            match workers.as_deref().and_then(Workers::place) {
                // On a worker: the socket is registered with the worker's
                // reactor and the session spawned by the worker's thread, so its
                // readiness wakes that thread and nothing else.
                Some(place) => {
                    let sessions = sessions.clone();
                    place.run(move |on_worker| {
                        let client = Client {
                            on_worker: Some(on_worker),
                            ..client
                        };
                        client.start(conn, &sessions, span);
                    });
                }
                None => client.start(conn, &sessions, span),
            }
        }
        globals.curr_connections.fetch_sub(1, Relaxed);
    }
}

/// What keeps an accepted client counted (its pool's `client_connections`,
/// the process's current connections, its descriptor in the budget) until
/// it is gone, however its session ends.
struct Counted {
    _admission: twem_core::pool::ClientAdmission,
    globals: Arc<Globals>,
    fds: Arc<FdBudget>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.globals.curr_connections.fetch_sub(1, Relaxed);
        self.fds.release();
    }
}

/// An accepted client, admitted, on its way to its session.
struct Client {
    slot: PoolSlot,
    hint: usize,
    // Boxed, not a String: the session's task holds it for its whole life,
    // and tokio rounds a task up to 128 bytes (measured: 8 bytes more in
    // this struct cost 0.13 KiB per idle client).
    peer: Box<str>,
    tls: Option<twem_core::tls::TlsAcceptor>,
    stop: CancellationToken,
    _counted: Counted,
    /// Counts the client on the worker it was handed to.
    on_worker: Option<crate::workers::ClientOnWorker>,
}

impl Client {
    /// Register the socket with the current runtime and spawn the session
    /// there.
    fn start(self, conn: Accepted, sessions: &TaskTracker, span: tracing::Span) {
        match register(conn) {
            Ok(conn) => {
                sessions.spawn(self.serve(conn).instrument(span));
            }
            Err(e) => tracing::warn!(client = self.hint, peer = %self.peer, error = %e,
                "client connection lost before its session started"),
        }
    }

    /// Serve the client until its session ends. Both log lines name the
    /// client by id and peer, so that an operator can pair them.
    fn serve(self, conn: Conn) -> impl std::future::Future<Output = ()> {
        // Taken apart here and captured field by field by an async block,
        // not an `async fn`: its arguments would be kept in every client's
        // task beside the locals they are moved into.
        let Client {
            slot,
            hint,
            peer,
            tls,
            stop,
            _counted,
            on_worker: _on_worker,
        } = self;
        async move {
            // Held for the session's life.
            let _held = (_counted, _on_worker);
            tracing::info!(pool = %slot.load().name(), client = hint, peer = %peer, "client connected");
            let end = match (conn, tls) {
                (Conn::Tcp(s), tls) => {
                    match tls {
                        // Boxed: a TLS session's future (rustls's state
                        // inline) is larger, and every client's task would
                        // otherwise be allocated at that size (measured:
                        // idle plain clients 1.7 -> 3.7 KiB each).
                        Some(tls) => Box::pin(serve_tls(&slot, hint, &peer, tls, s, stop)).await,
                        None => {
                            let (r, w) = s.into_split();
                            serve_connection(Arc::clone(&slot), hint, r, w, stop).await
                        }
                    }
                }
                (Conn::Unix(s), Some(tls)) => {
                    Box::pin(serve_tls(&slot, hint, &peer, tls, s, stop)).await
                }
                (Conn::Unix(s), None) => {
                    let (r, w) = s.into_split();
                    serve_connection(Arc::clone(&slot), hint, r, w, stop).await
                }
            };
            tracing::info!(pool = %slot.load().name(), client = hint, peer = %peer, end = ?end, "client closed");
        }
    }
}

/// The runtimes whose polls a metrics scrape waits out (see
/// `metrics::page`): the workers', or the one serving runtime.
fn serving_runtimes(workers: Option<&Workers>) -> Vec<tokio::runtime::Handle> {
    match workers {
        Some(w) => w.handles(),
        None => vec![tokio::runtime::Handle::current()],
    }
}

/// How long a client has to complete its TLS handshake. Until then it
/// holds a descriptor, a client slot and rustls's handshake buffers
/// (bounded), so one that stalls is closed rather than kept.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS handshake with a client, then its session. A failed or stalled
/// handshake is logged with rustls's words and closes the connection.
async fn serve_tls<S>(
    slot: &PoolSlot,
    hint: usize,
    peer: &str,
    tls: twem_core::tls::TlsAcceptor,
    s: S,
    stop: CancellationToken,
) -> End
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin,
{
    let handshake = tokio::select! {
        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(s)) => r,
        () = stop.cancelled() => return End::Shutdown,
    };
    match handshake {
        Ok(Ok(stream)) => {
            let (r, w) = twem_core::tls::split_client(stream);
            serve_connection(Arc::clone(slot), hint, r, w, stop).await
        }
        Ok(Err(e)) => {
            tracing::warn!(pool = %slot.load().name(), client = hint, peer = %peer, error = %e, "TLS handshake with the client failed");
            End::Error
        }
        Err(_) => {
            tracing::warn!(pool = %slot.load().name(), client = hint, peer = %peer,
                timeout_s = TLS_HANDSHAKE_TIMEOUT.as_secs(), "TLS handshake with the client timed out");
            End::Error
        }
    }
}

/// A client socket registered with the runtime that serves it.
enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The client's address for the log (`unix` for a unix socket).
fn peer_of(a: &Accepted) -> String {
    match a {
        Accepted::Tcp(s) => s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
        Accepted::Unix(_) => "unix".to_string(),
    }
}

/// Register an accepted socket with the current runtime's reactor.
fn register(a: Accepted) -> std::io::Result<Conn> {
    Ok(match a {
        Accepted::Tcp(s) => Conn::Tcp(tokio::net::TcpStream::from_std(s)?),
        Accepted::Unix(s) => Conn::Unix(tokio::net::UnixStream::from_std(s)?),
    })
}

/// Bind an admin endpoint (`port` 0: `addr` carries its own port) and hand
/// it over as a std listener, for the admin thread's runtime to register.
/// Bound through tokio for its `SO_REUSEADDR`, as the stats port always was.
async fn admin_listener(addr: &str, port: u16) -> std::io::Result<std::net::TcpListener> {
    let l = if port == 0 {
        TcpListener::bind(addr).await?
    } else {
        TcpListener::bind((addr, port)).await?
    };
    l.into_std()
}

/// nutcracker's stats port listens on 0.0.0.0 by default and twem keeps
/// that for drop-in compatibility, but pool and server names and traffic
/// figures are then open to anyone who can reach the host: say so, and how
/// to restrict it.
fn warn_if_exposed(l: &std::net::TcpListener, what: &str, restrict: &str) {
    if let Some(w) = l
        .local_addr()
        .ok()
        .and_then(|a| exposure_warning(a, what, restrict))
    {
        tracing::warn!("{w}");
    }
}

/// The warning for an admin endpoint bound to `addr`, unless it is loopback.
fn exposure_warning(addr: std::net::SocketAddr, what: &str, restrict: &str) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!("{what} listens on {addr}, which is not a loopback address: anyone who can reach this host can read it; restrict it with `{restrict}`")
    })
}

/// Read a config file, choosing YAML or TOML by its extension: the same
/// loader as the start and `-t` (size cap, listen hosts resolved).
pub fn load_config(path: &Path) -> Result<Config, crate::conf::LoadError> {
    crate::conf::load(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The default stats address (0.0.0.0, as nutcracker's) draws a warning
    // that says how to restrict it; loopback draws none.
    #[test]
    fn non_loopback_admin_address_warns() {
        let w = exposure_warning(
            "0.0.0.0:22222".parse().expect("addr"),
            "stats port",
            "-a 127.0.0.1",
        )
        .expect("a warning");
        assert!(
            w.contains("0.0.0.0:22222") && w.contains("-a 127.0.0.1"),
            "{w}"
        );
        assert!(exposure_warning("[::]:1".parse().expect("addr"), "m", "r").is_some());
        assert!(exposure_warning("127.0.0.1:1".parse().expect("addr"), "m", "r").is_none());
        assert!(exposure_warning("[::1]:1".parse().expect("addr"), "m", "r").is_none());
    }
}
