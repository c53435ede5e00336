"""A stand-in for systemd's notify socket: records every datagram the agent sends."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edge-agent.service"


def unit_watchdog_s() -> float:
    """``WatchdogSec=`` of the shipped unit, in seconds (plain seconds there)."""
    found = re.search(r"^WatchdogSec=(\d+)s?\s*$", UNIT.read_text(encoding="utf-8"), re.M)
    assert found, f"no WatchdogSec= in {UNIT}"
    return float(found.group(1))


class NotifySocket:
    """A unix datagram socket at ``path``; ``messages`` holds (monotonic time, text)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def pets(self, since: float = 0.0) -> list[float]:
        """Times of the WATCHDOG=1 messages received after ``since``."""
        return [t for t, m in list(self.messages) if t >= since and "WATCHDOG=1" in m]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
