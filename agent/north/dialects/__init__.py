"""Cloud dialects: the pure encoding of batches for Alibaba Alink, Huawei IoTDA, ThingsBoard.

No I/O here: no paho, no asyncio, no buffer. Each module turns committed
buffer batches into MQTT packets within the cloud's limits, builds the
CONNECT credentials and the sub-device bookkeeping messages, and reads the
cloud's replies. The ``*_session`` modules hold each cloud's state on one
connection (the :class:`~agent.north.session.Session` protocol); selecting a
dialect in the site file (one buffer cursor per destination) is the
publisher's part.

==============  ============================================================
module          what it answers
==============  ============================================================
common          batches -> packets cut to a cloud's caps; which seqs a packet finishes
alink           Alibaba: signing, topo add / login, gateway pack post, post_reply
iotda           Huawei: client id and password, gateway batch report, sub-device status
thingsboard     ThingsBoard gateway API: connect, telemetry, attributes, disconnect
tb_session      ThingsBoard :class:`~agent.north.session.Session`: connects, attributes, errors
alink_session   Alibaba Session: signed CONNECT, topo add, logins, ready, reply pairing by id
iotda_session   Huawei Session: hour-signed CONNECT, sub-device status, events down
==============  ============================================================
"""
