"""A real small filesystem under the agent's data dir, to fill up and give back.

A tmpfs mounted with ``size=`` (we run as root) gives a real ENOSPC to
SQLite and to the seq sidecar; a filler file takes every free block, and
deleting it gives the space back.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.tools import require


@contextmanager
def small_disk(mount: Path, size: str, inodes: int | None = None) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``3m``, and ``inodes`` files at most) on ``mount``."""
    tool = require("mount")
    mount.mkdir(parents=True, exist_ok=True)
    # mode: the agent refuses a data dir writable by others (a tmpfs root is 1777)
    options = f"size={size},mode=0750" + (f",nr_inodes={inodes}" if inodes else "")
    result = subprocess.run([tool, "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, f"cannot mount a tmpfs on {mount}: {result.stderr.strip()}"
    try:
        yield mount
    finally:
        subprocess.run([require("umount"), "-l", str(mount)], check=False, capture_output=True)


def fill(folder: Path) -> Path:
    """Take every free block of ``folder``'s filesystem with a filler file; its path."""
    filler = folder / "filler"
    with filler.open("ab", buffering=0) as out:
        for chunk in (1 << 20, 4096, 512):
            try:
                for _ in range(100_000):  # bounded: a 100 GB disk at most
                    out.write(b"\0" * chunk)
            except OSError:
                pass
    return filler


def fill_inodes(folder: Path) -> int:
    """Take every free inode of ``folder``'s filesystem with empty files; how many."""
    for n in range(100_000):  # bounded
        try:
            (folder / f"inode-{n}").touch()
        except OSError:
            return n
    raise AssertionError(f"{folder} has more than 100000 free inodes")


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer could still use."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize
