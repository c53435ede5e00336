"""``edge-agent read``: one read of some tags of one device, for commissioning."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from agent.site.loader import DeviceConfig
from drivers.base import DeviceUnavailable, Inspectable, Reading

READ_TIMEOUT_S = 30.0


async def read_once(device: DeviceConfig, tags: Sequence[str], raw: bool) -> tuple[Reading, Any]:
    """Connect, read the groups holding ``tags``, close. Raw details when asked and supported."""
    driver = device.spec.create(device.id, device.options)
    wanted = set(tags)
    groups = sorted({device.options.tags[t].group for t in wanted})
    merged = Reading(ts=0)
    details: Any = None
    async with asyncio.timeout(READ_TIMEOUT_S), driver:
        for group in groups:
            reading = await driver.read(group)
            merged.ts = reading.ts
            merged.values.update({k: v for k, v in reading.values.items() if k in wanted})
            merged.errors.update({k: v for k, v in reading.errors.items() if k in wanted})
        if raw and isinstance(driver, Inspectable):
            details = await driver.inspect(list(tags))
    return merged, details


def read_device(device: DeviceConfig, tags: Sequence[str], raw: bool) -> int:
    """Print one read of ``tags``; the exit code (1 when the device did not answer)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    try:
        reading, details = asyncio.run(read_once(device, tags, raw))
    except (DeviceUnavailable, TimeoutError, OSError) as exc:
        console.print(f"[red]{device.id}: no answer[/]: {exc or type(exc).__name__}")
        return 1
    table = Table("tag", "value", "unit", title=f"{device.id} ({device.kind})")
    for name in tags:
        unit = device.options.tags[name].unit or ""
        if name in reading.values:
            table.add_row(name, repr(reading.values[name]), unit)
        else:
            table.add_row(name, f"[red]{reading.errors.get(name, 'no value')}[/]", unit)
    console.print(table)
    if raw:
        _print_raw(console, details, device)
    return 0 if not reading.errors else 1


def _print_raw(console: Any, details: Any, device: DeviceConfig) -> None:
    from rich.table import Table

    if details is None:
        console.print(f"--raw: the {device.kind} driver has no raw view")
        return
    rows = [asdict(d) if is_dataclass(d) and not isinstance(d, type) else dict(d) for d in details]
    if not rows:
        return
    table = Table(*rows[0].keys(), title="raw")
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple) and value and all(isinstance(v, int) for v in value):
        return " ".join(f"{v:04X}" for v in value)
    if isinstance(value, dict):
        return "\n".join(f"{k}: {v!r}" for k, v in value.items())
    return repr(value) if not isinstance(value, str) else value
