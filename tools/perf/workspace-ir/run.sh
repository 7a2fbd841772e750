#!/usr/bin/env bash
# Instructions (callgrind Ir) the workspace relay spends on its Lua paths, for before/after
# comparisons of a change there (the prefix proxy's counterpart is tools/perf/per-request ir):
#
#   tools/perf/workspace-ir/run.sh [TREE] [N] [RUNS]     (defaults: this checkout, 1000, 3)
#
# TREE's build/relayhost serves TREE's scripts/workspace-relay.lua under callgrind, admitted by
# stub.lua (a validate endpoint that admits every token; also the workers' platform). driver.lua
# warms up (200 rounds of each phase), then each phase runs N rounds between a zero and a dump of
# callgrind's counters:
#   frames  a client's kex_init, e2ee, subscribe (client -> daemon, Lua) and the daemon's
#           kex_response and session event (daemon -> client, Lua) and e2ee (C): 5 frames in Lua, 1 in C
#   conns   a client upgrades (validate call, admission, register) and closes
#   worker  a worker's two requests: one called on the platform (200), one refused (403)
# Prints each phase's Ir per run and the median. Repeat runs of one tree spread about 5 % (timers,
# GC): compare medians of several runs, and trust only differences well beyond that.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tree=$(cd "${1:-$here/../../..}" && pwd) n=${2:-1000} runs=${3:-3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ws-ir.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
drive() { LUA_PATH="$tree/spec/support/?.lua;$tree/lua/?.lua;;" luajit "$here/driver.lua" "$@" >/dev/null; }

one_run() { # -> "frames conns worker" Ir
  local sp rp out relay
  sp=$(free_port) rp=$(free_port) out=$tmp/cg.$1
  STUB_PORT=$sp "$tree/build/relayhost" "$here/stub.lua" --log-level warn >"$tmp/stub.log" 2>&1 &
  pids+=($!)
  (cd "$tree" && exec env PORT=$rp SERVER_URL=http://127.0.0.1:$sp RELAY_INTERNAL_KEY=k RELAY_BACKPLANE_MODE=single \
    RELAY_UPGRADE_RATE_PER_MINUTE=10000000 RELAY_KEX_INIT_RATE_PER_MINUTE=10000000 \
    RELAY_RUNTIME_RATE_PER_MINUTE=10000000 RELAY_RUNTIME_RATE_PER_MINUTE_WORKSPACE=10000000 \
    RELAY_DAEMON_RUNTIME_RATE_PER_MINUTE=10000000 RELAY_MAX_CONNECTIONS_PER_IP=100000 \
    RELAY_MAX_TOTAL_CONNECTIONS=100000 RELAY_PING_INTERVAL_MS=3600000 RELAY_IDLE_TIMEOUT_MS=7200000 \
    RELAY_CLEANUP_INTERVAL_MS=3600000 \
    valgrind --tool=callgrind --callgrind-out-file="$out" build/relayhost scripts/workspace-relay.lua --log-level warn) \
    >"$tmp/relay.log" 2>&1 &
  relay=$!
  pids+=($relay)
  for _ in $(seq 300); do curl -fsS -o /dev/null "http://127.0.0.1:$rp/health" 2>/dev/null && break; sleep 0.2; done
  drive "$rp" warm 200
  for phase in frames conns worker; do
    callgrind_control -z "$relay" >/dev/null 2>&1
    drive "$rp" "$phase" "$n"
    callgrind_control -d "$relay" >/dev/null 2>&1
  done
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pids=()
  echo "$(grep -h '^summary:' "$out.1" "$out.2" "$out.3" | awk '{print $2}' | tr '\n' ' ')"
}

results=()
for r in $(seq "$runs"); do
  line=$(one_run "$r")
  results+=("$line")
  echo "run $r: frames conns worker = $line"
done
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for i in 1 2 3; do
  name=$(echo "frames conns worker" | cut -d' ' -f$i)
  m=$(printf '%s\n' "${results[@]}" | awk -v i=$i '{print $i}' | median)
  echo "median $name: $m Ir ($((m / n)) per round)"
done
