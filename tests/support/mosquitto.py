"""A real Mosquitto broker for tests, and a QoS 1 subscriber that records what it gets.

``Mosquitto`` writes its own config into a work directory and runs
``mosquitto -c`` on 127.0.0.1 and a free port (never 1883). ``restart()``
keeps the port, so a client can reconnect to the "same" broker. Options: a
password file, a TLS listener, persistence (off by default), a maximum packet size.

``Subscriber`` is a paho client on its own thread (fine in tests) that
subscribes at QoS 1 and records ``(topic, payload, retain, time)``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.tools import require

__all__ = [
    "Mosquitto",
    "MosquittoTls",
    "Received",
    "Subscriber",
    "TestCerts",
    "find_mosquitto",
    "free_port",
    "make_test_certs",
]

HOST = "127.0.0.1"


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, or None (tests needing it should skip)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class MosquittoTls:
    """A TLS listener: server certificate and key, and the CA clients are checked against."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False


class Mosquitto:
    """One mosquitto process on 127.0.0.1:``port``, configured from its arguments."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        users: Mapping[str, str] | None = None,
        tls: MosquittoTls | None = None,
        persistence: bool = False,
        max_packet_size: int | None = None,
        extra_config: tuple[str, ...] = (),
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.users = dict(users or {})
        self.tls = tls
        self.persistence = persistence
        self.max_packet_size = max_packet_size  # the broker closes a link sending a larger one
        self.extra_config = extra_config
        self.conf = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # --- lifecycle

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until the port accepts connections."""
        if self.running:
            return
        for _attempt in range(3):
            self._write_config()
            self._spawn()
            if self._wait_ready(timeout):
                return
            self._reap()
            if self._fixed_port or "Address already in use" not in self.log_text():
                break
            self.port = free_port()  # lost the race for a free port: take another one
        raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{self.log_text()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop cleanly (SIGTERM: persistence, if on, is saved), SIGKILL if it lingers."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._reap()

    def kill(self) -> None:
        """Kill at once (SIGKILL): no clean shutdown, no persistence save."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self._reap()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self._fixed_port = True
        self.start(timeout)

    def log_text(self) -> str:
        """Everything the broker logged so far."""
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")
        return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals

    def _write_config(self) -> None:
        lines = [f"listener {self.port} {HOST}", "log_dest stderr", "log_type all"]
        lines.append("log_timestamp_format %H:%M:%S")
        if self.users:
            lines += ["allow_anonymous false", f"password_file {self._write_passwords()}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
                f"require_certificate {str(self.tls.require_certificate).lower()}",
            ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
            lines.append("max_queued_messages 0")  # keep everything for offline sessions
        else:
            lines.append("persistence false")
        if self.max_packet_size is not None:
            lines.append(f"max_packet_size {self.max_packet_size}")
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to 'mosquitto' and cannot read our files
        lines += list(self.extra_config)
        self.conf.write_text("\n".join(lines) + "\n")

    def _write_passwords(self) -> Path:
        path = self.workdir / "passwords"
        path.write_text("")
        path.chmod(0o600)
        tool = shutil.which("mosquitto_passwd")
        for user, password in self.users.items():
            if tool is not None:
                subprocess.run(
                    [tool, "-b", str(path), user, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            else:
                with path.open("a") as f:
                    f.write(f"{user}:{_pbkdf2_hash(password)}\n")
        return path

    def _spawn(self) -> None:
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                return False
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.5):
                return True
            time.sleep(0.05)
        return False

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait(10)
        self._proc = None


def _pbkdf2_hash(password: str) -> str:
    """Mosquitto's ``$7$`` password hash (PBKDF2-SHA512), when mosquitto_passwd is missing."""
    salt = os.urandom(12)
    iterations = 101
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class TestCerts:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost, a client certificate."""

    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    __test__ = False  # not a pytest test class


def make_test_certs(directory: Path) -> TestCerts:
    """Create certificates with the ``openssl`` command line tool (RSA 2048, 1 day)."""
    openssl = require("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    d = directory

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))  # fmt: skip
    for name, extra in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))  # fmt: skip
        (d / f"{name}.ext").write_text(extra + "\n")
        run("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1",
            "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))  # fmt: skip
    return TestCerts(
        ca=d / "ca.pem",
        ca_key=d / "ca.key",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
    )


# --------------------------------------------------------------------------- subscriber


@dataclass(frozen=True)
class Received:
    """One message as the subscriber got it; ``at`` is ``time.monotonic()``."""

    topic: str
    payload: bytes
    retain: bool
    at: float


class Subscriber:
    """Subscribe at QoS 1 to ``topic`` and record every message.

    With ``session`` set to a client id the session is persistent (clean
    session off), so a broker with persistence keeps queueing for it while
    either side restarts. The client reconnects by itself.
    """

    def __init__(
        self,
        port: int,
        topic: str = "#",
        *,
        username: str | None = None,
        password: str | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        session: str | None = None,
    ) -> None:
        self.port = port
        self.topic = topic
        self._messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=session or "",
            clean_session=session is None,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls_ca is not None:
            self._client.tls_set(
                ca_certs=str(tls_ca),
                certfile=None if tls_cert is None else str(tls_cert),
                keyfile=None if tls_key is None else str(tls_key),
            )
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> Self:
        """Connect and wait for the SUBACK, so nothing published afterwards is missed."""
        self._client.connect(HOST, self.port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"subscriber: no SUBACK from 127.0.0.1:{self.port} in {timeout} s")
        return self

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def messages(self) -> list[Received]:
        """A copy of everything received so far, in arrival order."""
        with self._cond:
            return list(self._messages)

    def payloads(self, topic: str | None = None) -> list[bytes]:
        """Payloads received (on ``topic`` only, if given), in arrival order."""
        return [m.payload for m in self.messages if topic is None or m.topic == topic]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 20.0
    ) -> list[Received]:
        """Wait until ``predicate(messages)`` holds; return the messages or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._messages)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"subscriber: condition not met in {timeout} s; "
                        f"{len(self._messages)} messages received"
                    )
                self._cond.wait(min(left, 0.5))
            return list(self._messages)

    async def wait_for_async(
        self,
        predicate: Callable[[list[Received]], bool],
        timeout: float = 20.0,  # noqa: ASYNC109 - same signature as wait_for
    ) -> list[Received]:
        """:meth:`wait_for` without blocking the event loop (for async tests)."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if not rc.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._messages.append(
                Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic())
            )
            self._cond.notify_all()
