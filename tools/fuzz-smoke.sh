#!/usr/bin/env bash
# Short run of every fuzz target (default 20 s each). Needs the nightly
# toolchain; installs cargo-fuzz when absent. Fails on any crash, and on
# any input that runs longer than 10 s (a hang, not a slow input).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in $(cargo +nightly fuzz list); do
    echo "fuzz: $target for ${seconds}s"
    if ! cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -max_len=65536 -timeout=10 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $target failed" >&2
        exit 1
    fi
    grep -E "^Done [0-9]+ runs" "$log" || tail -n 3 "$log"
done
