//! Fanning a multi-key `get`/`gets` out to several servers and merging the
//! answers.

use bytes::{BufMut, Bytes, BytesMut};

use super::reply::Block;
use super::{ReplyFrame, Request};

/// Splits a `get`/`gets` into one request per server, `server_of` giving the
/// server index of each key. Parts come in the order their server first
/// appears among the keys; within a part keys keep the client's order,
/// duplicates included. Each part has its own wire bytes (`get k1 k2\r\n`).
///
/// When every key lands on one server (and for any other command, routed by
/// its first key, or by an empty key if it has none) the one part is the
/// request itself, not a copy.
pub fn split_get(
    req: &Request,
    mut server_of: impl FnMut(&[u8]) -> usize,
) -> Vec<(usize, Request)> {
    let keys = req.keys();
    if !req.command().is_retrieval() || keys.len() < 2 {
        let server = server_of(req.key().map_or(&[][..], |k| &k[..]));
        return vec![(server, req.clone())];
    }
    // (server, indexes of its keys); servers per request are few, so a
    // linear search beats hashing.
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let server = server_of(key);
        match groups.iter_mut().find(|(s, _)| *s == server) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((server, vec![i])),
        }
    }
    if let [(server, _)] = groups[..] {
        return vec![(server, req.clone())];
    }
    groups
        .into_iter()
        .map(|(server, idx)| {
            let part_keys: Vec<&Bytes> = idx.iter().filter_map(|&i| keys.get(i)).collect();
            (
                server,
                Request::retrieval_unchecked(req.command(), req.exptime().unwrap_or(0), &part_keys),
            )
        })
        .collect()
}

/// Merges the replies to the parts of a split `get`/`gets` into the one
/// reply the client gets: the values in the order of `req`'s keys (a key
/// asked twice is answered twice if its server answered twice; misses are
/// simply absent), then `END`.
///
/// If a part is an error (`SERVER_ERROR ...`), the whole command answers
/// that error line, as nutcracker does. Values a server sent that match no
/// key in order (a misbehaving server) are kept, after the others.
pub fn merge_get(req: &Request, parts: &[ReplyFrame]) -> Bytes {
    if let Some(failed) = parts.iter().find(|p| p.is_error()) {
        return failed.raw().slice(failed.values_raw().len()..);
    }
    if let [only] = parts {
        return only.raw().clone();
    }
    let blocks: Vec<Vec<Block>> = parts.iter().map(|p| p.blocks().collect()).collect();
    let mut cursor = vec![0usize; parts.len()];
    let len: usize = parts.iter().map(|p| p.values_raw().len()).sum();
    let mut out = BytesMut::with_capacity(len + 5);
    for key in req.keys() {
        for (p, part) in parts.iter().enumerate() {
            let Some(at) = cursor.get_mut(p) else {
                continue;
            };
            let Some(b) = blocks.get(p).and_then(|bs| bs.get(*at)) else {
                continue;
            };
            if part.raw().get(b.key.clone()) == Some(&key[..]) {
                out.put_slice(&part.raw_slice(b.whole.clone()));
                *at += 1;
                break;
            }
        }
    }
    for (p, part) in parts.iter().enumerate() {
        for b in blocks
            .get(p)
            .zip(cursor.get(p))
            .map_or(&[][..], |(bs, &at)| bs.get(at..).unwrap_or_default())
        {
            out.put_slice(&part.raw_slice(b.whole.clone()));
        }
    }
    out.put_slice(b"END\r\n");
    out.freeze()
}

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::super::{decode_reply, Command, Limits, Reply};
    use super::*;

    fn frame(command: Command, wire: &[u8]) -> ReplyFrame {
        let mut buf = BytesMut::from(wire);
        decode_reply(command, &mut buf, &Limits::default())
            .unwrap()
            .unwrap()
    }

    /// Server 0 for keys starting with 'a', 1 for 'b', 2 otherwise.
    fn by_first_letter(k: &[u8]) -> usize {
        match k.first() {
            Some(b'a') => 0,
            Some(b'b') => 1,
            _ => 2,
        }
    }

    // Keys are grouped per server, in client order, duplicates kept, each
    // part with its own wire bytes.
    #[test]
    fn split_groups_keys() {
        let req = Request::gets(&["b1", "a1", "c", "a2", "b1"]).unwrap();
        let parts = split_get(&req, by_first_letter);
        let wires: Vec<(usize, &[u8])> = parts.iter().map(|(s, r)| (*s, &r.wire()[..])).collect();
        assert_eq!(
            wires,
            [
                (1, &b"gets b1 b1\r\n"[..]),
                (0, b"gets a1 a2\r\n"),
                (2, b"gets c\r\n")
            ]
        );
        assert_eq!(parts[0].1.keys().len(), 2);
        assert_eq!(parts[0].1.command(), Command::Gets);
    }

    // One server: the request itself comes back, wire untouched.
    #[test]
    fn split_single_server() {
        let req = Request::get(&["a1", "a2"]).unwrap();
        let parts = split_get(&req, by_first_letter);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0], (0, req));
    }

    // Non-get commands are one part routed by their key.
    #[test]
    fn split_other_command() {
        let req = Request::delete("bee", false).unwrap();
        assert_eq!(split_get(&req, by_first_letter), [(1, req)]);
    }

    /// The merged reply to a `get` of `keys` whose parts were answered with
    /// `replies`.
    fn merged(keys: &[&str], replies: &[&[u8]]) -> Bytes {
        let req = Request::get(keys).unwrap();
        let parts: Vec<ReplyFrame> = replies.iter().map(|r| frame(Command::Get, r)).collect();
        merge_get(&req, &parts)
    }

    // Values come back in the client's key order, duplicates as the server
    // answered, misses absent.
    #[test]
    fn merge_in_key_order_with_duplicates_and_misses() {
        // server 1 answered both b1s; server 0 only a2 (a1 missed); server 2
        // missed zz.
        let merged = merged(
            &["b1", "a1", "zz", "a2", "b1"],
            &[
                b"VALUE b1 0 1\r\nB\r\nVALUE b1 0 1\r\nB\r\nEND\r\n",
                b"VALUE a2 3 2\r\nA2\r\nEND\r\n",
                b"END\r\n",
            ],
        );
        assert_eq!(
            &merged[..],
            b"VALUE b1 0 1\r\nB\r\nVALUE a2 3 2\r\nA2\r\nVALUE b1 0 1\r\nB\r\nEND\r\n"
        );
        // and the merged reply is itself a valid get reply
        assert!(matches!(frame(Command::Get, &merged).parse(), Reply::Values(v) if v.len() == 3));
    }

    // How the parts' replies to a `get a b` combine, one case a row.
    #[test]
    fn merge_cases() {
        let cases: [(&[&[u8]], &[u8]); 3] = [
            // All keys missed: just END.
            (&[b"END\r\n", b"END\r\n"], b"END\r\n"),
            // One failing part fails the whole command with its error line.
            (
                &[
                    b"VALUE a 0 1\r\nx\r\nEND\r\n",
                    b"SERVER_ERROR Connection refused\r\n",
                ],
                b"SERVER_ERROR Connection refused\r\n",
            ),
            // Values matching no key in order are kept, at the end.
            (
                &[
                    b"VALUE q 0 1\r\nx\r\nVALUE a 0 1\r\ny\r\nEND\r\n",
                    b"VALUE b 0 1\r\nz\r\nEND\r\n",
                ],
                b"VALUE b 0 1\r\nz\r\nVALUE q 0 1\r\nx\r\nVALUE a 0 1\r\ny\r\nEND\r\n",
            ),
        ];
        for (replies, want) in cases {
            assert_eq!(&merged(&["a", "b"], replies)[..], want, "{replies:?}");
        }
    }

    // A single part is passed through as received.
    #[test]
    fn merge_single_part_zero_copy() {
        let req = Request::get(&["a"]).unwrap();
        let part = frame(Command::Get, b"VALUE a 0 1\r\nx\r\nEND\r\n");
        let merged = merge_get(&req, std::slice::from_ref(&part));
        assert_eq!(merged.as_ptr(), part.raw().as_ptr());
    }
}
