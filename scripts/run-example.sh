#!/usr/bin/env bash
# Set up and run twem on examples/conf/nutcracker.yml: installs redis-server and
# memcached if missing (Debian/Ubuntu), starts three Redis and two memcached
# backends on loopback, builds twemproxy and runs it in the foreground.
# Ctrl-C stops the proxy and the backends this script started.
#
#   bash scripts/run-example.sh            # then: redis-cli -p 22121 set foo bar
#   bash scripts/run-example.sh --check    # start, run a few commands, stop
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v memcached >/dev/null || missing+=(memcached)
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo build --release -p twem-server
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

for port in 7001 7002 7003; do
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
  pids+=($!)
done
user=(); [ "$(id -u)" -eq 0 ] && user=(-u root)
for port in 11311 11312; do
  memcached -l 127.0.0.1 -p "$port" -U 0 "${user[@]}" &
  pids+=($!)
done
sleep 0.5

echo "twem: Redis pool 'alpha' on 127.0.0.1:22121, memcached pool 'beta' on 127.0.0.1:22122, stats on 127.0.0.1:22222"
if [ "${1:-}" = "--check" ]; then
  target/release/twemproxy -c examples/conf/nutcracker.yml -a 127.0.0.1 -i 100 &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p 22121 ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p 22121 set greeting hello
  redis-cli -p 22121 get greeting
  redis-cli -p 22121 mset a 1 b 2 c 3
  redis-cli -p 22121 mget a b c greeting
  printf 'set k 0 0 5\r\nworld\r\nget k\r\nquit\r\n' | timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/22122; cat >&3; cat <&3'
  echo "--- where the keys live:"
  printf 'greeting\na\nb\nc\n' | target/release/twemproxy --locate -c examples/conf/nutcracker.yml --pool alpha
  exit 0
fi
exec_pid_file="$work/twem.pid"
target/release/twemproxy -c examples/conf/nutcracker.yml -a 127.0.0.1 -p "$exec_pid_file" &
pids+=($!)
wait "${pids[-1]}"
