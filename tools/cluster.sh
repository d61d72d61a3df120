#!/usr/bin/env bash
# A local ringlog cluster on loopback: one etcd and three nodes, each with
# its own data directory, logs and ports.
#
#   tools/cluster.sh start [DIR]   build if needed, start etcd + 3 nodes, print how to reach them
#   tools/cluster.sh status [DIR]  health of each node and the nodes view
#   tools/cluster.sh stop [DIR]    SIGTERM the nodes (clean shutdown), then etcd
#
# DIR defaults to ./ringlog-cluster. Ports: etcd 2379 (peer 2380); node N
# listens on 70N0 (clients), 70N1 (admin), 70N2 (replication) for N = 7, 8, 9
# -> node 1: 7070/7071/7072, node 2: 7080/7081/7082, node 3: 7090/7091/7092
#    (client/admin/replication), and Kafka at 7073, 7083, 7093.
# Override with ETCD_PORT, SHARDS (data shards per node; default one per
# core) and BINARY to use a prebuilt binary.
set -euo pipefail

command=${1:-}
dir=$(realpath -m "${2:-./ringlog-cluster}")
etcd_port=${ETCD_PORT:-2379}
etcd_peer_port=$((etcd_port + 1))
root=$(cd "$(dirname "$0")/.." && pwd)
binary=${BINARY:-$root/target/release/ringlog}
node_ports=(7070 7080 7090)

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

wait_for() { # url seconds
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null "$1" 2>/dev/null || [[ $(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null) == 503 ]]; do
        if ((SECONDS > deadline)); then
            echo "cluster: $1 did not answer within $2 s" >&2
            return 1
        fi
        sleep 0.2
    done
}

port_in_use() { # port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Another cluster on the same ports would answer the health checks below in
# this one's place; refuse to start instead.
check_ports_free() {
    local port
    for port in "$etcd_port" "$etcd_peer_port" 7070 7071 7072 7073 7080 7081 7082 7083 7090 7091 7092 7093; do
        if port_in_use "$port"; then
            echo "cluster: 127.0.0.1:$port is in use (another cluster running? '$0 stop DIR')" >&2
            exit 1
        fi
    done
}

start() {
    command -v etcd >/dev/null || { echo "cluster: etcd not found (bash tools/install-deps.sh)" >&2; exit 1; }
    command -v curl >/dev/null || { echo "cluster: curl not found (apt-get install curl)" >&2; exit 1; }
    if [[ -z ${BINARY:-} ]]; then
        (cd "$root" && cargo build --release --quiet)
    fi
    mkdir -p "$dir/logs"
    if [[ -f $dir/pids ]]; then
        echo "cluster: $dir/pids exists; run '$0 stop $dir' first" >&2
        exit 1
    fi
    check_ports_free
    etcd --name ringlog-etcd --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-cluster "ringlog-etcd=http://127.0.0.1:$etcd_peer_port" \
        >"$dir/logs/etcd.log" 2>&1 &
    echo "etcd $!" >"$dir/pids"
    wait_for "http://127.0.0.1:$etcd_port/health" 20
    for n in 1 2 3; do
        local base=${node_ports[$((n - 1))]}
        "$binary" serve --data-dir "$dir/node$n" --etcd "http://127.0.0.1:$etcd_port" \
            --listen "127.0.0.1:$base" --admin "127.0.0.1:$((base + 1))" \
            --replication-listen "127.0.0.1:$((base + 2))" --kafka-listen "127.0.0.1:$((base + 3))" ${SHARDS:+--shards "$SHARDS"} \
            >"$dir/logs/node$n.log" 2>&1 &
        echo "node$n $!" >>"$dir/pids"
        wait_for "http://127.0.0.1:$((base + 1))/api/health" 20
    done
    echo "ringlog cluster running in $dir (logs in $dir/logs)"
    echo "  etcd:   http://127.0.0.1:$etcd_port"
    for n in 1 2 3; do
        local base=${node_ports[$((n - 1))]}
        echo "  node$n: clients 127.0.0.1:$base  admin http://127.0.0.1:$((base + 1))  replication 127.0.0.1:$((base + 2))  kafka 127.0.0.1:$((base + 3))"
    done
    echo "try:  $binary topic create demo --server 127.0.0.1:7070"
    echo "      $binary produce demo --acks all --server 127.0.0.1:7070,127.0.0.1:7080,127.0.0.1:7090 <<< hello"
    echo "      $binary consume demo --server 127.0.0.1:7080   (a follower serves reads too)"
    echo "      $binary nodes --admin 127.0.0.1:7071"
    echo "stop: $0 stop $dir"
}

status() {
    for n in 1 2 3; do
        local base=${node_ports[$((n - 1))]}
        printf 'node%s: ' "$n"
        curl -s "http://127.0.0.1:$((base + 1))/api/health" || printf 'not answering'
        echo
    done
    "$binary" nodes --admin 127.0.0.1:7071 || true
}

stop() {
    [[ -f $dir/pids ]] || { echo "cluster: nothing running in $dir" >&2; exit 1; }
    # Nodes first (clean shutdown: they resign and revoke their leases), etcd last.
    grep '^node' "$dir/pids" | while read -r _ pid; do kill -TERM "$pid" 2>/dev/null || true; done
    grep '^node' "$dir/pids" | while read -r _ pid; do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    done
    grep '^etcd' "$dir/pids" | while read -r _ pid; do
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    done
    rm -f "$dir/pids"
    echo "ringlog cluster in $dir stopped (data kept; remove $dir to start fresh)"
}

case $command in
    start) start ;;
    status) status ;;
    stop) stop ;;
    *) usage ;;
esac
