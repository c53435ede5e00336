"""JSON schemas of site files and profiles, generated from the models that validate them.

Editors (VS Code with the YAML extension, for instance) use them to complete
and check site files while a contractor types. The schema is looser than
``edge-agent validate`` (cross-field checks such as overlapping registers are
not expressible), never stricter. ``config/schema/`` holds the shipped copies;
a test keeps them equal to what this module generates.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from agent.site.models import DeviceSection, ProfileFile, SiteFile
from drivers import registry

REF = "#/$defs/{model}"


def driver_specs() -> list[tuple[str, type[BaseModel], list[str]]]:
    """``(protocol, options model, connection kinds)`` of every driver, by first kind."""
    seen: dict[str, tuple[str, type[BaseModel], list[str]]] = {}
    for kind in registry.kinds():
        spec = registry.spec_for(kind)
        seen.setdefault(spec.protocol, (spec.protocol, spec.options_model, []))[2].append(kind)
    return list(seen.values())


def _driver_models() -> list[Any]:
    return [model for _, model, _ in driver_specs()]


def schemas() -> dict[str, dict[str, Any]]:
    """``{"site": ..., "profile": ...}``: both schemas, sharing the drivers' definitions."""
    drivers = _driver_models()
    models = [(m, "validation") for m in (SiteFile, ProfileFile, DeviceSection, *drivers)]
    keys, top = models_json_schema(models, ref_template=REF)  # type: ignore[arg-type]
    defs: dict[str, Any] = top["$defs"]
    ref = {
        model: keys[(model, "validation")]["$ref"]
        for model in (SiteFile, ProfileFile, DeviceSection, *drivers)
    }
    options = [defs[ref[m].rsplit("/", 1)[1]] for m in drivers]
    part = {k: [o["properties"][k] for o in options] for k in ("connection", "protocol", "tags")}
    device = defs[ref[DeviceSection].rsplit("/", 1)[1]]
    device["properties"]["connection"] = {"anyOf": part["connection"]}
    device["properties"]["protocol"] = {"anyOf": part["protocol"]}
    device["properties"]["tags"] = {
        "type": "object",
        "additionalProperties": {"anyOf": [t["additionalProperties"] for t in part["tags"]]},
    }
    profile = defs[ref[ProfileFile].rsplit("/", 1)[1]]
    profile["properties"]["protocol"] = {"anyOf": part["protocol"]}
    # Profile tag attributes may be ${param.NAME} expressions where a number is
    # expected, so the profile schema checks attribute names, not their types.
    names = sorted({n for t in part["tags"] for n in _tag_properties(t, defs)})
    profile["properties"]["tags"] = {
        "type": "object",
        "additionalProperties": {"type": "object", "propertyNames": {"enum": names}},
    }
    return {
        "site": _document("edge-agent site file", ref[SiteFile], defs),
        "profile": _document("edge-agent device profile", ref[ProfileFile], defs),
    }


def _tag_properties(tags: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    tag = tags["additionalProperties"]
    if "$ref" in tag:
        tag = defs[tag["$ref"].rsplit("/", 1)[1]]
    return list(tag.get("properties", {}))


def _document(title: str, root: str, defs: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "$ref": root,
        "$defs": defs,
    }
