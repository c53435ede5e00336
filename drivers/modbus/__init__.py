"""Modbus TCP and RTU driver (``protocol.kind: modbus``).

``SPEC.parse`` validates options without importing pymodbus, so that
``edge-agent validate`` stays fast; ``SPEC.create`` imports the driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drivers.base import DeviceOptions, Driver
from drivers.modbus.config import ModbusOptions, ModbusTag, parse_options

__all__ = ["SPEC", "ModbusOptions", "ModbusSpec", "ModbusTag"]


class ModbusSpec:
    """The Modbus driver's entry in ``drivers.registry``."""

    protocol: str = "modbus"
    options_model = ModbusOptions

    def parse(self, options: Mapping[str, Any]) -> ModbusOptions:
        """Validate ``{"connection": ..., "protocol": ..., "tags": ...}``; ConfigError lists all."""
        return parse_options(options)

    def create(self, device_id: str, options: DeviceOptions) -> Driver:
        """Build a :class:`~drivers.modbus.driver.ModbusDriver`. No I/O."""
        if not isinstance(options, ModbusOptions):
            raise TypeError(f"expected ModbusOptions from SPEC.parse, got {type(options).__name__}")
        from drivers.modbus.driver import ModbusDriver

        return ModbusDriver(device_id, options)

    def link_load(self, options: DeviceOptions, intervals: Mapping[str, float]) -> Any:
        """Share of a serial line's time this device's polls need (None on TCP)."""
        from drivers.modbus.busload import link_load

        if not isinstance(options, ModbusOptions):
            raise TypeError(f"expected ModbusOptions, got {type(options).__name__}")
        return link_load(options, intervals)


SPEC = ModbusSpec()
