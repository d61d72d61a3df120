# Sourced by the bench scripts: one node of $binary on loopback, with a
# fresh data directory $dir/data and its log in $dir/serve.log.
#   node_start FSYNC KAFKA_LISTEN [NAME=VALUE ...]  -> sets node_pid
#   node_stop
# KAFKA_LISTEN is an address, or "" to leave the Kafka listener off; the
# extra NAME=VALUE pairs go into the node's environment. Uses $binary,
# $dir, $port and $admin from the script.

node_start() {
    local fsync="$1" kafka="$2"
    shift 2
    rm -rf "$dir/data"
    env RINGLOG_STORAGE_FSYNC="$fsync" RUST_LOG=warn "$@" "$binary" serve --data-dir "$dir/data" \
        --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" --kafka-listen "$kafka" >"$dir/serve.log" 2>&1 &
    node_pid=$!
    for _ in $(seq 100); do grep -q listening "$dir/serve.log" 2>/dev/null && return; sleep 0.1; done
    echo "node did not start:" >&2
    tail -20 "$dir/serve.log" >&2
    exit 1
}

node_stop() {
    kill -TERM "$node_pid"
    wait "$node_pid" || true
    node_pid=""
}
