#!/usr/bin/env bash
# Builds the twemproxy Debian package: the man page from the clap definitions,
# then `cargo deb` on the stripped `dist` profile. Prints the .deb's path.
# Needs cargo-deb (.ci/run installs the pinned version).
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p target/man
cargo run -q --locked -p twem-server --example man -- target/man/twemproxy.8
gzip -9nf target/man/twemproxy.8
# --profile dist: cargo-deb maps the asset target/release/twemproxy to the
# dist build.
cargo deb --locked -q -p twem-server --profile dist >/dev/null
ls -t target/debian/twemproxy_*.deb | head -1
