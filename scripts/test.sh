#!/usr/bin/env bash
# Sets up everything (scripts/setup.sh), then runs every test: formatting and
# lints, unit tests, privileged end-to-end tests against the real kernel, the
# browser test in headless Chromium, and finally a check that nothing damda
# created is left on the host. Builds as the calling user; only the test run
# itself uses sudo when not already root.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

scripts/setup.sh
export PATH="$root_dir/tools/node_modules/.bin:$PATH"

say() { printf '\033[1m[test]\033[0m %s\n' "$*"; }

say "formatting and lints"
cargo fmt --all -- --check
cargo clippy -p damda -p damda-protocol -p damda-e2e --all-targets -- -D warnings
cargo clippy -p damda-frontend --target wasm32-unknown-unknown -- -D warnings

say "the page's unit tests (its state reducer and labels, built for the host)"
cargo test -p damda-frontend

say "building the tests"
cargo nextest run --workspace --exclude damda-frontend --no-run

say "running the tests (privileged: real namespaces)"
export DAMDA_BIN="$root_dir/target/release/damda"
$SUDO env "PATH=$PATH" "DAMDA_BIN=$DAMDA_BIN" ${CARGO_HOME:+"CARGO_HOME=$CARGO_HOME"} \
  ${RUSTUP_HOME:+"RUSTUP_HOME=$RUSTUP_HOME"} \
  cargo nextest run --workspace --exclude damda-frontend --no-fail-fast

say "checking that nothing was left behind"
$SUDO "$DAMDA_BIN" sweep --check
