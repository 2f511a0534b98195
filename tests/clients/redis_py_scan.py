"""SCAN / KEYS / DBSIZE with redis-py 8.1 (sync, default options) against
twem or redis-server.

Usage: see common.py. The harness runs the proxy mode with THREE servers
and passes them as --backends, so the checks can compare what twem's SCAN
walks (one composite cursor over every server) with what each server holds.

Expected semantics (Redis's SCAN guarantees, kept across servers):
- scan_iter() returns every key of every server exactly once when nothing
  changes meanwhile, and ends (cursor 0);
- the cursor is what redis-py parses: it calls int() on it, so a composite
  cursor must be a decimal integer (any size: Python ints are unbounded);
- MATCH, COUNT and TYPE behave as on one server;
- keys present for the whole scan are returned at least once while other
  keys are added concurrently;
- KEYS returns the union of the servers' keys, DBSIZE their sum.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, start  # noqa: E402

a, run = start("redis_py_scan")

import redis  # noqa: E402

P = a.prefix
N = 3000


def client(host=a.host, port=a.port):
    return redis.Redis(host=host, port=port, socket_timeout=20)


def backends():
    return [client(h, p) for h, p in a.backend_hostports]


def expected():
    return {f"{P}:k:{i}".encode() for i in range(N)}


def t_fill():
    r = client()
    pipe = r.pipeline(transaction=False)
    for i in range(N):
        pipe.set(f"{P}:k:{i}", i)
    for i in range(20):
        pipe.hset(f"{P}:h:{i}", "f", i)
    check(all(pipe.execute()), "SET/HSET")
    if a.mode == "proxy" and len(a.backends) > 1:
        per = [b.dbsize() for b in backends()]
        check(all(n > 0 for n in per), "keys spread over every server", per)
        print(f"     keys per server: {per}", flush=True)
    # Let any incremental rehashing of the servers' tables finish: SCAN may
    # repeat a key across a shrinking rehash, never across a static table.
    time.sleep(0.3)


def t_scan_iter_match():
    r = client()
    got = list(r.scan_iter(match=f"{P}:k:*", count=100))
    check(len(got) == len(set(got)), "no key twice", len(got) - len(set(got)))
    check(set(got) == expected(), "every key once",
          len(got), sorted(expected() - set(got))[:5], sorted(set(got) - expected())[:5])


def t_scan_iter_all_vs_servers():
    r = client()
    got = list(r.scan_iter())  # no MATCH: every key of the servers
    on_servers = set()
    for b in backends():
        on_servers |= set(b.scan_iter(count=1000))
    check(len(got) == len(set(got)), "no key twice", len(got) - len(set(got)))
    check(set(got) == on_servers, "SCAN through twem = union of the servers' keys",
          len(got), len(on_servers))


def t_scan_cursor_loop():
    r = client()
    cursor, seen, calls = 0, [], 0
    while True:
        cursor, keys = r.scan(cursor, match=f"{P}:k:*", count=500)
        check(isinstance(cursor, int), "cursor parsed as an int", cursor)
        seen.extend(keys)
        calls += 1
        check(calls < 10_000, "SCAN ends")
        if cursor == 0:
            break
    check(len(seen) == N and set(seen) == expected(), "manual SCAN loop: every key once", len(seen))
    print(f"     {calls} SCAN calls with COUNT 500", flush=True)
    # An unknown cursor is not an error in Redis (it just walks from there);
    # cursor 0 always starts over.
    c0, k0 = r.scan(0, match=f"{P}:nomatch:*", count=10)
    check(isinstance(c0, int) and all(k.startswith(f"{P}:nomatch:".encode()) for k in k0),
          "SCAN 0 MATCH nothing", c0, k0)


def t_scan_type():
    r = client()
    got = list(r.scan_iter(match=f"{P}:*", _type="hash", count=200))
    want = {f"{P}:h:{i}".encode() for i in range(20)}
    check(len(got) == len(set(got)) and set(got) == want, "SCAN TYPE hash", len(got))


def t_keys_dbsize():
    r = client()
    got = r.keys(f"{P}:k:*")
    check(len(got) == N and set(got) == expected(), "KEYS pattern: every key once", len(got))
    total = sum(b.dbsize() for b in backends())
    check(r.dbsize() == total, "DBSIZE = sum over the servers", r.dbsize(), total)


def t_scan_while_adding():
    r, w = client(), client()
    stop = threading.Event()
    added = []
    errors = []

    def writer():
        i = 0
        try:
            while not stop.is_set():
                pipe = w.pipeline(transaction=False)
                for j in range(20):
                    pipe.set(f"{P}:new:{i}", j)
                    added.append(f"{P}:new:{i}".encode())
                    i += 1
                pipe.execute()
                time.sleep(0.002)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.05)
        got = list(r.scan_iter(match=f"{P}:*", count=20))
    finally:
        stop.set()
        t.join(10)
    check(not errors, "writer errors", errors)
    missing = expected() - set(got)
    check(not missing, "every key present all along returned at least once",
          len(missing), sorted(missing)[:5])
    new_seen = sum(1 for k in set(got) if k.startswith(f"{P}:new:".encode()))
    print(f"     scanned {len(got)} keys ({len(got) - len(set(got))} repeats) while "
          f"{len(added)} keys were added ({new_seen} of them seen)", flush=True)
    stray = {k for k in got if not k.startswith(f"{P}:".encode())}
    check(not stray, "MATCH honoured", sorted(stray)[:5])


run.run_all(globals())
