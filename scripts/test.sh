#!/usr/bin/env bash
# The test command (README): formatting, lints (every feature, and twem-core
# without its defaults), docs, the publish dry-run, every test in the
# workspace, the examples against local servers, a fuzz smoke pass and the
# Debian package end to end.
# Integration tests start their own redis-server / memcached / nutcracker on
# 127.0.0.1 ephemeral ports, so those must be installed (.ci/run does it).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each test run has a bound: a test that hangs (a tool waiting forever, a
# proxy that stopped answering) fails the run with its name in the output
# instead of holding CI until its own limit. The tests bound their own waits;
# this is the net under them. `timeout` signals the whole process group, so
# the servers a test started go with it.
bounded() {
  local limit=$1
  shift
  local rc=0
  timeout --kill-after=30 "$limit" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "test.sh: '$*' did not end within ${limit}s; the last test named above hung" >&2
  fi
  return "$rc"
}
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
# twem-core without its default `metrics` feature (the no-op stand-ins).
cargo clippy -p twem-core --no-default-features --locked -- -D warnings
cargo test -p twem-core --no-default-features --lib --locked -q
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked -q
# The publishable crates package and build from their packaged sources, in
# dependency order through a local registry (cargo >= 1.90); --allow-dirty so
# a local run with uncommitted changes checks them too.
cargo publish --dry-run --workspace --locked --allow-dirty -q
# The tests/ crate drives the real binary: build it first (same profile).
cargo build --locked -p twem-server
bounded 1800 cargo test --workspace --locked
# The end-to-end suites again on the current-thread runtime (`--threads 1`: what
# bench/run.sh measures, and what a small machine shared with its load should run).
TWEM_TEST_ARGS="--threads 1" bounded 1200 cargo test --locked -p twem-tests \
  --test redis --test memcache --test memcache_meta --test failures --test operations \
  --test chaos --test hostile --test malformed --test differential \
  --test hardening --test hostile_proto --test hardening_admin --test commands \
  --test transactions --test resp3 --test clients --test blocking --test auth \
  --test pubsub --test dedicated --test fanout --test cluster --test sentinel
if [ -f scripts/examples.sh ]; then bash scripts/examples.sh; fi
bash scripts/fuzz-smoke.sh
# The Debian package: build, install, run as the unit would, reload, stop,
# remove (as root only: it runs dpkg -i; skipped otherwise).
bash scripts/package-test.sh
