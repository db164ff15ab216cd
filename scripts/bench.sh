#!/usr/bin/env bash
# damda's benchmark: step apply / replay times (p50/p95 over 50 boxes by
# default), the page's wasm size raw and gzipped, and page load to first
# rendered snapshot in headless Chromium, then the VM-vs-container comparison
# (five runs of each side). Pass --runs N to change the step count.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
scripts/setup.sh >/dev/null
cargo build --release -p damda-bench
echo "== the page's wasm (frontend/dist)"
for wasm in frontend/dist/*.wasm; do
  printf '%-28s %9s bytes raw, %9s bytes gzip -9\n' "$(basename "$wasm" | cut -c1-28)" \
    "$(stat -c %s "$wasm")" "$(gzip -9 -c "$wasm" | wc -c)"
done
$SUDO env "DAMDA_BIN=$(pwd)/target/release/damda" target/release/damda-bench "$@"
echo "== VM vs container (damda compare --runs 5)"
$SUDO target/release/damda compare --runs 5
