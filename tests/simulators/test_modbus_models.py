"""Behaviour models: physical invariants over long simulated runs, and the counter rule."""

from __future__ import annotations

import itertools
import math
import struct

import pytest

from simulators.counter import CounterModel, k_max
from simulators.meter import MeterModel
from simulators.profile_device import ProfileDevice, profile_path
from simulators.vfd import VfdModel

DT = 0.1


def _run_vfd(seed: int, seconds: float) -> list[dict[str, float]]:
    model = VfdModel(seed=seed)
    return [{k: float(v) for k, v in model.step(DT).items()} for _ in range(int(seconds / DT))]


def test_vfd_invariants_over_an_hour() -> None:
    samples = _run_vfd(seed=3, seconds=3600)
    device = ProfileDevice.from_file(profile_path("inovance-md500"))
    energy = [s["energy_kwh"] for s in samples]
    assert all(b >= a for a, b in itertools.pairwise(energy))
    assert energy[-1] > 0
    for s in samples:
        assert 0.0 <= s["running_freq_hz"] <= 50.0
        assert s["run_state"] in (1.0, 3.0)
        assert 480.0 < s["dc_bus_v"] < 560.0
        if s["fault_code"]:
            assert s["running_freq_hz"] == 0.0
            assert s["run_state"] == 3.0
        if s["running_freq_hz"] == 0.0:
            assert s["output_current_a"] == 0.0
    # every value fits its register (encoding raises otherwise)
    for s in samples[::50]:
        device.update(s)
    assert max(s["running_freq_hz"] for s in samples) >= 30.0
    assert max(s["motor_speed_rpm"] for s in samples) > 800


def test_vfd_ramps_trips_and_recovers() -> None:
    samples = _run_vfd(seed=3, seconds=3600)
    freqs = [s["running_freq_hz"] for s in samples]
    steps = [b - a for a, b in itertools.pairwise(freqs)]
    # ramps: frequency rises at most max/accel_time per second, except at trips (drop to 0)
    ramp = 50.0 / 8.0 * DT + 0.01  # +0.01: values are rounded to the register's 0.01 Hz
    assert max(steps) <= ramp
    for step, sample in zip(steps, samples[1:], strict=True):
        assert step >= -ramp or sample["fault_code"], "only a trip stops faster than the ramp"
    faults = [s["fault_code"] for s in samples]
    assert any(faults), "an hour of running should trip at least once"
    first = next(i for i, f in enumerate(faults) if f)
    assert any(f == 0 for f in faults[first:]), "a fault clears after a while"
    stops = sum(1 for a, b in itertools.pairwise(freqs) if a > 0 and b == 0)
    assert stops >= 3
    hot = max(s["heatsink_temp_c"] for s in samples)
    assert hot > samples[0]["heatsink_temp_c"] + 5


def test_vfd_is_reproducible_per_seed() -> None:
    assert _run_vfd(7, 120) == _run_vfd(7, 120)
    assert _run_vfd(7, 120) != _run_vfd(8, 120)


def test_meter_invariants() -> None:
    model = MeterModel(seed=1)
    device = ProfileDevice.from_file(profile_path("eastron-sdm630"))
    last_import = -1.0
    for _ in range(20_000):
        v = {k: float(x) for k, x in model.step(DT).items()}
        assert v["import_energy_kwh"] >= last_import
        last_import = v["import_energy_kwh"]
        assert 49.7 < v["frequency_hz"] < 50.3
        for ph in ("l1", "l2", "l3"):
            assert 218.0 < v[f"{ph}_voltage_v"] < 242.0
            expected = v[f"{ph}_voltage_v"] * v[f"{ph}_current_a"] * v[f"{ph}_power_factor"]
            assert math.isclose(v[f"{ph}_power_w"], expected, rel_tol=1e-9)
        total = v["l1_power_w"] + v["l2_power_w"] + v["l3_power_w"]
        assert math.isclose(v["total_power_w"], total, rel_tol=1e-9)
        assert 0.0 < v["total_power_factor"] <= 1.0
    device.update(v)
    word = device.read_registers("input", 0x0048, 2)
    assert word is not None
    as_float = struct.unpack(">f", struct.pack(">HH", *word))[0]
    assert math.isclose(as_float, v["import_energy_kwh"], rel_tol=1e-6)


def test_meter_import_energy_as_float32_never_decreases() -> None:
    model = MeterModel(seed=2)
    device = ProfileDevice.from_file(profile_path("eastron-sdm630"))
    seen = []
    for _ in range(5_000):
        device.update(model.step(DT))
        words = device.read_registers("input", 0x0048, 2)
        assert words is not None
        seen.append(struct.unpack(">f", struct.pack(">HH", *words))[0])
    assert all(b >= a for a, b in itertools.pairwise(seen))
    assert seen[-1] > seen[0]


def test_counter_values_identify_their_tags() -> None:
    device = ProfileDevice.from_file(profile_path("generic-counter"))
    model = CounterModel(device.tags.values())
    for tick in range(1, 200):
        values = model.step()
        for index, (name, value) in enumerate(values.items()):
            assert device.tags[name].index == index
            assert int(value) % 1000 == index
            assert int(value) // 1000 == tick % (k_max(device.tags[name].type, index) + 1)
        device.update(values)


@pytest.mark.parametrize(("type_name", "index", "expected"), [
    ("uint16", 9, 65), ("uint16", 536, 64), ("int16", 0, 32), ("uint32", 10, 4294967),
    ("float32", 12, 16000),
])  # fmt: skip
def test_counter_wraps_inside_the_type(type_name: str, index: int, expected: int) -> None:
    assert k_max(type_name, index) == expected


def test_counter_wraps_back_to_k_zero() -> None:
    device = ProfileDevice.from_file(profile_path("generic-counter"))
    t0 = device.tags["t0"]
    assert CounterModel.raw(t0, 65) == 65_000
    assert CounterModel.raw(t0, 66) == 0
