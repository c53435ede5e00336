"""A Sparkplug B host application written from the 3.0 spec, for the tests only.

It reads its own payloads with the generated schema but shares no logic with
``agent.north.sparkplug.encode``: it keeps, per Edge Node, the bdSeq of the
current NBIRTH, the last seq and the alias table of each birth, and it says
what a real host would do with each message: accept it, or demand a rebirth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.north.sparkplug import sparkplug_b_pb2 as pb


class RebirthNeeded(Exception):
    """What a host answers with an NCMD ``Node Control/Rebirth`` = true."""


@dataclass
class NodeState:
    bd_seq: int
    seq: int
    node_aliases: dict[int, str]
    devices: dict[str, dict[int, str]] = field(default_factory=dict)  # device -> alias -> name
    online: bool = True


@dataclass
class Host:
    nodes: dict[tuple[str, str], NodeState] = field(default_factory=dict)
    values: dict[tuple[str, str], Any] = field(default_factory=dict)  # live values only
    history: list[tuple[str, str, Any, int]] = field(default_factory=list)  # device, tag, v, ts

    def receive(self, topic: str, data: bytes) -> None:
        parts = topic.split("/")
        if parts[0] != "spBv1.0" or len(parts) not in (4, 5):
            raise RebirthNeeded(f"not a Sparkplug topic: {topic}")
        group, kind, node = parts[1], parts[2], parts[3]
        device = parts[4] if len(parts) == 5 else None
        payload = pb.Payload()
        payload.ParseFromString(data)
        key = (group, node)
        if kind == "NBIRTH":
            self._nbirth(key, payload)
        elif kind == "NDEATH":
            self._ndeath(key, payload)
        else:
            state = self._online(key)
            self._check_seq(state, payload)
            if kind == "NDATA":  # the node's own metrics, by the NBIRTH's aliases
                assert device is None, topic
                self._metrics(state.node_aliases, "", payload)
                return
            assert device is not None, topic
            if kind == "DBIRTH":
                state.devices[device] = self._aliases(payload)
            elif kind == "DDEATH":
                state.devices.pop(device, None)
            elif kind == "DDATA":
                self._ddata(state, device, payload)
            else:
                raise RebirthNeeded(f"unexpected {kind}")

    def _nbirth(self, key: tuple[str, str], payload: pb.Payload) -> None:
        if not payload.HasField("seq") or payload.seq != 0:
            raise RebirthNeeded("NBIRTH seq must be 0")
        bd = [m for m in payload.metrics if m.name == "bdSeq"]
        if len(bd) != 1 or bd[0].datatype != pb.Int64:
            raise RebirthNeeded("NBIRTH without an Int64 bdSeq")
        names = [m.name for m in payload.metrics]
        if "Node Control/Rebirth" not in names:
            raise RebirthNeeded("NBIRTH without Node Control/Rebirth")
        self.nodes[key] = NodeState(bd[0].long_value, 0, self._aliases(payload))

    def _ndeath(self, key: tuple[str, str], payload: pb.Payload) -> None:
        if payload.HasField("seq"):
            raise RebirthNeeded("NDEATH must carry no seq")
        bd = [m.long_value for m in payload.metrics if m.name == "bdSeq"]
        state = self.nodes.get(key)
        # An NDEATH whose bdSeq is not the current NBIRTH's is a stale Will: ignored.
        if state is not None and bd == [state.bd_seq]:
            state.online = False
            state.devices.clear()

    def _online(self, key: tuple[str, str]) -> NodeState:
        state = self.nodes.get(key)
        if state is None or not state.online:
            raise RebirthNeeded("message from a node with no live NBIRTH")
        return state

    @staticmethod
    def _check_seq(state: NodeState, payload: pb.Payload) -> None:
        expected = (state.seq + 1) % 256
        if not payload.HasField("seq") or payload.seq != expected:
            raise RebirthNeeded(f"seq gap: expected {expected}, got {payload.seq}")
        state.seq = expected

    @staticmethod
    def _aliases(payload: pb.Payload) -> dict[int, str]:
        table: dict[int, str] = {}
        for m in payload.metrics:
            if not m.name or not m.datatype:
                raise RebirthNeeded("a birth metric needs a name and a datatype")
            if m.HasField("alias"):
                table[m.alias] = m.name
        return table

    def _ddata(self, state: NodeState, device: str, payload: pb.Payload) -> None:
        if device not in state.devices:
            raise RebirthNeeded(f"DDATA for {device} without its DBIRTH")
        self._metrics(state.devices[device], device, payload)

    def _metrics(self, aliases: dict[int, str], device: str, payload: pb.Payload) -> None:
        for m in payload.metrics:
            name = m.name or aliases.get(m.alias)
            if name is None:
                raise RebirthNeeded(f"unknown alias {m.alias} for {device or 'the node'}")
            field_name = m.WhichOneof("value")
            value = None if m.is_null else getattr(m, str(field_name))
            if m.is_historical:
                self.history.append((device, name, value, m.timestamp))
            else:
                self.values[(device, name)] = value
