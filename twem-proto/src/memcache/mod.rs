//! memcached ASCII protocol: client requests in, backend replies out.
//!
//! Three pieces, one per side of the proxy:
//!
//! - [`RequestCodec`] (server side, facing clients) decodes [`Request`]s and
//!   encodes [`Reply`]s or pass-through reply bytes.
//! - [`decode_reply`] / [`ReplyDecoder`] cut a backend's reply in the context
//!   of the request it answers (memcached replies are not self-describing: a
//!   `NOT_FOUND` line is a whole reply to `delete`, a `VALUE` line is the
//!   start of one to `get`). [`ClientCodec`] wraps them for `Framed` users: it
//!   remembers the commands it sent.
//! - [`split_get`] and [`merge_get`] fan a multi-key `get`/`gets` out to
//!   several servers and put the answers back together in key order.
//!
//! Everything is zero copy: a decoded [`Request`] holds [`bytes::Bytes`]
//! slices of the read buffer and is forwarded with [`Request::wire`]; a reply
//! is passed through with [`ReplyFrame::raw`].
//!
//! Supported commands are nutcracker's: `get gets set add replace append
//! prepend cas incr decr touch delete version quit`, plus `gat gats stats
//! flush_all verbosity` and the meta commands `mg ms md ma mn me`,
//! lowercase only (as memcached and nutcracker; `GET` is an unknown
//! command). Meta flags are not interpreted beyond `b` (base64 key: the
//! decoded key is [`Request::key`]) and `q` (quiet: see
//! [`Request::wire_with_noop`] and [`ReplyDecoder::decode_quiet`]).
//!
//! # Client mistakes and how they are answered
//!
//! A bad command line whose extent is known is decoded as an
//! `Err(`[`RequestError`]`)` item; the stream goes on with the next line. The
//! proxy answers it with [`RequestError::reply`] unless
//! [`RequestError::noreply`] is set, and closes the connection after the reply
//! when [`RequestError::closes_connection`] is set. The words are memcached
//! 1.6's (checked against a live memcached 1.6.18):
//!
//! | input | memcached | twem |
//! |---|---|---|
//! | unknown command, `GET` in upper case, empty line | `ERROR` | same |
//! | wrong number of arguments (`incr k`, `get`) | `ERROR` | same |
//! | key over 250 bytes | `CLIENT_ERROR bad command line format` | same |
//! | key with a control character | accepted | `CLIENT_ERROR bad command line format` (the protocol forbids them; nutcracker's hashing and logs assume printable keys) |
//! | flags, exptime or cas unique not a number, flags over `u32` | `CLIENT_ERROR bad command line format` | same |
//! | `incr`/`decr` delta not a `u64` | `CLIENT_ERROR invalid numeric delta argument` | same |
//! | `touch` exptime not a number | `CLIENT_ERROR invalid exptime argument` | same |
//! | `delete k x` | `CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]` | same |
//! | value over [`Limits::max_value_len`] | `SERVER_ERROR object too large for cache`, data block swallowed | same; the block is skipped as it streams in, never buffered |
//! | data block not followed by `\r\n` | `CLIENT_ERROR bad data chunk`; `<bytes>+2` bytes consumed, parsing resumes after them | same |
//! | storage command with a bad key/flags/exptime or too many arguments, but a valid `<bytes>` | `CLIENT_ERROR ...`/`ERROR`, then the data block is parsed as a command | the same error line, but the data block is skipped: the client meant it as data, and running a value as a command (`delete ...`) is worse than memcached's extra `ERROR` |
//! | storage command whose `<bytes>` is missing, not a number, negative or over `i32::MAX` | `ERROR` / `CLIENT_ERROR bad command line format`, the data is then parsed as commands | `CLIENT_ERROR bad command line format`, then the connection is closed: the data block cannot be delimited, so the stream cannot be resynchronised |
//! | more than [`Limits::max_keys`] (16384) keys in one `get` | no limit | `CLIENT_ERROR too many keys in one get: the limit is 16384` |
//! | meta command without a key (`mg`) | `ERROR` | same |
//! | meta key over 250 bytes, `b` key that is not base64 | `CLIENT_ERROR bad command line format` / `CLIENT_ERROR error decoding key` | same; an `ms` data block is skipped by its length |
//! | meta line of more than 19 words | `CLIENT_ERROR options flags too long` (`mg`: `... are too long`); for `ms` the data block is then run as commands | the same line; an `ms` data block is skipped by its length |
//! | `stats <sub-command>` | the sub-command's stats | `SERVER_ERROR only the general 'stats' is supported by this proxy, not its sub-commands` (per-server details cannot be merged) |
//! | `ms` whose `<datalen>` is missing or not a number | `CLIENT_ERROR bad command line format`, the data is then parsed as commands | `CLIENT_ERROR bad command line format`, then the connection is closed (the data cannot be skipped, and running it as commands is how a value smuggles a `delete`) |
//! | error on a line ending in `noreply` | no reply (except `ERROR` for a wrong argument count) | same: [`RequestError::noreply`] tells the proxy to stay silent |
//!
//! Another protocol is a [`ProtoError::ForeignProtocol`], after which the
//! connection must close with nothing more run: a binary-protocol request
//! (first byte `0x80`; its value could otherwise be read as text commands),
//! and an HTTP request, seen at an unknown command whose last word starts
//! with `HTTP/` (as memcached 1.6 does) or at a `POST` or `Host:` line (as
//! redis-server does). A browser can be made to send HTTP to any port, and
//! the body of that request would otherwise run as commands.
//!
//! Only a stream that can no longer be cut into lines is a [`ProtoError`]: a
//! command line longer than [`Limits::max_line_len`] without a newline
//! (memcached closes the connection silently; the proxy may send
//! [`protocol_error_reply`] first), or any input after an error that closed
//! the connection. As memcached does, a bare `\n` ends a command line as well
//! as `\r\n`, and blanks between arguments may be repeated. A `get`/`gets`
//! line may be longer than `max_line_len` (memcached's multigets are
//! unbounded too) but no longer than `max_keys` keys of 250 bytes could make
//! it.
//!
//! # Backend replies
//!
//! Replies must end in `\r\n` (memcached always sends it) and must be one a
//! memcached could send to that command; anything else is a
//! [`ProtoError`], after which the backend connection cannot be trusted. A
//! `get` reply may be an error line instead of `VALUE ... END` (memcached
//! 1.6 answers a multiget with one bad key with a lone `CLIENT_ERROR`), and an
//! error line after some values ends the reply too.
//!
//! # Example
//!
//! A server and a client over an in-memory pipe:
//!
//! ```
//! use futures::{SinkExt, StreamExt};
//! use tokio_util::codec::Framed;
//! use twem_proto::memcache::{ClientCodec, Command, Reply, Request, RequestCodec};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (client_io, server_io) = tokio::io::duplex(4096);
//! let mut client = Framed::new(client_io, ClientCodec::default());
//! let mut server = Framed::new(server_io, RequestCodec::default());
//!
//! client.send(Request::set("greeting", 0, 0, "hello", false)?).await?;
//! client.send(Request::get(&["greeting", "missing"])?).await?;
//!
//! // The server sees zero-copy requests...
//! let set = server.next().await.ok_or("eof")???;
//! assert_eq!(set.command(), Command::Set);
//! assert_eq!(set.value().map(|v| &v[..]), Some(&b"hello"[..]));
//! server.send(&Reply::Stored).await?;
//! let get = server.next().await.ok_or("eof")???;
//! assert_eq!(get.keys().len(), 2);
//! server.send(bytes::Bytes::from_static(b"VALUE greeting 0 5\r\nhello\r\nEND\r\n")).await?;
//!
//! // ...and the client gets each reply cut in the context of its request.
//! let stored = client.next().await.ok_or("eof")??;
//! assert_eq!(stored.parse(), Reply::Stored);
//! let values = client.next().await.ok_or("eof")??;
//! match values.parse() {
//!     Reply::Values(v) => assert_eq!(&v[0].data[..], b"hello"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

#[cfg(test)]
mod prop;
mod reply;
mod request;
mod split;

pub use reply::{decode_reply, ClientCodec, Reply, ReplyDecoder, ReplyFrame, Value};
pub use request::{Request, RequestCodec, RequestError};
pub use split::{merge_get, split_get};

use bytes::Bytes;

use crate::ProtoError;

/// The longest key memcached accepts, in bytes.
pub const MAX_KEY_LEN: usize = 250;

/// Bounds that keep a hostile or broken peer from making a codec buffer
/// without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest data block of a storage command or of a `VALUE` in a reply.
    /// Default 1 MiB, memcached's default item size (`-I 1m`).
    pub max_value_len: usize,
    /// Longest command or reply line, `\r\n` excluded; a longer line is broken
    /// framing. Default 2048, the point where memcached gives up on a line
    /// that is not a `get`.
    pub max_line_len: usize,
    /// Most keys in one `get`/`gets`, and most values in one reply to it.
    /// Default 16384: far above what clients batch (libmemcached and
    /// pymemcache send a few hundred), while bounding a `get` line to about
    /// 4 MiB. memcached has no such limit; a `get` over it is answered
    /// `CLIENT_ERROR too many keys in one get: the limit is 16384`. Kept
    /// rather than lifted because it bounds more than the line: the decoded
    /// key slices, the per-server fan-out of a split `get` and the values
    /// a reply may carry are each proportional to it, and a line of 4 MiB
    /// of one-byte keys would otherwise cost some 64 MiB of key slices.
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_len: 1024 * 1024,
            max_line_len: 2048,
            max_keys: 16384,
        }
    }
}

impl Limits {
    /// The longest `get`/`gets` line these limits allow: `gets ` plus
    /// `max_keys` keys of [`MAX_KEY_LEN`] bytes, each after a blank.
    pub fn max_get_line_len(&self) -> usize {
        self.max_keys
            .saturating_mul(MAX_KEY_LEN + 1)
            .saturating_add("gets".len())
            .max(self.max_line_len)
    }
}

/// A memcached command, as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `get <key>*`
    Get,
    /// `gets <key>*`: values with their cas unique.
    Gets,
    /// `set <key> <flags> <exptime> <bytes> [noreply]`
    Set,
    /// `add ...`: store only if absent.
    Add,
    /// `replace ...`: store only if present.
    Replace,
    /// `append ...`: add data after the existing value.
    Append,
    /// `prepend ...`: add data before the existing value.
    Prepend,
    /// `cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]`
    Cas,
    /// `incr <key> <delta> [noreply]`
    Incr,
    /// `decr <key> <delta> [noreply]`
    Decr,
    /// `touch <key> <exptime> [noreply]`
    Touch,
    /// `delete <key> [noreply]`
    Delete,
    /// `version`
    Version,
    /// `quit`: the server closes the connection without a reply.
    Quit,
    /// `gat <exptime> <key>*`: get and touch.
    Gat,
    /// `gats <exptime> <key>*`: get and touch, with cas uniques.
    Gats,
    /// `stats`: the general statistics (sub-commands are refused).
    Stats,
    /// `flush_all [delay] [noreply]`
    FlushAll,
    /// `verbosity <level> [noreply]`
    Verbosity,
    /// Meta get: `mg <key> <flags>*`.
    MetaGet,
    /// Meta set: `ms <key> <datalen> <flags>*` and a data block.
    MetaSet,
    /// Meta delete: `md <key> <flags>*`.
    MetaDelete,
    /// Meta arithmetic: `ma <key> <flags>*`.
    MetaArithmetic,
    /// Meta no-op: `mn`, answered `MN`.
    MetaNoop,
    /// Meta debug: `me <key> [b]`.
    MetaDebug,
}

impl Command {
    /// Every command, in the order of the enum.
    pub const ALL: [Command; 25] = [
        Command::Get,
        Command::Gets,
        Command::Set,
        Command::Add,
        Command::Replace,
        Command::Append,
        Command::Prepend,
        Command::Cas,
        Command::Incr,
        Command::Decr,
        Command::Touch,
        Command::Delete,
        Command::Version,
        Command::Quit,
        Command::Gat,
        Command::Gats,
        Command::Stats,
        Command::FlushAll,
        Command::Verbosity,
        Command::MetaGet,
        Command::MetaSet,
        Command::MetaDelete,
        Command::MetaArithmetic,
        Command::MetaNoop,
        Command::MetaDebug,
    ];

    /// The command's name on the wire (lowercase).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get => "get",
            Command::Gets => "gets",
            Command::Set => "set",
            Command::Add => "add",
            Command::Replace => "replace",
            Command::Append => "append",
            Command::Prepend => "prepend",
            Command::Cas => "cas",
            Command::Incr => "incr",
            Command::Decr => "decr",
            Command::Touch => "touch",
            Command::Delete => "delete",
            Command::Version => "version",
            Command::Quit => "quit",
            Command::Gat => "gat",
            Command::Gats => "gats",
            Command::Stats => "stats",
            Command::FlushAll => "flush_all",
            Command::Verbosity => "verbosity",
            Command::MetaGet => "mg",
            Command::MetaSet => "ms",
            Command::MetaDelete => "md",
            Command::MetaArithmetic => "ma",
            Command::MetaNoop => "mn",
            Command::MetaDebug => "me",
        }
    }

    /// The command named exactly `name` (lowercase, as memcached).
    pub fn from_name(name: &[u8]) -> Option<Command> {
        Command::ALL
            .iter()
            .copied()
            .find(|c| c.name().as_bytes() == name)
    }

    /// Whether a data block follows the command line (`set add replace append
    /// prepend cas`).
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            Command::Set
                | Command::Add
                | Command::Replace
                | Command::Append
                | Command::Prepend
                | Command::Cas
        )
    }

    /// Whether the reply is a `VALUE ... END` stream (`get gets gat
    /// gats`).
    pub fn is_retrieval(&self) -> bool {
        matches!(
            self,
            Command::Get | Command::Gets | Command::Gat | Command::Gats
        )
    }

    /// Whether this is a meta command (`mg ms md ma mn me`), whose replies
    /// are two-letter codes (`HD`, `VA <len>`, `EN`, ...).
    pub fn is_meta(&self) -> bool {
        matches!(
            self,
            Command::MetaGet
                | Command::MetaSet
                | Command::MetaDelete
                | Command::MetaArithmetic
                | Command::MetaNoop
                | Command::MetaDebug
        )
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The line to send a memcached client before closing its connection for a
/// framing error: `CLIENT_ERROR <what went wrong>\r\n`.
pub fn protocol_error_reply(err: &ProtoError) -> Bytes {
    let text = err.to_string().replace(['\r', '\n'], " ");
    Bytes::from(format!("CLIENT_ERROR {text}\r\n"))
}

/// Why a key is not one memcached accepts, or `None` if it is fine.
fn key_problem(key: &[u8]) -> Option<&'static str> {
    if key.is_empty() {
        Some("empty key")
    } else if key.len() > MAX_KEY_LEN {
        Some("key longer than 250 bytes")
    } else if key.iter().any(|&b| b <= b' ' || b == 0x7f) {
        // Space splits arguments; control characters are forbidden by the
        // protocol text and would corrupt logs and the hash input.
        Some("key contains a blank or control character")
    } else {
        None
    }
}

/// The bytes of a token. Ranges come from [`Tokens`] over the same line, so
/// the empty fallback is never taken; it spares the codec a panic path.
fn word(line: &[u8], range: std::ops::Range<usize>) -> &[u8] {
    line.get(range).unwrap_or_default()
}

/// Blank-separated words of a line, as byte ranges; repeated blanks are one
/// separator, as in memcached's tokenizer.
#[derive(Debug, Clone)]
struct Tokens<'a> {
    line: &'a [u8],
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn new(line: &'a [u8]) -> Self {
        Tokens { line, pos: 0 }
    }
}

impl Iterator for Tokens<'_> {
    type Item = std::ops::Range<usize>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.line.get(self.pos..)?;
        let skip = rest.iter().position(|&b| b != b' ')?;
        let start = self.pos + skip;
        let len = self
            .line
            .get(start..)
            .and_then(|r| memchr::memchr(b' ', r))
            .unwrap_or(self.line.len() - start);
        self.pos = start + len;
        Some(start..start + len)
    }
}

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::*;

    // Names round-trip and lookup is case-sensitive, as in memcached.
    #[test]
    fn command_names() {
        for c in Command::ALL {
            assert_eq!(Command::from_name(c.name().as_bytes()), Some(c));
        }
        assert_eq!(Command::from_name(b"GET"), None);
        assert_eq!(Command::from_name(b"GAT"), None);
    }

    // Exactly the six data-block commands are storage, and only get/gets
    // retrieval.
    #[test]
    fn command_classes() {
        let storage: Vec<_> = Command::ALL.iter().filter(|c| c.is_storage()).collect();
        assert_eq!(storage.len(), 6);
        assert!(Command::Cas.is_storage());
        assert!(!Command::Incr.is_storage());
        let retrieval: Vec<_> = Command::ALL.iter().filter(|c| c.is_retrieval()).collect();
        assert_eq!(
            retrieval,
            [&Command::Get, &Command::Gets, &Command::Gat, &Command::Gats]
        );
        assert_eq!(Command::ALL.iter().filter(|c| c.is_meta()).count(), 6);
    }

    // Repeated and leading/trailing blanks do not make empty tokens.
    #[test]
    fn tokens_skip_repeated_blanks() {
        let line = b"  get  a   b ";
        let words: Vec<&[u8]> = Tokens::new(line).map(|r| &line[r]).collect();
        assert_eq!(words, [&b"get"[..], b"a", b"b"]);
        assert_eq!(Tokens::new(b"   ").count(), 0);
    }

    // Keys: 250 bytes fine, 251 not, no control characters or blanks.
    #[test]
    fn key_rules() {
        assert_eq!(key_problem(&[b'k'; 250]), None);
        assert!(key_problem(&[b'k'; 251]).is_some());
        assert!(key_problem(b"").is_some());
        assert!(key_problem(b"a\x01b").is_some());
        assert!(key_problem(b"a\x7f").is_some());
        assert!(key_problem(b"a b").is_some());
        assert_eq!(key_problem("ключ".as_bytes()), None);
    }

    // The framing-error line is one CLIENT_ERROR line even if the text had
    // line breaks.
    #[test]
    fn protocol_error_line() {
        let e = ProtoError::protocol("bad\r\nthing");
        assert_eq!(
            protocol_error_reply(&e),
            Bytes::from_static(b"CLIENT_ERROR Protocol error: bad  thing\r\n")
        );
    }
}
