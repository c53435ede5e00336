"""sd_notify under systemd: READY=1, WATCHDOG=1 only while healthy, STOPPING=1.

The test plays systemd's part: it binds the notify socket (a unix datagram
socket) and starts ``edge-agent run`` with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.runtime import process as service
from tests.support.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    # Unix socket paths are limited to 108 bytes; tmp_path can be long.
    path = Path(f"/tmp/edge-agent-notify-{os.getpid()}-{time.monotonic_ns()}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def receive(sock: socket.socket, until: float) -> list[str]:
    """Datagrams until the deadline (bounded by time)."""
    got: list[str] = []
    while (left := until - time.monotonic()) > 0:
        sock.settimeout(min(left, 0.5))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if got.count("WATCHDOG=1") >= 3 and "READY=1" in got:
            break
    return got


def test_agent_under_systemd_reports_ready_pings_and_stopping(
    tmp_path: Path, mosquitto: Mosquitto, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, address = notify_socket
    site = {
        "agent": {"id": "wd-box", "data_dir": "data"},
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port},
        "devices": [],
    }
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site), encoding="utf-8")
    env = {
        **os.environ,
        "NOTIFY_SOCKET": address,
        "WATCHDOG_USEC": "300000",
        "RUNTIME_DIRECTORY": str(tmp_path / "run"),
    }
    env.pop("WATCHDOG_PID", None)
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "-c", str(tmp_path / "site.yaml")],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        got = receive(sock, time.monotonic() + 30)
        assert "READY=1" in got, (got, (tmp_path / "agent.log").read_text())
        assert got.count("WATCHDOG=1") >= 3, got
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        sock.settimeout(5)
        rest = []
        while "STOPPING=1" not in rest:
            rest.append(sock.recv(4096).decode())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_pings_only_while_healthy(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    sock.setblocking(False)
    calls = 0

    def healthy() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3  # unhealthy for the first three checks

    pinger = asyncio.create_task(service.pet_watchdog(healthy, period=0.15))
    try:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(20):
            first = await loop.sock_recv(sock, 4096)
        assert first == b"WATCHDOG=1"
        assert calls >= 4  # no ping was sent while unhealthy
    finally:
        pinger.cancel()
        await asyncio.gather(pinger, return_exceptions=True)


def test_watchdog_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert service.watchdog_period() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert service.watchdog_period() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert service.watchdog_period() is None  # meant for another process
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert service.watchdog_period() == 30.0
    monkeypatch.setenv("WATCHDOG_USEC", "junk")
    assert service.watchdog_period() is None
