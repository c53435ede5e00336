"""North side: what leaves the box. "Why did this not publish?" is answered here.

The publisher takes committed batches from the buffer in seq order, keeps a
QoS 1 window in flight and acknowledges each to the buffer only after its
PUBACK. paho-mqtt is imported by ``link.py`` (the publisher's connection) and
``listen.py`` (the commissioning subscriber) only.

A destination speaks edge-json (no session: the stored payload goes as it
is) or a dialect through a ``Session``: the session says the Will, the
CONNECT identity, the subscriptions, the births and the packets; the
publisher keeps the window, and acks a batch only once the packet finishing
it (and every earlier one) has its PUBACK and, where the cloud replies, its
reply. The full contract is in ``publisher``'s docstring.

===========  ================================================================
module       what it answers
===========  ================================================================
publisher    the window, acks after PUBACK (and reply), backoff, the stalled-link
             check; the publisher-session contract
session      the ``Session`` protocol a dialect implements, ``Reaction``, ``DeviceFacts``
destination  one MQTT connection + one dialect and its options
health       what ended connections say: backoff reset, storm logging, likely cause
link         the paho-mqtt connection driven by the asyncio loop; will, subscribe, TLS
options      broker options, publisher counters, error sentences (no paho)
probe        a paho-free MQTT CONNECT probe for ``edge-agent doctor``; the port watch
sparkplug    Sparkplug B 3.0: pure builders (``encode``) and the Edge Node session
dialects     cloud encodings and sessions (Alink, IoTDA, ThingsBoard)
facts        events messages as a machine's values and births (pure)
decoding     any dialect's payload decoded; buffer-seq and Sparkplug-seq gaps
listen       the subscriber of ``edge-agent listen`` (paho's second home)
===========  ================================================================
"""
