#!/usr/bin/env bash
# CPU per GiB of the git tunnel: user+system CPU-seconds that the relay server and the relay
# client each spend moving a STREAM_MB (1024) MiB GET (curl -> server <-> client -> lighttpd), read
# from /proc/PID/stat before and after each GET. On a shared machine wall-clock throughput is
# noise; CPU per byte is what the tunnel's own work costs, and moves far less with the load.
#
#   bench/git-tunnel-cpu.sh [BIN...]    each BIN its own server+client pair (default build/relayhost);
#                                       RUNS=5 rounds, the BINs interleaved in each; medians
# Prints, per BIN: server and client CPU-s per GiB (median, then every run; and the median of
# the system share, which is most of it: copies, TCP, syscalls) and MB/s (noisy).
# CALLGRIND=1: instead, both processes run under valgrind's callgrind and one GET of STREAM_MB
# (default then 64) is counted exactly: user-space instructions per MiB, server and client (the
# counters are zeroed before the GET and dumped after it, so start-up is not counted). Counts,
# not time: the load does not move them. The dumps stay in bench/out/callgrind/ for
# callgrind_annotate.
# PROFILE=DIR: one more GET per BIN under `perf record` of both processes, into
# DIR/{server,client}N.data (read them with perf report -i).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
CALLGRIND=${CALLGRIND:-}
STREAM_MB=${STREAM_MB:-$([[ -n $CALLGRIND ]] && echo 64 || echo 1024)}
RUNS=${RUNS:-5}
bins=("$@")
[[ ${#bins[@]} -gt 0 ]] || bins=("$top/build/relayhost")
dir=$(mktemp -d /tmp/git-tunnel-cpu.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
sys_ticks() { awk '{ print $15 }' "/proc/$1/stat"; } # the kernel's share (copies, TCP, syscalls)

mkdir -p "$dir/www" "$dir/repos"
printf 'alice:secret\n' > "$dir/users"
web=$(free_port)
sed -e "s|@PORT@|$web|g" -e "s|@DIR@|$dir|g" "$top/spec/fixtures/git-tunnel-lighttpd.conf" > "$dir/lighttpd.conf"
/usr/sbin/lighttpd -D -f "$dir/lighttpd.conf" & pids+=($!)
truncate -s $((STREAM_MB * 1048576)) "$dir/www/stream.bin"
wait_port "$web"

cgdir=$top/bench/out/callgrind
[[ -z $CALLGRIND ]] || { mkdir -p "$cgdir"; rm -f "$cgdir"/*; }
vg() { # NAME CMD...: CMD, under callgrind with CALLGRIND set
  local name=$1; shift
  if [[ -n $CALLGRIND ]]; then exec valgrind --tool=callgrind --quiet --callgrind-out-file="$cgdir/$name.%p" "$@"; fi
  exec "$@"
}
srvs=(); spids=(); cpids=()
for i in "${!bins[@]}"; do
  srv=$(free_port); probe=$(free_port)
  vg server$i "${bins[$i]}" git-tunnel/server --listen "127.0.0.1:$srv" --tokens bench --log-level warn 2>"$dir/server$i.log" & spids+=($!); pids+=($!)
  wait_port "$srv"
  vg client$i "${bins[$i]}" git-tunnel/client --base-url "http://127.0.0.1:$web" --client-key bench --styra-token bench \
    --server-url "ws://127.0.0.1:$srv/v1/relay/register" --probe-listen "127.0.0.1:$probe" --log-level warn \
    2>"$dir/client$i.log" & cpids+=($!); pids+=($!)
  for _ in $(seq 600); do [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$probe/v1/system/ready") == 200 ]] && break; sleep 0.1; done
  srvs+=("$srv")
done

# Exact user-space instructions per MiB of one GET, from callgrind's counters.
if [[ -n $CALLGRIND ]]; then
  ir() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'; }
  echo "$(date -Is) load $(cut -d' ' -f1-3 /proc/loadavg), one $STREAM_MB MiB GET under callgrind: user-space instructions per MiB"
  for i in "${!bins[@]}"; do
    curl -sf -o /dev/null "http://127.0.0.1:${srvs[$i]}/v1/relay/bench/stream.bin" # warm: buffers, first stream
    callgrind_control -z "${spids[$i]}" >/dev/null 2>&1; callgrind_control -z "${cpids[$i]}" >/dev/null 2>&1
    curl -sf -o /dev/null "http://127.0.0.1:${srvs[$i]}/v1/relay/bench/stream.bin"
    callgrind_control -d "${spids[$i]}" >/dev/null 2>&1; callgrind_control -d "${cpids[$i]}" >/dev/null 2>&1
    sleep 1
    s=$(ls -t "$cgdir"/server$i.*.[0-9]* | head -n1); c=$(ls -t "$cgdir"/client$i.*.[0-9]* | head -n1)
    printf '%s\n  server %s Ir/MiB (%s)\n  client %s Ir/MiB (%s)\n' "${bins[$i]}" \
      "$(echo "$(ir "$s") / $STREAM_MB" | bc)" "${s#"$top"/}" "$(echo "$(ir "$c") / $STREAM_MB" | bc)" "${c#"$top"/}"
  done
  exit 0
fi

hz=$(getconf CLK_TCK)
gib=$(echo "$STREAM_MB / 1024" | bc -l)
declare -A scpu ccpu ssys csys rate
for _ in $(seq "$RUNS"); do
  for i in "${!bins[@]}"; do
    s0=$(cpu_ticks "${spids[$i]}"); c0=$(cpu_ticks "${cpids[$i]}"); t0=$(date +%s.%N)
    ks0=$(sys_ticks "${spids[$i]}"); kc0=$(sys_ticks "${cpids[$i]}")
    n=$(curl -sf -o /dev/null -w '%{size_download}' "http://127.0.0.1:${srvs[$i]}/v1/relay/bench/stream.bin")
    t1=$(date +%s.%N); s1=$(cpu_ticks "${spids[$i]}"); c1=$(cpu_ticks "${cpids[$i]}")
    ks1=$(sys_ticks "${spids[$i]}"); kc1=$(sys_ticks "${cpids[$i]}")
    [[ $n == $((STREAM_MB * 1048576)) ]] || { echo "GET through ${bins[$i]} got $n bytes" >&2; exit 1; }
    scpu[$i]+="$(echo "($s1 - $s0) / $hz / $gib" | bc -l | xargs printf '%.2f') "
    ccpu[$i]+="$(echo "($c1 - $c0) / $hz / $gib" | bc -l | xargs printf '%.2f') "
    ssys[$i]+="$(echo "($ks1 - $ks0) / $hz / $gib" | bc -l | xargs printf '%.2f') "
    csys[$i]+="$(echo "($kc1 - $kc0) / $hz / $gib" | bc -l | xargs printf '%.2f') "
    rate[$i]+="$(echo "$STREAM_MB * 1.048576 / ($t1 - $t0)" | bc -l | xargs printf '%.0f') "
  done
done
if [[ -n ${PROFILE:-} ]]; then
  mkdir -p "$PROFILE"
  for i in "${!bins[@]}"; do
    perf record -q -o "$PROFILE/server$i.data" -p "${spids[$i]}" 2>/dev/null & ps=$!
    perf record -q -o "$PROFILE/client$i.data" -p "${cpids[$i]}" 2>/dev/null & pc=$!
    sleep 0.5
    curl -sf -o /dev/null "http://127.0.0.1:${srvs[$i]}/v1/relay/bench/stream.bin"
    kill -INT "$ps" "$pc"; wait "$ps" "$pc" || true
  done
fi
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "$(date -Is) load $(cut -d' ' -f1-3 /proc/loadavg), $RUNS runs of a $STREAM_MB MiB GET, CPU-s per GiB (median; every run)"
for i in "${!bins[@]}"; do
  printf '%s\n  server %s (%s), of it system %s\n  client %s (%s), of it system %s\n  MB/s   %s (%s)\n' "${bins[$i]}" \
    "$(median <<<"${scpu[$i]}")" "${scpu[$i]% }" "$(median <<<"${ssys[$i]}")" \
    "$(median <<<"${ccpu[$i]}")" "${ccpu[$i]% }" "$(median <<<"${csys[$i]}")" \
    "$(median <<<"${rate[$i]}")" "${rate[$i]% }"
done
