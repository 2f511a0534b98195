//! The embedding API: build a [`Pool`] from config text or in code, and call
//! it with any request ([`Pool::call`], [`Pool::call_memcache`]) or through
//! the typed helpers of [`RedisClient`] and [`MemcacheClient`].
//!
//! Calls take exactly the proxy's path (same routing, split and merge,
//! timeouts, ejection), so keys written in-process land where a twemproxy on
//! the same config would put them.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use twem_proto::{memcache as mc, resp};

use super::{Answer, CallError, Frame, Pool, PoolError, Protocol, RequestError, ServerError};
use crate::config::{
    Config, Format, Listen, PoolConfig, ReadFrom, SentinelConfig, ServerAddr, ServerConfig,
};
use crate::hash::{HashKind, HashTag};
use crate::ring::Distribution;

thread_local! {
    /// Round-robin hint for embedded callers: concurrent callers have no
    /// order between them, so spreading them over `server_connections` is
    /// free. Per thread, not one process-wide atomic: every call from every
    /// thread bumping one counter bounced its cache line between cores.
    static NEXT_CALL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

pub(crate) fn hint() -> usize {
    NEXT_CALL.with(|n| {
        let v = n.get();
        n.set(v.wrapping_add(1));
        v
    })
}

impl Pool {
    /// Start the pool `name` (or the only pool) of a config text in `format`.
    ///
    /// Must be called from within a tokio runtime.
    pub fn from_config_text(
        text: &str,
        format: Format,
        name: Option<&str>,
    ) -> Result<Pool, PoolError> {
        let config = Config::parse(text, format)?;
        let chosen = match name {
            Some(n) => config
                .pools
                .into_iter()
                .find(|p| p.name == n)
                .ok_or_else(|| PoolError::NoSuchPool(n.to_string()))?,
            None if config.pools.len() == 1 => {
                config.pools.into_iter().next().ok_or(PoolError::NoPool)?
            }
            None => return Err(PoolError::PoolNotNamed(config.pools.len())),
        };
        Pool::new(chosen)
    }

    /// Start a pool from `nutcracker.yml` text (see [`Pool::from_config_text`]).
    pub fn from_yaml(text: &str, name: Option<&str>) -> Result<Pool, PoolError> {
        Pool::from_config_text(text, Format::Yaml, name)
    }

    /// Start building a pool in code.
    pub fn builder(name: &str) -> PoolBuilder {
        PoolBuilder::new(name)
    }

    /// Send any Redis command and wait for its reply. A server's error reply
    /// is `Ok(Reply::Error(..))`: it is the server's answer; failures of the
    /// request, the network or the pool are `Err`.
    pub async fn call(&self, req: resp::Request) -> Result<resp::Reply, CallError> {
        if self.protocol() != Protocol::Redis {
            return Err(CallError::Request(RequestError::uncoded(format!(
                "pool {} speaks memcached, not Redis",
                self.name()
            ))));
        }
        // Debug level: free at the default level (fields are only
        // formatted when the span is enabled); an embedder who turns it on
        // sees each call, its pool and command, around the backend spans.
        let span = tracing::debug_span!("call", pool = %self.name(),
            cmd = %String::from_utf8_lossy(req.name()));
        // A server's reply comes decoded by its connection: only its tree
        // is built here. A reply the pool built (a local command's, a
        // merge's) is parsed once, from the bytes it was built as.
        let answer = self.dispatch_redis(&req, hint()).answer();
        resp_reply(tracing::Instrument::instrument(answer, span).await?)
    }

    /// Send any memcached request and wait for its reply; `None` for
    /// `noreply` requests (and `quit`), which get none.
    pub async fn call_memcache(&self, req: mc::Request) -> Result<Option<mc::Reply>, CallError> {
        if self.protocol() != Protocol::Memcache {
            return Err(CallError::Request(RequestError::uncoded(format!(
                "pool {} speaks Redis, not memcached",
                self.name()
            ))));
        }
        let cmd = req.command();
        let span = tracing::debug_span!("call", pool = %self.name(), cmd = cmd.name());
        let answer = self.dispatch_memcache(&req, hint()).answer();
        match tracing::Instrument::instrument(answer, span).await? {
            Answer::Frame(Frame::Mc(frame)) => Ok(Some(frame.parse())),
            Answer::Frame(Frame::NoReply) => Ok(None),
            Answer::Frame(other) => Err(unexpected_frame(&other)),
            // A merged multi-get, or the pool's own error line: parsed in
            // the context of the request, as a server's reply would be.
            Answer::Built(chunks) => {
                let bytes = chunks.into_bytes();
                let mut buf = BytesMut::from(&bytes[..]);
                match mc::decode_reply(cmd, &mut buf, &super::memcache_limits()) {
                    Ok(Some(frame)) => Ok(Some(frame.parse())),
                    _ => Err(CallError::Server(ServerError::Unexpected(
                        String::from_utf8_lossy(&bytes).trim_end().to_string(),
                    ))),
                }
            }
        }
    }

    /// Typed Redis commands on this pool.
    pub fn redis(&self) -> RedisClient {
        RedisClient { pool: self.clone() }
    }

    /// Typed memcached commands on this pool.
    pub fn memcache(&self) -> MemcacheClient {
        MemcacheClient { pool: self.clone() }
    }
}

/// A Redis answer as the caller's [`resp::Reply`].
pub(crate) fn resp_reply(answer: Answer) -> Result<resp::Reply, CallError> {
    match answer {
        Answer::Frame(Frame::Resp(frame)) => Ok(frame.parse()),
        Answer::Frame(other) => Err(unexpected_frame(&other)),
        Answer::Built(chunks) => parse_built_resp(chunks.into_bytes()),
    }
}

/// A frame of the other protocol: the pool checked the protocol before
/// sending, so this is a broken promise, reported rather than a panic.
fn unexpected_frame(frame: &Frame) -> CallError {
    CallError::Server(ServerError::Unexpected(format!(
        "unexpected reply {:?}",
        String::from_utf8_lossy(frame.raw())
    )))
}

/// A reply the pool built in RESP (a local command's, a merge's).
fn parse_built_resp(bytes: Bytes) -> Result<resp::Reply, CallError> {
    let mut buf = BytesMut::from(&bytes[..]);
    match resp::ReplyCodec::new(super::redis_reply_limits()).decode(&mut buf) {
        Ok(Some(frame)) => Ok(frame.parse()),
        _ => Err(CallError::Server(ServerError::Unexpected(format!(
            "unparsable reply: {:?}",
            String::from_utf8_lossy(&bytes)
        )))),
    }
}

/// Builds a [`PoolConfig`] in code, with nutcracker's defaults for every
/// setting not given, and starts it.
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    config: PoolConfig,
    problems: Vec<String>,
}

impl PoolBuilder {
    fn new(name: &str) -> PoolBuilder {
        let listen = Listen::Tcp {
            host: "127.0.0.1".into(),
            port: 0,
        };
        PoolBuilder {
            config: PoolConfig::new(name, listen, Vec::new()),
            problems: Vec::new(),
        }
    }

    /// Speak Redis to the servers (the default is memcached, as nutcracker's).
    pub fn redis(mut self) -> Self {
        self.config.redis = true;
        self
    }

    /// Add a server written as in `nutcracker.yml`: `host:port:weight [name]`
    /// or `/path:weight [name]`.
    pub fn server(mut self, entry: &str) -> Self {
        match entry.parse::<ServerConfig>() {
            Ok(s) => self.config.servers.push(s),
            Err(e) => self.problems.push(format!("server \"{entry}\": {e}")),
        }
        self
    }

    /// The hash function (default `fnv1a_64`).
    pub fn hash(mut self, hash: HashKind) -> Self {
        self.config.hash = hash;
        self
    }

    /// The distribution (default `ketama`).
    pub fn distribution(mut self, d: Distribution) -> Self {
        self.config.distribution = d;
        self
    }

    /// Hash only the part of keys between these two bytes (e.g. `{` `}`).
    pub fn hash_tag(mut self, open: u8, close: u8) -> Self {
        self.config.hash_tag = Some(HashTag::new(open, close));
        self
    }

    /// Fail a request not answered within `t` (default: wait forever).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.config.timeout = Some(t);
        self
    }

    /// Eject a server after `failure_limit` consecutive failures; probe it
    /// again after `retry`.
    pub fn auto_eject(mut self, failure_limit: u32, retry: Duration) -> Self {
        self.config.auto_eject_hosts = true;
        self.config.server_failure_limit = failure_limit;
        self.config.server_retry_timeout = retry;
        self
    }

    /// Connections per server (default 1).
    pub fn server_connections(mut self, n: u32) -> Self {
        self.config.server_connections = n;
        self
    }

    /// Redis password sent with AUTH on every new backend connection.
    pub fn redis_auth(mut self, password: &str) -> Self {
        self.config.redis_auth = Some(password.to_string());
        self
    }

    /// Redis database selected on every new backend connection.
    pub fn redis_db(mut self, db: u32) -> Self {
        self.config.redis_db = db;
        self
    }

    /// Open one connection per server at start.
    pub fn preconnect(mut self) -> Self {
        self.config.preconnect = true;
        self
    }

    /// Ask this Redis Sentinel (`host:port`) where the masters are (the
    /// `sentinels` key); servers are then added with [`PoolBuilder::master`].
    pub fn sentinel(mut self, addr: &str) -> Self {
        match crate::config::validate::parse_host_port(addr) {
            Ok(a) => self
                .config
                .sentinel
                .get_or_insert_with(SentinelConfig::default)
                .addrs
                .push(a),
            Err(e) => self.problems.push(format!("sentinel {e}")),
        }
        self
    }

    /// The sentinels' password (`sentinel_auth`).
    pub fn sentinel_auth(mut self, password: &str) -> Self {
        self.config
            .sentinel
            .get_or_insert_with(SentinelConfig::default)
            .auth = Some(password.to_string());
        self
    }

    /// Add a server that is a Sentinel master, written as in the YAML of a
    /// pool with `sentinels`: `master-name:weight [name]`.
    pub fn master(mut self, entry: &str) -> Self {
        match crate::config::validate::parse_sentinel_server(entry) {
            Ok(s) => self.config.servers.push(s),
            Err(e) => self.problems.push(format!("master {e}")),
        }
        self
    }

    /// Where read-only commands go (`read_from`; default the masters).
    pub fn read_from(mut self, read_from: ReadFrom) -> Self {
        self.config.read_from = read_from;
        self
    }

    /// A replica of server `server` (its name) at `addr` (`host:port`),
    /// for [`PoolBuilder::read_from`] in a pool without sentinels.
    pub fn replica(mut self, server: &str, addr: &str) -> Self {
        match crate::config::validate::parse_host_port(addr) {
            Ok(a) => self.config.replicas.push((server.to_string(), a)),
            Err(e) => self.problems.push(format!("replica {e}")),
        }
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Start the pool. Must be called from within a tokio runtime.
    pub fn build(self) -> Result<Pool, PoolError> {
        let sentinel_problems = self.sentinel_problems();
        let mut problems = self.problems;
        if self.config.servers.is_empty() {
            problems.push("a pool needs at least one server".into());
        }
        if self.config.server_connections == 0 {
            problems.push("server_connections must be at least 1".into());
        }
        problems.extend(sentinel_problems);
        if !problems.is_empty() {
            return Err(PoolError::Invalid {
                pool: self.config.name,
                problems,
            });
        }
        Pool::new(self.config)
    }
}

impl PoolBuilder {
    /// What is wrong with the Sentinel and replica settings, by the rules
    /// `validate` applies to the config text.
    fn sentinel_problems(&self) -> Vec<String> {
        let c = &self.config;
        let mut problems = Vec::new();
        let masters = c
            .servers
            .iter()
            .filter(|s| matches!(s.addr, ServerAddr::Sentinel { .. }))
            .count();
        match &c.sentinel {
            Some(sc) => {
                if sc.addrs.is_empty() {
                    problems.push("sentinel_auth is only valid with sentinels".into());
                }
                if masters != c.servers.len() {
                    problems.push(
                        "a pool with sentinels takes masters (master()), not addresses (server())"
                            .into(),
                    );
                }
                if !c.redis {
                    problems.push("sentinels is only valid for a redis pool (redis())".into());
                }
                if c.auto_eject_hosts {
                    problems.push("sentinels and auto_eject_hosts exclude each other".into());
                }
                if !c.replicas.is_empty() {
                    problems.push("replicas and sentinels exclude each other: a Sentinel pool learns its replicas from the sentinels".into());
                }
            }
            None if masters > 0 => {
                problems.push("masters (master()) need sentinels (sentinel())".into())
            }
            None => {}
        }
        if c.read_from != ReadFrom::Master && !c.redis {
            problems.push("read_from is only valid for a redis pool (redis())".into());
        }
        if c.read_from != ReadFrom::Master && c.sentinel.is_none() && c.replicas.is_empty() {
            problems.push(format!(
                "read_from {} needs replicas (replica()) or sentinels (sentinel())",
                c.read_from.name()
            ));
        }
        for (server, _) in &c.replicas {
            if c.server(server).is_none() {
                problems.push(format!("replica of {server:?}: no such server in the pool"));
            }
        }
        for server in &c.servers {
            let name = server.name();
            let n = c.replicas.iter().filter(|(s, _)| *s == name).count();
            if n > crate::config::MAX_REPLICAS {
                problems.push(format!(
                    "server {name:?} has {n} replicas; at most {} are read from",
                    crate::config::MAX_REPLICAS
                ));
            }
        }
        problems
    }
}

fn server_error(reply: resp::Reply) -> CallError {
    match reply {
        resp::Reply::Error(e) => CallError::Server(ServerError::Reply(e)),
        other => CallError::Server(ServerError::Unexpected(format!(
            "unexpected reply {other:?}"
        ))),
    }
}

fn req<I, B>(args: I) -> resp::Request
where
    I: IntoIterator<Item = B>,
    B: Into<Bytes>,
{
    resp::Request::from_args(args)
}

/// Typed Redis commands on a pool. Every method is one [`Pool::call`].
#[derive(Debug, Clone)]
pub struct RedisClient {
    pool: Pool,
}

impl RedisClient {
    /// `GET key`.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, CallError> {
        match self
            .pool
            .call(req([Bytes::from_static(b"GET"), key.into()]))
            .await?
        {
            resp::Reply::Bulk(v) => Ok(v),
            other => Err(server_error(other)),
        }
    }

    /// `SET key value`.
    pub async fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), CallError> {
        match self
            .pool
            .call(req([Bytes::from_static(b"SET"), key.into(), value.into()]))
            .await?
        {
            resp::Reply::Status(_) => Ok(()),
            other => Err(server_error(other)),
        }
    }

    async fn int(&self, r: resp::Request) -> Result<i64, CallError> {
        match self.pool.call(r).await? {
            resp::Reply::Integer(n) => Ok(n),
            other => Err(server_error(other)),
        }
    }

    fn with_keys<K: AsRef<[u8]>>(cmd: &'static [u8], keys: &[K]) -> resp::Request {
        let mut args = vec![Bytes::from_static(cmd)];
        args.extend(keys.iter().map(|k| Bytes::copy_from_slice(k.as_ref())));
        req(args)
    }

    /// `DEL key...` across shards: how many existed.
    pub async fn del<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<i64, CallError> {
        self.int(Self::with_keys(b"DEL", keys)).await
    }

    /// `EXISTS key...` across shards: how many exist (a key named twice counts twice).
    pub async fn exists<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<i64, CallError> {
        self.int(Self::with_keys(b"EXISTS", keys)).await
    }

    /// `INCR key`.
    pub async fn incr(&self, key: impl Into<Bytes>) -> Result<i64, CallError> {
        self.int(req([Bytes::from_static(b"INCR"), key.into()]))
            .await
    }

    /// `EXPIRE key seconds`: whether the key existed.
    pub async fn expire(&self, key: impl Into<Bytes>, seconds: u64) -> Result<bool, CallError> {
        Ok(self
            .int(req([
                Bytes::from_static(b"EXPIRE"),
                key.into(),
                Bytes::from(seconds.to_string()),
            ]))
            .await?
            == 1)
    }

    /// `MGET key...` across shards, values in key order.
    pub async fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>, CallError> {
        match self.pool.call(Self::with_keys(b"MGET", keys)).await? {
            resp::Reply::Array(Some(items)) => Ok(bulk_items(items).collect()),
            other => Err(server_error(other)),
        }
    }

    /// `KEYS pattern` on every server: every matching key of the pool, in
    /// no particular order. Like Redis's KEYS it blocks each server while it
    /// walks its keyspace: prefer [`Pool::scan`] on large pools.
    pub async fn keys(&self, pattern: impl Into<Bytes>) -> Result<Vec<Bytes>, CallError> {
        match self
            .pool
            .call(req([Bytes::from_static(b"KEYS"), pattern.into()]))
            .await?
        {
            resp::Reply::Array(Some(items)) => Ok(bulk_items(items).flatten().collect()),
            other => Err(server_error(other)),
        }
    }

    /// `DBSIZE`: the keys of every live server, summed.
    pub async fn dbsize(&self) -> Result<i64, CallError> {
        self.int(req([Bytes::from_static(b"DBSIZE")])).await
    }

    /// `MSET key value ...` across shards.
    pub async fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: &[(K, V)],
    ) -> Result<(), CallError> {
        let mut args = vec![Bytes::from_static(b"MSET")];
        for (k, v) in pairs {
            args.push(Bytes::copy_from_slice(k.as_ref()));
            args.push(Bytes::copy_from_slice(v.as_ref()));
        }
        match self.pool.call(req(args)).await? {
            resp::Reply::Status(_) => Ok(()),
            other => Err(server_error(other)),
        }
    }

    /// `EVAL script numkeys key... arg...`, routed by the first key (all keys
    /// must live on one server: use a hash tag).
    pub async fn eval<K: AsRef<[u8]>, A: AsRef<[u8]>>(
        &self,
        script: &str,
        keys: &[K],
        args: &[A],
    ) -> Result<resp::Reply, CallError> {
        let mut v = vec![
            Bytes::from_static(b"EVAL"),
            Bytes::copy_from_slice(script.as_bytes()),
            Bytes::from(keys.len().to_string()),
        ];
        v.extend(keys.iter().map(|k| Bytes::copy_from_slice(k.as_ref())));
        v.extend(args.iter().map(|a| Bytes::copy_from_slice(a.as_ref())));
        match self.pool.call(req(v)).await? {
            resp::Reply::Error(e) => Err(CallError::Server(ServerError::Reply(e))),
            r => Ok(r),
        }
    }
}

/// One value read from memcached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McValue {
    /// The item's flags.
    pub flags: u32,
    /// Its cas unique (with `gets`).
    pub cas: Option<u64>,
    /// Its data.
    pub data: Bytes,
}

/// What a storage command reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// `STORED`.
    Stored,
    /// `NOT_STORED` (add of an existing key, replace of a missing one...).
    NotStored,
    /// `EXISTS`: a cas whose unique was stale.
    Exists,
    /// `NOT_FOUND`: a cas of a missing key.
    NotFound,
}

/// Typed memcached commands on a pool. Every method is one [`Pool::call_memcache`].
#[derive(Debug, Clone)]
pub struct MemcacheClient {
    pool: Pool,
}

fn bad_key(e: mc::RequestError) -> CallError {
    CallError::Request(RequestError::from(e))
}

/// memcached's error line `word` + `message`, as the server wrote it.
fn line(word: &str, message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(word.len() + message.len());
    b.extend_from_slice(word.as_bytes());
    b.extend_from_slice(message);
    b.freeze()
}

fn mc_unexpected(r: Option<mc::Reply>) -> CallError {
    match r {
        Some(mc::Reply::ServerError(m)) => {
            CallError::Server(ServerError::Reply(line("SERVER_ERROR ", &m)))
        }
        Some(mc::Reply::ClientError(m)) => {
            CallError::Server(ServerError::Reply(line("CLIENT_ERROR ", &m)))
        }
        Some(mc::Reply::Error) => {
            CallError::Server(ServerError::Reply(Bytes::from_static(b"ERROR")))
        }
        other => CallError::Server(ServerError::Unexpected(format!(
            "unexpected reply {other:?}"
        ))),
    }
}

/// The elements of an array reply as bulk strings: `None` for a nil or
/// an element of another type (MGET's answer for a missing key).
fn bulk_items(items: Vec<resp::Reply>) -> impl Iterator<Item = Option<Bytes>> {
    items.into_iter().map(|r| match r {
        resp::Reply::Bulk(v) => v,
        _ => None,
    })
}

/// Writes the storage methods without a cas unique (`set`, `add`,
/// `replace`): they differ only in the request they send.
macro_rules! store_methods {
    ($($(#[$doc:meta])* $name:ident;)+) => {$(
        $(#[$doc])*
        pub async fn $name(
            &self,
            key: impl AsRef<[u8]>,
            flags: u32,
            exptime: i64,
            value: impl AsRef<[u8]>,
        ) -> Result<Stored, CallError> {
            let r = mc::Request::$name(key, flags, exptime, value, false).map_err(bad_key)?;
            self.store(r).await
        }
    )+};
}

impl MemcacheClient {
    /// `get` of several keys across shards: `(key, value)` for each hit, in key order.
    pub async fn get_multi<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<(Bytes, McValue)>, CallError> {
        self.retrieve(mc::Request::get(keys).map_err(bad_key)?)
            .await
    }

    /// `gets` of several keys: like [`get_multi`](Self::get_multi) with cas uniques.
    pub async fn gets_multi<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<(Bytes, McValue)>, CallError> {
        self.retrieve(mc::Request::gets(keys).map_err(bad_key)?)
            .await
    }

    async fn retrieve(&self, r: mc::Request) -> Result<Vec<(Bytes, McValue)>, CallError> {
        match self.pool.call_memcache(r).await? {
            Some(mc::Reply::Values(vs)) => Ok(vs
                .into_iter()
                .map(|v| {
                    (
                        v.key,
                        McValue {
                            flags: v.flags,
                            cas: v.cas,
                            data: v.data,
                        },
                    )
                })
                .collect()),
            other => Err(mc_unexpected(other)),
        }
    }

    /// `get key`.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<McValue>, CallError> {
        let hits = self.get_multi(&[key.as_ref()]).await?;
        Ok(hits.into_iter().next().map(|(_, v)| v))
    }

    /// `gets key`: the value with its cas unique.
    pub async fn gets(&self, key: impl AsRef<[u8]>) -> Result<Option<McValue>, CallError> {
        let hits = self.gets_multi(&[key.as_ref()]).await?;
        Ok(hits.into_iter().next().map(|(_, v)| v))
    }

    async fn store(&self, r: mc::Request) -> Result<Stored, CallError> {
        match self.pool.call_memcache(r).await? {
            Some(mc::Reply::Stored) => Ok(Stored::Stored),
            Some(mc::Reply::NotStored) => Ok(Stored::NotStored),
            Some(mc::Reply::Exists) => Ok(Stored::Exists),
            Some(mc::Reply::NotFound) => Ok(Stored::NotFound),
            other => Err(mc_unexpected(other)),
        }
    }

    store_methods! {
        /// `set key flags exptime` with `value`.
        set;
        /// `add`: store only if the key is missing.
        add;
        /// `replace`: store only if the key exists.
        replace;
    }

    /// `cas`: store only if the item's cas unique is still `cas`.
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        flags: u32,
        exptime: i64,
        value: impl AsRef<[u8]>,
        cas: u64,
    ) -> Result<Stored, CallError> {
        self.store(mc::Request::cas(key, flags, exptime, value, cas, false).map_err(bad_key)?)
            .await
    }

    /// `delete key`: whether it existed.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, CallError> {
        match self
            .pool
            .call_memcache(mc::Request::delete(key, false).map_err(bad_key)?)
            .await?
        {
            Some(mc::Reply::Deleted) => Ok(true),
            Some(mc::Reply::NotFound) => Ok(false),
            other => Err(mc_unexpected(other)),
        }
    }

    async fn arith(&self, r: mc::Request) -> Result<Option<u64>, CallError> {
        match self.pool.call_memcache(r).await? {
            Some(mc::Reply::Number(n)) => Ok(Some(n)),
            Some(mc::Reply::NotFound) => Ok(None),
            other => Err(mc_unexpected(other)),
        }
    }

    /// `incr key delta`: the new value, or `None` if the key is missing.
    pub async fn incr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<Option<u64>, CallError> {
        self.arith(mc::Request::incr(key, delta, false).map_err(bad_key)?)
            .await
    }

    /// `decr key delta`: the new value, or `None` if the key is missing.
    pub async fn decr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<Option<u64>, CallError> {
        self.arith(mc::Request::decr(key, delta, false).map_err(bad_key)?)
            .await
    }

    /// `touch key exptime`: whether the key existed.
    pub async fn touch(&self, key: impl AsRef<[u8]>, exptime: i64) -> Result<bool, CallError> {
        match self
            .pool
            .call_memcache(mc::Request::touch(key, exptime, false).map_err(bad_key)?)
            .await?
        {
            Some(mc::Reply::Touched) => Ok(true),
            Some(mc::Reply::NotFound) => Ok(false),
            other => Err(mc_unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The builder takes Sentinel pools and replicas by validate's rules.
    #[tokio::test]
    async fn builder_sentinel_and_replicas() {
        let pool = Pool::builder("ha")
            .redis()
            .sentinel("127.0.0.1:1")
            .sentinel_auth("pw")
            .master("shard-a:1")
            .master("shard-b:1 b")
            .read_from(ReadFrom::PreferReplica)
            .build()
            .expect("a Sentinel pool");
        let c = pool.config();
        assert_eq!(c.sentinel.as_ref().map(|s| s.addrs.len()), Some(1));
        assert_eq!(c.servers[1].name(), "b");
        let problems = |b: PoolBuilder| match b.build() {
            Err(PoolError::Invalid { problems, .. }) => problems.join("; "),
            other => panic!("built: {other:?}"),
        };
        let p = problems(
            Pool::builder("x")
                .redis()
                .sentinel("127.0.0.1:1")
                .server("127.0.0.1:6379:1"),
        );
        assert!(p.contains("takes masters (master()), not addresses"), "{p}");
        let p = problems(Pool::builder("x").redis().master("m:1"));
        assert!(p.contains("masters (master()) need sentinels"), "{p}");
        let p = problems(Pool::builder("x").redis().sentinel("nope").master("m:1"));
        assert!(p.contains("sentinel \"nope\" is not host:port"), "{p}");
        let p = problems(
            Pool::builder("x")
                .redis()
                .server("127.0.0.1:6379:1 a")
                .read_from(ReadFrom::Replica),
        );
        assert!(p.contains("read_from replica needs replicas"), "{p}");
        let p = problems(
            Pool::builder("x")
                .redis()
                .server("127.0.0.1:6379:1 a")
                .read_from(ReadFrom::Replica)
                .replica("z", "127.0.0.1:7000"),
        );
        assert!(p.contains("replica of \"z\": no such server"), "{p}");
        let ok = Pool::builder("x")
            .redis()
            .server("127.0.0.1:6379:1 a")
            .read_from(ReadFrom::Replica)
            .replica("a", "127.0.0.1:7000")
            .build()
            .expect("static replicas");
        assert_eq!(ok.config().replicas.len(), 1);
    }
}
