"""A power-loss model for tests: a FUSE pass-through file system that forgets unsynced writes.

Why: the buffer promises that a committed batch survives a power cut. Copying
files while the writer is frozen (F7) cannot show that, because the copy holds
the page cache. Here every write since the file's last fsync lives only in the
file system's memory, and the *cut* throws it away, so what is left in the
backing directory is exactly what a disk that honours fsync would hold.

Usage::

    with PowerLossFS(backing_dir, mountpoint) as fs:
        ...  # a child process writes under mountpoint
        report = fs.cut(kill=[child.pid])
    # backing_dir now holds the durable state only; open it with sqlite3 or mount it again

The file system runs in its own process (``python -m tests.support.powerloss
serve BACKING MOUNT``, libfuse 3 through mfusepy), controlled by JSON lines on
its stdin/stdout, so neither the GIL nor a hang of the test entangles it.

The model
---------
* **File content** is durable up to the file's last ``fsync``/``fdatasync``
  (both are the same here). Writes and truncates after it are volatile: they
  are kept in memory, per 4 KiB page, on top of the durable content, so every
  reader sees them at once, as with a page cache. ``close`` is not a sync.
  The backing file is not touched between two syncs of it.
* **Metadata** (create, mkdir, unlink, rmdir, rename, link, symlink, chmod,
  chown, utimens) is durable at once: it is applied to the backing directory
  when it happens (like ext4 with ``data=ordered``, whose journal commits
  metadata; a real ext4 commits it a few seconds late, which only makes this
  model stricter for names and laxer for nothing SQLite relies on). A newly
  created file therefore exists after a cut, but its *content* is volatile
  until fsynced: unsynced, it is empty after the cut. ``fsync`` of a directory
  has nothing left to do.
* **The cut** is atomic with respect to every file system operation (they all
  run under one lock): from it on every operation fails with ``EIO`` (a writer
  still running sees errors, as with power gone), every volatile write and
  truncate is discarded, and the file system is unmounted (``fusermount3 -u
  -z``) and its process ends. Optionally (``keep_unsynced=p``) each volatile
  page and each pending truncate still reaches the disk with probability
  ``p`` and independently of the others (a disk cache that wrote back part of
  its content, in any order); ``0`` (the default) drops them all.
* A **clean unmount** (``unmount()``, also what leaving the ``with`` block
  without a cut does) makes every volatile write durable first, as a shutdown
  that syncs does.
* **mmap**: files are never opened with ``direct_io``, so shared writable
  ``mmap`` works (SQLite maps its ``-shm`` file). Stores through a mapping are
  volatile like writes; they reach this file system when the kernel writes the
  page back (at the latest on ``close``), and are durable after an ``fsync``
  or an ``msync(MS_SYNC)`` (Linux makes that a data sync of the range).
  SQLite never syncs ``-shm``, so after a cut it is stale (empty if it was
  created on the mount); the next first connection rebuilds it from the WAL,
  as after a real power cut.
* **Locks**: this file system implements neither ``lock`` nor ``flock``, so the
  kernel keeps POSIX and BSD locks itself for the mount: they work between the
  processes of this machine (and so within one process), as on a local disk.
  SQLite's default locking mode and its ``-shm`` locks need nothing more.

Limits: one machine; files outside the mount are not modelled; no extended
attributes; the backing files are not fsynced on the host (the host does not
lose power, the model does). A partial write within a 4 KiB page is not torn
further: a page reaches the disk whole or not at all, which is SQLite's
"powersafe overwrite" assumption.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import importlib.util
import json
import logging
import os
import random
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Concatenate, ParamSpec, Self, TypeVar

__all__ = ["PAGE", "CutReport", "PowerLossError", "PowerLossFS", "main", "serve"]

PAGE = 4096
"""Granularity of the volatile layer (and of a torn cut): the kernel's page size."""

ROOT = Path(__file__).resolve().parents[2]
FUSERMOUNT = "fusermount3"

# utimensat(2) special values as the FUSE library passes them (nanoseconds, seconds = 0).
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2

_P = ParamSpec("_P")
_R = TypeVar("_R")


class PowerLossError(RuntimeError):
    """The file system process did not start, answer or stop as expected."""


# --------------------------------------------------------------------------- the volatile layer


class _Inode:
    """One backing file: its durable content on disk, and the writes since its last sync in memory.

    Invariants: ``low <= durable`` and ``low <= size``. Backing bytes at offsets
    ``>= low`` are hidden (a truncate since the sync cut them off). Dirty pages
    hold the current content of their 4 KiB; bytes of a page past ``size`` are
    zero, so growing the file reads zeros, as it must.
    """

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.durable = size  # size of the backing file: unchanged between syncs
        self.size = size  # size readers see
        self.low = size
        self.pages: dict[int, bytearray] = {}
        self.opens = 0

    @property
    def clean(self) -> bool:
        """Nothing volatile: the backing file is the whole truth."""
        return not self.pages and self.low == self.durable == self.size

    def read(self, offset: int, length: int) -> bytes:
        """Current content: backing bytes below ``low``, dirty pages on top, zeros elsewhere."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        buf = bytearray(end - offset)
        visible = min(end, self.low)
        if visible > offset:
            data = os.pread(self.fd, visible - offset, offset)
            buf[: len(data)] = data
        if self.pages:
            for index in range(offset // PAGE, (end - 1) // PAGE + 1):
                page = self.pages.get(index)
                if page is None:
                    continue
                start = index * PAGE
                lo, hi = max(offset, start), min(end, start + PAGE)
                buf[lo - offset : hi - offset] = page[lo - start : hi - start]
        return bytes(buf)

    def write(self, offset: int, data: bytes) -> None:
        """Put ``data`` into dirty pages (copying each page's current content first)."""
        end = offset + len(data)
        pos = offset
        while pos < end:
            index = pos // PAGE
            start = index * PAGE
            page = self.pages.get(index)
            if page is None:
                page = bytearray(self.read(start, PAGE).ljust(PAGE, b"\0"))
                self.pages[index] = page
            hi = min(end, start + PAGE)
            page[pos - start : hi - start] = data[pos - offset : hi - offset]
            pos = hi
        self.size = max(self.size, end)

    def truncate(self, length: int) -> None:
        """Volatile truncate: drop pages past ``length``, zero the tail of the cut page."""
        if length < self.size:
            first_gone = -(-length // PAGE)
            for index in [i for i in self.pages if i >= first_gone]:
                del self.pages[index]
            tail = length % PAGE
            page = self.pages.get(length // PAGE)
            if tail and page is not None:
                page[tail:] = bytes(PAGE - tail)
            self.low = min(self.low, length)
        self.size = length

    def unsynced_bytes(self) -> int:
        """Bytes of dirty pages that a cut now would lose (within the current size)."""
        return sum(max(0, min(PAGE, self.size - i * PAGE)) for i in self.pages)

    def sync(self) -> None:
        """fsync: make the current content the backing file's content."""
        if self.low < self.durable:
            os.ftruncate(self.fd, self.low)
        for index in sorted(self.pages):
            self._put(index)
        os.ftruncate(self.fd, self.size)
        self.pages.clear()
        self.durable = self.low = self.size

    def persist_some(self, rng: random.Random, fraction: float) -> int:
        """Torn cut: each pending truncate and dirty page reaches the disk with ``fraction``."""
        kept = 0
        if self.low < self.durable and rng.random() < fraction:
            os.ftruncate(self.fd, self.low)
        for index in sorted(self.pages):
            if rng.random() < fraction and self._put(index):
                kept += 1
        return kept

    def _put(self, index: int) -> bool:
        start = index * PAGE
        length = min(PAGE, self.size - start)
        if length <= 0:
            return False
        os.pwrite(self.fd, memoryview(self.pages[index])[:length], start)
        return True


# --------------------------------------------------------------------------- FUSE operations


def _op(
    method: Callable[Concatenate[PowerLossOps, _P], _R],
) -> Callable[Concatenate[PowerLossOps, _P], _R]:
    """Run one file system operation under the lock, or fail it with EIO after the cut."""

    def run(self: PowerLossOps, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            if self._dead:
                raise OSError(errno.EIO, "power cut")
            return method(self, *args, **kwargs)

    # mfusepy reads the signature (``create`` with or without flags): keep the method's.
    functools.update_wrapper(run, method)
    return run


class PowerLossOps:
    """mfusepy operations: a pass-through to ``backing`` with the volatile layer for content.

    Paths come in as ``/a/b`` relative to the mount. Content state is kept per
    backing inode (so renames and hard links keep it), and file handles point
    at it. An inode's state lives while it is open or holds volatile data
    (and is still linked); it keeps a descriptor of the backing file, so its
    inode number cannot be reused meanwhile.
    """

    # mfusepy registers every attribute named like a FUSE operation (``lock``,
    # ``flock``, ``destroy``...), so state lives in names that are none of them.
    use_ns = True  # times in nanoseconds (mfusepy's float seconds are deprecated)

    def __init__(self, backing: Path, on_ready: Callable[[], None] | None = None) -> None:
        self.backing = str(backing)
        self.on_ready = on_ready
        self._lock = threading.Lock()
        self._dead = False
        self.inodes: dict[int, _Inode] = {}
        self.handles: dict[int, _Inode] = {}
        self.next_handle = 1
        self.counts = {"writes": 0, "fsyncs": 0, "truncates": 0}

    # ----------------------------------------------------------- helpers

    def _real(self, path: str | None) -> str:
        if path is None:  # an unlinked file without a handle: nothing to act on
            raise OSError(errno.ESTALE, "no path")
        return os.path.join(self.backing, path.lstrip("/"))

    def _load(self, real: str) -> _Inode:
        st = os.stat(real)
        inode = self.inodes.get(st.st_ino)
        if inode is not None:
            return inode
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "is a directory")
        try:
            fd = os.open(real, os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
        return self._adopt(fd)

    def _adopt(self, fd: int) -> _Inode:
        st = os.fstat(fd)
        inode = self.inodes.get(st.st_ino)
        if inode is not None:
            os.close(fd)
            return inode
        inode = _Inode(fd, st.st_size)
        self.inodes[st.st_ino] = inode
        return inode

    def _handle(self, inode: _Inode) -> int:
        fh = self.next_handle
        self.next_handle += 1
        self.handles[fh] = inode
        inode.opens += 1
        return fh

    def _by_handle(self, fh: int | None) -> _Inode:
        inode = self.handles.get(fh) if fh is not None else None
        if inode is None:
            raise OSError(errno.EBADF, "unknown file handle")
        return inode

    def _forget_if_idle(self, inode: _Inode) -> None:
        """Drop an inode's state once nobody has it open and it holds nothing (or is unlinked)."""
        if inode.opens > 0:
            return
        if not inode.clean and os.fstat(inode.fd).st_nlink > 0:
            return  # volatile data of a closed file: kept until its next sync, or lost at the cut
        for ino, candidate in list(self.inodes.items()):
            if candidate is inode:
                del self.inodes[ino]
        os.close(inode.fd)

    def _forget_unlinked(self, ino: int | None) -> None:
        inode = self.inodes.get(ino) if ino is not None else None
        if inode is not None and os.fstat(inode.fd).st_nlink == 0:
            self._forget_if_idle(inode)

    @staticmethod
    def _ino(real: str) -> int | None:
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            return None
        return st.st_ino if stat.S_ISREG(st.st_mode) else None

    # ----------------------------------------------------------- control (not FUSE operations)

    def cut(self, keep_unsynced: float, seed: int | None) -> dict[str, int]:
        """The power cut: from now on EIO; volatile state dropped (or part of it kept, torn)."""
        with self._lock:
            report = self._summary()
            kept = 0
            if not self._dead:
                rng = random.Random(seed)
                for inode in self.inodes.values():
                    if keep_unsynced > 0:
                        kept += inode.persist_some(rng, keep_unsynced)
                self._close_all()
            report["kept_pages"] = kept
            return report

    def sync_all(self) -> dict[str, int]:
        """A clean shutdown: every volatile write made durable, then EIO like after a cut."""
        with self._lock:
            report = self._summary()
            if not self._dead:
                for inode in self.inodes.values():
                    inode.sync()
                self._close_all()
            report["kept_pages"] = 0
            return report

    def stats(self) -> dict[str, int]:
        """Counters and what a cut now would lose."""
        with self._lock:
            return self._summary()

    def _summary(self) -> dict[str, int]:
        pending = [i for i in self.inodes.values() if not i.clean]
        return {
            **self.counts,
            "volatile_files": len(pending),
            "unsynced_bytes": sum(i.unsynced_bytes() for i in pending),
            "pending_truncates": sum(1 for i in pending if i.low < i.durable),
        }

    def _close_all(self) -> None:
        self._dead = True
        for inode in self.inodes.values():
            with contextlib.suppress(OSError):
                os.close(inode.fd)
        self.inodes.clear()
        self.handles.clear()

    # ----------------------------------------------------------- lifecycle

    def init(self, path: str) -> None:
        """The kernel's INIT arrived: the mount is up; tell the controlling process."""
        del path
        if self.on_ready is not None:
            self.on_ready()

    # ----------------------------------------------------------- names and attributes: durable

    @_op
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        """stat of the backing entry, with the size the volatile layer gives."""
        if fh is not None and fh in self.handles:
            inode: _Inode | None = self.handles[fh]
            assert inode is not None
            st = os.fstat(inode.fd)
        else:
            st = os.lstat(self._real(path))
            inode = self.inodes.get(st.st_ino) if stat.S_ISREG(st.st_mode) else None
        attrs: dict[str, Any] = {
            key: getattr(st, key)
            for key in (
                "st_mode",
                "st_ino",
                "st_nlink",
                "st_uid",
                "st_gid",
                "st_rdev",
                "st_blksize",
            )
        }
        attrs["st_atime"] = st.st_atime_ns
        attrs["st_mtime"] = st.st_mtime_ns
        attrs["st_ctime"] = st.st_ctime_ns
        if inode is None:
            attrs["st_size"], attrs["st_blocks"] = st.st_size, st.st_blocks
        else:
            attrs["st_size"] = inode.size
            attrs["st_blocks"] = max(st.st_blocks, -(-inode.size // 512))
        return attrs

    @_op
    def access(self, path: str, amode: int) -> int:
        """access(2) on the backing entry."""
        if not os.access(self._real(path), amode):
            raise OSError(errno.EACCES, "access denied")
        return 0

    @_op
    def readdir(self, path: str, fh: int) -> list[str]:
        """The backing directory's names."""
        del fh
        return [".", "..", *os.listdir(self._real(path))]

    @_op
    def readlink(self, path: str) -> str:
        """readlink(2) on the backing entry."""
        return os.readlink(self._real(path))

    @_op
    def mkdir(self, path: str, mode: int) -> int:
        """Durable at once."""
        os.mkdir(self._real(path), mode)
        return 0

    @_op
    def rmdir(self, path: str) -> int:
        """Durable at once."""
        os.rmdir(self._real(path))
        return 0

    @_op
    def unlink(self, path: str) -> int:
        """Durable at once; an open file keeps its (volatile) content until closed."""
        real = self._real(path)
        ino = self._ino(real)
        os.unlink(real)
        self._forget_unlinked(ino)
        return 0

    @_op
    def rename(self, old: str, new: str) -> int:
        """Durable at once; content state follows the inode."""
        real_new = self._real(new)
        replaced = self._ino(real_new)
        os.rename(self._real(old), real_new)
        self._forget_unlinked(replaced)
        return 0

    @_op
    def link(self, target: str, source: str) -> int:
        """Hard link ``target`` to the existing ``source``; durable at once."""
        os.link(self._real(source), self._real(target))
        return 0

    @_op
    def symlink(self, target: str, source: str) -> int:
        """Symlink ``target`` pointing at ``source``; durable at once."""
        os.symlink(source, self._real(target))
        return 0

    @_op
    def chmod(self, path: str | None, mode: int) -> int:
        """Durable at once."""
        os.chmod(self._real(path), mode)
        return 0

    @_op
    def chown(self, path: str | None, uid: int, gid: int) -> int:
        """Durable at once."""
        os.lchown(self._real(path), uid, gid)
        return 0

    @_op
    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        """Durable at once; UTIME_NOW and UTIME_OMIT honoured."""
        real = self._real(path)
        if times is None:
            os.utime(real)
            return 0
        st = os.lstat(real)
        now = time.time_ns()
        atime, mtime = (
            now if t == _UTIME_NOW else current if t == _UTIME_OMIT else t
            for t, current in zip(times, (st.st_atime_ns, st.st_mtime_ns), strict=True)
        )
        os.utime(real, ns=(atime, mtime), follow_symlinks=False)
        return 0

    @_op
    def statfs(self, path: str) -> dict[str, int]:
        """The backing file system's figures."""
        sv = os.statvfs(self._real(path))
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
                "f_favail", "f_flag", "f_namemax")  # fmt: skip
        return {key: int(getattr(sv, key)) for key in keys}

    @_op
    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        """Metadata is durable at once: nothing left to sync."""
        del path, datasync, fh
        return 0

    # ----------------------------------------------------------- content (volatile until fsync)

    @_op
    def create(self, path: str, mode: int, flags: int) -> int:
        """The name is durable at once; the content (empty) is what it is until an fsync."""
        fd = os.open(self._real(path), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC | (flags & os.O_EXCL),
                     mode)  # fmt: skip
        inode = self._adopt(fd)
        if flags & os.O_TRUNC:
            inode.truncate(0)
        return self._handle(inode)

    @_op
    def open(self, path: str, flags: int) -> int:
        """Open (or share) the inode's state; O_TRUNC is a volatile truncate."""
        inode = self._load(self._real(path))
        if flags & os.O_TRUNC:
            inode.truncate(0)
            self.counts["truncates"] += 1
        return self._handle(inode)

    @_op
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        """Current content, volatile layer included."""
        del path
        return self._by_handle(fh).read(offset, size)

    @_op
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        """Volatile until the file's next fsync."""
        del path
        self._by_handle(fh).write(offset, data)
        self.counts["writes"] += 1
        return len(data)

    @_op
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        """Volatile until the file's next fsync."""
        inode = self._by_handle(fh) if fh is not None else self._load(self._real(path))
        inode.truncate(length)
        self.counts["truncates"] += 1
        if fh is None:
            self._forget_if_idle(inode)
        return 0

    @_op
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        """The one thing that makes content durable (fsync and fdatasync alike)."""
        del path, datasync
        self._by_handle(fh).sync()
        self.counts["fsyncs"] += 1
        return 0

    @_op
    def flush(self, path: str | None, fh: int) -> int:
        """close(2) is not a sync: nothing happens."""
        del path, fh
        return 0

    @_op
    def release(self, path: str | None, fh: int) -> int:
        """Last close of a handle; volatile content stays (it is lost only at a cut)."""
        del path
        inode = self.handles.pop(fh, None)
        if inode is not None:
            inode.opens -= 1
            self._forget_if_idle(inode)
        return 0


# --------------------------------------------------------------------------- the server process


def _fuse_class() -> type[Any]:
    """mfusepy's FUSE with ftruncate passing its file handle (mfusepy passes the path only).

    SQLite truncates through open descriptors, also of files already unlinked,
    where there is no path, so the handle must come through.
    """
    import mfusepy

    class Fuse(mfusepy.FUSE):  # type: ignore[misc]
        def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
            fh = fip.contents.fh if fip else None
            decoded = None if path is None else path.decode(self.encoding, self.errors)
            result: int = self.operations.truncate(decoded, length, fh)
            return result

    return Fuse


def serve(backing: Path, mountpoint: Path) -> None:
    """Mount the model and serve it; commands are JSON lines on stdin, replies on stdout.

    Commands: ``{"cmd": "stats"}``, ``{"cmd": "cut", "keep_unsynced": p, "seed": s}``,
    ``{"cmd": "sync"}``. End of stdin (the controlling process closed it, or
    died) is a cut if none came yet; then the server unmounts and exits.
    """
    os.umask(0)  # the kernel already applied the caller's umask to every mode
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # nothing that libfuse or a library prints may mix into the replies
    replies = os.fdopen(reply_fd, "w", buffering=1)
    reply_lock = threading.Lock()

    def send(doc: dict[str, Any]) -> None:
        with reply_lock:
            replies.write(json.dumps(doc) + "\n")
            replies.flush()

    ops = PowerLossOps(backing, on_ready=lambda: send({"ready": True, "pid": os.getpid()}))

    def control() -> None:
        for line in sys.stdin:
            try:
                request = json.loads(line)
                cmd = request.get("cmd")
                if cmd == "stats":
                    send({"ok": True, **ops.stats()})
                elif cmd == "cut":
                    send({"ok": True, **ops.cut(float(request.get("keep_unsynced", 0.0)),
                                                request.get("seed"))})  # fmt: skip
                elif cmd == "sync":
                    send({"ok": True, **ops.sync_all()})
                else:
                    send({"ok": False, "error": f"unknown command {cmd!r}"})
            except Exception as exc:  # a bad command must not take the file system down
                send({"ok": False, "error": repr(exc)})
        ops.cut(0.0, None)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([FUSERMOUNT, "-u", "-z", str(mountpoint)], timeout=10, check=False,
                           stdout=subprocess.DEVNULL)  # fmt: skip
        os._exit(0)

    threading.Thread(target=control, name="powerloss-control", daemon=True).start()
    _fuse_class()(
        ops,
        str(mountpoint),
        foreground=True,
        fsname="powerloss",
        hard_remove=True,  # unlink is unlink, not a rename to .fuse_hidden*
        attr_timeout=0,  # no cached attributes: after the cut, stat fails too
        entry_timeout=0,
        negative_timeout=0,
    )
    # The kernel ended the connection (unmounted with nothing open): nothing left to serve.
    os._exit(0)


# --------------------------------------------------------------------------- the controlling side


@dataclass(frozen=True)
class CutReport:
    """What the file system had seen and what the cut (or clean unmount) did with the volatile part.

    ``unsynced_bytes``/``volatile_files``/``pending_truncates`` are what was
    volatile at that instant (discarded by a cut, except ``kept_pages`` pages
    of a torn cut; made durable by a clean unmount).
    """

    writes: int
    fsyncs: int
    truncates: int
    volatile_files: int
    unsynced_bytes: int
    pending_truncates: int
    kept_pages: int

    @classmethod
    def from_reply(cls, doc: dict[str, Any]) -> CutReport:
        """Build from the server's reply."""
        return cls(**{name: int(doc.get(name, 0)) for name in cls.__dataclass_fields__})


def _mountpoints() -> set[str]:
    """Mount points of this mount namespace (``/proc/self/mountinfo``, octal escapes undone)."""
    points: set[str] = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            field = line.split(" ")[4]
            points.add(field.encode("latin-1", "surrogateescape").decode("unicode_escape"))
    return points


def _preflight() -> None:
    """Fail with what to install, before a server dies of it less clearly."""
    missing = []
    if importlib.util.find_spec("mfusepy") is None:
        missing.append("pip install mfusepy")
    if shutil.which(FUSERMOUNT) is None:
        missing.append("apt-get install fuse3")
    if missing:
        raise PowerLossError(f"the power-loss model needs: {'; '.join(missing)} (scripts/setup.sh)")
    if not os.path.exists("/dev/fuse"):
        raise PowerLossError("no /dev/fuse on this machine (a container needs --device /dev/fuse)")


class PowerLossFS:
    """Mount the model of ``backing`` at ``mountpoint`` (in a server process) and cut its power.

    Every wait is bounded (``timeout`` seconds); whatever happens, leaving the
    ``with`` block (or ``close()``) unmounts and ends the server. Leaving it
    without a cut is a clean shutdown: volatile writes become durable.
    """

    def __init__(self, backing: Path, mountpoint: Path, *, timeout: float = 10.0) -> None:
        self.backing = Path(backing).resolve()
        self.mountpoint = Path(mountpoint).resolve()
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None
        self._buffer = b""
        self.report: CutReport | None = None

    # ----------------------------------------------------------- context

    def __enter__(self) -> Self:
        self.mount()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------- lifecycle

    @property
    def mounted(self) -> bool:
        """Whether the mount point is still a mount (also a dead one)."""
        return str(self.mountpoint) in _mountpoints()

    def mount(self) -> None:
        """Start the server and wait until the kernel has the mount."""
        if self.proc is not None:
            raise PowerLossError("already mounted")
        if self.mounted:
            raise PowerLossError(f"{self.mountpoint} is already a mount point")
        _preflight()
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        # The server's stderr, kept as long as this object (read by server_log()).
        self.log = tempfile.TemporaryFile(prefix="powerloss-", suffix=".log")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.powerloss", "serve",
             str(self.backing), str(self.mountpoint)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            cwd=ROOT, env=env, start_new_session=True,
        )  # fmt: skip
        self.report = None
        try:
            reply = self._reply()
            if not reply.get("ready"):
                raise PowerLossError(f"unexpected first reply {reply}")
            deadline = time.monotonic() + self.timeout
            while not self.mounted:
                if time.monotonic() > deadline:
                    raise PowerLossError("the mount did not appear")
                time.sleep(0.01)
        except BaseException:
            self._teardown()
            raise

    def stats(self) -> CutReport:
        """What the file system has seen so far, and what is volatile now."""
        return CutReport.from_reply(self._request({"cmd": "stats"}))

    def cut(
        self,
        *,
        kill: Iterable[int] = (),
        during: Callable[[], object] | None = None,
        keep_unsynced: float = 0.0,
        seed: int | None = None,
    ) -> CutReport:
        """Cut the power: EIO from now on, volatile writes discarded, then unmounted.

        ``kill``: pids sent SIGKILL right after the discard (the machine stops
        with its power). ``during``: called while the dead file system is still
        mounted (every operation fails with EIO), e.g. to watch a writer fail.
        ``keep_unsynced``: probability that each volatile page still reached
        the disk (a torn cut); ``seed`` makes that choice reproducible.
        """
        try:
            reply = self._request({"cmd": "cut", "keep_unsynced": keep_unsynced, "seed": seed})
            for pid in kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if during is not None:
                during()
        finally:
            self._teardown()
        self.report = CutReport.from_reply(reply)
        return self.report

    def unmount(self) -> CutReport:
        """Clean shutdown: every volatile write made durable, then unmounted."""
        try:
            reply = self._request({"cmd": "sync"})
        finally:
            self._teardown()
        self.report = CutReport.from_reply(reply)
        return self.report

    def close(self) -> None:
        """Unmount if still mounted (cleanly when the server answers), and end the server."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(PowerLossError, OSError):
                self.unmount()
                return
        self._teardown()

    def server_log(self) -> str:
        """What the server wrote to stderr (libfuse and Python diagnostics)."""
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    # ----------------------------------------------------------- internals

    def _request(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.proc is None or self.proc.stdin is None or self.proc.poll() is not None:
            raise PowerLossError("the file system server is not running")
        try:
            self.proc.stdin.write((json.dumps(doc) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            raise PowerLossError(f"cannot reach the file system server: {exc}") from exc
        reply = self._reply()
        if not reply.get("ok"):
            raise PowerLossError(f"{doc.get('cmd')}: {reply.get('error')}")
        return reply

    def _reply(self) -> dict[str, Any]:
        """Next JSON line from the server, within the timeout."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PowerLossError(
                        f"no answer in {self.timeout} s; log:\n{self.server_log()}"
                    )
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise PowerLossError(f"the server exited; log:\n{self.server_log()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        doc: dict[str, Any] = json.loads(line)
        return doc

    def _teardown(self) -> None:
        """End the server (it unmounts itself on end of stdin), then make sure nothing is left."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            try:
                proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()  # closing /dev/fuse aborts the connection: callers get ENOTCONN
                proc.wait(self.timeout)
            if proc.stdout is not None:
                proc.stdout.close()
        if self.mounted:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([FUSERMOUNT, "-u", "-z", str(self.mountpoint)],
                               timeout=self.timeout, check=False, capture_output=True)  # fmt: skip
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.mountpoint)],
                           timeout=self.timeout, check=False, capture_output=True)  # fmt: skip
        if self.mounted:
            raise PowerLossError(f"{self.mountpoint} is still mounted")


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.support.powerloss serve BACKING MOUNT`` (started by PowerLossFS)."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.powerloss")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("serve", help="mount the power-loss model and serve it (control on stdin)")
    cmd.add_argument("backing", type=Path)
    cmd.add_argument("mountpoint", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    serve(args.backing, args.mountpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
