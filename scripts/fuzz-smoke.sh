#!/usr/bin/env bash
# Short smoke pass of every fuzz target (the long runs are done by hand; see
# the README). Each target runs over its committed corpus and then for
# FUZZ_SECONDS (default 10) of new inputs. Needs cargo-fuzz; on the stable
# toolchain RUSTC_BOOTSTRAP=1 lets it use the sanitizer flags it needs.
set -euo pipefail
cd "$(dirname "$0")/../twem-proto/fuzz"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  if [ -n "${CI:-}" ]; then
    echo "fuzz-smoke: cargo-fuzz is missing (.ci/run installs it)" >&2
    exit 1
  fi
  echo "fuzz-smoke: skipped, cargo-fuzz not installed (cargo install cargo-fuzz)"
  exit 0
fi
secs="${FUZZ_SECONDS:-10}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O 2>&1 | tail -n 2
for t in resp_request resp_reply memcache_request memcache_reply; do
  scratch=$(mktemp -d)
  # New inputs go to a scratch dir so the committed corpus stays as reviewed.
  log="$scratch.log"
  status=0
  cargo fuzz run -O "$t" "$scratch" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  grep -E "^(Done [0-9]+ runs|==[0-9]+== ERROR|SUMMARY|thread .* panicked)" "$log" || true
  rm -rf "$scratch"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz-smoke: $t FAILED (exit $status)" >&2
    exit 1
  fi
  rm -f "$log"
  echo "fuzz-smoke: $t ok"
done
