//! The config model: `nutcracker.yml` read unchanged, or the same pools in
//! TOML, checked in one place before anything is bound.
//!
//! ```
//! use twem_core::config::{Config, Listen};
//!
//! let config = Config::from_yaml(
//!     "alpha:\n  listen: 127.0.0.1:22121\n  hash: fnv1a_64\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1 redis-a\n   - /var/run/redis.sock:1\n",
//! )?;
//! let alpha = config.pool("alpha").expect("defined above");
//! assert_eq!(alpha.listen, Listen::Tcp { host: "127.0.0.1".into(), port: 22121 });
//! assert_eq!(alpha.servers[1].name(), "/var/run/redis.sock:");
//! assert_eq!(alpha.backlog, twem_core::config::DEFAULT_BACKLOG);
//!
//! let err = Config::from_yaml("alpha:\n  listen: 127.0.0.1:22121\n  hash: nosuchhash\n  servers: []\n")
//!     .unwrap_err();
//! assert_eq!(err.problems.len(), 2);
//! assert!(err.to_string().starts_with("pool \"alpha\": hash \"nosuchhash\" is not one of one_at_a_time, md5,"));
//! # Ok::<(), twem_core::config::ConfigError>(())
//! ```
//!
//! # YAML
//!
//! The root maps pool names to pools; a pool maps the keys below to single
//! values, except `servers`, a list of `host:port:weight [name]` or
//! `/path:weight [name]` entries. Defaults are the `DEFAULT_*` constants.
//!
//! | key | value | default |
//! |---|---|---|
//! | `listen` | `host:port`, or `/path/to.sock [octal permissions]` | required |
//! | `hash` | one of [`HashKind::ALL`] by name (`siphash` is twem-only) | `fnv1a_64` |
//! | `hash_tag` | exactly two bytes, e.g. `"{}"` | none |
//! | `distribution` | `ketama`, `modula`, `random` | `ketama` |
//! | `timeout` | milliseconds, digits only; `0` means none, as in nutcracker | none |
//! | `backlog` | integer | 512 |
//! | `client_connections` | integer, 0 = unlimited | 0 |
//! | `redis` | `true` or `false` | `false` (memcached) |
//! | `redis_auth` | string, only with `redis: true` | none |
//! | `redis_db` | integer | 0 |
//! | `preconnect` | `true` or `false` | `false` |
//! | `auto_eject_hosts` | `true` or `false` | `false` |
//! | `server_connections` | integer, 1 to [`MAX_SERVER_CONNECTIONS`] | 1 |
//! | `pinned_connections` | integer, 1 to [`MAX_SERVER_CONNECTIONS`]: connections per server a client may hold for itself (transactions); twem-only | 64 |
//! | `allow_flush` | `true` or `false`, only with `redis: true`: `FLUSHDB`/`FLUSHALL` empty every server of the pool; twem-only | `false` |
//! | `tls_cert`, `tls_key` | paths of PEM files: the certificate chain and private key clients are served TLS with (both or neither); twem-only | none (plain) |
//! | `tls_client_ca` | path of PEM CA certificates, only with `tls_cert`: clients must present a certificate they signed; twem-only | none |
//! | `tls_servers` | `true` or `false`: connect to the servers with TLS; twem-only | `false` |
//! | `tls_ca` | path of PEM CA certificates the servers' certificates are verified against, only with `tls_servers`; twem-only | the system's roots |
//! | `tls_server_name` | DNS name or IP address the servers' certificates must name, only with `tls_servers`; twem-only | each server's host |
//! | `tls_client_cert`, `tls_client_key` | paths of PEM files presented to the servers (mutual TLS), only with `tls_servers`, both or neither; twem-only | none |
//! | `server_retry_timeout` | milliseconds | 30000 |
//! | `server_failure_limit` | integer | 2 |
//! | `tcpkeepalive` | `true` or `false` | `false` |
//! | `reuseport` | `true` or `false` | `false` |
//! | `sentinels` | non-empty list of `host:port` Redis Sentinels, only with `redis: true`: `servers` then name Sentinel masters (`master-name:weight [name]`), whose addresses come from the sentinels and follow their failovers; not with `auto_eject_hosts` or `cluster`; twem-only | none |
//! | `sentinel_auth` | string, only with `sentinels`: the password sent with `AUTH` to the sentinels (`redis_auth` is the data nodes'); twem-only | none |
//! | `read_from` | `master`, `prefer-replica` (a healthy replica, else the master) or `replica` (replicas only), only with `redis: true`: where read-only commands go; replicas come from the sentinels, from `replicas`, or (`cluster: true`) from the cluster's map, where single-key reads and MGET/EXISTS parts go to a replica of the slot; writes, transactions, scripts and blocking commands always go to the master; twem-only | `master` |
//! | `replicas` | list of `server-name host:port` entries, only without `sentinels` and `cluster`: each server's replicas for `read_from`; twem-only | none |
//! | `cluster` | `true` or `false`, only with `redis: true`: the servers are seed nodes of a Redis Cluster (or Valkey cluster); keys are placed by the cluster's slot map (CRC16 hash slots, `{tag}` hash tags), not by `hash`/`distribution`; twem-only | `false` |
//! | `cluster_refresh` | milliseconds, only with `cluster: true`: how often the slot map is read again (it is also read again after a `-MOVED` or a failed node) | 10000 |
//! | `cluster_max_nodes` | integer, 1 to [`MAX_SERVER_CONNECTIONS`], only with `cluster: true`: distinct node addresses (masters and replicas, seeds included) the pool may know at once (a new node takes the entry of one that left the cluster) | 64 |
//! | `servers` | non-empty list of server entries | required |
//!
//! Values are judged by their text, as nutcracker judges them: `redis: "true"`
//! is accepted, `redis: True` or `yes` is not; numbers are decimal digits only
//! and at most 2147483647 (nutcracker's `int`).
//!
//! # TOML
//!
//! The same model: each top-level table is a pool, its keys are the YAML keys,
//! `servers` is an array of the same entry strings. TOML integers and booleans
//! stand for the YAML text of their value (`redis = true`, `timeout = 400`).
//!
//! ```
//! use twem_core::config::Config;
//!
//! let toml = Config::from_toml(
//!     "[alpha]\nlisten = \"127.0.0.1:22121\"\nhash_tag = \"{}\"\ntimeout = 400\nservers = [\"127.0.0.1:6379:1 server1\"]\n",
//! )?;
//! let yaml = Config::from_yaml(
//!     "alpha:\n  listen: 127.0.0.1:22121\n  hash_tag: \"{}\"\n  timeout: 400\n  servers:\n   - 127.0.0.1:6379:1 server1\n",
//! )?;
//! assert_eq!(toml, yaml);
//! # Ok::<(), twem_core::config::ConfigError>(())
//! ```
//!
//! # Where twem differs from nutcracker 0.5.0
//!
//! Checked against `nutcracker -t` on about 90 edge cases. Everything
//! nutcracker accepts is accepted with the same meaning, except:
//! - a unix `listen` permission must be octal digits up to `0777`
//!   (nutcracker's `strtol` reads `0888` as 0 and `06x` as 6, silently);
//! - numbers above 2147483647 are refused (nutcracker wraps some of them
//!   silently to other values);
//! - an empty host (`:6379:1`), a host with whitespace or control
//!   characters, or an empty server name (`"host:6379:1 "`) is refused, since
//!   none has a clear meaning;
//! - two pools on one unix socket path clash whatever their permissions
//!   (nutcracker compares the raw text and fails later, at bind);
//! - yaml-rust2 is stricter than libyaml about the indentation of the
//!   continuation lines of a multi-line quoted scalar.
//!
//! Host names are not resolved here: the core reads text only. The binary
//! resolves every `listen` host right after validation (`conf::load` in
//! twem-server refuses an unresolvable one, as nutcracker does at load) and servers
//! at every connect.
//!
//! twem accepts what nutcracker 0.5.0 refuses: `reuseport`, the `siphash`
//! hash, flow collections (`servers: [a, b]`), an explicit `---` document
//! start and `...` end. Anchors, aliases and tags stay refused, as in
//! nutcracker. IPv6 hosts are written as nutcracker reads them, split at the
//! last colon (`::1:6379:1`); brackets are kept as written (`[::1]` is
//! passed on to the resolver as is).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::hash::{HashKind, HashTag};
use crate::ring::{server_identity, Distribution, Ring, RingError, RingServer};

mod tree;
pub(crate) mod validate;

/// Default `hash`.
pub const DEFAULT_HASH: HashKind = HashKind::Fnv1a_64;
/// Default `hash_tag`: none, the whole key is hashed.
pub const DEFAULT_HASH_TAG: Option<HashTag> = None;
/// Default `distribution`.
pub const DEFAULT_DISTRIBUTION: Distribution = Distribution::Ketama;
/// Default `timeout`: none, wait for a reply forever.
pub const DEFAULT_TIMEOUT: Option<Duration> = None;
/// Default `backlog` of the listen socket.
pub const DEFAULT_BACKLOG: u32 = 512;
/// Default `client_connections`: 0, unlimited.
pub const DEFAULT_CLIENT_CONNECTIONS: u32 = 0;
/// Default `redis`: false, the pool speaks memcached.
pub const DEFAULT_REDIS: bool = false;
/// Default `redis_auth`: none.
pub const DEFAULT_REDIS_AUTH: Option<String> = None;
/// Default `redis_db`.
pub const DEFAULT_REDIS_DB: u32 = 0;
/// Default `preconnect`.
pub const DEFAULT_PRECONNECT: bool = false;
/// Default `auto_eject_hosts`.
pub const DEFAULT_AUTO_EJECT_HOSTS: bool = false;
/// Default `server_connections` per backend server.
pub const DEFAULT_SERVER_CONNECTIONS: u32 = 1;
/// The largest `server_connections` accepted. Every connection is a file
/// descriptor and a client slot on the backend: 1024 is the usual default
/// `ulimit -n` and memcached's default `-c` (most clients at once), so one
/// proxy holding more to a single server would starve it and its own fd
/// table; nutcracker deployments use a handful. Without a bound a value such
/// as 2147483647 passed `-t` and then failed at start.
pub const MAX_SERVER_CONNECTIONS: u32 = 1024;
/// Default `pinned_connections`: backend connections per server that
/// clients may hold for themselves (a `WATCH`/`MULTI` transaction pins one
/// from its first key until `EXEC`), idle ones kept for reuse included.
pub const DEFAULT_PINNED_CONNECTIONS: u32 = 64;
/// Most replicas read from per server (`replicas` entries, or replicas
/// the sentinels name; more are left unused). Each is a set of connections
/// and a health check.
pub const MAX_REPLICAS: usize = 8;
/// Default `allow_flush`: `FLUSHDB`/`FLUSHALL` refused, since through the
/// proxy they would empty every server of the pool at once.
pub const DEFAULT_ALLOW_FLUSH: bool = false;
/// Default `cluster_refresh`: the slot map is read every 10 s (and at once
/// after a redirection or a failed node).
pub const DEFAULT_CLUSTER_REFRESH: Duration = Duration::from_millis(10_000);
/// Default `cluster_max_nodes`: node addresses a cluster pool may know.
pub const DEFAULT_CLUSTER_MAX_NODES: u32 = 64;
/// Default `server_retry_timeout`: 30000 ms.
pub const DEFAULT_SERVER_RETRY_TIMEOUT: Duration = Duration::from_millis(30_000);
/// Default `server_failure_limit`.
pub const DEFAULT_SERVER_FAILURE_LIMIT: u32 = 2;
/// Default `tcpkeepalive`.
pub const DEFAULT_TCPKEEPALIVE: bool = false;
/// Default `reuseport`.
pub const DEFAULT_REUSEPORT: bool = false;

/// Every key a pool may have, in nutcracker's documented order (twem's own
/// keys after the ones nutcracker shares with it).
pub const KEYS: [&str; 35] = [
    "listen",
    "hash",
    "hash_tag",
    "distribution",
    "timeout",
    "backlog",
    "client_connections",
    "redis",
    "redis_auth",
    "redis_db",
    "preconnect",
    "auto_eject_hosts",
    "server_connections",
    "pinned_connections",
    "allow_flush",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tls_servers",
    "tls_ca",
    "tls_server_name",
    "tls_client_cert",
    "tls_client_key",
    "server_retry_timeout",
    "server_failure_limit",
    "tcpkeepalive",
    "reuseport",
    "sentinels",
    "sentinel_auth",
    "read_from",
    "replicas",
    "cluster",
    "cluster_refresh",
    "cluster_max_nodes",
    "servers",
];

/// A whole config file: every pool, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The pools, in the order the file lists them.
    pub pools: Vec<PoolConfig>,
}

/// The syntax a config file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `nutcracker.yml` syntax.
    Yaml,
    /// The same pools as TOML tables.
    Toml,
}

impl Format {
    /// The format a file's name implies: `.toml` (any case) is TOML,
    /// everything else YAML, as nutcracker reads any file as YAML.
    pub fn from_path(path: &Path) -> Format {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("toml") => Format::Toml,
            _ => Format::Yaml,
        }
    }
}

impl Config {
    /// Parses and validates `nutcracker.yml` text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Format::Yaml)
    }

    /// Parses and validates the TOML form of the same pools.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Format::Toml)
    }

    /// Parses `text` as `format` and validates it, reporting every problem
    /// found (a syntax error stops at the first one).
    pub fn parse(text: &str, format: Format) -> Result<Config, ConfigError> {
        let root = match format {
            Format::Yaml => tree::from_yaml(text),
            Format::Toml => tree::from_toml(text),
        }
        .map_err(|problem| ConfigError {
            problems: vec![problem],
        })?;
        validate::validate(root)
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|pool| pool.name == name)
    }
}

impl FromStr for Config {
    type Err = ConfigError;

    /// Same as [`Config::from_yaml`].
    fn from_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text)
    }
}

/// A pool's TLS settings, the `tls_*` keys. Only paths: the files are read
/// (and checked) when a pool is built, by [`crate::tls`], so that a reload
/// picks up rotated certificates under the same names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// `tls_cert`: the certificate chain served to clients (PEM).
    pub cert: Option<PathBuf>,
    /// `tls_key`: the private key of `cert` (PEM).
    pub key: Option<PathBuf>,
    /// `tls_client_ca`: clients must present a certificate signed by one
    /// of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
    /// `tls_servers`: connect to the servers with TLS.
    pub servers: bool,
    /// `tls_ca`: the CAs the servers' certificates are verified against;
    /// `None` uses the system's roots.
    pub ca: Option<PathBuf>,
    /// `tls_server_name`: the name (DNS name or IP address) the servers'
    /// certificates are checked for and sent as SNI; `None` uses each
    /// server's own host.
    pub server_name: Option<String>,
    /// `tls_client_cert`: the certificate chain presented to the servers.
    pub client_cert: Option<PathBuf>,
    /// `tls_client_key`: the private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether clients are served TLS.
    pub fn listens(&self) -> bool {
        self.cert.is_some()
    }

    /// Whether any file is named (or the system's roots are used): such a
    /// pool is rebuilt on a reload when a file changed, even with an
    /// unchanged config, to read rotated certificates.
    pub fn has_files(&self) -> bool {
        self.cert.is_some() || self.servers
    }
}

/// One pool: a listen address and the servers its keys are sharded over.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The pool's name (its key in the file); names the pool in stats.
    pub name: String,
    /// Where clients connect.
    pub listen: Listen,
    /// How keys are hashed.
    pub hash: HashKind,
    /// The part of a key that is hashed, if set.
    pub hash_tag: Option<HashTag>,
    /// How hashes map to servers.
    pub distribution: Distribution,
    /// How long to wait for connect + reply; `None` waits forever.
    pub timeout: Option<Duration>,
    /// The listen socket's backlog.
    pub backlog: u32,
    /// Most client connections at once; 0 is unlimited.
    pub client_connections: u32,
    /// Redis (`true`) or memcached (`false`).
    pub redis: bool,
    /// Password sent with `AUTH` on every new backend connection.
    pub redis_auth: Option<String>,
    /// Database selected with `SELECT` on every new backend connection.
    pub redis_db: u32,
    /// Open one connection per server at start.
    pub preconnect: bool,
    /// Take failing servers out of the ring.
    pub auto_eject_hosts: bool,
    /// Most connections per backend server, 1 to [`MAX_SERVER_CONNECTIONS`].
    pub server_connections: u32,
    /// Most connections per backend server pinned to clients (transactions),
    /// 1 to [`MAX_SERVER_CONNECTIONS`]; a client that would need one more
    /// gets an error saying so.
    pub pinned_connections: u32,
    /// `FLUSHDB`/`FLUSHALL` are sent to every server (Redis pools); when
    /// `false` they are refused with an error naming this key.
    pub allow_flush: bool,
    /// TLS towards clients and towards the servers (the `tls_*` keys).
    pub tls: TlsConfig,
    /// How long an ejected server stays out.
    pub server_retry_timeout: Duration,
    /// Consecutive failures before a server is ejected.
    pub server_failure_limit: u32,
    /// Set `SO_KEEPALIVE` on sockets.
    pub tcpkeepalive: bool,
    /// Set `SO_REUSEPORT` on the listen socket.
    pub reuseport: bool,
    /// Redis Sentinel: where the servers' addresses come from (the
    /// `sentinels` and `sentinel_auth` keys); `None` for a pool of fixed
    /// addresses.
    pub sentinel: Option<SentinelConfig>,
    /// Where read-only commands go (`read_from`).
    pub read_from: ReadFrom,
    /// Replicas named in the config (`replicas`), as `(server name,
    /// address)`; a Sentinel pool learns them from the sentinels instead.
    pub replicas: Vec<(String, ServerAddr)>,
    /// The servers in file order (the [`Ring`] sorts them; see
    /// [`PoolConfig::sorted_servers`]).
    pub servers: Vec<ServerConfig>,
    /// `cluster: true`: the servers are seed nodes of a Redis Cluster, and
    /// placement is the cluster's slot map (twem-only).
    pub cluster: Option<ClusterConfig>,
}

/// A cluster pool's settings (`cluster: true` and the `cluster_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `cluster_refresh`: how often the slot map is read again.
    pub refresh: Duration,
    /// `cluster_max_nodes`: node addresses the pool may know at once.
    pub max_nodes: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            refresh: DEFAULT_CLUSTER_REFRESH,
            max_nodes: DEFAULT_CLUSTER_MAX_NODES,
        }
    }
}

/// Where a pool sends read-only commands (`read_from`). Writes,
/// transactions, scripts and blocking commands always go to the master.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// Every command to the master.
    #[default]
    Master,
    /// A healthy replica of the key's server, else its master.
    PreferReplica,
    /// A healthy replica only; with none, the read fails saying so.
    Replica,
}

impl ReadFrom {
    /// Every value, in the order the config documents them.
    pub const ALL: [ReadFrom; 3] = [ReadFrom::Master, ReadFrom::PreferReplica, ReadFrom::Replica];

    /// The config's word for it.
    pub fn name(self) -> &'static str {
        match self {
            ReadFrom::Master => "master",
            ReadFrom::PreferReplica => "prefer-replica",
            ReadFrom::Replica => "replica",
        }
    }

    /// The value a config word names.
    pub fn from_name(name: &str) -> Option<ReadFrom> {
        ReadFrom::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// A pool whose servers are Sentinel masters: the sentinels to ask, and
/// their password. Each server of such a pool is a
/// [`ServerAddr::Sentinel`] master name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SentinelConfig {
    /// The sentinels, in file order; each is a [`ServerAddr::Tcp`].
    pub addrs: Vec<ServerAddr>,
    /// Sent with `AUTH` on every connection to a sentinel.
    pub auth: Option<String>,
}

impl PoolConfig {
    /// A pool with every optional key at its default.
    pub fn new(name: impl Into<String>, listen: Listen, servers: Vec<ServerConfig>) -> PoolConfig {
        PoolConfig {
            name: name.into(),
            listen,
            hash: DEFAULT_HASH,
            hash_tag: DEFAULT_HASH_TAG,
            distribution: DEFAULT_DISTRIBUTION,
            timeout: DEFAULT_TIMEOUT,
            backlog: DEFAULT_BACKLOG,
            client_connections: DEFAULT_CLIENT_CONNECTIONS,
            redis: DEFAULT_REDIS,
            redis_auth: DEFAULT_REDIS_AUTH,
            redis_db: DEFAULT_REDIS_DB,
            preconnect: DEFAULT_PRECONNECT,
            auto_eject_hosts: DEFAULT_AUTO_EJECT_HOSTS,
            server_connections: DEFAULT_SERVER_CONNECTIONS,
            pinned_connections: DEFAULT_PINNED_CONNECTIONS,
            allow_flush: DEFAULT_ALLOW_FLUSH,
            tls: TlsConfig::default(),
            server_retry_timeout: DEFAULT_SERVER_RETRY_TIMEOUT,
            server_failure_limit: DEFAULT_SERVER_FAILURE_LIMIT,
            tcpkeepalive: DEFAULT_TCPKEEPALIVE,
            reuseport: DEFAULT_REUSEPORT,
            sentinel: None,
            read_from: ReadFrom::Master,
            replicas: Vec::new(),
            servers,
            cluster: None,
        }
    }

    /// The ring over every server, all live. Never fails for a pool that
    /// came out of [`Config::parse`]: validation builds it once.
    pub fn ring(&self) -> Result<Ring, RingError> {
        Ring::new(
            self.ring_servers(),
            self.hash,
            self.distribution,
            self.hash_tag,
        )
    }

    /// Whether [`PoolConfig::ring`] would succeed, without building the
    /// ring (validation's check; see [`Ring::check`]).
    pub fn check_ring(&self) -> Result<(), RingError> {
        Ring::check(&self.ring_servers())
    }

    fn ring_servers(&self) -> Vec<RingServer> {
        self.servers
            .iter()
            .map(|server| RingServer::new(server.name(), server.weight))
            .collect()
    }

    /// The server whose identity ([`ServerConfig::name`]) is `name`.
    pub fn server(&self, name: &str) -> Option<&ServerConfig> {
        self.servers.iter().find(|server| server.name() == name)
    }

    /// The servers in the [`Ring`]'s order (by name: shorter first, then
    /// bytewise, as nutcracker sorts them), so index `i` here is index `i`
    /// of [`Ring::servers`].
    pub fn sorted_servers(&self) -> Vec<&ServerConfig> {
        let mut named: Vec<(String, &ServerConfig)> =
            self.servers.iter().map(|s| (s.name(), s)).collect();
        named.sort_by(|(a, _), (b, _)| {
            a.len()
                .cmp(&b.len())
                .then_with(|| a.as_bytes().cmp(b.as_bytes()))
        });
        named.into_iter().map(|(_, server)| server).collect()
    }
}

/// Where a pool accepts clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listen {
    /// `host:port`. The host is kept as written (a name, an IPv4 or IPv6
    /// address); the binary resolves it when it binds.
    Tcp {
        /// Host name or address, as written.
        host: String,
        /// Port, 1..=65535.
        port: u16,
    },
    /// `/path/to.sock [octal permissions]`.
    Unix {
        /// Socket path; unlinked before bind.
        path: PathBuf,
        /// Permissions to `chmod` the socket to after bind.
        mode: Option<u32>,
    },
}

impl fmt::Display for Listen {
    /// As written in the config (permissions as four octal digits), so the
    /// text parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp { host, port } => write!(f, "{host}:{port}"),
            Listen::Unix { path, mode: None } => write!(f, "{}", path.display()),
            Listen::Unix {
                path,
                mode: Some(mode),
            } => write!(f, "{} {mode:04o}", path.display()),
        }
    }
}

impl FromStr for Listen {
    type Err = ConfigError;

    /// Parses a `listen` value by nutcracker's rules.
    fn from_str(text: &str) -> Result<Listen, ConfigError> {
        validate::parse_listen(text)
            .map_err(|message| ConfigError::single(None, Some("listen"), message))
    }
}

/// One `servers` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerConfig {
    /// Where the server is.
    pub addr: ServerAddr,
    /// Share of the keys, at least 1.
    pub weight: u32,
    /// The name written after the weight, if any.
    pub name: Option<String>,
}

impl ServerConfig {
    /// The server's identity: what the ring hashes and sorts by and what
    /// stats call it ([`server_identity`]: the configured name, else
    /// `host:port`, `host` alone for port 11211, `path:` for a unix socket).
    pub fn name(&self) -> String {
        match &self.addr {
            ServerAddr::Tcp { host, port } => {
                server_identity(host, Some(*port), self.name.as_deref())
            }
            ServerAddr::Unix { path } => {
                server_identity(&path.to_string_lossy(), None, self.name.as_deref())
            }
            // The master name is the identity: a failover moves where the
            // server is, never which keys are its.
            ServerAddr::Sentinel { master } => self.name.clone().unwrap_or_else(|| master.clone()),
        }
    }
}

impl fmt::Display for ServerConfig {
    /// As written in the config: `host:port:weight [name]` or
    /// `/path:weight [name]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.weight)?;
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

impl FromStr for ServerConfig {
    type Err = ConfigError;

    /// Parses a `servers` entry by nutcracker's rules.
    fn from_str(text: &str) -> Result<ServerConfig, ConfigError> {
        validate::parse_server(text)
            .map_err(|message| ConfigError::single(None, Some("servers"), message))
    }
}

/// A backend server's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddr {
    /// `host:port`; the host is resolved at every (re)connect.
    Tcp {
        /// Host name or address, as written.
        host: String,
        /// Port, 1..=65535.
        port: u16,
    },
    /// A unix socket path.
    Unix {
        /// Socket path.
        path: PathBuf,
    },
    /// A Redis Sentinel master name (a pool with `sentinels`): the address
    /// is whatever the sentinels say the master's is, now.
    Sentinel {
        /// The name the sentinels monitor the master under.
        master: String,
    },
}

#[cfg(test)]
impl ServerAddr {
    /// `127.0.0.1:port`, for unit tests.
    pub(crate) fn loopback(port: u16) -> ServerAddr {
        ServerAddr::Tcp {
            host: "127.0.0.1".into(),
            port,
        }
    }
}

impl fmt::Display for ServerAddr {
    /// `host:port`, the path, or the Sentinel master name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            ServerAddr::Unix { path } => write!(f, "{}", path.display()),
            ServerAddr::Sentinel { master } => f.write_str(master),
        }
    }
}

/// Everything wrong with a config; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_lines(.problems))]
pub struct ConfigError {
    /// Each problem found, in file order as far as possible.
    pub problems: Vec<Problem>,
}

fn display_lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    fn single(pool: Option<&str>, key: Option<&str>, message: String) -> ConfigError {
        ConfigError {
            problems: vec![Problem {
                pool: pool.map(str::to_owned),
                key: key.map(str::to_owned),
                message,
                line: None,
            }],
        }
    }
}

/// One thing wrong with a config, naming the pool and key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The pool concerned, if the problem is inside one.
    pub pool: Option<String>,
    /// The key concerned (`hash`, `servers`, ...), if any.
    pub key: Option<String>,
    /// What is wrong, naming the key and the offending value, e.g.
    /// `hash "nosuchhash" is not one of one_at_a_time, md5, ...`; a syntax
    /// error names its line and column.
    pub message: String,
    /// The 1-based line the problem is on, when known.
    pub line: Option<usize>,
}

impl fmt::Display for Problem {
    /// `pool "alpha": <message>`, or the bare message outside any pool.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pool {
            Some(pool) => write!(f, "pool {pool:?}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, weight: u32, name: Option<&str>) -> ServerConfig {
        ServerConfig {
            addr: ServerAddr::Tcp {
                host: host.into(),
                port,
            },
            weight,
            name: name.map(str::to_owned),
        }
    }

    // sorted_servers orders by identity, shorter first, then bytewise.
    #[test]
    fn sorted_servers_by_identity() {
        let listen = Listen::Tcp {
            host: "127.0.0.1".into(),
            port: 22121,
        };
        let pool = PoolConfig::new(
            "p",
            listen,
            vec![
                tcp("10.0.0.1", 6379, 1, Some("zz")),
                tcp("10.0.0.1", 11211, 1, None),
                tcp("10.0.0.1", 6380, 1, Some("b")),
                tcp("10.0.0.1", 6381, 1, Some("a")),
            ],
        );
        let names: Vec<String> = pool.sorted_servers().iter().map(|s| s.name()).collect();
        assert_eq!(names, ["a", "b", "zz", "10.0.0.1"]);
        assert_eq!(pool.server("10.0.0.1").map(|s| s.weight), Some(1));
        assert_eq!(pool.server("10.0.0.1:11211"), None);
    }

    // A problem outside any pool displays as its bare message; inside one,
    // the pool name is quoted and escaped.
    #[test]
    fn problem_display() {
        let mut problem = Problem {
            pool: None,
            key: None,
            message: "no pools defined".into(),
            line: None,
        };
        assert_eq!(problem.to_string(), "no pools defined");
        problem.pool = Some("we\"ird\n".into());
        assert_eq!(
            problem.to_string(),
            "pool \"we\\\"ird\\n\": no pools defined"
        );
    }

    // Config::from_str reads YAML.
    #[test]
    fn from_str_is_yaml() {
        let config: Config = "a:\n  listen: h:1\n  servers: [h:2:1]\n".parse().unwrap();
        assert_eq!(config.pool("a").map(|p| p.servers.len()), Some(1));
        assert_eq!(config.pool("b"), None);
    }
}
