"""``edge-agent report``: what the box computed for one shift, read from its own buffer.

For the contractor checking a commissioning: per machine the states timeline,
the pieces, OEE with its flags, and the energy per part, exactly as the box
sent them (the facts history of the buffer file, ``facts`` table). Works
whether the agent runs or not; never writes the file.

The shift is ``--shift YYYY-MM-DD/name``; without it, the latest shift the
history has figures for. A shift's figures are its last summary (the highest
revision) or, while it runs, its latest running figure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import typer

from agent.cli.common import EXIT_INPUT, EXIT_RUNTIME, fail, load_site_or_exit
from agent.errors import StorageError


def report(config: Path, shift: str | None, machine: str | None, as_json: bool) -> None:
    """Print the report (see the module docstring); exit 1 when there is nothing to show."""
    site = load_site_or_exit(config)
    if shift is not None and "/" not in shift:
        fail(f"--shift {shift!r}: write it DATE/NAME, e.g. 2026-12-07/day", EXIT_INPUT)
    from agent.buffer import Buffer

    try:
        rows = Buffer.read_facts(site.buffer_path)
    except StorageError as exc:
        fail(str(exc), EXIT_RUNTIME)
    events = [orjson.loads(r.body) | {"source": r.source} for r in rows]
    doc = build(events, shift, machine)
    if doc is None:
        wanted = f"shift {shift}" if shift else "any shift"
        fail(f"the buffer {site.buffer_path} holds no figures for {wanted} yet", EXIT_RUNTIME)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        typer.echo(render(doc))


def build(
    events: Sequence[dict[str, Any]], shift: str | None, machine: str | None = None
) -> dict[str, Any] | None:
    """The report document for ``shift`` (None: the latest with figures), or None."""
    shifts = [e for e in events if e["type"] == "shift" and (machine in (None, e["source"]))]
    if not shifts:
        return None
    key = shift or max(shifts, key=lambda e: (e["start_ms"], e["ts"]))["shift"]
    mine = [e for e in shifts if e["shift"] == key]
    if not mine:
        return None
    start, end = mine[0]["start_ms"], mine[0]["end_ms"]
    machines: dict[str, Any] = {}
    for name in sorted({e["source"] for e in mine}):
        figures = _figures([e for e in mine if e["source"] == name])
        machines[name] = {
            "figures": figures,
            "states": _timeline(events, name, start, end),
            "alarms": [
                e
                for e in events
                if e["source"] == name and e["type"] == "alarm" and start <= e["ts"] < end + 1
            ],
            "counter_gaps": [
                e
                for e in events
                if e["source"] == name and e["type"] == "counter_gap" and start <= e["ts"] <= end
            ],
        }
    return {
        "shift": key,
        "start_ms": start,
        "end_ms": end,
        "machines": machines,
        "all": _rollup([m["figures"] for m in machines.values()]),
    }


def _rollup(figures: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The machines' figures summed (times, pieces, ideal times; never averaged ratios),
    None for one machine or machines computed by different methods."""
    from agent.compute.oee import Figures, rollup

    if len(figures) < 2:
        return None
    parts = []
    for f in figures:
        ms = {
            f"{k}_ms": round(f[f"{k}_s"] * 1000)
            for k in ("planned", "run", "micro_stop", "down", "unknown", "planned_down",
                      "run_outside_planned")
        }  # fmt: skip
        cycle_ms = f["ideal_cycle_s"] * 1000
        parts.append(
            Figures(
                method=f["method"],
                unknown_time=f["unknown_time"],
                total=f["total"],
                good=f["good"],
                reject=f["reject"],
                ideal_total_ms=cycle_ms * f["total"],
                ideal_good_ms=cycle_ms * f["good"],
                counts_incomplete=bool(f["counts_incomplete"]),
                **ms,
            )
        )
    try:
        return rollup(parts).to_dict()
    except ValueError:  # common and iso22400 figures do not add up
        return None


def _figures(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    finals = [e for e in summaries if e.get("final")]
    if finals:
        best = max(finals, key=lambda e: (e["revision"], e["ts"]))
    else:
        best = max(summaries, key=lambda e: e["ts"])
    return {k: v for k, v in best.items() if k not in ("type", "id", "source")}


def _timeline(events: Sequence[dict[str, Any]], name: str, start: int, end: int) -> list[Any]:
    """Each state interval reaching into the shift once: its last word (closing if sent)."""
    last: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["source"] == name and e["type"] == "state":
            last[e["id"]] = e
    keys = ("state", "reason", "mode", "planned_downtime", "start", "end")
    return [
        {k: e[k] for k in keys}
        for e in sorted(last.values(), key=lambda e: e["start"])
        if e["start"] < end and (e["end"] is None or e["end"] > start) and e["end"] != e["start"]
    ]


def render(doc: dict[str, Any]) -> str:
    """The report as text."""
    lines = [f"shift {doc['shift']}: {_local(doc['start_ms'])} .. {_local(doc['end_ms'])}", ""]
    every = doc.get("all")
    if every is not None:
        lines += [
            f"all machines: pieces {every['total']} (good {every['good']}),"
            f" A {_pct(every['A'])}  P {_pct(every['P'])}  Q {_pct(every['Q'])}"
            f"  OEE {_pct(every['OEE'])}  coverage {_pct(every['coverage'])}",
            "",
        ]
    for name, m in doc["machines"].items():
        f = m["figures"]
        status = "final" if f.get("final") else f"running, as of {_local(f['as_of_ms'])}"
        revision = f" (revision {f['revision']})" if f.get("revision") else ""
        lines.append(f"{name}: {status}{revision}")
        lines.append(
            f"  planned {_hm(f['planned_s'])}, run {_hm(f['run_s'])}, down {_hm(f['down_s'])},"
            f" micro-stops {_hm(f['micro_stop_s'])}, unknown {_hm(f['unknown_s'])}"
        )
        lines.append(f"  pieces {f['total']} (good {f['good']}, reject {f['reject']})")
        lines.append(
            f"  A {_pct(f['A'])}  P {_pct(f['P'])}  Q {_pct(f['Q'])}  OEE {_pct(f['OEE'])}"
            f"  coverage {_pct(f['coverage'])}"
            + ("  performance above 100 %" if f.get("performance_over_100") else "")
            + (
                f"  counts incomplete ({', '.join(f.get('count_reasons', []))})"
                if f.get("counts_incomplete")
                else ""
            )
        )
        energy = f.get("energy")
        if energy:
            lines.append(
                f"  energy {energy['kwh']} kWh, per good part {energy['kwh_per_good']} kWh,"
                f" per part {energy['kwh_per_total']} kWh"
                + ("" if energy["complete"] else " (not complete)")
            )
        for s in m["states"]:
            until = "now" if s["end"] is None else _local(s["end"])
            why = f" ({s['reason']})" if s["reason"] else ""
            lines.append(f"    {_local(s['start'])} .. {until}  {s['state']}{why}")
        lines.extend(
            f"    alarm {a['name']} {'raised' if a['active'] else 'cleared'} at {_local(a['ts'])}"
            for a in m["alarms"]
        )
        lines.extend(
            f"    counter {g['counter']}: pieces unknown {_local(g['from'])} .. {_local(g['to'])}"
            for g in m["counter_gaps"]
        )
        lines.append("")
    return "\n".join(lines)


def _local(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _hm(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"
