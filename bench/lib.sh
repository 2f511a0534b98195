#!/usr/bin/env bash
# Shared by bench/run.sh, bench/profile.sh, bench/embedded.sh and
# scripts/run-example.sh: the package check, the scratch directory with its
# kill-what-we-started cleanup, free loopback ports, waiting for a listener and
# the proxies' configs. Source it after `set -euo pipefail`.

# install_missing LABEL COMMAND:PACKAGE...: apt-get installs the packages whose
# command is not on PATH (with sudo unless root). A non-empty LABEL also says so.
install_missing() {
  local label=$1 pair missing=()
  shift
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    local SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    [ -z "$label" ] || echo "$label: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# start_scratch: sets $work (a fresh temporary directory) and $pids (append the
# pid of every process started); on exit or interrupt those processes (and only
# those) are killed and $work removed.
start_scratch() {
  work=$(mktemp -d)
  pids=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}

# repeat_command SCRIPT ARGS VAR...: the command line that repeats this run, for
# the reports: the variables among VAR that are set, even to "" (quoted when
# empty or holding a space), then `bash SCRIPT ARGS`.
repeat_command() {
  local script=$1 args=$2 v line=""
  shift 2
  for v in "$@"; do
    [ -n "${!v+set}" ] || continue
    case ${!v} in
      "" | *" "*) line+="$v=\"${!v}\" " ;;
      *) line+="$v=${!v} " ;;
    esac
  done
  echo "${line}bash $script${args:+ $args}"
}

# free_ports N: N free loopback ports, all held open at once so none is handed out twice.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# wait_port PORT [TENTHS]: until something accepts on 127.0.0.1:PORT, polled every
# 0.1 s for TENTHS tries (100, i.e. 10 s, unless given); fails naming $label.
wait_port() {
  local i tries=${2:-100}
  for i in $(seq "$tries"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "${label:-bench}: nothing listens on 127.0.0.1:$1 after $((tries / 10)) s" >&2
  return 1
}

# redis_pool_yaml PORT: the bench_redis pool on 127.0.0.1:PORT over ${redis_ports[@]},
# the same for every proxy (fnv1a_64, ketama).
redis_pool_yaml() {
  local i=1 p
  echo "bench_redis:"
  echo "  listen: 127.0.0.1:$1"
  echo "  hash: fnv1a_64"
  echo "  distribution: ketama"
  echo "  redis: true"
  echo "  servers:"
  for p in "${redis_ports[@]}"; do echo "   - 127.0.0.1:$p:1 redis-$i"; i=$((i + 1)); done
}

# write_predixy_conf FILE PORT THREADS: predixy's config for ${redis_ports[@]}:
# the same redis-servers as redis_pool_yaml, one Group (master only) each,
# fixed membership, no authentication, notices (one per accepted connection) off.
write_predixy_conf() {
  local i=1 p
  {
    echo "Name twem-bench"
    echo "Bind 127.0.0.1:$2"
    echo "WorkerThreads $3"
    echo "ClientTimeout 0"
    echo "LogVerbSample 0"
    echo "LogDebugSample 0"
    echo "LogInfoSample 0"
    echo "LogNoticeSample 0"
    echo "LogWarnSample 1"
    echo "LogErrorSample 1"
    echo "Authority {"
    echo "    Auth {"
    echo "        Mode write"
    echo "    }"
    echo "}"
    echo "StandaloneServerPool {"
    echo "    Hash crc16"
    echo "    Distribution modula"
    echo "    RefreshMethod fixed"
    for p in "${redis_ports[@]}"; do
      echo "    Group redis-$i {"
      echo "        + 127.0.0.1:$p"
      echo "    }"
      i=$((i + 1))
    done
    echo "}"
  } >"$1"
}

# start_redis_servers: a throwaway redis-server on each of ${redis_ports[@]}, logging into $work.
start_redis_servers() {
  local p
  for p in "${redis_ports[@]}"; do
    redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
      --logfile "$work/redis-$p.log" &
    pids+=($!)
  done
}
