"""Helpers shared by the security tests."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tests.support.agentproc import AgentProcess
from tests.support.mosquitto import Received

T = TypeVar("T")


def wait_until(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call ``probe`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def start_agent(
    workdir: Path, site: dict[str, Any], env: Mapping[str, str] | None = None
) -> AgentProcess:
    """An ``edge-agent run`` subprocess with ``env`` added to its environment, started."""
    agent = AgentProcess(workdir, site)
    agent.env.update(env or {})
    try:
        return agent.start()
    except BaseException:
        agent.__exit__(None, None, None)
        raise


def data_messages(received: list[Received]) -> list[dict[str, Any]]:
    """The decoded data messages (not the retained status ones)."""
    return [json.loads(m.payload) for m in received if not m.topic.endswith("/status")]


def seqs(received: list[Received]) -> set[int]:
    """Every ``seq`` received."""
    return {m["seq"] for m in data_messages(received)}


def relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (site files may name files relative to themselves)."""
    return os.path.relpath(path, start)
