#!/usr/bin/env bash
# HTTP throughput: Hangar's server against nginx on the same trivial JSON endpoint.
#
#   bench/http/run.sh [path/to/bench_http_server]
#
# Both peers serve a ~30-byte JSON body on 127.0.0.1 with keep-alive and no access log, with 2
# worker threads / processes. wrk (-t2 -c64 -d10s) runs against each in turn, 3 rounds
# alternating, and the medians are printed with the ratio hangar/nginx.
# wrk runs on the same 2 cores as the server it measures; that costs both peers alike, so the
# ratio is the number to compare, the absolute figures are a floor.
# Env: ROUNDS (3), DURATION (10s), CONNECTIONS (64), NGINX_PORT (18081), HANGAR_PORT (18082).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rounds="${ROUNDS:-3}"
duration="${DURATION:-10s}"
connections="${CONNECTIONS:-64}"
nginx_port="${NGINX_PORT:-18081}"
hangar_port="${HANGAR_PORT:-18082}"
body='{"api":"v1","version":"0.1.0"}'

server_bin="${1:-${HANGAR_BENCH_SERVER:-}}"
if [[ -z "$server_bin" ]]; then
  server_bin="$(ls -t "$root"/build/*/bin/bench_http_server 2>/dev/null | head -1 || true)"
fi
if [[ -z "$server_bin" || ! -x "$server_bin" ]]; then
  echo "run.sh: bench_http_server not found; build it (cmake --build <dir> --target" \
       "bench_http_server) or pass its path" >&2
  exit 2
fi
for tool in nginx wrk curl; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is not installed" >&2; exit 2; }
done

work="$(mktemp -d /tmp/hangar-bench-http.XXXXXX)"
nginx_pid=""
hangar_pid=""
cleanup() {
  # Every exit path: stop both servers and remove the scratch directory.
  [[ -n "$nginx_pid" ]] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  [[ -n "$hangar_pid" ]] && kill "$hangar_pid" 2>/dev/null && wait "$hangar_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nginx_port;
    location = /v1/version {
      default_type application/json;
      return 200 '$body';
    }
  }
}
NGINX

nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
nginx_pid=$!
"$server_bin" --port "$hangar_port" --threads 2 2>"$work/hangar.log" &
hangar_pid=$!

wait_ready() {  # url
  for _ in $(seq 100); do
    if curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "run.sh: $1 did not come up" >&2
  cat "$work/nginx/error.log" "$work/hangar.log" >&2 || true
  exit 1
}
wait_ready "http://127.0.0.1:$nginx_port/v1/version"
wait_ready "http://127.0.0.1:$hangar_port/v1/version"
got_n="$(curl -fsS "http://127.0.0.1:$nginx_port/v1/version")"
got_h="$(curl -fsS "http://127.0.0.1:$hangar_port/v1/version")"
[[ "$got_n" == "$body" && "$got_h" == "$body" ]] || {
  echo "run.sh: bodies differ: nginx '$got_n' hangar '$got_h'" >&2
  exit 1
}

# "Requests/sec: 1234.5" and the 99% latency line of --latency, converted to ms.
parse_rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
parse_p99() {
  awk '$1 == "99%" {
    v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000;
    printf "%.3f\n", v }' "$1"
}
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

declare -a rps_n rps_h p99_n p99_h
for r in $(seq "$rounds"); do
  for peer in nginx hangar; do
    port="$nginx_port"
    [[ "$peer" == hangar ]] && port="$hangar_port"
    out="$work/wrk-$peer-$r.txt"
    wrk -t2 -c"$connections" -d"$duration" --latency "http://127.0.0.1:$port/v1/version" >"$out"
    if grep -q "Non-2xx\|Socket errors" "$out"; then
      echo "run.sh: $peer round $r had errors:" >&2
      grep "Non-2xx\|Socket errors" "$out" >&2
    fi
    rps="$(parse_rps "$out")"
    p99="$(parse_p99 "$out")"
    printf 'round %d %-6s %10.0f req/s  p99 %7.3f ms\n' "$r" "$peer" "$rps" "$p99"
    if [[ "$peer" == nginx ]]; then rps_n+=("$rps"); p99_n+=("$p99"); else rps_h+=("$rps"); p99_h+=("$p99"); fi
  done
done

mn="$(printf '%s\n' "${rps_n[@]}" | median)"
mh="$(printf '%s\n' "${rps_h[@]}" | median)"
pn="$(printf '%s\n' "${p99_n[@]}" | median)"
ph="$(printf '%s\n' "${p99_h[@]}" | median)"
echo
echo "medians of $rounds rounds, wrk -t2 -c$connections -d$duration, keep-alive, $(nproc) cores shared with wrk:"
printf '  nginx   %10.0f req/s  p99 %7.3f ms\n' "$mn" "$pn"
printf '  hangar  %10.0f req/s  p99 %7.3f ms\n' "$mh" "$ph"
awk -v h="$mh" -v n="$mn" 'BEGIN { printf "  ratio hangar/nginx: %.2f (throughput)\n", h / n }'
awk -v h="$mh" 'BEGIN { if (h < 20000) { print "  below the 20000 req/s target"; exit 1 } }'
