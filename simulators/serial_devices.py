"""Emulated ASCII serial equipment on a pseudo-terminal: a torque tool and an MT-SICS scale.

Each simulator owns a pty pair; the agent opens :attr:`PtySimulator.path`, a
stable symlink to the pty's terminal side (like ``socat ... link=PATH``), so a
simulated restart can re-create the pty behind the same path. Everything runs
on the asyncio loop (no threads). Encoding is done here with plain string
formatting, never with the driver's code.

Torque tool line (one per tightening, every 1-2 s by default)::

    ID=000042 T=12.07Nm A=183.4deg OK\\r\\n
    ID=000043 T=14.61Nm A=201.9deg NOK\\r\\n      (torque outside limits)

MT-SICS scale (level 0 subset): ``SI`` -> ``S S     12.345 g`` (stable) or
``S D     12.101 g`` (dynamic); also ``S``, ``Z``, ``T``, ``TA``, ``TAC``,
``I4``, ``@``; ``ES`` for anything else. Every line ends with CR LF.

Fault injection (:class:`Faults`, changeable at any time): slow (a delay before
each reply or printed line), silent (nothing sent), garbage lines (a random
share of lines preceded by noise, or :meth:`PtySimulator.inject` exact bytes),
:meth:`PtySimulator.restart` (port closed and re-created at the same path) and
:meth:`PtySimulator.unplug` (port and path disappear, like a pulled USB adapter).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import tempfile
import tty
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

CRLF = b"\r\n"
GARBAGE_LINE = b"\xfe\x00~#noise#~\xff" + CRLF


@dataclass(slots=True)
class Faults:
    """What is wrong with the simulated device right now; ``Faults()`` is healthy."""

    delay: float = 0.0
    """Slow: seconds before each reply (scale) or added to each interval (torque tool)."""
    silent: bool = False
    """Silent: commands are ignored and nothing is printed."""
    garbage_rate: float = 0.0
    """Share (0..1) of lines preceded by a garbage line."""


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class Tightening:
    """One tightening result."""

    id: int
    torque_nm: float
    angle_deg: float
    ok: bool

    def line(self) -> bytes:
        """The result as the tool prints it, CR LF included."""
        result = "OK" if self.ok else "NOK"
        text = f"ID={self.id:06d} T={self.torque_nm:.2f}Nm A={self.angle_deg:.1f}deg {result}"
        return text.encode("ascii") + CRLF


class TorqueTool:
    """A tightening controller: each tightening gives torque, angle and OK/NOK.

    About ``nok_rate`` of the results are NOK, with the torque outside
    ``[low_nm, high_nm]``; OK results always lie inside it.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        target_nm: float = 12.0,
        low_nm: float = 10.8,
        high_nm: float = 13.2,
        nok_rate: float = 0.05,
    ) -> None:
        self._rng = random.Random(seed)
        self.target_nm, self.low_nm, self.high_nm = target_nm, low_nm, high_nm
        self.nok_rate = nok_rate
        self.count = 0

    def tighten(self) -> Tightening:
        """Run one tightening and return its result."""
        self.count += 1
        rng = self._rng
        if rng.random() < self.nok_rate:
            torque = (
                self.low_nm - rng.uniform(0.5, 3.0)
                if rng.random() < 0.5
                else self.high_nm + rng.uniform(0.5, 3.0)
            )
            ok = False
        else:
            spread = (self.high_nm - self.low_nm) / 6
            torque = min(max(rng.gauss(self.target_nm, spread), self.low_nm), self.high_nm)
            ok = True
        angle = rng.uniform(150.0, 220.0)
        # Round as printed, so the result and its line agree exactly.
        return Tightening(self.count, round(torque, 2), round(angle, 1), ok)


class MtSicsScale:
    """An MT-SICS level-0 balance: weight commands, zero, tare, serial number.

    After :meth:`set_load` the next ``settle_polls`` weight replies are dynamic
    (``S D``), with the reading creeping toward the load; then it is stable.
    With ``change_rate`` > 0, that share of weight commands first puts a new
    random load on the pan (for demos).
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        load_g: float = 0.0,
        decimals: int = 3,
        unit: str = "g",
        capacity_g: float = 6200.0,
        settle_polls: int = 2,
        serial_number: str = "B123456789",
        change_rate: float = 0.0,
    ) -> None:
        self._rng = random.Random(seed)
        self.load_g = load_g
        self.decimals, self.unit, self.capacity_g = decimals, unit, capacity_g
        self.settle_polls = settle_polls
        self.serial_number = serial_number
        self.change_rate = change_rate
        self.zero_g = 0.0
        self.tare_g = 0.0
        self._unsettled = 0

    def set_load(self, grams: float) -> None:
        """Put ``grams`` on the pan; the reading settles over the next polls."""
        self.load_g = grams
        self._unsettled = self.settle_polls

    @property
    def net_g(self) -> float:
        """The settled net weight the scale would show."""
        return round(self.load_g - self.zero_g - self.tare_g, self.decimals)

    def handle(self, command: str) -> list[str]:
        """One command (CR LF removed) -> the reply lines (CR LF not included)."""
        cmd = command.strip()
        if not cmd:
            return []
        handler = {
            "SI": self._weigh_now,
            "S": self._weigh_stable,
            "Z": self._zero,
            "ZI": self._zero,
            "T": self._tare,
            "TA": self._tare_query,
            "TAC": self._tare_clear,
            "I4": self._serial,
            "@": self._serial,
        }.get(cmd)
        return [handler()] if handler else ["ES"]

    def _weigh_now(self) -> str:
        if self.change_rate and self._rng.random() < self.change_rate:
            self.set_load(round(self._rng.uniform(0.0, self.capacity_g / 10), self.decimals))
        if self.load_g > self.capacity_g:
            return "S +"
        if self._unsettled > 0:
            self._unsettled -= 1
            wobble = self._rng.uniform(-0.05, 0.05) * max(abs(self.net_g), 1.0)
            return self._weight_line("S", "D", self.net_g - wobble)
        return self._weight_line("S", "S", self.net_g)

    def _weigh_stable(self) -> str:
        reply = self._weigh_now()
        # A real balance waits for stability; past its own timeout it answers "S I".
        return "S I" if reply.startswith("S D") else reply

    def _zero(self) -> str:
        self.zero_g = self.load_g - self.tare_g
        return "Z A"

    def _tare(self) -> str:
        self.tare_g = self.load_g - self.zero_g
        return self._weight_line("T", "S", self.tare_g)

    def _tare_query(self) -> str:
        return self._weight_line("TA", "A", self.tare_g)

    def _tare_clear(self) -> str:
        self.tare_g = 0.0
        return "TAC A"

    def _serial(self) -> str:
        return f'I4 A "{self.serial_number}"'

    def _weight_line(self, ident: str, status: str, grams: float) -> str:
        # MT-SICS: value right-aligned in a 10-character field, then the unit.
        return f"{ident} {status} {grams:>10.{self.decimals}f} {self.unit}"


# --------------------------------------------------------------------------- pty transport


class PtySimulator:
    """Base of the pty-backed simulators: owns the pty, the path and the faults."""

    def __init__(
        self, *, link: Path | None = None, faults: Faults | None = None, seed: int | None = None
    ) -> None:
        self._tmpdir: str | None = None
        if link is None:
            self._tmpdir = tempfile.mkdtemp(prefix="edge-sim-serial-")
            link = Path(self._tmpdir) / "tty"
        self.link = link
        self.faults = faults or Faults()
        self.lines_sent = 0
        self.lines_lost = 0
        self._rng = random.Random(seed)
        self._master: int | None = None
        self._slave: int | None = None
        self._inbuf = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def path(self) -> str:
        """What the agent opens: a symlink to the current pty."""
        return str(self.link)

    @property
    def plugged(self) -> bool:
        """True while the port exists."""
        return self._master is not None

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._open()
        await self._started()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stopping()
        self._close()
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def unplug(self) -> None:
        """The port vanishes: pty closed (open handles get an I/O error) and path removed."""
        self._close()
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()

    async def restart(self, down: float = 0.2) -> None:
        """Close the port, wait ``down`` seconds, re-create it behind the same path."""
        self.unplug()
        await asyncio.sleep(down)
        self._open()

    def inject(self, data: bytes) -> None:
        """Send ``data`` exactly as given (garbage, half lines...), ignoring faults."""
        self._write(data)

    def send_line(self, line: bytes) -> None:
        """Send one line, applying the silent and garbage faults."""
        if self.faults.silent:
            return
        if self.faults.garbage_rate and self._rng.random() < self.faults.garbage_rate:
            self._write(GARBAGE_LINE)
        if self._write(line):
            self.lines_sent += 1

    async def _started(self) -> None:
        """Hook: start background work."""

    async def _stopping(self) -> None:
        """Hook: stop background work."""

    def _on_command(self, command: bytes) -> None:
        """Hook: one received line, CR LF removed."""

    def _open(self) -> None:
        master, slave = os.openpty()
        # Raw: no echo of the agent's requests back to it, no CR/LF translation.
        tty.setraw(slave)
        os.set_blocking(master, False)
        # We keep the terminal side open too, so reading the master never fails
        # with EIO while the agent has the port closed.
        self._master, self._slave = master, slave
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)
        self._inbuf.clear()
        if self._loop is not None:
            self._loop.add_reader(master, self._readable)

    def _close(self) -> None:
        master, slave = self._master, self._slave
        self._master = self._slave = None
        if master is not None:
            if self._loop is not None:
                self._loop.remove_reader(master)
            os.close(master)
        if slave is not None:
            os.close(slave)

    def _readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except OSError:
            return
        self._inbuf += data
        while (end := self._inbuf.find(b"\n")) >= 0:
            line = bytes(self._inbuf[:end]).rstrip(b"\r")
            del self._inbuf[: end + 1]
            self._on_command(line)
        if len(self._inbuf) > 4096:  # a peer that never ends its line
            self._inbuf.clear()

    def _write(self, data: bytes) -> bool:
        if self._master is None:
            self.lines_lost += 1
            return False
        try:
            while data:
                data = data[os.write(self._master, data) :]
        except OSError:
            # The pty buffer is full (nobody reads): the line is lost, like on a real wire.
            self.lines_lost += 1
            return False
        return True


class TorqueToolSim(PtySimulator):
    """A torque tool printing one result line per tightening on a pty."""

    def __init__(
        self,
        *,
        link: Path | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        interval: tuple[float, float] = (1.0, 2.0),
        auto: bool = True,
        tool: TorqueTool | None = None,
    ) -> None:
        super().__init__(link=link, faults=faults, seed=seed)
        self.tool = tool or TorqueTool(seed=seed)
        self.interval = interval
        self.auto = auto
        self.results: list[Tightening] = []
        self._task: asyncio.Task[None] | None = None

    def tighten(self) -> Tightening:
        """Run one tightening now and print its line (subject to the faults)."""
        result = self.tool.tighten()
        self.results.append(result)
        self.send_line(result.line())
        return result

    async def _started(self) -> None:
        if self.auto:
            self._task = asyncio.create_task(self._run(), name="torque-tool-sim")

    async def _stopping(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._rng.uniform(*self.interval) + self.faults.delay)
            self.tighten()


class ScaleSim(PtySimulator):
    """An MT-SICS scale answering commands on a pty."""

    def __init__(
        self,
        *,
        link: Path | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        scale: MtSicsScale | None = None,
    ) -> None:
        super().__init__(link=link, faults=faults, seed=seed)
        self.scale = scale or MtSicsScale(seed=seed)
        self.commands: list[str] = []

    def _on_command(self, command: bytes) -> None:
        text = command.decode("ascii", "replace")
        self.commands.append(text)
        if self.faults.silent:
            return
        replies = [r.encode("ascii") + CRLF for r in self.scale.handle(text)]
        if self.faults.delay and self._loop is not None:
            for reply in replies:
                self._loop.call_later(self.faults.delay, self.send_line, reply)
        else:
            for reply in replies:
                self.send_line(reply)


async def serve(kind: str, link: Path, seed: int | None = None) -> None:
    """Run one simulator (``"torque-tool"`` or ``"mt-sics-scale"``) at ``link`` until cancelled."""
    sim: PtySimulator
    if kind == "torque-tool":
        sim = TorqueToolSim(link=link, seed=seed)
    elif kind == "mt-sics-scale":
        scale = MtSicsScale(seed=seed, load_g=250.0, change_rate=0.1)
        sim = ScaleSim(link=link, seed=seed, scale=scale)
    else:
        raise ValueError(f"unknown serial simulator {kind!r}; use torque-tool or mt-sics-scale")
    async with sim:
        await asyncio.Event().wait()
