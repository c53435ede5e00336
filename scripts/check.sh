#!/usr/bin/env bash
# Static checks, as CI runs them: ruff (lint), ruff format --check, mypy strict
# over the code and the tests. Run after scripts/setup.sh (or test.sh) made .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff";         .venv/bin/ruff check .
echo "== ruff format";  .venv/bin/ruff format --check .
echo "== mypy";         .venv/bin/mypy agent drivers simulators bench tests
