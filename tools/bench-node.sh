#!/usr/bin/env bash
# End-to-end node benchmarks with `ringlog bench` next to fio's limits,
# measured in one run on one filesystem. Prints Markdown on stdout.
#   tools/bench-node.sh [DIR] [TOTAL_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/bench-node}"
total="${2:-4294967296}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
tools/install-deps.sh
cargo build --release --quiet
bin=./target/release/ringlog
source tools/lib/usage.sh
source tools/lib/bench.sh
port=27070
admin=27071
export RINGLOG_SERVER="127.0.0.1:$port"

echo "# node benchmark run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- host: $(nproc) cores, kernel $(uname -r); server and load generator share the cores"
echo "- filesystem: $(df -h "$dir" | awk 'NR==2{print $1}') at $dir; records 1 KiB, batches of 1000"
echo
fio --name=seqwrite --directory="$dir" --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth=16 \
    --size=4G --output-format=terse --terse-version=3 | awk -F';' '{printf "- fio sequential O_DIRECT write (overwrites): %.0f MiB/s\n", $48/1024}'
rm -f "$dir"/seqwrite*
fio --name=seqwrite --directory="$dir" --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth=16 \
    --size=4G --fallocate=native --create_on_open=1 --output-format=terse --terse-version=3 \
    | awk -F';' '{printf "- fio sequential O_DIRECT write into a new file: %.0f MiB/s\n", $48/1024}'
rm -f "$dir"/seqwrite*
fio --name=seqwrite --directory="$dir" --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth=2 --numjobs=8 \
    --size=512M --fallocate=native --create_on_open=1 --group_reporting --output-format=terse --terse-version=3 \
    | awk -F';' '{printf "- fio sequential O_DIRECT write into 8 new files at once, QD 2 each (as 8 partitions): %.0f MiB/s\n", $48/1024}'
rm -f "$dir"/seqwrite*
read -r fio_p50 fio_p99 < <(fio_fdatasync_us)
echo "- fio fdatasync latency: p50 $fio_p50 us, p99 $fio_p99 us"

start_node() { # fsync policy
    rm -rf "$dir/data"
    RINGLOG_STORAGE_FSYNC="$1" RUST_LOG=warn "$bin" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" \
        --admin "127.0.0.1:$admin" --kafka-listen "" >"$dir/serve.log" 2>&1 &
    node_pid=$!
    for _ in $(seq 50); do grep -q listening "$dir/serve.log" 2>/dev/null && break; sleep 0.1; done
}
stop_node() { kill -TERM "$node_pid"; wait "$node_pid" || true; }
rss_mib() { awk '/VmRSS/{printf "%.0f", $2/1024}' "/proc/$node_pid/status"; }
peak_mib() { awk '/VmHWM/{printf "%.0f", $2/1024}' "/proc/$node_pid/status"; }

echo
echo "| fsync | mode | producers | result (ringlog bench --json) | device during the run (/proc/diskstats, /proc/stat) |"
echo "|---|---|---|---|---|"
for policy in always never; do
    for producers in 1 4; do
        start_node "$policy"
        usage_begin "$dir"
        result=$(bench_json "$bin" produce --topic t --partitions 8 --producers "$producers" --total-bytes "$total")
        echo "| $policy | produce | $producers | \`$result\` | $(usage_end) |"
        if [[ $producers == 4 ]]; then
            # The disk's own read limit on the very files consume reads.
            files=$(find "$dir/data" -name '*.log' -size +1M | tr '\n' ':' | sed 's/:$//')
            sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
            fio --name=readback --filename="$files" --rw=read --bs=4M --direct=1 --ioengine=io_uring --iodepth=8 \
                --output-format=terse --terse-version=3 |
                awk -F';' -v p="$policy" '{printf "| %s | fio O_DIRECT read of those segment files, 4 MiB, QD 8 | - | %.0f MiB/s | |\n", p, $7/1024}'
            # Three consume runs: the virtual disk's read speed varies by run.
            for _ in 1 2 3; do
                sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
                usage_begin "$dir"
                result=$(bench_json "$bin" consume --topic t --producers 4)
                echo "| $policy | consume | 4 | \`$result\` | $(usage_end) |"
            done
            usage_begin "$dir"
            result=$(bench_json "$bin" e2e --topic e2e --partitions 8 --producers 4 --total-bytes $((total / 4)))
            echo "| $policy | e2e | 4 | \`$result\` | $(usage_end) |"
        fi
        stop_node
    done
done

echo
echo "Small batches, fsync=always, 1 partition, 1 producer, 1 batch in flight, 1 KiB records:"
echo
echo "| records per batch | result (ringlog bench --json) |"
echo "|---|---|"
for batch in 1 10; do
    start_node always
    result=$(bench_json "$bin" produce --topic small --partitions 1 --producers 1 --in-flight 1 --batch "$batch" \
        --total-bytes 20000000)
    echo "| $batch | \`$result\` |"
    stop_node
done

echo
echo "| partitions | RSS idle | peak RSS under produce load (fsync=always, 4 producers) |"
echo "|---|---|---|"
for partitions in 1 1000; do
    start_node always
    "$bin" topic create rss --partitions "$partitions" >/dev/null
    sleep 1.5
    idle=$(rss_mib)
    # 4 batches in flight per producer, as when the figures in BENCHMARKS.md
    # were first taken (the window is per partition, within its bytes).
    "$bin" bench produce --topic rss --producers 4 --in-flight 1 --max-in-flight-bytes 4194304 \
        --total-bytes $((total / 2)) --json >/dev/null
    echo "| $partitions | ${idle} MiB | $(peak_mib) MiB |"
    stop_node
done
rm -rf "$dir/data"
