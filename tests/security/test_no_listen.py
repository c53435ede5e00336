"""The agent listens on no network port; its status socket is a unix socket, mode 0660 or less.

The sockets of the ``edge-agent run`` process are found through
``/proc/<pid>/fd`` (``socket:[inode]``) and looked up by inode in
``/proc/<pid>/net/{tcp,tcp6,udp,udp6,unix}`` while the agent polls a device
and publishes to a broker, so it has live connections of both kinds.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import time
from pathlib import Path

from simulators.run import SimDevice
from tests.security.support import start_agent, wait_until
from tests.support.agentproc import counter_device, site_dict
from tests.support.mosquitto import Mosquitto
from tests.support.simthread import SimThread

TCP_LISTEN = "0A"
UNIX_ACCEPTING = 0x00010000  # __SO_ACCEPTCON: a listening unix socket


def socket_inodes(pid: int) -> set[int]:
    """Inodes of every socket the process holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(int(match.group(1)))
    return inodes


def inet_sockets(pid: int, table: str) -> list[tuple[str, str, int]]:
    """(local address, state, inode) of every row of ``/proc/<pid>/net/<table>``."""
    rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
    return [(f[1], f[3], int(f[9])) for f in (row.split() for row in rows)]


def listening_unix_paths(pid: int, inodes: set[int]) -> set[str]:
    """Paths of the listening unix sockets among ``inodes``."""
    paths = set()
    for row in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = row.split()
        if int(fields[6]) in inodes and int(fields[3], 16) & UNIX_ACCEPTING:
            paths.add(fields[7] if len(fields) > 7 else "(unnamed)")
    return paths


def test_no_network_listener_and_a_private_status_socket(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with SimThread([SimDevice("c1", "counter")]) as sims:
        site = site_dict("quiet-box", mosquitto.port, [counter_device("c1", sims.ports["c1"])])
        agent = start_agent(tmp_path, site)
        try:
            wait_until(
                lambda: (
                    (d := agent.status())["broker"]["connected"]
                    and d["devices"]["c1"]["polls_ok"] > 2
                ),
                30,
                "connected to the broker and polling",
            )
            assert agent.proc is not None
            pid = agent.proc.pid
            samples = []
            for _ in range(3):  # a listener opened for a moment would show in one of these
                inodes = socket_inodes(pid)
                tables = {t: inet_sockets(pid, t) for t in ("tcp", "tcp6", "udp", "udp6")}
                samples.append((inodes, tables, listening_unix_paths(pid, inodes)))
                time.sleep(0.3)
            mode = agent.socket.stat().st_mode
            assert agent.stop() == 0
        finally:
            agent.__exit__(None, None, None)
    for inodes, tables, unix_listeners in samples:
        mine = {t: [row for row in rows if row[2] in inodes] for t, rows in tables.items()}
        established = [row for row in mine["tcp"] + mine["tcp6"] if row[1] == "01"]
        assert len(established) >= 2, f"expected the broker and device links: {mine}"
        listening = [row for row in mine["tcp"] + mine["tcp6"] if row[1] == TCP_LISTEN]
        assert not listening, f"the agent listens on TCP: {listening}"
        assert not mine["udp"] + mine["udp6"], f"the agent holds UDP sockets: {mine}"
        assert unix_listeners == {str(agent.socket)}
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) & ~0o660 == 0, f"status socket mode {stat.filemode(mode)}"


def test_the_probe_sees_a_listener() -> None:
    # the check above could not fail if a listener went unseen
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", 0))
        listener.listen()
        pid = os.getpid()
        inode = os.fstat(listener.fileno()).st_ino
        assert inode in socket_inodes(pid)
        rows = [row for row in inet_sockets(pid, "tcp6") if row[2] == inode]
    assert [row[1] for row in rows] == [TCP_LISTEN]
