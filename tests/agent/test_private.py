"""Private folders: another account that creates them first cannot redirect the agent.

We are root: each case lays out a shared sticky folder (our own ``$TMPDIR``),
plants what another account (uid 65534) could plant there, then runs the real
code path as a third, unprivileged uid (``setpriv``) and checks that nothing
of that uid was overwritten and nothing planted was trusted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.tools import require

AGENT_UID = 54321
"""The unprivileged account running the agent (any unused uid works)."""
OTHER_UID = 65534
"""Another local account (nobody)."""
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shared(checkout_searchable: None) -> Iterator[Path]:
    """A world-writable sticky folder like /tmp (tmp_path is root's 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="private-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def checkout_searchable() -> Iterator[None]:
    """Let the agent's account reach this checkout, as it reaches an installed agent.

    A checkout below a folder only root may enter (``mktemp -d`` makes 0700 ones)
    hides the code from the other uid; each such folder gets search permission
    for others (not read) while these tests run, and its mode back after.
    """
    changed: list[tuple[Path, int]] = []
    for parent in reversed(ROOT.parents):
        mode = parent.stat().st_mode & 0o7777
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
            changed.append((parent, mode))
    try:
        yield
    finally:
        for parent, mode in reversed(changed):
            parent.chmod(mode)


def as_agent(shared: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run Python with ``args`` as AGENT_UID, with ``$TMPDIR`` = ``shared``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "TMPDIR": str(shared),
        "HOME": str(shared),
    }
    setpriv = require("setpriv")
    ids = [f"--reuid={AGENT_UID}", f"--regid={AGENT_UID}", "--clear-groups"]
    return subprocess.run(
        [setpriv, *ids, sys.executable, *args],
        env=env,
        cwd=shared,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def owned(path: Path, uid: int, mode: int) -> Path:
    os.chown(path, uid, uid, follow_symlinks=False)
    if not path.is_symlink():
        path.chmod(mode)
    return path


def folder(path: Path, uid: int, mode: int) -> Path:
    path.mkdir()
    return owned(path, uid, mode)


def victim_file(shared: Path) -> Path:
    victim = shared / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    return owned(victim, AGENT_UID, 0o600)


WRITE = (
    "from agent.paths import AgentPointer, write_pointer\n"
    "try:\n"
    "    print(write_pointer(AgentPointer('box-1', 1, 's', 'b', 'c')))\n"
    "except Exception as exc:\n"
    "    print(type(exc).__name__, exc)\n"
)


def test_pointer_is_not_written_into_a_runtime_dir_another_user_created(shared: Path) -> None:
    """Another account creates ``edge-agent-<uid>`` first and plants links to our file."""
    victim = victim_file(shared)
    planted = folder(shared / f"edge-agent-{AGENT_UID}", OTHER_UID, 0o777)
    for name in ("box-1.json", "box-1.tmp"):  # the pointer and the temp name it used
        (planted / name).symlink_to(victim)
        owned(planted / name, OTHER_UID, 0o777)
    result = as_agent(shared, "-c", WRITE)
    assert victim.read_text(encoding="utf-8") == "precious", "our file was overwritten"
    assert result.stdout.startswith("UnsafePath"), result.stdout + result.stderr
    assert f"owned by uid {OTHER_UID}" in result.stdout


def test_a_runtime_dir_linked_elsewhere_by_another_user_is_refused(shared: Path) -> None:
    """The runtime dir is a link, planted by another account, into a folder of ours."""
    ours = folder(shared / "ours", AGENT_UID, 0o700)
    link = shared / f"edge-agent-{AGENT_UID}"
    link.symlink_to(ours)
    owned(link, OTHER_UID, 0o777)
    result = as_agent(shared, "-c", WRITE)
    assert result.stdout.startswith("UnsafePath"), result.stdout + result.stderr
    assert "symbolic link" in result.stdout
    assert list(ours.iterdir()) == []


def test_a_group_writable_runtime_dir_of_ours_is_refused(shared: Path) -> None:
    folder(shared / f"edge-agent-{AGENT_UID}", AGENT_UID, 0o770)
    result = as_agent(shared, "-c", WRITE)
    assert result.stdout.startswith("UnsafePath"), result.stdout + result.stderr
    assert "writable by group or others" in result.stdout


def test_a_fresh_runtime_dir_is_created_private_and_used(shared: Path) -> None:
    result = as_agent(shared, "-c", WRITE)
    made = shared / f"edge-agent-{AGENT_UID}"
    assert result.stdout.strip() == str(made / "box-1.json"), result.stdout + result.stderr
    st = made.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (AGENT_UID, 0o700)
    assert (made / "box-1.json").stat().st_mode & 0o777 == 0o600


READ = (
    "from agent.paths import read_pointers\n"
    "try:\n"
    "    print([p.agent_id for p in read_pointers()])\n"
    "except Exception as exc:\n"
    "    print(type(exc).__name__, exc)\n"
)
POINTER = '{"agent_id": "%s", "pid": 1, "socket": "/tmp/evil.sock", "buffer": "b", "config": "c"}'


def test_status_does_not_trust_pointers_planted_by_another_user(shared: Path) -> None:
    """In a runtime dir another account made, ``status`` must not follow its pointers."""
    theirs = folder(shared / f"edge-agent-{AGENT_UID}", OTHER_UID, 0o755)
    (theirs / "box-1.json").write_text(POINTER % "box-1", encoding="utf-8")
    owned(theirs / "box-1.json", OTHER_UID, 0o644)
    result = as_agent(shared, "-c", READ)
    assert result.stdout.startswith("UnsafePath"), result.stdout + result.stderr


def test_only_our_own_pointer_files_are_read(shared: Path) -> None:
    ours = folder(shared / f"edge-agent-{AGENT_UID}", AGENT_UID, 0o700)
    for agent_id, uid in (("mine", AGENT_UID), ("theirs", OTHER_UID)):
        (ours / f"{agent_id}.json").write_text(POINTER % agent_id, encoding="utf-8")
        owned(ours / f"{agent_id}.json", uid, 0o644)
    elsewhere = shared / "elsewhere.json"
    elsewhere.write_text(POINTER % "linked", encoding="utf-8")
    owned(elsewhere, AGENT_UID, 0o644)
    (ours / "linked.json").symlink_to(elsewhere)
    owned(ours / "linked.json", AGENT_UID, 0o777)
    result = as_agent(shared, "-c", READ)
    assert result.stdout.strip() == "['mine']", result.stdout + result.stderr


def run_site(agent: dict[str, str]) -> dict[str, object]:
    return {
        "agent": {"id": "box-1", **agent},
        "mqtt": {"host": "127.0.0.1", "port": 9},  # nobody listens: the agent keeps trying
        "devices": [],
    }


@pytest.mark.parametrize("key", ["data_dir", "status_socket"])
def test_agent_refuses_a_data_folder_another_user_owns(shared: Path, key: str) -> None:
    """``edge-agent run`` exits 1 naming the folder instead of writing into it."""
    theirs = folder(shared / "theirs", OTHER_UID, 0o777)
    ours = folder(shared / "ours", AGENT_UID, 0o700)
    agent = (
        {"data_dir": str(theirs)}
        if key == "data_dir"
        else {"data_dir": str(ours), "status_socket": str(theirs / "status.sock")}
    )
    site = shared / "site.yaml"
    site.write_text(yaml.safe_dump(run_site(agent)), encoding="utf-8")
    owned(site, AGENT_UID, 0o600)
    try:
        result = as_agent(shared, "-m", "agent", "run", "-c", str(site), timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the agent ran with {theirs} as its folder: {sorted(theirs.iterdir())}")
    assert result.returncode == 1, result.stderr
    assert f"{theirs} is owned by uid {OTHER_UID}" in result.stderr
    assert list(theirs.iterdir()) == [], "the agent wrote into another account's folder"


def test_status_command_says_why_it_trusts_no_pointer(shared: Path) -> None:
    theirs = folder(shared / f"edge-agent-{AGENT_UID}", OTHER_UID, 0o777)
    (theirs / "box-1.json").write_text(POINTER % "box-1", encoding="utf-8")
    result = as_agent(shared, "-m", "agent", "status")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the runtime dir {theirs} is owned by uid {OTHER_UID}" in result.stderr
    assert "Traceback" not in result.stderr
