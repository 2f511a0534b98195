//! The Redis command table: for every command Redis 7 knows, its arity, its
//! key positions and how twem routes it.
//!
//! The table is written once, below, sorted by name; [`lookup`] finds an
//! entry without allocating and [`classify`] turns a [`Request`] into a
//! [`Route`] or the error reply the client should read.
//!
//! Arities are Redis's (`COMMAND` on redis-server 7.0): `n` means exactly `n`
//! arguments counting the name, `-n` at least `n`. Which commands are forwarded
//! follows nutcracker 0.5.0 (`shared/compat/NUTCRACKER.md`), with the
//! differences of `DESIGN.md` section 4: `ECHO` and `SELECT` (database 0 only)
//! are answered by the proxy, `EXISTS`, `TOUCH` and `UNLINK` are split like
//! `DEL`, and the Redis commands nutcracker does not forward are in the table
//! as [`Class::Refused`], so a client reads "not supported" and why, rather
//! than "unknown command".

use crate::resp::{Reply, Request};

/// How a command is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Answered by the proxy itself: `PING`, `QUIT`, `AUTH`, `ECHO`, `SELECT`.
    Local,
    /// One key, `args[1]`, picks the server.
    Single,
    /// Several keys; the first one picks the server (clients co-locate the
    /// others with hash tags).
    MultiFirst,
    /// `MGET`: split per server; the values are put back in key order.
    Mget,
    /// `DEL`, `UNLINK`, `TOUCH`, `EXISTS`: split per server; the integer
    /// replies are summed.
    SumInt,
    /// `MSET`: split per server in key/value pairs; one `+OK`.
    Mset,
    /// `EVAL`/`EVALSHA script numkeys key...`: the first key picks the server;
    /// `numkeys` 0 is refused.
    Script,
    /// No key; sent to the server that owns the key `placeholder` (`COMMAND`,
    /// `LOLWUT`).
    Placeholder,
    /// Not forwarded; the text says why, for the client to read.
    Refused(&'static str),
}

/// One entry of the command table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// The name, lowercase, as Redis spells it in its errors.
    pub name: &'static str,
    /// Redis's arity: `n` exactly `n` arguments counting the name, `-n` at
    /// least `n`.
    pub arity: i32,
    /// How twem handles it.
    pub class: Class,
    /// Index in the arguments of the first key (the routing key); 0 when the
    /// command has no key. For refused commands, Redis's value, for
    /// information only.
    pub first_key: usize,
    /// Distance between keys: 1 for `MGET` and `DEL`, 2 for `MSET`; 0 when
    /// the command has no key.
    pub key_step: usize,
}

impl Command {
    /// True if `argc` arguments (the name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The proxy answers it (see [`Class::Local`]).
    Local(&'static Command),
    /// Forward it whole to the server of the key at this index of the
    /// arguments.
    Key(usize),
    /// Forward it whole to the server of the key `placeholder`.
    Placeholder,
    /// Split per server: the keys are at `first`, `first + step`, ... up to the
    /// last argument (for `MSET`, each key is followed by its value).
    Split {
        /// The command being split (its class says how to merge).
        cmd: &'static Command,
        /// Index of the first key.
        first: usize,
        /// Distance between keys.
        step: usize,
    },
}

/// Why a request cannot be routed. `Display` is the error reply's text,
/// without the leading `-`, worded as Redis words it where Redis has words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A request without even a command name.
    #[error("ERR empty command")]
    Empty,
    /// A name neither Redis nor twem knows. `name` and `args` are already cut
    /// and cleaned the way Redis does it (see [`CommandError::unknown`]).
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    Unknown {
        /// The name as the client sent it, at most 128 bytes.
        name: String,
        /// The first arguments, each quoted and followed by a space.
        args: String,
    },
    /// The number of arguments does not fit the command's arity (for `MSET`,
    /// also an odd number of keys and values).
    #[error("ERR wrong number of arguments for '{name}' command")]
    WrongArity {
        /// The command's lowercase name.
        name: &'static str,
    },
    /// A Redis command twem does not forward.
    #[error("ERR command '{name}' is not supported by twem: {reason}")]
    Refused {
        /// The command's lowercase name.
        name: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// `EVAL`/`EVALSHA` with `numkeys` 0: there is no key to pick a server.
    #[error("ERR {name} with numkeys 0 is not supported by twem: the first key picks the server")]
    ScriptWithoutKeys {
        /// The command's lowercase name.
        name: &'static str,
    },
    /// `numkeys` of `EVAL`/`EVALSHA` is not an integer.
    #[error("ERR value is not an integer or out of range")]
    NumKeysNotInteger,
    /// `numkeys` of `EVAL`/`EVALSHA` is negative.
    #[error("ERR Number of keys can't be negative")]
    NumKeysNegative,
    /// `numkeys` of `EVAL`/`EVALSHA` is more than the arguments that follow.
    #[error("ERR Number of keys can't be greater than number of args")]
    NumKeysTooLarge,
}

impl CommandError {
    /// The error reply for the client.
    pub fn reply(&self) -> Reply {
        Reply::error(self.to_string())
    }

    /// The unknown-command error for `req`, built as Redis 7 builds it: the
    /// name cut at 128 bytes, then quoted arguments while the list is shorter
    /// than 128 bytes (the last one cut to fit), line breaks as spaces.
    /// Bytes that are not UTF-8 are shown as U+FFFD (Redis echoes them raw).
    pub fn unknown(req: &Request) -> CommandError {
        let clean = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .chars()
                .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
                .collect::<String>()
        };
        let name = req.name();
        let name = clean(name.get(..name.len().min(128)).unwrap_or(name));
        let mut args = Vec::new();
        for arg in req.args().iter().skip(1) {
            if args.len() >= 128 {
                break;
            }
            let room = 128 - args.len();
            args.push(b'\'');
            args.extend_from_slice(arg.get(..arg.len().min(room)).unwrap_or(arg));
            args.extend_from_slice(b"' ");
        }
        CommandError::Unknown {
            name,
            args: clean(&args),
        }
    }
}

/// Looks a command up by name, ignoring ASCII case, without allocating.
///
/// One hash of the name and, almost always, one comparison: a binary search
/// of the table cost eight comparisons a request, a measurable share of the
/// pipelined request path.
pub fn lookup(name: &[u8]) -> Option<&'static Command> {
    let mut slot = name_hash(name) & INDEX_MASK;
    loop {
        // An empty slot (u16::MAX) is past the table's end: not found. The
        // index always has empty slots, so the probe ends.
        let cmd = COMMANDS.get(usize::from(*INDEX.get(slot)?))?;
        if cmd.name.as_bytes().eq_ignore_ascii_case(name) {
            return Some(cmd);
        }
        slot = (slot + 1) & INDEX_MASK;
    }
}

/// FNV-1a over the name with ASCII letters folded to lowercase (`| 0x20`
/// maps `A`..`Z` to `a`..`z`; other bytes map the same way in the table and
/// in a request, and the final comparison is exact).
const fn name_hash(name: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    // A slice pattern rather than `name[i]`: no index to get wrong, and
    // still a `const fn`.
    let mut rest = name;
    while let [b, tail @ ..] = rest {
        h = (h ^ (*b | 0x20) as u32).wrapping_mul(0x0100_0193);
        rest = tail;
    }
    h as usize
}

/// Slots of the lookup index: a power of two, at least twice the table.
const INDEX_SLOTS: usize = 512;
const INDEX_MASK: usize = INDEX_SLOTS - 1;

/// Open-addressed index from name hash to table position, built at compile
/// time from the table.
static INDEX: [u16; INDEX_SLOTS] = build_index(TABLE);

/// Builds [`INDEX`] from the table.
///
/// Runs only at compile time (it initialises a `static`): an index out of
/// range would fail the build, not a request, so indexing is allowed here.
#[allow(clippy::indexing_slicing)]
const fn build_index(table: &[Command]) -> [u16; INDEX_SLOTS] {
    assert!(
        table.len() * 2 <= INDEX_SLOTS,
        "the command index needs more slots"
    );
    let mut index = [u16::MAX; INDEX_SLOTS];
    let mut i = 0;
    while i < table.len() {
        let mut slot = name_hash(table[i].name.as_bytes()) & INDEX_MASK;
        while index[slot] != u16::MAX {
            slot = (slot + 1) & INDEX_MASK;
        }
        index[slot] = i as u16;
        i += 1;
    }
    index
}

/// Decides where `req` goes, checking what the proxy must check before
/// forwarding: that the command is known and forwarded, its arity, the pairs
/// of `MSET` and the `numkeys` of scripts.
pub fn classify(req: &Request) -> Result<(&'static Command, Route), CommandError> {
    if req.is_empty() {
        return Err(CommandError::Empty);
    }
    let cmd = lookup(req.name()).ok_or_else(|| CommandError::unknown(req))?;
    if let Class::Refused(reason) = cmd.class {
        // Refuse before checking arity: "wrong number of arguments" would
        // suggest the command works with the right ones.
        return Err(CommandError::Refused {
            name: cmd.name,
            reason,
        });
    }
    let argc = req.len();
    if !cmd.arity_ok(argc) {
        return Err(CommandError::WrongArity { name: cmd.name });
    }
    let route = match cmd.class {
        Class::Local => Route::Local(cmd),
        Class::Placeholder => Route::Placeholder,
        Class::Single | Class::MultiFirst => Route::Key(cmd.first_key),
        Class::Mget | Class::SumInt => Route::Split {
            cmd,
            first: cmd.first_key,
            step: cmd.key_step,
        },
        Class::Mset => {
            if (argc - 1) % 2 != 0 {
                return Err(CommandError::WrongArity { name: cmd.name });
            }
            Route::Split {
                cmd,
                first: cmd.first_key,
                step: cmd.key_step,
            }
        }
        Class::Script => {
            let numkeys = req
                .args()
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or(CommandError::NumKeysNotInteger)?;
            if numkeys < 0 {
                return Err(CommandError::NumKeysNegative);
            }
            if numkeys > i64::try_from(argc - 3).unwrap_or(i64::MAX) {
                return Err(CommandError::NumKeysTooLarge);
            }
            if numkeys == 0 {
                return Err(CommandError::ScriptWithoutKeys { name: cmd.name });
            }
            Route::Key(cmd.first_key)
        }
        Class::Refused(reason) => {
            return Err(CommandError::Refused {
                name: cmd.name,
                reason,
            })
        }
    };
    Ok((cmd, route))
}

/// Every command of the table, sorted by name (byte order).
pub fn commands() -> &'static [Command] {
    COMMANDS
}

const R_EVERY_SERVER: &str = "it would have to visit every server";
const R_CROSS_KEYS: &str = "its keys may live on different servers";
const R_BLOCKING: &str = "a blocking command would stall a server connection shared by all clients";
const R_PUBSUB: &str = "pub/sub needs a server connection of its own";
const R_TRANSACTION: &str = "transactions need a server connection of their own";
const R_SCRIPT: &str = "scripts and functions are managed on each server directly";
const R_CONNECTION: &str = "it would change a server connection shared by all clients";
const R_ADMIN: &str = "server administration is done on each server directly";
const R_NOT_FORWARDED: &str = "nutcracker does not forward it";

const fn c(
    name: &'static str,
    arity: i32,
    class: Class,
    first_key: usize,
    key_step: usize,
) -> Command {
    Command {
        name,
        arity,
        class,
        first_key,
        key_step,
    }
}

use Class::{Local, Mget, Mset, MultiFirst, Placeholder, Refused, Script, Single, SumInt};

/// The table: name, arity, class, first key, key step. Generated once from
/// `COMMAND` on redis-server 7.0.15 and NUTCRACKER.md, then kept by hand.
static COMMANDS: &[Command] = TABLE;

/// The table itself, a constant so that [`INDEX`] can be built from it at
/// compile time.
const TABLE: &[Command] = &[
    c("acl", -2, Refused(R_ADMIN), 0, 0),
    c("append", 3, Single, 1, 1),
    c("asking", 1, Refused(R_CONNECTION), 0, 0),
    c("auth", -2, Local, 0, 0),
    c("bgrewriteaof", 1, Refused(R_ADMIN), 0, 0),
    c("bgsave", -1, Refused(R_ADMIN), 0, 0),
    c("bitcount", -2, Single, 1, 1),
    c("bitfield", -2, Single, 1, 1),
    c("bitfield_ro", -2, Refused(R_NOT_FORWARDED), 1, 1),
    c("bitop", -4, Refused(R_CROSS_KEYS), 2, 1),
    c("bitpos", -3, Single, 1, 1),
    c("blmove", 6, Refused(R_BLOCKING), 1, 1),
    c("blmpop", -5, Refused(R_BLOCKING), 0, 0),
    c("blpop", -3, Refused(R_BLOCKING), 1, 1),
    c("brpop", -3, Refused(R_BLOCKING), 1, 1),
    c("brpoplpush", 4, Refused(R_BLOCKING), 1, 1),
    c("bzmpop", -5, Refused(R_BLOCKING), 0, 0),
    c("bzpopmax", -3, Refused(R_BLOCKING), 1, 1),
    c("bzpopmin", -3, Refused(R_BLOCKING), 1, 1),
    c("client", -2, Refused(R_CONNECTION), 0, 0),
    c("cluster", -2, Refused(R_ADMIN), 0, 0),
    c("command", -1, Placeholder, 0, 0),
    c("config", -2, Refused(R_ADMIN), 0, 0),
    c("copy", -3, MultiFirst, 1, 1),
    c("dbsize", 1, Refused(R_EVERY_SERVER), 0, 0),
    c("debug", -2, Refused(R_ADMIN), 0, 0),
    c("decr", 2, Single, 1, 1),
    c("decrby", 3, Single, 1, 1),
    c("del", -2, SumInt, 1, 1),
    c("discard", 1, Refused(R_TRANSACTION), 0, 0),
    c("dump", 2, Single, 1, 1),
    c("echo", 2, Local, 0, 0),
    c("eval", -3, Script, 3, 1),
    c("eval_ro", -3, Refused(R_NOT_FORWARDED), 0, 0),
    c("evalsha", -3, Script, 3, 1),
    c("evalsha_ro", -3, Refused(R_NOT_FORWARDED), 0, 0),
    c("exec", 1, Refused(R_TRANSACTION), 0, 0),
    c("exists", -2, SumInt, 1, 1),
    c("expire", -3, Single, 1, 1),
    c("expireat", -3, Single, 1, 1),
    c("expiretime", 2, Refused(R_NOT_FORWARDED), 1, 1),
    c("failover", -1, Refused(R_ADMIN), 0, 0),
    c("fcall", -3, Refused(R_NOT_FORWARDED), 0, 0),
    c("fcall_ro", -3, Refused(R_NOT_FORWARDED), 0, 0),
    c("flushall", -1, Refused(R_EVERY_SERVER), 0, 0),
    c("flushdb", -1, Refused(R_EVERY_SERVER), 0, 0),
    c("function", -2, Refused(R_SCRIPT), 0, 0),
    c("geoadd", -5, Single, 1, 1),
    c("geodist", -4, Single, 1, 1),
    c("geohash", -2, Single, 1, 1),
    c("geopos", -2, Single, 1, 1),
    c("georadius", -6, Single, 1, 1),
    c("georadius_ro", -6, Refused(R_NOT_FORWARDED), 1, 1),
    c("georadiusbymember", -5, Single, 1, 1),
    c("georadiusbymember_ro", -5, Refused(R_NOT_FORWARDED), 1, 1),
    c("geosearch", -7, Single, 1, 1),
    c("geosearchstore", -8, MultiFirst, 1, 1),
    c("get", 2, Single, 1, 1),
    c("getbit", 3, Single, 1, 1),
    c("getdel", 2, Single, 1, 1),
    c("getex", -2, Single, 1, 1),
    c("getrange", 4, Single, 1, 1),
    c("getset", 3, Single, 1, 1),
    c("hdel", -3, Single, 1, 1),
    c("hello", -1, Refused(R_CONNECTION), 0, 0),
    c("hexists", 3, Single, 1, 1),
    c("hget", 3, Single, 1, 1),
    c("hgetall", 2, Single, 1, 1),
    c("hincrby", 4, Single, 1, 1),
    c("hincrbyfloat", 4, Single, 1, 1),
    c("hkeys", 2, Single, 1, 1),
    c("hlen", 2, Single, 1, 1),
    c("hmget", -3, Single, 1, 1),
    c("hmset", -4, Single, 1, 1),
    c("hrandfield", -2, Single, 1, 1),
    c("hscan", -3, Single, 1, 1),
    c("hset", -4, Single, 1, 1),
    c("hsetnx", 4, Single, 1, 1),
    c("hstrlen", 3, Single, 1, 1),
    c("hvals", 2, Single, 1, 1),
    c("incr", 2, Single, 1, 1),
    c("incrby", 3, Single, 1, 1),
    c("incrbyfloat", 3, Single, 1, 1),
    c("info", -1, Refused(R_ADMIN), 0, 0),
    c("keys", 2, Refused(R_EVERY_SERVER), 0, 0),
    c("lastsave", 1, Refused(R_ADMIN), 0, 0),
    c("latency", -2, Refused(R_ADMIN), 0, 0),
    c("lcs", -3, Refused(R_CROSS_KEYS), 1, 1),
    c("lindex", 3, Single, 1, 1),
    c("linsert", 5, Single, 1, 1),
    c("llen", 2, Single, 1, 1),
    c("lmove", 5, MultiFirst, 1, 1),
    c("lmpop", -4, Refused(R_CROSS_KEYS), 0, 0),
    c("lolwut", -1, Placeholder, 0, 0),
    c("lpop", -2, Single, 1, 1),
    c("lpos", -3, Single, 1, 1),
    c("lpush", -3, Single, 1, 1),
    c("lpushx", -3, Single, 1, 1),
    c("lrange", 4, Single, 1, 1),
    c("lrem", 4, Single, 1, 1),
    c("lset", 4, Single, 1, 1),
    c("ltrim", 4, Single, 1, 1),
    c("memory", -2, Refused(R_ADMIN), 0, 0),
    c("mget", -2, Mget, 1, 1),
    c("migrate", -6, Refused(R_ADMIN), 3, 1),
    c("module", -2, Refused(R_ADMIN), 0, 0),
    c("monitor", 1, Refused(R_CONNECTION), 0, 0),
    c("move", 3, Refused(R_ADMIN), 1, 1),
    c("mset", -3, Mset, 1, 2),
    c("msetnx", -3, Refused(R_CROSS_KEYS), 1, 2),
    c("multi", 1, Refused(R_TRANSACTION), 0, 0),
    c("object", -2, Refused(R_ADMIN), 0, 0),
    c("persist", 2, Single, 1, 1),
    c("pexpire", -3, Single, 1, 1),
    c("pexpireat", -3, Single, 1, 1),
    c("pexpiretime", 2, Refused(R_NOT_FORWARDED), 1, 1),
    c("pfadd", -2, Single, 1, 1),
    c("pfcount", -2, MultiFirst, 1, 1),
    c("pfdebug", 3, Refused(R_ADMIN), 2, 1),
    c("pfmerge", -2, MultiFirst, 1, 1),
    c("pfselftest", 1, Refused(R_ADMIN), 0, 0),
    c("ping", -1, Local, 0, 0),
    c("psetex", 4, Single, 1, 1),
    c("psubscribe", -2, Refused(R_PUBSUB), 0, 0),
    c("psync", -3, Refused(R_ADMIN), 0, 0),
    c("pttl", 2, Single, 1, 1),
    c("publish", 3, Refused(R_PUBSUB), 0, 0),
    c("pubsub", -2, Refused(R_PUBSUB), 0, 0),
    c("punsubscribe", -1, Refused(R_PUBSUB), 0, 0),
    c("quit", -1, Local, 0, 0),
    c("randomkey", 1, Refused(R_EVERY_SERVER), 0, 0),
    c("readonly", 1, Refused(R_CONNECTION), 0, 0),
    c("readwrite", 1, Refused(R_CONNECTION), 0, 0),
    c("rename", 3, Refused(R_CROSS_KEYS), 1, 1),
    c("renamenx", 3, Refused(R_CROSS_KEYS), 1, 1),
    c("replconf", -1, Refused(R_ADMIN), 0, 0),
    c("replicaof", 3, Refused(R_ADMIN), 0, 0),
    c("reset", 1, Refused(R_CONNECTION), 0, 0),
    c("restore", -4, Single, 1, 1),
    c("restore-asking", -4, Refused(R_ADMIN), 1, 1),
    c("role", 1, Refused(R_ADMIN), 0, 0),
    c("rpop", -2, Single, 1, 1),
    c("rpoplpush", 3, MultiFirst, 1, 1),
    c("rpush", -3, Single, 1, 1),
    c("rpushx", -3, Single, 1, 1),
    c("sadd", -3, Single, 1, 1),
    c("save", 1, Refused(R_ADMIN), 0, 0),
    c("scan", -2, Refused(R_EVERY_SERVER), 0, 0),
    c("scard", 2, Single, 1, 1),
    c("script", -2, Refused(R_SCRIPT), 0, 0),
    c("sdiff", -2, MultiFirst, 1, 1),
    c("sdiffstore", -3, MultiFirst, 1, 1),
    c("select", 2, Local, 0, 0),
    c("set", -3, Single, 1, 1),
    c("setbit", 4, Single, 1, 1),
    c("setex", 4, Single, 1, 1),
    c("setnx", 3, Single, 1, 1),
    c("setrange", 4, Single, 1, 1),
    c("shutdown", -1, Refused(R_ADMIN), 0, 0),
    c("sinter", -2, MultiFirst, 1, 1),
    c("sintercard", -3, Refused(R_CROSS_KEYS), 0, 0),
    c("sinterstore", -3, MultiFirst, 1, 1),
    c("sismember", 3, Single, 1, 1),
    c("slaveof", 3, Refused(R_ADMIN), 0, 0),
    c("slowlog", -2, Refused(R_ADMIN), 0, 0),
    c("smembers", 2, Single, 1, 1),
    c("smismember", -3, Single, 1, 1),
    c("smove", 4, MultiFirst, 1, 1),
    c("sort", -2, Single, 1, 1),
    c("sort_ro", -2, Refused(R_NOT_FORWARDED), 1, 1),
    c("spop", -2, Single, 1, 1),
    c("spublish", 3, Refused(R_PUBSUB), 1, 1),
    c("srandmember", -2, Single, 1, 1),
    c("srem", -3, Single, 1, 1),
    c("sscan", -3, Single, 1, 1),
    c("ssubscribe", -2, Refused(R_PUBSUB), 1, 1),
    c("strlen", 2, Single, 1, 1),
    c("subscribe", -2, Refused(R_PUBSUB), 0, 0),
    c("substr", 4, Refused(R_NOT_FORWARDED), 1, 1),
    c("sunion", -2, MultiFirst, 1, 1),
    c("sunionstore", -3, MultiFirst, 1, 1),
    c("sunsubscribe", -1, Refused(R_PUBSUB), 1, 1),
    c("swapdb", 3, Refused(R_EVERY_SERVER), 0, 0),
    c("sync", 1, Refused(R_ADMIN), 0, 0),
    c("time", 1, Refused(R_ADMIN), 0, 0),
    c("touch", -2, SumInt, 1, 1),
    c("ttl", 2, Single, 1, 1),
    c("type", 2, Single, 1, 1),
    c("unlink", -2, SumInt, 1, 1),
    c("unsubscribe", -1, Refused(R_PUBSUB), 0, 0),
    c("unwatch", 1, Refused(R_TRANSACTION), 0, 0),
    c("wait", 3, Refused(R_BLOCKING), 0, 0),
    c("watch", -2, Refused(R_TRANSACTION), 1, 1),
    c("xack", -4, Refused(R_NOT_FORWARDED), 1, 1),
    c("xadd", -5, Refused(R_NOT_FORWARDED), 1, 1),
    c("xautoclaim", -6, Refused(R_NOT_FORWARDED), 1, 1),
    c("xclaim", -6, Refused(R_NOT_FORWARDED), 1, 1),
    c("xdel", -3, Refused(R_NOT_FORWARDED), 1, 1),
    c("xgroup", -2, Refused(R_NOT_FORWARDED), 0, 0),
    c("xinfo", -2, Refused(R_NOT_FORWARDED), 0, 0),
    c("xlen", 2, Refused(R_NOT_FORWARDED), 1, 1),
    c("xpending", -3, Refused(R_NOT_FORWARDED), 1, 1),
    c("xrange", -4, Refused(R_NOT_FORWARDED), 1, 1),
    c("xread", -4, Refused(R_NOT_FORWARDED), 0, 0),
    c("xreadgroup", -7, Refused(R_NOT_FORWARDED), 0, 0),
    c("xrevrange", -4, Refused(R_NOT_FORWARDED), 1, 1),
    c("xsetid", -3, Refused(R_NOT_FORWARDED), 1, 1),
    c("xtrim", -4, Refused(R_NOT_FORWARDED), 1, 1),
    c("zadd", -4, Single, 1, 1),
    c("zcard", 2, Single, 1, 1),
    c("zcount", 4, Single, 1, 1),
    c("zdiff", -3, MultiFirst, 2, 1),
    c("zdiffstore", -4, MultiFirst, 1, 1),
    c("zincrby", 4, Single, 1, 1),
    c("zinter", -3, MultiFirst, 2, 1),
    c("zintercard", -3, Refused(R_CROSS_KEYS), 0, 0),
    c("zinterstore", -4, MultiFirst, 1, 1),
    c("zlexcount", 4, Single, 1, 1),
    c("zmpop", -4, Refused(R_CROSS_KEYS), 0, 0),
    c("zmscore", -3, Single, 1, 1),
    c("zpopmax", -2, Single, 1, 1),
    c("zpopmin", -2, Single, 1, 1),
    c("zrandmember", -2, Single, 1, 1),
    c("zrange", -4, Single, 1, 1),
    c("zrangebylex", -4, Single, 1, 1),
    c("zrangebyscore", -4, Single, 1, 1),
    c("zrangestore", -5, MultiFirst, 1, 1),
    c("zrank", 3, Single, 1, 1),
    c("zrem", -3, Single, 1, 1),
    c("zremrangebylex", 4, Single, 1, 1),
    c("zremrangebyrank", 4, Single, 1, 1),
    c("zremrangebyscore", 4, Single, 1, 1),
    c("zrevrange", -4, Single, 1, 1),
    c("zrevrangebylex", -4, Single, 1, 1),
    c("zrevrangebyscore", -4, Single, 1, 1),
    c("zrevrank", 3, Single, 1, 1),
    c("zscan", -3, Single, 1, 1),
    c("zscore", 3, Single, 1, 1),
    c("zunion", -3, MultiFirst, 2, 1),
    c("zunionstore", -4, MultiFirst, 1, 1),
];

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&str]) -> Request {
        Request::from_args(args.iter().map(|a| a.to_string()))
    }

    fn class_of(name: &str) -> Class {
        lookup(name.as_bytes())
            .unwrap_or_else(|| panic!("{name} is not in the table"))
            .class
    }

    // Copied from NUTCRACKER.md ("Redis commands nutcracker forwards").
    const SINGLE: &str = "PERSIST PTTL TTL TYPE DUMP DECR GET GETDEL INCR STRLEN HGETALL HKEYS HLEN HVALS LLEN SCARD SMEMBERS ZCARD EXPIRE EXPIREAT PEXPIRE PEXPIREAT APPEND DECRBY GETBIT GETSET INCRBY INCRBYFLOAT SETNX HEXISTS HGET HSTRLEN LINDEX SISMEMBER ZRANK ZREVRANK ZSCORE GETRANGE PSETEX SETBIT SETEX SETRANGE HINCRBY HINCRBYFLOAT HSETNX LRANGE LREM LSET LTRIM ZCOUNT ZLEXCOUNT ZINCRBY ZREMRANGEBYLEX ZREMRANGEBYRANK ZREMRANGEBYSCORE LINSERT SET GETEX SORT BITCOUNT BITPOS BITFIELD HDEL HMGET HMSET HSET HSCAN HRANDFIELD LPUSH LPUSHX RPUSH RPUSHX LPOP RPOP LPOS SADD SREM SPOP SRANDMEMBER SSCAN SMISMEMBER PFADD ZADD ZREM ZMSCORE ZPOPMAX ZPOPMIN ZRANDMEMBER ZRANGE ZRANGEBYLEX ZRANGEBYSCORE ZREVRANGE ZREVRANGEBYLEX ZREVRANGEBYSCORE ZSCAN GEOADD GEODIST GEOHASH GEOPOS GEORADIUS GEORADIUSBYMEMBER GEOSEARCH RESTORE";
    const MULTI_FIRST: &str = "RPOPLPUSH SMOVE LMOVE COPY SDIFF SDIFFSTORE SINTER SINTERSTORE SUNION SUNIONSTORE PFCOUNT PFMERGE ZRANGESTORE ZDIFFSTORE ZINTERSTORE ZUNIONSTORE GEOSEARCHSTORE ZDIFF ZINTER ZUNION";
    const REFUSED: &str = "KEYS SCAN RANDOMKEY RENAME RENAMENX MIGRATE OBJECT MOVE BITOP MSETNX BLPOP BRPOP BRPOPLPUSH BLMOVE BZPOPMIN BZPOPMAX SUBSCRIBE PSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE PUBLISH PUBSUB SSUBSCRIBE SUNSUBSCRIBE SPUBLISH MULTI EXEC DISCARD WATCH UNWATCH SCRIPT INFO CONFIG CLIENT FLUSHALL FLUSHDB DBSIZE TIME MONITOR SAVE SHUTDOWN SLAVEOF SLOWLOG SYNC DEBUG";

    // The table is sorted (for `commands()` readers) and without duplicates,
    // or lookup would find only one of two entries.
    #[test]
    fn table_sorted_and_unique() {
        for pair in COMMANDS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    // Names are lowercase (Redis's spelling in errors) and short.
    #[test]
    fn table_names_lowercase_and_short() {
        for c in COMMANDS {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(c.name.len() <= 32, "{}", c.name);
        }
    }

    // Every forwarded command keeps its key where the route says.
    #[test]
    fn keyed_commands_have_a_first_key() {
        for c in COMMANDS {
            match c.class {
                Class::Single
                | Class::MultiFirst
                | Class::Mget
                | Class::SumInt
                | Class::Mset
                | Class::Script => {
                    assert!(c.first_key >= 1 && c.key_step >= 1, "{}", c.name)
                }
                Class::Local | Class::Placeholder => assert_eq!(c.first_key, 0, "{}", c.name),
                Class::Refused(_) => {}
            }
        }
    }

    // Every one-key command of NUTCRACKER.md is Single and routes by args[1].
    #[test]
    fn nutcracker_single_key_commands() {
        for name in SINGLE.split_whitespace() {
            assert_eq!(class_of(name), Class::Single, "{name}");
            assert_eq!(lookup(name.as_bytes()).map(|c| c.first_key), Some(1));
        }
    }

    // Every several-key command of NUTCRACKER.md is MultiFirst.
    #[test]
    fn nutcracker_multi_key_commands() {
        for name in MULTI_FIRST.split_whitespace() {
            assert_eq!(class_of(name), Class::MultiFirst, "{name}");
        }
    }

    // Every refused command of NUTCRACKER.md is in the table as Refused
    // (except SELECT, which twem answers for database 0).
    #[test]
    fn nutcracker_refused_commands() {
        for name in REFUSED.split_whitespace() {
            assert!(
                matches!(class_of(name), Class::Refused(_)),
                "{name} is {:?}",
                class_of(name)
            );
        }
    }

    // Local, placeholder, split and script classes.
    #[test]
    fn special_classes() {
        for name in ["PING", "QUIT", "AUTH", "ECHO", "SELECT"] {
            assert_eq!(class_of(name), Class::Local, "{name}");
        }
        assert_eq!(class_of("COMMAND"), Class::Placeholder);
        assert_eq!(class_of("LOLWUT"), Class::Placeholder);
        assert_eq!(class_of("MGET"), Class::Mget);
        for name in ["DEL", "UNLINK", "TOUCH", "EXISTS"] {
            assert_eq!(class_of(name), Class::SumInt, "{name}");
        }
        assert_eq!(class_of("MSET"), Class::Mset);
        assert_eq!(class_of("EVAL"), Class::Script);
        assert_eq!(class_of("EVALSHA"), Class::Script);
    }

    // Arities are Redis 7.0's.
    #[test]
    fn redis_arities() {
        let want = [
            ("get", 2),
            ("set", -3),
            ("mget", -2),
            ("mset", -3),
            ("eval", -3),
            ("del", -2),
            ("ping", -1),
            ("hset", -4),
            ("zadd", -4),
            ("georadius", -6),
            ("select", 2),
        ];
        for (name, arity) in want {
            assert_eq!(
                lookup(name.as_bytes()).map(|c| c.arity),
                Some(arity),
                "{name}"
            );
        }
    }

    // Lookup ignores ASCII case.
    #[test]
    fn lookup_case_insensitive() {
        let get = lookup(b"get").unwrap();
        assert_eq!(lookup(b"GET"), Some(get));
        assert_eq!(lookup(b"gEt"), Some(get));
        assert_eq!(
            lookup(b"RESTORE-ASKING").map(|c| c.name),
            Some("restore-asking")
        );
    }

    // Names not in the table, empty or longer than any command, are unknown.
    #[test]
    fn lookup_unknown() {
        assert_eq!(lookup(b"nosuchcommand"), None);
        assert_eq!(lookup(b""), None);
        assert_eq!(lookup(&[b'a'; 100]), None);
        assert_eq!(lookup(b"get\0"), None);
    }

    // Every entry is found by its name in any case, and a name that only
    // hashes like one (`| 0x20` folds 0x0D onto `-`) is not taken for it.
    #[test]
    fn lookup_finds_every_entry() {
        for c in COMMANDS {
            assert_eq!(lookup(c.name.as_bytes()), Some(c));
            assert_eq!(lookup(c.name.to_ascii_uppercase().as_bytes()), Some(c));
        }
        assert_eq!(lookup(b"restore\x0dasking"), None);
        assert_eq!(lookup(b"restore-asking\x00"), None);
    }

    // A key command routes to args[first_key].
    #[test]
    fn classify_single() {
        let (cmd, route) = classify(&req(&["Get", "k"])).unwrap();
        assert_eq!(cmd.name, "get");
        assert_eq!(route, Route::Key(1));
    }

    // ZDIFF/ZINTER/ZUNION route by their first key, not by numkeys.
    #[test]
    fn classify_zdiff_by_first_key() {
        let (_, route) = classify(&req(&["ZDIFF", "2", "a", "b"])).unwrap();
        assert_eq!(route, Route::Key(2));
    }

    // Local and placeholder routes.
    #[test]
    fn classify_local_and_placeholder() {
        let (cmd, route) = classify(&req(&["ping"])).unwrap();
        assert_eq!(route, Route::Local(cmd));
        let (_, route) = classify(&req(&["COMMAND", "COUNT"])).unwrap();
        assert_eq!(route, Route::Placeholder);
    }

    // MGET, DEL and MSET are split with their key step.
    #[test]
    fn classify_split() {
        let (cmd, route) = classify(&req(&["MGET", "a", "b"])).unwrap();
        assert_eq!(
            route,
            Route::Split {
                cmd,
                first: 1,
                step: 1
            }
        );
        let (cmd, route) = classify(&req(&["del", "a"])).unwrap();
        assert_eq!(
            route,
            Route::Split {
                cmd,
                first: 1,
                step: 1
            }
        );
        let (cmd, route) = classify(&req(&["MSET", "a", "1", "b", "2"])).unwrap();
        assert_eq!(
            route,
            Route::Split {
                cmd,
                first: 1,
                step: 2
            }
        );
    }

    // Too few or too many arguments give Redis's arity error, with the
    // lowercase name whatever the client typed.
    #[test]
    fn arity_errors() {
        for args in [&["GeT"][..], &["GET", "a", "b"], &["set", "k"], &["MGET"]] {
            let err = classify(&req(args)).unwrap_err();
            let name = args[0].to_ascii_lowercase();
            assert_eq!(
                err.to_string(),
                format!("ERR wrong number of arguments for '{name}' command")
            );
        }
    }

    // MSET with a key but no value is a wrong-arity error, as in Redis.
    #[test]
    fn mset_odd_arguments() {
        let err = classify(&req(&["MSET", "a", "1", "b"])).unwrap_err();
        assert_eq!(err, CommandError::WrongArity { name: "mset" });
    }

    // EVAL with numkeys 0 is refused: no key to pick a server.
    #[test]
    fn eval_without_keys_refused() {
        let err = classify(&req(&["EVAL", "return 1", "0"])).unwrap_err();
        assert_eq!(err, CommandError::ScriptWithoutKeys { name: "eval" });
        assert!(err
            .to_string()
            .starts_with("ERR eval with numkeys 0 is not supported by twem"));
    }

    // EVAL routes by its first key, args[3].
    #[test]
    fn eval_routes_by_first_key() {
        let (_, route) = classify(&req(&["evalsha", "abc", "2", "k1", "k2", "arg"])).unwrap();
        assert_eq!(route, Route::Key(3));
    }

    // Bad numkeys get Redis's own errors.
    #[test]
    fn eval_bad_numkeys() {
        let e = |args: &[&str]| classify(&req(args)).unwrap_err().to_string();
        assert_eq!(
            e(&["EVAL", "s", "x", "k"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            e(&["EVAL", "s", "-1", "k"]),
            "ERR Number of keys can't be negative"
        );
        assert_eq!(
            e(&["EVAL", "s", "5", "k"]),
            "ERR Number of keys can't be greater than number of args"
        );
    }

    // Unknown commands are worded exactly as redis-server 7.0.15 words them.
    #[test]
    fn unknown_command_wording() {
        let err = classify(&req(&["foo", "a", "b"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        let err = classify(&req(&["foo"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }

    // Redis cuts the argument list at 128 bytes and turns line breaks into
    // spaces (observed: redis-cli FoO $'a\r\nb' <200 x> c).
    #[test]
    fn unknown_command_long_args() {
        let xs = "x".repeat(200);
        let err = classify(&req(&["FoO", "a\r\nb", &xs, "c"])).unwrap_err();
        let want = format!(
            "ERR unknown command 'FoO', with args beginning with: 'a  b' '{}' ",
            "x".repeat(121)
        );
        assert_eq!(err.to_string(), want);
        let long = "y".repeat(200);
        let err = classify(&req(&[&long])).unwrap_err();
        assert!(err.to_string().contains(&format!("'{}'", "y".repeat(128))));
        assert!(!err.to_string().contains(&"y".repeat(129)));
    }

    // Refused commands say so and why, whatever their arguments.
    #[test]
    fn refused_wording() {
        let err = classify(&req(&["KEYS", "*"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ERR command 'keys' is not supported by twem: it would have to visit every server"
        );
        let err = classify(&req(&["blpop"])).unwrap_err();
        assert!(matches!(err, CommandError::Refused { name: "blpop", .. }));
    }

    // An empty request has its own error.
    #[test]
    fn empty_request() {
        let err = classify(&Request::from_args(Vec::<Bytes>::new())).unwrap_err();
        assert_eq!(err, CommandError::Empty);
    }

    // The reply is the error text as a RESP error.
    #[test]
    fn error_reply() {
        let err = CommandError::WrongArity { name: "get" };
        assert_eq!(
            &err.reply().to_bytes()[..],
            b"-ERR wrong number of arguments for 'get' command\r\n"
        );
    }

    use bytes::Bytes;
}
