"""docs/SITE-REFERENCE.md is what the models generate, and it says true things."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel

from agent.runtime.poller import DevicePoller
from agent.site import reference
from agent.site.device import DEFAULT_GROUP_INTERVAL
from agent.site.loader import load_site
from agent.site.models import ProfileFile, SiteFile
from agent.site.schema import driver_specs
from drivers.base import ByteSize, Duration, StrictModel

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "SITE-REFERENCE.md"


def test_committed_page_is_what_the_models_generate() -> None:
    assert PAGE.read_text(encoding="utf-8") == reference.markdown(), (
        f"docs/SITE-REFERENCE.md is stale: regenerate with {reference.REGENERATE}"
    )


def test_the_regenerate_command_in_the_header_writes_the_same_page(tmp_path: Path) -> None:
    out = tmp_path / "ref.md"
    command = [sys.executable, "-m", "agent", "schema", "--markdown", "-o", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, timeout=60, capture_output=True)
    assert out.read_text(encoding="utf-8") == reference.markdown()
    assert reference.REGENERATE.removeprefix("edge-agent ") in PAGE.read_text(encoding="utf-8")


def _all_models() -> list[tuple[str, type[BaseModel]]]:
    """Every section on the page (a driver's options model itself is not one)."""
    found = [f for root in (SiteFile, ProfileFile) for f in reference.sections(root, "")]
    for _, model, _ in driver_specs():
        found += [(path, sub) for path, sub in reference.sections(model, "") if path]
    return found


def test_every_key_has_a_description() -> None:
    missing = [
        f"{model.__name__}.{name}"
        for _, model in _all_models()
        for name, info in model.model_fields.items()
        if not info.description
    ]
    assert missing == [], "add Field(description=...) in plain sentences to: " + ", ".join(missing)


def test_every_key_of_every_section_is_on_the_page() -> None:
    page = PAGE.read_text(encoding="utf-8")
    for path, model in _all_models():
        for name, info in model.model_fields.items():
            key = info.alias or name
            assert f"| `{key}` |" in page, f"{path or 'top level'}.{key}"


def test_types_and_defaults_read_as_a_contractor_writes_them() -> None:
    class Sample(StrictModel):
        """A sample."""

        every: Duration = 0.5
        cap: ByteSize = 64_000_000
        order: Literal["ABCD", "CDAB"] = "ABCD"
        limit: int | None = None

    text = reference.section("sample", Sample)
    assert "| `every` | duration | `500ms` |" in text
    assert "| `cap` | size | `64MB` |" in text
    assert "| `order` | one of `ABCD`, `CDAB` | `ABCD` |" in text
    assert "| `limit` | integer | unset |" in text


def test_the_rules_match_the_code() -> None:
    """The figures of the hand-written rules are those of the poller and the loader."""
    backoff_max = inspect.signature(DevicePoller).parameters["backoff_max"].default
    assert f"up to {backoff_max:g}s" in reference.markdown()
    assert f"interval of {DEFAULT_GROUP_INTERVAL:g}s" in reference.markdown()


def test_the_inline_device_example_is_a_valid_site(tmp_path: Path) -> None:
    block = re.search(r"```yaml\n(.*?)```", reference.markdown(), re.S)
    assert block is not None
    site = {"agent": {"id": "t", "data_dir": str(tmp_path / "data")}}
    site.update(yaml.safe_load(textwrap.dedent(block.group(1))))
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site), encoding="utf-8")
    device = load_site(path).device("pump-3")
    assert device.profile is None
    assert device.poll_groups == {"default": DEFAULT_GROUP_INTERVAL, "fast": 0.5}
