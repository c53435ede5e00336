"""The Agent in-process: start, reload and stop against a real broker."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.buffer import BufferView, PendingBatch
from agent.north.link import Publisher
from agent.runtime.agent import Agent, mqtt_options
from agent.site.loader import load_site
from tests.agent.north.test_publisher import until
from tests.support.agentproc import counter_device, site_dict
from tests.support.mosquitto import Mosquitto, Received, Subscriber, free_port


def _write(path: Path, site: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")


async def test_a_reload_queued_behind_a_stop_does_not_keep_the_agent_running(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM then SIGHUP in the same instant: the reload must not start pollers after the stop."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    file = tmp_path / "site.yaml"
    one = counter_device("d1", free_port())  # nothing listens: the device is simply down
    two = counter_device("d2", free_port())
    _write(file, site_dict("race-box", mosquitto.port, [one]))
    agent = Agent(load_site(file))
    running = asyncio.create_task(agent.run())
    async with asyncio.timeout(30):
        await agent.ready.wait()
    _write(file, site_dict("race-box", mosquitto.port, [one, two]))
    agent.request_stop()
    agent.request_reload()  # still "ready": the stop has not run yet
    done, _ = await asyncio.wait([running], timeout=30)
    if not done:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        pytest.fail("the agent did not stop: a reload started pollers after the stop")
    running.result()
    assert [p.device.id for p in agent.pollers] == ["d1"], "the stop wins, the reload is dropped"


async def test_a_reload_to_an_unusable_broker_topic_is_refused_and_the_agent_runs_on(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    file = tmp_path / "site.yaml"
    site = site_dict("topic-box", mosquitto.port, [counter_device("d1", free_port())])
    _write(file, site)
    agent = Agent(load_site(file))
    running = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(30):
            await agent.ready.wait()
        # {device} means nothing in the status topic: no publisher can be built from it
        site["mqtt"]["status_topic"] = "edge/{agent}/{device}/status"
        _write(file, site)
        assert await agent.reload() is False
        assert not running.done(), "the agent died"
        assert agent.site.mqtt.status_topic == "edge/{agent}/status", "the running config is kept"
    finally:
        agent.request_stop()
        await asyncio.wait_for(running, 60)


async def test_a_reload_that_changes_the_log_level_applies_it_and_says_so(
    tmp_path: Path,
    mosquitto: Mosquitto,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)  # restored after the test
    root.setLevel(logging.INFO)
    file = tmp_path / "site.yaml"
    site = site_dict("level-box", mosquitto.port, [counter_device("d1", free_port())])
    _write(file, site)
    agent = Agent(load_site(file))
    running = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(30):
            await agent.ready.wait()
        site["agent"]["log_level"] = "debug"
        _write(file, site)
        with caplog.at_level(logging.INFO, logger="agent.runtime.agent"):
            assert await agent.reload() is True
        assert root.level == logging.DEBUG, "the new log level was not applied"
        assert agent.site.agent.log_level == "debug"
        assert "log level info -> debug" in caplog.text
    finally:
        agent.request_stop()
        await asyncio.wait_for(running, 60)


class _FailsOnce:
    """A destination's view of the buffer whose first read fails (a bug below the publisher)."""

    def __init__(self, view: BufferView) -> None:
        self.view = view
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.view, name)

    async def fetch(self, after_seq: int, limit: int) -> list[PendingBatch]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a read went wrong")
        return await self.view.fetch(after_seq, limit)


async def test_a_publisher_that_fails_is_started_again_and_the_agent_runs_on(
    tmp_path: Path,
    mosquitto: Mosquitto,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    file = tmp_path / "site.yaml"
    _write(file, site_dict("crash-box", mosquitto.port, [counter_device("d1", free_port())]))
    site = load_site(file)
    agent = Agent(site)
    source = _FailsOnce(agent.buffer.view("mqtt"))
    agent.publishers["mqtt"] = Publisher(mqtt_options(site), source, site.agent.id)
    with Subscriber(mosquitto.port, "edge/crash-box/d1") as sub:
        running = asyncio.create_task(agent.run())
        try:
            # d1 does not answer: its all-bad reading is the batch that must still arrive
            await sub.wait_for_async(lambda m: len(m) >= 1, timeout=30)
            assert source.failed
            assert not running.done(), "the agent died with its publisher"
            assert [p.stats.polls_failed > 0 for p in agent.pollers] == [True]
        finally:
            agent.request_stop()
            await asyncio.wait_for(running, 60)
    restarted = [r for r in caplog.records if "the publisher failed; started again" in r.message]
    assert len(restarted) == 1
    assert restarted[0].exc_info is not None


async def test_a_reload_does_not_announce_a_silent_device_online(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new ThingsBoard session of a reload is told which devices are down before it connects."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    file = tmp_path / "site.yaml"
    site = site_dict("tb-box", mosquitto.port, [counter_device("d1", free_port())])
    site["north"] = [
        {"id": "tb", "dialect": "thingsboard", "host": "127.0.0.1", "port": mosquitto.port,
         "keepalive": "5s", "reconnect_max": "2s", "thingsboard": {"access_token": "tok"}},
    ]  # fmt: skip
    _write(file, site)
    agent = Agent(load_site(file))
    with Subscriber(mosquitto.port, "v1/gateway/#") as sub:
        running = asyncio.create_task(agent.run())
        try:
            await sub.wait_for_async(lambda m: _attributes_of(m, "d1"), timeout=30)
            await until(lambda: not agent.pollers[0].answering, within=30, what="d1 down")
            seen = len(sub.messages)
            site["devices"].append(counter_device("d2", free_port()))
            _write(file, site)
            assert await agent.reload()
            msgs = await sub.wait_for_async(lambda m: _attributes_of(m[seen:], "d2"), timeout=30)
        finally:
            agent.request_stop()
            await asyncio.wait_for(running, 60)
    assert not _said(msgs[seen:], "connect", "d1"), "the new session announced d1 online"


def _said(msgs: list[Received], what: str, device: str) -> bool:
    topic = f"v1/gateway/{what}"
    return any(m.topic == topic and json.loads(m.payload)["device"] == device for m in msgs)


def _attributes_of(msgs: list[Received], device: str) -> bool:
    """The static attributes of ``device``: what a session's on_connect sends last."""
    return any(
        "profile" in json.loads(m.payload).get(device, {})
        for m in msgs
        if m.topic == "v1/gateway/attributes"
    )
