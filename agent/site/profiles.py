"""The profile library: find a profile, follow ``extends``, merge, hash, compare.

A profile may extend another one (a vendor family base, then a series):
``protocol``, ``poll_groups`` and ``params`` are merged key by key, ``tags``
attribute by attribute, the child winning; a ``compute`` entry (a derived tag)
replaces the base's entry of that name; a child's ``machine`` block replaces
its base's whole. ``drop_tags`` removes inherited tags and derived tags. The
content hash covers the whole chain, so a change in a base profile changes the
hash of every profile built on it, and a site pinned to the old hash
(``profile: name@hash``) is told so.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from agent.site import models as cfg
from agent.site.params import ParamError, Scalar, check_override, substitute
from agent.site.source import ConfigFileError, Path_, Problem, Source, dotted, load
from drivers.base import problems_from_validation_error

MERGED_SECTIONS: Final = ("protocol", "poll_groups", "params")
_PIN: Final = re.compile(r"^(?P<name>[^@\s]+)@(?P<hash>[0-9a-fA-F]{6,64})$")


@dataclass(frozen=True, slots=True)
class Profile:
    """A loaded profile (``extends`` already merged) and where each part came from."""

    name: str
    model: cfg.ProfileFile
    source: Source
    sha256: str
    chain: tuple[str, ...] = ()
    """Names from this profile up to its root base (``(name,)`` without ``extends``)."""
    origins: Mapping[Path_, Source] = field(default_factory=dict)
    """``("tags", t)``, ``("tags", t, attr)``, ``("protocol", k)``... -> the file that set it."""

    @property
    def short_hash(self) -> str:
        """First 12 hex digits of the chain's SHA-256: what a site pins."""
        return self.sha256[:12]

    def source_of(self, path: Path_) -> Source:
        """The file that defined ``path`` (or its closest ancestor), else this profile's."""
        for cut in range(len(path), 0, -1):
            found = self.origins.get(path[:cut])
            if found is not None:
                return found
        return self.source

    def defaults(self) -> dict[str, Scalar]:
        """Parameter defaults."""
        return dict(self.model.params)


def split_pin(reference: str) -> tuple[str, str | None]:
    """``"inovance-md500@528e032f03db"`` -> ``("inovance-md500", "528e032f03db")``."""
    match = _PIN.match(reference)
    if match is None:
        return reference, None
    return match.group("name"), match.group("hash").lower()


_Loaded = Profile | FileNotFoundError | ConfigFileError
_cache: ContextVar[dict[tuple[str, tuple[Path, ...]], _Loaded] | None] = ContextVar(
    "profile_cache", default=None
)


@contextmanager
def profile_cache() -> Iterator[None]:
    """Within the block, :func:`load_profile` reads and validates each profile once.

    A site names one profile for many devices: loading it (YAML, the chain of
    ``extends``, validation) is most of a site's load time, so the loader
    keeps each result, or its problem, for the whole load and forgets it after
    (nothing held at run time, and a reload reads the files again). Blocks nest.
    """
    token = _cache.set({}) if _cache.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _cache.reset(token)


def load_profile(name: str, folders: list[Path]) -> Profile:
    """Find ``name``.yaml in ``folders`` (first match wins), follow ``extends``, validate.

    Raises ``FileNotFoundError`` when ``name`` itself is not found and
    :class:`ConfigFileError` (located in the profile files) for anything else,
    including a missing parent or a cycle. Inside :func:`profile_cache` the
    same name in the same folders is loaded once (a problem is raised again).
    """
    cache = _cache.get()
    if cache is None:
        return _load(name, folders, ())
    key = (name, tuple(folders))
    found = cache.get(key)
    if found is None:
        try:
            found = _load(name, folders, ())
        except (FileNotFoundError, ConfigFileError) as exc:
            found = exc
        cache[key] = found
    if isinstance(found, Profile):
        return found
    if isinstance(found, FileNotFoundError):
        raise FileNotFoundError(*found.args)
    raise ConfigFileError(list(found.problems))


def find_file(name: str, folders: list[Path]) -> Path:
    """Path of ``name``.yaml in the first folder holding it."""
    for folder in folders:
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    searched = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(f"profile {name!r} not found (searched {searched})")


def _load(name: str, folders: list[Path], seen: tuple[str, ...]) -> Profile:
    path = find_file(name, folders)
    source = load(path)
    problems: list[Problem] = []
    model = _validate_file(source, name, problems)
    if problems or model is None:
        raise ConfigFileError(problems)
    own = hashlib.sha256(path.read_bytes()).hexdigest()
    if model.extends is None:
        origins = _origins_of(model, source)
        return Profile(name, model, source, own, (name,), origins)
    parent = _parent(model.extends, folders, (*seen, name), source)
    merged, origins = _merge(parent, model, source)
    # The child's bytes and the parent's chain hash: any change anywhere in the chain shows.
    digest = hashlib.sha256(own.encode() + b" extends " + parent.sha256.encode()).hexdigest()
    return Profile(name, merged, source, digest, (name, *parent.chain), origins)


def _validate_file(source: Source, name: str, problems: list[Problem]) -> cfg.ProfileFile | None:
    try:
        model = cfg.ProfileFile.model_validate(source.data)
    except ValidationError as exc:
        problems.extend(
            Problem(source.where(p.loc), dotted(p.loc), p.message)
            for p in problems_from_validation_error(exc, ())
        )
        return None
    if model.profile != name:
        problems.append(
            Problem(
                source.where(("profile",)),
                "profile",
                f"{model.profile!r} does not match the file name {name!r}",
            )
        )
    return model


def _parent(parent: str, folders: list[Path], seen: tuple[str, ...], source: Source) -> Profile:
    where = source.where(("extends",))
    if parent in seen:
        cycle = " -> ".join((*seen[seen.index(parent) :], parent))
        raise ConfigFileError([Problem(where, "extends", f"profiles extend each other: {cycle}")])
    try:
        return _load(parent, folders, seen)
    except FileNotFoundError as exc:
        raise ConfigFileError([Problem(where, "extends", str(exc))]) from None


def _origins_of(model: cfg.ProfileFile, source: Source) -> dict[Path_, Source]:
    origins: dict[Path_, Source] = {}
    for section in MERGED_SECTIONS:
        for key in getattr(model, section):
            origins[(section, key)] = source
    for tag, attrs in model.tags.items():
        origins[("tags", tag)] = source
        for attr in attrs:
            origins[("tags", tag, attr)] = source
    if model.machine is not None:
        origins[("machine",)] = source
    for name in model.compute:
        origins[("compute", name)] = source
    return origins


def _merge(
    parent: Profile, child: cfg.ProfileFile, source: Source
) -> tuple[cfg.ProfileFile, dict[Path_, Source]]:
    base = parent.model
    origins = dict(parent.origins)
    merged: dict[str, Any] = {}
    for section in MERGED_SECTIONS:
        merged[section] = {**getattr(base, section), **getattr(child, section)}
        origins.update({(section, key): source for key in getattr(child, section)})
    tags = {name: dict(attrs) for name, attrs in base.tags.items()}
    for name, attrs in child.tags.items():
        if name not in tags:
            origins[("tags", name)] = source
        tags.setdefault(name, {}).update(attrs)
        origins.update({("tags", name, attr): source for attr in attrs})
    compute = dict(base.compute)
    for name, entry in child.compute.items():
        compute[name] = entry
        origins[("compute", name)] = source
    problems = []
    for index, name in enumerate(child.drop_tags):
        if tags.pop(name, None) is None and compute.pop(name, None) is None:
            problems.append(
                Problem(
                    source.where(("drop_tags", index)),
                    f"drop_tags[{index}]",
                    f"no inherited tag {name!r} to drop",
                )
            )
    if problems:
        raise ConfigFileError(problems)
    update = {
        **merged,
        "tags": tags,
        "compute": compute,
        "drop_tags": [],
        "vectors": _vectors(base, child),
    }
    # The machine block is one piece (rules are ordered, roles go together): a child's
    # block replaces its base's whole, without one the child keeps the base's.
    if child.machine is None:
        update["machine"] = base.machine
    else:
        origins[("machine",)] = source
    for key in ("vendor", "model", "description", "source", "notes"):
        if getattr(child, key) is None:
            update[key] = getattr(base, key)
    return child.model_copy(update=update), origins


def _vectors(base: cfg.ProfileFile, child: cfg.ProfileFile) -> list[cfg.ProfileVector]:
    """The base's vectors that still hold in the child, then the child's own.

    A child that changes a tag (scale, address, type) or the protocol (byte order)
    changes what the registers mean, so the base's vector of that tag (or every
    one, for the protocol) no longer applies; a line gives every tag at once.
    """
    if child.protocol:
        return list(child.vectors)
    touched = set(child.tags) | set(child.drop_tags)
    kept = [v for v in base.vectors if (v.tag not in touched if v.line is None else not touched)]
    return [*kept, *child.vectors]


def resolved_tags(profile: Profile, params: Mapping[str, Scalar] | None = None) -> dict[str, Any]:
    """Tags with parameters substituted (defaults unless ``params`` is given)."""
    values = {**profile.defaults(), **(params or {})}
    return {
        name: {key: substitute(value, values) for key, value in attrs.items()}
        for name, attrs in profile.model.tags.items()
    }


def diff(old: Profile, new: Profile) -> list[str]:
    """Readable differences from ``old`` to ``new``: tags added, removed, changed."""
    lines: list[str] = []
    for section in MERGED_SECTIONS:
        lines += _diff_mapping(section, getattr(old.model, section), getattr(new.model, section))
    old_tags, new_tags = old.model.tags, new.model.tags
    lines += [f"tag {t} removed" for t in old_tags if t not in new_tags]
    lines += [f"tag {t} added: {_flow(new_tags[t])}" for t in new_tags if t not in old_tags]
    for tag in (t for t in old_tags if t in new_tags):
        lines += _diff_mapping(f"tag {tag}", old_tags[tag], new_tags[tag])
    old_c = {k: v.model_dump(exclude_none=True) for k, v in old.model.compute.items()}
    new_c = {k: v.model_dump(exclude_none=True) for k, v in new.model.compute.items()}
    lines += [f"derived tag {t} removed" for t in old_c if t not in new_c]
    lines += [f"derived tag {t} added: {_flow(new_c[t])}" for t in new_c if t not in old_c]
    for tag in (t for t in old_c if t in new_c):
        lines += _diff_mapping(f"derived tag {tag}", old_c[tag], new_c[tag])
    return lines


def _diff_mapping(label: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in [*old, *(k for k in new if k not in old)]:
        if key not in new:
            out.append(f"{label}: {key} {shown(key, old[key])} removed")
        elif key not in old:
            out.append(f"{label}: {key} {shown(key, new[key])} added")
        elif old[key] != new[key]:
            out.append(f"{label}: {key} {shown(key, old[key])} -> {shown(key, new[key])}")
    return out


def shown(key: str, value: Any) -> str:
    """A value as a profile writes it: addresses in hex, strings bare."""
    if key == "address" and isinstance(value, int) and not isinstance(value, bool):
        return f"0x{value:04X}"
    return value if isinstance(value, str) else repr(value)


def _flow(attrs: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {shown(k, v)}" for k, v in attrs.items()) + "}"


def pin_problem(profile: Profile, pin: str) -> str | None:
    """Why a site's ``name@hash`` pin does not match ``profile``, or ``None`` if it does."""
    if profile.sha256.startswith(pin):
        return None
    return (
        f"pinned to {profile.name}@{pin} but the profile is now {profile.name}@"
        f"{profile.short_hash}: it changed since commissioning; compare the two versions "
        f"(edge-agent profile diff OLD.yaml {profile.name}), then pin the new hash"
    )


def device_params(
    profile: Profile | None, given: Mapping[str, Any]
) -> tuple[dict[str, Scalar], list[tuple[str, str]]]:
    """A device's parameter values and ``(name, message)`` for each wrong one it gives."""
    defaults = profile.defaults() if profile else {}
    values = dict(defaults)
    problems: list[tuple[str, str]] = []
    for name, value in given.items():
        if name not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            owner = f"profile {profile.name}" if profile else "a device without a profile"
            problems.append((name, f"unknown parameter; {owner} declares: {known}"))
            continue
        try:
            values[name] = check_override(name, defaults[name], value)
        except ParamError as exc:
            problems.append((name, str(exc)))
    return values, problems
