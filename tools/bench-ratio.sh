#!/usr/bin/env bash
# The node against the disk's own limit, fio and ringlog rows alternating
# in one run (issue 15): this virtual disk's speed drifts 2-3x within
# minutes, so each ringlog row is set against the fio rows right before and
# after it (their mean), never against a figure from another hour.
#   tools/bench-ratio.sh [BINARY] [ROUNDS] [TOTAL_BYTES] [PARTITIONS] [PRODUCERS] [DIR]
# Each round:
#   fio write  | produce fsync=never  | fio write     -> produce ratio
#   fio write  | produce fsync=always | fio write     -> fsync=always ratio
#   fio read   | consume (cold)       | fio read      -> consume ratio
# fio writes TOTAL_BYTES with O_DIRECT, 1 MiB blocks, QD 16, into new
# fallocated files (one per partition, as the node writes new segments);
# fio reads the node's own segment files back the same way after the page
# cache is dropped. ringlog: 1 KiB records, batches of 1000, 4 in flight
# per partition (IN_FLIGHT=N: N batches per partition instead; builds
# before 43dc099 read both as per producer).
# Every row reports the device's bytes (/proc/diskstats:
# they reached the disk) and the CPU. Prints Markdown, then the median
# ratio per kind.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$(realpath "${1:-target/release/ringlog}")"
rounds="${2:-3}"
total="${3:-2000000000}"
partitions="${4:-2}"
producers="${5:-2}"
dir="${6:-target/bench-ratio}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
source tools/lib/usage.sh
source tools/lib/node.sh
source tools/lib/bench.sh
port=27570
admin=27571
export RINGLOG_SERVER="127.0.0.1:$port"
results="$dir/results.tsv"
: >"$results"
node_pid=""
trap '[[ -n $node_pid ]] && kill -TERM "$node_pid" 2>/dev/null; true' EXIT

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

fio_write() { # -> MB/s (10^6 bytes)
    rm -rf "$dir/fio"; mkdir -p "$dir/fio"
    fio --name=write --directory="$dir/fio" --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth=16 \
        --numjobs="$partitions" --size=$((total / partitions)) --fallocate=native --create_on_open=1 \
        --group_reporting --output-format=terse --terse-version=3 | awk -F';' '{printf "%.0f", $48 * 1024 / 1e6}'
    rm -rf "$dir/fio"
}
fio_read() { # the node's segment files -> MB/s
    local files
    files=$(find "$dir/data" -name '*.log' -size +1M | sort | tr '\n' ':' | sed 's/:$//')
    drop_caches
    fio --name=read --filename="$files" --rw=read --bs=1M --direct=1 --ioengine=io_uring --iodepth=16 \
        --output-format=terse --terse-version=3 | awk -F';' '{printf "%.0f", $7 * 1024 / 1e6}'
}
ringlog_row() { # mode -> MB/s from the client's JSON
    local result
    local window=()
    [[ $1 == produce && -n ${IN_FLIGHT:-} ]] && window=(--in-flight "$IN_FLIGHT")
    result=$(bench_json "$binary" "$1" --topic t --partitions "$partitions" --producers "$producers" \
        --total-bytes "$total" "${window[@]}")
    python3 -c 'import json, sys; r = json.loads(sys.argv[1]); print("%.0f" % (r["bytes"] / r["seconds"] / 1e6))' "$result"
}
row() { # kind, before, ringlog, after, usage
    local ratio
    ratio=$(python3 -c 'import sys; b, r, a = map(float, sys.argv[1:]); print("%.2f" % (r / ((b + a) / 2)))' "$2" "$3" "$4")
    printf '%s\t%s\n' "$1" "$ratio" >>"$results"
    echo "| $1 | $2 | $3 | $4 | **$ratio** | $5 |"
}

echo "# ringlog against fio, alternating, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- \`$binary\`; $rounds rounds; $partitions partitions, $producers producers, $total bytes per row; $(nproc) cores (the client shares them); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- filesystem: $(df --output=source "$dir" | tail -1) at $dir"
echo
echo "| row | fio before MB/s | ringlog MB/s | fio after MB/s | ringlog / fio | ringlog row: device and CPU |"
echo "|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    for policy in never always; do
        before=$(fio_write)
        node_start "$policy" ""
        "$binary" topic create t --partitions "$partitions" >/dev/null
        usage_begin "$dir"
        produced=$(ringlog_row produce)
        usage=$(usage_end)
        if [[ $policy == always ]]; then
            read_before=$(fio_read)
            drop_caches
            usage_begin "$dir"
            consumed=$(ringlog_row consume)
            consume_usage=$(usage_end)
            read_after=$(fio_read)
        fi
        node_stop
        after=$(fio_write)
        row "produce fsync=$policy (round $round)" "$before" "$produced" "$after" "$usage"
        if [[ $policy == always ]]; then
            row "consume cold (round $round)" "$read_before" "$consumed" "$read_after" "$consume_usage"
        fi
    done
done
echo
echo "Median ratio per kind (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)):"
echo
python3 - "$results" <<'PY'
import statistics, sys, re
kinds = {}
for line in open(sys.argv[1]):
    kind, ratio = line.rstrip("\n").split("\t")
    kinds.setdefault(re.sub(r" \(round \d+\)", "", kind), []).append(float(ratio))
print("| kind | median ringlog / fio | all |")
print("|---|---|---|")
for kind, ratios in kinds.items():
    print(f"| {kind} | {statistics.median(ratios):.2f} | {', '.join(f'{r:.2f}' for r in ratios)} |")
PY
rm -rf "$dir/data"
