//! What a Redis client session keeps for itself and answers itself: its
//! protocol (`HELLO`), its name and library (`CLIENT`), and its transaction
//! (`MULTI` ... `EXEC`, `WATCH`).
//!
//! Transactions never half-apply. Commands between `MULTI` and `EXEC` are
//! checked and queued here (`+QUEUED`), not sent: each must map to the one
//! server the transaction's first key chose (hash tags are the user's tool),
//! and one that does not, or that the proxy refuses, is answered with its
//! error and makes `EXEC` answer `-EXECABORT`, with nothing sent. At `EXEC`
//! the whole transaction (`MULTI`, the commands, `EXEC`) goes to a
//! connection pinned to this client, so no other client's command can come
//! between them, and the client reads `EXEC`'s own reply. `WATCH` pins that
//! connection at once (the server must watch from then on) and
//! `EXEC`/`DISCARD`/`UNWATCH` give it back clean.

use bytes::{BufMut, Bytes, BytesMut};

use twem_proto::resp;

use crate::pool::{CallError, Inbox, Pool, ReplyFuture, RequestError, Transaction};

const EXECABORT: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";

/// A reply known now.
pub(super) fn ready(b: &'static [u8]) -> ReplyFuture {
    ReplyFuture::ready(Ok(Bytes::from_static(b)))
}

fn error(code: &'static str, msg: impl Into<std::borrow::Cow<'static, str>>) -> ReplyFuture {
    ReplyFuture::ready(Err(CallError::Request(RequestError::new(code, msg))))
}

/// The id `HELLO`, `CLIENT ID` and `CLIENT INFO` report: the proxy's own
/// client number, from 1 as Redis counts (clients test ids for truth).
fn client_id(inbox: &Inbox) -> i64 {
    i64::try_from(inbox.hint()).map_or(i64::MAX, |n| n.saturating_add(1))
}

/// What Redis says of a client name or library attribute with a space,
/// a newline or another byte outside `!`..`~`.
fn valid_name(b: &[u8]) -> bool {
    b.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

/// The client's own state: what `HELLO` and `CLIENT` set and report.
pub(super) struct ClientState {
    /// Spoken protocol: 2 or 3.
    pub proto: u8,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
}

impl Default for ClientState {
    fn default() -> Self {
        ClientState {
            proto: 2,
            name: None,
            lib_name: None,
            lib_ver: None,
        }
    }
}

/// A small RESP writer for the replies the session builds, in the client's
/// protocol.
struct Out {
    buf: BytesMut,
    resp3: bool,
}

impl Out {
    fn new(resp3: bool) -> Self {
        Out {
            buf: BytesMut::with_capacity(128),
            resp3,
        }
    }
    fn header(&mut self, t: u8, n: usize) {
        self.buf.put_u8(t);
        self.buf.extend_from_slice(n.to_string().as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }
    fn bulk(&mut self, b: &[u8]) {
        self.header(b'$', b.len());
        self.buf.extend_from_slice(b);
        self.buf.extend_from_slice(b"\r\n");
    }
    fn int(&mut self, n: i64) {
        self.buf.put_u8(b':');
        self.buf.extend_from_slice(n.to_string().as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }
    /// A map of `n` pairs: `%n` in RESP3, a flat array of `2n` in RESP2.
    fn map(&mut self, n: usize) {
        if self.resp3 {
            self.header(b'%', n);
        } else {
            self.header(b'*', 2 * n);
        }
    }
    fn null(&mut self) {
        self.buf
            .extend_from_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }
    /// Text Redis sends as a verbatim string in RESP3 (`CLIENT INFO`).
    fn text(&mut self, t: &[u8]) {
        if self.resp3 {
            self.header(b'=', t.len() + 4);
            self.buf.extend_from_slice(b"txt:");
            self.buf.extend_from_slice(t);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(t);
        }
    }
    fn done(self) -> ReplyFuture {
        ReplyFuture::ready(Ok(self.buf.freeze()))
    }
}

/// A bulk string reply as RESP3's verbatim text (`=<n>\r\ntxt:...`), as
/// Redis sends `INFO` to RESP3 clients; any other reply unchanged.
pub(super) fn bulk_to_verbatim(b: Bytes) -> Bytes {
    let Some(rest) = b.strip_prefix(b"$") else {
        return b;
    };
    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
        return b;
    };
    let body = rest.get(eol + 2..).unwrap_or_default();
    let Some(text) = body.strip_suffix(b"\r\n") else {
        return b;
    };
    let mut o = Out::new(true);
    o.text(text);
    o.buf.freeze()
}

/// The `HELLO` reply: Redis's fields, the version being the lowest among
/// the pool's servers.
fn hello_reply(resp3: bool, version: &str, id: i64) -> Bytes {
    let mut o = Out::new(resp3);
    o.map(7);
    o.bulk(b"server");
    o.bulk(b"redis");
    o.bulk(b"version");
    o.bulk(version.as_bytes());
    o.bulk(b"proto");
    o.int(if resp3 { 3 } else { 2 });
    o.bulk(b"id");
    o.int(id);
    o.bulk(b"mode");
    o.bulk(b"standalone");
    o.bulk(b"role");
    o.bulk(b"master");
    o.bulk(b"modules");
    o.header(b'*', 0);
    o.buf.freeze()
}

/// What `HELLO` asked for, parsed; or the error reply.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Hello {
    pub proto: Option<u8>,
    pub auth: Option<(Bytes, Bytes)>,
    pub setname: Option<Bytes>,
}

/// Parse `HELLO [protover [AUTH user pass] [SETNAME name]]` as Redis does.
pub(super) fn parse_hello(args: &[Bytes]) -> Result<Hello, &'static [u8]> {
    let mut h = Hello {
        proto: None,
        auth: None,
        setname: None,
    };
    let mut rest = args.get(1..).unwrap_or_default().iter();
    if let Some(v) = rest.next() {
        let n: i64 = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(&b"-ERR Protocol version is not an integer or out of range\r\n"[..])?;
        h.proto = match n {
            2 => Some(2),
            3 => Some(3),
            _ => return Err(b"-NOPROTO unsupported protocol version\r\n"),
        };
    }
    while let Some(opt) = rest.next() {
        if opt.eq_ignore_ascii_case(b"auth") {
            match (rest.next(), rest.next()) {
                (Some(u), Some(p)) => h.auth = Some((u.clone(), p.clone())),
                _ => return Err(b"-ERR Syntax error in HELLO option 'auth'\r\n"),
            }
        } else if opt.eq_ignore_ascii_case(b"setname") {
            match rest.next() {
                Some(n) => h.setname = Some(n.clone()),
                None => return Err(b"-ERR Syntax error in HELLO option 'setname'\r\n"),
            }
        } else {
            return Err(b"-ERR Syntax error in HELLO option\r\n");
        }
    }
    Ok(h)
}

/// `HELLO`: switch protocol, authenticate, name the client; the reply
/// (in the new protocol) carries the servers' lowest version, learned once.
pub(super) fn hello(
    req: &resp::Request,
    pool: &Pool,
    inbox: &mut Inbox,
    client: &mut ClientState,
    authed: &mut bool,
) -> ReplyFuture {
    let h = match parse_hello(req.args()) {
        Ok(h) => h,
        Err(e) => return ReplyFuture::ready(Ok(Bytes::from_static(e))),
    };
    if let Some((user, pass)) = &h.auth {
        let ok = match &pool.config().redis_auth {
            // The proxy's one password is Redis's `default` user's.
            Some(pw) => {
                use subtle::ConstantTimeEq;
                user.eq_ignore_ascii_case(b"default") && bool::from(pass[..].ct_eq(pw.as_bytes()))
            }
            // No password: Redis's `default` user is `nopass`.
            None => user.eq_ignore_ascii_case(b"default"),
        };
        if !ok {
            return ready(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
        }
        *authed = true;
    }
    if !*authed && pool.config().redis_auth.is_some() {
        return ready(
            b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the \
HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the \
RESP protocol version at the same time\r\n",
        );
    }
    if let Some(name) = &h.setname {
        if !valid_name(name) {
            return ready(
                b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
            );
        }
        client.name = (!name.is_empty()).then(|| name.clone());
    }
    if let Some(p) = h.proto {
        client.proto = p;
        inbox.set_resp3(p == 3);
    }
    let resp3 = client.proto == 3;
    let id = client_id(inbox);
    let pool = pool.clone();
    ReplyFuture::from_future(async move {
        let version = pool.server_version().await?;
        Ok(hello_reply(resp3, &version, id))
    })
}

/// `CLIENT <subcommand>`: what concerns this client is answered here; what
/// would act on the server's connections (which are the proxy's, shared) is
/// refused, saying why.
pub(super) fn client(
    req: &resp::Request,
    inbox: &Inbox,
    client: &mut ClientState,
    created: std::time::Instant,
) -> ReplyFuture {
    let args = req.args();
    let Some(sub) = args.get(1) else {
        return ready(b"-ERR wrong number of arguments for 'client' command\r\n");
    };
    let sub_l = sub.to_ascii_lowercase();
    let arity = |n: usize| {
        (args.len() != n).then(|| {
            error(
                "ERR",
                format!(
                    "wrong number of arguments for 'client|{}' command",
                    String::from_utf8_lossy(&sub_l)
                ),
            )
        })
    };
    let resp3 = client.proto == 3;
    match &sub_l[..] {
        b"setname" => {
            if let Some(e) = arity(3) {
                return e;
            }
            let name = args.get(2).cloned().unwrap_or_default();
            if !valid_name(&name) {
                return ready(
                    b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
                );
            }
            client.name = (!name.is_empty()).then_some(name);
            ready(b"+OK\r\n")
        }
        b"getname" => {
            if let Some(e) = arity(2) {
                return e;
            }
            let mut o = Out::new(resp3);
            match &client.name {
                Some(n) => o.bulk(n),
                None => o.null(),
            }
            o.done()
        }
        b"setinfo" => {
            if let Some(e) = arity(4) {
                return e;
            }
            let (attr, value) = (
                args.get(2).cloned().unwrap_or_default(),
                args.get(3).cloned().unwrap_or_default(),
            );
            if !valid_name(&value) {
                return error(
                    "ERR",
                    format!(
                        "{} cannot contain spaces, newlines or special characters.",
                        String::from_utf8_lossy(&attr)
                    ),
                );
            }
            let value = (!value.is_empty()).then_some(value);
            if attr.eq_ignore_ascii_case(b"lib-name") {
                client.lib_name = value;
            } else if attr.eq_ignore_ascii_case(b"lib-ver") {
                client.lib_ver = value;
            } else {
                return error(
                    "ERR",
                    format!("Unrecognized option '{}'", String::from_utf8_lossy(&attr)),
                );
            }
            ready(b"+OK\r\n")
        }
        b"id" => {
            if let Some(e) = arity(2) {
                return e;
            }
            let mut o = Out::new(resp3);
            o.int(client_id(inbox));
            o.done()
        }
        b"info" => {
            if let Some(e) = arity(2) {
                return e;
            }
            let mut o = Out::new(resp3);
            o.text(client_info_line(inbox, client, created).as_bytes());
            o.done()
        }
        // Hints for the server's eviction and LRU: accepted, as Redis does
        // for any client; they cannot apply to shared connections.
        b"no-evict" | b"no-touch" => {
            if let Some(e) = arity(3) {
                return e;
            }
            match args.get(2) {
                Some(v) if v.eq_ignore_ascii_case(b"on") || v.eq_ignore_ascii_case(b"off") => {
                    ready(b"+OK\r\n")
                }
                _ => ready(b"-ERR syntax error\r\n"),
            }
        }
        b"tracking" | b"caching" | b"trackinginfo" | b"getredir" => error(
            "ERR",
            "twem: client-side caching (CLIENT TRACKING) is not supported through the proxy: \
             invalidation messages would come on server connections other clients share; \
             connect to the server directly for it",
        ),
        // Redis's other subcommands act on the server's clients, which are
        // the proxy's shared connections.
        b"list" | b"kill" | b"pause" | b"unpause" | b"reply" | b"unblock" | b"help" => error(
            "ERR",
            format!(
                "twem: CLIENT {} is not supported through the proxy: the server's clients are \
                 the proxy's shared connections, not yours (supported: SETNAME, GETNAME, \
                 SETINFO, ID, INFO, NO-EVICT, NO-TOUCH)",
                String::from_utf8_lossy(sub).to_ascii_uppercase()
            ),
        ),
        // Redis's words for a subcommand it does not know, which clients
        // probing for newer features (CLIENT MAINT_NOTIFICATIONS) expect.
        _ => error(
            "ERR",
            format!(
                "unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(sub)
            ),
        ),
    }
}

/// `CLIENT INFO`'s line, with what the proxy knows of this client.
fn client_info_line(inbox: &Inbox, c: &ClientState, created: std::time::Instant) -> String {
    let s = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    format!(
        "id={} name={} age={} idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 user=default \
         resp={} lib-name={} lib-ver={}\n",
        client_id(inbox),
        s(&c.name).unwrap_or_default(),
        created.elapsed().as_secs(),
        c.proto,
        s(&c.lib_name).unwrap_or_default(),
        s(&c.lib_ver).unwrap_or_default(),
    )
}

/// A client's transaction, from `WATCH` or `MULTI` to its end: the
/// session's part (whether `MULTI` was sent, whether a refusal makes `EXEC`
/// abort) around the pool's [`Transaction`].
#[derive(Default)]
pub(super) struct Txn {
    /// Between `MULTI` and `EXEC`/`DISCARD`.
    queuing: bool,
    /// A command was refused while queuing: `EXEC` aborts.
    dirty: bool,
    /// The keys' server, the pinned connection and the queued commands.
    tx: Option<Transaction>,
}

impl Txn {
    /// Whether `MULTI` was sent and not yet ended.
    pub(super) fn queuing(&self) -> bool {
        self.queuing
    }

    /// `MULTI`.
    pub(super) fn multi(&mut self) -> ReplyFuture {
        if self.queuing {
            return ready(b"-ERR MULTI calls can not be nested\r\n");
        }
        self.queuing = true;
        ready(b"+OK\r\n")
    }

    /// A command between `MULTI` and `EXEC`: checked and queued, or refused
    /// (and the transaction marked to abort).
    pub(super) fn queue(&mut self, req: &resp::Request, pool: &Pool) -> ReplyFuture {
        let tx = self.tx.get_or_insert_with(|| pool.transaction());
        match tx.queue(req) {
            Ok(()) => ready(b"+QUEUED\r\n"),
            Err(e) => {
                self.dirty = true;
                ReplyFuture::ready(Err(e))
            }
        }
    }

    /// `EXEC`: the whole transaction to its server on a pinned connection,
    /// or `-EXECABORT` with nothing sent.
    pub(super) fn exec(&mut self, pool: &Pool, inbox: &mut Inbox) -> ReplyFuture {
        if !self.queuing {
            return ready(b"-ERR EXEC without MULTI\r\n");
        }
        let txn = std::mem::take(self);
        let tx = txn.tx.unwrap_or_else(|| pool.transaction());
        if txn.dirty {
            tx.abort();
            return ready(EXECABORT);
        }
        tx.exec_in(Some(inbox))
    }

    /// `DISCARD`.
    pub(super) fn discard(&mut self) -> ReplyFuture {
        if !self.queuing {
            return ready(b"-ERR DISCARD without MULTI\r\n");
        }
        if let Some(tx) = std::mem::take(self).tx {
            tx.abort();
        }
        ready(b"+OK\r\n")
    }

    /// `WATCH key...` (outside `MULTI`): pins a connection to the keys'
    /// server and watches there.
    pub(super) fn watch(
        &mut self,
        req: &resp::Request,
        pool: &Pool,
        inbox: &mut Inbox,
    ) -> ReplyFuture {
        if self.queuing {
            return ready(b"-ERR WATCH inside MULTI is not allowed\r\n");
        }
        self.tx
            .get_or_insert_with(|| pool.transaction())
            .watch_in(req, inbox.resp3(), Some(inbox))
    }

    /// `UNWATCH` outside `MULTI`.
    pub(super) fn unwatch(&mut self, inbox: &mut Inbox) -> ReplyFuture {
        match std::mem::take(self).tx {
            Some(tx) => tx.unwatch_in(Some(inbox)),
            None => ready(b"+OK\r\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<Bytes> {
        v.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn hello_parses_as_redis() {
        assert_eq!(
            parse_hello(&args(&["HELLO"])),
            Ok(Hello {
                proto: None,
                auth: None,
                setname: None
            })
        );
        let h = parse_hello(&args(&[
            "hello", "3", "AUTH", "default", "pw", "SETNAME", "app",
        ]))
        .unwrap_or_else(|e| panic!("{}", String::from_utf8_lossy(e)));
        assert_eq!(h.proto, Some(3));
        assert_eq!(h.auth, Some((Bytes::from("default"), Bytes::from("pw"))));
        assert_eq!(h.setname, Some(Bytes::from("app")));
        assert_eq!(
            parse_hello(&args(&["HELLO", "4"])),
            Err(&b"-NOPROTO unsupported protocol version\r\n"[..])
        );
        assert!(parse_hello(&args(&["HELLO", "x"])).is_err());
        assert!(parse_hello(&args(&["HELLO", "3", "AUTH", "u"])).is_err());
        assert!(parse_hello(&args(&["HELLO", "3", "BOGUS"])).is_err());
    }

    #[test]
    fn hello_reply_is_a_map_in_resp3_and_a_flat_array_in_resp2() {
        let r3 = hello_reply(true, "7.0.15", 9);
        assert!(r3.starts_with(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:9\r\n"));
        assert!(r3.ends_with(b"$7\r\nmodules\r\n*0\r\n"));
        let r2 = hello_reply(false, "7.0.15", 9);
        assert!(r2.starts_with(b"*14\r\n"));
        assert!(r2.windows(11).any(|w| w == b"proto\r\n:2\r\n"));
    }

    #[test]
    fn info_becomes_verbatim_text_in_resp3() {
        let v = bulk_to_verbatim(Bytes::from_static(b"$11\r\n# Server\r\na\r\n"));
        assert_eq!(&v[..], b"=15\r\ntxt:# Server\r\na\r\n");
        let err = Bytes::from_static(b"-ERR x\r\n");
        assert_eq!(bulk_to_verbatim(err.clone()), err);
    }

    #[test]
    fn names_refuse_spaces_and_control_bytes() {
        assert!(valid_name(b"my-app:1"));
        assert!(valid_name(b""));
        assert!(!valid_name(b"my app"));
        assert!(!valid_name(b"a\nb"));
    }
}
