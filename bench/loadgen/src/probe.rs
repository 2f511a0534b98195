//! The memory scenarios: what a proxy's RSS does when clients open connections and
//! sit idle, and when a client pipelines large GETs and never reads the replies.

use crate::procfs::vm_rss_kib;
use crate::Error;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// RSS before and after opening idle connections.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleReport {
    /// Connections opened (and still open when `after_kib` was read).
    pub conns: u64,
    /// Proxy RSS before the first connection, KiB.
    pub before_kib: u64,
    /// Proxy RSS with all connections open, after the settle time, KiB.
    pub after_kib: u64,
}

impl IdleReport {
    /// RSS growth per connection in KiB (negative growth reads as 0).
    pub fn kib_per_conn(&self) -> f64 {
        if self.conns == 0 {
            return 0.0;
        }
        self.after_kib.saturating_sub(self.before_kib) as f64 / self.conns as f64
    }
}

/// Opens `conns` connections to `addr` that send nothing, waits `settle` for the
/// proxy to accept them all, and reads `pid`'s RSS before and after.
pub fn idle(addr: SocketAddr, pid: u32, conns: u64, settle: Duration) -> Result<IdleReport, Error> {
    let before_kib = vm_rss_kib(pid)?;
    let mut open = Vec::with_capacity(usize::try_from(conns).unwrap_or(0));
    for i in 0..conns {
        let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| Error::io(format!("open idle connection {i} to {addr}"), e))?;
        open.push(s);
    }
    sleep(settle);
    let after_kib = vm_rss_kib(pid)?;
    drop(open);
    Ok(IdleReport {
        conns,
        before_kib,
        after_kib,
    })
}

/// RSS around a client that pipelines GETs of a large value and never reads.
#[derive(Debug, Clone, PartialEq)]
pub struct FloodReport {
    /// GETs sent.
    pub count: u64,
    /// Size of the value each GET returns, bytes.
    pub value_bytes: u64,
    /// Proxy RSS after the value was stored, before the flood, KiB.
    pub before_kib: u64,
    /// Highest RSS sampled while the client held the connection, KiB.
    pub peak_kib: u64,
    /// RSS shortly after the client closed, KiB.
    pub after_close_kib: u64,
}

impl FloodReport {
    /// Peak growth over the baseline in KiB.
    pub fn growth_kib(&self) -> u64 {
        self.peak_kib.saturating_sub(self.before_kib)
    }
}

fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Stores a `value_bytes` value under `key` through `addr` (Redis protocol), then
/// sends `count` GETs of it on a fresh connection without ever reading, samples
/// `pid`'s RSS every `sample_every` for `hold`, and closes.
pub fn flood(
    addr: SocketAddr,
    pid: u32,
    key: &str,
    value_bytes: u64,
    count: u64,
    hold: Duration,
    sample_every: Duration,
) -> Result<FloodReport, Error> {
    let value = vec![b'v'; usize::try_from(value_bytes).unwrap_or(0)];
    {
        let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| Error::io(format!("connect to {addr} to store the value"), e))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| Error::io("set read timeout", e))?;
        let mut w = s.try_clone().map_err(|e| Error::io("clone socket", e))?;
        let mut buf = Vec::with_capacity(value.len() + 64);
        resp_command(&mut buf, &[b"SET", key.as_bytes(), &value]);
        w.write_all(&buf)
            .map_err(|e| Error::io(format!("SET {key} through {addr}"), e))?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| Error::io(format!("read the reply to SET {key}"), e))?;
        if line.trim_end() != "+OK" {
            return Err(Error::Protocol(format!(
                "SET {key} through {addr} answered {:?}",
                line.trim_end()
            )));
        }
    }
    // Let the proxy release the SET's buffers before the baseline is read.
    sleep(Duration::from_millis(300));
    let before_kib = vm_rss_kib(pid)?;
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| Error::io(format!("connect the flooding client to {addr}"), e))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| Error::io("set write timeout", e))?;
    let mut buf = Vec::new();
    for _ in 0..count {
        resp_command(&mut buf, &[b"GET", key.as_bytes()]);
    }
    s.write_all(&buf)
        .map_err(|e| Error::io(format!("send {count} GETs to {addr}"), e))?;
    let mut peak_kib = before_kib;
    let t0 = Instant::now();
    while t0.elapsed() < hold {
        peak_kib = peak_kib.max(vm_rss_kib(pid)?);
        sleep(sample_every);
    }
    peak_kib = peak_kib.max(vm_rss_kib(pid)?);
    drop(s);
    sleep(Duration::from_millis(500));
    let after_close_kib = vm_rss_kib(pid)?;
    Ok(FloodReport {
        count,
        value_bytes,
        before_kib,
        peak_kib,
        after_close_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KiB per connection of an idle report.
    fn kib_per_conn(conns: u64, before_kib: u64, after_kib: u64) -> f64 {
        IdleReport {
            conns,
            before_kib,
            after_kib,
        }
        .kib_per_conn()
    }

    // Growth per connection divides the RSS delta by the connection count.
    #[test]
    fn kib_per_conn_divides_growth() {
        assert_eq!(kib_per_conn(1000, 5000, 7500), 2.5);
    }

    // RSS that shrank reads as no growth rather than wrapping around.
    #[test]
    fn shrinking_rss_is_zero_growth() {
        assert_eq!(kib_per_conn(10, 5000, 4000), 0.0);
        let f = FloodReport {
            count: 1,
            value_bytes: 1,
            before_kib: 10,
            peak_kib: 5,
            after_close_kib: 5,
        };
        assert_eq!(f.growth_kib(), 0);
    }

    // RESP commands are framed as arrays of bulk strings.
    #[test]
    fn resp_framing() {
        let mut out = Vec::new();
        resp_command(&mut out, &[b"GET", b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    // The idle probe really opens the connections: the listener sees all of them.
    #[test]
    fn idle_opens_every_connection() {
        let (addr, acceptor) = crate::fake_server(|listener| {
            let mut n = 0;
            let mut held = Vec::new();
            while n < 5 {
                held.push(listener.accept().unwrap());
                n += 1;
            }
            n
        });
        let r = idle(addr, std::process::id(), 5, Duration::from_millis(10)).unwrap();
        assert_eq!(r.conns, 5);
        assert!(r.before_kib > 0);
        assert_eq!(acceptor.join().unwrap(), 5);
    }

    // The flood probe stores the value, then sends exactly `count` GETs unread.
    #[test]
    fn flood_sends_set_then_unread_gets() {
        let (addr, server) = crate::fake_server(|listener| {
            let (setter, _) = listener.accept().unwrap();
            let mut w = setter.try_clone().unwrap();
            let mut r = BufReader::new(setter);
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "*3\r\n");
            w.write_all(b"+OK\r\n").unwrap();
            let (flooder, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut BufReader::new(flooder), &mut all).unwrap();
            all
        });
        let r = flood(
            addr,
            std::process::id(),
            "big",
            16,
            3,
            Duration::from_millis(30),
            Duration::from_millis(10),
        )
        .unwrap();
        assert_eq!(r.count, 3);
        assert!(r.peak_kib >= r.before_kib);
        let sent = server.join().unwrap();
        assert_eq!(sent, b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(3));
    }
}
