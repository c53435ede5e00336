"""The counters of a buffer file on disk, cheaply: for ``edge-agent status`` with no agent.

``status`` must answer in well under 150 ms, also when no agent runs and it shows
what waits in the buffer. The rest of the package (the writer side, the message
codec, pydantic) costs about 100 ms to import; this module needs only sqlite3,
``records`` and ``agent.errors``, and ``agent/buffer/__init__`` loads the heavy
parts on first use. Import it as ``from agent.buffer.peek import read_stats``.

The read is read-only and never creates the file (``reader.connect_ro``): safe
next to a running agent, and on a box where the agent's account owns the file.
"""

from __future__ import annotations

from pathlib import Path

from agent.buffer.reader import read_stats as _read_stats
from agent.buffer.records import BufferStats

__all__ = ["BufferStats", "read_stats"]


def read_stats(path: Path) -> BufferStats:
    """The committed counters of the buffer at ``path``; :class:`StorageError` if unreadable."""
    return _read_stats(Path(path))
