"""The soak's memory diagnostics: off by default, and what a sample holds when on."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from agent.runtime import memdiag, process
from tests.faults import memsample


async def test_off_unless_the_variable_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memdiag.ENV, raising=False)
    assert process._start_memdiag() is None
    assert not tracemalloc.is_tracing()


def test_the_agent_does_not_even_import_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != memdiag.ENV}
    code = "import sys, agent.runtime.process; print('agent.runtime.memdiag' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "False"


async def test_a_sample_holds_allocator_sqlite_and_trace_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "mem.jsonl"
    monkeypatch.setenv(memdiag.ENV, str(out))
    conn = sqlite3.connect(tmp_path / "x.db")  # so SQLite's heap is in use
    conn.execute("CREATE TABLE t (x)")
    task = process._start_memdiag()
    assert task is not None
    try:
        for _ in range(50):
            if out.exists():
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        tracemalloc.stop()
        conn.close()
    sample = json.loads(out.read_text().splitlines()[0])
    assert sample["blocks"] > 0
    assert "MainThread" in sample["threads"]
    assert sample["malloc_info"]["arenas"] >= 1
    assert sample["mallinfo2"]["uordblks"] > 0
    assert sample["sqlite_memory"]["used"] > 0
    assert sample["traced"] > 0
    assert len(sample["top_growth"]) <= memdiag.TOP


def test_without_tracemalloc_pymalloc_arenas_are_counted(tmp_path: Path) -> None:
    assert not tracemalloc.is_tracing()
    sample = memdiag.MemDiag(tmp_path / "mem.jsonl", 60).sample()
    assert "traced" not in sample
    assert sample["pymalloc"]["arenas_allocated_current"] >= 1
    assert sample["pymalloc"]["bytes_in_allocated_blocks"] > 0


def test_outside_sample_of_this_process(tmp_path: Path) -> None:
    sample = memsample.proc_sample(os.getpid())
    assert sample["VmRSS"] >= sample["heap"] > 0
    assert sample["threads"] >= 1
    assert sample["Anonymous"] > 0
    assert sample["fds"] >= 3


def test_summary_growth_by_half(tmp_path: Path) -> None:
    rows = [{"t": 60.0 * m, "VmRSS": 1000 + (10 * m if m <= 30 else 300), "Anonymous": 0,
             "heap": 0, "anon": 0, "file": 0, "threads": 4, "fds": 17, "anon_maps": 30}
            for m in range(61)]  # fmt: skip
    (tmp_path / "proc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = memsample.summary(tmp_path)
    assert got["growth_kb_per_hour"]["VmRSS"] == {"first_half": 600.0, "second_half": 0.0}
    assert got["rss_kb_at_min"][60] == 1300
    assert len(got["curve"]) == 13


def test_summary_of_a_run_without_tracemalloc(tmp_path: Path) -> None:
    # an EDGE_AGENT_MEMDIAG_TRACE=0 run has no "traced"/"top_growth": the summary must not fail
    rows = [{"t": 60.0 * m, "blocks": 100 + m, "gc_objects": 10, "threads": ["MainThread"],
             "malloc_info": {"arenas": 2, "system": 4096 * m, "free": 0}, "mallinfo2": {},
             "pymalloc": {"arenas_allocated_current": 5}} for m in range(3)]  # fmt: skip
    (tmp_path / "agent.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = memsample.summary(tmp_path)
    assert got["traced"] == [None, None]
    assert got["top_growth"] == []
    assert got["pymalloc_arenas"] == [5, 5]
    assert got["arena_system_per_hour"]["second_half"] == 245760.0
