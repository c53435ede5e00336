"""Memory diagnostics for long soaks, off unless ``$EDGE_AGENT_MEMDIAG`` names a file.

A bench aid, not a product feature: with ``EDGE_AGENT_MEMDIAG=/path/mem.jsonl``
the agent starts :mod:`tracemalloc` and, every ``$EDGE_AGENT_MEMDIAG_PERIOD``
seconds (default 60), appends one JSON line to that file: Python's allocated
blocks and pymalloc arenas, SQLite's own heap, what tracemalloc traces (and
its own overhead, which inflates RSS and must be subtracted), glibc's
``mallinfo2`` totals and the per-arena figures of ``malloc_info``, the thread
count, and the 20 source lines whose traced memory grew most since the sample
at 5 minutes. ``EDGE_AGENT_MEMDIAG_TRACE=0`` leaves tracemalloc off. Unset,
nothing is imported or started.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import sys
import tempfile
import threading
import time
import tracemalloc
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ENV = "EDGE_AGENT_MEMDIAG"
PERIOD_ENV = "EDGE_AGENT_MEMDIAG_PERIOD"
TRACE_ENV = "EDGE_AGENT_MEMDIAG_TRACE"  # "0": allocator figures only, no tracemalloc overhead
TOP = 20
WARM_UP = 300.0  # s: top_growth counts from here (imports, caches, first reconnects done)

log = logging.getLogger(__name__)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
        "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def mallinfo2(libc: ctypes.CDLL) -> dict[str, int]:
    """glibc's totals: ``arena`` (main heap), ``hblkhd`` (mmapped), ``uordblks`` (in use)..."""
    fn = libc.mallinfo2
    fn.restype = _Mallinfo2
    info = fn()
    return {name: int(getattr(info, name)) for name, *_ in _Mallinfo2._fields_}


def malloc_info(libc: ctypes.CDLL) -> dict[str, Any]:
    """``malloc_info(3)`` summarised: per arena its system bytes and free bytes."""
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    libc.open_memstream.restype = ctypes.c_void_p
    libc.open_memstream.argtypes = [
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    text = ctypes.string_at(buf, size.value).decode()
    libc.free.argtypes = [ctypes.c_void_p]
    libc.free(ctypes.cast(buf, ctypes.c_void_p))
    root = ET.fromstring(text)  # noqa: S314 - glibc's own output, not untrusted input
    arenas = [_arena(heap) for heap in root.findall("heap")]
    return {"arenas": len(arenas), "per_arena": arenas, **_arena(root)}


def _arena(node: ET.Element) -> dict[str, int]:
    def attr(tag: str, kind: str, field: str = "size") -> int:
        for child in node.findall(tag):
            if child.get("type") == kind:
                return int(child.get(field, "0"))
        return 0

    return {"system": attr("system", "current"), "free": attr("total", "fast") +
            attr("total", "rest"), "mmap": attr("total", "mmap")}  # fmt: skip


def _sqlite() -> ctypes.CDLL | None:
    # the library the sqlite3 module already loaded: CDLL returns that same copy
    name = ctypes.util.find_library("sqlite3")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def sqlite_memory(lib: ctypes.CDLL) -> dict[str, int]:
    """SQLite's own heap (page caches, statements), which tracemalloc does not see."""
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
    return {"used": lib.sqlite3_memory_used(), "highwater": lib.sqlite3_memory_highwater(0)}


def pymalloc_stats() -> dict[str, int]:
    """Python's own small-object arenas (1 MiB mmaps, outside glibc's figures).

    ``sys._debugmallocstats`` prints to fd 2 only: it is pointed at a temporary
    file meanwhile, with the log handlers' locks held so no log line lands there.
    """
    handlers = logging.getLogger().handlers
    for h in handlers:
        h.acquire()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
    finally:
        for h in handlers:
            h.release()
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("# ") and "=" in line:
            key, value = line[2:].split("=", 1)
            out.setdefault(key.strip().replace(" ", "_"), int(value.strip().replace(",", "")))
    return out


def _threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


class MemDiag:
    """Takes the samples; :meth:`run` appends one every ``period`` seconds until cancelled."""

    def __init__(self, path: Path, period: float) -> None:
        self.path = path
        self.period = period
        self.libc = _libc()
        self.sqlite = _sqlite()
        self.first: tracemalloc.Snapshot | None = None
        self.rebased = False
        self.t0 = time.monotonic()

    def sample(self) -> dict[str, Any]:
        """One sample: allocator figures always, tracemalloc's when it traces."""
        out: dict[str, Any] = {
            "t": round(time.monotonic() - self.t0, 1), "blocks": sys.getallocatedblocks(),
            "gc_objects": len(gc.get_objects()), "threads": _threads(),
        }  # fmt: skip
        if tracemalloc.is_tracing():
            out.update(self._traces())
        else:  # tracemalloc's hooks hide pymalloc from _debugmallocstats
            out["pymalloc"] = pymalloc_stats()
        if self.libc is not None:
            out["mallinfo2"] = mallinfo2(self.libc)
            out["malloc_info"] = malloc_info(self.libc)
        if self.sqlite is not None:
            out["sqlite_memory"] = sqlite_memory(self.sqlite)
        return out

    def _traces(self) -> dict[str, Any]:
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        # the diff's baseline: the first sample, then again once past the warm-up
        if self.first is None or (not self.rebased and time.monotonic() - self.t0 >= WARM_UP):
            self.rebased = self.first is not None
            self.first = snap
        top = snap.compare_to(self.first, "lineno")[:TOP]
        current, peak = tracemalloc.get_traced_memory()
        return {
            "traced": current, "traced_peak": peak,
            "tracemalloc_overhead": tracemalloc.get_tracemalloc_memory(),
            "top_growth": [{"where": str(s.traceback[0]), "size_diff": s.size_diff,
                            "count_diff": s.count_diff, "size": s.size} for s in top],
        }  # fmt: skip

    async def run(self) -> None:
        while True:
            line = json.dumps(self.sample())
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
            await asyncio.sleep(self.period)


def start_from_env() -> asyncio.Task[None] | None:
    """Start the sampling task if ``$EDGE_AGENT_MEMDIAG`` is set; otherwise None, at no cost."""
    target = os.environ.get(ENV)
    if not target:
        return None
    period = float(os.environ.get(PERIOD_ENV, "60"))
    if os.environ.get(TRACE_ENV, "1") != "0":
        tracemalloc.start(1)  # one frame: the line is enough and keeps the overhead down
    log.info("memory diagnostics on: a sample every %s s to %s", period, target)
    return asyncio.create_task(MemDiag(Path(target), period).run(), name="memdiag")
