"""``edge-agent demo``: a sample factory on one machine.

Starts simulated equipment on free ports, a local MQTT broker (unless
``--broker`` names one), and the agent of ``config/examples/garden-tools.yaml``
pointed at them, then shows live values and the agent's state until Ctrl-C or
``--duration`` seconds. The derived site file is written next to the demo's
data, so ``edge-agent status`` and ``edge-agent read -c`` work alongside.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from agent.buffer import Buffer
from agent.cli.demo_broker import local_broker
from agent.paths import SHIPPED_EXAMPLES, default_data_dir
from agent.private import private_dir, write_private
from agent.runtime.agent import Agent
from agent.site.loader import load_site
from agent.status.document import StatusDocument
from drivers.base import EditsAddress
from drivers.registry import spec_for
from simulators.factory import FactoryPorts, run_factory

EXAMPLE = SHIPPED_EXAMPLES / "garden-tools.yaml"
SHOWN_TAGS = 4


def demo_site(
    addresses: dict[str, str | int], host: str, port: int, data_dir: Path
) -> dict[str, Any]:
    """The example site, rewired to the simulated factory and broker of this demo."""
    site: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    site["agent"]["data_dir"] = str(data_dir)
    site["agent"]["id"] = "demo-" + site["agent"]["id"]
    site["mqtt"] = {**site.get("mqtt", {}), "host": host, "port": port}
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


@contextlib.asynccontextmanager
async def _broker(broker: str | None) -> AsyncIterator[tuple[str, int, str]]:
    if broker is None:
        async with local_broker() as found:
            yield found
        return
    host, _, port = broker.rpartition(":")
    yield host or "127.0.0.1", int(port), "given with --broker"


async def run_demo(broker: str | None, duration: float | None, data_dir: Path | None) -> int:
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
        site_file = data_dir / "demo-site.yaml"
        site = demo_site(factory.addresses, h, p, data_dir)
        write_private(site_file, yaml.safe_dump(site, sort_keys=False).encode())
        agent = Agent(load_site(site_file))
        console.print(f"[bold]edge-agent demo[/]: broker {h}:{p} ({what}); site {site_file}")
        for line in factory.lines:
            console.print(f"  simulator {line}")
        console.print(
            "  try: edge-agent status   |   mosquitto_sub -p "
            f"{p} -t 'edge/#' -v   |   Ctrl-C to stop"
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.request_stop)
        if duration is not None:
            loop.call_later(duration, agent.request_stop)
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
    left = (await asyncio.to_thread(Buffer.read_stats, agent.site.buffer_path)).pending_batches
    console.print(
        f"\ndemo stopped; {left} batches not yet published stay in {agent.site.buffer_path}"
    )
    return 0


def _view(doc: StatusDocument, agent: Agent) -> Any:
    from rich.console import Group
    from rich.table import Table

    broker, buffer = doc["broker"], doc["buffer"]
    link = "[green]connected[/]" if broker["connected"] else "[red]disconnected[/]"
    head = (
        f"agent {doc['agent']['id']}  up {doc['agent']['uptime_s']:.0f} s   broker {link}  "
        f"published {broker['messages_published']} msgs / {broker['values_published']} values"
        f"   buffer {buffer['pending_batches']} pending, {buffer['dropped_batches']} dropped, "
        f"seq {buffer['last_seq']}"
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
    return Group(head, table)


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def run_simulators(args: list[str]) -> int:
    """``edge-agent simulate ARGS``: simulated equipment alone; the exit code."""
    from simulators.__main__ import main as simulators_main

    return simulators_main(args)
