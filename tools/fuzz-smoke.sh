#!/usr/bin/env bash
# Short run of every fuzz target (default 20 s each). Needs the nightly
# toolchain; installs cargo-fuzz when absent. Fails on any crash, and on
# any input that runs longer than 10 s (a hang, not a slow input). Each
# target starts from its seed corpus in fuzz/corpus/<target> (seed-* files
# are kept in the repository); inputs found during the run go to a scratch
# directory, so every smoke run starts from the same seeds.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
log="$(mktemp)"
scratch="$(mktemp -d)"
trap 'rm -rf "$log" "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
    echo "fuzz: $target for ${seconds}s"
    mkdir -p "corpus/$target" "$scratch/$target"
    if ! cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=65536 -timeout=10 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $target failed; a crash input is in fuzz/artifacts/$target (replay: cargo +nightly fuzz run $target fuzz/artifacts/$target/<file>)" >&2
        exit 1
    fi
    grep -E "^Done [0-9]+ runs" "$log" || tail -n 3 "$log"
done
