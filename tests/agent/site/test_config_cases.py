"""Config validation, one folder per case: tests/cases/config/<case>/site.yaml.

``error.txt`` lists the exact problems expected, one per line, as
``site.yaml:LINE: path: message`` (a line may be a prefix of the real message
when the rest names local folders). ``expected.txt`` marks a valid case.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.site.loader import load_site
from agent.site.source import ConfigFileError

CASES = Path(__file__).resolve().parents[2] / "cases" / "config"


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir()))
def test_config_case(case: str) -> None:
    folder = CASES / case
    site_file = folder / "site.yaml"
    error_file = folder / "error.txt"
    if not error_file.exists():
        site = load_site(site_file, env={})
        assert site.devices or site.agent.id
        return
    expected = error_file.read_text(encoding="utf-8").splitlines()
    with pytest.raises(ConfigFileError) as info:
        load_site(site_file, env={})
    actual = [str(p).replace(str(folder) + "/", "") for p in info.value.problems]
    assert len(actual) == len(expected), "\n".join(actual)
    for want, got in zip(expected, actual, strict=True):
        assert got.startswith(want), f"expected {want!r}\n     got {got!r}"
