"""Computing at the edge: per-reading filters, and the machine facts made from readings.

The machine-facts modules are pure (no I/O, no clock); each stateful one
saves its state as a small JSON-able dict and is rebuilt from it. The agent
runs them through ``agent/runtime/facts.py``.

========  ==================================================================
module    what it answers
========  ==================================================================
counters  how many pieces each read of a wrapping, resetting counter added
deadband  report by exception: a tag's deadband and heartbeat
derive    derived tags (``compute:``) on each reading, errors carried
energy    a meter's kWh per shift, per machine state and per part (exact)
facts     the records of machine facts: state intervals, counter steps
engine    one machine as reads arrive: state, alarm, count, shift events
oee       per machine and shift: times, pieces, A, P, Q, OEE, roll-ups
plan      what a machine is made of (built by the runtime from the site)
shifts    the site calendar: which shift an instant is in (local time, DST)
state     a machine's state over time, from rules or a state tag's map
========  ==================================================================
"""
