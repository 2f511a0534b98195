"""A job queue on BLPOP / BRPOPLPUSH with redis-py 8.1 (sync, default
options: RESP3) against twem or redis-server.

Usage: see common.py. In proxy mode the queues are built from the --cross
keys with the pool's `{}` hash tag, so workers block on BOTH servers.

The scenario: a few workers block on the queues (BLPOP on two queues of one
server, BRPOPLPUSH into a per-server processing list) while 20 other
clients keep doing SET/GET on keys of the same servers. twem serves the
blocking commands on borrowed server connections, so the 20 clients must
not wait behind a blocked worker: their p99 round trip must stay under
P99_LIMIT_MS (relaxed for a loaded 2-core CI machine; the figure measured
is printed). Jobs are pushed while the workers are blocked; every job must
be processed exactly once and no job left in a queue or a processing list.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, start  # noqa: E402

a, run = start("redis_py_jobs")

import redis  # noqa: E402

P = a.prefix

if a.mode == "proxy":
    TAGS = ["{" + a.cross[0] + "}", "{" + a.cross[1] + "}"]
else:
    TAGS = ["{" + P + "x}", "{" + P + "y}"]

# What this bound catches is a stall: a SET/GET queued behind a worker's
# BLPOP on a shared connection would wait for that BLPOP's 1 s timeout.
# Normal figures (printed above: p99 8-14 ms here) are for the benchmark
# record, not a pass mark: 28 client programs share 2 CI cores at once, and
# a 20 ms mark failed there at 20.8 ms with nothing stalled.
P99_LIMIT_MS = float(os.environ.get("TWEM_JOBS_P99_MS", "250"))
TRAFFIC_CLIENTS = 20
JOBS = 600
# Python threads share one interpreter lock: hand it over every 1 ms instead
# of 5 ms so the latency measured is the network's, not the scheduler's.
sys.setswitchinterval(0.001)


def client():
    return redis.Redis(host=a.host, port=a.port, socket_timeout=20)


def q(tag, name):
    return f"{tag}:{P}:{name}"


def t_blpop_timeout():
    r = client()
    t0 = time.monotonic()
    got = r.blpop([q(TAGS[0], "empty1"), q(TAGS[0], "empty2")], timeout=0.3)
    took = time.monotonic() - t0
    check(got is None, "BLPOP on empty queues times out with None", got)
    check(0.25 <= took < 2.0, "BLPOP 0.3 s timeout took about 0.3 s", took)
    got = r.brpoplpush(q(TAGS[1], "empty"), q(TAGS[1], "emptydst"), timeout=1)
    check(got is None, "BRPOPLPUSH timeout 1 on an empty list gives None", got)


def t_blocked_then_served():
    """A blocked BLPOP / BLMOVE is served by a push from another client."""
    for tag in TAGS:
        r, other = client(), client()
        out = {}

        def pop():
            t0 = time.monotonic()
            out["blpop"] = r.blpop([q(tag, "w1"), q(tag, "w2")], timeout=5)
            out["took"] = time.monotonic() - t0
            out["blmove"] = r.blmove(q(tag, "m1"), q(tag, "m2"), 5, "LEFT", "RIGHT")

        t = threading.Thread(target=pop)
        t.start()
        time.sleep(0.3)
        check(other.rpush(q(tag, "w2"), "job") == 1, "RPUSH to the second queue")
        time.sleep(0.3)
        other.rpush(q(tag, "m1"), "moved")
        t.join(10)
        check(not t.is_alive(), "the blocked client was served")
        check(tuple(out["blpop"] or ()) == (q(tag, "w2").encode(), b"job"),
              "BLPOP returns [queue, job]", out["blpop"])
        check(out["took"] < 2.0, "served soon after the push", out["took"])
        check(out["blmove"] == b"moved", "BLMOVE served by a later push", out["blmove"])
        check(other.lrange(q(tag, "m2"), 0, -1) == [b"moved"], "BLMOVE destination")
        check(other.llen(q(tag, "w2")) == 0, "the job was consumed exactly once")


def t_job_queue():
    stop = threading.Event()
    processed = []  # (worker, job) from every worker
    plock = threading.Lock()
    errors = []
    worker_ops = [0]

    def blpop_worker(wid, tag):
        r = client()
        try:
            while True:
                got = r.blpop([q(tag, "hi"), q(tag, "lo")], timeout=1)
                if got is None:
                    if stop.is_set():
                        return
                    continue
                job = got[1].decode()
                r.hincrby(q(tag, "done"), job, 1)
                with plock:
                    processed.append((wid, job))
                    worker_ops[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"worker {wid}: {e!r}")

    def reliable_worker(wid, tag):
        r = client()
        try:
            while True:
                job = r.brpoplpush(q(tag, "rel"), q(tag, "processing"), timeout=1)
                if job is None:
                    if stop.is_set():
                        return
                    continue
                r.hincrby(q(tag, "done"), job.decode(), 1)
                n = r.lrem(q(tag, "processing"), 1, job)
                if n != 1:
                    errors.append(f"worker {wid}: LREM {job!r} removed {n}")
                with plock:
                    processed.append((wid, job.decode()))
        except Exception as e:  # noqa: BLE001
            errors.append(f"worker {wid}: {e!r}")

    lat = [[] for _ in range(TRAFFIC_CLIENTS)]
    traffic_stop = threading.Event()

    def traffic(i):
        r = client()
        tag = TAGS[i % 2]
        k = q(tag, f"k{i}")
        n = 0
        try:
            r.ping()
            while not traffic_stop.is_set():
                v = f"{i}:{n}"
                t0 = time.perf_counter()
                r.set(k, v)
                t1 = time.perf_counter()
                got = r.get(k)
                t2 = time.perf_counter()
                lat[i].append(t1 - t0)
                lat[i].append(t2 - t1)
                if got != v.encode():
                    errors.append(f"traffic {i}: GET {k} gave {got!r}, want {v!r}")
                    return
                n += 1
                time.sleep(0.002)
        except Exception as e:  # noqa: BLE001
            errors.append(f"traffic {i}: {e!r}")

    workers = []
    for t_i, tag in enumerate(TAGS):
        for w in range(2):
            workers.append(threading.Thread(target=blpop_worker, args=(f"b{t_i}{w}", tag)))
        workers.append(threading.Thread(target=reliable_worker, args=(f"r{t_i}", tag)))
    for w in workers:
        w.start()
    tr = [threading.Thread(target=traffic, args=(i,)) for i in range(TRAFFIC_CLIENTS)]
    for t in tr:
        t.start()
    # The workers sit blocked on empty queues for a while under traffic.
    time.sleep(1.5)
    prod = client()
    jobs = [f"job{i}" for i in range(JOBS)]
    queues = [q(tag, name) for tag in TAGS for name in ("hi", "lo", "rel")]
    t0 = time.monotonic()
    for i in range(0, JOBS, 20):
        pipe = prod.pipeline(transaction=False)
        for j in range(i, i + 20):
            pipe.rpush(queues[j % len(queues)], jobs[j])
        pipe.execute()
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with plock:
            if len(processed) >= JOBS:
                break
        time.sleep(0.05)
    drained = time.monotonic() - t0
    # Blocked again with nothing to do, under traffic.
    time.sleep(1.0)
    traffic_stop.set()
    for t in tr:
        t.join(10)
    stop.set()
    for w in workers:
        w.join(10)
    check(not any(w.is_alive() for w in workers), "workers stopped")
    check(not errors, "no worker or traffic errors", errors[:5])

    ids = [j for _, j in processed]
    dupes = sorted({j for j in ids if ids.count(j) > 1})
    check(not dupes, "no job processed twice", dupes[:10])
    missing = sorted(set(jobs) - set(ids))
    check(not missing, "every job processed", len(missing), missing[:10])
    done = {}
    for tag in TAGS:
        for k, v in prod.hgetall(q(tag, "done")).items():
            done[k.decode()] = done.get(k.decode(), 0) + int(v)
    check(sorted(done) == sorted(jobs) and set(done.values()) == {1},
          "HINCRBY counts: each job once", {k: v for k, v in done.items() if v != 1})
    for name in queues + [q(tag, "processing") for tag in TAGS]:
        check(prod.llen(name) == 0, f"{name} empty", prod.llen(name))
    by_worker = {}
    for w, _ in processed:
        by_worker[w] = by_worker.get(w, 0) + 1
    all_lat = sorted(x for per in lat for x in per)
    check(len(all_lat) > 1000, "the traffic clients ran", len(all_lat))
    p50 = all_lat[len(all_lat) // 2] * 1000
    p99 = all_lat[int(len(all_lat) * 0.99)] * 1000
    mx = all_lat[-1] * 1000
    print(f"     {JOBS} jobs drained in {drained:.2f}s by {len(by_worker)} workers "
          f"{dict(sorted(by_worker.items()))}", flush=True)
    print(f"     traffic: {len(all_lat)} SET/GET from {TRAFFIC_CLIENTS} clients: "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {mx:.1f} ms (limit p99 < {P99_LIMIT_MS} ms)",
          flush=True)
    check(p99 < P99_LIMIT_MS, f"SET/GET p99 under {P99_LIMIT_MS} ms while workers block", p99)


run.run_all(globals())
