"""The shipped JSON schemas are current and accept every shipped config."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from agent.site.schema import schemas

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "config" / "schema"


@pytest.mark.parametrize("kind", ["site", "profile"])
def test_shipped_schema_is_what_the_models_generate(kind: str) -> None:
    shipped = json.loads((SCHEMAS / f"{kind}.schema.json").read_text(encoding="utf-8"))
    assert shipped == json.loads(json.dumps(schemas()[kind], sort_keys=True)), (
        f"regenerate: edge-agent schema {kind} -o config/schema/{kind}.schema.json"
    )


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "config" / "examples").glob("*.yaml"))
    + sorted((ROOT / "config" / "profiles").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_schema_accepts_shipped_files(path: Path) -> None:
    kind = "profile" if path.parent.name == "profiles" else "site"
    jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), schemas()[kind])


def test_schema_catches_an_unknown_key_and_a_bad_type() -> None:
    site = {"agent": {"id": "x", "colour": "blue"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(site, schemas()["site"])
    site = {"agent": {"id": "x"}, "mqtt": {"port": "eighteen"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(site, schemas()["site"])
