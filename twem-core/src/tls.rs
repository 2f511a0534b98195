//! TLS for a pool, both ways: towards its clients (the `tls_cert`,
//! `tls_key`, `tls_client_ca` keys) and towards its servers (`tls_servers`
//! and the keys that go with it). rustls with the ring provider.
//!
//! The config model holds paths only; [`load`] reads and checks the files
//! each time a pool is built (start, `-t`, every reload), so a reload picks
//! up rotated certificates under the same names, and a bad file is refused
//! before anything changes, the problem naming the pool, the key and the file.
//!
//! The session reads in two steps (readiness, then a read that must not
//! wait) and writes without flushing, which a plain socket allows and a TLS
//! stream does not: [`TlsRead`] and [`FlushingWrite`] adapt one to the other.

use std::fmt;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio_rustls::TlsConnector;

/// The acceptor a TLS pool's clients are served with (re-exported so the
/// server needs no TLS crate of its own).
pub use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ConfigError, PoolConfig, Problem, TlsConfig};
use crate::session::ClientRead;

/// How much plaintext one readiness poll of a TLS client takes (held until
/// the session reads it): at most one TLS record's worth.
const READY_CHUNK: usize = 4096;

/// A pool's TLS material, built from its files.
#[derive(Clone, Default)]
pub struct PoolTls {
    acceptor: Option<TlsAcceptor>,
    backend: Option<BackendTls>,
    /// The bytes of every file read, in key order: a reload keeps a pool
    /// whose config and files are unchanged (logrotate sends SIGHUP daily;
    /// rebuilding would reconnect every backend connection for nothing).
    files: Option<Vec<u8>>,
}

/// How the pool connects to its servers with TLS.
#[derive(Clone)]
pub(crate) struct BackendTls {
    pub connector: TlsConnector,
    /// `tls_server_name`; `None`: each server's own host.
    pub server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for PoolTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolTls")
            .field("clients", &self.acceptor.is_some())
            .field("servers", &self.backend.is_some())
            .finish()
    }
}

impl PoolTls {
    /// The acceptor clients are served with, when the pool listens with TLS.
    pub fn acceptor(&self) -> Option<&TlsAcceptor> {
        self.acceptor.as_ref()
    }

    pub(crate) fn backend(&self) -> Option<&BackendTls> {
        self.backend.as_ref()
    }

    /// Whether the pool's TLS files still hold what was read when it was
    /// built (false when one no longer reads).
    pub fn files_unchanged(&self, config: &TlsConfig) -> bool {
        self.files.is_some() && self.files == file_contents(config)
    }
}

/// The contents of every file `config` names, each preceded by its length.
fn file_contents(config: &TlsConfig) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for path in [
        &config.cert,
        &config.key,
        &config.client_ca,
        &config.ca,
        &config.client_cert,
        &config.client_key,
    ]
    .into_iter()
    .flatten()
    {
        let bytes = std::fs::read(path).ok()?;
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    Some(out)
}

/// Read and check every TLS file of every pool (start, `-t`, reload: before
/// any port is bound). Every problem is reported, each naming its pool, key
/// and file.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    let problems: Vec<Problem> = config
        .pools
        .iter()
        .filter_map(|p| load(p).err())
        .flat_map(|e| e.problems)
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { problems })
    }
}

/// Build the pool's TLS material from its files.
pub fn load(config: &PoolConfig) -> Result<PoolTls, ConfigError> {
    let mut problems = Vec::new();
    // Every message starts with the key, then names the file.
    let mut report = |key: &str, message: String| {
        problems.push(Problem {
            pool: Some(config.name.clone()),
            key: Some(key.to_owned()),
            message: format!("{key} {message}"),
            line: None,
        })
    };
    let tls = &config.tls;
    let mut out = PoolTls {
        // Read before the files are parsed: a file replaced in between is
        // then seen as changed at the next reload, never missed.
        files: file_contents(tls),
        ..PoolTls::default()
    };
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        let chain = certs(cert).map_err(|m| report("tls_cert", m));
        let key_der = private_key(key).map_err(|m| report("tls_key", m));
        let verifier = match &tls.client_ca {
            Some(ca) => roots(ca)
                .map_err(|m| report("tls_client_ca", m))
                .and_then(|roots| {
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| {
                            report(
                                "tls_client_ca",
                                format!("tls_client_ca {}: {e}", ca.display()),
                            )
                        })
                })
                .map(Some),
            None => Ok(None),
        };
        if let (Ok(chain), Ok(key_der), Ok(verifier)) = (chain, key_der, verifier) {
            let built = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    let b = match verifier {
                        Some(v) => b.with_client_cert_verifier(v),
                        None => b.with_no_client_auth(),
                    };
                    // Also checks that the key belongs to the certificate.
                    b.with_single_cert(chain, key_der)
                        .map_err(|e| e.to_string())
                });
            match built {
                Ok(sc) => out.acceptor = Some(TlsAcceptor::from(Arc::new(sc))),
                Err(e) => report(
                    "tls_key",
                    format!(
                        "{} does not go with tls_cert {}: {e}",
                        key.display(),
                        cert.display()
                    ),
                ),
            }
        }
    }
    if tls.servers {
        let root_store = match &tls.ca {
            Some(ca) => roots(ca).map_err(|m| report("tls_ca", m)),
            None => system_roots().map_err(|m| report("tls_servers", m)),
        };
        let client_auth = match (&tls.client_cert, &tls.client_key) {
            (Some(c), Some(k)) => {
                let chain = certs(c).map_err(|m| report("tls_client_cert", m));
                let key = private_key(k).map_err(|m| report("tls_client_key", m));
                match (chain, key) {
                    (Ok(chain), Ok(key)) => Ok(Some((chain, key))),
                    _ => Err(()),
                }
            }
            _ => Ok(None),
        };
        let server_name = match &tls.server_name {
            Some(name) => ServerName::try_from(name.clone())
                .map(Some)
                .map_err(|e| report("tls_server_name", format!("{name:?}: {e}"))),
            None => Ok(None),
        };
        if let (Ok(root_store), Ok(client_auth), Ok(server_name)) =
            (root_store, client_auth, server_name)
        {
            let built =
                WebPkiServerVerifier::builder_with_provider(Arc::new(root_store), provider())
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|verifier| {
                        let b = ClientConfig::builder_with_provider(provider())
                            .with_safe_default_protocol_versions()
                            .map_err(|e| e.to_string())?
                            .with_webpki_verifier(verifier);
                        match client_auth {
                            Some((chain, key)) => b
                                .with_client_auth_cert(chain, key)
                                .map_err(|e| e.to_string()),
                            None => Ok(b.with_no_client_auth()),
                        }
                    });
            match built {
                Ok(cc) => {
                    out.backend = Some(BackendTls {
                        connector: TlsConnector::from(Arc::new(cc)),
                        server_name,
                    })
                }
                Err(e) => report("tls_servers", format!("(TLS client settings): {e}")),
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ConfigError { problems })
    }
}

/// The ring provider: lighter to build than aws-lc-rs (no cmake, no C
/// toolchain beyond cc), and what the whole workspace uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file, at least one.
fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{shown}: {}", pem_problem(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {}", pem_problem(&e)))?;
    if chain.is_empty() {
        return Err(format!("{shown}: no PEM certificate in the file"));
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{}: no PEM private key in the file", path.display())
        }
        e => format!("{}: {}", path.display(), pem_problem(&e)),
    })
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

/// The system's roots, for servers whose certificates a public CA signed
/// (`rustls-native-certs`: the operator's own trust store, updated with the
/// system, rather than a list compiled into the binary).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(
            "without tls_ca uses the system's CA certificates, and none was found; set tls_ca"
                .to_owned(),
        );
    }
    Ok(store)
}

fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        e => format!("not valid PEM: {e}"),
    }
}

/// The client halves of an accepted TLS connection, as the session wants them.
pub type ClientHalves<S> = (
    TlsRead<tokio_rustls::server::TlsStream<S>>,
    FlushingWrite<WriteHalf<tokio_rustls::server::TlsStream<S>>>,
);

/// Split an accepted TLS stream for [`crate::session::serve_connection`].
pub fn split_client<S>(stream: tokio_rustls::server::TlsStream<S>) -> ClientHalves<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (r, w) = tokio::io::split(stream);
    (TlsRead::new(r), FlushingWrite::new(w))
}

/// The read half of a TLS stream with the readiness the session waits for.
///
/// A TLS stream has no readiness of its own: bytes on the socket may be a
/// partial record (no plaintext yet) or a handshake message, and plaintext
/// may be buffered with the socket empty. So readiness is a real read of at
/// most `READY_CHUNK` bytes, held here until the session's read takes it;
/// `Pending` then means rustls has nothing and the socket's waker is set.
/// Nothing is held while a client is idle.
pub struct TlsRead<S> {
    inner: ReadHalf<S>,
    held: Vec<u8>,
    at: usize,
    /// End of stream seen while polling for readiness, owed to a read.
    eof: bool,
    /// An error seen after handing out held bytes, owed to the next read.
    failed: Option<io::Error>,
}

impl<S> TlsRead<S> {
    fn new(inner: ReadHalf<S>) -> Self {
        TlsRead {
            inner,
            held: Vec::new(),
            at: 0,
            eof: false,
            failed: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TlsRead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.held.len() {
            let n = (this.held.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.held[this.at..this.at + n]);
            this.at += n;
            if this.at == this.held.len() {
                // Released, so an idle client holds nothing.
                this.held = Vec::new();
                this.at = 0;
                // Room left: take what rustls has too, so a large request
                // is not read one chunk per turn. Not waiting for more.
                if buf.remaining() > 0 {
                    let before = buf.filled().len();
                    match Pin::new(&mut this.inner).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) if buf.filled().len() == before => this.eof = true,
                        Poll::Ready(Err(e)) => this.failed = Some(e),
                        _ => {}
                    }
                }
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Err(e));
        }
        if this.eof {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + Send + Unpin> ClientRead for TlsRead<S> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.at < self.held.len() || self.eof || self.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        let mut tmp = [MaybeUninit::<u8>::uninit(); READY_CHUNK];
        let mut rb = ReadBuf::uninit(&mut tmp);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                if rb.filled().is_empty() {
                    self.eof = true;
                } else {
                    self.held = rb.filled().to_vec();
                    self.at = 0;
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// A writer whose writes count as done only once they reached the socket.
///
/// A TLS stream takes plaintext into its own buffer and may keep the
/// encrypted bytes there when the socket is full; only a flush sends them.
/// The session and the backend connections write and never flush (a socket
/// needs none), so bytes could wait there for a flush that never comes.
/// Here a write that was taken but not yet sent returns `Pending` (the
/// socket's write waker set) and reports its count on the next call, once
/// flushed. That next call must pass the same leading bytes, which the
/// writers of this crate do: their queue advances only by the count reported.
pub struct FlushingWrite<W> {
    inner: W,
    /// Bytes taken by the last write and not yet reported.
    owed: usize,
}

impl<W> FlushingWrite<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        FlushingWrite { inner, owed: 0 }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for FlushingWrite<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.owed > 0 {
            return match Pin::new(&mut this.inner).poll_flush(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(std::mem::take(&mut this.owed))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
        }
        let n = match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.owed = n;
                Poll::Pending
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A TLS-like writer: takes bytes into a buffer that only a flush
    /// sends, and whose first `stalls` flushes find the socket full.
    struct Buffered {
        buffered: Vec<u8>,
        sent: Vec<u8>,
        stalls: usize,
    }

    impl AsyncWrite for Buffered {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.buffered.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.stalls > 0 {
                self.stalls -= 1;
                return Poll::Pending;
            }
            let b = std::mem::take(&mut self.buffered);
            self.sent.extend_from_slice(&b);
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    // A write whose bytes are stuck in the buffer is not reported until
    // they are sent, then reported once, without being taken twice.
    #[test]
    fn a_write_counts_once_flushed() {
        let mut w = FlushingWrite::new(Buffered {
            buffered: Vec::new(),
            sent: Vec::new(),
            stalls: 2,
        });
        let mut cx = Context::from_waker(Waker::noop());
        let mut poll = |w: &mut FlushingWrite<Buffered>| Pin::new(w).poll_write(&mut cx, b"hello");
        assert!(poll(&mut w).is_pending());
        assert!(poll(&mut w).is_pending());
        assert!(matches!(poll(&mut w), Poll::Ready(Ok(5))));
        assert_eq!(w.inner.sent, b"hello");
        // The next write goes through at once.
        assert!(matches!(poll(&mut w), Poll::Ready(Ok(5))));
        assert_eq!(w.inner.sent, b"hellohello");
    }

    // Each key names its file when it does not read.
    #[test]
    fn missing_files_name_pool_key_and_file() {
        let text = "p:\n  listen: 127.0.0.1:1\n  tls_cert: /nonexistent/c.pem\n  tls_key: /nonexistent/k.pem\n  servers:\n   - 127.0.0.1:2:1\n";
        let config = Config::from_yaml(text).expect("valid text");
        let err = check(&config).expect_err("missing files").to_string();
        for needle in [
            "pool \"p\"",
            "tls_cert /nonexistent/c.pem",
            "tls_key /nonexistent/k.pem",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
