//! Fuzzes `ReplyCodec`: arbitrary bytes, fed in arbitrary chunks.
//!
//! Run: `cd twem-proto/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run resp_reply`
//!
//! The first two input bytes seed the chunk sizes; the rest is the stream.
//! Checks: no panic, frames are exactly the consumed bytes, each frame within
//! the size the limits allow, `parse` agrees with `integer`, `is_error` and
//! `is_push`, and re-encoding a parsed frame gives the same bytes (the same
//! reply when it holds a double, whose text has many spellings). The seeds
//! `resp3_*` hold every RESP3 type, as redis-server 7.0 sends them.
#![no_main]

#[path = "chunks.rs"]
mod chunks;

use chunks::Event;
use libfuzzer_sys::fuzz_target;
use twem_proto::resp::{Limits, Reply, ReplyCodec, ReplyFrame};

/// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_bulk_len: 300,
    max_array_len: 8,
    max_depth: 4,
    max_inline_len: 200,
};

/// Largest frame the limits allow at `depth` levels of arrays.
fn bound(depth: usize) -> usize {
    // A header is a type byte, at most 20 digits and CRLF.
    let leaf = 23 + LIMITS.max_bulk_len.max(LIMITS.max_inline_len) + 2;
    if depth == 0 {
        leaf
    } else {
        // An attribute's pairs plus the reply it annotates.
        leaf.max(23 + (LIMITS.max_array_len + 1) * bound(depth - 1))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut codec = ReplyCodec::new(LIMITS);
    let mut framed = 0usize;
    chunks::feed(data, &mut codec, |event| match event {
        Event::Item(frame) => {
            let raw = frame.raw();
            framed += raw.len();
            assert!(raw.len() <= bound(LIMITS.max_depth));
            let parsed = frame.parse();
            match parsed.value() {
                Reply::Integer(n) => assert_eq!(frame.integer(), Some(*n)),
                _ => assert_eq!(frame.integer(), None),
            }
            assert_eq!(
                frame.is_error(),
                matches!(parsed.value(), Reply::Error(_) | Reply::BlobError(_))
            );
            assert_eq!(frame.is_push(), matches!(parsed.value(), Reply::Push(_)));
            // Re-encoding is exact, except that a bare LF inside a
            // status or error line is written as a space.
            let bare_lf = raw
                .iter()
                .enumerate()
                .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'));
            if !bare_lf {
                let again = ReplyFrame::from_reply(&parsed);
                assert_eq!(again.parse(), parsed);
                if !raw.contains(&b',') {
                    assert_eq!(again.raw(), raw);
                }
            }
        }
        Event::Piece { fed, buffered } => {
            // Frames are cut from the front: what was framed plus what is
            // buffered is what was fed.
            assert_eq!(framed + buffered, fed);
        }
    });
});
