"""Pure DL/T 645-2007 frames: the read request, the reply, BCD values. No I/O.

A frame is ``68 A0..A5 68 C L DATA CS 16``:

- ``A0..A5``: the meter address, 12 BCD digits, sent low byte first; a high
  byte of ``AA`` is a wildcard (``AAAAAAAAAAAA`` reaches the one meter on a line);
- ``C``: the control code; a read is ``11``, its reply ``91``, a refusal ``D1``
  (bit 7: sent by the meter, bit 6: abnormal reply, bit 5: more frames follow);
- ``L``: the data length; ``DATA``: each byte sent with ``33`` added;
- ``CS``: the sum of every byte from the first ``68`` to the last data byte, mod 256.

A master wakes the line with ``FE`` bytes before a frame; a meter may send
them before its reply too. Everything is sent low byte first: the data
identifier ``02 01 01 00`` goes on the wire as ``00 01 01 02`` (+33 each).
"""

from __future__ import annotations

from dataclasses import dataclass

START = 0x68
END = 0x16
WAKE = 0xFE
OFFSET = 0x33
READ = 0x11
READ_REPLY = 0x91
READ_REFUSED = 0xD1
FROM_METER = 0x80
ABNORMAL = 0x40
FOLLOWS = 0x20
WILDCARD = 0xAA
BROADCAST = "999999999999"
HEADER_BYTES = 10  # 68, six address bytes, 68, C, L
FRAME_OVERHEAD = HEADER_BYTES + 2  # plus CS and 16
MAX_DATA = 200  # the standard's longest read reply data field

ERROR_BITS = {
    0x01: "other error",
    0x02: "no such data",
    0x04: "password error or not authorised",
    0x08: "baud rate cannot be changed",
    0x10: "too many year time zones",
    0x20: "too many day periods",
    0x40: "too many tariffs",
}


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked frame: the address as printed (high digit first), C, data with 33 removed."""

    address: str
    control: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """The meter answered the read with an abnormal reply (``D1``) and this error byte."""

    code: int

    def text(self) -> str:
        """``refused 02 no such data``: the reason given to the tag."""
        names = [name for bit, name in ERROR_BITS.items() if self.code & bit]
        return f"refused {self.code:02X} " + (", ".join(names) or "unknown error")


def checksum(data: bytes) -> int:
    """The frame checksum: the byte sum mod 256."""
    return sum(data) & 0xFF


def address_bytes(address: str) -> bytes:
    """``000000000161`` -> ``61 01 00 00 00 00`` (low byte first); ``AA`` pairs stay ``AA``."""
    if len(address) != 12:
        raise ValueError("a DL/T 645 address has 12 digits")
    pairs = [address[i : i + 2] for i in range(0, 12, 2)]
    out = bytearray()
    for pair in reversed(pairs):
        if pair.upper() == "AA":
            out.append(WILDCARD)
        elif pair.isdigit() and pair.isascii():
            out.append(int(pair, 16))  # BCD: the two digits are the two nibbles
        else:
            raise ValueError(f"{pair!r} is neither two digits nor the wildcard AA")
    return bytes(out)


def address_text(raw: bytes) -> str:
    """The inverse of :func:`address_bytes`: ``61 01 00 00 00 00`` -> ``000000000161``."""
    return "".join(f"{b:02X}" for b in reversed(raw))


def address_matches(wanted: str, got: str) -> bool:
    """Whether a reply from ``got`` answers a request to ``wanted`` (``AA`` pairs match any)."""
    return all(
        w.upper() == "AA" or w == g
        for w, g in zip(
            (wanted[i : i + 2] for i in range(0, 12, 2)),
            (got[i : i + 2] for i in range(0, 12, 2)),
            strict=True,
        )
    )


def di_bytes(di: int) -> bytes:
    """A data identifier as sent, before the 33 offset: ``0x02010100`` -> ``00 01 01 02``."""
    return di.to_bytes(4, "little")


def encode(address: str, control: int, data: bytes, preamble: int = 0) -> bytes:
    """A whole frame, ``preamble`` wake-up bytes first."""
    body = bytes([START, *address_bytes(address), START, control, len(data)])
    body += bytes((b + OFFSET) & 0xFF for b in data)
    return bytes([WAKE] * preamble) + body + bytes([checksum(body), END])


def encode_read(address: str, di: int, preamble: int = 4) -> bytes:
    """The read-data request (control 11) of one data identifier."""
    return encode(address, READ, di_bytes(di), preamble)


def find_frame(buffer: bytes | bytearray) -> tuple[Frame | None, int]:
    """The first valid frame in ``buffer`` and how many bytes it and what came before it use.

    ``(None, n)``: no complete frame yet; the first ``n`` bytes can be dropped
    (wake-up bytes, noise, a start byte that led to no valid frame).
    """
    start = 0
    while True:
        start = buffer.find(bytes([START]), start)
        if start < 0:
            return None, len(buffer)
        if len(buffer) - start < FRAME_OVERHEAD:
            return None, start
        if buffer[start + 7] != START:
            start += 1
            continue
        length = buffer[start + 9]
        end = start + FRAME_OVERHEAD + length
        if len(buffer) < end:
            return None, start
        body = bytes(buffer[start : end - 2])
        if buffer[end - 1] != END or buffer[end - 2] != checksum(body):
            start += 1
            continue
        data = bytes((b - OFFSET) & 0xFF for b in body[HEADER_BYTES:])
        return Frame(address_text(body[1:7]), body[8], data), end


def read_reply(frame: Frame, di: int) -> bytes | Refused:
    """The value bytes of a read reply to ``di`` (still BCD, low byte first), or the refusal.

    Raise ``ValueError`` when the frame is no reply to a read of ``di``.
    """
    if frame.control == READ_REFUSED:
        if len(frame.data) != 1:
            raise ValueError(f"an abnormal reply has 1 data byte, this one {len(frame.data)}")
        return Refused(frame.data[0])
    if frame.control & ~FOLLOWS != READ_REPLY:
        raise ValueError(f"control {frame.control:02X} is no reply to a read")
    if frame.control & FOLLOWS:
        raise ValueError("the reply continues in further frames, which this driver does not read")
    if frame.data[:4] != di_bytes(di):
        got = int.from_bytes(frame.data[:4], "little")
        raise ValueError(f"reply is for data identifier {got:08X}, not {di:08X}")
    return frame.data[4:]


def decode_bcd(raw: bytes, decimals: int, signed: bool) -> float | int:
    """BCD, low byte first, ``decimals`` implied decimals; with ``signed`` the top bit is the sign.

    ``01 10`` with 1 decimal is ``100.1``; ``34 12 80`` signed with 3 decimals
    is ``-1.234`` (the top bit is the sign, the rest of ``80 12 34`` is ``001234``).
    Raise ``ValueError`` for a nibble above 9 (``FF FF``: the meter has no value).
    """
    digits = bytearray(reversed(raw))
    negative = False
    if signed and digits:
        negative = bool(digits[0] & 0x80)
        digits[0] &= 0x7F
    text = digits.hex()
    if not text.isdigit():
        raise ValueError(f"not BCD: {bytes(raw).hex(' ')}")
    number = int(text)
    if negative:
        number = -number
    if decimals == 0:
        return number
    return number / float(10**decimals)
