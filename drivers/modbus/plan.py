"""Pure request planning: the tags of one poll group -> the fewest Modbus reads.

Tags are grouped by function, sorted by address, and merged into one request
while the registers (or bits) read in between stay within ``max_gap`` and the
merged span stays within the per-request cap (``max_registers``, or
``max_bits`` for coils and discrete inputs; the protocol allows at most 125
registers or 2000 bits in one read).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from drivers.base import ConfigError, ConfigProblem
from drivers.modbus.config import (
    BIT_FUNCTIONS,
    PROTOCOL_MAX_BITS,
    PROTOCOL_MAX_REGISTERS,
    ModbusOptions,
    ModbusTag,
)
from drivers.modbus.decode import TagLayout

FUNCTION_ORDER = ("holding", "input", "coil", "discrete")


@dataclass(frozen=True, slots=True)
class TagSpan:
    """Where one tag lives: function space, first address, width in registers or bits."""

    name: str
    function: str
    address: int
    width: int


@dataclass(frozen=True, slots=True)
class Request:
    """One read: ``count`` registers (or bits) from ``address``.

    ``tags`` lists the tags it serves as ``(name, index)``, ``index`` being the
    tag's first register (or bit) counted from ``address``.
    """

    function: str
    address: int
    count: int
    tags: tuple[tuple[str, int], ...]

    @property
    def is_bits(self) -> bool:
        """True for coils and discrete inputs."""
        return self.function in BIT_FUNCTIONS


def plan_requests(
    spans: Iterable[TagSpan],
    *,
    max_registers: int = PROTOCOL_MAX_REGISTERS,
    max_bits: int = PROTOCOL_MAX_BITS,
    max_gap: int = 10,
) -> list[Request]:
    """Merge ``spans`` into the fewest requests; raise ConfigError for a too-wide tag."""
    reg_cap = min(max_registers, PROTOCOL_MAX_REGISTERS)
    bit_cap = min(max_bits, PROTOCOL_MAX_BITS)
    by_function: dict[str, list[TagSpan]] = {}
    for span in spans:
        by_function.setdefault(span.function, []).append(span)
    too_wide = [
        ConfigProblem(
            ("tags", span.name),
            f"needs {span.width} registers, more than max_registers ({reg_cap})",
        )
        for group in by_function.values()
        for span in group
        if span.width > (bit_cap if span.function in BIT_FUNCTIONS else reg_cap)
    ]
    if too_wide:
        raise ConfigError(too_wide)
    requests: list[Request] = []
    for function in sorted(by_function, key=_function_rank):
        cap = bit_cap if function in BIT_FUNCTIONS else reg_cap
        requests += _merge(function, by_function[function], cap, max_gap)
    return requests


def _function_rank(function: str) -> tuple[int, str]:
    rank = FUNCTION_ORDER.index(function) if function in FUNCTION_ORDER else len(FUNCTION_ORDER)
    return rank, function


def _merge(function: str, spans: list[TagSpan], cap: int, max_gap: int) -> list[Request]:
    ordered = sorted(spans, key=lambda s: (s.address, s.name))
    requests: list[Request] = []
    members: list[TagSpan] = []
    start = end = 0  # the current request covers [start, end)
    for span in ordered:
        span_end = span.address + span.width
        if members and span.address - end <= max_gap and max(end, span_end) - start <= cap:
            members.append(span)
            end = max(end, span_end)
            continue
        if members:
            requests.append(_request(function, start, end, members))
        members, start, end = [span], span.address, span_end
    if members:
        requests.append(_request(function, start, end, members))
    return requests


def _request(function: str, start: int, end: int, members: list[TagSpan]) -> Request:
    served = tuple((s.name, s.address - start) for s in members)
    return Request(function, start, end - start, served)


# --------------------------------------------------------------------------- per device


@dataclass(frozen=True, slots=True)
class PlannedRead:
    """One request of a poll group and how to decode each tag it serves."""

    request: Request
    layouts: tuple[TagLayout, ...]


def layout_of(name: str, tag: ModbusTag, index: int, options: ModbusOptions) -> TagLayout:
    """How to decode ``tag`` found ``index`` registers into a block."""
    return TagLayout(
        name=name,
        index=index,
        type=tag.type,
        order=options.order_of(tag),
        bit=tag.bit,
        length=tag.length,
        scale=tag.scale,
        value_offset=tag.offset,
        strip=tag.strip,
        invalid=options.invalid_of(tag),
    )


def plan_groups(options: ModbusOptions) -> dict[str, list[PlannedRead]]:
    """Every poll group's requests, computed once."""
    groups: dict[str, list[str]] = {}
    for name, tag in options.tags.items():
        groups.setdefault(tag.group, []).append(name)
    proto = options.protocol
    plans: dict[str, list[PlannedRead]] = {}
    for group, names in groups.items():
        spans = [_span(name, options.tags[name]) for name in names]
        requests = plan_requests(
            spans, max_registers=proto.max_registers, max_bits=proto.max_bits, max_gap=proto.max_gap
        )
        plans[group] = [
            PlannedRead(r, tuple(layout_of(n, options.tags[n], i, options) for n, i in r.tags))
            for r in requests
        ]
    return plans


def _span(name: str, tag: ModbusTag) -> TagSpan:
    return TagSpan(name, tag.function, tag.address, tag.width)
