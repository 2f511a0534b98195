#!/usr/bin/env python3
"""Turns bench/out/{raw.csv,mem.csv,meta.txt} (written by bench/run.sh) into
bench/out/results.md (Markdown tables, ratios, targets) and bench/out/chart.png
(gnuplot). Standard library only.

    python3 bench/report.py bench/out
"""

import csv
import os
import statistics
import subprocess
import sys
from collections import OrderedDict, defaultdict

TARGETS = ("twem", "nutcracker", "direct")


def read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    return meta


def kreq(rps):
    return f"{rps / 1000:.1f}k"


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"


def spread(values):
    """Max-min over the median, in percent: how much the repetitions disagree."""
    med = statistics.median(values)
    return 100.0 * (max(values) - min(values)) / med if med else 0.0


def aggregate(raw_path, clk_tck):
    """(suite, scenario) -> target -> medians and CPU per request."""
    runs = defaultdict(list)
    order = OrderedDict()
    with open(raw_path) as f:
        for row in csv.DictReader(f):
            key = (row["suite"], row["scenario"])
            order[key] = None
            runs[(key, row["target"])].append(row)
    out = OrderedDict()
    for key in order:
        per_target = {}
        for target in TARGETS:
            rows = runs.get((key, target), [])
            if not rows:
                continue
            rps = [float(r["rps"]) for r in rows]
            cpu = None
            if all(r["cpu_ticks"] != "" for r in rows):
                ticks = sum(int(r["cpu_ticks"]) for r in rows)
                reqs = sum(int(r["requests"]) for r in rows)
                cpu = ticks / clk_tck * 1e6 / reqs if reqs else None
            per_target[target] = {
                "by_rep": {r["rep"]: float(r["rps"]) for r in rows},
                "rps": statistics.median(rps),
                "spread": spread(rps),
                "p50": statistics.median(float(r["p50_ms"]) for r in rows),
                "p99": statistics.median(float(r["p99_ms"]) for r in rows),
                "cpu": cpu,
                "n": len(rows),
            }
        out[key] = per_target
    return out


def paired_ratio(t, a, b):
    """Median over repetitions of a's throughput over b's in the same repetition.
    The runs of one repetition are adjacent in time, so each pair saw about the same
    load from the rest of the machine; this is steadier than a ratio of medians."""
    ra, rb = t[a]["by_rep"], t[b]["by_rep"]
    pairs = [ra[k] / rb[k] for k in ra if k in rb and rb[k]]
    return statistics.median(pairs) if pairs else 0.0


def table(suite, agg):
    lines = [
        f"| {suite} | twem req/s | nutcracker req/s | direct req/s | twem / nutcracker | twem / direct "
        "| p50 ms twem / nut / direct | p99 ms twem / nut / direct | proxy CPU µs/req twem / nut | CPU twem / nut |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (s, name), t in agg.items():
        if s != suite or not all(x in t for x in TARGETS):
            continue
        tw, nu, di = t["twem"], t["nutcracker"], t["direct"]
        cpu_t = f"{tw['cpu']:.2f}" if tw["cpu"] is not None else "-"
        cpu_n = f"{nu['cpu']:.2f}" if nu["cpu"] is not None else "-"
        cpu_r = ratio(tw["cpu"], nu["cpu"]) if tw["cpu"] and nu["cpu"] else "-"
        lines.append(
            f"| {name} | {kreq(tw['rps'])} ±{tw['spread']:.0f}% | {kreq(nu['rps'])} ±{nu['spread']:.0f}% "
            f"| {kreq(di['rps'])} ±{di['spread']:.0f}% | **{paired_ratio(t, 'twem', 'nutcracker'):.2f}x** "
            f"| {paired_ratio(t, 'twem', 'direct'):.2f}x | {tw['p50']:.3f} / {nu['p50']:.3f} / {di['p50']:.3f} "
            f"| {tw['p99']:.3f} / {nu['p99']:.3f} / {di['p99']:.3f} | {cpu_t} / {cpu_n} | {cpu_r} |"
        )
    return lines


def read_mem(path):
    rows = defaultdict(list)
    with open(path) as f:
        for row in csv.DictReader(f):
            rows[(row["probe"], row["target"])].append(row)
    return rows


def mark(ok):
    return "met" if ok else "**missed**"


def targets_section(agg, mem):
    lines = []
    for suite in ("redis", "memcached"):
        for (s, name), t in agg.items():
            if s != suite or "twem" not in t or "nutcracker" not in t:
                continue
            r = paired_ratio(t, "twem", "nutcracker")
            if "P16" in name:
                lines.append(f"- {suite} {name}: twem / nutcracker throughput {r:.2f}x (target >= 2x): {mark(r >= 2)}")
            elif "P1" in name:
                lines.append(f"- {suite} {name}: twem / nutcracker throughput {r:.2f}x (target >= 1x): {mark(r >= 1)}")
    worse = []
    for (s, name), t in agg.items():
        tw, nu = t.get("twem", {}).get("cpu"), t.get("nutcracker", {}).get("cpu")
        if tw and nu and tw > nu:
            worse.append(f"{s} {name} ({tw:.2f} vs {nu:.2f} µs)")
    lines.append(
        "- proxy CPU per request no higher than nutcracker's: "
        + (mark(True) + " in every scenario" if not worse else mark(False) + " in " + ", ".join(worse))
    )
    idle = mem.get(("idle", "twem"))
    if idle:
        per = statistics.median(float(r["result"]) for r in idle)
        lines.append(f"- idle client connection: {per:.2f} KiB of twem RSS (target < 3 KiB): {mark(per < 3)}")
    flood = mem.get(("flood", "twem"))
    if flood:
        g = statistics.median(int(r["result"]) for r in flood) / 1024
        lines.append(f"- unread pipeline of 400 x 1 MiB GETs: twem grows {g:.1f} MiB (target < 64 MiB): {mark(g < 64)}")
    return lines


def mem_section(mem, meta):
    lines = [
        "| memory (median of fresh proxies) | twem | nutcracker |",
        "|---|---:|---:|",
    ]
    def med(probe, target, field, scale=1.0):
        rows = mem.get((probe, target))
        if not rows:
            return None
        return statistics.median(float(r[field]) for r in rows) / scale

    idle_t, idle_n = med("idle", "twem", "result"), med("idle", "nutcracker", "result")
    if idle_t is not None and idle_n is not None:
        lines.append(f"| RSS per idle client connection ({meta.get('idle_conns', '?')} open) | {idle_t:.2f} KiB | {idle_n:.2f} KiB |")
    for field, label in (("result", "peak RSS growth"), ("rss_after_kib", "peak RSS")):
        ft, fn = med("flood", "twem", field, 1024), med("flood", "nutcracker", field, 1024)
        if ft is not None and fn is not None:
            lines.append(f"| {label}, client pipelining 400 GETs of 1 MiB, never reading | {ft:.1f} MiB | {fn:.1f} MiB |")
    bt, bn = med("idle", "twem", "rss_before_kib", 1024), med("idle", "nutcracker", "rss_before_kib", 1024)
    if bt is not None and bn is not None:
        lines.append(f"| RSS of a fresh proxy | {bt:.1f} MiB | {bn:.1f} MiB |")
    return lines


def chart(agg, out_dir):
    """Grouped bars: throughput per scenario for Redis and memcached, then proxy CPU
    per request. Written as data files plus a gnuplot script, drawn by gnuplot."""
    dat, count = {}, {}
    for suite in ("redis", "memcached"):
        path = os.path.join(out_dir, f"chart-{suite}.dat")
        with open(path, "w") as f:
            for (s, name), t in agg.items():
                if s == suite and all(x in t for x in TARGETS):
                    f.write('"%s" %.1f %.1f %.1f\n' % (name, *(t[x]["rps"] / 1000 for x in TARGETS)))
        dat[suite] = path
        count[suite] = sum(1 for (s, _), t in agg.items() if s == suite and all(x in t for x in TARGETS))
    cpu_path = os.path.join(out_dir, "chart-cpu.dat")
    count["cpu"] = 0
    with open(cpu_path, "w") as f:
        for (s, name), t in agg.items():
            tw, nu = t.get("twem", {}).get("cpu"), t.get("nutcracker", {}).get("cpu")
            if tw is not None and nu is not None:
                short = "Redis" if s == "redis" else "mc"
                f.write('"%s %s" %.2f %.2f\n' % (short, name, tw, nu))
                count["cpu"] += 1
    bars = """set style data histogram
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set key top left
"""
    script = f"""
set terminal pngcairo size 1000,1000 font "DejaVu Sans,10"
set output "{os.path.join(out_dir, 'chart.png')}"
set multiplot layout 3,1 title "twem vs nutcracker vs direct (median of repetitions, 50 clients; higher is better, except CPU)"
{bars}
set ylabel "thousand requests/s"
set xrange [-0.6:{count['redis'] - 0.4}]
set title "Redis throughput (redis-benchmark); direct = one redis-server"
plot "{dat['redis']}" using 2:xtic(1) title "twem" lc rgb "#d95f02", \\
     '' using 3 title "nutcracker" lc rgb "#7570b3", '' using 4 title "direct" lc rgb "#999999"
set xrange [-0.6:{count['memcached'] - 0.4}]
set title "memcached throughput (twem-load); direct = one memcached"
plot "{dat['memcached']}" using 2:xtic(1) title "twem" lc rgb "#d95f02", \\
     '' using 3 title "nutcracker" lc rgb "#7570b3", '' using 4 title "direct" lc rgb "#999999"
set title "proxy CPU time per request (utime+stime, lower is better)"
set ylabel "µs per request"
set xrange [-0.6:{count['cpu'] - 0.4}]
set key outside right top
set xtics rotate by -25 font ",9"
plot "{cpu_path}" using 2:xtic(1) title "twem" lc rgb "#d95f02", '' using 3 title "nutcracker" lc rgb "#7570b3"
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "bench/out"
    meta = read_meta(os.path.join(out_dir, "meta.txt"))
    agg = aggregate(os.path.join(out_dir, "raw.csv"), int(meta.get("clk_tck", "100")))
    mem = read_mem(os.path.join(out_dir, "mem.csv"))
    md = [
        "# twem benchmark results",
        "",
        f"Measured {meta.get('date')} on {meta.get('nproc')} cores ({meta.get('model')}), "
        f"Linux {meta.get('kernel')}; Redis {meta.get('redis')}, memcached {meta.get('memcached')}, "
        f"nutcracker {meta.get('nutcracker')} (Debian), twem at commit {meta.get('twem')} (release build, "
        f"flags `{meta.get('twem_args') or '(none: one worker per core)'}`).",
        f"Command: `{meta.get('command')}` ({meta.get('reps')} repetitions, {meta.get('clients')} clients, "
        f"requests per run: {meta.get('requests')}). Load average at start {meta.get('load_start')}, "
        f"at end {meta.get('load_end')}.",
        "",
        "Figures are medians over the repetitions; ±x% is the spread (max - min over median) of the throughput.",
        "Throughput ratios are the median over repetitions of the ratio within one repetition (whose runs",
        "are adjacent in time), which cancels most of the drift that the spreads show.",
        "All processes (load tool, proxy, 4 redis-servers, 2 memcached) share the same cores, so the numbers",
        "are noisy and say more about the ratios than about absolute speed. *direct* is one backend without",
        "a proxy (the proxies spread the keys over 4 redis-servers / 2 memcached). Proxy CPU is utime+stime",
        "from /proc/PID/stat over the run, divided by requests; a multi-key request counts once.",
        "",
        "## Redis (redis-benchmark)",
        "",
        *table("redis", agg),
        "",
        "## memcached (bench/loadgen `twem-load mc`, same closed-loop model)",
        "",
        *table("memcached", agg),
        "",
        "## Memory",
        "",
        *mem_section(mem, meta),
        "",
        "## Targets",
        "",
        *targets_section(agg, mem),
        "",
        "![throughput](chart.png)",
        "",
    ]
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(md))
    chart(agg, out_dir)
    print("\n".join(md))


if __name__ == "__main__":
    main()
