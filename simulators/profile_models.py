"""Which behaviour drives which shipped profile, and how its values get the profile's names.

The VFD and meter models speak one vocabulary (the ``inovance-md500`` and
``eastron-sdm630`` tag names, plus a few extras). A profile whose tags carry
the same names needs nothing more: that is the naming convention every shipped
drive and meter profile follows where the meaning is the same. What differs
(a status word in another coding, power in % of rated instead of kW, a meter's
line voltages) is computed here, one small adapter per profile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final

from simulators.vfd import VfdParams

Values = dict[str, bool | int | float | str]
Adapter = Callable[[Mapping[str, bool | int | float | str]], Values]

BEHAVIOUR_OF_PROFILE: Final = {
    "inovance-md500": "vfd",
    "invt-gd20": "vfd",
    "delta-c2000": "vfd",
    "delta-ms300": "vfd",
    "schneider-atv320": "vfd",
    "eastron-sdm630": "meter",
    "eastron-sdm120": "meter",
    "chint-dtsu666": "meter",
    "generic-counter": "counter",
}

_RATED = VfdParams()
# Inovance-style trip codes of the VFD model -> Altivar LFT codes and CiA402 ERRD codes.
_ATV_LFT: Final = {2: 9, 4: 18, 5: 17, 10: 17, 11: 17, 14: 16}
_ATV_ERRD: Final = {2: 0x2310, 4: 0x3110, 5: 0x2310, 10: 0x2310, 11: 0x2310, 14: 0x4310}


def _num(values: Mapping[str, bool | int | float | str], name: str) -> float:
    value = values.get(name, 0)
    return float(value) if not isinstance(value, str) else 0.0


def _running(values: Mapping[str, bool | int | float | str]) -> bool:
    return values.get("run_state") in (1, 2)


def _power_pct(values: Mapping[str, bool | int | float | str]) -> float:
    return 100.0 * _num(values, "output_power_kw") / _RATED.rated_power_kw


def _invt_gd20(values: Mapping[str, bool | int | float | str]) -> Values:
    fault = int(_num(values, "fault_code"))
    return {
        "run_state": 4 if fault else (1 if _running(values) else 3),
        "status_word_2": 0x0041,  # ready, command source = communication
        "identifying_code": 0x0100,  # model specific; any fixed value will do here
        "output_power_pct": round(_power_pct(values), 1),
        "do_state": 1 if _running(values) else 0,
    }


def _delta(values: Mapping[str, bool | int | float | str]) -> Values:
    running = _running(values)
    return {
        "fault_warning_code": int(_num(values, "fault_code")) & 0xFF,
        "drive_status": 0x0503 if running else 0x0500,  # bits1-0 11 running; comms bits
        "run_status_b0": running,
        "run_status_b1": running,
        "multi_step": 0,
        "counter": 0,
        "pf_angle_deg": 25.8 if running else 0.0,
    }


def _atv320(values: Mapping[str, bool | int | float | str]) -> Values:
    fault = int(_num(values, "fault_code"))
    status = 0x0008 if fault else (0x0227 if _running(values) else 0x0223)
    return {
        "status_word": status,
        "eta_operation_enabled": bool(status & 0x0004),
        "eta_fault": bool(status & 0x0008),
        "extended_status_word": 0,
        "mains_voltage_v": 400.0,
        "output_torque_pct": round(_num(values, "output_torque_pct")),
        "drive_thermal_pct": round(_num(values, "heatsink_temp_c")),
        "output_power_pct": round(_power_pct(values)),
        "last_fault_code": _ATV_LFT.get(fault, 0),
        "fault_code": _ATV_ERRD.get(fault, 0),
    }


def _phase_extras(values: Mapping[str, bool | int | float | str]) -> Values:
    out: Values = {}
    for ph in ("l1", "l2", "l3"):
        apparent = _num(values, f"{ph}_voltage_v") * _num(values, f"{ph}_current_a")
        active = _num(values, f"{ph}_power_w")
        out[f"{ph}_apparent_power_va"] = apparent
        out[f"{ph}_reactive_power_var"] = math.sqrt(max(apparent**2 - active**2, 0.0))
    return out


def _sdm120(values: Mapping[str, bool | int | float | str]) -> Values:
    extras = _phase_extras(values)
    pf = min(1.0, max(-1.0, _num(values, "l1_power_factor")))
    return {
        "voltage_v": _num(values, "l1_voltage_v"),
        "current_a": _num(values, "l1_current_a"),
        "power_w": _num(values, "l1_power_w"),
        "apparent_power_va": extras["l1_apparent_power_va"],
        "reactive_power_var": extras["l1_reactive_power_var"],
        "power_factor": pf,
        "phase_angle_deg": math.degrees(math.acos(pf)),
        "export_reactive_energy_kvarh": 0.0,
        "total_energy_kwh": _num(values, "import_energy_kwh") + _num(values, "export_energy_kwh"),
        "total_reactive_energy_kvarh": _num(values, "import_reactive_energy_kvarh"),
    }


def _dtsu666(values: Mapping[str, bool | int | float | str]) -> Values:
    out = _phase_extras(values)
    for a, b in (("l1", "l2"), ("l2", "l3"), ("l3", "l1")):
        va, vb = _num(values, f"{a}_voltage_v"), _num(values, f"{b}_voltage_v")
        # Phases 120 degrees apart: |Va - Vb| = sqrt(Va^2 + Vb^2 + Va*Vb).
        out[f"{a}{b[1]}_voltage_v"] = math.sqrt(va * va + vb * vb + va * vb)
    for ph in ("l1", "l2", "l3"):
        out[f"{ph}_import_energy_kwh"] = _num(values, "import_energy_kwh") / 3
        out[f"{ph}_export_energy_kwh"] = _num(values, "export_energy_kwh") / 3
    return out


ADAPTERS: Final[dict[str, Adapter]] = {
    "invt-gd20": _invt_gd20,
    "delta-c2000": _delta,
    "delta-ms300": _delta,
    "schneider-atv320": _atv320,
    "eastron-sdm120": _sdm120,
    "chint-dtsu666": _dtsu666,
}


def adapt(profile: str, values: Mapping[str, bool | int | float | str]) -> Values:
    """The model's ``values`` plus (overridden by) what ``profile``'s adapter computes."""
    adapter = ADAPTERS.get(profile)
    return {**values, **adapter(values)} if adapter else dict(values)
