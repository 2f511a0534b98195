//! The wire codecs on their own, no network: `tokio_util::codec::Framed`
//! over a `tokio::io::duplex` pipe, for RESP and for the memcached ASCII
//! protocol. Each part has a client side and a server side:
//!
//! - RESP: the client encodes [`resp::Request`]s with [`resp::ReplyCodec`];
//!   the server decodes them with [`resp::RequestCodec`] (which also accepts
//!   inline commands typed in telnet, and requests cut at any byte) and
//!   answers with [`resp::Reply`]s.
//! - memcached: the client uses [`memcache::ClientCodec`], which cuts every
//!   reply in the context of the request it answers; the server decodes with
//!   [`memcache::RequestCodec`], whose items are `Result`s so a bad command
//!   line gets an error reply and the stream goes on.
//!
//! ```sh
//! cargo run -p twem-examples --example codec
//! ```

use std::error::Error;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;
use twem_proto::{memcache, resp};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    redis_stream().await?;
    println!();
    memcache_stream().await
}

async fn redis_stream() -> Result<(), Box<dyn Error>> {
    println!("== RESP ==");
    let (client_io, server_io) = tokio::io::duplex(4096);
    let mut client = Framed::new(client_io, resp::ReplyCodec::default());
    let mut server = Framed::new(server_io, resp::RequestCodec::default());

    // Two requests encoded by the client codec, pipelined.
    client
        .send(resp::Request::from_args(["SET", "greeting", "hello"]))
        .await?;
    client
        .send(resp::Request::from_args(["MGET", "greeting", "other"]))
        .await?;
    // An inline command as telnet would send it, written raw and cut in two
    // to show that the decoder resumes where it stopped.
    let raw = client.get_mut();
    raw.write_all(b"ECHO \"quoted ").await?;
    raw.write_all(b"words\"\r\n").await?;

    for _ in 0..3 {
        let req = server.next().await.ok_or("stream ended")??;
        let args: Vec<String> = req
            .args()
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        println!(
            "server decoded {args:?}{}, forwarded as {:?}",
            if req.is_inline() { " (inline)" } else { "" },
            String::from_utf8_lossy(req.wire())
        );
        let reply = match req.name().to_ascii_uppercase().as_slice() {
            b"SET" => resp::Reply::ok(),
            b"MGET" => resp::Reply::Array(Some(vec![
                resp::Reply::Bulk(Some(Bytes::from_static(b"hello"))),
                resp::Reply::Bulk(None),
            ])),
            b"ECHO" => resp::Reply::Bulk(req.args().get(1).cloned()),
            _ => resp::Reply::error("ERR unknown command"),
        };
        server.send(&reply).await?;
    }

    for _ in 0..3 {
        let frame = client.next().await.ok_or("stream ended")??;
        println!(
            "client decoded {:?} = {:?}",
            String::from_utf8_lossy(frame.raw()),
            frame.parse()
        );
    }
    Ok(())
}

async fn memcache_stream() -> Result<(), Box<dyn Error>> {
    println!("== memcached ==");
    let (client_io, server_io) = tokio::io::duplex(4096);
    let mut client = Framed::new(client_io, memcache::ClientCodec::default());
    let mut server = Framed::new(server_io, memcache::RequestCodec::default());

    client
        .send(memcache::Request::set("greeting", 7, 0, "hello", false)?)
        .await?;
    client
        .send(memcache::Request::get(&["greeting", "other"])?)
        .await?;
    client
        .send(memcache::Request::delete("greeting", false)?)
        .await?;

    let mut answered = 0;
    while answered < 3 {
        match server.next().await.ok_or("stream ended")?? {
            Ok(req) => {
                let keys: Vec<String> = req
                    .keys()
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                println!(
                    "server decoded {} keys={keys:?} value={:?}",
                    req.command(),
                    req.value().map(|v| String::from_utf8_lossy(v).into_owned())
                );
                let reply = match req.command() {
                    memcache::Command::Set => memcache::Reply::Stored,
                    memcache::Command::Get => memcache::Reply::Values(vec![memcache::Value {
                        key: Bytes::from_static(b"greeting"),
                        flags: 7,
                        cas: None,
                        data: Bytes::from_static(b"hello"),
                    }]),
                    memcache::Command::Delete => memcache::Reply::Deleted,
                    _ => memcache::Reply::Error,
                };
                server.send(reply).await?;
            }
            // A bad line is an item, not a stream error: answer and go on.
            Err(bad) => {
                println!("server decoded a bad request: {bad}");
                server.send(bad.reply()).await?;
            }
        }
        answered += 1;
    }

    for _ in 0..3 {
        let frame = client.next().await.ok_or("stream ended")??;
        println!(
            "client decoded {:?} = {:?}",
            String::from_utf8_lossy(frame.raw()),
            frame.parse()
        );
    }

    // A line memcached would refuse: the server answers with memcached's
    // words and keeps reading.
    let (mut raw_client, server_io) = tokio::io::duplex(4096);
    let mut server = Framed::new(server_io, memcache::RequestCodec::default());
    raw_client
        .write_all(b"incr counter lots\r\nversion\r\n")
        .await?;
    for _ in 0..2 {
        match server.next().await.ok_or("stream ended")?? {
            Ok(req) => println!("server decoded {}", req.command()),
            Err(bad) => println!(
                "server decoded a bad request ({bad}), reply {:?}",
                String::from_utf8_lossy(&bad.reply())
            ),
        }
    }
    Ok(())
}
