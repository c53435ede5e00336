"""Table tests of drivers.modbus.plan: tags -> the fewest reads."""

from __future__ import annotations

import pytest

from drivers.base import ConfigError
from drivers.modbus import SPEC
from drivers.modbus.plan import Request, TagSpan, plan_groups, plan_requests


def h(name: str, address: int, width: int = 1, function: str = "holding") -> TagSpan:
    return TagSpan(name, function, address, width)


def shape(requests: list[Request]) -> list[tuple[str, int, int, tuple[tuple[str, int], ...]]]:
    return [(r.function, r.address, r.count, r.tags) for r in requests]


CASES = [
    pytest.param([], {}, [], id="no tags"),
    pytest.param([h("a", 10)], {}, [("holding", 10, 1, (("a", 0),))], id="one tag"),
    pytest.param(
        [h("a", 0, 2), h("b", 2)],
        {},
        [("holding", 0, 3, (("a", 0), ("b", 2)))],
        id="adjacent tags merge",
    ),
    pytest.param(
        [h("b", 20), h("a", 0)],
        {"max_gap": 19},
        [("holding", 0, 21, (("a", 0), ("b", 20)))],
        id="unsorted input, gap equal to max_gap merges",
    ),
    pytest.param(
        [h("a", 0), h("b", 21)],
        {"max_gap": 19},
        [("holding", 0, 1, (("a", 0),)), ("holding", 21, 1, (("b", 0),))],
        id="gap one above max_gap splits",
    ),
    pytest.param(
        [h("a", 0), h("b", 1)],
        {"max_gap": 0},
        [("holding", 0, 2, (("a", 0), ("b", 1)))],
        id="max_gap 0 still merges contiguous tags",
    ),
    pytest.param(
        [h("a", 0, 2), h("b", 123, 2)],
        {"max_gap": 125},
        [("holding", 0, 125, (("a", 0), ("b", 123)))],
        id="exactly 125 registers in one request",
    ),
    pytest.param(
        [h("a", 0, 2), h("b", 124, 2)],
        {"max_gap": 125},
        [("holding", 0, 2, (("a", 0),)), ("holding", 124, 2, (("b", 0),))],
        id="126 registers split",
    ),
    pytest.param(
        [h("a", 0x7000), h("b", 0x7002), h("c", 0x7004)],
        {"max_registers": 1},
        [
            ("holding", 0x7000, 1, (("a", 0),)),
            ("holding", 0x7002, 1, (("b", 0),)),
            ("holding", 0x7004, 1, (("c", 0),)),
        ],
        id="device answering one register per request",
    ),
    pytest.param(
        [h("a", 0, 4), h("b", 4, 4), h("c", 8, 4)],
        {"max_registers": 8},
        [("holding", 0, 8, (("a", 0), ("b", 4))), ("holding", 8, 4, (("c", 0),))],
        id="cap reached, next request starts at the next tag",
    ),
    pytest.param(
        [h("b0", 5), h("b1", 5), h("b15", 5)],
        {},
        [("holding", 5, 1, (("b0", 0), ("b1", 0), ("b15", 0)))],
        id="bit tags share one register",
    ),
    pytest.param(
        [h("wide", 0, 10), h("inner", 2), h("after", 12)],
        {"max_gap": 2},
        [("holding", 0, 13, (("wide", 0), ("inner", 2), ("after", 12)))],
        id="gap measured from the end of the widest tag",
    ),
    pytest.param(
        [
            h("i", 0, function="input"),
            h("d", 0, function="discrete"),
            h("c", 0, function="coil"),
            h("h", 0),
        ],
        {},
        [
            ("holding", 0, 1, (("h", 0),)),
            ("input", 0, 1, (("i", 0),)),
            ("coil", 0, 1, (("c", 0),)),
            ("discrete", 0, 1, (("d", 0),)),
        ],
        id="one request per function space, fixed order",
    ),
    pytest.param(
        [h("c0", 0, function="coil"), h("c1999", 1999, function="coil")],
        {"max_gap": 2000},
        [("coil", 0, 2000, (("c0", 0), ("c1999", 1999)))],
        id="2000 coils in one request",
    ),
    pytest.param(
        [h("c0", 0, function="coil"), h("c2000", 2000, function="coil")],
        {"max_gap": 2000},
        [("coil", 0, 1, (("c0", 0),)), ("coil", 2000, 1, (("c2000", 0),))],
        id="2001 coils split",
    ),
    pytest.param(
        [h("c0", 0, function="coil"), h("c9", 9, function="coil")],
        {"max_bits": 8, "max_gap": 100},
        [("coil", 0, 1, (("c0", 0),)), ("coil", 9, 1, (("c9", 0),))],
        id="max_bits caps coil requests",
    ),
    pytest.param(
        [h("a", 0), h("b", 20)],
        {"max_registers": 500, "max_gap": 500},
        [("holding", 0, 21, (("a", 0), ("b", 20)))],
        id="caps above the protocol limit are clamped, still merge",
    ),
]


@pytest.mark.parametrize(("spans", "kwargs", "expected"), CASES)
def test_plan(spans: list[TagSpan], kwargs: dict[str, int], expected: list[object]) -> None:
    assert shape(plan_requests(spans, **kwargs)) == expected


def test_every_tag_is_served_exactly_once() -> None:
    spans = [h(f"t{i}", (i * 7) % 400, 1 + i % 4) for i in range(120)]
    requests = plan_requests(spans, max_registers=60, max_gap=5)
    served = [name for r in requests for name, _ in r.tags]
    assert sorted(served) == sorted(s.name for s in spans)
    by_name = {s.name: s for s in spans}
    for r in requests:
        assert 1 <= r.count <= 60
        for name, index in r.tags:
            span = by_name[name]
            assert r.address + index == span.address
            assert index + span.width <= r.count


def test_protocol_cap_holds_even_when_configured_higher() -> None:
    spans = [h("a", 0), h("b", 200)]
    requests = plan_requests(spans, max_registers=1000, max_gap=1000)
    assert all(r.count <= 125 for r in requests)


def test_tag_wider_than_max_registers_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        plan_requests([h("serial_no", 0, 20)], max_registers=10)
    assert info.value.problems[0].loc == ("tags", "serial_no")
    assert info.value.problems[0].message == "needs 20 registers, more than max_registers (10)"


def test_a_whole_register_and_its_bits_are_read_once() -> None:
    options = SPEC.parse(
        {
            "connection": {"modbus_tcp": {"host": "plc.local"}},
            "tags": {
                "status_word": {"address": 0x7010},
                "ready": {"address": 0x7010, "type": "bool", "bit": 0},
                "running": {"address": 0x7010, "type": "bool", "bit": 1},
                "fault": {"address": 0x7010, "type": "bool", "bit": 3},
                "speed": {"address": 0x7011},
            },
        }
    )
    (planned,) = plan_groups(options)["default"]
    assert (planned.request.address, planned.request.count) == (0x7010, 2)
    assert sorted(planned.request.tags) == [
        ("fault", 0), ("ready", 0), ("running", 0), ("speed", 1), ("status_word", 0)
    ]  # fmt: skip


def test_overlapping_spans_make_one_request_covering_both() -> None:
    requests = plan_requests([h("status32", 0x10, 2), h("bit_hi", 0x10, 1), h("bit_lo", 0x11, 1)])
    assert shape(requests) == [
        ("holding", 0x10, 2, (("bit_hi", 0), ("status32", 0), ("bit_lo", 1)))
    ]
