"""The shipped example sites really open the buffer with WAL and ``synchronous=FULL``.

Read from the write connection the agent uses (the store the writer thread
opens), built from the example site exactly as ``edge-agent run`` builds it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.buffer.store import Store
from agent.runtime.agent import Agent
from agent.site.loader import load_site

ROOT = Path(__file__).resolve().parents[3]
SQLITE_FULL_LEVEL = 2


@pytest.mark.parametrize("example", ["garden-tools.yaml", "edge-box.yaml"])
def test_example_site_buffer_is_wal_and_full(example: str, tmp_path: Path) -> None:
    site = load_site(ROOT / "config" / "examples" / example, env={"MQTT_PASSWORD": "x"})
    config = Agent(site).buffer._config
    assert config.synchronous == "FULL"
    store = Store(dataclasses.replace(config, path=tmp_path / "buffer.db"))
    try:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == SQLITE_FULL_LEVEL
    finally:
        store.close()
