#!/usr/bin/env bash
# The prefix proxy under a header policy, side by side with the peer proxies of ../shared/peers.
# Every proxy forwards /api/x to the nginx origin (127.0.0.1:9001) as /v1/x, sets
# X-Service: main-app, drops X-Internal-Token on the way up and X-Debug-Info on the way down:
#   nginx             proxy_pass + proxy_set_header/proxy_hide_header         (peers, 9101)
#   nginx+lua         rewrite_by_lua/header_filter_by_lua + proxy_pass        (peers, 9102)
#   haproxy           http-request/http-response rules                       (peers, 9103)
#   relayhost-lua     bench/prefix-proxy-policy.lua --mode lua: on_request/on_response hooks, through
#                     the head's methods (--mode table: through head.headers, tools/perf/per-request)
#   relayhost-c       bench/prefix-proxy-policy.lua --mode c: the same policy as native options
#   nginx+lua-access  access_by_lua: one ngx.shared incr, then the policy     (peers, 9106)
#   relayhost-access  bench/prefix-proxy-access.lua: one relay.shared incr in the mount's access
#                     phase, then the same policy (issue 18's row; "n/a" for a relayhost that
#                     refuses the script or never runs the phase, e.g. a build from before it)
# (h2o 9104 and caddy 9105 are not measured.) Before measuring it checks that every endpoint
# answers 200 with the origin's body and without X-Debug-Info, and, against a relayhost echo
# upstream, that every relayhost mode sends exactly the policy's request (/v1/x, one X-Service:
# main-app, no X-Internal-Token, X-Forwarded-*). Then wrk at each of CONNS, RUNS times, and a
# table of the medians: req/s, p50 and p99, CPU-seconds per 100k requests (utime+stime from
# /proc/PID/stat of every process of that server, its workers included, before and after each
# measured run, over the requests wrk counted), and relayhost's ratios to each peer; then the
# issues' targets at each concurrency but 1 (c=1 is the latency of one request at a time), the
# p99 ones also as a ratio round by round (runs of one round share the machine's moment).
# Not a pass/fail test: it prints numbers (and complains loudly about errors).
#
#   bench/prefix-proxy.sh                     DURATION=10 RUNS=3 CONNS="1 32 256" by default
#   DURATION=5 RUNS=3 bench/prefix-proxy.sh
#   RELAYHOST_BIN=/old/build/relayhost bench/prefix-proxy.sh   the same against another build
#   BEFORE_BIN=/old/build/relayhost bench/prefix-proxy.sh      adds that build's three rows (named
#     relayhost-*@before, run with the bench scripts of its own tree, BEFORE_TREE, by default the
#     folder above its build/), interleaved with the rest: their lua/c/acc-per-peer columns are then
#     this build's ratio to that one (before/after in one sitting; they skip the policy checks)
#   WARMUP=2 (seconds of wrk before each measurement), KEEP=1 (keep the temporary folder),
#   QUIET_WAIT=60 (seconds to wait for an idle machine first), SERVER_CPU=0 CLIENT_CPU=1,
#   ORIGIN_CPU (default SERVER_CPU), RELAY_LUA_PORT=9111 RELAY_C_PORT=9112 RELAY_ACCESS_PORT=9113
#   (another free port when taken), CHART=0 (leave docs/prefix-proxy-bench.png alone),
#   PEERS=../shared/peers (the folder of run-peers and its configurations).
# Exits 1 when a server errored (non-2xx, socket errors, died: the numbers are suspect), a
# relayhost mode did not apply the policy, or this tree's own build has no working access row.
#
# The machine has 2 cores: every server (the origin and each proxy: one process, one worker or
# thread) is pinned to core 0 and wrk to core 1 (one thread), the same for every peer. The
# measurements interleave (run 1 of every proxy, then run 2, ...), so drift hits all alike.
# Results also go to bench/out/prefix-proxy-<date>.txt, with the raw wrk output.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
me=bench/prefix-proxy.sh

DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-1 32 256}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
ORIGIN_CPU=${ORIGIN_CPU:-$SERVER_CPU}
RELAY_LUA_PORT=${RELAY_LUA_PORT:-9111}
RELAY_C_PORT=${RELAY_C_PORT:-9112}
RELAY_ACCESS_PORT=${RELAY_ACCESS_PORT:-9113}
read -r -a conns_list <<<"$CONNS"

# --- dependencies, build, peers -------------------------------------------------------------
tools/deps --bench
build_note=""
if ! tools/build build; then
  [[ -x build/relayhost ]] || { echo "$me: tools/build build failed and there is no build/relayhost" >&2; exit 1; }
  build_note="WARNING: tools/build build failed; measured the existing build/relayhost ($(date -r build/relayhost -Is))"
  echo "$me: $build_note" >&2
fi
relayhost=${RELAYHOST_BIN:-$top/build/relayhost} # RELAYHOST_BIN: another build, for before/after
policy=$top/bench/prefix-proxy-policy.lua
access_policy=$top/bench/prefix-proxy-access.lua
for t in nginx haproxy wrk taskset curl; do
  command -v "$t" >/dev/null || { echo "$me: $t not found after tools/deps --bench" >&2; exit 1; }
done
for f in "$policy" "$access_policy"; do [[ -f $f ]] || { echo "$me: $f is missing" >&2; exit 1; }; done
PEERS=${PEERS:-$top/../shared/peers} # the peer configurations (run-peers' folder)
if [[ ! -d $PEERS ]]; then
  echo "$me: the peer configurations are missing: expected $PEERS (with nginx-origin.conf," >&2
  echo "$me: nginx-peers.conf, haproxy-peer.cfg) next to the repository, or PEERS=/path/to/peers" >&2
  exit 1
fi
peers=$(cd "$PEERS" && pwd)
for f in nginx-origin.conf nginx-peers.conf haproxy-peer.cfg; do
  [[ -f $peers/$f ]] || { echo "$me: $peers/$f is missing" >&2; exit 1; }
done
ngx_mods=/usr/lib/nginx/modules
for m in ndk_http_module.so ngx_http_lua_module.so; do
  [[ -f $ngx_mods/$m ]] || { echo "$me: $ngx_mods/$m missing (libnginx-mod-http-lua)" >&2; exit 1; }
done

# --- temporary folder, processes, cleanup ---------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-prefix-proxy.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [[ ${KEEP:-0} == 1 ]]; then echo "$me: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$top/bench/out"
out=$top/bench/out/prefix-proxy-$(date +%Y%m%d-%H%M%S).txt
: >"$out"
say() { printf '%s\n' "$*" | tee -a "$out"; }

# --- ports ------------------------------------------------------------------------------------
port_busy() { # PORT [-l]: a socket on it (-l: a listener; else any, since the TIME_WAIT of a
  local which=-a # client that had it as its own port also refuses a bind)
  [[ ${2:-} == -l ]] && which=-l
  if command -v ss >/dev/null; then
    [[ -n $(ss -Htn "$which" "sport = :$1" 2>/dev/null) ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}
used_ports=" 9001 9101 9102 9103 9104 9105 9106 "
free_port() { # [PREFERRED]: PREFERRED when free, else a random free high port
  local p
  if [[ -n ${1:-} && $used_ports != *" $1 "* ]] && ! port_busy "$1"; then used_ports+="$1 "; echo "$1"; return 0; fi
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000)) # below the kernel's ephemeral range (32768-60999 by default)
    [[ $used_ports == *" $p "* ]] && continue
    port_busy "$p" && continue
    used_ports+="$p "
    echo "$p"; return 0
  done
  echo "$me: no free port found" >&2; return 1
}
# The peers' configurations fix their ports.
for p in 9001 9101 9102 9103 9106; do
  if port_busy "$p" -l; then
    echo "$me: port $p (origin/peers) is taken; stop what holds it first:" >&2
    ss -Hltnp "sport = :$p" >&2 2>/dev/null || true
    exit 1
  fi
done

running() { # PID: it runs (kill -0 alone also passes for a child that exited and was not waited for)
  local st
  st=$(sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}
wait_http() { # URL PID NAME LOG: until URL answers 200, or the process dies, or 10 s pass
  local i
  for i in $(seq 100); do
    running "$2" || { echo "$me: $3 exited at startup; log:" >&2; tail -n 30 "$4" >&2; return 1; }
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$me: $3 not answering 200 on $1 after 10 s; log:" >&2; tail -n 30 "$4" >&2
  curl -sS -i "$1" >&2 || true
  return 1
}

# --- origin and peers (the configurations from ../shared/peers, as run-peers starts them) -----
run=$tmp/peers
mkdir -p "$run"
taskset -c "$ORIGIN_CPU" nginx -c "$peers/nginx-origin.conf" -p "$run/" -e "$run/origin-error.log" \
  >"$run/origin.out" 2>&1 &
origin_pid=$!; pids+=("$origin_pid")
wait_http http://127.0.0.1:9001/v1/x "$origin_pid" origin "$run/origin-error.log"

taskset -c "$SERVER_CPU" nginx -c "$peers/nginx-peers.conf" -p "$run/" -e "$run/nginx-error.log" \
  >"$run/nginx.out" 2>&1 &
nginx_pid=$!; pids+=("$nginx_pid")
(cd "$run" && exec taskset -c "$SERVER_CPU" haproxy -f "$peers/haproxy-peer.cfg") >"$run/haproxy.out" 2>&1 &
haproxy_pid=$!; pids+=("$haproxy_pid")

# --- relayhost, every policy mode ---------------------------------------------------------------
start_relay() { # NAME PORT LOG MODE ORIGIN [BIN TREE]: relayhost pinned to SERVER_CPU, sets $!
  local bin=${6:-$relayhost} tree=${7:-$top}
  local script=("$tree/bench/prefix-proxy-policy.lua" --mode "$4")  # MODE lua or c: the policy
  [[ $4 == access ]] && script=("$tree/bench/prefix-proxy-access.lua") # script; access: its own
  [[ -f ${script[0]} ]] || script[0]=$top/bench/${script[0]##*/} # an older tree may lack it
  taskset -c "$SERVER_CPU" "$bin" "${script[@]}" --origin "$5" --listen "127.0.0.1:$2" \
    --log-level warn --drain-timeout 1 >"$3" 2>&1 &
}
mkdir -p "$tmp/relay"
lua_port=$(free_port "$RELAY_LUA_PORT")
c_port=$(free_port "$RELAY_C_PORT")
acc_port=$(free_port "$RELAY_ACCESS_PORT")
start_relay relayhost-lua "$lua_port" "$tmp/relay/relayhost-lua.log" lua http://127.0.0.1:9001
lua_pid=$!; pids+=("$lua_pid")
start_relay relayhost-c "$c_port" "$tmp/relay/relayhost-c.log" c http://127.0.0.1:9001
c_pid=$!; pids+=("$c_pid")
start_relay relayhost-access "$acc_port" "$tmp/relay/relayhost-access.log" access http://127.0.0.1:9001
acc_pid=$!; pids+=("$acc_pid")

names=(nginx nginx+lua haproxy relayhost-lua relayhost-c nginx+lua-access relayhost-access)
ports=(9101 9102 9103 "$lua_port" "$c_port" 9106 "$acc_port")
server_pids=("$nginx_pid" "$nginx_pid" "$haproxy_pid" "$lua_pid" "$c_pid" "$nginx_pid" "$acc_pid")
logs=("$run/nginx-error.log" "$run/nginx-error.log" "$run/haproxy.out" "$tmp/relay/relayhost-lua.log"
      "$tmp/relay/relayhost-c.log" "$run/nginx-error.log" "$tmp/relay/relayhost-access.log")
inl=1; ihap=2; ilua=3; ic=4; inla=5; iacc=6
relays=("$ilua" "$ic" "$iacc")
declare -A skipped # row -> why it is not measured ("n/a" in the table)
if [[ -n ${BEFORE_BIN:-} ]]; then # the older build's rows, for before/after in one sitting
  before_tree=${BEFORE_TREE:-$(cd "$(dirname "$BEFORE_BIN")/.." && pwd)}
  for mode in lua c access; do
    bport=$(free_port)
    blog=$tmp/relay/relayhost-$mode-before.log
    start_relay "relayhost-$mode@before" "$bport" "$blog" "$mode" http://127.0.0.1:9001 "$BEFORE_BIN" "$before_tree"
    bpid=$!; pids+=("$bpid")
    relays+=("${#names[@]}")
    names+=("relayhost-$mode@before"); ports+=("$bport"); server_pids+=("$bpid"); logs+=("$blog")
  done
fi
skip_access() { # WHY: the access row is n/a (an old build without the phase must not abort the run)
  skipped[$iacc]=$1
  echo "$me: relayhost-access is n/a: $1" >&2
  kill -TERM "$acc_pid" 2>/dev/null || true
}
for i in "${!names[@]}"; do
  if ((i == iacc)) || [[ ${names[i]} == *@before ]]; then # may be n/a; the others must serve
    wait_http "http://127.0.0.1:${ports[i]}/api/x" "${server_pids[i]}" "${names[i]}" "${logs[i]}" && continue
    why=$(grep -v '^ *$' "${logs[i]}" | tail -n 1 | head -c 300)
    if ((i == iacc)); then skip_access "$relayhost did not serve $access_policy: $why"
    else skipped[$i]="it did not serve: $why"; fi
    continue
  fi
  wait_http "http://127.0.0.1:${ports[i]}/api/x" "${server_pids[i]}" "${names[i]}" "${logs[i]}"
done

# --- checking the policy ----------------------------------------------------------------------
policy_problems=()
check_notes=()
origin_body=$(curl -fsS http://127.0.0.1:9001/v1/x)
curl -fsS -D "$tmp/origin.hdr" -o /dev/null http://127.0.0.1:9001/v1/x
grep -qi '^x-debug-info:' "$tmp/origin.hdr" || check_notes+=("the origin sends no X-Debug-Info (its config changed?)")

# 1. every endpoint: GET /api/x (with an X-Internal-Token) -> 200, the origin's body, no X-Debug-Info
resp_bytes=()
for i in "${!names[@]}"; do
  [[ -n ${skipped[$i]:-} ]] && { resp_bytes[i]="n/a"; continue; }
  url=http://127.0.0.1:${ports[i]}/api/x
  code=$(curl -sS -D "$tmp/check-$i.hdr" -o "$tmp/check-$i.body" -w '%{http_code}' \
    -H 'X-Internal-Token: secret' -H 'X-Service: spoofed' "$url") || code="curl failed"
  resp_bytes[i]=$(curl -s -o /dev/null -w '%{size_header}+%{size_download}' "$url")
  [[ $code == 200 ]] || policy_problems+=("${names[i]}: GET /api/x answered $code, not 200")
  [[ $(cat "$tmp/check-$i.body") == "$origin_body" ]] || policy_problems+=("${names[i]}: GET /api/x body is not the origin's: $(head -c 200 "$tmp/check-$i.body")")
  grep -qi '^x-debug-info:' "$tmp/check-$i.hdr" && policy_problems+=("${names[i]}: the response still carries X-Debug-Info")
done

# 2. every relayhost mode against an echo upstream (a relayhost script answering with the
#    request it got, and an X-Debug-Info header): the upstream request must be exactly the policy's.
#    The access mode must also have counted the request in its access phase (a build that
#    ignored the `access` key would forward without it: that row is then n/a, not measured).
cat >"$tmp/relay/echo.lua" <<'EOF'
local relay = require "relay"
local app = relay.new { name = "bench-echo" }
app:mount("/", function(req, res)
  local lines, names = { req.method .. " " .. req.target }, {}
  for k in pairs(req.headers) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = req.headers[k]
    if type(v) == "table" then
      for _, x in ipairs(v) do lines[#lines + 1] = k .. ": " .. tostring(x) end
    else
      lines[#lines + 1] = k .. ": " .. tostring(v)
    end
  end
  res:send(200, table.concat(lines, "\n") .. "\n", { ["content-type"] = "text/plain", ["x-debug-info"] = "dbg" })
end)
return app
EOF
echo_port=$(free_port)
taskset -c "$SERVER_CPU" "$relayhost" "$tmp/relay/echo.lua" --listen "127.0.0.1:$echo_port" --log-level warn \
  --drain-timeout 1 >"$tmp/relay/echo.log" 2>&1 &
echo_pid=$!; pids+=("$echo_pid")
wait_http "http://127.0.0.1:$echo_port/v1/x" "$echo_pid" "echo upstream" "$tmp/relay/echo.log"
modes=(lua c); [[ -z ${skipped[$iacc]:-} ]] && modes+=(access)
for mode in "${modes[@]}"; do
  vport=$(free_port)
  vlog=$tmp/relay/verify-$mode.log
  start_relay "verify-$mode" "$vport" "$vlog" "$mode" "http://127.0.0.1:$echo_port"
  vpid=$!; pids+=("$vpid")
  wait_http "http://127.0.0.1:$vport/api/x" "$vpid" "relayhost --mode $mode (echo upstream)" "$vlog"
  e=$tmp/echo-$mode
  curl -sS -D "$e.hdr" -o "$e.body" -H 'X-Internal-Token: secret' -H 'X-Service: spoofed' \
    "http://127.0.0.1:$vport/api/x?q=1" || true
  if [[ $mode == access ]]; then
    seen=$(curl -sS "http://127.0.0.1:$vport/_bench/seen" 2>&1 | head -c 200 || true)
    if [[ ! $seen =~ ^[1-9][0-9]*$ ]]; then
      skip_access "its access phase never ran (GET /_bench/seen after one request: '$seen')"
      kill -TERM "$vpid" 2>/dev/null || true
      continue
    fi
  fi
  who="relayhost-$mode"
  [[ $(head -n1 "$e.body") == "GET /v1/x?q=1" ]] || policy_problems+=("$who: upstream request line is '$(head -n1 "$e.body")', want 'GET /v1/x?q=1'")
  n=$(grep -ci '^x-service:' "$e.body" || true)
  [[ $n == 1 ]] || policy_problems+=("$who: upstream got $n X-Service headers: $(grep -i '^x-service:' "$e.body" | tr '\n' ' ')")
  grep -qx 'x-service: main-app' "$e.body" || policy_problems+=("$who: upstream X-Service is not main-app: $(grep -i '^x-service:' "$e.body" | tr '\n' ' ')")
  grep -qi '^x-internal-token:' "$e.body" && policy_problems+=("$who: X-Internal-Token reached the upstream")
  for h in x-forwarded-for x-forwarded-proto x-forwarded-host; do
    grep -qi "^$h:" "$e.body" || policy_problems+=("$who: upstream got no $h")
  done
  grep -qi '^x-debug-info:' "$e.hdr" && policy_problems+=("$who: X-Debug-Info from the upstream reached the client")
  check_notes+=("relayhost-$mode upstream request (echo): $(tr '\n' '|' <"$e.body" | sed 's/|$//; s/|/ | /g')")
  kill -TERM "$vpid" 2>/dev/null || true
done
kill -TERM "$echo_pid" 2>/dev/null || true

# --- measuring --------------------------------------------------------------------------------
cpu_busy() { # busy share of all cores over one second, from /proc/stat
  local a b
  read -r -a a </proc/stat; sleep 1; read -r -a b </proc/stat
  awk -v u=$((b[1]+b[2]+b[3]+b[6]+b[7]+b[8] - a[1]-a[2]-a[3]-a[6]-a[7]-a[8])) \
      -v t=$((b[1]+b[2]+b[3]+b[4]+b[5]+b[6]+b[7]+b[8] - a[1]-a[2]-a[3]-a[4]-a[5]-a[6]-a[7]-a[8])) \
      'BEGIN { printf "%d", (t > 0 ? 100 * u / t : 0) }'
}
busy=$(cpu_busy); waited=0
while ((busy > 15 && waited < ${QUIET_WAIT:-60})); do sleep 2; waited=$((waited + 3)); busy=$(cpu_busy); done
rss_kb() { awk '$1 == "'"$2"':" { print $2 }' "/proc/$1/status" 2>/dev/null || echo "?"; }
to_ms() { # wrk duration (123.45us, 1.23ms, 1.02s, 2.00m) -> milliseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    else if (u != "ms") { print "?"; exit }
    printf "%.3f", n }'
}
nums() { printf '%s\n' "$@" | awk '$1 != "?" && $1 != ""' | sort -g; } # sorted, "?" dropped
median() { # numbers as arguments -> their median ("?" ignored; "?" when none)
  nums "$@" | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "?"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# CPU time of a server: utime+stime (clock ticks) of ROOT and every process below it (nginx's
# workers), from /proc/PID/stat. cat, not awk, opens the files: one may vanish meanwhile.
cpu_ticks() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    { pid = $1; rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")  # f[1] is the state (field 3)
      parent[pid] = f[2]; ticks[pid] = f[12] + f[13] }
    END { mine[root] = 1
          do { grew = 0; for (p in parent) if (!(p in mine) && (parent[p] in mine)) { mine[p] = 1; grew = 1 } } while (grew)
          s = 0; for (p in mine) s += ticks[p]; print s + 0 }'
}
clk_tck=$(getconf CLK_TCK)
per_100k() { awk -v t="$1" -v hz="$clk_tck" -v n="$2" 'BEGIN { if (n > 0) printf "%.3f", t / hz / n * 100000; else print "?" }'; }

load_before=$(cut -d" " -f1-3 /proc/loadavg)
declare -A rss_before
for i in "${relays[@]}"; do rss_before[$i]=$(rss_kb "${server_pids[i]}" VmRSS); done

# Whether a server still runs; once it is gone, how it ended (from wait: exit status or signal).
declare -A ended
alive() { running "$1"; }
how_ended() { # PID: sets $how to "exit status N" / "killed by signal N (SIGNAME)" (not in $(...): wait
  local st=0     # works only in the shell that started the process; cached, a pid is waited once)
  if [[ -z ${ended[$1]:-} ]]; then
    wait "$1" 2>/dev/null || st=$?
    if ((st > 128 && st < 160)); then ended[$1]="killed by signal $((st - 128)) (SIG$(kill -l $((st - 128)) 2>/dev/null || echo '?'))"
    else ended[$1]="exit status $st"; fi
  fi
  how=${ended[$1]}
}

declare -A rps p50 p99 cpu ocpu errs dead
errored=()
for run_no in $(seq "$RUNS"); do
  for c in "${conns_list[@]}"; do
    for i in "${!names[@]}"; do
      k="$i,$c,$run_no"
      rps[$k]="?"; p50[$k]="?"; p99[$k]="?"; cpu[$k]="?"; ocpu[$k]="?"
      [[ -n ${skipped[$i]:-} || -n ${dead[$i]:-} ]] && continue # n/a; or reported once, when it died
      url=http://127.0.0.1:${ports[i]}/api/x
      wu=$tmp/warmup-$i-$c-$run_no.txt
      w=$tmp/wrk-$i-$c-$run_no.txt
      echo "$me: run $run_no/$RUNS, c=$c, ${names[i]}" >&2
      e=""; phase=""
      taskset -c "$CLIENT_CPU" wrk -t1 -c"$c" -d"${WARMUP}s" "$url" >"$wu" 2>&1 || true
      sleep 0.2
      if alive "${server_pids[i]}"; then
        t0=$(cpu_ticks "${server_pids[i]}"); o0=$(cpu_ticks "$origin_pid")
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$c" -d"${DURATION}s" --latency "$url" >"$w" 2>&1 || true
        t1=$(cpu_ticks "${server_pids[i]}"); o1=$(cpu_ticks "$origin_pid")
        n=$(awk '$2 == "requests" && $3 == "in" { print $1; exit }' "$w")
        [[ -n $n ]] && cpu[$k]=$(per_100k $((t1 - t0)) "$n") && ocpu[$k]=$(per_100k $((o1 - o0)) "$n")
        sleep 0.2
        alive "${server_pids[i]}" || phase="measured run"
      else
        phase="warmup"; : >"$w"
      fi
      r=$(awk '/^Requests\/sec:/ { print $2 }' "$w"); rps[$k]=${r:-?}
      l=$(awk '$1 == "50%" { print $2; exit }' "$w"); [[ -n $l ]] && p50[$k]=$(to_ms "$l")
      l=$(awk '$1 == "99%" { print $2; exit }' "$w"); [[ -n $l ]] && p99[$k]=$(to_ms "$l")
      for f in "$wu" "$w"; do
        tag=""; [[ $f == "$wu" ]] && tag="warmup: "
        grep -q 'Non-2xx or 3xx responses' "$f" && e+="$tag$(grep 'Non-2xx or 3xx responses' "$f" | sed 's/^ *//'); "
        grep -q 'Socket errors' "$f" && e+="$tag$(grep 'Socket errors' "$f" | sed 's/^ *//'); "
      done
      if [[ -n $phase ]]; then
        how_ended "${server_pids[i]}"
        dead[$i]="${names[i]} (pid ${server_pids[i]}) DIED during the $phase at c=$c, run $run_no: $how"
        e+="${dead[$i]}; no later runs of it; "
        [[ $phase == warmup ]] && e+="wrk (warmup) said: $(grep -v '^ *$' "$wu" | tr -s ' \n' ' ' | head -c 600); "
      fi
      if ! alive "$origin_pid"; then
        how_ended "$origin_pid"; e+="the origin is DEAD ($how); "
      fi
      [[ ${rps[$k]} == "?" && $phase != warmup ]] && e+="no Requests/sec in wrk output: $(tr '\n' ' ' <"$w" | head -c 300); "
      if [[ -n $e ]]; then
        errs[$k]=$e
        echo "$me: ERROR ${names[i]} c=$c run $run_no: $e" >&2
        [[ " ${errored[*]} " == *" $i "* ]] || errored+=("$i")
      fi
    done
  done
done

declare -A rss_after hwm
for i in "${relays[@]}"; do rss_after[$i]=$(rss_kb "${server_pids[i]}" VmRSS); hwm[$i]=$(rss_kb "${server_pids[i]}" VmHWM); done
acc_seen="n/a"
[[ -z ${skipped[$iacc]:-} ]] && acc_seen=$(curl -sS "http://127.0.0.1:$acc_port/_bench/seen" 2>&1 | head -c 200 || true)
load_after=$(cut -d" " -f1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------------------------
say "$me  $(date -Is)  $(uname -srm), $(nproc) cores, $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v 2>&1 | head -n1 | awk '{ print "haproxy " $3 }'), $("$relayhost" --version 2>&1 | head -n1)"
[[ -n $build_note ]] && say "$build_note"
say "GET /api/x through each proxy to the nginx origin (/v1/x, a 64-byte body); policy: X-Service: main-app set,"
say "  X-Internal-Token dropped, X-Debug-Info hidden. wrk -t1 -cN -d${DURATION}s --latency after a ${WARMUP}s warmup,"
say "  $RUNS runs each (interleaved), medians shown. Peers: $peers"
say "CPU pinning: every proxy on core $SERVER_CPU, the origin on core $ORIGIN_CPU, wrk on core $CLIENT_CPU; one process/worker/thread each."
say "Machine busy before measuring: ${busy}% of all cores (waited ${waited}s for <=15%). Load average before: $load_before, after: $load_after."
say "lua/peer, c/peer, acc/peer = relayhost-lua's, relayhost-c's, relayhost-access's median req/s / the row's median"
say "  req/s (>1: relayhost faster). cpu s/100k = CPU-seconds (user+system, every process of that server) per 100,000"
say "  requests served, median of the runs (nginx, nginx+lua and nginx+lua-access are one nginx: its CPU while that row ran)."
say "  origin s/100k = the same for the nginx origin while that row ran: it shares the proxies' core, so a"
say "  proxy's req/s is bounded by 1 / (its CPU + the origin's) per request (see \"Core $SERVER_CPU per request\" below)."
say "  c=1: one request at a time (p50/p99 are the latency of one request through the proxy)."
say "h2o (9104) and caddy (9105): not measured ($(command -v h2o >/dev/null && echo "h2o installed" || echo "h2o not installed"), $(command -v caddy >/dev/null && echo "caddy installed" || echo "caddy not installed"))."
for i in "${!names[@]}"; do [[ -n ${skipped[$i]:-} ]] && say "${names[i]}: n/a, ${skipped[$i]}"; done
say ""
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a != "?" && a != "") printf "%.2f", a / b; else print "n/a" }'; }
declare -A medr medp medc medo
fmt='%-23s %5s %8s %7s %7s %10s %13s %8s %6s %8s %13s %15s %10s\n'
printf "$fmt" name conns "req/s" "p50 ms" "p99 ms" "cpu s/100k" "origin s/100k" "lua/peer" "c/peer" "acc/peer" "req/s min-max" "p99 ms min-max" "resp bytes" | tee -a "$out"
for c in "${conns_list[@]}"; do
  for i in "${!names[@]}"; do
    rv=(); pv=(); for r in $(seq "$RUNS"); do rv+=("${rps[$i,$c,$r]}"); pv+=("${p99[$i,$c,$r]}"); done
    medr[$i,$c]=$(median "${rv[@]}"); medp[$i,$c]=$(median "${pv[@]}")
  done
  for i in "${!names[@]}"; do
    if [[ -n ${skipped[$i]:-} ]]; then
      printf "$fmt" "${names[i]}" "$c" n/a n/a n/a n/a n/a n/a n/a n/a n/a n/a n/a | tee -a "$out"
      continue
    fi
    rv=(); pv=(); p5=(); cv=(); ov=()
    for r in $(seq "$RUNS"); do
      rv+=("${rps[$i,$c,$r]}"); pv+=("${p99[$i,$c,$r]}"); p5+=("${p50[$i,$c,$r]}"); cv+=("${cpu[$i,$c,$r]}"); ov+=("${ocpu[$i,$c,$r]}")
    done
    medc[$i,$c]=$(median "${cv[@]}"); medo[$i,$c]=$(median "${ov[@]}")
    rmin=$(nums "${rv[@]}" | awk 'NR == 1 { printf "%.0f", $1 }'); rmax=$(nums "${rv[@]}" | awk 'END { if (NR) printf "%.0f", $1 }')
    pmin=$(nums "${pv[@]}" | awk 'NR == 1'); pmax=$(nums "${pv[@]}" | awk 'END { print $1 }')
    printf "$fmt" "${names[i]}" "$c" "$(awk -v v="${medr[$i,$c]}" 'BEGIN { if (v == "?") print v; else printf "%.0f", v }')" \
      "$(median "${p5[@]}")" "${medp[$i,$c]}" "${medc[$i,$c]}" "${medo[$i,$c]}" \
      "$(ratio "${medr[$ilua,$c]}" "${medr[$i,$c]}")" "$(ratio "${medr[$ic,$c]}" "${medr[$i,$c]}")" \
      "$(ratio "${medr[$iacc,$c]}" "${medr[$i,$c]}")" \
      "${rmin:-?}-${rmax:-?}" "${pmin:-?}-${pmax:-?}" "${resp_bytes[i]}" | tee -a "$out"
    [[ ${names[i]} == *@before ]] || echo "${names[i]} $c ${medr[$i,$c]} ${medp[$i,$c]}" >>"$out.dat" # the chart
  done
done
say ""
# The issues' targets (17: relayhost-c >= 1.10x haproxy, relayhost-lua >= 1.20x nginx+lua, p99 at
# or below haproxy's; 18: relayhost-access >= 1.10x nginx+lua-access), at every concurrency but 1.
target() { # A B MIN at conns $c: "A/B RATIO (>= MIN: met|NOT met)"
  local r; r=$(ratio "${medr[$1,$c]}" "${medr[$2,$c]}")
  printf '%s/%s %s (>= %s: %s)' "${names[$1]}" "${names[$2]}" "$r" "$3" \
    "$(awk -v r="$r" -v m="$3" 'BEGIN { if (r == "n/a") print "n/a"; else if (r + 0 >= m + 0) print "met"; else print "NOT met" }')"
}
p99_vs() { # A B at conns $c: "A p99 X ms (<= B's Y: met|NOT met)"
  printf '%s p99 %s ms (<= %s %s: %s)' "${names[$1]}" "${medp[$1,$c]}" "${names[$2]}" "${medp[$2,$c]}" \
    "$(awk -v a="${medp[$1,$c]}" -v b="${medp[$2,$c]}" 'BEGIN { if (a == "?" || b == "?") print "n/a"; else if (a + 0 <= b + 0) print "met"; else print "NOT met" }')"
}
# The p99 targets again, round by round: the runs of one round follow each other, so their ratio
# shares the machine's moment, where the medians above come from runs minutes apart. A median
# ratio near 1 with rounds on both sides says the sitting cannot tell the two apart.
paired_p99() { # A B at conns $c: "A/B p99 per round R (min-max), at or below in K of N"
  local k a b rs=() le=0
  for k in $(seq "$RUNS"); do
    a=${p99[$1,$c,$k]:-?} b=${p99[$2,$c,$k]:-?}
    [[ $a == "?" || $b == "?" ]] && continue
    rs+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')")
    awk -v a="$a" -v b="$b" 'BEGIN { exit !(a + 0 <= b + 0) }' && le=$((le + 1))
  done
  if ((${#rs[@]} == 0)); then printf '%s/%s p99 per round: n/a' "${names[$1]}" "${names[$2]}"; return; fi
  printf '%s/%s p99 per round %s (%s-%s), at or below in %d of %d' "${names[$1]}" "${names[$2]}" \
    "$(median "${rs[@]}")" "$(nums "${rs[@]}" | head -1)" "$(nums "${rs[@]}" | tail -1)" "$le" "${#rs[@]}"
}
say "Targets (medians of $RUNS run(s)):"
for c in "${conns_list[@]}"; do
  [[ $c == 1 ]] && continue
  say "  c=$c: $(target "$ic" "$ihap" 1.10); $(target "$ilua" "$inl" 1.20); $(target "$iacc" "$inla" 1.10)"
  say "  c=$c: $(p99_vs "$ic" "$ihap"); $(p99_vs "$ilua" "$ihap")"
  say "  c=$c: $(paired_p99 "$ic" "$ihap"); $(paired_p99 "$ilua" "$ihap")"
done
say ""
# Proxy and origin share core $SERVER_CPU, so what a ratio target asks of the proxy's own CPU follows
# from the medians above: A at R x B's req/s needs A + origin <= (B + origin) / R per request.
core_need() { # A B R at conns $c
  awk -v a="${medc[$1,$c]}" -v ao="${medo[$1,$c]}" -v b="${medc[$2,$c]}" -v bo="${medo[$2,$c]}" -v r="$3" \
    -v an="${names[$1]}" -v bn="${names[$2]}" 'BEGIN {
      if (a == "?" || ao == "?" || b == "?" || bo == "?" || a == "" || b == "") { print an ": n/a"; exit }
      printf "%s %.3f + origin %.3f = %.3f s/100k vs %s %.3f + %.3f = %.3f; %.2fx needs %s <= %.3f (%+.0f %%)\n",
        an, a, ao, a + ao, bn, b, bo, b + bo, r, an, (b + bo) / r - ao, ((b + bo) / r - ao) / a * 100 - 100 }'
}
say "Core $SERVER_CPU per request (proxy + origin CPU, medians; what each target asks of the proxy's own CPU):"
for c in "${conns_list[@]}"; do
  [[ $c == 1 ]] && continue
  say "  c=$c: $(core_need "$ic" "$ihap" 1.10)"
  say "  c=$c: $(core_need "$iacc" "$inla" 1.10)"
done
say ""
for i in "${relays[@]}"; do
  [[ -n ${skipped[$i]:-} ]] && continue
  say "$(printf '%-23s' "${names[i]}") RSS: VmRSS before ${rss_before[$i]} kB, after ${rss_after[$i]} kB (VmHWM ${hwm[$i]} kB)"
done
[[ -z ${skipped[$iacc]:-} ]] && say "relayhost-access counted ${acc_seen} requests in its access phase (warmups and checks included)"
say ""
say "Policy checks: ${#policy_problems[@]} problem(s)."
for n in "${check_notes[@]}"; do say "  $n"; done

show_log() { # NAME FILE: its distinct lines (timestamps and request ids masked) by count, then its tail
  say "--- $1 log ($(wc -l <"$2" 2>/dev/null || echo 0) lines, ${2##*/}); distinct lines by count:"
  sed -E 's/"ts":"[^"]*",?//; s/,?"request_id":"[^"]*"//; s/^[0-9]{4}\/[0-9]{2}\/[0-9]{2} [0-9:]{8} //' "$2" 2>/dev/null |
    sort | uniq -c | sort -rn | head -n 15 | tee -a "$out" || true
  say "--- $1 log, last 5 lines:"
  tail -n 5 "$2" 2>/dev/null | tee -a "$out" || true
}

status=0
if [[ -n ${skipped[$iacc]:-} && -z ${RELAYHOST_BIN:-} ]]; then
  status=1 # another build may lack the phase; this tree's must have it
  say ""
  say "!!! this tree's build has no working relayhost-access row: ${skipped[$iacc]}"
fi
if ((${#policy_problems[@]})); then
  status=1
  say ""
  say "!!! POLICY PROBLEMS (the proxies do not all apply the same policy):"
  for p in "${policy_problems[@]}"; do say "!!!   $p"; done
fi
if ((${#errored[@]})); then
  status=1
  say ""
  say "!!! ERRORS UNDER LOAD (the numbers of these rows are suspect):"
  for run_no in $(seq "$RUNS"); do
    for c in "${conns_list[@]}"; do
      for i in "${!names[@]}"; do
        [[ -n ${errs[$i,$c,$run_no]:-} ]] && say "!!!   ${names[i]} c=$c run $run_no: ${errs[$i,$c,$run_no]}"
      done
    done
  done
  shown=" "
  for i in "${errored[@]}"; do
    [[ $shown == *" ${logs[i]} "* ]] && continue
    shown+="${logs[i]} "
    show_log "${names[i]}" "${logs[i]}"
  done
  show_log origin "$run/origin-error.log"
fi
for i in "${relays[@]}"; do
  if grep -qv "serving at" "${logs[i]}" 2>/dev/null && [[ " ${errored[*]} " != *" $i "* ]]; then
    say ""
    show_log "${names[i]} (warn and above)" "${logs[i]}"
  fi
done

{
  echo
  echo "=== raw wrk output"
  for c in "${conns_list[@]}"; do
    for i in "${!names[@]}"; do
      for run_no in $(seq "$RUNS"); do
        [[ -f $tmp/wrk-$i-$c-$run_no.txt ]] || continue
        if [[ -n ${errs[$i,$c,$run_no]:-} ]]; then
          echo "--- ${names[i]} (port ${ports[i]}) c=$c run $run_no, warmup"
          cat "$tmp/warmup-$i-$c-$run_no.txt"
        fi
        echo "--- ${names[i]} (port ${ports[i]}) c=$c run $run_no"
        cat "$tmp/wrk-$i-$c-$run_no.txt"
      done
    done
  done
} >>"$out"
echo "results: ${out#"$top"/}"
# The chart README shows: req/s and p99 per peer at each concurrency (gnuplot, Debian's gnuplot-nox).
if command -v gnuplot >/dev/null && ((status == 0)) && [[ ${CHART:-1} == 1 ]]; then
  mkdir -p "$top/docs"
  awk '$3 != "?"' "$out.dat" >"$out.ok.dat"
  gnuplot <<GP
set terminal pngcairo size 900,420 font "sans,10"
set output "$top/docs/prefix-proxy-bench.png"
set multiplot layout 1,2 title "GET /api/x through each proxy (wrk -t1, $DURATION s x $RUNS runs, medians; 2 cores, $(date +%F))"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -30
set key top left
set yrange [0:*]
set title "requests/s (higher is better)"
plot "< awk '\$2 == 32' $out.ok.dat" using 3:xtic(1) title "c=32", "< awk '\$2 == 256' $out.ok.dat" using 3 title "c=256"
set title "p99 latency ms (lower is better)"
plot "< awk '\$2 == 32' $out.ok.dat" using 4:xtic(1) title "c=32", "< awk '\$2 == 256' $out.ok.dat" using 4 title "c=256"
unset multiplot
GP
  echo "chart: docs/prefix-proxy-bench.png"
fi
exit "$status"
