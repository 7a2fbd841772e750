# Sourced by tools/perf/per-request and tools/perf/flag-request: CPU per request of several servers
# under the same load, interleaved so that each round's pair shares the machine's load of that moment
# (the order reversed every other round).
#
#   cpu_rounds RUNS N LABEL   with bins[i] (names), spids[i] (pids) and a function load_one I N that
#                             sends exactly N requests to server I, all set by the caller
#
# Prints each server's CPU-s (utime+stime) and user CPU-s per 100k requests, median and every run;
# then each server's ratio to the first, per round: median and min-max (the spread a lever must
# clear to count, issue 17's rule).
cpu_rounds() {
  local runs=$1 n=$2 label=$3 tck i r
  tck=$(getconf CLK_TCK)
  local -A all=() user=()
  local order=("${!bins[@]}") round
  for round in $(seq "$runs"); do
    # every other round in reverse (ABBA): the server measured second paid more (an A/A pair read
    # 1.015, 0.980-1.102, second over first), so a fixed order favoured the first binary
    if ((round % 2 == 0)); then order=($(printf '%s\n' "${!bins[@]}" | sort -rn)); else order=("${!bins[@]}"); fi
    for i in "${order[@]}"; do
      read -r -a a <"/proc/${spids[i]}/stat"
      load_one "$i" "$n"
      read -r -a b <"/proc/${spids[i]}/stat"
      all[$i]+=" $(awk -v d=$((b[13] + b[14] - a[13] - a[14])) -v t="$tck" -v n="$n" 'BEGIN { printf "%.3f", d / t * 1e5 / n }')"
      user[$i]+=" $(awk -v d=$((b[13] - a[13])) -v t="$tck" -v n="$n" 'BEGIN { printf "%.3f", d / t * 1e5 / n }')"
    done
  done
  for i in "${!bins[@]}"; do
    echo "${bins[i]} $label, CPU-s per 100k: median $(cpu_median ${all[$i]}) (runs:${all[$i]}); user: median $(cpu_median ${user[$i]}) (runs:${user[$i]})"
  done
  for i in "${!bins[@]}"; do
    ((i > 0)) || continue
    r=$(paste -d' ' <(printf '%s\n' ${all[$i]}) <(printf '%s\n' ${all[0]}) | awk '{ printf "%.3f\n", $1 / $2 }' | sort -g | xargs)
    echo "${bins[i]} / ${bins[0]}, CPU per request, the same round's pair: median $(cpu_median $r) (min-max: ${r%% *} - ${r##* })"
  done
}
cpu_median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
