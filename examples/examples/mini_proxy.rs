//! A working one-pool Redis proxy in a few dozen lines, to show how the
//! pieces fit: a listener, [`resp::RequestCodec`] to cut each client's
//! stream into requests, [`Pool::dispatch_redis_in`] to route and send each
//! one (its replies landing in the client's [`Inbox`]),
//! and the reply bytes written back in request order. The real `twemproxy`
//! is this plus config files, AUTH, limits, stats and signals.
//!
//! ```sh
//! redis-server --port 7001 --save '' & redis-server --port 7002 --save '' &
//! cargo run -p twem-examples --example mini_proxy -- 127.0.0.1:22121 127.0.0.1:7001 127.0.0.1:7002
//! redis-cli -p 22121 mset a 1 b 2 c 3 && redis-cli -p 22121 mget a b c
//! ```
//!
//! Pipelining works: a reader task dispatches every request as soon as it is
//! decoded (so it is already on its way to its server), and a writer task
//! awaits the replies in order.

use std::process::ExitCode;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use twem_core::pool::{CallError, Inbox, Pool, ReplyFuture};
use twem_core::HashKind;
use twem_proto::resp;

/// Replies a client may have outstanding before we stop reading its
/// requests: the bound that keeps a client that never reads from costing
/// unbounded memory.
const PIPELINE_DEPTH: usize = 1024;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, servers @ ..] = &args[..] else {
        eprintln!("usage: mini_proxy LISTEN_ADDR SERVER_ADDR [SERVER_ADDR...]");
        return ExitCode::from(2);
    };
    if servers.is_empty() {
        eprintln!("usage: mini_proxy LISTEN_ADDR SERVER_ADDR [SERVER_ADDR...]");
        return ExitCode::from(2);
    }
    match run(listen, servers).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mini_proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(listen: &str, servers: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    // murmur rather than nutcracker's default fnv1a_64: fnv1a_64 keeps only
    // the low 32 bits of its product, so keys that differ only in their last
    // characters (user:1, user:2, ...) hash close together and sequential
    // keys bunch on one server. Any hash works; a twemproxy must use the same.
    let mut builder = Pool::builder("mini").redis().hash(HashKind::Murmur);
    for s in servers {
        builder = builder.server(&format!("{s}:1"));
    }
    let pool = builder.build()?;
    let listener = TcpListener::bind(listen).await?;
    println!("mini_proxy: listening on {}", listener.local_addr()?);
    for client_id in 0usize.. {
        let (sock, _) = listener.accept().await?;
        tokio::spawn(serve(sock, pool.clone(), client_id));
    }
    Ok(())
}

/// One reply slot, in request order.
enum Pending {
    Pool(ReplyFuture),
    /// Write this, then close (QUIT, broken framing).
    Last(Bytes),
}

async fn serve(sock: TcpStream, pool: Pool, client_id: usize) {
    let _ = sock.set_nodelay(true);
    let (rd, wr) = sock.into_split();
    let (tx, mut rx) = mpsc::channel::<Pending>(PIPELINE_DEPTH);
    let reader = async move {
        // One inbox per client: its replies need no channel per request.
        let mut inbox = Inbox::new(client_id);
        let mut requests = FramedRead::new(rd, resp::RequestCodec::default());
        while let Some(item) = requests.next().await {
            let slot = match item {
                // The proxy itself answers QUIT: it ends the connection.
                Ok(req) if req.name().eq_ignore_ascii_case(b"quit") => {
                    Pending::Last(Bytes::from_static(b"+OK\r\n"))
                }
                // dispatch_redis_in sends the request before it returns.
                Ok(req) => Pending::Pool(pool.dispatch_redis_in(&req, &mut inbox)),
                Err(e) => Pending::Last(Bytes::from(format!("-ERR {e}\r\n"))),
            };
            let last = matches!(slot, Pending::Last(_));
            if tx.send(slot).await.is_err() || last {
                break;
            }
        }
    };
    let writer = async move {
        let mut out = BufWriter::new(wr);
        while let Some(slot) = rx.recv().await {
            let (bytes, last) = match slot {
                Pending::Pool(fut) => (fut.await.unwrap_or_else(|e| error_reply(&e)), false),
                Pending::Last(b) => (b, true),
            };
            if out.write_all(&bytes).await.is_err() {
                return;
            }
            // Flush only when no further reply is queued: one write for a
            // whole pipeline.
            if (rx.is_empty() || last) && out.flush().await.is_err() {
                return;
            }
            if last {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

/// `-ERR <words>`, as nutcracker words backend failures
/// (`-ERR Connection refused`).
fn error_reply(e: &CallError) -> Bytes {
    e.resp_reply()
}
