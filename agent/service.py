"""Run an :class:`~agent.runtime.Agent` as a foreground process.

SIGTERM and SIGINT stop it cleanly (flush, drain, exit 0). Under systemd it
reports READY=1 once the buffer is open and the tasks run, and STOPPING=1 on
the way out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from agent.resolve import Site
from agent.runtime import Agent

log = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd's notify socket, if there is one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


async def serve(agent: Agent) -> None:
    """Run ``agent`` until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_stop)
    try:
        await agent.run(on_ready=lambda: sd_notify("READY=1"))
    finally:
        sd_notify("STOPPING=1")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_agent(site: Site) -> int:
    """Run the agent of ``site`` in the foreground; the process exit code."""
    try:
        asyncio.run(serve(Agent(site)))
    except OSError as exc:
        log.error("agent %s cannot run: %s", site.agent.id, exc)  # noqa: TRY400 - one clear line
        return 1
    except RuntimeError as exc:
        log.error("agent %s cannot run: %s", site.agent.id, exc)  # noqa: TRY400
        return 1
    return 0
