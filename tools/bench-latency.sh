#!/usr/bin/env bash
# Small-batch `fsync=always` latency next to fio's fdatasync latency, rows
# alternating so the virtual disk's drift hits both alike (issue 15's
# latency target: p99 <= 2 x fio's fdatasync p99).
#   tools/bench-latency.sh [BINARY] [ROUNDS] [DIR]
# Each round: fio (4 KiB sequential buffered writes, each followed by
# fdatasync, into a new file: bench-node.sh's command), then one node per
# batch size (1 and 10 records of 1 KiB) with one producer, one partition,
# one batch in flight, 20 MB. Prints Markdown: one row per run and the
# ratio of the node's p99 to the fio p99 measured right before it.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$(realpath "${1:-target/release/ringlog}")"
rounds="${2:-3}"
dir="${3:-target/bench-latency}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
source tools/lib/node.sh
source tools/lib/bench.sh
port=27870
admin=27871
export RINGLOG_SERVER="127.0.0.1:$port"
node_pid=
trap '[[ -n $node_pid ]] && kill -TERM "$node_pid" 2>/dev/null; wait' EXIT

field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

echo "| round | fio fdatasync p50 / p99 µs | records per batch | node p50 / p99 µs | node p99 / fio p99 |"
echo "|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    for batch in 1 10; do
        read -r fio_p50 fio_p99 < <(fio_fdatasync_us)
        node_start always ""
        result=$(bench_json "$binary" produce --topic small --partitions 1 --producers 1 --in-flight 1 \
            --batch "$batch" --total-bytes 20000000)
        node_stop
        p50=$(field "$result" p50_us)
        p99=$(field "$result" p99_us)
        ratio=$(awk -v a="$p99" -v b="$fio_p99" 'BEGIN {printf "%.2f", a / b}')
        echo "| $round | $fio_p50 / $fio_p99 | $batch | $p50 / $p99 | $ratio |"
    done
done
rm -rf "$dir/data"
