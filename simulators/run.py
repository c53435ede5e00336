"""Start a set of simulated devices, step their behaviour, and serve them.

``run_simulators`` is what ``edge-agent simulate`` and ``edge-agent demo`` use::

    specs = [SimDevice("motor-1", "vfd"), SimDevice("meter", "meter", port=5022)]
    async with run_simulators(specs) as sims:
        print(sims.ports)                 # {"motor-1": 40211, "meter": 5022}
        sims["motor-1"].faults.set("exception:6")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from simulators.counter import CounterModel
from simulators.faults import FaultMode, FaultSwitch
from simulators.meter import MeterModel
from simulators.modbus_server import SerialEndpoint, TcpEndpoint
from simulators.profile_device import (
    ProfileDevice,
    Scalar,
    TagSpec,
    load_profile,
    profile_path,
)
from simulators.profile_models import BEHAVIOUR_OF_PROFILE, adapt
from simulators.timeline import Scripted, Timeline, TimelineError, wrap
from simulators.vfd import VfdModel

log = logging.getLogger(__name__)

DEFAULT_PROFILES: Final = {
    "vfd": "inovance-md500",
    "meter": "eastron-sdm630",
    "counter": "generic-counter",
}

COUNTER_TAGS: Final = {"generic-counter": "t0", "delta-c2000": "counter", "delta-ms300": "counter"}
"""The register a timeline's piece counter is served on when the timeline names none."""


class BehaviourModel(Protocol):
    """A time-stepped model: ``step(dt)`` returns tag -> engineering value."""

    def step(self, dt: float) -> Mapping[str, Scalar]: ...


@dataclass(frozen=True)
class SimDevice:
    """What to simulate and where.

    ``kind`` picks the behaviour (``vfd``, ``meter``, ``counter``) and, unless
    ``profile`` names another one (a shipped profile's name such as
    ``"invt-gd20"``, or a file), its profile; ``params`` sets the profile's
    parameters as a site would. Any shipped Modbus profile can be served: its
    values come from the behaviour through :mod:`simulators.profile_models`.
    Devices with the same non-zero TCP ``port``, the same ``gateway`` name or
    the same ``serial_port`` share one endpoint, as units behind a gateway or
    on one RS-485 bus; ``port=0`` picks a free port.
    ``serial_port`` switches the device to Modbus RTU on that line (a pty path,
    or ``socket://127.0.0.1:0`` for RTU framing over TCP).
    """

    name: str
    kind: str = "vfd"
    unit_id: int | None = None
    port: int = 0
    host: str = "127.0.0.1"
    serial_port: str | None = None
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    profile: str | Path | None = None
    seed: int = 0
    gateway: str | None = None
    extra_tags: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    timeline: Timeline | None = None
    """Follow this script (:mod:`simulators.timeline`) instead of the random behaviour."""


@dataclass
class RunningDevice:
    """A simulated device while it is being served."""

    spec: SimDevice
    device: ProfileDevice
    model: BehaviourModel
    faults: FaultSwitch
    endpoint: TcpEndpoint | SerialEndpoint

    @property
    def port(self) -> int:
        """Bound TCP port (0 for a device on a real serial line)."""
        return self.endpoint.port

    @property
    def unit_id(self) -> int:
        """The Modbus unit id the device answers to."""
        return self.device.unit_id

    @property
    def timeline(self) -> Timeline | None:
        """The script this device follows, if any (its ``log`` lists the applied steps)."""
        return self.model.timeline if isinstance(self.model, ScriptedModel) else None

    def step(self, dt: float) -> None:
        """Advance the behaviour model and refresh the register image."""
        self.device.update(self.model.step(dt))


class RunningSimulators:
    """Handle yielded by :func:`run_simulators`."""

    def __init__(self, devices: dict[str, RunningDevice]) -> None:
        self.devices = devices

    def __getitem__(self, name: str) -> RunningDevice:
        return self.devices[name]

    @property
    def ports(self) -> dict[str, int]:
        """Device name -> bound TCP port."""
        return {name: dev.port for name, dev in self.devices.items()}

    def step(self, dt: float) -> None:
        """Advance every device once (what the background task does every tick)."""
        for dev in self.devices.values():
            dev.step(dt)

    def describe(self) -> list[str]:
        """One line per device: name, kind, unit id, where it listens."""
        return [
            f"{name}: {dev.spec.kind} ({dev.device.name}) unit {dev.unit_id} on "
            f"{dev.endpoint.describe()}"
            for name, dev in self.devices.items()
        ]


def build_device(spec: SimDevice) -> tuple[ProfileDevice, BehaviourModel]:
    """The register image and behaviour model for one spec (no I/O but reading YAML)."""
    if spec.kind not in DEFAULT_PROFILES:
        raise ValueError(f"{spec.name}: unknown kind {spec.kind!r}; use {sorted(DEFAULT_PROFILES)}")
    profile = load_profile(_profile_file(spec), spec.params)
    name = str(profile.get("profile"))
    behaviour = BEHAVIOUR_OF_PROFILE.get(name, spec.kind)
    if spec.kind not in ("counter", behaviour):
        raise ValueError(f"{spec.name}: profile {name} is a {behaviour}, not a {spec.kind}")
    if spec.unit_id is not None:
        protocol = {**(profile.get("protocol") or {}), "unit_id": spec.unit_id}
        profile = {**profile, "protocol": protocol}
    device = ProfileDevice(profile, spec.extra_tags)
    model: BehaviourModel
    if spec.kind == "vfd":
        model = _Adapted(VfdModel(seed=spec.seed), name)
    elif spec.kind == "meter":
        model = _Adapted(MeterModel(seed=spec.seed), name)
    else:
        model = CounterModel(device.tags.values())
    device.update(model.step(0.0))
    return device, model


def _profile_file(spec: SimDevice) -> Path:
    """A shipped profile's name, or a path to a profile file."""
    chosen = spec.profile or DEFAULT_PROFILES[spec.kind]
    if isinstance(chosen, str) and "/" not in chosen and not chosen.endswith(".yaml"):
        return profile_path(chosen)
    return Path(chosen)


class _Adapted:
    """A behaviour model whose values are renamed and recoded for one profile."""

    def __init__(self, model: BehaviourModel, profile: str) -> None:
        self.model = model
        self.profile = profile

    def step(self, dt: float) -> Mapping[str, Scalar]:
        return adapt(self.profile, self.model.step(dt))


class ScriptedModel:
    """A device that follows a :class:`Timeline`: run/fault words, piece counter, silence.

    A VFD's drive model is commanded (run, frequency, trip code) and its values
    recoded for the profile as usual, so each profile shows the script in its
    own run and fault words. The piece counter is written to ``counter_tag``
    wrapped into that tag's type; ``offline`` switches the device's fault to
    ``silent`` (connections stay open, requests get no answer) and back.
    Every read brings the scripted values up to the instant of the read.
    """

    def __init__(
        self,
        name: str,
        model: BehaviourModel,
        timeline: Timeline,
        device: ProfileDevice,
        faults: FaultSwitch,
        counter_tag: str | None,
    ) -> None:
        self.model = model
        self.timeline = timeline
        self.faults = faults
        inner = model.model if isinstance(model, _Adapted) else None
        self._vfd = inner if isinstance(inner, VfdModel) else None
        self._offline = False
        for index, step in enumerate(timeline.steps):
            if step.state is not None or step.mode is not None:
                raise TimelineError(
                    f"{name}: timeline step {index} sets a PackML state or mode; "
                    "only the packaging line has those"
                )
        self._tags: dict[str, TagSpec] = {}
        for role, tag in (("counter", timeline.counter_tag or counter_tag),
                          ("reject", timeline.reject_tag)):  # fmt: skip
            if tag is None:
                continue
            if tag not in device.tags:
                raise TimelineError(
                    f"{name}: the timeline's {role} tag {tag!r} is not a tag of "
                    f"{device.name} (add it with extra_tags)"
                )
            self._tags[role] = device.tags[tag]
        timeline.begin()

    def _scripted_values(self, state: Scripted) -> dict[str, Scalar]:
        values: dict[str, Scalar] = {}
        for role, count in (("counter", state.pieces), ("reject", state.rejects)):
            tag = self._tags.get(role)
            if tag is not None:
                raw = wrap(count, tag.type)
                plain = tag.scale == 1.0 and tag.offset == 0.0
                values[tag.name] = raw if plain else raw * tag.scale + tag.offset
        if state.offline != self._offline:
            self._offline = state.offline
            if state.offline:
                self.faults.set(FaultMode.SILENT)
            else:
                self.faults.clear()
        return values

    def step(self, dt: float) -> Mapping[str, Scalar]:
        state = self.timeline.advance()
        if self._vfd is not None:
            self._vfd.command(state.run, state.freq, state.fault)
        values = dict(self.model.step(dt))
        values.update(self._scripted_values(state))
        return values

    def refresh(self) -> Mapping[str, Scalar]:
        """The scripted values at this instant (a counter device's other tags hold still)."""
        if self._vfd is not None:
            return self.step(0.0)
        return self._scripted_values(self.timeline.advance())


def _endpoint_key(spec: SimDevice, index: int) -> tuple[Any, ...]:
    if spec.serial_port is not None:
        return ("serial", spec.serial_port)
    if spec.gateway is not None:
        return ("gateway", spec.gateway)
    return ("tcp", spec.host, spec.port or f"free-{index}")


def _make_endpoints(
    specs: Sequence[SimDevice],
) -> tuple[dict[str, RunningDevice], list[TcpEndpoint | SerialEndpoint]]:
    built = {spec.name: (spec, *build_device(spec), FaultSwitch()) for spec in specs}
    if len(built) != len(specs):
        raise ValueError("simulated device names must be unique")
    for name, (spec, device, model, switch) in list(built.items()):
        if spec.timeline is not None:
            scripted = ScriptedModel(
                name, model, spec.timeline, device, switch, COUNTER_TAGS.get(device.name)
            )
            device.refresh = lambda d=device, m=scripted: d.update(m.refresh())
            device.update(scripted.step(0.0))
            built[name] = (spec, device, scripted, switch)
    groups: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for index, spec in enumerate(specs):
        groups[_endpoint_key(spec, index)].append(spec.name)
    running: dict[str, RunningDevice] = {}
    endpoints: list[TcpEndpoint | SerialEndpoint] = []
    for names in groups.values():
        first = built[names[0]][0]
        devices = {built[n][1].unit_id: built[n][1] for n in names}
        if len(devices) != len(names):
            raise ValueError(f"devices {names} share an endpoint and a unit id")
        faults = {built[n][1].unit_id: built[n][3] for n in names}
        endpoint: TcpEndpoint | SerialEndpoint
        if first.serial_port is not None:
            endpoint = SerialEndpoint(
                devices, faults, first.serial_port, first.baudrate, first.parity, first.stopbits
            )
        else:
            endpoint = TcpEndpoint(devices, faults, first.host, first.port)
        endpoints.append(endpoint)
        for n in names:
            spec, device, model, switch = built[n]
            running[n] = RunningDevice(spec, device, model, switch, endpoint)
    return running, endpoints


async def _step_forever(sims: RunningSimulators, interval: float) -> None:
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(interval)
        now = loop.time()
        sims.step(now - last)
        last = now


@contextlib.asynccontextmanager
async def run_simulators(
    spec: Sequence[SimDevice], step_interval: float | None = 0.1
) -> AsyncIterator[RunningSimulators]:
    """Start every device, step the models every ``step_interval`` s, yield the handle.

    ``step_interval=None`` leaves stepping to the caller (``sims.step(dt)``),
    for tests that want registers to hold still.
    """
    running, endpoints = _make_endpoints(spec)
    sims = RunningSimulators(running)
    stepper: asyncio.Task[None] | None = None
    started: list[TcpEndpoint | SerialEndpoint] = []
    try:
        for endpoint in endpoints:
            await endpoint.start()
            started.append(endpoint)
        if step_interval is not None:
            stepper = asyncio.create_task(_step_forever(sims, step_interval), name="sim-stepper")
        yield sims
    finally:
        if stepper is not None:
            stepper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stepper
        for endpoint in reversed(started):
            await endpoint.close()


def standard_specs(
    vfd: int = 2,
    meter: int = 1,
    counter: int = 0,
    base_port: int = 0,
    host: str = "127.0.0.1",
    rtu_port: str | None = None,
    seed: int = 0,
) -> list[SimDevice]:
    """The usual demo set: ``motor-N`` VFDs, ``meter-N`` meters, ``counter-N`` devices.

    Each gets its own TCP port, ``base_port``, ``base_port + 1``... (0 = free
    ports), unit id 1. With ``rtu_port`` one more VFD, ``motor-rtu``, answers
    as unit 1 in Modbus RTU on that serial line (e.g. one end of a socat pty pair).
    """
    kinds = [("motor", "vfd")] * vfd + [("meter", "meter")] * meter
    kinds += [("counter", "counter")] * counter
    counts: dict[str, int] = defaultdict(int)
    specs = []
    for index, (prefix, kind) in enumerate(kinds):
        counts[prefix] += 1
        port = base_port + index if base_port else 0
        name = f"{prefix}-{counts[prefix]}"
        specs.append(SimDevice(name, kind, port=port, host=host, seed=seed + index))
    if rtu_port:
        specs.append(SimDevice("motor-rtu", "vfd", serial_port=rtu_port, seed=seed + len(kinds)))
    return specs
