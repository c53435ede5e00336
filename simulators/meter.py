"""Behaviour of a three-phase energy meter, time-stepped and reproducible.

Phase voltages wander around 230 V, currents follow a slowly varying load,
power is V * I * PF per phase, the frequency stays near 50 Hz, and the import
counters integrate power, so they only grow. The site only consumes, so the
export counter keeps its initial value. Values are named after the
``eastron-sdm630`` profile's tags.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

Values = dict[str, bool | int | float | str]
PHASES = ("l1", "l2", "l3")


@dataclass(frozen=True, slots=True)
class MeterParams:
    """Nominal supply and load settings of the simulated meter."""

    nominal_v: float = 230.0
    nominal_hz: float = 50.0
    current_range_a: tuple[float, float] = (2.0, 60.0)
    pf_range: tuple[float, float] = (0.80, 0.98)


def _walk(rng: random.Random, value: float, sigma: float, low: float, high: float) -> float:
    return min(high, max(low, value + rng.gauss(0.0, sigma)))


class MeterModel:
    """Pure model: ``step(dt)`` advances time and returns tag -> value."""

    def __init__(self, seed: int = 0, params: MeterParams | None = None) -> None:
        self.params = params or MeterParams()
        self._rng = random.Random(seed)
        low, high = self.params.current_range_a
        self.voltage = dict.fromkeys(PHASES, self.params.nominal_v)
        self.current = {ph: self._rng.uniform(low, high / 2) for ph in PHASES}
        self.pf = {ph: self._rng.uniform(*self.params.pf_range) for ph in PHASES}
        self.freq_hz = self.params.nominal_hz
        self.import_kwh = round(self._rng.uniform(1_000.0, 50_000.0), 1)
        self.export_kwh = round(self._rng.uniform(0.0, 50.0), 1)
        self.import_kvarh = round(self.import_kwh * 0.3, 1)

    def step(self, dt: float) -> Values:
        """Advance ``dt`` seconds and return the new values."""
        if dt < 0:
            raise ValueError("time only moves forward")
        p, rng, scale = self.params, self._rng, math.sqrt(max(dt, 0.0))
        hz = p.nominal_hz
        self.freq_hz = _walk(rng, self.freq_hz, 0.01 * scale, hz - 0.2, hz + 0.2)
        v_low, v_high = 0.95 * p.nominal_v, 1.05 * p.nominal_v
        values: Values = {}
        total_p = total_s = total_q = 0.0
        for ph in PHASES:
            self.voltage[ph] = _walk(rng, self.voltage[ph], 0.3 * scale, v_low, v_high)
            self.current[ph] = _walk(rng, self.current[ph], 0.8 * scale, *p.current_range_a)
            self.pf[ph] = _walk(rng, self.pf[ph], 0.005 * scale, *p.pf_range)
            apparent = self.voltage[ph] * self.current[ph]
            active = apparent * self.pf[ph]
            total_p, total_s = total_p + active, total_s + apparent
            total_q += math.sqrt(max(apparent**2 - active**2, 0.0))
            values[f"{ph}_voltage_v"] = self.voltage[ph]
            values[f"{ph}_current_a"] = self.current[ph]
            values[f"{ph}_power_w"] = active
            values[f"{ph}_power_factor"] = self.pf[ph]
        self.import_kwh += total_p / 1000.0 * dt / 3600.0
        self.import_kvarh += total_q / 1000.0 * dt / 3600.0
        values.update(
            total_power_w=total_p,
            total_apparent_power_va=total_s,
            total_reactive_power_var=total_q,
            total_power_factor=total_p / total_s if total_s else 1.0,
            frequency_hz=self.freq_hz,
            import_energy_kwh=self.import_kwh,
            export_energy_kwh=self.export_kwh,
            import_reactive_energy_kvarh=self.import_kvarh,
        )
        return values
