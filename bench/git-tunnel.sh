#!/usr/bin/env bash
# The git tunnel against going direct: `git clone` of a repository of SIZE_MB (200) of random
# data straight from the git server (git http-backend under lighttpd) and through relayhost
# git-tunnel/server + git-tunnel/client on loopback; then raw throughput, a STREAM_MB (1024)
# file fetched with curl three ways: direct (one loopback hop), through the tunnel (three hops:
# curl -> server, server <-> client over the WebSocket, client -> lighttpd) and through the
# floor, two chained HAProxy `mode tcp` relays (three hops too, two relays, no framing: what
# moving the bytes costs before the tunnel's own work). Prints each time, the ratios against the
# targets (clone <= 1.3x direct; issue 17: tunnel >= 0.9x the floor and >= 50% of direct) and the
# peak RSS of both relay processes during the runs. A benchmark, not a test: it prints numbers.
#
#   bench/git-tunnel.sh                 SIZE_MB=200 STREAM_MB=1024 RUNS=3 (medians)
#   RELAYHOST_BIN=/old/build/relayhost bench/git-tunnel.sh   the same against another build
#   KEEP=1 keeps the temporary folder.
# bench/git-tunnel-cpu.sh compares builds by CPU per GiB and callgrind instructions per MiB.
# The machine has 2 cores shared with other work: nothing is pinned, so read ratios. The runs
# interleave (direct, tunnel, floor in each run). Results also go to bench/out/git-tunnel-<date>.txt.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
me=bench/git-tunnel.sh
SIZE_MB=${SIZE_MB:-200}
STREAM_MB=${STREAM_MB:-1024}
RUNS=${RUNS:-3}
if [[ -z ${RELAYHOST_BIN:-} ]]; then "$top/tools/build" "$top/build"; fi
bin=${RELAYHOST_BIN:-$top/build/relayhost}
for t in haproxy curl git bc python3 /usr/sbin/lighttpd; do
  command -v "$t" >/dev/null || { echo "$me: $t not found (tools/deps --bench)" >&2; exit 1; }
done
mkdir -p "$top/bench/out"
out=$top/bench/out/git-tunnel-$(date +%Y%m%d-%H%M%S).txt
say() { printf '%s\n' "$*" | tee -a "$out"; }
dir=$(mktemp -d /tmp/git-tunnel-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -n ${KEEP:-} ]] && echo "kept $dir" || rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# the git server
mkdir -p "$dir/www" "$dir/repos"
printf 'alice:secret\n' > "$dir/users"
web=$(free_port)
sed -e "s|@PORT@|$web|g" -e "s|@DIR@|$dir|g" "$top/spec/fixtures/git-tunnel-lighttpd.conf" > "$dir/lighttpd.conf"
/usr/sbin/lighttpd -D -f "$dir/lighttpd.conf" & pids+=($!)
git init -q --bare "$dir/repos/big.git"
git init -q "$dir/work"
head -c $((SIZE_MB * 1000000)) /dev/urandom > "$dir/work/blob.bin"
git -C "$dir/work" add blob.bin
git -C "$dir/work" -c user.name=b -c user.email=b@example.com commit -qm blob
git -C "$dir/work" push -q "$dir/repos/big.git" HEAD:refs/heads/master
rm -rf "$dir/work"
truncate -s $((STREAM_MB * 1048576)) "$dir/www/stream.bin"
wait_port "$web"

# the tunnel
srv=$(free_port); probe=$(free_port)
"$bin" git-tunnel/server --listen "127.0.0.1:$srv" --tokens bench --log-level warn 2>"$dir/server.log" & spid=$!; pids+=($spid)
wait_port "$srv"
"$bin" git-tunnel/client --base-url "http://127.0.0.1:$web" --client-key bench --styra-token bench \
  --server-url "ws://127.0.0.1:$srv/v1/relay/register" --probe-listen "127.0.0.1:$probe" --log-level warn \
  2>"$dir/client.log" & cpid=$!; pids+=($cpid)
for _ in $(seq 100); do [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$probe/v1/system/ready") == 200 ]] && break; sleep 0.1; done

# the floor: two HAProxy relays in mode tcp, chained (curl -> hop1 -> hop2 -> lighttpd), one
# thread each like the two relayhost processes, HAProxy's defaults otherwise (no splice: the bytes
# go through user space, as the tunnel's must)
hop1=$(free_port); hop2=$(free_port)
tcp_relay() { # NAME LISTEN TARGET
  cat >"$dir/$1.cfg" <<CFG
global
  nbthread 1
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen $1
  bind 127.0.0.1:$2
  server next 127.0.0.1:$3
CFG
  haproxy -db -f "$dir/$1.cfg" >"$dir/$1.log" 2>&1 & pids+=($!)
}
tcp_relay hop2 "$hop2" "$web"
tcp_relay hop1 "$hop1" "$hop2"
wait_port "$hop1"; wait_port "$hop2"

direct="http://alice:secret@127.0.0.1:$web"
tunnel="http://alice:secret@127.0.0.1:$srv/v1/relay/bench"

# Peak RSS (kB) of the server and the client while a command runs.
peak_file=$dir/peak
sample() {
  local s=0 c=0 a b
  while [[ ! -e $dir/stop ]]; do
    a=$(awk '/VmRSS/ {print $2}' /proc/$spid/status); b=$(awk '/VmRSS/ {print $2}' /proc/$cpid/status)
    ((a > s)) && s=$a; ((b > c)) && c=$b
    sleep 0.05
  done
  echo "$s $c" > "$peak_file"
}
timed() { # prints seconds; a failed command is noted in $dir/failed
  local t0 t1; t0=$(date +%s.%N)
  "$@" >/dev/null || echo "$*" >>"$dir/failed"
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
clone() { rm -rf "$dir/clone"; GIT_TERMINAL_PROMPT=0 git clone -q "$1/git/big.git" "$dir/clone"; }
fetch() { # URL: the whole file, or an error on stderr
  local n; n=$(curl -sf -o /dev/null -w '%{size_download}' "$1/stream.bin") || { echo "$me: GET $1/stream.bin failed" >&2; return 1; }
  [[ $n == $((STREAM_MB * 1048576)) ]] || { echo "$me: GET $1/stream.bin got $n bytes" >&2; return 1; }
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

say "$me  $(date -Is)  $(uname -srm), $(nproc) cores, $("$bin" --version 2>&1 | head -n1) ($bin), $(haproxy -v 2>&1 | head -n1 | awk '{ print "haproxy " $3 }')"
say "Load average: $(cut -d' ' -f1-3 /proc/loadavg). Nothing is pinned. $RUNS run(s), medians."
say "before: server $(awk '/VmRSS/ {print $2}' /proc/$spid/status) kB, client $(awk '/VmRSS/ {print $2}' /proc/$cpid/status) kB RSS"
rm -f "$dir/stop" "$dir/failed"; sample & sampler=$!
cd=(); ct=(); fd=(); ft=(); ff=(); sc=(); cc=()
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user+system CPU of a process, in clock ticks
hz=$(getconf CLK_TCK)
for _ in $(seq "$RUNS"); do
  cd+=("$(timed clone "$direct")"); ct+=("$(timed clone "$tunnel")")
  fd+=("$(timed fetch "http://127.0.0.1:$web")")
  s0=$(ticks "$spid"); c0=$(ticks "$cpid")
  ft+=("$(timed fetch "http://127.0.0.1:$srv/v1/relay/bench")")
  sc+=("$(echo "($(ticks "$spid") - $s0) / $hz / ($STREAM_MB / 1024)" | bc -l)")
  cc+=("$(echo "($(ticks "$cpid") - $c0) / $hz / ($STREAM_MB / 1024)" | bc -l)")
  ff+=("$(timed fetch "http://127.0.0.1:$hop1")")
done
touch "$dir/stop"; wait "$sampler"
read -r speak cpeak < "$peak_file"
m() { printf '%s\n' "$@" | median; }
cdm=$(m "${cd[@]}"); ctm=$(m "${ct[@]}"); fdm=$(m "${fd[@]}"); ftm=$(m "${ft[@]}"); ffm=$(m "${ff[@]}")
mbs() { echo "$STREAM_MB / $1" | bc -l; }
say "$(printf 'git clone of %d MB:   direct %.2f s, tunnel %.2f s  -> %.2fx direct (target <= 1.3x)' "$SIZE_MB" "$cdm" "$ctm" "$(echo "$ctm / $cdm" | bc -l)")"
say "$(printf 'raw %d MB GET:       direct %.0f MB/s, floor (2 haproxy tcp hops) %.0f MB/s, tunnel %.0f MB/s' "$STREAM_MB" \
  "$(mbs "$fdm")" "$(mbs "$ffm")" "$(mbs "$ftm")")"
say "$(printf '  tunnel/floor %.2fx (target >= 0.9x), tunnel/direct %.0f%% (target >= 50%%), floor/direct %.0f%%' \
  "$(echo "$ffm / $ftm" | bc -l)" "$(echo "100 * $fdm / $ftm" | bc -l)" "$(echo "100 * $fdm / $ffm" | bc -l)")"
say "$(printf 'CPU per GiB of the tunnel GET (user+system, /proc/PID/stat; the load moves it far less than MB/s): server %.2f s, client %.2f s' \
  "$(m "${sc[@]}")" "$(m "${cc[@]}")")"
say "every run (s): clone direct ${cd[*]}; clone tunnel ${ct[*]}; GET direct ${fd[*]}; GET tunnel ${ft[*]}; GET floor ${ff[*]}"
say "peak RSS during the runs: server $speak kB, client $cpeak kB"
status=0
if [[ -s $dir/failed ]]; then
  status=1
  say "!!! FAILED runs (their times are not the transfer's):"
  while read -r l; do say "!!!   $l"; done <"$dir/failed"
fi
echo "results: ${out#"$top"/}"
exit "$status"
