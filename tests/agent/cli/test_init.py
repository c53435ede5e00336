"""`edge-agent init` as a script runs it: no terminal to ask on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.agentproc import ROOT

SAMPLE = ROOT / "config" / "examples" / "garden-tools.yaml"


def _init(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "init", "--from", str(SAMPLE), *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,  # not a terminal, and nothing to read
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_init_without_a_terminal_says_how_to_answer_and_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "new.yaml"
    done = _init(tmp_path, "-o", str(out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Aborted" not in done.stdout + done.stderr
    assert "--yes" in done.stderr
    assert "--set" in done.stderr
    assert "--site" in done.stderr  # the question it could not ask, and its flag
    assert not out.exists()


def test_init_without_a_terminal_runs_when_every_answer_is_given(tmp_path: Path) -> None:
    out = tmp_path / "new.yaml"
    done = _init(tmp_path, "-o", str(out), "--site", "yk-017-box1", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid: agent yk-017-box1" in done.stdout
