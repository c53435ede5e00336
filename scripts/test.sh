#!/usr/bin/env bash
# The test command: set up, lint, type-check, run the whole test suite, smoke the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff";   .venv/bin/ruff check .
echo "== mypy";   .venv/bin/mypy agent drivers simulators $(test -d bench && echo bench)
echo "== pytest"; .venv/bin/pytest "$@"
echo "== bench (smoke)"; .venv/bin/python -m bench --quick
