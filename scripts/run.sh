#!/usr/bin/env bash
# The README's run command: installs everything, builds, and starts hangard in embedded mode
# (control + node roles, state in the data directory, API on 127.0.0.1) in the background.
#   scripts/run.sh            start (or report the running daemon)
#   scripts/run.sh stop       stop it (SIGTERM; graceful)
# Then it shows the fleet at work (HANGAR_DEMO=0 skips this): a routine task run on the shared tier
# and a payments task routed to the isolated tier (a microVM).
# Environment: HANGAR_DATA_DIR (default /var/lib/hangar), HANGAR_LISTEN (127.0.0.1:7070), and
# any other HANGAR_* configuration variable (see docs/configuration.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir="${HANGAR_DATA_DIR:-/var/lib/hangar}"
listen="${HANGAR_LISTEN:-127.0.0.1:7070}"
pidfile="$data_dir/hangard.pid"

running_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

if [[ "${1:-}" == "stop" ]]; then
  if pid=$(running_pid); then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "hangard (pid $pid) stopped"
  else
    echo "hangard is not running"
  fi
  exit 0
fi

./scripts/build.sh release
bin="$PWD/build/release/bin"

if pid=$(running_pid); then
  echo "hangard already running (pid $pid); stop it with: scripts/run.sh stop"
else
  mkdir -p "$data_dir"
  HANGAR_DATA_DIR="$data_dir" HANGAR_LISTEN="$listen" \
    HANGAR_NODE_WARM_POOL="${HANGAR_NODE_WARM_POOL:-base:2}" \
    nohup "$bin/hangard" --pid-file "$pidfile" >>"$data_dir/hangard.log" 2>&1 &
  daemon=$!
  for _ in $(seq 100); do
    if "$bin/hangar" --server "http://$listen" status >/dev/null 2>&1; then break; fi
    if ! kill -0 "$daemon" 2>/dev/null; then
      echo "hangard failed to start; last log lines:" >&2
      tail -n 5 "$data_dir/hangard.log" >&2
      exit 1
    fi
    sleep 0.1
  done
fi

hangar() { HANGAR_DATA_DIR="$data_dir" "$bin/hangar" --server "http://$listen" "$@"; }
hangar status

# The demo: wait for the `base` template (built in the background on the first start), then a
# routine task on the shared tier, and a payments task that the shipped policy routes to the
# isolated tier: a microVM with a kernel of its own (QEMU; TCG without KVM, so its cold boot takes
# seconds). Where this host cannot run microVMs, that task waits pending, saying why — it is never
# moved down to a weaker tier.
if [[ "${HANGAR_DEMO:-1}" == "1" ]]; then
  echo
  echo "== waiting for the base template (first start: mmdebstrap, a few minutes)"
  for _ in $(seq 1800); do
    if hangar --json node templates 2>/dev/null | grep -q '"name": "base"'; then break; fi
    sleep 1
  done
  echo "== a routine task: hangar run -- bash -lc 'echo hello from \$(hostname); uname -r'"
  hangar run --label demo=routine -- bash -lc 'echo hello from $(hostname); uname -r'
  echo "== a task touching services/payments/**: hangar run --path services/payments/api.go ..."
  payments=$(hangar run -d --label demo=payments --path services/payments/api.go \
    -- bash -lc 'echo hello from $(hostname); uname -r')
  hangar route explain "$payments"
  hangar logs -f "$payments" || true
  echo "== hangar ls; hangar nodes"
  hangar ls --label demo=routine
  hangar ls --label demo=payments
  hangar nodes
fi

cat <<MSG

Hangar is running in embedded mode.
  API:       http://$listen   (try: curl http://$listen/v1/version)
  CLI:       HANGAR_DATA_DIR=$data_dir $bin/hangar ls   (run, exec, logs, kill, nodes, pools, route)
  Data/logs: $data_dir (hangard.log)
  Stop:      scripts/run.sh stop
MSG
