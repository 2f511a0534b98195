#!/usr/bin/env bash
# The embedded path against redis-rs (issue #15): examples/examples/pool_bench.rs
# on #[tokio::main] (tokio's default multi-thread runtime), C tasks each looping
# SET then GET, C = 1, 16, 128, for
#   - the embedded twem Pool over SHARDS redis-servers (pool),
#   - redis-rs 1.8's MultiplexedConnection straight to one of them (redis-rs),
#   - the same MultiplexedConnection through a twemproxy process over the same
#     servers (redis-rs-twemproxy),
# each run lasting RUN_SECONDS, the rows in an order that rotates every round,
# REPS rounds, medians; then the ratios Pool / redis-rs (median of per-round
# ratios) against the issue's targets (>= 0.8x straight, >= 1.0x via twemproxy).
# pool_bench starts the redis-servers and the twemproxy itself (release build,
# default flags unless TWEM_ARGS), on free loopback ports, and kills them when
# it ends.
#
#   bash bench/embedded.sh               # 5 rounds of 2 s per row and C (~2 min)
#   QUICK=1 bash bench/embedded.sh       # 1 round of 0.3 s (smoke test, ~10 s)
#   REPS=9 RUN_SECONDS=3 bash bench/embedded.sh
#
# Knobs: REPS (5), RUN_SECONDS (2), CONCURRENCY (1,16,128), SHARDS (2),
# ROWS (pool,redis-rs,redis-rs-twemproxy; any of pool_bench's row ids, e.g.
# add pool-1task,twemproxy,direct), TWEM_ARGS (extra twemproxy flags, e.g.
# "--threads 1"). Writes bench/out/embedded.md (a header saying what ran where,
# then pool_bench's tables) and prints it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh
label=embedded
command_line=$(repeat_command bench/embedded.sh "$*" QUICK REPS RUN_SECONDS CONCURRENCY SHARDS ROWS TWEM_ARGS)

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  REPS=${REPS:-1} RUN_SECONDS=${RUN_SECONDS:-0.3}
else
  REPS=${REPS:-5} RUN_SECONDS=${RUN_SECONDS:-2}
fi
CONCURRENCY=${CONCURRENCY:-1,16,128}
SHARDS=${SHARDS:-2}
ROWS=${ROWS:-pool,redis-rs,redis-rs-twemproxy}
TWEM_ARGS=${TWEM_ARGS:-}

install_missing embedded redis-server:redis-server
target_dir=${CARGO_TARGET_DIR:-$root/target}
echo "embedded: building twemproxy and pool_bench (release)"
cargo build --release -q -p twem-server
cargo build --release -q -p twem-examples --example pool_bench

out=$root/bench/out
mkdir -p "$out"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(loadavg)
tables=$("$target_dir/release/examples/pool_bench" --twemproxy "$target_dir/release/twemproxy" \
  --twemproxy-args "$TWEM_ARGS" --rows "$ROWS" --concurrency "$CONCURRENCY" --shards "$SHARDS" \
  --seconds "$RUN_SECONDS" --repeat "$REPS" --stat median)
{
  echo "# twem embedded Pool vs redis-rs"
  echo
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores" \
    "($(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), Linux $(uname -r);" \
    "Redis $(redis-server --version | grep -o 'v=[^ ]*' | cut -d= -f2), redis-rs 1.8 (tokio-comp)," \
    "twem at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (release build; twemproxy" \
    "${TWEM_ARGS:+flags \`$TWEM_ARGS\`}${TWEM_ARGS:-at its default flags})."
  echo "Command: \`$command_line\` ($REPS round(s) of $RUN_SECONDS s per row and C, $SHARDS shards)." \
    "Load average at start $load_start, at end $(loadavg)."
  echo
  echo "All clients run in one process on \`#[tokio::main]\` (tokio's default multi-thread runtime);"
  echo "C tasks each loop SET then GET of a 32-byte value. Cells are medians over the rounds; ratios are"
  echo "the median over rounds of the ratio within a round (the rows of a round run back to back, in an"
  echo "order that rotates every round). The servers, the proxy and the client share the machine's cores."
  echo
  echo "$tables"
} >"$out/embedded.md"
cat "$out/embedded.md"
echo "embedded: wrote bench/out/embedded.md"
