//! How twem handles each command: the hand-written overlay on Redis's table.
//!
//! Most commands need no entry here: [`class_of`] derives their class from
//! Redis's flags and key specs (one fixed key: [`Class::Single`]; several
//! keys found by the key specs: [`Class::SameServer`]; blocking, pub/sub,
//! admin or keyless: refused with a reason). [`OVERLAY`] names the
//! exceptions, each for a reason a user can read in its refusal or in
//! `docs/design.md`.

use super::spec::{BeginSearch, FindKeys, Spec, F_ADMIN, F_BLOCKING, F_PUBSUB, K_INCOMPLETE};
use super::{Class, FanOut, Wait};

const R_NO_KEY: &str = "it has no key to pick a server: run it on each server directly";
const R_PUBSUB: &str =
    "pub/sub needs a server connection of its own, not supported through the proxy yet: connect to the server directly";
const R_BLOCKING: &str = "it is a blocking command, not supported through the proxy yet: poll with its non-blocking form, or connect to the server directly";
const R_ADMIN: &str = "server administration is done on each server directly";
const R_CLUSTER: &str =
    "it is a Redis Cluster command and twem is not a cluster node: send the keys' commands to the proxy";
const R_DB: &str =
    "the proxy serves one database (redis_db in the pool config): prefix your keys instead of moving them between databases";
const R_UNKNOWN_KEYS: &str =
    "its keys cannot all be found from its arguments: run it on the server directly";

/// The exceptions, by Redis's lowercase name (a subcommand as
/// `parent|sub`). An entry for a container (`client`) covers all its
/// subcommands.
pub(super) const OVERLAY: &[(&str, Class)] = &[
    // Answered by the proxy (route.rs `local_reply`; AUTH by the session).
    ("auth", Class::Local),
    ("echo", Class::Local),
    ("ping", Class::Local),
    ("quit", Class::Local),
    ("select", Class::Local),
    // Keyless but harmless anywhere: nutcracker sends them to the server
    // of the key "placeholder".
    ("command", Class::Placeholder),
    ("lolwut", Class::Placeholder),
    // Any server's clock will do: the servers of a pool are expected to
    // share one time source, and a client reading TIME wants "now".
    ("time", Class::Placeholder),
    // Split per server and merged.
    ("mget", Class::Mget),
    ("mset", Class::Mset),
    ("del", Class::SumInt),
    ("exists", Class::SumInt),
    ("touch", Class::SumInt),
    ("unlink", Class::SumInt),
    // Keys by numkeys, on one server; numkeys 0 refused (classify).
    ("eval", Class::Script),
    ("eval_ro", Class::Script),
    ("evalsha", Class::Script),
    ("evalsha_ro", Class::Script),
    ("fcall", Class::Script),
    ("fcall_ro", Class::Script),
    // Sent to every server: a script or function must exist wherever its
    // keys may live.
    ("script|load", Class::FanOut(FanOut::AllEqual)),
    ("script|flush", Class::FanOut(FanOut::AllEqual)),
    ("script|exists", Class::FanOut(FanOut::AllOnes)),
    ("function|load", Class::FanOut(FanOut::AllEqual)),
    ("function|delete", Class::FanOut(FanOut::AllEqual)),
    ("function|flush", Class::FanOut(FanOut::AllEqual)),
    ("function|restore", Class::FanOut(FanOut::AllEqual)),
    ("info", Class::FanOut(FanOut::Info)),
    // The state of one client connection: the client session answers them.
    ("client", Class::Session),
    ("discard", Class::Session),
    ("exec", Class::Session),
    ("hello", Class::Session),
    ("multi", Class::Session),
    // Subscriptions live on connections dedicated to the client session;
    // a channel is placed like a key, so PUBLISH meets its subscribers.
    ("subscribe", Class::Session),
    ("unsubscribe", Class::Session),
    ("psubscribe", Class::Session),
    ("punsubscribe", Class::Session),
    ("ssubscribe", Class::Session),
    ("sunsubscribe", Class::Session),
    ("publish", Class::Channel),
    ("pubsub|channels", Class::FanOut(FanOut::Union)),
    ("pubsub|shardchannels", Class::FanOut(FanOut::Union)),
    ("pubsub|numsub", Class::FanOut(FanOut::SumPairs)),
    ("pubsub|shardnumsub", Class::FanOut(FanOut::SumPairs)),
    ("pubsub|numpat", Class::FanOut(FanOut::Max)),
    ("spublish", Class::Channel),
    ("reset", Class::Session),
    ("unwatch", Class::Session),
    // SORT's STORE key is "unknown" to Redis's key specs; the interpreter
    // finds it as Redis's sortGetKeys does. BY/GET patterns read keys on
    // the sorted key's server, as nutcracker did.
    ("sort", Class::SameServer),
    ("sort_ro", Class::SameServer),
    // Blocking, with what to do instead.
    // Blocking: on a connection borrowed for the command, keys on one
    // server; where the command's own timeout is, so the wait is bounded.
    ("blpop", Class::Blocking(Wait::LastSeconds)),
    ("brpop", Class::Blocking(Wait::LastSeconds)),
    ("brpoplpush", Class::Blocking(Wait::LastSeconds)),
    ("blmove", Class::Blocking(Wait::LastSeconds)),
    ("blmpop", Class::Blocking(Wait::FirstSeconds)),
    ("bzpopmin", Class::Blocking(Wait::LastSeconds)),
    ("bzpopmax", Class::Blocking(Wait::LastSeconds)),
    ("bzmpop", Class::Blocking(Wait::FirstSeconds)),
    (
        "wait",
        Class::Refused("WAIT blocks on one server's replicas: run it on the server directly"),
    ),
    // XREAD/XREADGROUP block only with BLOCK: classify routes those as
    // blocking (`Wait::BlockMillis`).
    ("xread", Class::SameServer),
    ("xreadgroup", Class::SameServer),
    // The keyspace of the pool is the union of its servers' keyspaces.
    ("dbsize", Class::FanOut(FanOut::Sum)),
    ("keys", Class::FanOut(FanOut::Concat)),
    ("randomkey", Class::FanOut(FanOut::AnyKey)),
    // One server a call, the server named by the cursor (route.rs `scan`).
    ("scan", Class::Scan),
    // Emptying every server: only where the pool's config allows it
    // (`allow_flush`), checked when the request is planned.
    ("flushall", Class::FanOut(FanOut::Flush)),
    ("flushdb", Class::FanOut(FanOut::Flush)),
    // Databases.
    ("move", Class::Refused(R_DB)),
    ("swapdb", Class::Refused(R_DB)),
    // Redis Cluster's own.
    ("asking", Class::Refused(R_CLUSTER)),
    ("readonly", Class::Refused(R_CLUSTER)),
    ("readwrite", Class::Refused(R_CLUSTER)),
    ("restore-asking", Class::Refused(R_CLUSTER)),
    ("cluster", Class::Refused(R_CLUSTER)),
    // Moves keys to another server by itself.
    ("migrate", Class::Refused(R_ADMIN)),
    ("monitor", Class::Refused(R_ADMIN)),
];

/// The class of `spec`: its [`OVERLAY`] entry, or derived from Redis's
/// flags and key specs. Runs at compile time (the table is a `static`).
pub(super) const fn class_of(spec: &Spec) -> Class {
    let mut i = 0;
    while i < OVERLAY.len() {
        // Indexing in a const fn: out of range fails the build, never a
        // request.
        #[allow(clippy::indexing_slicing)]
        let (name, class) = OVERLAY[i];
        if str_eq(name, spec.name) {
            return class;
        }
        i += 1;
    }
    derive(spec)
}

/// The class Redis's own description implies.
const fn derive(spec: &Spec) -> Class {
    if spec.subs.1 > 0 {
        return Class::Container;
    }
    if ends_with(spec.name, "|help") {
        // Every container's HELP is keyless and harmless anywhere.
        return Class::Placeholder;
    }
    if spec.flags & F_BLOCKING != 0 {
        return Class::Refused(R_BLOCKING);
    }
    if spec.flags & F_PUBSUB != 0 {
        return Class::Refused(R_PUBSUB);
    }
    if spec.flags & F_ADMIN != 0 {
        return Class::Refused(R_ADMIN);
    }
    if spec.keys.is_empty() {
        return Class::Refused(R_NO_KEY);
    }
    let mut rest = spec.keys;
    while let [k, tail @ ..] = rest {
        let unknown =
            matches!(k.begin, BeginSearch::Unknown) || matches!(k.find, FindKeys::Unknown);
        if unknown || k.flags & K_INCOMPLETE != 0 {
            return Class::Refused(R_UNKNOWN_KEYS);
        }
        rest = tail;
    }
    if single_key(spec).is_some() {
        Class::Single
    } else {
        Class::SameServer
    }
}

/// The index of the one key of a command with exactly one key at a fixed
/// position (`GET k`, `OBJECT ENCODING k`), the hot path's `Route::Key`.
pub(super) const fn single_key(spec: &Spec) -> Option<usize> {
    match spec.keys {
        [k] => match (k.begin, k.find) {
            (BeginSearch::Index(i), FindKeys::Range { lastkey: 0, .. }) if i > 0 => {
                Some(i as usize)
            }
            _ => None,
        },
        _ => None,
    }
}

/// `a == b`, in a const fn.
pub(super) const fn str_eq(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a, b) {
            ([], []) => return true,
            ([x, ta @ ..], [y, tb @ ..]) if *x == *y => {
                a = ta;
                b = tb;
            }
            _ => return false,
        }
    }
}

/// Whether `s` ends with `tail`, in a const fn.
const fn ends_with(s: &str, tail: &str) -> bool {
    let (mut s, mut t) = (s.as_bytes(), tail.as_bytes());
    loop {
        match (s, t) {
            (_, []) => return true,
            ([sh @ .., x], [th @ .., y]) if *x == *y => {
                s = sh;
                t = th;
            }
            _ => return false,
        }
    }
}
