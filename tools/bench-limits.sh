#!/usr/bin/env bash
# What this machine gives other programs in the node's own shapes, next to
# the node, rows alternating (issue 15): the ratios bench-ratio.sh prints
# set the node against fio writing without a sync and reading from one
# job, which no program that syncs, or that moves its bytes through a
# socket, could reach here. This shows how far each is from those.
#   tools/bench-limits.sh [BINARY] [ROUNDS] [TOTAL_BYTES] [DIR]
# 2 partitions, 2 producers or consumers, 1 KiB records, batches of 1000,
# 4 in flight per producer (`ringlog bench` defaults: 4 per partition, one each). Each round:
#   write: fio QD 16 without sync | node produce fsync=always |
#          fio at the clients' window, synced (per partition file: QD 4 of
#          1 MiB, fdatasync after every 4 writes: 4 MiB acknowledged per
#          sync, as 4 batches of 1 MB in flight) |
#          fio QD 16, fdatasync after every 64 MiB | fio QD 16 without sync
#   read:  fio one job over both segment files, 1 MiB QD 16 (bench-ratio's
#          reference) | node consume cold | fio one job per file, 4 MiB
#          QD 2 (the node's read-ahead shape: one stream per shard) |
#          loopback TCP alone, iperf3 with 2 streams for 3 s, and the CPU
#          it took (when iperf3 is installed)
# Page cache dropped before every read row. Prints Markdown: one line per
# round, then the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$(realpath "${1:-target/release/ringlog}")"
rounds="${2:-3}"
total="${3:-2000000000}"
dir="${4:-target/bench-limits}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
source tools/lib/usage.sh
source tools/lib/node.sh
source tools/lib/bench.sh
port=27770
admin=27771
iperf_port=27772
partitions=2
export RINGLOG_SERVER="127.0.0.1:$port"
results="$dir/results.tsv"
: >"$results"
node_pid=""
trap '[[ -n $node_pid ]] && kill -TERM "$node_pid" 2>/dev/null; true' EXIT

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
# fio's terse v3: field 7 is the read bandwidth, 48 the write's, in KiB/s;
# with group_reporting the last line sums the jobs.
terse_mbs() { awk -F';' -v f="$1" 'END {printf "%.0f", $f * 1024 / 1e6}'; }
fio_write() { # depth sync_every_writes (0: none) -> MB/s
    local sync=()
    (($2 > 0)) && sync=(--fdatasync="$2")
    rm -rf "$dir/fio"
    mkdir -p "$dir/fio"
    fio --name=write --directory="$dir/fio" --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth="$1" "${sync[@]}" \
        --numjobs="$partitions" --size=$((total / partitions)) --fallocate=native --create_on_open=1 \
        --group_reporting --output-format=terse --terse-version=3 | terse_mbs 48
    rm -rf "$dir/fio"
}
segments() { find "$dir/data" -name '*.log' -size +1M | sort; }
fio_read_one_job() {
    drop_caches
    fio --name=read --filename="$(segments | tr '\n' ':' | sed 's/:$//')" --rw=read --bs=1M --direct=1 \
        --ioengine=io_uring --iodepth=16 --output-format=terse --terse-version=3 | terse_mbs 7
}
fio_read_job_per_file() {
    local jobs=() file
    for file in $(segments); do
        jobs+=(--name="read-${file//\//_}" --filename="$file" --size="$(stat -c %s "$file")")
    done
    drop_caches
    fio --rw=read --bs=4M --direct=1 --ioengine=io_uring --iodepth=2 --group_reporting "${jobs[@]}" \
        --output-format=terse --terse-version=3 | terse_mbs 7
}
loopback() { # -> "MB/s CPU-s/GB" of iperf3 over loopback, or "- -"
    command -v iperf3 >/dev/null || { echo "- -"; return; }
    iperf3 -s -1 -p "$iperf_port" >/dev/null 2>&1 &
    local server=$! json
    sleep 0.5
    json=$(iperf3 -c 127.0.0.1 -p "$iperf_port" -t 3 -P 2 -l 1M -J 2>/dev/null || true)
    wait "$server" 2>/dev/null || true
    python3 -c '
import json, sys
try:
    end = json.loads(sys.argv[1])["end"]
    rate = end["sum_received"]["bits_per_second"] / 8
    cpu = end["cpu_utilization_percent"]
    print("%.0f %.2f" % (rate / 1e6, (cpu["host_total"] + cpu["remote_total"]) / 100 / (rate / 1e9)))
except Exception:
    print("- -")' "$json"
}
ringlog_mbs() { # bench JSON -> MB/s
    python3 -c 'import json, sys; r = json.loads(sys.argv[1]); print("%.0f" % (r["bytes"] / r["seconds"] / 1e6))' "$1"
}

echo "# what the machine gives in the node's shapes, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- \`$binary\`; $rounds rounds; 2 partitions, 2 producers or consumers, $total bytes per row; $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- filesystem: $(df --output=source "$dir" | tail -1) at $dir"
echo
echo "| round | fio write, no sync | node fsync=always | fio at the clients' window, synced | fio, sync per 64 MiB | fio write, no sync | fio read, one job | node consume cold | fio read, job per file | loopback TCP MB/s (CPU-s/GB) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    write_before=$(fio_write 16 0)
    node_start always ""
    "$binary" topic create t --partitions "$partitions" >/dev/null
    produced=$(ringlog_mbs "$(bench_json "$binary" produce --topic t --partitions "$partitions" --producers 2 \
        --total-bytes "$total")")
    synced_window=$(fio_write 4 4)
    synced_64=$(fio_write 16 64)
    write_after=$(fio_write 16 0)
    read_one=$(fio_read_one_job)
    drop_caches
    consumed=$(ringlog_mbs "$(bench_json "$binary" consume --topic t --producers 2)")
    read_per_file=$(fio_read_job_per_file)
    node_stop
    read -r tcp tcp_cost < <(loopback)
    printf '%s\n' "$write_before $produced $synced_window $synced_64 $write_after $read_one $consumed $read_per_file" >>"$results"
    echo "| $round | $write_before | $produced | $synced_window | $synced_64 | $write_after | $read_one | $consumed | $read_per_file | $tcp ($tcp_cost) |"
done
rm -rf "$dir/data"
echo
echo "Ratios, medians over the rounds (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)):"
echo
python3 - "$results" <<'PY'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1])]
def median(f):
    return "%.2f" % statistics.median(f(*row) for row in rows)
nosync = lambda before, after: (before + after) / 2
print("| ratio | median |")
print("|---|---|")
print("| node fsync=always / fio without sync (bench-ratio's) |", median(lambda b, n, w, s, a, r1, c, r2: n / nosync(b, a)), "|")
print("| node fsync=always / fio synced at the clients' window |", median(lambda b, n, w, s, a, r1, c, r2: n / w), "|")
print("| fio synced at the clients' window / fio without sync |", median(lambda b, n, w, s, a, r1, c, r2: w / nosync(b, a)), "|")
print("| fio synced per 64 MiB / fio without sync |", median(lambda b, n, w, s, a, r1, c, r2: s / nosync(b, a)), "|")
print("| node consume / fio read, one job (bench-ratio's) |", median(lambda b, n, w, s, a, r1, c, r2: c / r1), "|")
print("| node consume / fio read, job per file |", median(lambda b, n, w, s, a, r1, c, r2: c / r2), "|")
PY
