"""Per-reading processing at the edge, between a driver's reading and the buffer.

========  ==================================================================
module    what it answers
========  ==================================================================
counters  how many pieces each read of a wrapping, resetting counter added
deadband  report by exception: a tag's deadband and heartbeat
facts     the records of machine facts: state intervals, counter steps
state     a machine's state over time, from rules or a state tag's map
========  ==================================================================
"""
