"""``edge-agent validate``, ``config show`` and ``schema``: a site file as the agent sees it.

Secrets never reach the output of ``config show``: values of keys named like a
secret, key material, and every value the site resolved as a secret are shown
as ``***``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from agent.cli.common import fail, load_site_or_exit, print_summary, report_problems
from agent.secretmask import MASK, is_secret_key
from agent.secretmask import mask as mask_text

if TYPE_CHECKING:
    from agent.site.loader import Site

_KEY_MATERIAL: Final = re.compile(r"private_key$|key_material$|psk$", re.I)

config_app = typer.Typer(
    name="config", help="Show a site as the agent sees it.", no_args_is_help=True
)


def validate(config: Path) -> None:
    """Check a site file without touching any device; exit 2 with every problem if invalid."""
    from agent.runtime.machines import plan_machines
    from agent.site.source import ConfigFileError

    site = load_site_or_exit(config)
    try:
        machines = plan_machines(site)
    except ConfigFileError as exc:
        raise SystemExit(report_problems(config, exc.problems)) from None
    print_summary(config, site, machines)


def show_schema(kind: str, output: Path | None) -> None:
    """Print (or write) the JSON schema of site files or profiles."""
    from agent.site.schema import schemas

    documents = schemas()
    if kind not in documents:
        fail(f"unknown schema {kind!r}: use site or profile")
    text = json.dumps(documents[kind], indent=2, sort_keys=True) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


def show_reference(output: Path | None) -> None:
    """Print (or write) the site file reference: every key, type, default and description."""
    from agent.site.reference import markdown

    text = markdown()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@config_app.command("show")
def config_show(
    config: Annotated[Path, typer.Option("--config", "-c", help="Site file (YAML).")],
) -> None:
    """The fully resolved site (profiles merged, defaults filled in) as YAML; secrets as ***."""
    typer.echo(site_dump(load_site_or_exit(config)), nl=False)


def site_dump(site: Site) -> str:
    """The fully resolved site as YAML, every secret shown as ``***``."""
    import yaml
    from pydantic import BaseModel

    devices = []
    for device in site.devices:
        options = device.options
        dumped = (
            options.model_dump(mode="json", exclude_none=True)
            if isinstance(options, BaseModel)
            else {"tags": {k: str(v) for k, v in options.tags.items()}}
        )
        entry: dict[str, Any] = {"id": device.id, "kind": device.kind, "enabled": device.enabled}
        if device.profile:
            entry["profile"] = f"{device.profile}@{device.profile_hash}"
        if device.changes:
            entry["overrides"] = list(device.changes)
        entry["poll_groups"] = dict(device.poll_groups)
        entry.update(dumped)
        devices.append(entry)
    data = {
        "agent": site.agent.model_dump(mode="json", exclude_none=True),
        **(
            {"mqtt": site.mqtt.model_dump(mode="json", exclude_none=True)}
            if site.mqtt_is_destination
            else {}
        ),
        "buffer": site.buffer.model_dump(mode="json", exclude_none=True),
        **(
            {"north": [d.model_dump(mode="json", exclude_none=True) for d in site.north]}
            if site.north
            else {}
        ),
        "resolved_paths": {
            "data_dir": str(site.data_dir),
            "status_socket": str(site.status_socket),
            "buffer": str(site.buffer_path),
        },
        "devices": devices,
    }
    masked = mask(data, site.secrets)
    text = yaml.safe_dump(masked, sort_keys=False, allow_unicode=True, width=100)
    return mask_text(text, site.secrets)  # a secret YAML split or escaped is still caught


def mask(value: Any, secrets: Iterable[str], key: str = "") -> Any:
    """``value`` with secret-named keys and known secret values replaced by ``***``.

    Secret keys are those of :func:`agent.secretmask.is_secret_key` (``password``,
    ``api_token``...) plus key material (``private_key``, ``key_material``, ``psk``);
    a path to a secret (``password_file``, ``tls.key``) is no secret and stays.
    """
    if isinstance(value, Mapping):
        return {k: mask(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v, secrets, key) for v in value]
    if value is not None and (is_secret_key(key) or _KEY_MATERIAL.search(key)):
        return MASK
    if isinstance(value, str):
        return mask_text(value, secrets)
    return value
