#!/usr/bin/env bash
# Layer check (docs/ARCHITECTURE.md): the checker's self-test (a deliberately
# wrong import must fail), then the check of src/ against tools/layers.allow.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 tools/layers.py --self-test
python3 tools/layers.py "$@"
