"""OPC UA driver: poll with one Read per group, or subscribe and stream data changes.

Importing this package does not import asyncua; ``SPEC.create`` does, so a
Modbus-only box never pays for it. See README.md for the options.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from drivers.base import DeviceOptions, Driver
from drivers.opcua.config import OpcuaOptions, OpcuaTag, parse_options

__all__ = ["SPEC", "OpcuaOptions", "OpcuaSpec", "OpcuaTag"]


KINDS = ("opcua",)
"""The connection kinds this driver serves (read by ``drivers.registry``)."""


class OpcuaSpec:
    """Builds OPC UA drivers from site options (``drivers.base.DriverSpec``)."""

    protocol = "opcua"
    options_model = OpcuaOptions

    def parse(self, options: Mapping[str, Any]) -> OpcuaOptions:
        """Validate ``{"connection": {"opcua": {...}}, "protocol": {...}, "tags": {...}}``."""
        return parse_options(options)

    def create(self, device_id: str, options: DeviceOptions) -> Driver:
        """A driver for parsed options; no I/O."""
        if not isinstance(options, OpcuaOptions):
            raise TypeError("options must come from SPEC.parse")
        from drivers.opcua.driver import OpcuaDriver

        return OpcuaDriver(device_id, options)

    def address_label(self, kind: str) -> str:
        """What ``edge-agent init`` asks for."""
        return "endpoint URL"

    def get_address(self, kind: str, section: Mapping[str, Any]) -> str:
        """The endpoint of ``connection.opcua``."""
        return str(section.get("endpoint", ""))

    def set_address(self, kind: str, section: MutableMapping[str, Any], answer: str) -> None:
        """Write a new endpoint into ``connection.opcua``."""
        section["endpoint"] = answer


SPEC = OpcuaSpec()
