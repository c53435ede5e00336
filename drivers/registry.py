"""Connection kind -> driver package, imported lazily.

Only the drivers a site actually uses are imported: ``import asyncua`` alone
costs about 0.3 s, which the agent should not pay on a Modbus-only box.
"""

from __future__ import annotations

import importlib
from typing import cast

from drivers.base import DriverSpec

_PACKAGES: dict[str, str] = {
    "modbus_tcp": "drivers.modbus",
    "modbus_rtu": "drivers.modbus",
    "opcua": "drivers.opcua",
    "serial": "drivers.serial",
}


def kinds() -> list[str]:
    """Every connection kind a site file may name."""
    return sorted(_PACKAGES)


def spec_for(kind: str) -> DriverSpec:
    """The driver spec serving connection ``kind``; ``KeyError`` for an unknown kind."""
    module = importlib.import_module(_PACKAGES[kind])
    return cast(DriverSpec, module.SPEC)
