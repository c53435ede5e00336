"""Eclipse Tahu's JavaScript decoder (npm ``sparkplug-payload``), run with Node.js.

The package is pinned by ``tests/support/js/package.json`` and its lock file and
installed into ``tests/support/js/node_modules`` (gitignored) by ``scripts/setup.sh``.
Where that was not run, the first test that needs it runs ``npm ci`` under a file
lock, so two workers never install into one folder at once (and the tests that use
it share an xdist group, ``_GROUPS`` in ``tests/conftest.py``). A missing node or
npm is an error, never a skip. Tests get it as the ``tahu_decode`` fixture.
"""

from __future__ import annotations

import base64
import fcntl
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import require

JS = Path(__file__).resolve().parent / "js"

Decode = Callable[[list[bytes]], list[dict[str, Any]]]
"""Payloads in, one JSON object each out (64-bit integers as decimal strings)."""


def tahu_decoder() -> Decode:
    """Tahu's decoder, installed first if it is not (under the lock)."""
    node = require("node")
    with (JS / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (JS / "node_modules" / "sparkplug-payload").is_dir():
            _npm_ci()

    def decode(payloads: list[bytes]) -> list[dict[str, Any]]:
        text = "".join(base64.b64encode(p).decode() + "\n" for p in payloads)
        done = subprocess.run(
            [node, str(JS / "decode.js")], input=text, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    return decode


def _npm_ci() -> None:
    npm = require("npm")
    error = ""
    for _ in range(3):
        shutil.rmtree(JS / "node_modules", ignore_errors=True)
        done = subprocess.run(
            [npm, "ci", "--prefix", str(JS), "--no-audit", "--no-fund", "--ignore-scripts"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if done.returncode == 0:
            return
        error = done.stderr[-2000:]
    pytest.fail(f"npm ci in {JS} failed three times:\n{error}", pytrace=False)
