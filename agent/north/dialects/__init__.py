"""Cloud dialects: the pure encoding of batches for Alibaba Alink, Huawei IoTDA, ThingsBoard.

No I/O here: no paho, no asyncio, no buffer. Each module turns committed
buffer batches into MQTT packets within the cloud's limits, builds the
CONNECT credentials and the sub-device bookkeeping messages, and reads the
cloud's replies. Selecting a dialect in the site file (one buffer cursor per
destination) is the publisher's part and is not wired yet.

============  ============================================================
module        what it answers
============  ============================================================
common        batches -> packets cut to a cloud's caps; which seqs a packet finishes
alink         Alibaba: signing, topo add / login, gateway pack post, post_reply
iotda         Huawei: client id and password, gateway batch report, sub-device status
thingsboard   ThingsBoard gateway API: connect, telemetry, attributes, disconnect
============  ============================================================
"""
