"""Shared fixtures. Each section belongs to one part of the test-suite; add yours below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto, find_mosquitto

# --------------------------------------------------------------------------- tools
# The suite runs against real tools. Each fixture or test that runs one asks
# tests.support.tools.require() for it: a missing tool fails that test with
# what to install (never a skip), and a test that needs none runs anywhere.


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
