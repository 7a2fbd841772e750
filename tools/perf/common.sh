# Sourced by tools/perf/per-request, flag-request and switches: the pieces each starts its servers
# with. The caller sets tmp (its temporary folder) and pids (an array its cleanup kills).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Until URL answers 2xx, at most 60 s.
wait_http() { for _ in $(seq 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.2; done; echo "no answer on $1" >&2; exit 1; }
# start_origin PEERS [WRAPPER...]: PEERS' nginx origin on a free port (origin_port), run through
# WRAPPER (e.g. taskset -c 0); its master's pid in origin_pid.
start_origin() {
  local peers=$1; shift
  origin_port=$(free_port)
  sed "s/127.0.0.1:9001/127.0.0.1:$origin_port/" "$peers/nginx-origin.conf" >"$tmp/origin.conf"
  "$@" nginx -c "$tmp/origin.conf" -p "$tmp/" -e "$tmp/origin-error.log" >/dev/null 2>&1 &
  origin_pid=$!
  pids+=("$origin_pid")
  wait_http "http://127.0.0.1:$origin_port/v1/x"
}
