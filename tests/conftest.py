"""Shared fixtures. Each section belongs to one part of the test-suite; add yours below."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto, find_mosquitto

# --------------------------------------------------------------------------- tools
# The suite runs against real tools; a missing one is an error, never a skip.
REQUIRED_TOOLS = ("mosquitto", "socat", "openssl", "systemd-analyze")


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [
        t
        for t in REQUIRED_TOOLS
        if shutil.which(t) is None and not (t == "mosquitto" and find_mosquitto())
    ]
    if missing:
        pytest.exit(f"missing tools: {', '.join(missing)}; run scripts/setup.sh", returncode=4)


# --------------------------------------------------------------------------- MQTT broker
# A real mosquitto on 127.0.0.1 and a free port (never the shared 1883),
# persistence off, anonymous access; stopped after the test.


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running broker for this test; ``mosquitto.port``, ``restart()``, ``stop()``..."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run scripts/setup.sh (apt-get install mosquitto)")
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# --------------------------------------------------------------------------- (next section)
