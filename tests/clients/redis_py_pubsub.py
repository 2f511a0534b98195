"""redis-py 8.1 pub/sub (sync, plus a few asyncio checks) against twem or
redis-server, at default options: RESP3, so subscribe confirmations and
messages arrive as push frames (`>3 subscribe ch 1`, `>3 message ch data`,
`>4 pmessage pat ch data`, `>3 smessage ch data`).

Usage: see common.py. In proxy mode the channels are built from the --cross
keys with the pool's `{}` hash tag (`{KEY_A}:c1` lives where KEY_A lives), so
one subscriber listens on channels of BOTH servers and twem must merge the
two backends' messages into one client stream, with Redis's per-client
subscription counts. TWEM_NO_HIREDIS=1 runs it with redis-py's own parser.

What the checks expect (Redis 7.0 semantics, as redis-py reports them):
- SUBSCRIBE a b c -> one confirmation per channel, in order, counts 1, 2, 3
  (the client's total of channels + patterns, not a per-server count);
- PUBLISH through another connection returns the number of receivers and
  the message arrives within 1 s; per channel, messages keep their order;
- PSUBSCRIBE pattern matches channels on every server, each message once;
- UNSUBSCRIBE (no args) confirms every channel, counts going down to 0;
- after that the same connection serves ordinary commands again;
- SSUBSCRIBE/SPUBLISH (sharded, one channel per command) and smessage.
"""

import asyncio
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, start  # noqa: E402

a, run = start("redis_py_pubsub", parser_in_name=True)

import redis  # noqa: E402
import redis.asyncio  # noqa: E402

P = a.prefix

# Channels: on server 0 (S0a, S0b) and server 1 (S1) in proxy mode.
if a.mode == "proxy":
    TAG0, TAG1 = "{" + a.cross[0] + "}", "{" + a.cross[1] + "}"
else:
    TAG0, TAG1 = "{" + P + "x}", "{" + P + "y}"

# How long a published message may take to arrive.
DELIVERY = 1.0


def ch(tag, name):
    return f"{tag}:{P}:{name}".encode()


def client(**kw):
    return redis.Redis(host=a.host, port=a.port, socket_timeout=20, **kw)


def next_message(p, what, timeout=DELIVERY):
    """The next message (subscribe confirmations included) within timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        check(left > 0, f"{what}: nothing within {timeout}s")
        m = p.get_message(timeout=left)
        if m is not None:
            return m


def strip(m):
    return (m["type"], m["pattern"], m["channel"], m["data"])


def t_subscribe_counts():
    r = client()
    p = r.pubsub()
    c = [ch(TAG0, "a"), ch(TAG0, "b"), ch(TAG1, "c")]
    p.subscribe(*c)
    got = [strip(next_message(p, f"confirmation {i}")) for i in range(3)]
    want = [("subscribe", None, c[0], 1), ("subscribe", None, c[1], 2),
            ("subscribe", None, c[2], 3)]
    check(got == want, "SUBSCRIBE a b c: confirmations in order, counts 1 2 3", got)
    check(p.subscribed, "pubsub.subscribed")
    # A channel already subscribed: Redis confirms it again, count unchanged.
    p.subscribe(c[2])
    got = strip(next_message(p, "re-subscribe"))
    check(got == ("subscribe", None, c[2], 3), "SUBSCRIBE again keeps the count", got)
    check(p.get_message(timeout=0.2) is None, "nothing else pending")
    p.close()


def t_publish_get_message():
    r, pub = client(), client()
    p = r.pubsub(ignore_subscribe_messages=True)
    c = [ch(TAG0, "m0"), ch(TAG1, "m1")]
    p.subscribe(*c)
    # Drain the confirmations (ignored: get_message returns None for them).
    for _ in range(2):
        p.get_message(timeout=DELIVERY)
    worst = 0.0
    for i in range(10):
        target = c[i % 2]
        t0 = time.monotonic()
        n = pub.publish(target, f"hello {i}")
        check(n == 1, f"PUBLISH {target!r} reaches 1 subscriber", n)
        m = next_message(p, f"message {i}")
        worst = max(worst, time.monotonic() - t0)
        check(strip(m) == ("message", None, target, f"hello {i}".encode()),
              f"message {i}", m)
    print(f"     slowest publish->get_message: {worst * 1000:.1f} ms", flush=True)
    check(p.get_message(timeout=0.2) is None, "no extra message")
    check(pub.publish(ch(TAG1, "nobody"), "x") == 0, "PUBLISH to no subscriber returns 0")
    p.close()


def t_order_two_servers():
    """Messages from both servers merged; each channel's order kept."""
    r, pub = client(), client()
    p = r.pubsub(ignore_subscribe_messages=True)
    c = [ch(TAG0, "o0"), ch(TAG0, "o1"), ch(TAG1, "o2")]
    p.subscribe(*c)
    pipe = pub.pipeline(transaction=False)
    n = 60
    for i in range(n):
        pipe.publish(c[i % 3], str(i))
    # The subscription is certainly in place once the confirmations arrived.
    confirmations = 0
    while confirmations < 3:
        m = p.parse_response(block=False, timeout=DELIVERY)
        check(m is not None, "confirmation within 1 s")
        confirmations += 1
    counts = pipe.execute()
    check(counts == [1] * n, "every PUBLISH reaches one subscriber", counts)
    got = {x: [] for x in c}
    t0 = time.monotonic()
    for _ in range(n):
        m = next_message(p, "pipelined messages", timeout=max(0.1, 3.0 - (time.monotonic() - t0)))
        got[m["channel"]].append(int(m["data"]))
    for j, x in enumerate(c):
        check(got[x] == list(range(j, n, 3)), f"order on {x!r}", got[x])
    p.close()


def t_listen():
    r, pub = client(), client()
    p = r.pubsub()
    c = [ch(TAG0, "l0"), ch(TAG1, "l1")]
    p.subscribe(*c)
    seen, ready, errors = [], threading.Event(), []

    def reader():
        try:
            for m in p.listen():
                seen.append(strip(m))
                if m["type"] == "subscribe" and m["data"] == 2:
                    ready.set()
                if m["type"] == "message" and m["data"] == b"stop":
                    return
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
            ready.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    check(ready.wait(DELIVERY * 3), "listen() yields both confirmations")
    check(not errors, "listen() raised", errors)
    pub.publish(c[0], "one")
    pub.publish(c[1], "two")
    # c[0] and c[1] live on different servers: the proxy keeps each
    # server's order, not an order between servers, so "stop" is sent once
    # "one" (the other server's) has arrived.
    deadline = time.monotonic() + DELIVERY * 3
    while ("message", None, c[0], b"one") not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    pub.publish(c[1], "stop")
    t.join(DELIVERY * 3)
    check(not t.is_alive(), "listen() got the stop message within 3 s", seen)
    head = [("subscribe", None, c[0], 1), ("subscribe", None, c[1], 2)]
    check(seen[:2] == head, "listen() yields the confirmations first, in order", seen)
    msgs = seen[2:]
    check(sorted(msgs[:2]) == sorted([("message", None, c[0], b"one"),
                                      ("message", None, c[1], b"two")]),
          "listen() yields both messages", seen)
    check(msgs[2:] == [("message", None, c[1], b"stop")], "then stop (after two on its server)", seen)
    p.close()


def t_psubscribe():
    r, pub = client(), client()
    p = r.pubsub()
    pat = f"{P}:news:*".encode()
    # Channels matching the pattern, one on each server (the hash tag is the
    # first {...}, the pattern itself has none).
    c0, c1 = f"{P}:news:{TAG0}".encode(), f"{P}:news:{TAG1}".encode()
    p.psubscribe(pat)
    got = strip(next_message(p, "psubscribe confirmation"))
    check(got == ("psubscribe", None, pat, 1), "PSUBSCRIBE confirmation, count 1", got)
    plain = ch(TAG1, "plain")
    p.subscribe(plain)
    got = strip(next_message(p, "subscribe confirmation"))
    check(got == ("subscribe", None, plain, 2),
          "SUBSCRIBE after PSUBSCRIBE counts patterns too: 2", got)
    for i, c in enumerate([c0, c1, c0]):
        n = pub.publish(c, f"n{i}")
        check(n == 1, f"PUBLISH {c!r} reaches the pattern subscriber once", n)
        m = next_message(p, f"pmessage {i}")
        check(strip(m) == ("pmessage", pat, c, f"n{i}".encode()), f"pmessage {i}", m)
    check(pub.publish(f"{P}:other:{TAG0}", "x") == 0, "non-matching channel: 0 receivers")
    check(p.get_message(timeout=0.2) is None, "each message delivered once")
    p.punsubscribe(pat)
    got = strip(next_message(p, "punsubscribe confirmation"))
    check(got == ("punsubscribe", None, pat, 1), "PUNSUBSCRIBE: count back to 1", got)
    check(pub.publish(c0, "late") == 0, "after PUNSUBSCRIBE: 0 receivers")
    check(p.get_message(timeout=0.2) is None, "nothing after PUNSUBSCRIBE")
    p.close()


def t_unsubscribe():
    r, pub = client(), client()
    p = r.pubsub()
    c = [ch(TAG0, "u0"), ch(TAG0, "u1"), ch(TAG1, "u2")]
    p.subscribe(*c)
    for _ in range(3):
        next_message(p, "confirmation")
    p.unsubscribe(c[0])
    got = strip(next_message(p, "unsubscribe one"))
    check(got == ("unsubscribe", None, c[0], 2), "UNSUBSCRIBE one: count 2", got)
    check(pub.publish(c[0], "gone") == 0, "unsubscribed channel: 0 receivers")
    check(pub.publish(c[2], "still") == 1, "other server's channel still subscribed")
    m = next_message(p, "message after partial unsubscribe")
    check(strip(m) == ("message", None, c[2], b"still"), "message on the other channel", m)
    p.unsubscribe()  # all
    got = [strip(next_message(p, f"unsubscribe-all {i}")) for i in range(2)]
    check(sorted(x[2] for x in got) == sorted(c[1:]) and all(x[0] == "unsubscribe" for x in got),
          "UNSUBSCRIBE (all) confirms each remaining channel", got)
    check([x[3] for x in got] == [1, 0], "counts go down to 0", got)
    check(not p.subscribed, "pubsub.subscribed is False")
    check(pub.publish(c[1], "x") + pub.publish(c[2], "x") == 0, "no receivers left")

    # The same connection serves ordinary commands again.
    k = f"{TAG1}:{P}:after"
    p.execute_command("SET", k, "v")
    check(p.parse_response(block=False, timeout=DELIVERY) in (b"OK", "OK", True),
          "SET on the connection after unsubscribing")
    p.execute_command("GET", k)
    got = p.parse_response(block=False, timeout=DELIVERY)
    check(got == b"v", "GET on the connection after unsubscribing", got)
    check(pub.get(k) == b"v", "the key is where other clients find it")
    p.close()


def t_two_subscribers():
    r, pub = client(), client()
    ps = [r.pubsub(ignore_subscribe_messages=True) for _ in range(2)]
    c = ch(TAG1, "both")
    for p in ps:
        p.subscribe(c)
        p.get_message(timeout=DELIVERY)
    check(pub.publish(c, "hi") == 2, "PUBLISH reaches both subscribers")
    for i, p in enumerate(ps):
        m = next_message(p, f"subscriber {i}")
        check(strip(m) == ("message", None, c, b"hi"), f"subscriber {i} got it", m)
        p.close()


def t_ping_subscribed():
    r = client()
    p = r.pubsub()
    p.subscribe(ch(TAG0, "ping"))
    next_message(p, "confirmation")
    p.ping()
    m = next_message(p, "PING reply while subscribed")
    check(m["type"] == "pong", "PING while subscribed gives a pong", m)
    p.close()


def t_ssubscribe():
    r, pub = client(), client()
    p = r.pubsub()
    s0, s1 = ch(TAG0, "s0"), ch(TAG1, "s1")
    # One channel per command: several channels in one SSUBSCRIBE must hash
    # to one slot in a cluster, and twem may refuse channels of two servers.
    p.ssubscribe(s0)
    p.ssubscribe(s1)
    got = [strip(next_message(p, f"ssubscribe {i}")) for i in range(2)]
    check(got == [("ssubscribe", None, s0, 1), ("ssubscribe", None, s1, 2)],
          "SSUBSCRIBE confirmations, counts 1 2", got)
    for c in (s0, s1):
        n = pub.spublish(c, b"sharded")
        check(n == 1, f"SPUBLISH {c!r} reaches 1", n)
        m = next_message(p, "smessage")
        check(strip(m) == ("smessage", None, c, b"sharded"), "smessage", m)
    p.sunsubscribe(s0)
    got = strip(next_message(p, "sunsubscribe"))
    check(got == ("sunsubscribe", None, s0, 1), "SUNSUBSCRIBE: count 1", got)
    check(pub.spublish(s0, b"x") == 0, "after SUNSUBSCRIBE: 0 receivers")
    p.close()


def t_resp2_subscribed_mode():
    """protocol=2 (not the default): the RESP2 subscribed state, where Redis
    refuses ordinary commands until the last UNSUBSCRIBE."""
    r, pub = client(protocol=2), client()
    p = r.pubsub()
    c = [ch(TAG0, "r0"), ch(TAG1, "r1")]
    p.subscribe(*c)
    got = [strip(next_message(p, f"confirmation {i}")) for i in range(2)]
    check(got == [("subscribe", None, c[0], 1), ("subscribe", None, c[1], 2)],
          "RESP2 SUBSCRIBE confirmations", got)
    check(pub.publish(c[1], "m") == 1, "PUBLISH reaches the RESP2 subscriber")
    m = next_message(p, "RESP2 message")
    check(strip(m) == ("message", None, c[1], b"m"), "RESP2 message", m)
    p.execute_command("GET", f"{TAG0}:{P}:r")
    try:
        got = p.parse_response(block=False, timeout=DELIVERY)
        raise AssertionError(f"GET while subscribed (RESP2) should be an error, got {got!r}")
    except redis.ResponseError:
        pass
    p.unsubscribe()
    got = [strip(next_message(p, f"unsubscribe {i}")) for i in range(2)]
    check([x[3] for x in got] == [1, 0], "RESP2 UNSUBSCRIBE counts 1 0", got)
    p.execute_command("PING")
    got = p.parse_response(block=False, timeout=DELIVERY)
    check(got in (b"PONG", "PONG", True), "plain PONG after leaving subscribed mode", got)
    p.close()


def t_asyncio():
    async def two_messages(p):
        # The next two messages (confirmations), waiting at most 2 x DELIVERY.
        got = []
        deadline = time.monotonic() + DELIVERY * 2
        while len(got) < 2 and time.monotonic() < deadline:
            m = await p.get_message(timeout=DELIVERY)
            if m:
                got.append(strip(m))
        return got

    async def main():
        r = redis.asyncio.Redis(host=a.host, port=a.port, socket_timeout=20)
        pub = redis.asyncio.Redis(host=a.host, port=a.port, socket_timeout=20)
        try:
            p = r.pubsub()
            c = [ch(TAG0, "as0"), ch(TAG1, "as1")]
            await p.subscribe(*c)
            got = await two_messages(p)
            check(got == [("subscribe", None, c[0], 1), ("subscribe", None, c[1], 2)],
                  "asyncio confirmations", got)
            for i, x in enumerate([c[1], c[0]]):
                check(await pub.publish(x, f"a{i}") == 1, "asyncio PUBLISH reaches 1")
                m = await p.get_message(timeout=DELIVERY)
                check(m is not None and strip(m) == ("message", None, x, f"a{i}".encode()),
                      f"asyncio message {i}", m)
            await p.unsubscribe()
            got = await two_messages(p)
            check(sorted(x[3] for x in got) == [0, 1], "asyncio unsubscribe counts", got)
            await p.aclose()
        finally:
            await r.aclose()
            await pub.aclose()

    asyncio.run(main())


run.run_all(globals())
