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

# shellcheck source=bench/lib.sh
source bench/lib.sh
install_missing "" redis-server:redis-server redis-cli:redis-tools memcached:memcached

# Every port examples/conf/nutcracker.yml and this script use. Checked before
# anything starts: with a foreign redis on 7001 the demo would otherwise write
# its keys into that server and report success.
backend_redis=(7001 7002 7003)
backend_memcached=(11311 11312)
proxy_ports=(22121 22122 22222)
port_in_use() {
  # Something accepts connections there (bash's /dev/tcp, no extra tools).
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
busy=()
for port in "${backend_redis[@]}" "${backend_memcached[@]}" "${proxy_ports[@]}"; do
  port_in_use "$port" && busy+=("$port")
done
if [ "${#busy[@]}" -gt 0 ]; then
  echo "run-example: port(s) ${busy[*]} on 127.0.0.1 already in use; stop what listens there" \
       "(e.g. ss -ltnp) and run again. Nothing was started." >&2
  exit 1
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

# Wait until our process $1 serves port $2: fail (showing its log $3) if it
# exits first, e.g. because another process took the port meanwhile.
wait_ready() {
  local pid=$1 port=$2 log=$3
  for _ in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run-example: the process for port $port exited at start:" >&2
      cat "$log" >&2
      exit 1
    fi
    port_in_use "$port" && break
    sleep 0.05
  done
  # Still ours: a listener that is someone else's would leave ours dead.
  if ! port_in_use "$port" || ! kill -0 "$pid" 2>/dev/null; then
    echo "run-example: nothing of ours serves port $port:" >&2
    cat "$log" >&2
    exit 1
  fi
}

for port in "${backend_redis[@]}"; do
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    >"$work/redis-$port.log" 2>&1 &
  pids+=($!)
  wait_ready "$!" "$port" "$work/redis-$port.log"
done
user=(); [ "$(id -u)" -eq 0 ] && user=(-u root)
for port in "${backend_memcached[@]}"; do
  memcached -l 127.0.0.1 -p "$port" -U 0 "${user[@]}" >"$work/memcached-$port.log" 2>&1 &
  pids+=($!)
  wait_ready "$!" "$port" "$work/memcached-$port.log"
done

echo "twem: Redis pool 'alpha' on 127.0.0.1:22121, memcached pool 'beta' on 127.0.0.1:22122, stats on 127.0.0.1:22222"
if [ "${1:-}" = "--check" ]; then
  target/release/twemproxy -c examples/conf/nutcracker.yml -a 127.0.0.1 -i 100 2>"$work/twem.log" &
  pids+=($!)
  wait_ready "$!" 22121 "$work/twem.log"
  expect() { # expect WANT COMMAND...: run it, fail unless it prints WANT
    local got
    got=$("${@:2}") || { echo "run-example: '${*:2}' failed" >&2; exit 1; }
    printf '%s\n' "$got"
    if [ "$got" != "$1" ]; then
      echo "run-example: '${*:2}' printed '$got', expected '$1'" >&2
      exit 1
    fi
  }
  expect OK redis-cli -p 22121 set greeting hello
  expect hello redis-cli -p 22121 get greeting
  expect OK redis-cli -p 22121 mset a 1 b 2 c 3
  expect "$(printf '1\n2\n3\nhello')" redis-cli -p 22121 mget a b c greeting
  expect "$(printf 'STORED\r\nVALUE k 0 5\r\nworld\r\nEND\r')" \
    timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/22122; printf "set k 0 0 5\r\nworld\r\nget k\r\nquit\r\n" >&3; cat <&3'
  echo "--- where the keys live:"
  printf 'greeting\na\nb\nc\n' | target/release/twemproxy --locate -c examples/conf/nutcracker.yml --pool alpha
  exit 0
fi
exec_pid_file="$work/twem.pid"
target/release/twemproxy -c examples/conf/nutcracker.yml -a 127.0.0.1 -p "$exec_pid_file" &
pids+=($!)
wait "${pids[-1]}"
