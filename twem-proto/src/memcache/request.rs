//! Client requests: the [`Request`] type, its constructors, the errors a
//! command line can have, and [`RequestCodec`], the server-side codec.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::{key_problem, word, Command, Limits, Reply, Tokens};
use crate::encode::encoders;
use crate::wire::{len_u64, parse_i64, parse_u32, parse_u64, put_i64, put_u64, trim_cr};
use crate::ProtoError;

/// memcached refuses a `<bytes>` above `INT_MAX - 2` (it adds the `\r\n`); so
/// do we, which also keeps a skip from running for ever.
const MAX_DATA_LEN: u64 = i32::MAX as u64 - 2;

/// Most words a meta command line may have, command included: memcached
/// 1.6 refuses more (`MFLAG_MAX_OPT_LENGTH`), and for `ms` it does so
/// without swallowing the data block, which it then runs as commands. The
/// proxy refuses such a line itself, skipping the block.
const MAX_META_WORDS: usize = 19;

/// The first byte of every memcached binary-protocol request; no text
/// command starts with it.
const BINARY_MAGIC: u8 = 0x80;

/// The keys of a request; one key is not boxed in a `Vec`, so the common
/// single-key request allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keys {
    None,
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Keys {
    fn from_vec(mut v: Vec<Bytes>) -> Keys {
        match v.len() {
            0 => Keys::None,
            1 => v.pop().map_or(Keys::None, Keys::One),
            _ => Keys::Many(v),
        }
    }

    fn as_slice(&self) -> &[Bytes] {
        match self {
            Keys::None => &[],
            Keys::One(k) => std::slice::from_ref(k),
            Keys::Many(v) => v,
        }
    }
}

/// Writes the constructors of the storage commands without a cas unique:
/// they differ only in their name and command.
macro_rules! storage_constructors {
    ($($(#[$doc:meta])* $name:ident => $command:ident;)+) => {$(
        $(#[$doc])*
        pub fn $name(
            key: impl AsRef<[u8]>,
            flags: u32,
            exptime: i64,
            value: impl AsRef<[u8]>,
            noreply: bool,
        ) -> Result<Request, RequestError> {
            let (k, v) = (key.as_ref(), value.as_ref());
            Self::storage(Command::$command, k, flags, exptime, v, None, noreply)
        }
    )+};
}

/// One memcached request, zero copy: its keys and value are slices of
/// [`Request::wire`], the exact bytes received (or built by a constructor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    command: Command,
    keys: Keys,
    wire: Bytes,
    value: Option<Bytes>,
    flags: u32,
    exptime: i64,
    /// The cas unique of `cas`, the delta of `incr`/`decr`, else 0.
    number: u64,
    noreply: bool,
    /// A meta command with the `q` flag: the server may send no reply.
    quiet: bool,
}

impl Request {
    /// The command.
    pub fn command(&self) -> Command {
        self.command
    }

    /// The keys, in request order: several for `get`/`gets`, one for the
    /// other keyed commands, none for `version` and `quit`.
    pub fn keys(&self) -> &[Bytes] {
        self.keys.as_slice()
    }

    /// The first key, the one the request is routed by. For a meta command
    /// with the `b` flag this is the decoded key (the server hashes nothing,
    /// but the proxy must place the item by the key it names), not a slice
    /// of the wire.
    pub fn key(&self) -> Option<&Bytes> {
        self.keys().first()
    }

    /// Whether this is a meta command in quiet mode (`q` flag): the server
    /// stays silent for the outcomes its rules call uninteresting (`EN` for
    /// `mg`, `HD` for `ms`/`md`, ...), so whether a reply comes is known
    /// only to the server.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// The bytes to send a server for a quiet meta request: the request then
    /// `mn\r\n`. The server answers `mn` with `MN` after any reply to the
    /// request, so the reply (or its absence) is delimited by the server
    /// itself, whatever its version's quiet-mode rules are, and the backend
    /// connection never waits for a reply that will not come.
    pub fn wire_with_noop(&self) -> Bytes {
        let mut w = BytesMut::with_capacity(self.wire.len() + 4);
        w.put_slice(&self.wire);
        w.put_slice(b"mn\r\n");
        w.freeze()
    }

    /// Whether the client asked for no reply (`noreply` as last argument).
    pub fn noreply(&self) -> bool {
        self.noreply
    }

    /// The exact bytes of the request: command line, and for storage commands
    /// the data block with its `\r\n`.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The request's bytes, without a reference-count bump.
    pub fn into_wire(self) -> Bytes {
        self.wire
    }

    /// The data block of a storage command, without its `\r\n`.
    pub fn value(&self) -> Option<&Bytes> {
        self.value.as_ref()
    }

    /// The flags of a storage command.
    pub fn flags(&self) -> Option<u32> {
        self.command.is_storage().then_some(self.flags)
    }

    /// The exptime of a storage command, `touch`, `gat`/`gats`, or the
    /// delay of `flush_all`.
    pub fn exptime(&self) -> Option<i64> {
        (self.command.is_storage()
            || matches!(
                self.command,
                Command::Touch | Command::Gat | Command::Gats | Command::FlushAll
            ))
        .then_some(self.exptime)
    }

    /// The cas unique of a `cas` command.
    pub fn cas_unique(&self) -> Option<u64> {
        (self.command == Command::Cas).then_some(self.number)
    }

    /// The delta of `incr`/`decr`.
    pub fn delta(&self) -> Option<u64> {
        matches!(self.command, Command::Incr | Command::Decr).then_some(self.number)
    }

    /// Whether the client expects a reply: not for `noreply` nor `quit`
    /// (a quiet meta request may get one: see [`Request::quiet`]).
    pub fn expects_reply(&self) -> bool {
        !self.noreply && self.command != Command::Quit
    }

    /// `get <key>*`.
    pub fn get<K: AsRef<[u8]>>(keys: &[K]) -> Result<Request, RequestError> {
        Self::retrieval(Command::Get, keys)
    }

    /// `gets <key>*`: values with their cas unique.
    pub fn gets<K: AsRef<[u8]>>(keys: &[K]) -> Result<Request, RequestError> {
        Self::retrieval(Command::Gets, keys)
    }

    /// `gat <exptime> <key>*`: the values, their exptime set to `exptime`.
    pub fn gat<K: AsRef<[u8]>>(exptime: i64, keys: &[K]) -> Result<Request, RequestError> {
        Self::retrieval_at(Command::Gat, exptime, keys)
    }

    /// `gats <exptime> <key>*`: as `gat`, with cas uniques.
    pub fn gats<K: AsRef<[u8]>>(exptime: i64, keys: &[K]) -> Result<Request, RequestError> {
        Self::retrieval_at(Command::Gats, exptime, keys)
    }

    /// `stats`: the general statistics.
    pub fn stats() -> Request {
        Self::bare(Command::Stats, b"stats\r\n")
    }

    /// `mn`: the meta no-op, answered `MN`.
    pub fn meta_noop() -> Request {
        Self::bare(Command::MetaNoop, b"mn\r\n")
    }

    storage_constructors! {
        /// `set <key> <flags> <exptime> <bytes> [noreply]` with its data block.
        set => Set;
        /// `add`: store only if the key is absent.
        add => Add;
        /// `replace`: store only if the key is present.
        replace => Replace;
        /// `append`: add the data after the existing value (flags and exptime are
        /// ignored by memcached).
        append => Append;
        /// `prepend`: add the data before the existing value.
        prepend => Prepend;
    }

    /// `cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]`: store
    /// only if the item still has `cas_unique`.
    pub fn cas(
        key: impl AsRef<[u8]>,
        flags: u32,
        exptime: i64,
        value: impl AsRef<[u8]>,
        cas_unique: u64,
        noreply: bool,
    ) -> Result<Request, RequestError> {
        let (k, v) = (key.as_ref(), value.as_ref());
        Self::storage(
            Command::Cas,
            k,
            flags,
            exptime,
            v,
            Some(cas_unique),
            noreply,
        )
    }

    /// `incr <key> <delta> [noreply]`.
    pub fn incr(key: impl AsRef<[u8]>, delta: u64, noreply: bool) -> Result<Request, RequestError> {
        Self::arith(Command::Incr, key.as_ref(), delta, noreply)
    }

    /// `decr <key> <delta> [noreply]`.
    pub fn decr(key: impl AsRef<[u8]>, delta: u64, noreply: bool) -> Result<Request, RequestError> {
        Self::arith(Command::Decr, key.as_ref(), delta, noreply)
    }

    /// `touch <key> <exptime> [noreply]`.
    pub fn touch(
        key: impl AsRef<[u8]>,
        exptime: i64,
        noreply: bool,
    ) -> Result<Request, RequestError> {
        let key = key.as_ref();
        check_key(Command::Touch, key, noreply)?;
        let mut w = line_start(Command::Touch, key.len() + 24);
        let k = put_range(&mut w, key);
        w.put_u8(b' ');
        put_i64(&mut w, exptime);
        Ok(finish(w, Command::Touch, k, noreply, |r| {
            r.exptime = exptime
        }))
    }

    /// `delete <key> [noreply]`.
    pub fn delete(key: impl AsRef<[u8]>, noreply: bool) -> Result<Request, RequestError> {
        let key = key.as_ref();
        check_key(Command::Delete, key, noreply)?;
        let mut w = line_start(Command::Delete, key.len() + 10);
        let k = put_range(&mut w, key);
        Ok(finish(w, Command::Delete, k, noreply, |_| ()))
    }

    /// `version`.
    pub fn version() -> Request {
        Self::bare(Command::Version, b"version\r\n")
    }

    /// `quit`: the server closes the connection without a reply.
    pub fn quit() -> Request {
        Self::bare(Command::Quit, b"quit\r\n")
    }

    fn bare(command: Command, wire: &'static [u8]) -> Request {
        Self::bare_with(command, Bytes::from_static(wire))
    }

    fn retrieval<K: AsRef<[u8]>>(command: Command, keys: &[K]) -> Result<Request, RequestError> {
        Self::retrieval_at(command, 0, keys)
    }

    fn retrieval_at<K: AsRef<[u8]>>(
        command: Command,
        exptime: i64,
        keys: &[K],
    ) -> Result<Request, RequestError> {
        if keys.is_empty() {
            return Err(RequestError::WrongArity { command });
        }
        for k in keys {
            check_key(command, k.as_ref(), false)?;
        }
        Ok(Self::retrieval_unchecked(command, exptime, keys))
    }

    /// Builds `get`/`gets` (or `gat`/`gats <exptime>`) from keys known to be
    /// valid (those of a decoded request, when splitting it).
    pub(super) fn retrieval_unchecked<K: AsRef<[u8]>>(
        command: Command,
        exptime: i64,
        keys: &[K],
    ) -> Request {
        let len =
            command.name().len() + 24 + keys.iter().map(|k| k.as_ref().len() + 1).sum::<usize>();
        let mut w = BytesMut::with_capacity(len);
        w.put_slice(command.name().as_bytes());
        let touches = matches!(command, Command::Gat | Command::Gats);
        if touches {
            w.put_u8(b' ');
            put_i64(&mut w, exptime);
        }
        let mut ranges = Vec::with_capacity(keys.len());
        for k in keys {
            w.put_u8(b' ');
            ranges.push(put_range(&mut w, k.as_ref()));
        }
        w.put_slice(b"\r\n");
        let wire = w.freeze();
        let keys = Keys::from_vec(ranges.into_iter().map(|r| wire.slice(r)).collect());
        Request {
            keys,
            exptime: if touches { exptime } else { 0 },
            ..Self::bare_with(command, wire)
        }
    }

    fn storage(
        command: Command,
        key: &[u8],
        flags: u32,
        exptime: i64,
        value: &[u8],
        cas: Option<u64>,
        noreply: bool,
    ) -> Result<Request, RequestError> {
        check_key(command, key, noreply)?;
        let mut w = line_start(command, key.len() + value.len() + 80);
        let k = put_range(&mut w, key);
        w.put_u8(b' ');
        put_u64(&mut w, u64::from(flags));
        w.put_u8(b' ');
        put_i64(&mut w, exptime);
        w.put_u8(b' ');
        put_u64(&mut w, len_u64(value.len()));
        if let Some(cas) = cas {
            w.put_u8(b' ');
            put_u64(&mut w, cas);
        }
        if noreply {
            w.put_slice(b" noreply");
        }
        w.put_slice(b"\r\n");
        let v = put_range(&mut w, value);
        w.put_slice(b"\r\n");
        let wire = w.freeze();
        Ok(Request {
            keys: Keys::One(wire.slice(k)),
            value: Some(wire.slice(v)),
            flags,
            exptime,
            number: cas.unwrap_or(0),
            noreply,
            ..Self::bare_with(command, wire)
        })
    }

    fn arith(
        command: Command,
        key: &[u8],
        delta: u64,
        noreply: bool,
    ) -> Result<Request, RequestError> {
        check_key(command, key, noreply)?;
        let mut w = line_start(command, key.len() + 40);
        let k = put_range(&mut w, key);
        w.put_u8(b' ');
        put_u64(&mut w, delta);
        Ok(finish(w, command, k, noreply, |r| r.number = delta))
    }

    fn bare_with(command: Command, wire: Bytes) -> Request {
        Request {
            command,
            keys: Keys::None,
            wire,
            value: None,
            flags: 0,
            exptime: 0,
            number: 0,
            noreply: false,
            quiet: false,
        }
    }
}

fn check_key(command: Command, key: &[u8], noreply: bool) -> Result<(), RequestError> {
    match key_problem(key) {
        None => Ok(()),
        Some(reason) => Err(RequestError::InvalidKey {
            command,
            reason,
            noreply,
        }),
    }
}

/// A buffer holding `<command> `, with room for `extra` more bytes.
fn line_start(command: Command, extra: usize) -> BytesMut {
    let mut w = BytesMut::with_capacity(command.name().len() + 1 + extra);
    w.put_slice(command.name().as_bytes());
    w.put_u8(b' ');
    w
}

/// Appends `bytes` and says where they landed.
fn put_range(w: &mut BytesMut, bytes: &[u8]) -> Range<usize> {
    let start = w.len();
    w.put_slice(bytes);
    start..w.len()
}

/// Ends a single-key line without data block (`[ noreply]\r\n`).
fn finish(
    mut w: BytesMut,
    command: Command,
    key: Range<usize>,
    noreply: bool,
    set: impl FnOnce(&mut Request),
) -> Request {
    if noreply {
        w.put_slice(b" noreply");
    }
    w.put_slice(b"\r\n");
    let wire = w.freeze();
    let mut r = Request {
        keys: Keys::One(wire.slice(key)),
        noreply,
        ..Request::bare_with(command, wire)
    };
    set(&mut r);
    r
}

/// A command line the client got wrong while its extent is known. The codec
/// yields it as an item; the stream goes on unless
/// [`RequestError::closes_connection`] says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The first word is no command we know (or the line is empty).
    #[error("unknown command '{}'", String::from_utf8_lossy(.name))]
    UnknownCommand {
        /// The word the client sent (empty for an empty line).
        name: Bytes,
    },
    /// Too few or too many arguments (or no key for `get`).
    #[error("wrong number of arguments for '{command}'")]
    WrongArity {
        /// The command.
        command: Command,
    },
    /// A key that is empty, over 250 bytes, or holds a blank or control
    /// character.
    #[error("invalid key for '{command}': {reason}")]
    InvalidKey {
        /// The command.
        command: Command,
        /// What is wrong with the key.
        reason: &'static str,
        /// The line ended in `noreply`.
        noreply: bool,
    },
    /// A numeric argument that does not parse or does not fit.
    #[error("invalid {field} argument for '{command}'")]
    InvalidNumber {
        /// The command.
        command: Command,
        /// Which argument: `flags`, `exptime`, `cas unique`, `delta`.
        field: &'static str,
        /// The line ended in `noreply`.
        noreply: bool,
    },
    /// `delete <key> <x>` where `<x>` is neither `0` nor `noreply`.
    #[error("invalid arguments for 'delete': expected `delete <key> [0] [noreply]`")]
    DeleteUsage {
        /// The line ended in `noreply`.
        noreply: bool,
    },
    /// A `get`/`gets` with more keys than [`Limits::max_keys`].
    #[error("{count} keys in one '{command}' exceed the limit of {limit}")]
    TooManyKeys {
        /// The command.
        command: Command,
        /// How many keys the line had.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A data block over [`Limits::max_value_len`]; it is skipped unbuffered.
    #[error("value of {len} bytes for '{command}' exceeds the limit of {limit}")]
    ValueTooLarge {
        /// The command.
        command: Command,
        /// The `<bytes>` the client announced.
        len: u64,
        /// The configured limit.
        limit: usize,
        /// The line ended in `noreply`.
        noreply: bool,
    },
    /// The `<bytes>` bytes of data were not followed by `\r\n`; they have been
    /// consumed, as memcached does.
    #[error("data block of '{command}' is not followed by \\r\\n")]
    BadDataChunk {
        /// The command.
        command: Command,
        /// The line ended in `noreply`.
        noreply: bool,
    },
    /// `stats <sub-command>` (`items`, `slabs`, `settings`, ...): per-server
    /// details the proxy cannot merge into one pool-wide answer.
    #[error("'stats' with a sub-command is not supported by this proxy")]
    StatsSubcommand,
    /// A meta command with the `b` flag whose key is not valid base64 (or
    /// decodes to nothing or to more than 250 bytes). An `ms` data block
    /// has been skipped by its length.
    #[error("base64 key of '{command}' cannot be decoded")]
    BadBase64Key {
        /// The command.
        command: Command,
    },
    /// A meta command line with more than 19 words, which memcached 1.6
    /// refuses (and, for `ms`, without swallowing the data block). An `ms`
    /// data block has been skipped by its length.
    #[error("too many flags for '{command}'")]
    MetaTooManyFlags {
        /// The command.
        command: Command,
    },
    /// An `ms` whose `<datalen>` is missing, not a number or over
    /// 2147483645: its data block cannot be skipped, so the connection must
    /// close before the data is read as commands.
    #[error("data block length of meta command '{name}' is missing or invalid; the stream cannot be resynchronised")]
    MetaUndelimited {
        /// The command (`ms`).
        name: &'static str,
    },
    /// A storage command whose `<bytes>` is missing, not a number, negative
    /// or over 2147483645: the data block cannot be found, so nothing after
    /// this line can be trusted and the connection must close.
    #[error("data block length of '{command}' is missing or invalid; the stream cannot be resynchronised")]
    UndelimitedData {
        /// The command.
        command: Command,
        /// The line ended in `noreply`.
        noreply: bool,
    },
}

impl RequestError {
    /// The line memcached would answer, `\r\n` included.
    pub fn reply(&self) -> Bytes {
        let line: &'static [u8] = match self {
            // Named with its limit: memcached has none, so a client that
            // hits it must be told what to split its multiget to.
            RequestError::TooManyKeys { command, limit, .. } => {
                return Bytes::from(format!(
                    "CLIENT_ERROR too many keys in one {command}: the limit is {limit}\r\n"
                ));
            }
            // One line, as for any command, so the client stays in step.
            // SERVER_ERROR rather than ERROR: the command exists, it is the
            // proxy that cannot answer it (python-memcached's get_stats
            // reads any line not starting with STAT or END as the end).
            RequestError::StatsSubcommand => {
                b"SERVER_ERROR only the general 'stats' is supported by this proxy, not its sub-commands\r\n"
            }
            // memcached 1.6's own words.
            RequestError::BadBase64Key { .. } => b"CLIENT_ERROR error decoding key\r\n",
            RequestError::MetaTooManyFlags {
                command: Command::MetaGet,
            } => b"CLIENT_ERROR options flags are too long\r\n",
            RequestError::MetaTooManyFlags { .. } => b"CLIENT_ERROR options flags too long\r\n",
            RequestError::UnknownCommand { .. } | RequestError::WrongArity { .. } => b"ERROR\r\n",
            RequestError::InvalidNumber { field: "delta", .. } => {
                b"CLIENT_ERROR invalid numeric delta argument\r\n"
            }
            RequestError::InvalidNumber {
                command: Command::Touch | Command::Gat | Command::Gats | Command::FlushAll,
                ..
            } => b"CLIENT_ERROR invalid exptime argument\r\n",
            RequestError::InvalidKey { .. }
            | RequestError::InvalidNumber { .. }
            | RequestError::UndelimitedData { .. }
            | RequestError::MetaUndelimited { .. } => b"CLIENT_ERROR bad command line format\r\n",
            RequestError::DeleteUsage { .. } => {
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
            }
            RequestError::ValueTooLarge { .. } => b"SERVER_ERROR object too large for cache\r\n",
            RequestError::BadDataChunk { .. } => b"CLIENT_ERROR bad data chunk\r\n",
        };
        Bytes::from_static(line)
    }

    /// Whether memcached would stay silent: the line ended in `noreply` (a
    /// wrong argument count is answered regardless, as memcached does).
    pub fn noreply(&self) -> bool {
        match self {
            RequestError::UnknownCommand { .. }
            | RequestError::WrongArity { .. }
            | RequestError::TooManyKeys { .. }
            | RequestError::StatsSubcommand
            | RequestError::BadBase64Key { .. }
            | RequestError::MetaTooManyFlags { .. }
            | RequestError::MetaUndelimited { .. } => false,
            RequestError::InvalidKey { noreply, .. }
            | RequestError::InvalidNumber { noreply, .. }
            | RequestError::DeleteUsage { noreply }
            | RequestError::ValueTooLarge { noreply, .. }
            | RequestError::BadDataChunk { noreply, .. }
            | RequestError::UndelimitedData { noreply, .. } => *noreply,
        }
    }

    /// Whether the connection must be closed after the reply because the
    /// stream cannot be resynchronised.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            RequestError::UndelimitedData { .. } | RequestError::MetaUndelimited { .. }
        )
    }

    /// The command the line named, if it was one we know.
    pub fn command(&self) -> Option<Command> {
        match self {
            RequestError::UnknownCommand { .. } => None,
            RequestError::MetaUndelimited { .. } => Some(Command::MetaSet),
            RequestError::StatsSubcommand => Some(Command::Stats),
            RequestError::DeleteUsage { .. } => Some(Command::Delete),
            RequestError::BadBase64Key { command } | RequestError::MetaTooManyFlags { command } => {
                Some(*command)
            }
            RequestError::WrongArity { command }
            | RequestError::InvalidKey { command, .. }
            | RequestError::InvalidNumber { command, .. }
            | RequestError::TooManyKeys { command, .. }
            | RequestError::ValueTooLarge { command, .. }
            | RequestError::BadDataChunk { command, .. }
            | RequestError::UndelimitedData { command, .. } => Some(*command),
        }
    }
}

/// A storage command line, parsed, whose data block has not all arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StorageHeader {
    command: Command,
    /// Command line length, terminator included.
    line_len: usize,
    key: Range<usize>,
    flags: u32,
    exptime: i64,
    cas: u64,
    data_len: usize,
    noreply: bool,
    /// `ms` only: the `q` flag.
    quiet: bool,
    /// `ms` only: the key decoded from base64 (`b` flag), to route by.
    decoded: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for a command line.
    Line,
    /// Waiting for the data block of a storage command.
    Data(StorageHeader),
    /// Discarding the data block of a refused storage command.
    Skip(u64),
    /// An unrecoverable error was yielded; nothing more is decoded.
    Closed,
}

/// What one complete command line amounts to.
#[derive(Debug)]
enum Parsed {
    /// A request without data block; `keys` are ranges of the line.
    Simple {
        command: Command,
        keys: Vec<Range<usize>>,
        exptime: i64,
        number: u64,
        noreply: bool,
        /// A meta command's `q` flag.
        quiet: bool,
        /// A meta command's key decoded from base64, routed by instead of
        /// `keys`.
        decoded: Option<Bytes>,
    },
    /// A storage command; its data block follows.
    Storage(StorageHeader),
    /// A refused line; `skip` bytes of data block follow it and are dropped.
    Refused { err: RequestError, skip: u64 },
    /// Another protocol (HTTP); the connection must close.
    Foreign(&'static str),
}

/// The server-side codec: decodes client [`Request`]s, encodes replies.
///
/// Resumable: a partial command line is searched for its end only in the
/// bytes that arrived since the last call, a storage command's header is
/// parsed once, and a refused data block is dropped as it streams in.
#[derive(Debug, Clone)]
pub struct RequestCodec {
    limits: Limits,
    /// Bytes at the front of the buffer already searched for `\n`.
    scanned: usize,
    state: State,
}

impl Default for RequestCodec {
    fn default() -> Self {
        RequestCodec::new(Limits::default())
    }
}

impl RequestCodec {
    /// A codec enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestCodec {
            limits,
            scanned: 0,
            state: State::Line,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether a `get`/`gets` starts in the first bytes of the line; looked at
    /// through the same window whether or not the line is complete, so the
    /// verdict does not depend on how the bytes were chunked.
    fn line_bound(&self, buf: &[u8]) -> usize {
        let window = buf
            .get(..buf.len().min(self.limits.max_line_len + 1))
            .unwrap_or(buf);
        let start = window
            .iter()
            .position(|&b| b != b' ')
            .unwrap_or(window.len());
        let rest = window.get(start..).unwrap_or_default();
        let multi: [&[u8]; 4] = [b"get ", b"gets ", b"gat ", b"gats "];
        if multi.iter().any(|m| rest.starts_with(m)) {
            self.limits.max_get_line_len()
        } else {
            self.limits.max_line_len
        }
    }

    fn parse_line(&self, line: &[u8], line_len: usize) -> Parsed {
        let mut tokens = Tokens::new(line);
        let Some(first) = tokens.next() else {
            return refused(RequestError::UnknownCommand { name: Bytes::new() });
        };
        let name = word(line, first);
        let Some(command) = Command::from_name(name) else {
            // memcached 1.6 closes on an unknown command whose last word
            // starts with `HTTP/`; redis-server's POST/Host: rule is added so
            // that a request's headers cannot get through either.
            let http_version = tokens
                .last()
                .is_some_and(|t| word(line, t).starts_with(b"HTTP/"));
            if http_version {
                return Parsed::Foreign("HTTP request line");
            }
            if let Some(seen) = crate::sniff::http_line(line) {
                return Parsed::Foreign(seen);
            }
            let name = Bytes::copy_from_slice(name);
            return refused(RequestError::UnknownCommand { name });
        };
        if command.is_retrieval() {
            return self.parse_retrieval(command, line, tokens);
        }
        if command.is_meta() {
            return self.parse_meta(command, line, line_len, tokens);
        }
        // Every other command has at most 6 arguments; one more tells us
        // there were too many.
        let mut args: [Range<usize>; 7] = Default::default();
        let mut n = 0;
        for (slot, t) in args.iter_mut().zip(tokens) {
            *slot = t;
            n += 1;
        }
        let args = args.get(..n).unwrap_or_default();
        let arg = |i: usize| args.get(i).map(|r| word(line, r.clone()));
        let noreply = arg(n.wrapping_sub(1)) == Some(b"noreply");
        if command.is_storage() {
            return self.parse_storage(command, line, line_len, args, noreply);
        }
        let simple = |keys: Vec<Range<usize>>, exptime, number| Parsed::Simple {
            command,
            keys,
            exptime,
            number,
            noreply,
            quiet: false,
            decoded: None,
        };
        match command {
            // memcached answers `version noreply` anyway: no noreply here.
            Command::Version | Command::Quit => simple(Vec::new(), 0, 0).with_noreply(false),
            Command::Stats if n > 0 => refused(RequestError::StatsSubcommand),
            Command::Stats => simple(Vec::new(), 0, 0),
            // flush_all [delay] [noreply]
            Command::FlushAll => {
                let delay = if noreply { n - 1 } else { n };
                if delay > 1 {
                    return refused(RequestError::WrongArity { command });
                }
                match arg(0).filter(|_| delay == 1).map(parse_i64) {
                    None => simple(Vec::new(), 0, 0),
                    Some(Some(d)) => simple(Vec::new(), d, 0),
                    Some(None) => refused(bad_number(command, "exptime", noreply)),
                }
            }
            // verbosity <level> [noreply]: the proxy's own log level is set
            // by its command line, so any level is simply acknowledged.
            Command::Verbosity if n == 0 || n > 2 => refused(RequestError::WrongArity { command }),
            Command::Verbosity => simple(Vec::new(), 0, 0),
            Command::Incr | Command::Decr | Command::Touch => {
                let (Some(key), Some(value), true) = (args.first(), arg(1), n <= 3) else {
                    return refused(RequestError::WrongArity { command });
                };
                if let Some(e) = bad_key(command, word(line, key.clone()), noreply) {
                    return refused(e);
                }
                if command == Command::Touch {
                    match parse_i64(value) {
                        Some(exptime) => simple(vec![key.clone()], exptime, 0),
                        None => refused(bad_number(command, "exptime", noreply)),
                    }
                } else {
                    match parse_u64(value) {
                        Some(delta) => simple(vec![key.clone()], 0, delta),
                        None => refused(bad_number(command, "delta", noreply)),
                    }
                }
            }
            _ => {
                // delete <key> [0] [noreply]: memcached accepts a legacy hold
                // time only if it is 0.
                let (Some(key), true) = (args.first(), n <= 3) else {
                    return refused(RequestError::WrongArity { command });
                };
                if let Some(e) = bad_key(command, word(line, key.clone()), noreply) {
                    return refused(e);
                }
                let zero = arg(1) == Some(b"0");
                let valid = n == 1 || (n == 2 && (zero || noreply)) || (n == 3 && zero && noreply);
                if valid {
                    simple(vec![key.clone()], 0, 0)
                } else {
                    refused(RequestError::DeleteUsage { noreply })
                }
            }
        }
    }

    fn parse_retrieval(&self, command: Command, line: &[u8], mut tokens: Tokens<'_>) -> Parsed {
        let mut exptime = 0;
        if matches!(command, Command::Gat | Command::Gats) {
            let Some(t) = tokens.next() else {
                return refused(RequestError::WrongArity { command });
            };
            match parse_i64(word(line, t)) {
                Some(e) => exptime = e,
                None => return refused(bad_number(command, "exptime", false)),
            }
        }
        let mut keys = Vec::new();
        let mut count = 0usize;
        let mut first_bad = None;
        for t in tokens {
            count += 1;
            if count > self.limits.max_keys {
                continue;
            }
            if first_bad.is_none() {
                first_bad = bad_key(command, word(line, t.clone()), false);
            }
            keys.push(t);
        }
        if count == 0 {
            return refused(RequestError::WrongArity { command });
        }
        if count > self.limits.max_keys {
            return refused(RequestError::TooManyKeys {
                command,
                count,
                limit: self.limits.max_keys,
            });
        }
        if let Some(e) = first_bad {
            return refused(e);
        }
        Parsed::Simple {
            command,
            keys,
            exptime,
            number: 0,
            noreply: false,
            quiet: false,
            decoded: None,
        }
    }

    /// `mg|md|ma|me <key> <flag>*`, `ms <key> <datalen> <flag>*`, `mn`.
    /// Flags are the server's business and pass through untouched; the
    /// proxy reads only `b` (the key is base64: decoded to place the item)
    /// and `q` (quiet: the server may not answer). An `ms` data block is
    /// taken by its length, or skipped by it when the line is refused; a
    /// length that cannot be read closes the connection, since memcached
    /// would then run the data as commands (how a value smuggles a
    /// `delete`).
    fn parse_meta(
        &self,
        command: Command,
        line: &[u8],
        line_len: usize,
        mut tokens: Tokens<'_>,
    ) -> Parsed {
        let mut simple = Parsed::Simple {
            command,
            keys: Vec::new(),
            exptime: 0,
            number: 0,
            noreply: false,
            quiet: false,
            decoded: None,
        };
        if command == Command::MetaNoop {
            return simple;
        }
        let key = tokens.next();
        let data_len = if command == Command::MetaSet {
            let len = tokens
                .next()
                .and_then(|t| parse_u64(word(line, t)))
                .filter(|&n| n <= MAX_DATA_LEN);
            match len {
                Some(n) => Some(n),
                None => return refused(RequestError::MetaUndelimited { name: "ms" }),
            }
        } else {
            None
        };
        let skip = data_len.map_or(0, |n| n + 2);
        let refuse = |err| Parsed::Refused { err, skip };
        let Some(key) = key else {
            return refuse(RequestError::WrongArity { command });
        };
        let (mut base64, mut quiet) = (false, false);
        let mut words = if data_len.is_some() { 3 } else { 2 };
        // memcached reads a flag by its first byte.
        for t in tokens {
            words += 1;
            match word(line, t).first() {
                Some(b'b') => base64 = true,
                Some(b'q') => quiet = true,
                _ => {}
            }
        }
        if words > MAX_META_WORDS {
            return refuse(RequestError::MetaTooManyFlags { command });
        }
        if let Some(e) = bad_key(command, word(line, key.clone()), false) {
            return refuse(e);
        }
        let decoded = if base64 {
            match decode_base64(word(line, key.clone())) {
                Some(k) if !k.is_empty() && k.len() <= super::MAX_KEY_LEN => Some(Bytes::from(k)),
                _ => return refuse(RequestError::BadBase64Key { command }),
            }
        } else {
            None
        };
        let Some(data_len) = data_len else {
            if let Parsed::Simple {
                keys,
                quiet: q,
                decoded: d,
                ..
            } = &mut simple
            {
                keys.push(key);
                *q = quiet;
                *d = decoded;
            }
            return simple;
        };
        let data_len = match self.block_len(command, data_len, false) {
            Ok(n) => n,
            Err(e) => return refuse(e),
        };
        Parsed::Storage(StorageHeader {
            command,
            line_len,
            key,
            flags: 0,
            exptime: 0,
            cas: 0,
            data_len,
            noreply: false,
            quiet,
            decoded,
        })
    }

    fn parse_storage(
        &self,
        command: Command,
        line: &[u8],
        line_len: usize,
        args: &[Range<usize>],
        noreply: bool,
    ) -> Parsed {
        let arg = |i: usize| args.get(i).map(|r| word(line, r.clone()));
        // Without a valid <bytes> the data block cannot be found: fatal.
        let Some(data_len) = arg(3).and_then(parse_u64).filter(|&n| n <= MAX_DATA_LEN) else {
            return refused(RequestError::UndelimitedData { command, noreply });
        };
        let base = if command == Command::Cas { 5 } else { 4 };
        let skip = data_len + 2;
        let refuse = |err| Parsed::Refused { err, skip };
        let (Some(key), true) = (args.first(), (base..=base + 1).contains(&args.len())) else {
            return refuse(RequestError::WrongArity { command });
        };
        if let Some(e) = bad_key(command, word(line, key.clone()), noreply) {
            return refuse(e);
        }
        let Some(flags) = arg(1).and_then(parse_u32) else {
            return refuse(bad_number(command, "flags", noreply));
        };
        let Some(exptime) = arg(2).and_then(parse_i64) else {
            return refuse(bad_number(command, "exptime", noreply));
        };
        let cas = if command == Command::Cas {
            match arg(4).and_then(parse_u64) {
                Some(c) => c,
                None => return refuse(bad_number(command, "cas unique", noreply)),
            }
        } else {
            0
        };
        let data_len = match self.block_len(command, data_len, noreply) {
            Ok(n) => n,
            Err(e) => return refuse(e),
        };
        Parsed::Storage(StorageHeader {
            command,
            line_len,
            key: key.clone(),
            flags,
            exptime,
            cas,
            data_len,
            noreply,
            quiet: false,
            decoded: None,
        })
    }

    /// The data block length `len` a storage command announced, as this
    /// codec buffers it; past `max_value_len`, the refusal memcached gives
    /// (`SERVER_ERROR object too large for cache`), its block skipped.
    fn block_len(&self, command: Command, len: u64, noreply: bool) -> Result<usize, RequestError> {
        let limit = self.limits.max_value_len;
        usize::try_from(len)
            .ok()
            .filter(|&n| n <= limit)
            .ok_or(RequestError::ValueTooLarge {
                command,
                len,
                limit,
                noreply,
            })
    }

    /// Finishes a storage command once its whole data block is buffered.
    fn take_storage(h: StorageHeader, src: &mut BytesMut) -> Option<Result<Request, RequestError>> {
        let total = h.line_len + h.data_len + 2;
        if src.len() < total {
            src.reserve(total - src.len());
            return None;
        }
        let wire = src.split_to(total).freeze();
        if !wire.ends_with(b"\r\n") {
            return Some(Err(RequestError::BadDataChunk {
                command: h.command,
                noreply: h.noreply,
            }));
        }
        Some(Ok(Request {
            command: h.command,
            keys: Keys::One(h.decoded.unwrap_or_else(|| wire.slice(h.key))),
            value: Some(wire.slice(h.line_len..h.line_len + h.data_len)),
            wire,
            flags: h.flags,
            exptime: h.exptime,
            number: h.cas,
            noreply: h.noreply,
            quiet: h.quiet,
        }))
    }
}

/// Standard base64 (RFC 4648, padded), as memcached decodes a `b` key;
/// `None` for anything else.
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    if text.is_empty() || text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let quads = text.chunks_exact(4);
    let last = quads.len() - 1;
    for (i, quad) in quads.enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i != last) {
            return None;
        }
        let mut n = 0u32;
        for &c in quad.iter().take(4 - pad) {
            n = (n << 6) | sextet(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend(bytes.iter().skip(1).take(3 - pad));
    }
    Some(out)
}

impl Parsed {
    fn with_noreply(mut self, value: bool) -> Parsed {
        if let Parsed::Simple { noreply, .. } = &mut self {
            *noreply = value;
        }
        self
    }
}

fn refused(err: RequestError) -> Parsed {
    Parsed::Refused { err, skip: 0 }
}

fn bad_key(command: Command, key: &[u8], noreply: bool) -> Option<RequestError> {
    check_key(command, key, noreply).err()
}

fn bad_number(command: Command, field: &'static str, noreply: bool) -> RequestError {
    RequestError::InvalidNumber {
        command,
        field,
        noreply,
    }
}

impl Decoder for RequestCodec {
    type Item = Result<Request, RequestError>;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, ProtoError> {
        loop {
            match std::mem::replace(&mut self.state, State::Line) {
                State::Closed => {
                    self.state = State::Closed;
                    src.clear();
                    return Err(ProtoError::protocol(
                        "input after a storage command whose data block could not be delimited",
                    ));
                }
                State::Skip(left) => {
                    let n = usize::try_from(left).map_or(src.len(), |l| l.min(src.len()));
                    src.advance(n);
                    let left = left - len_u64(n);
                    if left > 0 {
                        self.state = State::Skip(left);
                        return Ok(None);
                    }
                }
                State::Data(h) => {
                    return match Self::take_storage(h.clone(), src) {
                        Some(item) => Ok(Some(item)),
                        None => {
                            self.state = State::Data(h);
                            Ok(None)
                        }
                    };
                }
                State::Line => {
                    // Checked before the line is complete: a binary request
                    // need not hold a newline, and its value must never be
                    // read as text commands.
                    if src.first() == Some(&BINARY_MAGIC) {
                        return Err(ProtoError::ForeignProtocol {
                            seen: "memcached binary protocol request (magic byte 0x80)",
                        });
                    }
                    let from = self.scanned.min(src.len());
                    let Some(nl) = src
                        .get(from..)
                        .and_then(|rest| memchr::memchr(b'\n', rest))
                        .map(|i| from + i)
                    else {
                        self.scanned = src.len();
                        let bound = self.line_bound(src);
                        // +1: the '\r' of a line exactly at the limit may
                        // arrive before its '\n'.
                        if src.len() > bound + 1 {
                            return Err(too_long(src.len(), bound));
                        }
                        return Ok(None);
                    };
                    self.scanned = 0;
                    let line = trim_cr(src.get(..nl).unwrap_or_default());
                    let end = line.len();
                    let bound = self.line_bound(line);
                    if end > bound {
                        return Err(too_long(end, bound));
                    }
                    let line_len = nl + 1;
                    match self.parse_line(line, line_len) {
                        Parsed::Simple {
                            command,
                            keys,
                            exptime,
                            number,
                            noreply,
                            quiet,
                            decoded,
                        } => {
                            let wire = src.split_to(line_len).freeze();
                            let keys = match decoded {
                                Some(k) => Keys::One(k),
                                None => Keys::from_vec(
                                    keys.into_iter().map(|r| wire.slice(r)).collect(),
                                ),
                            };
                            return Ok(Some(Ok(Request {
                                command,
                                keys,
                                wire,
                                value: None,
                                flags: 0,
                                exptime,
                                number,
                                noreply,
                                quiet,
                            })));
                        }
                        Parsed::Storage(h) => {
                            self.state = State::Data(h);
                        }
                        Parsed::Foreign(seen) => {
                            return Err(ProtoError::ForeignProtocol { seen });
                        }
                        Parsed::Refused { err, skip } => {
                            src.advance(line_len);
                            if err.closes_connection() {
                                self.state = State::Closed;
                            } else if skip > 0 {
                                self.state = State::Skip(skip);
                            }
                            return Ok(Some(Err(err)));
                        }
                    }
                }
            }
        }
    }
}

fn too_long(len: usize, limit: usize) -> ProtoError {
    ProtoError::too_large("command line", len, limit)
}

encoders!(RequestCodec: Bytes, Reply);

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::foreign_seen as foreign;

    /// Decodes everything `input` holds, as one buffer.
    fn decode_all(input: &[u8]) -> Vec<Result<Request, RequestError>> {
        decode_with(RequestCodec::default(), input).0
    }

    /// Items decoded and the framing error that stopped decoding, if any.
    fn decode_with(
        mut codec: RequestCodec,
        input: &[u8],
    ) -> (Vec<Result<Request, RequestError>>, Option<ProtoError>) {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    /// What each decoded item comes to: a request's command name, or the
    /// error line a client is sent, as text.
    fn outcomes(items: &[Result<Request, RequestError>]) -> Vec<String> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        items
            .iter()
            .map(|i| match i {
                Ok(r) => r.command().name().to_string(),
                Err(e) => text(&e.reply()),
            })
            .collect()
    }

    fn one(input: &[u8]) -> Result<Request, RequestError> {
        let mut items = decode_all(input);
        assert_eq!(items.len(), 1, "{items:?}");
        items.remove(0)
    }

    fn err_reply(input: &[u8]) -> Bytes {
        one(input).unwrap_err().reply()
    }

    // get with one key: the key is a slice of the wire, wire is the line.
    #[test]
    fn get_one_key() {
        let r = one(b"get foo\r\n").unwrap();
        assert_eq!(r.command(), Command::Get);
        assert_eq!(r.keys(), [Bytes::from_static(b"foo")]);
        assert_eq!(r.wire(), &Bytes::from_static(b"get foo\r\n"));
        assert!(r.expects_reply());
    }

    // Multi-key gets keeps key order and duplicates.
    #[test]
    fn gets_many_keys() {
        let r = one(b"gets a b a\r\n").unwrap();
        assert_eq!(r.command(), Command::Gets);
        let keys: Vec<&[u8]> = r.keys().iter().map(|k| &k[..]).collect();
        assert_eq!(keys, [&b"a"[..], b"b", b"a"]);
    }

    // Bare \n ends a line and repeated blanks are ignored, as in memcached.
    #[test]
    fn lenient_line_format() {
        let r = one(b"  get  a   b \n").unwrap();
        assert_eq!(r.keys().len(), 2);
        assert_eq!(r.wire().len(), 14);
    }

    // set: flags, exptime, value; wire includes the data block.
    #[test]
    fn set_with_value() {
        let r = one(b"set k 5 -1 3\r\nabc\r\n").unwrap();
        assert_eq!(r.command(), Command::Set);
        assert_eq!(r.key().unwrap(), &Bytes::from_static(b"k"));
        assert_eq!(r.flags(), Some(5));
        assert_eq!(r.exptime(), Some(-1));
        assert_eq!(r.value().unwrap(), &Bytes::from_static(b"abc"));
        assert_eq!(r.wire().len(), 19);
        assert!(!r.noreply());
        assert_eq!(r.cas_unique(), None);
    }

    // add/replace/append/prepend parse like set.
    #[test]
    fn other_storage_commands() {
        for c in [
            Command::Add,
            Command::Replace,
            Command::Append,
            Command::Prepend,
        ] {
            let line = format!("{c} k 0 0 1\r\nx\r\n");
            let r = one(line.as_bytes()).unwrap();
            assert_eq!(r.command(), c);
            assert_eq!(r.value().unwrap(), &Bytes::from_static(b"x"));
        }
    }

    // An empty value is fine: data block is just \r\n.
    #[test]
    fn empty_value() {
        let r = one(b"set k 0 0 0\r\n\r\n").unwrap();
        assert_eq!(r.value().unwrap().len(), 0);
    }

    // noreply on a storage command.
    #[test]
    fn set_noreply() {
        let r = one(b"set k 0 0 1 noreply\r\nx\r\n").unwrap();
        assert!(r.noreply());
        assert!(!r.expects_reply());
    }

    // A fifth argument other than noreply is accepted and ignored (memcached
    // answers STORED).
    #[test]
    fn set_junk_fifth_argument() {
        let r = one(b"set k 0 0 1 junk\r\nx\r\n").unwrap();
        assert!(!r.noreply());
    }

    // cas carries its unique.
    #[test]
    fn cas_unique() {
        let r = one(b"cas k 1 2 1 99 noreply\r\nx\r\n").unwrap();
        assert_eq!(r.command(), Command::Cas);
        assert_eq!(r.cas_unique(), Some(99));
        assert!(r.noreply());
    }

    // cas without its unique: wrong arity, data block skipped.
    #[test]
    fn cas_missing_unique() {
        let items = decode_all(b"cas k 0 0 1\r\nz\r\nversion\r\n");
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0],
            Err(RequestError::WrongArity {
                command: Command::Cas
            })
        );
        assert_eq!(items[1].as_ref().unwrap().command(), Command::Version);
    }

    // incr/decr carry their delta; a u64::MAX delta fits.
    #[test]
    fn incr_decr() {
        let r = one(b"incr n 18446744073709551615\r\n").unwrap();
        assert_eq!(r.delta(), Some(u64::MAX));
        let r = one(b"decr n 2 noreply\r\n").unwrap();
        assert_eq!(
            (r.command(), r.delta(), r.noreply()),
            (Command::Decr, Some(2), true)
        );
    }

    // A bad delta gets memcached's own words.
    #[test]
    fn incr_bad_delta() {
        assert_eq!(
            err_reply(b"incr n -1\r\n"),
            Bytes::from_static(b"CLIENT_ERROR invalid numeric delta argument\r\n")
        );
        assert!(one(b"incr n x noreply\r\n").unwrap_err().noreply());
    }

    // touch with exptime, and with a bad one.
    #[test]
    fn touch() {
        let r = one(b"touch k 10\r\n").unwrap();
        assert_eq!((r.command(), r.exptime()), (Command::Touch, Some(10)));
        assert_eq!(
            err_reply(b"touch k x\r\n"),
            Bytes::from_static(b"CLIENT_ERROR invalid exptime argument\r\n")
        );
    }

    // delete forms memcached accepts, and one it refuses.
    #[test]
    fn delete_forms() {
        for ok in [
            &b"delete k\r\n"[..],
            b"delete k 0\r\n",
            b"delete k noreply\r\n",
            b"delete k 0 noreply\r\n",
        ] {
            assert_eq!(one(ok).unwrap().command(), Command::Delete);
        }
        assert!(one(b"delete k 0 noreply\r\n").unwrap().noreply());
        assert_eq!(
            err_reply(b"delete k x\r\n"),
            Bytes::from_static(
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
            )
        );
    }

    // version and quit have no keys.
    #[test]
    fn version_quit() {
        let v = one(b"version\r\n").unwrap();
        assert_eq!((v.command(), v.keys().len()), (Command::Version, 0));
        let q = one(b"quit\r\n").unwrap();
        assert_eq!(q.command(), Command::Quit);
        assert!(!q.expects_reply());
    }

    // Extra words after version are ignored, noreply included (memcached
    // still answers).
    #[test]
    fn version_ignores_noreply() {
        let v = one(b"version noreply\r\n").unwrap();
        assert!(!v.noreply());
        assert!(v.expects_reply());
    }

    // A key of exactly 250 bytes is accepted.
    #[test]
    fn key_250() {
        let line = format!("get {}\r\n", "k".repeat(250));
        assert_eq!(one(line.as_bytes()).unwrap().key().unwrap().len(), 250);
    }

    // 251 bytes is refused with memcached's words, and the stream goes on.
    #[test]
    fn key_251() {
        let line = format!("get {}\r\nversion\r\n", "k".repeat(251));
        let items = decode_all(line.as_bytes());
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].as_ref().unwrap_err().reply(),
            Bytes::from_static(b"CLIENT_ERROR bad command line format\r\n")
        );
        assert!(items[1].is_ok());
    }

    // Control characters in a key are refused (memcached accepts them).
    #[test]
    fn key_control_char() {
        assert!(matches!(
            one(b"get a\x01b\r\n"),
            Err(RequestError::InvalidKey { .. })
        ));
        assert!(matches!(
            one(b"delete a\tb\r\n"),
            Err(RequestError::InvalidKey { .. })
        ));
    }

    // Unknown and uppercase commands, and empty lines, get ERROR.
    #[test]
    fn unknown_command() {
        assert_eq!(err_reply(b"GET a\r\n"), Bytes::from_static(b"ERROR\r\n"));
        assert_eq!(
            err_reply(b"slabs reassign 1 2\r\n"),
            Bytes::from_static(b"ERROR\r\n")
        );
        assert_eq!(
            one(b"\r\n"),
            Err(RequestError::UnknownCommand { name: Bytes::new() })
        );
    }

    // Missing arguments get ERROR, as in memcached.
    #[test]
    fn missing_args() {
        assert_eq!(
            one(b"get\r\n"),
            Err(RequestError::WrongArity {
                command: Command::Get
            })
        );
        assert_eq!(
            one(b"incr k\r\n"),
            Err(RequestError::WrongArity {
                command: Command::Incr
            })
        );
        assert_eq!(
            one(b"touch k\r\n"),
            Err(RequestError::WrongArity {
                command: Command::Touch
            })
        );
        assert_eq!(
            one(b"delete\r\n"),
            Err(RequestError::WrongArity {
                command: Command::Delete
            })
        );
    }

    // Flags over u32 and a non-numeric exptime: bad command line format, and
    // the data block is skipped rather than run as a command.
    #[test]
    fn bad_flags_skip_data() {
        let items =
            decode_all(b"set k 4294967296 0 6\r\ndelete\r\nset k 0 x 1\r\nz\r\nversion\r\n");
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(matches!(
            items[0],
            Err(RequestError::InvalidNumber { field: "flags", .. })
        ));
        assert!(matches!(
            items[1],
            Err(RequestError::InvalidNumber {
                field: "exptime",
                ..
            })
        ));
        assert_eq!(items[2].as_ref().unwrap().command(), Command::Version);
    }

    // Negative <bytes>: the block cannot be found; reply then close, and the
    // codec refuses anything after it.
    #[test]
    fn negative_bytes_closes() {
        let (items, err) = decode_with(RequestCodec::default(), b"set k 0 0 -1\r\nget a\r\n");
        assert_eq!(items.len(), 1);
        let e = items[0].as_ref().unwrap_err();
        assert!(e.closes_connection());
        assert_eq!(
            e.reply(),
            Bytes::from_static(b"CLIENT_ERROR bad command line format\r\n")
        );
        assert!(err.is_some());
    }

    // <bytes> overflowing u64, or over memcached's INT_MAX-2, is fatal too.
    #[test]
    fn overflowing_bytes_closes() {
        for line in [
            &b"set k 0 0 99999999999999999999\r\n"[..],
            b"set k 0 0 2147483646\r\n",
            b"set k 0 0\r\n",
        ] {
            let e = one(line).unwrap_err();
            assert!(matches!(e, RequestError::UndelimitedData { .. }), "{e:?}");
        }
        // The largest length memcached accepts is a skip, not a close.
        let e = one(b"set k 0 0 2147483645\r\n").unwrap_err();
        assert!(matches!(e, RequestError::ValueTooLarge { .. }));
    }

    // A value over the limit is refused at once and skipped as it arrives:
    // the buffer never holds more than one chunk of it.
    #[test]
    fn value_over_limit_skipped_unbuffered() {
        let limits = crate::test_limits(|l: &mut Limits| l.max_value_len = 100);
        let mut codec = RequestCodec::new(limits);
        let mut buf = BytesMut::from(&b"set k 0 0 1000 noreply\r\n"[..]);
        let e = codec.decode(&mut buf).unwrap().unwrap().unwrap_err();
        assert_eq!(
            e.reply(),
            Bytes::from_static(b"SERVER_ERROR object too large for cache\r\n")
        );
        assert!(e.noreply());
        for _ in 0..10 {
            buf.extend_from_slice(&[b'x'; 100]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            assert!(buf.is_empty());
        }
        buf.extend_from_slice(b"\r\nversion\r\n");
        let r = codec.decode(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(r.command(), Command::Version);
    }

    // A value exactly at the limit is accepted.
    #[test]
    fn value_at_limit() {
        let limits = crate::test_limits(|l: &mut Limits| l.max_value_len = 4);
        let (items, _) = decode_with(RequestCodec::new(limits), b"set k 0 0 4\r\nabcd\r\n");
        assert_eq!(items[0].as_ref().unwrap().value().unwrap().len(), 4);
    }

    // Data not followed by \r\n: bad data chunk, bytes+2 consumed, then the
    // stream resumes exactly where memcached would.
    #[test]
    fn bad_data_chunk() {
        let items = decode_all(b"set k 0 0 3\r\nabcXYversion\r\n");
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].as_ref().unwrap_err().reply(),
            Bytes::from_static(b"CLIENT_ERROR bad data chunk\r\n")
        );
        assert_eq!(items[1].as_ref().unwrap().command(), Command::Version);
    }

    // Too many keys in a get.
    #[test]
    fn too_many_keys() {
        let limits = crate::test_limits(|l: &mut Limits| l.max_keys = 2);
        let (items, _) = decode_with(RequestCodec::new(limits), b"get a b c\r\n");
        assert_eq!(
            items[0],
            Err(RequestError::TooManyKeys {
                command: Command::Get,
                count: 3,
                limit: 2
            })
        );
    }

    // The too-many-keys reply names the command and the limit, which
    // memcached does not have.
    #[test]
    fn too_many_keys_reply_names_the_limit() {
        let err = RequestError::TooManyKeys {
            command: Command::Gets,
            count: 16385,
            limit: 16384,
        };
        assert_eq!(
            err.reply(),
            Bytes::from_static(b"CLIENT_ERROR too many keys in one gets: the limit is 16384\r\n")
        );
        let line = format!("get{}\r\n", " k".repeat(16385));
        assert_eq!(
            err_reply(line.as_bytes()),
            Bytes::from_static(b"CLIENT_ERROR too many keys in one get: the limit is 16384\r\n")
        );
    }

    /// Feeds `input` in two pieces split at `cut`, then one byte at a time
    /// if `bytewise`, stopping at the first framing error.
    fn decode_split(
        input: &[u8],
        cut: usize,
        bytewise: bool,
    ) -> (Vec<Result<Request, RequestError>>, Option<ProtoError>) {
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let pieces: Vec<&[u8]> = if bytewise {
            input.chunks(1).collect()
        } else {
            vec![&input[..cut], &input[cut..]]
        };
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(item)) => out.push(item),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    /// Every way of feeding `input` this module tests: split at each byte,
    /// and one byte at a time.
    fn every_chunking(
        input: &[u8],
    ) -> impl Iterator<Item = (Vec<Result<Request, RequestError>>, Option<ProtoError>)> + '_ {
        (0..=input.len())
            .map(move |cut| decode_split(input, cut, false))
            .chain(std::iter::once(decode_split(input, 0, true)))
    }

    // The issue's smuggling case: the data block of `ms` is taken by its
    // length however it arrives, so `delete victim` is data, never a
    // request; the next command decodes.
    #[test]
    fn ms_data_block_taken_by_length_in_every_chunking() {
        let input = b"ms k 13\r\ndelete victim\r\nversion\r\n";
        for (items, err) in every_chunking(input) {
            assert!(err.is_none());
            assert_eq!(items.len(), 2, "{items:?}");
            let ms = items[0].as_ref().unwrap();
            assert_eq!(ms.command(), Command::MetaSet);
            assert_eq!(ms.key().unwrap(), &b"k"[..]);
            assert_eq!(ms.value().unwrap(), &b"delete victim"[..]);
            assert_eq!(
                ms.wire(),
                &Bytes::from_static(b"ms k 13\r\ndelete victim\r\n")
            );
            assert!(!ms.quiet());
            assert_eq!(items[1].as_ref().unwrap().command(), Command::Version);
        }
    }

    // Flags after the length pass through untouched; a block holding line
    // breaks and a whole storage command is still data; `q` is seen.
    #[test]
    fn ms_with_flags_and_embedded_commands() {
        let block = b"x\r\nset k 0 0 1\r\nv\r\n";
        let line = format!("ms key {} T0 F5 q\r\n", block.len());
        let input = [line.as_bytes(), &block[..], b"\r\nmn\r\n"].concat();
        for (items, err) in every_chunking(&input) {
            assert!(err.is_none());
            assert_eq!(items.len(), 2, "{items:?}");
            let ms = items[0].as_ref().unwrap();
            assert_eq!(ms.value().unwrap(), &block[..]);
            assert!(ms.quiet());
            assert_eq!(&ms.wire()[..], &input[..input.len() - 4]);
            assert_eq!(
                &ms.wire_with_noop()[..],
                &[&input[..input.len() - 4], b"mn\r\n"].concat()[..]
            );
            let mn = items[1].as_ref().unwrap();
            assert_eq!(mn.command(), Command::MetaNoop);
            assert!(mn.keys().is_empty());
        }
    }

    // Every meta command decodes with its key and flags untouched; `q` and
    // `b` are read, the others are the server's.
    #[test]
    fn meta_commands_decode() {
        let items = decode_all(b"mg k v O12 k\r\nmd k q\r\nma k N0 J5 MI\r\nmn\r\nme k\r\nmg YQ== b v q\r\nversion\r\n");
        let got: Vec<_> = items
            .iter()
            .map(|i| {
                let r = i.as_ref().unwrap();
                (r.command(), r.key().cloned(), r.quiet())
            })
            .collect();
        let k = |s: &'static str| Some(Bytes::from_static(s.as_bytes()));
        assert_eq!(
            got,
            [
                (Command::MetaGet, k("k"), false),
                (Command::MetaDelete, k("k"), true),
                (Command::MetaArithmetic, k("k"), false),
                (Command::MetaNoop, None, false),
                (Command::MetaDebug, k("k"), false),
                (Command::MetaGet, k("a"), true),
                (Command::Version, None, false),
            ]
        );
        assert_eq!(
            items[0].as_ref().unwrap().wire(),
            &Bytes::from_static(b"mg k v O12 k\r\n")
        );
        // The base64 key is routed decoded and forwarded as sent.
        assert_eq!(
            items[5].as_ref().unwrap().wire(),
            &Bytes::from_static(b"mg YQ== b v q\r\n")
        );
    }

    // Meta mistakes are one line each and the stream goes on; a bad `ms`
    // whose length is known has its block skipped, never run.
    #[test]
    fn meta_mistakes_answered_in_line() {
        let long = "k".repeat(251);
        let input = format!(
            "mg\r\nmg YQ= b v\r\nms YQ= 5 b\r\ndel x\r\nmg {long} v\r\nms k 2000000 T0\r\nversion\r\n"
        );
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::from(input.as_bytes());
        let mut items = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            items.push(item);
        }
        let errors = items.iter().filter_map(|i| i.as_ref().err());
        assert!(errors
            .clone()
            .all(|e| !e.closes_connection() && !e.noreply()));
        assert_eq!(
            outcomes(&items),
            [
                "ERROR\r\n",
                "CLIENT_ERROR error decoding key\r\n",
                "CLIENT_ERROR error decoding key\r\n",
                "CLIENT_ERROR bad command line format\r\n",
                "SERVER_ERROR object too large for cache\r\n",
            ]
        );
        // The 2000000-byte block has not arrived yet: still skipping.
        assert!(buf.is_empty());
    }

    // A meta line over memcached's 19 words is refused here: memcached
    // would refuse it too but run an `ms` block as commands. 19 words pass.
    #[test]
    fn meta_lines_with_too_many_flags_are_refused() {
        let flags = |n: usize| vec!["T1"; n].join(" ");
        let input = format!(
            "ms k 13 {}\r\ndelete victim\r\nms k 2 {}\r\nhi\r\nmg k {}\r\nmd k {}\r\nversion\r\n",
            flags(17),
            flags(16),
            flags(18),
            flags(17)
        );
        for (items, err) in every_chunking(input.as_bytes()) {
            assert!(err.is_none());
            assert_eq!(
                outcomes(&items),
                [
                    "CLIENT_ERROR options flags too long\r\n",
                    "ms",
                    "CLIENT_ERROR options flags are too long\r\n",
                    "md",
                    "version",
                ]
            );
        }
    }

    // Standard padded base64, strictly.
    #[test]
    fn base64_keys() {
        assert_eq!(decode_base64(b"YQ==").unwrap(), b"a");
        assert_eq!(decode_base64(b"YWI=").unwrap(), b"ab");
        assert_eq!(decode_base64(b"YWJj").unwrap(), b"abc");
        assert_eq!(decode_base64(b"AP8K").unwrap(), [0, 255, 10]);
        for bad in [&b""[..], b"YQ=", b"Y===", b"YQ==YQ==", b"YQ*=", b"YQ=a"] {
            assert_eq!(decode_base64(bad), None, "{bad:?}");
        }
    }

    // stats, flush_all, verbosity, gat and gats.
    #[test]
    fn admin_and_touch_commands() {
        let items = decode_all(
            b"stats\r\nstats items\r\nflush_all\r\nflush_all 10 noreply\r\nflush_all x\r\nverbosity 1\r\nverbosity\r\ngat 100 a b\r\ngats -1 a\r\ngat x a\r\ngat 5\r\n",
        );
        let r = |i: usize| items[i].as_ref().unwrap();
        let e = |i: usize| items[i].as_ref().unwrap_err().reply();
        assert_eq!(r(0).command(), Command::Stats);
        assert_eq!(
            e(1),
            Bytes::from_static(b"SERVER_ERROR only the general 'stats' is supported by this proxy, not its sub-commands\r\n")
        );
        assert_eq!(
            (r(2).command(), r(2).exptime(), r(2).noreply()),
            (Command::FlushAll, Some(0), false)
        );
        assert_eq!((r(3).exptime(), r(3).noreply()), (Some(10), true));
        assert_eq!(
            e(4),
            Bytes::from_static(b"CLIENT_ERROR invalid exptime argument\r\n")
        );
        assert_eq!(r(5).command(), Command::Verbosity);
        assert_eq!(e(6), Bytes::from_static(b"ERROR\r\n"));
        assert_eq!(r(7).command(), Command::Gat);
        assert_eq!(r(7).exptime(), Some(100));
        assert_eq!(
            r(7).keys(),
            [Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
        assert_eq!((r(8).command(), r(8).exptime()), (Command::Gats, Some(-1)));
        assert_eq!(
            e(9),
            Bytes::from_static(b"CLIENT_ERROR invalid exptime argument\r\n")
        );
        assert_eq!(e(10), Bytes::from_static(b"ERROR\r\n"));
        assert_eq!(items.len(), 11);
        let gat = Request::gat(7, &["x", "y"]).unwrap();
        assert_eq!(gat.wire(), &Bytes::from_static(b"gat 7 x y\r\n"));
        assert_eq!(gat.exptime(), Some(7));
    }

    // An `ms` whose length is missing or not a number closes the connection:
    // what follows cannot be told from data.
    #[test]
    fn ms_without_valid_length_closes() {
        let lines = [
            "ms k\r\n",
            "ms\r\n",
            "ms k S13\r\n",
            "ms k -1\r\n",
            "ms k 2147483646\r\n",
        ];
        for line in lines.map(str::as_bytes) {
            let input = [line, b"delete victim\r\n"].concat();
            let (items, err) = decode_with(RequestCodec::default(), &input);
            assert_eq!(items, [Err(RequestError::MetaUndelimited { name: "ms" })]);
            let e = items[0].as_ref().unwrap_err();
            assert!(e.closes_connection());
            assert_eq!(
                e.reply(),
                Bytes::from_static(b"CLIENT_ERROR bad command line format\r\n")
            );
            assert!(err.is_some(), "nothing after it decodes");
        }
    }

    // A refused huge `ms` block is skipped as it streams in, never buffered.
    #[test]
    fn ms_large_block_not_buffered() {
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::from(&b"ms k 100000000\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf).unwrap(),
            Some(Err(RequestError::ValueTooLarge { .. }))
        ));
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..10 {
            buf.extend_from_slice(&chunk);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty());
        }
    }

    // HTTP requests close the connection before their body is read: the
    // request line (memcached's rule: an unknown command ending in HTTP/x),
    // a POST line, and a Host: header, in every chunking.
    #[test]
    fn http_requests_are_foreign_in_every_chunking() {
        let cases: [(&[u8], &str); 6] = [
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\nset pwned 0 0 1\r\n1\r\n",
                "HTTP request line",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 19\r\n\r\nset pwned 0 0 1\r\n1\r\n",
                "HTTP request line",
            ),
            (b"PUT /k HTTP/1.0\r\n", "HTTP request line"),
            (b"HEAD / HTTP/1.1\n", "HTTP request line"),
            (
                b"POST /x\r\nset pwned 0 0 1\r\n1\r\n",
                "HTTP 'POST' request line",
            ),
            (
                b"host: x\r\nset pwned 0 0 1\r\n1\r\n",
                "HTTP 'Host:' header",
            ),
        ];
        for (input, want) in cases {
            for (items, err) in every_chunking(input) {
                assert!(items.is_empty(), "{input:?}: {items:?}");
                assert_eq!(foreign(err), want, "{input:?}");
            }
        }
        // Commands before the request are decoded; a get of a key named
        // like an HTTP version stays a get (memcached's rule covers unknown
        // commands only), and upper-case GET of a path is still ERROR.
        let (items, err) = decode_with(
            RequestCodec::default(),
            b"get HTTP/1.1\r\nGET /x\r\nGET / HTTP/1.1\r\nversion\r\n",
        );
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().command(), Command::Get);
        assert_eq!(err_of(&items[1]), Bytes::from_static(b"ERROR\r\n"));
        assert_eq!(foreign(err), "HTTP request line");
    }

    fn err_of(item: &Result<Request, RequestError>) -> Bytes {
        item.as_ref().unwrap_err().reply()
    }

    // A binary-protocol request is foreign from its first byte, before any
    // newline arrives; one after text commands is caught at its line start.
    #[test]
    fn binary_magic_is_foreign() {
        // A binary `set` whose value is a text `delete`.
        let mut bin = vec![0x80, 0x01, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00];
        bin.extend_from_slice(&[0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        bin.extend_from_slice(&[0; 8]);
        bin.extend_from_slice(b"kdelete victim\r\n");
        let mut codec = RequestCodec::default();
        let mut buf = BytesMut::from(&bin[..1]);
        assert_eq!(
            foreign(codec.decode(&mut buf).err()),
            "memcached binary protocol request (magic byte 0x80)"
        );
        for (items, err) in every_chunking(&bin) {
            assert!(items.is_empty());
            foreign(err);
        }
        let input = [&b"version\r\n"[..], &bin].concat();
        let (items, err) = decode_with(RequestCodec::default(), &input);
        assert_eq!(items.len(), 1);
        foreign(err);
    }

    // A non-get line over max_line_len without a newline is a framing error;
    // a get line may run longer.
    #[test]
    fn line_too_long() {
        let limits = crate::test_limits(|l: &mut Limits| l.max_line_len = 20);
        let (_, err) = decode_with(RequestCodec::new(limits), &[b'x'; 30]);
        assert!(matches!(
            err,
            Some(ProtoError::TooLarge {
                what: "command line",
                ..
            })
        ));
        let get = format!("get {}\r\n", "a ".repeat(20));
        let (items, err) = decode_with(RequestCodec::new(limits), get.as_bytes());
        assert!(err.is_none());
        assert_eq!(items[0].as_ref().unwrap().keys().len(), 20);
    }

    // A line exactly max_line_len long is fine, with its \r arriving first.
    #[test]
    fn line_at_limit() {
        let limits = crate::test_limits(|l: &mut Limits| l.max_line_len = 11);
        let mut codec = RequestCodec::new(limits);
        let mut buf = BytesMut::from(&b"delete abcd\r"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"\n");
        assert!(codec.decode(&mut buf).unwrap().unwrap().is_ok());
    }

    // Constructors build exactly the wire a client would send.
    #[test]
    fn constructors_wire() {
        let cases: [(Request, &[u8]); 11] = [
            (Request::get(&["a", "b"]).unwrap(), b"get a b\r\n"),
            (Request::gets(&["a"]).unwrap(), b"gets a\r\n"),
            (
                Request::set("k", 1, -2, "v", true).unwrap(),
                b"set k 1 -2 1 noreply\r\nv\r\n",
            ),
            (
                Request::add("k", 0, 0, "", false).unwrap(),
                b"add k 0 0 0\r\n\r\n",
            ),
            (
                Request::replace("k", 0, 0, "v", false).unwrap(),
                b"replace k 0 0 1\r\nv\r\n",
            ),
            (
                Request::append("k", 0, 0, "v", false).unwrap(),
                b"append k 0 0 1\r\nv\r\n",
            ),
            (
                Request::prepend("k", 0, 0, "v", false).unwrap(),
                b"prepend k 0 0 1\r\nv\r\n",
            ),
            (
                Request::cas("k", 0, 0, "v", 7, false).unwrap(),
                b"cas k 0 0 1 7\r\nv\r\n",
            ),
            (Request::incr("k", 3, false).unwrap(), b"incr k 3\r\n"),
            (Request::touch("k", -1, false).unwrap(), b"touch k -1\r\n"),
            (Request::delete("k", true).unwrap(), b"delete k noreply\r\n"),
        ];
        for (req, wire) in cases {
            assert_eq!(&req.wire()[..], wire);
            // and decoding the wire gives the same request back
            assert_eq!(one(wire).unwrap(), req);
        }
        assert_eq!(
            &Request::decr("k", 1, false).unwrap().wire()[..],
            b"decr k 1\r\n"
        );
        assert_eq!(&Request::version().wire()[..], b"version\r\n");
        assert_eq!(&Request::quit().wire()[..], b"quit\r\n");
    }

    // Constructors refuse bad keys and an empty get.
    #[test]
    fn constructors_refuse() {
        assert!(matches!(
            Request::get(&["a b"]),
            Err(RequestError::InvalidKey { .. })
        ));
        assert!(matches!(
            Request::set("k".repeat(251), 0, 0, "", false),
            Err(RequestError::InvalidKey { .. })
        ));
        assert!(matches!(
            Request::delete("", false),
            Err(RequestError::InvalidKey { .. })
        ));
        let none: [&str; 0] = [];
        assert_eq!(
            Request::get(&none),
            Err(RequestError::WrongArity {
                command: Command::Get
            })
        );
    }

    // The errors say what failed.
    #[test]
    fn error_messages_name_the_failure() {
        assert!(
            decode_all(b"set k 0 0 10\r\n").is_empty(),
            "an incomplete data block is not an error yet"
        );
        let e = RequestError::ValueTooLarge {
            command: Command::Set,
            len: 10,
            limit: 5,
            noreply: false,
        };
        assert_eq!(
            e.to_string(),
            "value of 10 bytes for 'set' exceeds the limit of 5"
        );
        let e = one(b"bogus x\r\n").unwrap_err();
        assert_eq!(e.to_string(), "unknown command 'bogus'");
        assert_eq!(e.command(), None);
    }
}
