//! The admin endpoints (the stats port and `--metrics-addr`) run on their own
//! OS thread with its own current-thread runtime, never on the runtime that
//! serves clients: encoding a document for a large pool takes milliseconds,
//! and a scrape flood or a peer that connects and sends nothing must cost the
//! data path nothing.
//!
//! The endpoints share three defences: at most [`MAX_CONNECTIONS`]
//! connections each (a new one evicts the oldest, so a peer holding
//! connections open cannot lock a scraper out), an I/O deadline per
//! connection, and an accept loop that backs off on `EMFILE` instead of
//! spinning.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backoff::AcceptBackoff;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use twem_core::pool::PoolSnapshot;

use crate::stats::Globals;

/// At most this many connections per endpoint are served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a peer has to send its request (the whole head). Scrapers send
/// it at once; a peer still silent after this is holding a slot.
pub const READ_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long writing one reply may take: the documents are large for pools of
/// thousands of servers, but a reader that stops reading must not hold its
/// slot forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin endpoints read: every running pool's counters.
pub type Snapshot = Arc<dyn Fn() -> Vec<PoolSnapshot> + Send + Sync>;

/// The admin thread's listeners and what they serve.
pub struct Endpoints {
    /// The stats port (`-a:-s`).
    pub stats: std::net::TcpListener,
    /// `--metrics-addr`, if set.
    pub metrics: Option<std::net::TcpListener>,
    /// The stats JSON refresh interval (`-i`).
    pub interval: Duration,
    /// Reads the pools' counters.
    pub snapshot: Snapshot,
    /// Process-wide connection counters.
    pub globals: Arc<Globals>,
    /// The runtime that serves clients (see [`crate::metrics::Endpoint`]).
    pub serving: Vec<tokio::runtime::Handle>,
}

/// The running admin thread.
#[derive(Debug)]
pub struct Admin {
    thread: Option<JoinHandle<()>>,
    stop: CancellationToken,
}

/// Start the admin thread. It serves until `stop` fires (or [`Admin::join`]).
/// The runtime is built here, so a failure shows at start, not later.
pub fn spawn(ep: Endpoints, stop: CancellationToken) -> std::io::Result<Admin> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("twem-admin".into())
        .spawn(move || {
            rt.block_on(async move {
                let stats = match TcpListener::from_std(ep.stats) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "stats port: cannot register the listener");
                        return;
                    }
                };
                let metrics = ep.metrics.map(TcpListener::from_std).transpose();
                let metrics = match metrics {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::error!(error = %e, "metrics: cannot register the listener");
                        None
                    }
                };
                let stats_task = crate::stats::serve(
                    stats,
                    ep.interval,
                    Arc::clone(&ep.snapshot),
                    Arc::clone(&ep.globals),
                    thread_stop.clone(),
                )
                .instrument(tracing::info_span!("admin", endpoint = "stats"));
                let metrics_task = async {
                    if let Some(l) = metrics {
                        let m = crate::metrics::Endpoint {
                            snapshot: ep.snapshot,
                            globals: ep.globals,
                            serving: ep.serving,
                        };
                        crate::metrics::serve(l, m, thread_stop.clone())
                            .instrument(tracing::info_span!("admin", endpoint = "metrics"))
                            .await;
                    }
                };
                tokio::join!(stats_task, metrics_task);
            });
            // Dropping the runtime here ends connections still being served.
        })?;
    Ok(Admin {
        thread: Some(thread),
        stop,
    })
}

impl Admin {
    /// Stop serving and wait for the thread to end (it drops every admin
    /// connection still open).
    pub async fn join(mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            // Joining blocks; the thread ends within one poll of its runtime.
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("stats", &self.stats)
            .field("metrics", &self.metrics)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// The connections an endpoint serves now, oldest first. Admitting one over
/// [`MAX_CONNECTIONS`] cancels the oldest: the holder of many idle
/// connections loses its own, while a new scrape gets served.
#[derive(Debug)]
pub struct Limiter {
    max: usize,
    open: Mutex<(u64, VecDeque<(u64, CancellationToken)>)>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    id: u64,
    /// Fires when a newer connection evicted this one.
    pub evicted: CancellationToken,
}

impl Limiter {
    /// A limiter for at most `max` connections.
    pub fn new(max: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            max: max.max(1),
            open: Mutex::new((0, VecDeque::new())),
        })
    }

    /// Admit a connection, evicting the oldest when full.
    pub fn admit(self: &Arc<Self>) -> Permit {
        let mut g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while g.1.len() >= self.max {
            if let Some((_, old)) = g.1.pop_front() {
                old.cancel();
            }
        }
        g.0 += 1;
        let id = g.0;
        let evicted = CancellationToken::new();
        g.1.push_back((id, evicted.clone()));
        Permit {
            limiter: Arc::clone(self),
            id,
            evicted,
        }
    }

    /// Connections admitted and not yet finished or evicted.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).1.len()
    }
}

impl Permit {
    /// Serve `conn` on a task of its own that holds this permit: the task ends
    /// when `conn` does or when a newer connection evicts this one.
    pub fn spawn(self, conn: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(
            async move {
                tokio::select! {
                    () = conn => {}
                    () = self.evicted.cancelled() => {}
                }
            }
            .instrument(tracing::Span::current()),
        );
    }
}

/// Write `body` and close the connection, giving up after [`WRITE_TIMEOUT`]
/// (a peer that does not read is cut off by the deadline).
pub async fn write_and_close(sock: &mut TcpStream, body: &[u8]) {
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        let _ = sock.write_all(body).await;
        let _ = sock.shutdown().await;
    })
    .await;
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut g = self.limiter.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = g.1.iter().position(|(id, _)| *id == self.id) {
            g.1.remove(i);
        }
    }
}

/// Accept the next connection on an admin listener. A failed accept (most
/// often `EMFILE`: the process is out of descriptors, and the pending
/// connection stays queued, so retrying at once would spin) pauses 10 ms,
/// doubling up to 100 ms while failures go on, with at most one log line a
/// second. `None` once `stop` fires.
pub async fn accept(
    listener: &TcpListener,
    endpoint: &'static str,
    stop: &CancellationToken,
) -> Option<TcpStream> {
    let mut backoff = AcceptBackoff::new(AcceptBackoff::ADMIN_MAX);
    loop {
        let res = tokio::select! {
            r = listener.accept() => r,
            () = stop.cancelled() => return None,
        };
        match res {
            Ok((sock, _)) => return Some(sock),
            Err(e) => {
                let pause = backoff.failed(endpoint, &e);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The oldest connection makes room for a new one; finished ones leave.
    #[test]
    fn limiter_evicts_oldest() {
        let l = Limiter::new(2);
        let a = l.admit();
        let b = l.admit();
        assert_eq!(l.open(), 2);
        let c = l.admit();
        assert!(a.evicted.is_cancelled());
        assert!(!b.evicted.is_cancelled());
        assert_eq!(l.open(), 2);
        drop(a); // already out of the list: nothing else leaves
        assert_eq!(l.open(), 2);
        drop(b);
        assert_eq!(l.open(), 1);
        assert!(!c.evicted.is_cancelled());
    }
}
