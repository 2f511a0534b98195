//! The one error type of the load tool.

use std::fmt;
use std::io;

/// Something that stopped a run, naming what failed.
#[derive(Debug)]
pub enum Error {
    /// A command-line problem (unknown flag, missing or malformed value).
    Usage(String),
    /// An I/O error, with what was being done when it happened.
    Io {
        /// What the tool was doing (e.g. "connect to 127.0.0.1:22121").
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The server sent something the client cannot parse.
    Protocol(String),
}

impl Error {
    /// Wraps an I/O error with a description of the failed step.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "usage: {m}"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
