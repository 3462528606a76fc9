#!/usr/bin/env bash
# The control plane's overhead: create → running through /v1 vs the node API, and GET
# /v1/sandboxes/{id} throughput with wrk. See README.md.
#
#   sudo bench/control/run.sh [BUILD_DIR]      # BUILD_DIR default: newest build/*/bin/hangard
#
# Env: ROUNDS (40), WRK_DURATION (10s), WRK_ROUNDS (3), CONNECTIONS (64), SPARES (2).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${1:-}"
if [[ -z "$build" ]]; then
  hangard="$(ls -t "$root"/build/*/bin/hangar_it_template 2>/dev/null | head -1 || true)"
  [[ -n "$hangard" ]] && build="$(dirname "$(dirname "$hangard")")"
fi
if [[ -z "$build" || ! -x "$build/bin/hangard" || ! -x "$build/bin/hangar_it_template" ]]; then
  echo "run.sh: build hangard envd hangar_it_template first (ninja -C <dir> hangard envd" \
       "hangar_it_template) and pass the build directory" >&2
  exit 2
fi
[[ "$(id -u)" == 0 ]] || { echo "run.sh: needs root (real sandboxes)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "run.sh: wrk is not installed" >&2; exit 2; }

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
exec /usr/bin/python3 "$here/bench_control.py" --bin "$build/bin" \
  --rounds "${ROUNDS:-40}" --wrk-duration "${WRK_DURATION:-10s}" \
  --wrk-rounds "${WRK_ROUNDS:-3}" --connections "${CONNECTIONS:-64}" --spares "${SPARES:-2}"
