"""``edge-agent profile list|show|diff|test``: the profile library, as text.

The view functions return text (lines or YAML); the commands below print them.
Exit codes as everywhere: 0 ok, 2 bad input (an unknown or invalid profile).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
import yaml

from agent.cli.common import EXIT_INPUT
from agent.site.profiles import Profile, diff, load_profile, resolved_tags, split_pin

if TYPE_CHECKING:
    pass

MAX_MADE: Final = 48
_PLAIN: Final = re.compile(r"^[A-Za-z_%°][A-Za-z0-9_ .%/°-]*$")
_KEY_MATERIAL: Final = re.compile(r"private_key$|key_material$|psk$", re.I)


def library_folders(extra: Iterable[Path] = ()) -> list[Path]:
    """Profile folders the CLI searches without a site: ``extra``, /etc, the shipped ones."""
    from agent.paths import ETC_PROFILES, SHIPPED_PROFILES

    return [*extra, ETC_PROFILES, SHIPPED_PROFILES]


def load_ref(ref: str, folders: list[Path]) -> Profile:
    """A profile by name (``name`` or ``name@hash``) or by file path (``old/x.yaml``)."""
    path = Path(ref)
    if ref.endswith(".yaml") and path.is_file():
        return load_profile(path.stem, [path.parent, *folders])
    return load_profile(split_pin(ref)[0], folders)


def list_rows(folders: list[Path]) -> list[tuple[str, ...]]:
    """One row per profile name (first folder wins): name, version, vendor/model, tags, hash."""
    from agent.site.source import ConfigFileError

    names: dict[str, None] = {}
    for folder in folders:
        if folder.is_dir():
            names.update(dict.fromkeys(p.stem for p in sorted(folder.glob("*.yaml"))))
    rows: list[tuple[str, ...]] = []
    for name in sorted(names):
        try:
            profile = load_profile(name, folders)
        except ConfigFileError as exc:
            rows.append((name, "-", f"invalid: {exc.problems[0]}", "-", "-"))
            continue
        model = profile.model
        made = " ".join(x for x in (model.vendor, model.model) if x)
        made = made if len(made) <= MAX_MADE else made[: MAX_MADE - 3] + "..."
        rows.append((name, str(model.version), made, str(len(model.tags)), profile.short_hash))
    return rows


def show(profile: Profile) -> str:
    """The profile with ``extends`` merged and params at their defaults, as YAML."""
    model = profile.model
    head: dict[str, Any] = {"profile": profile.name, "version": model.version}
    head["hash"] = profile.short_hash
    if len(profile.chain) > 1:
        head["extends"] = " -> ".join(profile.chain[1:])
    for key in ("vendor", "model", "description", "source", "notes"):
        if getattr(model, key):
            head[key] = getattr(model, key)
    for key in ("params", "protocol", "poll_groups"):
        if getattr(model, key):
            head[key] = dict(getattr(model, key))
    text = yaml.safe_dump(head, sort_keys=False, allow_unicode=True, width=88)
    lines = [f"  {name}: {flow(attrs)}" for name, attrs in resolved_tags(profile).items()]
    return text + "tags:\n" + "\n".join(lines) + "\n"


def diff_lines(old: Profile, new: Profile) -> list[str]:
    """What changes from ``old`` to ``new`` (tags added, removed, changed)."""
    return diff(old, new)


def flow(attrs: Mapping[str, Any]) -> str:
    """Tag attributes as one YAML flow mapping; register addresses in hex as profiles write them."""
    parts = []
    for key, value in attrs.items():
        if key == "address" and isinstance(value, int) and not isinstance(value, bool):
            shown = f"0x{value:04X}"
        elif isinstance(value, str) and not _PLAIN.match(value):
            shown = json.dumps(value, ensure_ascii=False)  # a JSON string is valid YAML
        else:
            shown = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000)
            shown = shown.removesuffix("\n").removesuffix("\n...")
        parts.append(f"{key}: {shown}")
    return "{" + ", ".join(parts) + "}"


profile_app = typer.Typer(
    name="profile", help="The profile library: list, show, compare, test.", no_args_is_help=True
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
    from agent.site.source import ConfigFileError

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
    from agent.site.source import ConfigFileError

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


@profile_app.command("test")
def profile_test(
    name: Annotated[str, typer.Argument(help="Profile name, or a profile file (x.yaml).")],
    dirs: DirOpt = None,
) -> None:
    """Decode the profile's test vectors (vectors:) with its driver; PASS/FAIL per vector.

    Exit 0 when all pass (or the driver has nothing to decode), 1 when one fails,
    2 for bad input.
    """
    from agent.cli.vectors import run_vectors
    from agent.site.source import ConfigFileError

    try:
        profile = load_ref(name, library_folders(dirs or []))
    except (FileNotFoundError, ConfigFileError) as exc:
        _echo_problems(exc)
        raise typer.Exit(EXIT_INPUT) from None
    report = run_vectors(profile)
    for line in report.lines:
        typer.echo(line)
    raise typer.Exit(report.code)
