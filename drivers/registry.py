"""Connection kind -> driver package, found in the driver folders, imported lazily.

Each driver package declares the connection kinds it serves in its
``__init__.py`` as a literal, e.g. ``KINDS = ("modbus_tcp", "modbus_rtu")``.
The registry reads those declarations without importing anything (an ``ast``
parse of a few small files), so adding a driver means adding its folder and
nothing else, and only the drivers a site actually uses are imported:
``import asyncua`` alone costs about 0.3 s, which a Modbus-only box should not pay.
"""

from __future__ import annotations

import ast
import functools
import importlib
from pathlib import Path
from typing import cast

from drivers.base import DriverSpec

_HERE = Path(__file__).resolve().parent


@functools.cache
def _packages() -> dict[str, str]:
    found: dict[str, str] = {}
    for init in sorted(_HERE.glob("*/__init__.py")):
        for kind in _declared_kinds(init):
            if kind in found:
                raise RuntimeError(f"connection kind {kind!r} is declared by two drivers")
            found[kind] = f"drivers.{init.parent.name}"
    return found


def _declared_kinds(init: Path) -> tuple[str, ...]:
    tree = ast.parse(init.read_text(encoding="utf-8"), str(init))
    for node in tree.body:
        target: ast.expr
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == "KINDS":
            return tuple(str(k) for k in ast.literal_eval(value))
    return ()


def kinds() -> list[str]:
    """Every connection kind a site file may name."""
    return sorted(_packages())


def spec_for(kind: str) -> DriverSpec:
    """The driver spec serving connection ``kind``; ``KeyError`` for an unknown kind."""
    module = importlib.import_module(_packages()[kind])
    return cast(DriverSpec, module.SPEC)
