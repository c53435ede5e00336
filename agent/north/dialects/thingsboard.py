"""ThingsBoard gateway MQTT API: one connection speaks for many devices, named.

Pure encoding, no I/O. From ThingsBoard's gateway API documentation:

- the access token of a device marked "Is gateway" is the MQTT username; the
  password is empty.
- ``v1/gateway/connect`` ``{"device", "type"}`` creates the device on first
  sight with ``type`` as its device profile; ``v1/gateway/disconnect`` ends it.
- ``v1/gateway/telemetry`` ``{name: [{"ts": ms, "values": {...}}, ...]}``;
  ``v1/gateway/attributes`` ``{name: {key: value}}`` for client attributes.
- ``v1/devices/me/telemetry`` ``[{"ts": ms, "values": {...}}]``: the gateway
  device's own telemetry (the device API; the gateway is a device too).
- no application-level reply: PUBACK is the only receipt.
- the server's default MQTT payload cap is 65,536 bytes; above it the
  connection is closed, so every packet stays under ``max_bytes``.

A tag error is never a telemetry value (a chart of ``"timeout"`` strings is
noise, and a number key would change type): it travels as the client
attributes ``last_error`` / ``last_error_ts`` (:func:`error_attributes`), which
the wiring sends when the set of errors of a device changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from drivers.base import Reading, Value

from .common import Batch, Credentials, Encoded, Entry, Packet, Sheet, dumps
from .common import pack as _pack

MAX_BYTES = 64 * 1024
CONNECT = "v1/gateway/connect"
DISCONNECT = "v1/gateway/disconnect"
TELEMETRY = "v1/gateway/telemetry"
ATTRIBUTES = "v1/gateway/attributes"
OWN_TELEMETRY = "v1/devices/me/telemetry"
"""The gateway's own telemetry (it is a device too): the box's own events go there."""


def connect_credentials(token: str, *, client_id: str) -> Credentials:
    """Access-token auth: the token is the username, the password stays empty."""
    return Credentials(client_id=client_id, username=token, password="")


def connect(device: str, profile: str) -> Packet:
    """Announce ``device`` (created with device profile ``profile`` when new)."""
    return Packet(CONNECT, dumps({"device": device, "type": profile}))


def disconnect(device: str) -> Packet:
    """Tell the server the gateway no longer speaks for ``device``."""
    return Packet(DISCONNECT, dumps({"device": device}))


def attributes(facts: Mapping[str, Mapping[str, Value]]) -> Packet:
    """Client attributes of several devices: vendor, model, profile@hash, agent version..."""
    return Packet(ATTRIBUTES, dumps({d: dict(f) for d, f in facts.items()}))


def error_attributes(
    device: str, errors: Mapping[str, str], ts: int, max_bytes: int | None = None
) -> Packet:
    """A device's current tag errors as ``last_error`` text; an empty map clears it.

    With ``max_bytes`` the text is cut to keep the payload within it: the first
    tags (by name) in full, then ``... and N more``.
    """
    parts = [f"{tag}: {errors[tag]}" for tag in sorted(errors)]
    packet = _errors(device, "; ".join(parts), ts)
    if max_bytes is None or len(packet.payload) <= max_bytes:
        return packet
    low, high = 0, len(parts) - 1  # the most parts kept whole that fit
    while low < high:
        mid = (low + high + 1) // 2
        if len(_errors(device, _shortened(parts, mid), ts).payload) <= max_bytes:
            low = mid
        else:
            high = mid - 1
    return _errors(device, _shortened(parts, low), ts)


def _errors(device: str, text: str, ts: int) -> Packet:
    return attributes({device: {"last_error": text, "last_error_ts": ts}})


def _shortened(parts: list[str], keep: int) -> str:
    more = len(parts) - keep
    if not keep:
        return f"{more} tag errors"
    return "; ".join(parts[:keep]) + f"; ... and {more} more"


class _TelemetrySheet(Sheet):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.devices: dict[str, list[object]] = {}

    def add(self, entry: Entry) -> None:
        super().add(entry)
        self.devices.setdefault(entry.key, []).append(entry.body)

    def render(self, first_seq: int, index: int) -> tuple[str, bytes]:
        return TELEMETRY, dumps(self.devices)


class _OwnSheet(Sheet):
    def render(self, first_seq: int, index: int) -> tuple[str, bytes]:
        return OWN_TELEMETRY, dumps([e.body for e in self.entries])


class TbGateway:
    """Encodes buffer batches as gateway telemetry.

    ``names`` maps agent device -> ThingsBoard device name (unlisted devices
    keep their agent name: ThingsBoard creates devices by name).
    ``seq_key`` is a telemetry key carrying the batch seq in every sample, so a
    consumer sees gaps and repeats per device; None leaves it out.
    """

    def __init__(
        self,
        names: Mapping[str, str] | None = None,
        *,
        seq_key: str | None = "edge_seq",
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.names = dict(names or {})
        self.seq_key = seq_key
        self.max_bytes = max_bytes

    def pack(self, batches: Iterable[Batch]) -> Encoded:
        """The telemetry packets for ``batches`` in order (see :func:`common.pack`)."""
        return _pack(
            batches, self._entries, lambda: _TelemetrySheet(self.max_bytes), self.max_bytes
        )

    def pack_own(self, batches: Iterable[Batch]) -> Encoded:
        """The gateway's own telemetry packets for ``batches`` (the box's own events)."""
        return _pack(batches, self._own, lambda: _OwnSheet(self.max_bytes), self.max_bytes)

    def _own(self, batch: Batch, reading: Reading) -> list[Entry]:
        return [Entry("me", e.body, e.count) for e in self._entries(batch, reading)]

    def _entries(self, batch: Batch, reading: Reading) -> list[Entry]:
        if not reading.values:
            return []  # tag errors are never values: see error_attributes
        values: dict[str, Value] = {n: reading.values[n] for n in sorted(reading.values)}
        if self.seq_key:
            values[self.seq_key] = batch.seq
        name = self.names.get(batch.device, batch.device)
        return [Entry(name, {"ts": reading.ts, "values": values}, count=len(values))]
