"""What does the agent publish, as a cloud would see it? The listener of ``edge-agent listen``.

A commissioning tool: :class:`Listener` subscribes to a destination's broker
(QoS 1, clean session, its own client id) and prints every message decoded by
:mod:`agent.north.decoding`, one line each or one JSON object each, with a
warning line whenever the buffer seq or the Sparkplug seq skips or repeats,
and a summary at the end (:func:`summary_lines`).

paho is imported here as well as in :mod:`agent.north.link`: a listener is a
plain blocking subscriber in a short-lived command, nothing like the
publisher's loop-driven link, and one module for both would bend either out
of shape. Nothing in the running agent imports this module.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import PublishError
from agent.north.decoding import (
    DIALECTS,
    Decoded,
    Decoder,
    DeviceSeqs,
    NodeSeqs,
    SeqTracker,
    SeqWarning,
    default_filters,
    minimal_filters,
)
from agent.north.options import MqttOptions, describe_connect_error
from agent.north.probe import tls_context

# --------------------------------------------------------------------------- the subscriber


@dataclass(frozen=True, kw_only=True)
class ListenOptions:
    """What to listen to. ``mqtt`` gives the broker; its topics and QoS are not used."""

    mqtt: MqttOptions
    dialect: str = "edge-json"
    filters: tuple[str, ...] = ()
    """Topic filters; empty: the dialect's (:func:`default_filters`)."""
    seq_key: str = "edge_seq"
    """The key or property carrying the buffer seq in the cloud dialects."""

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {self.dialect!r} (one of {', '.join(DIALECTS)})")

    @property
    def topic_filters(self) -> tuple[str, ...]:
        """The filters subscribed to."""
        return minimal_filters(self.filters) if self.filters else default_filters(self.dialect)


@dataclass
class Summary:
    """What listening saw, for the closing lines."""

    messages: int
    undecodable: int
    seconds: float
    stopped: str
    """``count``, ``timeout``, ``interrupted`` (Ctrl-C) or ``lost`` (the connection)."""
    lost: str | None
    """Why the connection ended, when it did."""
    devices: dict[tuple[str, str], DeviceSeqs]
    nodes: dict[str, NodeSeqs]


_REFUSALS = {
    "Bad user name or password": "bad user name or password (check --username and --password-env)",
    "Not authorized": "not authorised (check --username and --password-env)",
    "Client identifier not valid": "client id rejected (check --client-id)",
}

Emit = Callable[[str], None]


class Listener:
    """A blocking paho subscriber at QoS 1 (clean session) that prints what it gets.

    :meth:`connect` returns once the broker accepted every subscription;
    :meth:`run` then prints each message with ``emit`` until ``count`` messages
    or ``timeout`` seconds, or Ctrl-C. Errors are :class:`PublishError` with a
    sentence that says what to check.
    """

    def __init__(
        self,
        options: ListenOptions,
        emit: Emit,
        *,
        as_json: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self._emit = emit
        self._as_json = as_json
        self._clock = clock
        self.decoder = Decoder(options.dialect, options.seq_key)
        self.tracker = SeqTracker()
        self.messages = 0
        self.undecodable = 0
        self._limit: int | None = None
        self._connack: ReasonCode | None = None
        self._granted: list[ReasonCode] | None = None
        self._lost: str | None = None
        self._connected = False
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=options.mqtt.client_id,
            clean_session=True,
            reconnect_on_failure=False,
        )
        c.connect_timeout = options.mqtt.connect_timeout
        if options.mqtt.username is not None:
            c.username_pw_set(options.mqtt.username, options.mqtt.password)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        self._client = c

    def connect(self) -> tuple[str, ...]:
        """Connect, subscribe at QoS 1 and wait for the SUBACK; the filters subscribed to."""
        o = self.options.mqtt
        c = self._client
        where = f"broker {o.host}:{o.port}"
        try:
            if o.tls is not None:
                c.tls_set_context(tls_context(o.tls))
                if o.tls.insecure:
                    c.tls_insecure_set(True)
            c.connect(o.host, o.port, o.keepalive_s)
        except (OSError, ValueError) as exc:
            raise PublishError(_connect_error(exc, o)) from None
        self._wait(lambda: self._connack is not None, f"the CONNACK of {where}")
        assert self._connack is not None
        if self._connack.is_failure:
            name = self._connack.getName()
            text = _REFUSALS.get(name, name.lower())
            raise PublishError(f"{where} refused the connection: {text}")
        self._connected = True
        filters = self.options.topic_filters
        rc, _mid = c.subscribe([(f, 1) for f in filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise PublishError(f"cannot subscribe at {where}: {mqtt.error_string(rc)}")
        self._wait(lambda: self._granted is not None, f"the SUBACK of {where}")
        assert self._granted is not None
        refused = [f for f, code in zip(filters, self._granted, strict=False) if code.is_failure]
        if refused:
            raise PublishError(
                f"{where} refused the subscription to {', '.join(refused)} "
                "(is this user allowed to read those topics?)"
            )
        return filters

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        o = self.options.mqtt
        deadline = time.monotonic() + o.connect_timeout
        while not done():
            if self._lost is not None:
                if self._connected:
                    raise PublishError(
                        f"the connection to broker {o.host}:{o.port} was lost: {self._lost}"
                    )
                raise PublishError(
                    f"broker {o.host}:{o.port} closed the connection before accepting it "
                    f"({self._lost}; does the port expect TLS? then give --tls or --tls-ca)"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise PublishError(
                    f"no answer from broker within {o.connect_timeout:g} s (waiting for {what})"
                )
            self._loop(min(left, 0.5))

    def _loop(self, seconds: float) -> None:
        rc = self._client.loop(seconds)
        if (
            rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN)
            and self._lost is None
        ):
            self._lost = mqtt.error_string(rc)

    def run(self, count: int | None = None, timeout: float | None = None) -> Summary:
        """Print messages until ``count`` of them, ``timeout`` seconds, Ctrl-C or a lost link."""
        self._limit = count
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        stopped = "timeout"
        try:
            while True:
                if count is not None and self.messages >= count:
                    stopped = "count"
                    break
                if self._lost is not None:
                    stopped = "lost"
                    break
                left = 1.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    break
                self._loop(min(left, 1.0))
        except KeyboardInterrupt:
            stopped = "interrupted"
        return Summary(
            messages=self.messages,
            undecodable=self.undecodable,
            seconds=time.monotonic() - start,
            stopped=stopped,
            lost=self._lost,
            devices=self.tracker.devices,
            nodes=self.tracker.nodes,
        )

    def close(self) -> None:
        """Send DISCONNECT if still connected, and drop the socket; idempotent."""
        c = self._client
        c.on_disconnect = None
        if c.is_connected():
            c.disconnect()
        sock = c.socket()
        if sock is not None:
            sock.close()

    # --- paho callbacks, on the thread that calls loop()

    def _on_connect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        self._connack = reason

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Properties | None
    ) -> None:
        self._granted = list(codes)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if self._lost is None:
            self._lost = (
                "the broker closed it" if not reason.is_failure else reason.getName().lower()
            )

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self._limit is not None and self.messages >= self._limit:
            return  # a read may bring more than asked for
        self.messages += 1
        decoded = self.decoder.decode(msg.topic, bytes(msg.payload))
        if decoded.error is not None:
            self.undecodable += 1
        at = self._clock()
        warnings = self.tracker.observe(decoded)
        self._emit(message_line(at, msg.topic, msg.retain, decoded, self._as_json))
        for warning in warnings:
            self._emit(warning_line(at, warning, self._as_json))


def _connect_error(exc: BaseException, o: MqttOptions) -> str:
    """The sentence for a failed connect, with the listener's own options as hints."""
    where = f"broker {o.host}:{o.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS handshake with {where} failed: its certificate was not accepted "
            f"({exc.verify_message}); check --tls-ca and the broker host name"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed ({exc}); does the port speak TLS? check --tls-ca"
    return describe_connect_error(exc, o)


# --------------------------------------------------------------------------- printed forms


def _clock_text(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def _iso(at: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(at))
    offset = time.strftime("%z", time.localtime(at))
    return f"{stamp}.{int(at * 1000) % 1000:03d}{offset[:3]}:{offset[3:]}"


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def message_line(at: float, topic: str, retained: bool, d: Decoded, as_json: bool) -> str:
    """One received message: ``TIME  TOPIC  SUMMARY`` or a JSON object of type ``message``."""
    if as_json:
        obj: dict[str, Any] = {
            "type": "message", "time": _iso(at), "topic": topic, "retained": retained,
            "dialect": d.dialect, "kind": d.kind, "summary": d.summary, "body": d.body,
            "samples": [{"source": s.source, "device": s.device, "seq": s.seq} for s in d.samples],
        }  # fmt: skip
        if d.node is not None:
            obj["sparkplug"] = {"node": d.node, "seq": d.sp_seq, "bdSeq": d.bd_seq}
        if d.error is not None:
            obj["error"] = d.error
        return _dumps(obj)
    flag = " (retained)" if retained else ""
    return f"{_clock_text(at)}  {topic}{flag}  {d.summary}"


def warning_line(at: float, w: SeqWarning, as_json: bool) -> str:
    """A counter that skipped or repeated: ``TIME  WARNING  WHO: TEXT`` or type ``warning``."""
    who = w.source if w.device is None else f"{w.source}/{w.device}"
    if as_json:
        return _dumps({
            "type": "warning", "time": _iso(at), "warning": w.kind, "counter": w.counter,
            "source": w.source, "device": w.device, "missing": w.missing, "text": w.text,
        })  # fmt: skip
    return f"{_clock_text(at)}  WARNING  {who}: {w.text}"


_STOPPED = {
    "count": "count reached",
    "timeout": "timeout",
    "interrupted": "interrupted",
    "lost": "connection lost",
}


def summary_lines(s: Summary, as_json: bool) -> list[str]:
    """The closing lines: messages, then per device and per Edge Node what the counters did."""
    if as_json:
        return [_dumps({
            "type": "summary", "messages": s.messages, "undecodable": s.undecodable,
            "seconds": round(s.seconds, 3), "stopped": s.stopped, "lost": s.lost,
            "devices": [
                {"source": src, "device": dev, "first": d.first, "last": d.last,
                 "samples": d.samples, "gaps": d.gaps, "missing": d.missing,
                 "duplicates": d.duplicates, "late": d.late}
                for (src, dev), d in s.devices.items()
            ],
            "nodes": [
                {"node": node, "messages": n.messages, "gaps": n.gaps, "missing": n.missing,
                 "duplicates": n.duplicates, "bdSeq": n.bd_seq}
                for node, n in s.nodes.items()
            ],
        })]  # fmt: skip
    n = s.messages
    head = f"-- {n} message{'s' if n != 1 else ''} in {s.seconds:.1f} s ({_STOPPED[s.stopped]})"
    if s.undecodable:
        head += f", {s.undecodable} not decoded"
    lines = [head]
    for (src, dev), d in s.devices.items():
        line = f"   {src}/{dev}: seq {d.first}..{d.last}, {_count(d.gaps, 'gap')}"
        if d.missing:
            line += f" ({d.missing} missing)"
        line += f", {_count(d.duplicates, 'duplicate')}"
        if d.late:
            line += f", {d.late} late"
        lines.append(line)
    for node, ns in s.nodes.items():
        line = (
            f"   {node} (Sparkplug seq): {_count(ns.messages, 'message')}, {_count(ns.gaps, 'gap')}"
        )
        if ns.missing:
            line += f" ({ns.missing} missing)"
        lines.append(line + f", {_count(ns.duplicates, 'duplicate')}")
    return lines


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"
