"""``edge-agent listen``: what reaches a broker, decoded, for commissioning a destination.

One line per message (time, topic, a summary), a warning line when the buffer
seq or the Sparkplug seq skips or repeats, a summary at the end; ``--json``
prints one JSON object per line instead. The work is in
:mod:`agent.north.listen`; this module turns the options into it and the
errors into one sentence.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.cli.common import EXIT_OK, EXIT_RUNTIME, fail

CONNECT_TIMEOUT_S = 10.0


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for an IPv6 address) -> (host, port); exits 2 otherwise."""
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--broker {text!r}: expected HOST:PORT")
    return host, int(port)


def is_filter(text: str) -> bool:
    """An MQTT topic filter: ``+`` and ``#`` only as whole levels, ``#`` only last."""
    levels = text.split("/")
    wild = [level for level in levels if "+" in level or "#" in level]
    return bool(text) and all(w in ("+", "#") for w in wild) and "#" not in levels[:-1]


def listen(
    *,
    broker: str,
    topics: Sequence[str],
    dialect: str,
    username: str | None,
    password_env: str | None,
    tls: bool,
    tls_ca: Path | None,
    client_id: str | None,
    seq_key: str,
    as_json: bool,
    count: int | None,
    timeout: float | None,
) -> int:
    """Listen and print; the exit code (1 when the broker cannot be reached or the link drops)."""
    from agent.errors import PublishError
    from agent.north.decoding import DIALECTS
    from agent.north.listen import Listener, ListenOptions, summary_lines
    from agent.north.options import MqttOptions, TlsOptions

    host, port = parse_broker(broker)
    if dialect not in DIALECTS:
        fail(f"--dialect {dialect!r}: expected one of {', '.join(DIALECTS)}")
    if count is not None and count < 1:
        fail("--count takes a number of messages of at least 1")
    if timeout is not None and timeout <= 0:
        fail("--timeout takes a positive number of seconds")
    bad = [t for t in topics if not is_filter(t)]
    if bad:
        fail(f"not a topic filter: {', '.join(map(repr, bad))} (+ and # are whole levels, # last)")
    password = None
    if password_env is not None:
        password = os.environ.get(password_env)
        if password is None:
            fail(f"--password-env {password_env}: that environment variable is not set")
    if tls_ca is not None and not tls_ca.is_file():
        fail(f"--tls-ca {tls_ca}: no such file")
    mqtt = MqttOptions(
        host=host,
        port=port,
        client_id=client_id or f"edge-agent-listen-{os.getpid()}",
        username=username,
        password=password,
        tls=TlsOptions(ca=tls_ca) if tls or tls_ca is not None else None,
        connect_timeout=CONNECT_TIMEOUT_S,
    )
    options = ListenOptions(mqtt=mqtt, dialect=dialect, filters=tuple(topics), seq_key=seq_key)

    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    listener = Listener(options, emit, as_json=as_json)
    try:
        filters = listener.connect()
        sys.stderr.write(f"listening on {host}:{port}: {' '.join(filters)} ({dialect})\n")
        sys.stderr.flush()
        summary = listener.run(count, timeout)
        for line in summary_lines(summary, as_json):
            emit(line)
    except PublishError as exc:
        fail(str(exc), EXIT_RUNTIME)
    except BrokenPipeError:  # the reader went away (| head): nothing left to tell it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        listener.close()
    if summary.lost is not None:
        fail(f"the connection to broker {host}:{port} was lost: {summary.lost}", EXIT_RUNTIME)
    return EXIT_OK
