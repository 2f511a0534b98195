"""redis-py 8.1 (redis.asyncio) at its default options against twem or redis-server.

Usage: see common.py. TWEM_NO_HIREDIS=1 runs it with redis-py's own parser.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Runner, check, diag_resp2, expect_error_async,  # noqa: E402
                    hide_hiredis_if_asked, lua_set_incr, parse_args)

hide_hiredis_if_asked()
import redis.asyncio as aredis  # noqa: E402
import redis.exceptions  # noqa: E402
import redis.utils  # noqa: E402

NAME = "redis_py_asyncio" + ("[python-parser]" if os.environ.get("TWEM_NO_HIREDIS") == "1"
                             else "[hiredis]")
a = parse_args(NAME)
P, T = a.prefix, a.tag
run = Runner(NAME, a)
clients = []


def client(**kw):
    # Default options: RESP3 (redis-py 8's default), no decode_responses.
    if diag_resp2():
        kw["protocol"] = 2
    c = aredis.Redis(host=a.host, port=a.port, socket_timeout=20, **kw)
    clients.append(c)
    return c


async def t_connect():
    want = os.environ.get("TWEM_NO_HIREDIS") != "1"
    check(redis.utils.HIREDIS_AVAILABLE == want, "hiredis in use as asked",
          redis.utils.HIREDIS_AVAILABLE)
    r = client()
    check(await r.ping() is True, "PING")
    conn = await r.connection_pool.get_connection()
    try:
        check(conn.protocol == 3, "default protocol is RESP3", conn.protocol)
    finally:
        await r.connection_pool.release(conn)


async def t_strings():
    r = client()
    k, n = f"{P}:s", f"{P}:n"
    check(await r.set(k, "hello") is True, "SET")
    check(await r.get(k) == b"hello", "GET")
    check(await r.incr(n) == 1 and await r.incr(n, 41) == 42, "INCR/INCRBY")
    check(await r.expire(k, 100) is True, "EXPIRE")
    ttl = await r.ttl(k)
    check(0 < ttl <= 100, "TTL after EXPIRE 100", ttl)
    check(await r.get(f"{P}:missing") is None, "GET missing is None")


async def t_hashes():
    r = client()
    h = f"{P}:h"
    check(await r.hset(h, mapping={"a": "1", "b": "two"}) == 2, "HSET mapping")
    got = await r.hgetall(h)
    check(isinstance(got, dict), "HGETALL gives a dict", type(got))
    check(got == {b"a": b"1", b"b": b"two"}, "HGETALL content", got)


async def t_zsets():
    r = client()
    z = f"{P}:z"
    check(await r.zadd(z, {"m1": 1.5, "m2": -2.25}) == 2, "ZADD")
    got = [(m, s) for m, s in await r.zrange(z, 0, -1, withscores=True)]
    check(got == [(b"m2", -2.25), (b"m1", 1.5)], "ZRANGE WITHSCORES", got)
    check(all(type(s) is float for _, s in got), "scores are floats", got)
    s = await r.zscore(z, "m1")
    check(type(s) is float and s == 1.5, "ZSCORE is float 1.5", s)


async def t_pipeline_1000():
    r = client()
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"{P}:pl:{i}", i)
    for i in range(500):
        pipe.incrby(f"{P}:pl:{i}", i)
    got = await pipe.execute()
    check(len(got) == 1000, "1000 replies", len(got))
    check(got[:500] == [True] * 500, "SET replies", got[:5])
    bad = [(i, got[500 + i]) for i in range(500) if got[500 + i] != 2 * i]
    check(not bad, "INCRBY replies in order", bad[:5])


async def t_concurrency():
    r = client()

    async def worker(i):
        k = f"{P}:c:{i}"
        for _ in range(3):
            await r.incr(k)
        await r.set(f"{k}:s", f"v{i}")
        h = f"{P}:ch:{i}"
        await r.hset(h, mapping={"i": str(i)})
        return await r.get(k), await r.get(f"{k}:s"), await r.hgetall(h)

    got = await asyncio.gather(*(worker(i) for i in range(50)), return_exceptions=True)
    bad = [(i, g) for i, g in enumerate(got)
           if g != (b"3", f"v{i}".encode(), {b"i": str(i).encode()})]
    check(not bad, "50 concurrent coroutines see their own results", bad[:5])


async def t_transaction():
    r = client()
    a_, n = f"{T}:tx:a", f"{T}:tx:n"
    async with r.pipeline() as pipe:  # transaction=True by default
        pipe.set(a_, "1").incr(n).incr(n).get(a_)
        got = await pipe.execute()
    check(got == [True, 1, 2, b"1"], "EXEC replies", got)
    check(await r.get(n) == b"2", "applied exactly once", await r.get(n))

    w = f"{T}:tx:w"
    await r.set(w, "10")

    async def double(p):
        v = int(await p.get(w))
        p.multi()
        p.set(w, v * 2)

    got = await r.transaction(double, w)
    check(got == [True], "transaction() result", got)
    check(await r.get(w) == b"20", "WATCHed key doubled once", await r.get(w))


async def t_transaction_cross():
    r = client()
    ka, kb = a.cross
    await r.delete(ka)
    await r.delete(kb)
    async with r.pipeline() as pipe:
        pipe.incr(ka).incr(kb)
        e = await expect_error_async(pipe.execute(), "transaction over two servers",
                                     error_types=(redis.exceptions.ResponseError,))
    print(f"     (refused with: {e})")
    check(await r.get(ka) is None, "first key untouched", await r.get(ka))
    check(await r.get(kb) is None, "second key untouched", await r.get(kb))


async def t_lock():
    r = client()
    name = f"{P}:lock"
    lock = r.lock(name, timeout=10)
    check(await lock.acquire(blocking=False) is True, "acquire")
    pttl = await r.pttl(name)
    check(0 < pttl <= 10000, "lock key has a TTL", pttl)
    other = client().lock(name, timeout=10)
    check(await other.acquire(blocking=False) is False, "second holder refused")
    await lock.release()
    check(await r.exists(name) == 0, "released: key gone")


async def t_scripts():
    r = client()
    k1, k2 = f"{T}:sc:s", f"{T}:sc:n"
    script = r.register_script(lua_set_incr())
    check(await script(keys=[k1, k2], args=["x", 5]) == 5, "script first call")
    check(await r.script_flush() is True, "SCRIPT FLUSH")
    check(await r.script_exists(script.sha) == [False], "SCRIPT EXISTS after flush")
    check(await script(keys=[k1, k2], args=["y", 2]) == 7, "script after flush reloads")
    check(await r.get(k1) == b"y", "script wrote KEYS[1]")


async def t_streams():
    r = client()
    s = f"{P}:st"
    ids = [await r.xadd(s, {"f": f"v{i}"}) for i in range(3)]
    check(await r.xlen(s) == 3, "XLEN")
    got = await r.xrange(s)
    check([e[0] for e in got] == ids, "XRANGE ids", got)
    check(got[2][1] == {b"f": b"v2"}, "XRANGE fields", got[2])


async def t_client_name():
    name = f"{P}-name"
    r = client(client_name=name)
    got = await r.client_getname()
    got = got.decode() if isinstance(got, bytes) else got
    check(got == name, "CLIENT GETNAME returns the client_name option", got)


async def t_info():
    r = client()
    info = await r.info()
    check(isinstance(info, dict) and "redis_version" in info, "INFO has redis_version",
          sorted(info)[:20])


async def t_crossslot():
    r = client()
    ka, kb = a.cross
    for k in (ka, kb):
        await r.delete(k)
    await r.rpush(ka, "x", "y")
    await expect_error_async(r.rpoplpush(ka, kb), "RPOPLPUSH across servers",
                             # the -CROSSSLOT code maps to its own exception class
                             error_types=(redis.exceptions.ClusterCrossSlotError,))
    check(await r.lrange(ka, 0, -1) == [b"x", b"y"], "source list unchanged")
    check(await r.exists(kb) == 0, "destination untouched")
    await r.delete(ka)
    await r.sadd(ka, "m")
    await expect_error_async(r.smove(ka, kb, "m"), "SMOVE across servers",
                             # the -CROSSSLOT code maps to its own exception class
                             error_types=(redis.exceptions.ClusterCrossSlotError,))
    check(await r.smembers(ka) == {b"m"}, "source set unchanged")
    check(await r.exists(kb) == 0, "destination untouched")
    await r.delete(ka)


async def t_same_server_multikey():
    r = client()
    src, dst = f"{T}:l:src", f"{T}:l:dst"
    await r.rpush(src, "a", "b")
    check(await r.rpoplpush(src, dst) == b"b", "RPOPLPUSH tagged")
    check(await r.lrange(dst, 0, -1) == [b"b"], "destination list")
    ss, sd = f"{T}:set:src", f"{T}:set:dst"
    await r.sadd(ss, "m", "n")
    check(await r.smove(ss, sd, "m") is True, "SMOVE tagged")
    check(await r.smembers(sd) == {b"m"}, "destination set")


async def main():
    await run.run_async("connect", t_connect)
    await run.run_async("strings", t_strings)
    await run.run_async("hashes", t_hashes)
    await run.run_async("zsets", t_zsets)
    await run.run_async("pipeline_1000", t_pipeline_1000)
    await run.run_async("concurrency_50", t_concurrency)
    await run.run_async("transaction", t_transaction)
    await run.run_async("transaction_cross_server", t_transaction_cross, proxy_only=True)
    await run.run_async("lock", t_lock)
    await run.run_async("scripts", t_scripts)
    await run.run_async("streams", t_streams)
    await run.run_async("client_name", t_client_name)
    await run.run_async("info", t_info)
    await run.run_async("crossslot", t_crossslot, proxy_only=True)
    await run.run_async("same_server_multikey", t_same_server_multikey)
    for c in clients:
        try:
            await c.aclose()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


asyncio.run(main())
run.finish()
