"""A simulated Modbus device built from a profile YAML file.

The profile is read with ``yaml.safe_load`` and only the keys a simulator
needs are looked at; validation is the agent's job, not this module's. The
device holds a register image (holding and input registers, coils, discrete
inputs) and turns engineering values into raw words with :mod:`simulators.encode`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from simulators.encode import (
    FLOAT_TYPES,
    NUMERIC_TYPES,
    encode_number,
    encode_string,
    register_count,
)
from simulators.profile_library import fill_params, merged

FUNCTIONS: Final = ("holding", "input", "coil", "discrete")
BIT_FUNCTIONS: Final = frozenset({"coil", "discrete"})
PROFILES_DIR: Final = Path(__file__).resolve().parent.parent / "config" / "profiles"

Scalar = bool | int | float | str


@dataclass(frozen=True, slots=True)
class TagSpec:
    """The addressing and encoding of one tag, as the simulator needs it."""

    name: str
    index: int
    address: int
    function: str
    type: str
    byte_order: str
    bit: int | None = None
    length: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    writable: bool = False

    @property
    def registers(self) -> range:
        """Register (or bit) addresses this tag occupies."""
        if self.function in BIT_FUNCTIONS:
            return range(self.address, self.address + 1)
        return range(self.address, self.address + register_count(self.type, self.length))

    def to_raw(self, value: Scalar) -> Scalar:
        """Invert ``value = raw * scale + offset``; integers are rounded."""
        if self.type in ("bool", "string"):
            return bool(value) if self.type == "bool" else str(value)
        if isinstance(value, str):
            raise ValueError(f"{self.name}: expected a number, got {value!r}")
        raw = (float(value) - self.offset) / self.scale
        return raw if self.type in FLOAT_TYPES else round(raw)


def load_profile(path: str | Path, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a profile YAML file into a plain dict, ``extends`` merged and params filled in."""
    data = fill_params(merged(Path(path)), params or {})
    if not isinstance(data.get("tags"), dict) or not data["tags"]:
        raise ValueError(f"{path}: not a profile (no 'tags' mapping)")
    return data


def profile_path(name: str) -> Path:
    """Path of a profile shipped in ``config/profiles`` (``"inovance-md500"``)."""
    return PROFILES_DIR / f"{name}.yaml"


def _tag_spec(name: str, index: int, raw: Mapping[str, Any], byte_order: str) -> TagSpec:
    function = str(raw.get("function", "holding"))
    if function not in FUNCTIONS:
        raise ValueError(f"tag {name}: unknown function {function!r}")
    type_name = str(raw.get("type", "bool" if function in BIT_FUNCTIONS else "uint16"))
    if type_name not in NUMERIC_TYPES | {"bool", "string"}:
        raise ValueError(f"tag {name}: unknown type {type_name!r}")
    return TagSpec(
        name=name,
        index=index,
        address=int(raw["address"]),
        function=function,
        type=type_name,
        byte_order=str(raw.get("byte_order", byte_order)),
        bit=None if raw.get("bit") is None else int(raw["bit"]),
        length=None if raw.get("length") is None else int(raw["length"]),
        scale=float(raw.get("scale", 1.0)),
        offset=float(raw.get("offset", 0.0)),
        writable=bool(raw.get("writable", False)),
    )


def _fill_gaps(addresses: Iterable[int], gap_fill: int) -> set[int]:
    """Addresses plus the holes of at most ``gap_fill`` between them.

    Real devices answer for whole address ranges, not only for the registers a
    profile names; an agent that coalesces reads across small holes must work.
    """
    ordered = sorted(set(addresses))
    valid = set(ordered)
    for low, high in itertools.pairwise(ordered):
        if 1 < high - low <= gap_fill + 1:
            valid.update(range(low + 1, high))
    return valid


class ProfileDevice:
    """Register image of one device, addressed like the profile says.

    ``update({tag: value})`` encodes engineering values; tags the profile does
    not define are ignored, so one behaviour model can feed several profiles.
    Reads of addresses outside the image return ``None`` (the server answers
    "illegal data address").
    """

    def __init__(
        self,
        profile: Mapping[str, Any],
        extra_tags: Mapping[str, Mapping[str, Any]] | None = None,
        gap_fill: int = 16,
    ) -> None:
        protocol = profile.get("protocol") or {}
        self.name: str = str(profile.get("profile", "device"))
        self.unit_id: int = int(protocol.get("unit_id", 1))
        self.byte_order: str = str(protocol.get("byte_order", "ABCD"))
        raw_tags = {**profile["tags"], **(extra_tags or {})}
        self.tags: dict[str, TagSpec] = {
            name: _tag_spec(name, index, spec, self.byte_order)
            for index, (name, spec) in enumerate(raw_tags.items())
        }
        self.registers: dict[str, dict[int, int]] = {"holding": {}, "input": {}}
        self.bits: dict[str, dict[int, bool]] = {"coil": {}, "discrete": {}}
        self.writable: dict[str, set[int]] = {f: set() for f in FUNCTIONS}
        self.values: dict[str, Scalar] = {}
        """The last engineering value given to each tag by :meth:`update`."""
        self.refresh: Callable[[], None] | None = None
        """Called before every read: a scripted device brings its image up to the instant."""
        for function in FUNCTIONS:
            used = [a for t in self.tags.values() if t.function == function for a in t.registers]
            valid = _fill_gaps(used, gap_fill)
            if function in BIT_FUNCTIONS:
                self.bits[function].update(dict.fromkeys(valid, False))
            else:
                self.registers[function].update(dict.fromkeys(valid, 0))
            for tag in self.tags.values():
                if tag.function == function and tag.writable:
                    self.writable[function].update(tag.registers)

    @classmethod
    def from_file(
        cls, path: str | Path, extra_tags: Mapping[str, Mapping[str, Any]] | None = None
    ) -> ProfileDevice:
        """Build a device from a profile YAML file."""
        return cls(load_profile(path), extra_tags)

    def update(self, values: Mapping[str, Scalar]) -> None:
        """Encode engineering values of the named tags into the image (``values`` keeps them)."""
        for name, value in values.items():
            tag = self.tags.get(name)
            if tag is not None:
                self._store(tag, tag.to_raw(value))
                self.values[name] = value

    def _store(self, tag: TagSpec, raw: Scalar) -> None:
        if tag.function in BIT_FUNCTIONS:
            self.bits[tag.function][tag.address] = bool(raw)
            return
        table = self.registers[tag.function]
        if tag.type == "bool":
            if tag.bit is None:
                table[tag.address] = int(bool(raw))
            else:
                mask = 1 << tag.bit
                word = table[tag.address]
                table[tag.address] = (word | mask) if raw else (word & ~mask)
            return
        if tag.type == "string":
            words = encode_string(str(raw), register_count("string", tag.length), tag.byte_order)
        else:
            assert not isinstance(raw, str)
            words = encode_number(raw, tag.type, tag.byte_order)
        for address, word in zip(tag.registers, words, strict=True):
            table[address] = word

    def read_registers(self, function: str, address: int, count: int) -> list[int] | None:
        """Words at ``address..address+count-1``, or ``None`` if any is unmapped."""
        if self.refresh is not None:
            self.refresh()
        table = self.registers[function]
        span = range(address, address + count)
        if any(a not in table for a in span):
            return None
        return [table[a] for a in span]

    def read_bits(self, function: str, address: int, count: int) -> list[bool] | None:
        """Bits at ``address..address+count-1``, or ``None`` if any is unmapped."""
        if self.refresh is not None:
            self.refresh()
        table = self.bits[function]
        span = range(address, address + count)
        if any(a not in table for a in span):
            return None
        return [table[a] for a in span]

    def can_write(self, function: str, address: int, count: int) -> bool:
        """True when every address of the span belongs to a writable tag."""
        return all(a in self.writable[function] for a in range(address, address + count))

    def write_registers(self, address: int, words: Iterable[int]) -> None:
        """Store words written by a client into holding registers."""
        for offset, word in enumerate(words):
            self.registers["holding"][address + offset] = int(word) & 0xFFFF

    def write_bits(self, address: int, bits: Iterable[bool]) -> None:
        """Store coils written by a client."""
        for offset, bit in enumerate(bits):
            self.bits["coil"][address + offset] = bool(bit)
