"""Every runtime dependency declared in pyproject.toml is used by the shipped code.

An edge box installs every declared dependency: one that no code imports is
download, disk and attack surface for nothing (sqlite-utils was one: decision 11).
"""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("agent", "drivers", "simulators")


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = (re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0] for spec in project["dependencies"])
    return {_norm(name) for name in names}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_distributions() -> set[str]:
    tops: set[str] = set()
    for folder in SHIPPED:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    tops.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    tops.add(node.module.split(".")[0])
    owners = packages_distributions()
    return {_norm(dist) for top in tops for dist in owners.get(top, [])}


def test_every_declared_dependency_is_imported() -> None:
    unused = _declared() - _imported_distributions()
    assert not unused, f"declared in pyproject.toml but imported nowhere: {sorted(unused)}"
