"""Shared command line and step runner for the Python client programs.

    <program> HOST:PORT direct|proxy [--cross KEY_A KEY_B] [--backends ADDR...]
              [--keep-going]

direct: the target is one redis-server; checks that need two servers are
        skipped (they print "skip").
proxy:  the target is twem in front of (at least) two servers; --cross gives
        two key names the harness computed to live on different servers.
--backends: the servers behind twem (proxy mode), for checks that compare
        what the proxy answers with what the servers hold; in direct mode
        it defaults to the target itself.
--keep-going: run every check and report all failures (default: stop at the
        first). Exit status is 0 only if every check passed.

Each check is a module-level function `t_<name>`, run in the order the
program defines them (`Runner.run_all`); `@proxy_only` marks one that needs
two servers. An exception or a failed `check()` inside it fails it with a
message naming the check.
"""

import argparse
import os
import sys
import time
import traceback
import uuid


class CheckFailed(Exception):
    pass


def check(cond, what, *got):
    if not cond:
        detail = "" if not got else " (got: " + ", ".join(repr(g) for g in got) + ")"
        raise CheckFailed(what + detail)


def expect_error(fn, what, contains=None, error_types=(Exception,)):
    """Run fn(); it must raise one of error_types (whose text contains
    `contains`, if given). Returns the exception."""
    try:
        got = fn()
    except error_types as e:
        if contains is not None:
            check(contains in str(e), f"{what}: error should mention {contains}", str(e))
        return e
    raise CheckFailed(f"{what}: expected an error, got a reply {got!r}")


async def expect_error_async(coro, what, contains=None, error_types=(Exception,)):
    try:
        got = await coro
    except error_types as e:
        if contains is not None:
            check(contains in str(e), f"{what}: error should mention {contains}", str(e))
        return e
    raise CheckFailed(f"{what}: expected an error, got a reply {got!r}")


def parse_args(name):
    p = argparse.ArgumentParser(prog=name)
    p.add_argument("addr", help="host:port of redis-server (direct) or twem (proxy)")
    p.add_argument("mode", choices=["direct", "proxy"])
    p.add_argument("--cross", nargs=2, metavar=("KEY_A", "KEY_B"),
                   help="two keys on different servers (proxy mode)")
    p.add_argument("--backends", nargs="+", metavar="ADDR",
                   help="host:port of each server behind twem (proxy mode)")
    p.add_argument("--keep-going", action="store_true")
    a = p.parse_args()
    host, _, port = a.addr.rpartition(":")
    a.host, a.port = host or "127.0.0.1", int(port)
    if not a.backends:
        a.backends = [a.addr] if a.mode == "direct" else []
    a.backend_hostports = [(h or "127.0.0.1", int(pt)) for h, _, pt in
                           (b.rpartition(":") for b in a.backends)]
    if a.mode == "proxy" and not a.cross:
        p.error("proxy mode needs --cross KEY_A KEY_B")
    # Unique per run, so reruns against the same servers never collide.
    a.prefix = "t" + uuid.uuid4().hex[:10]
    # A hash tag: every key built with tagged() lives on one server.
    a.tag = "{" + a.prefix + "}"
    return a


def start(name, parser_in_name=False):
    """A program's arguments and its Runner. Call it before importing the
    client library: with TWEM_NO_HIREDIS=1 it hides hiredis first (see
    hide_hiredis_if_asked). `parser_in_name` adds the redis-py parser in use
    to the name the program reports under."""
    hide_hiredis_if_asked()
    if parser_in_name:
        no_hiredis = os.environ.get("TWEM_NO_HIREDIS") == "1"
        name += "[python-parser]" if no_hiredis else "[hiredis]"
    a = parse_args(name)
    return a, Runner(name, a)


def proxy_only(fn):
    """Marks a check that needs two servers: skipped in direct mode."""
    fn.proxy_only = True
    return fn


class Runner:
    def __init__(self, name, args):
        self.name, self.args = name, args
        self.failed = []
        self.t0 = time.monotonic()

    def _report(self, check_name, exc):
        # anyio task groups (coredis) wrap the real error: report the leaf.
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        if isinstance(exc, CheckFailed):
            msg = str(exc)
        else:
            msg = f"{type(exc).__name__}: {exc}"
        print(f"FAIL {self.name} [{self.args.mode}] {check_name}: {msg}", flush=True)
        if not isinstance(exc, CheckFailed) and os.environ.get("TWEM_CLIENT_TRACE"):
            traceback.print_exception(exc)
        self.failed.append(check_name)
        if not self.args.keep_going:
            self.finish()

    def skip(self, check_name, why):
        print(f"skip {check_name}: {why}", flush=True)

    def run(self, check_name, fn, proxy_only=False):
        if proxy_only and self.args.mode != "proxy":
            return self.skip(check_name, "needs two servers (proxy mode)")
        t = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - any error fails the check
            return self._report(check_name, e)
        print(f"ok   {check_name} ({time.monotonic() - t:.2f}s)", flush=True)

    async def run_async(self, check_name, fn, proxy_only=False):
        if proxy_only and self.args.mode != "proxy":
            return self.skip(check_name, "needs two servers (proxy mode)")
        t = time.monotonic()
        try:
            await fn()
        except Exception as e:  # noqa: BLE001
            return self._report(check_name, e)
        print(f"ok   {check_name} ({time.monotonic() - t:.2f}s)", flush=True)

    @staticmethod
    def checks(scope):
        """The checks of a program, from its module namespace `scope`: every
        function `t_<name>`, in the order defined, as (name, function)."""
        return [(k[2:], f) for k, f in list(scope.items())
                if k.startswith("t_") and callable(f)]

    def run_all(self, scope):
        """Run every check of `scope` (see checks) in order, then finish."""
        for name, fn in self.checks(scope):
            self.run(name, fn, proxy_only=getattr(fn, "proxy_only", False))
        self.finish()

    async def run_all_async(self, scope):
        """Run every (async) check of `scope` in order; the caller finishes."""
        for name, fn in self.checks(scope):
            await self.run_async(name, fn, proxy_only=getattr(fn, "proxy_only", False))

    def finish(self):
        took = time.monotonic() - self.t0
        if self.failed:
            print(f"{self.name} [{self.args.mode}]: {len(self.failed)} check(s) failed: "
                  f"{', '.join(self.failed)} ({took:.1f}s)", flush=True)
            sys.stdout.flush()
            os._exit(1)
        print(f"{self.name} [{self.args.mode}]: all checks passed ({took:.1f}s)", flush=True)
        sys.stdout.flush()
        os._exit(0)


def hide_hiredis_if_asked():
    """redis-py uses hiredis whenever it imports; it has no switch. With
    TWEM_NO_HIREDIS=1 the import is made to fail, as if it were not
    installed, so one venv tests both parsers. Call before importing redis."""
    if os.environ.get("TWEM_NO_HIREDIS") == "1":
        sys.modules["hiredis"] = None


def diag_resp2():
    """TWEM_CLIENT_DIAG_RESP2=1 forces RESP2 (protocol=2): a diagnostic only,
    to see what else fails while HELLO 3 is unsupported. The harness never
    sets it: the tests run at the libraries' defaults."""
    return os.environ.get("TWEM_CLIENT_DIAG_RESP2") == "1"


def lua_set_incr():
    # KEYS[1] = a string set to ARGV[1]; KEYS[2] = a counter incremented by ARGV[2].
    return ("redis.call('SET', KEYS[1], ARGV[1]) "
            "return redis.call('INCRBY', KEYS[2], ARGV[2])")


# Checks whose steps are the same for several libraries: one copy here, run
# by each program with its own client.

async def strings_async(r, prefix):
    """The `strings` check for an async client `r` (coredis, redis.asyncio)."""
    k, n = f"{prefix}:s", f"{prefix}:n"
    check(await r.set(k, "hello") is True, "SET")
    check(await r.get(k) == b"hello", "GET")
    check(await r.incr(n) == 1 and await r.incrby(n, 41) == 42, "INCR/INCRBY")
    check(await r.expire(k, 100) is True, "EXPIRE")
    ttl = await r.ttl(k)
    check(0 < ttl <= 100, "TTL after EXPIRE 100", ttl)
    check(await r.get(f"{prefix}:missing") is None, "GET missing is None")


async def zsets_async(r, prefix):
    """The `zsets` check for an async client `r`: scores come back as floats."""
    z = f"{prefix}:z"
    check(await r.zadd(z, {"m1": 1.5, "m2": -2.25}) == 2, "ZADD")
    got = [(m, s) for m, s in await r.zrange(z, 0, -1, withscores=True)]
    check(got == [(b"m2", -2.25), (b"m1", 1.5)], "ZRANGE WITHSCORES", got)
    check(all(type(s) is float for _, s in got), "scores are floats", got)
    s = await r.zscore(z, "m1")
    check(type(s) is float and s == 1.5, "ZSCORE is float 1.5", s)


async def same_server_multikey_async(r, tag, values_as_list=False):
    """The `same_server_multikey` check for an async client `r`: keys sharing
    the hash tag `tag` let RPOPLPUSH and SMOVE through. `values_as_list`:
    the library takes several values as one list (coredis), not as
    arguments (redis-py)."""
    def values(*v):
        return [list(v)] if values_as_list else v

    src, dst = f"{tag}:l:src", f"{tag}:l:dst"
    await r.rpush(src, *values("a", "b"))
    check(await r.rpoplpush(src, dst) == b"b", "RPOPLPUSH tagged")
    check(await r.lrange(dst, 0, -1) == [b"b"], "destination list")
    ss, sd = f"{tag}:set:src", f"{tag}:set:dst"
    await r.sadd(ss, *values("m", "n"))
    check(await r.smove(ss, sd, "m") is True, "SMOVE tagged")
    check(await r.smembers(sd) == {b"m"}, "destination set")


def queue_pipeline_1000(pipe, prefix):
    """The `pipeline_1000` check's commands on a redis-py pipeline: 500 SETs,
    then 500 INCRBYs of the same keys."""
    for i in range(500):
        pipe.set(f"{prefix}:pl:{i}", i)
    for i in range(500):
        pipe.incrby(f"{prefix}:pl:{i}", i)
    return pipe


def check_pipeline_1000(got):
    """The replies of queue_pipeline_1000's commands: all 1000, in order."""
    check(len(got) == 1000, "1000 replies", len(got))
    check(got[:500] == [True] * 500, "SET replies", got[:5])
    bad = [(i, got[500 + i]) for i in range(500) if got[500 + i] != 2 * i]
    check(not bad, "INCRBY replies in order", bad[:5])
