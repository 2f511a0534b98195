"""redis-py 8.1 (sync API) at its default options against twem or redis-server.

Usage: see common.py. TWEM_NO_HIREDIS=1 runs it with redis-py's own parser.
"""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (check, check_pipeline_1000, diag_resp2,  # noqa: E402
                    expect_error, lua_set_incr, proxy_only,
                    queue_pipeline_1000, start)

a, run = start("redis_py_sync", parser_in_name=True)

import redis  # noqa: E402
import redis.utils  # noqa: E402

P, T = a.prefix, a.tag


def client(**kw):
    # Default options: RESP3 (redis-py 8's default), no decode_responses.
    if diag_resp2():
        kw["protocol"] = 2
    return redis.Redis(host=a.host, port=a.port, socket_timeout=20, **kw)


def pairs(z):
    """zrange withscores: RESP2 gives (member, score) tuples, RESP3 lists."""
    return [(m, s) for m, s in z]


def t_connect():
    want = os.environ.get("TWEM_NO_HIREDIS") != "1"
    check(redis.utils.HIREDIS_AVAILABLE == want, "hiredis in use as asked",
          redis.utils.HIREDIS_AVAILABLE)
    r = client()
    check(r.ping() is True, "PING")
    conn = r.connection_pool.get_connection()
    try:
        check(conn.protocol == 3, "default protocol is RESP3", conn.protocol)
        meta = conn.handshake_metadata or {}
        check(meta.get(b"proto", meta.get("proto")) == 3, "HELLO reply has proto 3", meta)
    finally:
        r.connection_pool.release(conn)


def t_strings():
    r = client()
    k, n = f"{P}:s", f"{P}:n"
    check(r.set(k, "hello") is True, "SET")
    check(r.get(k) == b"hello", "GET", r.get(k))
    check(r.incr(n) == 1 and r.incr(n, 41) == 42, "INCR/INCRBY")
    check(r.get(n) == b"42", "GET counter", r.get(n))
    check(r.ttl(k) == -1, "TTL without expiry is -1", r.ttl(k))
    check(r.expire(k, 100) is True, "EXPIRE")
    ttl = r.ttl(k)
    check(0 < ttl <= 100, "TTL after EXPIRE 100", ttl)
    check(r.set(f"{P}:ex", "v", ex=50) is True, "SET EX")
    check(0 < r.ttl(f"{P}:ex") <= 50, "TTL after SET EX", r.ttl(f"{P}:ex"))
    check(r.get(f"{P}:missing") is None, "GET missing is None")


def t_hashes():
    r = client()
    h = f"{P}:h"
    check(r.hset(h, mapping={"a": "1", "b": "two", "c": "3.5"}) == 3, "HSET mapping")
    got = r.hgetall(h)
    check(isinstance(got, dict), "HGETALL gives a dict", type(got))
    check(got == {b"a": b"1", b"b": b"two", b"c": b"3.5"}, "HGETALL content", got)
    check(r.hget(h, "b") == b"two", "HGET")
    check(r.hgetall(f"{P}:nohash") == {}, "HGETALL missing is {}", r.hgetall(f"{P}:nohash"))


def t_zsets():
    r = client()
    z = f"{P}:z"
    check(r.zadd(z, {"m1": 1.5, "m2": -2.25, "m3": 10}) == 3, "ZADD")
    got = pairs(r.zrange(z, 0, -1, withscores=True))
    check(got == [(b"m2", -2.25), (b"m1", 1.5), (b"m3", 10.0)], "ZRANGE WITHSCORES", got)
    check(all(type(s) is float for _, s in got), "scores are floats", got)
    s = r.zscore(z, "m1")
    check(type(s) is float and s == 1.5, "ZSCORE is float 1.5", s)
    check(r.zscore(z, "nope") is None, "ZSCORE missing is None")
    check(r.zincrby(z, 0.25, "m1") == 1.75, "ZINCRBY float", r.zincrby(z, 0, "m1"))


def t_pipeline_1000():
    r = client()
    check_pipeline_1000(queue_pipeline_1000(r.pipeline(transaction=False), P).execute())
    check(r.get(f"{P}:pl:499") == b"998", "value after pipeline")


def t_concurrency_50():
    r = client()
    errors = []

    def worker(i):
        try:
            k = f"{P}:c:{i}"
            for _ in range(3):
                r.incr(k)
            r.set(f"{k}:s", f"v{i}")
            if r.get(k) != b"3" or r.get(f"{k}:s") != f"v{i}".encode():
                errors.append((i, r.get(k), r.get(f"{k}:s")))
        except Exception as e:  # noqa: BLE001
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "50 concurrent threads see their own results", errors[:5])


def t_transaction():
    r = client()
    a_, n = f"{T}:tx:a", f"{T}:tx:n"
    pipe = r.pipeline()  # transaction=True by default: MULTI ... EXEC
    pipe.set(a_, "1").incr(n).incr(n).get(a_)
    got = pipe.execute()
    check(got == [True, 1, 2, b"1"], "EXEC replies", got)
    check(r.get(n) == b"2", "applied exactly once", r.get(n))

    # WATCH-based optimistic transaction (redis-py's transaction() helper).
    w = f"{T}:tx:w"
    r.set(w, "10")

    def double(p):
        v = int(p.get(w))
        p.multi()
        p.set(w, v * 2)

    got = r.transaction(double, w)
    check(got == [True], "transaction() result", got)
    check(r.get(w) == b"20", "WATCHed key doubled once", r.get(w))

    # A WATCHed key changed by someone else: EXEC aborts (WatchError).
    p = r.pipeline()
    p.watch(w)
    client().set(w, "other")
    p.multi()
    p.set(w, "mine")
    expect_error(p.execute, "EXEC after the WATCHed key changed",
                 error_types=(redis.exceptions.WatchError,))
    p.reset()
    check(r.get(w) == b"other", "aborted transaction applied nothing", r.get(w))


@proxy_only
def t_transaction_cross_server():
    r = client()
    ka, kb = a.cross
    r.delete(ka)
    r.delete(kb)
    pipe = r.pipeline()
    pipe.incr(ka).incr(kb)
    e = expect_error(pipe.execute, "transaction over two servers",
                     error_types=(redis.exceptions.ResponseError,))
    print(f"     (refused with: {e})")
    check(r.get(ka) is None, "first key untouched", r.get(ka))
    check(r.get(kb) is None, "second key untouched", r.get(kb))
    check(r.ping() is True, "connection still usable")


def t_lock():
    r = client()
    name = f"{P}:lock"
    lock = r.lock(name, timeout=10)
    check(lock.acquire(blocking=False) is True, "acquire")
    pttl = r.pttl(name)
    check(0 < pttl <= 10000, "lock key has a TTL", pttl)
    other = client().lock(name, timeout=10)
    check(other.acquire(blocking=False) is False, "second holder refused")
    check(lock.owned() is True, "owned()")
    check(lock.extend(5) is True, "extend (Lua)")
    check(10000 < r.pttl(name) <= 15000, "TTL after extend", r.pttl(name))
    lock.release()
    check(r.exists(name) == 0, "released: key gone")
    check(other.acquire(blocking=False) is True, "acquirable after release")
    other.release()


def t_scripts():
    r = client()
    k1, k2 = f"{T}:sc:s", f"{T}:sc:n"
    script = r.register_script(lua_set_incr())
    check(script(keys=[k1, k2], args=["x", 5]) == 5, "script first call")
    check(r.get(k1) == b"x", "script wrote KEYS[1]")
    check(r.script_exists(script.sha) == [True], "SCRIPT EXISTS after use",
          r.script_exists(script.sha))
    check(r.script_flush() is True, "SCRIPT FLUSH")
    check(r.script_exists(script.sha) == [False], "SCRIPT EXISTS after flush",
          r.script_exists(script.sha))
    check(script(keys=[k1, k2], args=["y", 2]) == 7, "script after flush reloads")
    check(r.get(k1) == b"y", "script wrote KEYS[1] again")
    sha = r.script_load("return redis.call('GET', KEYS[1])")
    check(r.evalsha(sha, 1, k1) == b"y", "SCRIPT LOAD + EVALSHA")
    check(r.eval("return redis.call('INCR', KEYS[1])", 1, f"{P}:ev") == 1, "EVAL")


def t_streams():
    r = client()
    s = f"{P}:st"
    ids = [r.xadd(s, {"f": f"v{i}", "n": str(i)}) for i in range(3)]
    check(all(isinstance(i, bytes) and b"-" in i for i in ids), "XADD ids", ids)
    check(r.xlen(s) == 3, "XLEN", r.xlen(s))
    got = r.xrange(s)
    check([e[0] for e in got] == ids, "XRANGE ids", got)
    check(got[1][1] == {b"f": b"v1", b"n": b"1"}, "XRANGE fields", got[1])
    check(r.xrange(s, min=ids[1], max=ids[1]) == [got[1]], "XRANGE one")
    check(len(r.xrevrange(s, count=2)) == 2, "XREVRANGE COUNT")


def t_client_name():
    name = f"{P}-name"
    r = client(client_name=name)
    got = r.client_getname()
    got = got.decode() if isinstance(got, bytes) else got
    check(got == name, "CLIENT GETNAME returns the client_name option", got)


def t_info():
    r = client()
    info = r.info()
    check(isinstance(info, dict), "INFO parses to a dict", type(info))
    check("redis_version" in info, "INFO has redis_version", sorted(info)[:20])
    check(str(info.get("loading", 0)) == "0", "INFO loading:0", info.get("loading"))
    server = r.info("server")
    check("redis_version" in server, "INFO server has redis_version", sorted(server)[:20])


@proxy_only
def t_crossslot():
    r = client()
    ka, kb = a.cross
    for k in (ka, kb):
        r.delete(k)
    r.rpush(ka, "x", "y")
    expect_error(lambda: r.rpoplpush(ka, kb), "RPOPLPUSH across servers",
                 error_types=(redis.exceptions.ClusterCrossSlotError,))  # the -CROSSSLOT code
    check(r.lrange(ka, 0, -1) == [b"x", b"y"], "source list unchanged", r.lrange(ka, 0, -1))
    check(r.exists(kb) == 0, "destination untouched")
    r.delete(ka)
    r.sadd(ka, "m")
    expect_error(lambda: r.smove(ka, kb, "m"), "SMOVE across servers",
                 error_types=(redis.exceptions.ClusterCrossSlotError,))  # the -CROSSSLOT code
    check(r.smembers(ka) == {b"m"}, "source set unchanged", r.smembers(ka))
    check(r.exists(kb) == 0, "destination untouched")
    r.delete(ka)


def t_same_server_multikey():
    r = client()
    src, dst = f"{T}:l:src", f"{T}:l:dst"
    r.rpush(src, "a", "b")
    check(r.rpoplpush(src, dst) == b"b", "RPOPLPUSH tagged")
    check(r.lrange(src, 0, -1) == [b"a"] and r.lrange(dst, 0, -1) == [b"b"], "lists after")
    ss, sd = f"{T}:set:src", f"{T}:set:dst"
    r.sadd(ss, "m", "n")
    check(r.smove(ss, sd, "m") is True, "SMOVE tagged")
    check(r.smembers(ss) == {b"n"} and r.smembers(sd) == {b"m"}, "sets after",
          r.smembers(ss), r.smembers(sd))


run.run_all(globals())
