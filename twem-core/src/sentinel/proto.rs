//! The pure part of the Sentinel client: reading the sentinels' replies and
//! messages, and deciding from what they say whether a server moved. No
//! I/O here; [`super::monitor`] does the talking.

use twem_proto::resp::Reply;

use crate::config::ServerAddr;

/// What a sentinel said about one master: where it is, and with which
/// configuration epoch when the sentinel told (`SENTINEL MASTER`; a
/// `+switch-master` message and `get-master-addr-by-name` carry none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The master's address.
    pub addr: ServerAddr,
    /// The sentinel's `config-epoch` for the master, if it said.
    pub epoch: Option<u64>,
}

/// What the proxy believes about one master.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Where the master is; `None` until a sentinel answered.
    pub addr: Option<ServerAddr>,
    /// The highest configuration epoch that went with it. A failover
    /// raises the epoch, so a sentinel reporting a lower one has not heard
    /// of the latest failover yet and is not followed.
    pub epoch: u64,
}

/// What to do with a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changes.
    Keep,
    /// The same address, with a newer epoch learned.
    Epoch(u64),
    /// The master is elsewhere now (or known for the first time): move
    /// the server's connections to `addr`; `epoch` is the new belief.
    Switch {
        /// The new address.
        addr: ServerAddr,
        /// The epoch to remember with it.
        epoch: u64,
    },
}

/// Decide what `report` means given `known`, as data.
///
/// A report with an epoch older than the known one is stale (a sentinel
/// that has not caught up with a failover) and is ignored. A
/// `+switch-master` message (no epoch) is followed at once, and counts as
/// one epoch newer than the known one: the failover it announces raised
/// the epoch by at least one, so a sentinel still reporting the old epoch
/// cannot flip the server back.
pub fn decide(known: &Known, report: &Report) -> Decision {
    let same = known.addr.as_ref() == Some(&report.addr);
    match report.epoch {
        Some(e) if e < known.epoch => Decision::Keep,
        Some(e) if same => {
            if e > known.epoch {
                Decision::Epoch(e)
            } else {
                Decision::Keep
            }
        }
        Some(e) => Decision::Switch {
            addr: report.addr.clone(),
            epoch: e,
        },
        None if same => Decision::Keep,
        None => Decision::Switch {
            addr: report.addr.clone(),
            epoch: if known.addr.is_some() {
                known.epoch.saturating_add(1)
            } else {
                known.epoch
            },
        },
    }
}

impl Known {
    /// Apply a decision; returns the address to switch to, if any.
    pub fn apply(&mut self, d: Decision) -> Option<ServerAddr> {
        match d {
            Decision::Keep => None,
            Decision::Epoch(e) => {
                self.epoch = e;
                None
            }
            Decision::Switch { addr, epoch } => {
                self.epoch = epoch;
                self.addr = Some(addr.clone());
                Some(addr)
            }
        }
    }
}

/// A `+switch-master` message: `<master> <old-ip> <old-port> <new-ip>
/// <new-port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchMaster {
    /// The master name.
    pub master: String,
    /// Where it was.
    pub from: ServerAddr,
    /// Where it is now.
    pub to: ServerAddr,
}

/// Parse a `+switch-master` payload; `None` if it is not one.
pub fn parse_switch_master(payload: &[u8]) -> Option<SwitchMaster> {
    let text = std::str::from_utf8(payload).ok()?;
    let parts: Vec<&str> = text.split(' ').collect();
    let [master, old_ip, old_port, new_ip, new_port] = parts[..] else {
        return None;
    };
    Some(SwitchMaster {
        master: master.to_owned(),
        from: tcp(old_ip, old_port)?,
        to: tcp(new_ip, new_port)?,
    })
}

/// A pub/sub `message` on `channel`: its payload; `None` for anything
/// else (a subscription confirmation, another channel).
pub fn message_on<'r>(reply: &'r Reply, channel: &[u8]) -> Option<&'r [u8]> {
    let items = match reply {
        Reply::Array(Some(items)) | Reply::Push(items) => items,
        _ => return None,
    };
    match items.as_slice() {
        [Reply::Bulk(Some(kind)), Reply::Bulk(Some(ch)), Reply::Bulk(Some(payload))]
            if &kind[..] == b"message" && &ch[..] == channel =>
        {
            Some(payload)
        }
        _ => None,
    }
}

/// A `subscribe` confirmation (`["subscribe", channel, count]`).
pub fn is_confirmation(reply: &Reply) -> bool {
    matches!(reply, Reply::Array(Some(items)) | Reply::Push(items)
        if matches!(items.first(), Some(Reply::Bulk(Some(kind))) if &kind[..] == b"subscribe"))
}

/// Why a sentinel's reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The sentinel answered with an error (`-NOAUTH`, `-ERR No such
    /// master with that name`).
    #[error("the sentinel replied {0}")]
    Refused(String),
    /// The sentinel does not know the master name.
    #[error("the sentinel does not know master {0:?}")]
    UnknownMaster(String),
    /// The reply has another shape than the command's.
    #[error("unexpected reply to {0}")]
    Shape(&'static str),
}

/// The reply to `SENTINEL get-master-addr-by-name <master>`: `[ip, port]`,
/// or a null array for a master it does not monitor.
pub fn parse_master_addr(master: &str, reply: &Reply) -> Result<Report, ReplyError> {
    match reply {
        Reply::Array(Some(items)) => match items.as_slice() {
            [Reply::Bulk(Some(ip)), Reply::Bulk(Some(port))] => {
                let addr = tcp(
                    std::str::from_utf8(ip).map_err(|_| shape_addr())?,
                    std::str::from_utf8(port).map_err(|_| shape_addr())?,
                )
                .ok_or_else(shape_addr)?;
                Ok(Report { addr, epoch: None })
            }
            _ => Err(shape_addr()),
        },
        Reply::Array(None) | Reply::Null | Reply::Bulk(None) => {
            Err(ReplyError::UnknownMaster(master.to_owned()))
        }
        other => Err(refused(other).unwrap_or_else(shape_addr)),
    }
}

fn shape_addr() -> ReplyError {
    ReplyError::Shape("SENTINEL get-master-addr-by-name")
}

/// The reply to `SENTINEL MASTER <master>`: a flat list of field names and
/// values (RESP2), of which `ip`, `port` and `config-epoch` are used.
pub fn parse_master_info(master: &str, reply: &Reply) -> Result<Report, ReplyError> {
    let shape = || ReplyError::Shape("SENTINEL MASTER");
    let items = match reply {
        Reply::Array(Some(items)) => items,
        Reply::Error(e) if e.starts_with(b"ERR No such master") => {
            return Err(ReplyError::UnknownMaster(master.to_owned()))
        }
        other => return Err(refused(other).unwrap_or_else(shape)),
    };
    let field = |name: &[u8]| field(items, name);
    let addr = tcp(
        field(b"ip").ok_or_else(shape)?,
        field(b"port").ok_or_else(shape)?,
    )
    .ok_or_else(shape)?;
    let epoch = field(b"config-epoch").and_then(|e| e.parse().ok());
    Ok(Report { addr, epoch })
}

/// The reply to `SENTINEL REPLICAS <master>`: one flat list of fields per
/// replica; the addresses of those the sentinel does not flag as down or
/// disconnected (whether one is fit to read from is checked on the
/// replica itself).
pub fn parse_replicas(master: &str, reply: &Reply) -> Result<Vec<ServerAddr>, ReplyError> {
    let shape = || ReplyError::Shape("SENTINEL REPLICAS");
    let items = match reply {
        Reply::Array(Some(items)) => items,
        Reply::Error(e) if e.starts_with(b"ERR No such master") => {
            return Err(ReplyError::UnknownMaster(master.to_owned()))
        }
        other => return Err(refused(other).unwrap_or_else(shape)),
    };
    let mut out = Vec::new();
    for item in items {
        let Reply::Array(Some(fields)) = item else {
            return Err(shape());
        };
        let field = |name: &[u8]| field(fields, name);
        let down = field(b"flags").is_none_or(|f| {
            f.split(',')
                .any(|flag| matches!(flag, "s_down" | "o_down" | "disconnected"))
        });
        if down {
            continue;
        }
        let addr = tcp(
            field(b"ip").ok_or_else(shape)?,
            field(b"port").ok_or_else(shape)?,
        )
        .ok_or_else(shape)?;
        out.push(addr);
    }
    Ok(out)
}

/// The value of field `name` in a flat `[name, value, ...]` list (RESP2's
/// form of Sentinel's maps).
fn field<'r>(items: &'r [Reply], name: &[u8]) -> Option<&'r str> {
    items.chunks(2).find_map(|kv| match kv {
        [Reply::Bulk(Some(k)), Reply::Bulk(Some(v))] if &k[..] == name => {
            std::str::from_utf8(v).ok()
        }
        _ => None,
    })
}

fn refused(reply: &Reply) -> Option<ReplyError> {
    match reply {
        Reply::Error(e) => Some(ReplyError::Refused(String::from_utf8_lossy(e).into_owned())),
        _ => None,
    }
}

fn tcp(ip: &str, port: &str) -> Option<ServerAddr> {
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    (!ip.is_empty()).then(|| ServerAddr::Tcp {
        host: ip.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn addr(port: u16) -> ServerAddr {
        ServerAddr::loopback(port)
    }

    fn report(port: u16, epoch: Option<u64>) -> Report {
        Report {
            addr: addr(port),
            epoch,
        }
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
    }

    // The first answer is followed whatever its epoch; a failover moves
    // the server; a stale sentinel (older epoch) cannot move it back.
    #[test]
    fn decisions() {
        let mut known = Known::default();
        let r = report(1, None);
        assert_eq!(known.apply(decide(&known, &r)), Some(addr(1)));
        assert_eq!(known.epoch, 0);
        let polled = report(1, Some(3));
        assert_eq!(decide(&known, &polled), Decision::Epoch(3));
        known.apply(decide(&known, &polled));
        // +switch-master: followed, and counted one epoch newer.
        let switched = report(2, None);
        assert_eq!(known.apply(decide(&known, &switched)), Some(addr(2)));
        assert_eq!(known.epoch, 4);
        // The same message from the other sentinels changes nothing.
        assert_eq!(decide(&known, &switched), Decision::Keep);
        // A sentinel that has not heard of it yet is not followed back.
        assert_eq!(decide(&known, &polled), Decision::Keep);
        // One that has (the failover's epoch) confirms it.
        let confirmed = report(2, Some(5));
        assert_eq!(decide(&known, &confirmed), Decision::Epoch(5));
        known.apply(decide(&known, &confirmed));
        // A failover seen only by polling (no message reached us).
        let back = report(1, Some(6));
        assert_eq!(
            decide(&known, &back),
            Decision::Switch {
                addr: addr(1),
                epoch: 6
            }
        );
    }

    #[test]
    fn switch_master_message() {
        let m = parse_switch_master(b"shard-a 127.0.0.1 7001 127.0.0.1 7002").expect("parsed");
        assert_eq!(m.master, "shard-a");
        assert_eq!(m.from, addr(7001));
        assert_eq!(m.to, addr(7002));
        assert!(parse_switch_master(b"shard-a 127.0.0.1 7001 127.0.0.1").is_none());
        assert!(parse_switch_master(b"shard-a 127.0.0.1 7001 127.0.0.1 0").is_none());
        assert!(parse_switch_master(b"").is_none());
        let msg = Reply::Array(Some(vec![
            bulk("message"),
            bulk("+switch-master"),
            bulk("x 1.2.3.4 1 5.6.7.8 2"),
        ]));
        assert_eq!(
            message_on(&msg, b"+switch-master"),
            Some(&b"x 1.2.3.4 1 5.6.7.8 2"[..])
        );
        assert_eq!(message_on(&msg, b"+sdown"), None);
        let confirm = Reply::Array(Some(vec![
            bulk("subscribe"),
            bulk("+switch-master"),
            Reply::Integer(1),
        ]));
        assert_eq!(message_on(&confirm, b"+switch-master"), None);
        assert!(is_confirmation(&confirm));
        assert!(!is_confirmation(&msg));
        assert!(!is_confirmation(&Reply::error("NOPERM")));
    }

    #[test]
    fn master_addr_reply() {
        let ok = Reply::Array(Some(vec![bulk("127.0.0.1"), bulk("6380")]));
        assert_eq!(
            parse_master_addr("m", &ok),
            Ok(Report {
                addr: addr(6380),
                epoch: None
            })
        );
        assert_eq!(
            parse_master_addr("m", &Reply::Array(None)),
            Err(ReplyError::UnknownMaster("m".into()))
        );
        assert_eq!(
            parse_master_addr("m", &Reply::error("NOAUTH Authentication required.")),
            Err(ReplyError::Refused(
                "NOAUTH Authentication required.".into()
            ))
        );
        let bad = Reply::Array(Some(vec![bulk("127.0.0.1"), bulk("x")]));
        assert!(matches!(
            parse_master_addr("m", &bad),
            Err(ReplyError::Shape(_))
        ));
    }

    #[test]
    fn replicas_reply() {
        let replica = |port: &str, flags: &str| {
            Reply::Array(Some(
                ["name", "x", "ip", "127.0.0.1", "port", port, "flags", flags]
                    .iter()
                    .map(|s| bulk(s))
                    .collect(),
            ))
        };
        let reply = Reply::Array(Some(vec![
            replica("7001", "slave"),
            replica("7002", "s_down,slave,disconnected"),
            replica("7003", "slave"),
        ]));
        assert_eq!(
            parse_replicas("m", &reply),
            Ok(vec![addr(7001), addr(7003)])
        );
        assert_eq!(parse_replicas("m", &Reply::Array(Some(vec![]))), Ok(vec![]));
        assert_eq!(
            parse_replicas("m", &Reply::error("ERR No such master with that name")),
            Err(ReplyError::UnknownMaster("m".into()))
        );
        assert!(matches!(
            parse_replicas("m", &Reply::Array(Some(vec![bulk("x")]))),
            Err(ReplyError::Shape(_))
        ));
    }

    #[test]
    fn master_info_reply() {
        let info = Reply::Array(Some(
            [
                "name",
                "m",
                "ip",
                "127.0.0.1",
                "port",
                "6381",
                "flags",
                "master",
                "config-epoch",
                "7",
            ]
            .iter()
            .map(|s| bulk(s))
            .collect(),
        ));
        assert_eq!(
            parse_master_info("m", &info),
            Ok(Report {
                addr: addr(6381),
                epoch: Some(7)
            })
        );
        assert_eq!(
            parse_master_info("m", &Reply::error("ERR No such master with that name")),
            Err(ReplyError::UnknownMaster("m".into()))
        );
        let partial = Reply::Array(Some(vec![bulk("name"), bulk("m")]));
        assert!(matches!(
            parse_master_info("m", &partial),
            Err(ReplyError::Shape(_))
        ));
    }
}
