//! Binding a pool's `listen` address: TCP with nutcracker's `backlog` and
//! `reuseport`, or a unix socket with its permissions.

use std::net::ToSocketAddrs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, Socket, Type};
use tokio::io::unix::AsyncFd;

use twem_core::config::{Listen, PoolConfig};

/// A bound listener: registered for readiness with the runtime it was
/// bound on, accepted with std's `accept`, so that an accepted socket is
/// registered only with the runtime that serves it (a worker's: with
/// tokio's own listeners each client was registered twice, and the first
/// registration's memory stayed with the accepting thread's allocator arena,
/// measured at 0.3 KiB per idle client).
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(AsyncFd<std::net::TcpListener>),
    /// A unix socket, and its path (removed when the listener goes away).
    Unix(AsyncFd<std::os::unix::net::UnixListener>, PathBuf),
}

/// An accepted client socket, non-blocking, not yet registered with any
/// runtime.
#[derive(Debug)]
pub enum Accepted {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// A unix socket.
    Unix(std::os::unix::net::UnixStream),
}

impl Listener {
    /// The next client (waits for one).
    pub async fn accept(&self) -> std::io::Result<Accepted> {
        loop {
            let got = match self {
                Listener::Tcp(l) => {
                    let mut ready = l.readable().await?;
                    ready.try_io(|l| l.get_ref().accept().map(|(s, _)| Accepted::Tcp(s)))
                }
                Listener::Unix(l, _) => {
                    let mut ready = l.readable().await?;
                    ready.try_io(|l| l.get_ref().accept().map(|(s, _)| Accepted::Unix(s)))
                }
            };
            // `Err(_)`: it would block (the readiness was stale and is now
            // cleared): wait again.
            if let Ok(r) = got {
                let conn = r?;
                conn.set_nonblocking()?;
                return Ok(conn);
            }
        }
    }
}

impl Accepted {
    fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            Accepted::Tcp(s) => s.set_nonblocking(true),
            Accepted::Unix(s) => s.set_nonblocking(true),
        }
    }
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
///
/// Resolves the host with blocking DNS, deliberately: it is called at start
/// before any client is served and, on reload, from the blocking thread that
/// plans the reload, never from a serving worker.
#[allow(clippy::disallowed_methods)]
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
            Ok(Listener::Tcp(watch(std).map_err(err)?))
        }
        Listen::Unix { path, mode } => {
            remove_stale_socket(path).map_err(err)?;
            let l = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            let l = watch(l).map_err(err)?;
            if let Some(m) = mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*m)).map_err(err)?;
            }
            Ok(Listener::Unix(l, path.clone()))
        }
    }
}

/// Register a std listener with the current runtime for readiness.
///
/// `AsyncFd::new` is deprecated because a generic `T` might hand out
/// another descriptor over its life, which would break I/O safety; a std
/// listener owns its descriptor and never changes it, so the safe
/// constructor is sound here, and its replacement (`AsyncFd::register`) is
/// `unsafe`, which this workspace forbids.
#[allow(deprecated)]
fn watch<T: std::os::fd::AsRawFd>(l: T) -> std::io::Result<AsyncFd<T>> {
    AsyncFd::new(l)
}

/// Unlinks a socket file left at `path` by an earlier run, as nutcracker
/// does before binding, but nothing else: a `listen` path that names a
/// regular file (a typo, a config file) must not delete that file.
fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(meta) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket ({}); refusing to remove it",
                path.display(),
                file_kind(&meta.file_type())
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a socket"
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only a socket is removed before binding; a regular file, a directory
    // or a symlink at the path is left alone and named in the error.
    #[test]
    fn only_a_stale_socket_is_removed() {
        let dir = std::env::temp_dir().join(format!("twem-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("data.yml");
        std::fs::write(&file, "keep me").expect("write");
        let err = remove_stale_socket(&file).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(
            err.to_string().contains("is not a socket (a regular file)"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).expect("still there"),
            "keep me"
        );
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert!(remove_stale_socket(&link).is_err());
        assert!(remove_stale_socket(&dir).is_err());

        let sock = dir.join("stale.sock");
        let _ = std::fs::remove_file(&sock);
        drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
        assert!(sock.exists(), "a closed std listener leaves its file");
        remove_stale_socket(&sock).expect("stale socket removed");
        assert!(!sock.exists());
        remove_stale_socket(&sock).expect("nothing there is fine");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
