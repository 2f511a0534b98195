#!/usr/bin/env bash
# Runs every example in examples/examples against local servers and fails if
# any of them does: 2 redis-servers and 2 memcached on free loopback ports,
# killed (by pid) on exit. mini_proxy is started in the background and
# checked with redis-cli. Needs redis-server, redis-cli and memcached.
set -euo pipefail
cd "$(dirname "$0")/.."

for bin in redis-server redis-cli memcached; do
    command -v "$bin" >/dev/null || { echo "examples.sh: $bin not installed" >&2; exit 1; }
done

pids=()
tmp=$(mktemp -d)
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

# free_port, wait_port.
source scripts/ports.sh

redis=()
for i in 1 2; do
    free_port
    mkdir -p "$tmp/redis$i"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$tmp/redis$i" >"$tmp/redis$i.log" 2>&1 &
    pids+=($!)
    redis+=("127.0.0.1:$port")
done
mc=()
user=()
[ "$(id -u)" = 0 ] && user=(-u root)
for i in 1 2; do
    free_port
    memcached -l 127.0.0.1 -p "$port" -U 0 "${user[@]}" >"$tmp/mc$i.log" 2>&1 &
    pids+=($!)
    mc+=("127.0.0.1:$port")
done
for a in "${redis[@]}" "${mc[@]}"; do
    wait_port "${a##*:}"
done

cargo build -q -p twem-examples --examples

failed=0
run() {
    local name=$1
    shift
    echo "== $name $*"
    if ! cargo run -q -p twem-examples --example "$name" -- "$@"; then
        echo "examples.sh: FAILED: $name" >&2
        failed=1
    fi
}

run ring_lookup
run codec
run embedded_redis "${redis[@]}"
run embedded_memcache "${mc[@]}"

echo "== embedded_redis_rs (through twemproxy, then on the Pool)"
cargo build -q -p twem-server
free_port
rr_port=$port
free_port
rr_stats=$port
{
    printf 'rr:\n  listen: 127.0.0.1:%s\n  redis: true\n  hash: murmur\n  hash_tag: "{}"\n  servers:\n' "$rr_port"
    for a in "${redis[@]}"; do printf '   - %s:1\n' "$a"; done
} >"$tmp/rr.yml"
target/debug/twemproxy -c "$tmp/rr.yml" -s "$rr_stats" >"$tmp/rr.log" 2>&1 &
rr_pid=$!
pids+=("$rr_pid")
if wait_port "$rr_port"; then
    run embedded_redis_rs "127.0.0.1:$rr_port" "${redis[@]}"
else
    cat "$tmp/rr.log" >&2
    failed=1
fi
kill "$rr_pid" 2>/dev/null || true
wait "$rr_pid" 2>/dev/null || true

echo "== mini_proxy"
free_port
proxy_port=$port
cargo run -q -p twem-examples --example mini_proxy -- "127.0.0.1:$proxy_port" "${redis[@]}" \
    >"$tmp/mini_proxy.log" 2>&1 &
proxy_pid=$!
pids+=("$proxy_pid")
if wait_port "$proxy_port"; then
    # Each check: the redis-cli command, then the exact output expected.
    check() {
        local want=$1
        shift
        local got
        got=$(redis-cli -p "$proxy_port" "$@" 2>&1) || true
        if [ "$got" != "$want" ]; then
            echo "examples.sh: mini_proxy: redis-cli $*: expected $(printf %q "$want"), got $(printf %q "$got")" >&2
            failed=1
        else
            echo "redis-cli $*: ok"
        fi
    }
    check "PONG" ping
    check "OK" mset ex:a 1 ex:b 2 ex:c 3 ex:d 4
    # The nil for ex:missing is an empty last line, which $(...) drops.
    check $'1\n2\n3\n4' mget ex:a ex:b ex:c ex:d ex:missing
    check "2" get ex:b
    check "4" del ex:a ex:b ex:c ex:d
    check "ERR unknown command 'nosuchcmd', with args beginning with: 'x' " nosuchcmd x
    # Keys are really spread over both servers: each holds some of them.
    for i in $(seq 1 20); do redis-cli -p "$proxy_port" set "spread:$i" "$i" >/dev/null; done
    for a in "${redis[@]}"; do
        n=$(redis-cli -p "${a##*:}" dbsize)
        if [ "$n" -lt 1 ] || [ "$n" -ge 20 ]; then
            echo "examples.sh: mini_proxy: server $a holds $n of 20 keys" >&2
            failed=1
        fi
    done
    echo "keys spread over both servers: ok"
else
    cat "$tmp/mini_proxy.log" >&2
    failed=1
fi
kill "$proxy_pid" 2>/dev/null || true
wait "$proxy_pid" 2>/dev/null || true

if [ "$failed" != 0 ]; then
    echo "examples.sh: some examples failed" >&2
    exit 1
fi
echo "examples.sh: every example passed"
