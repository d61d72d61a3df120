#!/usr/bin/env bash
# Layer check (docs/ARCHITECTURE.md): the checker's self-test (a deliberately
# wrong import must fail), then the check of src/ against tools/layers.allow,
# then the module graph. The function-length check runs here too.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 tools/layers.py --self-test
python3 tools/layers.py "$@"
# Function length (issue 12): its self-test, then src/ against tools/functions.allow.
python3 tools/functions.py --self-test
python3 tools/functions.py
# The module graph, for the record: a circle needs an import against the
# rule, which the check above already failed on (the allow-list is empty).
python3 tools/layers.py --graph
