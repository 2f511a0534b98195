//! Failure accounting for `auto_eject_hosts`, ejection and re-admission,
//! kept apart from routing and sending (as pingora-load-balancing keeps
//! health checks apart from selection): the backend reports successes and
//! failures here; here it is decided when a server leaves the ring and when
//! a probe lets it back in. The ring itself is an immutable snapshot,
//! swapped atomically, so routing never waits on any of this.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::Arc;

use bytes::Bytes;
use twem_proto::memcache as mc;

use super::backend::{self, Expect};
use super::error::BackendErrorKind;
use super::{now_micros, PoolShared, Protocol, DEFAULT_PROBE_TIMEOUT};

impl PoolShared {
    /// A request to server `idx` succeeded: its failure streak ends.
    pub(crate) fn record_success(&self, idx: usize) {
        let f = &self.servers[idx].failures;
        if f.load(Relaxed) != 0 {
            f.store(0, Relaxed);
        }
    }

    /// A connection of `lane` to server `idx` failed: a replica's failure
    /// takes that replica out of reads; a master's counts as below.
    pub(crate) fn record_failure_on(self: &Arc<Self>, idx: usize, lane: backend::Lane) {
        match lane.replica {
            Some(r) => self.replica_failed(idx, usize::from(r)),
            None => self.record_failure(idx),
        }
    }

    /// A connection to server `idx` failed. With `auto_eject_hosts`,
    /// `server_failure_limit` consecutive failures take it out of the ring
    /// until a probe after `server_retry_timeout` finds it healthy.
    pub(crate) fn record_failure(self: &Arc<Self>, idx: usize) {
        // A cluster node that fails may have been failed over: read the
        // slot map again soon.
        if let Some(c) = &self.cluster {
            c.refresh_soon();
        }
        if !self.config.auto_eject_hosts {
            return;
        }
        let s = &self.servers[idx];
        let n = s.failures.fetch_add(1, Relaxed).saturating_add(1);
        if n < self.config.server_failure_limit.max(1) || s.ejected.swap(true, AcqRel) {
            return;
        }
        self.stats.server_ejects.fetch_add(1, Relaxed);
        s.stats
            .local()
            .server_ejected_at
            .store(now_micros(), Relaxed);
        self.rebuild_ring();
        tracing::warn!(pool = %self.config.name, server = %s.name, failures = n,
            retry_ms = self.config.server_retry_timeout.as_millis() as u64, "server ejected");
        let me = Arc::clone(self);
        let span =
            tracing::info_span!(parent: None, "probe", pool = %self.config.name, server = %s.name);
        tokio::spawn(tracing::Instrument::instrument(
            async move { me.probe_loop(idx).await },
            span,
        ));
    }

    fn rebuild_ring(&self) {
        // Ejections are rare; the lock only orders concurrent rebuilds so the
        // last one stored reflects the latest live set. Readers never take it.
        let _guard = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let live: Vec<bool> = self
            .servers
            .iter()
            .map(|s| !s.ejected.load(Acquire))
            .collect();
        self.ring.store(Arc::new(self.base_ring.with_live(&live)));
    }

    /// Wait out the retry timeout, then probe; re-admit on success, else wait
    /// again. nutcracker re-adds blindly after the timeout; a probe keeps a
    /// still-dead server from costing a round of failed client requests.
    async fn probe_loop(self: Arc<Self>, idx: usize) {
        let s = &self.servers[idx];
        loop {
            tokio::time::sleep(self.config.server_retry_timeout).await;
            if self.closed.load(Acquire) {
                return;
            }
            match self.probe(idx).await {
                Ok(()) => {
                    s.failures.store(0, Relaxed);
                    s.ejected.store(false, Release);
                    self.rebuild_ring();
                    tracing::warn!(pool = %self.config.name, server = %s.name, "server re-admitted after a successful probe");
                    return;
                }
                Err(kind) => {
                    tracing::debug!(pool = %self.config.name, server = %s.name, error = kind.words(),
                        "probe failed; server stays ejected");
                }
            }
        }
    }

    /// Connect (with the handshake) and ask for `PING` / `version`.
    async fn probe(&self, idx: usize) -> Result<(), BackendErrorKind> {
        let limit = self.config.timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
        let fut = async {
            let mut conn = backend::connect(self, idx, backend::Lane::default()).await?;
            let (wire, expect) = match self.protocol {
                Protocol::Redis => (Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"), Expect::Resp),
                Protocol::Memcache => (
                    Bytes::from_static(b"version\r\n"),
                    Expect::Mc(mc::Command::Version),
                ),
            };
            match conn.exchange(&wire, 1, expect).await {
                Ok(()) => Ok(()),
                Err(backend::Exchange::Failed(kind)) => Err(kind),
                Err(backend::Exchange::Rejected(_)) => Err(BackendErrorKind::InvalidReply),
            }
        };
        tokio::time::timeout(limit, fut)
            .await
            .unwrap_or(Err(BackendErrorKind::TimedOut))
    }
}
