"""Plain serial (ASCII line) driver: scales, torque tools, any device that prints lines.

Exports :data:`SPEC`, looked up by ``drivers.registry`` for connection kind ``serial``.
pyserial is imported only when a driver is created, so validating a config stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from drivers.base import DeviceOptions, Driver, SerialPortAddress, VectorOutcome
from drivers.serial.config import SerialOptions, SerialTag, parse_options

__all__ = ["SPEC", "SerialOptions", "SerialSpec", "SerialTag"]


KINDS = ("serial",)
"""The connection kinds this driver serves (read by ``drivers.registry``)."""


class SerialSpec(SerialPortAddress):
    """The serial driver's :class:`drivers.base.DriverSpec`."""

    protocol = "serial"
    options_model = SerialOptions
    vector_input: Literal["registers", "line", "data"] = "line"

    def parse(self, options: Mapping[str, Any]) -> SerialOptions:
        """Validate ``{"connection": {"serial": {...}}, "protocol": {...}, "tags": {...}}``."""
        return parse_options(options)

    def create(self, device_id: str, options: DeviceOptions) -> Driver:
        """Build a driver from options returned by :meth:`parse`. No I/O."""
        if not isinstance(options, SerialOptions):
            raise TypeError("options must come from SPEC.parse")
        from drivers.serial.driver import SerialDriver

        return SerialDriver(device_id, options)

    def decode_vector(
        self, profile: Mapping[str, Any], tag: str | None, raw: Sequence[int] | str | bytes
    ) -> VectorOutcome:
        """A profile's test vector: one line -> every tag's value, as a received line."""
        from drivers.serial.vectors import decode_vector

        return decode_vector(profile, tag, raw)


SPEC = SerialSpec()
