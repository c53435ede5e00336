"""``edge-agent profile list|show|diff`` and ``config show``: the library and a site, as text.

Everything here returns text (lines or YAML); the CLI prints it. Secrets never
reach the output of ``config show``: values of keys named like a secret and
every value the site resolved as a secret are replaced by ``***``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml
from pydantic import BaseModel

from agent.profiles import Profile, diff, load_profile, resolved_tags, split_pin
from agent.secretmask import MASK, is_secret_key
from agent.secretmask import mask as mask_text

if TYPE_CHECKING:
    from agent.resolve import Site

MAX_MADE: Final = 48
_PLAIN: Final = re.compile(r"^[A-Za-z_%°][A-Za-z0-9_ .%/°-]*$")
_KEY_MATERIAL: Final = re.compile(r"private_key$|key_material$|psk$", re.I)


def library_folders(extra: Iterable[Path] = ()) -> list[Path]:
    """Profile folders the CLI searches without a site: ``extra``, /etc, the shipped ones."""
    from agent.resolve import SHIPPED_PROFILES

    return [*extra, Path("/etc/edge-agent/profiles"), SHIPPED_PROFILES]


def load_ref(ref: str, folders: list[Path]) -> Profile:
    """A profile by name (``name`` or ``name@hash``) or by file path (``old/x.yaml``)."""
    path = Path(ref)
    if ref.endswith(".yaml") and path.is_file():
        return load_profile(path.stem, [path.parent, *folders])
    return load_profile(split_pin(ref)[0], folders)


def list_rows(folders: list[Path]) -> list[tuple[str, ...]]:
    """One row per profile name (first folder wins): name, version, vendor/model, tags, hash."""
    from agent.yamlsrc import ConfigFileError

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


def site_dump(site: Site) -> str:
    """The fully resolved site as YAML, every secret shown as ``***``."""
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
        "mqtt": site.mqtt.model_dump(mode="json", exclude_none=True),
        "buffer": site.buffer.model_dump(mode="json", exclude_none=True),
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
