"""Private folders and files: created without following links, trusted only when ours.

A non-root agent with no ``$RUNTIME_DIRECTORY`` keeps its pointer files in
``$TMPDIR/edge-agent-<uid>``, a name anyone can create first in a shared
``/tmp``. So every folder the agent writes into (the runtime dir, the data dir,
the status socket's folder) is checked before use: it must be a real folder
(a symbolic link only when the link itself is ours or root's), owned by us or
by root, and not writable by group or others. Anything else is refused with
:class:`~agent.errors.UnsafePath` naming the folder and what is wrong; the
agent then exits instead of writing where another account could redirect it.

Root may use a folder owned by another account (``sudo edge-agent run`` with
the service's ``/var/lib/edge-agent``): root is not fooled by files there
because pointer files are written with ``O_NOFOLLOW | O_EXCL`` and renamed.
Standard library only: :mod:`agent.status` uses it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from agent.errors import UnsafePath

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def _trusted_owner(uid: int) -> bool:
    euid = os.geteuid()
    return uid in (euid, 0) or euid == 0


def _owner_problem(uid: int) -> str | None:
    if _trusted_owner(uid):
        return None
    return f"owned by uid {uid}, not by this user (uid {os.geteuid()})"


def check_private_dir(path: Path, what: str) -> None:
    """Refuse ``path`` unless it is a folder only we (or root) can change."""
    try:
        link = os.lstat(path)
    except OSError as exc:
        raise UnsafePath(f"{what} {path}: {exc.strerror}") from exc
    flags = os.O_RDONLY | os.O_DIRECTORY
    if stat.S_ISLNK(link.st_mode):
        if (problem := _owner_problem(link.st_uid)) is not None:
            raise UnsafePath(f"{what} {path} is a symbolic link {problem}: remove it")
    else:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UnsafePath(f"{what} {path} is not a usable folder: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if (problem := _owner_problem(st.st_uid)) is not None:
        raise UnsafePath(f"{what} {path} is {problem}: remove it or fix its owner")
    if st.st_mode & _WRITABLE_BY_OTHERS:
        raise UnsafePath(
            f"{what} {path} is writable by group or others (mode "
            f"{stat.filemode(st.st_mode)}): chmod go-w {path}"
        )


def private_dir(path: Path, what: str, mode: int = 0o700) -> Path:
    """Create ``path`` (``mode``) if missing, then :func:`check_private_dir` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # a link or a file there is checked below
        path.mkdir(mode=mode)
    check_private_dir(path, what)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` (0600) by a new temp file and a rename: never through a link."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of ours (same pid, earlier boot); unlink never follows
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)  # replaces a link at ``path`` itself, never its target


def read_private(path: Path) -> bytes | None:
    """The content of ``path`` if it is a regular file we (or root) own; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _trusted_owner(st.st_uid):
            return None
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
