"""F21: the wall clock steps under a running agent, or was never set.

The agent runs as a process under libfaketime, which moves only its realtime
clock (``DONT_FAKE_MONOTONIC=1``) and re-reads the offset from a file on every
call (``FAKETIME_NO_CACHE=1``), so a test can step the clock an hour back or
forward, or boot the agent in the year 2000, while it runs. The test process
itself keeps the real clock and times what arrives with ``time.monotonic()``.

Pass: heartbeats keep coming every ~2 s whatever the wall clock does, while
``ts`` follows the wall clock; readings taken before the clock is set carry
``"clock": "unset"``, and none after; status and doctor say which.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.message import decode_message
from drivers.base import CLOCK_FLOOR_MS
from simulators.run import SimDevice
from tests.faults.harness import AGENT, wait_status
from tests.support.agentproc import AgentProcess, counter_device, site_dict
from tests.support.mosquitto import Mosquitto, Received, Subscriber
from tests.support.simthread import SimThread
from tests.support.tools import require_library

HEARTBEAT_S = 2.0
HOUR_MS = 3_600_000


class FakeClock:
    """The offset file libfaketime reads on every clock call of the agent."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "faketime.rc"
        self.set("+0")

    def set(self, spec: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(spec + "\n", encoding="ascii")
        tmp.replace(self.path)  # atomic: the agent never reads half a line

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": require_library("libfaketimeMT.so.1"),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
            "DONT_FAKE_MONOTONIC": "1",
        }


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread([SimDevice("c1", "counter")], step_interval=0.1) as sims:
        yield sims


def _device(port: int) -> dict[str, Any]:
    device = counter_device("c1", port)
    # t0 changes every tick but never by 1e12: only its heartbeat reports it
    device["tags"] = {"t0": {"deadband": 1e12, "heartbeat": f"{HEARTBEAT_S:g}s"}}
    device["drop_tags"] = [f"t{i}" for i in range(1, 13)]
    return device


def _beats(received: list[Received]) -> list[tuple[float, dict[str, Any]]]:
    """(arrival, reading) of every reading that carries t0."""
    out: list[tuple[float, dict[str, Any]]] = []
    for m in received:
        if m.topic == f"edge/{AGENT}/c1":
            out.extend(
                (m.at, r) for r in decode_message(m.payload)["readings"] if "t0" in r["values"]
            )
    return out


def _beats_after(sub: Subscriber, since: float, n: int, timeout: float) -> list[Any]:
    sub.wait_for(lambda r: len([b for b in _beats(r) if b[0] >= since]) >= n, timeout)
    return [b for b in _beats(sub.messages) if b[0] >= since]


@pytest.mark.fault
def test_f21_wall_clock_steps_do_not_stretch_heartbeats(
    tmp_path: Path, mosquitto: Mosquitto, sim: SimThread
) -> None:
    clock = FakeClock(tmp_path)
    agent = AgentProcess(
        tmp_path / "agent", site_dict(AGENT, mosquitto.port, [_device(sim.ports["c1"])])
    )
    agent.env.update(clock.env())
    with Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub, agent:
        before = _beats_after(sub, 0.0, 2, 30)
        for step, sign in (("-3600", -1), ("+0", +1)):
            clock.set(step)  # an hour back, then (to +0) an hour forward
            since = time.monotonic()
            # before the fix: an hour back gave an hour of silence
            beats = _beats_after(sub, since, 4, 6 * HEARTBEAT_S + 10)
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(beats)]
            assert max(gaps) < 2 * HEARTBEAT_S + 1.5, gaps  # loose: a loaded 2-core box
            # ts stays the wall clock: it moved with the step
            moved = beats[-1][1]["ts"] - before[-1][1]["ts"]
            assert moved * sign > HOUR_MS / 2, moved
            before = beats
        assert agent.stop() == 0


def _flags(received: list[Received], since: float = 0.0) -> list[str | None]:
    return [r.get("clock") for at, r in _beats(received) if at >= since]


@pytest.mark.fault
def test_f21_readings_before_the_clock_is_set_are_flagged(
    tmp_path: Path, mosquitto: Mosquitto, sim: SimThread
) -> None:
    clock = FakeClock(tmp_path)
    clock.set("@2000-01-01 00:00:00")  # a box without RTC
    device = counter_device("c1", sim.ports["c1"])
    device["drop_tags"] = [f"t{i}" for i in range(1, 13)]
    agent = AgentProcess(tmp_path / "agent", site_dict(AGENT, mosquitto.port, [device]))
    agent.env.update(clock.env())
    with Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub, agent:
        sub.wait_for(lambda r: len(_beats(r)) >= 3, 30)
        assert set(_flags(sub.messages)) == {"unset"}
        assert all(r["ts"] < CLOCK_FLOOR_MS for _, r in _beats(sub.messages))
        status = agent.status()["clock"]
        assert status["state"] == "unset"
        assert status["flagged_readings"] >= 3
        doctor = agent.command("doctor", "-c", str(agent.site_file)).stdout
        assert any(line.startswith("FAIL  clock:") for line in doctor.splitlines()), doctor

        clock.set("+0")  # NTP sets the clock
        stepped = wait_status(agent, lambda d: d["clock"]["steps"] >= 1, 10)["clock"]
        assert stepped["state"] != "unset"
        assert (stepped["last_step_s"] or 0) > 20 * 365 * 86400  # 2000 -> now

        def after_the_step(received: list[Received]) -> list[dict[str, Any]]:
            # Judged by the reading's own ts, not by arrival: a reading taken just
            # before the step may still be on its way (commit, publish) and rightly
            # carries "unset".
            return [r for _, r in _beats(received) if r["ts"] >= CLOCK_FLOOR_MS]

        sub.wait_for(lambda r: len(after_the_step(r)) >= 3, 30)
        # none after: no flag, or "unsynced" on a box whose kernel says NTP is not running
        assert all(r.get("clock") != "unset" for r in after_the_step(sub.messages))
        doctor = agent.command("doctor", "-c", str(agent.site_file)).stdout
        assert not any(line.startswith("FAIL  clock:") for line in doctor.splitlines()), doctor
        assert agent.stop() == 0
