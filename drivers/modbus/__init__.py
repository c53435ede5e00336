"""Modbus TCP and RTU driver (``protocol.kind: modbus``).

``SPEC.parse`` validates options without importing pymodbus, so that
``edge-agent validate`` stays fast; ``SPEC.create`` imports the driver.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, Literal

from drivers.base import DeviceOptions, Driver, LineLoad, VectorOutcome
from drivers.modbus.config import ModbusOptions, ModbusTag, parse_options

__all__ = ["SPEC", "ModbusOptions", "ModbusSpec", "ModbusTag"]


KINDS = ("modbus_tcp", "modbus_rtu")
"""The connection kinds this driver serves (read by ``drivers.registry``)."""


class ModbusSpec:
    """The Modbus driver's entry in ``drivers.registry``."""

    protocol: str = "modbus"
    options_model = ModbusOptions
    vector_input: Literal["registers", "line", "data"] = "registers"

    def parse(self, options: Mapping[str, Any]) -> ModbusOptions:
        """Validate ``{"connection": ..., "protocol": ..., "tags": ...}``; ConfigError lists all."""
        return parse_options(options)

    def create(self, device_id: str, options: DeviceOptions) -> Driver:
        """Build a :class:`~drivers.modbus.driver.ModbusDriver`. No I/O."""
        if not isinstance(options, ModbusOptions):
            raise TypeError(f"expected ModbusOptions from SPEC.parse, got {type(options).__name__}")
        from drivers.modbus.driver import ModbusDriver

        return ModbusDriver(device_id, options)

    def link_load(self, options: DeviceOptions, intervals: Mapping[str, float]) -> LineLoad | None:
        """Share of a serial line's time this device's polls need (None on TCP)."""
        from drivers.modbus.busload import link_load

        if not isinstance(options, ModbusOptions):
            raise TypeError(f"expected ModbusOptions, got {type(options).__name__}")
        return link_load(options, intervals)

    def decode_vector(
        self, profile: Mapping[str, Any], tag: str | None, raw: Sequence[int] | str | bytes
    ) -> VectorOutcome:
        """A profile's test vector: ``tag``'s registers -> its value, as a poll decodes them."""
        from drivers.modbus.vectors import decode_vector

        return decode_vector(profile, tag, raw)

    def address_label(self, kind: str) -> str:
        """``HOST[:PORT]`` on TCP, the serial port on RTU (``edge-agent init`` asks for it)."""
        return "HOST[:PORT]" if kind == "modbus_tcp" else "serial port"

    def get_address(self, kind: str, section: Mapping[str, Any]) -> str:
        """``host[:port]`` of ``connection.modbus_tcp``, or the RTU line's port."""
        if kind != "modbus_tcp":
            return str(section.get("port", ""))
        port = section.get("port")
        return f"{section.get('host', '')}" + (f":{port}" if port is not None else "")

    def set_address(self, kind: str, section: MutableMapping[str, Any], answer: str) -> None:
        """Write ``HOST[:PORT]`` (TCP) or a serial port (RTU) back into the section."""
        if kind != "modbus_tcp":
            section["port"] = answer
            return
        host, sep, port = answer.rpartition(":")
        if sep and port.isdigit():
            section["host"], section["port"] = host, int(port)
        else:
            section["host"] = answer
            section.pop("port", None)


SPEC = ModbusSpec()
