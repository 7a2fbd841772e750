#!/usr/bin/env bash
# Flag proxy benchmark (not a test: it prints what it measures).
#   1. GET .../target/alice/evaluations (8 flags evaluated per request, with a token) through
#      relayhost's flag proxy, next to nginx serving the same JSON bytes as a static file
#      (wrk, 1 thread, CONNECTIONS, DURATION s; servers on core 0, wrk on core 1);
#   2. relayhost's RSS with STREAMS (10,000) idle SDK event streams open;
#   3. the time from SIGHUP (a changed flag in the config directory) until each of FANOUT (1,000)
#      streams has its event.
#   bench/flag-proxy.sh            DURATION=10 CONNECTIONS=50 STREAMS=10000 FANOUT=1000 RUNS=3
#   RELAYHOST_BIN=/old/build/relayhost bench/flag-proxy.sh   the same against another build (its
#   own bundled flag-proxy script), for before/after
# req/s runs alternate relayhost and nginx RUNS times (medians printed, with every run), and the
# fan-out is repeated RUNS times (median): other work on the machine moves single runs a lot.
# Targets (benchmark, not test): >= 1.0x nginx, < 100 MB, < 100 ms.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
STREAMS=${STREAMS:-10000}
FANOUT=${FANOUT:-1000}
RUNS=${RUNS:-3}
ENV_ID=1f6c9b2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f
KEY=sample-server-sdk-key

tools/deps --bench >/dev/null
mkdir -p bench/out
exec > >(tee "bench/out/flag-proxy-$(date +%Y%m%d-%H%M%S).txt")
if [[ -z ${RELAYHOST_BIN:-} ]]; then
  tools/build build >/dev/null 2>&1 || { echo "bench/flag-proxy.sh: build failed" >&2; exit 1; }
fi
bin=${RELAYHOST_BIN:-$top/build/relayhost}
for t in nginx wrk taskset curl node python3; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done
ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) > STREAMS + 100 )) || { echo "bench/flag-proxy.sh: ulimit -n $(ulimit -n) is too low for $STREAMS streams" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-flag.XXXXXX")
chmod 755 "$tmp" # nginx workers (nobody) read the static file
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done # not a bare wait: tee is a child too
  [[ ${KEEP:-0} == 1 ]] && echo "kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_mb() { awk '$1 == "VmRSS:" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
rps() { taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -H "Authorization: Bearer $token" "$1" | awk '/Requests\/sec/ { print $2 }'; }
until_up() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }

cp -r examples/flag-proxy/config "$tmp/config"
flags_file=$tmp/config/env-$ENV_ID/feature_config.json
rport=$(free_port)
taskset -c 0 "$bin" flag-proxy --offline --config-dir "$tmp/config" --auth-secret bench-secret \
  --listen "127.0.0.1:$rport" --log-level warn >"$tmp/relayhost.log" 2>&1 &
rpid=$!; pids+=("$rpid")
until_up "http://127.0.0.1:$rport/health"
token=$(curl -s -XPOST "http://127.0.0.1:$rport/client/auth" -d "{\"apiKey\":\"$KEY\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["authToken"])')
path=/client/env/$ENV_ID/target/alice/evaluations
mkdir -p "$tmp/www$(dirname "$path")"
curl -s "http://127.0.0.1:$rport$path" -H "Authorization: Bearer $token" >"$tmp/www$path"

nport=$(free_port)
mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid nginx.pid;
error_log logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi;
  server {
    listen 127.0.0.1:$nport;
    keepalive_requests 1000000;
    location / { root $tmp/www; default_type "application/json; charset=utf-8"; }
  }
}
NGX
taskset -c 0 nginx -p "$tmp/nginx/" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/logs/error.log" >/dev/null 2>&1 &
pids+=($!)
until_up "http://127.0.0.1:$nport$path"
cmp -s <(curl -s "http://127.0.0.1:$nport$path") "$tmp/www$path" || { echo "nginx serves other bytes" >&2; exit 1; }

echo "flag proxy benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t1 -c$CONNECTIONS -d${DURATION}s"
echo "evaluations body: $(wc -c <"$tmp/www$path") bytes (8 flags)"
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
rs=(); ns=()
for _ in $(seq "$RUNS"); do
  rs+=("$(rps "http://127.0.0.1:$rport$path")")
  ns+=("$(rps "http://127.0.0.1:$nport$path")")
done
r=$(median "${rs[@]}"); n=$(median "${ns[@]}")
printf '%-44s %12s req/s (runs: %s)\n' "relayhost flag proxy /evaluations (evaluated)" "$r" "${rs[*]}" \
  "nginx static file (same bytes)" "$n" "${ns[*]}"
printf '%-44s %12s\n' "ratio relayhost / nginx (medians)" "$(python3 -c "print(f'{$r / $n:.2f}x')")"

rss0=$(rss_mb "$rpid")
mkfifo "$tmp/hold"
taskset -c 1 node bench/flag-proxy-sse.js idle "$rport" "$token" "$KEY" "$STREAMS" <"$tmp/hold" >"$tmp/idle.out" 2>&1 &
idle_pid=$!; pids+=("$idle_pid")
exec 9>"$tmp/hold"
for _ in $(seq 600); do grep -q "^connected" "$tmp/idle.out" && break; sleep 0.2; done
grep -q "^connected $STREAMS" "$tmp/idle.out" || { echo "idle streams: $(cat "$tmp/idle.out")" >&2; exit 1; }
sleep 1
rss1=$(rss_mb "$rpid")
printf '%-44s %12s MB (%s MB before; %s streams)\n' "relayhost RSS with $STREAMS idle SSE streams" "$rss1" "$rss0" "$STREAMS"
exec 9>&-
wait "$idle_pid" 2>/dev/null || true
sleep 1

fs=()
for _ in $(seq "$RUNS"); do
  out=$(taskset -c 1 node bench/flag-proxy-sse.js fanout "$rport" "$token" "$KEY" "$FANOUT" "$rpid" "$flags_file" banner-text) \
    || { echo "bench/flag-proxy.sh: the fan-out run failed: $out" >&2; [[ -n ${RELAYHOST_BIN:-} ]] || exit 1; fs+=(n/a); break; }
  fs+=("$(echo "$out" | awk '/^fanout/ { print $3 }')")
  sleep 1
done
printf '%-44s %12s ms (runs: %s; SIGHUP -> re-read -> diff -> event on every stream)\n' \
  "one flag change reaching $FANOUT streams" "$(median "${fs[@]}")" "${fs[*]}"
