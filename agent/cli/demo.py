"""``edge-agent demo``: a sample factory on one machine.

Starts simulated equipment on free ports, a local MQTT broker (unless
``--broker`` names one), and the agent of ``config/examples/garden-tools.yaml``
pointed at them, then shows live values and the agent's state until Ctrl-C or
``--duration`` seconds. The derived site file is written next to the demo's
data, so ``edge-agent status`` and ``edge-agent read -c`` work alongside.

The agent speaks one dialect (``--dialect``, edge-json by default) and, with
``--also``, more: each is one destination on the same broker, with its own
client id (``edge-agent-<agent>`` and ``edge-agent-<agent>-<id>``). Alibaba's
and Huawei's dialects are left out: they sign their logins for the vendor's
own brokers, which a local broker cannot stand in for. ``--outage`` has a
simulated Modbus machine stop answering for a while, to see what a dialect
says of a device that goes offline and comes back (a Sparkplug DDEATH, then
a DBIRTH).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from agent.buffer import Buffer
from agent.cli.demo_broker import local_broker
from agent.errors import DemoError
from agent.north.destination import DEFAULT_ID
from agent.paths import SHIPPED_EXAMPLES, default_data_dir
from agent.private import private_dir, write_private
from agent.runtime.agent import Agent
from agent.site.loader import load_site
from agent.status.document import StatusDocument
from drivers.base import EditsAddress
from drivers.registry import spec_for
from simulators.factory import Factory, FactoryPorts, run_factory
from simulators.faults import FaultMode

EXAMPLE = SHIPPED_EXAMPLES / "garden-tools.yaml"
SHOWN_TAGS = 4

DEMO_DIALECTS: Final = ("edge-json", "sparkplug-b", "thingsboard")
"""The dialects a local broker can stand in for."""
CLOUD_ONLY: Final = ("alink", "iotda")
"""Dialects whose signed logins only the vendor's brokers accept."""
DESTINATION_IDS: Final = {
    "edge-json": DEFAULT_ID,
    "sparkplug-b": "sparkplug",
    "thingsboard": "thingsboard",
}
"""The id of each dialect's destination in the demo's site file."""
SPARKPLUG_GROUP: Final = "demo"
"""The Sparkplug group of the demo's Edge Node (the node id is the agent id)."""
TB_TOKEN_FILE: Final = "thingsboard-token"  # noqa: S105 - a file name, not a secret
"""The ThingsBoard access token file, next to the demo's site file (a local broker takes any)."""


def demo_dialects(dialect: str, also: Sequence[str] = ()) -> tuple[str, ...]:
    """The dialects of the demo's destinations, ``dialect`` first; ``ValueError`` if refused."""
    chosen = (dialect, *also)
    for name in chosen:
        if name in CLOUD_ONLY:
            raise ValueError(
                f"{name} needs the vendor's cloud: its gateway signs in to the vendor's own "
                "broker, which the demo's local broker cannot stand in for"
            )
        if name not in DEMO_DIALECTS:
            raise ValueError(f"unknown dialect {name!r}: choose {', '.join(DEMO_DIALECTS)}")
    repeated = sorted({n for n in chosen if chosen.count(n) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} given twice: one destination per dialect")
    return chosen


@dataclass(frozen=True, slots=True)
class Outage:
    """A simulated machine that stops answering for a while: ``--outage DEVICE=AT+FOR``."""

    device: str
    at_s: float
    """Seconds after the agent starts (the clock of ``--duration``)."""
    for_s: float
    """How long it stays silent."""

    @classmethod
    def parse(cls, text: str) -> Outage:
        """``saw-motor-2=20+10``: silent from 20 s after the start, for 10 s."""
        device, _, when = text.partition("=")
        at, _, length = when.partition("+")
        try:
            at_s, for_s = float(at), float(length)
        except ValueError:
            at_s = for_s = math.nan
        if not device or not (math.isfinite(at_s) and math.isfinite(for_s)):
            raise ValueError(f"--outage {text!r}: expected DEVICE=AT+FOR, e.g. saw-motor-2=20+10")
        if at_s < 0 or for_s <= 0:
            raise ValueError(f"--outage {text!r}: AT must be 0 or more, FOR more than 0")
        return cls(device, at_s, for_s)


def listen_command(dialect: str, host: str, port: int) -> str:
    """The ``edge-agent listen`` command line that shows one demo destination's messages."""
    command = f"edge-agent listen --broker {host}:{port}"
    return command if dialect == "edge-json" else f"{command} --dialect {dialect}"


def demo_site(
    addresses: dict[str, str | int],
    host: str,
    port: int,
    data_dir: Path,
    dialects: Sequence[str] = ("edge-json",),
) -> dict[str, Any]:
    """The example site, rewired to the simulated factory and broker of this demo.

    edge-json is the ``mqtt`` section; every other dialect is a ``north:``
    entry on the same broker (id from :data:`DESTINATION_IDS`). Without
    edge-json the ``mqtt`` section is left out, so it is not published to.
    """
    site: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    site["agent"]["data_dir"] = str(data_dir)
    site["agent"]["id"] = "demo-" + site["agent"]["id"]
    site["mqtt"] = {**site.get("mqtt", {}), "host": host, "port": port}
    if "edge-json" not in dialects:
        del site["mqtt"]
    north = [_north_entry(d, host, port) for d in dialects if d != "edge-json"]
    if north:
        site["north"] = north
    for device in site["devices"]:
        kind, connection = next(iter(device["connection"].items()))
        spec = spec_for(kind)
        if not isinstance(spec, EditsAddress):
            raise TypeError(f"the demo cannot place a {kind} device")
        address = addresses[device["id"]]
        # The simulated factory gives a TCP device its port on this machine.
        where = f"127.0.0.1:{address}" if isinstance(address, int) else address
        spec.set_address(kind, connection, where)
    return site


def _north_entry(dialect: str, host: str, port: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": DESTINATION_IDS[dialect],
        "dialect": dialect,
        "host": host,
        "port": port,
    }
    if dialect == "sparkplug-b":
        entry["sparkplug"] = {"group_id": SPARKPLUG_GROUP}
    elif dialect == "thingsboard":
        entry["thingsboard"] = {"access_token_file": TB_TOKEN_FILE}
    return entry


def _schedule_outages(factory: Factory, outages: Sequence[Outage]) -> list[asyncio.TimerHandle]:
    """Silence each outage's machine at its time and bring it back; the timers."""
    loop = asyncio.get_running_loop()
    timers = []
    for outage in outages:
        switch = factory.faults[outage.device]
        timers.append(loop.call_later(outage.at_s, switch.set, FaultMode.SILENT))
        timers.append(loop.call_later(outage.at_s + outage.for_s, switch.clear))
    return timers


@contextlib.asynccontextmanager
async def _broker(broker: str | None) -> AsyncIterator[tuple[str, int, str]]:
    if broker is None:
        async with local_broker() as found:
            yield found
        return
    host, _, port = broker.rpartition(":")
    yield host or "127.0.0.1", int(port), "given with --broker"


async def run_demo(
    broker: str | None,
    duration: float | None,
    data_dir: Path | None,
    dialects: Sequence[str] = ("edge-json",),
    outages: Sequence[Outage] = (),
) -> int:
    """Run the demo; the exit code."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    data_dir = data_dir or default_data_dir() / "demo"
    # The demo's own files are private from the start: a warning about a file it wrote
    # itself ("readable by every user") is one a newcomer cannot act on.
    private_dir(data_dir, "the demo's data dir")
    ports = FactoryPorts(serial_dir=data_dir / "serial")
    async with run_factory(ports) as factory, _broker(broker) as (h, p, what):
        unknown = sorted({o.device for o in outages} - set(factory.faults))
        if unknown:
            raise DemoError(
                f"--outage {', '.join(unknown)}: only the Modbus machines can be silenced "
                f"({', '.join(factory.faults)})"
            )
        site_file = data_dir / "demo-site.yaml"
        site = demo_site(factory.addresses, h, p, data_dir, dialects)
        if "thingsboard" in dialects:
            write_private(data_dir / TB_TOKEN_FILE, b"demo-gateway-token\n")
        write_private(site_file, yaml.safe_dump(site, sort_keys=False).encode())
        agent = Agent(load_site(site_file))
        console.print(f"[bold]edge-agent demo[/]: broker {h}:{p} ({what}); site {site_file}")
        for line in factory.lines:
            console.print(f"  simulator {line}")
        for outage in outages:
            console.print(
                f"  outage: {outage.device} stops answering {outage.at_s:g} s after the "
                f"start, for {outage.for_s:g} s"
            )
        for dialect in dialects:
            console.print(
                f"  watch {DESTINATION_IDS[dialect]} ({dialect}): {listen_command(dialect, h, p)}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if "sparkplug-b" in dialects:
            console.print("  (a listener started now learns the Sparkplug names at the next birth)")
        console.print("  try: edge-agent status   |   Ctrl-C to stop")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.request_stop)
        if duration is not None:
            loop.call_later(duration, agent.request_stop)
        timers = _schedule_outages(factory, outages)
        running = asyncio.create_task(agent.run(), name="agent")
        ready = asyncio.create_task(agent.ready.wait())
        await asyncio.wait([running, ready], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while agent.ready.is_set():
                live.update(_view(await agent.snapshot(), agent))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(running), timeout=1.0)
        await running
        for timer in timers:
            timer.cancel()
    left = (await asyncio.to_thread(Buffer.read_stats, agent.site.buffer_path)).pending_batches
    console.print(
        f"\ndemo stopped; {left} batches not yet published stay in {agent.site.buffer_path}"
    )
    return 0


def _view(doc: StatusDocument, agent: Agent) -> Any:
    from rich.console import Group
    from rich.table import Table

    buffer = doc["buffer"]
    links = []
    for dest_id, dest in doc.get("destinations", {}).items():
        link = "[green]connected[/]" if dest["connected"] else "[red]disconnected[/]"
        links.append(
            f"  {dest_id} ({dest['dialect']}) {link}, published {dest['messages_published']} "
            f"batches / {dest['values_published']} values, {dest['pending_batches']} pending"
        )
    head = (
        f"agent {doc['agent']['id']}  up {doc['agent']['uptime_s']:.0f} s   "
        f"buffer {buffer['pending_batches']} pending, {buffer['dropped_batches']} dropped, "
        f"seq {buffer['last_seq']}\n" + "\n".join(links)
    )
    table = Table("device", "state", "polls ok/failed", "values/s", "latest values")
    for poller in agent.pollers:
        dev = doc["devices"][poller.device.id]
        latest = poller.stats.last_values
        shown = ", ".join(
            f"{k}={_fmt(v)}{poller.device.options.tags[k].unit or ''}"
            for k, v in list(latest.items())[:SHOWN_TAGS]
        )
        table.add_row(
            poller.device.id,
            dev["state"],
            f"{dev['polls_ok']}/{dev['polls_failed']}",
            f"{dev['values_per_second']:.1f}",
            shown or (dev["last_error"] or ""),
        )
    machines = doc.get("machines") or {}
    if not machines:
        return Group(head, table)
    facts = Table("machine", "state", "for", "pieces (good / reject)", "shift", "OEE", "A / P / Q")
    for name, m in machines.items():
        shift = m["shift"]
        state = m["state"] or "-"
        if m["reason"]:
            state += f" ({m['reason']})"
        pieces = ", ".join(f"{role} {n}" for role, n in m["totals"].items()) or "-"
        if shift is not None:
            pieces = f"{shift['total']} ({shift['good']} / {shift['reject']})"
        facts.add_row(
            name,
            state,
            "-" if m["for_s"] is None else f"{m['for_s']:.0f} s",
            pieces,
            "-" if shift is None else shift["shift"],
            "-" if shift is None else _pct(shift["OEE"]),
            "-" if shift is None else " / ".join(_pct(shift[k]) for k in ("A", "P", "Q")),
        )
    return Group(head, table, facts)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def run_simulators(args: list[str]) -> int:
    """``edge-agent simulate ARGS``: simulated equipment alone; the exit code."""
    from simulators.__main__ import main as simulators_main

    return simulators_main(args)
