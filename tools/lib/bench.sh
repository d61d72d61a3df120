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
