#!/usr/bin/env bash
# Replication benchmark: `ringlog bench produce` against one standalone node
# and against a 3-node cluster (tools/cluster.sh: one etcd, three nodes on
# loopback) with acks=all, in one run on one disk. Prints Markdown.
#   tools/bench-cluster.sh [DIR] [TOTAL_BYTES]
# PAYLOADS (default "random text repeated") names the record values to run
# with: how compressible they are decides what lz4 does on the wire.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/bench-cluster}"
total="${2:-2147483648}"
payloads="${PAYLOADS:-random text repeated}"
rm -rf "$dir"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
tools/install-deps.sh
cargo build --release --quiet
bin=./target/release/ringlog
source tools/lib/usage.sh
common=(--partitions 8 --producers 4 --record-bytes 1024 --batch 1000 --total-bytes "$total" --json)
servers=127.0.0.1:7070,127.0.0.1:7080,127.0.0.1:7090

echo "# replication benchmark run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- host: $(nproc) cores, kernel $(uname -r); every process (etcd, nodes, load generator) shares the cores"
echo "- filesystem: $(df -h "$dir" | awk 'NR==2{print $1}'); records 1 KiB, batches of 1000, 4 producers, 8 partitions, fsync=always"
echo
fio --name=seqwrite --directory="$dir" --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth=2 --numjobs=8 \
    --size=512M --fallocate=native --create_on_open=1 --group_reporting --output-format=terse --terse-version=3 \
    | awk -F';' '{printf "- fio sequential O_DIRECT write into 8 new files at once, QD 2 each: %.0f MiB/s\n", $48/1024}'
rm -f "$dir"/seqwrite*
echo
echo "| payload | setup | acks | result (ringlog bench --json) | device during the run (/proc/diskstats, /proc/stat) |"
echo "|---|---|---|---|---|"

cpu_seconds() { # pid -> user+system CPU seconds so far
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"
}

# Run a bench command; its own CPU seconds (user+system) go to $dir/bench-cpu.
timed_bench() {
    local TIMEFORMAT='%U %S'
    { time "$bin" bench "$@" >"$dir/bench.out"; } 2>"$dir/bench-time"
    awk '{printf "%.2f", $1 + $2}' "$dir/bench-time" >"$dir/bench-cpu"
    tail -1 "$dir/bench.out"
}

single_node() { # payload
    rm -rf "$dir/single"
    RUST_LOG=warn "$bin" serve --data-dir "$dir/single" --listen 127.0.0.1:27170 --admin 127.0.0.1:27171 --kafka-listen "" \
        >"$dir/single.log" 2>&1 &
    local single=$!
    for _ in $(seq 50); do grep -q listening "$dir/single.log" 2>/dev/null && break; sleep 0.1; done
    local result before
    before=$(cpu_seconds "$single")
    usage_begin "$dir"
    result=$(timed_bench produce --topic t --server 127.0.0.1:27170 --acks leader --payload "$1" "${common[@]}")
    echo "| $1 | single node | leader | \`$result\` | $(usage_end) |"
    echo "| $1 | single node | $(awk -v a="$before" -v b="$(cpu_seconds "$single")" 'BEGIN{printf "%.2f", b - a}') | - | - | - | $(cat "$dir/bench-cpu") |" >>"$dir/cpu.txt"
    kill -TERM "$single"; wait "$single" || true
    rm -rf "$dir/single"
}

# A follower SIGSTOPped one second into a run twice as long. acks=leader
# never waits on followers; acks=all stalls until the leader drops the
# stopped follower from the ISR (replica_lag_max_ms, 10 s by default), then
# goes on with two replicas. The follower rejoins after SIGCONT.
stopped_follower_run() { # payload acks
    local node3 bench
    node3=$(awk '$1 == "node3" {print $2}' "$dir/cluster/pids")
    "$bin" bench produce --topic "stopped-$2" --server "$servers" --acks "$2" --payload "$1" --partitions 8 \
        --producers 4 --record-bytes 1024 --batch 1000 --total-bytes $((total * 2)) --json >"$dir/stopped.json" &
    bench=$!
    sleep 1
    kill -STOP "$node3"
    wait "$bench"
    kill -CONT "$node3"
    echo "| $1 | 3 nodes, follower 3 SIGSTOPped after 1 s | $2 | \`$(tail -1 "$dir/stopped.json")\` | |"
    local started=$SECONDS
    while (( SECONDS - started < 120 )); do
        if [[ $("$bin" nodes --json --admin 127.0.0.1:7071 | grep -o '"in_sync":true' | wc -l) == 3 ]]; then
            echo "- acks=$2 run: follower 3 back in the ISR $((SECONDS - started)) s after SIGCONT" >>"$dir/rejoin.txt"
            return
        fi
        sleep 0.2
    done
    {
        echo "- acks=$2 run: follower 3 NOT back in the ISR 120 s after SIGCONT:"
        "$bin" nodes --admin 127.0.0.1:7071 | sed 's/^/      /'
    } >>"$dir/rejoin.txt"
}

three_nodes() { # payload
    rm -rf "$dir/cluster"
    BINARY="$bin" RUST_LOG=warn tools/cluster.sh start "$dir/cluster" >/dev/null
    for _ in $(seq 100); do
        [[ $("$bin" nodes --json --admin 127.0.0.1:7071 | grep -o '"in_sync":true' | wc -l) == 3 ]] && break
        sleep 0.2
    done
    local result name pid
    declare -A before
    while read -r name pid; do before[$name]=$(cpu_seconds "$pid"); done <"$dir/cluster/pids"
    usage_begin "$dir"
    result=$(timed_bench produce --topic t --server "$servers" --acks all --payload "$1" "${common[@]}")
    echo "| $1 | 3 nodes | all | \`$result\` | $(usage_end) |"
    local used=()
    for name in node1 node2 node3 etcd; do
        pid=$(awk -v n="$name" '$1 == n {print $2}' "$dir/cluster/pids")
        used+=("$(awk -v a="${before[$name]}" -v b="$(cpu_seconds "$pid")" 'BEGIN{printf "%.2f", b - a}')")
    done
    echo "| $1 | 3 nodes, acks=all | ${used[0]} | ${used[1]} | ${used[2]} | ${used[3]} | $(cat "$dir/bench-cpu") |" >>"$dir/cpu.txt"
    usage_begin "$dir"
    result=$("$bin" bench produce --topic t2 --server "$servers" --acks leader --payload "$1" "${common[@]}" | tail -1)
    echo "| $1 | 3 nodes | leader | \`$result\` | $(usage_end) |"
    if [[ $1 == random ]]; then
        stopped_follower_run "$1" leader
        stopped_follower_run "$1" all
    fi
    du -sh "$dir"/cluster/node* | sed 's/^/    /' >"$dir/sizes-$1.txt"
    tools/cluster.sh stop "$dir/cluster" >/dev/null 2>&1 || true
}

trap 'tools/cluster.sh stop "$dir/cluster" >/dev/null 2>&1 || true' EXIT
for payload in $payloads; do
    single_node "$payload"
    three_nodes "$payload"
done
echo
echo "CPU seconds (user+system) spent during the ${total}-byte run, per process (node1 leads):"
echo
echo "| payload | setup | node (1) | node 2 | node 3 | etcd | load generator |"
echo "|---|---|---|---|---|---|---|"
cat "$dir/cpu.txt"
echo
cat "$dir/rejoin.txt" 2>/dev/null || true
echo
echo "Data directories after each payload's cluster run:"
cat "$dir"/sizes-*.txt
