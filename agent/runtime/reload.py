"""Config reload on SIGHUP: what a new site file changes, and what it may change live.

Devices and the broker connection change while the agent runs: a removed
device's poller stops, a new one starts, a changed one restarts with its new
settings, a changed ``mqtt`` section reconnects the publisher, and a changed
``agent.log_level`` applies from the next log line. Nothing in
the buffer is touched, so nothing buffered is lost. The agent id and the
buffer's settings define what is already on disk (the messages carry the agent
id, the cap bounds the file), the metrics endpoint is bound once, and the
``north:`` destinations are set up at start: changing those needs a restart, and a reload
that asks for it is refused as a whole, keeping the running config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.site.analytics import At
from agent.site.loader import DeviceConfig, Site


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The difference between the running site and a new one."""

    added: tuple[DeviceConfig, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[DeviceConfig, ...] = ()
    mqtt_changed: bool = False
    log_level: tuple[str, str] | None = None
    """``(old, new)`` when ``agent.log_level`` changes; applied live."""
    needs_restart: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        """True when the new site changes nothing that runs."""
        return not (
            self.added or self.removed or self.changed or self.mqtt_changed or self.log_level
        )

    def summary(self) -> str:
        """One line for the log."""
        parts = [
            f"{len(self.added)} devices added",
            f"{len(self.removed)} removed",
            f"{len(self.changed)} changed",
        ]
        if self.mqtt_changed:
            parts.append("broker settings changed")
        if self.log_level:
            parts.append("log level {} -> {}".format(*self.log_level))
        return ", ".join(parts)


def _same_device(old: DeviceConfig, new: DeviceConfig) -> bool:
    return (
        old.kind == new.kind
        and old.options == new.options
        and old.poll_groups == new.poll_groups
        and old.enabled == new.enabled
        and old.derived == new.derived
    )


def _machines_key(site: Site) -> object:
    """What a site's machines are made of (merged with their profiles' machine blocks),
    without where each key was written."""
    return _plain(site.analytics)


def _plain(value: object) -> object:
    if isinstance(value, At):
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def plan_reload(running: Site, new: Site) -> ReloadPlan:
    """What applying ``new`` over ``running`` does; ``needs_restart`` lists what it cannot."""
    restart = []
    if new.agent.id != running.agent.id:
        restart.append(f"agent.id ({running.agent.id} -> {new.agent.id})")
    if new.buffer != running.buffer or new.buffer_path != running.buffer_path:
        restart.append("buffer settings")
    if new.status_socket != running.status_socket:
        restart.append("agent.status_socket")
    if new.metrics != running.metrics:
        restart.append("metrics settings")
    if (new.north, new.mqtt_is_destination, new.north_secrets) != (
        running.north,
        running.mqtt_is_destination,
        running.north_secrets,
    ):
        restart.append("north destinations")
    if _machines_key(new) != _machines_key(running):
        # a machine's counters and shift tallies are bound to its plan: restarted, not
        # swapped under a running shift (the state carries over the restart)
        restart.append("analytics (machines, calendars or profiles' machine blocks)")
    old_devices = {d.id: d for d in running.devices}
    new_devices = {d.id: d for d in new.devices}
    return ReloadPlan(
        added=tuple(d for i, d in new_devices.items() if i not in old_devices),
        removed=tuple(i for i in old_devices if i not in new_devices),
        changed=tuple(
            d
            for i, d in new_devices.items()
            if i in old_devices and not _same_device(old_devices[i], d)
        ),
        mqtt_changed=(new.mqtt != running.mqtt or new.mqtt_password != running.mqtt_password),
        log_level=None
        if new.agent.log_level == running.agent.log_level
        else (running.agent.log_level, new.agent.log_level),
        needs_restart=tuple(restart),
    )
