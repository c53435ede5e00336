"""Behaviour of a VFD-driven induction motor, time-stepped and reproducible.

The drive starts, ramps its output frequency to a set point over the
acceleration time, runs under a varying load, stops now and then (ramping
down), and trips on a fault once in a while (coasts to a stop, holds the fault
code, resets itself later). Values are named after the ``inovance-md500``
profile's tags; the temperatures and the energy counter carry extra names
(``heatsink_temp_c``, ``motor_temp_c``, ``energy_kwh``) that a site can map
onto registers of its own.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass

Values = dict[str, bool | int | float | str]

# Illustrative Inovance-style trip codes (overcurrent, overvoltage, drive and motor
# overload, module overheat); the real list is the drive's F9-14 table.
FAULT_CODES = (2, 4, 5, 10, 11, 14)


class DriveState(enum.Enum):
    """Where the drive's run/stop state machine is."""

    STOPPED = "stopped"
    ACCELERATING = "accelerating"
    RUNNING = "running"
    DECELERATING = "decelerating"
    FAULTED = "faulted"


@dataclass(frozen=True, slots=True)
class VfdParams:
    """Nameplate and behaviour settings of the simulated drive and motor."""

    max_freq_hz: float = 50.0
    set_points_hz: tuple[float, ...] = (30.0, 40.0, 45.0, 50.0)
    accel_time_s: float = 8.0  # 0 -> max frequency
    decel_time_s: float = 8.0  # max frequency -> 0
    rated_voltage_v: float = 380.0
    rated_current_a: float = 15.0
    rated_power_kw: float = 7.5
    pole_pairs: int = 2
    rated_slip: float = 0.03
    dc_bus_v: float = 540.0
    ambient_c: float = 30.0
    stopped_s: tuple[float, float] = (3.0, 12.0)
    running_s: tuple[float, float] = (20.0, 60.0)
    fault_rate_per_s: float = 1 / 300
    fault_hold_s: tuple[float, float] = (8.0, 25.0)


class VfdModel:
    """Pure model: ``step(dt)`` advances time and returns tag -> value."""

    def __init__(self, seed: int = 0, params: VfdParams | None = None) -> None:
        self.params = params or VfdParams()
        self._rng = random.Random(seed)
        self.state = DriveState.STOPPED
        self.time_s = 0.0
        self.freq_hz = 0.0
        self.set_point_hz = self.params.set_points_hz[-1]
        self.load = 0.5
        self.fault_code = 0
        self.heatsink_c = self.params.ambient_c
        self.motor_c = self.params.ambient_c
        self.energy_kwh = 0.0
        self.scripted = False
        """True once :meth:`command` took over: no random starts, stops or trips, no ramps."""
        self._timer_s = self._rng.uniform(*self.params.stopped_s)

    def command(self, run: bool, freq_hz: float, fault: int = 0) -> None:
        """Follow a script from now on: trip on ``fault`` (0 = none), else run at ``freq_hz``
        while ``run`` holds, else stop. The output frequency follows at once (no ramp),
        so the run and fault words a script asks for are served from the next step."""
        self.scripted = True
        if fault:
            self.state, self.fault_code, self.freq_hz = DriveState.FAULTED, fault, 0.0
        elif run:
            self.state, self.fault_code = DriveState.RUNNING, 0
            self.set_point_hz = self.freq_hz = freq_hz
        else:
            self.state, self.fault_code, self.freq_hz = DriveState.STOPPED, 0, 0.0

    def step(self, dt: float) -> Values:
        """Advance ``dt`` seconds and return the new values."""
        if dt < 0:
            raise ValueError("time only moves forward")
        self.time_s += dt
        if not self.scripted:
            self._advance_state(dt)
            self._advance_frequency(dt)
        self.load = min(1.0, max(0.2, self.load + self._rng.gauss(0.0, 0.05) * math.sqrt(dt)))
        values = self._electrical()
        self._advance_thermal(dt, values["output_power_kw"])
        self.energy_kwh += max(0.0, float(values["output_power_kw"])) * dt / 3600.0
        values.update(
            heatsink_temp_c=round(self.heatsink_c, 1),
            motor_temp_c=round(self.motor_c, 1),
            energy_kwh=self.energy_kwh,
        )
        return values

    # ----------------------------------------------------------------- state machine

    def _advance_state(self, dt: float) -> None:
        p = self.params
        self._timer_s -= dt
        moving = self.state in (DriveState.ACCELERATING, DriveState.RUNNING)
        if moving and self._rng.random() < p.fault_rate_per_s * dt:
            self.state = DriveState.FAULTED
            self.fault_code = self._rng.choice(FAULT_CODES)
            self.freq_hz = 0.0  # a trip coasts the motor: the output stops at once
            self._timer_s = self._rng.uniform(*p.fault_hold_s)
        elif self.state is DriveState.FAULTED and self._timer_s <= 0:
            self.fault_code = 0
            self._enter_stopped()
        elif self.state is DriveState.STOPPED and self._timer_s <= 0:
            self.set_point_hz = self._rng.choice(p.set_points_hz)
            self.state = DriveState.ACCELERATING
        elif self.state is DriveState.RUNNING and self._timer_s <= 0:
            self.state = DriveState.DECELERATING

    def _enter_stopped(self) -> None:
        self.state = DriveState.STOPPED
        self._timer_s = self._rng.uniform(*self.params.stopped_s)

    def _advance_frequency(self, dt: float) -> None:
        p = self.params
        if self.state is DriveState.ACCELERATING:
            rate = p.max_freq_hz / p.accel_time_s
            self.freq_hz = min(self.set_point_hz, self.freq_hz + rate * dt)
            if self.freq_hz >= self.set_point_hz:
                self.state = DriveState.RUNNING
                self._timer_s = self._rng.uniform(*p.running_s)
        elif self.state is DriveState.DECELERATING:
            self.freq_hz = max(0.0, self.freq_hz - p.max_freq_hz / p.decel_time_s * dt)
            if self.freq_hz <= 0.0:
                self._enter_stopped()

    # ----------------------------------------------------------------- physics

    def _electrical(self) -> Values:
        p = self.params
        ratio = self.freq_hz / p.max_freq_hz
        energised = self.freq_hz > 0.0
        accel_torque = 0.3 if self.state is DriveState.ACCELERATING else 0.0
        torque = (self.load + accel_torque) if energised else 0.0
        power_kw = p.rated_power_kw * min(torque, 1.5) * ratio
        current_a = p.rated_current_a * (0.35 + 0.65 * min(torque, 1.5)) if energised else 0.0
        slip = p.rated_slip * self.load if energised else 0.0
        shaft_hz = self.freq_hz * (1.0 - slip)
        ripple = 4.0 * math.sin(2 * math.pi * 0.7 * self.time_s) + self._rng.gauss(0.0, 1.0)
        running = self.state in (
            DriveState.ACCELERATING,
            DriveState.RUNNING,
            DriveState.DECELERATING,
        )
        return {
            "running_freq_hz": round(self.freq_hz, 2),
            "set_freq_hz": self.set_point_hz,
            "dc_bus_v": round(p.dc_bus_v - 12.0 * power_kw / p.rated_power_kw + ripple, 1),
            "output_voltage_v": round(p.rated_voltage_v * ratio),
            "output_current_a": round(current_a * (1 + self._rng.gauss(0.0, 0.01)), 2)
            if energised
            else 0.0,
            "output_power_kw": round(power_kw, 1),
            "output_torque_pct": round(100.0 * min(torque, 1.5), 1),
            "di_state": 1 if running else 0,  # DI1 = forward run command
            "feedback_speed_hz": round(shaft_hz, 2),
            "motor_speed_rpm": round(60.0 * shaft_hz / p.pole_pairs),
            "run_state": 1 if running else 3,
            "fault_code": self.fault_code,
        }

    def _advance_thermal(self, dt: float, power_kw: float | int | bool | str) -> None:
        p = self.params
        share = max(0.0, float(power_kw)) / p.rated_power_kw
        # First-order lags: the heatsink follows the load within minutes, the motor slower.
        self.heatsink_c += (p.ambient_c + 35.0 * share - self.heatsink_c) * min(1.0, dt / 120.0)
        self.motor_c += (p.ambient_c + 55.0 * share - self.motor_c) * min(1.0, dt / 600.0)
