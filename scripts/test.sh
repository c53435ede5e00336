#!/usr/bin/env bash
# The test command: set up, static checks, the whole test suite, the benchmark smoke.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check.sh
echo "== pytest"; .venv/bin/pytest "$@"
echo "== bench (smoke)"; .venv/bin/python -m bench --quick
