#!/usr/bin/env bash
# End-to-end latency of a Kafka consumer of one and of several partitions
# (tools/kafka-latency.py: a confluent-kafka consumer with librdkafka's
# defaults, a record every 20 ms, each carrying its send time), on one
# node per binary, the binaries alternating per round.
#   tools/bench-kafka-latency.sh ROUNDS MESSAGES DIR BINARY [BINARY ...]
# Prints Markdown: one row per binary, round and partition count.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="$1"
messages="$2"
dir="$3"
shift 3
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
source tools/lib/node.sh
port=27880
admin=27881
kafka="127.0.0.1:27882"
export RINGLOG_SERVER="127.0.0.1:$port"
node_pid=
trap '[[ -n $node_pid ]] && kill -TERM "$node_pid" 2>/dev/null; wait' EXIT

echo "| round | binary | partitions | p50 ms | p90 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    for binary in "$@"; do
        binary="$(realpath "$binary")"
        node_start never "$kafka"
        for partitions in 1 2 4; do
            "$binary" topic create "latency-$partitions" --partitions "$partitions" >/dev/null
            figures="$(python3 tools/kafka-latency.py "$kafka" "latency-$partitions" "$partitions" "$messages")"
            row="$(python3 -c 'import json, sys; f = json.loads(sys.argv[1]); print(" | ".join(str(f[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")))' "$figures")"
            echo "| $round | $binary | $partitions | $row |"
        done
        node_stop
    done
done
