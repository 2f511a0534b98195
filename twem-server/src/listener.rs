//! Binding a pool's `listen` address: TCP with nutcracker's `backlog` and
//! `reuseport`, or a unix socket with its permissions.

use std::net::ToSocketAddrs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, UnixListener};

use twem_core::config::{Listen, PoolConfig};

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A unix socket, and its path (removed when the listener goes away).
    Unix(UnixListener, PathBuf),
}

/// Why a listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("pool \"{pool}\": cannot listen on {addr}: {source}")]
pub struct ListenError {
    /// The pool.
    pub pool: String,
    /// The address, as configured.
    pub addr: String,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

/// Bind `pool`'s listen address and listen on it. Must run inside a tokio
/// runtime.
pub fn bind(pool: &PoolConfig) -> Result<Listener, ListenError> {
    bind_idle(pool)?.listen()
}

/// A pool's listen address, bound but not accepting yet: the kernel takes
/// connections only from [`Bound::listen`] on. The start binds every address
/// first (a bad or taken one fails it before anything is written), writes the
/// pid file, and only then listens, so whoever sees a port accept finds the
/// pid file already there.
#[derive(Debug)]
pub struct Bound {
    sock: Socket,
    backlog: i32,
    /// The unix socket's file.
    unix: Option<Unlink>,
    pool: String,
    addr: String,
}

/// Bind `pool`'s listen address without listening (see [`Bound`]).
pub fn bind_idle(pool: &PoolConfig) -> Result<Bound, ListenError> {
    let err = |source| ListenError {
        pool: pool.name.clone(),
        addr: pool.listen.to_string(),
        source,
    };
    let backlog = i32::try_from(pool.backlog).unwrap_or(i32::MAX);
    let bound = |sock, unix| Bound {
        sock,
        backlog,
        unix,
        pool: pool.name.clone(),
        addr: pool.listen.to_string(),
    };
    match &pool.listen {
        Listen::Tcp { host, port } => {
            let addr = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(err)?
                .next()
                .ok_or_else(|| {
                    err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "address did not resolve",
                    ))
                })?;
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
            sock.set_reuse_address(true).map_err(err)?;
            if pool.reuseport {
                sock.set_reuse_port(true).map_err(err)?;
            }
            sock.bind(&addr.into()).map_err(err)?;
            Ok(bound(sock, None))
        }
        Listen::Unix { path, mode } => {
            // nutcracker unlinks a stale socket file before binding.
            let _ = std::fs::remove_file(path);
            let sock = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(err)?;
            sock.bind(&SockAddr::unix(path).map_err(err)?)
                .map_err(err)?;
            let b = bound(sock, Some(Unlink(path.clone())));
            if let Some(m) = mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*m)).map_err(err)?;
            }
            Ok(b)
        }
    }
}

impl Bound {
    /// Start accepting: `listen(2)` with the pool's `backlog` (nutcracker
    /// uses it for unix sockets too). Must run inside a tokio runtime.
    pub fn listen(self) -> Result<Listener, ListenError> {
        let Bound {
            sock,
            backlog,
            unix,
            pool,
            addr,
        } = self;
        let err = |source| ListenError {
            pool: pool.clone(),
            addr: addr.clone(),
            source,
        };
        sock.listen(backlog).map_err(err)?;
        sock.set_nonblocking(true).map_err(err)?;
        Ok(match unix {
            None => Listener::Tcp(TcpListener::from_std(sock.into()).map_err(err)?),
            Some(mut file) => {
                let l = UnixListener::from_std(sock.into()).map_err(err)?;
                Listener::Unix(l, std::mem::take(&mut file.0))
            }
        })
    }
}

/// A bound unix socket's file, removed if it is dropped before listening
/// (the [`Listener`] takes the path over then).
#[derive(Debug)]
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Bind a TCP address (the first of its addresses that binds, with
/// `SO_REUSEADDR` as tokio's `TcpListener::bind` sets it) without listening:
/// the stats and metrics ports, held back like the pools' (see [`Bound`]).
pub async fn bind_tcp_idle(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<TcpSocket> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let sock = if a.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        match sock.bind(a) {
            Ok(()) => return Ok(sock),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "address did not resolve")
    }))
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}
