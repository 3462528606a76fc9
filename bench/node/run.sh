#!/usr/bin/env bash
# Shared-tier node benchmarks, in sequence, with a summary table at the end.
#
#   sudo bench/node/run.sh [build-dir]          (default: the newest build/*/ with the binaries)
#
# 1. bench_node_start    create -> first command exited, against fork+exec, bwrap and crun;
#                        per-phase breakdown; pooled (pre-created) sandboxes
# 2. bench_node_density  COUNT idle sandboxes: memory per sandbox (sandbox vs host side)
# 3. bench_node_io       victim p99 beside a flooding neighbour; IOPS limit accuracy
# Each step is bounded (`timeout`, SIGTERM first so the benchmark cleans up) and prints
# SUMMARY lines; the table at the end collects them. Ratios against peers measured in the same
# run are the figures to compare: this machine is shared and noisy.
#
# Needs root, busybox-static, and for the peers bwrap, crun and fio (apt-get install bubblewrap
# crun fio). bench_node_io needs a Debian+fio template: built once (~100 s, needs the Debian
# mirror) into $HANGAR_TEMPLATE_CACHE (default /var/tmp/hangar-template-cache) before step 3
# starts; that build is outside the step's time bound.
# Env: ITERATIONS (60), POOLED (100), COUNT (500), JOBS (2), IO_RUNTIME (12), STEP_TIMEOUT (300 s),
#      STEPS ("start density io"), ENVD (path of the envd binary; default: envd next to the
#      benchmarks, i.e. build the `envd` target too), BALLAST_MOUNTS (0: N extra tmpfs mounts in
#      the node's mount namespace during the steps, as a node with N/3 sandboxes has; removed at
#      the end: shows whether start cost grows with the node's mounts).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
iterations="${ITERATIONS:-60}"
pooled="${POOLED:-100}"
count="${COUNT:-500}"
jobs="${JOBS:-2}"
io_runtime="${IO_RUNTIME:-12}"
step_timeout="${STEP_TIMEOUT:-300}"
ballast_mounts="${BALLAST_MOUNTS:-0}"
steps="${STEPS:-start density io}"

bin_dir="${1:-}"
if [[ -z "$bin_dir" ]]; then
  newest="$(ls -t "$root"/build/*/bin/bench_node_start 2>/dev/null | head -1 || true)"
  [[ -n "$newest" ]] && bin_dir="$(dirname "$newest")"
else
  [[ -d "$bin_dir/bin" ]] && bin_dir="$bin_dir/bin"
fi
for b in bench_node_start bench_node_density bench_node_io; do
  if [[ -z "$bin_dir" || ! -x "$bin_dir/$b" ]]; then
    echo "run.sh: $b not found; build it (ninja -C <build> bench_node_start bench_node_density" \
         "bench_node_io envd) or pass the build directory" >&2
    exit 2
  fi
done
if [[ "$(id -u)" != 0 ]]; then
  echo "run.sh: needs root (namespaces, mounts, cgroups, loop devices)" >&2
  exit 2
fi
for tool in busybox bwrap crun fio timeout; do
  command -v "$tool" >/dev/null || echo "run.sh: note: $tool is not installed (its part is skipped" \
                                        "or fails; apt-get install busybox-static bubblewrap crun fio)" >&2
done
envd_args=()
if [[ -n "${ENVD:-}" ]]; then
  envd_args=(--envd "$ENVD")
elif [[ ! -x "$bin_dir/envd" ]]; then
  echo "run.sh: note: no envd in $bin_dir (or \$ENVD): first commands run as the sandbox's init" \
       "and idle sandboxes run busybox sleep" >&2
fi

work="$(mktemp -d /tmp/hangar-bench-node.XXXXXX)"
current=""
ballast="$work/ballast"
remove_ballast() {
  if mountpoint -q "$ballast" 2>/dev/null; then umount -R "$ballast" 2>/dev/null || umount -l "$ballast"; fi
}
cleanup() {
  # The benchmarks clean up after themselves on SIGTERM/SIGINT; make sure a running one gets it.
  if [[ -n "$current" ]] && kill -0 "$current" 2>/dev/null; then
    kill -TERM "$current" 2>/dev/null || true
    wait "$current" 2>/dev/null || true
  fi
  remove_ballast
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failed=()
run_step() {  # name, command...
  local name="$1"
  shift
  echo
  echo "=== $name: $*"
  local start=$SECONDS
  # --foreground is not used: timeout then signals the benchmark alone, which cleans up.
  timeout --signal=TERM --kill-after=60 "$step_timeout" "$@" > >(tee "$work/$name.log") 2>&1 &
  current=$!
  local rc=0
  wait "$current" || rc=$?
  current=""
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
  [[ $rc == 0 ]] || failed+=("$name (exit $rc)")
}

echo "hangar node benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) cpus," \
     "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
if ((ballast_mounts > 0)); then
  mkdir -p "$ballast"
  mount -t tmpfs -o size=1m,mode=700 hangar-bench-ballast "$ballast"
  for ((i = 0; i < ballast_mounts; i++)); do mkdir "$ballast/$i"; done
  for ((i = 0; i < ballast_mounts; i++)); do
    mount -t tmpfs -o size=4k hangar-bench-ballast "$ballast/$i"
  done
  echo "ballast: $ballast_mounts extra mounts; the node's mount namespace has" \
       "$(wc -l </proc/self/mountinfo)"
fi

for step in $steps; do
  case "$step" in
    start)
      run_step start "$bin_dir/bench_node_start" --iterations "$iterations" --pooled "$pooled" \
        ${envd_args[@]+"${envd_args[@]}"} ;;
    density)
      run_step density "$bin_dir/bench_node_density" --count "$count" --jobs "$jobs" \
        ${envd_args[@]+"${envd_args[@]}"} ;;
    io)
      echo
      echo "=== io: preparing the Debian+fio template (cached after the first time)"
      "$bin_dir/bench_node_io" --prepare || { failed+=("io template"); continue; }
      run_step io "$bin_dir/bench_node_io" --runtime "$io_runtime" ;;
    *) echo "run.sh: unknown step $step" >&2; exit 2 ;;
  esac
done

remove_ballast

# Anything of ours left on the node? (Each benchmark also checks its own resources.)
leftover=""
for d in /var/tmp/hangar-bench-*; do [[ -e "$d" ]] && leftover+=" dir:$d"; done
for c in /sys/fs/cgroup/*/hangar-bench-*; do [[ -e "$c" ]] && leftover+=" cgroup:$c"; done
if grep -q '/var/tmp/hangar-bench-' /proc/self/mountinfo; then leftover+=" mounts"; fi
for f in /sys/block/loop*/loop/backing_file; do
  [[ -r "$f" ]] && grep -q '^/var/tmp/hangar-bench-' "$f" && leftover+=" loop:$(cut -d/ -f4 <<<"$f")"
done

echo
echo "================ summary ($(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)) ================"
for step in $steps; do
  [[ -f "$work/$step.log" ]] && sed -n 's/^SUMMARY /  /p' "$work/$step.log"
done
if [[ -n "$leftover" ]]; then
  echo "  cleanup check: LEFT BEHIND:$leftover"
  failed+=("cleanup")
else
  echo "  cleanup check: nothing left (dirs, cgroups, mounts, loop devices of hangar-bench-*)"
fi
if ((${#failed[@]})); then
  echo "  failed: ${failed[*]}"
  exit 1
fi
