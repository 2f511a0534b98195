//! A cluster's shards as one node describes them: `CLUSTER SHARDS`
//! (Redis 7.0 and later) or `CLUSTER SLOTS` (older servers), parsed into
//! the same [`Topology`].

use twem_proto::resp::Reply;

use super::{normalize_addr, SLOTS};

/// One shard: the slot ranges its master serves, and its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Inclusive slot ranges.
    pub ranges: Vec<(u16, u16)>,
    /// `host:port` of the master.
    pub master: String,
    /// `host:port` of each replica that is online.
    pub replicas: Vec<String>,
}

/// Every shard that serves slots, as one node sees the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    /// The shards, in the order the node listed them.
    pub shards: Vec<Shard>,
}

/// A reply that is not a slot map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// The node answered with an error (`-ERR unknown subcommand`, or
    /// `-ERR This instance has cluster support disabled`).
    #[error("the node refused: {0}")]
    Refused(String),
    /// The reply does not have the shape Redis documents.
    #[error("the reply is not a slot map: {0}")]
    Malformed(&'static str),
}

impl Topology {
    /// Parse a `CLUSTER SHARDS` reply. `asked_host` is the host the
    /// question went to: a node whose endpoint is unknown (`?` or empty) is
    /// taken to be on it, as Redis's documentation tells clients to do.
    pub fn from_shards(reply: &Reply, asked_host: &str) -> Result<Topology, TopologyError> {
        let shards = elements(reply)?;
        let mut out = Vec::with_capacity(shards.len());
        for shard in shards {
            let fields = pairs(shard)?;
            let slots = field(&fields, "slots").ok_or(TopologyError::Malformed("no slots"))?;
            let nodes = field(&fields, "nodes").ok_or(TopologyError::Malformed("no nodes"))?;
            let bounds: Vec<i64> = elements(slots)?
                .iter()
                .map(int)
                .collect::<Option<_>>()
                .ok_or(TopologyError::Malformed("a slot is not a number"))?;
            if bounds.len() % 2 != 0 {
                return Err(TopologyError::Malformed("an odd number of slot bounds"));
            }
            let ranges = bounds
                .chunks(2)
                .map(|b| range(b[0], b[1]))
                .collect::<Result<Vec<_>, _>>()?;
            let mut master: Option<(String, bool)> = None;
            let mut replicas = Vec::new();
            for node in elements(nodes)? {
                let f = pairs(node)?;
                let Some(addr) = shard_node_addr(&f, asked_host) else {
                    continue;
                };
                let online = field(&f, "health").and_then(text) == Some("online");
                // A failed master stays listed as one until its replica
                // is promoted: an online master wins over it.
                let role = field(&f, "role").and_then(text);
                if role == Some("master") {
                    if master.as_ref().is_none_or(|(_, up)| !up && online) {
                        master = Some((addr, online));
                    }
                } else if role.is_some() && online {
                    replicas.push(addr);
                }
            }
            // A shard with no slots (an empty master, a new node) serves
            // nothing: it is not part of the map.
            if ranges.is_empty() {
                continue;
            }
            let (master, _) = master.ok_or(TopologyError::Malformed("a shard with no master"))?;
            out.push(Shard {
                ranges,
                master,
                replicas,
            });
        }
        Ok(Topology { shards: out })
    }

    /// Parse a `CLUSTER SLOTS` reply (`[start, end, [host, port, id],
    /// replicas...]` per range); `asked_host` as for
    /// [`from_shards`](Topology::from_shards).
    pub fn from_slots(reply: &Reply, asked_host: &str) -> Result<Topology, TopologyError> {
        let mut out: Vec<Shard> = Vec::new();
        for entry in elements(reply)? {
            let e = elements(entry)?;
            let (Some(start), Some(end)) = (e.first().and_then(int), e.get(1).and_then(int)) else {
                return Err(TopologyError::Malformed("a range is not two numbers"));
            };
            let r = range(start, end)?;
            let mut nodes = e.iter().skip(2).filter_map(|n| {
                let n = elements(n).ok()?;
                let host = n.first().and_then(text)?;
                let port = n.get(1).and_then(int)?;
                let host = if host.is_empty() || host == "?" {
                    asked_host
                } else {
                    host
                };
                normalize_addr(&format!("{host}:{port}"))
            });
            let master = nodes
                .next()
                .ok_or(TopologyError::Malformed("a range with no master"))?;
            let replicas: Vec<String> = nodes.collect();
            match out.iter_mut().find(|s| s.master == master) {
                Some(s) => s.ranges.push(r),
                None => out.push(Shard {
                    ranges: vec![r],
                    master,
                    replicas,
                }),
            }
        }
        Ok(Topology { shards: out })
    }

    /// Slots no shard serves.
    pub fn unserved(&self) -> usize {
        let mut seen = vec![false; SLOTS];
        for s in &self.shards {
            for &(a, b) in &s.ranges {
                for slot in a..=b {
                    seen[usize::from(slot)] = true;
                }
            }
        }
        seen.iter().filter(|s| !**s).count()
    }
}

/// A node of `CLUSTER SHARDS`: its preferred endpoint (or its ip) and
/// port.
fn shard_node_addr(f: &[(&Reply, &Reply)], asked_host: &str) -> Option<String> {
    let port = field(f, "port")
        .and_then(int)
        .or_else(|| field(f, "tls-port").and_then(int))?;
    let host = [field(f, "endpoint"), field(f, "ip")]
        .into_iter()
        .flatten()
        .filter_map(text)
        .find(|h| !h.is_empty() && *h != "?")
        .unwrap_or(asked_host);
    normalize_addr(&format!("{host}:{port}"))
}

fn range(start: i64, end: i64) -> Result<(u16, u16), TopologyError> {
    let ok = |n: i64| u16::try_from(n).ok().filter(|n| usize::from(*n) < SLOTS);
    match (ok(start), ok(end)) {
        (Some(a), Some(b)) if a <= b => Ok((a, b)),
        _ => Err(TopologyError::Malformed("a slot range out of 0-16383")),
    }
}

/// The elements of an array (or RESP3 set); an error reply is the node's
/// refusal.
fn elements(r: &Reply) -> Result<&[Reply], TopologyError> {
    match r {
        Reply::Array(Some(v)) | Reply::Set(v) => Ok(v),
        Reply::Error(e) | Reply::BlobError(e) => Err(TopologyError::Refused(
            String::from_utf8_lossy(e).into_owned(),
        )),
        _ => Err(TopologyError::Malformed("an array was expected")),
    }
}

/// Key-value pairs: a RESP3 map, or a RESP2 flat array of them.
fn pairs(r: &Reply) -> Result<Vec<(&Reply, &Reply)>, TopologyError> {
    match r {
        Reply::Map(m) => Ok(m.iter().map(|(k, v)| (k, v)).collect()),
        _ => {
            let v = elements(r)?;
            if v.len() % 2 != 0 {
                return Err(TopologyError::Malformed("an odd number of fields"));
            }
            Ok(v.chunks(2).map(|c| (&c[0], &c[1])).collect())
        }
    }
}

fn field<'a>(f: &[(&'a Reply, &'a Reply)], name: &str) -> Option<&'a Reply> {
    f.iter()
        .find(|(k, _)| text(k) == Some(name))
        .map(|(_, v)| *v)
}

fn text(r: &Reply) -> Option<&str> {
    match r {
        Reply::Bulk(Some(b)) | Reply::Status(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

fn int(r: &Reply) -> Option<i64> {
    match r {
        Reply::Integer(n) => Some(*n),
        Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(Bytes::from(s.to_owned())))
    }

    fn arr(v: Vec<Reply>) -> Reply {
        Reply::Array(Some(v))
    }

    fn node(port: i64, role: &str, health: &str) -> Reply {
        arr(vec![
            bulk("id"),
            bulk("abc"),
            bulk("port"),
            Reply::Integer(port),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("endpoint"),
            bulk("127.0.0.1"),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            Reply::Integer(10),
            bulk("health"),
            bulk(health),
        ])
    }

    fn shard(slots: &[i64], nodes: Vec<Reply>) -> Reply {
        arr(vec![
            bulk("slots"),
            arr(slots.iter().map(|s| Reply::Integer(*s)).collect()),
            bulk("nodes"),
            arr(nodes),
        ])
    }

    // The shape redis-server 7.0 answers: ranges as flat bounds, nodes as
    // flat field lists; a failed master loses to the promoted replica.
    #[test]
    fn shards_are_parsed() {
        let reply = arr(vec![
            shard(
                &[0, 5460, 10923, 10923],
                vec![
                    node(7000, "master", "online"),
                    node(7003, "replica", "online"),
                ],
            ),
            shard(
                &[5461, 10922],
                vec![node(7001, "master", "fail"), node(7004, "master", "online")],
            ),
            shard(&[], vec![node(7009, "master", "online")]),
            shard(&[10924, 16383], vec![node(7002, "master", "online")]),
        ]);
        let t = Topology::from_shards(&reply, "localhost").expect("a map");
        assert_eq!(t.shards.len(), 3);
        assert_eq!(t.shards[0].ranges, vec![(0, 5460), (10923, 10923)]);
        assert_eq!(t.shards[0].master, "127.0.0.1:7000");
        assert_eq!(t.shards[0].replicas, vec!["127.0.0.1:7003".to_owned()]);
        assert_eq!(t.shards[1].master, "127.0.0.1:7004");
        assert_eq!(t.unserved(), 0);
    }

    #[test]
    fn slots_are_parsed() {
        let n = |host: &str, port: i64| arr(vec![bulk(host), Reply::Integer(port), bulk("id")]);
        let reply = arr(vec![
            arr(vec![
                Reply::Integer(0),
                Reply::Integer(8000),
                n("127.0.0.1", 7000),
                n("127.0.0.1", 7003),
            ]),
            arr(vec![
                Reply::Integer(8001),
                Reply::Integer(16383),
                n("", 7001),
            ]),
            arr(vec![
                Reply::Integer(100),
                Reply::Integer(100),
                n("127.0.0.1", 7000),
            ]),
        ]);
        let t = Topology::from_slots(&reply, "10.0.0.9").expect("a map");
        assert_eq!(t.shards.len(), 2);
        assert_eq!(t.shards[0].ranges, vec![(0, 8000), (100, 100)]);
        assert_eq!(t.shards[1].master, "10.0.0.9:7001");
        assert_eq!(t.shards[0].replicas, vec!["127.0.0.1:7003".to_owned()]);
    }

    #[test]
    fn refusals_and_bad_shapes_are_errors() {
        let refused = Reply::Error(Bytes::from_static(b"ERR unknown subcommand 'SHARDS'"));
        assert!(matches!(
            Topology::from_shards(&refused, "h"),
            Err(TopologyError::Refused(_))
        ));
        let bad = arr(vec![arr(vec![Reply::Integer(0), Reply::Integer(99999)])]);
        assert!(matches!(
            Topology::from_slots(&bad, "h"),
            Err(TopologyError::Malformed(_))
        ));
        assert!(Topology::from_shards(&Reply::Integer(1), "h").is_err());
    }
}
