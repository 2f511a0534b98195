#!/usr/bin/env bash
# The test command (README): formatting, lints, then every test in the workspace.
# Integration tests start their own redis-server / memcached / nutcracker on
# 127.0.0.1 ephemeral ports, so those binaries must be installed (.ci/run does it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked -q
cargo test --workspace --locked
