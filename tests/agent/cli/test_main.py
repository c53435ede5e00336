"""The entry point: `run` and `status` work without importing the CLI framework."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from agent.buffer import Buffer
from drivers.base import Reading
from tests.support.agentproc import ROOT

PROBE = """
import sys
from agent.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    heavy = sorted(
        m for m in ("typer", "click", "rich", "pydantic", "agent.buffer.buffer") if m in sys.modules
    )
    print("MODULES", ",".join(heavy), "CODE", exc.code)
"""


def _probe(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RUNTIME_DIRECTORY": str(tmp_path / "run"),
        "STATE_DIRECTORY": str(tmp_path / "state"),
    }
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_status_without_an_agent_imports_no_cli_framework(tmp_path: Path) -> None:
    done = _probe(tmp_path, "status", "--json")
    assert "CODE 1" in done.stdout, done.stdout + done.stderr
    assert not {"typer", "click", "rich"} & set(
        done.stdout.split("MODULES")[1].split()[0].split(",")
    )
    report = json.loads(done.stdout.split("MODULES")[0])
    assert report["running"] is False


def test_run_with_a_bad_site_exits_2_with_located_problems(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("agent: {id: box, colour: red}\n", encoding="utf-8")
    done = _probe(tmp_path, "run", "-c", str(site))
    assert "CODE 2" in done.stdout
    assert "typer" not in done.stdout.split("MODULES")[1]
    assert f"{site}:1: agent.colour: unknown key" in done.stderr


def test_other_commands_go_to_the_full_cli(tmp_path: Path) -> None:
    done = _probe(tmp_path, "status", "--bogus")
    assert "CODE 2" in done.stdout
    assert "typer" in done.stdout.split("MODULES")[1]
    assert "No such option" in done.stderr or "--bogus" in done.stderr


async def _buffer_with(path: Path, batches: int) -> None:
    async with Buffer(path, agent_id="box") as buf:
        for i in range(batches):
            buf.put("dev", [Reading(ts=1_800_000_000_000 + i, values={"v": i})])
        await buf.flush()


def test_status_without_an_agent_reads_the_buffer_without_the_heavy_imports(
    tmp_path: Path,
) -> None:
    # What makes it slow: pydantic (through the message codec) and the writer side
    # of the buffer. The counters on disk need neither.
    (tmp_path / "state").mkdir(mode=0o700)
    asyncio.run(_buffer_with(tmp_path / "state" / "buffer.db", 3))
    done = _probe(tmp_path, "status", "--json")
    assert "CODE 1" in done.stdout, done.stdout + done.stderr
    loaded = done.stdout.split("MODULES")[1].split("CODE")[0].strip()
    assert loaded == "", done.stdout
    report = json.loads(done.stdout.split("MODULES")[0])
    assert report["agents"][0]["buffer"]["pending_batches"] == 3
    assert report["agents"][0]["buffer"]["last_seq"] == 3
