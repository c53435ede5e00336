"""Simulated shop-floor equipment (VFD-driven motor, energy meter, counter device).

Simulators never import ``agent`` or ``drivers``: they encode register values
with their own code, so a symmetric byte-order bug cannot hide.
"""

from simulators.faults import Fault, FaultMode, FaultSwitch
from simulators.profile_device import ProfileDevice, TagSpec
from simulators.run import RunningDevice, RunningSimulators, SimDevice, run_simulators

__all__ = [
    "Fault",
    "FaultMode",
    "FaultSwitch",
    "ProfileDevice",
    "RunningDevice",
    "RunningSimulators",
    "SimDevice",
    "TagSpec",
    "run_simulators",
]
