"""The demo's MQTT broker: a spawned ``mosquitto`` when installed, else embedded amqtt.

Only ``edge-agent demo`` uses this; a real site always names its broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.errors import DemoError

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, if installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if Path(p).exists()), None)


async def _wait_listening(port: int) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


@contextlib.asynccontextmanager
async def local_broker() -> AsyncIterator[tuple[str, int, str]]:
    """Run a broker on 127.0.0.1; yields (host, port, what it is)."""
    port = free_port()
    binary = find_mosquitto()
    if binary is not None:
        async with _mosquitto(binary, port):
            yield "127.0.0.1", port, f"mosquitto ({binary})"
        return
    async with _amqtt(port):
        yield "127.0.0.1", port, "embedded amqtt"


@contextlib.asynccontextmanager
async def _mosquitto(binary: str, port: int) -> AsyncIterator[None]:
    with tempfile.TemporaryDirectory(prefix="edge-agent-demo-broker-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n",
            encoding="utf-8",
        )
        proc = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await _wait_listening(port)
            yield
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(5):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


@contextlib.asynccontextmanager
async def _amqtt(port: int) -> AsyncIterator[None]:
    try:
        from amqtt.broker import Broker
    except ImportError as exc:
        raise DemoError(
            "no MQTT broker for the demo: install mosquitto (apt-get install mosquitto), "
            "or pip install 'edge-agent[demo]', or pass --broker HOST:PORT"
        ) from exc
    config: dict[str, Any] = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    try:
        await _wait_listening(port)
        yield
    finally:
        await broker.shutdown()
