"""The duplicate bound is true: sent but not durably deleted never exceeds ``max_inflight``.

A batch is deleted from the buffer in the writer's next group commit after its
PUBACK, not at the PUBACK. Whatever was sent and is still in the file is
re-sent after a kill -9, so that count, not only the batches waiting for a
PUBACK, is what the window must bound. Sampled here from the database file
itself (what a kill would leave) while a real publisher drains a real buffer
whose writer commits slowly (a long ``commit_interval``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from agent.buffer import Buffer
from agent.north.link import Publisher
from drivers.base import Reading
from tests.agent.north.test_publisher import AGENT, data, options, running
from tests.support.mosquitto import Mosquitto, Subscriber

BACKLOG = 400
WINDOW = 10


def _still_on_disk(db: Path, up_to: int) -> int:
    """Rows with ``seq <= up_to`` in the committed file (read-only)."""
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT count(*) FROM batches WHERE seq <= ?", (up_to,)).fetchone()
        return int(row[0])
    finally:
        conn.close()


async def test_sent_but_not_durably_deleted_stays_within_the_window(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "buffer.db"
    async with Buffer(db, agent_id=AGENT, commit_interval=0.5) as buf:
        for i in range(BACKLOG):
            buf.put("dev", [Reading(ts=1764270000000 + i, values={"n": i})])
        await buf.flush()
        with Subscriber(mosquitto.port, "edge/+/+") as sub:
            pub = Publisher(options(mosquitto.port, max_inflight=WINDOW), buf, AGENT)
            worst = 0
            async with running(pub):
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and len(data(sub.messages)) < BACKLOG:
                    sent = pub._after  # the highest seq handed to the link
                    worst = max(worst, await asyncio.to_thread(_still_on_disk, db, sent))
                    await asyncio.sleep(0.005)
                await pub.stop(drain_timeout=10)
        assert len({m.payload for m in data(sub.messages)}) == BACKLOG
    assert worst <= WINDOW, f"{worst} sent batches still in the file (a kill re-sends them)"
