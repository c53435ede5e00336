"""``edge-agent profile test``: a profile's test vectors through its driver's own decoder.

A vector is raw input as the device sends it (Modbus registers, a serial line)
and the values it must decode to, written in the profile (``vectors:``), from
the device manual's worked examples or from the profile's own scaling. Each
one prints a PASS or FAIL line; the exit code is 0 when all pass, 1 when one
fails, 2 for bad input (an invalid vector, a tag the profile does not have).

A driver that has nothing to decode (OPC UA: the server sends typed values)
has no vectors: ``profile test`` says so and exits 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from agent.site.models import Expected, ProfileVector
from agent.site.params import substitute
from agent.site.profiles import Profile, resolved_tags
from drivers.base import ConfigError, DecodesVectors, DriverSpec, Value, VectorOutcome

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_INPUT: Final = 2


@dataclass(frozen=True, slots=True)
class Report:
    """The lines to print and the exit code."""

    lines: list[str]
    code: int


def run_vectors(profile: Profile) -> Report:
    """Decode every vector of ``profile`` and compare with what it expects."""
    kind = str(profile.model.protocol.get("kind", ""))
    spec = spec_for_protocol(kind)
    if spec is None:
        return Report([f"{profile.name}: no driver speaks protocol {kind!r}"], EXIT_INPUT)
    if not isinstance(spec, DecodesVectors):
        line = f"{profile.name}: no vectors: the {kind} driver has nothing to decode"
        return Report([line], EXIT_OK)
    vectors = profile.model.vectors
    if not vectors:
        return Report([f"{profile.name}: no vectors (add some under vectors:)"], EXIT_OK)
    options = _options(profile)
    lines, code = [], EXIT_OK
    for index, vector in enumerate(vectors):
        where = f"{profile.name} vectors[{index}]"
        try:
            outcome = spec.decode_vector(options, vector.tag, _raw(vector, spec))
        except (ConfigError, ValueError) as exc:
            lines.append(f"ERROR {where}: {exc}")
            code = EXIT_INPUT
            continue
        ok, shown = _compare(vector, outcome)
        lines.append(f"{'PASS' if ok else 'FAIL'} {where} {_input(vector)} -> {shown}")
        if not ok and code == EXIT_OK:
            code = EXIT_FAILED
    passed = sum(line.startswith("PASS") for line in lines)
    lines.append(f"{profile.name}: {passed} of {len(vectors)} vectors pass")
    return Report(lines, code)


def spec_for_protocol(kind: str) -> DriverSpec | None:
    """The driver spec whose ``protocol`` is ``kind`` (a profile names no connection)."""
    from drivers.registry import kinds, spec_for

    for connection_kind in kinds():
        spec = spec_for(connection_kind)
        if spec.protocol == kind:
            return spec
    return None


def _options(profile: Profile) -> dict[str, Any]:
    defaults = profile.defaults()
    protocol = {k: substitute(v, defaults) for k, v in profile.model.protocol.items()}
    return {"protocol": protocol, "tags": resolved_tags(profile)}


def _raw(vector: ProfileVector, spec: DecodesVectors) -> list[int] | str | bytes:
    if spec.vector_input == "data":
        if vector.data is None:
            raise ValueError("this driver decodes reply bytes: give data (hex)")
        return bytes.fromhex(vector.data)
    if spec.vector_input == "registers":
        if vector.registers is None:
            raise ValueError("this driver decodes registers: give registers, not a line")
        return vector.registers
    if vector.line is None:
        raise ValueError("this driver parses lines: give line, not registers")
    return vector.line


def _input(vector: ProfileVector) -> str:
    if vector.registers is not None:
        words = " ".join(f"{w:04X}" for w in vector.registers)
        return f"{vector.tag} registers {words}"
    if vector.data is not None:
        return f"{vector.tag} data {vector.data}"
    return f"line {vector.line!r}"


def _compare(vector: ProfileVector, outcome: VectorOutcome) -> tuple[bool, str]:
    """Whether every expected value came out; what came out, with what was expected."""
    expect: dict[str, Expected] = (
        dict(vector.expect) if isinstance(vector.expect, dict) else {str(vector.tag): vector.expect}
    )
    ok, parts = True, []
    for tag, want in expect.items():
        if tag in outcome.values:
            got: Value = outcome.values[tag]
            good = _same(got, want, vector.tolerance)
            parts.append(f"{tag}={got!r}" + ("" if good else f" (expected {want!r})"))
        else:
            good = False
            reason = outcome.errors.get(tag) or next(iter(outcome.errors.values()), "no value")
            parts.append(f"{tag}: {reason} (expected {want!r})")
        ok = ok and good
    return ok, ", ".join(parts)


def _same(got: Value, want: Expected, tolerance: float) -> bool:
    # A bool is not the number 1: a coil read as a register would pass otherwise.
    if isinstance(got, bool) or isinstance(want, bool):
        return type(got) is type(want) and got == want
    if isinstance(got, int | float) and isinstance(want, int | float):
        return math.isclose(got, want, rel_tol=1e-12, abs_tol=tolerance)
    return got == want
