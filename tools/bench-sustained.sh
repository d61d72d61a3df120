#!/usr/bin/env bash
# A sustained produce (issue 15): TOTAL_BYTES of 1 KiB records into a topic
# whose segments roll at SEGMENT_BYTES and whose retention keeps
# RETENTION_BYTES per partition, so segments roll and retention deletes old
# ones while the run goes on. The device's write rate is sampled every
# quarter second (/proc/diskstats: bytes that reached the disk); it prints
# the rate of each quarter of the run and the last quarter against the
# first (the target: within 10 %), and what is left on disk at the end.
#   tools/bench-sustained.sh [BINARY] [TOTAL_BYTES] [PARTITIONS] [SEGMENT_BYTES] [RETENTION_BYTES] [DIR]
# Environment: FSYNC (default never) is the node's storage.fsync; NODE_ENV
# holds extra NAME=VALUE settings for the node (e.g.
# RINGLOG_STORAGE_MAX_RECYCLED_SEGMENTS=0 to free every expired segment).
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$(realpath "${1:-target/release/ringlog}")"
total="${2:-16000000000}"
partitions="${3:-2}"
segment="${4:-1073741824}"
retention="${5:-3221225472}"
dir="${6:-target/bench-sustained}"
fsync="${FSYNC:-never}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
source tools/lib/usage.sh
source tools/lib/node.sh
port=27670
admin=27671
export RINGLOG_SERVER="127.0.0.1:$port"
node_pid=""
sampler_pid=""
trap '[[ -n $sampler_pid ]] && kill "$sampler_pid" 2>/dev/null; [[ -n $node_pid ]] && kill -TERM "$node_pid" 2>/dev/null; true' EXIT

# Retention is applied every second (the default is every 10 s).
# shellcheck disable=SC2086 # NODE_ENV is a list of NAME=VALUE words
node_start "$fsync" "" RINGLOG_LIMITS_RETENTION_CHECK_INTERVAL_MS=1000 ${NODE_ENV:-}
"$binary" topic create sustained --partitions "$partitions" --segment-bytes "$segment" \
    --retention-bytes "$retention" >/dev/null

device=$(usage_device "$dir")
# One line per quarter second: nanoseconds, sectors written so far.
(while true; do
    echo "$(date +%s%N) $(awk -v d="$device" '$3 == d {print $10}' /proc/diskstats)"
    sleep 0.25
done) >"$dir/samples" &
sampler_pid=$!
usage_begin "$dir"
# Discards the device completed, sectors discarded, ms spent discarding.
discards_before=$(awk -v d="$device" '$3 == d {print $15, $17, $18}' /proc/diskstats)
result=$("$binary" bench produce --topic sustained --partitions "$partitions" --producers "$partitions" \
    --record-bytes 1024 --batch 1000 --total-bytes "$total" --json | tail -1)
usage=$(usage_end)
discards_after=$(awk -v d="$device" '$3 == d {print $15, $17, $18}' /proc/diskstats)
discards=$(echo "$discards_before $discards_after" |
    awk '{printf "%d discards of %.1f GB, %.1f s of device time", $4 - $1, ($5 - $2) * 512 / 1e9, ($6 - $3) / 1000}')
kill "$sampler_pid"
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""
left=$(du -sb "$dir/data" | cut -f1)
segments=$(find "$dir/data" -name '*.log' | wc -l)
node_stop

echo "# Sustained produce, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- \`$binary\`, fsync=$fsync ${NODE_ENV:-}; $total bytes of 1 KiB records, $partitions partitions and producers, batches of 1000; segments of $segment bytes, retention $retention bytes per partition"
echo "- client: $result"
echo "- whole run: $usage; left on disk: $((left / 1000000)) MB in $segments segment files; $discards"
echo
python3 - "$dir/samples" <<'PY'
import sys
samples = [tuple(map(int, line.split())) for line in open(sys.argv[1]) if len(line.split()) == 2]
# Device write rates per sample; the run is the span where the device wrote.
rates = [((b[1] - a[1]) * 512 / ((b[0] - a[0]) / 1e9) / 1e6) for a, b in zip(samples, samples[1:])]
while rates and rates[0] < 50:
    rates.pop(0)
while rates and rates[-1] < 50:
    rates.pop()
if len(rates) < 4:
    sys.exit(f"too few samples ({len(rates)}): run longer")
quarter = len(rates) // 4
parts = [rates[i * quarter:(i + 1) * quarter] for i in range(4)]
means = [sum(p) / len(p) for p in parts]
print("| quarter | samples (0.25 s) | device write MB/s (mean of the samples) |")
print("|---|---|---|")
for index, (part, mean) in enumerate(zip(parts, means), 1):
    print(f"| {index} | {len(part)} | {mean:.0f} |")
print()
ratio = means[3] / means[0]
print(f"Last quarter / first: **{ratio:.2f}** ({'within' if abs(1 - ratio) <= 0.10 else 'outside'} 10 %)")
PY
