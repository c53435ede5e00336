"""The OPC UA driver against the packaging-line simulator, in-process on a free port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from drivers.base import DeviceUnavailable, Reading
from drivers.opcua import SPEC
from drivers.opcua.driver import OpcuaDriver
from simulators.packaging_line import VARIABLES, LineHandle, node_id, run_packaging_line

# Generous: a loaded 2-core CI box must not flake. Every wait is bounded by this.
LIMIT = 20.0

# One simulator for the module (starting an asyncua server costs ~2 s); tests
# that inject a fault clear it before they end.
pytestmark = pytest.mark.asyncio(loop_scope="module")
USERS = {"maint": "s3cret"}


def _tags() -> dict[str, dict[str, Any]]:
    return {name: {"node": node_id(name)} for name in VARIABLES}


def _driver(endpoint: str, tags: dict[str, Any], **conn: Any) -> OpcuaDriver:
    options = SPEC.parse(
        {"connection": {"opcua": {"endpoint": endpoint, "timeout": "2s", **conn}}, "tags": tags}
    )
    driver = SPEC.create("line-1", options)
    assert isinstance(driver, OpcuaDriver)
    return driver


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared_line() -> AsyncIterator[LineHandle]:
    # tick=None: the line moves only when a test says so, so values can be compared.
    async with run_packaging_line(seed=7, tick=None, users=USERS) as handle:
        await handle.advance(20.0)
        yield handle


@pytest_asyncio.fixture(loop_scope="module")
async def line(shared_line: LineHandle) -> AsyncIterator[LineHandle]:
    yield shared_line
    shared_line.set_fault(None)


async def _next(stream: AsyncIterator[Reading]) -> Reading:
    return await asyncio.wait_for(anext(stream), LIMIT)


async def _until(stream: AsyncIterator[Reading], tag: str, value: Any) -> Reading:
    """Readings until ``tag`` has ``value`` (bounded in count and time)."""
    for _ in range(200):
        reading = await _next(stream)
        if reading.values.get(tag) == value:
            return reading
    raise AssertionError(f"{tag} never became {value!r}")


async def _drain(stream: AsyncIterator[Reading]) -> None:
    """Read on until the stream raises (bounded: 200 readings, LIMIT s each)."""
    for _ in range(200):
        await _next(stream)


async def _source_ms(line: LineHandle, name: str) -> int:
    stamp = (await line.data_value(name)).SourceTimestamp
    assert stamp is not None
    return int(stamp.timestamp() * 1000)


async def test_poll_reads_every_tag_as_the_server_has_it(line: LineHandle) -> None:
    async with _driver(line.endpoint, _tags()) as driver:
        reading = await driver.read("default")
    assert reading.errors == {}
    for name in VARIABLES:
        assert reading.values[name] == await line.value(name), name
    assert reading.ts == max([await _source_ms(line, n) for n in VARIABLES])


async def test_bad_node_marks_only_that_tag(line: LineHandle) -> None:
    tags = {
        "speed": {"node": node_id("CurSpeed")},
        "missing": {"node": "ns=2;s=Line1.NoSuchThing"},
        "by_path": {"browse_path": "0:Objects/2:Line1/2:RecipeName"},
        "bad_path": {"browse_path": "0:Objects/2:Line1/2:Nope"},
        "by_uri": {"node": "nsu=urn:edge-agent:sim:packaging;s=Line1.AlarmCode"},
        "bad_uri": {"node": "nsu=urn:not-here;s=Line1.AlarmCode"},
    }
    async with _driver(line.endpoint, tags) as driver:
        reading = await driver.read("default")
    assert reading.errors == {
        "missing": "BadNodeIdUnknown",
        "bad_path": "browse path 0:Objects/2:Line1/2:Nope not found (BadNoMatch)",
        "bad_uri": "namespace urn:not-here not on server",
    }
    assert reading.values == {
        "speed": await line.value("CurSpeed"),
        "by_path": await line.value("RecipeName"),
        "by_uri": await line.value("AlarmCode"),
    }


async def test_type_and_scale_are_applied(line: LineHandle) -> None:
    await line.write("CurSpeed", 90.0)
    tags = {
        "packs_per_s": {"node": node_id("CurSpeed"), "scale": 1 / 60},
        "state_text": {"node": node_id("StateCurrent"), "type": "string"},
        "alarm_int": {"node": node_id("AlarmActive"), "type": "int"},
    }
    async with _driver(line.endpoint, tags) as driver:
        reading = await driver.read("default")
    assert reading.values["packs_per_s"] == pytest.approx(1.5)
    assert reading.values["state_text"] == str(await line.value("StateCurrent"))
    assert reading.values["alarm_int"] == int(await line.value("AlarmActive"))


async def test_groups_read_only_their_tags(line: LineHandle) -> None:
    tags = {
        "state": {"node": node_id("StateCurrent"), "group": "fast"},
        "recipe": {"node": node_id("RecipeName"), "group": "slow"},
    }
    async with _driver(line.endpoint, tags) as driver:
        fast = await driver.read("fast")
        slow = await driver.read("slow")
    assert set(fast.values) == {"state"}
    assert set(slow.values) == {"recipe"}


async def test_subscription_carries_the_server_source_timestamp(line: LineHandle) -> None:
    driver = _driver(line.endpoint, _tags(), mode="subscribe", publishing_interval="100ms")
    assert driver.streams
    async with driver:
        stream = driver.stream()
        await _until(stream, "RecipeName", await line.value("RecipeName"))
        await line.write("CurSpeed", 42.5)
        reading = await _until(stream, "CurSpeed", 42.5)
        assert reading.ts == await _source_ms(line, "CurSpeed")
        await line.write("AlarmCode", 310)
        assert (await _until(stream, "AlarmCode", 310)).errors == {}


async def test_subscription_reports_a_bad_node_once(line: LineHandle) -> None:
    tags = {"speed": {"node": node_id("CurSpeed")}, "missing": {"node": "ns=2;s=Nope"}}
    async with _driver(line.endpoint, tags, mode="subscribe", publishing_interval="100ms") as d:
        stream = d.stream()
        errors: dict[str, str] = {}
        for _ in range(5):
            errors.update((await _next(stream)).errors)
            if errors:
                break
    assert errors == {"missing": "BadNodeIdUnknown"}


async def test_restart_gives_device_unavailable_then_subscription_is_restored(
    line: LineHandle,
) -> None:
    driver = _driver(line.endpoint, _tags(), mode="subscribe", publishing_interval="100ms")
    async with driver:
        stream = driver.stream()
        await _until(stream, "AlarmCode", await line.value("AlarmCode"))
        await line.restart(down_for=0.2)
        with pytest.raises(DeviceUnavailable):
            await _drain(stream)
        # The agent closes and connects again: a new Client, the subscription recreated.
        await asyncio.wait_for(driver.connect(), LIMIT)
        stream = driver.stream()
        await line.write("RecipeName", "AFTER-RESTART")
        reading = await _until(stream, "RecipeName", "AFTER-RESTART")
    assert reading.errors == {}


async def test_restart_in_poll_mode(line: LineHandle) -> None:
    driver = _driver(line.endpoint, _tags())
    async with driver:
        await driver.read("default")
        await line.restart()
        with pytest.raises(DeviceUnavailable):
            await asyncio.wait_for(driver.read("default"), LIMIT)
        await asyncio.wait_for(driver.connect(), LIMIT)
        reading = await driver.read("default")
    assert reading.values["RecipeName"] == await line.value("RecipeName")


async def test_frozen_server_gives_device_unavailable_not_a_hang(line: LineHandle) -> None:
    driver = _driver(line.endpoint, _tags(), timeout="1s")
    async with driver:
        await driver.read("default")
        line.set_fault("freeze")
        with pytest.raises(DeviceUnavailable, match="no answer within 1s"):
            await asyncio.wait_for(driver.read("default"), LIMIT)
        # Connecting to a frozen server must also give up by itself.
        with pytest.raises(DeviceUnavailable, match="connect to"):
            await asyncio.wait_for(driver.connect(), LIMIT)
        line.set_fault(None)
        await asyncio.wait_for(driver.connect(), LIMIT)
        reading = await driver.read("default")
    assert reading.errors == {}


async def test_frozen_server_ends_the_stream(line: LineHandle) -> None:
    driver = _driver(
        line.endpoint, _tags(), mode="subscribe", publishing_interval="100ms", timeout="1s"
    )
    async with driver:
        stream = driver.stream()
        await _until(stream, "AlarmCode", await line.value("AlarmCode"))
        line.set_fault("freeze")
        with pytest.raises(DeviceUnavailable):
            await _drain(stream)
        line.set_fault(None)


async def test_garbage_answer_gives_device_unavailable(line: LineHandle) -> None:
    async with _driver(line.endpoint, _tags(), timeout="1s") as driver:
        line.set_fault("garbage")
        with pytest.raises(DeviceUnavailable):
            await asyncio.wait_for(driver.read("default"), LIMIT)


async def test_nothing_listening_gives_device_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    driver = _driver(f"opc.tcp://127.0.0.1:{port}/x", _tags())
    with pytest.raises(DeviceUnavailable, match="connect to"):
        await asyncio.wait_for(driver.connect(), LIMIT)
    with pytest.raises(DeviceUnavailable, match="not connected"):
        await driver.read("default")
    await driver.close()


async def test_username_and_password(line: LineHandle) -> None:
    good = _driver(line.endpoint, _tags(), username="maint", password="s3cret")
    assert "s3cret" not in repr(good.options)
    async with good:
        reading = await good.read("default")
    assert reading.values["StateCurrent"] == await line.value("StateCurrent")
    wrong = _driver(line.endpoint, _tags(), username="maint", password="nope")
    with pytest.raises(DeviceUnavailable) as info:
        await asyncio.wait_for(wrong.connect(), LIMIT)
    assert "nope" not in str(info.value)


async def test_anonymous_refused_when_the_server_wants_a_user() -> None:
    async with run_packaging_line(tick=None, users=USERS, anonymous=False) as handle:
        anonymous = _driver(handle.endpoint, _tags())
        with pytest.raises(DeviceUnavailable, match="connect to"):
            await asyncio.wait_for(anonymous.connect(), LIMIT)


async def test_stream_needs_subscribe_mode(line: LineHandle) -> None:
    async with _driver(line.endpoint, _tags()) as driver:
        assert not driver.streams
        with pytest.raises(RuntimeError, match="mode: subscribe"):
            await anext(driver.stream())
