#!/usr/bin/env bash
# The quick unit tests: pure tables, config cases, the buffer, the layering test.
# No broker, no simulators over ptys, no fault scenarios; about fifteen seconds.
# Extra arguments go to pytest (e.g. -k decode, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/pytest -q -m "not fault and not slow" \
  tests/test_layering.py tests/test_schema.py tests/test_shipped_configs.py \
  tests/agent/site tests/agent/buffer tests/agent/compute tests/agent/test_message.py \
  tests/drivers/modbus/test_decode.py tests/drivers/modbus/test_plan.py \
  tests/drivers/modbus/test_block_decoder.py tests/drivers/modbus/test_busload.py \
  tests/drivers/modbus/test_config.py tests/drivers/opcua/test_config.py \
  tests/drivers/opcua/test_quality_values.py tests/drivers/serial/test_config.py \
  tests/drivers/serial/test_parse.py \
  "$@"
