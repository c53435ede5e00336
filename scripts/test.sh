#!/usr/bin/env bash
# The test command: set up, static checks, the whole test suite, the benchmark smoke.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check.sh
# Two workers; see tests/conftest.py for what runs together on one.
echo "== pytest"; .venv/bin/pytest -n 2 --dist loadgroup "$@"
echo "== bench (smoke)"; .venv/bin/python -m bench --quick
