#!/usr/bin/env bash
# The git tunnel against going direct: `git clone` of a repository of SIZE_MB (200) of random
# data straight from the git server (git http-backend under lighttpd) and through relayhost
# git-tunnel/server + git-tunnel/client on loopback; then raw throughput, a STREAM_MB (1024)
# file fetched with curl, direct and through the tunnel. Prints each time, the ratios against
# the targets (clone <= 1.3x direct, throughput >= 50% of direct) and the peak RSS of both
# relay processes during the tunnelled runs. A benchmark, not a test: it prints numbers.
#
#   bench/git-tunnel.sh                 SIZE_MB=200 STREAM_MB=1024 RUNS=3 (medians)
#   KEEP=1 keeps the temporary folder.
# The machine has 2 cores shared with other work: nothing is pinned, so read ratios.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MB=${SIZE_MB:-200}
STREAM_MB=${STREAM_MB:-1024}
RUNS=${RUNS:-3}
bin=$top/build/relayhost
[[ -x $bin ]] || "$top/tools/build" "$top/build"
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
timed() { # prints seconds
  local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
clone() { rm -rf "$dir/clone"; GIT_TERMINAL_PROMPT=0 git clone -q "$1/git/big.git" "$dir/clone"; }
fetch() { curl -sf -o /dev/null "$1/stream.bin"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "before: server $(awk '/VmRSS/ {print $2}' /proc/$spid/status) kB, client $(awk '/VmRSS/ {print $2}' /proc/$cpid/status) kB RSS"
rm -f "$dir/stop"; sample & sampler=$!
cd=(); ct=(); fd=(); ft=()
for _ in $(seq "$RUNS"); do
  cd+=("$(timed clone "$direct")"); ct+=("$(timed clone "$tunnel")")
  fd+=("$(timed fetch "http://127.0.0.1:$web")"); ft+=("$(timed fetch "http://127.0.0.1:$srv/v1/relay/bench")")
done
touch "$dir/stop"; wait "$sampler"
read -r speak cpeak < "$peak_file"
m() { printf '%s\n' "$@" | median; }
cdm=$(m "${cd[@]}"); ctm=$(m "${ct[@]}"); fdm=$(m "${fd[@]}"); ftm=$(m "${ft[@]}")
printf 'git clone of %d MB:   direct %.2f s, tunnel %.2f s  -> %.2fx direct (target <= 1.3x)\n' "$SIZE_MB" "$cdm" "$ctm" "$(echo "$ctm / $cdm" | bc -l)"
printf 'raw %d MB GET:       direct %.0f MB/s, tunnel %.0f MB/s -> %.0f%% of direct (target >= 50%%)\n' "$STREAM_MB" \
  "$(echo "$STREAM_MB / $fdm" | bc -l)" "$(echo "$STREAM_MB / $ftm" | bc -l)" "$(echo "100 * $fdm / $ftm" | bc -l)"
echo "peak RSS during the runs: server $speak kB, client $cpeak kB (medians of $RUNS runs)"
