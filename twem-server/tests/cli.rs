//! The `twemproxy` binary as a user and their scripts meet it: nutcracker's
//! flags (`-V -h -t -D -d -p -v -o`), config errors refused before any port
//! is bound, the stats JSON after real traffic through two `redis-server`s,
//! `--locate` against nutcracker's golden placement data, and the log file's
//! logrotate contract (SIGHUP reopens, SIGTTIN/SIGTTOU change the level).
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-clie2e cargo test -p twem-server --test cli
//! ```
//! Needs `redis-server` installed (`.ci/run` installs it).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use twem_tests::{free_port, resp_cmd, wait_for_port, Client, ProxyProc, Redis, TempDir, Twem};

/// What a finished run of the binary left behind.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.status.success()
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_twemproxy")
}

/// Run the binary with `args`, feeding `stdin`; kill it (and fail) if it has
/// not exited within `limit`, so a proxy that wrongly starts serving cannot
/// hang the suite.
fn run_limited(args: &[&str], stdin: &[u8], limit: Duration) -> Run {
    run_limited_in(None, args, stdin, limit)
}

/// [`run_limited`] in working directory `cwd` (for relative paths).
fn run_limited_in(cwd: Option<&Path>, args: &[&str], stdin: &[u8], limit: Duration) -> Run {
    let mut cmd = Command::new(bin());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start twemproxy");
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    // Writing from another thread: a child that fills its stdout pipe before
    // reading all of stdin would otherwise deadlock with us.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("twemproxy {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let stdout = out_t.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    Run {
        status,
        stdout,
        stderr,
    }
}

fn run(args: &[&str]) -> Run {
    run_limited(args, b"", Duration::from_secs(20))
}

fn write_conf(dir: &TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write config");
    p.display().to_string()
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

// ---------------------------------------------------------------- -V, -h

// Scripts detect nutcracker by grepping `-V`; the first line must start as
// nutcracker's does, on stderr as nutcracker writes it (`2>&1 | grep`), and
// the flag must exit 0 in both spellings.
#[test]
fn version_prints_nutcracker_line() {
    for flag in ["-V", "--version"] {
        let r = run(&[flag]);
        assert!(r.ok(), "{flag}: exit {:?}, stderr {}", r.status, r.stderr);
        assert!(
            r.stdout.is_empty(),
            "{flag} wrote to stdout: {:?}",
            r.stdout_text()
        );
        let text = r.stderr.clone();
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("This is nutcracker-0.5.0"),
            "{flag} printed {text:?}"
        );
    }
}

// `-h` must document every nutcracker flag (short and long form), exit 0,
// on stderr as nutcracker prints it.
#[test]
fn help_lists_every_nutcracker_flag() {
    let r = run(&["-h"]);
    assert!(r.ok(), "-h: exit {:?}, stderr {}", r.status, r.stderr);
    assert_eq!(r.stdout_text(), "", "nutcracker prints its help on stderr");
    let text = r.stderr.clone();
    let flags = [
        ("-h", "--help"),
        ("-V", "--version"),
        ("-t", "--test-conf"),
        ("-d", "--daemonize"),
        ("-D", "--describe-stats"),
        ("-v", "--verbose"),
        ("-o", "--output"),
        ("-c", "--conf-file"),
        ("-s", "--stats-port"),
        ("-a", "--stats-addr"),
        ("-i", "--stats-interval"),
        ("-p", "--pid-file"),
        ("-m", "--mbuf-size"),
    ];
    for (short, long) in flags {
        let shown = format!("{short}, {long}");
        assert!(text.contains(&shown), "-h does not list {shown}:\n{text}");
    }
}

// nutcracker ends a command line it cannot parse with exit code 1 (an
// unknown flag, a flag missing its value, a value that is not a number),
// the error on stderr and nothing on stdout.
#[test]
fn usage_errors_exit_1() {
    for args in [
        &["-Z"][..],
        &["--bogus"],
        &["-c"],
        &["-v"],
        &["-v", "abc"],
        &["-v", "-3"],
        &["-s", "x"],
        &["-m", "100"],
    ] {
        let r = run(args);
        assert_eq!(r.status.code(), Some(1), "{args:?}: stderr {}", r.stderr);
        assert!(!r.stderr.is_empty(), "{args:?}: nothing on stderr");
        assert!(
            r.stdout.is_empty(),
            "{args:?} wrote to stdout: {}",
            r.stdout_text()
        );
    }
}

// nutcracker takes any level: above the maximum (11) it is the maximum.
#[test]
fn verbose_above_maximum_is_accepted() {
    let dir = TempDir::new("cli-verbose");
    let conf = write_conf(
        &dir,
        "v.yml",
        &GOOD_CONF.replace("PORT", &free_port().to_string()),
    );
    for level in ["12", "99", "99999999999999999999"] {
        let r = run(&["-v", level, "-t", "-c", &conf]);
        assert!(
            r.ok(),
            "-v {level}: exit {:?}, stderr {}",
            r.status,
            r.stderr
        );
    }
}

// ---------------------------------------------------------------- -t

const GOOD_CONF: &str = "alpha:\n  listen: 127.0.0.1:PORT\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1 one\n   - 127.0.0.1:6380:1 two\n";

// A valid file: exit 0 and nutcracker's "syntax is ok" line.
#[test]
fn test_conf_accepts_good_config() {
    let dir = TempDir::new("cli-t-good");
    let conf = write_conf(
        &dir,
        "good.yml",
        &GOOD_CONF.replace("PORT", &free_port().to_string()),
    );
    for flag in ["-t", "--test-conf"] {
        let r = run(&[flag, "-c", &conf]);
        assert!(r.ok(), "{flag}: exit {:?}, stderr {}", r.status, r.stderr);
        assert!(r.stderr.contains("syntax is ok"), "stderr: {}", r.stderr);
    }
}

// Each broken file is refused (non-zero exit) with a message naming the pool,
// the key and the offending value, so the user can fix it without guessing.
#[test]
fn test_conf_rejects_bad_configs_naming_pool_key_value() {
    let dir = TempDir::new("cli-t-bad");
    let base = "alpha:\n  listen: 127.0.0.1:22999\n";
    let servers = "  servers:\n   - 127.0.0.1:6379:1\n";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "bad hash",
            format!("{base}  hash: bogus_hash\n{servers}"),
            vec!["pool \"alpha\"", "hash", "bogus_hash"],
        ),
        (
            "unknown key",
            format!("{base}  frobnicate: 3\n{servers}"),
            vec!["pool \"alpha\"", "frobnicate"],
        ),
        (
            "duplicate server name",
            format!("{base}  servers:\n   - 127.0.0.1:6379:1 dup\n   - 127.0.0.1:6380:1 dup\n"),
            vec!["pool \"alpha\"", "servers", "dup"],
        ),
        (
            "missing servers",
            format!("{base}  hash: md5\n"),
            vec!["pool \"alpha\"", "servers"],
        ),
        (
            "listen without port",
            format!("alpha:\n  listen: nohost\n{servers}"),
            vec!["pool \"alpha\"", "listen", "nohost"],
        ),
        (
            "listen port out of range",
            format!("alpha:\n  listen: 127.0.0.1:99999\n{servers}"),
            vec!["pool \"alpha\"", "listen", "99999"],
        ),
        (
            "bad distribution",
            format!("{base}  distribution: roundrobin\n{servers}"),
            vec!["pool \"alpha\"", "distribution", "roundrobin"],
        ),
        (
            "bad server weight",
            format!("{base}  servers:\n   - 127.0.0.1:6379:heavy\n"),
            vec!["pool \"alpha\"", "servers", "heavy"],
        ),
        (
            "invalid YAML",
            "alpha:\n  listen: [127.0.0.1\n  servers: {\n".to_string(),
            vec!["YAML", "line"],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, text, needles)) in cases.iter().enumerate() {
        let conf = write_conf(&dir, &format!("bad{i}.yml"), text);
        let r = run(&["-t", "-c", &conf]);
        if r.ok() {
            failures.push(format!("{what}: accepted (exit 0); stderr {:?}", r.stderr));
            continue;
        }
        if !r.stderr.contains("syntax is invalid") {
            failures.push(format!(
                "{what}: no 'syntax is invalid' line: {:?}",
                r.stderr
            ));
        }
        for n in needles {
            if !r.stderr.contains(n) {
                failures.push(format!(
                    "{what}: stderr does not name {n:?}: {:?}",
                    r.stderr
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// Without -t, a bad config stops the proxy before it binds anything: a
// half-started proxy (good pool listening, bad one missing) would take
// traffic it cannot serve. Pool `alpha` is fine, `beta` is not.
#[test]
fn bad_config_refuses_to_start_without_binding() {
    let dir = TempDir::new("cli-refuse");
    let (p1, p2, stats) = (free_port(), free_port(), free_port());
    let text = format!(
        "alpha:\n  listen: 127.0.0.1:{p1}\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\nbeta:\n  listen: 127.0.0.1:{p2}\n  hash: bogus_hash\n  servers:\n   - 127.0.0.1:11211:1\n"
    );
    let conf = write_conf(&dir, "bad.yml", &text);
    let r = run_limited(
        &["-c", &conf, "-s", &stats.to_string(), "-a", "127.0.0.1"],
        b"",
        Duration::from_secs(10),
    );
    assert!(!r.ok(), "started on a bad config; stderr {}", r.stderr);
    assert!(
        r.stderr.contains("pool \"beta\"") && r.stderr.contains("bogus_hash"),
        "stderr does not say what is wrong: {}",
        r.stderr
    );
    for port in [p1, p2, stats] {
        assert!(
            port_is_free(port),
            "port {port} is not free after the refused start"
        );
    }
}

// A config file that never ends (`/dev/zero`) or is huge is refused at a
// bound instead of read until memory runs out.
#[test]
fn test_conf_bounds_the_file_size() {
    let r = run_limited(&["-t", "-c", "/dev/zero"], b"", Duration::from_secs(30));
    assert_eq!(r.status.code(), Some(1), "stderr {}", r.stderr);
    assert!(
        r.stderr
            .contains("configuration file '/dev/zero' is larger than 64 MiB"),
        "{}",
        r.stderr
    );
}

// server_connections has an upper bound: 2147483647 used to pass -t and
// abort the proxy at start.
#[test]
fn test_conf_refuses_huge_server_connections() {
    let dir = TempDir::new("cli-serverconns");
    let text = GOOD_CONF
        .replace("PORT", &free_port().to_string())
        .replace("  servers:", "  server_connections: 2147483647\n  servers:");
    let conf = write_conf(&dir, "sc.yml", &text);
    let r = run(&["-t", "-c", &conf]);
    assert_eq!(r.status.code(), Some(1), "stderr {}", r.stderr);
    assert!(
        r.stderr.contains(
            "pool \"alpha\": server_connections 2147483647 is too large (at most 1024 per server)"
        ),
        "{}",
        r.stderr
    );
}

// A listen host that does not resolve is refused by -t (nutcracker resolves
// it at load), naming the pool and key; the start refuses it the same way.
#[test]
fn test_conf_refuses_unresolvable_listen_host() {
    let dir = TempDir::new("cli-resolve");
    let text = GOOD_CONF.replace("127.0.0.1:PORT", "nosuch.invalid:22121");
    let conf = write_conf(&dir, "r.yml", &text);
    for args in [
        &["-t", "-c", &conf][..],
        &[
            "-c",
            &conf,
            "-s",
            &free_port().to_string(),
            "-a",
            "127.0.0.1",
        ],
    ] {
        let r = run_limited(args, b"", Duration::from_secs(10));
        assert_eq!(r.status.code(), Some(1), "{args:?}: stderr {}", r.stderr);
        assert!(
            r.stderr
                .contains("pool \"alpha\": listen \"nosuch.invalid:22121\": host \"nosuch.invalid\" does not resolve"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("syntax is invalid"), "{}", r.stderr);
    }
}

// `listen:` naming an existing regular file must not delete it: only a stale
// socket is removed before binding; anything else refuses the start, naming
// the pool and the path.
#[test]
fn unix_listen_on_a_regular_file_keeps_it() {
    let dir = TempDir::new("cli-unixfile");
    let victim = dir.path().join("important.txt");
    std::fs::write(&victim, "precious").expect("write victim");
    let text = format!(
        "alpha:\n  listen: {}\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n",
        victim.display()
    );
    let conf = write_conf(&dir, "u.yml", &text);
    let r = run_limited(
        &[
            "-c",
            &conf,
            "-s",
            &free_port().to_string(),
            "-a",
            "127.0.0.1",
        ],
        b"",
        Duration::from_secs(10),
    );
    assert_eq!(r.status.code(), Some(1), "stderr {}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(&victim).ok().as_deref(),
        Some("precious"),
        "the file named by listen was removed or changed"
    );
    let shown = victim.display().to_string();
    assert!(
        r.stderr.contains("pool \"alpha\"")
            && r.stderr.contains(&format!(
                "{shown} exists and is not a socket (a regular file)"
            )),
        "{}",
        r.stderr
    );

    // A stale socket file from an earlier run is still replaced.
    let sock = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind stale socket"));
    let text = format!(
        "alpha:\n  listen: {}\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n",
        sock.display()
    );
    let conf = write_conf(&dir, "s.yml", &text);
    let mut proxy = Command::new(bin())
        .args([
            "-c",
            &conf,
            "-s",
            &free_port().to_string(),
            "-a",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start twemproxy");
    let served = wait_until(Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert!(served, "the proxy never listened on {}", sock.display());
}

// A startup error (here: the listen port is taken) is printed once, not
// once by the log and again by main.
#[test]
fn startup_error_is_printed_once() {
    let dir = TempDir::new("cli-once");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let conf = write_conf(&dir, "o.yml", &GOOD_CONF.replace("PORT", &port.to_string()));
    let r = run_limited(
        &[
            "-c",
            &conf,
            "-s",
            &free_port().to_string(),
            "-a",
            "127.0.0.1",
        ],
        b"",
        Duration::from_secs(10),
    );
    assert_eq!(r.status.code(), Some(1), "stderr {}", r.stderr);
    let needle = format!("cannot listen on 127.0.0.1:{port}");
    assert_eq!(r.stderr.matches(&needle).count(), 1, "stderr: {}", r.stderr);
}

// ---------------------------------------------------------------- -D

/// The stats fields nutcracker 0.5.0 reports, from its `-D` and JSON.
const POOL_FIELDS: [&str; 6] = [
    "client_eof",
    "client_err",
    "client_connections",
    "server_ejects",
    "forward_error",
    "fragments",
];
const SERVER_FIELDS: [&str; 13] = [
    "server_eof",
    "server_err",
    "server_timedout",
    "server_connections",
    "server_ejected_at",
    "requests",
    "request_bytes",
    "responses",
    "response_bytes",
    "in_queue",
    "in_queue_bytes",
    "out_queue",
    "out_queue_bytes",
];

// `-D` describes every stats field under nutcracker's two headings, each field
// in the section it belongs to, and exits 0.
#[test]
fn describe_stats_lists_every_field() {
    let r = run(&["-D"]);
    assert!(r.ok(), "-D: exit {:?}, stderr {}", r.status, r.stderr);
    assert_eq!(r.stdout_text(), "", "nutcracker prints -D on stderr");
    let text = r.stderr.clone();
    let pool_at = text.find("pool stats:").expect("has 'pool stats:'");
    let server_at = text.find("server stats:").expect("has 'server stats:'");
    assert!(pool_at < server_at, "sections out of order:\n{text}");
    let (pool_part, server_part) = text.split_at(server_at);
    let words = |s: &str| -> HashSet<String> {
        s.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    let (pw, sw) = (words(pool_part), words(server_part));
    for f in POOL_FIELDS {
        assert!(pw.contains(f), "pool stats section lacks {f}:\n{text}");
    }
    for f in SERVER_FIELDS {
        assert!(sw.contains(f), "server stats section lacks {f}:\n{text}");
    }
}

// ---------------------------------------------------------------- -d -p

/// Kills the daemon by the pid in its pid file when the test ends, pass or
/// fail: it is not our child, so nothing else would.
struct DaemonGuard {
    pid_file: PathBuf,
    pid: Option<u32>,
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let pid = self.pid.or_else(|| read_pid(&self.pid_file));
        if let Some(pid) = pid {
            if alive(pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Running (not gone, not a zombie waiting for init to reap it).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// The process state letter (R, S, T for stopped, ...).
fn state(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_default()
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

// `-d -p FILE` detaches at once, records a live pid, serves, and on SIGTERM
// exits and removes its pid file (init scripts rely on all four).
#[test]
fn daemonize_with_pid_file() {
    let redis = Redis::start();
    let dir = TempDir::new("cli-daemon");
    let (port, stats) = (free_port(), free_port());
    let conf = write_conf(
        &dir,
        "d.yml",
        &format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - {}:1\n",
            redis.addr()
        ),
    );
    let pid_file = dir.path().join("twem.pid");
    let log = dir.path().join("twem.log");
    let mut guard = DaemonGuard {
        pid_file: pid_file.clone(),
        pid: None,
    };
    let started = Instant::now();
    let r = run_limited(
        &[
            "-d",
            "-p",
            &pid_file.display().to_string(),
            "-c",
            &conf,
            "-s",
            &stats.to_string(),
            "-a",
            "127.0.0.1",
            "-o",
            &log.display().to_string(),
        ],
        b"",
        Duration::from_secs(5),
    );
    assert!(r.ok(), "-d exited {:?}: {}", r.status, r.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "-d took {:?} to return",
        started.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(5), || read_pid(&pid_file).is_some()),
        "pid file {} never appeared",
        pid_file.display()
    );
    let pid = read_pid(&pid_file).unwrap_or(0);
    guard.pid = Some(pid);
    assert!(alive(pid), "pid {pid} from the pid file is not running");

    wait_for_port(port, Duration::from_secs(5));
    let mut c = Client::connect(port);
    assert_eq!(c.cmds("SET daemon:k v1"), b"+OK\r\n");
    assert_eq!(c.cmds("GET daemon:k"), b"$2\r\nv1\r\n");
    drop(c);

    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -TERM {pid} failed");
    assert!(
        wait_until(Duration::from_secs(10), || !alive(pid)),
        "daemon {pid} still running 10 s after SIGTERM"
    );
    assert!(
        wait_until(Duration::from_secs(2), || !pid_file.exists()),
        "pid file {} left behind after SIGTERM",
        pid_file.display()
    );
}

// `-d` with relative `-c`, `-p` and `-o`: the paths are made absolute before
// daemon() moves to `/`, so a SIGHUP reload reads the same file (it used to
// read `/<name>` and fail) and the pid and log files land beside it.
#[test]
fn daemonize_relative_paths_reload() {
    let dir = TempDir::new("cli-daemon-rel");
    let (p1, p2, stats) = (free_port(), free_port(), free_port());
    let pool = |name: &str, port: u16| {
        format!(
            "{name}:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - 127.0.0.1:1:1\n"
        )
    };
    write_conf(&dir, "alpha.yml", &pool("alpha", p1));
    let pid_file = dir.path().join("twem.pid");
    let mut guard = DaemonGuard {
        pid_file: pid_file.clone(),
        pid: None,
    };
    let r = run_limited_in(
        Some(dir.path()),
        &[
            "-d",
            "-c",
            "alpha.yml",
            "-p",
            "twem.pid",
            "-o",
            "twem.log",
            "-s",
            &stats.to_string(),
            "-a",
            "127.0.0.1",
        ],
        b"",
        Duration::from_secs(5),
    );
    assert!(r.ok(), "-d exited {:?}: {}", r.status, r.stderr);
    assert!(
        wait_until(Duration::from_secs(5), || read_pid(&pid_file).is_some()),
        "pid file {} never appeared",
        pid_file.display()
    );
    let pid = read_pid(&pid_file).unwrap_or(0);
    guard.pid = Some(pid);
    wait_for_port(p1, Duration::from_secs(5));

    write_conf(
        &dir,
        "alpha.yml",
        &format!("{}{}", pool("alpha", p1), pool("beta", p2)),
    );
    let st = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -HUP {pid} failed");
    let log = dir.path().join("twem.log");
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            p2
        ))
        .is_ok()),
        "reload did not add pool beta; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("cannot read configuration file"),
        "log:\n{text}"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    assert!(
        wait_until(Duration::from_secs(10), || !alive(pid)),
        "daemon {pid} still running 10 s after SIGTERM"
    );
}

// ---------------------------------------------------------------- stats

fn wait_stats(
    proxy: &ProxyProc,
    limit: Duration,
    mut ready: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = proxy.stats();
        if ready(&v) || start.elapsed() > limit {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn keys_on(redis: &Redis) -> HashSet<Vec<u8>> {
    let mut c = redis.client();
    let reply = c.cmds("KEYS *");
    parse_bulk_array(&reply)
        .into_iter()
        .collect::<HashSet<Vec<u8>>>()
}

/// The elements of a flat RESP array of bulk strings.
fn parse_bulk_array(reply: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let text = reply;
    let Some(nl) = twem_tests::find(text, b"\r\n") else {
        return out;
    };
    let mut at = nl + 2;
    while at < text.len() {
        let rest = &text[at..];
        let Some(e) = twem_tests::find(rest, b"\r\n") else {
            break;
        };
        let n: usize = std::str::from_utf8(&rest[1..e])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let start = e + 2;
        out.push(rest[start..start + n].to_vec());
        at += start + n + 2;
    }
    out
}

fn num(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("stats field {path:?} is not a number: {cur} in {v}"))
}

// After known traffic through a Redis pool over two real servers, the stats
// document has nutcracker's shape and per-server counts that match exactly
// what was sent where; a split MGET counts its fragments.
#[test]
fn stats_after_traffic_match_what_was_sent() {
    let r1 = Redis::start();
    let r2 = Redis::start();
    // One named server, one unnamed: the stats key of the latter is host:port.
    // Modula over servers sorted by name (shorter first) places keys the same
    // whatever ports the backends got, and splits 40 keys over both.
    let (proxy, port) = Twem::start(
        "alpha",
        "  redis: true\n  hash: fnv1a_64\n  distribution: modula\n",
        &[(r1.addr(), "first"), (r2.addr(), "")],
    )
    .parts();
    let names = [("first".to_string(), &r1), (r2.addr(), &r2)];

    let mut c = Client::connect(port);
    let keys: Vec<String> = (0..40).map(|i| format!("stats:key:{i}")).collect();
    let mut sent: HashMap<Vec<u8>, (u64, u64)> = HashMap::new(); // key -> (req bytes, resp bytes)
    for (i, k) in keys.iter().enumerate() {
        let val = "v".repeat(i + 1);
        let set = resp_cmd(&[b"SET", k.as_bytes(), val.as_bytes()]);
        let get = resp_cmd(&[b"GET", k.as_bytes()]);
        assert_eq!(c.cmd(&[b"SET", k.as_bytes(), val.as_bytes()]), b"+OK\r\n");
        let reply = c.cmd(&[b"GET", k.as_bytes()]);
        assert_eq!(reply, twem_tests::bulk(val.as_bytes()));
        sent.insert(
            k.as_bytes().to_vec(),
            (
                (set.len() + get.len()) as u64,
                (b"+OK\r\n".len() + reply.len()) as u64,
            ),
        );
    }
    let total_requests = 2 * keys.len() as u64;
    let v = wait_stats(&proxy, Duration::from_secs(3), |v| {
        names
            .iter()
            .map(|(n, _)| v["alpha"][n.as_str()]["responses"].as_u64().unwrap_or(0))
            .sum::<u64>()
            >= total_requests
    });

    // Top level, as nutcracker 0.5.0 writes it.
    assert_eq!(v["service"], "nutcracker", "{v}");
    assert_eq!(v["version"], "0.5.0", "{v}");
    assert!(
        v["source"].as_str().is_some_and(|s| !s.is_empty()),
        "source: {v}"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ts = num(&v, &["timestamp"]);
    assert!(ts.abs_diff(now) <= 60, "timestamp {ts} vs now {now}");
    assert!(num(&v, &["uptime"]) < 600, "uptime: {v}");
    let (total, curr) = (
        num(&v, &["total_connections"]),
        num(&v, &["curr_connections"]),
    );
    assert!(
        curr >= 1 && total >= curr,
        "connections: total {total} curr {curr}"
    );

    // Pool level: one client connected, nothing went wrong.
    for f in POOL_FIELDS {
        num(&v, &["alpha", f]);
    }
    assert_eq!(num(&v, &["alpha", "client_connections"]), 1, "{v}");
    for f in ["client_err", "server_ejects", "forward_error", "fragments"] {
        assert_eq!(num(&v, &["alpha", f]), 0, "alpha.{f}: {v}");
    }

    // Server level: requests and bytes exactly as sent to each backend, which
    // the backends themselves tell us (KEYS *), independently of the proxy.
    let mut placed = 0;
    let mut mget_parts = 0;
    for (name, redis) in &names {
        for f in SERVER_FIELDS {
            num(&v, &["alpha", name, f]);
        }
        let here = keys_on(redis);
        placed += here.len();
        if !here.is_empty() {
            mget_parts += 1;
        }
        let (req_bytes, resp_bytes) = here.iter().fold((0, 0), |(a, b), k| {
            let (q, r) = sent.get(k).copied().unwrap_or((0, 0));
            (a + q, b + r)
        });
        let n = 2 * here.len() as u64;
        let s = |f: &str| num(&v, &["alpha", name, f]);
        assert_eq!(s("requests"), n, "{name}.requests: {v}");
        assert_eq!(s("responses"), n, "{name}.responses: {v}");
        assert_eq!(s("request_bytes"), req_bytes, "{name}.request_bytes: {v}");
        assert_eq!(
            s("response_bytes"),
            resp_bytes,
            "{name}.response_bytes: {v}"
        );
        assert_eq!(s("server_connections"), 1, "{name}.server_connections: {v}");
        for f in [
            "server_eof",
            "server_err",
            "server_timedout",
            "server_ejected_at",
            "in_queue",
            "in_queue_bytes",
            "out_queue",
            "out_queue_bytes",
        ] {
            assert_eq!(s(f), 0, "{name}.{f}: {v}");
        }
    }
    assert_eq!(placed, keys.len(), "keys lost between backends");
    assert_eq!(mget_parts, 2, "40 keys all on one of two servers");

    // One MGET over all keys splits into one part per server.
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(keys.iter().map(|k| k.as_bytes()));
    let reply = c.cmd(&args);
    assert!(
        reply.starts_with(b"*40\r\n"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let v2 = wait_stats(&proxy, Duration::from_secs(3), |v| {
        v["alpha"]["fragments"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(
        num(&v2, &["alpha", "fragments"]),
        mget_parts,
        "fragments after one MGET over both servers: {v2}"
    );
    for (name, _) in &names {
        assert_eq!(
            num(&v2, &["alpha", name, "requests"]),
            num(&v, &["alpha", name, "requests"]) + 1,
            "{name}: the MGET should be one request per server: {v2}"
        );
    }

    // The client leaving is counted as an EOF and no longer connected. (The
    // harness's readiness probe was a client too, already counted in `v`.)
    let eof_before = num(&v, &["alpha", "client_eof"]);
    drop(c);
    let v3 = wait_stats(&proxy, Duration::from_secs(3), |v| {
        v["alpha"]["client_eof"].as_u64().unwrap_or(0) > eof_before
            && v["alpha"]["client_connections"].as_u64() == Some(0)
    });
    assert_eq!(num(&v3, &["alpha", "client_eof"]), eof_before + 1, "{v3}");
    assert_eq!(num(&v3, &["alpha", "client_connections"]), 0, "{v3}");
}

// ---------------------------------------------------------------- --locate

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../twem-core/tests/data")
}

/// keys.hex in order, and per pool: key hex -> server name, from placement.tsv.
struct Golden {
    keys_hex: Vec<String>,
    placement: HashMap<String, HashMap<String, String>>,
}

fn golden() -> Golden {
    let d = data_dir();
    let keys = std::fs::read_to_string(d.join("keys.hex")).expect("keys.hex");
    let keys_hex: Vec<String> = keys.lines().map(str::to_string).collect();
    let tsv = std::fs::read_to_string(d.join("placement.tsv")).expect("placement.tsv");
    let mut placement: HashMap<String, HashMap<String, String>> = HashMap::new();
    for line in tsv.lines().filter(|l| !l.starts_with('#')) {
        let mut f = line.splitn(3, '\t');
        let (Some(pool), Some(key), Some(server)) = (f.next(), f.next(), f.next()) else {
            panic!("bad placement.tsv row {line:?}");
        };
        placement
            .entry(pool.to_string())
            .or_default()
            .insert(key.to_string(), server.to_string());
    }
    Golden {
        keys_hex,
        placement,
    }
}

fn pools_yml() -> String {
    data_dir().join("pools.yml").display().to_string()
}

fn locate(args: &[&str], input: &[u8]) -> Run {
    let conf = pools_yml();
    let mut all = vec!["--locate", "-c", conf.as_str()];
    all.extend_from_slice(args);
    run_limited(&all, input, Duration::from_secs(20))
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("golden hex"))
        .collect()
}

// Every key of the golden set, hex-fed, lands where nutcracker's own code put
// it, for pools covering unix sockets, a zero-point server, md5 with a hash
// tag, weighted modula, 100 servers and port-11211 naming.
#[test]
fn locate_hex_matches_golden_placement() {
    let g = golden();
    assert_eq!(g.keys_hex.len(), 1000, "keys.hex");
    let mut input = g.keys_hex.join("\n");
    input.push('\n');
    for pool in [
        "p93_unix",
        "p90_omega",
        "p02_md5_ketama",
        "p01_one_at_a_time_modula",
        "p92_hundred",
        "p95_weights",
    ] {
        let want = g.placement.get(pool).expect("pool in placement.tsv");
        let r = locate(&["--hex", "--pool", pool], input.as_bytes());
        assert!(r.ok(), "{pool}: exit {:?}: {}", r.status, r.stderr);
        let out = r.stdout_text();
        let got: Vec<&str> = out.lines().collect();
        assert_eq!(got.len(), g.keys_hex.len(), "{pool}: one line per key");
        let wrong: Vec<String> = g
            .keys_hex
            .iter()
            .zip(&got)
            .filter(|(k, s)| want.get(k.as_str()).map(String::as_str) != Some(**s))
            .map(|(k, s)| format!("key {k:?}: got {s:?}, golden {:?}", want.get(k.as_str())))
            .collect();
        assert!(
            wrong.is_empty(),
            "{pool}: {} of 1000 keys misplaced, e.g.\n{}",
            wrong.len(),
            wrong
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

// Raw keys (not hex) are located the same; only keys without line breaks can
// be written one per line, so those are the ones fed.
#[test]
fn locate_plain_keys_match_golden_placement() {
    let g = golden();
    let pool = "p02_md5_ketama";
    let want = g.placement.get(pool).expect("pool in placement.tsv");
    let keys: Vec<(&String, Vec<u8>)> = g
        .keys_hex
        .iter()
        .map(|h| (h, hex_decode(h)))
        .filter(|(_, k)| !k.contains(&b'\n') && !k.contains(&b'\r'))
        .collect();
    assert!(keys.len() > 500, "most golden keys have no line break");
    let mut input = Vec::new();
    for (_, k) in &keys {
        input.extend_from_slice(k);
        input.push(b'\n');
    }
    let r = locate(&["--pool", pool], &input);
    assert!(r.ok(), "exit {:?}: {}", r.status, r.stderr);
    let out = r.stdout_text();
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), keys.len(), "one line per key");
    for ((h, _), s) in keys.iter().zip(&got) {
        assert_eq!(
            want.get(h.as_str()).map(String::as_str),
            Some(*s),
            "key {h}"
        );
    }
}

// `--eject` answers "where would it go if these died" exactly as nutcracker
// rebuilds its ring over the live servers (placement_ejected.tsv).
#[test]
fn locate_eject_matches_golden() {
    let g = golden();
    let tsv = std::fs::read_to_string(data_dir().join("placement_ejected.tsv"))
        .expect("placement_ejected.tsv");
    let mut input = g.keys_hex.join("\n");
    input.push('\n');
    for pool in ["p02_md5_ketama", "p93_unix"] {
        let rows: Vec<Vec<&str>> = tsv
            .lines()
            .filter(|l| l.starts_with(&format!("{pool}\t")))
            .map(|l| l.splitn(4, '\t').collect())
            .collect();
        assert_eq!(rows.len(), 1000, "{pool} rows");
        let ejected = rows[0][1];
        let want: HashMap<&str, &str> = rows.iter().map(|r| (r[2], r[3])).collect();
        let mut args = vec!["--hex", "--pool", pool];
        for name in ejected.split(',') {
            args.extend(["--eject", name]);
        }
        let r = locate(&args, input.as_bytes());
        assert!(r.ok(), "{pool}: exit {:?}: {}", r.status, r.stderr);
        let out = r.stdout_text();
        let got: Vec<&str> = out.lines().collect();
        assert_eq!(got.len(), 1000, "{pool}: one line per key");
        for (k, s) in g.keys_hex.iter().zip(&got) {
            assert_eq!(
                want.get(k.as_str()),
                Some(s),
                "{pool} with {ejected} ejected, key {k}"
            );
        }
    }
}

// Misuse gets a non-zero exit and a message that says what to do.
#[test]
fn locate_errors_are_clear() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&[], &["--pool", "p00_one_at_a_time_ketama"]),
        (&["--pool", "nosuchpool"], &["nosuchpool"]),
        (
            &[
                "--pool",
                "p01_one_at_a_time_modula",
                "--eject",
                "10.15.48.238",
            ],
            &["p01_one_at_a_time_modula", "auto_eject_hosts"],
        ),
        (
            &["--pool", "p02_md5_ketama", "--eject", "no-such-server"],
            &["p02_md5_ketama", "no-such-server"],
        ),
    ];
    for (args, needles) in cases {
        let r = locate(args, b"a\n");
        assert!(!r.ok(), "{args:?} succeeded: {}", r.stdout_text());
        assert!(r.stdout.is_empty(), "{args:?} printed placements");
        for n in needles {
            assert!(
                r.stderr.contains(n),
                "{args:?}: stderr does not mention {n:?}: {}",
                r.stderr
            );
        }
    }
}

// ---------------------------------------------------------------- logging

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

// `-v 7 -o FILE` logs to FILE; SIGTTIN/SIGTTOU change the level without
// stopping the process (their default action would); and after logrotate
// moves the file away, SIGHUP makes the proxy write a new file at the path.
#[test]
fn log_file_levels_and_reopen() {
    let redis = Redis::start();
    let (mut proxy, port) = Twem::start_with(
        "alpha",
        "  redis: true\n",
        &[(redis.addr(), "")],
        &["-v", "7"],
    )
    .parts();
    let log = proxy.dir.path().join("proxy.log");
    let pid = proxy.proc.pid();

    let mut c = Client::connect(port);
    assert_eq!(c.cmds("SET log:k v"), b"+OK\r\n");
    drop(c);
    assert!(
        wait_until(Duration::from_secs(3), || log_len(&log) > 0),
        "nothing written to {} at -v 7",
        log.display()
    );

    for sig in [libc::SIGTTIN, libc::SIGTTOU, libc::SIGTTOU] {
        let before = log_len(&log);
        proxy.proc.signal(sig);
        assert!(
            wait_until(Duration::from_secs(3), || log_len(&log) > before),
            "signal {sig}: no log line about the level change"
        );
        assert!(
            proxy
                .proc
                .wait_timeout(Duration::from_millis(100))
                .is_none(),
            "signal {sig} killed the proxy"
        );
        let st = state(pid);
        assert_ne!(st, "T", "signal {sig} stopped the proxy");
    }
    let mut c = Client::connect(port);
    assert_eq!(
        c.cmds("GET log:k"),
        b"$1\r\nv\r\n",
        "serves after the signals"
    );
    drop(c);

    let rotated = proxy.dir.path().join("proxy.log.1");
    std::fs::rename(&log, &rotated).expect("rotate the log");
    proxy.proc.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(3), || log.exists()),
        "no new log file at {} after SIGHUP",
        log.display()
    );
    let rotated_len = log_len(&rotated);
    // New traffic and a level change must land in the new file, not the old.
    let mut c = Client::connect(port);
    assert_eq!(c.cmds("GET log:k"), b"$1\r\nv\r\n");
    drop(c);
    proxy.proc.signal(libc::SIGTTIN);
    assert!(
        wait_until(Duration::from_secs(3), || log_len(&log) > 0),
        "nothing written to the reopened log"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        log_len(&rotated),
        rotated_len,
        "still writing to the rotated file"
    );
    assert!(
        proxy.proc.wait_timeout(Duration::from_millis(50)).is_none(),
        "SIGHUP killed the proxy"
    );
}

/// The lines of the proxy's log ending with `text`.
fn log_lines_ending(path: &Path, text: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(text))
        .count()
}

// Every signal is logged in nutcracker 0.5.0's words (the lines below are
// what `nutcracker -v 6` wrote for these signals), and each still does what
// it did: SIGTTIN/SIGTTOU step the level (nutcracker's `up log level to N`
// lines), SIGUSR2 is logged and ignored, SIGINT and SIGTERM end the process.
#[test]
fn signal_log_lines_match_nutcracker() {
    let redis = Redis::start();
    let Twem { mut proxy, .. } = Twem::start_with(
        "alpha",
        "  redis: true\n",
        &[(redis.addr(), "")],
        &["-v", "6"],
    );
    let log = proxy.dir.path().join("proxy.log");
    let steps: [(i32, &[&str]); 6] = [
        (
            libc::SIGHUP,
            &["signal 1 (SIGHUP) received, reopening log file"],
        ),
        (
            libc::SIGTTIN,
            &[
                "signal 21 (SIGTTIN) received, up logging level",
                "up log level to 7",
            ],
        ),
        (
            libc::SIGTTOU,
            &[
                "signal 22 (SIGTTOU) received, down logging level",
                "down log level to 6",
            ],
        ),
        (libc::SIGUSR1, &["signal 10 (SIGUSR1) received"]),
        (libc::SIGUSR2, &["signal 12 (SIGUSR2) received"]),
        (libc::SIGINT, &["signal 2 (SIGINT) received, exiting"]),
    ];
    for (sig, lines) in steps {
        proxy.proc.signal(sig);
        for line in lines {
            assert!(
                wait_until(Duration::from_secs(5), || log_lines_ending(&log, line) == 1),
                "signal {sig}: no line ending {line:?} in\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if sig != libc::SIGINT {
            assert!(
                proxy.proc.wait_timeout(Duration::from_millis(50)).is_none(),
                "signal {sig} ended the proxy"
            );
        }
    }
    assert!(
        proxy.proc.wait_timeout(Duration::from_secs(10)).is_some(),
        "still running after SIGINT"
    );

    let Twem { mut proxy, .. } = Twem::start("alpha", "  redis: true\n", &[(redis.addr(), "")]);
    let log = proxy.dir.path().join("proxy.log");
    proxy.proc.signal(libc::SIGTERM);
    let line = "signal 15 (SIGTERM) received, exiting";
    assert!(
        wait_until(Duration::from_secs(5), || log_lines_ending(&log, line) == 1),
        "no line ending {line:?}"
    );
    assert!(
        proxy.proc.wait_timeout(Duration::from_secs(10)).is_some(),
        "still running after SIGTERM"
    );
}
