//! Property tests: round trips, every split point, random chunkings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

use super::*;

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(0x21u8..=0x7e, 1..12),
        1 => vec(0x21u8..=0xff, 250..=250).prop_map(|mut k| {
            k.iter_mut().filter(|b| **b == 0x7f).for_each(|b| *b = b'x');
            k
        }),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    // Any bytes: values may hold \r\n, which must not confuse framing.
    prop_oneof![vec(any::<u8>(), 0..40), Just(b"\r\n\r\nEND\r\n".to_vec())]
}

fn request() -> impl Strategy<Value = Request> {
    let storage = (
        0usize..6,
        key(),
        any::<u32>(),
        any::<i64>(),
        value(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(which, k, flags, exptime, v, cas, noreply)| {
            match which {
                0 => Request::set(k, flags, exptime, v, noreply),
                1 => Request::add(k, flags, exptime, v, noreply),
                2 => Request::replace(k, flags, exptime, v, noreply),
                3 => Request::append(k, flags, exptime, v, noreply),
                4 => Request::prepend(k, flags, exptime, v, noreply),
                _ => Request::cas(k, flags, exptime, v, cas, noreply),
            }
            .unwrap()
        });
    let keyed = (0usize..5, key(), any::<u64>(), any::<i64>(), any::<bool>()).prop_map(
        |(which, k, delta, exptime, noreply)| {
            match which {
                0 => Request::incr(k, delta, noreply),
                1 => Request::decr(k, delta, noreply),
                2 => Request::touch(k, exptime, noreply),
                3 => Request::delete(k, noreply),
                _ => Request::get(&[k]),
            }
            .unwrap()
        },
    );
    let multi = (0usize..4, any::<i64>(), vec(key(), 1..6)).prop_map(|(which, exptime, keys)| {
        match which {
            0 => Request::get(&keys),
            1 => Request::gets(&keys),
            2 => Request::gat(exptime, &keys),
            _ => Request::gats(exptime, &keys),
        }
        .unwrap()
    });
    prop_oneof![
        4 => storage,
        3 => keyed,
        2 => multi,
        1 => Just(Request::version()),
        1 => Just(Request::quit()),
    ]
}

/// Frames a client might send, good and bad: valid requests plus lines the
/// codec must refuse while staying in step.
fn mixed_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => request().prop_map(|r| r.wire().to_vec()),
        1 => Just(b"bogus command\r\n".to_vec()),
        1 => Just(b"get\n".to_vec()),
        1 => Just(b"set k 0 0 3\r\nabcXY".to_vec()),
        1 => Just(b"set k x 0 2\r\nzz\r\n".to_vec()),
        1 => Just(format!("get {}\r\n", "k".repeat(251)).into_bytes()),
        1 => Just(format!("set k 0 0 200\r\n{}\r\n", "v".repeat(200)).into_bytes()),
        1 => Just(b"delete k 1\r\n".to_vec()),
        1 => Just(b"incr k -5 noreply\r\n".to_vec()),
        1 => Just(b"ms k 17\r\ndelete k\r\nget k\r\n\r\n".to_vec()),
        1 => Just(b"ms k 300 T0\r\n".iter().copied().chain([b'v'; 300]).chain(*b"\r\n").collect()),
        1 => Just(b"mg k v\r\n".to_vec()),
        1 => Just(b"mn\r\n".to_vec()),
        1 => Just(b"ms YQ== 6 b q\r\nab\r\nc\n\r\n".to_vec()),
        1 => Just(b"ms YQ= 3 b\r\nmn\n\r\n".to_vec()),
        1 => Just(b"mg YQ= b v\r\n".to_vec()),
        1 => Just(b"gat 10 a b\r\n".to_vec()),
        1 => Just(b"stats items\r\n".to_vec()),
        1 => Just(b"stats\r\n".to_vec()),
        1 => Just(b"flush_all 5 noreply\r\n".to_vec()),
        1 => Just(b"verbosity 1\r\n".to_vec()),
    ]
}

/// Small limits so the "too large" paths are exercised by the mixed frames.
fn test_limits() -> Limits {
    Limits {
        max_value_len: 100,
        max_line_len: 400,
        max_keys: 8,
    }
}

/// What a decode run produced: items, then the framing error if one ended it.
type Outcome = (Vec<Result<Request, RequestError>>, Option<String>);

/// Feeds `input` in chunks of the given sizes (the rest in one piece),
/// decoding as far as possible after each.
fn decode_chunked(input: &[u8], sizes: &[usize]) -> Outcome {
    let mut codec = RequestCodec::new(test_limits());
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut pos = 0;
    let mut sizes = sizes.iter().copied().chain(std::iter::once(usize::MAX));
    while pos < input.len() {
        let n = sizes.next().unwrap_or(usize::MAX).min(input.len() - pos);
        buf.extend_from_slice(&input[pos..pos + n]);
        pos += n;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(e) => return (items, Some(e.to_string())),
            }
        }
    }
    (items, None)
}

fn reply_for_command() -> impl Strategy<Value = (Command, Reply)> {
    let text = vec(
        any::<u8>().prop_filter("one line", |b| *b != b'\r' && *b != b'\n'),
        0..20,
    )
    .prop_map(Bytes::from);
    let value = (
        key(),
        any::<u32>(),
        proptest::option::of(any::<u64>()),
        value(),
    )
        .prop_map(|(k, flags, cas, data)| Value {
            key: k.into(),
            flags,
            cas,
            data: data.into(),
        });
    prop_oneof![
        (any::<bool>(), vec(value, 0..5)).prop_map(|(gets, v)| {
            (
                if gets { Command::Gets } else { Command::Get },
                Reply::Values(v),
            )
        }),
        prop_oneof![
            Just(Reply::Stored),
            Just(Reply::NotStored),
            Just(Reply::Exists),
            Just(Reply::NotFound)
        ]
        .prop_map(|r| (Command::Cas, r)),
        any::<u64>().prop_map(|n| (Command::Incr, Reply::Number(n))),
        Just((Command::Touch, Reply::Touched)),
        Just((Command::Delete, Reply::Deleted)),
        text.clone()
            .prop_map(|t| (Command::Version, Reply::Version(t))),
        Just((Command::Set, Reply::Error)),
        text.clone()
            .prop_map(|t| (Command::Get, Reply::ClientError(t))),
        text.prop_map(|t| (Command::Decr, Reply::ServerError(t))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // A request built by a constructor decodes back to itself.
    #[test]
    fn request_round_trip(req in request()) {
        let (items, err) = decode_chunked(req.wire(), &[]);
        prop_assert!(err.is_none());
        prop_assert_eq!(items, vec![Ok(req)]);
    }

    // A valid request split at every byte decodes to the same request.
    #[test]
    fn request_every_split(req in request()) {
        let wire = req.wire().clone();
        for i in 0..=wire.len() {
            let (items, err) = decode_chunked(&wire, &[i]);
            prop_assert!(err.is_none());
            prop_assert_eq!(items, vec![Ok(req.clone())], "split at {}", i);
        }
    }

    // A pipeline of good and bad frames gives the same items (errors
    // included) however the bytes are chunked.
    #[test]
    fn pipeline_any_chunking(
        frames in vec(mixed_frame(), 1..8),
        sizes in vec(1usize..40, 0..30),
    ) {
        let input: Vec<u8> = frames.concat();
        let whole = decode_chunked(&input, &[]);
        let chunked = decode_chunked(&input, &sizes);
        prop_assert_eq!(&whole, &chunked);
        let byte_by_byte = decode_chunked(&input, &vec![1; input.len()]);
        prop_assert_eq!(&whole, &byte_by_byte);
        // every frame is answered by exactly one item, none lost
        prop_assert_eq!(whole.0.len(), frames.len());
    }

    // A reply encodes and decodes back to itself, in its command's context,
    // split at every byte, and with a resumable decoder fed in pieces.
    #[test]
    fn reply_round_trip((command, reply) in reply_for_command()) {
        let wire = reply.to_bytes();
        let limits = Limits::default();
        for i in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..i]);
            let mut d = ReplyDecoder::new();
            let first = d.decode(command, &mut buf, &limits).unwrap();
            let frame = match first {
                Some(f) => f,
                None => {
                    prop_assert!(i < wire.len(), "complete reply not decoded");
                    buf.extend_from_slice(&wire[i..]);
                    d.decode(command, &mut buf, &limits).unwrap().unwrap()
                }
            };
            prop_assert_eq!(frame.raw(), &wire);
            prop_assert!(buf.is_empty());
            prop_assert_eq!(frame.parse(), reply.clone());
            prop_assert_eq!(frame.is_error(), reply.is_error());
        }
    }

    // split_get then merge_get of the servers' answers gives what one
    // server holding every key would have answered.
    #[test]
    fn split_merge_matches_single_server(
        keys in vec(prop_oneof![Just(b"a".to_vec()), Just(b"b".to_vec()), key()], 1..10),
        present in vec(any::<bool>(), 10),
        servers in 1usize..4,
    ) {
        let req = Request::get(&keys).unwrap();
        let hit = |k: &[u8]| present[k.iter().map(|&b| usize::from(b)).sum::<usize>() % present.len()];
        let server_of = |k: &[u8]| k.iter().map(|&b| usize::from(b)).sum::<usize>() % servers;
        // A fake memcached: answers a get from the `present` set, in key order.
        let answer = |r: &Request| {
            let values = r.keys().iter().filter(|k| hit(k)).map(|k| Value {
                key: k.clone(), flags: 1, cas: None, data: k.clone(),
            }).collect();
            let mut buf = BytesMut::new();
            Reply::Values(values).encode(&mut buf);
            decode_reply(Command::Get, &mut buf, &Limits::default()).unwrap().unwrap()
        };
        let parts: Vec<ReplyFrame> = split_get(&req, server_of).iter().map(|(_, r)| answer(r)).collect();
        prop_assert_eq!(merge_get(&req, &parts), answer(&req).into_raw());
    }
}
