#!/usr/bin/env bash
# Where a proxy's time goes: runs twem and nutcracker under valgrind's callgrind
# (this machine's perf has no hardware counters: `perf stat -e instructions true`
# says <not supported>), drives the same short redis-benchmark load through each,
# and prints instructions per request and the top functions by inclusive and self
# cost; then counts the syscalls per request of the same load (strace -c) on an
# uninstrumented proxy, since callgrind sees no kernel time. Outputs stay in
# bench/out/profile/.
#
#   bash bench/profile.sh                    # GET, pipeline 1, 20,000 requests
#   TEST=set PIPELINE=16 N=100000 bash bench/profile.sh
#   TWEM_ARGS="--threads 1" bash bench/profile.sh
#
# Needs valgrind and strace (installed if missing). Only 127.0.0.1; kills only what it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh
label=profile
TEST=${TEST:-get}
PIPELINE=${PIPELINE:-1}
N=${N:-20000}
CLIENTS=${CLIENTS:-50}
TWEM_ARGS=${TWEM_ARGS:-}   # extra twemproxy flags, e.g. "--threads 1"

install_missing "" valgrind:valgrind strace:strace redis-server:redis-server redis-benchmark:redis-tools \
  nutcracker:nutcracker
target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build --release -q -p twem-server
TWEM=$target_dir/release/twemproxy

out=$root/bench/out/profile
mkdir -p "$out"
start_scratch

read -r -a ports <<<"$(free_ports 8)"
redis_ports=("${ports[@]:0:4}")

start_redis_servers
for p in "${redis_ports[@]}"; do wait_port "$p" 300; done

profile_one() { # kind listen_port stats_port
  local kind=$1 port=$2 stats=$3 conf=$work/$1.yml
  redis_pool_yaml "$port" >"$conf"
  local bin=("$TWEM") extra=()
  [ -n "$TWEM_ARGS" ] && read -r -a extra <<<"$TWEM_ARGS" && bin+=("${extra[@]}")
  [ "$kind" = nutcracker ] && bin=(nutcracker)
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.$kind.out" --dump-instr=no \
    --instr-atstart=no --trace-children=no \
    "${bin[@]}" -c "$conf" -s "$stats" -a 127.0.0.1 -o "$work/$kind.log" -p "$work/$kind.pid" \
    2>"$work/$kind.valgrind.log" &
  local vp=$!
  pids+=("$vp")
  wait_port "$port" 300
  # Warm up (backend connections, first allocations) outside the measurement.
  redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n 2000 -r 100000 -d 3 -t "$TEST" -q >/dev/null 2>&1
  callgrind_control --instr=on "$vp" >/dev/null
  redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$N" -P "$PIPELINE" -r 100000 -d 3 -t "$TEST" --csv \
    2>/dev/null | tail -1 >"$out/$kind.benchmark.csv"
  callgrind_control --instr=off "$vp" >/dev/null
  kill "$vp"
  wait "$vp" 2>/dev/null || true
  local ir
  ir=$(grep -h '^totals:' "$out"/callgrind."$kind".out* | awk '{s += $2} END {print s}')
  echo "$kind: $ir instructions for $N requests = $((ir / N)) per request ($TEST, pipeline $PIPELINE)" | tee "$out/$kind.summary.txt"
  # Whole annotations to a file first: `| head` would end callgrind_annotate by SIGPIPE.
  callgrind_annotate --inclusive=yes "$out"/callgrind."$kind".out* >"$work/incl.txt" 2>/dev/null
  callgrind_annotate "$out"/callgrind."$kind".out* >"$work/self.txt" 2>/dev/null
  sed -n 1,70p "$work/incl.txt" >"$out/$kind.inclusive.txt"
  sed -n 1,70p "$work/self.txt" >"$out/$kind.self.txt"

  # Kernel time is invisible to callgrind: count the syscalls of the same load on
  # an uninstrumented proxy instead.
  "${bin[@]}" -c "$conf" -s "$stats" -a 127.0.0.1 -o "$work/$kind.log" -p "$work/$kind.pid" &
  vp=$!
  pids+=("$vp")
  wait_port "$port" 300
  redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n 2000 -r 100000 -d 3 -t "$TEST" -q >/dev/null 2>&1
  timeout 120 strace -c -f -p "$vp" -o "$out/$kind.syscalls.txt" 2>/dev/null &
  local sp=$!
  sleep 1
  redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$N" -P "$PIPELINE" -r 100000 -d 3 -t "$TEST" -q >/dev/null 2>&1
  kill -INT "$sp"
  wait "$sp" 2>/dev/null || true
  kill "$vp"
  wait "$vp" 2>/dev/null || true
  awk -v n="$N" -v k="$kind" '$NF == "total" {printf "%s: %.2f syscalls per request\n", k, $4 / n}' \
    "$out/$kind.syscalls.txt" | tee -a "$out/$kind.summary.txt"
}

rm -f "$out"/callgrind.*.out*
profile_one twem "${ports[4]}" "${ports[5]}"
profile_one nutcracker "${ports[6]}" "${ports[7]}"
echo "profile: annotated output in $out/{twem,nutcracker}.{inclusive,self}.txt"
