"""An edge-json agent loads no dialect it does not speak (protobuf, the cloud sessions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_runtime_loads_neither_protobuf_nor_a_cloud_session() -> None:
    code = (
        "import sys, agent.runtime.agent, agent.north.link\n"
        "heavy = [m for m in sys.modules if m.startswith('google.protobuf')"
        " or m.endswith('_session') or m == 'agent.north.sparkplug.encode']\n"
        "print(','.join(sorted(heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    assert done.stdout.strip() == ""
