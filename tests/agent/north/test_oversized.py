"""The publisher never sends a batch above ``max_message_size``: it has the buffer cut it."""

from __future__ import annotations

from agent.north.link import Publisher
from tests.agent.north.test_publisher import (
    AGENT,
    MemorySource,
    StubBroker,
    options,
    running,
    until,
)


class CuttingSource(MemorySource):
    """Records what the publisher asks to be cut; the pieces stand for the buffer's."""

    def __init__(self) -> None:
        super().__init__()
        self.cut: list[tuple[int, int]] = []

    def resplit(self, seq: int, device: str, payload: bytes, limit: int) -> int:
        self.cut.append((seq, limit))
        self.ack([seq])
        self.add(device)  # a small piece under a new seq
        return 0


async def test_a_stored_batch_above_the_limit_is_cut_and_never_sent() -> None:
    source = CuttingSource()
    source.add("dev")
    big = source.add("dev")
    source.rows[big.seq] = type(big)(big.seq, big.device, 0, 1, b"x" * 3000)
    source.add("dev")
    async with StubBroker() as broker:
        broker.hold = False
        pub = Publisher(options(broker.port, max_message_size=2048), source, AGENT)
        async with running(pub):
            await until(lambda: not source.rows)
            assert pub.stats.connected  # cut, not a reason to drop the link
    assert broker.data_publishes() == [1, 3, 4]  # 2 cut, its piece is 4
    assert [seq for seq, _ in source.cut] == [2]
    assert source.cut[0][1] < 2048
    assert pub.stats.oversized_split == 1
