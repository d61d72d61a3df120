#!/usr/bin/env bash
# Two builds of the node, measured in one run, rows alternating so the
# virtual disk's drift (2-3x within minutes) hits both alike. For changes
# that must not move a figure (issue 12's refactoring) or should move one.
#   tools/bench-compare.sh BEFORE_BINARY AFTER_BINARY [ROUNDS] [TOTAL_BYTES] [DIR]
# Each round runs, per binary: produce fsync=never, produce fsync=always
# (2 partitions, 2 producers, 1 KiB records, batches of 1000), then consume
# of what the fsync=always run wrote with the page cache dropped. Prints
# Markdown: one row per run, then the median per binary and row kind.
set -euo pipefail
cd "$(dirname "$0")/.."
before="$(realpath "$1")"
after="$(realpath "$2")"
rounds="${3:-3}"
total="${4:-2000000000}"
dir="${5:-target/bench-compare}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
source tools/lib/usage.sh
source tools/lib/bench.sh
port=27170
admin=27171
export RINGLOG_SERVER="127.0.0.1:$port"
results="$dir/results.tsv"
: >"$results"

start_node() { # binary, fsync policy
    rm -rf "$dir/data"
    RINGLOG_STORAGE_FSYNC="$2" RUST_LOG=warn "$1" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" \
        --admin "127.0.0.1:$admin" --kafka-listen "" >"$dir/serve.log" 2>&1 &
    node_pid=$!
    for _ in $(seq 100); do grep -q listening "$dir/serve.log" 2>/dev/null && return; sleep 0.1; done
    echo "node did not start:" >&2
    tail -20 "$dir/serve.log" >&2
    exit 1
}
stop_node() { kill -TERM "$node_pid"; wait "$node_pid" || true; }
mb_per_s() { python3 -c 'import json, sys; print("%.0f" % json.loads(sys.argv[1])["mb_per_s"])' "$1"; }

row() { # label binary kind result
    local value
    value=$(mb_per_s "$4")
    printf '%s\t%s\t%s\n' "$1" "$3" "$value" >>"$results"
    echo "| $1 | $3 | $value | \`$4\` | $5 |"
}

echo "# before/after run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- before: \`$before\`; after: \`$after\`; $rounds rounds, alternating; $(nproc) cores, kernel $(uname -r)"
echo "- filesystem: $(df -h "$dir" | awk 'NR==2{print $1}'); 2 partitions, 2 producers, 1 KiB records, batches of 1000, $total bytes per produce row"
echo
echo "| build | row | MB/s | ringlog bench --json | device during the run |"
echo "|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    order=("before:$before" "after:$after")
    ((round % 2 == 0)) && order=("after:$after" "before:$before")
    for entry in "${order[@]}"; do
        label="${entry%%:*}"
        binary="${entry#*:}"
        for policy in never always; do
            start_node "$binary" "$policy"
            usage_begin "$dir"
            result=$(bench_json "$binary" produce --topic t --partitions 2 --producers 2 --total-bytes "$total")
            row "$label" "$binary" "produce fsync=$policy" "$result" "$(usage_end)"
            if [[ $policy == always ]]; then
                sync
                echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
                usage_begin "$dir"
                result=$(bench_json "$binary" consume --topic t --producers 2)
                row "$label" "$binary" "consume (cold)" "$result" "$(usage_end)"
            fi
            stop_node
        done
    done
done
rm -rf "$dir/data"
echo
echo "Median MB/s per build and row:"
echo
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, kind, value = line.rstrip("\n").split("\t")
    rows.setdefault(kind, {}).setdefault(label, []).append(float(value))
print("| row | before | after | after / before |")
print("|---|---|---|---|")
for kind, by in rows.items():
    b, a = statistics.median(by.get("before", [0])), statistics.median(by.get("after", [0]))
    print(f"| {kind} | {b:.0f} | {a:.0f} | {a / b if b else float('nan'):.2f} |")
PY
