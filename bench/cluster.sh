#!/usr/bin/env bash
# twem vs predixy in front of a Redis Cluster (issue #18): a local cluster of
# three masters (no replicas), twem (release build, default flags) and
# predixy (cluster mode) both seeded with it, then redis-benchmark SET/GET at
# pipeline 16 and 1 (50 clients) against each proxy in turn, ROUNDS times.
# Reports requests per second and the proxy's CPU per request (utime+stime
# from /proc/PID/stat over the run, divided by the requests). Not in CI.
#
#   cargo build --release -p twem-server && bash bench/cluster.sh
#
# Knobs: N (200000 requests per test), CLIENTS (50), ROUNDS (2),
# PREDIXY (/work/peers/predixy/src/predixy), PREDIXY_THREADS (nproc, what
# twem's default --threads is), TWEM_ARGS (none). Only the processes this
# script started are killed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BIN=$ROOT/target/release/twemproxy
PREDIXY=${PREDIXY:-/work/peers/predixy/src/predixy}
N=${N:-200000}
CLIENTS=${CLIENTS:-50}
ROUNDS=${ROUNDS:-2}
PREDIXY_THREADS=${PREDIXY_THREADS:-$(nproc)}
TWEM_ARGS=${TWEM_ARGS:-}
label=cluster
[ -x "$BIN" ] || { echo "cluster: build twem first: cargo build --release -p twem-server" >&2; exit 1; }
[ -x "$PREDIXY" ] || { echo "cluster: predixy not found at $PREDIXY (set PREDIXY)" >&2; exit 1; }
install_missing cluster redis-server:redis-server redis-benchmark:redis-tools
start_scratch

read -r P1 P2 P3 B1 B2 B3 TW PX ST <<<"$(free_ports 9)"
nodes=("$P1" "$P2" "$P3")
buses=("$B1" "$B2" "$B3")
for i in 0 1 2; do
  p=${nodes[$i]}
  mkdir -p "$work/$p"
  redis-server --port "$p" --cluster-port "${buses[$i]}" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work/$p" --cluster-enabled yes --cluster-config-file nodes.conf \
    --logfile "$work/redis-$p.log" &
  pids+=($!)
done
for p in "${nodes[@]}"; do wait_port "$p"; done
redis-cli --cluster create "127.0.0.1:$P1" "127.0.0.1:$P2" "127.0.0.1:$P3" --cluster-yes >/dev/null
for _ in $(seq 100); do
  ok=0
  for p in "${nodes[@]}"; do redis-cli -p "$p" cluster info | grep -q cluster_state:ok && ok=$((ok + 1)); done
  [ "$ok" -eq 3 ] && break
  sleep 0.1
done

cat > "$work/twem.yml" <<Y
bench_cluster:
  listen: 127.0.0.1:$TW
  redis: true
  cluster: true
  servers:
   - 127.0.0.1:$P1:1
Y
# shellcheck disable=SC2086
"$BIN" -c "$work/twem.yml" -s "$ST" -a 127.0.0.1 -o "$work/twem.log" $TWEM_ARGS &
TPID=$!
pids+=($TPID)
cat > "$work/predixy.conf" <<C
Name bench
Bind 127.0.0.1:$PX
WorkerThreads $PREDIXY_THREADS
ClientTimeout 300
LogVerbSample 0
LogDebugSample 0
LogInfoSample 0
LogNoticeSample 0
LogWarnSample 1
LogErrorSample 1
Authority {
    Auth {
        Mode write
    }
}
ClusterServerPool {
    MasterReadPriority 100
    RefreshInterval 1
    ServerTimeout 1
    ServerFailureLimit 10
    ServerRetryTimeout 1
    KeepAlive 120
    Servers {
        + 127.0.0.1:$P1
    }
}
C
"$PREDIXY" "$work/predixy.conf" >"$work/predixy.log" 2>&1 &
PPID_=$!
pids+=($PPID_)
wait_port "$TW"
wait_port "$PX"
# Both proxies have read the slot map once a key on every master answers.
for port in "$TW" "$PX"; do
  for _ in $(seq 50); do
    redis-cli -p "$port" set warm 1 >/dev/null 2>&1 && redis-cli -p "$port" mget a b c d e f >/dev/null 2>&1 && break
    sleep 0.1
  done
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
# run NAME PORT PID PIPELINE: one redis-benchmark SET,GET run; prints a row.
run() {
  local name=$1 port=$2 pid=$3 pipe=$4 before after out set get
  before=$(ticks "$pid")
  out=$(redis-benchmark -p "$port" -t set,get -n "$N" -c "$CLIENTS" -P "$pipe" -r 100000 --csv 2>/dev/null)
  after=$(ticks "$pid")
  set=$(echo "$out" | awk -F'"' '$2=="SET"{print $4}')
  get=$(echo "$out" | awk -F'"' '$2=="GET"{print $4}')
  python3 - "$name" "$pipe" "$set" "$get" "$before" "$after" "$HZ" "$N" <<'PY'
import sys
name, pipe, s, g, b, a, hz, n = sys.argv[1:]
us = (int(a) - int(b)) / int(hz) * 1e6 / (2 * int(n))
print(f"| {name:8} | {pipe:>2} | {float(s):>12,.0f} | {float(g):>12,.0f} | {us:8.2f} |")
PY
}
echo "cluster of 3 masters; $N requests per test, $CLIENTS clients; twem ${TWEM_ARGS:-(default flags)}, predixy WorkerThreads $PREDIXY_THREADS; $(nproc) cores"
echo "| proxy    | -P | SET req/s    | GET req/s    | CPU us/req |"
echo "|---|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  for pipe in 16 1; do
    run twem "$TW" "$TPID" "$pipe"
    run predixy "$PX" "$PPID_" "$pipe"
  done
done
# Every key the benchmark wrote went through the proxies to the right node:
# the proxies' own view must agree with the cluster's.
t=$(redis-cli -p "$TW" dbsize)
echo "keys through twem's DBSIZE (summed over masters): $t"
