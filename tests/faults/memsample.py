"""Minute samples of a running agent's memory for the soak (``longrun --soak --samples DIR``).

From outside (``/proc/PID``): VmRSS, the ``smaps_rollup`` totals (Anonymous,
Private_Dirty), the resident size of ``[heap]`` (glibc's main arena), of the
other anonymous mappings (thread arenas, thread stacks, Python's obmalloc
arenas, mmapped blocks) and of file mappings, threads and file descriptors, to
``DIR/proc.jsonl``. From inside, when the agent runs with
``EDGE_AGENT_MEMDIAG=DIR/agent.jsonl`` (see :mod:`agent.runtime.memdiag`):
tracemalloc, allocated blocks, glibc arena figures. :func:`summary` joins both.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


def period() -> float:
    """Seconds between samples: ``$EDGE_AGENT_MEMDIAG_PERIOD`` (as for the agent), else 60."""
    return float(os.environ.get("EDGE_AGENT_MEMDIAG_PERIOD", "60"))


def _kb(line: str) -> int:
    return int(line.split()[1])


def smaps(pid: int) -> dict[str, int]:
    """Resident KiB of ``pid``: ``heap``, ``anon`` (other anonymous), ``file``; ``anon_maps``."""
    out = {"heap": 0, "anon": 0, "file": 0, "anon_maps": 0}
    kind = "file"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            fields = line.split()
            name = fields[5] if len(fields) > 5 else ""
            kind = "heap" if name == "[heap]" else "anon" if not name else "file"
            if kind == "anon":
                out["anon_maps"] += 1
        elif first == "Rss:":
            out[kind] += _kb(line)
    return out


def proc_sample(pid: int) -> dict[str, Any]:
    """One outside sample of ``pid`` (KiB)."""
    out: dict[str, Any] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "VmData:")):
            out[line.split(":")[0]] = _kb(line)
        elif line.startswith("Threads:"):
            out["threads"] = _kb(line)
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Anonymous:", "Private_Dirty:")):
            out[line.split(":")[0]] = _kb(line)
    out.update(smaps(pid))
    out["fds"] = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return out


class Sampler(threading.Thread):
    """Appends :func:`proc_sample` of ``pid`` to ``path`` every ``period`` s until stopped."""

    def __init__(self, pid: int, path: Path, period: float = 60.0) -> None:
        super().__init__(name="memsample", daemon=True)
        self.pid, self.path, self.period = pid, path, period
        self.t0 = time.monotonic()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                sample = {"t": round(time.monotonic() - self.t0, 1), **proc_sample(self.pid)}
            except OSError:  # the agent is gone (the run is ending)
                return
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(sample) + "\n")
            self._done.wait(self.period)

    def stop(self) -> None:
        self._done.set()
        self.join(10)


def load(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _at(rows: list[dict[str, Any]], minute: float, key: str) -> Any:
    near = [r for r in rows if abs(r["t"] / 60 - minute) <= 1]
    return min(near, key=lambda r: abs(r["t"] / 60 - minute))[key] if near else None


def _per_hour(rows: list[dict[str, Any]], key: str) -> float | None:
    if len(rows) < 2 or rows[-1]["t"] <= rows[0]["t"]:
        return None
    if key not in rows[0] or key not in rows[-1]:
        return None
    return float(round((rows[-1][key] - rows[0][key]) * 3600 / (rows[-1]["t"] - rows[0]["t"])))


def halves(rows: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    """Growth of ``key`` per hour over the first and the second half of ``rows``."""
    mid = len(rows) // 2
    return {
        "first_half": _per_hour(rows[: mid + 1], key),
        "second_half": _per_hour(rows[mid:], key),
    }


def summary(folder: Path) -> dict[str, Any]:
    """RSS at 5/15/30/60 min, growth per hour by half, arena and tracemalloc figures."""
    proc, inner = load(folder / "proc.jsonl"), load(folder / "agent.jsonl")
    out: dict[str, Any] = {"samples": len(proc)}
    if proc:
        out["rss_kb_at_min"] = {m: _at(proc, m, "VmRSS") for m in (1, 5, 15, 30, 45, 60)}
        out["growth_kb_per_hour"] = {k: halves(proc, k) for k in
                                     ("VmRSS", "Anonymous", "heap", "anon", "file")}  # fmt: skip
        out["threads"] = sorted({r["threads"] for r in proc})
        out["fds"] = [proc[0]["fds"], proc[-1]["fds"]]
        out["anon_maps"] = [proc[0]["anon_maps"], proc[-1]["anon_maps"]]
    if inner:
        out.update(_inner(inner))
    out["curve"] = curve(folder)
    return out


def _inner(rows: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = rows[0], rows[-1]

    def pair(*keys: str) -> list[Any]:
        def get(r: dict[str, Any]) -> Any:
            for k in keys:
                r = r.get(k, {}) if isinstance(r, dict) else {}
            return r if r != {} else None

        return [get(first), get(last)]

    return {
        "blocks": pair("blocks"), "traced": pair("traced"),
        "tracemalloc_overhead": pair("tracemalloc_overhead"), "gc_objects": pair("gc_objects"),
        "arenas": pair("malloc_info", "arenas"), "arena_system": pair("malloc_info", "system"),
        "arena_free": pair("malloc_info", "free"), "mallinfo2_inuse": pair("mallinfo2", "uordblks"),
        "traced_growth_b_per_hour": halves(rows, "traced"),
        "blocks_growth_per_hour": halves(rows, "blocks"),
        "arena_system_per_hour": halves([{"t": r["t"], "s": r.get("malloc_info", {})
                                          .get("system", 0)} for r in rows], "s"),
        "pymalloc_arenas": pair("pymalloc", "arenas_allocated_current"),
        "pymalloc_used": pair("pymalloc", "bytes_in_allocated_blocks"),
        "thread_names_last": last["threads"], "top_growth": last.get("top_growth", [])[:20],
    }  # fmt: skip


def curve(folder: Path, every: float = 5.0) -> list[dict[str, Any]]:
    """One row every ``every`` minutes: outside KiB, inside figures (bytes) of the same minute."""
    proc, inner = load(folder / "proc.jsonl"), load(folder / "agent.jsonl")
    rows: list[dict[str, Any]] = []
    for p in proc:
        minute = p["t"] / 60
        if rows and minute - rows[-1]["min"] < every - 0.5:
            continue
        row = {"min": round(minute), **{k: p[k] for k in
               ("VmRSS", "Anonymous", "heap", "anon", "file", "threads", "fds")}}  # fmt: skip
        near = [r for r in inner if abs(r["t"] / 60 - minute) <= 1]
        if near:
            r = min(near, key=lambda r: abs(r["t"] / 60 - minute))
            info = r.get("malloc_info", {})
            row.update(blocks=r["blocks"], traced=r.get("traced"),
                       tm_overhead=r.get("tracemalloc_overhead"), arenas=info.get("arenas"),
                       arena_sys=info.get("system"), arena_free=info.get("free"),
                       sqlite=r.get("sqlite_memory", {}).get("used"),
                       py_arenas=r.get("pymalloc", {}).get("arenas_allocated_current"),
                       py_used=r.get("pymalloc", {}).get("bytes_in_allocated_blocks"))  # fmt: skip
        rows.append(row)
    return rows
