//! Harness for the workspace integration tests: real `redis-server`,
//! `memcached`, `nutcracker` and `twemproxy` processes on 127.0.0.1
//! ephemeral ports, and minimal blocking clients that speak raw bytes so a
//! test can compare replies byte for byte.
//!
//! Every process started here is killed by its pid when its handle drops, so
//! a failing test leaves nothing behind.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 for a server a test is about to start, reserved for
/// this test process until it exits.
///
/// Not an ephemeral port: between this check and the server's own bind, the
/// kernel may hand a free ephemeral port to anyone's `bind(0)` or `connect()`
/// (another test's fake backend or client socket, another test run on the
/// same machine), and the server then fails to start with "Address already
/// in use". The kernel never hands out ports below the ephemeral range
/// (`ip_local_port_range`), so the port comes from there; a unix socket
/// bound in the abstract namespace under the port's name claims it against
/// other test processes (the kernel drops the claim when the process exits),
/// and a port is never given out twice in one process. Falls back to an
/// ephemeral port when the range below is too small.
pub fn free_port() -> u16 {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    static CLAIMS: Mutex<Vec<UnixListener>> = Mutex::new(Vec::new());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .min(65_536);
    if high >= LOW + 1_000 {
        let span = high - LOW;
        // Processes start at different points so they rarely even contend.
        let start = std::process::id().wrapping_mul(2_654_435_761) % span;
        for _ in 0..span {
            let port = LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            let Ok(name) = SocketAddr::from_abstract_name(format!("twem-test-port-{port}")) else {
                break;
            };
            let Ok(claim) = UnixListener::bind_addr(&name) else {
                continue; // another test process has it
            };
            if TcpListener::bind(("127.0.0.1", port as u16)).is_err() {
                continue; // something else listens there
            }
            CLAIMS.lock().unwrap_or_else(|e| e.into_inner()).push(claim);
            return port as u16;
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A fresh temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Create one under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("twem-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wait until `addr` accepts connections, or panic after `limit`.
pub fn wait_for_port(port: u16, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listening on 127.0.0.1:{port} after {limit:?}");
}

/// Run `cmd` to its end, at most `limit`: its output. A command still
/// running then (a `redis-cli --cluster create` that waits forever for
/// nodes to agree, a tool blocked on a server that stopped answering) is
/// killed and the test fails, naming it and showing what it printed: a
/// test run must end by itself.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> std::process::Output {
    run_bounded_with_input(cmd, b"", limit)
}

/// [`run_bounded`] with `input` as the command's standard input.
pub fn run_bounded_with_input(
    cmd: &mut Command,
    input: &[u8],
    limit: Duration,
) -> std::process::Output {
    run_within(cmd, input, limit).unwrap_or_else(|e| panic!("{e}"))
}

/// Run `cmd` with `input` as its standard input, at most `limit`: its
/// output, or (killed when still running then) what it printed, as an
/// error saying so. For a caller that can try again.
pub fn run_within(
    cmd: &mut Command,
    input: &[u8],
    limit: Duration,
) -> Result<std::process::Output, String> {
    let what = format!("{cmd:?}");
    let dir = TempDir::new("cmd");
    let in_path = dir.path().join("stdin");
    std::fs::write(&in_path, input).expect("stdin file");
    let in_file = std::fs::File::open(&in_path).expect("stdin file");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    // Files, not pipes: a command that prints more than a pipe holds
    // would otherwise block while this waits for it.
    let out_file = std::fs::File::create(&out_path).expect("stdout file");
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = cmd
        .stdin(in_file)
        .stdout(out_file)
        .stderr(err_file)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {what}: {e} (is it installed? .ci/run installs it)")
        });
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{what} did not end within {limit:?}; it printed:\n{}\n{}",
                String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default()),
                String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(std::process::Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    })
}

/// Wait at most `limit` for `child` (spawned with piped output, less than a
/// pipe holds: it is read only once the child has ended) to end, and
/// collect its output; one still running then is killed and the test
/// fails with what it printed. For a child that talks to the proxy while
/// the test does something else (a proxy that stopped answering would
/// otherwise leave the test waiting for ever).
pub fn wait_bounded(mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let out = child.wait_with_output().ok();
                panic!(
                    "a child process did not end within {limit:?}; it printed: {:?}",
                    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                );
            }
        }
    }
    child.wait_with_output().expect("the child's output")
}

/// Send `request` (raw HTTP) to 127.0.0.1:`port` and read the whole
/// response until the server closes (10 s read timeout: a proxy that stops
/// answering fails the test, not hangs it).
pub fn http_request(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s.write_all(request).expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("reading the response: {e} (got {out:?})"));
    out
}

/// `GET /metrics` from 127.0.0.1:`port` (`--metrics-addr`): the whole
/// response, head and body.
pub fn scrape_metrics(port: u16) -> String {
    http_request(
        port,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
}

/// A child process killed (by its pid) when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    /// What it is, for messages.
    pub what: String,
}

impl Proc {
    /// Start `cmd`, naming it `what`.
    pub fn spawn(what: &str, cmd: &mut Command) -> Proc {
        let child = cmd.stdin(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("cannot start {what}: {e} (is it installed? .ci/run installs it)")
        });
        Proc {
            child: Some(child),
            what: what.to_string(),
        }
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Send a signal to the process.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid() as i32;
        if pid > 0 {
            // SAFETY-free: `kill` through the libc crate is safe to call, but
            // the crate marks it unsafe; use the `kill` command instead so the
            // tests keep `unsafe` out entirely.
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// Wait for the process to exit within `limit`; its exit status.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        while start.elapsed() < limit {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Kill it now (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-server` on an ephemeral port, without persistence.
#[derive(Debug)]
pub struct Redis {
    /// Its port.
    pub port: u16,
    /// The process.
    pub proc: Proc,
    _dir: TempDir,
}

impl Redis {
    /// Start one with extra `redis-server` arguments (e.g. `--requirepass x`).
    pub fn start_with(extra: &[&str]) -> Redis {
        Redis::start_port(free_port(), extra)
    }

    /// Start one on a given port (to bring a killed server back).
    pub fn start_on(port: u16) -> Redis {
        Redis::start_port(port, &[])
    }

    /// Start one on a given port with extra arguments (a killed master
    /// brought back as a replica: `--replicaof`).
    pub fn start_on_with(port: u16, extra: &[&str]) -> Redis {
        Redis::start_port(port, extra)
    }

    fn start_port(port: u16, extra: &[&str]) -> Redis {
        let dir = TempDir::new("redis");
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--dir", &dir.path().display().to_string()])
        .args(extra)
        .stdout(Stdio::null());
        let proc = Proc::spawn("redis-server", &mut cmd);
        wait_for_port(port, Duration::from_secs(10));
        Redis {
            port,
            proc,
            _dir: dir,
        }
    }

    /// Start one with defaults.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A raw client connected to it.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// The integer field `name` of its `INFO section`, asked on a new
    /// connection (which the server counts among its clients).
    pub fn info_int(&self, section: &str, name: &str) -> i64 {
        let info = self.client().cmds(&format!("INFO {section}"));
        let info = String::from_utf8_lossy(&info);
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in INFO {section}: {info}"))
    }
}

/// A `memcached` on an ephemeral port.
#[derive(Debug)]
pub struct Memcached {
    /// Its port.
    pub port: u16,
    /// The process.
    pub proc: Proc,
}

impl Memcached {
    /// Start one (2 MiB item size so 1 MiB values fit).
    pub fn start() -> Memcached {
        Memcached::start_on(free_port())
    }

    /// Start one on a given port (to bring a killed server back).
    pub fn start_on(port: u16) -> Memcached {
        let mut cmd = Command::new("memcached");
        cmd.args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-I",
            "2m",
            "-m",
            "256",
        ]);
        if is_root() {
            cmd.args(["-u", "root"]);
        }
        let proc = Proc::spawn("memcached", &mut cmd);
        wait_for_port(port, Duration::from_secs(10));
        Memcached { port, proc }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A raw client connected to it.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Where the `twemproxy` binary is: `$TWEMPROXY_BIN`, else next to the test
/// executable's `deps/` directory (cargo builds it for twem-server's tests).
pub fn twemproxy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TWEMPROXY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("twemproxy");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p twem-server` first",
        bin.display()
    );
    bin
}

/// Extra flags for every twemproxy the tests start, from `TWEM_TEST_ARGS`
/// (split on blanks; e.g. `--threads 1` runs the suites on the
/// current-thread runtime). Left out when a test passes `--threads` itself.
pub fn extra_test_args(extra: &[&str]) -> Vec<String> {
    if extra.contains(&"--threads") {
        return Vec::new();
    }
    std::env::var("TWEM_TEST_ARGS")
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A proxy process (twemproxy or nutcracker) on a config written to a temp dir.
#[derive(Debug)]
pub struct ProxyProc {
    /// The process.
    pub proc: Proc,
    /// Its stats port.
    pub stats_port: u16,
    /// The directory holding its config (and log, pid file).
    pub dir: TempDir,
    /// The config file.
    pub conf: PathBuf,
}

impl ProxyProc {
    /// Start `twemproxy` with `yaml` and extra args; waits for `wait_port`.
    pub fn twem(yaml: &str, wait_port: u16, extra: &[&str]) -> ProxyProc {
        Self::start(&twemproxy_bin(), "twemproxy", yaml, wait_port, extra)
    }

    /// [`ProxyProc::twem`] run through a wrapper command that execs it, e.g.
    /// `["prlimit", "--nofile=128:128"]` for a proxy under a small
    /// descriptor limit (the pid stays the proxy's).
    pub fn twem_wrapped(wrapper: &[&str], yaml: &str, wait_port: u16, extra: &[&str]) -> ProxyProc {
        let (cmd, pre) = wrapper.split_first().expect("a wrapper command");
        let mut args: Vec<String> = pre.iter().map(|a| a.to_string()).collect();
        args.push(twemproxy_bin().display().to_string());
        Self::launch(
            Path::new(cmd),
            &args,
            "twemproxy",
            yaml,
            wait_port,
            extra,
            false,
        )
    }

    /// [`ProxyProc::twem`] that also serves Prometheus metrics
    /// (`--metrics-addr`, before `extra`) on a free port, waited for: the
    /// proxy and the metrics port.
    pub fn twem_with_metrics(yaml: &str, wait_port: u16, extra: &[&str]) -> (ProxyProc, u16) {
        let mport = free_port();
        let maddr = format!("127.0.0.1:{mport}");
        let mut args = vec!["--metrics-addr", maddr.as_str()];
        args.extend_from_slice(extra);
        let proxy = Self::twem(yaml, wait_port, &args);
        wait_for_port(mport, Duration::from_secs(5));
        (proxy, mport)
    }

    /// Start Debian's `nutcracker` with `yaml`; waits for `wait_port`.
    pub fn nutcracker(yaml: &str, wait_port: u16) -> ProxyProc {
        Self::start(Path::new("nutcracker"), "nutcracker", yaml, wait_port, &[])
    }

    fn start(bin: &Path, what: &str, yaml: &str, wait_port: u16, extra: &[&str]) -> ProxyProc {
        Self::launch(bin, &[], what, yaml, wait_port, extra, false)
    }

    /// Write `yaml` into a fresh directory and start `bin` on it (stats on a
    /// free port, refreshed every 100 ms, log in the directory; stderr into
    /// `stderr.log` there when `capture_stderr`); waits for `wait_port`.
    fn launch(
        bin: &Path,
        pre_args: &[String],
        what: &str,
        yaml: &str,
        wait_port: u16,
        extra: &[&str],
        capture_stderr: bool,
    ) -> ProxyProc {
        let dir = TempDir::new(what);
        let conf = dir.path().join("nutcracker.yml");
        std::fs::write(&conf, yaml).expect("write config");
        let stats_port = free_port();
        let log = dir.path().join("proxy.log");
        let mut cmd = Command::new(bin);
        cmd.args(pre_args)
            .arg("-c")
            .arg(&conf)
            .args([
                "-s",
                &stats_port.to_string(),
                "-a",
                "127.0.0.1",
                "-i",
                "100",
            ])
            .arg("-o")
            .arg(&log)
            .args(extra);
        if what == "twemproxy" {
            cmd.args(extra_test_args(extra));
        }
        if capture_stderr {
            let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
            cmd.stderr(stderr);
        }
        let mut proc = Proc::spawn(what, &mut cmd);
        // Up to 30 s on a loaded machine; if the process ended instead, say
        // how and show its log, so a failure to start is diagnosable.
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", wait_port)).is_err() {
            let exited = proc
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || start.elapsed() > Duration::from_secs(30) {
                let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                let err_text =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                panic!(
                    "{what} is not listening on 127.0.0.1:{wait_port} after {:?} (exit: {exited:?})\nlog:\n{log_text}\nstderr:\n{err_text}",
                    start.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        ProxyProc {
            proc,
            stats_port,
            dir,
            conf,
        }
    }

    /// Read the stats document.
    pub fn stats(&self) -> serde_json::Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.stats_port)).expect("stats port");
        // A proxy that stopped serving its stats port fails the test, not
        // hangs it.
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap_or_else(|e| {
            panic!(
                "reading the stats port: {e} (got {text:?}); log:\n{}",
                self.log_tail(40)
            )
        });
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats is not JSON ({e}): {text}"))
    }

    /// Read the stats document after it has been refreshed (the harness
    /// starts proxies with `-i 100`).
    pub fn stats_after_refresh(&self) -> serde_json::Value {
        std::thread::sleep(Duration::from_millis(300));
        self.stats()
    }

    /// Read the stats document until `ready` holds for it, or for 10 s (the
    /// last one read is returned either way, for the caller's assertions to
    /// report). The document is re-rendered every interval (`-i 100` here),
    /// so it lags the traffic; a fixed wait for the refresh
    /// ([`ProxyProc::stats_after_refresh`]) is a guess a loaded machine can
    /// miss.
    pub fn stats_when(&self, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = self.stats();
            if ready(&st) || Instant::now() >= deadline {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// The log's last `n` lines, leaving out the per-connection chatter
    /// (`client connected`/`client closed`): context for a failure.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let chatter = |l: &&str| l.contains("client connected") || l.contains("client closed");
        let mut tail: Vec<&str> = log.lines().rev().filter(|l| !chatter(l)).take(n).collect();
        tail.reverse();
        tail.join("\n")
    }
}

/// Whether `e` is a read or write timeout (`WouldBlock` or `TimedOut`, as
/// the platform reports a socket timeout).
pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Whether `e` says the peer reset or aborted the connection: a close too
/// (the peer closed with our bytes unread).
pub fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
    )
}

/// A blocking raw-bytes client with a read timeout.
#[derive(Debug)]
pub struct Client {
    /// The socket.
    pub sock: TcpStream,
    buf: Vec<u8>,
}

/// A TCP connection to 127.0.0.1:`port` as the test clients use it: a 5 s
/// read timeout (a missing reply fails the test instead of hanging it),
/// no Nagle delay.
pub fn test_socket(port: u16) -> TcpStream {
    let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    // A proxy that stops reading fails the test within a bound too.
    sock.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("write timeout");
    sock.set_nodelay(true).expect("nodelay");
    sock
}

impl Client {
    /// Connect to 127.0.0.1:`port` (5 s read timeout).
    pub fn connect(port: u16) -> Client {
        Client {
            sock: test_socket(port),
            buf: Vec::new(),
        }
    }

    /// Send raw bytes.
    pub fn send(&mut self, b: &[u8]) {
        self.sock.write_all(b).expect("send");
    }

    /// Send a command as a RESP array.
    pub fn send_cmd(&mut self, args: &[&[u8]]) {
        self.send(&resp_cmd(args));
    }

    /// Send a RESP command and read its one reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send_cmd(args);
        self.read_resp()
    }

    /// Send a command given as space-separated words; read its reply.
    pub fn cmds(&mut self, line: &str) -> Vec<u8> {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.cmd(&words)
    }

    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        // A signal handled in this thread interrupts the read (EINTR): not a
        // failure, read again (`read` does not retry by itself).
        let got = loop {
            match self.sock.read(&mut tmp) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        match got {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) => panic!(
                "read failed (timeout?): {e}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Read one complete RESP reply (raw bytes). Panics on EOF or timeout.
    pub fn read_resp(&mut self) -> Vec<u8> {
        loop {
            if let Some(n) = resp_len(&self.buf) {
                return self.buf.drain(..n).collect();
            }
            assert!(
                self.fill(),
                "connection closed; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Read exactly `n` bytes.
    pub fn read_exact_n(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill(),
                "connection closed after {} of {n} bytes",
                self.buf.len()
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Read until `end` appears (inclusive).
    pub fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        loop {
            if let Some(i) = find(&self.buf, end) {
                return self.buf.drain(..i + end.len()).collect();
            }
            assert!(
                self.fill(),
                "closed before {:?}; have {:?}",
                String::from_utf8_lossy(end),
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Read one memcached reply line (through `\r\n`).
    pub fn read_line(&mut self) -> Vec<u8> {
        self.read_until(b"\r\n")
    }

    /// Whether the peer closed the connection (reads until EOF, within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut tmp = [0u8; 4096];
        loop {
            match self.sock.read(&mut tmp) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                // A reset is a close too (the peer closed with our bytes unread).
                Err(e) if is_reset(&e) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Bytes received but not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Assert that nothing arrived past the replies read so far; the
    /// message is `what` and the stray bytes as text.
    pub fn assert_nothing_pending(&self, what: &str) {
        assert!(
            self.pending().is_empty(),
            "{what}: {:?}",
            String::from_utf8_lossy(self.pending())
        );
    }
}

/// Find `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Encode a command as a RESP array of bulk strings.
pub fn resp_cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Length of the complete RESP reply at the start of `b`, if complete.
pub fn resp_len(b: &[u8]) -> Option<usize> {
    let line_end = find(b, b"\r\n")?;
    let head = &b[1..line_end];
    let after = line_end + 2;
    let number = || -> Option<i64> { std::str::from_utf8(head).ok()?.parse().ok() };
    // Aggregates: `n` elements (maps and attributes: `2n`).
    let elements = |n: i64| -> Option<usize> {
        let mut at = after;
        for _ in 0..n.max(0) {
            at += resp_len(&b[at..])?;
        }
        Some(at)
    };
    match b.first()? {
        // RESP2 and RESP3 lines: status, error, integer, null, double,
        // boolean, big number.
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(after),
        // Blobs: bulk string, blob error, verbatim string.
        b'$' | b'!' | b'=' => {
            let n = number()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (b.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' => elements(number()?),
        b'%' => elements(number()? * 2),
        // An attribute, then the reply it annotates.
        b'|' => {
            let at = elements(number()? * 2)?;
            Some(at + resp_len(&b[at..])?)
        }
        _ => None,
    }
}

/// A RESP bulk string reply for `v`.
pub fn bulk(v: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", v.len()).into_bytes();
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The harness's own RESP scanner must find frame ends exactly, or every
    // comparison built on it is meaningless.
    #[test]
    fn resp_len_frames() {
        let cases = [
            ("+OK\r\n", Some(5)),
            ("$3\r\nabc\r\nxx", Some(9)),
            ("$3\r\nab", None),
            ("$-1\r\n", Some(5)),
            ("*2\r\n$1\r\na\r\n:5\r\n", Some(15)),
            ("*2\r\n$1\r\na\r\n", None),
        ];
        for (input, want) in cases {
            assert_eq!(resp_len(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(resp_cmd(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}

/// Length of the complete memcached reply at the start of `b`, if complete.
///
/// memcached replies are not self-describing, so the caller says whether the
/// request was a `get`/`gets` (`retrieval`): then the reply is `VALUE` items
/// up to `END`, or an error line (`ERROR`, `CLIENT_ERROR ...`,
/// `SERVER_ERROR ...`) that ends it early. Any other reply is one line. A
/// `VALUE` line whose byte count does not parse ends the reply there, so a
/// test comparing bytes sees the garbage instead of waiting for more.
pub fn mc_reply_len(b: &[u8], retrieval: bool) -> Option<usize> {
    let first = find(b, b"\r\n")? + 2;
    if !retrieval {
        return Some(first);
    }
    let mut at = 0;
    loop {
        let rest = b.get(at..)?;
        let line_end = find(rest, b"\r\n")?;
        let line = &rest[..line_end];
        let after = at + line_end + 2;
        if line == b"END" {
            return Some(after);
        }
        if !line.starts_with(b"VALUE ") {
            return Some(after);
        }
        let len = line
            .split(|&c| c == b' ')
            .nth(3)
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<usize>().ok());
        match len {
            Some(n) => {
                let end = after.checked_add(n)?.checked_add(2)?;
                if b.len() < end {
                    return None;
                }
                at = end;
            }
            None => return Some(after),
        }
    }
}

impl Client {
    /// Read one complete memcached reply (raw bytes); `retrieval` says whether
    /// it answers a `get`/`gets` (see [`mc_reply_len`]). Panics on EOF or
    /// timeout.
    pub fn read_mc(&mut self, retrieval: bool) -> Vec<u8> {
        loop {
            if let Some(n) = mc_reply_len(&self.buf, retrieval) {
                return self.buf.drain(..n).collect();
            }
            assert!(
                self.fill(),
                "connection closed; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Send one memcached command (raw bytes, `\r\n` included) and read its
    /// reply; a `get`/`gets` is recognised by its first word.
    pub fn mc(&mut self, req: &[u8]) -> Vec<u8> {
        self.send(req);
        self.read_mc(req.starts_with(b"get ") || req.starts_with(b"gets "))
    }
}

#[cfg(test)]
mod mc_tests {
    use super::*;

    // The memcached reply scanner decides where each compared reply ends; a
    // wrong cut would shift every later comparison.
    #[test]
    fn mc_reply_len_frames() {
        assert_eq!(mc_reply_len(b"STORED\r\nEND\r\n", false), Some(8));
        assert_eq!(mc_reply_len(b"STORED\r", false), None);
        let get = b"VALUE k 0 4\r\na\r\nb\r\nVALUE j 1 0 9\r\n\r\nEND\r\nX";
        assert_eq!(mc_reply_len(get, true), Some(get.len() - 1));
        assert_eq!(mc_reply_len(&get[..get.len() - 3], true), None);
        assert_eq!(mc_reply_len(b"VALUE k 0 4\r\nab", true), None);
        assert_eq!(mc_reply_len(b"SERVER_ERROR x\r\nEND\r\n", true), Some(16));
        assert_eq!(mc_reply_len(b"END\r\n", true), Some(5));
    }
}

// ---------------------------------------------------------------------------
// Reliability helpers: used by the chaos, hostile-client and malformed-input
// suites, and by anything else that needs RSS figures, a proxy's stderr, a
// key on a given server, or faults between twem and a backend.

/// Whether the long (tier 2) variants of the reliability tests run:
/// `TWEM_TIER2=1` in the environment. Tier 1 is bounded for CI.
pub fn tier2() -> bool {
    std::env::var("TWEM_TIER2").is_ok_and(|v| v == "1")
}

/// Resident set size of process `pid` in KiB (`VmRSS` in
/// `/proc/PID/status`); `None` once the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Peak resident set size of process `pid` in KiB (`VmHWM`); `None` once
/// the process is gone.
pub fn hwm_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// The KiB figure of the `field` line of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Sample `pid`'s RSS every 50 ms until `stop` is set; the maximum in KiB.
pub fn sample_rss(
    pid: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut max = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            max = max.max(rss_kib(pid).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(50));
        }
        max
    })
}

/// This process's soft limit on open files (`/proc/self/limits`), which a
/// proxy started by the harness inherits; `None` when unlimited or unknown.
pub fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

impl Proc {
    /// Whether the process is still running (not exited, not reaped).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl ProxyProc {
    /// Like [`ProxyProc::twem`], with the proxy's stderr written to
    /// `stderr.log` in its directory: a panic in a task does not kill a tokio
    /// process, so the panic message is the only trace a test can check.
    pub fn twem_capture(yaml: &str, wait_port: u16, extra: &[&str]) -> ProxyProc {
        let bin = twemproxy_bin();
        Self::launch(&bin, &[], "twemproxy", yaml, wait_port, extra, true)
    }

    /// The proxy's RSS in KiB; panics if it is gone.
    pub fn rss(&self) -> u64 {
        rss_kib(self.proc.pid()).expect("proxy RSS (is it alive?)")
    }

    /// Assert the proxy is still running and (for [`ProxyProc::twem_capture`])
    /// that nothing panicked: a panic in a task does not kill a tokio process.
    pub fn assert_healthy(&mut self) {
        assert!(self.proc.is_running(), "the proxy died");
        let stderr = self.stderr_text();
        assert!(!stderr.contains("panicked"), "proxy panicked:\n{stderr}");
    }

    /// What a proxy started with [`ProxyProc::twem_capture`] wrote to stderr
    /// (empty for the others).
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// The yaml of one pool, `pool`, listening on 127.0.0.1:`port`: `settings`
/// are its other keys as written (`"  redis: true\n"`...), `servers` its
/// servers as `(host:port, name)`, each of weight 1 (an empty name writes
/// none).
pub fn pool_yaml<N: AsRef<str>>(
    pool: &str,
    port: u16,
    settings: &str,
    servers: &[(String, N)],
) -> String {
    let mut yaml = format!("{pool}:\n  listen: 127.0.0.1:{port}\n{settings}  servers:\n");
    for (addr, name) in servers {
        let name = name.as_ref();
        yaml.push_str(&format!("   - {addr}:1"));
        if !name.is_empty() {
            yaml.push_str(&format!(" {name}"));
        }
        yaml.push('\n');
    }
    yaml
}

/// One pool's config and the twemproxy running it: what most single-pool
/// tests start with.
#[derive(Debug)]
pub struct Twem {
    /// The twemproxy process.
    pub proxy: ProxyProc,
    /// The pool's listening port.
    pub port: u16,
    /// The config it runs.
    pub yaml: String,
}

impl Twem {
    /// twemproxy running pool `pool` on a free port, with `settings` and
    /// `servers` as [`pool_yaml`] takes them.
    pub fn start<N: AsRef<str>>(pool: &str, settings: &str, servers: &[(String, N)]) -> Twem {
        Twem::launch(pool, settings, servers, |yaml, port| {
            ProxyProc::twem(yaml, port, &[])
        })
    }

    /// [`Twem::start`] with extra twemproxy arguments.
    pub fn start_with<N: AsRef<str>>(
        pool: &str,
        settings: &str,
        servers: &[(String, N)],
        extra: &[&str],
    ) -> Twem {
        Twem::launch(pool, settings, servers, |yaml, port| {
            ProxyProc::twem(yaml, port, extra)
        })
    }

    /// [`Twem::start`] with the proxy's stderr kept
    /// ([`ProxyProc::twem_capture`]).
    pub fn capture<N: AsRef<str>>(pool: &str, settings: &str, servers: &[(String, N)]) -> Twem {
        Twem::launch(pool, settings, servers, |yaml, port| {
            ProxyProc::twem_capture(yaml, port, &[])
        })
    }

    fn launch<N: AsRef<str>>(
        pool: &str,
        settings: &str,
        servers: &[(String, N)],
        run: impl FnOnce(&str, u16) -> ProxyProc,
    ) -> Twem {
        let port = free_port();
        let yaml = pool_yaml(pool, port, settings, servers);
        let proxy = run(&yaml, port);
        Twem { proxy, port, yaml }
    }

    /// A raw client connected to the pool.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// The proxy and the pool's port, for tests that need no more.
    pub fn parts(self) -> (ProxyProc, u16) {
        (self.proxy, self.port)
    }
}

/// A key that the first pool of `yaml` (all servers live) puts on the server
/// named `server`: `tag` followed by a number. Panics if none of the first
/// 100,000 candidates maps there.
pub fn key_on(yaml: &str, server: &str, tag: &str) -> String {
    let config = twem_core::config::Config::from_yaml(yaml).expect("config parses");
    let ring = config.pools[0].ring().expect("ring builds");
    (0..100_000)
        .map(|i| format!("{tag}{i}"))
        .find(|k| ring.locate_name(k.as_bytes()) == Some(server))
        .unwrap_or_else(|| panic!("no key {tag}N maps to {server}"))
}

/// Redis shards named `shard0`, `shard1`, ... behind one twem pool `alpha`
/// (`fnv1a_64`, `ketama`, hash tag `{}`): the setup the multi-shard redis
/// suites share, with the questions they ask of it.
#[derive(Debug)]
pub struct Shards {
    /// The redis-servers; `shards[i]` is the pool's server `shard{i}`.
    pub shards: Vec<Redis>,
    /// The twemproxy running [`Shards::yaml`].
    pub proxy: ProxyProc,
    /// The pool's listening port.
    pub port: u16,
    /// The Prometheus metrics port, when started with
    /// [`Shards::start_with_metrics`].
    pub metrics: Option<u16>,
    /// The config twemproxy runs.
    pub yaml: String,
}

impl Shards {
    /// `n` fresh redis-servers behind twemproxy; `pool_lines` are more keys
    /// of the pool as written (`"  timeout: 1000\n"`), before `servers`.
    pub fn start(n: usize, pool_lines: &str) -> Shards {
        Shards::launch(n, pool_lines, false)
    }

    /// [`Shards::start`] with twemproxy also serving `/metrics` on
    /// [`Shards::metrics`].
    pub fn start_with_metrics(n: usize, pool_lines: &str) -> Shards {
        Shards::launch(n, pool_lines, true)
    }

    fn launch(n: usize, pool_lines: &str, metrics: bool) -> Shards {
        let shards: Vec<Redis> = (0..n).map(|_| Redis::start()).collect();
        let port = free_port();
        let yaml = Shards::yaml_for(port, pool_lines, &shards);
        let (proxy, metrics) = if metrics {
            let (proxy, m) = ProxyProc::twem_with_metrics(&yaml, port, &[]);
            (proxy, Some(m))
        } else {
            (ProxyProc::twem(&yaml, port, &[]), None)
        };
        Shards {
            shards,
            proxy,
            port,
            metrics,
            yaml,
        }
    }

    /// The config of pool `alpha` on `port` over `shards`, named `shard{i}`.
    pub fn yaml_for(port: u16, pool_lines: &str, shards: &[Redis]) -> String {
        let servers = shard_servers(shards);
        let settings = format!(
            "  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n  hash_tag: \"{{}}\"\n{pool_lines}"
        );
        pool_yaml("alpha", port, &settings, &servers)
    }

    /// A raw client connected to the pool.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// A key named `tag<N>` that the pool puts on shard `i`.
    pub fn key(&self, i: usize, tag: &str) -> String {
        key_on(&self.yaml, &format!("shard{i}"), tag)
    }

    /// The shard index the pool's Ring puts `key` on.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        let cfg = twem_core::config::Config::from_yaml(&self.yaml).expect("test config parses");
        let ring = cfg.pools[0].ring().expect("ring");
        let name = ring.locate_name(key).expect("live server");
        name.trim_start_matches("shard").parse().expect("shardN")
    }

    /// Clients connected to shard `i`, as it counts them (minus the one
    /// asking).
    pub fn connected(&self, i: usize) -> usize {
        let n = self.shards[i].info_int("clients", "connected_clients");
        usize::try_from(n - 1).expect("connected_clients counts the one asking")
    }

    /// `n` clients of the pool, each after `hold` ran on it (a command that
    /// keeps a pinned server connection: BLPOP, WATCH...).
    pub fn clients_holding(&self, n: usize, hold: impl Fn(&mut Client)) -> Vec<Client> {
        let each = |_| {
            let mut c = self.client();
            hold(&mut c);
            c
        };
        (0..n).map(each).collect()
    }

    /// `GET key` asked of shard `i` directly.
    pub fn get_on(&self, i: usize, key: &str) -> Vec<u8> {
        self.shards[i].client().cmd(&[b"GET", key.as_bytes()])
    }
}

/// `shards` as a server list for [`pool_yaml`]: `(addr, "shard{i}")`.
pub fn shard_servers(shards: &[Redis]) -> Vec<(String, String)> {
    let named = shards.iter().enumerate();
    named
        .map(|(i, s)| (s.addr(), format!("shard{i}")))
        .collect()
}

/// The indexes of the `shards` that hold `key`, asked of each directly.
pub fn holders(shards: &[Redis], key: &str) -> Vec<usize> {
    shards
        .iter()
        .enumerate()
        .filter(|(_, s)| s.client().cmd(&[b"EXISTS", key.as_bytes()]) == b":1\r\n")
        .map(|(i, _)| i)
        .collect()
}

/// The embedded pool `builder` over the servers at `addrs` (weight 1 each,
/// unnamed), built.
pub fn build_over(
    builder: twem_core::pool::PoolBuilder,
    addrs: impl IntoIterator<Item = String>,
) -> twem_core::pool::Pool {
    let b = addrs
        .into_iter()
        .fold(builder, |b, a| b.server(&format!("{a}:1")));
    b.build().expect("pool")
}

/// A two-worker tokio runtime for the tests that drive the embedded
/// [`twem_core::pool::Pool`] (the library path, no proxy process).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A small seeded generator for the tests' varied choices (which shard to
/// kill, which key): fastrand's wyrand, not cryptography; a printed seed
/// makes a failing run repeatable.
#[derive(Debug, Clone)]
pub struct Rng(fastrand::Rng);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(fastrand::Rng::with_seed(seed))
    }

    /// A generator seeded from the clock; its seed is returned for messages.
    pub fn from_time() -> (Rng, u64) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        (Rng::new(seed), seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.0.u64(..n)
        }
    }
}

/// What a [`FaultProxy`] does to the backend's replies on their way to twem.
/// Requests from twem always reach the backend untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward replies untouched.
    Pass = 0,
    /// Hold each chunk of reply bytes for [`FaultProxy::set_delay`] ms.
    Delay = 1,
    /// Forward the first half of the next reply chunk (at least one byte
    /// short of it), then close the connection to twem (FIN).
    Cut = 2,
    /// Drop the next reply chunk and reset the connection to twem (RST,
    /// through `SO_LINGER` 0).
    Reset = 3,
    /// Send `@@@\r\n` (no protocol's reply) instead of each reply chunk.
    Garbage = 4,
}

impl Fault {
    fn from_u8(v: u8) -> Fault {
        match v {
            1 => Fault::Delay,
            2 => Fault::Cut,
            3 => Fault::Reset,
            4 => Fault::Garbage,
            _ => Fault::Pass,
        }
    }
}

/// A thread-based TCP forwarder to put between twem and a real backend,
/// with a [`Fault`] mode switchable at runtime: each connection twem opens
/// to `127.0.0.1:port` gets its own connection to the backend. Stops (and
/// closes every forwarded connection within ~20 ms) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// The port twem should use as the server's address.
    pub port: u16,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How often forwarding threads wake to look at the stop flags.
const FAULT_TICK: Duration = Duration::from_millis(20);

impl FaultProxy {
    /// Forward to the backend on 127.0.0.1:`backend_port`, in [`Fault::Pass`].
    pub fn start(backend_port: u16) -> FaultProxy {
        use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
        use std::sync::Arc;
        let l = TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking listener");
        let mode = Arc::new(AtomicU8::new(Fault::Pass as u8));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, d, a, st) = (
            Arc::clone(&mode),
            Arc::clone(&delay_ms),
            Arc::clone(&accepted),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((front, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        let Ok(back) = TcpStream::connect(("127.0.0.1", backend_port)) else {
                            continue; // dropping `front` closes it: twem sees a dead server
                        };
                        forward(front, back, Arc::clone(&m), Arc::clone(&d), Arc::clone(&st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            port,
            mode,
            delay_ms,
            accepted,
            stop,
        }
    }

    /// Switch the mode; it applies to the next reply chunk of every
    /// connection, old and new.
    pub fn set(&self, fault: Fault) {
        self.mode
            .store(fault as u8, std::sync::atomic::Ordering::SeqCst);
    }

    /// The delay [`Fault::Delay`] adds, in milliseconds.
    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Connections accepted so far (how often twem (re)connected).
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Pump one forwarded connection with two threads. The twem-facing socket is
/// shared by both; for a reset both must drop it (an RST goes out only when
/// the last descriptor closes), so they share a `dead` flag and wake every
/// [`FAULT_TICK`] to look at it.
fn forward(
    front: TcpStream,
    back: TcpStream,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dead = Arc::new(AtomicBool::new(false));
    let (Ok(front_rd), Ok(back_wr)) = (front.try_clone(), back.try_clone()) else {
        return;
    };
    let _ = front_rd.set_read_timeout(Some(FAULT_TICK));
    let _ = back.set_read_timeout(Some(FAULT_TICK));
    let _ = front.set_nodelay(true);
    let _ = back.set_nodelay(true);
    let (d1, s1) = (Arc::clone(&dead), Arc::clone(&stop));
    let gone = move |d: &AtomicBool| d.load(Ordering::SeqCst) || stop.load(Ordering::Relaxed);
    // twem -> backend: requests pass untouched.
    std::thread::spawn(move || {
        let (mut rd, mut wr) = (front_rd, back_wr);
        let mut buf = [0u8; 16 * 1024];
        while !d1.load(Ordering::SeqCst) && !s1.load(Ordering::Relaxed) {
            match rd.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if wr.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
        let _ = wr.shutdown(std::net::Shutdown::Write);
        d1.store(true, Ordering::SeqCst);
    });
    // backend -> twem: replies, with the fault applied.
    std::thread::spawn(move || {
        let (mut rd, mut wr) = (back, front);
        let mut buf = [0u8; 16 * 1024];
        while !gone(&dead) {
            let n = match rd.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if is_timeout(&e) => continue,
                Err(_) => break,
            };
            let chunk = &buf[..n];
            match Fault::from_u8(mode.load(Ordering::SeqCst)) {
                Fault::Pass => {
                    if wr.write_all(chunk).is_err() {
                        break;
                    }
                }
                Fault::Delay => {
                    std::thread::sleep(Duration::from_millis(delay_ms.load(Ordering::SeqCst)));
                    if wr.write_all(chunk).is_err() {
                        break;
                    }
                }
                Fault::Cut => {
                    let _ = wr.write_all(&chunk[..n / 2]);
                    let _ = wr.shutdown(std::net::Shutdown::Both);
                    break;
                }
                Fault::Reset => {
                    let _ = socket2::SockRef::from(&wr).set_linger(Some(Duration::ZERO));
                    break;
                }
                Fault::Garbage => {
                    if wr.write_all(b"@@@\r\n").is_err() {
                        break;
                    }
                }
            }
        }
        dead.store(true, Ordering::SeqCst);
    });
}

#[cfg(test)]
mod reliability_helper_tests {
    use super::*;

    // RSS figures in the reliability suites come from this parser; a wrong
    // field would make every memory bound vacuous.
    #[test]
    fn rss_reads_vmrss_of_a_live_process_only() {
        let me = rss_kib(std::process::id()).expect("own RSS");
        assert!(me > 100, "{me} KiB");
        assert_eq!(rss_kib(u32::MAX), None);
        assert!(open_files_soft_limit().is_some_and(|n| n > 0));
    }

    // A port from `free_port` must be one the kernel never hands to a
    // `bind(0)` or `connect()` (below the ephemeral range), distinct from
    // every other it returned, and claimed against other test processes.
    #[test]
    fn free_port_is_reserved_outside_the_ephemeral_range() {
        use std::os::linux::net::SocketAddrExt;
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .expect("port range")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("low end");
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!((10_000..low).contains(&p), "{p} is in the ephemeral range");
            let name =
                std::os::unix::net::SocketAddr::from_abstract_name(format!("twem-test-port-{p}"))
                    .expect("name");
            assert!(
                std::os::unix::net::UnixListener::bind_addr(&name).is_err(),
                "{p} is not claimed"
            );
            TcpListener::bind(("127.0.0.1", p)).expect("the port is bindable");
        }
    }

    // The chaos tests pick shards and keys with it: it must stay in range
    // and actually vary.
    #[test]
    fn rng_below_is_in_range_and_varies() {
        let mut r = Rng::new(0);
        let v: Vec<u64> = (0..1000).map(|_| r.below(4)).collect();
        assert!(v.iter().all(|&x| x < 4));
        for want in 0..4 {
            assert!(v.contains(&want), "{want} never drawn");
        }
        assert_eq!(r.below(0), 0);
    }

    /// A backend that echoes every byte back.
    fn echo_backend() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    fn exchange(port: u16, send: &[u8]) -> (Vec<u8>, std::io::Result<usize>) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        s.write_all(send).expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (got, Ok(0)),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.len() >= send.len() {
                        return (got, Ok(n));
                    }
                }
                Err(e) => return (got, Err(e)),
            }
        }
    }

    // Each fault mode must do to the reply exactly what its name says, or
    // the error words the fault tests expect would be checked against the
    // wrong fault.
    #[test]
    fn fault_proxy_modes_shape_the_reply_stream() {
        let f = FaultProxy::start(echo_backend());
        let msg = b"0123456789";
        assert_eq!(exchange(f.port, msg).0, msg);
        f.set(Fault::Garbage);
        assert_eq!(exchange(f.port, msg).0, b"@@@\r\n");
        f.set(Fault::Cut);
        let (got, end) = exchange(f.port, msg);
        assert_eq!(got, b"01234");
        assert!(matches!(end, Ok(0)), "cut must end with EOF: {end:?}");
        f.set(Fault::Reset);
        let (got, end) = exchange(f.port, msg);
        assert!(got.is_empty());
        assert_eq!(
            end.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset)
        );
        f.set_delay(150);
        f.set(Fault::Delay);
        let t0 = Instant::now();
        assert_eq!(exchange(f.port, msg).0, msg);
        assert!(t0.elapsed() >= Duration::from_millis(140));
        assert_eq!(f.accepted(), 5);
    }
}
