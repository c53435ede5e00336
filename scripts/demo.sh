#!/usr/bin/env bash
# The main job: set up, then run the demo factory (simulators, a broker, the agent).
# Extra arguments go to `edge-agent demo`, e.g. --duration 30 or --broker HOST:PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/edge-agent demo "$@"
