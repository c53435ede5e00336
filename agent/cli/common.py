"""What every command shares, without the CLI framework: exit codes, failing
with one line, loading a site file or exiting, the summary of a valid site.

Typer-free on purpose: the fast ``run``/``status`` paths of
:mod:`agent.cli.main` and the typer commands both use it, and nothing here
imports :mod:`agent.cli.app`, so no command module depends on the app that
registers it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

if TYPE_CHECKING:
    from agent.compute.plan import MachinePlan
    from agent.site.loader import Site
    from agent.site.models import MqttSection
    from agent.site.source import Problem

EXIT_OK: Final = 0
EXIT_RUNTIME: Final = 1
"""Something failed while running: a device, the broker, no agent answering."""
EXIT_INPUT: Final = 2
"""Bad input: an invalid site file, an unknown device or option."""


def fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    """Print ``edge-agent: MESSAGE`` on stderr and exit with ``code``."""
    sys.stderr.write(f"edge-agent: {message}\n")
    raise SystemExit(code)


def load_site_errors(config: Path, *, machines: bool = False) -> Site | int:
    """Load a site file; on problems print each one and return the exit code 2.

    ``machines``: also build the machines of ``analytics:`` (what ``run`` needs),
    so a rule the computing core refuses is a located problem before anything starts.
    """
    from agent.site.loader import load_site
    from agent.site.source import ConfigFileError

    try:
        site = load_site(config)
        if machines:
            from agent.runtime.machines import plan_machines

            plan_machines(site)
    except ConfigFileError as exc:
        return report_problems(config, exc.problems)
    return site


def report_problems(config: Path, problems: list[Problem]) -> int:
    """Print each problem of ``config`` and the count on stderr; the exit code 2."""
    for problem in problems:
        sys.stderr.write(f"{problem}\n")
    n = len(problems)
    sys.stderr.write(f"{config}: {n} problem{'s' if n != 1 else ''}, nothing was started\n")
    return EXIT_INPUT


def load_site_or_exit(config: Path, *, machines: bool = False) -> Site:
    """Load a site file; print every problem and exit 2 if it is invalid."""
    site = load_site_errors(config, machines=machines)
    if isinstance(site, int):
        raise SystemExit(site)
    return site


def print_summary(config: Path, site: Site, machines: tuple[MachinePlan, ...] = ()) -> None:
    """What ``validate`` prints for a valid site: devices, profiles, overrides, lines, machines."""
    from agent.site.permissions import readable_by_others

    out = sys.stdout
    n_tags = sum(len(d.options.tags) for d in site.devices)
    where = (
        f"broker {site.mqtt.host}:{site.mqtt.port}"
        if not site.north
        else f"{len(site.north) + site.mqtt_is_destination} destinations"
    )
    out.write(
        f"{config}: valid: agent {site.agent.id}, {len(site.devices)} devices, "
        f"{n_tags} tags, {where}\n"
    )
    for line in destination_lines(site) if site.north else []:
        out.write(f"  {line}\n")
    for device in site.devices:
        profile = f"{device.profile}@{device.profile_hash}" if device.profile else "(no profile)"
        state = "" if device.enabled else " (disabled)"
        tags = len(device.options.tags)
        out.write(f"  {device.id}: {device.kind}, {profile}, {tags} tags{state}\n")
        for change in device.changes:
            out.write(f"    override: {change}\n")
    for use in site.links:
        out.write(
            f"  serial line {use.link}: {use.baud} baud, {use.utilisation:.0%} used by "
            f"{', '.join(use.devices)}\n"
        )
    for line in machine_lines(site, machines):
        out.write(f"  {line}\n")
    out.flush()
    for warning in [*site.warnings, *readable_by_others(site)]:
        sys.stderr.write(f"warning: {warning}\n")


def destination_lines(site: Site) -> list[str]:
    """One line per destination: id, dialect, broker and what names the agent there."""
    lines = []
    if site.mqtt_is_destination:
        lines.append(f"destination mqtt: edge-json, broker {_broker(site.mqtt)}")
    for dest in site.north:
        text = f"destination {dest.id}: {dest.dialect}, broker {_broker(dest)}"
        if dest.sparkplug is not None:
            node = dest.sparkplug.edge_node_id or site.agent.id
            text += f", edge node {dest.sparkplug.group_id}/{node}"
            if dest.sparkplug.primary_host:
                text += f", primary host {dest.sparkplug.primary_host}"
        elif dest.alink is not None:
            text += f", gateway {dest.alink.product_key}/{dest.alink.device_name}"
            text += f", sub-devices: {len(dest.alink.subdevices)}"
        elif dest.iotda is not None:
            text += f", gateway {dest.iotda.gateway_id}, sub-devices: {len(dest.iotda.subdevices)}"
        lines.append(text)
    return lines


def _broker(section: MqttSection) -> str:
    return f"{section.host}:{section.port}" + (" (TLS)" if section.tls is not None else "")


def machine_lines(site: Site, machines: tuple[MachinePlan, ...]) -> list[str]:
    """One line per machine: where its state comes from, counters, calendar, meter."""
    calendars = {m.id: m.calendar for m in site.analytics.machines} if site.analytics else {}
    lines = []
    for plan in machines:
        parts = [_state_text(plan)]
        counters = [f"{c.role} {c.source} {c.spec.width}" for c in plan.counters]
        parts.append("counters " + ", ".join(counters) if counters else "no counters")
        calendar = calendars.get(plan.name)
        if plan.calendar is not None and calendar is not None:
            shifts = ", ".join(s.name for s in plan.calendar.shifts)
            parts.append(f"calendar {calendar} ({shifts}; {plan.calendar.timezone})")
        else:
            parts.append("no calendar")
        if plan.oee is not None:
            parts.append(f"OEE ideal cycle {plan.oee.ideal_cycle_s:g}s")
        if plan.energy is not None:
            parts.append(f"meter {plan.energy.source} ({plan.energy.register})")
        if plan.alarms:
            parts.append(f"alarms {', '.join(a.name for a in plan.alarms)}")
        lines.append(f"machine {plan.name}: " + ", ".join(parts))
    return lines


def _state_text(plan: MachinePlan) -> str:
    from agent.compute.state import Rules

    spec = plan.state
    if spec is None:
        return "no state"
    names = sorted(spec.source.inputs)
    devices = sorted({plan.inputs[n].device for n in names if n in plan.inputs})
    how = (
        "rules over " + ", ".join(names) if isinstance(spec.source, Rules) else f"map of {names[0]}"
    )
    mode = f"; mode {spec.mode.tag}" if spec.mode is not None else ""
    offline = f"; offline after {spec.offline_after_ms / 1000:g}s"
    return f"state from {', '.join(devices)} ({how}{mode}{offline})"
