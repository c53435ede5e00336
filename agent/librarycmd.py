"""``edge-agent profile list|show|diff``, ``config show`` and ``init``: the copy-a-site tools.

Exit codes as everywhere: 0 ok, 1 runtime failure, 2 bad input or config.
Heavy modules are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EXIT_INPUT = 2

profile_app = typer.Typer(
    name="profile", help="The profile library: list, show, compare.", no_args_is_help=True
)
config_app = typer.Typer(
    name="config", help="Show a site as the agent sees it.", no_args_is_help=True
)

DirOpt = Annotated[
    list[Path] | None,
    typer.Option("--dir", "-d", help="Also search this profile folder (first), repeatable."),
]


def _echo_problems(exc: Exception) -> None:
    for line in str(exc).splitlines():
        typer.echo(line, err=True)


@profile_app.command("list")
def profile_list(dirs: DirOpt = None) -> None:
    """Every profile: name, version, vendor/model, tag count, hash (what a site pins)."""
    from agent.profileview import library_folders, list_rows

    rows = list_rows(library_folders(dirs or []))
    header = ("NAME", "VERSION", "VENDOR / MODEL", "TAGS", "HASH")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if any(r[1] == "-" for r in rows):
        raise typer.Exit(EXIT_INPUT)


@profile_app.command("show")
def profile_show(
    name: Annotated[str, typer.Argument(help="Profile name, or a profile file (x.yaml).")],
    dirs: DirOpt = None,
) -> None:
    """One profile, resolved: extends merged, params at their defaults, with source and notes."""
    from agent.profileview import library_folders, load_ref, show
    from agent.yamlsrc import ConfigFileError

    try:
        profile = load_ref(name, library_folders(dirs or []))
    except (FileNotFoundError, ConfigFileError) as exc:
        _echo_problems(exc)
        raise typer.Exit(EXIT_INPUT) from None
    typer.echo(show(profile), nl=False)


@profile_app.command("diff")
def profile_diff(
    old: Annotated[str, typer.Argument(help="Profile name or file, the old one.")],
    new: Annotated[str, typer.Argument(help="Profile name or file, the new one.")],
    dirs: DirOpt = None,
) -> None:
    """What changes from OLD to NEW: params, protocol, poll groups, tags added/removed/changed."""
    from agent.profileview import diff_lines, library_folders, load_ref
    from agent.yamlsrc import ConfigFileError

    folders = library_folders(dirs or [])
    try:
        a, b = load_ref(old, folders), load_ref(new, folders)
    except (FileNotFoundError, ConfigFileError) as exc:
        _echo_problems(exc)
        raise typer.Exit(EXIT_INPUT) from None
    lines = diff_lines(a, b)
    typer.echo(f"--- {a.name}@{a.short_hash}\n+++ {b.name}@{b.short_hash}")
    for line in lines or ["(no differences)"]:
        typer.echo(line)


@config_app.command("show")
def config_show(
    config: Annotated[Path, typer.Option("--config", "-c", help="Site file (YAML).")],
) -> None:
    """The fully resolved site (profiles merged, defaults filled in) as YAML; secrets as ***."""
    from agent.cli import load_site_or_exit
    from agent.profileview import site_dump

    typer.echo(site_dump(load_site_or_exit(config)), nl=False)


def init(
    sample: Annotated[Path, typer.Option("--from", help="The sample site file to copy.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The new site file.")],
    site: Annotated[str | None, typer.Option("--site", help="Agent id of the new box.")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="PATH=VALUE, e.g. devices.press-1.host=10.0.0.5 (repeatable)."),
    ] = None,
    broker: Annotated[str | None, typer.Option(help="MQTT broker HOST:PORT.")] = None,
    username: Annotated[str | None, typer.Option(help="MQTT username.")] = None,
    password_env: Annotated[
        str | None, typer.Option(help="Environment variable that will hold the MQTT password.")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Ask nothing: keep the sample's values.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Copy a sample site to a new factory: asks only what differs, then validates the copy.

    Asked (unless given by flags or --yes): agent id, broker, MQTT username and the
    environment variable for its password, each device's address. Comments survive.
    """
    from agent.initsite import InitError, InitRequest, copy_site

    def ask(question: str, default: str) -> str:
        return str(typer.prompt(question, default=default, show_default=bool(default)))

    request = InitRequest(sample, output, site, sets or [], broker, username, password_env, force)
    try:
        result = copy_site(request, None if yes else ask)
    except InitError as exc:
        typer.echo(f"edge-agent: {exc}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    typer.echo(f"wrote {result.output} (from {sample})")
    for note in result.notes:
        typer.echo(f"note: {note}")
    _validate_copy(result.output, result.env_refs)


def _validate_copy(output: Path, env_refs: list[str]) -> None:
    import os

    from agent.cli import print_summary
    from agent.resolve import load_site
    from agent.yamlsrc import ConfigFileError

    # Secrets are set on the box, not here: stand in for the ones the new file references.
    missing = [name for name in env_refs if name not in os.environ]
    env = {**os.environ, **dict.fromkeys(missing, "(set on the box)")}
    try:
        site = load_site(output, env=env)
    except ConfigFileError as exc:
        _echo_problems(exc)
        typer.echo(
            f"{output}: {len(exc.problems)} problems: edit the file, then validate", err=True
        )
        raise typer.Exit(EXIT_INPUT) from None
    print_summary(output, site)
    for name in missing:
        typer.echo(f"note: set {name} in the agent's environment on the box (e.g. systemd)")
