//! The talking part of the Sentinel client: one task per sentinel
//! subscribed to `+switch-master` (reconnecting when its sentinel dies),
//! and one task that asks every sentinel where each master is, at once at
//! start and then every [`POLL_INTERVAL`], in case a message was missed.
//! What they hear goes through [`decide`] and, when a server moved, to
//! [`ServerShared::switch_to`](crate::pool), which every connection of
//! that server watches.

use std::sync::atomic::Ordering::Acquire;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use twem_proto::resp::{self, Reply};

use super::proto::{
    decide, is_confirmation, message_on, parse_master_addr, parse_master_info, parse_replicas,
    parse_switch_master, Known, ReplyError, Report,
};
use crate::config::{ReadFrom, ServerAddr};
use crate::pool::PoolShared;

/// How often every sentinel is asked where each master is, besides
/// listening for `+switch-master`.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How soon a master no sentinel named yet is asked for again, during
/// the first [`DISCOVERY_PHASE`]; every [`POLL_INTERVAL`] after.
const DISCOVERY_RETRY: Duration = Duration::from_millis(100);
/// How long after start masters not yet named are asked for quickly.
const DISCOVERY_PHASE: Duration = Duration::from_secs(5);
/// The bound on asking one sentinel about every master, per poll round.
const POLL_BOUND: Duration = Duration::from_secs(2);
/// How long to wait before reconnecting to a sentinel that failed.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// The bound on connecting to a sentinel and on each of its replies
/// (not on waiting for messages).
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a quiet subscription checks that its pool still exists.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);
/// The channel Sentinel announces failovers on.
const SWITCH_CHANNEL: &[u8] = b"+switch-master";

/// Why talking to a sentinel failed.
#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    /// Connecting, reading or writing failed.
    #[error("sentinel {sentinel}: {source}")]
    Io {
        /// The sentinel.
        sentinel: String,
        /// What failed.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("sentinel {0}: no answer in time")]
    TimedOut(String),
    /// The sentinel closed the connection, or sent what is not RESP.
    #[error("sentinel {0}: connection closed or invalid reply")]
    Closed(String),
    /// A reply that could not be used.
    #[error("sentinel {sentinel}: {source}")]
    Reply {
        /// The sentinel.
        sentinel: String,
        /// Why.
        source: ReplyError,
    },
}

/// One connection to a sentinel, speaking RESP2.
struct SentinelConn {
    name: String,
    stream: TcpStream,
    buf: BytesMut,
    codec: resp::ReplyCodec,
}

impl SentinelConn {
    /// Connect to `addr` and authenticate with `auth`.
    async fn open(addr: &ServerAddr, auth: Option<&str>) -> Result<SentinelConn, SentinelError> {
        let name = addr.to_string();
        let ServerAddr::Tcp { host, port } = addr else {
            // Validation only lets host:port through.
            return Err(SentinelError::Closed(name));
        };
        let connect = TcpStream::connect((host.as_str(), *port));
        let stream = match tokio::time::timeout(SENTINEL_TIMEOUT, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(SentinelError::Io {
                    sentinel: name,
                    source,
                })
            }
            Err(_) => return Err(SentinelError::TimedOut(name)),
        };
        let _ = stream.set_nodelay(true);
        let mut conn = SentinelConn {
            name,
            stream,
            buf: BytesMut::with_capacity(4096),
            codec: resp::ReplyCodec::new(crate::pool::redis_reply_limits()),
        };
        if let Some(pw) = auth {
            let reply = conn.call(&[b"AUTH", pw.as_bytes()]).await?;
            if let Reply::Error(e) = reply {
                return Err(conn.reply_error(ReplyError::Refused(
                    String::from_utf8_lossy(&e).into_owned(),
                )));
            }
        }
        Ok(conn)
    }

    fn reply_error(&self, source: ReplyError) -> SentinelError {
        SentinelError::Reply {
            sentinel: self.name.clone(),
            source,
        }
    }

    /// Send one command.
    async fn send(&mut self, args: &[&[u8]]) -> Result<(), SentinelError> {
        let req = resp::Request::from_args(args.iter().map(|a| Bytes::copy_from_slice(a)));
        self.stream
            .write_all(req.wire())
            .await
            .map_err(|source| SentinelError::Io {
                sentinel: self.name.clone(),
                source,
            })
    }

    /// The next reply or message, however long it takes.
    async fn read(&mut self) -> Result<Reply, SentinelError> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(frame.parse()),
                Ok(None) => {}
                Err(_) => return Err(SentinelError::Closed(self.name.clone())),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(SentinelError::Closed(self.name.clone())),
                Ok(_) => {}
                Err(source) => {
                    return Err(SentinelError::Io {
                        sentinel: self.name.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Send one command and read its reply, within [`SENTINEL_TIMEOUT`].
    async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, SentinelError> {
        let name = self.name.clone();
        let exchange = async {
            self.send(args).await?;
            self.read().await
        };
        tokio::time::timeout(SENTINEL_TIMEOUT, exchange)
            .await
            .map_err(|_| SentinelError::TimedOut(name))?
    }
}

/// One pool's Sentinel client: which masters it follows and what it
/// believes about each.
struct Monitor {
    pool: Weak<PoolShared>,
    pool_name: String,
    sentinels: Vec<ServerAddr>,
    auth: Option<String>,
    /// `(server index in the pool, master name)`.
    masters: Vec<(usize, String)>,
    /// Per entry of `masters`.
    known: Mutex<Vec<Known>>,
    /// The pool reads from replicas: ask the sentinels for them too.
    replicas: bool,
}

/// Start following the sentinels of `shared`'s pool (a pool with
/// `sentinels`; nothing happens for another). The tasks end once the pool
/// is closed or dropped.
pub(crate) fn start(shared: &Arc<PoolShared>) {
    let Some(sc) = &shared.config.sentinel else {
        return;
    };
    let masters: Vec<(usize, String)> = shared
        .servers
        .iter()
        .enumerate()
        .filter_map(
            |(idx, s)| match shared.config.server(&s.name).map(|c| &c.addr) {
                Some(ServerAddr::Sentinel { master }) => Some((idx, master.clone())),
                _ => None,
            },
        )
        .collect();
    let monitor = Arc::new(Monitor {
        pool: Arc::downgrade(shared),
        pool_name: shared.config.name.clone(),
        sentinels: sc.addrs.clone(),
        auth: sc.auth.clone(),
        // A pool that took over from another (a reload) starts from where
        // its servers were.
        known: Mutex::new(
            masters
                .iter()
                .map(|(idx, _)| Known {
                    addr: shared.servers[*idx].current_addr().map(|a| (*a).clone()),
                    epoch: 0,
                })
                .collect(),
        ),
        replicas: shared.config.read_from != ReadFrom::Master,
        masters,
    });
    let span = tracing::info_span!(parent: None, "sentinel_poll", pool = %monitor.pool_name);
    tokio::spawn(tracing::Instrument::instrument(
        Arc::clone(&monitor).poll_loop(),
        span,
    ));
    for sentinel in &monitor.sentinels {
        let span = tracing::info_span!(parent: None, "sentinel_subscribe",
            pool = %monitor.pool_name, sentinel = %sentinel);
        tokio::spawn(tracing::Instrument::instrument(
            Arc::clone(&monitor).subscribe_loop(sentinel.clone()),
            span,
        ));
    }
}

impl Monitor {
    /// The pool, while it serves.
    fn alive(&self) -> Option<Arc<PoolShared>> {
        self.pool.upgrade().filter(|p| !p.closed.load(Acquire))
    }

    /// What a sentinel said about master `i` (of `masters`): decided, and
    /// carried out when the server moved.
    fn report(&self, i: usize, report: &Report, source: &str) {
        let Some(pool) = self.alive() else {
            return;
        };
        let to = {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            let Some(k) = known.get_mut(i) else {
                return;
            };
            let d = decide(k, report);
            k.apply(d)
        };
        let Some(to) = to else {
            return;
        };
        let (idx, master) = &self.masters[i];
        let server = &pool.servers[*idx];
        match server.switch_to(to.clone()) {
            Some(from) => {
                tracing::warn!(pool = %self.pool_name, server = %server.name, master = %master,
                from = %from, to = %to, source, "failover: the server's master moved; its connections follow")
            }
            None => tracing::info!(pool = %self.pool_name, server = %server.name, master = %master,
                addr = %to, source, "master found through the sentinels"),
        }
    }

    /// Whether master `i` has an address yet.
    fn is_known(&self, i: usize) -> bool {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(i).is_some_and(|k| k.addr.is_some())
    }

    /// Ask every sentinel about every master, again and again: quickly
    /// until each master is known, then every [`POLL_INTERVAL`].
    async fn poll_loop(self: Arc<Self>) {
        let mut failing = vec![false; self.sentinels.len()];
        // One connection per sentinel, kept from round to round (a
        // connection a second per sentinel and pool was churn for the
        // sentinels' logs and ephemeral ports); dropped on any failure.
        let mut conns: Vec<Option<SentinelConn>> = std::iter::repeat_with(|| None)
            .take(self.sentinels.len())
            .collect();
        let started = tokio::time::Instant::now();
        let mut told_unknown = vec![false; self.masters.len()];
        loop {
            if self.alive().is_none() {
                return;
            }
            // Per master: the replicas any sentinel lists as up, this
            // round (a sentinel that just restarted may not know them
            // yet; whether one is fit to read from is checked on it).
            let mut replicas: Vec<Option<Vec<ServerAddr>>> = vec![None; self.masters.len()];
            for ((n, sentinel), conn) in self.sentinels.iter().enumerate().zip(&mut conns) {
                // A sentinel that accepts but answers slowly holds up the
                // round at most this long.
                let asked =
                    tokio::time::timeout(POLL_BOUND, self.poll_one(sentinel, conn, &mut replicas));
                match asked
                    .await
                    .unwrap_or_else(|_| Err(SentinelError::TimedOut(sentinel.to_string())))
                {
                    Ok(()) => failing[n] = false,
                    // Said once per outage of a sentinel, not every second.
                    Err(e) if !failing[n] => {
                        failing[n] = true;
                        tracing::warn!(pool = %self.pool_name, error = %e, "cannot ask a sentinel");
                    }
                    Err(e) => {
                        tracing::debug!(pool = %self.pool_name, error = %e, "cannot ask a sentinel")
                    }
                }
            }
            if let Some(pool) = self.alive() {
                for (i, listed) in replicas.iter().enumerate() {
                    if let Some(listed) = listed {
                        pool.set_replicas(self.masters[i].0, listed);
                    }
                }
            }
            let all_known = (0..self.masters.len()).all(|i| self.is_known(i));
            let discovering = started.elapsed() < DISCOVERY_PHASE;
            if let Some(pool) = self.alive().filter(|_| !discovering) {
                // Once per master: a misspelt master name, or sentinels
                // that never answered; its requests fail meanwhile.
                for (i, (idx, master)) in self.masters.iter().enumerate() {
                    if !told_unknown[i] && !self.is_known(i) {
                        told_unknown[i] = true;
                        tracing::warn!(pool = %self.pool_name, server = %pool.servers[*idx].name,
                            master = %master,
                            "no sentinel named this master's address yet; its requests fail until one does");
                    }
                }
            }
            tokio::time::sleep(if all_known || !discovering {
                POLL_INTERVAL
            } else {
                DISCOVERY_RETRY
            })
            .await;
        }
    }

    /// Ask one sentinel about every master: `get-master-addr-by-name` for
    /// a master not known yet, `SENTINEL MASTER` (which carries the
    /// configuration epoch) after that. On `kept` (opened when empty),
    /// which is put back only when every answer came: a connection that
    /// failed or timed out mid-round (a reply may still be on its way) is
    /// dropped and the next round opens a new one.
    async fn poll_one(
        &self,
        sentinel: &ServerAddr,
        kept: &mut Option<SentinelConn>,
        replicas: &mut [Option<Vec<ServerAddr>>],
    ) -> Result<(), SentinelError> {
        // A kept connection may have died with its sentinel since the last
        // round (a restart): then once more on a new one, so a sentinel
        // that is back is not reported as failing.
        if let Some(conn) = kept.take() {
            if let Ok(conn) = self.ask_all(sentinel, conn, replicas).await {
                *kept = Some(conn);
                return Ok(());
            }
        }
        let conn = SentinelConn::open(sentinel, self.auth.as_deref()).await?;
        *kept = Some(self.ask_all(sentinel, conn, replicas).await?);
        Ok(())
    }

    /// [`poll_one`](Self::poll_one)'s questions on `conn`, given back when
    /// every answer came.
    async fn ask_all(
        &self,
        sentinel: &ServerAddr,
        mut conn: SentinelConn,
        replicas: &mut [Option<Vec<ServerAddr>>],
    ) -> Result<SentinelConn, SentinelError> {
        for (i, (_, master)) in self.masters.iter().enumerate() {
            if self.replicas {
                let reply = conn
                    .call(&[b"SENTINEL", b"REPLICAS", master.as_bytes()])
                    .await?;
                match parse_replicas(master, &reply) {
                    Ok(listed) => {
                        let all = replicas[i].get_or_insert_with(Vec::new);
                        for a in listed {
                            if !all.contains(&a) {
                                all.push(a);
                            }
                        }
                    }
                    Err(ReplyError::UnknownMaster(_)) => {}
                    Err(e) => return Err(conn.reply_error(e)),
                }
            }
            let parsed = if self.is_known(i) {
                let reply = conn
                    .call(&[b"SENTINEL", b"MASTER", master.as_bytes()])
                    .await?;
                parse_master_info(master, &reply)
            } else {
                let reply = conn
                    .call(&[b"SENTINEL", b"get-master-addr-by-name", master.as_bytes()])
                    .await?;
                parse_master_addr(master, &reply)
            };
            match parsed {
                Ok(report) => self.report(i, &report, "poll"),
                // Another master may be known to it: go on.
                Err(e @ ReplyError::UnknownMaster(_)) => {
                    tracing::debug!(pool = %self.pool_name, sentinel = %sentinel, error = %e, "master unknown to a sentinel");
                }
                Err(e) => return Err(conn.reply_error(e)),
            }
        }
        Ok(conn)
    }

    /// Stay subscribed to one sentinel's `+switch-master`, reconnecting
    /// after [`RECONNECT_DELAY`] when it fails.
    async fn subscribe_loop(self: Arc<Self>, sentinel: ServerAddr) {
        // Said once when a subscription is lost or refused, once when one
        // is confirmed again: not every retry.
        let mut failing = false;
        loop {
            if self.alive().is_none() {
                return;
            }
            match self.subscribed(&sentinel, &mut failing).await {
                Ok(()) => return,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(pool = %self.pool_name, error = %e,
                        "subscription to a sentinel lost; reconnecting");
                }
                Err(e) => {
                    tracing::debug!(pool = %self.pool_name, error = %e, "sentinel still unreachable")
                }
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }

    /// One subscription: until the sentinel fails (`Err`) or the pool
    /// ends (`Ok`). `failing` is cleared (and said) once the sentinel
    /// confirms the subscription.
    async fn subscribed(
        &self,
        sentinel: &ServerAddr,
        failing: &mut bool,
    ) -> Result<(), SentinelError> {
        let mut conn = SentinelConn::open(sentinel, self.auth.as_deref()).await?;
        conn.send(&[b"SUBSCRIBE", SWITCH_CHANNEL]).await?;
        loop {
            let reply = match tokio::time::timeout(LIVENESS_CHECK, conn.read()).await {
                Ok(r) => r?,
                Err(_) if self.alive().is_none() => return Ok(()),
                Err(_) => continue,
            };
            if let Reply::Error(e) = &reply {
                return Err(
                    conn.reply_error(ReplyError::Refused(String::from_utf8_lossy(e).into_owned()))
                );
            }
            let Some(payload) = message_on(&reply, SWITCH_CHANNEL) else {
                if *failing && is_confirmation(&reply) {
                    *failing = false;
                    tracing::info!(pool = %self.pool_name, sentinel = %sentinel,
                        "sentinel reachable again; subscribed to +switch-master");
                }
                continue;
            };
            let Some(switch) = parse_switch_master(payload) else {
                tracing::warn!(pool = %self.pool_name, sentinel = %sentinel,
                    payload = %String::from_utf8_lossy(payload), "unreadable +switch-master message");
                continue;
            };
            // Several servers may name one master; each follows it.
            for i in (0..self.masters.len()).filter(|i| self.masters[*i].1 == switch.master) {
                let report = Report {
                    addr: switch.to.clone(),
                    epoch: None,
                };
                self.report(i, &report, "+switch-master");
            }
        }
    }
}
