#!/usr/bin/env bash
# Where the node's CPU goes (issue 15): `perf record` of one node during a
# native produce or a cold consume, as bench-ratio.sh runs them, then the
# hottest symbols with their share of the node's samples and the node's
# CPU-seconds per GB.
#   tools/profile-node.sh [BINARY] [MODE] [TOTAL_BYTES] [DIR]
# MODE: consume      produce TOTAL_BYTES with fsync=never (not profiled),
#                    drop the page cache, profile the consume;
#       produce      profile a produce with fsync=never;
#       produce-always  profile a produce with fsync=always.
# 2 partitions, 2 producers/consumers, 1 KiB records, batches of 1000.
# This machine has no hardware counters (perf samples cpu-clock), so the
# shares are of time on CPU, not of instructions. The load generator runs on
# the same two cores and is not profiled. PROFILE=0 runs the same rows
# without perf, for the CPU-seconds per GB alone (perf's unwinding skews
# them). NODE_ENV="NAME=VALUE ..." goes into the node's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$(realpath "${1:-target/release/ringlog}")"
mode="${2:-consume}"
total="${3:-2000000000}"
dir="${4:-target/profile-node}"
profile="${PROFILE:-1}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
source tools/lib/node.sh
source tools/lib/bench.sh
port=27770
admin=27771
export RINGLOG_SERVER="127.0.0.1:$port"
node_pid=""
perf_pid=""
trap '[[ -n $perf_pid ]] && kill -INT "$perf_pid" 2>/dev/null; [[ -n $node_pid ]] && kill -TERM "$node_pid" 2>/dev/null; true' EXIT

bench() { # mode -> the client's JSON line
    bench_json "$binary" "$1" --topic t --partitions 2 --producers 2 --total-bytes "$total"
}
node_cpu_seconds() { # utime + stime of the node, in seconds
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$node_pid/stat"
}
profiled() { # mode: runs the bench under perf, prints MB/s and CPU-s/GB
    local cpu_before cpu_after result
    cpu_before=$(node_cpu_seconds)
    if [[ $profile == 1 ]]; then
        perf record -F 499 --call-graph dwarf,32768 -p "$node_pid" -o "$dir/perf.data" >/dev/null 2>&1 &
        perf_pid=$!
        sleep 0.5
    fi
    result=$(bench "$1")
    if [[ $profile == 1 ]]; then
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        perf_pid=""
    fi
    cpu_after=$(node_cpu_seconds)
    python3 -c '
import json, sys
r = json.loads(sys.argv[1]); cpu = float(sys.argv[3]) - float(sys.argv[2])
print("%s: %.0f MB/s, node %.2f CPU-s per GB%s" % (sys.argv[4], r["bytes"] / r["seconds"] / 1e6, cpu / (r["bytes"] / 1e9), sys.argv[5]))
' "$result" "$cpu_before" "$cpu_after" "$1" "$([[ $profile == 1 ]] && echo ' (perf running)')"
}

case "$mode" in
    consume) node_start never "" ${NODE_ENV:-} ;;
    produce) node_start never "" ${NODE_ENV:-} ;;
    produce-always) node_start always "" ${NODE_ENV:-} ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
"$binary" topic create t --partitions 2 >/dev/null
if [[ $mode == consume ]]; then
    bench produce >/dev/null
    sync; echo 3 >/proc/sys/vm/drop_caches
    profiled consume
else
    profiled produce
fi
node_stop
rm -rf "$dir/data"
[[ $profile == 1 ]] || exit 0
echo
echo "Hottest symbols (self time, share of the node's samples):"
perf report -i "$dir/perf.data" --no-children --sort symbol --percent-limit 0.8 --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | sed 's/ \+- \+- *$//' | head -30
echo
echo "By thread:"
perf report -i "$dir/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -8
