#!/usr/bin/env bash
# The README's test command: installs everything, builds with warnings as errors and runs the
# whole test suite (unit, integration, privileged, slow). Run as root on Debian 12.
#   scripts/test.sh                 everything
#   scripts/test.sh -L unit         any ctest arguments narrow the run
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh ci
ctest --preset ci --output-on-failure --timeout 600 -j "${HANGAR_TEST_JOBS:-2}" "$@"
