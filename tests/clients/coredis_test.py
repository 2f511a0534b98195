"""coredis 6.9 at its default options against twem or redis-server.

coredis is RESP3-only (HELLO 3 at connect, no fallback) and checks each
command against the `version` of the HELLO reply before sending it.
Usage: see common.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (check, expect_error_async, lua_set_incr, proxy_only,  # noqa: E402
                    same_server_multikey_async, start, strings_async,
                    zsets_async)

a, run = start("coredis")

import anyio  # noqa: E402
import coredis  # noqa: E402
import coredis.exceptions  # noqa: E402

P, T = a.prefix, a.tag


def client(**kw):
    # Defaults: no decode_responses (bytes back), RESP3.
    return coredis.Redis(host=a.host, port=a.port, stream_timeout=20, **kw)


async def t_connect():
    async with client() as r:
        check(await r.ping() == b"PONG", "PING")
        check(await r.set(f"{P}:c", "v") is True, "SET after connect")


async def t_strings():
    async with client() as r:
        await strings_async(r, P)


async def t_hashes():
    async with client() as r:
        h = f"{P}:h"
        check(await r.hset(h, {"a": "1", "b": "two"}) == 2, "HSET mapping")
        got = await r.hgetall(h)
        check(isinstance(got, dict), "HGETALL gives a dict", type(got))
        check(got == {b"a": b"1", b"b": b"two"}, "HGETALL content", got)


async def t_zsets():
    async with client() as r:
        await zsets_async(r, P)


async def t_pipeline_1000():
    async with client() as r:
        async with r.pipeline(transaction=False) as pipe:
            sets = [pipe.set(f"{P}:pl:{i}", str(i)) for i in range(500)]
            incrs = [pipe.incrby(f"{P}:pl:{i}", i) for i in range(500)]
        got_sets = [await s for s in sets]
        got_incrs = [await s for s in incrs]
        check(got_sets == [True] * 500, "SET replies", got_sets[:5])
        bad = [(i, v) for i, v in enumerate(got_incrs) if v != 2 * i]
        check(not bad, "INCRBY replies in order", bad[:5])


async def t_concurrency_50():
    async with client() as r:
        results = {}

        async def worker(i):
            k = f"{P}:c:{i}"
            for _ in range(3):
                await r.incr(k)
            await r.set(f"{k}:s", f"v{i}")
            results[i] = (await r.get(k), await r.get(f"{k}:s"))

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(worker, i)
        bad = [(i, g) for i, g in sorted(results.items()) if g != (b"3", f"v{i}".encode())]
        check(len(results) == 50 and not bad, "50 concurrent tasks see their own results",
              bad[:5])


async def t_transaction():
    async with client() as r:
        a_, n = f"{T}:tx:a", f"{T}:tx:n"
        async with r.pipeline(transaction=True) as pipe:
            reqs = [pipe.set(a_, "1"), pipe.incr(n), pipe.incr(n), pipe.get(a_)]
        got = [await q for q in reqs]
        check(got == [True, 1, 2, b"1"], "EXEC replies", got)
        check(await r.get(n) == b"2", "applied exactly once", await r.get(n))


@proxy_only
async def t_transaction_cross_server():
    async with client() as r:
        ka, kb = a.cross
        await r.delete([ka])
        await r.delete([kb])

        async def tx():
            async with r.pipeline(transaction=True) as pipe:
                pipe.incr(ka)
                pipe.incr(kb)

        e = await expect_error_async(tx(), "transaction over two servers",
                                     error_types=(coredis.exceptions.ResponseError,))
        print(f"     (refused with: {type(e).__name__}: {e})")
        check(await r.get(ka) is None, "first key untouched", await r.get(ka))
        check(await r.get(kb) is None, "second key untouched", await r.get(kb))


async def t_lock():
    async with client() as r, client() as r2:
        name = f"{P}:lock"
        lock = r.lock(name, timeout=10, blocking=False)
        check(await lock.acquire() is True, "acquire")
        pttl = await r.pttl(name)
        check(0 < pttl <= 10000, "lock key has a TTL", pttl)
        other = r2.lock(name, timeout=10, blocking=False)
        check(await other.acquire() is False, "second holder refused")
        check(await lock.extend(5) is True, "extend (Lua)")
        await lock.release()
        check(await r.exists([name]) == 0, "released: key gone")


async def t_scripts():
    async with client() as r:
        k1, k2 = f"{T}:sc:s", f"{T}:sc:n"
        script = r.register_script(lua_set_incr())
        check(await script(keys=[k1, k2], args=["x", 5]) == 5, "script first call")
        check(await r.script_flush() is True, "SCRIPT FLUSH")
        check(await r.script_exists([script.sha]) == (False,), "SCRIPT EXISTS after flush")
        check(await script(keys=[k1, k2], args=["y", 2]) == 7, "script after flush reloads")
        check(await r.get(k1) == b"y", "script wrote KEYS[1]")


async def t_streams():
    async with client() as r:
        s = f"{P}:st"
        ids = [await r.xadd(s, {"f": f"v{i}"}) for i in range(3)]
        check(await r.xlen(s) == 3, "XLEN")
        got = await r.xrange(s)
        check([e.identifier for e in got] == ids, "XRANGE ids", got)
        check(got[2].field_values == {b"f": b"v2"}, "XRANGE fields", got[2])


async def t_client_name():
    name = f"{P}-name"
    async with client(client_name=name) as r:
        got = await r.client_getname()
        check(got == name.encode(), "CLIENT GETNAME returns the client_name option", got)


async def t_info():
    async with client() as r:
        info = await r.info()
        check(isinstance(info, dict) and "redis_version" in info, "INFO has redis_version",
              sorted(info)[:20])


@proxy_only
async def t_crossslot():
    async with client() as r:
        ka, kb = a.cross
        for k in (ka, kb):
            await r.delete([k])
        await r.rpush(ka, ["x", "y"])
        await expect_error_async(r.rpoplpush(ka, kb), "RPOPLPUSH across servers",
                                 # the -CROSSSLOT code maps to its own exception class
                                 error_types=(coredis.exceptions.ClusterCrossSlotError,))
        check(await r.lrange(ka, 0, -1) == [b"x", b"y"], "source list unchanged")
        check(await r.exists([kb]) == 0, "destination untouched")
        await r.delete([ka])
        await r.sadd(ka, ["m"])
        await expect_error_async(r.smove(ka, kb, "m"), "SMOVE across servers",
                                 # the -CROSSSLOT code maps to its own exception class
                                 error_types=(coredis.exceptions.ClusterCrossSlotError,))
        check(await r.smembers(ka) == {b"m"}, "source set unchanged")
        check(await r.exists([kb]) == 0, "destination untouched")
        await r.delete([ka])


async def t_same_server_multikey():
    async with client() as r:
        await same_server_multikey_async(r, T, values_as_list=True)


async def main():
    await run.run_all_async(globals())


anyio.run(main)
run.finish()
