"""Run an :class:`~agent.runtime.Agent` as a foreground process.

SIGTERM and SIGINT stop it cleanly (flush, drain, exit 0). Under systemd it
reports READY=1 once the buffer is open and the tasks run, and STOPPING=1 on
the way out. With ``WatchdogSec=`` (``$WATCHDOG_USEC``) it sends WATCHDOG=1 every
third of that period, but only while the pipeline is healthy: the event loop
runs (the ping task itself proves it) and the buffer's writer thread is alive
and committing. A hung agent therefore stops pinging and systemd restarts it.
A full disk is not a hang: while the writer fails fast on it and retries, the
pings go on (a restart would only lose the batches held in RAM).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable

from agent.errors import AgentError
from agent.runtime.agent import Agent
from agent.site.loader import Site

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


def watchdog_period() -> float | None:
    """systemd's watchdog period in seconds (``$WATCHDOG_USEC``), or None when off.

    Like ``sd_watchdog_enabled``: ignored when ``$WATCHDOG_PID`` names another process.
    """
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


async def pet_watchdog(healthy: Callable[[], bool], period: float) -> None:
    """Send WATCHDOG=1 every ``period``/3 seconds while ``healthy()``; runs until cancelled."""
    interval = period / 3
    was_healthy = True
    while True:
        ok = healthy()
        if ok:
            sd_notify("WATCHDOG=1")
            if not was_healthy:
                log.info("pipeline healthy again; watchdog pings resumed")
        elif was_healthy:
            log.error("pipeline unhealthy (buffer writer stalled or dead): watchdog pings stopped")
        was_healthy = ok
        await asyncio.sleep(interval)


class _Readiness:
    """READY=1 for systemd, and the health the watchdog checks once ready."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._ready = False
        self._stopping = False

    def on_ready(self) -> None:
        self._ready = True
        sd_notify("READY=1")

    def stop(self) -> None:
        """Signal handler: stop the agent; the buffer closes on the way, which is no fault."""
        self._stopping = True
        self._agent.request_stop()

    def healthy(self, period: float) -> Callable[[], bool]:
        # Before READY the buffer is still opening (quick_check can take a while on
        # an SD card): TimeoutStartSec= bounds that phase, as TimeoutStopSec= bounds
        # the stop. Once running, a commit may sit in one slow fsync: half the period
        # is allowed before the writer counts as stalled, leaving systemd time to act.
        def check() -> bool:
            if not self._ready or self._stopping:
                return True
            return self._agent.buffer.healthy(stall=period / 2)

        return check


def _start_memdiag() -> asyncio.Task[None] | None:
    # imported only when asked for: tracemalloc and ctypes cost nothing in production
    if not os.environ.get("EDGE_AGENT_MEMDIAG"):
        return None
    from agent.runtime.memdiag import start_from_env

    return start_from_env()


async def serve(agent: Agent) -> None:
    """Run ``agent`` until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    ready = _Readiness(agent)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ready.stop)
    loop.add_signal_handler(signal.SIGHUP, agent.request_reload)
    period = watchdog_period()
    # A plain task, cancelled and awaited below, rather than a TaskGroup: an error
    # from agent.run must reach run_agent as itself, not wrapped in an ExceptionGroup.
    pinger = (
        asyncio.create_task(pet_watchdog(ready.healthy(period), period), name="watchdog")
        if period
        else None
    )
    memdiag = _start_memdiag()
    try:
        await agent.run(on_ready=ready.on_ready)
    finally:
        sd_notify("STOPPING=1")
        for task in (pinger, memdiag):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def run_agent(site: Site) -> int:
    """Run the agent of ``site`` in the foreground; the process exit code."""
    try:
        asyncio.run(serve(Agent(site)))
    except (OSError, AgentError) as exc:  # a port taken, a socket in use: one clear line
        log.error("agent %s cannot run: %s", site.agent.id, exc)  # noqa: TRY400
        return 1
    except Exception as exc:
        causes = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        log.critical(
            "agent %s stopped on an error: %s",
            site.agent.id,
            "; ".join(f"{type(c).__name__}: {c}" for c in causes),
            exc_info=exc,
        )
        return 1
    return 0
