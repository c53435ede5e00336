"""Per-reading processing at the edge, between a driver's reading and the buffer.

========  ==================================================================
module    what it answers
========  ==================================================================
deadband  report by exception: a tag's deadband and heartbeat
facts     the records of machine facts: state intervals, counter steps
========  ==================================================================
"""
