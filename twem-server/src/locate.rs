//! `twemproxy --locate`: where does a key live, and where would it go if a
//! server died? Reads keys from stdin (one per line, raw or hex) and prints
//! the server each maps to, computed by the same `Ring` the proxy routes with.
//! For a cluster pool (`cluster: true`) placement is the cluster's: the slot
//! map is read from the cluster now, and each line is the key's hash slot
//! and the `host:port` of the node serving it.

use std::io::{BufRead, Write};

use twem_core::config::Config;

/// Why a locate run failed.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// The pool choice is missing or wrong.
    #[error("{0}")]
    Pool(String),
    /// An `--eject` name is not a server of the pool, or ejection is off.
    #[error("{0}")]
    Eject(String),
    /// A `--hex` line is not hex.
    #[error("line {line}: not a hex-encoded key: {text:?}")]
    Hex {
        /// 1-based line number.
        line: usize,
        /// The line as read.
        text: String,
    },
    /// Every server of the pool is ejected: no key has a place.
    #[error("every server of pool \"{0}\" is ejected: keys have nowhere to go")]
    NoLiveServer(String),
    /// A cluster pool's slot map could not be read.
    #[error("{0}")]
    Cluster(String),
    /// Reading stdin or writing stdout failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Run `--locate` over `input`, writing one server name per key to `out`.
pub fn run(
    config: &Config,
    pool: Option<&str>,
    hex: bool,
    eject: &[String],
    input: impl BufRead,
    mut out: impl Write,
) -> Result<(), LocateError> {
    let names = || {
        config
            .pools
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pc = match pool {
        Some(name) => config.pool(name).ok_or_else(|| {
            LocateError::Pool(format!("no pool named \"{name}\" (pools: {})", names()))
        })?,
        None if config.pools.len() == 1 => &config.pools[0],
        None => {
            return Err(LocateError::Pool(format!(
                "--pool is required: the file has {} pools ({})",
                config.pools.len(),
                names()
            )))
        }
    };
    if pc.cluster.is_some() {
        if !eject.is_empty() {
            return Err(LocateError::Eject(format!(
                "pool \"{}\" is a cluster pool: the cluster fails nodes over itself; --eject does not apply",
                pc.name
            )));
        }
        return cluster_run(pc, hex, input, out);
    }
    let mut ring = pc
        .ring()
        .map_err(|e| LocateError::Pool(format!("pool \"{}\": {e}", pc.name)))?;
    if !eject.is_empty() {
        if !pc.auto_eject_hosts {
            return Err(LocateError::Eject(format!(
                "pool \"{}\" has auto_eject_hosts: false, so nutcracker never ejects its servers; --eject does not apply",
                pc.name
            )));
        }
        let mut idx = Vec::with_capacity(eject.len());
        for name in eject {
            match ring.index_of(name) {
                Some(i) => idx.push(i),
                None => {
                    let all: Vec<&str> = ring.servers().iter().map(|s| s.name.as_str()).collect();
                    return Err(LocateError::Eject(format!(
                        "pool \"{}\" has no server named \"{name}\" (servers: {})",
                        pc.name,
                        all.join(", ")
                    )));
                }
            }
        }
        ring = ring.with_ejected(&idx);
    }
    each_key(hex, input, |key| {
        let name = ring
            .locate_name(key)
            .ok_or_else(|| LocateError::NoLiveServer(pc.name.clone()))?;
        writeln!(out, "{name}")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(())
}

/// `--locate` on a cluster pool: the pool is started (on a runtime of its
/// own), its slot map read from the seeds, and each key printed as
/// `<slot> <host:port>` (`<slot> unserved` when no node serves it).
fn cluster_run(
    pc: &twem_core::config::PoolConfig,
    hex: bool,
    input: impl BufRead,
    mut out: impl Write,
) -> Result<(), LocateError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pool = rt
        .block_on(async { twem_core::Pool::new(pc.clone()) })
        .map_err(|e| LocateError::Cluster(e.to_string()))?;
    let ready = rt.block_on(pool.cluster_ready(std::time::Duration::from_secs(5)));
    if !ready {
        return Err(LocateError::Cluster(format!(
            "pool \"{}\": no seed node answered CLUSTER SHARDS within 5 s",
            pc.name
        )));
    }
    each_key(hex, input, |key| {
        match pool.cluster_locate(key) {
            Some((slot, Some(node))) => writeln!(out, "{slot} {node}")?,
            Some((slot, None)) => writeln!(out, "{slot} unserved")?,
            None => return Err(LocateError::Cluster("not a cluster pool".into())),
        }
        Ok(())
    })?;
    out.flush()?;
    Ok(())
}

/// Call `place` with each key of `input` (one a line, raw or hex).
fn each_key(
    hex: bool,
    mut input: impl BufRead,
    mut place: impl FnMut(&[u8]) -> Result<(), LocateError>,
) -> Result<(), LocateError> {
    let mut line = Vec::new();
    let mut n = 0usize;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        n += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let key = if hex {
            decode_hex(&line).ok_or_else(|| LocateError::Hex {
                line: n,
                text: String::from_utf8_lossy(&line).into_owned(),
            })?
        } else {
            line.clone()
        };
        place(&key)?;
    }
    Ok(())
}

fn decode_hex(s: &[u8]) -> Option<Vec<u8>> {
    let s: &[u8] = s.trim_ascii();
    if s.len() % 2 != 0 {
        return None;
    }
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    s.chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "alpha:\n  listen: 127.0.0.1:22121\n  auto_eject_hosts: true\n  servers:\n   - 127.0.0.1:6379:1 one\n   - 127.0.0.1:6380:1 two\n   - 127.0.0.1:6381:1 three\nbeta:\n  listen: 127.0.0.1:22122\n  servers:\n   - 127.0.0.1:6379:1\n";

    fn locate(
        pool: Option<&str>,
        hex: bool,
        eject: &[&str],
        input: &str,
    ) -> Result<String, LocateError> {
        let cfg = Config::from_yaml(CONF).expect("test config parses");
        let ej: Vec<String> = eject.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        run(&cfg, pool, hex, &ej, input.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).expect("names are UTF-8"))
    }

    // One output line per input line, the same names the Ring gives.
    #[test]
    fn one_line_per_key_matching_the_ring() {
        let cfg = Config::from_yaml(CONF).expect("parses");
        let ring = cfg.pool("alpha").expect("alpha").ring().expect("ring");
        let out = locate(Some("alpha"), false, &[], "a\nfoo\n\nbar\n").expect("runs");
        let want: Vec<&str> = ["a", "foo", "", "bar"]
            .iter()
            .map(|k| ring.locate_name(k.as_bytes()).expect("live"))
            .collect();
        assert_eq!(out.lines().collect::<Vec<_>>(), want);
    }

    // Hex input decodes to the same keys; an empty line is the empty key.
    #[test]
    fn hex_matches_raw() {
        let raw = locate(Some("alpha"), false, &[], "foo\n\nbar\n").expect("raw");
        let hex = locate(Some("alpha"), true, &[], "666f6f\n\n626172\n").expect("hex");
        assert_eq!(raw, hex);
        assert!(matches!(
            locate(Some("alpha"), true, &[], "zz\n"),
            Err(LocateError::Hex { line: 1, .. })
        ));
    }

    // Several pools and no --pool: refused, naming the pools.
    #[test]
    fn pool_required_with_several() {
        let e = locate(None, false, &[], "a\n").expect_err("ambiguous");
        assert!(
            e.to_string().contains("--pool is required") && e.to_string().contains("alpha, beta"),
            "{e}"
        );
        assert!(locate(Some("nope"), false, &[], "a\n").is_err());
    }

    // Ejecting a server never maps a key to it, and keys that were elsewhere
    // stay where they were (consistent hashing).
    #[test]
    fn eject_moves_only_the_ejected_servers_keys() {
        let keys: String = (0..200).map(|i| format!("key{i}\n")).collect();
        let before = locate(Some("alpha"), false, &[], &keys).expect("before");
        let after = locate(Some("alpha"), false, &["two"], &keys).expect("after");
        for (b, a) in before.lines().zip(after.lines()) {
            assert_ne!(a, "two");
            if b != "two" {
                assert_eq!(a, b);
            }
        }
        assert!(before.lines().any(|l| l == "two"));
    }

    // --eject needs auto_eject_hosts and a real server name.
    #[test]
    fn eject_validated() {
        assert!(matches!(
            locate(Some("beta"), false, &["127.0.0.1:6379"], "a\n"),
            Err(LocateError::Eject(_))
        ));
        assert!(matches!(
            locate(Some("alpha"), false, &["nope"], "a\n"),
            Err(LocateError::Eject(_))
        ));
        assert!(matches!(
            locate(Some("alpha"), false, &["one", "two", "three"], "a\n"),
            Err(LocateError::NoLiveServer(_))
        ));
    }
}
