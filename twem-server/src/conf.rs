//! Loading the config file, the same way for start, `-t` and reload: read
//! with a size bound, parse and validate with `twem-core`, then the one check
//! the core cannot make because it does no I/O: that every TCP `listen` host
//! resolves (nutcracker refuses an unresolvable one at load, `-t` included),
//! and that every `tls_*` file reads and parses.

use std::fs::File;
use std::io::Read;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use twem_core::config::{Config, ConfigError, Format, Listen, Problem};

/// The largest config file read: far above any real config (100,000
/// servers take about 3 MiB), and small enough that pointing `-c` at
/// `/dev/zero` or a huge file fails at once instead of eating all memory.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Opening or reading the file failed.
    #[error("cannot read configuration file '{}': {source}", .path.display())]
    Read {
        /// The file, as given.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file holds more than [`MAX_CONFIG_BYTES`] (or never ends).
    #[error(
        "configuration file '{}' is larger than {} MiB; is it the right file?",
        .path.display(),
        MAX_CONFIG_BYTES / (1024 * 1024)
    )]
    TooLarge {
        /// The file, as given.
        path: PathBuf,
    },
    /// The file is not UTF-8 text.
    #[error("configuration file '{}' is not UTF-8 text: {source}", .path.display())]
    NotText {
        /// The file, as given.
        path: PathBuf,
        /// Where the first invalid byte is.
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// The text is not a valid config; every problem, each naming its pool
    /// and key.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

/// Reads, parses and validates the config file at `path` (YAML, or TOML
/// for a `.toml` name), then checks that every TCP `listen` host resolves.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = read_text(path)?;
    let config = Config::parse(&text, Format::from_path(path))?;
    check_listen_hosts(&config)?;
    // The TLS files are read and parsed now, before any port is bound (and
    // by `-t`); the pools read them again when built.
    twem_core::tls::check(&config)?;
    Ok(config)
}

/// The file's text, refusing more than [`MAX_CONFIG_BYTES`]. The bound is
/// applied while reading: a device or a pipe has no size to check up front.
pub fn read_text(path: &Path) -> Result<String, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    // One byte past the bound tells "exactly at the limit" from "over it".
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|source| LoadError::NotText {
        path: path.to_path_buf(),
        source,
    })
}

/// Resolves every pool's TCP `listen` host, reporting each one that does
/// not resolve with its pool and key, as validation reports problems.
///
/// Blocking DNS, deliberately: it runs before the runtime serves anyone (at
/// start, `-t`) or on a blocking thread (reload plans), never on a worker.
#[allow(clippy::disallowed_methods)]
pub fn check_listen_hosts(config: &Config) -> Result<(), ConfigError> {
    let problems: Vec<Problem> = config
        .pools
        .iter()
        .filter_map(|pool| {
            let Listen::Tcp { host, port } = &pool.listen else {
                return None;
            };
            let reason = match (host.as_str(), *port).to_socket_addrs() {
                Ok(addrs) if addrs.len() > 0 => return None,
                Ok(_) => "no address".to_owned(),
                Err(e) => e.to_string(),
            };
            Some(Problem {
                pool: Some(pool.name.clone()),
                key: Some("listen".to_owned()),
                message: format!(
                    "listen {:?}: host {host:?} does not resolve ({reason})",
                    pool.listen.to_string()
                ),
                line: None,
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("twem-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    // A never-ending file stops at the bound instead of growing until memory
    // runs out; the error names the file.
    #[test]
    fn dev_zero_is_refused() {
        let err = read_text(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(err, LoadError::TooLarge { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "configuration file '/dev/zero' is larger than 64 MiB; is it the right file?"
        );
    }

    #[test]
    fn missing_and_binary_files() {
        let err = read_text(Path::new("/nonexistent/twem.yml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read configuration file '/nonexistent/twem.yml': "),
            "{err}"
        );
        let err = read_text(&temp("bin.yml", b"a:\xff\n")).unwrap_err();
        assert!(matches!(err, LoadError::NotText { .. }), "{err}");
    }

    // An unresolvable listen host is a problem of that pool's `listen`; an
    // address literal and a unix socket need no lookup.
    #[test]
    fn listen_host_must_resolve() {
        let text = "a:\n  listen: nosuch.invalid:22121\n  servers:\n   - 127.0.0.1:6379:1\n\
                    b:\n  listen: 127.0.0.1:22122\n  servers:\n   - 127.0.0.1:6379:1\n\
                    c:\n  listen: /tmp/c.sock\n  servers:\n   - 127.0.0.1:6379:1\n";
        let err = load(&temp("unresolved.yml", text.as_bytes())).unwrap_err();
        let LoadError::Invalid(err) = err else {
            panic!("{err}")
        };
        assert_eq!(err.problems.len(), 1, "{err}");
        let p = &err.problems[0];
        assert_eq!(
            (p.pool.as_deref(), p.key.as_deref()),
            (Some("a"), Some("listen"))
        );
        assert!(
            p.to_string().starts_with(
                "pool \"a\": listen \"nosuch.invalid:22121\": host \"nosuch.invalid\" does not resolve ("
            ),
            "{p}"
        );
        let ok = text.replace("nosuch.invalid", "localhost");
        assert!(load(&temp("resolved.yml", ok.as_bytes())).is_ok());
    }
}
