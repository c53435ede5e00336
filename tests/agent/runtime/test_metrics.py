"""Metrics: the Prometheus text format, the JSON summary, the loopback endpoint, the config.

The exposition is checked with a small parser written here from the format's
rules (``# HELP``/``# TYPE`` before the samples, escaped label values,
cumulative histogram buckets), not with the code that writes it.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.buffer import BufferStats
from agent.north.link import MqttOptions, Publisher
from agent.runtime import metrics_http as metrics_serve
from agent.runtime.agent import Agent, _device_status
from agent.runtime.metrics import MetricsState, escape_label, render_prometheus, summary
from agent.runtime.metrics_http import MetricsHttpServer
from agent.runtime.stats import POLL_BUCKETS_S, DeviceStats, Histogram
from agent.site.loader import load_site
from agent.site.source import ConfigFileError
from agent.status.client import query_metrics
from agent.status.document import buffer_status
from simulators.run import SimDevice, run_simulators
from tests.support.agentproc import ROOT, counter_device, site_dict
from tests.support.mosquitto import Mosquitto, free_port

# --------------------------------------------------------------------------- a tiny parser

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


@dataclass
class Family:
    name: str
    kind: str = ""
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        assert match, f"bad labels at {text[pos:]!r}"
        labels[match.group(1)] = re.sub(r"\\(.)", lambda m: _UNESCAPE[m.group(1)], match.group(2))
        pos = match.end()
    return labels


def parse(text: str) -> dict[str, Family]:
    """Families by name; asserts the format's rules on the way."""
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"{name} declared twice"
            current = families[name] = Family(name, help=help_text)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert current is not None, f"TYPE of {name} without HELP"
            assert current.name == name, f"TYPE of {name} without HELP"
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            current.kind = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            assert current is not None, f"{name}: sample before HELP/TYPE"
            assert current.kind, f"{name}: sample before TYPE"
            suffixes = ("_bucket", "_sum", "_count") if current.kind == "histogram" else ("",)
            assert any(name == current.name + s for s in suffixes), f"{name} not in {current.name}"
            current.samples.append((name, _labels(labels or ""), float(value)))
    return families


def value(families: dict[str, Family], name: str, **labels: str) -> float:
    family = families[name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")]
    found = [v for n, ls, v in family.samples if n == name and ls == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


# --------------------------------------------------------------------------- pure parts


def _state(version: str = "1.2.3") -> MetricsState:
    c1 = DeviceStats(state="connected", polls_ok=7, polls_failed=2, overruns=1, reconnects=3)
    c1.values_total = 70
    for took in (0.001, 0.005, 0.0051, 0.2, 3.0, 0.04):
        c1.poll_seconds.observe(took)
    dead = DeviceStats(state="backoff", polls_failed=4, reconnects=4)
    buffer = BufferStats(
        pending_batches=5,
        pending_bytes=1200,
        oldest_created_ms=1_000_000,
        dropped_batches=2,
        last_seq=99,
        file_bytes=4096,
        max_bytes=64_000_000,
    )
    from agent.north.link import PublisherStats

    pub = PublisherStats(connected=True, messages_published=94, values_published=900)
    pub.reconnects, pub.inflight = 1, 3
    return MetricsState("box-1", version, 12.5, 1_004_500, {"c1": c1, "dead": dead}, pub, buffer)


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    hist = Histogram()
    for took in (0.0, 0.005, 0.0050001, 2.5, 2.6, 100.0):
        hist.observe(took)
    assert len(hist.counts) == len(POLL_BUCKETS_S) + 1
    assert hist.counts[0] == 2  # 0 and exactly 5 ms are "le 5 ms"
    assert hist.counts[1] == 1  # just above 5 ms
    assert hist.counts[POLL_BUCKETS_S.index(2.5)] == 1
    assert hist.counts[-1] == 2  # above the last bound: +Inf only
    assert hist.count == 6
    assert hist.total == pytest.approx(0.0100001 + 5.1 + 100.0)


def test_exposition_parses_and_follows_the_naming_conventions() -> None:
    families = parse(render_prometheus(_state()))
    for family in families.values():
        assert family.name.startswith("edge_agent_")
        assert family.help, family.name
        assert family.samples, family.name
        assert (family.kind == "counter") == family.name.endswith("_total"), family.name
    assert value(families, "edge_agent_info", version="1.2.3", agent="box-1") == 1
    assert value(families, "edge_agent_uptime_seconds") == 12.5
    polls = "edge_agent_device_polls_total"
    assert value(families, polls, device="c1", result="ok") == 7
    assert value(families, polls, device="c1", result="failed") == 2
    assert value(families, polls, device="dead", result="failed") == 4
    assert value(families, "edge_agent_device_values_read_total", device="c1") == 70
    assert value(families, "edge_agent_device_overruns_total", device="c1") == 1
    assert value(families, "edge_agent_device_reconnects_total", device="dead") == 4
    assert value(families, "edge_agent_device_state", device="dead", state="backoff") == 1
    states = [v for n, ls, v in families["edge_agent_device_state"].samples if ls["device"] == "c1"]
    assert sorted(states) == [0, 0, 0, 0, 1]
    assert value(families, "edge_agent_buffer_pending_batches") == 5
    assert value(families, "edge_agent_buffer_pending_bytes") == 1200
    assert value(families, "edge_agent_buffer_oldest_pending_age_seconds") == 4.5
    assert value(families, "edge_agent_buffer_dropped_batches_total") == 2
    assert value(families, "edge_agent_buffer_last_seq") == 99
    assert value(families, "edge_agent_publish_messages_total") == 94
    assert value(families, "edge_agent_publish_values_total") == 900
    assert value(families, "edge_agent_publish_connected") == 1
    assert value(families, "edge_agent_publish_reconnects_total") == 1
    assert value(families, "edge_agent_publish_inflight") == 3


def test_each_destination_has_its_own_labelled_families() -> None:
    import dataclasses

    from agent.buffer import DestinationStats
    from agent.north.link import PublisherStats

    base = _state()
    spark = PublisherStats(connected=False, messages_published=40, values_published=400)
    spark.dialect, spark.packets_published, spark.refused_by_cloud = "sparkplug-b", 41, 3
    spark.refused_by_dialect, spark.dialect_errors = 2, 1
    mine = (
        DestinationStats("mqtt", 5, 1_000_000, 95, 2),
        DestinationStats("county", 60, 990_000, 40, 7),
    )
    state = dataclasses.replace(
        base,
        buffer=dataclasses.replace(base.buffer, destinations=mine),
        publishers={"mqtt": base.publisher, "county": spark},
    )
    families = parse(render_prometheus(state))
    for family in families.values():
        assert (family.kind == "counter") == family.name.endswith("_total"), family.name
    county = {"destination": "county", "dialect": "sparkplug-b"}
    mqtt = {"destination": "mqtt", "dialect": "edge-json"}
    assert value(families, "edge_agent_destination_connected", **county) == 0
    assert value(families, "edge_agent_destination_connected", **mqtt) == 1
    assert value(families, "edge_agent_destination_messages_total", **county) == 40
    assert value(families, "edge_agent_destination_packets_total", **county) == 41
    assert value(families, "edge_agent_destination_refused_by_cloud_total", **county) == 3
    assert value(families, "edge_agent_destination_refused_by_dialect_total", **county) == 2
    assert value(families, "edge_agent_destination_dialect_errors_total", **county) == 1
    assert value(families, "edge_agent_destination_pending_batches", **county) == 60
    assert value(families, "edge_agent_destination_pending_batches", **mqtt) == 5
    assert value(families, "edge_agent_destination_oldest_pending_age_seconds", **county) == 14.5
    assert value(families, "edge_agent_destination_never_received_total", **county) == 7
    # the unlabelled families stay the first destination's
    assert value(families, "edge_agent_publish_messages_total") == 94


def test_histogram_exposition_is_cumulative_and_ends_at_inf() -> None:
    families = parse(render_prometheus(_state()))
    latency = families["edge_agent_device_poll_duration_seconds"]
    assert latency.kind == "histogram"
    buckets = [(float(ls["le"]), v) for n, ls, v in latency.samples
               if n.endswith("_bucket") and ls["device"] == "c1"]  # fmt: skip
    assert [b for b, _ in buckets] == [*POLL_BUCKETS_S, math.inf]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert dict(buckets)[0.005] == 2
    assert dict(buckets)[0.01] == 3
    assert dict(buckets)[2.5] == 5
    name = "edge_agent_device_poll_duration_seconds"
    assert counts[-1] == value(families, f"{name}_count", device="c1") == 6
    assert value(families, f"{name}_sum", device="c1") == pytest.approx(3.2511)
    assert value(families, f"{name}_count", device="dead") == 0


def test_label_values_are_escaped() -> None:
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    odd = 'v1 "beta"\n\\build'
    families = parse(render_prometheus(_state(version=odd)))
    assert value(families, "edge_agent_info", version=odd, agent="box-1") == 1


def test_summary_carries_the_same_numbers() -> None:
    doc = summary(_state())
    assert doc["kind"] == "metrics"
    assert doc["agent"] == "box-1"
    assert doc["poll_buckets_ms"] == [5, 10, 25, 50, 100, 250, 500, 1000, 2500]
    c1 = doc["devices"]["c1"]
    assert (c1["polls_ok"], c1["polls_failed"], c1["values"]) == (7, 2, 70)
    assert c1["poll_hist"] == [2, 1, 0, 1, 0, 1, 0, 0, 0, 1]
    assert c1["poll_mean_ms"] == pytest.approx(3251.1 / 6, abs=0.01)
    assert doc["devices"]["dead"]["poll_mean_ms"] is None
    assert doc["buffer"] == {"pending_batches": 5, "pending_bytes": 1200, "last_seq": 99,
                             "oldest_pending_age_s": 4.5, "dropped_batches": 2,
                             "disk_full": False, "held_batches": 0}  # fmt: skip
    assert doc["publish"] == {"connected": True, "messages": 94, "values": 900,
                              "reconnects": 1, "inflight": 3}  # fmt: skip


# --------------------------------------------------------------------------- config


def _site_with_metrics(tmp_path: Path, metrics: dict[str, Any]) -> Path:
    site = {"agent": {"id": "m-box", "data_dir": "data"}, "metrics": metrics, "devices": []}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")
    return path


NOT_LOOPBACK = (
    "is not a loopback address: the metrics endpoint listens on loopback only "
    "(127.0.0.1:PORT or [::1]:PORT); scrape it from this box or through an SSH tunnel"
)


def test_a_non_loopback_listen_address_is_refused_by_validate(tmp_path: Path) -> None:
    path = _site_with_metrics(tmp_path, {"listen": "0.0.0.0:9108"})
    done = subprocess.run(
        [sys.executable, "-m", "agent", "validate", "-c", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "listen" in text)
    assert lines[0] == f"{path}:{line}: metrics.listen: '0.0.0.0:9108': 0.0.0.0 {NOT_LOOPBACK}"


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("10.0.0.5:9108", f"10.0.0.5 {NOT_LOOPBACK}"),
        ("[::]:9108", f":: {NOT_LOOPBACK}"),
        ("box.example.net:9108", f"box.example.net {NOT_LOOPBACK}"),
        ("9108", "expected HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9108"),
        ("127.0.0.1:0", "expected HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9108"),
        ("127.0.0.1:70000", "expected HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9108"),
    ],
)
def test_bad_listen_addresses(tmp_path: Path, listen: str, message: str) -> None:
    path = _site_with_metrics(tmp_path, {"listen": listen})
    with pytest.raises(ConfigFileError) as info:
        load_site(path, env={})
    assert [p.message for p in info.value.problems] == [f"{listen!r}: {message}"]


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9108", "[::1]:9108", "localhost:9108", "127.0.0.9:1"]
)
def test_loopback_listen_addresses_are_accepted(tmp_path: Path, listen: str) -> None:
    site = load_site(_site_with_metrics(tmp_path, {"listen": listen}), env={})
    assert site.metrics.listen == listen


def test_metrics_keys_and_topic_are_checked(tmp_path: Path) -> None:
    metrics = {"publish_interval": "500ms", "topic": "edge/{device}/m/#", "colour": 1}
    with pytest.raises(ConfigFileError) as info:
        load_site(_site_with_metrics(tmp_path, metrics), env={})
    found = {p.path: p.message for p in info.value.problems}
    assert set(found) == {"metrics.publish_interval", "metrics.topic", "metrics.colour"}
    assert found["metrics.colour"] == "unknown key"
    assert "unknown placeholder {device}" in found["metrics.topic"]


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    site = load_site(_site_with_metrics(tmp_path, {}), env={})
    assert site.metrics.listen is None
    assert site.metrics.publish_interval is None


# --------------------------------------------------------------------------- HTTP endpoint


def _get(url: str, method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
async def http() -> AsyncIterator[MetricsHttpServer]:
    async def render() -> str:
        return "# HELP x_total X.\n# TYPE x_total counter\nx_total 3\n"

    server = MetricsHttpServer("127.0.0.1", 0, render)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def test_endpoint_answers_get_metrics_and_404s_the_rest(http: MetricsHttpServer) -> None:
    base = f"http://127.0.0.1:{http.port}"
    status, kind, body = await asyncio.to_thread(_get, f"{base}/metrics")
    assert status == 200
    assert kind == "text/plain; version=0.0.4; charset=utf-8"
    assert parse(body)["x_total"].samples == [("x_total", {}, 3.0)]
    assert (await asyncio.to_thread(_get, f"{base}/metrics?x=1"))[0] == 200
    for path in ("/", "/metrics/", "/status", "/metricsx"):
        assert (await asyncio.to_thread(_get, base + path))[0] == 404, path
    assert (await asyncio.to_thread(_get, f"{base}/metrics", "POST"))[0] == 405


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


async def test_endpoint_bounds_the_request(
    http: MetricsHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
    assert (await _raw(http.port, huge)).startswith(b"HTTP/1.1 431 ")
    assert (await _raw(http.port, b"HELLO\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    monkeypatch.setattr(metrics_serve, "READ_TIMEOUT_S", 0.3)
    # a client that never finishes its request is dropped after the read timeout
    assert await _raw(http.port, b"GET /metrics HTTP/1.1\r\n") == b""


async def test_a_failing_render_is_a_500_not_a_crash() -> None:
    async def render() -> str:
        raise RuntimeError("buffer closing")

    server = MetricsHttpServer("127.0.0.1", 0, render)
    await server.start()
    try:
        status, _, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/metrics")
    finally:
        await server.close()
    assert status == 500
    assert "buffer closing" in body


async def test_side_messages_are_skipped_without_a_broker() -> None:
    class NoSource:
        last_seq = 0

    options = MqttOptions(host="127.0.0.1", port=free_port(), client_id="t")
    publisher = Publisher(options, NoSource(), "box")  # type: ignore[arg-type]
    assert publisher.publish_side("edge/box/metrics", b"{}") is False


# --------------------------------------------------------------------------- a running agent


async def test_a_running_agent_serves_metrics_that_match_its_status(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    port = free_port()
    async with run_simulators([SimDevice("c1", "counter")]) as sims:
        site = site_dict("m-box", mosquitto.port, [counter_device("c1", sims.ports["c1"], "50ms")])
        site["metrics"] = {"listen": f"127.0.0.1:{port}"}
        (tmp_path / "site.yaml").write_text(yaml.safe_dump(site), encoding="utf-8")
        agent = Agent(load_site(tmp_path / "site.yaml"))
        running = asyncio.create_task(agent.run())
        try:
            await _until_polled(agent, running, 5)
            status, _, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
            from_socket = await asyncio.to_thread(query_metrics, agent.site.status_socket)
            doc = await agent.snapshot()
            # one moment for both views: nothing awaits between these lines
            state = await agent.metrics_state()
            text = render_prometheus(state)
            devices = {p.device.id: _device_status(p, state.now_ms) for p in agent.pollers}
            buffer = buffer_status(state.buffer, "", state.now_ms)
            published = state.publisher.messages_published  # live stats: read them now
        finally:
            agent.request_stop()
            await asyncio.wait_for(running, 60)
    assert status == 200
    assert parse(body)["edge_agent_info"].samples[0][1] == {"version": state.version,
                                                            "agent": "m-box"}  # fmt: skip
    assert value(parse(from_socket), "edge_agent_device_polls_total", device="c1", result="ok") >= 5
    assert doc["metrics"]["listen"] == f"127.0.0.1:{port}"
    families = parse(text)
    c1 = devices["c1"]
    polls = "edge_agent_device_polls_total"
    assert value(families, polls, device="c1", result="ok") == c1["polls_ok"]
    assert value(families, polls, device="c1", result="failed") == c1["polls_failed"]
    assert value(families, "edge_agent_device_overruns_total", device="c1") == c1["overruns"]
    assert value(families, "edge_agent_device_reconnects_total", device="c1") == c1["reconnects"]
    assert value(families, "edge_agent_device_state", device="c1", state=c1["state"]) == 1
    latency = "edge_agent_device_poll_duration_seconds_count"
    assert value(families, latency, device="c1") == c1["polls_ok"] + c1["polls_failed"]
    assert value(families, "edge_agent_buffer_last_seq") == buffer["last_seq"]
    assert value(families, "edge_agent_buffer_pending_batches") == buffer["pending_batches"]
    assert value(families, "edge_agent_buffer_dropped_batches_total") == buffer["dropped_batches"]
    assert value(families, "edge_agent_publish_messages_total") == published
    assert value(families, "edge_agent_publish_connected") == 1
    # the endpoint is closed with the agent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


async def _until_polled(agent: Agent, running: asyncio.Task[None], polls: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if running.done():
            running.result()  # the agent's own error, if it failed to start
            raise AssertionError("the agent stopped by itself")
        ok = [p.stats.polls_ok for p in agent.pollers]
        if agent.ready.is_set() and ok and min(ok) >= polls and agent.publisher.stats.connected:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the agent did not poll {polls} times within 30 s")


def test_metrics_command_without_an_agent_fails_fast(tmp_path: Path) -> None:
    from tests.agent.cli.test_main import _probe

    done = _probe(tmp_path, "metrics")
    assert "CODE 1" in done.stdout, done.stdout + done.stderr
    assert "typer" not in done.stdout.split("MODULES")[1]
    assert "edge-agent: no metrics from agent" in done.stderr
