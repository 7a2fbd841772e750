#!/usr/bin/env bash
# The workspace relay next to a minimal Node `ws` relay (the original's runtime) forwarding frames
# the same way (bench/js/node-relay.js), measured the same way:
#   1. N (default 10,000) client WebSockets held over 100 workspaces: RSS per connection;
#   2. daemon -> client e2ee frames at RATE (default 10,000) frames/s for SECS (default 5):
#      latency p50/p99/max, measured by the load generator (one clock for send and receive);
#   3. the load generator's own floor: the same frames at the same rate sent generator to
#      generator, no relay (ws-bench.js floor), so a reader sees how much of the p99 is its own.
# Limits are raised for the run. Servers are pinned to core 0, the load (and the validate
# fixture relayhost admits against) to core 1. Not a pass/fail test.
#   bench/workspace-relay.sh        N=10000 RATE=10000 SECS=5 RUNS=3
#   RELAYHOST_BIN=/old/build/relayhost bench/workspace-relay.sh   another build
#     (RELAYHOST_LUA_PATH=/old/lua: another Lua tree; RELAY_* settings pass through to relayhost)
#   HELD=1  the latency runs happen while the N clients are still held (default 0: after they left)
#   RT=1    servers and generator run SCHED_FIFO (chrt; root): on a machine shared with other
#           work the figures are then the relay's and the generator's, not the neighbours' turns
#           on the CPU. The fixture and the held clients stay in the normal class. A Node
#           process's other threads (V8's workers) go one step below its main thread (FIFO 40):
#           at the same priority on the same core they ran until they blocked while the main
#           thread waited (TRACE=1 counted most of the generator's waits over 1 ms behind them).
#           Below it they run when it sleeps or waits for them, still ahead of the neighbours.
#   GEN_IDLE=0  in the default mode, leaves the generator's other threads (V8's workers) in the
#           normal class beside its main thread. By default they run SCHED_IDLE (chrt -i): at
#           equal weight on its core they held its CPU for 93-188 ms of the main thread's waits
#           over 1 ms per 5 s run (TRACE=1), with frames waiting in its sockets meanwhile (11-35
#           ms in SCHED_IDLE). A normal thread's wakeup preempts an idle-class one at once; they
#           still run when it sleeps. The floor runs the same way.
#           The relay, the Node relay and their settings are untouched.
#   NODE_RELAY=0  skips the Node relay (an A/B of two relayhost builds)
#   TRACE=1  records the scheduler and the relay's epoll_wait calls during each latency run (perf,
#           root) and prints, from bench/js/turns.js: the relay's loop turns in CPU time (its
#           own work, whatever the neighbours do), and how long the relay and the generator's
#           main thread waited to run, with what held their CPU in the waits over 1 ms: the
#           generator's own threads, other tasks, or none (figures a loaded machine does not
#           make up)
#   STRACE=1  counts the relay's system calls during each latency run (strace -c -f; this slows
#           the relay, so its p99 is then not comparable); printed per frame
# Each latency run also prints the server's CPU-seconds (user + system, /proc/PID/stat) per 100k
# frames: the neighbours' load moves it much less than p99 (a ping sweep in the run adds to it).
# Results also go to bench/out/workspace-relay-<date>.txt.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-10000} RATE=${RATE:-10000} SECS=${SECS:-5} RUNS=${RUNS:-3} HELD=${HELD:-0} RT=${RT:-0}
fifo=() # the scheduling of servers and generator
if [[ $RT == 1 ]]; then fifo=(chrt -f 50); fi
"$top/tools/deps" --bench
if [[ -z ${RELAYHOST_BIN:-} ]]; then "$top/tools/build" "$top/build"; fi
mkdir -p "$top/bench/out"
out=$top/bench/out/workspace-relay-$(date +%Y%m%d-%H%M%S).txt
exec > >(tee "$out")
echo "bench/workspace-relay.sh  $(date -Is)  $(uname -srm), $(nproc) cores, $("${RELAYHOST_BIN:-$top/build/relayhost}" --version 2>&1 | head -n1), node $(node --version); load average $(cut -d' ' -f1-3 /proc/loadavg); HELD=$HELD RT=$RT"
ulimit -n "$(ulimit -Hn)"
export NODE_PATH=$top/spec/js/node_modules
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
rss() { ps -o rss= -p "$1" | awk '{ print $1 }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system, in clock ticks
hz=$(getconf CLK_TCK)
bench=$top/bench/js/ws-bench.js
# A Node process's threads other than its main one, to FIFO 40 (RT=1; see above); with gen as
# the second argument and RT=0, to SCHED_IDLE (the generator's only, see GEN_IDLE).
below_main() {
  local t policy prio
  if [[ $RT == 1 ]]; then policy=-f prio=40
  elif [[ ${2:-} == gen && ${GEN_IDLE:-1} == 1 ]]; then policy=-i prio=0
  else return 0; fi
  for t in "/proc/$1/task"/*; do t=${t##*/}; if [[ $t != "$1" ]]; then chrt "$policy" -p "$prio" "$t" >/dev/null 2>&1 || true; fi; done
}
# The generator (ws-bench.js MODE ARGS...), its line to $dir/gen.out; gen and gen_threads are its
# pid and its threads. Node makes its worker threads before it runs the script, which starts its
# sockets 0.5 s later: by then below_main has run.
generate() {
  WS_BENCH_START_MS=500 "${fifo[@]}" taskset -c 1 node "$bench" "$@" >"$dir/gen.out" &
  gen=$!
  for _ in $(seq 200); do [[ $(ls "/proc/$gen/task" | wc -l) -gt 1 ]] && break; sleep 0.01; done
  sleep 0.1 # made one after another
  gen_threads=$(ls "/proc/$gen/task" | paste -sd, -)
  below_main "$gen" gen
  wait "$gen"
}
# Ports free right now, not fixed ones: on a shared machine a second run of this bench (another
# build) would otherwise meet the first one's fixture and relay, and count their refusals.
free_port() { node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'; }
fixture_port=$(free_port) relay_port=$(free_port) node_port=$(free_port)
while [[ $relay_port == "$fixture_port" ]]; do relay_port=$(free_port); done
while [[ $node_port == "$fixture_port" || $node_port == "$relay_port" ]]; do node_port=$(free_port); done

taskset -c 1 node "$bench" fixture "$fixture_port" & pids+=($!)

measure() { # name pid port
  local url="ws://127.0.0.1:$3/ws" before after
  sleep 0.5
  before=$(rss "$2")
  local hold_secs=8
  if [[ $HELD == 1 ]]; then hold_secs=$(( 30 + RUNS * (SECS + 3) )); fi
  taskset -c 1 node "$bench" hold "$url" "$N" 100 "$hold_secs" >"$dir/hold.out" &
  local client=$!
  for _ in $(seq 1200); do grep -q ready "$dir/hold.out" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  after=$(rss "$2")
  local held; held=$(grep -o 'ready [0-9]*' "$dir/hold.out" | cut -d' ' -f2)
  if [[ $HELD != 1 ]]; then wait "$client" || true; fi
  printf "%-15s held %6s connections: RSS %7d kB -> %7d kB = %6d bytes per connection\n" "$1" "${held:-0}" \
    "$before" "$after" $(( (after - before) * 1024 / ${held:-1} ))
  for run in $(seq "$RUNS"); do # the machine is shared: several runs show the spread
    sleep 1
    local t0 line tracer=
    if [[ ${STRACE:-0} == 1 ]]; then strace -c -f -p "$2" -o "$dir/strace.out" 2>/dev/null & tracer=$!; sleep 0.5
    elif [[ ${TRACE:-0} == 1 ]]; then
      local e epoll=() # the relay's calls only: the whole machine's would swamp the record
      for e in sys_enter_epoll_wait sys_exit_epoll_wait sys_enter_epoll_pwait sys_exit_epoll_pwait; do
        epoll+=(-e "syscalls:$e" --filter "common_pid == $2")
      done
      perf record -q -a -o "$dir/trace.data" -e sched:sched_wakeup,sched:sched_switch "${epoll[@]}" 2>/dev/null & tracer=$!
      sleep 0.5
    fi
    t0=$(cpu_ticks "$2")
    generate latency "$url" "$RATE" "$SECS"
    line=$(cat "$dir/gen.out")
    line+=$(awk -v t="$(( $(cpu_ticks "$2") - t0 ))" -v hz="$hz" -v f="$(( RATE * SECS ))" \
      'BEGIN { printf "; server CPU %.3f s per 100k frames", t / hz * 100000 / f }')
    if [[ -n $tracer && ${TRACE:-0} == 1 ]]; then
      kill -INT "$tracer"; wait "$tracer" || true
      line+="; $(perf script -i "$dir/trace.data" -F tid,cpu,time,event,trace 2>/dev/null | node "$top/bench/js/turns.js" "$2" "$gen" "$gen_threads")"
    elif [[ -n $tracer ]]; then
      kill -INT "$tracer"; wait "$tracer" || true
      line+=$(awk -v f="$(( RATE * SECS ))" '$1 ~ /^[0-9.]+$/ && $NF != "total" { c += $4 } $NF ~ /^write/ { w += $4 }
        END { printf "; syscalls %.2f per frame (write/writev %.2f)", c / f, w / f }' "$dir/strace.out")
    fi
    printf "%-15s daemon->client at %d frames/s for %d s, run %d: %s\n" "$1" "$RATE" "$SECS" "$run" "$line"
    if [[ ${STRACE:-0} == 1 ]]; then head -n 12 "$dir/strace.out"; fi
  done
  if [[ $HELD == 1 ]]; then kill "$client" 2>/dev/null || true; wait "$client" 2>/dev/null || true; fi
}

PORT=$relay_port SERVER_URL=http://127.0.0.1:$fixture_port RELAY_INTERNAL_KEY=bench-internal-key-0123456789 RELAY_BACKPLANE_MODE=single \
RELAY_MAX_TOTAL_CONNECTIONS=100000 RELAY_MAX_CONNECTIONS_PER_IP=100000 RELAY_MAX_CLIENTS_PER_WORKSPACE=100000 \
RELAY_UPGRADE_RATE_PER_MINUTE=100000000 RELAY_DAEMON_RUNTIME_RATE_PER_MINUTE=100000000 \
  "${fifo[@]}" taskset -c 0 "${RELAYHOST_BIN:-$top/build/relayhost}" "$top/scripts/workspace-relay.lua" --log-level warn & pids+=($!)
measure relayhost "${pids[1]}" "$relay_port"
kill "${pids[1]}"

if [[ ${NODE_RELAY:-1} != 0 ]]; then
  "${fifo[@]}" taskset -c 0 node "$top/bench/js/node-relay.js" "$node_port" & pids+=($!)
  sleep 0.5 # its worker threads are made at its start
  below_main "${pids[2]}"
  measure "node ws relay" "${pids[2]}" "$node_port"
fi

for run in $(seq "$RUNS"); do # no relay: what the generator itself adds to every figure above
  generate floor "$RATE" "$SECS"
  printf "%-15s daemon->client at %d frames/s for %d s, run %d: %s\n" "generator floor" "$RATE" "$SECS" "$run" "$(cat "$dir/gen.out")"
done
echo "results: ${out#"$top"/}"
