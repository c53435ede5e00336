"""Client side of the status endpoint, light to import (no asyncio, no pydantic).

``edge-agent status`` should answer in well under 150 ms, so this module and
:mod:`agent.cli.status` import only the standard library.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from agent.status.document import Answer


def query(path: Path, timeout: float = 2.0) -> Answer:
    """Ask the agent at ``path`` for its status (blocking).

    Raises ``OSError`` when no agent answers there.
    """
    result: Answer = json.loads(_ask(path, b"status", timeout))
    return result


def query_metrics(path: Path, timeout: float = 2.0) -> str:
    """The Prometheus text of the agent at ``path`` (blocking); ``OSError`` if none answers.

    An agent too old to know the request answers a JSON error: ``ValueError``.
    """
    text = _ask(path, b"metrics", timeout).decode()
    if text.startswith("{"):
        raise ValueError(f"the agent at {path} does not serve metrics")
    return text


def _ask(path: Path, request: bytes, timeout: float) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(request + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
