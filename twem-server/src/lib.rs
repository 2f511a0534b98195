//! # twem-server
//!
//! The library behind the `twemproxy` binary: nutcracker's command line,
//! listeners, client sessions, the stats port and signal handling.
#![forbid(unsafe_code)]
