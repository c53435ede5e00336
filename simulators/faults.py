"""Fault injection settings, switchable at runtime, and the raw frames they need.

A fault belongs to one simulated device (one unit id). It is applied on the
wire: by the TCP front proxy (:mod:`simulators.tcp_proxy`) for Modbus TCP, and
by pymodbus server hooks for Modbus RTU.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# Exception codes a Modbus server may answer with (pymodbus sends only these).
EXCEPTION_CODES: Final = frozenset({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x0A, 0x0B})


class FaultMode(enum.Enum):
    """What a faulty device does with a request."""

    NONE = "none"
    SLOW = "slow"  # answer correctly, ``delay_s`` late
    EXCEPTION = "exception"  # answer with exception ``exception_code``
    SILENT = "silent"  # never answer
    DROP = "drop"  # close the client's TCP connection (RTU: same as silent)
    GARBAGE = "garbage"  # answer with random bytes
    WRONG_TID = "wrong_tid"  # TCP: the right reply under another transaction id
    WRONG_UNIT = "wrong_unit"  # the right reply from another unit id
    SPLIT = "split"  # TCP: the right reply, written in 1-7 byte pieces (not an error)
    RESET = "reset"  # TCP: half the reply, then a connection reset (RST)
    BAD_CRC = "bad_crc"  # RTU: the right reply with a wrong CRC
    TRUNCATE = "truncate"  # RTU: the reply cut short
    NOISE = "noise"  # RTU: line noise (random bytes) before the reply


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault setting; ``Fault()`` means healthy."""

    mode: FaultMode = FaultMode.NONE
    delay_s: float = 0.0
    exception_code: int = 0x04

    def __post_init__(self) -> None:
        if self.delay_s < 0:
            raise ValueError("delay_s cannot be negative")
        if self.exception_code not in EXCEPTION_CODES:
            raise ValueError(f"exception code {self.exception_code:#04x} is not a Modbus one")

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse ``none``, ``slow:2.5``, ``exception:6``, ``silent``, ``drop``, ``garbage``."""
        name, _, arg = text.partition(":")
        mode = FaultMode(name.strip().lower())
        if mode is FaultMode.SLOW:
            return cls(mode, delay_s=float(arg or 5.0))
        if mode is FaultMode.EXCEPTION:
            code = arg.strip() or "4"
            return cls(mode, exception_code=int(code, 16 if code.lower().startswith("0x") else 10))
        return cls(mode)


FaultListener = Callable[[Fault], None]


class FaultSwitch:
    """The current fault of one device; flipped at runtime by tests or the CLI."""

    def __init__(self) -> None:
        self.fault = Fault()
        self._listeners: list[FaultListener] = []

    @property
    def mode(self) -> FaultMode:
        """The active fault mode."""
        return self.fault.mode

    def set(self, fault: Fault | FaultMode | str, **kwargs: float) -> None:
        """Switch to ``fault`` (a :class:`Fault`, a mode, or ``Fault.parse`` text)."""
        if isinstance(fault, str):
            fault = Fault.parse(fault)
        elif isinstance(fault, FaultMode):
            fault = Fault(fault, **kwargs)  # type: ignore[arg-type]
        self.fault = fault
        for listener in self._listeners:
            listener(fault)

    def clear(self) -> None:
        """Back to healthy."""
        self.set(Fault())

    def subscribe(self, listener: FaultListener) -> None:
        """Call ``listener(fault)`` whenever the fault changes."""
        self._listeners.append(listener)


# --------------------------------------------------------------------------- frames


def crc16_modbus(data: bytes) -> int:
    """Modbus RTU CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def tcp_exception_frame(transaction_id: int, unit_id: int, function_code: int, code: int) -> bytes:
    """An MBAP-framed exception response."""
    pdu = bytes([(function_code | 0x80) & 0xFF, code])
    header = transaction_id.to_bytes(2, "big") + b"\0\0" + (len(pdu) + 1).to_bytes(2, "big")
    return header + bytes([unit_id]) + pdu


def garbage(length: int = 12) -> bytes:
    """Random bytes for a garbage reply (not a valid frame, with overwhelming odds)."""
    return os.urandom(length)
