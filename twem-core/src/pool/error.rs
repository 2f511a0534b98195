//! What can go wrong when a request is sent through a [`Pool`](super::Pool).

use std::borrow::Cow;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use twem_proto::command::CommandError;
use twem_proto::memcache as mc;
use twem_proto::{Memcache, Resp, Wire};

/// Why a backend could not answer a request. Each kind maps to the words
/// nutcracker puts in the error reply a client sees (`-ERR <words>` for Redis,
/// `SERVER_ERROR <words>` for memcached), so operators and clients see the same
/// text after switching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The connection was refused, or every server is ejected.
    ConnectionRefused,
    /// The pool's `timeout` expired (connect or reply).
    TimedOut,
    /// The server reset the connection.
    ConnectionReset,
    /// Writing to the server failed with a broken pipe.
    BrokenPipe,
    /// The server's host name did not resolve.
    HostDown,
    /// The server closed the connection with requests pending.
    Unknown,
    /// The server sent something that is not a valid reply.
    InvalidReply,
    /// Another I/O error; the words are the OS error text.
    Other,
    /// The proxy itself ran out of file descriptors (EMFILE/ENFILE) while
    /// connecting: a local condition, never counted against the server.
    ProxyFdLimit,
    /// The server's queue of unwritten request bytes is at its bound (the
    /// server stalled or cannot keep up): refused before buffering more.
    Backlogged,
    /// No server of the pool is live: every one is ejected.
    AllEjected,
    /// TLS with the server failed (`tls_servers`): what went wrong, in
    /// words a client can act on; the proxy's log line has rustls's own.
    Tls(TlsProblem),
    /// The server's master changed (a Sentinel failover) while the
    /// request was on the connection to the old one: it may or may not
    /// have been applied there. A retry goes to the new master.
    Failover,
    /// The sentinels have not named the server's master (none answered,
    /// or they do not know the master name).
    NoMaster,
    /// `read_from: replica` and no replica of the server is healthy.
    NoReplica,
    /// The replica a read was on left the server's replicas (the sentinels
    /// no longer list it) while the read was in flight.
    ReplicaGone,
    /// A cluster pool's node entry was given to another node (its own left
    /// the cluster) while the request was on a connection to the old one.
    NodeReplaced,
}

/// Why TLS with a server failed, as a client's error reply says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// The server's certificate has expired or is not valid yet.
    Expired,
    /// No CA of `tls_ca` (or of the system's roots) signed it.
    UnknownIssuer,
    /// It does not name the server (`tls_server_name`, else its host).
    WrongName,
    /// The server refused the connection with an alert: typically the
    /// proxy's client certificate, or its lack of one.
    Refused,
    /// Anything else (versions, ciphers, a malformed record).
    Other,
}

impl TlsProblem {
    fn words(self) -> &'static str {
        match self {
            TlsProblem::Expired => "TLS: the server's certificate has expired or is not yet valid",
            TlsProblem::UnknownIssuer => {
                "TLS: the server's certificate is not signed by a trusted CA (tls_ca)"
            }
            TlsProblem::WrongName => {
                "TLS: the server's certificate does not name it (tls_server_name)"
            }
            TlsProblem::Refused => {
                "TLS: the server refused the connection (client certificate? tls_client_cert)"
            }
            TlsProblem::Other => "TLS handshake with the server failed",
        }
    }

    /// Classify rustls's error.
    fn of(e: &rustls::Error) -> TlsProblem {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => TlsProblem::Expired,
            rustls::Error::InvalidCertificate(C::UnknownIssuer) => TlsProblem::UnknownIssuer,
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => TlsProblem::WrongName,
            rustls::Error::AlertReceived(_) => TlsProblem::Refused,
            _ => TlsProblem::Other,
        }
    }
}

impl BackendErrorKind {
    /// The words nutcracker uses for this failure (its `strerror` text).
    pub fn words(self) -> &'static str {
        match self {
            BackendErrorKind::ConnectionRefused => "Connection refused",
            BackendErrorKind::TimedOut => "Connection timed out",
            BackendErrorKind::ConnectionReset => "Connection reset by peer",
            BackendErrorKind::BrokenPipe => "Broken pipe",
            BackendErrorKind::HostDown => "Host is down",
            BackendErrorKind::Unknown => "unknown",
            BackendErrorKind::InvalidReply => "Invalid argument",
            BackendErrorKind::Other => "unknown",
            BackendErrorKind::ProxyFdLimit => "too many open files in proxy",
            BackendErrorKind::Backlogged => "too many request bytes queued for the server",
            BackendErrorKind::AllEjected => "every server of the pool is ejected",
            BackendErrorKind::Tls(problem) => problem.words(),
            BackendErrorKind::Failover => {
                "the master changed (Sentinel failover) while the request was in flight"
            }
            BackendErrorKind::NoMaster => "no master address known from the sentinels",
            BackendErrorKind::NoReplica => "no healthy replica to read from (read_from replica)",
            BackendErrorKind::ReplicaGone => {
                "the replica was removed or moved while the read was in flight"
            }
            BackendErrorKind::NodeReplaced => {
                "the cluster node left the cluster while the request was in flight"
            }
        }
    }

    /// Whether the failure is the proxy's own condition rather than the
    /// server's: such failures never count towards `auto_eject_hosts` and
    /// their replies say what happened instead of nutcracker's `strerror`.
    pub fn is_local(self) -> bool {
        matches!(
            self,
            BackendErrorKind::ProxyFdLimit
                | BackendErrorKind::Backlogged
                | BackendErrorKind::AllEjected
        )
    }

    /// Classify an I/O error the way nutcracker's `strerror(errno)` would word it.
    pub fn from_io(e: &io::Error) -> BackendErrorKind {
        // EMFILE / ENFILE: the proxy's own descriptor table is full.
        if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
            return BackendErrorKind::ProxyFdLimit;
        }
        // tokio-rustls wraps rustls's errors (alerts, certificate checks).
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return BackendErrorKind::Tls(TlsProblem::of(tls));
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => BackendErrorKind::ConnectionRefused,
            io::ErrorKind::TimedOut => BackendErrorKind::TimedOut,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                BackendErrorKind::ConnectionReset
            }
            io::ErrorKind::BrokenPipe => BackendErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof => BackendErrorKind::Unknown,
            io::ErrorKind::NotFound | io::ErrorKind::AddrNotAvailable => BackendErrorKind::HostDown,
            _ => BackendErrorKind::Other,
        }
    }
}

/// A backend failure, naming the server it happened on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("server {server}: {}", kind.words())]
pub struct BackendError {
    /// What failed.
    pub kind: BackendErrorKind,
    /// The server's name (its ring identity); empty when no server was chosen.
    pub server: Arc<str>,
}

impl BackendError {
    /// A failure of `kind` on `server`.
    pub fn new(kind: BackendErrorKind, server: Arc<str>) -> Self {
        BackendError { kind, server }
    }

    /// What a client reads after `-ERR ` / `SERVER_ERROR `: nutcracker's
    /// words for a server's failure; for the proxy's own conditions, what
    /// happened and (when one was chosen) to which server, so that a local
    /// problem never reads as `unknown` or `Connection refused`.
    pub fn reply_words(&self) -> String {
        // A TLS failure names the server too: nutcracker has no words for
        // it, and the operator needs to know which certificate to look at.
        if (self.kind.is_local()
            || matches!(
                self.kind,
                BackendErrorKind::Tls(_)
                    | BackendErrorKind::Failover
                    | BackendErrorKind::NoMaster
                    | BackendErrorKind::NoReplica
                    | BackendErrorKind::ReplicaGone
                    | BackendErrorKind::NodeReplaced
            ))
            && !self.server.is_empty()
        {
            format!("{} (server {})", self.kind.words(), self.server)
        } else {
            self.kind.words().to_string()
        }
    }
}

/// Why a call through a [`Pool`](super::Pool) failed. The variants say which
/// party is at fault: the request, a server or the network, or the pool itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The request itself is wrong (unknown command, wrong arity, refused
    /// command, invalid key): refused before anything was sent.
    #[error("request rejected: {0}")]
    Request(#[from] RequestError),
    /// A server or the network to it failed; see [`BackendErrorKind::words`].
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The server answered with an error reply (`-ERR ...`, `SERVER_ERROR ...`),
    /// or with a reply the typed helpers did not expect.
    #[error("server replied with an error: {0}")]
    Server(#[from] ServerError),
    /// The pool is closed.
    #[error("pool {0} is closed")]
    Closed(Arc<str>),
}

impl CallError {
    /// The error as a Redis client reads it after the `-`, error code
    /// included: `ERR Connection refused`, `ERR unknown command ...`, or a
    /// server's own `WRONGTYPE ...`.
    pub fn words(&self) -> String {
        match self {
            CallError::Request(r) => r.words(),
            CallError::Server(s) => s.words(),
            CallError::Backend(b) => format!("ERR {}", b.reply_words()),
            CallError::Closed(p) => format!("ERR pool {p} is closed"),
        }
    }

    /// The whole error reply in protocol `W`: a failure on the way in
    /// nutcracker's words (`-ERR ...`, `SERVER_ERROR ...`), a refused
    /// request as refused (`-<CODE> ...`, `CLIENT_ERROR <CODE> ...`), a
    /// server's own error as it came.
    pub fn reply<W: Wire>(&self) -> Bytes {
        match self {
            CallError::Backend(b) => W::server_error(&b.reply_words()),
            CallError::Request(r) => W::client_error(&r.words()),
            CallError::Server(s) => W::relayed_error(&s.words()),
            CallError::Closed(p) => W::server_error(&format!("pool {p} is closed")),
        }
    }

    /// The whole Redis error reply (`-<words>\r\n`): [`CallError::reply`]
    /// in RESP.
    pub fn resp_reply(&self) -> Bytes {
        self.reply::<Resp>()
    }

    /// The whole memcached error line: [`CallError::reply`] in memcached's
    /// protocol.
    pub fn memcache_reply(&self) -> Bytes {
        self.reply::<Memcache>()
    }
}

/// A request the pool refused before sending it: the error code a client
/// reads first (`ERR`) and the message after it, kept apart, with the
/// refusal it came from when there is one (the command table's
/// [`CommandError`], an invalid memcached request).
// Boxed: a reply future holds a `CallError` inline, and every request's
// future is moved through the session's queue; a refusal is rare.
#[derive(Debug, Clone)]
pub struct RequestError(Box<RequestErrorInner>);

#[derive(Debug, Clone)]
struct RequestErrorInner {
    code: Option<Cow<'static, str>>,
    message: Cow<'static, str>,
    cause: Option<RequestCause>,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0.code {
            Some(code) => write!(f, "{code} {}", self.0.message),
            None => f.write_str(&self.0.message),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .cause
            .as_ref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// Where a [`RequestError`] came from, kept whole for callers that match on
/// it (which command, which arity rule, which key).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestCause {
    /// The Redis command table refused the command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A memcached request built in code is invalid (a bad key...).
    #[error(transparent)]
    Memcache(#[from] mc::RequestError),
}

impl RequestError {
    /// A refusal with an error code (`ERR`) and a message.
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
        RequestError::with(Some(code.into()), message.into(), None)
    }

    fn with(
        code: Option<Cow<'static, str>>,
        message: Cow<'static, str>,
        cause: Option<RequestCause>,
    ) -> Self {
        RequestError(Box::new(RequestErrorInner {
            code,
            message,
            cause,
        }))
    }

    /// A refusal whose text has no error code (the embedding API's own
    /// wording, such as a call to a pool of the other protocol).
    pub fn uncoded(message: impl Into<Cow<'static, str>>) -> Self {
        RequestError::with(None, message.into(), None)
    }

    /// The error code (`ERR`), if the text has one.
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// The message after the code.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The refusal this error came from, if any.
    pub fn cause(&self) -> Option<&RequestCause> {
        self.0.cause.as_ref()
    }

    /// The text a Redis client reads after the `-`: code, space, message.
    pub fn words(&self) -> String {
        self.to_string()
    }
}

impl From<CommandError> for RequestError {
    fn from(e: CommandError) -> Self {
        // The table words its errors as Redis does, code first ("ERR ...").
        let (code, message) = split_code(e.to_string());
        RequestError::with(code, message.into(), Some(RequestCause::Command(e)))
    }
}

impl From<super::route::Failure> for RequestError {
    fn from(f: super::route::Failure) -> Self {
        match f {
            super::route::Failure::Command(e) => RequestError::from(e),
            other => {
                let (code, message) = split_code(other.to_string());
                RequestError::with(code, message.into(), None)
            }
        }
    }
}

impl From<mc::RequestError> for RequestError {
    fn from(e: mc::RequestError) -> Self {
        // memcached's request errors carry no code: the session puts
        // `CLIENT_ERROR` before them.
        RequestError::with(None, e.to_string().into(), Some(RequestCause::Memcache(e)))
    }
}

/// Split `CODE message` into its code and message when the first word is
/// an error code (upper-case letters only, as Redis writes them); otherwise
/// the whole text is the message.
fn split_code(text: String) -> (Option<Cow<'static, str>>, String) {
    match text.split_once(' ') {
        Some((code, rest)) if !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase()) => {
            let code = match code {
                "ERR" => Cow::Borrowed("ERR"),
                other => Cow::Owned(other.to_string()),
            };
            (Some(code), rest.to_string())
        }
        _ => (None, text),
    }
}

/// A server's error reply, or a reply of a shape the typed helpers did not
/// expect for their command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServerError {
    /// The server's error text as it sent it, without the RESP `-` and the
    /// line end: `WRONGTYPE Operation against ...`, or memcached's whole
    /// line (`SERVER_ERROR out of memory`, `ERROR`).
    #[error("{}", String::from_utf8_lossy(.0))]
    Reply(Bytes),
    /// A reply that is no error but not what the command calls for (or a
    /// check of the caller's own that failed).
    #[error("{0}")]
    Unexpected(String),
}

impl ServerError {
    /// The error code of a server's error reply: its first word
    /// (`WRONGTYPE`, `ERR`, `SERVER_ERROR`), `None` for an unexpected reply.
    pub fn code(&self) -> Option<&str> {
        match self {
            ServerError::Reply(b) => {
                let word = b.split(|&c| c == b' ').next().unwrap_or_default();
                let is_code =
                    !word.is_empty() && word.iter().all(|&c| c.is_ascii_uppercase() || c == b'_');
                std::str::from_utf8(word).ok().filter(|_| is_code)
            }
            ServerError::Unexpected(_) => None,
        }
    }

    /// The server's reply bytes (without the RESP `-` and the line end),
    /// `None` for an unexpected reply.
    pub fn reply(&self) -> Option<&Bytes> {
        match self {
            ServerError::Reply(b) => Some(b),
            ServerError::Unexpected(_) => None,
        }
    }

    /// The text a client reads: the server's own words.
    pub fn words(&self) -> String {
        self.to_string()
    }
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The pool's servers could not form a ring.
    #[error("pool {pool}: {source}")]
    Ring {
        /// The pool's name.
        pool: String,
        /// What the ring builder said.
        #[source]
        source: crate::ring::RingError,
    },
    /// The configuration text was invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The config has no pool of the name asked for.
    #[error("no pool named \"{0}\" in the config")]
    NoSuchPool(String),
    /// The config has no pool at all.
    #[error("the config has no pool")]
    NoPool,
    /// The config has this many pools and none was named.
    #[error("the config has {0} pools; name the one to start")]
    PoolNotNamed(usize),
    /// The pool was started outside a tokio runtime: its connection tasks
    /// need one (start it inside `Runtime::block_on` or an async `main`).
    #[error("pool \"{pool}\": must be started inside a tokio runtime")]
    NoRuntime {
        /// The pool's name.
        pool: String,
    },
    /// A pool built in code is incomplete or inconsistent.
    #[error("pool \"{pool}\": {}", .problems.join("; "))]
    Invalid {
        /// The pool's name.
        pool: String,
        /// Every problem found.
        problems: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every variant's Redis reply carries an error code, so clients that
    // parse `-CODE message` never see a bare message.
    /// A backend failure of `kind` on server `server`.
    fn backend(kind: BackendErrorKind, server: &str) -> CallError {
        CallError::Backend(BackendError::new(kind, Arc::from(server)))
    }

    #[test]
    fn replies_are_well_formed() {
        let refused = backend(BackendErrorKind::ConnectionRefused, "s");
        assert_eq!(&refused.resp_reply()[..], b"-ERR Connection refused\r\n");
        assert_eq!(
            &refused.memcache_reply()[..],
            b"SERVER_ERROR Connection refused\r\n"
        );
        assert_eq!(
            &CallError::Closed(Arc::from("p")).resp_reply()[..],
            b"-ERR pool p is closed\r\n"
        );
        assert_eq!(
            &CallError::Request(RequestError::new("ERR", "x")).resp_reply()[..],
            b"-ERR x\r\n"
        );
    }

    // A refusal from the command table keeps its code, its message and the
    // table's error itself, and still reads exactly as the table words it.
    #[test]
    fn request_errors_keep_code_message_and_cause() {
        let table = CommandError::WrongArity { name: "get" };
        let e = RequestError::from(table.clone());
        assert_eq!(e.code(), Some("ERR"));
        assert_eq!(e.message(), "wrong number of arguments for 'get' command");
        assert!(matches!(e.cause(), Some(RequestCause::Command(c)) if *c == table));
        assert!(std::error::Error::source(&e).is_some());
        let call = CallError::Request(e);
        assert_eq!(call.words(), table.to_string());
        assert_eq!(
            &call.memcache_reply()[..],
            b"CLIENT_ERROR ERR wrong number of arguments for 'get' command\r\n"
        );
        let plain = RequestError::uncoded("pool p speaks Redis, not memcached");
        assert_eq!(
            (plain.code(), plain.words().as_str()),
            (None, plain.message())
        );
    }

    // A server's error keeps its bytes; its code is the first word.
    #[test]
    fn server_errors_expose_their_code() {
        let e = ServerError::Reply(Bytes::from_static(b"WRONGTYPE Operation against a key"));
        assert_eq!(e.code(), Some("WRONGTYPE"));
        assert_eq!(
            &CallError::Server(e).resp_reply()[..],
            b"-WRONGTYPE Operation against a key\r\n"
        );
        let mc = ServerError::Reply(Bytes::from_static(b"SERVER_ERROR out of memory"));
        assert_eq!(mc.code(), Some("SERVER_ERROR"));
        assert_eq!(
            &CallError::Server(mc).memcache_reply()[..],
            b"SERVER_ERROR out of memory\r\n"
        );
        assert_eq!(ServerError::Unexpected("x".into()).code(), None);
    }

    // Pool errors are data; their text is what the embedder read before.
    #[test]
    fn pool_errors_read_as_before() {
        assert_eq!(
            PoolError::NoSuchPool("beta".into()).to_string(),
            "no pool named \"beta\" in the config"
        );
        assert_eq!(
            PoolError::PoolNotNamed(2).to_string(),
            "the config has 2 pools; name the one to start"
        );
        let invalid = PoolError::Invalid {
            pool: "p".into(),
            problems: vec!["a".into(), "b".into()],
        };
        assert_eq!(invalid.to_string(), "pool \"p\": a; b");
    }

    // The proxy's own conditions say what happened and where, and are told
    // apart from the server's failures (they never count towards ejection).
    #[test]
    fn local_failures_say_what_happened() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let enfile = io::Error::from_raw_os_error(libc::ENFILE);
        assert_eq!(
            BackendErrorKind::from_io(&emfile),
            BackendErrorKind::ProxyFdLimit
        );
        assert_eq!(
            BackendErrorKind::from_io(&enfile),
            BackendErrorKind::ProxyFdLimit
        );
        let fd = backend(BackendErrorKind::ProxyFdLimit, "redis-1");
        assert_eq!(
            &fd.resp_reply()[..],
            b"-ERR too many open files in proxy (server redis-1)\r\n"
        );
        assert_eq!(
            &fd.memcache_reply()[..],
            b"SERVER_ERROR too many open files in proxy (server redis-1)\r\n"
        );
        let queued = backend(BackendErrorKind::Backlogged, "a");
        assert_eq!(
            &queued.resp_reply()[..],
            b"-ERR too many request bytes queued for the server (server a)\r\n"
        );
        let ejected = backend(BackendErrorKind::AllEjected, "");
        assert_eq!(
            &ejected.resp_reply()[..],
            b"-ERR every server of the pool is ejected\r\n"
        );
        for k in [
            BackendErrorKind::ProxyFdLimit,
            BackendErrorKind::Backlogged,
            BackendErrorKind::AllEjected,
        ] {
            assert!(k.is_local());
        }
        assert!(!BackendErrorKind::ConnectionRefused.is_local());
        assert!(!BackendErrorKind::TimedOut.is_local());
    }

    // nutcracker's wording is part of the compatibility contract: clients and
    // alerting match on these strings.
    #[test]
    fn words_match_nutcracker() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            BackendErrorKind::from_io(&refused).words(),
            "Connection refused"
        );
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(
            BackendErrorKind::from_io(&reset).words(),
            "Connection reset by peer"
        );
        let pipe = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(BackendErrorKind::from_io(&pipe).words(), "Broken pipe");
        assert_eq!(BackendErrorKind::TimedOut.words(), "Connection timed out");
        assert_eq!(BackendErrorKind::InvalidReply.words(), "Invalid argument");
        assert_eq!(BackendErrorKind::Unknown.words(), "unknown");
    }
}
