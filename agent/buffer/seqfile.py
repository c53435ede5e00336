"""The seq sidecars: seq is never reused (no SQLite).

``<db>.seq``: before committing a seq above the reservation, the writer durably
raises it by a block of seqs, so a replacement database (the old one lost or
corrupt) starts above every seq ever committed.

``<db>.open``: the run marker, written (durably) when the store opens with the
synchronous mode of this run and the last seq the file held at that open,
removed on a clean close. Found at the next open with ``NORMAL`` in it, the
last run ended uncleanly under NORMAL: its last commits may have been
published and then lost with the power, so new seqs start above the
reservation, and the skip is counted from the file's last seq, or from the
marker's seq if the file was lost whole (see
docs/decisions/0010-seq-after-power-loss.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from pathlib import Path

from agent.errors import DiskFull, StorageError

SEQ_BLOCK = 100_000
"""Seqs reserved by one sidecar write: at 1000 batches/s, one small fsync per 100 s."""

NORMAL_SEQ_BLOCK = 1_000
"""The block under ``synchronous=NORMAL``: an unclean stop skips at most this many seqs.

At 100 batches/s one small fsync per 10 s; NORMAL saves the per-commit fsync.
"""


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs as inclusive runs: acks usually come in one or a few runs."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and runs[-1][1] == seq - 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


class SeqReservation:
    """A sidecar file holding a seq no committed batch exceeds.

    The writer raises it (durably: temp file, fsync, rename, fsync of the
    folder) before committing a seq above it, so a replacement database can
    start above every seq ever used even when the old one is unreadable.
    """

    def __init__(self, path: Path, block: int = SEQ_BLOCK) -> None:
        self.path = path
        self.block = block
        self.reserved = self.load()

    def load(self) -> int:
        """The reserved seq on disk; 0 when the file is missing or unreadable."""
        try:
            return max(0, int(self.path.read_text(encoding="ascii").strip()))
        except (OSError, ValueError):
            return 0

    def ensure(self, seq: int) -> None:
        """Make sure ``seq`` is covered by the reservation on disk.

        Raise :class:`~agent.errors.DiskFull` (ENOSPC, EDQUOT) or
        :class:`~agent.errors.StorageError` when it cannot be written: the
        reservation in memory stays the old, durable one, so the caller's
        commit fails and is retried like any failed commit.
        """
        if seq <= self.reserved:
            return
        reserved = seq + self.block
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self._write(tmp, reserved)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()  # a half-written temp file must not hold the last free blocks
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            error = DiskFull if full else StorageError
            raise error(f"seq reservation {self.path} not written: {exc}") from exc
        self.reserved = reserved

    def _write(self, tmp: Path, reserved: int) -> None:
        with tmp.open("w", encoding="ascii") as out:
            out.write(f"{reserved}\n")
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)
        _sync_folder(self.path.parent)


class RunMarker:
    """``<db>.open``: the synchronous mode of the run that has the store open.

    Present at open: the previous run did not close cleanly. Only a NORMAL run
    can have lost commits it already handed out (FULL syncs before COMMIT
    returns), so only then must the next run skip its seqs.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def previous(self) -> str | None:
        """The mode of an unclean previous run; None after a clean close (or never run).

        An unreadable marker counts as NORMAL: skipping seqs is the safe side.
        """
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return "NORMAL"
        return "FULL" if text.split()[:1] == ["FULL"] else "NORMAL"

    def base(self) -> int:
        """The seq the marked run found in the file at its open (0 if unknown).

        If that run's whole file is lost (NORMAL, cut before its first
        checkpoint: nothing of the database reached the disk), every seq above
        this one may have been handed out and lost with it.
        """
        try:
            words = self.path.read_text(encoding="ascii").split()
            return max(0, int(words[1]))
        except (OSError, ValueError, IndexError):
            return 0

    def write(self, mode: str, base: int) -> None:
        """Durably note that a run in ``mode`` has the store open, found at seq ``base``."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="ascii") as out:
            out.write(f"{mode} {base}\n")
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)
        _sync_folder(self.path.parent)

    def remove(self) -> None:
        """The run closed cleanly: everything it committed is on the disk."""
        self.path.unlink(missing_ok=True)
        _sync_folder(self.path.parent)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
