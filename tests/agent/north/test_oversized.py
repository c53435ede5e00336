"""The publisher never sends a batch above ``max_message_size``: it has the buffer cut it."""

from __future__ import annotations

from pathlib import Path

from agent.north.link import Publisher
from tests.agent.north.test_publisher import (
    AGENT,
    MemorySource,
    StubBroker,
    options,
    running,
    until,
)
from tests.support.mosquitto import Mosquitto


class CuttingSource(MemorySource):
    """Records what the publisher asks to be cut; the pieces stand for the buffer's."""

    def __init__(self) -> None:
        super().__init__()
        self.cut: list[tuple[int, int | None]] = []
        self.created: list[int | None] = []

    def resplit(
        self,
        seq: int,
        device: str,
        payload: bytes,
        limit: int,
        *,
        created_ms: int | None = None,
    ) -> int:
        self.cut.append((seq, limit))
        self.created.append(created_ms)
        self.ack([seq])
        self.add(device)  # a small piece under a new seq
        return 0


async def test_a_stored_batch_above_the_limit_is_cut_and_never_sent() -> None:
    source = CuttingSource()
    source.add("dev")
    big = source.add("dev")
    source.rows[big.seq] = type(big)(big.seq, big.device, 1234, 1, b"x" * 3000)
    source.add("dev")
    async with StubBroker() as broker:
        broker.hold = False
        pub = Publisher(options(broker.port, max_message_size=2048), source, AGENT)
        async with running(pub):
            await until(lambda: not source.rows)
            assert pub.stats.connected  # cut, not a reason to drop the link
    assert broker.data_publishes() == [1, 3, 4]  # 2 cut, its piece is 4
    assert [seq for seq, _ in source.cut] == [2]
    assert (source.cut[0][1] or 2048) < 2048
    assert source.created == [1234]  # the pieces are as old as the batch they come from
    assert pub.stats.oversized_split == 1


async def test_a_broker_closing_on_a_large_message_gets_it_cut_and_new_batches_split(
    tmp_path: Path,
) -> None:
    source = CuttingSource()
    big = source.add("dev")
    source.rows[big.seq] = type(big)(big.seq, big.device, 0, 1, b"x" * 6000)
    with Mosquitto(tmp_path / "broker", max_packet_size=4096) as broker:
        opts = options(broker.port, reconnect_min=0.05, reconnect_max=0.2)
        pub = Publisher(opts, source, AGENT)  # configured 64 KiB: the broker's 4 KiB is unknown
        async with running(pub):
            await until(lambda: not source.rows, 30, "the large batch cut")
    assert [seq for seq, _ in source.cut] == [1]
    assert (source.cut[0][1] or 4096) < 4096
    assert "after a 6,0" in (pub.stats.last_error or ""), pub.stats.last_error
    # batches committed from now on are split at put, below what the broker showed
    assert source.max_message_bytes is not None
    assert source.max_message_bytes < 4096
