"""Every default file location, and how `status` finds a running agent.

Shipped data (profiles, example sites, schemas) is found in the checkout's
``config/`` or, from an installed wheel, in ``<prefix>/share/edge-agent/``.

A running agent writes a small pointer file ``<runtime dir>/<agent id>.json``
(pid, status socket, buffer path). ``edge-agent status`` with no arguments reads
these pointers, so factory staff never need to know where a site keeps its data.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.private import check_private_dir, private_dir, read_private, write_private


def _shipped(folder: str) -> Path:
    """``config/<folder>`` of a checkout, else ``<prefix>/share/edge-agent/<folder>`` (a wheel)."""
    checkout = Path(__file__).resolve().parent.parent / "config" / folder
    installed = Path(sys.prefix) / "share" / "edge-agent" / folder
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


SHIPPED_PROFILES = _shipped("profiles")
"""The profile library that comes with the agent."""
SHIPPED_EXAMPLES = _shipped("examples")
"""Sample sites (the garden-tools sample factory and others)."""
SHIPPED_SCHEMAS = _shipped("schema")
"""JSON schemas of site files and profiles, for editors."""
ETC_PROFILES = Path("/etc/edge-agent/profiles")
"""A box's own profiles, searched before the shipped ones."""
SERVICE_DATA_DIR = Path("/var/lib/edge-agent")
"""The data dir of the systemd service (its ``StateDirectory=``)."""
UNIT_FILE = Path("/etc/systemd/system/edge-agent.service")
"""Where the install script puts the systemd unit."""


def default_data_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd), ``/var/lib/edge-agent`` as root, else a user dir."""
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    if os.geteuid() == 0:
        return SERVICE_DATA_DIR
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
    # a name anyone could create first: agent.private checks owner, mode and links
    return Path(tempfile.gettempdir()) / f"edge-agent-{os.geteuid()}"


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
    """Publish ``pointer`` for `status`; returns the file written.

    Raises :class:`~agent.errors.UnsafePath` when the runtime dir is not ours alone.
    """
    folder = private_dir(runtime_dir(), "the runtime dir")
    path = folder / f"{pointer.agent_id}.json"
    write_private(path, json.dumps(asdict(pointer)).encode())
    return path


def read_pointers() -> list[AgentPointer]:
    """Every pointer file found, alive or stale, sorted by agent id.

    Only files we (or root) own, in a runtime dir only we can change (else
    :class:`~agent.errors.UnsafePath`): a planted pointer must not send
    `status` to another account's socket.
    """
    folder = runtime_dir()
    if not folder.is_dir():
        return []
    check_private_dir(folder, "the runtime dir")
    pointers = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = read_private(path)
            if data is not None:
                pointers.append(AgentPointer(**json.loads(data)))
        except (ValueError, TypeError):
            continue
    return pointers


def remove_pointer(agent_id: str, pid: int) -> None:
    """Remove our pointer file, unless another process has replaced it since."""
    path = runtime_dir() / f"{agent_id}.json"
    try:
        data = read_private(path)
        if data is not None and json.loads(data).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass
