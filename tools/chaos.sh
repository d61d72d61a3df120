#!/usr/bin/env bash
# Nemesis run on real processes: one etcd and three `ringlog serve` nodes on
# loopback, idempotent acks=all producers, a tailing and a group consumer,
# seeded, possibly overlapping faults (SIGKILL / SIGSTOP of the leader, a
# follower or etcd, a node cut from etcd, all nodes killed, a follower's disk
# replaced, a node forgotten and rejoining; as root also partitions between
# nodes and full disks), then a checker. See docs/RELIABILITY.md.
#
#   tools/chaos.sh [--minutes M] [--seed S] [--faults K1,K2] [--overlap P] [--tolerate KIND] [--keep] ...
#
# Builds the release binary if it is missing (BINARY=... to use another).
# Exit 0: no anomaly; 1: anomalies (the seed and the fault schedule are
# printed; the same seed replays the same schedule); 2: setup failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
binary=${BINARY:-${CARGO_TARGET_DIR:-$root/target}/release/ringlog}
command -v etcd >/dev/null || { echo "chaos: etcd not found (bash tools/install-deps.sh)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "chaos: python3 not found" >&2; exit 2; }
if [[ -z ${BINARY:-} && ! -x $binary ]]; then
    (cd "$root" && cargo build --release --quiet)
fi
[[ -x $binary ]] || { echo "chaos: $binary missing" >&2; exit 2; }
exec python3 -u "$root/tools/chaos/nemesis.py" --binary "$binary" "$@"
