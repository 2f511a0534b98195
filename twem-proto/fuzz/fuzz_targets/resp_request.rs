//! Fuzzes `RequestCodec`: arbitrary bytes, fed in arbitrary chunks.
//!
//! Run: `cd twem-proto/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run resp_request`
//!
//! The first two input bytes seed the chunk sizes; the rest is the stream.
//! Checks: no panic, never more consumed than fed, every request within the
//! limits, and every request's wire decodes back to the same arguments.
#![no_main]

#[path = "chunks.rs"]
mod chunks;

use bytes::BytesMut;
use chunks::Event;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use twem_proto::resp::{Limits, RequestCodec};

/// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_bulk_len: 300,
    max_array_len: 16,
    max_depth: 4,
    max_inline_len: 200,
};

fuzz_target!(|data: &[u8]| {
    let mut codec = RequestCodec::new(LIMITS);
    let mut consumed_by_arrays = 0usize;
    // The stream after the two seed bytes.
    let stream = data.len().saturating_sub(2);
    chunks::feed(data, &mut codec, |event| match event {
        Event::Item(req) => {
            assert!(!req.is_empty() && req.len() <= LIMITS.max_array_len);
            if req.is_inline() {
                let total: usize = req.args().iter().map(|a| a.len()).sum();
                assert!(total <= LIMITS.max_inline_len);
            } else {
                consumed_by_arrays += req.wire().len();
                assert!(req.args().iter().all(|a| a.len() <= LIMITS.max_bulk_len));
            }
            // The wire form is what backends get: it must decode to
            // the same arguments.
            let mut again = BytesMut::from(&req.wire()[..]);
            let back = RequestCodec::new(Limits::default())
                .decode(&mut again)
                .expect("wire decodes")
                .expect("wire is complete");
            assert_eq!(back.args(), req.args());
            assert!(again.is_empty());
        }
        Event::Piece { fed, buffered } => {
            assert!(fed - buffered <= stream);
            assert!(consumed_by_arrays <= fed - buffered);
        }
    });
});
