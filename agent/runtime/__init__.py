"""What runs, in what order: the agent process and its tasks.

Start order: buffer, publishers (one per destination), status, pollers; stop in
reverse, flushing.

============  ==============================================================
module        what it answers
============  ==============================================================
process       the foreground process: signals, sd_notify, the watchdog pets
agent         ``Agent``: wires buffer, publishers, pollers, status; reload, snapshot
destinations  ``destinations(site)``: the Destination records; broker options per section
sessions      a destination's dialect session, and the device facts it announces
machines      ``plan_machines(site)``: each machine as a compute plan, refusals located
poller        ``DevicePoller``: one task per device, deadlines, backoff, isolation
stats         per-device counters, the poll-duration histogram, latest values
reload        what a SIGHUP may change live, and what needs a restart
metrics       Prometheus text and the JSON summary from the counters
metrics_http  the opt-in loopback ``GET /metrics``; summaries at QoS 0
memdiag       soak-only memory samples, imported only with ``$EDGE_AGENT_MEMDIAG``
============  ==============================================================
"""
