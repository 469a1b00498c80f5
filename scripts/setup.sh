#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine (Node ≥ 20, root): system packages, npm packages, the native addon
# and the TypeScript build. Safe to run again: each step is skipped when already done.
#   LIBTORCH=/path/to/libtorch  use that libtorch (e.g. a CUDA build) instead of Debian's libtorch-dev
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

need_pkgs=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
if [ -z "${LIBTORCH:-}" ] && ! node scripts/libtorch-config.mjs --json | grep -q '"source"'; then
  need_pkgs+=(libtorch-dev)
fi
# Debian's libtorch links the generic libblas.so.3; the OpenMP OpenBLAS gives fast matmul (see README "BLAS").
if { [ -z "${LIBTORCH:-}" ] || [ -e /usr/include/torch ]; } && ! have_pkg libopenblas0-openmp; then
  need_pkgs+=(libopenblas0-openmp)
fi
# Gloo's headers (Debian's libtorch has ProcessGroupGloo but not gloo/*.h): distributed training over Gloo.
if { [ -z "${LIBTORCH:-}" ] || [ -e /usr/include/torch ]; } && ! have_pkg libgloo-dev; then
  need_pkgs+=(libgloo-dev)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    log "missing ${need_pkgs[*]} and no apt-get: install libtorch yourself and set LIBTORCH"; exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  log "installing ${need_pkgs[*]} (apt-get)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# npm packages: reinstall only when package-lock.json changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

log "native addon"
node scripts/build-native.mjs
log "TypeScript"
npx --no-install tsc -p tsconfig.json
chmod +x dist/src/cli/bin.js
log "ready"
