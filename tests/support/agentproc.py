"""Run ``edge-agent run`` as a real subprocess, the way systemd does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from agent.status.client import query
from agent.status.document import StatusDocument, is_status

ROOT = Path(__file__).resolve().parents[2]


def site_dict(
    agent_id: str,
    broker_port: int,
    devices: list[dict[str, Any]],
    *,
    mqtt: dict[str, Any] | None = None,
    buffer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A site file's content for tests: data in ./data next to the file."""
    return {
        "agent": {"id": agent_id, "data_dir": "data", "log_level": "info"},
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker_port,
            "keepalive": "5s",
            "reconnect_max": "2s",
            **(mqtt or {}),
        },
        "buffer": {"max_size": "64MB", "commit_interval": "50ms", **(buffer or {})},
        "devices": devices,
    }


def counter_device(device_id: str, port: int, interval: str = "200ms") -> dict[str, Any]:
    """A device of the generic-counter profile on a simulator's TCP port."""
    return {
        "id": device_id,
        "profile": "generic-counter",
        "connection": {"modbus_tcp": {"host": "127.0.0.1", "port": port, "timeout": "1s"}},
        "poll_groups": {"default": interval},
    }


class AgentProcess:
    """``python -m agent run -c site.yaml`` with its own runtime dir and log file."""

    def __init__(self, workdir: Path, site: dict[str, Any]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.site_file = workdir / "site.yaml"
        self.site_file.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")
        self.socket = workdir / "data" / "status.sock"
        self.buffer = workdir / "data" / "buffer.db"
        self.log_path = workdir / "agent.log"
        self.env = {
            **os.environ,
            "RUNTIME_DIRECTORY": str(workdir / "run"),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None
        self.module = "agent"  # ``python -m <module> run``: a test may run a patched launcher

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run another ``edge-agent`` command in the same environment."""
        return subprocess.run(
            [sys.executable, "-m", "agent", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self, wait: float = 20.0) -> Self:
        """Start and wait until the status endpoint answers."""
        # A second start would orphan the first process (``with`` starts it already).
        assert self.proc is None or self.proc.poll() is not None, "the agent is running"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "run", "-c", str(self.site_file)],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.status()
                return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"agent did not answer on {self.socket}:\n{self.log()}")

    def status(self) -> StatusDocument:
        """The running agent's status document (an error answer fails the test)."""
        answer = query(self.socket)
        assert is_status(answer), f"the agent answered {answer}"
        return answer

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log(self) -> str:
        """Everything the agent printed."""
        return (
            self.log_path.read_text(encoding="utf-8", errors="replace")
            if self.log_path.exists()
            else ""
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
