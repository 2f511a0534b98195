//! Fuzzes the memcached `RequestCodec`: arbitrary bytes, fed in arbitrary
//! chunks.
//!
//! Run: `cd twem-proto/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run memcache_request`
//!
//! The first two input bytes seed the chunk sizes; the rest is the stream.
//! Checks: no panic, never more consumed than fed, the buffer never holds
//! more than the limits allow, every request within the limits, and every
//! request's wire decodes back to the same request.
#![no_main]

#[path = "chunks.rs"]
mod chunks;

use bytes::BytesMut;
use chunks::Event;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use twem_proto::memcache::{Command, Limits, RequestCodec, MAX_KEY_LEN};

/// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_value_len: 300,
    max_line_len: 200,
    max_keys: 8,
};

/// Most bytes the codec may hold between calls: a get line at its bound, or
/// a storage line and its data block, plus the chunk just fed.
fn max_buffered() -> usize {
    LIMITS
        .max_get_line_len()
        .max(LIMITS.max_line_len + LIMITS.max_value_len + 2)
        + 2
        + 64
}

fuzz_target!(|data: &[u8]| {
    let mut codec = RequestCodec::new(LIMITS);
    let mut consumed_by_requests = 0usize;
    // The stream after the two seed bytes.
    let stream = data.len().saturating_sub(2);
    chunks::feed(data, &mut codec, |event| match event {
        Event::Item(Ok(req)) => {
            consumed_by_requests += req.wire().len();
            assert!(req.keys().len() <= LIMITS.max_keys);
            for k in req.keys() {
                assert!(!k.is_empty() && k.len() <= MAX_KEY_LEN);
                // A meta key given in base64 (`b`) is routed decoded, and
                // may hold any byte.
                if !req.command().is_meta() {
                    assert!(k.iter().all(|&b| b > b' ' && b != 0x7f));
                }
            }
            if let Some(v) = req.value() {
                assert!(v.len() <= LIMITS.max_value_len);
            }
            assert_eq!(
                req.command().is_storage() || req.command() == Command::MetaSet,
                req.value().is_some()
            );
            // The wire form is what backends get: it must decode to
            // the same request.
            let mut again = BytesMut::from(&req.wire()[..]);
            let back = RequestCodec::new(LIMITS)
                .decode(&mut again)
                .expect("wire decodes")
                .expect("wire is complete")
                .expect("wire is valid");
            assert_eq!(back, req);
            assert!(again.is_empty());
        }
        Event::Item(Err(e)) => {
            // An error always has a one-line reply.
            let reply = e.reply();
            assert!(reply.ends_with(b"\r\n"));
            assert_eq!(
                reply.iter().position(|&b| b == b'\n'),
                Some(reply.len() - 1)
            );
        }
        Event::Piece { fed, buffered } => {
            assert!(fed - buffered <= stream);
            assert!(consumed_by_requests <= fed - buffered);
            assert!(buffered <= max_buffered(), "buffered {} bytes", buffered);
        }
    });
});
