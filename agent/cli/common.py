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
    from agent.site.loader import Site

EXIT_OK: Final = 0
EXIT_RUNTIME: Final = 1
"""Something failed while running: a device, the broker, no agent answering."""
EXIT_INPUT: Final = 2
"""Bad input: an invalid site file, an unknown device or option."""


def fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    """Print ``edge-agent: MESSAGE`` on stderr and exit with ``code``."""
    sys.stderr.write(f"edge-agent: {message}\n")
    raise SystemExit(code)


def load_site_errors(config: Path) -> Site | int:
    """Load a site file; on problems print each one and return the exit code 2."""
    from agent.site.loader import load_site
    from agent.site.source import ConfigFileError

    try:
        return load_site(config)
    except ConfigFileError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        n = len(exc.problems)
        sys.stderr.write(f"{config}: {n} problem{'s' if n != 1 else ''}, nothing was started\n")
        return EXIT_INPUT


def load_site_or_exit(config: Path) -> Site:
    """Load a site file; print every problem and exit 2 if it is invalid."""
    site = load_site_errors(config)
    if isinstance(site, int):
        raise SystemExit(site)
    return site


def print_summary(config: Path, site: Site) -> None:
    """What ``validate`` prints for a valid site: devices, profiles, overrides, lines."""
    from agent.site.permissions import readable_by_others

    out = sys.stdout
    n_tags = sum(len(d.options.tags) for d in site.devices)
    out.write(
        f"{config}: valid: agent {site.agent.id}, {len(site.devices)} devices, "
        f"{n_tags} tags, broker {site.mqtt.host}:{site.mqtt.port}\n"
    )
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
    out.flush()
    for warning in [*site.warnings, *readable_by_others(site)]:
        sys.stderr.write(f"warning: {warning}\n")
