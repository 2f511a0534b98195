//! Pub/sub through twem against two real redis-server shards: channels
//! placed like keys so PUBLISH meets its subscribers, one subscription
//! connection per server, confirmations with the client's own counts, a
//! pattern confirmed once, RESP2 subscriber-mode rules and RESP3 pushes, a
//! lost subscription connection ending the client's connection with an
//! error, and no connection left behind by a subscriber that leaves.

use std::thread;
use std::time::{Duration, Instant};

use twem_tests::{resp_cmd, Client, Shards};

/// Two shards behind twem (1 s timeout) that also serves `/metrics`.
fn setup() -> Shards {
    Shards::start_with_metrics(2, "  timeout: 1000\n")
}

/// twem's `/metrics` page, the whole response.
fn scrape(t: &Shards) -> String {
    twem_tests::scrape_metrics(t.metrics.expect("metrics port"))
}

/// A client of `t` that sent `cmd` (a SUBSCRIBE) and read one
/// confirmation per channel.
fn subscribed(t: &Shards, cmd: &[&[u8]]) -> Client {
    let mut c = t.client();
    c.send_cmd(cmd);
    for _ in 1..cmd.len() {
        c.read_resp();
    }
    c
}

fn array(items: &[&[u8]], count: Option<i64>) -> Vec<u8> {
    let n = items.len() + usize::from(count.is_some());
    let mut v = format!("*{n}\r\n").into_bytes();
    for i in items {
        v.extend(format!("${}\r\n", i.len()).into_bytes());
        v.extend_from_slice(i);
        v.extend_from_slice(b"\r\n");
    }
    if let Some(c) = count {
        v.extend(format!(":{c}\r\n").into_bytes());
    }
    v
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn messages_meet_subscribers_across_servers_with_redis_counts() {
    let t = setup();
    let (a, b) = (t.key(0, "news"), t.key(1, "sport"));
    let mut sub = t.client();
    sub.send_cmd(&[b"SUBSCRIBE", a.as_bytes(), b.as_bytes()]);
    let first = sub.read_resp();
    let second = sub.read_resp();
    // One confirmation per channel, the count the client's own total.
    let mut got = vec![first.clone(), second.clone()];
    got.sort();
    let mut want = vec![
        array(
            &[b"subscribe", a.as_bytes()],
            Some(if first.windows(a.len()).any(|w| w == a.as_bytes()) {
                1
            } else {
                2
            }),
        ),
        array(
            &[b"subscribe", b.as_bytes()],
            Some(if first.windows(a.len()).any(|w| w == a.as_bytes()) {
                2
            } else {
                1
            }),
        ),
    ];
    want.sort();
    assert_eq!(got, want, "{} {}", s(&first), s(&second));
    sub.send_cmd(&[b"PSUBSCRIBE", b"sp*"]);
    // Every server confirms the pattern; the client reads it once.
    assert_eq!(sub.read_resp(), array(&[b"psubscribe", b"sp*"], Some(3)));
    // Subscriber mode: only the subscription commands and PING.
    assert!(sub
        .cmd(&[b"GET", b"x"])
        .starts_with(b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE"));
    assert_eq!(sub.cmd(&[b"PING"]), array(&[b"pong", b""], None));
    // PUBLISH through the proxy reaches the subscriber, from both servers.
    let mut p = t.client();
    assert_eq!(p.cmd(&[b"PUBLISH", a.as_bytes(), b"m1"]), b":1\r\n");
    let started = Instant::now();
    assert_eq!(
        sub.read_resp(),
        array(&[b"message", a.as_bytes(), b"m1"], None)
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // b matches the pattern too (if it starts with "sp"): two receivers.
    let n = p.cmd(&[b"PUBLISH", b.as_bytes(), b"m2"]);
    assert_eq!(
        n,
        if b.starts_with("sp") {
            b":2\r\n".to_vec()
        } else {
            b":1\r\n".to_vec()
        }
    );
    assert_eq!(
        sub.read_resp(),
        array(&[b"message", b.as_bytes(), b"m2"], None)
    );
    if b.starts_with("sp") {
        assert_eq!(
            sub.read_resp(),
            array(&[b"pmessage", b"sp*", b.as_bytes(), b"m2"], None)
        );
    }
    // A channel on either server matched by the pattern.
    let pat_a = t.key(0, "spx");
    let pat_b = t.key(1, "spy");
    for ch in [&pat_a, &pat_b] {
        assert_eq!(p.cmd(&[b"PUBLISH", ch.as_bytes(), b"p"]), b":1\r\n");
        assert_eq!(
            sub.read_resp(),
            array(&[b"pmessage", b"sp*", ch.as_bytes(), b"p"], None)
        );
    }
    // Unsubscribing everything: one confirmation per channel, counts down.
    sub.send_cmd(&[b"UNSUBSCRIBE"]);
    let (u1, u2) = (sub.read_resp(), sub.read_resp());
    assert!(
        s(&u1).ends_with(":2\r\n") && s(&u2).ends_with(":1\r\n"),
        "{} {}",
        s(&u1),
        s(&u2)
    );
    sub.send_cmd(&[b"PUNSUBSCRIBE"]);
    assert_eq!(sub.read_resp(), array(&[b"punsubscribe", b"sp*"], Some(0)));
    // Out of subscriber mode: commands again.
    assert_eq!(sub.cmd(&[b"SET", a.as_bytes(), b"v"]), b"+OK\r\n");
    // Unsubscribing with nothing subscribed: Redis's one nil confirmation.
    assert_eq!(
        sub.cmd(&[b"UNSUBSCRIBE"]),
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
    );
    sub.assert_nothing_pending("after unsubscribing");
}

#[test]
fn resp3_subscribers_get_pushes_and_keep_their_commands() {
    let t = setup();
    let ch = t.key(1, "r3");
    let mut sub = t.client();
    assert!(sub.cmds("HELLO 3").starts_with(b"%7\r\n"));
    assert_eq!(
        sub.cmd(&[b"SUBSCRIBE", ch.as_bytes()]),
        format!(">3\r\n$9\r\nsubscribe\r\n${}\r\n{ch}\r\n:1\r\n", ch.len()).into_bytes()
    );
    // RESP3 clients may go on with commands while subscribed.
    assert_eq!(sub.cmd(&[b"SET", ch.as_bytes(), b"v"]), b"+OK\r\n");
    let mut p = t.client();
    assert_eq!(p.cmd(&[b"PUBLISH", ch.as_bytes(), b"hi"]), b":1\r\n");
    assert_eq!(
        sub.read_resp(),
        format!(
            ">3\r\n$7\r\nmessage\r\n${}\r\n{ch}\r\n$2\r\nhi\r\n",
            ch.len()
        )
        .into_bytes()
    );
    // SSUBSCRIBE / SPUBLISH: shard channels, placed the same way.
    assert_eq!(
        sub.cmd(&[b"SSUBSCRIBE", ch.as_bytes()]),
        format!(">3\r\n$10\r\nssubscribe\r\n${}\r\n{ch}\r\n:1\r\n", ch.len()).into_bytes()
    );
    assert_eq!(p.cmd(&[b"SPUBLISH", ch.as_bytes(), b"s"]), b":1\r\n");
    assert_eq!(
        sub.read_resp(),
        format!(
            ">3\r\n$8\r\nsmessage\r\n${}\r\n{ch}\r\n$1\r\ns\r\n",
            ch.len()
        )
        .into_bytes()
    );
}

#[test]
fn a_lost_subscription_connection_ends_the_client_with_an_error() {
    let t = setup();
    let ch = t.key(0, "lost");
    let mut sub = t.client();
    sub.send_cmd(&[b"SUBSCRIBE", ch.as_bytes()]);
    assert!(sub.read_resp().ends_with(b":1\r\n"));
    // The server drops its pub/sub clients (the proxy's connection).
    let killed = t.shards[0].client().cmds("CLIENT KILL TYPE pubsub");
    assert_eq!(killed, b":1\r\n");
    let err = sub.read_resp();
    assert!(
        err.starts_with(b"-ERR twem: the subscription connection to server shard0 ended"),
        "{}",
        s(&err)
    );
    assert!(
        sub.is_closed(),
        "the client must see its subscriptions are gone"
    );
}

#[test]
fn subscribers_that_leave_leave_no_connection_behind() {
    let t = setup();
    let mut c = t.client();
    assert_eq!(c.cmds("PING"), b"+PONG\r\n");
    let base = (t.connected(0), t.connected(1));
    let (a, b) = (t.key(0, "x"), t.key(1, "y"));
    for round in 0..10 {
        let mut subs: Vec<Client> = (0..4)
            .map(|_| {
                let mut s = t.client();
                s.send(&resp_cmd(&[b"SUBSCRIBE", a.as_bytes(), b.as_bytes()]));
                s.read_resp();
                s.read_resp();
                s
            })
            .collect();
        if round == 0 {
            assert_eq!(t.connected(0), base.0 + 4);
            assert_eq!(t.connected(1), base.1 + 4);
            let m = scrape(&t);
            assert!(
                m.contains("twem_server_dedicated_connections{pool=\"alpha\",server=\"shard0\"} 4"),
                "{m}"
            );
        }
        subs.clear();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while (t.connected(0), t.connected(1)) != base {
        assert!(
            Instant::now() < deadline,
            "subscription connections left: {:?} vs {base:?}",
            (t.connected(0), t.connected(1))
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pubsub_introspection_sums_the_servers() {
    let t = setup();
    let (a, b) = (t.key(0, "ia"), t.key(1, "ib"));
    let _s1 = subscribed(&t, &[b"SUBSCRIBE", a.as_bytes(), b.as_bytes()]);
    let mut s2 = subscribed(&t, &[b"SUBSCRIBE", b.as_bytes()]);
    s2.send_cmd(&[b"PSUBSCRIBE", b"i*"]);
    s2.read_resp();
    let mut c = t.client();
    let chans = c.cmd(&[b"PUBSUB", b"CHANNELS"]);
    assert!(chans.starts_with(b"*2\r\n"), "{}", s(&chans));
    assert!(
        s(&chans).contains(&a) && s(&chans).contains(&b),
        "{}",
        s(&chans)
    );
    assert_eq!(
        c.cmd(&[b"PUBSUB", b"NUMSUB", a.as_bytes(), b.as_bytes(), b"none"]),
        format!(
            "*6\r\n${}\r\n{a}\r\n:1\r\n${}\r\n{b}\r\n:2\r\n$4\r\nnone\r\n:0\r\n",
            a.len(),
            b.len()
        )
        .into_bytes()
    );
    // The pattern is on both servers; the client subscribed to it once.
    assert_eq!(c.cmd(&[b"PUBSUB", b"NUMPAT"]), b":1\r\n");
}
