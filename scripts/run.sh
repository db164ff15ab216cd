#!/usr/bin/env bash
# Sets up everything (scripts/setup.sh), then serves damda on 127.0.0.1 and
# prints the URL. Pass serve options through, e.g. `scripts/run.sh --listen 127.0.0.1:0`.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
  echo "damda builds real namespaces and calls chroot: the server runs as root (sudo)." >&2
fi
scripts/setup.sh
exec $SUDO target/release/damda serve "$@"
