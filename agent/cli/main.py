"""The ``edge-agent`` entry point: ``run`` and ``status`` without the CLI framework.

typer (with click and rich) costs about 140 ms and 5 MB to import. ``status``
must answer in a fraction of a second, and ``run`` is what stays resident on
the box for months, so their plain forms (and plain ``metrics``) are handled
here with the standard library; every other command, and any help or unusual
option, goes to the typer app in :mod:`agent.cli.app`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _fast_run(args: list[str]) -> int | None:
    """``run -c FILE`` / ``run --config FILE`` / ``run --config=FILE``; None for anything else."""
    if len(args) == 2 and args[0] in ("-c", "--config"):
        config = args[1]
    elif len(args) == 1 and args[0].startswith("--config="):
        config = args[0].partition("=")[2]
    else:
        return None
    from agent import logs
    from agent.cli.common import load_site_errors
    from agent.runtime.process import run_agent

    site = load_site_errors(Path(config), machines=True)
    if isinstance(site, int):
        return site
    logs.setup(site.agent.log_level, site.secrets)
    return run_agent(site)


def _fast_status(args: list[str]) -> int | None:
    """``status`` / ``status --json`` (the running agent found by its pointer file)."""
    if args not in ([], ["--json"]):
        return None
    from agent.cli import status as statusview

    return statusview.show(None, as_json=bool(args))


def _fast_metrics(args: list[str]) -> int | None:
    """``metrics`` (the running agent found by its pointer file)."""
    if args:
        return None
    from agent.cli import status as statusview

    return statusview.show_metrics(None)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else argv
    fast = {"run": _fast_run, "status": _fast_status, "metrics": _fast_metrics}.get(
        args[0] if args else ""
    )
    code = fast(args[1:]) if fast else None
    if code is not None:
        sys.exit(code)
    from agent.cli.app import app

    app(args=args, prog_name="edge-agent")
