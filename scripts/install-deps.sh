#!/usr/bin/env bash
# Installs every Debian package Hangar needs to build, test and run. Idempotent: packages
# already present are skipped, and apt is only asked when something is missing.
set -euo pipefail

# Build toolchain and libraries (see docs/adr/0002-dependencies.md).
BUILD_PKGS=(
  build-essential g++ cmake ninja-build pkg-config git ca-certificates
  libboost1.81-dev nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev
  libsqlite3-dev libseccomp-dev libarchive-dev libssl-dev zlib1g-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  clang-format clang-tidy
)
# Tools the node runtime drives (templates, disks) and that tests and benchmarks use as real peers.
TEST_PKGS=(curl wrk nginx-light procps iproute2 util-linux e2fsprogs python3 python3-jsonschema python3-yaml
  busybox-static uidmap mmdebstrap umoci trinity fio bubblewrap crun runsc qemu-system-x86 qemu-utils cpio)

want=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}")
if [[ -n "${HANGAR_EXTRA_PKGS:-}" ]]; then
  read -r -a extra <<<"${HANGAR_EXTRA_PKGS}"
  want+=("${extra[@]}")
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#want[@]} packages present"
else
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # nginx-light starts a system service on install; the benchmarks run their own instance.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  echo "install-deps: done"
fi

# The microVM tier's guest kernel (Debian's cloud kernel) and initramfs, cached once: nodes
# never download at run time. Idempotent. Without root it is left for later (the microvm driver
# then reports itself unavailable, naming this script).
if [[ $(id -u) -eq 0 ]]; then
  "$(dirname "$0")/fetch-guest-kernel.sh"
else
  echo "install-deps: not root; skipping scripts/fetch-guest-kernel.sh (microVM tier)" >&2
fi

# The stock e2b SDK for the E2B drop-in's end-to-end suite (tests/e2e), from the npm registry at
# the version pinned in tests/e2e/package-lock.json, into tests/e2e/node_modules (git-ignored).
# Idempotent: skipped while the installed tree matches the lock file. Needs Node.js >= 20.18
# with npm (not Debian 12's nodejs 18, below the SDK's engines); without it the suite's ctest
# fails saying so, and everything else is unaffected.
e2e_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e"
if [[ -f "$e2e_dir/package-lock.json" ]]; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "install-deps: Node.js/npm not found; tests/e2e (e2b SDK) needs Node.js >= 20.18" >&2
  elif ! node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>20||(a==20&&b>=18)?0:1)'; then
    echo "install-deps: Node.js $(node --version) is below 20.18; tests/e2e (e2b SDK) needs >= 20.18" >&2
  else
    want_sum="$(sha256sum "$e2e_dir/package-lock.json" | cut -d' ' -f1)"
    stamp="$e2e_dir/node_modules/.hangar-lock.sha256"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_sum" ]]; then
      echo "install-deps: tests/e2e npm packages present"
    else
      echo "install-deps: npm ci in tests/e2e (e2b SDK, pinned)"
      npm ci --prefix "$e2e_dir" --no-audit --no-fund --loglevel=error
      echo "$want_sum" >"$stamp"
    fi
  fi
fi
