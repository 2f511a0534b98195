#!/usr/bin/env bash
# Installs the real client libraries that tests/tests/clients.rs drives:
#   target/clients-venv        redis-py 8.1 (+ hiredis 3.5), coredis 6.9,
#                              pymemcache 4.0 and python-memcached 1.62,
#                              from tests/clients/requirements.txt
#   tests/clients/node_modules node `redis` 6.3.1 and ioredis 6.0.0, `npm ci`
#                              from tests/clients/package-lock.json
# Idempotent: each half is redone only when its pin file changed since the
# last successful run (a stamp holds the pin file's hash), so a second run
# takes well under a second. Needs python3 (3.9+) with venv, node 18+ and npm.
# redis-py has no switch for its parser; the redis-py programs hide hiredis
# themselves when TWEM_NO_HIREDIS=1, so one venv serves both parsers.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
[ -n "$PY" ] || { echo "setup-clients: python3 not found" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "setup-clients: npm not found (node 18+)" >&2; exit 1; }

venv=target/clients-venv
req=tests/clients/requirements.txt
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ "$(cat "$venv/.twem-stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$venv/bin/python" ]; then
  echo "setup-clients: creating $venv" >&2
  rm -rf "$venv"
  mkdir -p target
  "$PY" -m venv "$venv" || {
    echo "setup-clients: '$PY -m venv' failed (on Debian: apt-get install python3-venv)" >&2
    exit 1
  }
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$req"
  echo "$want" > "$venv/.twem-stamp"
fi

lock=tests/clients/package-lock.json
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ "$(cat tests/clients/node_modules/.twem-stamp 2>/dev/null)" != "$want" ]; then
  echo "setup-clients: npm ci in tests/clients" >&2
  (cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > tests/clients/node_modules/.twem-stamp
fi
