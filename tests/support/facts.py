"""What the machine-facts end-to-end tests read off the broker: each seq once, a machine's
events, its final shift summary; and shift times for a calendar written in UTC."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from agent.compute.shifts import WEEKDAYS
from tests.support.mosquitto import Received

Messages = dict[int, tuple[str, dict[str, Any]]]


def hms(epoch_s: float) -> str:
    """``HH:MM:SS`` of an instant in UTC (the tests' calendars are in UTC)."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%H:%M:%S")


def analytics(start_s: float, end_s: float, machines: dict[str, Any]) -> dict[str, Any]:
    """An ``analytics:`` block with one shift ``e2e`` from ``start_s`` to ``end_s`` (epoch s,
    every day, in UTC), a running figure every 10 s, and ``machines``."""
    shift = {"name": "e2e", "start": hms(start_s), "end": hms(end_s)}
    return {
        "timezone": "UTC",
        "publish_every": "10s",
        "calendars": {"e2e": {"workdays": list(WEEKDAYS), "shifts": [shift]}},
        "machines": machines,
    }


def decoded(received: list[Received]) -> Messages:
    """Each seq once (a resend is the same message): (topic, message); status left out."""
    out: Messages = {}
    for m in received:
        if m.topic.endswith("/status"):
            continue
        body = json.loads(m.payload)
        out.setdefault(body["seq"], (m.topic, body))
    return out


def machine_events(messages: Messages, machine: str) -> list[dict[str, Any]]:
    """The events of ``machine``, in seq order."""
    return [
        e
        for _, (_, body) in sorted(messages.items())
        if body.get("kind") == "events" and body["source"] == machine
        for e in body["events"]
    ]


def final_summary(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last final shift summary among ``events`` (None before one came)."""
    finals = [e for e in events if e["type"] == "shift" and e["final"]]
    return finals[-1] if finals else None
