"""The status protocol, both ends, on a unix socket. Standard library only.

========  ==================================================================
module    what it answers
========  ==================================================================
document  the status document as typed dicts, one builder for the buffer part
server    serves the running agent's document and metrics on its socket
client    asks a running agent for them (``edge-agent status``, ``metrics``)
========  ==================================================================
"""
