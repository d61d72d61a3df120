#!/usr/bin/env bash
# Produce and consume over TLS next to plaintext, one binary, rows
# alternating so the virtual disk's drift hits both alike (issue 17).
#   tools/bench-tls.sh [BINARY] [ROUNDS] [TOTAL_BYTES] [DIR]
# Each round, per mode (plaintext, TLS on every listener): produce with
# fsync=never (2 partitions, 2 producers, 1 KiB records, batches of 1000),
# then consume what it wrote. The certificate is a P-256 key made with the
# openssl command; the cipher is whatever rustls and ringlog's own client
# agree on (TLS 1.3, AES-128-GCM on x86 with AES-NI). Prints Markdown:
# one row per run with the device and CPU figures, then the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$(realpath "${1:-target/release/ringlog}")"
rounds="${2:-3}"
total="${3:-2000000000}"
dir="${4:-target/bench-tls}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
source tools/lib/usage.sh
source tools/lib/bench.sh
port=27270
admin=27271
export RINGLOG_SERVER="127.0.0.1:$port"
results="$dir/results.tsv"
: >"$results"

# A CA and a leaf it signs (a self-signed CA certificate cannot serve as
# the leaf: rustls refuses a CA used as an end entity).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench \
    -keyout "$dir/node.key" -out "$dir/node.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$dir/leaf.ext"
openssl x509 -req -in "$dir/node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$dir/leaf.ext" -out "$dir/node.pem" 2>/dev/null
chmod 600 "$dir/node.key" "$dir/ca.key"

start_node() { # mode
    rm -rf "$dir/data"
    local tls=()
    if [[ $1 == tls ]]; then
        tls=(RINGLOG_TLS_CERT_FILE="$dir/node.pem" RINGLOG_TLS_KEY_FILE="$dir/node.key")
    fi
    env "${tls[@]}" RINGLOG_STORAGE_FSYNC=never RUST_LOG=warn "$binary" serve --data-dir "$dir/data" \
        --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" --kafka-listen "" >"$dir/serve.log" 2>&1 &
    node_pid=$!
    for _ in $(seq 100); do grep -q listening "$dir/serve.log" 2>/dev/null && return; sleep 0.1; done
    echo "node did not start:" >&2
    tail -20 "$dir/serve.log" >&2
    exit 1
}
stop_node() { kill -TERM "$node_pid"; wait "$node_pid" || true; }
# CPU seconds the node process (not the bench client) has used so far.
node_cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$node_pid/stat"; }
# The node's CPU seconds per GB over a row: what a remote client would not share.
node_cost() { # cpu_before result
    python3 -c 'import json, sys; r = json.loads(sys.argv[2]); print("%.2f" % ((float(sys.argv[3]) - float(sys.argv[1])) / (r["bytes"] / 1e9)))' "$1" "$2" "$(node_cpu_s)"
}
# CPU seconds of the bench client: the `times` builtin's second line (this
# shell's finished children), written to a file by the main shell itself
# (a `$(…)` would run `times` in a subshell that has no children).
seconds_of_times() { # file
    sed -n 2p "$1" | awk '{ split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.3f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }'
}
client_cost() { # result (after `times >"$dir/client.before"`, the bench, `times >"$dir/client.after"`)
    python3 -c 'import json, sys; r = json.loads(sys.argv[1]); print("%.2f" % ((float(sys.argv[3]) - float(sys.argv[2])) / (r["bytes"] / 1e9)))' \
        "$1" "$(seconds_of_times "$dir/client.before")" "$(seconds_of_times "$dir/client.after")"
}
mb_per_s() { python3 -c 'import json, sys; print("%.0f" % json.loads(sys.argv[1])["mb_per_s"])' "$1"; }

row() { # mode kind result usage node_cpu_s_per_gb client_cpu_s_per_gb
    local value
    value=$(mb_per_s "$3")
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$value" "$5" "$6" >>"$results"
    echo "| $1 | $2 | $value | $5 | $6 | \`$3\` | $4 |"
}

echo "# TLS against plaintext, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- \`$binary\`; $rounds rounds, alternating; $(nproc) cores, kernel $(uname -r); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "- 2 partitions, 2 producers, 1 KiB random records, batches of 1000, $total bytes per produce row, fsync=never"
echo
echo "| mode | row | MB/s | node CPU s/GB | client CPU s/GB | ringlog bench --json | device and CPU during the run |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    order=(plaintext tls)
    ((round % 2 == 0)) && order=(tls plaintext)
    for mode in "${order[@]}"; do
        client=()
        [[ $mode == tls ]] && client=(--tls-ca "$dir/ca.pem")
        start_node "$mode"
        usage_begin "$dir"
        cpu=$(node_cpu_s)
        times >"$dir/client.before"
        result=$(bench_json "$binary" produce "${client[@]}" --topic t --partitions 2 --producers 2 --total-bytes "$total")
        times >"$dir/client.after"
        row "$mode" "produce" "$result" "$(usage_end)" "$(node_cost "$cpu" "$result")" "$(client_cost "$result")"
        sync
        echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
        usage_begin "$dir"
        cpu=$(node_cpu_s)
        times >"$dir/client.before"
        result=$(bench_json "$binary" consume "${client[@]}" --topic t --producers 2)
        times >"$dir/client.after"
        row "$mode" "consume (cold)" "$result" "$(usage_end)" "$(node_cost "$cpu" "$result")" "$(client_cost "$result")"
        stop_node
    done
done
rm -rf "$dir/data"
echo
echo "Median MB/s per mode and row:"
echo
python3 - "$results" <<'PY'
import statistics, sys
rows, costs, clients = {}, {}, {}
for line in open(sys.argv[1]):
    mode, kind, value, cost, client = line.rstrip("\n").split("\t")
    rows.setdefault(kind, {}).setdefault(mode, []).append(float(value))
    costs.setdefault(kind, {}).setdefault(mode, []).append(float(cost))
    clients.setdefault(kind, {}).setdefault(mode, []).append(float(client))
print("| row | plaintext MB/s | TLS MB/s | TLS / plaintext | node CPU s/GB plaintext / TLS | client CPU s/GB plaintext / TLS |")
print("|---|---|---|---|---|---|")
median = lambda table, kind, mode: statistics.median(table[kind].get(mode, [0]))
for kind, by in rows.items():
    p, t = median(rows, kind, "plaintext"), median(rows, kind, "tls")
    cost = f"{median(costs, kind, 'plaintext'):.2f} / {median(costs, kind, 'tls'):.2f}"
    client = f"{median(clients, kind, 'plaintext'):.2f} / {median(clients, kind, 'tls'):.2f}"
    print(f"| {kind} | {p:.0f} | {t:.0f} | {t / p if p else float('nan'):.2f} | {cost} | {client} |")
PY
