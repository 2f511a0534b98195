//! The Redis command table: for every command and subcommand Redis 7 knows,
//! its arity, flags and key specs, read from redis-server's own `COMMAND`
//! reply, and how twem routes it.
//!
//! - [`generated`] is Redis's description, written by
//!   `scripts/gen-commands.py` and checked byte for byte against a live
//!   redis-server by `tests/tests/command_table.rs`: nothing in it is typed
//!   by hand.
//! - `policy.rs` is the hand-written overlay: the commands twem splits, fans
//!   out, answers itself, leaves to the client session, or refuses (with
//!   what to do instead). Everything else is derived: one fixed key is
//!   [`Class::Single`], several keys found by the key specs are
//!   [`Class::SameServer`] (forwarded only when they all live on one server).
//! - [`spec`] holds the key-spec interpreter ([`keys`] walks a request's
//!   keys as Redis would find them).
//!
//! [`lookup`] finds an entry without allocating; [`classify`] turns a
//! [`Request`] into a [`Route`] or the error reply the client should read.

use bytes::Bytes;

use crate::resp::{Reply, Request};

/// Redis's own table, generated from `COMMAND` (do not edit by hand).
#[rustfmt::skip]
pub mod generated;
mod policy;
pub mod spec;

use spec::{key_range, KeySpec, Spec, F_BLOCKING, K_NOT_KEY};

/// How a command is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Answered by the proxy itself: `PING`, `QUIT`, `AUTH`, `ECHO`, `SELECT`.
    Local,
    /// One key at a fixed index ([`Command::first_key`]) picks the server.
    Single,
    /// `PUBLISH`/`SPUBLISH channel message`: the channel, `args[1]`, is
    /// placed like a key, so a message meets its subscribers' server.
    Channel,
    /// Several keys, found by Redis's key specs ([`keys`]); forwarded only
    /// when every key lives on the same server (`RPOPLPUSH`, `SUNIONSTORE`,
    /// `SORT .. STORE`, `XREAD .. STREAMS`, `WATCH`, ...).
    SameServer,
    /// `MGET`: split per server; the values are put back in key order.
    Mget,
    /// `DEL`, `UNLINK`, `TOUCH`, `EXISTS`: split per server; the integer
    /// replies are summed.
    SumInt,
    /// `MSET`: split per server in key/value pairs; one `+OK`.
    Mset,
    /// `EVAL`, `EVALSHA`, their `_RO` forms, `FCALL`, `FCALL_RO`: the keys
    /// by `numkeys`, on one server; `numkeys` 0 is refused.
    Script,
    /// No key; sent to the server that owns the key `placeholder` (`COMMAND`,
    /// `LOLWUT`, `OBJECT HELP`).
    Placeholder,
    /// Sent to every live server; the replies merged by the policy.
    FanOut(FanOut),
    /// `SCAN`: one server a call, the one its cursor names; the server's
    /// cursor is rewritten into one that names the server too, so a scan
    /// walks every server in turn.
    Scan,
    /// The state of one client connection (`HELLO`, `CLIENT`, `MULTI`,
    /// `EXEC`, `DISCARD`, `UNWATCH`, `RESET`): the client session answers
    /// it; a pool refuses it.
    Session,
    /// A command with subcommands (`OBJECT`, `XINFO`): [`classify`] goes on
    /// with the subcommand's entry, so no [`Route`] comes from this class.
    Container,
    /// A blocking command (`BLPOP`, `BLMOVE`, ...): its keys on one server,
    /// run on a backend connection borrowed for it; the [`Wait`] says where
    /// its own timeout is.
    Blocking(Wait),
    /// Not forwarded; the text says why and what to do, for the client.
    Refused(&'static str),
}

/// Where a blocking command says how long it may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The last argument, in seconds (`BLPOP k... timeout`).
    LastSeconds,
    /// The first argument, in seconds (`BLMPOP timeout numkeys ...`).
    FirstSeconds,
    /// After the `BLOCK` option, in milliseconds (`XREAD BLOCK ms ...`).
    BlockMillis,
}

impl Wait {
    /// How long the request `args` may block: `None` for no limit (`0`, as
    /// Redis reads it), and also when the argument is not a number (the
    /// server then answers an error at once).
    pub fn duration(self, args: &[Bytes]) -> Option<std::time::Duration> {
        let (arg, scale) = match self {
            Wait::LastSeconds => (args.last(), 1.0),
            Wait::FirstSeconds => (args.get(1), 1.0),
            Wait::BlockMillis => {
                let at = args
                    .iter()
                    .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
                    .position(|a| a.eq_ignore_ascii_case(b"block"));
                (at.and_then(|i| args.get(i + 1)), 0.001)
            }
        };
        let secs: f64 = std::str::from_utf8(arg?).ok()?.trim().parse().ok()?;
        let secs = secs * scale;
        if !secs.is_finite() || secs <= 0.0 {
            return None;
        }
        std::time::Duration::try_from_secs_f64(secs).ok()
    }
}

/// How the replies of a command sent to every server combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanOut {
    /// Every server must answer the same (`SCRIPT LOAD`'s sha, `+OK`): that
    /// reply; an error reply wins; different replies are an error.
    AllEqual,
    /// `SCRIPT EXISTS`: arrays of 0/1, element-wise 1 only when every
    /// server said 1.
    AllOnes,
    /// `INFO`: the proxy's own INFO text with the servers' keyspace summed.
    Info,
    /// `PUBSUB CHANNELS`/`SHARDCHANNELS`: the union of the servers' arrays.
    Union,
    /// `PUBSUB NUMSUB`/`SHARDNUMSUB`: per channel, the sum of the servers'
    /// counts (a channel's subscribers are on its server; others say 0).
    SumPairs,
    /// `PUBSUB NUMPAT`: the largest of the servers' counts (the proxy puts
    /// every pattern on every server, so each counts it once).
    Max,
    /// `DBSIZE`: the servers' integers summed.
    Sum,
    /// `KEYS`: the servers' arrays, one after another.
    Concat,
    /// `RANDOMKEY`: a key from any server that has one; null only when
    /// every server is empty, as Redis answers for an empty database.
    AnyKey,
    /// `FLUSHDB`, `FLUSHALL`: every server must answer `+OK`. Sent only
    /// where the pool allows it: the pool's config decides, not the table.
    Flush,
}

/// One entry of the command table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// The name, lowercase, as Redis spells it in its errors; a subcommand
    /// is `parent|sub` (`object|encoding`).
    pub name: &'static str,
    /// Redis's arity: `n` exactly `n` arguments counting the name (and the
    /// subcommand), `-n` at least `n`.
    pub arity: i32,
    /// How twem handles it.
    pub class: Class,
    /// Index in the arguments of the first key: the routing key of a
    /// [`Class::Single`] command; Redis's legacy first key otherwise (0
    /// when it has none).
    pub first_key: usize,
    /// Distance between keys: 1 for `MGET` and `DEL`, 2 for `MSET`; 0 when
    /// the command has no key.
    pub key_step: usize,
    /// Redis's command flags ([`spec`]`::F_*`).
    pub flags: u32,
    /// Redis's key specs.
    pub key_specs: &'static [KeySpec],
    /// `(start, count)` of the subcommands in the table.
    subs: (u16, u16),
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

    /// The subcommand `sub` (any case) of this container command.
    pub fn subcommand(&self, sub: &[u8]) -> Option<&'static Command> {
        let (start, len) = (usize::from(self.subs.0), usize::from(self.subs.1));
        let prefix = self.name.len() + 1;
        COMMANDS.get(start..start + len)?.iter().find(|c| {
            c.name
                .as_bytes()
                .get(prefix..)
                .is_some_and(|n| n.eq_ignore_ascii_case(sub))
        })
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
    /// Forward it whole when every key ([`keys`]) lives on one server;
    /// otherwise refuse it with `CROSSSLOT`.
    SameServer(&'static Command),
    /// Send it to every live server and merge the replies.
    FanOut(&'static Command, FanOut),
    /// `SCAN`: to the one server its cursor names, the reply's cursor
    /// rewritten (see [`Class::Scan`]).
    Scan(&'static Command),
    /// A per-connection command for the client session ([`Class::Session`]).
    Session(&'static Command),
    /// A blocking command: its keys must share a server; it runs on a
    /// connection borrowed for it, for as long as the [`Wait`] allows.
    Blocking(&'static Command, Wait),
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
    /// A subcommand the container does not have (Redis's wording).
    #[error("ERR unknown subcommand '{sub}'. Try {container} HELP.")]
    UnknownSubcommand {
        /// The subcommand as sent, at most 128 bytes.
        sub: String,
        /// The container as sent, upper case.
        container: String,
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
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// A script with `numkeys` 0: there is no key to pick a server.
    #[error("ERR {name} with numkeys 0 is not supported by twem: pass the keys the script touches as KEYS (numkeys > 0) so the proxy can pick their server")]
    ScriptWithoutKeys {
        /// The command's lowercase name.
        name: &'static str,
    },
    /// `numkeys` of a script is not an integer.
    #[error("ERR value is not an integer or out of range")]
    NumKeysNotInteger,
    /// `numkeys` of a script is negative.
    #[error("ERR Number of keys can't be negative")]
    NumKeysNegative,
    /// `numkeys` of a script is more than the arguments that follow.
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

    /// The unknown-subcommand error for `req`, as Redis 7 words it.
    pub fn unknown_subcommand(req: &Request) -> CommandError {
        let sub = req.args().get(1).map_or(&b""[..], |s| &s[..]);
        CommandError::UnknownSubcommand {
            sub: String::from_utf8_lossy(sub.get(..sub.len().min(128)).unwrap_or(sub)).into_owned(),
            container: String::from_utf8_lossy(req.name()).to_ascii_uppercase(),
        }
    }
}

/// Looks a command up by name, ignoring ASCII case, without allocating.
/// Subcommands are found from their container ([`Command::subcommand`]).
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
static INDEX: [u16; INDEX_SLOTS] = build_index(&TABLE);

/// Builds [`INDEX`] from the table.
///
/// Runs only at compile time (it initialises a `static`): an index out of
/// range would fail the build, not a request, so indexing is allowed here.
#[allow(clippy::indexing_slicing)]
const fn build_index(table: &[Command]) -> [u16; INDEX_SLOTS] {
    assert!(
        generated::TOP * 2 <= INDEX_SLOTS && generated::TOP <= table.len(),
        "the command index needs more slots"
    );
    let mut index = [u16::MAX; INDEX_SLOTS];
    let mut i = 0;
    // Only the top-level commands: subcommands are found from their
    // container.
    while i < generated::TOP {
        let mut slot = name_hash(table[i].name.as_bytes()) & INDEX_MASK;
        while index[slot] != u16::MAX {
            slot = (slot + 1) & INDEX_MASK;
        }
        index[slot] = i as u16;
        i += 1;
    }
    index
}

/// The table entry `req` runs: its command's, or for a container
/// (`OBJECT ENCODING k`) its subcommand's. `None` for an unknown command or
/// subcommand. For callers that want the entry without a route (counting a
/// refusal by class, a session looking at flags).
pub fn resolve(req: &Request) -> Option<&'static Command> {
    let cmd = lookup(req.name())?;
    match cmd.class {
        Class::Container => cmd.subcommand(req.args().get(1)?),
        _ => Some(cmd),
    }
}

/// Decides where `req` goes, checking what the proxy must check before
/// forwarding: that the command (and subcommand) is known and forwarded, its
/// arity, the pairs of `MSET`, the `numkeys` of scripts and the `BLOCK` of
/// `XREAD`.
pub fn classify(req: &Request) -> Result<(&'static Command, Route), CommandError> {
    if req.is_empty() {
        return Err(CommandError::Empty);
    }
    let mut cmd = lookup(req.name()).ok_or_else(|| CommandError::unknown(req))?;
    let argc = req.len();
    if let Class::Container = cmd.class {
        if !cmd.arity_ok(argc) {
            return Err(CommandError::WrongArity { name: cmd.name });
        }
        let sub = req.args().get(1).map_or(&b""[..], |s| &s[..]);
        cmd = cmd
            .subcommand(sub)
            .ok_or_else(|| CommandError::unknown_subcommand(req))?;
    }
    if let Class::Refused(reason) = cmd.class {
        // Refuse before checking arity: "wrong number of arguments" would
        // suggest the command works with the right ones.
        return Err(CommandError::Refused {
            name: cmd.name,
            reason,
        });
    }
    if !cmd.arity_ok(argc) {
        return Err(CommandError::WrongArity { name: cmd.name });
    }
    let route = match cmd.class {
        Class::Local => Route::Local(cmd),
        Class::Placeholder => Route::Placeholder,
        Class::Single | Class::Channel => Route::Key(cmd.first_key),
        Class::SameServer => {
            if cmd.flags & F_BLOCKING != 0 && blocks(req.args()) {
                Route::Blocking(cmd, Wait::BlockMillis)
            } else {
                Route::SameServer(cmd)
            }
        }
        Class::Blocking(wait) => Route::Blocking(cmd, wait),
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
        Class::Script => match script_numkeys(req)? {
            0 => return Err(CommandError::ScriptWithoutKeys { name: cmd.name }),
            // One key: the hot path's fixed index, no key-spec walk.
            1 => Route::Key(3),
            _ => Route::SameServer(cmd),
        },
        Class::FanOut(how) => Route::FanOut(cmd, how),
        Class::Scan => Route::Scan(cmd),
        Class::Session => Route::Session(cmd),
        Class::Container => return Err(CommandError::unknown_subcommand(req)),
        Class::Refused(reason) => {
            return Err(CommandError::Refused {
                name: cmd.name,
                reason,
            })
        }
    };
    Ok((cmd, route))
}

/// Whether an `XREAD`/`XREADGROUP` has a `BLOCK` option (before `STREAMS`,
/// after which every argument is a key or an id).
fn blocks(args: &[Bytes]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
        .any(|a| a.eq_ignore_ascii_case(b"block"))
}

/// The `numkeys` of a script (`args[2]`), checked as Redis checks it.
fn script_numkeys(req: &Request) -> Result<usize, CommandError> {
    let numkeys = req
        .args()
        .get(2)
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or(CommandError::NumKeysNotInteger)?;
    if numkeys < 0 {
        return Err(CommandError::NumKeysNegative);
    }
    let room = req.len().saturating_sub(3);
    match usize::try_from(numkeys) {
        Ok(n) if n <= room => Ok(n),
        _ => Err(CommandError::NumKeysTooLarge),
    }
}

/// The argument indexes of every key of `args` (the whole request) for
/// `cmd`, in the order of Redis's key specs, as Redis 7's
/// `getKeysUsingKeySpecs` finds them (plus `SORT`'s `STORE`, which Redis's
/// specs leave "unknown" and its `sortGetKeys` finds). Allocates nothing.
pub fn keys<'a>(cmd: &'static Command, args: &'a [Bytes]) -> Keys<'a> {
    Keys {
        cmd,
        args,
        spec: 0,
        cur: None,
    }
}

/// The iterator of [`keys`].
#[derive(Debug, Clone)]
pub struct Keys<'a> {
    cmd: &'static Command,
    args: &'a [Bytes],
    /// The next key spec to read.
    spec: usize,
    /// The range being walked: next index, last index, step.
    cur: Option<(usize, usize, usize)>,
}

impl Iterator for Keys<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        loop {
            if let Some((next, last, step)) = self.cur {
                if next <= last {
                    self.cur = Some((next + step, last, step));
                    return Some(next);
                }
                self.cur = None;
            }
            let spec = self.cmd.key_specs.get(self.spec)?;
            self.spec += 1;
            if spec.flags & K_NOT_KEY != 0 {
                continue;
            }
            self.cur = match key_range(spec, self.args) {
                Some(r) => Some(r),
                None if spec.begin == spec::BeginSearch::Unknown
                    && spec.flags & spec::K_OW != 0
                    && self.cmd.name == "sort" =>
                {
                    sort_store(self.args).map(|i| (i, i, 1))
                }
                None => None,
            };
        }
    }
}

/// The index of `SORT`'s `STORE` key, found as Redis's `sortGetKeys` finds
/// it: options are skipped with their arguments (`LIMIT` takes two, `BY`,
/// `GET` and `STORE` one), so a pattern spelled "store" is not taken for
/// the keyword; the last `STORE` wins.
fn sort_store(args: &[Bytes]) -> Option<usize> {
    let mut found = None;
    let mut i = 2;
    while let Some(a) = args.get(i) {
        let skip = if a.eq_ignore_ascii_case(b"limit") {
            2
        } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
            1
        } else if a.eq_ignore_ascii_case(b"store") {
            if i + 1 < args.len() {
                found = Some(i + 1);
            }
            1
        } else {
            0
        };
        i += 1 + skip;
    }
    found
}

/// Every command and subcommand of the table: the top-level commands sorted
/// by name, then each container's subcommands.
pub fn commands() -> &'static [Command] {
    &COMMANDS
}

/// The table, Redis's entries with twem's classes.
static COMMANDS: [Command; generated::SPECS.len()] = TABLE;

/// The table as a constant, so that [`INDEX`] can be built from it at
/// compile time (it is only read there, never copied at run time).
#[allow(clippy::large_const_arrays)]
const TABLE: [Command; generated::SPECS.len()] = build_table();

/// Builds the table from Redis's specs and the policy. Runs only at compile
/// time (it initialises a `static`): an index out of range would fail the
/// build, not a request, so indexing is allowed here.
#[allow(clippy::indexing_slicing)]
const fn build_table() -> [Command; generated::SPECS.len()] {
    const EMPTY: Command = Command {
        name: "",
        arity: 0,
        class: Class::Container,
        first_key: 0,
        key_step: 0,
        flags: 0,
        key_specs: &[],
        subs: (0, 0),
    };
    let mut out = [EMPTY; generated::SPECS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = entry(&generated::SPECS[i]);
        i += 1;
    }
    out
}

/// One table entry from Redis's spec.
const fn entry(s: &Spec) -> Command {
    let class = policy::class_of(s);
    let (first_key, key_step) = match (class, policy::single_key(s)) {
        (Class::Single, Some(i)) => (i, 1),
        // Scripts: the first of their numkeys keys.
        (Class::Script, _) => (3, 1),
        (Class::Channel, _) => (1, 1),
        _ if s.legacy.0 > 0 && s.legacy.2 > 0 => (s.legacy.0 as usize, s.legacy.2 as usize),
        _ => (0, 0),
    };
    Command {
        name: s.name,
        arity: s.arity,
        class,
        first_key,
        key_step,
        flags: s.flags,
        key_specs: s.keys,
        subs: s.subs,
    }
}

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
    // NUTCRACKER.md's refusals twem still makes. RENAME, RENAMENX, BITOP,
    // MSETNX and WATCH became SameServer; OBJECT, SCRIPT, CONFIG and PUBSUB
    // containers are classified by subcommand; INFO fans out; MULTI, EXEC,
    // DISCARD, UNWATCH and CLIENT are the session's.
    // KEYS, SCAN, RANDOMKEY, DBSIZE, FLUSHALL, FLUSHDB and TIME, refused
    // by nutcracker, are served here (`keyspace_commands` below).
    const REFUSED: &str = "MIGRATE MOVE BLPOP BRPOP BRPOPLPUSH BLMOVE BZPOPMIN BZPOPMAX SUBSCRIBE PSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE PUBLISH SSUBSCRIBE SUNSUBSCRIBE SPUBLISH MONITOR SAVE SHUTDOWN SLAVEOF SYNC DEBUG";

    // The top-level commands are sorted (for `commands()` readers) and
    // without duplicates, or lookup would find only one of two entries;
    // each container's subcommands follow, named `parent|sub`.
    #[test]
    fn table_sorted_and_unique() {
        for pair in COMMANDS[..generated::TOP].windows(2) {
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
                Class::SameServer | Class::Blocking(_) => {
                    assert!(!c.key_specs.is_empty(), "{}", c.name)
                }
                Class::Single
                | Class::Mget
                | Class::SumInt
                | Class::Mset
                | Class::Script
                | Class::Channel => {
                    assert!(c.first_key >= 1 && c.key_step >= 1, "{}", c.name)
                }
                Class::Local | Class::Placeholder => assert_eq!(c.first_key, 0, "{}", c.name),
                Class::Refused(_)
                | Class::FanOut(_)
                | Class::Scan
                | Class::Session
                | Class::Container => {}
            }
        }
    }

    // Every one-key command of NUTCRACKER.md is Single and routes by args[1].
    #[test]
    fn nutcracker_single_key_commands() {
        for name in SINGLE.split_whitespace() {
            // Their STORE key may live on another server: all keys must
            // share one (nutcracker ignored the STORE key).
            if ["SORT", "GEORADIUS", "GEORADIUSBYMEMBER"].contains(&name) {
                assert_eq!(class_of(name), Class::SameServer, "{name}");
                continue;
            }
            assert_eq!(class_of(name), Class::Single, "{name}");
            assert_eq!(lookup(name.as_bytes()).map(|c| c.first_key), Some(1));
        }
    }

    // Every several-key command of NUTCRACKER.md (routed by its first key
    // there) needs all its keys on one server here.
    #[test]
    fn nutcracker_multi_key_commands() {
        for name in MULTI_FIRST.split_whitespace() {
            assert_eq!(class_of(name), Class::SameServer, "{name}");
        }
    }

    // Every refused command of NUTCRACKER.md is in the table as Refused
    // (except SELECT, which twem answers for database 0), or served the way
    // docs/design.md section 4 says: blocking commands on borrowed
    // connections, the subscribe family by the session (a dedicated
    // connection), PUBLISH where its channel maps, PUBSUB's introspection
    // on every server.
    #[test]
    fn nutcracker_refused_commands() {
        let wrong: Vec<String> = REFUSED
            .split_whitespace()
            .filter(|name| match class_of(name) {
                Class::Refused(_) | Class::Blocking(_) => false,
                Class::Session => !name.contains("SUBSCRIBE"),
                Class::Channel => !name.ends_with("PUBLISH"),
                Class::Container => *name != "PUBSUB",
                _ => true,
            })
            .map(|name| format!("{name} is {:?}", class_of(name)))
            .collect();
        assert!(wrong.is_empty(), "{wrong:?}");
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
        for c in &COMMANDS[..generated::TOP] {
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

    // ZDIFF/ZINTER/ZUNION find their keys by numkeys, not at args[1].
    #[test]
    fn classify_zdiff_by_numkeys() {
        let r = req(&["ZDIFF", "2", "a", "b", "WITHSCORES"]);
        let (cmd, route) = classify(&r).unwrap();
        assert_eq!(route, Route::SameServer(cmd));
        assert_eq!(keys(cmd, r.args()).collect::<Vec<_>>(), [2, 3]);
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

    // A script with one key routes by args[3]; with more, all its keys
    // (and only them, not its arguments) must share a server.
    #[test]
    fn scripts_route_by_their_keys() {
        for name in [
            "EVAL",
            "evalsha",
            "EVAL_RO",
            "EVALSHA_RO",
            "FCALL",
            "fcall_ro",
        ] {
            let (_, route) = classify(&req(&[name, "s", "1", "k1", "arg"])).unwrap();
            assert_eq!(route, Route::Key(3), "{name}");
            let r = req(&[name, "abc", "2", "k1", "k2", "arg"]);
            let (cmd, route) = classify(&r).unwrap();
            assert_eq!(route, Route::SameServer(cmd), "{name}");
            assert_eq!(keys(cmd, r.args()).collect::<Vec<_>>(), [3, 4], "{name}");
        }
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
        let err = classify(&req(&["MOVE", "k", "1"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ERR command 'move' is not supported by twem: the proxy serves one database (redis_db in the pool config): prefix your keys instead of moving them between databases"
        );
        let err = classify(&req(&["wait"])).unwrap_err();
        assert!(matches!(err, CommandError::Refused { name: "wait", .. }));
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

    /// The key indexes `classify` + `keys` find for a request.
    fn key_positions(args: &[&str]) -> Vec<usize> {
        let r = req(args);
        let (cmd, _) = classify(&r).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        keys(cmd, r.args()).collect()
    }

    // begin_search index + find_keys range with a fixed last key.
    #[test]
    fn keys_index_range() {
        assert_eq!(key_positions(&["RPOPLPUSH", "a", "b"]), [1, 2]);
        assert_eq!(key_positions(&["LMOVE", "a", "b", "LEFT", "RIGHT"]), [1, 2]);
        assert_eq!(key_positions(&["SMOVE", "a", "b", "m"]), [1, 2]);
        assert_eq!(key_positions(&["RENAME", "a", "b"]), [1, 2]);
        assert_eq!(key_positions(&["COPY", "a", "b", "REPLACE"]), [1, 2]);
        assert_eq!(key_positions(&["LCS", "a", "b", "LEN"]), [1, 2]);
    }

    // begin_search index + range to the end (with a step).
    #[test]
    fn keys_range_to_the_end() {
        assert_eq!(key_positions(&["SUNIONSTORE", "d", "a", "b"]), [1, 2, 3]);
        assert_eq!(key_positions(&["BITOP", "AND", "d", "a", "b"]), [2, 3, 4]);
        assert_eq!(key_positions(&["MSETNX", "a", "1", "b", "2"]), [1, 3]);
        assert_eq!(key_positions(&["PFCOUNT", "a", "b"]), [1, 2]);
        assert_eq!(key_positions(&["WATCH", "a", "b", "c"]), [1, 2, 3]);
    }

    // begin_search index + find_keys keynum (numkeys).
    #[test]
    fn keys_keynum() {
        assert_eq!(
            key_positions(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
            [1, 3, 4]
        );
        assert_eq!(key_positions(&["LMPOP", "2", "a", "b", "LEFT"]), [2, 3]);
        assert_eq!(key_positions(&["ZMPOP", "1", "a", "MIN"]), [2]);
        assert_eq!(
            key_positions(&["SINTERCARD", "2", "a", "b", "LIMIT", "1"]),
            [2, 3]
        );
        assert_eq!(key_positions(&["ZINTERCARD", "2", "a", "b"]), [2, 3]);
        assert_eq!(key_positions(&["EVAL", "s", "2", "a", "b", "x"]), [3, 4]);
        // A numkeys that is not a number finds no keys there: the server
        // answers its own error.
        assert_eq!(key_positions(&["ZUNIONSTORE", "d", "x", "a"]), [1]);
    }

    // begin_search keyword: GEORADIUS's STORE/STOREDIST, XREAD's STREAMS
    // (a range limited to half of what follows: the ids are not keys).
    #[test]
    fn keys_keyword() {
        let geo = ["GEORADIUS", "g", "0", "0", "1", "km"];
        assert_eq!(key_positions(&geo), [1]);
        let mut store = geo.to_vec();
        store.extend(["STORE", "d"]);
        assert_eq!(key_positions(&store), [1, 7]);
        let mut dist = geo.to_vec();
        dist.extend(["ASC", "storedist", "d2"]);
        assert_eq!(key_positions(&dist), [1, 8]);
        assert_eq!(
            key_positions(&["GEORADIUSBYMEMBER", "g", "m", "1", "km", "STORE", "d"]),
            [1, 6]
        );
        assert_eq!(
            key_positions(&["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"]),
            [4, 5]
        );
        assert_eq!(
            key_positions(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]),
            [5]
        );
        // A keyword in the last position has no key after it.
        assert_eq!(
            key_positions(&["GEORADIUS", "g", "0", "0", "1", "km", "STORE"]),
            [1]
        );
    }

    // SORT's STORE (an "unknown" spec for Redis) is found as sortGetKeys
    // finds it; a BY pattern spelled "store" is skipped.
    #[test]
    fn keys_sort_store() {
        assert_eq!(key_positions(&["SORT", "a"]), [1]);
        assert_eq!(
            key_positions(&["SORT", "a", "LIMIT", "0", "1", "STORE", "d"]),
            [1, 6]
        );
        assert_eq!(key_positions(&["SORT", "a", "BY", "store", "ALPHA"]), [1]);
        assert_eq!(key_positions(&["SORT_RO", "a", "ALPHA"]), [1]);
    }

    // GET and SET stay on the fixed-index hot path.
    #[test]
    fn single_key_commands_keep_a_fixed_index() {
        for (args, i) in [
            (&["GET", "k"][..], 1),
            (&["SET", "k", "v", "EX", "1"], 1),
            (&["XADD", "s", "*", "f", "v"], 1),
            (&["GETEX", "k", "PERSIST"], 1),
            (&["LPOS", "l", "x"], 1),
            (&["OBJECT", "ENCODING", "k"], 2),
            (&["object", "freq", "k"], 2),
            (&["MEMORY", "USAGE", "k"], 2),
            (&["XINFO", "STREAM", "s"], 2),
            (&["XGROUP", "CREATE", "s", "g", "$"], 2),
            (&["EXPIRETIME", "k"], 1),
            (&["BITFIELD_RO", "k", "GET", "u8", "0"], 1),
        ] {
            let (_, route) = classify(&req(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(route, Route::Key(i), "{args:?}");
        }
    }

    // Every command with one fixed key is forwarded, unless it blocks, is
    // pub/sub, administration, or moves a key between databases.
    #[test]
    fn every_single_key_command_is_forwarded() {
        for c in COMMANDS.iter() {
            if policy::single_key(&generated::SPECS[COMMANDS.iter().position(|x| x == c).unwrap()])
                .is_none()
            {
                continue;
            }
            let refusable = c.flags & (spec::F_BLOCKING | spec::F_PUBSUB | spec::F_ADMIN) != 0
                || ["move", "restore-asking"].contains(&c.name);
            if !refusable {
                assert_eq!(c.class, Class::Single, "{}", c.name);
            }
        }
    }

    // Subcommands: found ignoring case; an unknown one worded as Redis.
    #[test]
    fn subcommands() {
        let object = lookup(b"object").unwrap();
        assert_eq!(object.class, Class::Container);
        assert_eq!(
            object.subcommand(b"EnCoding").unwrap().name,
            "object|encoding"
        );
        let err = classify(&req(&["object", "nosuch", "k"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ERR unknown subcommand 'nosuch'. Try OBJECT HELP."
        );
        let err = classify(&req(&["OBJECT"])).unwrap_err();
        assert_eq!(err, CommandError::WrongArity { name: "object" });
        let err = classify(&req(&["OBJECT", "ENCODING"])).unwrap_err();
        assert_eq!(
            err,
            CommandError::WrongArity {
                name: "object|encoding"
            }
        );
        assert_eq!(
            classify(&req(&["OBJECT", "HELP"])).unwrap().1,
            Route::Placeholder
        );
        let err = classify(&req(&["CONFIG", "GET", "x"])).unwrap_err();
        assert!(matches!(
            err,
            CommandError::Refused {
                name: "config|get",
                ..
            }
        ));
    }

    // Fan-out and session commands.
    #[test]
    fn fan_out_and_session() {
        for (args, how) in [
            (&["SCRIPT", "LOAD", "return 1"][..], FanOut::AllEqual),
            (&["script", "flush"], FanOut::AllEqual),
            (&["SCRIPT", "EXISTS", "a", "b"], FanOut::AllOnes),
            (&["FUNCTION", "LOAD", "x"], FanOut::AllEqual),
            (&["FUNCTION", "DELETE", "x"], FanOut::AllEqual),
            (&["FUNCTION", "FLUSH"], FanOut::AllEqual),
            (&["FUNCTION", "RESTORE", "payload"], FanOut::AllEqual),
            (&["INFO"], FanOut::Info),
            (&["INFO", "server", "keyspace"], FanOut::Info),
        ] {
            let (cmd, route) = classify(&req(args)).unwrap();
            assert_eq!(route, Route::FanOut(cmd, how), "{args:?}");
        }
        for args in [
            &["HELLO", "3"][..],
            &["CLIENT", "SETNAME", "x"],
            &["client", "nosuch"],
            &["MULTI"],
            &["EXEC"],
            &["DISCARD"],
            &["UNWATCH"],
            &["RESET"],
        ] {
            let (cmd, route) = classify(&req(args)).unwrap();
            assert_eq!(route, Route::Session(cmd), "{args:?}");
        }
    }

    // The pool's keyspace commands (refused by nutcracker): fanned out,
    // SCAN by its cursor, TIME to any server; server administration stays
    // refused.
    #[test]
    fn keyspace_commands() {
        for (args, how) in [
            (&["DBSIZE"][..], FanOut::Sum),
            (&["KEYS", "user:*"], FanOut::Concat),
            (&["RANDOMKEY"], FanOut::AnyKey),
            (&["FLUSHDB"], FanOut::Flush),
            (&["flushall", "ASYNC"], FanOut::Flush),
        ] {
            let (cmd, route) = classify(&req(args)).unwrap();
            assert_eq!(route, Route::FanOut(cmd, how), "{args:?}");
        }
        for args in [
            &["SCAN", "0"][..],
            &["scan", "17", "MATCH", "a*", "COUNT", "10", "TYPE", "string"],
        ] {
            let (cmd, route) = classify(&req(args)).unwrap();
            assert_eq!(route, Route::Scan(cmd), "{args:?}");
        }
        assert_eq!(
            classify(&req(&["SCAN"])).unwrap_err(),
            CommandError::WrongArity { name: "scan" }
        );
        assert_eq!(classify(&req(&["TIME"])).unwrap().1, Route::Placeholder);
        for args in [
            &["CONFIG", "SET", "x", "y"][..],
            &["DEBUG", "SLEEP", "0"],
            &["SHUTDOWN"],
            &["SAVE"],
            &["BGSAVE"],
            &["SWAPDB", "0", "1"],
        ] {
            assert!(
                matches!(classify(&req(args)), Err(CommandError::Refused { .. })),
                "{args:?}"
            );
        }
    }

    // Blocking commands route as blocking, with where their timeout is;
    // XREAD and XREADGROUP only with BLOCK.
    #[test]
    fn blocking_routes() {
        let (cmd, route) = classify(&req(&["BLPOP", "a", "b", "1.5"])).unwrap();
        assert_eq!(route, Route::Blocking(cmd, Wait::LastSeconds));
        let args = req(&["BLPOP", "a", "b", "1.5"]);
        assert_eq!(
            Wait::LastSeconds.duration(args.args()),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(
            Wait::LastSeconds.duration(req(&["BLPOP", "a", "0"]).args()),
            None
        );
        assert_eq!(
            Wait::LastSeconds.duration(req(&["BLPOP", "a", "x"]).args()),
            None
        );
        let args = req(&["BLMPOP", "2", "1", "l", "LEFT"]);
        assert_eq!(
            Wait::FirstSeconds.duration(args.args()),
            Some(std::time::Duration::from_secs(2))
        );
        let x = req(&["XREAD", "BLOCK", "250", "STREAMS", "s", "$"]);
        let (cmd, route) = classify(&x).unwrap();
        assert_eq!(route, Route::Blocking(cmd, Wait::BlockMillis));
        assert_eq!(
            Wait::BlockMillis.duration(x.args()),
            Some(std::time::Duration::from_millis(250))
        );
        // "block" as a stream name is a key, not the option.
        let (cmd, route) = classify(&req(&["XREAD", "STREAMS", "block", "0"])).unwrap();
        assert_eq!(route, Route::SameServer(cmd));
        for name in [
            "BLMPOP",
            "BZMPOP",
            "BRPOPLPUSH",
            "BLMOVE",
            "BZPOPMIN",
            "BRPOP",
            "BZPOPMAX",
        ] {
            assert!(
                matches!(lookup(name.as_bytes()).unwrap().class, Class::Blocking(_)),
                "{name}"
            );
        }
        assert!(matches!(lookup(b"wait").unwrap().class, Class::Refused(_)));
    }

    // Every refusal says what to do instead: no "nutcracker does not
    // forward it" left.
    #[test]
    fn refusals_say_why() {
        for c in COMMANDS.iter() {
            if let Class::Refused(r) = c.class {
                assert!(!r.contains("nutcracker"), "{}", c.name);
                assert!(r.len() > 20, "{}", c.name);
            }
        }
    }

    // MIGRATE is refused (it moves keys by itself), but its KEYS spec is
    // the one backwards keyword search of Redis 7.0: the interpreter finds
    // the keys after the last KEYS, searching from argc-2 down.
    #[test]
    fn keys_backward_keyword() {
        let migrate = lookup(b"migrate").unwrap();
        assert!(matches!(migrate.class, Class::Refused(_)));
        let r = req(&[
            "MIGRATE", "h", "6379", "", "0", "5000", "COPY", "KEYS", "a", "b",
        ]);
        assert_eq!(keys(migrate, r.args()).collect::<Vec<_>>(), [3, 8, 9]);
        let r = req(&["MIGRATE", "h", "6379", "k", "0", "5000"]);
        assert_eq!(keys(migrate, r.args()).collect::<Vec<_>>(), [3]);
    }

    // Specs that find nothing or run past the arguments give no keys
    // rather than an index out of range.
    #[test]
    fn key_ranges_stay_in_bounds() {
        let zunion = lookup(b"zunionstore").unwrap();
        for args in [
            &["ZUNIONSTORE", "d", "5", "a"][..],
            &["ZUNIONSTORE", "d", "-1", "a"],
            &["ZUNIONSTORE", "d"],
        ] {
            let r = req(args);
            assert_eq!(keys(zunion, r.args()).collect::<Vec<_>>(), [1], "{args:?}");
        }
        let xread = lookup(b"xread").unwrap();
        let r = req(&["XREAD", "STREAMS"]);
        assert_eq!(keys(xread, r.args()).count(), 0);
    }

    #[test]
    fn resolve_finds_subcommands() {
        assert_eq!(
            resolve(&req(&["object", "ENCODING", "k"])).unwrap().name,
            "object|encoding"
        );
        assert_eq!(resolve(&req(&["GET", "k"])).unwrap().name, "get");
        assert_eq!(resolve(&req(&["OBJECT", "nosuch"])), None);
        assert_eq!(resolve(&req(&["OBJECT"])), None);
        assert_eq!(resolve(&req(&["nosuch"])), None);
    }

    // Arguments are the network's: for every command and subcommand, any
    // mix of keywords, counts and junk classifies without panicking, and
    // every key found is an argument of the request (never the name).
    #[test]
    fn any_arguments_stay_in_bounds() {
        const WORDS: &[&str] = &[
            "k",
            "0",
            "1",
            "2",
            "3",
            "-1",
            "-2",
            "99999999999999999999",
            "STORE",
            "storedist",
            "STREAMS",
            "KEYS",
            "BLOCK",
            "LIMIT",
            "BY",
            "GET",
            "numkeys",
            "",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for c in COMMANDS.iter() {
            let (name, sub) = match c.name.split_once('|') {
                Some((p, s)) => (p, Some(s)),
                None => (c.name, None),
            };
            for _ in 0..300 {
                let mut args = vec![name.to_string()];
                args.extend(sub.map(str::to_string));
                let n = (next() % 9) as usize;
                for _ in 0..n {
                    args.push(WORDS[(next() % WORDS.len() as u64) as usize].to_string());
                }
                let r = Request::from_args(args.clone());
                let first = usize::from(sub.is_some()) + 1;
                if let Ok((cmd, route)) = classify(&r) {
                    if let Route::Key(i) = route {
                        assert!(i >= first && i < r.len(), "{args:?}");
                    }
                    for i in keys(cmd, r.args()) {
                        assert!(i >= 1 && i < r.len(), "{args:?}: key {i}");
                    }
                }
                // And the interpreter on its own, whatever classify said.
                for i in keys(c, r.args()) {
                    assert!(i >= 1 && i < r.len(), "{args:?}: key {i}");
                }
            }
        }
    }

    use bytes::Bytes;
}
