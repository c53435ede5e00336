"""Derived tags: values computed from other tags of the same reading, errors carried over.

A profile (or a site's device entry) declares derived tags under ``compute:``,
each a formula of :mod:`agent.formula` compiled when the site is loaded. The
poller hands every reading of the device to :meth:`Deriver.apply`, right
after the driver's read and before the deadband filter, so derived tags are
filtered, buffered and published like the tags read.

A derived value is computed only from the reading it joins, never from an
older one. A derived tag whose inputs are not in the reading at all (another
poll group) is left out of it. Otherwise it is a value, or an error with a
short reason, and never a stale or invented number:

* an input in error: ``input p_kw: timeout`` (the input's own reason);
* an input missing from the reading: ``input p_kw: not in this reading``;
* an input NaN or infinite: ``input p_kw: NaN``;
* the formula fails: ``division by zero``, ``sqrt of a negative number``,
  ``input mode: text, not a number``, ``result is not finite``...

Derived tags are computed in declaration order, so one may use a derived tag
declared above it (its error then becomes ``input apparent_kva: ...``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from agent.formula import EvalError, Formula
from drivers.base import Reading, Value

__all__ = ["Derivation", "Deriver"]


@dataclass(frozen=True, slots=True)
class Derivation:
    """One derived tag: its name and its compiled formula."""

    name: str
    formula: Formula


class Deriver:
    """The derived tags of one device, applied to each of its readings. Stateless."""

    def __init__(self, derivations: Sequence[Derivation]) -> None:
        self._steps = tuple((d.name, d.formula.inputs, d.formula.evaluate) for d in derivations)

    @property
    def active(self) -> bool:
        """False when the device has no derived tag (readings pass unchanged)."""
        return bool(self._steps)

    def apply(self, reading: Reading) -> Reading:
        """``reading`` with its derived values and errors added (a new Reading; the same
        object when the device has no derived tag or the reading feeds none of them)."""
        if not self._steps:
            return reading
        values = reading.values
        errors = reading.errors
        out_values: dict[str, Value] | None = None
        out_errors: dict[str, str] | None = None
        for name, inputs, evaluate in self._steps:
            env = values if out_values is None else out_values
            bad = errors if out_errors is None else out_errors
            if not any(i in env or i in bad for i in inputs):
                continue  # another group's reading: this tag is not part of it
            reason = _inputs_problem(inputs, env, bad)
            if reason is None:
                try:
                    result = evaluate(env)
                except EvalError as exc:
                    reason = str(exc)
                except ZeroDivisionError:
                    reason = "division by zero"
                except OverflowError:
                    reason = "result too large"
                else:
                    if out_values is None:
                        out_values = dict(values)
                    out_values[name] = result
                    continue
            if out_errors is None:
                out_errors = dict(errors)
            out_errors[name] = reason
        if out_values is None and out_errors is None:
            return reading
        return Reading(
            reading.ts,
            values if out_values is None else out_values,
            errors if out_errors is None else out_errors,
            reading.clock,
        )


def _inputs_problem(
    inputs: tuple[str, ...], values: dict[str, Value], errors: dict[str, str]
) -> str | None:
    """Why these inputs cannot be used (the first bad one, in formula order), or None."""
    for name in inputs:
        if name in errors:
            return f"input {name}: {errors[name]}"
        if name not in values:
            return f"input {name}: not in this reading"
        value = values[name]
        if isinstance(value, float) and not math.isfinite(value):
            return f"input {name}: {'NaN' if math.isnan(value) else 'infinite'}"
    return None
