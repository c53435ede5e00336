"""Where the agent keeps its state and how `status` finds a running agent.

A running agent writes a small pointer file ``<runtime dir>/<agent id>.json``
(pid, status socket, buffer path). ``edge-agent status`` with no arguments reads
these pointers, so factory staff never need to know where a site keeps its data.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


def default_data_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd), ``/var/lib/edge-agent`` as root, else a user dir."""
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/edge-agent")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-agent"


def runtime_dir() -> Path:
    """Directory of the running agents' pointer files."""
    if runtime := os.environ.get("RUNTIME_DIRECTORY"):
        return Path(runtime.split(":")[0])
    if os.geteuid() == 0:
        return Path("/run/edge-agent")
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "edge-agent"
    return Path(f"/tmp/edge-agent-{os.geteuid()}")  # noqa: S108 - per-user, created 0700


@dataclass(frozen=True, slots=True)
class AgentPointer:
    """What `status` needs to find one running agent."""

    agent_id: str
    pid: int
    socket: str
    buffer: str
    config: str

    def alive(self) -> bool:
        """True while the process that wrote the pointer still runs."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def write_pointer(pointer: AgentPointer) -> Path:
    """Publish ``pointer`` for `status`; returns the file written."""
    folder = runtime_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{pointer.agent_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(pointer)), encoding="utf-8")
    tmp.replace(path)
    return path


def read_pointers() -> list[AgentPointer]:
    """Every pointer file found, alive or stale, sorted by agent id."""
    folder = runtime_dir()
    pointers = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            pointers.append(AgentPointer(**json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError):
            continue
    return pointers


def remove_pointer(agent_id: str, pid: int) -> None:
    """Remove our pointer file, unless another process has replaced it since."""
    path = runtime_dir() / f"{agent_id}.json"
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass
