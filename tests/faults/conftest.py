"""Fixtures of the fault suite: every test here is marked ``fault``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``fault`` (select with ``-m fault``)."""
    for item in items:
        if "tests/faults/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.fault)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker with persistence: the checker's persistent session survives its restarts."""
    b = Mosquitto(tmp_path / "broker", persistence=True)
    b.start()
    try:
        yield b
    finally:
        b.stop()
