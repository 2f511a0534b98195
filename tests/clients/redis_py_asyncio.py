"""redis-py 8.1 (redis.asyncio) at its default options against twem or redis-server.

Usage: see common.py. TWEM_NO_HIREDIS=1 runs it with redis-py's own parser.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (check, check_pipeline_1000, diag_resp2,  # noqa: E402
                    expect_error_async, lua_set_incr, proxy_only,
                    queue_pipeline_1000, same_server_multikey_async, start,
                    strings_async, zsets_async)

a, run = start("redis_py_asyncio", parser_in_name=True)

import redis.asyncio as aredis  # noqa: E402
import redis.exceptions  # noqa: E402
import redis.utils  # noqa: E402

P, T = a.prefix, a.tag
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
    await strings_async(client(), P)


async def t_hashes():
    r = client()
    h = f"{P}:h"
    check(await r.hset(h, mapping={"a": "1", "b": "two"}) == 2, "HSET mapping")
    got = await r.hgetall(h)
    check(isinstance(got, dict), "HGETALL gives a dict", type(got))
    check(got == {b"a": b"1", b"b": b"two"}, "HGETALL content", got)


async def t_zsets():
    await zsets_async(client(), P)


async def t_pipeline_1000():
    pipe = queue_pipeline_1000(client().pipeline(transaction=False), P)
    check_pipeline_1000(await pipe.execute())


async def t_concurrency_50():
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


@proxy_only
async def t_transaction_cross_server():
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


@proxy_only
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
    await same_server_multikey_async(client(), T)


async def main():
    await run.run_all_async(globals())
    for c in clients:
        try:
            await c.aclose()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


asyncio.run(main())
run.finish()
