"""The status of a running agent as plain text: head lines, where each device is, counters.

Standard library only: rich costs about 60 ms to import, and ``edge-agent
status`` must answer within 150 ms (bench S6). Colours are plain ANSI codes,
only on a terminal and never with ``NO_COLOR`` set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Final

from agent.status.document import ClockStatus, MachineStatus, StatusDocument

_CODES: Final = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33"}
_STATE: Final = {"connected": "green", "backoff": "yellow", "error": "red", "disabled": "dim"}
_CLOCK: Final = {"synced": "green", "unknown": "", "unsynced": "yellow", "unset": "red"}


def _link_lines(doc: StatusDocument, link: str, paint: _Paint) -> list[str]:
    """One line for the broker, or one per destination when there are several or a dialect."""
    broker = doc["broker"]
    dests = doc.get("destinations") or {}
    if len(dests) <= 1 and all(d["dialect"] == "edge-json" for d in dests.values()):
        return [
            f"broker {broker['host']}:{broker['port']} {link}, "
            f"{broker['messages_published']} messages / {broker['values_published']} values "
            f"published, {broker['reconnects']} reconnects"
            + (f", last error: {broker['last_error']}" if broker["last_error"] else "")
        ]
    lines = []
    for name, d in dests.items():
        if not d["connected"]:
            state = paint("disconnected", "red")
        elif not d["ready"]:
            state = paint("connected, waiting", "yellow")
        else:
            state = paint("connected", "green")
        age = d["oldest_pending_age_s"]
        lines.append(
            f"destination {paint(name, 'bold')} ({d['dialect']}) {d['host']}:{d['port']} "
            f"{state}, {d['messages_published']} batches / {d['values_published']} values "
            f"confirmed, {d['pending_batches']} pending"
            + ("" if age is None else f" (oldest {age} s)")
            + (f", {d['never_received']} never received" if d["never_received"] else "")
            + (f", {d['refused_by_cloud']} values refused" if d["refused_by_cloud"] else "")
            + (
                f", {d.get('refused_by_dialect', 0)} readings it cannot carry"
                if d.get("refused_by_dialect")
                else ""
            )
            + (f", last error: {d['last_error']}" if d["last_error"] else "")
        )
    return lines


def render(doc: StatusDocument, colour: bool | None = None) -> str:
    """The whole status as text; ``colour`` defaults to: stdout is a terminal, no NO_COLOR."""
    if colour is None:
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    paint = _Paint(colour)
    agent, broker, buffer = doc["agent"], doc["broker"], doc["buffer"]
    link = paint("connected", "green") if broker["connected"] else paint("disconnected", "red")
    age = buffer["oldest_pending_age_s"]
    lines = [
        f"{paint(agent['id'], 'bold')} edge-agent {agent['version']}, pid {agent['pid']}, "
        f"up {agent['uptime_s']:.0f} s, config {agent['config']}",
        *_link_lines(doc, link, paint),
        f"buffer {buffer['pending_batches']} batches pending "
        f"({buffer['pending_bytes']} bytes{'' if age is None else f', oldest {age} s'}), "
        f"{buffer['dropped_batches']} dropped, last seq {buffer['last_seq']}"
        + (
            f", {paint('disk full', 'red')}: {buffer.get('held_batches', 0)} batches wait in RAM"
            if buffer.get("disk_full")
            else ""
        ),
        _clock_line(doc["clock"], paint),
        "",
    ]
    devices = doc["devices"]
    where = [(n, d["endpoint"] or "-", d["profile"] or "-") for n, d in devices.items()]
    lines += grid(("device", "endpoint", "profile"), where)
    lines.append("")
    counters = [
        (
            name,
            dev["state"],
            "-" if dev["last_ok_age_s"] is None else f"{dev['last_ok_age_s']} s ago",
            str(dev["polls_ok"]),
            str(dev["polls_failed"]),
            f"{dev['values_per_second']:.1f}",
            dev["last_error"] or "",
        )
        for name, dev in devices.items()
    ]
    heads = ("device", "state", "last ok", "ok", "failed", "values/s", "last error")
    styles = [
        [_STATE.get(row[1], "") if i == 1 else "" for i in range(len(row))] for row in counters
    ]
    lines += grid(heads, counters, styles, paint)
    machines = doc.get("machines") or {}
    if machines:
        lines.append("")
        lines += grid(
            ("machine", "state", "for", "reason", "counts", "shift", "OEE"),
            [_machine_row(name, m) for name, m in machines.items()],
        )
    return "\n".join(lines) + "\n"


def _machine_row(name: str, m: MachineStatus) -> tuple[str, ...]:
    shift = m["shift"]
    oee = "-" if shift is None or shift["OEE"] is None else f"{shift['OEE'] * 100:.1f} %"
    counts = ", ".join(f"{role} {n}" for role, n in m["totals"].items()) or "-"
    if shift is not None:
        counts = f"good {shift['good']}, reject {shift['reject']}"
    return (
        name,
        m["state"] or "-",
        "-" if m["for_s"] is None else f"{m['for_s']:.0f} s",
        m["reason"] or "",
        counts,
        "-" if shift is None else shift["shift"],
        oee,
    )


def grid(
    heads: Sequence[str],
    rows: Sequence[Sequence[str]],
    styles: Sequence[Sequence[str]] | None = None,
    paint: _Paint | None = None,
) -> list[str]:
    """Columns padded to their widest cell, a rule under the heads; nothing is cut."""
    widths = [max(len(str(r[i])) for r in [heads, *rows]) for i in range(len(heads))]
    out = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for index, row in enumerate(rows):
        cells = []
        for col, (cell, width) in enumerate(zip(row, widths, strict=True)):
            style = styles[index][col] if styles else ""
            padded = cell.ljust(width)
            cells.append(paint(padded, style) if paint and style else padded)
        out.append("  ".join(cells).rstrip())
    return out


class _Paint:
    """``paint(text, style)``: the text in an ANSI style, or as it is when colour is off."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, text: str, style: str) -> str:
        if not self.on or not style:
            return text
        return f"\033[{_CODES[style]}m{text}\033[0m"


def _clock_line(clock: ClockStatus, paint: _Paint) -> str:
    state = clock["state"]
    text = f"clock {paint(state, _CLOCK[state])}"
    if clock["flagged_readings"]:
        text += f", {clock['flagged_readings']} readings flagged"
    if clock["last_step_s"] is not None:
        text += f", last stepped by {clock['last_step_s']:+.1f} s"
    return text
