"""A buffer file holding an outage's worth of batches, written with the agent's own Buffer.

Polling for an hour with the broker down is replaced by writing the same rows
directly: the file is what the agent would have left (same encoder, same seq
assignment, same schema), built in seconds, once per benchmark invocation and
copied for each run.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from agent.buffer import Buffer
from drivers.base import Reading

_CHUNK = 2000  # puts between flushes: the buffer's RAM inbox holds 32 MiB at most


async def _fill(path: Path, agent_id: str, devices: int, tags: int, seconds: int) -> int:
    start_ms = int(time.time() * 1000) - seconds * 1000
    async with Buffer(path, agent_id=agent_id, max_bytes=2_000_000_000) as buf:
        n = 0
        for second in range(seconds):
            ts = start_ms + second * 1000
            for d in range(devices):
                values: dict[str, int | float | bool | str] = {
                    f"t{i}": (i + second) % 1000 for i in range(tags)
                }
                buf.put(f"dev-{d:02d}", [Reading(ts, values)])
                n += 1
                if n % _CHUNK == 0:
                    await buf.flush()
        await buf.flush()
        return buf.last_seq


def make_backlog(path: Path, agent_id: str, devices: int, tags: int, seconds: int) -> int:
    """Write ``seconds`` of polls of ``devices`` x ``tags`` to a new buffer; the last seq."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_fill(path, agent_id, devices, tags, seconds))


def copy_buffer(template: Path, target: Path) -> None:
    """Copy a closed buffer file and its seq sidecar to where an agent will open it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    seq = template.with_name(template.name + ".seq")
    if seq.exists():
        shutil.copyfile(seq, target.with_name(target.name + ".seq"))
