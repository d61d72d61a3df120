#!/usr/bin/env bash
# CPU-seconds per GB of each node of a 3-node cluster while a client
# produces 1 GiB with acks=all (issue 15's cost per byte: the leader serving
# two followers, each follower's apply), variants alternating so the
# machine's drift hits all alike.
#   tools/bench-replication-cpu.sh ROUNDS VARIANT...
# A VARIANT is a binary, optionally with settings for its nodes:
# `BINARY` or `BINARY:RINGLOG_KEY=VALUE[,RINGLOG_KEY=VALUE...]`. Set
# RINGLOG_STORAGE_FSYNC (default here: never, whose CPU figures are the
# steadiest) and PAYLOAD (random, the default, or zeros) in the
# environment. Uses tools/cluster.sh's ports (7070-7093, etcd 2379) and
# the directory target/bench-replication-cpu.
# Prints Markdown: one row per run with the client's MB/s, each node's
# CPU-s per GB (node 1 leads every partition: it is started first and the
# topic is created through it) and the bytes followers were sent from an
# answer another follower had (ringlog_follower_shared_answer_bytes_total).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:?usage: tools/bench-replication-cpu.sh ROUNDS VARIANT...}"
shift
[[ $# -gt 0 ]] || { echo "give at least one VARIANT" >&2; exit 2; }
dir="$PWD/target/bench-replication-cpu"
export RINGLOG_STORAGE_FSYNC="${RINGLOG_STORAGE_FSYNC:-never}"
payload="${PAYLOAD:-random}"
total_bytes=1073741824
binary=
trap '[[ -n $binary ]] && BINARY=$binary tools/cluster.sh stop "$dir" >/dev/null 2>&1; true' EXIT

cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }

in_sync() {
    local view
    for _ in $(seq 150); do
        view=$("$binary" nodes --json --admin 127.0.0.1:7071 2>/dev/null || true)
        [[ $(grep -o '"in_sync":true' <<<"$view" | wc -l) == 3 ]] && return 0
        sleep 0.2
    done
    echo "the cluster did not get in sync" >&2
    return 1
}

# One run of VARIANT: start the cluster with its settings, produce, print the row.
run() {
    local variant="$1" settings=() line name pid before produced shared
    binary="${variant%%:*}"
    [[ $variant == *:* ]] && IFS=, read -ra settings <<<"${variant#*:}"
    rm -rf "$dir"
    env "${settings[@]}" BINARY="$binary" RUST_LOG=warn tools/cluster.sh start "$dir" >/dev/null
    in_sync
    declare -A before
    while read -r name pid; do before[$name]=$(cpu_seconds "$pid"); done <"$dir/pids"
    produced=$("$binary" bench produce --topic t --server 127.0.0.1:7070,127.0.0.1:7080,127.0.0.1:7090 \
        --acks all --payload "$payload" --partitions 8 --producers 4 --record-bytes 1024 --batch 1000 \
        --total-bytes "$total_bytes" --json | tail -1)
    line="| $(basename "$binary") ${settings[*]} | $(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["mb_per_s"])' "$produced")"
    for name in node1 node2 node3; do
        pid=$(awk -v n="$name" '$1 == n {print $2}' "$dir/pids")
        line="$line | $(awk -v a="${before[$name]}" -v b="$(cpu_seconds "$pid")" -v gb="$total_bytes" \
            'BEGIN {printf "%.2f", (b - a) / (gb / 1e9)}')"
    done
    shared=$(curl -s 127.0.0.1:7071/metrics |
        awk '/^ringlog_follower_shared_answer_bytes_total/ {sum += $2} END {printf "%.0f", sum / 1e6}')
    echo "$line | $shared |"
    BINARY="$binary" tools/cluster.sh stop "$dir" >/dev/null 2>&1 || true
}

echo "| variant ($RINGLOG_STORAGE_FSYNC, $payload) | client MB/s | node 1 (leader) CPU-s/GB | node 2 | node 3 | shared MB |"
echo "|---|---|---|---|---|---|"
for _ in $(seq "$rounds"); do
    for variant in "$@"; do
        run "$variant"
    done
done
rm -rf "$dir"
