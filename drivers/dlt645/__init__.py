"""DL/T 645-2007 driver: Chinese electricity meters on RS-485 (or a TCP serial server).

| module | what it holds |
| --- | --- |
| ``frame`` | pure frames: read request, reply, refusal, BCD values, addresses |
| ``config`` | options (line, meter address, tags by data identifier and format) |
| ``busload`` | line time of the reads, shared with Modbus RTU on the same port |
| ``driver`` | the only pyserial user: one shared line per port, one exchange at a time |

Exports :data:`SPEC`, found by ``drivers.registry`` for connection kind ``dlt645``.
pyserial is imported only when a driver is created, so validating stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from drivers.base import DeviceOptions, Driver, LineLoad, SerialPortAddress, VectorOutcome
from drivers.dlt645.config import Dlt645Options, Dlt645Tag, parse_options

__all__ = ["SPEC", "Dlt645Options", "Dlt645Spec", "Dlt645Tag"]


KINDS = ("dlt645",)
"""The connection kinds this driver serves (read by ``drivers.registry``)."""


class Dlt645Spec(SerialPortAddress):
    """The DL/T 645 driver's :class:`drivers.base.DriverSpec`."""

    protocol = "dlt645"
    options_model = Dlt645Options

    def parse(self, options: Mapping[str, Any]) -> Dlt645Options:
        """Validate ``{"connection": {"dlt645": {...}}, "protocol": {...}, "tags": {...}}``."""
        return parse_options(options)

    def create(self, device_id: str, options: DeviceOptions) -> Driver:
        """Build a driver from options returned by :meth:`parse`. No I/O."""
        if not isinstance(options, Dlt645Options):
            raise TypeError("options must come from SPEC.parse")
        from drivers.dlt645.driver import Dlt645Driver

        return Dlt645Driver(device_id, options)

    def link_load(self, options: DeviceOptions, intervals: Mapping[str, float]) -> LineLoad | None:
        """Share of the serial line's time this meter's reads need."""
        from drivers.dlt645.busload import link_load

        if not isinstance(options, Dlt645Options):
            raise TypeError(f"expected Dlt645Options, got {type(options).__name__}")
        return link_load(options, intervals)

    vector_input: Literal["registers", "line", "data"] = "data"

    def decode_vector(
        self, profile: Mapping[str, Any], tag: str | None, raw: Sequence[int] | str | bytes
    ) -> VectorOutcome:
        """A profile's test vector: one reply value's bytes -> the tag's value."""
        from drivers.dlt645.vectors import decode_vector

        return decode_vector(profile, tag, raw)


SPEC = Dlt645Spec()
