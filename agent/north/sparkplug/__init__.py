"""The Sparkplug B 3.0 north dialect, pure encoding layer (no MQTT, no buffer).

=================  ==========================================================
module             what it answers
=================  ==========================================================
encode             topics; the Edge Node session (bdSeq, seq, aliases);
                   NBIRTH/NDEATH/DBIRTH/DDATA/DDEATH builders; NCMD parsing
metrics            our values <-> typed Sparkplug metrics (widths, signs)
sparkplug_b.proto  the payload schema, wire-compatible with Eclipse Tahu's
sparkplug_b_pb2    generated from the .proto by grpc_tools.protoc (committed)
=================  ==========================================================

Not yet selectable in the site file: the publisher still sends edge-json only
(see docs/NORTH.md).
"""
