#!/usr/bin/env bash
# Where a Kafka consume's time goes, per thread (issue 14): which shard of
# the node and which librdkafka thread is busy, and librdkafka's own round
# trip per request, during one cold consume of one rdkafka_performance
# consumer fetching both partitions over one connection (bench-kafka.sh's
# default consume row).
#   tools/kafka-consume-threads.sh [BINARY] [TOTAL_BYTES] [DIR]
# Produces TOTAL_BYTES of 1 KiB records natively into a topic of 2
# partitions (fsync=never), drops the page cache, then consumes them all
# with rdkafka_performance (`-T 500`: statistics every 500 ms). Prints:
# the consumer's MB/s (its own clock); each node and client thread's CPU
# share over one second from 0.5 s into the consume (from
# /proc/PID/task/TID/stat); librdkafka's mean broker round trip (`rtt`,
# request sent to response read, in µs) in each statistics window; the
# node's large-buffer takes over the run, pooled or fresh.
# RDKAFKA_PERFORMANCE=PATH names the load generator; by default the one
# bench-kafka.sh builds in target/bench-kafka.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$(realpath "${1:-target/release/ringlog}")"
total="${2:-2000000000}"
dir="${3:-target/kafka-consume-threads}"
tool="${RDKAFKA_PERFORMANCE:-target/bench-kafka/rdkafka_performance}"
[[ -x $tool ]] || { echo "no $tool: run tools/bench-kafka.sh once, or set RDKAFKA_PERFORMANCE" >&2; exit 1; }
tool="$(realpath "$tool")"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
source tools/lib/node.sh
source tools/lib/bench.sh
port=27470
admin=27471
kport=27472
export RINGLOG_SERVER="127.0.0.1:$port"

# "PID:TID:NAME TICKS" for every thread of the given processes.
threads() {
    local pid task
    for pid in "$@"; do
        for task in /proc/"$pid"/task/*; do
            echo "$pid:${task##*/}:$(tr ' ' _ <"$task/comm") $(awk '{print $14 + $15}' "$task/stat" 2>/dev/null || echo 0)"
        done
    done
}

node_start never "127.0.0.1:$kport"
trap 'node_stop' EXIT
"$binary" topic create kt --partitions 2 >/dev/null
bench_json "$binary" produce --topic kt --partitions 2 --producers 2 --record-bytes 1024 --batch 1000 \
    --total-bytes "$total" >/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
cat "$binary" "$tool" >/dev/null
"$tool" -C -t kt -p 0 -p 1 -o 0 -e -b "127.0.0.1:$kport" -T 500 -X max.partition.fetch.bytes=4194304 \
    -X fetch.max.bytes=8388608 -X fetch.wait.max.ms=100 >"$dir/consume.log" 2>&1 &
client=$!
sleep 0.5
threads "$node_pid" "$client" >"$dir/before" 2>/dev/null || true
sleep 1
threads "$node_pid" "$client" >"$dir/after" 2>/dev/null || true
wait "$client"
grep -o 'consumed in [0-9]*ms: [0-9]* msgs/s ([0-9.]* MB/s)' "$dir/consume.log" | tail -1
# Ticks are 1/100 s: over one second, ticks are the percentage of a CPU.
join <(sort "$dir/before") <(sort "$dir/after") | awk '{ busy = $3 - $2; if (busy > 1) printf "  %s %d %%\n", $1, busy }'
echo "  librdkafka rtt, mean µs per window: $(grep -o '"rtt": *{[^}]*}' "$dir/consume.log" |
    grep -o '"avg":[0-9]*' | cut -d: -f2 | tr '\n' ' ')"
# Large buffers the node took during the whole run (produce and consume):
# from its pools, or allocated (and faulted in) fresh.
curl -s "http://127.0.0.1:$admin/metrics" | grep '^ringlog_buffer_pool_takes_total' | sed 's/^/  /'
