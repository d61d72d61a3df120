#!/usr/bin/env bash
# Storage benchmarks next to the disk's own limits, measured in the same
# run on the same filesystem. Prints a Markdown report on stdout.
#   tools/bench-storage.sh [DIR]   (DIR: where data goes; default target/bench-data)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/bench-data}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
tools/install-deps.sh
cargo build --release --quiet
echo "# storage benchmark run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- host: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r)"
echo "- filesystem: $(df -h "$dir" | awk 'NR==2{print $1" ("$2")"}') at $dir"
echo

echo "## fio: sequential O_DIRECT write, 1 MiB blocks, io_uring, iodepth 16"
fio --name=seqwrite --directory="$dir" --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth=16 \
    --size=4G --output-format=terse --terse-version=3 >"$dir/fio-seq.terse"
awk -F';' '{printf "- bandwidth: %.0f MiB/s (fio lays the file out first, so these are overwrites)\n", $48/1024}' "$dir/fio-seq.terse"
rm -f "$dir"/seqwrite*
fio --name=seqwrite --directory="$dir" --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth=16 \
    --size=4G --fallocate=native --create_on_open=1 --output-format=terse --terse-version=3 >"$dir/fio-new.terse"
awk -F';' '{printf "- bandwidth into a new fallocated file (what a log does): %.0f MiB/s\n", $48/1024}' "$dir/fio-new.terse"
rm -f "$dir"/seqwrite*

echo "## fio: 4 KiB writes each followed by fdatasync"
source tools/lib/bench.sh
read -r fio_p50 fio_p99 < <(fio_fdatasync_us)
echo "- fdatasync latency: p50 $fio_p50 us, p99 $fio_p99 us"

echo "## cold-cache crash recovery of a 1 GiB segment"
rm -rf "$dir/recovery"
./target/release/ringlog storage-demo --data-dir "$dir/recovery" --records 1000000 --batch 1000 --fsync never >/dev/null 2>&1
rm -f "$dir"/recovery/topics/demo/0/{clean-shutdown,recovery-point}
sync
if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then cache="dropped"; else cache="NOT dropped (not root)"; fi
opened="$(./target/release/ringlog storage-demo --data-dir "$dir/recovery" --records 1 --fsync never 2>/dev/null)"
echo "$opened" | sed -n 1p \
    | sed -E "s/^opened [^ ]+ in ([0-9.]+) ms .*scanned ([0-9]+) bytes.*/- scanned \2 bytes in \1 ms (page cache $cache)/"
rm -rf "$dir/recovery"

echo "## criterion (cargo bench --bench storage), data in $dir"
RINGLOG_BENCH_DIR="$dir" cargo bench --bench storage 2>/dev/null >"$dir/criterion.txt"
python3 - "$dir/criterion.txt" <<'PY'
import re, sys
name, figures = None, {}
for line in open(sys.argv[1], encoding="utf-8"):
    stripped = line.strip()
    if line[:1].strip() and "/" in stripped.split()[0]:
        name = stripped.split()[0]
        figures = {}
        stripped = stripped[len(name):].strip()
    if name is None:
        continue
    if stripped.startswith("change:"):
        name = None
        continue
    match = re.match(r"(time|thrpt):\s+\[\S+ \S+ (\S+ \S+)", stripped)
    if match and match.group(1) not in figures:
        figures[match.group(1)] = match.group(2)
        if "thrpt" in figures or (match.group(1) == "time" and "index" in name):
            extra = f", {figures['thrpt']}" if "thrpt" in figures else ""
            print(f"- {name}: {figures['time']} per iteration{extra}")
            name = None
PY
