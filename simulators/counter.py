"""A device whose every value identifies its tag, for the fault tests.

For a tag at position ``index`` in the profile, the raw value is
``index + 1000 * k`` where ``k`` goes up by one every tick and wraps inside the
type's range, so ``raw % 1000 == index`` always holds. A value that lands on the
wrong tag, a stale value or a byte-order mix-up is caught at once. Bool tags
toggle every tick; string tags read ``"<index>/<k>"``.
"""

from __future__ import annotations

from collections.abc import Iterable

from simulators.encode import INTEGER_RANGES
from simulators.profile_device import TagSpec

Values = dict[str, bool | int | float | str]

# Largest k for which index + 1000 * k is still exact in a float of that width.
_FLOAT_K_MAX = {"float32": 16_000, "float64": 9_000_000_000_000}


def k_max(type_name: str, index: int) -> int:
    """Largest ``k`` such that ``index + 1000 * k`` fits the type (non-negative)."""
    if type_name in INTEGER_RANGES:
        return (INTEGER_RANGES[type_name][1] - index) // 1000
    return _FLOAT_K_MAX.get(type_name, 1_000_000)


class CounterModel:
    """Pure model: every ``step`` is one tick, whatever ``dt`` is."""

    def __init__(self, tags: Iterable[TagSpec]) -> None:
        self.tags = sorted(tags, key=lambda t: t.index)
        for tag in self.tags:
            if tag.index >= 1000:
                raise ValueError("the counter invariant needs fewer than 1000 tags")
        self.tick = 0

    def step(self, dt: float = 0.0) -> Values:
        """Advance one tick and return tag -> engineering value."""
        _ = dt
        self.tick += 1
        return {tag.name: self.value(tag, self.tick) for tag in self.tags}

    @staticmethod
    def raw(tag: TagSpec, tick: int) -> bool | int | str:
        """The self-identifying raw value of ``tag`` at ``tick``."""
        k = tick % (k_max(tag.type, tag.index) + 1)
        if tag.type == "bool":
            return tick % 2 == 1
        if tag.type == "string":
            return f"{tag.index}/{k}"
        return tag.index + 1000 * k

    @classmethod
    def value(cls, tag: TagSpec, tick: int) -> bool | int | float | str:
        """Engineering value (``raw * scale + offset``) of ``tag`` at ``tick``."""
        raw = cls.raw(tag, tick)
        if isinstance(raw, bool | str) or (tag.scale == 1.0 and tag.offset == 0.0):
            return raw
        return raw * tag.scale + tag.offset
