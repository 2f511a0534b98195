//! Property tests of both RESP codecs: round trips, every split point, any
//! chunking of a pipeline, and garbage that must not panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

use super::testing::feed;
use super::{Reply, ReplyCodec, ReplyFrame, Request, RequestCodec};

fn arb_request() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8)
}

fn arb_line() -> impl Strategy<Value = Vec<u8>> {
    // Status and error texts cannot hold CR or LF.
    prop::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..20,
    )
}

fn arb_reply() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        arb_line().prop_map(|l| Reply::Status(l.into())),
        arb_line().prop_map(|l| Reply::Error(l.into())),
        any::<i64>().prop_map(Reply::Integer),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|b| Reply::Bulk(b.map(Bytes::from))),
        Just(Reply::Array(None)),
        Just(Reply::Null),
        arb_double().prop_map(Reply::Double),
        any::<bool>().prop_map(Reply::Boolean),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| Reply::BlobError(b.into())),
        (any::<[u8; 3]>(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(format, text)| {
            Reply::Verbatim {
                format,
                text: text.into(),
            }
        }),
        "-?[1-9][0-9]{0,40}".prop_map(|n| Reply::BigNumber(n.into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let pairs = prop::collection::vec((inner.clone(), inner.clone()), 0..3);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| Reply::Array(Some(v))),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Reply::Set),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Reply::Push),
            pairs.clone().prop_map(Reply::Map),
            (pairs, inner).prop_map(|(attributes, r)| Reply::Attribute {
                attributes,
                reply: Box::new(r)
            }),
        ]
    })
}

/// Any double; NaNs as the one NaN that decoding gives (Redis never sends
/// another, and the encoding writes every NaN as `nan`).
fn arb_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_map(|d| if d.is_nan() { f64::NAN } else { d }),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        (-1_000_000i64..1_000_000).prop_map(|n| n as f64 / 8.0),
    ]
}

/// An inline line of plain words, and the arguments it stands for.
fn arb_inline() -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
    prop::collection::vec("[a-zA-Z0-9:_{}-]{1,12}", 1..6).prop_map(|words| {
        let line = format!("{}\r\n", words.join(" ")).into_bytes();
        (line, words.into_iter().map(String::into_bytes).collect())
    })
}

/// Feeds `input` to `codec` in pieces ending at `cuts` (sorted offsets),
/// decoding as much as possible after each piece.
fn decode_chunked<D: Decoder>(codec: &mut D, input: &[u8], cuts: &[usize]) -> Vec<D::Item>
where
    D::Error: std::fmt::Debug,
{
    let (out, err, buf) = feed(codec, input, cuts);
    assert!(err.is_none(), "decode failed: {err:?}");
    assert!(buf.is_empty(), "undecoded bytes left: {buf:?}");
    out
}

proptest! {
    // Encoding a request and decoding it gives the same arguments and wire.
    #[test]
    fn request_round_trip(args in arb_request()) {
        let built = Request::from_args(args.clone());
        let mut buf = BytesMut::from(&built.wire()[..]);
        let decoded = RequestCodec::default().decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(&decoded, &built);
        prop_assert_eq!(decoded.args().iter().map(|a| a.to_vec()).collect::<Vec<_>>(), args);
        prop_assert!(buf.is_empty());
    }

    // Encoding a reply and decoding it gives the same reply.
    #[test]
    fn reply_round_trip(r in arb_reply()) {
        let bytes = r.to_bytes();
        let mut buf = BytesMut::from(&bytes[..]);
        let frame = ReplyCodec::default().decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(frame.raw(), &bytes);
        prop_assert_eq!(frame.parse(), r);
    }

    // A request split at any byte decodes to the same request.
    #[test]
    fn request_split_anywhere(args in arb_request()) {
        let wire = Request::from_args(args).wire().clone();
        for cut in 0..=wire.len() {
            let got = decode_chunked(&mut RequestCodec::default(), &wire, &[cut]);
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(got[0].wire(), &wire);
        }
    }

    // A reply split at any byte decodes to the same frame.
    #[test]
    fn reply_split_anywhere(r in arb_reply()) {
        let bytes = r.to_bytes();
        for cut in 0..=bytes.len() {
            let got = decode_chunked(&mut ReplyCodec::default(), &bytes, &[cut]);
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(got[0].raw(), &bytes);
        }
    }

    // A pipeline of array and inline requests (and skipped empty lines)
    // decodes to the same sequence whatever the read sizes.
    #[test]
    fn request_pipeline_any_chunking(
        items in prop::collection::vec(prop_oneof![
            arb_request().prop_map(|a| (Request::from_args(a.clone()).wire().to_vec(), Some(a), false)),
            arb_inline().prop_map(|(l, a)| (l, Some(a), true)),
            Just((b"\r\n".to_vec(), None, true)),
            Just((b"*0\r\n".to_vec(), None, false)),
        ], 1..12),
        mut cuts in prop::collection::vec(0usize..2000, 0..20),
    ) {
        let input: Vec<u8> = items.iter().flat_map(|(w, _, _)| w.clone()).collect();
        cuts.sort_unstable();
        let got = decode_chunked(&mut RequestCodec::default(), &input, &cuts);
        let want: Vec<_> = items.iter().filter_map(|(_, a, inline)| a.clone().map(|a| (a, *inline))).collect();
        prop_assert_eq!(got.len(), want.len());
        for (req, (args, inline)) in got.iter().zip(want) {
            prop_assert_eq!(req.args().iter().map(|a| a.to_vec()).collect::<Vec<_>>(), args.clone());
            prop_assert_eq!(req.is_inline(), inline);
            let built = Request::from_args(args);
            prop_assert_eq!(req.wire(), built.wire());
        }
    }

    // A pipeline of replies decodes to the same frames whatever the read
    // sizes.
    #[test]
    fn reply_pipeline_any_chunking(
        replies in prop::collection::vec(arb_reply(), 1..10),
        mut cuts in prop::collection::vec(0usize..2000, 0..20),
    ) {
        let input: Vec<u8> = replies.iter().flat_map(|r| r.to_bytes().to_vec()).collect();
        cuts.sort_unstable();
        let got = decode_chunked(&mut ReplyCodec::default(), &input, &cuts);
        prop_assert_eq!(got.iter().map(ReplyFrame::parse).collect::<Vec<_>>(), replies);
    }

    // Arbitrary bytes never panic either decoder.
    #[test]
    fn garbage_never_panics(input in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut buf = BytesMut::from(&input[..]);
        let mut codec = RequestCodec::default();
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
        let mut buf = BytesMut::from(&input[..]);
        let mut codec = ReplyCodec::default();
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            let _ = f.parse();
        }
    }
}
