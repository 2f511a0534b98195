//! What can go wrong when a request is sent through a [`Pool`](super::Pool).

use std::io;
use std::sync::Arc;

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
        if self.kind.is_local() && !self.server.is_empty() {
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
    /// command, invalid key). The text is the error reply the client reads.
    #[error("request rejected: {0}")]
    Request(String),
    /// A server or the network to it failed; see [`BackendErrorKind::words`].
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The server answered with an error reply (`-ERR ...`, `SERVER_ERROR ...`),
    /// passed on untouched.
    #[error("server replied with an error: {0}")]
    Server(String),
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
            CallError::Request(s) | CallError::Server(s) => s.clone(),
            CallError::Backend(b) => format!("ERR {}", b.reply_words()),
            CallError::Closed(p) => format!("ERR pool {p} is closed"),
        }
    }

    /// The whole Redis error reply (`-<words>\r\n`).
    pub fn resp_reply(&self) -> bytes::Bytes {
        bytes::Bytes::from(format!("-{}\r\n", self.words()))
    }

    /// The whole memcached error line: `SERVER_ERROR <nutcracker's words>`
    /// for a backend failure, `CLIENT_ERROR ...` for a rejected request, a
    /// server's own line as it came.
    pub fn memcache_reply(&self) -> bytes::Bytes {
        let line = match self {
            CallError::Backend(b) => format!("SERVER_ERROR {}", b.reply_words()),
            CallError::Request(s) => format!("CLIENT_ERROR {s}"),
            CallError::Server(s) => s.clone(),
            CallError::Closed(p) => format!("SERVER_ERROR pool {p} is closed"),
        };
        bytes::Bytes::from(line + "\r\n")
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
    /// The config has no pool of that name (or several pools and none chosen).
    #[error("{0}")]
    NoSuchPool(String),
    /// A pool built in code is incomplete or inconsistent; the text names the
    /// pool and every problem.
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every variant's Redis reply carries an error code, so clients that
    // parse `-CODE message` never see a bare message.
    #[test]
    fn replies_are_well_formed() {
        let refused = CallError::Backend(BackendError::new(
            BackendErrorKind::ConnectionRefused,
            Arc::from("s"),
        ));
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
            &CallError::Request("ERR x".into()).resp_reply()[..],
            b"-ERR x\r\n"
        );
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
