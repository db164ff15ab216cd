#!/usr/bin/env bash
# Installs everything damda needs to build, run and test, then builds it.
# Idempotent: each install is skipped when what it installs is already there.
# Nothing here is fetched at run time; only package registries are used.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

TRUNK_VERSION=0.21.14
BINARYEN_VERSION=132.0.0
# wasm-bindgen-cli must equal the wasm-bindgen crate that Cargo.lock pins.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/"/,"",$3); print $3; exit}' Cargo.lock)

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------
apt_packages=(busybox-static iproute2 nftables iptables util-linux procps
  chromium chromium-driver fonts-noto-cjk qemu-system-x86 cpio gzip runc crun)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # busybox-static conflicts with Debian's dynamic busybox; apt replaces it.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- VM kernel (cgroup v2 tests, VM comparison) -------------------------------
# The cgroup v2 tests and `damda compare` boot Debian's kernel under qemu.
# The kernel is taken from Debian's package without installing it (the host's
# boot hooks must not run): apt-get download the real package that
# linux-image-amd64 depends on, then unpack only its boot/ directory and the
# few modules the comparison's network needs (virtio-net and what it
# depends on; all ~450 MB of modules are not needed). `damda compare` reads
# each module's own `depends=` to load them in order.
# qemu-system-x86, cpio and gzip come from the package list above.
vm_dir="$root_dir/data/vm"
vm_modules=(kernel/drivers/virtio kernel/drivers/net/virtio_net.ko
  kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko)
if ! ls "$vm_dir"/boot/vmlinuz-* >/dev/null 2>&1 \
  || ! ls "$vm_dir"/lib/modules/*/kernel/drivers/net/virtio_net.ko >/dev/null 2>&1; then
  kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$kernel_pkg" ]; then
    $SUDO apt-get update -qq
    kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  say "fetching the VM kernel ($kernel_pkg, unpacked into data/vm, not installed)"
  mkdir -p "$vm_dir/download"
  # As root, apt would warn that its sandbox user cannot write here.
  sandbox=(); if [ "$(id -u)" -eq 0 ]; then sandbox=(-o APT::Sandbox::User=root); fi
  (cd "$vm_dir/download" && apt-get download -qq "${sandbox[@]}" "$kernel_pkg")
  kernel_release=${kernel_pkg#linux-image-}
  wanted=(./boot)
  for module in "${vm_modules[@]}"; do wanted+=("./lib/modules/$kernel_release/$module"); done
  dpkg-deb --fsys-tarfile "$vm_dir"/download/"$kernel_pkg"_*.deb | tar -x -C "$vm_dir" "${wanted[@]}"
  rm -rf "$vm_dir/download"
fi
vmlinuz=$(ls "$vm_dir"/boot/vmlinuz-* | sort -V | tail -n 1)
ln -sfn "${vmlinuz#"$vm_dir"/}" "$vm_dir/vmlinuz"
# What the test needs is built in (=y), not a module: cgroup v2 and its
# memory, pids, cpu (with CFS bandwidth) and io controllers, devtmpfs, the
# serial console, and a gzip initramfs.
vm_config=$(ls "$vm_dir"/boot/config-* | sort -V | tail -n 1)
for option in CGROUPS MEMCG CGROUP_PIDS CGROUP_SCHED CFS_BANDWIDTH BLK_CGROUP \
  DEVTMPFS SERIAL_8250_CONSOLE BLK_DEV_INITRD RD_GZIP; do
  grep -qx "CONFIG_$option=y" "$vm_config" || say "warning: the VM kernel lacks CONFIG_$option=y"
done

# --- Rust tools ---------------------------------------------------------------
rustup target list --installed | grep -qx wasm32-unknown-unknown || {
  say "adding the wasm32 target"; rustup target add wasm32-unknown-unknown; }

if ! trunk --version 2>/dev/null | grep -q "$TRUNK_VERSION"; then
  say "installing trunk $TRUNK_VERSION (takes a few minutes, once)"
  cargo install --locked "trunk@$TRUNK_VERSION"
fi

if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (takes a few minutes, once)"
  # Not --locked: its own lockfile names a crate version the registry lacks.
  CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback \
    cargo install --force "wasm-bindgen-cli@$WASM_BINDGEN_VERSION"
fi

# wasm-opt from npm's binaryen: Debian's is too old to parse rustc's output.
tools_dir="$root_dir/tools"
if ! "$tools_dir/node_modules/.bin/wasm-opt" --version 2>/dev/null | grep -q "${BINARYEN_VERSION%%.*}"; then
  say "installing wasm-opt (binaryen $BINARYEN_VERSION from npm)"
  mkdir -p "$tools_dir"
  npm install --silent --no-audit --no-fund --prefix "$tools_dir" "binaryen@$BINARYEN_VERSION"
fi
export PATH="$tools_dir/node_modules/.bin:$PATH"

# --- Build --------------------------------------------------------------------
say "building the page (trunk, offline)"
trunk build --release --offline
# A gzip copy beside each file: the server sends it to browsers that accept it.
find frontend/dist -type f \( -name '*.wasm' -o -name '*.js' -o -name '*.css' -o -name '*.html' \) \
  -exec gzip -9 -k -f {} \;
say "building the backend"
cargo build --release -p damda --bin damda
say "preparing the default rootfs from /bin/busybox"
"$root_dir/target/release/damda" prepare
say "ready"
