"""Private MQTT brokers of several kinds for interop tests, behind one small interface.

Every broker here is a process of its own, started by the test on 127.0.0.1
and free ports, with all its files in a work directory the test owns. None
of them uses or touches a broker the machine runs as a service (1883, 4222,
5672, ...).

``Broker`` is the interface: ``name``, ``host``, ``port``, ``running``,
``keeps_state``, ``start()``, ``stop()``, ``kill()``, ``restart()``,
``log_text()``, and use as a context manager. ``start()`` returns only once
a real MQTT client got a CONNACK (a listening port is not enough: RabbitMQ
and NATS accept TCP before they accept a session), and gives up after its
timeout with an error that quotes the broker's log tail.

Kinds (``make_broker(kind, workdir)``):

``mosquitto``  ``MosquittoBroker``, the existing ``Mosquitto`` helper plus the
               CONNECT check. ``restart()`` keeps state only with
               ``persistence=True``.
``rabbitmq``   ``RabbitMqttBroker``: a RabbitMQ node of its own (own node name,
               cookie, epmd port, database and logs) with ``rabbitmq_mqtt``.
               ``restart()`` keeps state (durable session queues, retained
               messages).
``nats``       ``NatsMqttBroker``: ``nats-server`` with JetStream and an
               ``mqtt {}`` block. ``restart()`` keeps state (JetStream store).
``amqtt``      ``AmqttBroker``: the amqtt broker as a subprocess. ``restart()``
               loses state (in memory only).

What each broker needs and where it differs from Mosquitto is written down
at each class and in ``tests/e2e/test_broker_support.py``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self, runtime_checkable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from tests.support.mosquitto import Mosquitto, find_mosquitto

__all__ = [
    "BROKER_KINDS",
    "HOST",
    "AmqttBroker",
    "Broker",
    "BrokerKind",
    "BrokerStartError",
    "MosquittoBroker",
    "NatsMqttBroker",
    "Publisher",
    "RabbitMqttBroker",
    "broker_available",
    "free_ports",
    "make_broker",
    "mqtt_connect_probe",
]

HOST: Final = "127.0.0.1"

BrokerKind = Literal["mosquitto", "rabbitmq", "nats", "amqtt"]
BROKER_KINDS: Final[tuple[BrokerKind, ...]] = ("mosquitto", "rabbitmq", "nats", "amqtt")

LOG_TAIL_LINES: Final = 40


@runtime_checkable
class Broker(Protocol):
    """What a test needs from an MQTT broker, whatever its kind."""

    @property
    def name(self) -> str:
        """The broker kind: ``mosquitto``, ``rabbitmq``, ``nats`` or ``amqtt``."""
        ...

    @property
    def host(self) -> str:
        """Always 127.0.0.1."""
        ...

    @property
    def port(self) -> int:
        """The MQTT (plain TCP) port; the same after ``restart()``."""
        ...

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        ...

    @property
    def keeps_state(self) -> bool:
        """Whether sessions and retained messages survive ``stop()``/``start()``."""
        ...

    def start(self, timeout: float = ...) -> None:
        """Start and return once an MQTT CONNECT gets a CONNACK."""
        ...

    def stop(self, timeout: float = ...) -> None:
        """Clean shutdown; killed if it does not finish in time."""
        ...

    def kill(self) -> None:
        """Kill at once, no clean shutdown."""
        ...

    def restart(self, timeout: float = ...) -> None:
        """``stop()`` and ``start()`` on the same port."""
        ...

    def log_text(self) -> str:
        """Everything the broker logged so far."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BrokerStartError(RuntimeError):
    """A broker did not come up (its log tail is in the message)."""


# --------------------------------------------------------------------------- helpers


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def mqtt_connect_probe(host: str, port: int, timeout: float) -> str | None:
    """One MQTT 3.1.1 CONNECT (clean session) with paho; None on a good CONNACK, else why not."""
    timeout = max(timeout, 0.2)
    deadline = time.monotonic() + timeout
    results: list[Any] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"probe-{secrets.token_hex(6)}",
        clean_session=True,
    )
    client.connect_timeout = min(timeout, 5.0)

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        results.append(rc)

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        return f"TCP connect failed: {exc}"
    try:
        while not results:
            if time.monotonic() >= deadline:
                return f"no CONNACK within {timeout:.1f} s"
            rc = client.loop(timeout=0.1)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return f"connection lost before CONNACK ({mqtt.error_string(rc)})"
        if results[0].is_failure:
            return f"CONNACK refused: {results[0]}"
        return None
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
            client.loop(timeout=0.05)
        with contextlib.suppress(Exception):
            sock = client.socket()
            if sock is not None:
                sock.close()


def _log_excerpt(text: str) -> str:
    """The first error lines (often the cause) and the last lines of a log."""
    all_lines = text.splitlines()
    errors = [line for line in all_lines if "error" in line.lower() or "[ERR]" in line][:10]
    parts = []
    if errors and len(all_lines) > LOG_TAIL_LINES:
        parts += ["--- first error lines:", *errors]
    parts += ["--- last lines:", *all_lines[-LOG_TAIL_LINES:]]
    return "\n".join(parts)


def _port_in_use(text: str) -> bool:
    lowered = text.lower()
    return "address already in use" in lowered or "eaddrinuse" in lowered


def _find_binary(name: str, *candidates: str) -> str | None:
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


def _clean_env(drop_prefixes: tuple[str, ...]) -> dict[str, str]:
    """This process's environment without variables that would steer the broker elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}


# --------------------------------------------------------------------------- base


class _ProcessBroker:
    """A broker that is one process group we started: spawn, CONNECT check, stop, restart."""

    name: str = "broker"
    default_timeout: float = 30.0
    stop_timeout: float = 20.0

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host: str = HOST
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_ports(1)[0]
        self.log_path = workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.startup_seconds: float | None = None
        """Seconds the last ``start()`` took from spawn to the first CONNACK."""

    # --- what a kind provides

    @property
    def keeps_state(self) -> bool:
        return False

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _prepare(self) -> None:
        """Write config files before each spawn."""

    def _pick_ports(self) -> None:
        """Choose new free ports after losing a race for one."""
        self.port = free_ports(1)[0]

    def _graceful_stop(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)

    def _after_exit(self) -> None:
        """Clean up helpers the broker left behind (once the process is gone)."""

    # --- lifecycle

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the process (and process group) we started, while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout: float | None = None) -> None:
        """Start and wait until an MQTT CONNECT gets a CONNACK; BrokerStartError if not in time.

        ``timeout`` (default: the kind's ``default_timeout``) bounds one attempt;
        only a lost race for a free port leads to another (at most 3).
        """
        if self.running:
            return
        limit = self.default_timeout if timeout is None else timeout
        why = "not started"
        for _attempt in range(3):
            self._prepare()
            began = time.monotonic()
            self._spawn()
            why = self._wait_ready(began + limit)
            if not why:
                self.startup_seconds = time.monotonic() - began
                return
            self._kill_group()
            self._reap()
            if self._fixed_port or not _port_in_use(self._current_log()):
                break
            self._pick_ports()  # lost the race for a free port: take others
        raise BrokerStartError(
            f"{self.name} did not accept an MQTT CONNECT on {self.host}:{self.port} "
            f"(limit {limit:.0f} s): {why}; log {self.log_path}:\n"
            f"{_log_excerpt(self._current_log())}"
        )

    def stop(self, timeout: float | None = None) -> None:
        """Clean shutdown; SIGKILL to our process group if it lingers."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._graceful_stop(proc, self.stop_timeout if timeout is None else timeout)
        self._kill_group()
        self._reap()

    def kill(self) -> None:
        """SIGKILL our process group at once: no clean shutdown."""
        self._kill_group()
        self._reap()

    def restart(self, timeout: float | None = None) -> None:
        """Stop and start again on the same port (state kept only if ``keeps_state``)."""
        self.stop()
        self._fixed_port = True
        self.start(timeout)

    def log_text(self) -> str:
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

    def _current_log(self) -> str:
        """What the broker logged since the last spawn."""
        with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")
        return ""

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._log_offset = self.log_path.stat().st_size
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
                cwd=self.workdir,
                start_new_session=True,  # own process group: stopped as a whole, by its PID
            )
        finally:
            log.close()

    def _wait_ready(self, deadline: float) -> str:
        began = time.monotonic()
        why = "no attempt made"
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                return f"the process exited (code {code}) after {time.monotonic() - began:.1f} s"
            left = deadline - time.monotonic()
            outcome = mqtt_connect_probe(self.host, self.port, min(left, 5.0))
            if outcome is None:
                return ""
            why = outcome
            time.sleep(0.1)
        return f"last attempt: {why}"

    def _kill_group(self) -> None:
        proc = self._proc
        if proc is None:
            return
        # The group id is the PID we started (start_new_session); children live in it too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self._proc = None
        self._after_exit()


# --------------------------------------------------------------------------- RabbitMQ


def find_rabbitmq() -> tuple[str, str] | None:
    """Paths of ``rabbitmq-server`` and ``rabbitmqctl`` (the real scripts), or None."""
    # The Debian wrappers in /usr/sbin switch to the 'rabbitmq' user, run in
    # /var/lib/rabbitmq and write /var/log/rabbitmq/startup_log, i.e. they share
    # the system node's cookie and files. The scripts behind them do not.
    for base in ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin"):
        server, ctl = f"{base}/rabbitmq-server", f"{base}/rabbitmqctl"
        if os.access(server, os.X_OK) and os.access(ctl, os.X_OK):
            return server, ctl
    return None


class RabbitMqttBroker(_ProcessBroker):
    """A private RabbitMQ node with the MQTT plugin, MQTT on 127.0.0.1:``port``.

    Needs: ``rabbitmq-server`` (3.10 tested) and its Erlang, nothing else. The
    node has its own name (``edgetest-<random>@localhost``), Erlang cookie
    (``HOME`` is the work directory), epmd (``ERL_EPMD_PORT``), distribution
    and AMQP ports, database, config, enabled-plugins file and log. Nothing
    in /etc/rabbitmq or /var/lib/rabbitmq is read or written. Anonymous MQTT
    clients log in as ``guest`` (allowed from loopback only).

    ``restart()`` keeps state: the node name and database stay, so durable
    (clean session = false) session queues and retained messages (``dets``
    store) survive. Starts in 8-15 s with a new database and 4-7 s with an
    existing one (2 cores); a clean stop takes ~2 s.
    """

    name = "rabbitmq"
    default_timeout = 90.0
    stop_timeout = 30.0

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra_config: tuple[str, ...] = (),
        private_epmd: bool = True,
    ) -> None:
        super().__init__(workdir, port=port)
        found = find_rabbitmq()
        if found is None:
            raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        self.server_script, self.ctl_script = found
        self.nodename = f"edgetest-{secrets.token_hex(4)}@localhost"
        self.extra_config = extra_config
        self.private_epmd = private_epmd
        self.amqp_port, self.dist_port, self.epmd_port = free_ports(3)
        self.conf = workdir / "rabbitmq.conf"
        self.plugins_file = workdir / "enabled_plugins"
        self.env_file = workdir / "rabbitmq-env.conf"
        self.home = workdir / "home"

    @property
    def keeps_state(self) -> bool:
        return True

    def _pick_ports(self) -> None:
        self.port, self.amqp_port, self.dist_port, self.epmd_port = free_ports(4)

    def _prepare(self) -> None:
        self.home.mkdir(exist_ok=True)
        for sub in ("mnesia", "log", "plugins-expand"):
            (self.workdir / sub).mkdir(exist_ok=True)
        # An empty env file stops /etc/rabbitmq/rabbitmq-env.conf from being read.
        self.env_file.write_text("# all settings come from the environment\n")
        self.plugins_file.write_text("[rabbitmq_mqtt].\n")
        lines = [
            f"listeners.tcp.default = {HOST}:{self.amqp_port}",
            f"mqtt.listeners.tcp.default = {HOST}:{self.port}",
            "mqtt.allow_anonymous = true",
            "mqtt.default_user = guest",
            "mqtt.default_pass = guest",
            "log.console = true",
            "log.console.level = info",
            "log.console.use_colors = off",
            "log.file = false",
            *self.extra_config,
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _env(self) -> dict[str, str]:
        env = _clean_env(("RABBITMQ_", "ERL_", "ERLANG_"))
        env.update(
            HOME=str(self.home),  # the Erlang cookie lives here
            RABBITMQ_CONF_ENV_FILE=str(self.env_file),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(self.conf),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.workdir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.plugins_file),
            RABBITMQ_MNESIA_BASE=str(self.workdir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.workdir / "log"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(self.workdir / "plugins-expand"),
            RABBITMQ_PID_FILE=str(self.workdir / "rabbitmq.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS=HOST,
        )
        if self.private_epmd:
            env["ERL_EPMD_PORT"] = str(self.epmd_port)
        return env

    def _command(self) -> list[str]:
        return [self.server_script]

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n NODE ARGS`` against this node (never the system one)."""
        return subprocess.run(
            [self.ctl_script, "-n", self.nodename, *args],
            env=self._env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _graceful_stop(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self.rabbitmqctl("stop", timeout=timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(deadline - time.monotonic(), 1.0))
            return
        # The start script forwards SIGTERM to the Erlang VM, which shuts down cleanly.
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(deadline - time.monotonic(), 1.0))

    def _after_exit(self) -> None:
        # The VM started an epmd daemon on our private port (its own session,
        # so not in our group): stop that one, by its port.
        epmd = shutil.which("epmd")
        if not self.private_epmd or epmd is None:
            return
        env = {**_clean_env(("ERL_",)), "ERL_EPMD_PORT": str(self.epmd_port)}
        for _ in range(20):
            try:
                alive = subprocess.run(
                    [epmd, "-port", str(self.epmd_port), "-names"],
                    env=env,
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return
            if alive.returncode != 0:
                return  # no epmd on that port (any more)
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    [epmd, "-port", str(self.epmd_port), "-kill"],
                    env=env,
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
            time.sleep(0.1)


# --------------------------------------------------------------------------- NATS


def find_nats_server() -> str | None:
    """Path of ``nats-server``, or None."""
    return _find_binary("nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server")


class NatsMqttBroker(_ProcessBroker):
    """A private ``nats-server`` with JetStream and MQTT on 127.0.0.1:``port``.

    Needs: ``nats-server`` 2.2+ (2.9.10 tested); MQTT needs ``server_name``
    and JetStream (sessions, retained messages and QoS 1 messages are
    JetStream streams in ``workdir/jetstream``). The NATS client port is a
    free loopback port too (``nats_port``).

    ``restart()`` keeps state (the JetStream store stays). Starts in ~0.1 s;
    the first MQTT CONNECT creates the streams.
    """

    name = "nats"
    default_timeout = 30.0

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        max_payload: int | None = None,
        extra_config: tuple[str, ...] = (),
        mqtt_config: tuple[str, ...] = (),
    ) -> None:
        super().__init__(workdir, port=port)
        binary = find_nats_server()
        if binary is None:
            raise RuntimeError("nats-server is not installed (apt-get install nats-server)")
        self.binary = binary
        self.server_name = f"edgetest-{secrets.token_hex(4)}"
        self.nats_port = free_ports(1)[0]
        self.max_payload = max_payload
        self.extra_config = extra_config
        self.mqtt_config = mqtt_config
        self.conf = workdir / "nats.conf"
        self.store_dir = workdir / "jetstream"

    @property
    def keeps_state(self) -> bool:
        return True

    def _pick_ports(self) -> None:
        self.port, self.nats_port = free_ports(2)

    def _prepare(self) -> None:
        self.store_dir.mkdir(exist_ok=True)
        lines = [
            f'server_name: "{self.server_name}"',
            f'listen: "{HOST}:{self.nats_port}"',
            "jetstream {",
            f'  store_dir: "{self.store_dir}"',
            "  max_memory_store: 256MB",
            "  max_file_store: 2GB",
            "}",
            "mqtt {",
            f'  host: "{HOST}"',
            f"  port: {self.port}",
            *(f"  {line}" for line in self.mqtt_config),
            "}",
        ]
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        lines += list(self.extra_config)
        self.conf.write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf)]


# --------------------------------------------------------------------------- amqtt


def find_amqtt() -> str | None:
    """Path of the ``amqtt`` broker script of this Python environment, or None."""
    beside = Path(sys.executable).parent / "amqtt"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("amqtt")


class AmqttBroker(_ProcessBroker):
    """The amqtt broker (PyPI ``amqtt``, 0.12 tested) as a subprocess on 127.0.0.1:``port``.

    Needs: the ``amqtt`` package in the test environment (the project's
    ``demo`` extra). Config is YAML: one ``default`` tcp listener and the
    anonymous-auth plugin. Stopped with SIGINT (its clean shutdown path; it
    has no SIGTERM handler).

    ``restart()`` loses state: sessions and retained messages live in memory.
    Starts in ~0.5 s (Python imports).
    """

    name = "amqtt"
    default_timeout = 30.0
    stop_timeout = 10.0

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra_config: tuple[str, ...] = (),
        debug: bool = False,
    ) -> None:
        super().__init__(workdir, port=port)
        binary = find_amqtt()
        if binary is None:
            raise RuntimeError("amqtt is not installed (pip install amqtt)")
        self.binary = binary
        self.extra_config = extra_config
        self.debug = debug
        self.conf = workdir / "amqtt.yaml"

    def _prepare(self) -> None:
        lines = [
            "listeners:",
            "  default:",
            "    type: tcp",
            f"    bind: {HOST}:{self.port}",
            "plugins:",
            "  amqtt.plugins.logging_amqtt.EventLoggerPlugin: {}",
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:",
            "    allow_anonymous: true",
            *self.extra_config,
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf), *(["-d"] if self.debug else [])]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def _graceful_stop(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        proc.send_signal(signal.SIGINT)  # KeyboardInterrupt: broker.shutdown()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
            return
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2.0)


# --------------------------------------------------------------------------- Mosquitto


class MosquittoBroker(Mosquitto):
    """The ``Mosquitto`` helper behind the ``Broker`` interface (plus the CONNECT check).

    ``restart()`` keeps state only with ``persistence=True``.
    """

    name = "mosquitto"
    host = HOST

    @property
    def keeps_state(self) -> bool:
        return self.persistence

    def start(self, timeout: float = 10.0) -> None:
        """Start, then wait until an MQTT CONNECT gets a CONNACK."""
        already = self.running
        if already:
            return
        deadline = time.monotonic() + timeout
        super().start(timeout)
        why = "no attempt made"
        while time.monotonic() < deadline and self.running:
            outcome = mqtt_connect_probe(HOST, self.port, max(deadline - time.monotonic(), 0.2))
            if outcome is None:
                return
            why = outcome
            time.sleep(0.05)
        self.stop()
        raise BrokerStartError(
            f"mosquitto did not accept an MQTT CONNECT on {HOST}:{self.port}: {why}\n"
            f"log {self.log_path}:\n{_log_excerpt(self.log_text())}"
        )


# --------------------------------------------------------------------------- publisher


class Publisher:
    """A paho client (MQTT 3.1.1, clean session) that waits for each PUBACK, on its own thread.

    It reconnects by itself (unless ``reconnect=False``); ``connects`` counts
    CONNACKs, so a test can wait for the reconnect after a broker restart.
    """

    def __init__(
        self,
        port: int,
        *,
        host: str = HOST,
        client_id: str = "",
        keepalive: int = 10,
        reconnect: bool = True,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.connects = 0
        self.disconnects = 0
        self._cond = threading.Condition()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            reconnect_on_failure=reconnect,
        )
        self._client.reconnect_delay_set(1, 1)
        if will is not None:
            topic, payload, qos, retain = will
            self._client.will_set(topic, payload, qos=qos, retain=retain)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    @property
    def client(self) -> mqtt.Client:
        """The paho client itself."""
        return self._client

    def start(self, timeout: float = 10.0) -> Self:
        """Connect and wait for the CONNACK."""
        self._client.connect(self.host, self.port, keepalive=self.keepalive)
        self._client.loop_start()
        self.wait_connected(0, timeout)
        return self

    def wait_connected(self, after: int, timeout: float = 30.0) -> None:
        """Wait until more than ``after`` CONNACKs were received and the client is connected."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.connects <= after or not self._client.is_connected():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"publisher: no CONNACK from {self.host}:{self.port} in {timeout} s"
                    )
                self._cond.wait(min(left, 0.2))

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Publish and wait until the broker acknowledged it (PUBACK / PUBCOMP)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"publisher: no acknowledgement for {topic!r} in {timeout} s")

    def drop(self) -> None:
        """Close the socket without DISCONNECT, as a crash would (the broker sends the will)."""
        self._client.loop_stop()
        sock = self._client.socket()
        if sock is not None:
            sock.close()

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

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
            with self._cond:
                self.connects += 1
                self._cond.notify_all()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        with self._cond:
            self.disconnects += 1
            self._cond.notify_all()


# --------------------------------------------------------------------------- factory


def broker_available(kind: BrokerKind) -> bool:
    """Whether the binary for ``kind`` is installed here."""
    found: object = {
        "mosquitto": find_mosquitto,
        "rabbitmq": find_rabbitmq,
        "nats": find_nats_server,
        "amqtt": find_amqtt,
    }[kind]()
    return found is not None


def make_broker(kind: BrokerKind, workdir: Path, *, port: int | None = None) -> Broker:
    """A not yet started broker of ``kind`` with its files in ``workdir``."""
    if kind == "mosquitto":
        return MosquittoBroker(workdir, port=port)
    if kind == "rabbitmq":
        return RabbitMqttBroker(workdir, port=port)
    if kind == "nats":
        return NatsMqttBroker(workdir, port=port)
    return AmqttBroker(workdir, port=port)
