"""DL/T 645-2007 frames, byte for byte, against worked examples.

The exchanges below were captured from a meter at address 000000000161 and
published with their decoding (a "DLT645-2007 报文解析" capture: the read of
00010000 forward active energy, 000000.26 kWh, and of 02010100 phase A
voltage, 100.1 V); the checksums were recomputed by hand.
"""

from __future__ import annotations

import pytest

from drivers.dlt645.frame import (
    Frame,
    Refused,
    address_bytes,
    address_matches,
    checksum,
    decode_bcd,
    encode,
    encode_read,
    find_frame,
    read_reply,
)

H = bytes.fromhex

REQUESTS = [
    # address, DI, the frame on the wire
    ("000000000161", 0x00010000, "FE FE FE FE 68 61 01 00 00 00 00 68 11 04 33 33 34 33 14 16"),
    ("000000000161", 0x02010100, "FE FE FE FE 68 61 01 00 00 00 00 68 11 04 33 34 34 35 17 16"),
    ("000000000161", 0x02020100, "FE FE FE FE 68 61 01 00 00 00 00 68 11 04 33 34 35 35 18 16"),
]


@pytest.mark.parametrize(("address", "di", "wire"), REQUESTS)
def test_read_request_matches_the_worked_example(address: str, di: int, wire: str) -> None:
    assert encode_read(address, di) == H(wire)


def test_preamble_count_is_the_number_of_fe_bytes() -> None:
    assert encode_read("000000000161", 0x02010100, preamble=0)[:1] == b"\x68"
    assert encode_read("000000000161", 0x02010100, preamble=2)[:3] == H("FE FE 68")


def test_checksum_is_the_byte_sum_mod_256() -> None:
    body = H("68 61 01 00 00 00 00 68 11 04 33 33 34 33")
    assert checksum(body) == 0x14


def test_data_bytes_carry_the_33_offset_and_wrap() -> None:
    # 0xCD + 0x33 = 0x100 -> 0x00: the offset is mod 256 both ways.
    frame = encode("000000000001", 0x91, bytes([0x00, 0xCD, 0xFF]))
    assert frame[10:13] == H("33 00 32")
    decoded, _ = find_frame(frame)
    assert decoded is not None
    assert decoded.data == bytes([0x00, 0xCD, 0xFF])


REPLIES = [
    # reply on the wire, DI, format (decimals, signed), value
    ("68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16", 0x00010000, 2, False, 0.26),
    ("68 61 01 00 00 00 00 68 91 06 33 34 34 35 34 43 10 16", 0x02010100, 1, False, 100.1),
]


@pytest.mark.parametrize(("wire", "di", "decimals", "signed", "value"), REPLIES)
def test_reply_decodes_to_the_worked_example_value(
    wire: str, di: int, decimals: int, signed: bool, value: float
) -> None:
    frame, used = find_frame(H(wire))
    assert frame is not None
    assert used == len(H(wire))
    assert frame.address == "000000000161"
    assert frame.control == 0x91
    raw = read_reply(frame, di)
    assert isinstance(raw, bytes)
    assert decode_bcd(raw, decimals, signed) == value


def test_wake_up_bytes_and_noise_before_a_reply_are_skipped() -> None:
    wire = H("FE FE FE FE 00 68 12") + H(REPLIES[1][0])
    frame, used = find_frame(wire)
    assert frame is not None
    assert used == len(wire)
    assert read_reply(frame, 0x02010100) == H("01 10")


def test_a_bad_checksum_is_no_frame() -> None:
    wire = bytearray(H(REPLIES[1][0]))
    wire[-2] ^= 0x01
    frame, used = find_frame(wire)
    assert frame is None
    assert used >= 1  # the false start can be dropped


def test_an_incomplete_frame_waits_for_more() -> None:
    wire = H("FE FE") + H(REPLIES[1][0])[:-3]
    assert find_frame(wire) == (None, 2)


def test_error_reply_d1_carries_its_error_byte() -> None:
    wire = encode("000000000161", 0xD1, b"\x02")
    assert wire.hex(" ") == "68 61 01 00 00 00 00 68 d1 01 35 39 16"
    frame, _ = find_frame(wire)
    assert frame is not None
    refused = read_reply(frame, 0x02010100)
    assert refused == Refused(0x02)
    assert refused.text() == "refused 02 no such data"
    assert Refused(0x05).text() == "refused 05 other error, password error or not authorised"


def test_a_reply_for_another_identifier_is_refused() -> None:
    frame, _ = find_frame(H(REPLIES[1][0]))
    assert frame is not None
    with pytest.raises(ValueError, match="02010100, not 02010200"):
        read_reply(frame, 0x02010200)


def test_a_request_frame_is_no_reply() -> None:
    frame = Frame("000000000161", 0x11, H("00 01 01 02"))
    with pytest.raises(ValueError, match="no reply"):
        read_reply(frame, 0x02010100)


BCD = [
    # raw (low byte first), decimals, signed, value
    ("01 10", 1, False, 100.1),
    ("78 56 34 12", 2, False, 123456.78),
    ("34 12 00", 3, True, 1.234),
    ("34 12 80", 3, True, -1.234),  # sign bit set
    ("34 12 80", 3, False, 801.234),  # unsigned, the same bytes are the digits 801234
    ("87 09", 3, True, 0.987),
    ("01 50", 2, False, 50.01),
    ("56 34 92", 4, True, -12.3456),
    ("99 99", 0, False, 9999),
]


@pytest.mark.parametrize(("raw", "decimals", "signed", "value"), BCD)
def test_bcd_values_with_their_decimals_and_sign(
    raw: str, decimals: int, signed: bool, value: float
) -> None:
    assert decode_bcd(H(raw), decimals, signed) == value


def test_a_nibble_above_9_is_not_bcd() -> None:
    with pytest.raises(ValueError, match="not BCD"):
        decode_bcd(H("FF FF"), 1, False)


def test_address_is_sent_low_byte_first() -> None:
    assert address_bytes("123456789012") == H("12 90 78 56 34 12")


def test_wildcard_address_aa_reaches_any_meter() -> None:
    assert address_bytes("AAAAAAAAAAAA") == H("AA AA AA AA AA AA")
    assert encode_read("AAAAAAAAAAAA", 0x02010100, 0)[1:7] == H("AA AA AA AA AA AA")
    assert address_matches("AAAAAAAAAAAA", "000000000161")
    assert address_matches("AAAAAA000161", "123456000161")
    assert not address_matches("AAAAAA000161", "123456000162")
    assert not address_matches("000000000161", "000000000162")


@pytest.mark.parametrize("bad", ["12345678901", "12345678901X", "AB0000000001"])
def test_a_malformed_address_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        address_bytes(bad)
