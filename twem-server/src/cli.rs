//! nutcracker's command line, flag for flag, plus twem's additions.
//!
//! clap parses it (short and long forms, `-v 6` and `--verbose=6` alike);
//! its built-in `-V` is turned off so `-V` prints nutcracker's text, which
//! scripts grep for.

use std::path::PathBuf;

use clap::{ArgAction, Parser};

/// The nutcracker version whose behaviour twem reproduces.
pub const NUTCRACKER_VERSION: &str = "0.5.0";

/// Command-line options of `twemproxy`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "twemproxy",
    disable_version_flag = true,
    about = "twem: a Redis and memcached sharding proxy, drop-in for nutcracker (twemproxy)",
    after_help = "Signals: SIGHUP reloads the config and reopens the log file, SIGUSR1 reloads the config, \
                  SIGTTIN/SIGTTOU raise/lower the log level, SIGUSR2 is logged, SIGTERM/SIGINT drain and exit."
)]
pub struct Cli {
    /// Show version and exit.
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue)]
    pub version: bool,
    /// Test configuration for syntax errors and exit.
    #[arg(short = 't', long = "test-conf")]
    pub test_conf: bool,
    /// Run as a daemon.
    #[arg(short = 'd', long = "daemonize")]
    pub daemonize: bool,
    /// Print stats description and exit.
    #[arg(short = 'D', long = "describe-stats")]
    pub describe_stats: bool,
    /// Set logging level (default: 5, min: 0, max: 11; higher values mean 11).
    #[arg(short = 'v', long = "verbose", value_name = "N", default_value_t = 5,
          value_parser = parse_verbosity)]
    pub verbose: u8,
    /// Set logging file (default: stderr).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Set configuration file (.yml as nutcracker; .toml for the same pools in TOML).
    #[arg(
        short = 'c',
        long = "conf-file",
        value_name = "FILE",
        default_value = "conf/nutcracker.yml"
    )]
    pub conf_file: PathBuf,
    /// Set stats monitoring port.
    #[arg(
        short = 's',
        long = "stats-port",
        value_name = "N",
        default_value_t = 22222
    )]
    pub stats_port: u16,
    /// Set stats monitoring ip.
    #[arg(
        short = 'a',
        long = "stats-addr",
        value_name = "ADDR",
        default_value = "0.0.0.0"
    )]
    pub stats_addr: String,
    /// Set stats aggregation interval in msec.
    #[arg(
        short = 'i',
        long = "stats-interval",
        value_name = "MS",
        default_value_t = 30000
    )]
    pub stats_interval: u64,
    /// Set pid file.
    #[arg(short = 'p', long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Set size of mbuf chunk in bytes (accepted for compatibility; twem sizes
    /// its buffers itself).
    #[arg(short = 'm', long = "mbuf-size", value_name = "N", default_value_t = 16384,
          value_parser = clap::value_parser!(u32).range(512..=16_777_216))]
    pub mbuf_size: u32,

    /// twem: print the server each key read from stdin maps to, then exit.
    #[arg(long = "locate")]
    pub locate: bool,
    /// twem, with --locate: the pool to use (required when the file has several).
    #[arg(long = "pool", value_name = "NAME", requires = "locate")]
    pub pool: Option<String>,
    /// twem, with --locate: keys are hex-encoded, one per line.
    #[arg(long = "hex", requires = "locate")]
    pub hex: bool,
    /// twem, with --locate: place keys as if this server were ejected (repeatable).
    #[arg(long = "eject", value_name = "NAME", requires = "locate")]
    pub eject: Vec<String>,
    /// twem: how long SIGTERM/SIGINT wait for in-flight requests, in ms.
    #[arg(long = "shutdown-grace", value_name = "MS", default_value_t = 5000)]
    pub shutdown_grace: u64,
    /// twem: serve Prometheus metrics on `GET /metrics` at this address.
    #[arg(long = "metrics-addr", value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// twem: worker threads (default: one per core), each its own event loop
    /// with its own backend connections (`server_connections` counts per
    /// worker); 1 runs a single event loop on the main thread, as nutcracker
    /// does.
    #[arg(long = "threads", value_name = "N")]
    pub threads: Option<usize>,
}

/// The most verbose log level (nutcracker's `LOG_PVERB`).
pub const MAX_VERBOSITY: u8 = 11;

/// A `-v` value that is not a number; clap prints it after the option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("requires a number (decimal digits)")]
pub struct VerbosityError;

/// A `-v` value as nutcracker takes it: decimal digits, any size, levels
/// above [`MAX_VERBOSITY`] meaning the maximum (`-v 12` is accepted there).
fn parse_verbosity(text: &str) -> Result<u8, VerbosityError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerbosityError);
    }
    // Past u64 it is still "more than the maximum".
    Ok(text
        .parse::<u64>()
        .map_or(MAX_VERBOSITY, |n| n.min(u64::from(MAX_VERBOSITY)) as u8))
}

/// How a command line that cannot be parsed ends, as nutcracker ends it:
/// the error and a usage hint on stderr, exit code 1 (clap's default is 2).
/// `-h`/`--help` is not an error: the help is printed and the exit code is 0.
pub fn exit_code_of_usage_error(err: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
        _ => 1,
    }
}

impl Cli {
    /// The `-V` text: nutcracker's line first, so scripts that parse it still
    /// work, then what this really is.
    pub fn version_text() -> String {
        format!(
            "This is nutcracker-{NUTCRACKER_VERSION} (twem {})\n",
            env!("CARGO_PKG_VERSION")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("twemproxy").chain(args.iter().copied()))
    }

    // nutcracker's defaults are part of the drop-in contract.
    #[test]
    fn defaults_are_nutcrackers() {
        let c = parse(&[]).expect("no flags parse");
        assert_eq!(c.verbose, 5);
        assert_eq!(c.stats_port, 22222);
        assert_eq!(c.stats_addr, "0.0.0.0");
        assert_eq!(c.stats_interval, 30000);
        assert_eq!(c.mbuf_size, 16384);
        assert_eq!(c.conf_file, PathBuf::from("conf/nutcracker.yml"));
    }

    // Short, long and `--flag=value` forms as nutcracker's getopt_long takes them.
    #[test]
    fn short_and_long_forms() {
        let c = parse(&[
            "-c",
            "x.yml",
            "-v",
            "7",
            "-s",
            "1",
            "-a",
            "127.0.0.1",
            "-i",
            "100",
            "-p",
            "p",
            "-m",
            "512",
            "-t",
            "-d",
            "-D",
            "-V",
        ])
        .expect("short forms");
        assert_eq!(
            (c.verbose, c.stats_port, c.stats_interval, c.mbuf_size),
            (7, 1, 100, 512)
        );
        assert!(c.test_conf && c.daemonize && c.describe_stats && c.version);
        let l = parse(&[
            "--conf-file=y.yml",
            "--verbose=11",
            "--stats-port=2",
            "--stats-addr=::1",
            "--stats-interval=5",
            "--pid-file=q",
            "--mbuf-size=1024",
            "--output=o",
        ])
        .expect("long forms");
        assert_eq!(l.conf_file, PathBuf::from("y.yml"));
        assert_eq!((l.verbose, l.stats_port, l.mbuf_size), (11, 2, 1024));
        assert_eq!(l.output, Some(PathBuf::from("o")));
    }

    // Out-of-range values are refused, as nutcracker refuses them; a `-v`
    // above the maximum is the maximum there, not an error.
    #[test]
    fn ranges_enforced() {
        assert_eq!(parse(&["-v", "12"]).map(|c| c.verbose).ok(), Some(11));
        assert_eq!(
            parse(&["--verbose=99999999999999999999999"])
                .map(|c| c.verbose)
                .ok(),
            Some(11)
        );
        assert_eq!(parse(&["-v", "0"]).map(|c| c.verbose).ok(), Some(0));
        for bad in ["-3", "abc", "", "+1", " 1"] {
            assert!(parse(&["-v", bad]).is_err(), "-v {bad:?}");
        }
        assert!(parse(&["-m", "100"]).is_err());
        assert!(parse(&["-m", "16777217"]).is_err());
    }

    #[test]
    fn version_text_starts_like_nutcracker() {
        assert!(Cli::version_text().starts_with("This is nutcracker-0.5.0"));
    }
}
