#!/usr/bin/env bash
# The E2B drop-in's start latency: SDK create → first command output vs the node API's own.
# See README.md.
#
#   sudo bench/e2b/run.sh [BUILD_DIR]      # BUILD_DIR default: newest build/*/bin/hangar_it_template
#
# Env: ROUNDS (40), WARM (2; 0 = no warm pool).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${1:-}"
if [[ -z "$build" ]]; then
  tool="$(ls -t "$root"/build/*/bin/hangar_it_template 2>/dev/null | head -1 || true)"
  [[ -n "$tool" ]] && build="$(dirname "$(dirname "$tool")")"
fi
if [[ -z "$build" || ! -x "$build/bin/hangard" || ! -x "$build/bin/hangar_it_template" ]]; then
  echo "run.sh: build hangard envd hangar_it_template first (ninja -C <dir> bench_e2b)" \
       "and pass the build directory" >&2
  exit 2
fi
[[ "$(id -u)" == 0 ]] || { echo "run.sh: needs root (real sandboxes)" >&2; exit 2; }
[[ -f "$root/tests/e2e/node_modules/e2b/package.json" ]] || {
  echo "run.sh: the pinned e2b SDK is missing; run scripts/install-deps.sh" >&2; exit 2; }

warm=(--warm "${WARM:-2}")
[[ "${WARM:-2}" == 0 ]] && warm=(--no-warm)
exec node "$here/run.mjs" --bin "$build/bin" --rounds "${ROUNDS:-40}" "${warm[@]}"
