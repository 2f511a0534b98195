#!/usr/bin/env bash
# TLS through twem vs plain (issue #19): redis-benchmark SET/GET at pipeline 1
# and 16 against redis-server directly (plain and --tls-port) and through
# twem's plain pool, a TLS listener with a plain backend, and TLS on both
# sides; then twem's RSS with 1000 idle clients, plain and TLS. Not in CI.
#
#   cargo build --release -p twem-server && bash bench/tls.sh
#
# Knobs: N (200000 requests), CLIENTS (50), TWEM_ARGS ("--threads 1", as
# bench/run.sh: the load tool and the server share the cores). Certificates
# are made with openssl in a temporary directory; only the processes this
# script started are killed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/twemproxy
N=${N:-200000}
CLIENTS=${CLIENTS:-50}
TWEM_ARGS=${TWEM_ARGS:---threads 1}
D=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$D"; }
trap cleanup EXIT
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ec() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "$@" 2>/dev/null; }
ec -x509 -keyout "$D/ca.key" -out "$D/ca.pem" -days 2 -subj "/CN=bench CA"
for n in redis proxy; do
  ec -keyout "$D/$n.key" -out "$D/$n.csr" -subj /CN=localhost
  echo "subjectAltName=IP:127.0.0.1,DNS:localhost" > "$D/$n.ext"
  openssl x509 -req -in "$D/$n.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -CAcreateserial \
    -out "$D/$n.pem" -days 2 -extfile "$D/$n.ext" 2>/dev/null
done
RP=$(free); RT=$(free); A=$(free); B=$(free); C=$(free); S=$(free)
redis-server --port "$RP" --tls-port "$RT" --bind 127.0.0.1 --save "" --appendonly no --dir "$D" \
  --tls-cert-file "$D/redis.pem" --tls-key-file "$D/redis.key" --tls-ca-cert-file "$D/ca.pem" \
  --tls-auth-clients no >/dev/null &
PIDS+=($!)
cat > "$D/twem.yml" <<Y
plain:
  listen: 127.0.0.1:$A
  redis: true
  servers:
   - 127.0.0.1:$RP:1
tlsboth:
  listen: 127.0.0.1:$B
  redis: true
  tls_cert: $D/proxy.pem
  tls_key: $D/proxy.key
  tls_servers: true
  tls_ca: $D/ca.pem
  servers:
   - 127.0.0.1:$RT:1
tlsfront:
  listen: 127.0.0.1:$C
  redis: true
  tls_cert: $D/proxy.pem
  tls_key: $D/proxy.key
  servers:
   - 127.0.0.1:$RP:1
Y
# shellcheck disable=SC2086
"$BIN" -c "$D/twem.yml" -s "$S" -a 127.0.0.1 -o "$D/twem.log" $TWEM_ARGS &
TPID=$!
PIDS+=($TPID)
sleep 1
TLS=(--tls --cacert "$D/ca.pem")
bench() { # name port [tls args]
  local name=$1 port=$2; shift 2
  printf '%-26s' "$name"
  redis-benchmark -p "$port" "$@" -t set,get -n "$N" -c "$CLIENTS" -P "$P" -q 2>/dev/null \
    | tr '\r' '\n' | grep -o '^[A-Z]*: [0-9.]* requests per second, p50=[0-9.]* msec' | tr '\n' ' '
  echo
}
for P in 1 16; do
  echo "== pipeline $P"
  bench "redis plain" "$RP"
  bench "redis tls" "$RT" "${TLS[@]}"
  bench "twem plain" "$A"
  bench "twem tls clients" "$C" "${TLS[@]}"
  bench "twem tls both sides" "$B" "${TLS[@]}"
done
for mode in plain tls; do
  port=$A; [ "$mode" = tls ] && port=$C
  python3 - "$port" "$mode" "$D/ca.pem" "$TPID" <<'PY'
import socket, ssl, sys, time
port, mode, ca, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def rss():
    return int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1])
ctx = ssl.create_default_context(cafile=ca)
before, conns = rss(), []
for _ in range(1000):
    s = socket.create_connection(("127.0.0.1", port))
    if mode == "tls":
        s = ctx.wrap_socket(s, server_hostname="localhost")
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    assert s.recv(100) == b"+PONG\r\n"
    conns.append(s)
time.sleep(1)
print(f"{mode}: 1000 idle clients after one PING: +{(rss() - before) / 1000:.1f} KiB each")
PY
done
