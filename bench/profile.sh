#!/usr/bin/env bash
# Where a proxy's time goes: runs twem and nutcracker (and predixy, when
# PREDIXY_BIN names one) under valgrind's callgrind
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
#   PREDIXY_BIN=/path/to/predixy bash bench/profile.sh   # predixy too (PREDIXY_THREADS, 1)
#   PERF=1 bash bench/profile.sh   # also perf stat (CPU, context switches per request)
#                                  # and perf record -e cpu-clock, top symbols in KIND.perf.txt
#
# Needs valgrind and strace (and perf with PERF=1; installed if missing). Only 127.0.0.1; kills only what it started.
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
PREDIXY_BIN=${PREDIXY_BIN:-}
PREDIXY_THREADS=${PREDIXY_THREADS:-1}

install_missing "" valgrind:valgrind strace:strace redis-server:redis-server redis-benchmark:redis-tools \
  nutcracker:nutcracker
[ "${PERF:-0}" != 1 ] || install_missing "" perf:linux-perf
target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build --release -q -p twem-server
TWEM=$target_dir/release/twemproxy

out=$root/bench/out/profile
mkdir -p "$out"
start_scratch

read -r -a ports <<<"$(free_ports 10)"
redis_ports=("${ports[@]:0:4}")

start_redis_servers
for p in "${redis_ports[@]}"; do wait_port "$p" 300; done

profile_one() { # kind listen_port stats_port
  local kind=$1 port=$2 stats=$3 conf=$work/$1.yml cmd=() extra=()
  case $kind in
    twem|nutcracker)
      redis_pool_yaml "$port" >"$conf"
      cmd=("$TWEM")
      [ -n "$TWEM_ARGS" ] && read -r -a extra <<<"$TWEM_ARGS" && cmd+=("${extra[@]}")
      [ "$kind" = nutcracker ] && cmd=(nutcracker)
      cmd+=(-c "$conf" -s "$stats" -a 127.0.0.1 -o "$work/$kind.log" -p "$work/$kind.pid")
      ;;
    predixy)
      conf=$work/predixy.conf
      write_predixy_conf "$conf" "$port" "$PREDIXY_THREADS"
      cmd=("$PREDIXY_BIN" "$conf")
      ;;
  esac
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.$kind.out" --dump-instr=no \
    --instr-atstart=no --trace-children=no \
    "${cmd[@]}" >"$work/$kind.stdout" 2>"$work/$kind.valgrind.log" &
  local vp=$!
  pids+=("$vp")
  wait_port "$port" 300
  # Warm up (backend connections, first allocations) outside the measurement.
  redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n 2000 -r 100000 -d 3 -t "$TEST" -q >/dev/null 2>&1
  callgrind_control --instr=on "$vp" >/dev/null 2>&1
  redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$N" -P "$PIPELINE" -r 100000 -d 3 -t "$TEST" --csv \
    2>/dev/null | tail -1 >"$out/$kind.benchmark.csv"
  callgrind_control --instr=off "$vp" >/dev/null 2>&1
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
  "${cmd[@]}" >>"$work/$kind.stdout" 2>&1 &
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
  [ "${PERF:-0}" = 1 ] && perf_one "$kind" "$port"
  return 0
}

# perf_one KIND PORT (PERF=1): the same load on an uninstrumented proxy once
# more, under `perf stat` (CPU time, context switches and migrations per
# request: a request that crosses threads shows as more context switches) and
# `perf record -e cpu-clock -g` (this machine has no hardware counters), whose
# top symbols by self time go to $out/KIND.perf.txt.
perf_one() {
  local kind=$1 port=$2 vp pp sp
  "${cmd[@]}" >>"$work/$kind.stdout" 2>&1 &
  vp=$!
  pids+=("$vp")
  wait_port "$port" 300
  redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n 2000 -r 100000 -d 3 -t "$TEST" -q >/dev/null 2>&1
  perf stat -e task-clock,context-switches,cpu-migrations -p "$vp" -x, -o "$out/$kind.perfstat.csv" &
  sp=$!
  perf record -q -e cpu-clock -F 999 -g -p "$vp" -o "$out/$kind.perf.data" >/dev/null 2>&1 &
  pp=$!
  sleep 1
  redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$N" -P "$PIPELINE" -r 100000 -d 3 -t "$TEST" -q >/dev/null 2>&1
  kill -INT "$sp" "$pp"
  wait "$sp" "$pp" 2>/dev/null || true
  kill "$vp"
  wait "$vp" 2>/dev/null || true
  # -x, lines: value,unit,event,...; task-clock is in msec.
  awk -F, -v n="$N" -v k="$kind" '
    $3 ~ /^task-clock/ {printf "%s: perf: %.2f µs of CPU per request", k, $1 * 1000 / n}
    $3 == "context-switches" {printf ", %.3f context switches", $1 / n}
    $3 == "cpu-migrations" {printf ", %.3f migrations per request\n", $1 / n}' \
    "$out/$kind.perfstat.csv" | tee -a "$out/$kind.summary.txt"
  perf report -i "$out/$kind.perf.data" --no-children --percent-limit 0.5 --stdio -g none \
    >"$out/$kind.perf.txt" 2>/dev/null || true
}

rm -f "$out"/callgrind.*.out*
profile_one twem "${ports[4]}" "${ports[5]}"
profile_one nutcracker "${ports[6]}" "${ports[7]}"
kinds=twem,nutcracker
if [ -n "$PREDIXY_BIN" ]; then
  profile_one predixy "${ports[8]}" "${ports[9]}"
  kinds+=,predixy
fi
echo "profile: annotated output in $out/{$kinds}.{inclusive,self}.txt"
