//! Logging: nutcracker's `-v 0..11` levels mapped onto `tracing`, output to
//! stderr or an appended file that SIGHUP reopens (for logrotate), and a
//! level that SIGTTIN / SIGTTOU raise and lower at run time.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// nutcracker's level (0 emerg .. 11 pverb) as a tracing filter. Its NOTICE
/// (5, the default) carries connection events, which tracing calls INFO.
pub fn level_filter(v: u8) -> LevelFilter {
    match v {
        0..=3 => LevelFilter::ERROR,
        4 => LevelFilter::WARN,
        5 | 6 => LevelFilter::INFO,
        7 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Where log lines go; a file can be reopened in place.
#[derive(Clone)]
pub struct LogOutput {
    path: Option<PathBuf>,
    file: Arc<Mutex<Option<File>>>,
}

impl LogOutput {
    fn open(path: &Path) -> io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Reopen the log file (after logrotate moved it). Stderr needs nothing.
    pub fn reopen(&self) -> io::Result<()> {
        if let Some(p) = &self.path {
            let f = Self::open(p)?;
            *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
        }
        Ok(())
    }
}

/// One log line's writer.
pub struct LogWriter {
    file: Arc<Mutex<Option<File>>>,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(f) => f.write(buf),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(f) => f.flush(),
            None => io::stderr().flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter {
            file: Arc::clone(&self.file),
        }
    }
}

/// The running logger: its output and its adjustable level.
pub struct Logger {
    output: LogOutput,
    level: AtomicU8,
    handle: reload::Handle<LevelFilter, tracing_subscriber::Registry>,
}

impl Logger {
    /// Install the global subscriber at nutcracker level `verbose`, writing to
    /// `output` (appended) or stderr.
    pub fn init(verbose: u8, output: Option<&Path>) -> io::Result<Arc<Logger>> {
        let file = match output {
            Some(p) => Some(LogOutput::open(p)?),
            None => None,
        };
        let out = LogOutput {
            path: output.map(Path::to_path_buf),
            file: Arc::new(Mutex::new(file)),
        };
        let (filter, handle) = reload::Layer::new(level_filter(verbose));
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(out.clone())
            .with_ansi(false)
            .with_target(false);
        // A second init (tests) keeps the first subscriber; not an error.
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init();
        Ok(Arc::new(Logger {
            output: out,
            level: AtomicU8::new(verbose),
            handle,
        }))
    }

    /// Reopen the log file (SIGHUP).
    pub fn reopen(&self) {
        if let Err(e) = self.output.reopen() {
            tracing::error!(error = %e, "reopening the log file failed");
        }
    }

    /// The current nutcracker level.
    pub fn level(&self) -> u8 {
        self.level.load(Ordering::Relaxed)
    }

    /// Raise (`up`, SIGTTIN) or lower (SIGTTOU) the level by one, within 0..=11.
    pub fn step(&self, up: bool) {
        let cur = self.level();
        let next = if up {
            cur.saturating_add(1).min(11)
        } else {
            cur.saturating_sub(1)
        };
        self.level.store(next, Ordering::Relaxed);
        let _ = self.handle.modify(|f| *f = level_filter(next));
        // nutcracker's words, and like it nothing when the level is already
        // at its bound.
        if next != cur {
            let dir = if up { "up" } else { "down" };
            tracing::warn!("{dir} log level to {next}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The default level (5) must show connection events (INFO) but not
    // per-request lines (DEBUG/TRACE).
    #[test]
    fn mapping() {
        assert_eq!(level_filter(5), LevelFilter::INFO);
        assert_eq!(level_filter(0), LevelFilter::ERROR);
        assert_eq!(level_filter(4), LevelFilter::WARN);
        assert_eq!(level_filter(7), LevelFilter::DEBUG);
        assert_eq!(level_filter(11), LevelFilter::TRACE);
    }
}
