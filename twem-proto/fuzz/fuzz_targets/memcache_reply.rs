//! Fuzzes memcached reply decoding in the context of a request.
//!
//! Run: `cd twem-proto/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run memcache_reply`
//!
//! The first input byte picks the command (and the chunk size); the rest is
//! the backend's stream, decoded reply after reply. Checks: no panic, never
//! more consumed than fed, values within the limits, the resumable
//! `ReplyDecoder` fed in chunks agrees with stateless `decode_reply` on the
//! whole input, and a parsed reply re-encodes to a reply that parses the same.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use twem_proto::memcache::{decode_reply, Command, Limits, Reply, ReplyDecoder, ReplyFrame};

/// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_value_len: 300,
    max_line_len: 200,
    max_keys: 8,
};

/// Decodes replies from the whole input at once.
fn whole(command: Command, input: &[u8]) -> (Vec<ReplyFrame>, bool) {
    let mut buf = BytesMut::from(input);
    let mut frames = Vec::new();
    loop {
        match decode_reply(command, &mut buf, &LIMITS) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, false),
            Err(_) => return (frames, true),
        }
    }
}

/// Decodes replies from the input fed `chunk` bytes at a time.
fn chunked(command: Command, input: &[u8], chunk: usize) -> (Vec<ReplyFrame>, bool) {
    let mut d = ReplyDecoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(command, &mut buf, &LIMITS) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let command = Command::ALL[usize::from(pick) % Command::ALL.len()];
    let chunk = usize::from(pick / 14) % 32 + 1;
    let (frames, failed) = whole(command, input);
    let total: usize = frames.iter().map(|f| f.raw().len()).sum();
    assert!(total <= input.len());
    assert_eq!((frames.clone(), failed), chunked(command, input, chunk));
    let mut pos = 0;
    for f in &frames {
        assert_eq!(&input[pos..pos + f.raw().len()], &f.raw()[..]);
        pos += f.raw().len();
        assert!(f.value_count() <= LIMITS.max_keys);
        let reply = f.parse();
        assert_eq!(reply.is_error(), f.is_error());
        if let Reply::Values(values) = &reply {
            assert!(values.iter().all(|v| v.data.len() <= LIMITS.max_value_len));
        }
        // What we would send a client parses back to the same reply.
        let mut again = BytesMut::new();
        reply.encode(&mut again);
        let back = decode_reply(command, &mut again, &Limits::default())
            .expect("re-encoded reply decodes")
            .expect("re-encoded reply is complete");
        assert_eq!(back.parse(), reply);
    }
});
