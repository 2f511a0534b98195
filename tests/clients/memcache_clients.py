"""pymemcache 4.0 and python-memcached 1.62 against twem (a memcached pool)
or memcached itself, at their default options.

Usage: see common.py (the target is memcached, or twem in front of two
memcached servers, which the harness passes as --backends; --cross names
two keys on different servers).

What the libraries send and expect (see HANDSHAKES.md, memcached section):
- pymemcache `stats()` sends `stats\\r\\n`, takes `STAT name value` lines up
  to `END` into a dict of bytes names, values converted to int unless
  listed as bytes/float/bool (version, rusage_*...); any other line raises
  MemcacheUnknownError. pymemcache's default is noreply=True: set/touch/
  flush_all are sent with `noreply` and their replies never read.
- python-memcached `get_stats()` sends `stats\\r\\n` to each server it knows
  (here: one, the proxy) and splits each line up to `END` with
  `line.split(' ', 2)`: any line of fewer than three words (e.g. `ERROR`)
  raises IndexError. It returns [("host:port (weight)", {name: str})].
- In proxy mode twem answers `stats` itself with the servers' counters
  summed (curr_items, total_items, ...), and `flush_all` goes to every
  server.
- pymemcache 4.0 has no gat() method: the gat check drives its protocol
  code with `_fetch_cmd(b"gat", [exptime, key])`, which sends
  `gat <exptime> <key>` and parses the VALUE/END reply like a get.
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, start  # noqa: E402

a, run = start("memcache_clients")

import memcache  # noqa: E402  (python-memcached)
from pymemcache.client.base import Client as PyMemcache  # noqa: E402

P = a.prefix

if a.mode == "proxy":
    KA, KB = a.cross
else:
    KA, KB = f"{P}:a", f"{P}:b"


def pym(host=a.host, port=a.port, **kw):
    return PyMemcache((host, port), connect_timeout=5, timeout=10, **kw)


def pmc():
    return memcache.Client([f"{a.host}:{a.port}"], socket_timeout=10)


def backend_stats():
    return [pym(h, p).stats() for h, p in a.backend_hostports]


def t_pymemcache_set_get():
    c = pym()
    check(c.set(f"{KA}:v", b"one") is True, "set (noreply by default)")
    check(c.set(f"{KB}:v", b"two", noreply=False) is True, "set noreply=False: STORED")
    check(c.get(f"{KA}:v") == b"one", "get", c.get(f"{KA}:v"))
    check(c.get(f"{P}:missing") is None, "get missing is None")
    check(c.add(f"{KA}:v", b"x", noreply=False) is False, "add existing: NOT_STORED")
    check(c.incr(f"{KB}:n", 1) is None, "incr missing: None (NOT_FOUND)")
    c.set(f"{KB}:n", b"10", noreply=False)
    check(c.incr(f"{KB}:n", 5) == 15, "incr", c.get(f"{KB}:n"))
    v, cas = c.gets(f"{KA}:v")
    check(v == b"one" and cas is not None, "gets", v, cas)
    check(c.cas(f"{KA}:v", b"uno", cas, noreply=False) is True, "cas with the current token")
    check(c.cas(f"{KA}:v", b"dos", cas, noreply=False) is False, "cas with a stale token: EXISTS")
    check(c.get(f"{KA}:v") == b"uno", "value after cas")


def t_pymemcache_multi_get():
    c = pym()
    keys = [f"{KA}:m{i}" for i in range(5)] + [f"{KB}:m{i}" for i in range(5)]
    for k in keys:
        c.set(k, k.encode(), noreply=False)
    got = c.get_many(keys + [f"{P}:nope1", f"{P}:nope2"])
    check(got == {k: k.encode() for k in keys}, "get_many over both servers", got)
    got = c.gets_many(keys[:2] + keys[-2:])
    check(sorted(got) == sorted(keys[:2] + keys[-2:]) and all(v[0] == k.encode() for k, v in
                                                              got.items()),
          "gets_many over both servers", got)


def t_pymemcache_stats():
    c = pym()
    for i in range(30):
        c.set(f"{P}:st{i}", b"x", noreply=False)
    s = c.stats()
    check(isinstance(s, dict), "stats() is a dict", type(s))
    for name in (b"curr_items", b"total_items", b"cmd_get", b"cmd_set", b"get_hits",
                 b"get_misses", b"curr_connections", b"bytes"):
        check(isinstance(s.get(name), int), f"stats {name!r} is an int", s.get(name))
    check(isinstance(s.get(b"version"), bytes), "stats version is bytes", s.get(b"version"))
    check(s[b"curr_items"] >= 30, "curr_items counts what was set", s[b"curr_items"])
    per = backend_stats()
    for name in (b"curr_items", b"total_items"):
        total = sum(b[name] for b in per)
        check(s[name] == total, f"{name!r} = the sum over the servers",
              s[name], [b[name] for b in per])
    check(s[b"cmd_set"] >= 30 and s[b"cmd_set"] <= sum(b[b"cmd_set"] for b in per),
          "cmd_set within the servers' sum", s[b"cmd_set"])
    if a.mode == "proxy":
        # `stats <sub>` is per server: the proxy refuses it with one
        # SERVER_ERROR line (issue #14), which pymemcache raises.
        from pymemcache.exceptions import MemcacheServerError
        try:
            c.stats("settings")
        except MemcacheServerError as e:
            check("only the general 'stats'" in str(e), "stats settings refused, saying why", str(e))
        else:
            raise AssertionError("stats settings through the proxy: expected SERVER_ERROR")
        check(c.get(f"{P}:st0") == b"x", "connection usable after the refusal")
    else:
        settings = c.stats("settings")
        check(isinstance(settings, dict), "stats settings gives a dict", settings)


def t_python_memcached():
    c = pmc()
    check(c.set(f"{KA}:pm", "alpha") is True, "set")
    check(c.set(f"{KB}:pm", 42) is True, "set an int")
    check(c.get(f"{KA}:pm") == "alpha", "get str", c.get(f"{KA}:pm"))
    check(c.get(f"{KB}:pm") == 42, "get int", c.get(f"{KB}:pm"))
    got = c.get_multi([f"{KA}:pm", f"{KB}:pm", f"{P}:none"])
    check(got == {f"{KA}:pm": "alpha", f"{KB}:pm": 42}, "get_multi over both servers", got)
    check(c.delete(f"{KB}:pm") == 1, "delete")
    check(c.get(f"{KB}:pm") is None, "deleted")
    check(c.touch(f"{KA}:pm", 100) == 1, "touch")


def t_python_memcached_stats():
    c = pmc()
    t0 = time.monotonic()
    got = c.get_stats()
    took = time.monotonic() - t0
    check(isinstance(got, list) and len(got) == 1, "get_stats: one (server, dict)", got)
    name, d = got[0]
    check(name == f"{a.host}:{a.port} (1)", "server name", name)
    check(isinstance(d, dict) and d, "a non-empty dict", d)
    check(took < 2.0, "answered at once (no read timeout)", took)
    for k in ("curr_items", "total_items", "version", "pid", "uptime"):
        check(k in d, f"get_stats has {k}", sorted(d)[:20])
    check(d["curr_items"].isdigit(), "curr_items is a number", d["curr_items"])
    total = sum(b[b"curr_items"] for b in backend_stats())
    check(int(d["curr_items"]) == total, "curr_items = the sum over the servers",
          d["curr_items"], total)


def gat(c, key, exptime):
    """gat <exptime> <key>: pymemcache's get parser, the gat verb."""
    got = c._fetch_cmd(b"gat", [str(exptime), key], False)
    return got.get(key)


def t_gat():
    c = pym()
    for k in (f"{KA}:g", f"{KB}:g"):
        c.set(k, b"value", expire=0, noreply=False)
        check(gat(c, k, 100) == b"value", f"gat 100 {k}")
        check(c.get(k) == b"value", "still there after gat 100")
        check(gat(c, k, -1) == b"value", "gat -1 returns the value")
        check(c.get(k) is None, "gat -1 expired it", c.get(k))
    check(gat(c, f"{P}:gnone", 10) is None, "gat on a missing key")
    check(c.touch(f"{P}:gnone", 10, noreply=False) is False, "touch missing: NOT_FOUND")


def t_flush_all():
    c = pym()
    ks = [f"{KA}:f", f"{KB}:f"]
    for k in ks:
        c.set(k, b"x", noreply=False)
    check(c.flush_all(noreply=False) is True, "flush_all: OK")
    check(c.get_many(ks) == {}, "everything gone", c.get_many(ks))
    for h, p in a.backend_hostports:
        check(pym(h, p).get_many(ks) == {}, f"gone on {h}:{p} too")
    c.set(ks[0], b"y", noreply=False)
    check(c.flush_all() is True, "flush_all with noreply (pymemcache's default)")
    check(c.get(ks[0]) is None, "gone after a noreply flush_all")
    m = pmc()
    m.set(ks[1], "z")
    m.flush_all()
    check(m.get(ks[1]) is None, "python-memcached flush_all")
    check(c.set(ks[0], b"after", noreply=False) and c.get(ks[0]) == b"after",
          "usable after flush_all")


def t_version():
    c = pym()
    v = c.version()
    check(isinstance(v, bytes) and v, "version()", v)


def t_stats_raw_shape():
    """The raw `stats` reply: STAT lines of three words, then END."""
    s = socket.create_connection((a.host, a.port), timeout=5)
    s.sendall(b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        chunk = s.recv(65536)
        check(chunk, "connection open until END")
        buf += chunk
    s.close()
    lines = buf.split(b"\r\n")[:-2]
    bad = [x for x in lines if not x.startswith(b"STAT ") or len(x.split(b" ", 2)) != 3]
    check(not bad, "every line is STAT name value", bad[:3])
    names = [x.split(b" ")[1] for x in lines]
    check(len(names) == len(set(names)), "no name twice", len(names))


run.run_all(globals())
