#!/usr/bin/env bash
# The benchmark harness: twem vs Debian's nutcracker (and predixy, when given) vs
# Redis/memcached directly.
#
#   bash bench/run.sh                 # full run: 3 repetitions of every scenario (~10 min)
#   QUICK=1 bash bench/run.sh         # smoke test: few requests, 1 repetition (~1 min)
#   REPS=5 bash bench/run.sh          # more repetitions
#   PREDIXY_BIN=/path/to/predixy bash bench/run.sh   # predixy as a third proxy
#   TWEM2_ARGS="--threads 1" bash bench/run.sh       # a second twem, other flags, same run
#
# Other knobs: CLIENTS (50), TWEM_ARGS (extra twemproxy flags; empty by default,
# i.e. twem at its default flags; e.g. TWEM_ARGS="--threads 1" for one event
# loop), TWEM2_ARGS (flags of a second twem process, "twem2", run alongside on
# the same pools, e.g. "--threads 1" to compare one event loop with the default
# in one run; unset: no twem2), PREDIXY_BIN (a predixy binary, e.g. built from joyieldInc/predixy with
# `make CXX="g++ -include time.h"`; unset: no predixy rows), PREDIXY_THREADS
# (predixy's WorkerThreads, 1), NO_PUBLISH=1 (leave bench/results.md and
# bench/chart.png alone).
#
# Starts 4 redis-server and 2 memcached on free loopback ports, nutcracker and twem
# (target/release/twemproxy) on the same pools (same servers, fnv1a_64, ketama),
# predixy (if given) on the same 4 redis-servers (a StandaloneServerPool with
# RefreshMethod fixed and one Group per server; its own hash, crc16 modula; it has
# no memcached, so its memcached cells are n/a), and runs each scenario against
# every proxy and the first backend directly, rotating the order on every scenario
# and repetition so drift hits all alike.
# Redis is driven by redis-benchmark, memcached by bench/loadgen (twem-load), both
# closed-loop: 50 connections, each waiting for its batch of replies.
# Proxy CPU per request is utime+stime from /proc/PID/stat around each run.
# Memory: VmRSS of a freshly started proxy around 2,000 idle connections, and
# around a client that pipelines 400 GETs of a 1 MiB value and never reads.
# Writes bench/out/{raw.csv,mem.csv,results.md,chart.png}, then copies results.md
# and chart.png to bench/. Only 127.0.0.1 is used; only processes this script
# started are killed (by pid), on exit or interrupt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh
label=bench
command_line=$(repeat_command bench/run.sh "$*" QUICK REPS CLIENTS PREDIXY_BIN PREDIXY_THREADS TWEM_ARGS TWEM2_ARGS)

QUICK=${QUICK:-0}
CLIENTS=${CLIENTS:-50}
TWEM_ARGS=${TWEM_ARGS:-}
TWEM2=${TWEM2_ARGS+1}
TWEM2_ARGS=${TWEM2_ARGS:-}
PREDIXY_BIN=${PREDIXY_BIN:-}
PREDIXY_THREADS=${PREDIXY_THREADS:-1}
if [ -n "$PREDIXY_BIN" ] && [ ! -x "$PREDIXY_BIN" ]; then
  echo "bench: PREDIXY_BIN=$PREDIXY_BIN is not an executable" >&2
  exit 1
fi
if [ "$QUICK" = 1 ]; then
  REPS=${REPS:-1}
  N_P1=5000 N_P16=40000 N_MGET=3000 N_FILL=20000
  IDLE_CONNS=200 FLOOD_HOLD_MS=1000
else
  REPS=${REPS:-3}
  N_P1=100000 N_P16=600000 N_MGET=50000 N_FILL=300000
  IDLE_CONNS=2000 FLOOD_HOLD_MS=3000
fi
KEYSPACE=100000
FLOOD_COUNT=400
FLOOD_VALUE=$((1 << 20))

# --- what we need --------------------------------------------------------------
install_missing bench redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools memcached:memcached \
  nutcracker:nutcracker gnuplot:gnuplot-nox python3:python3

target_dir=${CARGO_TARGET_DIR:-$root/target}
echo "bench: building twemproxy (release) and twem-load"
cargo build --release -q -p twem-server
CARGO_TARGET_DIR=$target_dir cargo build --release -q --manifest-path bench/loadgen/Cargo.toml
TWEM=$target_dir/release/twemproxy
LOAD=$target_dir/release/twem-load

# 2,000 idle connections need that many descriptors in the proxy and in twem-load.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

out=$root/bench/out
mkdir -p "$out"
start_scratch

read -r -a ports <<<"$(free_ports 20)"
redis_ports=("${ports[@]:0:4}")
mc_ports=("${ports[@]:4:2}")
twem_redis=${ports[6]} twem_mc=${ports[7]} twem_stats=${ports[8]}
nut_redis=${ports[9]} nut_mc=${ports[10]} nut_stats=${ports[11]}
mem_redis=${ports[12]} mem_stats=${ports[13]}
px_redis=${ports[14]}
twem2_redis=${ports[15]} twem2_mc=${ports[16]} twem2_stats=${ports[17]}

user=(); [ "$(id -u)" -eq 0 ] && user=(-u root)
start_redis_servers
for p in "${mc_ports[@]}"; do
  memcached -l 127.0.0.1 -p "$p" -U 0 -m 1024 "${user[@]}" &
  pids+=($!)
done
for p in "${redis_ports[@]}" "${mc_ports[@]}"; do wait_port "$p"; done

# The same pools for both proxies; only the listen ports differ.
write_conf() { # file redis_port [mc_port]
  {
    redis_pool_yaml "$2"
    local i=1 p
    if [ -n "${3:-}" ]; then
      echo "bench_mc:"
      echo "  listen: 127.0.0.1:$3"
      echo "  hash: fnv1a_64"
      echo "  distribution: ketama"
      echo "  servers:"
      i=1
      for p in "${mc_ports[@]}"; do echo "   - 127.0.0.1:$p:1 mc-$i"; i=$((i + 1)); done
    fi
  } >"$1"
}
write_conf "$work/twem.yml" "$twem_redis" "$twem_mc"
write_conf "$work/twem2.yml" "$twem2_redis" "$twem2_mc"
write_conf "$work/nut.yml" "$nut_redis" "$nut_mc"
write_conf "$work/mem.yml" "$mem_redis"

targets=(twem)
[ -z "$TWEM2" ] || targets+=(twem2)
targets+=(nutcracker)
if [ -n "$PREDIXY_BIN" ]; then
  write_predixy_conf "$work/predixy.conf" "$px_redis" "$PREDIXY_THREADS"
  write_predixy_conf "$work/mem-predixy.conf" "$mem_redis" "$PREDIXY_THREADS"
  targets+=(predixy)
fi
targets+=(direct)

started_pid=""
start_proxy() { # kind conf stats_port name
  local bin=()
  case $1 in
    twem) bin=("$TWEM") ; [ -n "$TWEM_ARGS" ] && read -r -a extra <<<"$TWEM_ARGS" && bin+=("${extra[@]}") ;;
    twem2) bin=("$TWEM") ; [ -n "$TWEM2_ARGS" ] && read -r -a extra <<<"$TWEM2_ARGS" && bin+=("${extra[@]}") ;;
    nutcracker) bin=(nutcracker) ;;
    predixy)
      # No stats port nor pid file: its config says everything; it logs to stdout.
      "$PREDIXY_BIN" "$2" >"$work/$4.log" 2>&1 &
      started_pid=$!
      pids+=("$started_pid")
      return
      ;;
  esac
  "${bin[@]}" -c "$2" -s "$3" -a 127.0.0.1 -o "$work/$4.log" -p "$work/$4.pid" &
  started_pid=$!
  pids+=("$started_pid")
}
# check_proxy PORT NAME: SET and GET of a fresh key through the proxy give back
# what was written, and 40 keys written through it reach every redis-server
# (so a config that routes everything to one server, or nowhere, stops the run).
check_proxy() {
  local port=$1 name=$2 k got before=() i=0 p n
  k="bench:check:$name:$RANDOM"
  got=$(redis-cli -h 127.0.0.1 -p "$port" SET "$k" "v-$k" 2>&1)
  [ "$got" = OK ] || { echo "bench: SET through $name answered: $got" >&2; return 1; }
  got=$(redis-cli -h 127.0.0.1 -p "$port" GET "$k" 2>&1)
  [ "$got" = "v-$k" ] || { echo "bench: GET through $name answered: $got" >&2; return 1; }
  for p in "${redis_ports[@]}"; do before+=("$(redis-cli -h 127.0.0.1 -p "$p" DBSIZE)"); done
  # The counter leads the key: fnv1a_64 keeps keys that differ only in their
  # last bytes on one ketama point (bench:spread:1..40 all land on one server).
  for n in $(seq 40); do echo "SET $n:bench:spread:$name x"; done | redis-cli -h 127.0.0.1 -p "$port" >/dev/null
  for p in "${redis_ports[@]}"; do
    n=$(redis-cli -h 127.0.0.1 -p "$p" DBSIZE)
    if [ "$n" -le "${before[$i]}" ]; then
      echo "bench: 40 keys through $name, none on redis-server 127.0.0.1:$p" >&2
      return 1
    fi
    i=$((i + 1))
  done
  echo "bench: $name checked (SET/GET round trip, keys on all ${#redis_ports[@]} redis-servers)"
}
stop_proxy() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

start_proxy twem "$work/twem.yml" "$twem_stats" twem; twem_pid=$started_pid
start_proxy nutcracker "$work/nut.yml" "$nut_stats" nutcracker; nut_pid=$started_pid
twem2_pid=""
if [ -n "$TWEM2" ]; then
  start_proxy twem2 "$work/twem2.yml" "$twem2_stats" twem2; twem2_pid=$started_pid
  wait_port "$twem2_redis"
  wait_port "$twem2_mc"
fi
px_pid=""
if [ -n "$PREDIXY_BIN" ]; then
  start_proxy predixy "$work/predixy.conf" "" predixy; px_pid=$started_pid
fi
for p in "$twem_redis" "$twem_mc" "$nut_redis" "$nut_mc"; do wait_port "$p"; done
[ -z "$px_pid" ] || wait_port "$px_redis"
for t in "${targets[@]}"; do
  case $t in
    twem) check_proxy "$twem_redis" twem ;;
    twem2) check_proxy "$twem2_redis" twem2 ;;
    nutcracker) check_proxy "$nut_redis" nutcracker ;;
    predixy) check_proxy "$px_redis" predixy ;;
  esac
done

clk_tck=$(getconf CLK_TCK)
cpu_ticks() { # pid -> utime+stime of all its threads, in clock ticks
  # Drop "pid (comm) " first: utime and stime are then fields 12 and 13.
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "nproc=$(nproc)"
  echo "model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel=$(uname -r)"
  echo "redis=$(redis-server --version | grep -o 'v=[^ ]*' | cut -d= -f2)"
  echo "memcached=$(memcached -V | cut -d' ' -f2)"
  echo "nutcracker=$(nutcracker -V 2>&1 | head -1 | sed 's/This is nutcracker-//')"
  if [ -n "$PREDIXY_BIN" ]; then
    echo "predixy=$("$PREDIXY_BIN" -v 2>&1 | head -1 | sed 's/.*predixy-//')"
    echo "predixy_threads=$PREDIXY_THREADS"
  fi
  echo "twem=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "command=$command_line"
  echo "twem_args=$TWEM_ARGS"
  [ -z "$TWEM2" ] || echo "twem2_args=$TWEM2_ARGS"
  echo "reps=$REPS"
  echo "clients=$CLIENTS"
  echo "requests=P1 $N_P1, P16 $N_P16, MGET $N_MGET"
  echo "idle_conns=$IDLE_CONNS"
  echo "flood=$FLOOD_COUNT x $FLOOD_VALUE bytes, held ${FLOOD_HOLD_MS} ms"
  echo "clk_tck=$clk_tck"
  echo "load_start=$(loadavg)"
} >"$out/meta.txt"

# --- fill: every key the GETs ask for exists, on the proxies' shards and directly --
echo "bench: filling $KEYSPACE keys"
# predixy places keys by its own hash, so it gets its own fill.
fill_ports=("$twem_redis" "${redis_ports[0]}")
[ -z "$px_pid" ] || fill_ports+=("$px_redis")
for p in "${fill_ports[@]}"; do
  redis-benchmark -h 127.0.0.1 -p "$p" -c "$CLIENTS" -n "$N_FILL" -P 16 -r "$KEYSPACE" -d 3 -t set -q >/dev/null 2>&1
done
for p in "$twem_mc" "${mc_ports[0]}"; do
  "$LOAD" mc --port "$p" --test set --clients "$CLIENTS" --pipeline 16 --requests "$N_FILL" --keyspace "$KEYSPACE" >/dev/null
done

# --- throughput and latency --------------------------------------------------------
# suite|name|pipeline|requests|what
scenarios=(
  "redis|SET P1|1|$N_P1|set"
  "redis|GET P1|1|$N_P1|get"
  "redis|SET P16|16|$N_P16|set"
  "redis|GET P16|16|$N_P16|get"
  "redis|MGET 10 keys P1|1|$N_MGET|mget"
  "memcached|set P1|1|$N_P1|set"
  "memcached|get P1|1|$N_P1|get"
  "memcached|set P16|16|$N_P16|set"
  "memcached|get P16|16|$N_P16|get"
  "memcached|get 10 keys P1|1|$N_MGET|mget"
)
mget_args=()
for _ in $(seq 10); do mget_args+=("key:__rand_int__"); done

raw=$out/raw.csv
echo "suite,scenario,target,rep,requests,rps,avg_ms,p50_ms,p95_ms,p99_ms,max_ms,cpu_ticks" >"$raw"

run_one() { # suite name pipeline requests what target rep
  local suite=$1 name=$2 pl=$3 n=$4 what=$5 target=$6 rep=$7 port pid="" before=0 after=0 csv
  case $suite/$target in
    redis/twem) port=$twem_redis pid=$twem_pid ;;
    redis/twem2) port=$twem2_redis pid=$twem2_pid ;;
    redis/nutcracker) port=$nut_redis pid=$nut_pid ;;
    redis/predixy) port=$px_redis pid=$px_pid ;;
    redis/direct) port=${redis_ports[0]} ;;
    memcached/twem) port=$twem_mc pid=$twem_pid ;;
    memcached/twem2) port=$twem2_mc pid=$twem2_pid ;;
    memcached/nutcracker) port=$nut_mc pid=$nut_pid ;;
    memcached/direct) port=${mc_ports[0]} ;;
  esac
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  if [ "$suite" = redis ]; then
    local rb=(redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$n" -P "$pl" -r "$KEYSPACE" -d 3 --csv)
    if [ "$what" = mget ]; then rb+=(MGET "${mget_args[@]}"); else rb+=(-t "$what"); fi
    csv=$("${rb[@]}" 2>>"$work/redis-benchmark.err" | tail -1)
  else
    csv=$("$LOAD" mc --port "$port" --test "$what" --clients "$CLIENTS" --pipeline "$pl" \
      --requests "$n" --keyspace "$KEYSPACE" --seed "$rep" | tail -1)
  fi
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  # "test","rps","avg","min","p50","p95","p99","max" -> rps,avg,p50,p95,p99,max
  local fields
  fields=$(echo "$csv" | tr -d '"' | awk -F, '{print $2","$3","$5","$6","$7","$8}')
  case $fields in
    [0-9]*) ;;
    *) echo "bench: $suite '$name' via $target gave no result: $csv" >&2; return 1 ;;
  esac
  local cpu=""
  [ -n "$pid" ] && cpu=$((after - before))
  echo "$suite,$name,$target,$rep,$n,$fields,$cpu" >>"$raw"
  printf '  %-9s %-16s %-10s rep %s  %10s req/s\n' "$suite" "$name" "$target" "$rep" "${fields%%,*}"
}

echo "bench: $REPS repetition(s) of ${#scenarios[@]} scenarios x ${#targets[@]} targets"
k=0
for rep in $(seq "$REPS"); do
  for s in "${scenarios[@]}"; do
    IFS='|' read -r suite name pl n what <<<"$s"
    for i in "${!targets[@]}"; do
      t=${targets[$(((i + k) % ${#targets[@]}))]}
      # predixy speaks only Redis.
      [ "$suite/$t" = memcached/predixy ] && continue
      run_one "$suite" "$name" "$pl" "$n" "$what" "$t" "$rep"
    done
    k=$((k + 1))
  done
done
stop_proxy "$twem_pid"
[ -z "$twem2_pid" ] || stop_proxy "$twem2_pid"
stop_proxy "$nut_pid"
[ -z "$px_pid" ] || stop_proxy "$px_pid"

# --- memory: a fresh proxy for every measurement, so one probe's freed-but-kept
# allocator memory does not hide the next probe's growth.
mem=$out/mem.csv
echo "probe,target,rep,conns_or_count,rss_before_kib,rss_after_kib,result" >"$mem"
echo "bench: memory probes"
for rep in $(seq "$REPS"); do
  kinds=(twem); [ -z "$TWEM2" ] || kinds+=(twem2)
  kinds+=(nutcracker); [ -z "$PREDIXY_BIN" ] || kinds+=(predixy)
  order=()
  for i in "${!kinds[@]}"; do order+=("${kinds[$(((i + rep - 1) % ${#kinds[@]}))]}"); done
  for kind in "${order[@]}"; do
    conf=$work/mem.yml; [ "$kind" = predixy ] && conf=$work/mem-predixy.conf
    start_proxy "$kind" "$conf" "$mem_stats" "mem-$kind"; p=$started_pid
    wait_port "$mem_redis"
    sleep 0.3
    line=$("$LOAD" idle --port "$mem_redis" --pid "$p" --conns "$IDLE_CONNS" --settle-ms 1000 | tail -1 | tr -d '"')
    IFS=, read -r c b a per <<<"$line"
    echo "idle,$kind,$rep,$c,$b,$a,$per" >>"$mem"
    printf '  idle      %-10s rep %s  %s KiB/conn\n' "$kind" "$rep" "$per"
    stop_proxy "$p"

    start_proxy "$kind" "$conf" "$mem_stats" "mem-$kind"; p=$started_pid
    wait_port "$mem_redis"
    sleep 0.3
    line=$("$LOAD" flood --port "$mem_redis" --pid "$p" --count "$FLOOD_COUNT" --value-size "$FLOOD_VALUE" \
      --hold-ms "$FLOOD_HOLD_MS" --sample-ms 20 | tail -1 | tr -d '"')
    IFS=, read -r c _ b peak _ growth <<<"$line"
    echo "flood,$kind,$rep,$c,$b,$peak,$growth" >>"$mem"
    printf '  flood     %-10s rep %s  +%s KiB peak\n' "$kind" "$rep" "$growth"
    stop_proxy "$p"
  done
done
echo "load_end=$(loadavg)" >>"$out/meta.txt"

# --- report ------------------------------------------------------------------------
python3 bench/report.py "$out"
if [ "${NO_PUBLISH:-0}" != 1 ] && [ "$QUICK" != 1 ]; then
  cp "$out/results.md" bench/results.md
  cp "$out/chart.png" bench/chart.png
  echo "bench: wrote bench/results.md and bench/chart.png"
else
  echo "bench: wrote bench/out/results.md and bench/out/chart.png (not published: quick or NO_PUBLISH run)"
fi
