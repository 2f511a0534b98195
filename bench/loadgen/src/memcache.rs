//! A closed-loop memcached ASCII load client: each connection sends a batch of
//! `pipeline` requests, reads all their replies, and records for each request the
//! time from the batch's write to its reply (what `redis-benchmark -P` reports too).

use crate::stats::{summarize, Summary};
use crate::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Longest reply line accepted; a longer one means the stream is not memcached.
const MAX_LINE: u64 = 64 * 1024;
/// Largest value accepted in a `VALUE` line (memcached's item limit is 1 MiB by default).
const MAX_VALUE: usize = 64 * 1024 * 1024;
/// How long a reply may take before the run is declared stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Which command each request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// `get <key>`.
    Get,
    /// `set <key> 0 0 <n>` with an n-byte value.
    Set,
    /// `get <k1> ... <kN>`: one multi-key request.
    Mget,
}

impl Test {
    /// Parses `get`, `set` or `mget`.
    pub fn parse(s: &str) -> Result<Test, Error> {
        match s {
            "get" => Ok(Test::Get),
            "set" => Ok(Test::Set),
            "mget" => Ok(Test::Mget),
            other => Err(Error::Usage(format!(
                "--test must be get, set or mget, got {other:?}"
            ))),
        }
    }

    /// The name printed in the CSV row (as redis-benchmark names its tests).
    pub fn label(self, mget_keys: usize) -> String {
        match self {
            Test::Get => "GET".to_string(),
            Test::Set => "SET".to_string(),
            Test::Mget => format!("MGET_{mget_keys}"),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Server (proxy or memcached) address.
    pub addr: SocketAddr,
    /// The command.
    pub test: Test,
    /// Parallel connections.
    pub clients: usize,
    /// Requests per batch on one connection.
    pub pipeline: usize,
    /// Total requests over all connections.
    pub requests: u64,
    /// Keys are `key:NNNNNNNNNNNN` with N uniform in `0..keyspace` (redis-benchmark's `-r`).
    pub keyspace: u64,
    /// Bytes in each `set` value.
    pub value_size: usize,
    /// Keys in each `mget` request.
    pub mget_keys: usize,
    /// Seed of the key sequence.
    pub seed: u64,
}

/// How one reply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `STORED`, `END` (after any number of `VALUE`s) and the like.
    Ok,
    /// `ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`: the line, for the message.
    Error(String),
}

/// xorshift64*: enough to spread keys, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is remapped: xorshift would stay at 0).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn push_key(out: &mut Vec<u8>, rng: &mut Rng, keyspace: u64) {
    let n = rng.next_u64() % keyspace.max(1);
    // Same shape as redis-benchmark's `key:__rand_int__` so both suites hash alike.
    let _ = write!(out, "key:{n:012}");
}

/// Appends one request of `spec.test` to `out`.
pub fn encode_request(spec: &LoadSpec, rng: &mut Rng, value: &[u8], out: &mut Vec<u8>) {
    match spec.test {
        Test::Get => {
            out.extend_from_slice(b"get ");
            push_key(out, rng, spec.keyspace);
        }
        Test::Mget => {
            out.extend_from_slice(b"get");
            for _ in 0..spec.mget_keys.max(1) {
                out.push(b' ');
                push_key(out, rng, spec.keyspace);
            }
        }
        Test::Set => {
            out.extend_from_slice(b"set ");
            push_key(out, rng, spec.keyspace);
            let _ = write!(out, " 0 0 {}\r\n", value.len());
            out.extend_from_slice(value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn read_line<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> Result<(), Error> {
    line.clear();
    let n = r
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', line)
        .map_err(|e| Error::io("read reply", e))?;
    if n == 0 {
        return Err(Error::Protocol("server closed the connection".into()));
    }
    if !line.ends_with(b"\r\n") {
        return Err(Error::Protocol(format!(
            "reply line not ended by CRLF within {MAX_LINE} bytes: {:?}",
            String::from_utf8_lossy(&line[..line.len().min(80)])
        )));
    }
    line.truncate(line.len() - 2);
    Ok(())
}

/// Reads one whole reply to a request of `test`, skipping any values.
pub fn read_reply<R: BufRead>(r: &mut R, test: Test, line: &mut Vec<u8>) -> Result<Reply, Error> {
    loop {
        read_line(r, line)?;
        let text = String::from_utf8_lossy(line);
        if text == "ERROR" || text.starts_with("CLIENT_ERROR") || text.starts_with("SERVER_ERROR") {
            return Ok(Reply::Error(text.into_owned()));
        }
        match test {
            Test::Set => {
                return match text.as_ref() {
                    "STORED" | "NOT_STORED" | "EXISTS" | "NOT_FOUND" => Ok(Reply::Ok),
                    other => Err(Error::Protocol(format!(
                        "unexpected reply to set: {other:?}"
                    ))),
                };
            }
            Test::Get | Test::Mget => {
                if text == "END" {
                    return Ok(Reply::Ok);
                }
                let Some(rest) = text.strip_prefix("VALUE ") else {
                    return Err(Error::Protocol(format!(
                        "unexpected reply to get: {text:?}"
                    )));
                };
                // VALUE <key> <flags> <bytes> [<cas>]
                let len: usize = rest
                    .split(' ')
                    .nth(2)
                    .and_then(|b| b.parse().ok())
                    .filter(|&n| n <= MAX_VALUE)
                    .ok_or_else(|| Error::Protocol(format!("bad VALUE line: {text:?}")))?;
                // The data block and its CRLF; discarded, only its arrival matters.
                let skipped =
                    std::io::copy(&mut r.by_ref().take(len as u64 + 2), &mut std::io::sink())
                        .map_err(|e| Error::io("read value", e))?;
                if skipped != len as u64 + 2 {
                    return Err(Error::Protocol(
                        "server closed the connection mid-value".into(),
                    ));
                }
            }
        }
    }
}

struct WorkerResult {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn worker(
    spec: &LoadSpec,
    index: usize,
    share: u64,
    stream: TcpStream,
    start: &Barrier,
) -> Result<WorkerResult, Error> {
    let mut reader = BufReader::with_capacity(
        64 * 1024,
        stream
            .try_clone()
            .map_err(|e| Error::io("clone socket", e))?,
    );
    let mut writer = stream;
    let mut rng = Rng::new(spec.seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let value = vec![b'x'; spec.value_size];
    let mut out = Vec::with_capacity(4096);
    let mut line = Vec::with_capacity(256);
    let mut res = WorkerResult {
        latencies_us: Vec::with_capacity(usize::try_from(share).unwrap_or(0)),
        errors: 0,
        first_error: None,
    };
    start.wait();
    let mut left = share;
    let batch_max = spec.pipeline.max(1) as u64;
    while left > 0 {
        let n = left.min(batch_max);
        out.clear();
        for _ in 0..n {
            encode_request(spec, &mut rng, &value, &mut out);
        }
        let t0 = Instant::now();
        writer
            .write_all(&out)
            .map_err(|e| Error::io(format!("write to {}", spec.addr), e))?;
        for _ in 0..n {
            if let Reply::Error(msg) = read_reply(&mut reader, spec.test, &mut line)? {
                res.errors += 1;
                res.first_error.get_or_insert(msg);
            }
            res.latencies_us
                .push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        left -= n;
    }
    Ok(res)
}

/// Runs the load and summarises it; the first reply error's text is returned too.
pub fn run(spec: &LoadSpec) -> Result<(Summary, Option<String>), Error> {
    let clients = spec.clients.max(1);
    // Connect everyone before the clock starts, so connection setup is not timed.
    let mut streams = Vec::with_capacity(clients);
    for i in 0..clients {
        let s = TcpStream::connect_timeout(&spec.addr, Duration::from_secs(5))
            .map_err(|e| Error::io(format!("connect client {i} to {}", spec.addr), e))?;
        s.set_nodelay(true)
            .map_err(|e| Error::io("set TCP_NODELAY", e))?;
        s.set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| Error::io("set read timeout", e))?;
        streams.push(s);
    }
    let barrier = Arc::new(Barrier::new(clients + 1));
    let per = spec.requests / clients as u64;
    let extra = spec.requests % clients as u64;
    let mut handles = Vec::with_capacity(clients);
    for (i, stream) in streams.into_iter().enumerate() {
        let share = per + u64::from((i as u64) < extra);
        let spec = spec.clone();
        let barrier = Arc::clone(&barrier);
        handles.push(thread::spawn(move || {
            worker(&spec, i, share, stream, &barrier)
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    let mut all = Vec::with_capacity(usize::try_from(spec.requests).unwrap_or(0));
    let mut errors = 0;
    let mut first_error = None;
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => {
                all.extend_from_slice(&r.latencies_us);
                errors += r.errors;
                if first_error.is_none() {
                    first_error = r.first_error;
                }
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(Error::Protocol("a client thread panicked".into()));
            }
        }
    }
    let elapsed = t0.elapsed();
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((summarize(&mut all, errors, elapsed), first_error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::net::TcpListener;

    fn spec(test: Test) -> LoadSpec {
        LoadSpec {
            addr: "127.0.0.1:1".parse().unwrap(),
            test,
            clients: 1,
            pipeline: 1,
            requests: 1,
            keyspace: 100,
            value_size: 3,
            mget_keys: 3,
            seed: 7,
        }
    }

    // A get is one line with one key of redis-benchmark's shape.
    #[test]
    fn encodes_get() {
        let mut out = Vec::new();
        encode_request(&spec(Test::Get), &mut Rng::new(1), b"", &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("get key:0000000000"), "{s}");
        assert!(s.ends_with("\r\n"));
        assert_eq!(s.len(), "get key:000000000000\r\n".len());
    }

    // A multi-get carries mget_keys keys on one line.
    #[test]
    fn encodes_mget_with_n_keys() {
        let mut out = Vec::new();
        encode_request(&spec(Test::Mget), &mut Rng::new(1), b"", &mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.trim_end().split(' ').count(), 4, "{s}");
    }

    // A set carries the value's length and the value as a data block.
    #[test]
    fn encodes_set_with_data_block() {
        let mut out = Vec::new();
        encode_request(&spec(Test::Set), &mut Rng::new(1), b"abc", &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with(" 0 0 3\r\nabc\r\n"), "{s}");
    }

    // Values are skipped by length (even when they contain CRLF) up to END.
    #[test]
    fn reads_get_reply_with_values() {
        let mut r = Cursor::new(
            b"VALUE a 0 4\r\n\r\nxy\r\nVALUE b 0 1 99\r\nz\r\nEND\r\nSTORED\r\n".to_vec(),
        );
        let mut line = Vec::new();
        assert_eq!(
            read_reply(&mut r, Test::Mget, &mut line).unwrap(),
            Reply::Ok
        );
        // The next reply starts right after END: nothing was over-read.
        assert_eq!(read_reply(&mut r, Test::Set, &mut line).unwrap(), Reply::Ok);
    }

    // Error lines end the reply and are reported as errors, not failures.
    #[test]
    fn error_lines_are_error_replies() {
        let mut r = Cursor::new(b"SERVER_ERROR Connection refused\r\n".to_vec());
        let mut line = Vec::new();
        assert_eq!(
            read_reply(&mut r, Test::Get, &mut line).unwrap(),
            Reply::Error("SERVER_ERROR Connection refused".into())
        );
    }

    // A stream cut inside a value is a protocol failure.
    #[test]
    fn truncated_value_fails() {
        let mut r = Cursor::new(b"VALUE a 0 10\r\nabc".to_vec());
        let mut line = Vec::new();
        assert!(read_reply(&mut r, Test::Get, &mut line).is_err());
    }

    // A reply that makes no sense for the request fails instead of desynchronising.
    #[test]
    fn unexpected_line_fails() {
        let mut r = Cursor::new(b"+OK\r\n".to_vec());
        let mut line = Vec::new();
        assert!(read_reply(&mut r, Test::Get, &mut line).is_err());
        let mut r = Cursor::new(b"VALUE a 0 notanumber\r\n".to_vec());
        assert!(read_reply(&mut r, Test::Get, &mut line).is_err());
    }

    // End to end against a scripted server: every request is answered and timed.
    #[test]
    fn runs_against_a_fake_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut line = String::new();
            let mut answered = 0;
            while answered < 10 {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                w.write_all(b"VALUE k 0 1\r\nv\r\nEND\r\n").unwrap();
                answered += 1;
            }
            answered
        });
        let mut s = spec(Test::Get);
        s.addr = addr;
        s.requests = 10;
        s.pipeline = 4;
        let (summary, first_error) = run(&s).unwrap();
        assert_eq!(summary.count, 10);
        assert_eq!(summary.errors, 0);
        assert!(first_error.is_none());
        assert!(summary.rps > 0.0);
        assert_eq!(server.join().unwrap(), 10);
    }
}
