"""Shared pieces of the fault tests: site files, status polling, process figures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from agent.buffer import Buffer
from agent.status.document import StatusDocument
from drivers.base import Reading
from simulators.run import SimDevice
from tests.faults.checker import Checker, Report
from tests.faults.proxy import ProxyThread
from tests.support.agentproc import AgentProcess, counter_device, site_dict
from tests.support.simthread import SimThread

AGENT = "fault-box"


def counter_site(
    broker_port: int,
    device_ports: dict[str, int],
    *,
    interval: str = "100ms",
    mqtt: dict[str, Any] | None = None,
    buffer: dict[str, Any] | None = None,
    agent: str = AGENT,
) -> dict[str, Any]:
    """A site of counter devices (one per simulator port) publishing to ``broker_port``."""
    devices = [counter_device(name, port, interval) for name, port in device_ports.items()]
    return site_dict(agent, broker_port, devices, mqtt=mqtt, buffer=buffer)


def wait_status(
    agent: AgentProcess, predicate: Callable[[StatusDocument], bool], timeout: float = 30.0
) -> StatusDocument:
    """Poll the agent's status until ``predicate`` holds; raise TimeoutError with the last doc."""
    deadline = time.monotonic() + timeout
    doc: StatusDocument | None = None
    while time.monotonic() < deadline:
        try:
            doc = agent.status()
        except OSError:
            doc = None
        if doc is not None and predicate(doc):
            return doc
        time.sleep(0.1)
    raise TimeoutError(f"status condition not met in {timeout} s; last status: {doc}")


def offline_buffer(agent: AgentProcess) -> dict[str, Any]:
    """The buffer section of ``edge-agent status`` for a stopped agent (read from disk)."""
    result = agent.command("status", "-c", str(agent.site_file), "--json")
    doc: dict[str, Any] = json.loads(result.stdout)["agents"][0]["buffer"]
    return doc


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def quick_check(path: Path) -> list[str]:
    """``PRAGMA quick_check`` of a database file, opened read-only."""
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
    finally:
        conn.close()


def pending_seqs(path: Path) -> list[int]:
    """Seqs still in a buffer file, read-only."""
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return [int(row[0]) for row in conn.execute("SELECT seq FROM batches ORDER BY seq")]
    finally:
        conn.close()


class BrokerPort(Protocol):
    """Any running broker the rig can point at: Mosquitto, or one of tests.support.brokers."""

    @property
    def port(self) -> int: ...


class Rig:
    """Counter simulators, a fault proxy in front of the broker, a checker, the agent.

    ``with Rig(tmp_path, broker, devices=4) as rig:`` starts them in that
    order; ``rig.proxy`` (agent -> broker; none with ``direct=True``),
    ``rig.checker`` (straight on the broker, persistent session), ``rig.agent``
    (an :class:`AgentProcess`, not started with ``start_agent=False``: prefill
    its buffer first).
    """

    def __init__(
        self, tmp_path: Path, broker: BrokerPort, *, devices: int = 4, interval: str = "100ms",
        mqtt: dict[str, Any] | None = None, buffer: dict[str, Any] | None = None,
        start_agent: bool = True, direct: bool = False,
    ) -> None:  # fmt: skip
        self.start_agent = start_agent
        self.direct = direct  # the agent on the broker's own port, no fault proxy
        self.tmp_path = tmp_path
        self.broker = broker
        self.names = [f"c{i}" for i in range(1, devices + 1)]
        self.interval = interval
        self.mqtt = mqtt
        self.buffer = buffer
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        try:
            s = self._stack
            self.sims = s.enter_context(SimThread([SimDevice(n, "counter") for n in self.names]))
            if not self.direct:
                self.proxy = s.enter_context(ProxyThread(self.broker.port))
            window = int((self.mqtt or {}).get("max_inflight", 100))  # the agent's default
            self.checker = s.enter_context(
                Checker(self.broker.port, AGENT, session="checker", window=window)
            )
            ports = {n: self.sims.ports[n] for n in self.names}
            port = self.broker.port if self.direct else self.proxy.port
            site = counter_site(port, ports, interval=self.interval, mqtt=self.mqtt,
                                buffer=self.buffer)  # fmt: skip
            self.agent = AgentProcess(self.tmp_path / "agent", site)
            s.callback(self.agent.__exit__, None, None, None)
            if self.start_agent:
                self.agent.start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def finish(self, timeout: float = 60.0) -> Report:
        """Stop the agent cleanly, wait for every committed seq, and judge."""
        assert self.agent.stop() == 0, self.agent.log()[-3000:]
        on_disk = offline_buffer(self.agent)
        self.checker.wait_for_seqs(on_disk["last_seq"], timeout, on_disk["dropped_batches"])
        return self.checker.report(on_disk["last_seq"], on_disk["dropped_batches"])


def prefill(path: Path, n: int, *, agent: str = AGENT, max_bytes: int = 64_000_000,
            pad: int = 0) -> int:  # fmt: skip
    """Commit ``n`` batches of device ``prefill`` to the buffer at ``path``; the last seq."""

    async def fill() -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        async with Buffer(path, agent_id=agent, max_bytes=max_bytes, commit_interval=0) as buf:
            for i in range(n):
                buf.put("prefill", [Reading(ts=1_764_270_000_000 + i,
                                            values={"m": i, "pad": "x" * pad})])  # fmt: skip
                if i % 10_000 == 9_999:
                    await buf.flush()
            await buf.flush()
            return buf.last_seq

    return asyncio.run(fill())
