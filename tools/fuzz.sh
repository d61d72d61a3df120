#!/usr/bin/env bash
# Long run of one fuzz target: tools/fuzz.sh TARGET MINUTES (default 10).
# Starts from the seed corpus kept in fuzz/corpus/TARGET; inputs libFuzzer
# finds go to fuzz/corpus/TARGET too (git-ignored, only seed-* is kept) so a
# later run resumes from them. On a crash, prints the command that replays
# it. Needs the nightly toolchain; installs cargo-fuzz when absent.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: tools/fuzz.sh TARGET [MINUTES]" >&2
    exit 2
fi
target="$1"
minutes="${2:-10}"
cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
if ! cargo +nightly fuzz list | grep -x "$target" >/dev/null; then
    echo "fuzz: no target '$target'; targets: $(cargo +nightly fuzz list | tr '\n' ' ')" >&2
    exit 2
fi
mkdir -p "corpus/$target"
log="artifacts/$target/run-$(date -u +%Y%m%dT%H%M%SZ).log"
mkdir -p "artifacts/$target"
echo "fuzz: $target for ${minutes} min, log in fuzz/$log"
status=0
cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$((minutes * 60))" -max_len=65536 -timeout=10 -print_final_stats=1 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
    artifact="$(grep -oE "artifacts/$target/(crash|timeout|oom|leak|slow-unit)-[0-9a-f]+" "$log" | tail -n 1 || true)"
    echo "fuzz: $target failed" >&2
    if [ -n "$artifact" ]; then
        echo "fuzz: reproduce (from the repository root) with: cargo +nightly fuzz run $target fuzz/$artifact" >&2
        echo "fuzz: minimise with: cargo +nightly fuzz tmin $target fuzz/$artifact" >&2
    fi
    exit "$status"
fi
grep -E "^Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb" "$log" || true
