"""Per-reading processing at the edge, between a driver's reading and the buffer.

========  ==================================================================
module    what it answers
========  ==================================================================
deadband  report by exception: a tag's deadband and heartbeat
energy    a meter's kWh per shift, per machine state and per part (exact)
facts     the records of machine facts: state intervals, counter steps
oee       per machine and shift: times, pieces, A, P, Q, OEE, roll-ups
shifts    the site calendar: which shift an instant is in (local time, DST)
========  ==================================================================
"""
