"""Simulated shop-floor equipment (VFD-driven motor, energy meter, counter device).

See README.md in this folder for scripted timelines (``simulators.timeline``).

Simulators never import ``agent`` or ``drivers``: they encode register values
with their own code, so a symmetric byte-order bug cannot hide.
"""

from simulators.faults import Fault, FaultMode, FaultSwitch
from simulators.profile_device import ProfileDevice, TagSpec
from simulators.run import RunningDevice, RunningSimulators, SimDevice, run_simulators
from simulators.timeline import Step, Timeline, TimelineError

__all__ = [
    "Fault",
    "FaultMode",
    "FaultSwitch",
    "ProfileDevice",
    "RunningDevice",
    "RunningSimulators",
    "SimDevice",
    "Step",
    "TagSpec",
    "Timeline",
    "TimelineError",
    "run_simulators",
]
