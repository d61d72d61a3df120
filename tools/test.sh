#!/usr/bin/env bash
# The whole test suite: unit, property, integration (real files, real
# processes, SIGKILL crash rounds, real ENOSPC when root) and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
cargo test --all-targets "$@"
cargo test --doc
