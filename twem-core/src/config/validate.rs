//! The one place where a raw tree becomes a [`Config`]: every rule of
//! nutcracker 0.5.0's `conf.c`, every problem collected rather than the first.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::tree::{Node, Pos, Value};
use super::{
    ClusterConfig, Config, ConfigError, Listen, PoolConfig, Problem, ReadFrom, SentinelConfig,
    ServerAddr, ServerConfig, TlsConfig, DEFAULT_ALLOW_FLUSH, DEFAULT_AUTO_EJECT_HOSTS,
    DEFAULT_BACKLOG, DEFAULT_CLIENT_CONNECTIONS, DEFAULT_CLUSTER_MAX_NODES,
    DEFAULT_CLUSTER_REFRESH, DEFAULT_DISTRIBUTION, DEFAULT_HASH, DEFAULT_PINNED_CONNECTIONS,
    DEFAULT_PRECONNECT, DEFAULT_REDIS, DEFAULT_REDIS_DB, DEFAULT_REUSEPORT,
    DEFAULT_SERVER_CONNECTIONS, DEFAULT_SERVER_FAILURE_LIMIT, DEFAULT_SERVER_RETRY_TIMEOUT,
    DEFAULT_TCPKEEPALIVE, KEYS, MAX_SERVER_CONNECTIONS,
};
use crate::hash::{HashKind, HashTag};
use crate::ring::Distribution;

/// nutcracker keeps numbers in a C `int`; larger values wrap there, so they
/// are refused here rather than given a different meaning.
const MAX_NUMBER: u32 = i32::MAX as u32;

/// Turns the raw tree into a [`Config`], or reports everything wrong with it.
pub(crate) fn validate(root: Option<Node>) -> Result<Config, ConfigError> {
    let mut checker = Checker::default();
    let pools = checker.config(root.as_ref());
    if checker.problems.is_empty() {
        Ok(Config { pools })
    } else {
        Err(ConfigError {
            problems: checker.problems,
        })
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

/// The keys of one pool, first occurrence of each.
struct Keys<'n> {
    found: Vec<(&'static str, &'n Node)>,
}

impl<'n> Keys<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.found
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, node)| *node)
    }
}

impl Checker {
    fn report(&mut self, pool: Option<&str>, key: Option<&str>, pos: Option<Pos>, message: String) {
        self.problems.push(Problem {
            pool: pool.map(str::to_owned),
            key: key.map(str::to_owned),
            message,
            line: pos.map(|p| p.line),
        });
    }

    fn config(&mut self, root: Option<&Node>) -> Vec<PoolConfig> {
        let no_pools = "no pools defined: the file must map pool names to pools".to_owned();
        let Some(root) = root else {
            self.report(None, None, None, no_pools);
            return Vec::new();
        };
        let entries = match &root.value {
            Value::Map(entries) => entries,
            // A document that is only a null, e.g. `~` or `---`.
            Value::Scalar(text) if text.is_empty() || text == "~" || text == "null" => {
                self.report(None, None, Some(root.pos), no_pools);
                return Vec::new();
            }
            Value::Scalar(_) | Value::Seq(_) => {
                let message = format!(
                    "the top level must map pool names to pools, not be {}",
                    root.kind()
                );
                self.report(None, None, Some(root.pos), message);
                return Vec::new();
            }
        };
        if entries.is_empty() {
            self.report(None, None, Some(root.pos), no_pools);
        }

        let mut pools = Vec::new();
        // Maps, not lists: a file may hold many pools, and a linear search
        // per pool made checking quadratic.
        let mut names: HashMap<&str, Pos> = HashMap::new();
        let mut listens: HashMap<ListenKey, &str> = HashMap::new();
        for (key, value) in entries {
            let Some(name) = key.as_scalar() else {
                let message = format!("pool names must be single values, not {}", key.kind());
                self.report(None, None, Some(key.pos), message);
                continue;
            };
            if name.is_empty() {
                let message = "a pool name is empty".to_owned();
                self.report(None, None, Some(key.pos), message);
                continue;
            }
            if let Some(first) = names.get(name) {
                let message = format!("duplicate pool name (first defined on line {})", first.line);
                self.report(Some(name), None, Some(key.pos), message);
                continue;
            }
            names.insert(name, key.pos);

            let (listen, pool) = self.pool(name, key.pos, value);
            if let Some(listen) = listen {
                match listens.entry(ListenKey::of(&listen)) {
                    Entry::Occupied(other) => {
                        let message = format!(
                            "listen {:?} is also used by pool {:?}",
                            listen.to_string(),
                            other.get()
                        );
                        self.report(Some(name), Some("listen"), Some(key.pos), message);
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(name);
                    }
                }
            }
            pools.extend(pool);
        }
        pools
    }

    /// Checks one pool; returns its listen address if that part is valid (so
    /// clashes between pools are found even in otherwise broken pools) and
    /// the pool if all of it is.
    fn pool(
        &mut self,
        name: &str,
        name_pos: Pos,
        node: &Node,
    ) -> (Option<Listen>, Option<PoolConfig>) {
        let before = self.problems.len();
        let pool = Some(name);
        let Value::Map(entries) = &node.value else {
            let message = format!("must be a mapping of keys to values, not {}", node.kind());
            self.report(pool, None, Some(node.pos), message);
            return (None, None);
        };

        let mut keys = Keys { found: Vec::new() };
        for (key, value) in entries {
            let Some(text) = key.as_scalar() else {
                let message = format!("keys must be single words, not {}", key.kind());
                self.report(pool, None, Some(key.pos), message);
                continue;
            };
            let Some(known) = KEYS.iter().copied().find(|k| *k == text) else {
                let message = format!("unknown key {text:?} (known keys: {})", KEYS.join(", "));
                self.report(pool, Some(text), Some(key.pos), message);
                continue;
            };
            if let Some(first) = keys.get(known) {
                // `first` is the value; its line is the key's line for every
                // layout nutcracker accepts.
                let message = format!(
                    "duplicate key {known:?} (first given on line {})",
                    first.pos.line
                );
                self.report(pool, Some(known), Some(key.pos), message);
                continue;
            }
            keys.found.push((known, value));
        }

        let listen = match keys.get("listen") {
            None => {
                self.report(
                    pool,
                    Some("listen"),
                    Some(name_pos),
                    "listen is missing".to_owned(),
                );
                None
            }
            Some(node) => self.text(pool, "listen", node).and_then(|text| {
                parse_listen(text)
                    .map_err(|message| self.report(pool, Some("listen"), Some(node.pos), message))
                    .ok()
            }),
        };

        let hash = self.choice(
            pool,
            &keys,
            "hash",
            HashKind::from_name,
            &names_of(HashKind::ALL.map(HashKind::name)),
        );
        let distribution = self.choice(
            pool,
            &keys,
            "distribution",
            Distribution::from_name,
            &names_of(Distribution::ALL.map(Distribution::name)),
        );
        let hash_tag = keys.get("hash_tag").and_then(|node| {
            let text = self.text(pool, "hash_tag", node)?;
            let tag = HashTag::from_bytes(text.as_bytes());
            if tag.is_none() {
                let message = format!("hash_tag {text:?} must be exactly 2 bytes, e.g. \"{{}}\"");
                self.report(pool, Some("hash_tag"), Some(node.pos), message);
            }
            tag
        });

        // nutcracker arms no timer for `timeout: 0`, so 0 means none.
        let timeout = self
            .number(pool, &keys, "timeout")
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(u64::from(ms)));
        let backlog = self
            .number(pool, &keys, "backlog")
            .unwrap_or(DEFAULT_BACKLOG);
        let client_connections = self
            .number(pool, &keys, "client_connections")
            .unwrap_or(DEFAULT_CLIENT_CONNECTIONS);
        let redis = self.boolean(pool, &keys, "redis").unwrap_or(DEFAULT_REDIS);
        let redis_auth = keys.get("redis_auth").and_then(|node| {
            self.text(pool, "redis_auth", node)
                .map(|text| (text.to_owned(), node))
        });
        if let Some((_, node)) = &redis_auth {
            if !redis {
                let message = "redis_auth is only valid for a redis pool (redis: true)".to_owned();
                self.report(pool, Some("redis_auth"), Some(node.pos), message);
            }
        }
        let redis_db = self
            .number(pool, &keys, "redis_db")
            .unwrap_or(DEFAULT_REDIS_DB);
        let preconnect = self
            .boolean(pool, &keys, "preconnect")
            .unwrap_or(DEFAULT_PRECONNECT);
        let auto_eject_hosts = self
            .boolean(pool, &keys, "auto_eject_hosts")
            .unwrap_or(DEFAULT_AUTO_EJECT_HOSTS);
        let server_connections = self.connections(
            pool,
            &keys,
            "server_connections",
            DEFAULT_SERVER_CONNECTIONS,
        );
        let pinned_connections = self.connections(
            pool,
            &keys,
            "pinned_connections",
            DEFAULT_PINNED_CONNECTIONS,
        );
        let allow_flush = keys.get("allow_flush").and_then(|node| {
            let allow = self.boolean(pool, &keys, "allow_flush")?;
            // A memcached pool sends flush_all to every server anyway: the
            // key would suggest a guard that is not there.
            if !redis {
                let message = "allow_flush is only valid for a redis pool (redis: true)".to_owned();
                self.report(pool, Some("allow_flush"), Some(node.pos), message);
            }
            Some(allow)
        });
        let servers_node = keys.get("servers");
        let cluster = self.cluster(pool, &keys, redis, auto_eject_hosts, redis_db);
        let tls = self.tls(pool, &keys);
        let server_retry_timeout = self
            .number(pool, &keys, "server_retry_timeout")
            .map_or(DEFAULT_SERVER_RETRY_TIMEOUT, |ms| {
                Duration::from_millis(u64::from(ms))
            });
        let server_failure_limit = self
            .number(pool, &keys, "server_failure_limit")
            .unwrap_or(DEFAULT_SERVER_FAILURE_LIMIT);
        let tcpkeepalive = self
            .boolean(pool, &keys, "tcpkeepalive")
            .unwrap_or(DEFAULT_TCPKEEPALIVE);
        let reuseport = self
            .boolean(pool, &keys, "reuseport")
            .unwrap_or(DEFAULT_REUSEPORT);
        let sentinel = self.sentinel(pool, &keys, redis, auto_eject_hosts);
        if sentinel.is_some() && cluster.is_some() {
            self.report(
                pool,
                Some("sentinels"),
                keys.get("sentinels").map(|n| n.pos),
                "sentinels and cluster: true do not go together: a cluster fails over by itself"
                    .to_string(),
            );
        }
        // With both keys refused above, the servers are read as a
        // cluster's seeds: one problem, not one per entry.
        let servers = self.servers(
            pool,
            name_pos,
            servers_node,
            sentinel.is_some() && cluster.is_none(),
        );
        // Cluster nodes name each other by host and port: a seed on a
        // unix socket could never be matched to the map's nodes.
        if cluster.is_some() {
            if let Some(unix) = servers
                .iter()
                .find(|s| matches!(s.addr, ServerAddr::Unix { .. }))
            {
                let message = format!(
                    "a cluster pool's servers are seed nodes as host:port, not a unix socket ({})",
                    unix.addr
                );
                self.report(pool, Some("servers"), servers_node.map(|n| n.pos), message);
            }
        }
        let (read_from, replicas) = self.replicas(
            pool,
            &keys,
            redis,
            sentinel.is_some(),
            cluster.is_some(),
            &servers,
        );
        if tls.servers && tls.server_name.is_none() {
            if let Some(unix) = servers
                .iter()
                .find(|s| matches!(s.addr, ServerAddr::Unix { .. }))
            {
                let message = format!(
                    "tls_servers with a unix socket server ({}) needs tls_server_name: a socket path names no host to verify",
                    unix.addr
                );
                self.report(
                    pool,
                    Some("tls_servers"),
                    keys.get("tls_servers").map(|n| n.pos),
                    message,
                );
            }
        }

        let result = match (&listen, self.problems.len() == before) {
            (Some(listen), true) => {
                let config = PoolConfig {
                    name: name.to_owned(),
                    listen: listen.clone(),
                    hash: hash.unwrap_or(DEFAULT_HASH),
                    hash_tag,
                    distribution: distribution.unwrap_or(DEFAULT_DISTRIBUTION),
                    timeout,
                    backlog,
                    client_connections,
                    redis,
                    redis_auth: redis_auth.map(|(text, _)| text),
                    redis_db,
                    preconnect,
                    auto_eject_hosts,
                    server_connections,
                    pinned_connections,
                    allow_flush: allow_flush.unwrap_or(DEFAULT_ALLOW_FLUSH),
                    tls,
                    server_retry_timeout,
                    server_failure_limit,
                    tcpkeepalive,
                    reuseport,
                    sentinel,
                    read_from,
                    replicas,
                    servers,
                    cluster,
                };
                // The remaining ring rule (total weight fits 32 bits) is
                // checked with the ring's own rules, so `ring()` cannot fail
                // later; building it here would cost most of `-t`'s time.
                match config.check_ring() {
                    Ok(_) => Some(config),
                    Err(err) => {
                        let pos = keys.get("servers").map(|n| n.pos);
                        self.report(
                            pool,
                            Some("servers"),
                            pos,
                            format!("servers cannot form a ring: {err}"),
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        // Problems were found key by key; show them in file order.
        if let Some(found) = self.problems.get_mut(before..) {
            found.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        }
        (listen, result)
    }

    /// The text of a single-value key, reporting lists, mappings and empty
    /// values (nutcracker refuses an empty `key:`).
    fn text<'n>(&mut self, pool: Option<&str>, key: &str, node: &'n Node) -> Option<&'n str> {
        match node.as_scalar() {
            Some("") => {
                self.report(
                    pool,
                    Some(key),
                    Some(node.pos),
                    format!("{key} has no value"),
                );
                None
            }
            Some(text) => Some(text),
            None => {
                let message = format!("{key} must be a single value, not {}", node.kind());
                self.report(pool, Some(key), Some(node.pos), message);
                None
            }
        }
    }

    fn choice<T>(
        &mut self,
        pool: Option<&str>,
        keys: &Keys<'_>,
        key: &str,
        from_name: fn(&str) -> Option<T>,
        names: &str,
    ) -> Option<T> {
        let node = keys.get(key)?;
        let text = self.text(pool, key, node)?;
        let value = from_name(text);
        if value.is_none() {
            let message = format!("{key} {text:?} is not one of {names}");
            self.report(pool, Some(key), Some(node.pos), message);
        }
        value
    }

    /// The `tls_*` keys: which go together and which need another. The
    /// files themselves are read by [`crate::tls`] (this stays I/O-free).
    fn tls(&mut self, pool: Option<&str>, keys: &Keys<'_>) -> TlsConfig {
        let path = |this: &mut Self, key: &str| {
            keys.get(key)
                .and_then(|node| this.text(pool, key, node).map(PathBuf::from))
        };
        let tls = TlsConfig {
            cert: path(self, "tls_cert"),
            key: path(self, "tls_key"),
            client_ca: path(self, "tls_client_ca"),
            servers: self.boolean(pool, keys, "tls_servers").unwrap_or(false),
            ca: path(self, "tls_ca"),
            server_name: keys
                .get("tls_server_name")
                .and_then(|node| self.text(pool, "tls_server_name", node).map(str::to_owned)),
            client_cert: path(self, "tls_client_cert"),
            client_key: path(self, "tls_client_key"),
        };
        let need = |this: &mut Self, key: &str, set: bool, other: &str, why: &str| {
            if set {
                let pos = keys.get(key).map(|n| n.pos);
                this.report(pool, Some(key), pos, format!("{key} needs {other}{why}"));
            }
        };
        need(
            self,
            "tls_cert",
            tls.cert.is_some() && tls.key.is_none(),
            "tls_key",
            " (the certificate's private key)",
        );
        need(
            self,
            "tls_key",
            tls.key.is_some() && tls.cert.is_none(),
            "tls_cert",
            " (the certificate the key belongs to)",
        );
        need(
            self,
            "tls_client_ca",
            tls.client_ca.is_some() && tls.cert.is_none(),
            "tls_cert and tls_key",
            " (client certificates are asked for in a TLS handshake)",
        );
        let backend_only = " (it is about the TLS connections to the servers)";
        need(
            self,
            "tls_ca",
            tls.ca.is_some() && !tls.servers,
            "tls_servers: true",
            backend_only,
        );
        need(
            self,
            "tls_server_name",
            tls.server_name.is_some() && !tls.servers,
            "tls_servers: true",
            backend_only,
        );
        need(
            self,
            "tls_client_cert",
            tls.client_cert.is_some() && !tls.servers,
            "tls_servers: true",
            backend_only,
        );
        need(
            self,
            "tls_client_key",
            tls.client_key.is_some() && !tls.servers,
            "tls_servers: true",
            backend_only,
        );
        need(
            self,
            "tls_client_cert",
            tls.client_cert.is_some() && tls.client_key.is_none(),
            "tls_client_key",
            " (the certificate's private key)",
        );
        need(
            self,
            "tls_client_key",
            tls.client_key.is_some() && tls.client_cert.is_none(),
            "tls_client_cert",
            " (the certificate the key belongs to)",
        );
        if let (Some(name), Some(node)) = (&tls.server_name, keys.get("tls_server_name")) {
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                let message =
                    format!("tls_server_name {name:?} is neither a DNS name nor an IP address");
                self.report(pool, Some("tls_server_name"), Some(node.pos), message);
            }
        }
        tls
    }

    /// `cluster: true` and its `cluster_*` keys. A cluster places keys by
    /// its own slot map, so the keys that choose nutcracker's placement
    /// (`hash`, `distribution`, a `hash_tag` other than Redis's `{}`) would
    /// be silently ignored: they are refused instead, as are the ones a
    /// cluster does its own way (`auto_eject_hosts`: the cluster fails a
    /// node over; `redis_db`: a cluster has only database 0).
    fn cluster(
        &mut self,
        pool: Option<&str>,
        keys: &Keys<'_>,
        redis: bool,
        auto_eject_hosts: bool,
        redis_db: u32,
    ) -> Option<ClusterConfig> {
        let on = self.boolean(pool, keys, "cluster").unwrap_or(false);
        if !on {
            for key in ["cluster_refresh", "cluster_max_nodes"] {
                if let Some(node) = keys.get(key) {
                    let message = format!("{key} is only valid for a cluster pool (cluster: true)");
                    self.report(pool, Some(key), Some(node.pos), message);
                }
            }
            return None;
        }
        let at = |key: &str| keys.get(key).map(|n| n.pos);
        if !redis {
            let message = "cluster is only valid for a redis pool (redis: true)".to_owned();
            self.report(pool, Some("cluster"), at("cluster"), message);
        }
        for key in ["hash", "distribution"] {
            if keys.get(key).is_some() {
                let message = format!(
                    "{key} cannot be set in a cluster pool: keys are placed by the cluster's hash slots (CRC16)"
                );
                self.report(pool, Some(key), at(key), message);
            }
        }
        if let Some(node) = keys.get("hash_tag") {
            if node.as_scalar() != Some("{}") {
                let message =
                    "a cluster pool's hash_tag can only be \"{}\", Redis Cluster's own".to_owned();
                self.report(pool, Some("hash_tag"), Some(node.pos), message);
            }
        }
        if auto_eject_hosts {
            let message = "auto_eject_hosts cannot be true in a cluster pool: the cluster fails nodes over itself".to_owned();
            self.report(
                pool,
                Some("auto_eject_hosts"),
                at("auto_eject_hosts"),
                message,
            );
        }
        if redis_db != 0 {
            let message = "redis_db must be 0 in a cluster pool: Redis Cluster has only database 0"
                .to_owned();
            self.report(pool, Some("redis_db"), at("redis_db"), message);
        }
        let refresh = match self.number(pool, keys, "cluster_refresh") {
            Some(0) => {
                let message = "cluster_refresh must be at least 1 (milliseconds)".to_owned();
                self.report(
                    pool,
                    Some("cluster_refresh"),
                    at("cluster_refresh"),
                    message,
                );
                DEFAULT_CLUSTER_REFRESH
            }
            Some(ms) => Duration::from_millis(u64::from(ms)),
            None => DEFAULT_CLUSTER_REFRESH,
        };
        let max_nodes =
            self.connections(pool, keys, "cluster_max_nodes", DEFAULT_CLUSTER_MAX_NODES);
        Some(ClusterConfig { refresh, max_nodes })
    }

    /// A connection count (`server_connections`, `pinned_connections`): 1 to
    /// [`MAX_SERVER_CONNECTIONS`], `default` when absent.
    fn connections(&mut self, pool: Option<&str>, keys: &Keys<'_>, key: &str, default: u32) -> u32 {
        match self.number(pool, keys, key) {
            Some(0) => {
                let pos = keys.get(key).map(|n| n.pos);
                self.report(pool, Some(key), pos, format!("{key} must be at least 1"));
                default
            }
            Some(n) if n > MAX_SERVER_CONNECTIONS => {
                let pos = keys.get(key).map(|n| n.pos);
                let message =
                    format!("{key} {n} is too large (at most {MAX_SERVER_CONNECTIONS} per server)");
                self.report(pool, Some(key), pos, message);
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    /// A non-negative number as nutcracker's `nc_atoi` reads it: decimal
    /// digits only, no sign, no spaces.
    fn number(&mut self, pool: Option<&str>, keys: &Keys<'_>, key: &str) -> Option<u32> {
        let node = keys.get(key)?;
        let text = self.text(pool, key, node)?;
        parse_number(text)
            .map_err(|reason| {
                self.report(
                    pool,
                    Some(key),
                    Some(node.pos),
                    format!("{key} {text:?} {reason}"),
                )
            })
            .ok()
    }

    /// Exactly `true` or `false`, as nutcracker compares them.
    fn boolean(&mut self, pool: Option<&str>, keys: &Keys<'_>, key: &str) -> Option<bool> {
        let node = keys.get(key)?;
        let text = self.text(pool, key, node)?;
        match text {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                let message = format!("{key} {text:?} is not true or false");
                self.report(pool, Some(key), Some(node.pos), message);
                None
            }
        }
    }

    /// The `sentinels` and `sentinel_auth` keys: a Redis pool whose servers
    /// are Sentinel masters. `auto_eject_hosts` is refused with them: a
    /// failover moves a server to its promoted replica, and ejecting it
    /// instead would move its keys to other servers, which is what a
    /// Sentinel pool is there to avoid.
    fn sentinel(
        &mut self,
        pool: Option<&str>,
        keys: &Keys<'_>,
        redis: bool,
        auto_eject_hosts: bool,
    ) -> Option<SentinelConfig> {
        let auth = keys.get("sentinel_auth").and_then(|node| {
            self.text(pool, "sentinel_auth", node)
                .map(|text| (text.to_owned(), node.pos))
        });
        let Some(node) = keys.get("sentinels") else {
            if let Some((_, pos)) = auth {
                let message = "sentinel_auth is only valid with sentinels".to_owned();
                self.report(pool, Some("sentinel_auth"), Some(pos), message);
            }
            return None;
        };
        let key = Some("sentinels");
        if !redis {
            let message = "sentinels is only valid for a redis pool (redis: true)".to_owned();
            self.report(pool, key, Some(node.pos), message);
        }
        if auto_eject_hosts {
            let message = "sentinels and auto_eject_hosts exclude each other: a Sentinel pool follows a failed master to its promoted replica instead of moving its keys to other servers".to_owned();
            self.report(pool, key, Some(node.pos), message);
        }
        // However wrong the list, it is still a Sentinel pool: its servers
        // are read as master names, so their own mistakes are reported.
        if matches!(&node.value, Value::Seq(items) if items.is_empty()) {
            let message = "sentinels is empty; list at least one host:port".to_owned();
            self.report(pool, key, Some(node.pos), message);
        }
        let mut addrs: Vec<ServerAddr> = Vec::new();
        for (n, text, pos) in self.entries(pool, "sentinels", node, "host:port") {
            match parse_host_port(text) {
                Ok(addr) if addrs.contains(&addr) => {
                    let message = format!("sentinels entry {n} {text:?} is listed twice");
                    self.report(pool, key, Some(pos), message);
                }
                Ok(addr) => addrs.push(addr),
                Err(reason) => {
                    let message = format!("sentinels entry {n} {reason}");
                    self.report(pool, key, Some(pos), message);
                }
            }
        }
        Some(SentinelConfig {
            addrs,
            auth: auth.map(|(text, _)| text),
        })
    }

    /// The `read_from` and `replicas` keys: where read-only commands go,
    /// and (without sentinels) each server's replicas.
    fn replicas(
        &mut self,
        pool: Option<&str>,
        keys: &Keys<'_>,
        redis: bool,
        sentinel: bool,
        cluster: bool,
        servers: &[ServerConfig],
    ) -> (ReadFrom, Vec<(String, ServerAddr)>) {
        let read_from = self
            .choice(
                pool,
                keys,
                "read_from",
                ReadFrom::from_name,
                &names_of(ReadFrom::ALL.map(ReadFrom::name)),
            )
            .unwrap_or_default();
        if let Some(node) = keys.get("read_from") {
            if !redis {
                let message = "read_from is only valid for a redis pool (redis: true)".to_owned();
                self.report(pool, Some("read_from"), Some(node.pos), message);
            }
        }
        let mut replicas = Vec::new();
        let key = Some("replicas");
        if let Some(node) = keys.get("replicas") {
            if sentinel {
                let message =
                    "replicas and sentinels exclude each other: a Sentinel pool learns its replicas from the sentinels"
                        .to_owned();
                self.report(pool, key, Some(node.pos), message);
            }
            if cluster {
                let message =
                    "replicas cannot be listed in a cluster pool: it learns its replicas from the cluster's map"
                        .to_owned();
                self.report(pool, key, Some(node.pos), message);
            }
            if read_from == ReadFrom::Master {
                let message = "replicas needs read_from prefer-replica or replica: with read_from master they are never read from".to_owned();
                self.report(pool, key, Some(node.pos), message);
            }
            for (n, text, pos) in self.entries(pool, "replicas", node, "server-name host:port") {
                let Some((server, addr)) = text.split_once(' ') else {
                    let message =
                        format!("replicas entry {n} {text:?} is not server-name host:port");
                    self.report(pool, key, Some(pos), message);
                    continue;
                };
                if !servers.iter().any(|s| s.name() == server) {
                    let message = format!(
                        "replicas entry {n} {text:?} names no server of the pool ({server:?})"
                    );
                    self.report(pool, key, Some(pos), message);
                    continue;
                }
                match parse_host_port(addr) {
                    Ok(addr) if replicas.iter().any(|(_, a)| *a == addr) => {
                        let message = format!("replicas entry {n} {text:?} is listed twice");
                        self.report(pool, key, Some(pos), message);
                    }
                    Ok(addr) => {
                        let per = replicas.iter().filter(|(s, _)| s == server).count();
                        if per >= crate::config::MAX_REPLICAS {
                            let message = format!(
                                "replicas entry {n} {text:?}: at most {} replicas per server",
                                crate::config::MAX_REPLICAS
                            );
                            self.report(pool, key, Some(pos), message);
                        } else {
                            replicas.push((server.to_owned(), addr));
                        }
                    }
                    Err(reason) => {
                        let message = format!("replicas entry {n} {reason}");
                        self.report(pool, key, Some(pos), message);
                    }
                }
            }
        } else if read_from != ReadFrom::Master && !sentinel && !cluster && redis {
            let message = format!(
                "read_from {} needs replicas: list them in replicas, or use sentinels (or cluster: true)",
                read_from.name()
            );
            self.report(
                pool,
                Some("read_from"),
                keys.get("read_from").map(|n| n.pos),
                message,
            );
        }
        (read_from, replicas)
    }

    /// The entries of a list key, numbered from 1, each a single value;
    /// a key that is no list, or an entry that is no single value, is
    /// reported (`what` says what an entry should be).
    fn entries<'n>(
        &mut self,
        pool: Option<&str>,
        key: &str,
        node: &'n Node,
        what: &str,
    ) -> Vec<(usize, &'n str, Pos)> {
        let Value::Seq(items) = &node.value else {
            let message = format!(
                "{key} must be a list of {what} entries, not {}",
                node.kind()
            );
            self.report(pool, Some(key), Some(node.pos), message);
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let n = index + 1;
            match item.as_scalar() {
                Some(text) => out.push((n, text, item.pos)),
                None => {
                    let message = format!(
                        "{key} entry {n} must be a {what} string, not {}",
                        item.kind()
                    );
                    self.report(pool, Some(key), Some(item.pos), message);
                }
            }
        }
        out
    }

    fn servers(
        &mut self,
        pool: Option<&str>,
        name_pos: Pos,
        node: Option<&Node>,
        sentinel: bool,
    ) -> Vec<ServerConfig> {
        let key = Some("servers");
        let Some(node) = node else {
            let message = if sentinel {
                "servers is missing (a list of master-name:weight [name] entries)".to_owned()
            } else {
                "servers is missing (a list of host:port:weight [name] entries)".to_owned()
            };
            self.report(pool, key, Some(name_pos), message);
            return Vec::new();
        };
        let items = match &node.value {
            Value::Seq(items) if !items.is_empty() => items,
            Value::Seq(_) => {
                let message = "servers is empty; a pool needs at least one server".to_owned();
                self.report(pool, key, Some(node.pos), message);
                return Vec::new();
            }
            Value::Scalar(text) if text.is_empty() => {
                let message = "servers is empty; a pool needs at least one server".to_owned();
                self.report(pool, key, Some(node.pos), message);
                return Vec::new();
            }
            Value::Scalar(_) | Value::Map(_) => {
                let message = format!(
                    "servers must be a list of host:port:weight [name] entries, not {}",
                    node.kind()
                );
                self.report(pool, key, Some(node.pos), message);
                return Vec::new();
            }
        };

        let mut servers: Vec<ServerConfig> = Vec::with_capacity(items.len());
        // identity -> (entry number, entry text) of its first entry; a map
        // keeps the duplicate check linear (100k servers took a minute).
        let mut seen: HashMap<String, (usize, &str)> = HashMap::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let n = index + 1;
            let Some(text) = item.as_scalar() else {
                let message = format!(
                    "servers entry {n} must be a host:port:weight [name] string, not {}",
                    item.kind()
                );
                self.report(pool, key, Some(item.pos), message);
                continue;
            };
            let parsed = if sentinel {
                parse_sentinel_server(text)
            } else {
                parse_server(text)
            };
            let server = match parsed {
                Ok(server) => server,
                Err(reason) => {
                    let message = format!("servers entry {n} {reason}");
                    self.report(pool, key, Some(item.pos), message);
                    continue;
                }
            };
            match seen.entry(server.name()) {
                Entry::Occupied(first) => {
                    let (first_n, first_text) = *first.get();
                    let message = format!(
                        "servers entries {first_n} {first_text:?} and {n} {text:?} have the same name {:?}; \
                         names must be unique (add a name after the weight)",
                        first.key()
                    );
                    self.report(pool, key, Some(item.pos), message);
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert((n, text));
                }
            }
            servers.push(server);
        }
        servers
    }
}

/// What makes two pools bind the same socket: the permissions of a unix
/// socket do not make it a different socket.
#[derive(PartialEq, Eq, Hash)]
enum ListenKey {
    Tcp(String, u16),
    Unix(PathBuf),
}

impl ListenKey {
    fn of(listen: &Listen) -> ListenKey {
        match listen {
            Listen::Tcp { host, port } => ListenKey::Tcp(host.clone(), *port),
            Listen::Unix { path, .. } => ListenKey::Unix(path.clone()),
        }
    }
}

fn names_of<const N: usize>(names: [&str; N]) -> String {
    names.join(", ")
}

/// The reason after `<key> "<text>"` when a number is refused.
fn parse_number(text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a number (decimal digits only)".to_owned());
    }
    match text.parse::<u64>() {
        Ok(n) if n <= u64::from(MAX_NUMBER) => u32::try_from(n).map_err(|_| too_large()),
        _ => Err(too_large()),
    }
}

fn too_large() -> String {
    format!("is too large (at most {MAX_NUMBER})")
}

/// A port as nutcracker's `nc_valid_port` accepts it: 1..=65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|port| *port > 0)
}

/// No name resolves with whitespace or control characters in it; refusing
/// them here names the mistake instead of leaving a resolver error for later.
fn plausible_host(host: &str) -> bool {
    !host.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Parses a `listen` value: `/path [perm]` when it starts with `/`, else
/// `host:port` split at the last colon (so `::1:22121` is host `::1`).
/// The error is a whole message naming the key.
pub(crate) fn parse_listen(text: &str) -> Result<Listen, String> {
    if text.starts_with('/') {
        // nutcracker takes the permissions from after the last space, so a
        // path may itself contain spaces.
        let Some((path, perm)) = text.rsplit_once(' ') else {
            return Ok(Listen::Unix {
                path: PathBuf::from(text),
                mode: None,
            });
        };
        let mode = (!perm.is_empty() && perm.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .then(|| u32::from_str_radix(perm, 8).ok())
            .flatten()
            .filter(|mode| *mode <= 0o777);
        return match mode {
            Some(mode) => Ok(Listen::Unix {
                path: PathBuf::from(path),
                mode: Some(mode),
            }),
            None => Err(format!(
                "listen {text:?} has invalid permissions {perm:?} (octal digits, at most 0777)"
            )),
        };
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "listen {text:?} is not host:port or /path/to.sock [permissions]"
        ));
    };
    let Some(port) = parse_port(port) else {
        return Err(format!(
            "listen {text:?} has an invalid port {port:?} (1..=65535)"
        ));
    };
    if host.is_empty() {
        return Err(format!(
            "listen {text:?} has no host (use 0.0.0.0 for every address)"
        ));
    }
    if !plausible_host(host) {
        return Err(format!(
            "listen {text:?} has whitespace or a control character in its host"
        ));
    }
    Ok(Listen::Tcp {
        host: host.to_owned(),
        port,
    })
}

/// Parses a `sentinels` entry: `host:port`, split at the last colon.
pub(crate) fn parse_host_port(text: &str) -> Result<ServerAddr, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not host:port"))?;
    let Some(port) = parse_port(port) else {
        return Err(format!("{text:?} has an invalid port {port:?} (1..=65535)"));
    };
    if host.is_empty() || !plausible_host(host) {
        return Err(format!(
            "{text:?} has no host, or whitespace or a control character in it"
        ));
    }
    Ok(ServerAddr::Tcp {
        host: host.to_owned(),
        port,
    })
}

/// Parses a `servers` entry of a pool with `sentinels`:
/// `master-name:weight [name]`, the master name as the sentinels know it
/// (no colon, no space). Its identity in the ring is the name if given,
/// else the master name.
pub(crate) fn parse_sentinel_server(text: &str) -> Result<ServerConfig, String> {
    let (rest, name) = match text.rsplit_once(' ') {
        Some((rest, name)) => (rest, Some(name)),
        None => (text, None),
    };
    if name == Some("") {
        return Err(format!("{text:?} has an empty name after the space"));
    }
    let Some((master, weight)) = rest.rsplit_once(':') else {
        return Err(format!(
            "{text:?} is not master-name:weight [name] (a pool with sentinels names Sentinel masters, not addresses)"
        ));
    };
    if master.is_empty() || master.contains([':', ' ']) || !plausible_host(master) {
        return Err(format!(
            "{text:?} is not master-name:weight [name] (a pool with sentinels names Sentinel masters, not addresses)"
        ));
    }
    let weight = match parse_number(weight) {
        Ok(0) => return Err(format!("{text:?} has weight 0; weights must be at least 1")),
        Ok(weight) => weight,
        Err(_) => {
            return Err(format!(
                "{text:?} has an invalid weight {weight:?} (an integer from 1 to {MAX_NUMBER})"
            ))
        }
    };
    Ok(ServerConfig {
        addr: ServerAddr::Sentinel {
            master: master.to_owned(),
        },
        weight,
        name: name.map(str::to_owned),
    })
}

/// Parses a `servers` entry the way nutcracker does, from the right: an
/// optional name after the last space, the weight after the last colon,
/// then (TCP only) the port after the next colon. The error is the reason,
/// starting with the quoted entry.
pub(crate) fn parse_server(text: &str) -> Result<ServerConfig, String> {
    let format_error =
        || format!("{text:?} is not host:port:weight [name] or /path/to.sock:weight [name]");
    let (rest, name) = match text.rsplit_once(' ') {
        Some((rest, name)) => (rest, Some(name)),
        None => (text, None),
    };
    if name == Some("") {
        return Err(format!("{text:?} has an empty name after the space"));
    }
    if rest.contains(' ') {
        return Err(format!(
            "{text:?} has more than one space; a server name cannot contain spaces"
        ));
    }
    let (addr, weight) = rest.rsplit_once(':').ok_or_else(format_error)?;
    let weight = match parse_number(weight) {
        Ok(0) => return Err(format!("{text:?} has weight 0; weights must be at least 1")),
        Ok(weight) => weight,
        Err(_) => {
            return Err(format!(
                "{text:?} has an invalid weight {weight:?} (an integer from 1 to {MAX_NUMBER})"
            ))
        }
    };
    let addr = if addr.starts_with('/') {
        // nutcracker splits a unix entry at exactly one colon, so a path with
        // a colon in it does not parse there either.
        if addr.contains(':') {
            return Err(format_error());
        }
        ServerAddr::Unix {
            path: PathBuf::from(addr),
        }
    } else {
        let (host, port) = addr.rsplit_once(':').ok_or_else(format_error)?;
        let Some(port) = parse_port(port) else {
            return Err(format!("{text:?} has an invalid port {port:?} (1..=65535)"));
        };
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        if !plausible_host(host) {
            return Err(format!(
                "{text:?} has whitespace or a control character in its host"
            ));
        }
        ServerAddr::Tcp {
            host: host.to_owned(),
            port,
        }
    };
    Ok(ServerConfig {
        addr,
        weight,
        name: name.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Numbers are nc_atoi's: digits only, up to nutcracker's int.
    #[test]
    fn numbers() {
        assert_eq!(parse_number("0"), Ok(0));
        assert_eq!(parse_number("007"), Ok(7));
        assert_eq!(parse_number("2147483647"), Ok(2_147_483_647));
        assert_eq!(parse_number("2147483648"), Err(too_large()));
        assert_eq!(parse_number("99999999999999999999999"), Err(too_large()));
        for bad in ["", "-1", "+1", " 1", "1 ", "1.0", "1e3", "0x1", "١"] {
            assert!(parse_number(bad).is_err(), "{bad:?}");
        }
    }

    // Ports are 1..=65535, digits only.
    #[test]
    fn ports() {
        assert_eq!(parse_port("1"), Some(1));
        assert_eq!(parse_port("65535"), Some(65535));
        for bad in ["0", "65536", "", "+80", "80 "] {
            assert_eq!(parse_port(bad), None, "{bad:?}");
        }
    }

    // listen splits at the last colon, or takes permissions after the last
    // space of a path.
    #[test]
    fn listen_values() {
        assert_eq!(
            parse_listen("0.0.0.0:22121"),
            Ok(Listen::Tcp {
                host: "0.0.0.0".into(),
                port: 22121
            })
        );
        assert_eq!(
            parse_listen("[::1]:22121"),
            Ok(Listen::Tcp {
                host: "[::1]".into(),
                port: 22121
            })
        );
        assert_eq!(
            parse_listen("/a b/c.sock 0700"),
            Ok(Listen::Unix {
                path: "/a b/c.sock".into(),
                mode: Some(0o700)
            })
        );
        assert_eq!(
            parse_listen("/c.sock 0"),
            Ok(Listen::Unix {
                path: "/c.sock".into(),
                mode: Some(0)
            })
        );
        for bad in [
            "/c.sock 0x7",
            "/c.sock -1",
            "/c.sock 1000",
            "host",
            "host:",
            ":1",
            " h:1",
            "h\t:1",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad:?}");
        }
    }

    // Server entries split from the right, as nutcracker does.
    #[test]
    fn server_entries() {
        let server = parse_server("::1:6379:3 cache").unwrap();
        assert_eq!(
            server.addr,
            ServerAddr::Tcp {
                host: "::1".into(),
                port: 6379
            }
        );
        assert_eq!(server.weight, 3);
        assert_eq!(server.name.as_deref(), Some("cache"));
        let server = parse_server("/tmp/r.sock:2").unwrap();
        assert_eq!(
            server.addr,
            ServerAddr::Unix {
                path: "/tmp/r.sock".into()
            }
        );
        assert_eq!(server.name, None);
        // A name may contain colons; only spaces separate it.
        assert_eq!(
            parse_server("h:1:1 a:b").unwrap().name.as_deref(),
            Some("a:b")
        );
        for bad in [
            "h:1:0",
            "h:1",
            "h:1:1:1x",
            "/p",
            "/p:q:1",
            "h:1:1 ",
            "h:70000:1",
            "h:1:2147483648",
            "h\u{7}:1:1",
        ] {
            assert!(parse_server(bad).is_err(), "{bad:?}");
        }
    }

    // A unix socket is the same address whatever its permissions; TCP
    // addresses compare as written (nutcracker does not resolve to compare).
    #[test]
    fn listen_clashes() {
        let unix = |mode| Listen::Unix {
            path: "/s".into(),
            mode,
        };
        let same_address = |a: &Listen, b: &Listen| ListenKey::of(a) == ListenKey::of(b);
        assert!(same_address(&unix(None), &unix(Some(0o666))));
        let tcp = |host: &str| Listen::Tcp {
            host: host.into(),
            port: 1,
        };
        assert!(same_address(&tcp("a"), &tcp("a")));
        assert!(!same_address(&tcp("localhost"), &tcp("127.0.0.1")));
    }

    // A pool's problems come out in file order, whatever order keys are
    // checked in.
    #[test]
    fn problems_in_file_order() {
        let root = super::super::tree::from_yaml(
            "a:\n  servers: x\n  redis: no\n  hash: h\n  listen: l\n",
        )
        .unwrap();
        let err = validate(root).unwrap_err();
        let lines: Vec<Option<usize>> = err.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(2), Some(3), Some(4), Some(5)]);
    }

    // server_connections is bounded above as well as below: a huge value
    // used to pass `-t` and abort the proxy at start.
    #[test]
    fn server_connections_bounds() {
        let conf = |n: &str| {
            format!(
                "a:\n  listen: 127.0.0.1:1\n  server_connections: {n}\n  servers:\n   - 127.0.0.1:2:1\n"
            )
        };
        let check = |text: &str| validate(super::super::tree::from_yaml(text).unwrap());
        let max = MAX_SERVER_CONNECTIONS.to_string();
        assert_eq!(
            check(&conf(&max)).unwrap().pools[0].server_connections,
            MAX_SERVER_CONNECTIONS
        );
        for n in [MAX_SERVER_CONNECTIONS + 1, MAX_NUMBER] {
            let err = check(&conf(&n.to_string())).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{err}");
            let p = &err.problems[0];
            assert_eq!(
                (p.pool.as_deref(), p.key.as_deref()),
                (Some("a"), Some("server_connections"))
            );
            assert_eq!(p.line, Some(3));
        }
    }

    // Duplicates are still found, and reported once per later entry, with
    // many servers and pools (the checks are maps now, not scans).
    #[test]
    fn duplicates_among_many() {
        let mut text = String::from("a:\n  listen: 127.0.0.1:1\n  servers:\n");
        for i in 0..5000 {
            text.push_str(&format!("   - 10.0.{}.{}:6379:1\n", i / 256, i % 256));
        }
        text.push_str("   - 10.0.0.7:6379:3\n   - 10.0.19.135:6379:1\n");
        text.push_str("b:\n  listen: 127.0.0.1:1\n  servers:\n   - h:1:1\n");
        let err = validate(super::super::tree::from_yaml(&text).unwrap()).unwrap_err();
        let messages: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert!(
            messages[0].contains("entries 8 \"10.0.0.7:6379:1\" and 5001"),
            "{}",
            messages[0]
        );
        assert!(
            messages[1].contains("entries 5000 \"10.0.19.135:6379:1\" and 5002"),
            "{}",
            messages[1]
        );
        assert_eq!(
            messages[2],
            "pool \"b\": listen \"127.0.0.1:1\" is also used by pool \"a\""
        );
    }

    /// Some problem mentions `needle`.
    fn assert_has(errs: &[String], needle: &str) {
        assert!(
            errs.iter().any(|e| e.contains(needle)),
            "{needle:?} not in {errs:#?}"
        );
    }

    fn check(text: &str) -> Result<Config, Vec<String>> {
        validate(super::super::tree::from_yaml(text).unwrap())
            .map_err(|e| e.problems.iter().map(ToString::to_string).collect())
    }

    // A Sentinel pool: sentinels as host:port, servers as master names
    // whose identity is the master name (or the name after it).
    #[test]
    fn sentinel_pool() {
        let config = check(
            "s:\n  listen: 127.0.0.1:1\n  redis: true\n  sentinel_auth: spw\n  sentinels:\n   - 127.0.0.1:26379\n   - localhost:26380\n  servers:\n   - shard-a:1\n   - shard-b:2 b\n",
        )
        .expect("valid");
        let pool = &config.pools[0];
        let sentinel = pool.sentinel.as_ref().expect("sentinel");
        assert_eq!(sentinel.auth.as_deref(), Some("spw"));
        assert_eq!(sentinel.addrs[1].to_string(), "localhost:26380");
        assert_eq!(pool.servers[0].name(), "shard-a");
        assert_eq!(pool.servers[1].name(), "b");
        assert_eq!(pool.servers[1].to_string(), "shard-b:2 b");
        assert!(pool.ring().is_ok());
    }

    // Every mistake is named with its pool and key.
    #[test]
    fn sentinel_mistakes() {
        let errs = check(
            "s:\n  listen: 127.0.0.1:1\n  auto_eject_hosts: true\n  sentinels:\n   - 127.0.0.1\n   - h:0\n  servers:\n   - 127.0.0.1:6379:1\n",
        )
        .unwrap_err();
        assert_has(
            &errs,
            "pool \"s\": sentinels is only valid for a redis pool",
        );
        assert_has(&errs, "sentinels and auto_eject_hosts exclude each other");
        assert_has(&errs, "sentinels entry 1 \"127.0.0.1\" is not host:port");
        assert_has(&errs, "sentinels entry 2 \"h:0\" has an invalid port");
        assert_has(
            &errs,
            "servers entry 1 \"127.0.0.1:6379:1\" is not master-name:weight",
        );
        let errs = check(
            "s:\n  listen: 127.0.0.1:1\n  redis: true\n  sentinel_auth: x\n  servers:\n   - m:1\n",
        )
        .unwrap_err();
        assert_has(&errs, "sentinel_auth is only valid with sentinels");
        assert_has(&errs, "servers entry 1 \"m:1\"");
        let errs = check(
            "s:\n  listen: 127.0.0.1:1\n  redis: true\n  sentinels: []\n  servers:\n   - m:0\n   - m:1\n   - m:1\n",
        )
        .unwrap_err();
        assert_has(&errs, "sentinels is empty");
        assert_has(&errs, "has weight 0");
        assert_has(&errs, "have the same name \"m\"");
    }

    // The TOML form is the same model.
    #[test]
    fn sentinel_pool_toml() {
        let toml = Config::from_toml(
            "[s]\nlisten = \"127.0.0.1:1\"\nredis = true\nsentinels = [\"127.0.0.1:26379\"]\nservers = [\"shard-a:1\"]\n",
        )
        .expect("valid");
        let yaml = check("s:\n  listen: 127.0.0.1:1\n  redis: true\n  sentinels:\n   - 127.0.0.1:26379\n  servers:\n   - shard-a:1\n").expect("valid");
        assert_eq!(toml, yaml);
    }

    // read_from and the static replicas list.
    #[test]
    fn replica_reads_config() {
        let config = check(
            "r:\n  listen: 127.0.0.1:1\n  redis: true\n  read_from: prefer-replica\n  replicas:\n   - a 127.0.0.1:7001\n   - a 127.0.0.1:7002\n  servers:\n   - 127.0.0.1:6379:1 a\n   - 127.0.0.1:6380:1 b\n",
        )
        .expect("valid");
        let pool = &config.pools[0];
        assert_eq!(pool.read_from, ReadFrom::PreferReplica);
        assert_eq!(pool.replicas.len(), 2);
        assert_eq!(pool.replicas[1].0, "a");
        assert_eq!(pool.replicas[1].1.to_string(), "127.0.0.1:7002");
        // With sentinels, the replicas come from them.
        check("s:\n  listen: 127.0.0.1:1\n  redis: true\n  read_from: replica\n  sentinels:\n   - 127.0.0.1:26379\n  servers:\n   - m:1\n")
            .expect("valid");
        let errs = check(
            "r:\n  listen: 127.0.0.1:1\n  redis: true\n  read_from: replicas\n  servers:\n   - 127.0.0.1:6379:1 a\n",
        )
        .unwrap_err();
        assert_has(
            &errs,
            "read_from \"replicas\" is not one of master, prefer-replica, replica",
        );
        let errs = check(
            "r:\n  listen: 127.0.0.1:1\n  redis: true\n  read_from: replica\n  servers:\n   - 127.0.0.1:6379:1 a\n",
        )
        .unwrap_err();
        assert_has(&errs, "pool \"r\": read_from replica needs replicas");
        let errs = check(
            "r:\n  listen: 127.0.0.1:1\n  redis: true\n  replicas:\n   - z 127.0.0.1:7001\n   - a 127.0.0.1\n   - a\n  servers:\n   - 127.0.0.1:6379:1 a\n",
        )
        .unwrap_err();
        assert_has(&errs, "replicas needs read_from prefer-replica or replica");
        assert_has(
            &errs,
            "replicas entry 1 \"z 127.0.0.1:7001\" names no server of the pool",
        );
        assert_has(&errs, "replicas entry 2 \"127.0.0.1\" is not host:port");
        assert_has(&errs, "replicas entry 3 \"a\" is not server-name host:port");
        let errs = check(
            "s:\n  listen: 127.0.0.1:1\n  read_from: replica\n  sentinels:\n   - 127.0.0.1:26379\n  replicas:\n   - m 127.0.0.1:7001\n  servers:\n   - m:1\n",
        )
        .unwrap_err();
        assert_has(&errs, "read_from is only valid for a redis pool");
        assert_has(&errs, "replicas and sentinels exclude each other");
    }
}
