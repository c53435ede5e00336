"""The Sparkplug B 3.0 north dialect, pure encoding layer (no MQTT, no buffer).

=================  ==========================================================
module             what it answers
=================  ==========================================================
encode             topics; the Edge Node session (bdSeq, seq, aliases);
                   NBIRTH/NDEATH/DBIRTH/DDATA/DDEATH builders; NCMD parsing
session            ``SparkplugSession``: the publisher's Session (bdSeq on disk,
                   births, rebirth, primary host STATE, DDATA cut to size)
metrics            our values <-> typed Sparkplug metrics (widths, signs)
sparkplug_b.proto  the payload schema, wire-compatible with Eclipse Tahu's
sparkplug_b_pb2    generated from the .proto by grpc_tools.protoc (committed)
=================  ==========================================================

The publisher can speak it (``Publisher(..., session=SparkplugSession(...))``);
selecting it in the site file is the runtime's part (see docs/NORTH.md).
"""
