//! Redis's own description of a command, as `COMMAND` reports it (the types
//! of [`generated`](super::generated)), and the key-spec interpreter that
//! finds a request's keys from it.
//!
//! The interpreter follows redis-server 7.0's `getKeysUsingKeySpecs`
//! (`src/db.c`), so twem finds the keys Redis itself would lock, replicate
//! or route in a cluster: a keyword search stops before the last argument,
//! a range with `limit` takes that fraction of what remains, a bad `numkeys`
//! finds no keys (the server then answers its own syntax error).

use bytes::Bytes;

/// Redis's description of one command or subcommand (`object|encoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Lowercase name; a subcommand is `parent|sub`, as Redis names it.
    pub name: &'static str,
    /// Redis's arity: `n` exactly `n` arguments counting the name (and the
    /// subcommand), `-n` at least `n`.
    pub arity: i32,
    /// Command flags, `F_*` bits.
    pub flags: u32,
    /// The legacy `(first key, last key, step)` of `COMMAND`.
    pub legacy: (i32, i32, i32),
    /// The key specs, in Redis's order.
    pub keys: &'static [KeySpec],
    /// `(start, count)` of this command's subcommands in the generated
    /// table; `(0, 0)` when it has none.
    pub subs: (u16, u16),
}

/// One key spec: where a group of keys starts and how to find them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// `K_*` bits.
    pub flags: u32,
    /// How to find the first key.
    pub begin: BeginSearch,
    /// How to find the rest from the first.
    pub find: FindKeys,
}

/// Where the search for a key spec's keys begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument index.
    Index(i32),
    /// After this keyword, searched from `startfrom` (negative: from the
    /// end, backwards).
    Keyword {
        /// The keyword, upper case, matched ignoring ASCII case.
        keyword: &'static str,
        /// Where to start looking.
        startfrom: i32,
    },
    /// Redis cannot say (`SORT`'s `STORE`, `BY`, `GET`).
    Unknown,
}

/// How the keys of a key spec are found from its first one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys up to `lastkey` (relative to the first; negative: from the end
    /// of the arguments), every `keystep`; with `limit` > 1 and `lastkey`
    /// -1, only the first `1/limit` of the remaining arguments (`XREAD`'s
    /// streams, before their ids).
    Range {
        /// Last key, relative.
        lastkey: i32,
        /// Distance between keys.
        keystep: i32,
        /// Fraction of the remaining arguments that are keys.
        limit: i32,
    },
    /// A count of keys at `keynumidx` (relative to the begin), the keys from
    /// `firstkey` (relative to the begin), every `keystep`.
    Keynum {
        /// Where the count is.
        keynumidx: i32,
        /// Where the first key is.
        firstkey: i32,
        /// Distance between keys.
        keystep: i32,
    },
    /// Redis cannot say.
    Unknown,
}

macro_rules! bits {
    ($($(#[$doc:meta])* $name:ident = $bit:expr;)*) => {
        $($(#[$doc])* pub const $name: u32 = 1 << $bit;)*
    };
}

bits! {
    /// The command may modify data.
    F_WRITE = 0;
    /// The command only reads.
    F_READONLY = 1;
    /// The command may grow memory.
    F_DENYOOM = 2;
    /// A module's command.
    F_MODULE = 3;
    /// An administrative command.
    F_ADMIN = 4;
    /// A pub/sub command.
    F_PUBSUB = 5;
    /// Not allowed in scripts.
    F_NOSCRIPT = 6;
    /// May block the client.
    F_BLOCKING = 7;
    /// Allowed while the database loads.
    F_LOADING = 8;
    /// Allowed on a stale replica.
    F_STALE = 9;
    /// Not shown by MONITOR.
    F_SKIP_MONITOR = 10;
    /// Not logged by SLOWLOG.
    F_SKIP_SLOWLOG = 11;
    /// Cluster ASKING handling.
    F_ASKING = 12;
    /// O(1) or O(log N).
    F_FAST = 13;
    /// Allowed before AUTH.
    F_NO_AUTH = 14;
    /// May replicate.
    F_MAY_REPLICATE = 15;
    /// Sentinel.
    F_SENTINEL = 16;
    /// Sentinel only.
    F_ONLY_SENTINEL = 17;
    /// Keys are optional (`EVAL` with numkeys 0).
    F_NO_MANDATORY_KEYS = 18;
    /// Protected (DEBUG, MODULE).
    F_PROTECTED = 19;
    /// A module's getkeys callback.
    F_MODULE_GETKEYS = 20;
    /// A module's command not for clusters.
    F_MODULE_NO_CLUSTER = 21;
    /// Refused during async loading.
    F_NO_ASYNC_LOADING = 22;
    /// Not allowed in MULTI.
    F_NO_MULTI = 23;
    /// Keys are found by parsing arguments, not by the legacy triple.
    F_MOVABLEKEYS = 24;
    /// Allowed while a script is busy.
    F_ALLOW_BUSY = 25;
    /// A module's getchannels callback.
    F_MODULE_GETCHANNELS = 26;
}

bits! {
    /// Read only.
    K_RO = 0;
    /// Read and write.
    K_RW = 1;
    /// Overwrite.
    K_OW = 2;
    /// Remove.
    K_RM = 3;
    /// Reads the value.
    K_ACCESS = 4;
    /// Updates the value.
    K_UPDATE = 5;
    /// Inserts.
    K_INSERT = 6;
    /// Deletes.
    K_DELETE = 7;
    /// Not a key (a channel, for example).
    K_NOT_KEY = 8;
    /// The spec may miss keys.
    K_INCOMPLETE = 9;
    /// Flags depend on arguments.
    K_VARIABLE_FLAGS = 10;
}

/// The `(first, last, step)` argument indexes of one key spec's keys in
/// `args` (the whole request, name first), inclusive, or `None` when the
/// spec finds no key in this request (keyword absent, bad `numkeys`, out of
/// range: the server answers its own error for those).
pub fn key_range(spec: &KeySpec, args: &[Bytes]) -> Option<(usize, usize, usize)> {
    let argc = i64::try_from(args.len()).ok()?;
    let first = match spec.begin {
        BeginSearch::Index(i) => i64::from(i),
        BeginSearch::Keyword { keyword, startfrom } => {
            let found = if startfrom > 0 {
                // Forwards, stopping before the last argument: a keyword
                // there has no key after it.
                (i64::from(startfrom)..argc - 1).find(|&i| is_word(args, i, keyword))
            } else {
                let start = argc + i64::from(startfrom);
                (1..=start).rev().find(|&i| is_word(args, i, keyword))
            };
            found? + 1
        }
        BeginSearch::Unknown => return None,
    };
    let (first, last, step) = match spec.find {
        FindKeys::Range {
            lastkey,
            keystep,
            limit,
        } => {
            let last = if lastkey >= 0 {
                first + i64::from(lastkey)
            } else if limit == 0 {
                argc + i64::from(lastkey)
            } else {
                first + (argc - first) / i64::from(limit) + i64::from(lastkey)
            };
            (first, last, keystep)
        }
        FindKeys::Keynum {
            keynumidx,
            firstkey,
            keystep,
        } => {
            let at = first + i64::from(keynumidx);
            let n = args
                .get(usize::try_from(at).ok()?)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|&n| n >= 0)?;
            let first = first + i64::from(firstkey);
            (first, first + n - 1, keystep)
        }
        FindKeys::Unknown => return None,
    };
    if first < 1 || last >= argc || last < first || step < 1 {
        return None;
    }
    Some((
        usize::try_from(first).ok()?,
        usize::try_from(last).ok()?,
        usize::try_from(step).ok()?,
    ))
}

/// Whether `args[i]` is `word`, ignoring ASCII case.
fn is_word(args: &[Bytes], i: i64, word: &str) -> bool {
    usize::try_from(i)
        .ok()
        .and_then(|i| args.get(i))
        .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
}
