"""Eclipse Tahu's JavaScript decoder (npm ``sparkplug-payload``), run with Node.js.

The package is pinned by ``tests/support/js/package.json`` and its lock file and
installed into ``tests/support/js/node_modules`` (gitignored) by ``npm ci`` the
first time a session needs it. A missing node or npm is an error, never a skip.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import require

JS = Path(__file__).resolve().parents[4] / "tests" / "support" / "js"

Decode = Callable[[list[bytes]], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def tahu_decode() -> Decode:
    """Decode payloads with Tahu's decoder: one JSON object (64-bit ints as strings) each."""
    node = require("node")
    if not (JS / "node_modules" / "sparkplug-payload").is_dir():
        npm = require("npm")
        done = subprocess.run(
            [npm, "ci", "--prefix", str(JS), "--no-audit", "--no-fund", "--ignore-scripts"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"npm ci in {JS} failed:\n{done.stderr[-2000:]}", pytrace=False)

    def decode(payloads: list[bytes]) -> list[dict[str, Any]]:
        text = "".join(base64.b64encode(p).decode() + "\n" for p in payloads)
        done = subprocess.run(
            [node, str(JS / "decode.js")], input=text, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    return decode
