"""``edge-agent buffer stats|export|purge``: look after the buffer file on a box.

All three work whether the agent runs or not: ``stats`` and ``export`` only
read, and ``purge`` is one transaction that the running agent's writer sees
at its next commit. Purged batches count as dropped, and ``seq`` goes on from
where it was, so consumers see an explained gap rather than reused numbers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

buffer_app = typer.Typer(
    name="buffer",
    help="Inspect, export or empty the local buffer (works with or without a running agent).",
    no_args_is_help=True,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Site file (YAML).")]
EXIT_RUNTIME = 1


def _buffer_path(config: Path) -> Path:
    from agent.cli.common import load_site_or_exit

    return load_site_or_exit(config).buffer_path


def _fail(message: str) -> None:
    typer.echo(f"edge-agent: {message}", err=True)
    raise typer.Exit(EXIT_RUNTIME)


@buffer_app.command()
def stats(
    config: ConfigOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pending batches and bytes, the oldest pending age, dropped batches, file size."""
    from agent.buffer import Buffer
    from agent.errors import StorageError

    path = _buffer_path(config)
    try:
        s = Buffer.read_stats(path)
    except StorageError as exc:
        _fail(str(exc))
        return
    oldest = s.oldest_created_ms
    data = {
        "path": str(path),
        "pending_batches": s.pending_batches,
        "pending_bytes": s.pending_bytes,
        "oldest_pending_age_s": None if oldest is None else round(time.time() - oldest / 1000, 1),
        "dropped_batches": s.dropped_batches,
        "last_seq": s.last_seq,
        "file_bytes": s.file_bytes,
        "max_bytes": s.max_bytes,
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        typer.echo(f"{key:<{width}}  {'-' if value is None else value}")


@buffer_app.command()
def export(
    config: ConfigOpt,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Write every pending batch as JSON lines, each line the exact MQTT payload, in seq order."""
    from agent.buffer import export_pending
    from agent.errors import StorageError

    path = _buffer_path(config)
    out = sys.stdout.buffer if output is None else output.open("wb")
    n = 0
    try:
        for payload in export_pending(path):
            out.write(payload + b"\n")
            n += 1
    except StorageError as exc:
        _fail(str(exc))
    finally:
        if output is not None:
            out.close()
        else:
            out.flush()
    typer.echo(f"{n} pending batches exported from {path}", err=True)


@buffer_app.command()
def purge(
    config: ConfigOpt,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every pending batch (they are lost and counted as dropped). Asks first."""
    from agent.buffer import Buffer
    from agent.buffer import purge as purge_buffer
    from agent.errors import StorageError

    path = _buffer_path(config)
    try:
        pending = Buffer.read_stats(path).pending_batches
        if not yes and not typer.confirm(
            f"Delete {pending} pending batches from {path}? They will never be published"
        ):
            typer.echo("nothing purged", err=True)
            raise typer.Exit(EXIT_RUNTIME)
        n = purge_buffer(path)
    except StorageError as exc:
        _fail(str(exc))
        return
    typer.echo(f"{n} pending batches purged from {path} (counted as dropped)")
