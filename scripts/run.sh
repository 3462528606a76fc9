#!/usr/bin/env bash
# The README's run command: installs everything, builds, and starts hangard in embedded mode
# (control + node roles, state in the data directory, API on 127.0.0.1) in the background.
#   scripts/run.sh            start (or report the running daemon)
#   scripts/run.sh stop       stop it (SIGTERM; graceful)
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

"$bin/hangar" --server "http://$listen" status
cat <<MSG

Hangar is running in embedded mode.
  API:       http://$listen   (try: curl http://$listen/v1/version)
  CLI:       $bin/hangar status
  Data/logs: $data_dir (hangard.log)
  Stop:      scripts/run.sh stop
MSG
