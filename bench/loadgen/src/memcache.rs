//! A closed-loop memcached ASCII load client: each connection sends a batch of
//! `pipeline` requests, reads all their replies, and records for each request the
//! time from the batch's write to its reply (what `redis-benchmark -P` reports too).
//! All connections share one thread and one event loop, as in redis-benchmark.

use crate::stats::{summarize, Summary};
use crate::Error;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

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

/// Where the first CRLF-ended line of `buf` ends: (line without CRLF, bytes used).
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, Error> {
    match memchr_crlf(buf) {
        Some(i) => Ok(buf.get(..i).map(|l| (l, i + 2))),
        None if buf.len() as u64 > MAX_LINE => Err(Error::Protocol(format!(
            "no CRLF within {MAX_LINE} bytes: {:?}",
            String::from_utf8_lossy(buf.get(..80).unwrap_or(buf))
        ))),
        None => Ok(None),
    }
}

fn memchr_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Parses one whole reply to a request of `test` at the start of `buf`:
/// `Ok(None)` when more bytes are needed, else the reply and the bytes it took.
/// Values are skipped by their announced length (they may contain CRLF).
pub fn parse_reply(buf: &[u8], test: Test) -> Result<Option<(Reply, usize)>, Error> {
    let mut pos = 0;
    loop {
        let Some((l, used)) = line(buf.get(pos..).unwrap_or_default())? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(l);
        pos += used;
        if text == "ERROR" || text.starts_with("CLIENT_ERROR") || text.starts_with("SERVER_ERROR") {
            return Ok(Some((Reply::Error(text.into_owned()), pos)));
        }
        match test {
            Test::Set => {
                return match text.as_ref() {
                    "STORED" | "NOT_STORED" | "EXISTS" | "NOT_FOUND" => Ok(Some((Reply::Ok, pos))),
                    other => Err(Error::Protocol(format!(
                        "unexpected reply to set: {other:?}"
                    ))),
                };
            }
            Test::Get | Test::Mget => {
                if text == "END" {
                    return Ok(Some((Reply::Ok, pos)));
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
                let end = pos + len + 2;
                match buf.get(pos + len..end) {
                    None => return Ok(None),
                    Some(b"\r\n") => pos = end,
                    Some(_) => {
                        return Err(Error::Protocol(format!(
                            "value of {len} bytes not followed by CRLF"
                        )))
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct WorkerResult {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

async fn worker(
    spec: Arc<LoadSpec>,
    index: usize,
    share: u64,
    mut stream: TcpStream,
) -> Result<WorkerResult, Error> {
    let mut rng = Rng::new(spec.seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let value = vec![b'x'; spec.value_size];
    let mut out = Vec::with_capacity(4096);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut res = WorkerResult {
        latencies_us: Vec::with_capacity(usize::try_from(share).unwrap_or(0)),
        ..WorkerResult::default()
    };
    let mut left = share;
    let batch_max = spec.pipeline.max(1) as u64;
    while left > 0 {
        let n = left.min(batch_max);
        out.clear();
        for _ in 0..n {
            encode_request(&spec, &mut rng, &value, &mut out);
        }
        let t0 = Instant::now();
        stream
            .write_all(&out)
            .await
            .map_err(|e| Error::io(format!("write to {}", spec.addr), e))?;
        let mut got = 0;
        let mut pos = 0;
        while got < n {
            if let Some((reply, used)) = parse_reply(buf.get(pos..).unwrap_or_default(), spec.test)?
            {
                pos += used;
                got += 1;
                if let Reply::Error(msg) = reply {
                    res.errors += 1;
                    res.first_error.get_or_insert(msg);
                }
                res.latencies_us
                    .push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
                continue;
            }
            buf.drain(..pos);
            pos = 0;
            let read = timeout(READ_TIMEOUT, stream.read(&mut chunk))
                .await
                .map_err(|_| {
                    Error::Protocol(format!(
                        "no reply from {} within {READ_TIMEOUT:?}",
                        spec.addr
                    ))
                })?
                .map_err(|e| Error::io(format!("read from {}", spec.addr), e))?;
            if read == 0 {
                return Err(Error::Protocol(format!(
                    "{} closed the connection",
                    spec.addr
                )));
            }
            buf.extend_from_slice(chunk.get(..read).unwrap_or_default());
        }
        buf.drain(..pos);
        left -= n;
    }
    Ok(res)
}

async fn run_async(spec: Arc<LoadSpec>) -> Result<(Summary, Option<String>), Error> {
    let clients = spec.clients.max(1);
    // Connect everyone before the clock starts, so connection setup is not timed.
    let mut streams = Vec::with_capacity(clients);
    for i in 0..clients {
        let s = timeout(Duration::from_secs(5), TcpStream::connect(spec.addr))
            .await
            .map_err(|_| {
                Error::Protocol(format!("connect client {i} to {}: timed out", spec.addr))
            })?
            .map_err(|e| Error::io(format!("connect client {i} to {}", spec.addr), e))?;
        s.set_nodelay(true)
            .map_err(|e| Error::io("set TCP_NODELAY", e))?;
        streams.push(s);
    }
    let per = spec.requests / clients as u64;
    let extra = spec.requests % clients as u64;
    // On a current-thread runtime no task runs before the first await below, so the
    // clock starts before any request is sent.
    let t0 = Instant::now();
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            let share = per + u64::from((i as u64) < extra);
            tokio::spawn(worker(Arc::clone(&spec), i, share, stream))
        })
        .collect();
    let mut all = Vec::with_capacity(usize::try_from(spec.requests).unwrap_or(0));
    let mut errors = 0;
    let mut first_error = None;
    let mut failure = None;
    for h in handles {
        match h.await {
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
            Err(e) => {
                failure.get_or_insert(Error::Protocol(format!("a client task failed: {e}")));
            }
        }
    }
    let elapsed = t0.elapsed();
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((summarize(&mut all, errors, elapsed), first_error))
}

/// Runs the load on one thread and summarises it; the first error reply's text too.
pub fn run(spec: &LoadSpec) -> Result<(Summary, Option<String>), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the event loop", e))?;
    rt.block_on(run_async(Arc::new(spec.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

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

    /// The first request of `test` (seed 1) carrying `value`, as text.
    fn encoded(test: Test, value: &[u8]) -> String {
        let mut out = Vec::new();
        encode_request(&spec(test), &mut Rng::new(1), value, &mut out);
        String::from_utf8(out).unwrap()
    }

    // A get is one line with one key of redis-benchmark's shape.
    #[test]
    fn encodes_get() {
        let s = encoded(Test::Get, b"");
        assert!(s.starts_with("get key:0000000000"), "{s}");
        assert!(s.ends_with("\r\n"));
        assert_eq!(s.len(), "get key:000000000000\r\n".len());
    }

    // A multi-get carries mget_keys keys on one line.
    #[test]
    fn encodes_mget_with_n_keys() {
        let s = encoded(Test::Mget, b"");
        assert_eq!(s.trim_end().split(' ').count(), 4, "{s}");
    }

    // A set carries the value's length and the value as a data block.
    #[test]
    fn encodes_set_with_data_block() {
        let s = encoded(Test::Set, b"abc");
        assert!(s.ends_with(" 0 0 3\r\nabc\r\n"), "{s}");
    }

    // Values are skipped by length (even when they contain CRLF) up to END, and
    // the bytes used stop right after END.
    #[test]
    fn parses_get_reply_with_values() {
        let buf = b"VALUE a 0 4\r\n\r\nxy\r\nVALUE b 0 1 99\r\nz\r\nEND\r\nSTORED\r\n";
        let (reply, used) = parse_reply(buf, Test::Mget).unwrap().unwrap();
        assert_eq!(reply, Reply::Ok);
        assert_eq!(&buf[used..], b"STORED\r\n");
        let (reply, used2) = parse_reply(&buf[used..], Test::Set).unwrap().unwrap();
        assert_eq!((reply, used2), (Reply::Ok, 8));
    }

    // Every strict prefix of a complete reply asks for more bytes.
    #[test]
    fn every_prefix_needs_more() {
        let buf = b"VALUE a 0 4\r\nabcd\r\nEND\r\n";
        for cut in 0..buf.len() {
            assert_eq!(
                parse_reply(&buf[..cut], Test::Get).unwrap(),
                None,
                "cut {cut}"
            );
        }
        assert!(parse_reply(buf, Test::Get).unwrap().is_some());
    }

    // Error lines end the reply and are reported as errors, not failures.
    #[test]
    fn error_lines_are_error_replies() {
        let buf = b"SERVER_ERROR Connection refused\r\n";
        assert_eq!(
            parse_reply(buf, Test::Get).unwrap(),
            Some((
                Reply::Error("SERVER_ERROR Connection refused".into()),
                buf.len()
            ))
        );
    }

    // A reply that makes no sense for the request fails instead of desynchronising.
    #[test]
    fn unexpected_lines_fail() {
        assert!(parse_reply(b"+OK\r\n", Test::Get).is_err());
        assert!(parse_reply(b"VALUE a 0 notanumber\r\n", Test::Get).is_err());
        assert!(parse_reply(b"VALUE a 0 2\r\nabcdEND\r\n", Test::Get).is_err());
        assert!(parse_reply(b"END\r\n", Test::Set).is_err());
    }

    // A line that never ends is refused once it exceeds the limit.
    #[test]
    fn endless_line_fails() {
        let buf = vec![b'a'; MAX_LINE as usize + 1];
        assert!(parse_reply(&buf, Test::Get).is_err());
    }

    // End to end against a scripted server: every request is answered and timed.
    #[test]
    fn runs_against_a_fake_server() {
        let (addr, server) = crate::fake_server(|listener| {
            let mut answered = 0;
            let mut conns = Vec::new();
            for _ in 0..2 {
                conns.push(listener.accept().unwrap().0);
            }
            for s in conns {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                for _ in 0..5 {
                    line.clear();
                    if r.read_line(&mut line).unwrap() == 0 {
                        break;
                    }
                    // Split the reply in two writes: the client must reassemble it.
                    w.write_all(b"VALUE k 0 1\r\n").unwrap();
                    w.flush().unwrap();
                    w.write_all(b"v\r\nEND\r\n").unwrap();
                    answered += 1;
                }
            }
            answered
        });
        let mut s = spec(Test::Get);
        s.addr = addr;
        s.clients = 2;
        s.requests = 10;
        s.pipeline = 1;
        let (summary, first_error) = run(&s).unwrap();
        assert_eq!(summary.count, 10);
        assert_eq!(summary.errors, 0);
        assert!(first_error.is_none());
        assert!(summary.rps > 0.0);
        assert_eq!(server.join().unwrap(), 10);
    }
}
