"""Shared fixtures. Each section belongs to one part of the test-suite; add yours below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.tahu import Decode, tahu_decoder

# --------------------------------------------------------------------------- tools
# The suite runs against real tools. Each fixture or test that runs one asks
# tests.support.tools.require() for it: a missing tool fails that test with
# what to install (never a skip), and a test that needs none runs anywhere.


# --------------------------------------------------------------------------- workers
# With pytest-xdist (`-n 2 --dist loadgroup`, what scripts/test.sh runs), tests that
# must not run beside each other share a group, and a group runs on one worker:
# the fault scenarios (timing bounds, brokers restarted, disks filled), the broker
# interop tests (RabbitMQ nodes), the install tests, the tests that install the
# Tahu decoder into one folder, and the tests run as another uid.
_GROUPS = {
    "tests/faults/": "faults",
    "tests/e2e/test_broker_support.py": "faults",
    "tests/install/": "install",
    "tests/agent/north/sparkplug/": "sparkplug",
    "tests/e2e/test_demo_dialects.py": "sparkplug",
    # its module fixture opens the checkout's parents to another uid and closes them
    # after the module: split across two workers, one closed them under the other
    "tests/agent/test_private.py": "private",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path).replace("\\", "/")
        for part, group in _GROUPS.items():
            if f"/{part}" in path:
                item.add_marker(pytest.mark.xdist_group(group))
                break


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


# --------------------------------------------------------------------------- Tahu decoder
# Eclipse Tahu's Sparkplug decoder, run with Node.js (tests/support/tahu.py);
# installed once, under a lock, if scripts/setup.sh did not. A test using it
# belongs to the "sparkplug" group above.


@pytest.fixture(scope="session")
def tahu_decode() -> Decode:
    """Decode payloads with Tahu's decoder: one JSON object (64-bit ints as strings) each."""
    return tahu_decoder()


# --------------------------------------------------------------------------- (next section)
