//! The descriptor budget: how many client connections the proxy accepts
//! before it stops, so that descriptors stay free for its backend
//! connections.
//!
//! Without a reserve, a flood of clients uses every descriptor up to the
//! `ulimit -n`; a request that then needs a new backend connection fails
//! with EMFILE, and with `auto_eject_hosts` healthy servers were ejected for
//! it. With it, the clients past the budget are accepted and closed at once
//! (counted in `client_rejected`), as `client_connections` does per pool, and
//! backend connections, probes, listeners and the admin endpoints always
//! find a descriptor.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use twem_core::config::Config;

/// Descriptors kept for everything that is not a client: listeners, the
/// stats and metrics ports and their connections, log files, the runtime's
/// own (epoll, eventfd), probes, DNS.
const BASE_RESERVE: usize = 96;

/// Client connections the process may hold, over all pools.
#[derive(Debug, Default)]
pub struct FdBudget {
    /// The most client connections at once (0: no limit known).
    limit: AtomicUsize,
    /// Client connections open now.
    open: AtomicUsize,
}

impl FdBudget {
    /// A budget for `config` under the process's soft `RLIMIT_NOFILE`.
    pub fn new(config: &Config) -> FdBudget {
        let b = FdBudget::default();
        b.configure(config);
        b
    }

    /// Recompute the limit for `config` (at start and on every reload:
    /// the number of backend connections it may open changes).
    pub fn configure(&self, config: &Config) {
        self.configure_slots(backend_slots(config));
    }

    /// Recompute the limit for `backend` backend connection slots.
    pub fn configure_slots(&self, backend: usize) {
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(nix::sys::resource::RLIM_INFINITY);
        let limit = client_limit(nofile, backend);
        self.limit.store(limit, Relaxed);
        tracing::debug!(nofile, client_limit = limit, "descriptor budget");
    }

    /// Take a place for a new client; `false` when the budget is used up
    /// (the caller closes the connection). Pair with [`release`](Self::release).
    pub fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Relaxed);
        let now = self.open.fetch_add(1, Relaxed);
        if limit != 0 && now >= limit {
            self.open.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    /// A client connection closed.
    pub fn release(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// The most client connections at once (0: unlimited).
    pub fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }
}

/// Backend connections `config` may open at once: every server's
/// `server_connections` slots; for Redis pools twice (RESP2 clients and
/// `HELLO 3` clients have a lane each) plus its `pinned_connections`
/// (transactions).
pub fn backend_slots(config: &Config) -> usize {
    config
        .pools
        .iter()
        .map(|p| {
            let shared = p.server_connections.max(1) as usize;
            let per_server = if p.redis {
                shared
                    .saturating_mul(2)
                    .saturating_add(p.pinned_connections as usize)
            } else {
                shared
            };
            p.servers.len().saturating_mul(per_server)
        })
        .fold(0usize, usize::saturating_add)
}

/// Client connections allowed under a descriptor limit of `nofile` with
/// `backend` backend connections to keep room for. Pure, so the rule is
/// tested without touching the process's limits. The reserve is capped at
/// half of the limit, so a small `ulimit -n` with a large pool still accepts
/// clients (its backend connections then compete with them, as before).
pub fn client_limit(nofile: u64, backend: usize) -> usize {
    if nofile == nix::sys::resource::RLIM_INFINITY {
        return 0;
    }
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    let reserve = BASE_RESERVE.saturating_add(backend).min(nofile / 2);
    nofile.saturating_sub(reserve).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A Redis pool keeps room for both lanes and the pinned connections; a
    // memcached pool only for its shared connections.
    #[test]
    fn backend_slots_count_every_kind_of_connection() {
        let yaml = "r:\n  listen: 127.0.0.1:1\n  redis: true\n  server_connections: 2\n  pinned_connections: 5\n  servers:\n   - 127.0.0.1:2:1\n   - 127.0.0.1:3:1\nm:\n  listen: 127.0.0.1:4\n  server_connections: 3\n  servers:\n   - 127.0.0.1:5:1\n";
        let config = Config::from_yaml(yaml).expect("config");
        assert_eq!(backend_slots(&config), 2 * (2 * 2 + 5) + 3);
    }

    #[test]
    fn reserve_covers_backends_and_the_rest() {
        // 1024 descriptors, 3 servers x 2 connections: 96 + 6 kept back.
        assert_eq!(client_limit(1024, 6), 1024 - 102);
        assert_eq!(client_limit(65536, 100), 65536 - 196);
    }

    #[test]
    fn reserve_is_at_most_half() {
        assert_eq!(client_limit(128, 2), 64);
        assert_eq!(client_limit(100, 10_000), 50);
        assert_eq!(client_limit(1, 0), 1);
    }

    #[test]
    fn unlimited_means_no_limit() {
        assert_eq!(client_limit(nix::sys::resource::RLIM_INFINITY, 5), 0);
    }

    #[test]
    fn budget_refuses_past_the_limit_and_frees_on_release() {
        let b = FdBudget::default();
        b.limit.store(2, Relaxed);
        assert!(b.try_acquire());
        assert!(b.try_acquire());
        assert!(!b.try_acquire());
        b.release();
        assert!(b.try_acquire());
    }
}
