"""``edge-agent doctor``: check an edge box before (or while) the agent runs.

One line per check, ``PASS``/``WARN``/``FAIL`` (``SKIP`` for what cannot be
checked): the site file, the data directory, every device's link (a TCP
connect, or opening the serial port; no protocol traffic, so equipment sees
nothing but a connection), each destination's broker (one MQTT CONNECT with
our credentials and TLS, see :mod:`agent.north.probe`; a TCP connect for
Alink and IoTDA), the clock, and who can read the config
and key files. Exit 0 when nothing FAILed, 1 otherwise, 2 for an invalid site
file.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agent.clock import kernel_synced
from agent.paths import SERVICE_DATA_DIR, UNIT_FILE
from agent.site.loader import DeviceConfig, Site, load_site
from agent.site.north import secret_files
from agent.site.source import ConfigFileError
from drivers.base import CLOCK_FLOOR_MS, HasEndpoint

if TYPE_CHECKING:
    from agent.north.destination import Destination

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]

SERVICE_USER = "edge-agent"
# Character devices the shipped unit lets through (DeviceAllow=char-...).
UNIT_TTY_PREFIXES = ("ttyUSB", "ttyACM", "ttyS")
# A clock before this is unset (no RTC, no NTP yet): every timestamp would be wrong.
EXIT_FAIL, EXIT_CONFIG = 1, 2


@dataclass(frozen=True, slots=True)
class Check:
    """One result line."""

    status: Status
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}"


def run(config: Path, timeout: float, echo: Callable[[str], None]) -> int:
    """Run every check on ``config``, print one line each; the exit code."""
    try:
        site = load_site(config)
    except ConfigFileError as exc:
        echo(str(Check("FAIL", "config", f"{config}: {len(exc.problems)} problem(s)")))
        for problem in exc.problems:
            echo(f"      {problem}")
        return EXIT_CONFIG
    n_tags = sum(len(d.options.tags) for d in site.devices)
    summary = f"{config}: agent {site.agent.id}, {len(site.devices)} devices, {n_tags} tags"
    checks = [
        Check("PASS", "config", summary),
        *check_data_dir(site),
        check_clock(),
        *check_files(site),
    ]
    for check in checks:
        echo(str(check))
    for check in asyncio.run(_network_checks(site, timeout)):
        echo(str(check))
        checks.append(check)
    return EXIT_FAIL if any(c.status == "FAIL" for c in checks) else 0


async def _network_checks(site: Site, seconds: float) -> list[Check]:
    from agent.runtime.destinations import destinations

    found = destinations(site)
    tokens = {i for i, secrets in site.north_secrets.items() if secrets.access_token}
    brokers = [
        asyncio.ensure_future(check_destination(d, seconds, _label(site, d.id), d.id in tokens))
        for d in found
    ]
    device_checks = await asyncio.gather(*(check_device(d, seconds) for d in site.devices))
    return [*device_checks, *[await b for b in brokers]]


def _label(site: Site, destination_id: str) -> str:
    """``broker`` for a site without north (as before north existed), else ``broker <id>``."""
    return f"broker {destination_id}" if site.north else "broker"


async def check_destination(
    destination: Destination, seconds: float, name: str, secret_user: bool = False
) -> Check:
    """One MQTT CONNECT with the destination's credentials; a TCP connect for Alink and IoTDA.

    Alibaba and Huawei allow one connection per device and sign the client id:
    a CONNECT as the gateway would end the running agent's session, so the
    doctor only checks that the broker's port answers. ``secret_user``: the
    user name is a secret (a ThingsBoard access token) and is not shown.
    """
    from agent.north.probe import probe

    options = destination.mqtt
    where = f"{options.host}:{options.port}" + (" (TLS)" if options.tls else "")
    if destination.dialect in ("alink", "iotda"):
        error = await tcp_connect(options.host, options.port, seconds)
        if error is not None:
            return Check("FAIL", name, f"{destination.dialect} {where}: {error}")
        return Check(
            "PASS",
            name,
            f"{destination.dialect} {where} accepts connections (credentials not tried: "
            "the platform allows one connection per device)",
        )
    error = await probe(options, seconds)
    if error is not None:
        return Check("FAIL", name, error)
    user = f" as {options.username}" if options.username else ""
    user = " with the access token" if secret_user else user
    return Check("PASS", name, f"{where} accepted us{user}")


# --------------------------------------------------------------------------- data dir


def check_data_dir(site: Site) -> list[Check]:
    """The data directory is writable and has room for the buffer; under the unit, where it can."""
    folder = Path(os.path.normpath(site.data_dir))
    checks: list[Check] = []
    existing = _existing_ancestor(folder)
    if folder.is_dir():
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
            checks.append(Check("PASS", "data dir", f"{folder} is writable"))
        except OSError as exc:
            checks.append(Check("FAIL", "data dir", f"{folder} is not writable: {exc.strerror}"))
    elif os.access(existing, os.W_OK):
        checks.append(Check("PASS", "data dir", f"{folder} does not exist yet; it can be created"))
    else:
        checks.append(Check("FAIL", "data dir", f"{folder} is missing and {existing} is read-only"))
    checks.append(_free_space(site, existing))
    if UNIT_FILE.exists() and not folder.resolve().is_relative_to(SERVICE_DATA_DIR):
        checks.append(
            Check(
                "WARN",
                "data dir",
                f"{folder}: the systemd service can write only {SERVICE_DATA_DIR} "
                "(ProtectSystem=strict); remove agent.data_dir/buffer.path from the site file",
            )
        )
    return checks


_DISK_FULL_BELOW = 1024 * 1024


def _free_space(site: Site, existing: Path) -> Check:
    # The buffer file already there will be reused, so it counts as room.
    try:
        have = shutil.disk_usage(existing).free + _size(site.buffer_path)
    except OSError as exc:
        return Check("WARN", "disk", f"cannot tell the free space at {existing}: {exc.strerror}")
    cap = site.buffer.max_size
    text = f"{_mb(have)} for a buffer of at most {_mb(cap)}"
    if _no_inodes(existing):
        return Check(
            "FAIL",
            "disk",
            f"{existing}: no free inodes ({text}): SQLite cannot create the buffer's "
            "-wal/-shm; the agent keeps polling into RAM until files can be made; "
            "delete files",
        )
    if shutil.disk_usage(existing).free < _DISK_FULL_BELOW:
        return Check(
            "FAIL",
            "disk",
            f"{existing}: the disk is full: the agent keeps what is committed and keeps "
            "polling, holding new batches in RAM (32 MiB at most, beyond that refused "
            "and counted) until space returns; free some space",
        )
    if have < 2 * cap:
        return Check(
            "WARN",
            "disk",
            f"{text}: keep at least twice the cap free "
            "(the WAL lives outside it); lower buffer.max_size",
        )
    return Check("PASS", "disk", text)


def _no_inodes(folder: Path) -> bool:
    """The filesystem has an inode limit and none is left (bytes may still be free)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_files > 0 and st.f_favail == 0


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


# --------------------------------------------------------------------------- clock


def check_clock() -> Check:
    """The clock is set, and synchronised as far as the kernel (else timedatectl) can tell."""
    now = time.time()
    if now * 1000 < CLOCK_FLOOR_MS:
        shown = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now))
        return Check(
            "FAIL",
            "clock",
            f"the clock says {shown}: set it or enable NTP"
            ' (until then every reading is flagged "clock": "unset")',
        )
    synced = kernel_synced()
    if synced is True:
        return Check("PASS", "clock", "synchronised (the kernel says a time service keeps it)")
    if synced is False:
        return Check(
            "WARN",
            "clock",
            "not synchronised: enable NTP (chrony, systemd-timesyncd);"
            ' until then every reading is flagged "clock": "unsynced"',
        )
    return _timedatectl_clock()


def _timedatectl_clock() -> Check:
    tool = shutil.which("timedatectl")
    if tool is None:
        return Check("WARN", "clock", "cannot tell whether NTP keeps it right (no timedatectl)")
    try:
        done = subprocess.run(
            [tool, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("WARN", "clock", f"cannot tell whether NTP keeps it right ({exc})")
    answer = done.stdout.strip()
    if done.returncode != 0 or answer not in ("yes", "no"):
        why = (done.stderr.strip().splitlines() or ["no answer"])[0]
        return Check("WARN", "clock", f"cannot tell whether NTP keeps it right ({why})")
    if answer == "no":
        return Check("WARN", "clock", "not synchronised by NTP (timedatectl timesync-status)")
    return Check("PASS", "clock", "synchronised by NTP")


# --------------------------------------------------------------------------- files


def check_files(site: Site) -> list[Check]:
    """Config and key files: not readable by others; key files readable by the service user."""
    tls = site.mqtt.tls
    secret = [p for p in (site.mqtt.password_file, tls.key if tls else None) if p is not None]
    tls_files = [p for p in (tls.ca, tls.cert, tls.key) if p is not None] if tls else []
    base = site.file.resolve().parent
    for dest in site.north:  # relative to the site file, as the loader reads them
        secret += [base / path for path, _ in secret_files(dest)]
        if dest.tls is not None:
            tls_files += [base / p for p in (dest.tls.ca, dest.tls.cert, dest.tls.key) if p]
    checks = [_file_mode(path, secret=path in secret) for path in [site.file, *secret]]
    service = _service_user()
    if service is not None:
        checks.extend(
            Check(
                "FAIL",
                "files",
                f"{path}: user {SERVICE_USER} cannot read it "
                f"(chgrp {SERVICE_USER} {path}; chmod g+r)",
            )
            for path in tls_files
            if path.exists() and not _readable_by(path, service)
        )
    return checks


def _file_mode(path: Path, *, secret: bool) -> Check:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return Check("FAIL" if secret else "WARN", "files", f"{path}: {exc.strerror}")
    shown = stat.filemode(mode)
    if mode & stat.S_IWOTH:
        return Check("WARN", "files", f"{path} ({shown}) is writable by every user: chmod o-w")
    if mode & stat.S_IROTH:
        what = "holds a secret and " if secret else ""
        return Check(
            "WARN", "files", f"{path} ({shown}) {what}is readable by every user: chmod o-r"
        )
    return Check("PASS", "files", f"{path} ({shown}) is not readable by others")


@dataclass(frozen=True, slots=True)
class _User:
    uid: int
    gids: frozenset[int]


def _service_user() -> _User | None:
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if SERVICE_USER in g.gr_mem}
    return _User(entry.pw_uid, frozenset(gids))


def _readable_by(path: Path, user: _User) -> bool:
    st = path.stat()
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid in user.gids:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


# --------------------------------------------------------------------------- devices


async def check_device(device: DeviceConfig, seconds: float) -> Check:
    """Can we reach this device: TCP connect, or open its serial port. No protocol traffic."""
    name = f"device {device.id}"
    if not device.enabled:
        return Check("SKIP", name, "disabled in the site file")
    if not isinstance(device.options, HasEndpoint):
        return Check("SKIP", name, f"cannot tell how to reach a {device.kind} device")
    endpoint = device.options.endpoint()
    if endpoint.serial_port is not None:
        return await asyncio.to_thread(_open_serial, name, endpoint.serial_port)
    if endpoint.tcp is None:
        return Check("SKIP", name, f"cannot tell how to reach {endpoint.text}")
    host, port = endpoint.tcp
    error = await tcp_connect(host, port, seconds)
    if error is None:
        return Check("PASS", name, f"{device.kind} {host}:{port} accepts connections")
    return Check("FAIL", name, f"{device.kind} {host}:{port}: {error}")


async def tcp_connect(host: str, port: int, seconds: float) -> str | None:
    """None if ``host:port`` accepts a TCP connection within ``seconds``, else why not."""
    try:
        async with asyncio.timeout(seconds):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no answer within {seconds:g} s (wrong address, or a firewall drops it)"
    except ConnectionRefusedError:
        return "connection refused (is it on, is the port right?)"
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    except OSError as exc:
        return exc.strerror or str(exc)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


def _open_serial(name: str, path: str) -> Check:
    # O_NONBLOCK: a tty waiting for carrier would otherwise block the open.
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return Check(
            "FAIL", name, f"{path} does not exist (adapter plugged in? ls /dev/serial/by-id)"
        )
    except PermissionError:
        return Check("FAIL", name, f"{path}: permission denied (the user needs group dialout)")
    except OSError as exc:
        return Check("FAIL", name, f"{path}: cannot open: {exc.strerror}")
    os.close(fd)
    real = Path(path).resolve()
    if UNIT_FILE.exists() and not real.name.startswith(UNIT_TTY_PREFIXES):
        return Check(
            "WARN",
            name,
            f"{path} opens, but the service may open only "
            f"{'/'.join(p + '*' for p in UNIT_TTY_PREFIXES)}: add "
            f"DeviceAllow={real} rw in a drop-in (systemctl edit edge-agent)",
        )
    return Check("PASS", name, f"serial port {path} opens")
