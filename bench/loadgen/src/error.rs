//! The one error type of the load tool.

use std::io;

/// Something that stopped a run, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line problem (unknown flag, missing or malformed value).
    #[error("usage: {0}")]
    Usage(String),
    /// An I/O error, with what was being done when it happened.
    #[error("{what}: {source}")]
    Io {
        /// What the tool was doing (e.g. "connect to 127.0.0.1:22121").
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The server sent something the client cannot parse.
    #[error("protocol: {0}")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    // An I/O error names the step that failed and keeps the cause as its source.
    #[test]
    fn io_error_names_the_step() {
        let e = Error::io(
            "connect client 3 to 127.0.0.1:1",
            io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert!(
            e.to_string()
                .starts_with("connect client 3 to 127.0.0.1:1: "),
            "{e}"
        );
        assert!(e.source().is_some());
    }
}
