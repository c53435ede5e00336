"""``edge-agent status``: find the agent, ask it, print a table or JSON.

Without ``-c`` it finds agents through the pointer files that running agents
write (see :mod:`agent.paths`). With no agent running it says so, exits 1, and
still shows the buffer it finds on disk, so staff can see what is waiting.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from agent.errors import UnsafePath
from agent.paths import AgentPointer, default_data_dir, read_pointers
from agent.status.client import query, query_metrics
from agent.status.document import (
    Answer,
    ClockStatus,
    OfflineAgent,
    OfflineReport,
    StatusDocument,
    buffer_status,
    error_of,
    is_status,
)


def show(config: Path | None, as_json: bool) -> int:
    """Print the status of the agent(s); the exit code."""
    targets = _targets(config)
    if isinstance(targets, int):
        return targets
    documents: list[Answer] = []
    offline: list[tuple[str, Path]] = []
    for agent_id, socket_path, buffer_path in targets:
        try:
            documents.append(query(socket_path))
        except (OSError, ValueError):
            offline.append((agent_id, buffer_path))
    if not documents:
        return _show_offline(offline, as_json)
    broken = [d for d in documents if not is_status(d)]
    if as_json:
        sys.stdout.write(
            json.dumps(documents[0] if len(documents) == 1 else documents, indent=2) + "\n"
        )
    else:
        for doc in documents:
            if is_status(doc):
                _print_table(doc)
            else:
                sys.stdout.write(f"the agent is running but answered: {error_of(doc)}\n")
    return 1 if broken else 0


def show_metrics(config: Path | None) -> int:
    """Print the Prometheus text of the running agent(s); 1 when none answers."""
    targets = _targets(config)
    if isinstance(targets, int):
        return targets
    answered = 0
    for agent_id, socket_path, _ in targets:
        try:
            text = query_metrics(socket_path)
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"edge-agent: no metrics from agent {agent_id}: {exc}\n")
            continue
        if len(targets) > 1:  # several agents on one box: say whose lines follow
            sys.stdout.write(f"# edge-agent {agent_id}\n")
        sys.stdout.write(text)
        answered += 1
    return 0 if answered else 1


def watch(config: Path | None, interval: float) -> int:
    """Redraw the status every ``interval`` seconds until Ctrl-C; the last exit code."""
    from rich.console import Console

    console = Console()
    code = 0
    try:
        while True:
            console.clear()
            code = show(config, as_json=False)
            time.sleep(interval)
    except KeyboardInterrupt:
        return code


def _targets(config: Path | None) -> list[tuple[str, Path, Path]] | int:
    if config is not None:
        from agent.cli.common import load_site_or_exit

        site = load_site_or_exit(config)
        return [(site.agent.id, site.status_socket, site.buffer_path)]
    try:
        pointers = read_pointers()
    except UnsafePath as exc:  # pointers another account could have planted: trust none
        sys.stderr.write(f"edge-agent status: {exc}; or give -c SITE_FILE\n")
        return 1
    alive = [p for p in pointers if p.alive()]
    chosen: list[AgentPointer] = alive or pointers
    if chosen:
        return [(p.agent_id, Path(p.socket), Path(p.buffer)) for p in chosen]
    default = default_data_dir()
    return [("(default)", default / "status.sock", default / "buffer.db")]


def _show_offline(offline: list[tuple[str, Path]], as_json: bool) -> int:
    from agent.buffer import Buffer
    from agent.errors import StorageError

    report: OfflineReport = {"running": False, "agents": []}
    now = int(time.time() * 1000)
    for agent_id, buffer_path in offline:
        entry: OfflineAgent = {"id": agent_id}
        try:
            entry["buffer"] = buffer_status(Buffer.read_stats(buffer_path), str(buffer_path), now)
        except StorageError as exc:
            entry["buffer_error"] = str(exc)
        report["agents"].append(entry)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 1
    sys.stdout.write("no agent is running\n")
    for entry in report["agents"]:
        if "buffer" in entry:
            b = entry["buffer"]
            sys.stdout.write(
                f"  {entry['id']}: buffer {b['path']}: {b['pending_batches']} batches pending "
                f"({b['pending_bytes']} bytes, oldest {b['oldest_pending_age_s']} s), "
                f"{b['dropped_batches']} dropped, last seq {b['last_seq']}\n"
            )
        else:
            sys.stdout.write(f"  {entry['id']}: {entry['buffer_error']}\n")
    return 1


def _print_table(doc: StatusDocument) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    agent, broker, buffer = doc["agent"], doc["broker"], doc["buffer"]
    console.print(
        f"[bold]{agent['id']}[/] edge-agent {agent['version']}, pid {agent['pid']}, "
        f"up {agent['uptime_s']:.0f} s, config {agent['config']}"
    )
    link = "[green]connected[/]" if broker["connected"] else "[red]disconnected[/]"
    console.print(
        f"broker {broker['host']}:{broker['port']} {link}, "
        f"{broker['messages_published']} messages / {broker['values_published']} values "
        f"published, {broker['reconnects']} reconnects"
        + (f", last error: {broker['last_error']}" if broker["last_error"] else "")
    )
    age = buffer["oldest_pending_age_s"]
    console.print(
        f"buffer {buffer['pending_batches']} batches pending "
        f"({buffer['pending_bytes']} bytes{'' if age is None else f', oldest {age} s'}), "
        f"{buffer['dropped_batches']} dropped, last seq {buffer['last_seq']}"
        + (
            f", [red]disk full[/]: {buffer.get('held_batches', 0)} batches wait in RAM"
            if buffer.get("disk_full")
            else ""
        )
    )
    console.print(_clock_line(doc["clock"]))
    table = Table("device", "state", "last ok", "ok", "failed", "values/s", "last error")
    colour = {"connected": "green", "backoff": "yellow", "error": "red", "disabled": "dim"}
    for name, dev in doc["devices"].items():
        state = dev["state"]
        table.add_row(
            name,
            f"[{colour.get(state, 'white')}]{state}[/]",
            "-" if dev["last_ok_age_s"] is None else f"{dev['last_ok_age_s']} s ago",
            str(dev["polls_ok"]),
            str(dev["polls_failed"]),
            f"{dev['values_per_second']:.1f}",
            dev["last_error"] or "",
        )
    console.print(table)


def _clock_line(clock: ClockStatus) -> str:
    state = clock["state"]
    colour = {"synced": "green", "unknown": "white", "unsynced": "yellow", "unset": "red"}[state]
    text = f"clock [{colour}]{state}[/]"
    if clock["flagged_readings"]:
        text += f", {clock['flagged_readings']} readings flagged"
    if clock["last_step_s"] is not None:
        text += f", last stepped by {clock['last_step_s']:+.1f} s"
    return text
