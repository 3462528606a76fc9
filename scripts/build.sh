#!/usr/bin/env bash
# Installs dependencies (idempotent) and builds one CMake preset (default: release).
#   scripts/build.sh [preset] [extra cmake --build args]
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
shift || true
./scripts/install-deps.sh
cmake --preset "$preset" >/dev/null
# Two cores and Boost.Beast translation units of ~1 GiB each: more jobs only thrash.
cmake --build --preset "$preset" -j "${HANGAR_BUILD_JOBS:-$(nproc)}" "$@"
echo "build: binaries in build/$preset/bin"
