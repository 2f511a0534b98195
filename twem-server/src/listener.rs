//! Binding a pool's `listen` address: TCP with nutcracker's `backlog` and
//! `reuseport`, or a unix socket with its permissions.

use std::net::ToSocketAddrs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, UnixListener};

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

/// Bind `pool`'s listen address. Must run inside a tokio runtime.
pub fn bind(pool: &PoolConfig) -> Result<Listener, ListenError> {
    let err = |source| ListenError {
        pool: pool.name.clone(),
        addr: pool.listen.to_string(),
        source,
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
            let backlog = i32::try_from(pool.backlog).unwrap_or(i32::MAX);
            sock.listen(backlog).map_err(err)?;
            sock.set_nonblocking(true).map_err(err)?;
            let std: std::net::TcpListener = sock.into();
            Ok(Listener::Tcp(TcpListener::from_std(std).map_err(err)?))
        }
        Listen::Unix { path, mode } => {
            // nutcracker unlinks a stale socket file before binding.
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path).map_err(err)?;
            if let Some(m) = mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*m)).map_err(err)?;
            }
            Ok(Listener::Unix(l, path.clone()))
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}
