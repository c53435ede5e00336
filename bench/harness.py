"""The parts of a benchmark run: broker, lean Modbus responder, subscriber, agent.

Every part is a real process: :class:`Rig` starts them in order (broker,
responder, subscriber, agent), gives the scenario their pids for CPU and
memory readings, and stops them in reverse order, the agent with SIGTERM so
it drains as in production.

A rig publishes to one or two destinations (:data:`EDGE_JSON`, the ``mqtt``
section; :data:`SPARKPLUG`, a ``north:`` entry), each with a broker and a
subscriber of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson
import yaml

from tests.support.agentproc import ROOT, AgentProcess
from tests.support.mosquitto import HOST, Mosquitto

AGENT_ID = "bench-box"
PROFILE_DIR = "profiles"
EDGE_JSON = "mqtt"
"""Destination id of the edge-json destination (the site's ``mqtt`` section)."""
SPARKPLUG = "sp"
"""Destination id of the Sparkplug B destination (a ``north:`` entry)."""
DIALECTS = {EDGE_JSON: "edge-json", SPARKPLUG: "sparkplug-b"}
SP_GROUP = "bench"


@dataclass(frozen=True)
class Load:
    """What the agent polls: ``devices`` x ``tags`` int16 tags every ``interval`` s.

    With ``rtu`` set every device is one unit on a single RS-485 bus at ``baud``
    (the responder emulates the wire time); otherwise each device is a Modbus
    TCP server of its own.
    """

    devices: int
    tags: int
    interval: float
    rtu: bool = False
    baud: int = 19200
    dead_units: int = 0
    """RTU only: more units on the bus that never answer (each costs its timeout)."""
    facts: bool = False
    """Every device is a machine: state rules, two counters, an alarm, OEE in two 12 h shifts."""
    group_tags: int = 0
    """Tags per poll group (0: one group): a reading is one group, and one reading must fit
    in a message (64 KiB by default), which 12,000 int16 values do not."""

    @property
    def groups(self) -> list[str]:
        """The poll groups: ``default``, then ``g1``, ``g2``..."""
        count = -(-self.tags // self.group_tags) if self.group_tags else 1
        return ["default", *(f"g{i}" for i in range(1, count))]

    @property
    def values_per_s(self) -> float:
        """The offered load."""
        return self.devices * self.tags / self.interval


class BenchBroker(Mosquitto):
    """Mosquitto tuned so the broker never distorts the agent's figures.

    No per-message logging (the test broker logs everything), and no limit on
    messages queued or in flight towards the subscriber: mosquitto drops QoS 1
    messages beyond ``max_queued_messages`` (1000 by default), which would
    show up as a false loss during a backlog drain.
    """

    def _write_config(self) -> None:
        keep = ["persistence true", f"persistence_location {self.workdir}/"]
        lines = [
            f"listener {self.port} {HOST}",
            "allow_anonymous true",
            *(keep if self.persistence else ["persistence false"]),
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 0",
            "max_inflight_messages 0",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def pid(self) -> int:
        """The broker's process id."""
        assert self._proc is not None
        return self._proc.pid


def _read_line(stream: IO[str], timeout: float, what: str) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError(f"{what} printed nothing within {timeout:g} s")
    return stream.readline().strip()


class _Child:
    """A bench helper process (``python -m bench.X``) that says it is ready on stdout."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE,
                stderr=err, text=True,
            )  # fmt: skip
        assert self.proc.stdout is not None
        self.first_line = _read_line(self.proc.stdout, 20, args[0])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class LeanServer(_Child):
    """``bench.lean_modbus`` in TCP (one port per device) or RTU mode."""

    def __init__(self, workdir: Path, load: Load) -> None:
        self.stats_path = workdir / "lean_modbus.json"
        silent = [str(u) for u in dead_unit_ids(load)]
        mode = (
            ["rtu", "--baud", str(load.baud), "--silent-units", *silent]
            if load.rtu
            else ["tcp", "--devices", str(load.devices)]
        )
        super().__init__(["bench.lean_modbus", *mode, "--stats", str(self.stats_path)],
                         workdir / "lean_modbus.log")  # fmt: skip
        self.ports: list[int] = json.loads(self.first_line)["ports"]

    def counters(self) -> dict[str, Any]:
        """The responder's counters (after :meth:`stop`)."""
        with contextlib.suppress(OSError, ValueError):
            result: dict[str, Any] = json.loads(self.stats_path.read_text())
            return result
        return {}


class SubscriberProc(_Child):
    """``bench.subscriber``: records every data message until stopped."""

    def __init__(self, workdir: Path, port: int, destination: str = EDGE_JSON) -> None:
        suffix = "" if destination == EDGE_JSON else f"-{destination}"
        self.out = workdir / f"received{suffix}.json"
        args = ["bench.subscriber", "--port", str(port), "--out", str(self.out)]
        if destination == SPARKPLUG:  # a persistent session: it survives a broker restart
            args += ["--dialect", "sparkplug-b", "--client-id", "bench-host"]
        super().__init__(args, workdir / f"subscriber{suffix}.log")
        if self.first_line != "ready":
            raise RuntimeError(f"subscriber: {self.first_line}")

    def messages(self) -> list[tuple[float, int, int, list[int]]]:
        """``(recv_ms, seq, n_values, [ts...])`` per data message (after :meth:`stop`)."""
        data: dict[str, Any] = orjson.loads(self.out.read_bytes())
        return [(m[0], m[1], m[2], m[3]) for m in data["messages"]]


MACHINE_BLOCK: dict[str, Any] = {
    "state": {
        "inputs": {"run": "t1", "freq": "t4", "fault": "t0"},
        "rules": [
            {"state": "fault", "when": "fault != 0"},
            {"state": "running", "when": "run == 1 and freq > 0.5"},
            {"state": "idle", "when": "true"},
        ],
        "debounce": "2s",
    },
    "counters": {
        "total": {"tag": "t2", "width": "uint16", "max_rate": "50/s"},
        "reject": {"tag": "t3", "width": "uint16", "max_rate": "50/s"},
    },
    "alarms": {"hot": {"when": "freq > 900", "severity": 600, "message": "too fast"}},
    "ideal_cycle": "1s",
}
"""What a facts load adds to the bench profile (the responder's registers: t0=0, t1=1...)."""


def write_profile(folder: Path, tags: int, *, facts: bool = False, group_tags: int = 0) -> str:
    """A profile of ``tags`` int16 holding registers at addresses 0.. (one poll group).

    With ``group_tags`` the tags go in groups of that many: ``default``, ``g1``...
    """
    name = f"bench-int16-{tags}" + ("-machine" if facts else "")
    name += f"-by-{group_tags}" if group_tags else ""
    folder.mkdir(parents=True, exist_ok=True)
    body: dict[str, dict[str, Any]] = {}
    for i in range(tags):
        body[f"t{i}"] = {"address": i, "type": "int16"}
        if group_tags and i >= group_tags:
            body[f"t{i}"]["group"] = f"g{i // group_tags}"
    groups = Load(1, tags, 1.0, group_tags=group_tags).groups
    profile: dict[str, Any] = {
        "profile": name,
        "version": 1,
        "description": "benchmark device: int16 holding registers, one poll group",
        "protocol": {"kind": "modbus", "unit_id": 1, "max_registers": 125},
        "poll_groups": dict.fromkeys(groups, "1s"),
        "tags": body,
    }
    if facts:
        profile["machine"] = MACHINE_BLOCK
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return name


DEAD_TIMEOUT_MS = 200


def dead_unit_ids(load: Load) -> list[int]:
    """Unit ids of the silent units, after the healthy ones."""
    return list(range(load.devices + 1, load.devices + 1 + load.dead_units)) if load.rtu else []


def site_for(
    workdir: Path, brokers: dict[str, int], load: Load, ports: list[int],
    north: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The site file: shipped defaults except where the data lives, what to poll, and where to.

    ``brokers`` maps destination ids (:data:`EDGE_JSON`, :data:`SPARKPLUG`) to
    broker ports; ``north`` adds keys to the Sparkplug entry (``reconnect_max``).
    """
    profile = write_profile(
        workdir / PROFILE_DIR, load.tags, facts=load.facts, group_tags=load.group_tags
    )
    intervals = dict.fromkeys(load.groups, f"{load.interval * 1000:g}ms")
    devices = []
    for i in range(load.devices):
        device: dict[str, Any] = {
            "id": f"dev-{i:02d}",
            "profile": profile,
            "poll_groups": dict(intervals),
        }
        if load.rtu:
            device["connection"] = {
                "modbus_rtu": {"port": f"socket://127.0.0.1:{ports[0]}", "baud": load.baud}
            }
            device["unit_id"] = i + 1
        else:
            device["connection"] = {"modbus_tcp": {"host": "127.0.0.1", "port": ports[i]}}
        devices.append(device)
    devices.extend(
        {
            "id": f"dead-{unit:02d}",
            "profile": profile,
            "poll_groups": {"default": f"{load.interval * 1000:g}ms"},
            "connection": {"modbus_rtu": {"port": f"socket://127.0.0.1:{ports[0]}",
                                          "baud": load.baud, "timeout": f"{DEAD_TIMEOUT_MS}ms"}},
            "unit_id": unit,
        }
        for unit in dead_unit_ids(load)
    )  # fmt: skip
    site: dict[str, Any] = {
        "agent": {"id": AGENT_ID, "data_dir": "data", "log_level": "warning"},
        "devices": devices,
    }
    if load.facts:
        site["analytics"] = {
            "publish_every": "1m",
            "calendars": {
                "all_day": {
                    "workdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "shifts": [
                        {"name": "day", "start": "06:00", "end": "18:00"},
                        {"name": "night", "start": "18:00", "end": "06:00"},
                    ],
                }
            },
            "machines": {
                f"m-{i:02d}": {"devices": [f"dev-{i:02d}"], "calendar": "all_day"}
                for i in range(load.devices)
            },
        }
    if EDGE_JSON in brokers:
        site["mqtt"] = {"host": "127.0.0.1", "port": brokers[EDGE_JSON]}
    if SPARKPLUG in brokers:
        entry = {"id": SPARKPLUG, "dialect": "sparkplug-b", "host": "127.0.0.1",
                 "port": brokers[SPARKPLUG], "sparkplug": {"group_id": SP_GROUP}}  # fmt: skip
        site["north"] = [entry | (north or {})]
    return site


@dataclass
class Rig:
    """Broker(s), responder, subscriber(s) and agent for one scenario run.

    ``destinations`` are destination ids (:data:`EDGE_JSON`, :data:`SPARKPLUG`);
    each gets its broker and subscriber in :attr:`brokers` and
    :attr:`subscribers`. ``broker`` and ``subscriber`` are the first one's.
    """

    workdir: Path
    load: Load
    before_agent: Any = None  # called with the agent's buffer path before it starts
    destinations: tuple[str, ...] = (EDGE_JSON,)
    north: dict[str, Any] | None = None  # more keys of the Sparkplug entry
    broker: BenchBroker | None = None
    server: LeanServer | None = None
    subscriber: SubscriberProc | None = None
    agent: AgentProcess | None = None
    spawned_ms: float = 0.0
    brokers: dict[str, BenchBroker] = field(default_factory=dict)
    subscribers: dict[str, SubscriberProc] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    start_wait: float = 60.0
    """Seconds the agent may take to load its site and answer on its status socket."""

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for dest in self.destinations:
            suffix = "" if dest == EDGE_JSON else f"-{dest}"
            broker = BenchBroker(self.workdir / f"broker{suffix}", persistence=dest == SPARKPLUG)
            self.brokers[dest] = broker
            broker.start()
        self.broker = self.brokers[self.destinations[0]]
        self.server = LeanServer(self.workdir, self.load)
        for dest in self.destinations:
            self.subscribers[dest] = SubscriberProc(self.workdir, self.brokers[dest].port, dest)
        self.subscriber = self.subscribers[self.destinations[0]]
        ports = {dest: broker.port for dest, broker in self.brokers.items()}
        site = site_for(self.workdir, ports, self.load, self.server.ports, self.north)
        self.agent = AgentProcess(self.workdir, site)
        if self.before_agent is not None:
            self.before_agent(self.agent.buffer)
        self.spawned_ms = time.time() * 1000
        self.agent.start(wait=self.start_wait)

    @property
    def pids(self) -> dict[str, int]:
        """Process ids by role, for CPU and memory readings."""
        agent, broker, server, sub = self.agent, self.broker, self.server, self.subscriber
        if agent is None or agent.proc is None or broker is None or server is None or sub is None:
            raise RuntimeError("the rig is not running")
        pids = {
            "agent": agent.proc.pid,
            "broker": broker.pid,
            "responder": server.pid,
            "subscriber": sub.pid,
        }
        for dest in self.destinations[1:]:
            if self.brokers[dest].running:
                pids[f"broker_{dest}"] = self.brokers[dest].pid
            pids[f"subscriber_{dest}"] = self.subscribers[dest].pid
        return pids

    def stop(self) -> None:
        """Agent (SIGTERM: flush and drain), then subscriber, responder, broker."""
        if self.agent is not None and self.agent.proc is not None:
            if self.agent.proc.poll() is None:
                try:
                    self.agent.stop(timeout=60)
                except subprocess.TimeoutExpired:
                    self.agent.kill()
            time.sleep(0.5)  # the last PUBACKed messages are still on their way to the subscriber
        for child in (*self.subscribers.values(), self.server):
            if child is not None:
                child.stop()
        for broker in self.brokers.values():
            broker.stop()
