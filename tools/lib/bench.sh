# Sourced by the bench scripts: one `ringlog bench` run that keeps the
# evidence when it fails. A failed run printed its error to a stderr no one
# kept, and the next row's node start wiped the node's log, so one failed
# consume (issue 15) left nothing to explain it.
#   bench_json BINARY MODE ARGS...  -> the client's JSON line on stdout
# On failure: the client's error, the tail of the node's log (copied to
# $dir/failed-serve.log) and of the kernel's, on stderr; returns 1. Uses
# $dir from the script (the node's log is $dir/serve.log).
bench_json() {
    local binary="$1" output status=0
    shift
    output=$("$binary" bench "$@" --json 2>"$dir/bench.err") || status=$?
    if [[ $status -eq 0 && -n $output ]]; then
        tail -1 <<<"$output"
        return 0
    fi
    cp "$dir/serve.log" "$dir/failed-serve.log" 2>/dev/null || true
    {
        echo "ringlog bench $* failed (exit $status) at $(date -u +%H:%M:%SZ):"
        tail -5 "$dir/bench.err"
        echo "the node's log (kept in $dir/failed-serve.log), last lines:"
        tail -20 "$dir/serve.log" 2>/dev/null || true
        echo "the kernel's log, last lines:"
        dmesg 2>/dev/null | tail -5 || true
    } >&2
    return 1
}

# fio's fdatasync latency, the reference for small-batch `fsync=always`
# latency: 4 KiB buffered writes into a new file in $dir, each followed by
# fdatasync.
#   fio_fdatasync_us  -> "P50 P99" in microseconds on stdout
fio_fdatasync_us() {
    rm -f "$dir"/fsynclat*
    fio --name=fsynclat --directory="$dir" --rw=write --bs=4k --size=64M --fdatasync=1 --ioengine=sync \
        --output-format=json >"$dir/fio-sync.json"
    rm -f "$dir"/fsynclat*
    python3 - "$dir/fio-sync.json" <<'PY'
import json, sys
pct = json.load(open(sys.argv[1]))["jobs"][0]["sync"]["lat_ns"]["percentile"]
print(f"{pct['50.000000']/1000:.0f} {pct['99.000000']/1000:.0f}")
PY
    rm -f "$dir/fio-sync.json"
}
