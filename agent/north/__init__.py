"""North side: what leaves the box. "Why did this not publish?" is answered here.

The publisher takes committed batches from the buffer in seq order, keeps a
QoS 1 window in flight and acknowledges each to the buffer only after its
PUBACK. paho-mqtt is imported by ``link.py`` (the publisher's connection) and
``listen.py`` (the commissioning subscriber) only.

=========  ================================================================
module     what it answers
=========  ================================================================
publisher  the window, acks after PUBACK, backoff, the stalled-link check
health     what ended connections say: backoff reset, storm logging, likely cause
link       the paho-mqtt connection driven by the asyncio loop; birth, will, TLS
options    broker options, publisher counters, error sentences (no paho)
probe      a paho-free MQTT CONNECT probe for ``edge-agent doctor``
decoding   any dialect's payload decoded; buffer-seq and Sparkplug-seq gaps
listen     the subscriber of ``edge-agent listen`` (paho's second home)
dialects   pure cloud encodings (Alink, IoTDA, ThingsBoard); not wired yet
=========  ================================================================
"""
