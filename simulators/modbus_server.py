"""Serve simulated devices over Modbus TCP and Modbus RTU with pymodbus 3.16.

Each endpoint (a TCP port, or a serial line shared by several unit ids) is one
pymodbus server whose register reads are answered from :class:`ProfileDevice`
images through pymodbus's ``SimDevice.action`` hook. Faults are injected on
the wire: by :class:`~simulators.tcp_proxy.TcpFaultProxy` in front of TCP
servers, and by the ``action``/``trace_packet`` hooks on serial lines.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData
from pymodbus.simulator import SimDevice as PymodbusDevice

from simulators.faults import FaultMode, FaultSwitch, crc16_modbus, garbage
from simulators.profile_device import ProfileDevice
from simulators.tcp_proxy import TcpFaultProxy

log = logging.getLogger(__name__)

# Function code -> image table, as pymodbus maps them to its four blocks.
_TABLE_OF_FC: Final[dict[int, str]] = {
    1: "coil", 5: "coil", 15: "coil", 2: "discrete", 4: "input",
    3: "holding", 6: "holding", 16: "holding", 22: "holding", 23: "holding",
}  # fmt: skip

Action = Callable[
    [int, int, int, int, list[int], list[int] | list[bool] | None],
    Coroutine[Any, Any, ExcCodes | None],
]


def _register_block(device: ProfileDevice, table: str) -> list[SimData]:
    addresses = sorted(device.registers[table])
    if not addresses:
        return [SimData(0, datatype=DataType.INVALID)]
    writable = device.writable[table]
    return [
        SimData(a, values=0, datatype=DataType.REGISTERS, readonly=a not in writable)
        for a in addresses
    ]


def _bit_block(device: ProfileDevice, table: str) -> list[SimData]:
    addresses = sorted(device.bits[table])
    if not addresses:
        # pymodbus needs one entry per block; the action refuses reads of an empty table.
        return [SimData(0, values=False, datatype=DataType.BITS, readonly=True)]
    writable = device.writable[table]
    return [
        SimData(a, values=False, datatype=DataType.BITS, readonly=a not in writable)
        for a in addresses
    ]


def _fill_bits(device: ProfileDevice, table: str, start: int, registers: list[int]) -> None:
    """Copy the image's bits into pymodbus's packed words (16 bits each, bit 0 first)."""
    for address, bit in device.bits[table].items():
        index, shift = divmod(address, 16)
        index -= start
        if 0 <= index < len(registers):
            word = registers[index]
            registers[index] = (word | (1 << shift)) if bit else (word & ~(1 << shift))


def make_action(device: ProfileDevice, switch: FaultSwitch, serial: bool) -> Action:
    """The pymodbus ``action`` hook answering from ``device``'s image.

    On serial lines it also applies the ``slow`` and ``exception`` faults (TCP
    devices get theirs from the front proxy).
    """

    async def action(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        fault = switch.fault
        if serial and fault.mode is FaultMode.EXCEPTION:
            return ExcCodes(fault.exception_code)
        if serial and fault.mode is FaultMode.SLOW and set_values is None:
            await asyncio.sleep(fault.delay_s)
        table = _TABLE_OF_FC.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None:
            return _write(device, table, address, set_values)
        return _read(device, table, start_address, address, count, registers)

    return action


def _read(
    device: ProfileDevice, table: str, start: int, address: int, count: int, registers: list[int]
) -> ExcCodes | None:
    if table in ("coil", "discrete"):
        # pymodbus passes the count of packed words here, not of bits.
        if address not in device.bits[table]:
            return ExcCodes.ILLEGAL_ADDRESS
        if device.refresh is not None:
            device.refresh()
        _fill_bits(device, table, start, registers)
        return None
    words = device.read_registers(table, address, count)
    if words is None:
        return ExcCodes.ILLEGAL_ADDRESS
    offset = address - start
    registers[offset : offset + count] = words
    return None


def _write(
    device: ProfileDevice, table: str, address: int, values: list[int] | list[bool]
) -> ExcCodes | None:
    if not device.can_write(table, address, len(values)):
        return ExcCodes.ILLEGAL_ADDRESS
    if table == "coil":
        device.write_bits(address, [bool(v) for v in values])
    else:
        device.write_registers(address, [int(v) for v in values])
    return None


def pymodbus_device(device: ProfileDevice, switch: FaultSwitch, serial: bool) -> PymodbusDevice:
    """A pymodbus ``SimDevice`` whose four blocks mirror ``device``'s address map."""
    return PymodbusDevice(
        id=device.unit_id,
        simdata=(
            _bit_block(device, "coil"),
            _bit_block(device, "discrete"),
            _register_block(device, "holding"),
            _register_block(device, "input"),
        ),
        action=make_action(device, switch, serial),
    )


_RTU_FAULTS: Final[dict[FaultMode, Callable[[bytes], bytes]]] = {
    FaultMode.SILENT: lambda data: b"",
    FaultMode.DROP: lambda data: b"",
    FaultMode.GARBAGE: lambda data: garbage(len(data)),
    FaultMode.BAD_CRC: lambda data: data[:-2] + bytes([data[-2] ^ 0xFF, data[-1]]),
    FaultMode.TRUNCATE: lambda data: data[: max(1, len(data) // 2)],
    FaultMode.NOISE: lambda data: garbage(3) + data,
    FaultMode.WRONG_UNIT: lambda data: _rtu_with_unit(data, (data[0] + 1) & 0xFF),
}


def _rtu_fault(mode: FaultMode, data: bytes) -> bytes:
    """The bytes a faulty unit puts on the line instead of the reply ``data``."""
    fault = _RTU_FAULTS.get(mode)
    return data if fault is None else fault(data)


def _rtu_with_unit(frame: bytes, unit: int) -> bytes:
    """The same RTU frame from another unit id, with a valid CRC."""
    body = bytes([unit]) + frame[1:-2]
    return body + crc16_modbus(body).to_bytes(2, "little")


def _bound_port(server: ModbusTcpServer | ModbusSerialServer) -> int:
    """The TCP port a pymodbus listener is bound to (0 for a real serial line)."""
    sockets = getattr(server.transport, "sockets", None)
    return int(sockets[0].getsockname()[1]) if sockets else 0


class TcpEndpoint:
    """One Modbus TCP port: a fault proxy in front of a loopback pymodbus server."""

    def __init__(
        self, devices: Mapping[int, ProfileDevice], faults: Mapping[int, FaultSwitch],
        host: str = "127.0.0.1", port: int = 0,
    ) -> None:  # fmt: skip
        self.devices = devices
        self.faults = faults
        self.host = host
        self.requested_port = port
        self._server: ModbusTcpServer | None = None
        self.proxy: TcpFaultProxy | None = None

    @property
    def port(self) -> int:
        """The bound port clients connect to."""
        return self.proxy.port if self.proxy else 0

    @property
    def function_codes_seen(self) -> Counter[int]:
        """Requests received on this port so far, per Modbus function code."""
        return self.proxy.function_codes_seen if self.proxy else Counter()

    async def start(self) -> None:
        """Start the pymodbus server on a free loopback port, then the proxy."""
        sims = [pymodbus_device(d, self.faults[u], False) for u, d in self.devices.items()]
        self._server = ModbusTcpServer(sims, address=("127.0.0.1", 0))
        await self._server.serve_forever(background=True)
        backend_port = _bound_port(self._server)
        self.proxy = TcpFaultProxy(backend_port, self.faults, self.host, self.requested_port)
        await self.proxy.start()

    async def close(self) -> None:
        """Stop the proxy and the server."""
        if self.proxy is not None:
            await self.proxy.close()
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]

    def describe(self) -> str:
        """Where it listens, for people."""
        return f"modbus tcp {self.host}:{self.port}"


class SerialEndpoint:
    """One serial line (a pty, a USB adapter, or ``socket://host:port``) in Modbus RTU."""

    def __init__(
        self, devices: Mapping[int, ProfileDevice], faults: Mapping[int, FaultSwitch],
        port: str, baudrate: int = 9600, parity: str = "N", stopbits: int = 1,
    ) -> None:  # fmt: skip
        self.devices = devices
        self.faults = faults
        self.serial_port = port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self._server: ModbusSerialServer | None = None

    @property
    def port(self) -> int:
        """The bound TCP port when serving RTU over ``socket://``, else 0."""
        return _bound_port(self._server) if self._server else 0

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        switch = self.faults.get(data[0])
        if switch is None:
            return b""  # a unit nobody serves stays silent on a shared bus
        return _rtu_fault(switch.mode, data)

    async def start(self) -> None:
        """Open the serial line and start answering."""
        sims = [pymodbus_device(d, self.faults[u], True) for u, d in self.devices.items()]
        self._server = ModbusSerialServer(
            sims,
            framer=FramerType.RTU,
            port=self.serial_port,
            baudrate=self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
            trace_packet=self._trace_packet,
        )
        await self._server.serve_forever(background=True)

    async def close(self) -> None:
        """Close the serial line."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]

    def describe(self) -> str:
        """Where it listens, for people."""
        where = self.serial_port
        if self.port:
            where = f"{where.rsplit(':', 1)[0]}:{self.port}"
        return f"modbus rtu {where} {self.baudrate} 8{self.parity}{self.stopbits}"
