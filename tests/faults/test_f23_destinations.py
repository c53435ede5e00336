"""F23: F1-F6 hold for each destination independently (Sparkplug B, and two at once).

The real agent process, counter simulators over Modbus TCP, private Mosquitto
brokers (persistence on, QoS 0 queued for offline sessions, no in-flight cap
towards subscribers, so the checkers' persistent sessions miss nothing and
get it in order), each behind a fault proxy.

**Sparkplug B alone** (the site has no ``mqtt`` key: the ``north`` entry is
the only destination): broker unreachable (F1), PUBACKs lost until the agent
judges the link dead (F3), broker restarted twice (F4), agent killed with
SIGKILL while publishing (F6). Pass: the Sparkplug checker
(:mod:`tests.faults.sparkplug_checker`) finds every committed seq in a DDATA's
``edge/seq``, first arrivals in order per device, duplicates only re-sends
after a new connection within the window, no Sparkplug rule broken (seq
continuity, births before data, bdSeq); every reconnect gives an NBIRTH with
a new bdSeq, and the NDEATH of every connection that ended while its broker
lived carries that connection's bdSeq (the Will, after a kill).

**Two destinations**: edge-json (id ``mqtt``) on broker A and Sparkplug B (id
``county``) on broker B. The fault hits one of them; the other stays live:
it keeps receiving new batches throughout (no gap of ``LIVE_GAP_S``) and its
backlog stays small. The faulted one gets everything after recovery, and the
buffer keeps the rows until both have them: at the end both destinations'
``pending_batches`` are back near 0. A SIGKILL ends both at once: both get
everything after the restart.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from agent.status.document import StatusDocument
from simulators.run import SimDevice
from tests.faults.checker import Checker, Report
from tests.faults.harness import AGENT, counter_site, offline_buffer, quick_check, wait_status
from tests.faults.proxy import Mode, ProxyThread
from tests.faults.sparkplug_checker import SparkplugChecker, SparkplugReport
from tests.support.agentproc import AgentProcess
from tests.support.mosquitto import Mosquitto
from tests.support.simthread import SimThread

GROUP = "plant"
SPB = "county"  # the Sparkplug destination's id
EJ = "mqtt"  # the edge-json destination's id (the site's mqtt section)
Target = str  # a destination id: SPB or EJ

OUTAGE_S = 4.0
WINDOW = 50  # mqtt.max_inflight of the PUBACK-loss runs
LIVE_GAP_S = 2.0  # the live destination never waits longer for a new batch (polled every 100 ms)
LIVE_PENDING = 40  # its backlog during the other one's fault (20 batches/s are committed)
DRAINED = 20  # "back to ~0": what a live agent holds between two commits
KILLS = 3


def fault_broker(workdir: Path) -> Mosquitto:
    """A broker keeping everything for the checkers' persistent sessions, in order."""
    config = ("queue_qos0_messages true", "max_inflight_messages 0")
    return Mosquitto(workdir, persistence=True, extra_config=config)


class NorthRig:
    """Simulators, a Sparkplug broker (and an edge-json one), proxies, checkers, the agent.

    ``sp`` checks the Sparkplug destination ``county`` on ``sp_broker`` (the
    agent goes through ``sp_proxy``); with ``edge_json`` the site's ``mqtt``
    section is a second destination on ``ej_broker`` through ``ej_proxy``,
    checked by ``ej``. Without it the site has no ``mqtt`` key at all.
    """

    def __init__(
        self, tmp_path: Path, *, edge_json: bool, devices: int = 2, interval: str = "100ms",
        max_inflight: int | None = None, start_agent: bool = True,
    ) -> None:  # fmt: skip
        self.tmp_path = tmp_path
        self.edge_json = edge_json
        self.names = [f"c{i}" for i in range(1, devices + 1)]
        self.interval = interval
        self.connection: dict[str, Any] = {"keepalive": "5s", "reconnect_max": "2s"}
        if max_inflight is not None:
            self.connection["max_inflight"] = max_inflight
        self.window = max_inflight or 100  # the agent's default
        self.start_agent = start_agent
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        try:
            s = self._stack
            self.sims = s.enter_context(SimThread([SimDevice(n, "counter") for n in self.names]))
            self.sp_broker = s.enter_context(fault_broker(self.tmp_path / "broker-sp"))
            self.sp_proxy = s.enter_context(ProxyThread(self.sp_broker.port))
            self.sp = s.enter_context(
                SparkplugChecker(self.sp_broker.port, GROUP, AGENT, window=self.window)
            )
            ports = {n: self.sims.ports[n] for n in self.names}
            if self.edge_json:
                self.ej_broker = s.enter_context(fault_broker(self.tmp_path / "broker-ej"))
                self.ej_proxy = s.enter_context(ProxyThread(self.ej_broker.port))
                self.ej = s.enter_context(
                    Checker(self.ej_broker.port, AGENT, session="checker", window=self.window)
                )
                site = counter_site(self.ej_proxy.port, ports, interval=self.interval,
                                    mqtt=self.connection)  # fmt: skip
            else:
                site = counter_site(0, ports, interval=self.interval)
                del site["mqtt"]  # the north entry is the only destination
            site["north"] = [{
                "id": SPB, "dialect": "sparkplug-b", "host": "127.0.0.1",
                "port": self.sp_proxy.port, **self.connection, "sparkplug": {"group_id": GROUP},
            }]  # fmt: skip
            self.agent = AgentProcess(self.tmp_path / "agent", site)
            s.callback(self.agent.__exit__, None, None, None)
            if self.start_agent:
                self.start()
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

    @property
    def ids(self) -> list[str]:
        """The destinations of the site, in its order."""
        return [EJ, SPB] if self.edge_json else [SPB]

    def start(self) -> None:
        """Start the agent and wait until every destination is connected and publishing."""
        births, ddata = len(self.sp.births()), self.sp.count()
        self.agent.start()
        wait_status(self.agent, lambda d: all(dest(d, i)["connected"] for i in self.ids), 30)
        assert self.sp.wait_for_birth(births, 20) is not None, "no NBIRTH after the start"
        assert self.sp.wait_for_count(ddata + 5, 20), "no DDATA after the start"
        if self.edge_json:
            assert self.ej.wait_for_count(self.ej.count() + 5, 20), "no edge-json after the start"

    def proxy(self, target: Target) -> ProxyThread:
        """The fault proxy in front of ``target``'s broker."""
        return self.sp_proxy if target == SPB else self.ej_proxy

    def broker(self, target: Target) -> Mosquitto:
        """``target``'s broker."""
        return self.sp_broker if target == SPB else self.ej_broker

    def arrivals(self, target: Target) -> list[float]:
        """When each data message reached ``target``'s checker (monotonic seconds)."""
        if target == SPB:
            return [a.at for a in self.sp.arrivals() if a.kind == "DDATA"]
        status = f"edge/{AGENT}/status"
        return [m.at for m in self.ej.sub.messages if m.topic != status]

    def drained(self, timeout: float = 60.0) -> StatusDocument:
        """Wait until every destination has (nearly) everything and the buffer let it go."""

        def done(d: StatusDocument) -> bool:
            mine = [dest(d, i) for i in self.ids]
            held = d["buffer"]["pending_batches"]
            return held < DRAINED and all(x["connected"] and x["pending_batches"] < DRAINED
                                          for x in mine)  # fmt: skip

        return wait_status(self.agent, done, timeout)

    def finish(self, timeout: float = 60.0) -> tuple[SparkplugReport, Report | None]:
        """Stop the agent cleanly, wait for every committed seq at each checker, judge."""
        assert self.agent.stop() == 0, self.agent.log()[-3000:]
        on_disk = offline_buffer(self.agent)
        last, dropped = on_disk["last_seq"], on_disk["dropped_batches"]
        self.sp.wait_for_seqs(last, timeout, dropped)
        sp = self.sp.report(last, dropped)
        ej = None
        if self.edge_json:
            self.ej.wait_for_seqs(last, timeout, dropped)
            ej = self.ej.report(last, dropped)
        # the clean stop's NDEATH, with the last connection's bdSeq
        assert self.sp.wait_for_death(sp.births[-1], 10), (sp.births, sp.deaths)
        return self.sp.report(last, dropped), ej


def dest(doc: StatusDocument, destination: str) -> Any:
    """The status of one destination."""
    return doc["destinations"][destination]


def max_gap(times: list[float], start: float, end: float) -> float:
    """The longest wait between data arrivals within ``[start, end]`` (edges count)."""
    inside = sorted(t for t in times if start <= t <= end)
    points = [start, *inside, end]
    return max(b - a for a, b in itertools.pairwise(points))


def assert_sparkplug_ok(report: SparkplugReport, *, unannounced: int = 0) -> None:
    """Nothing lost, order kept, rules kept, every NBIRTH matched by its NDEATH.

    ``unannounced``: connections allowed to end without an NDEATH (a broker
    stopped under them dies with their Will).
    """
    assert report.problems() == [], report.summary()
    assert report.missing == [], report.missing[:20]
    assert len(report.unmatched_births()) <= unannounced, (report.births, report.deaths)


def assert_edge_ok(report: Report | None) -> None:
    """The edge-json destination: nothing lost, order kept, duplicates legal."""
    assert report is not None
    assert report.problems() == [], report.summary()
    assert report.missing == [], report.missing[:20]


# --------------------------------------------------------------------------- the faults


def outage(rig: NorthRig, target: Target) -> tuple[float, float]:
    """F1: ``target``'s broker refuses connections for ``OUTAGE_S``; the span of the fault."""
    proxy = rig.proxy(target)
    births = len(rig.sp.births())
    bd = rig.sp.births()[-1]
    t0 = time.monotonic()
    proxy.set(Mode.REFUSE)
    proxy.reset_connections()
    wait_status(rig.agent, lambda d: not dest(d, target)["connected"], 15)
    if target == SPB:
        assert rig.sp.wait_for_death(bd, 10), "the Will must carry the connection's bdSeq"
    time.sleep(OUTAGE_S)  # the outage itself
    during = rig.agent.status()
    assert dest(during, target)["pending_batches"] >= OUTAGE_S * 5, "the buffer absorbs it"
    proxy.set(Mode.PASS)
    t1 = time.monotonic()
    wait_status(rig.agent, lambda d: dest(d, target)["connected"], 30)
    if target == SPB:
        reborn = rig.sp.wait_for_birth(births, 20)
        assert reborn is not None
        assert reborn != bd, rig.sp.births()
        first = rig.sp.first_ddata_after_birth(reborn)
        assert first is not None
        assert first.historical, "the backlog goes as history: a host keeps its live values"
    check_kept(rig, target, during)
    return t0, t1


def blackhole(rig: NorthRig, target: Target) -> tuple[float, float]:
    """F1 half-open: ``target``'s link swallows every byte until the agent gives it up.

    The agent sees no PUBACK, then connects that never get a CONNACK; the
    other destination must not wait for any of it.
    """
    proxy = rig.proxy(target)
    births = len(rig.sp.births())
    bd = rig.sp.births()[-1]
    t0 = time.monotonic()
    proxy.set(Mode.BLACKHOLE)
    during = wait_status(rig.agent, lambda d: not dest(d, target)["connected"], 30)
    accepted = proxy.stats.accepted
    deadline = time.monotonic() + 15
    while proxy.stats.accepted == accepted and time.monotonic() < deadline:
        time.sleep(0.1)  # until a reconnect attempt hangs in the black hole too
    assert proxy.stats.accepted > accepted, "the agent tried to connect again"
    time.sleep(1)
    proxy.set(Mode.PASS)
    proxy.reset_connections()  # what a black hole leaves behind is dead
    t1 = time.monotonic()
    wait_status(rig.agent, lambda d: dest(d, target)["connected"], 30)
    if target == SPB:
        assert rig.sp.wait_for_death(bd, 10), "the Will must carry the connection's bdSeq"
        assert rig.sp.wait_for_birth(births, 20) not in (None, bd), rig.sp.births()
    check_kept(rig, target, during)
    return t0, t1


def puback_loss(rig: NorthRig, target: Target) -> tuple[float, float]:
    """F3: broker -> agent bytes dropped until the agent judges the link dead; then passed."""
    proxy = rig.proxy(target)
    births = len(rig.sp.births())
    bd = rig.sp.births()[-1]
    t0 = time.monotonic()
    proxy.set(Mode.DROP_S2C)
    # no PUBACK, no PINGRESP: the agent drops the link itself (2 x keepalive at most)
    during = wait_status(rig.agent, lambda d: not dest(d, target)["connected"], 30)
    assert proxy.stats.discarded_s2c > 0, "PUBACKs were on their way and dropped"
    if target == SPB:
        assert rig.sp.wait_for_death(bd, 10), "the Will must carry the connection's bdSeq"
    proxy.set(Mode.PASS)
    proxy.reset_connections()  # the connect under way lost its CONNACK: do not wait it out
    t1 = time.monotonic()
    wait_status(rig.agent, lambda d: dest(d, target)["connected"], 30)
    if target == SPB:
        assert rig.sp.wait_for_birth(births, 20) not in (None, bd), rig.sp.births()
    check_kept(rig, target, during)
    return t0, t1


def broker_restarts(rig: NorthRig, target: Target) -> tuple[float, float]:
    """F4: ``target``'s broker stopped for 3 s and started again, twice."""
    broker = rig.broker(target)
    t0 = time.monotonic()
    for _ in range(2):
        births = len(rig.sp.births())
        broker.stop()
        during = wait_status(rig.agent, lambda d: not dest(d, target)["connected"], 15)
        time.sleep(3)  # the broker is away
        broker.start()
        wait_status(rig.agent, lambda d: dest(d, target)["connected"], 30)
        if target == SPB:
            assert rig.sp.wait_for_birth(births, 20) is not None, "no NBIRTH after the restart"
        check_kept(rig, target, during)
    return t0, time.monotonic()


def check_kept(rig: NorthRig, target: Target, during: StatusDocument) -> None:
    """During ``target``'s fault: its rows were kept, the other destination's backlog is small."""
    assert during["buffer"]["pending_batches"] >= dest(during, target)["pending_batches"]
    for other in rig.ids:
        if other != target:
            assert dest(during, other)["pending_batches"] < LIVE_PENDING, dest(during, other)


FAULTS: dict[str, Callable[[NorthRig, Target], tuple[float, float]]] = {
    "F1-outage": outage,
    "F1-blackhole": blackhole,
    "F3-puback-loss": puback_loss,
    "F4-broker-restart": broker_restarts,
}


# --------------------------------------------------------------------------- Sparkplug alone


@pytest.mark.parametrize("fault", ["F1-outage", "F3-puback-loss", "F4-broker-restart"])
def test_f23_sparkplug_alone_loses_nothing(tmp_path: Path, fault: str) -> None:
    window = WINDOW if fault == "F3-puback-loss" else None
    with NorthRig(tmp_path, edge_json=False, max_inflight=window) as rig:
        assert "mqtt" not in rig.agent.status()["destinations"]
        FAULTS[fault](rig, SPB)
        doc = rig.drained()
        reconnects = dest(doc, SPB)["reconnects"]
        sp, _ = rig.finish()
    assert_sparkplug_ok(sp, unannounced=2 if fault == "F4-broker-restart" else 0)
    assert reconnects >= 1
    assert len(set(sp.births)) >= reconnects + 1, "an NBIRTH with a new bdSeq per connection"
    if fault == "F3-puback-loss":
        assert sp.duplicates, "the broker had them without PUBACK: they are sent again"
        assert len({d.seq for d in sp.duplicates}) <= WINDOW


def kill_cycles(rig: NorthRig, rng: random.Random) -> int:
    """SIGKILL the agent ``KILLS`` times while it publishes; the last seq committed before."""
    committed = 0
    for _ in range(KILLS):
        rig.start()
        bd = rig.sp.births()[-1]
        time.sleep(rng.uniform(0.0, 1.0))  # a random moment of publishing
        committed = max(committed, int(rig.agent.status()["buffer"]["last_seq"]))
        rig.agent.kill()
        assert rig.sp.wait_for_death(bd, 10), ("the Will of the killed session", bd)
        assert quick_check(rig.agent.buffer) == ["ok"]
    rig.start()
    return committed


def test_f23_sparkplug_alone_survives_sigkill(tmp_path: Path) -> None:
    with NorthRig(tmp_path, edge_json=False, start_agent=False) as rig:
        committed = kill_cycles(rig, random.Random(23))
        rig.drained()
        sp, _ = rig.finish()
    assert sp.edge.last_seq >= committed > 0
    assert_sparkplug_ok(sp)
    assert len(set(sp.births)) == KILLS + 1, "one bdSeq per run: a restart never repeats one"


# --------------------------------------------------------------------------- two destinations


@pytest.mark.parametrize(
    ("fault", "target"),
    [
        ("F1-outage", SPB),
        ("F1-outage", EJ),
        ("F1-blackhole", SPB),
        ("F3-puback-loss", SPB),
        ("F3-puback-loss", EJ),
        ("F4-broker-restart", SPB),
        ("F4-broker-restart", EJ),
    ],
)
def test_f23_a_fault_on_one_destination_leaves_the_other_live(
    tmp_path: Path, fault: str, target: Target
) -> None:
    live = EJ if target == SPB else SPB
    window = WINDOW if fault in ("F1-blackhole", "F3-puback-loss") else None
    with NorthRig(tmp_path, edge_json=True, max_inflight=window) as rig:
        t0, t1 = FAULTS[fault](rig, target)
        gap = max_gap(rig.arrivals(live), t0, t1)
        doc = rig.drained()
        sp, ej = rig.finish()
    assert gap < LIVE_GAP_S, f"{live} waited {gap:.1f} s for data during the fault on {target}"
    assert dest(doc, target)["reconnects"] >= 1
    assert dest(doc, live)["reconnects"] == 0, "the live destination never dropped its link"
    assert_edge_ok(ej)
    assert_sparkplug_ok(sp, unannounced=2 if fault == "F4-broker-restart" else 0)
    if fault == "F3-puback-loss":
        faulted = sp.edge if target == SPB else ej
        assert faulted is not None
        assert faulted.duplicates, "the broker had them without PUBACK: they are sent again"
        quiet = ej if target == SPB else sp.edge
        assert quiet is not None
        assert quiet.duplicates == [], "the live destination sent nothing twice"


def test_f23_sigkill_with_two_destinations(tmp_path: Path) -> None:
    with NorthRig(tmp_path, edge_json=True, start_agent=False) as rig:
        committed = kill_cycles(rig, random.Random(232))
        rig.drained()
        sp, ej = rig.finish()
    assert sp.edge.last_seq >= committed > 0
    assert_edge_ok(ej)
    assert ej is not None
    assert ej.births >= KILLS + 1
    assert_sparkplug_ok(sp)
