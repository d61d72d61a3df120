#!/usr/bin/env bash
# Kafka produce and consume next to the native protocol, one binary, rows
# alternating so the virtual disk's drift hits both alike (issue 14).
#   tools/bench-kafka.sh [BINARY] [ROUNDS] [TOTAL_BYTES] [DIR]
# Each round, per protocol, on a fresh node (fsync=never, fresh data dir):
# produce TOTAL_BYTES of 1 KiB records (RECORD_BYTES) into a topic of 2 partitions, then
# drop the page cache and consume everything back (cold).
# - native: `ringlog bench produce` (2 producers, one per partition, batches
#   of 1000, 4 in flight), then `ringlog bench consume` (2 consumers).
# - Kafka: librdkafka's own load generator, rdkafka_performance, built into
#   DIR against the system librdkafka when missing (see ensure_tool).
# MB/s is the same figure for both: value bytes acknowledged (produce) or
# received (consume), as the client reports them, divided by the wall time
# of the client command measured here (process start to exit, so both
# include connecting and fetching metadata), in 1e6 bytes per second.
# Each row also shows the tool's own figure (its own clock; a sum of the
# processes' rates when there are several). Prints Markdown: one row per
# run with the node's and the client's CPU seconds per GB and the device's
# counters, then the medians and the Kafka / native ratios.
# Environment: KAFKA_PRODUCERS=2 runs one rdkafka_performance producer per
# partition instead of one that spreads over both; KAFKA_CONSUMERS=2 the
# same for consumers; PROFILE=1 records `perf record --call-graph dwarf` of the node during
# every row into DIR/perf.*.data (the figures of such a run are skewed).
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$(realpath "${1:-target/release/ringlog}")"
rounds="${2:-3}"
total="${3:-2000000000}"
dir="${4:-target/bench-kafka}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
source tools/lib/usage.sh
source tools/lib/node.sh
source tools/lib/bench.sh
port=27370
admin=27371
kport=27372
export RINGLOG_SERVER="127.0.0.1:$port"
# RECORD_BYTES (default 1024): each record's value. The native bench's
# batches hold about 1 MB whatever the size (1000 records of 1 KiB), as
# librdkafka's batch.size below does.
record="${RECORD_BYTES:-1024}"
native_batch=$(((1024000 + record - 1) / record))
count=$((total / record))
kafka_producers="${KAFKA_PRODUCERS:-1}"
kafka_consumers="${KAFKA_CONSUMERS:-1}"
profile="${PROFILE:-0}"
results="$dir/results.tsv"
: >"$results"
failed=0

# rdkafka_performance ships as librdkafka's example, not in Debian's
# packages. Its source includes librdkafka's internal headers (rd.h, and
# config.h, which `./configure` writes), so: the library and public header
# from the system (librdkafka-dev), the example and internal headers from
# the librdkafka that the rdkafka-sys crate vendors (2.3.0; its example
# only calls API that 2.0.2 has). RDKAFKA_CRATE=FILE uses a downloaded crate.
tool="$dir/rdkafka_performance"
ensure_tool() {
    [[ -x $tool ]] && return
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    if [[ ! -f /usr/include/librdkafka/rdkafka.h ]] || ! command -v gcc make curl >/dev/null; then
        echo "installing librdkafka-dev and a compiler" >&2
        "${sudo[@]}" apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq librdkafka-dev gcc make curl >&2
    fi
    local version=4.8.0+2.3.0 src="$dir/src"
    local crate="${RDKAFKA_CRATE:-$dir/rdkafka-sys-$version.crate}"
    if [[ ! -f $crate ]]; then
        curl -sSfL -o "$crate" "https://static.crates.io/crates/rdkafka-sys/rdkafka-sys-$version.crate"
    fi
    rm -rf "$src"
    mkdir -p "$src"
    tar xzf "$crate" -C "$src" --strip-components=1 "rdkafka-sys-$version/librdkafka"
    # Only config.h is needed: no library is built here.
    (cd "$src/librdkafka" && ./configure --disable-ssl --disable-gssapi --disable-zstd --disable-curl \
        --disable-sasl >"$dir/configure.log" 2>&1)
    # The system header first ("rdkafka.h" must be the library's own).
    gcc -O2 -o "$tool" -I/usr/include/librdkafka -I"$src/librdkafka/src" \
        "$src/librdkafka/examples/rdkafka_performance.c" -lrdkafka -lpthread -lm
}
ensure_tool
tool_version=$({ "$tool" -h 2>&1 || true; } | sed -n 's/^librdkafka version \([^ ]*\).*/\1/p')

# A failed row (set -e) must not leave its node holding the ports.
node_pid=
trap '[[ -n $node_pid ]] && kill -TERM "$node_pid" 2>/dev/null; wait' EXIT
# CPU seconds the node process (not the client) has used so far.
node_cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$node_pid/stat"; }
# CPU seconds of the clients: the `times` builtin's second line (this
# shell's finished children), written to a file by the main shell itself
# (a `$(…)` would run `times` in a subshell that has no children).
seconds_of_times() { # file
    sed -n 2p "$1" | awk '{ split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.3f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }'
}
# Bytes the device under DIR read and wrote since usage_begin.
disk_bytes() {
    awk -v a="$usage_start" -v d="$usage_dev" '$3 == d {
        split(a, s, " "); printf "wrote %.2f GB, read %.2f GB", ($10 - s[2]) * 512 / 1e9, ($6 - s[1]) * 512 / 1e9
    }' /proc/diskstats
}

# The node's own storage I/O so far (/proc/PID/io: "read_bytes write_bytes",
# bytes it had the block layer read or write, O_DIRECT included); the
# device's counters count every process on the disk.
node_io() { awk '$1 == "read_bytes:" {r = $2} $1 == "write_bytes:" {w = $2} END {printf "%.0f %.0f", r, w}' "/proc/$node_pid/io"; }
# Around each client command: device and CPU counters, wall time, and
# optionally a profile of the node.
begin_row() { # name
    usage_begin "$dir"
    cpu_before=$(node_cpu_s)
    io_before=$(node_io)
    if ((profile)); then
        perf record -F 499 --call-graph dwarf,32768 -p "$node_pid" -o "$dir/perf.$1.data" >/dev/null 2>&1 &
        perf_pid=$!
        sleep 0.5
    fi
    times >"$dir/client.before"
    started=$(date +%s%N)
}
# Right after the client command, before anything parses its output.
stop_clock() {
    ended=$(date +%s%N)
    times >"$dir/client.after"
    usage=$(usage_end)
    disk=$(disk_bytes)
    cpu_after=$(node_cpu_s)
    io_after=$(node_io)
    if ((profile)); then
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
    fi
}
end_row() { # protocol row bytes records tool_figure
    local seconds node client mbs
    seconds=$(awk -v a="$started" -v b="$ended" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
    read -r mbs node client < <(awk -v b="$3" -v s="$seconds" -v n0="$cpu_before" -v n1="$cpu_after" \
        -v c0="$(seconds_of_times "$dir/client.before")" -v c1="$(seconds_of_times "$dir/client.after")" \
        'BEGIN { gb = b / 1e9; if (gb <= 0) gb = 1e-9;
                 printf "%.0f %.2f %.2f\n", b / s / 1e6, (n1 - n0) / gb, (c1 - c0) / gb }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$mbs" "$node" "$client" \
        "$(awk -v f="$5" 'BEGIN { n = split(f, p, / \+ /); for (i = 1; i <= n; i++) t += p[i]; printf "%.0f", t }')" >>"$results"
    local io
    io=$(awk -v a="$io_before" -v b="$io_after" 'BEGIN { split(a, s, " "); split(b, e, " ");
        printf "node wrote %.2f GB, read %.2f GB", (e[2] - s[2]) / 1e9, (e[1] - s[1]) / 1e9 }')
    echo "| $1 | $2 | $mbs | $node | $client | $4 | $seconds | $5 | $io; device $disk; $usage |"
}
# Cold reads, as bench-tls.sh: the page cache is dropped (the node reads
# segments with O_DIRECT anyway; its tail cache stays), then the clients'
# programs come back in, else a consume's first moments load the 100 MB
# ringlog binary, or librdkafka, from the disk, and count as the log's.
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    cat "$binary" "$tool" "$(ldconfig -p | awk '/librdkafka.so.1 / {print $NF; exit}')" >/dev/null 2>&1 || true
}
json_field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

native_round() {
    local result produced
    node_start never "127.0.0.1:$kport"
    # Created here, as the Kafka topic is, outside the timed command.
    "$binary" topic create t --partitions 2 >/dev/null
    begin_row "native-produce-$round"
    result=$(bench_json "$binary" produce --topic t --partitions 2 --producers 2 --record-bytes "$record" --batch "$native_batch" \
        --total-bytes "$total")
    stop_clock
    produced=$(json_field "$result" records)
    end_row native produce "$(json_field "$result" bytes)" "$produced" "$(json_field "$result" mb_per_s)"
    drop_caches
    begin_row "native-consume-$round"
    result=$(bench_json "$binary" consume --topic t --producers 2)
    stop_clock
    end_row native "consume (cold)" "$(json_field "$result" bytes)" "$(json_field "$result" records)" \
        "$(json_field "$result" mb_per_s)"
    check_count native "$produced" "$(json_field "$result" records)"
    node_stop
}

# Settings a user tuning librdkafka for throughput would pick:
# - acks=1: the leader's append, as the native bench's default (`leader`);
#   with fsync=never acks=all would wait for nothing more on one node.
# - linger.ms=5 (rdkafka_performance sets 1000, librdkafka's default is 5)
#   and batch.size=1000000 (librdkafka's default, also the default
#   message.max.bytes): about 970 records of 1 KiB per batch, near the
#   native bench's 1000.
# - no compression, no idempotence (librdkafka's defaults): the native
#   bench compresses nothing either.
# - no key: the default partitioner (consistent_random, sticky for keyless
#   records) spreads batches over both partitions.
# Consumers: 4 MiB per partition per fetch, as the native bench's
# --fetch-bytes default, and 8 MiB per fetch request over both partitions;
# fetch.wait.max.ms=100 (default 500): a fetch at the end of the log waits
# that long on the node, and the consumer waits for it before it exits,
# which the wall time would count. While records remain, fetches return at
# once whatever the setting.
produce_flags=(-a 1 -X linger.ms=5 -X batch.size=1000000 -X compression.codec=none)
consume_flags=(-X max.partition.fetch.bytes=4194304 -X fetch.max.bytes=8388608 -X fetch.wait.max.ms=100)

kafka_round() {
    local produced=0 consumed=0 bytes=0 figure="" split i n log clients=()
    rm -f "$dir"/kafka-*.log
    node_start never "127.0.0.1:$kport"
    "$binary" topic create kt --partitions 2 >/dev/null
    begin_row "kafka-produce-$round"
    if ((kafka_producers == 1)); then
        "$tool" -P -t kt -b "127.0.0.1:$kport" -s "$record" -c "$count" "${produce_flags[@]}" >"$dir/kafka-produce.0.log" 2>&1 || true
    else
        for i in $(seq 0 $((kafka_producers - 1))); do
            n=$((count / kafka_producers))
            "$tool" -P -t kt -p "$i" -b "127.0.0.1:$kport" -s "$record" -c "$n" "${produce_flags[@]}" >"$dir/kafka-produce.$i.log" 2>&1 &
            clients+=($!)
        done
        wait_clients
    fi
    stop_clock
    # "% N messages produced (B bytes), D delivered (offset O, F failed) in T ms: ... X MB/s, ..."
    for log in "$dir"/kafka-produce.*.log; do
        n=$(sed -n 's/^% [0-9]* messages produced ([0-9]* bytes), \([0-9]*\) delivered.*/\1/p' "$log" | tail -1)
        produced=$((produced + ${n:-0}))
        figure+="${figure:+ + }$(sed -n 's/.* \([0-9.]*\) MB\/s, .*/\1/p' "$log" | tail -1)"
    done
    end_row kafka produce "$((produced * record))" "$produced" "$figure"
    drop_caches
    clients=()
    begin_row "kafka-consume-$round"
    # -C: partitions assigned by the client (-p), from offset 0 (-o 0: the
    # log start, nothing was deleted; `-o beginning` would first wait 500 ms
    # on librdkafka's offset-query timer, as the partitions have no leader
    # yet when it starts), exit when every partition reached its end (-e).
    if ((kafka_consumers == 1)); then
        "$tool" -C -t kt -p 0 -p 1 -o 0 -e -b "127.0.0.1:$kport" "${consume_flags[@]}" >"$dir/kafka-consume.0.log" 2>&1 || true
    else
        for i in 0 1; do
            "$tool" -C -t kt -p "$i" -o 0 -e -b "127.0.0.1:$kport" "${consume_flags[@]}" >"$dir/kafka-consume.$i.log" 2>&1 &
            clients+=($!)
        done
        wait_clients
    fi
    stop_clock
    figure=""
    # "% N messages (B bytes) consumed in T ms: M msgs/s (X MB/s)"
    for log in "$dir"/kafka-consume.*.log; do
        n=$(sed -n 's/^% \([0-9]*\) messages ([0-9]* bytes) consumed.*/\1/p' "$log" | tail -1)
        consumed=$((consumed + ${n:-0}))
        n=$(sed -n 's/^% [0-9]* messages (\([0-9]*\) bytes) consumed.*/\1/p' "$log" | tail -1)
        bytes=$((bytes + ${n:-0}))
        figure+="${figure:+ + }$(sed -n 's/.*consumed.*(\([0-9.]*\) MB\/s).*/\1/p' "$log" | tail -1)"
    done
    # Where the partitioner put the records: each partition's end offset.
    split=$(cat "$dir"/kafka-consume.*.log | sed -n 's/^% Consumer reached end of kt \[\([0-9]*\)\] message queue at offset \([0-9]*\)$/\1 \2/p' |
        sort -n | awk '{ printf "%s%s", (NR > 1 ? " + " : ""), $2 }')
    end_row kafka "consume (cold)" "$bytes" "$consumed ($split)" "$figure"
    check_count kafka "$produced" "$consumed"
    ((produced == count - count % kafka_producers)) || { echo "kafka: $produced of $count records acknowledged" >&2; failed=1; }
    node_stop
    # The last run's client logs stay in DIR/logs/ROUND.
    rm -rf "$dir/logs/$round"
    mkdir -p "$dir/logs/$round"
    mv "$dir"/kafka-*.log "$dir/logs/$round/"
}
wait_clients() { local pid; for pid in "${clients[@]}"; do wait "$pid" || true; done; }
check_count() { # protocol produced consumed
    if (($2 != $3 || $2 == 0)); then
        echo "$1: consumed $3 records of $2 produced" >&2
        failed=1
    fi
}

echo "# Kafka against native, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- \`$binary\`; $rounds rounds, alternating; $(nproc) cores, kernel $(uname -r); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- 2 partitions, records of $record bytes (native batches of $native_batch), $total bytes ($count records) per produce row, fsync=never; then a cold consume of everything"
echo "- Kafka client: rdkafka_performance (librdkafka $tool_version), $kafka_producers producer and $kafka_consumers consumer process(es): ${produce_flags[*]} / ${consume_flags[*]}"
echo
echo "| protocol | row | MB/s | node CPU s/GB | client CPU s/GB | records | client s | tool's MB/s | bytes the node and the device read and wrote; device and CPU during the run |"
echo "|---|---|---|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    order=(native kafka)
    ((round % 2 == 0)) && order=(kafka native)
    for protocol in "${order[@]}"; do
        "${protocol}_round"
    done
done
rm -rf "$dir/data"
echo
echo "Median per protocol and row (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)):"
echo
python3 - "$results" <<'PY'
import statistics, sys
rows, costs, clients, own = {}, {}, {}, {}
for line in open(sys.argv[1]):
    protocol, kind, value, cost, client, figure = line.rstrip("\n").split("\t")
    rows.setdefault(kind, {}).setdefault(protocol, []).append(float(value))
    own.setdefault(kind, {}).setdefault(protocol, []).append(float(figure))
    costs.setdefault(kind, {}).setdefault(protocol, []).append(float(cost))
    clients.setdefault(kind, {}).setdefault(protocol, []).append(float(client))
print("| row | native MB/s | Kafka MB/s | Kafka / native | ≥ 0.80 | tools' own MB/s native / Kafka (ratio) | node CPU s/GB native / Kafka | client CPU s/GB native / Kafka |")
print("|---|---|---|---|---|---|---|---|")
median = lambda table, kind, protocol: statistics.median(table[kind].get(protocol, [0]))
for kind in rows:
    n, k = median(rows, kind, "native"), median(rows, kind, "kafka")
    ratio = k / n if n else float("nan")
    cost = f"{median(costs, kind, 'native'):.2f} / {median(costs, kind, 'kafka'):.2f}"
    client = f"{median(clients, kind, 'native'):.2f} / {median(clients, kind, 'kafka'):.2f}"
    on, ok = median(own, kind, "native"), median(own, kind, "kafka")
    tools = f"{on:.0f} / {ok:.0f} ({ok / on if on else float('nan'):.2f})"
    print(f"| {kind} | {n:.0f} | {k:.0f} | {ratio:.2f} | {'yes' if ratio >= 0.8 else 'no'} | {tools} | {cost} | {client} |")
PY
if ((failed)); then
    echo "some records were lost or not acknowledged (see above)" >&2
    exit 1
fi
