#!/usr/bin/env bash
# Install what cargo cannot fetch: fio (benchmarks), e2fsprogs/util-linux
# (the real ENOSPC test's and the nemesis's loop-mounted filesystems),
# iptables (the nemesis's node-to-node partitions), etcd and protoc (cluster
# issues), kcat, kafka-python and confluent-kafka (the Kafka protocol tests), and for the
# console's browser test chromium, node and npm, then
# `npm ci` in tests/browser (playwright-core at the locked version; it drives
# Debian's chromium and downloads no browser of its own). Idempotent:
# installs only what is missing. Needs root for apt.
set -euo pipefail

need=()
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v mount >/dev/null 2>&1 || need+=(mount)
command -v losetup >/dev/null 2>&1 || need+=(mount)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# kcat: a Kafka client no one here wrote, for the Kafka protocol tests.
command -v kcat >/dev/null 2>&1 || need+=(kcat)
[[ -f /usr/include/google/protobuf/descriptor.proto ]] || need+=(libprotobuf-dev)
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
# A node from elsewhere (e.g. a newer one on the image) is kept; Debian's
# nodejs and npm are installed only where there is none.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: missing ${need[*]}; run as root or install them yourself" >&2
        exit 1
    fi
    echo "install-deps: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# kafka-python: a second Kafka client no one here wrote (tests/it/kafka.rs).
if ! python3 -c "import kafka" >/dev/null 2>&1; then
    echo "install-deps: pip install kafka-python" >&2
    python3 -m pip install --quiet --disable-pip-version-check "kafka-python==3.0.12"
fi
# confluent-kafka: librdkafka from Python, for the idempotent producer and
# consumer-group tests (tests/it/kafka_idempotence.rs, kafka_groups.rs).
if ! python3 -c "import confluent_kafka" >/dev/null 2>&1; then
    echo "install-deps: pip install confluent-kafka" >&2
    python3 -m pip install --quiet --disable-pip-version-check "confluent-kafka==2.16.1"
fi

browser_tests="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
# npm ci leaves node_modules/.package-lock.json: older than the lock file
# (or absent) means the installed packages are not the locked ones.
if [[ ! "$browser_tests/node_modules/.package-lock.json" -nt "$browser_tests/package-lock.json" ]]; then
    echo "install-deps: npm ci in tests/browser" >&2
    (cd "$browser_tests" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi
