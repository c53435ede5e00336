"""Serial line time of Modbus RTU polls, from first principles."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.site.loader import load_site
from drivers.modbus.busload import request_time
from drivers.modbus.config import RtuConnection
from drivers.modbus.plan import Request


def test_character_time_counts_start_parity_and_stop_bits() -> None:
    assert RtuConnection(port="x", baud=9600).char_seconds() == pytest.approx(10 / 9600)
    assert RtuConnection(port="x", baud=9600, parity="E").char_seconds() == pytest.approx(11 / 9600)
    assert RtuConnection(port="x", baud=19200, stop_bits=2).char_seconds() == pytest.approx(
        11 / 19200
    )


def test_one_register_read_is_request_reply_and_two_silences() -> None:
    line = RtuConnection(port="x", baud=9600)
    read = Request("holding", 0, 1, (("a", 0),))
    # 8 request + 5 + 2 reply bytes + 2 x 3.5 characters of silence = 22 characters
    assert request_time(read, line) == pytest.approx(22 * 10 / 9600)
    assert request_time(read, line, delay=0.01) == pytest.approx(22 * 10 / 9600 + 0.01)
    coils = Request("coil", 0, 20, (("c", 0),))
    assert request_time(coils, line) == pytest.approx((8 + 5 + 3 + 7) * 10 / 9600)


def test_an_overloaded_line_is_reported_for_all_its_devices() -> None:
    case = Path(__file__).resolve().parents[2] / "cases" / "config" / "overloaded-serial-line"
    site = load_site(case / "site.yaml", env={})
    (use,) = site.links
    assert use.devices == ("meter-1", "meter-2")
    assert use.utilisation > 1.0
    assert len(site.warnings) == 1
    assert "/dev/ttyUSB0 at 1200 baud" in site.warnings[0]
