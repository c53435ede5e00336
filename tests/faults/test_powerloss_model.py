"""The power-loss model (``tests/support/powerloss.py``), and SQLite's WAL on it.

First the model's own promises: unsynced content is gone after a cut, synced
content stays, metadata is durable at once, truncates are content, every
operation fails with EIO once the power is gone, mmap and POSIX locks work.

Then what the buffer relies on: a writer process commits rows in WAL mode and
prints each id once ``COMMIT`` has returned; the power is cut while it writes
(and the writer SIGKILLed at that instant); the backing file is opened with
sqlite3 as after a reboot. With ``synchronous=FULL`` no printed id may be
missing, also when the disk kept a random part of the unsynced pages (torn
cut). With ``NORMAL`` the database is intact and only commits after the last
checkpoint may be gone. With ``OFF`` rows are lost, and the same check that
passes for FULL reports it: the SQLite tests can fail.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import queue
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.powerloss import PAGE, CutReport, PowerLossFS

pytestmark = pytest.mark.fault

Mount = Callable[[], PowerLossFS]


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """The backing directory: what the "disk" holds."""
    path = tmp_path / "disk"
    path.mkdir()
    return path


@pytest.fixture
def mount(tmp_path: Path, disk: Path) -> Iterator[Mount]:
    """Mounts ``disk`` at ``tmp_path/mnt`` per call (again after a cut); unmounts what is left."""
    mounted: list[PowerLossFS] = []

    def make() -> PowerLossFS:
        fs = PowerLossFS(disk, tmp_path / "mnt")
        fs.mount()
        mounted.append(fs)
        return fs

    try:
        yield make
    finally:
        for fs in mounted:
            fs.close()
        assert not any(fs.mounted for fs in mounted)


def _write(path: Path, data: bytes, *, sync: Callable[[int], None] | None = None) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY)
    try:
        os.write(fd, data)
        if sync is not None:
            sync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the model


def test_unsynced_write_is_lost_but_the_new_file_exists(mount: Mount, disk: Path) -> None:
    fs = mount()
    _write(fs.mountpoint / "new", b"never synced")
    assert (fs.mountpoint / "new").read_bytes() == b"never synced"  # readers see it before the cut
    report = fs.cut()
    assert report.volatile_files == 1
    assert report.unsynced_bytes == len(b"never synced")
    assert (disk / "new").read_bytes() == b""  # the name was durable at once, its content not


@pytest.mark.parametrize("sync", [os.fsync, os.fdatasync], ids=["fsync", "fdatasync"])
def test_synced_write_is_kept(mount: Mount, disk: Path, sync: Callable[[int], None]) -> None:
    fs = mount()
    data = bytes(range(256)) * 40  # several pages, not page-aligned
    _write(fs.mountpoint / "f", data, sync=sync)
    report = fs.cut()
    assert report.fsyncs == 1
    assert report.unsynced_bytes == 0
    assert (disk / "f").read_bytes() == data


def test_write_after_fsync_is_lost(mount: Mount, disk: Path) -> None:
    fs = mount()
    synced = b"A" * 3 * PAGE + b"tail"
    path = fs.mountpoint / "f"
    fd = os.open(path, os.O_CREAT | os.O_RDWR)
    os.write(fd, synced)
    os.fsync(fd)
    os.pwrite(fd, b"B" * 100, PAGE - 50)  # overwrite across a page boundary
    os.pwrite(fd, b"C" * 10, len(synced) + 1000)  # grow past the end (a hole)
    os.close(fd)  # close is no sync
    now = path.read_bytes()
    assert len(now) == len(synced) + 1010
    assert now[PAGE - 50 : PAGE + 50] == b"B" * 100
    assert now[len(synced) : len(synced) + 1000] == bytes(1000)
    fs.cut()
    assert (disk / "f").read_bytes() == synced


def test_truncate_is_content_volatile_until_fsync(mount: Mount, disk: Path) -> None:
    fs = mount()
    synced = os.urandom(3 * PAGE + 123)
    a, b, c = (fs.mountpoint / name for name in "abc")
    for path in (a, b, c):
        _write(path, synced, sync=os.fsync)

    os.truncate(a, 100)  # by path, no fsync
    assert a.stat().st_size == 100
    fd = os.open(b, os.O_RDWR)
    os.ftruncate(fd, 100)  # shrink, then grow: the grown part reads zeros, not old data
    os.ftruncate(fd, 2 * PAGE)
    assert os.pread(fd, 2 * PAGE, 0) == synced[:100] + bytes(2 * PAGE - 100)
    os.fsync(fd)
    os.close(fd)
    with open(c, "wb") as f:  # O_TRUNC, then new content, never synced
        f.write(b"short")

    report = fs.cut()
    assert report.pending_truncates == 2  # a and c
    assert (disk / "a").read_bytes() == synced
    assert (disk / "b").read_bytes() == synced[:100] + bytes(2 * PAGE - 100)
    assert (disk / "c").read_bytes() == synced


def test_metadata_is_durable_at_once_content_follows_the_inode(mount: Mount, disk: Path) -> None:
    fs = mount()
    m = fs.mountpoint
    (m / "dir").mkdir()
    _write(m / "dir" / "synced", b"kept", sync=os.fsync)
    _write(m / "gone", b"x", sync=os.fsync)
    os.rename(m / "dir" / "synced", m / "renamed")  # no fsync of anything after this
    (m / "gone").unlink()
    os.link(m / "renamed", m / "hardlink")
    _write(m / "renamed", b"K")  # unsynced overwrite, seen through both names
    assert (m / "hardlink").read_bytes() == b"Kept"
    fs.cut()
    assert sorted(p.name for p in disk.iterdir()) == ["dir", "hardlink", "renamed"]
    assert (disk / "renamed").read_bytes() == b"kept"
    assert os.path.samefile(disk / "renamed", disk / "hardlink")


def test_every_operation_fails_with_eio_after_the_cut(mount: Mount) -> None:
    fs = mount()
    path = fs.mountpoint / "f"
    fd = os.open(path, os.O_CREAT | os.O_RDWR)
    os.write(fd, b"data")
    failures: dict[str, int | None] = {}

    def probe() -> None:
        attempts: dict[str, Callable[[], object]] = {
            "write": lambda: os.write(fd, b"more"),
            "fsync": lambda: os.fsync(fd),
            "read": lambda: os.pread(fd, 4, 0),
            "stat": lambda: os.stat(path),
            "open": lambda: os.open(fs.mountpoint / "other", os.O_CREAT | os.O_WRONLY),
            "listdir": lambda: os.listdir(fs.mountpoint),
        }
        for name, attempt in attempts.items():
            try:
                attempt()
                failures[name] = None
            except OSError as exc:
                failures[name] = exc.errno

    try:
        fs.cut(during=probe)
    finally:
        with contextlib.suppress(OSError):  # the file system is gone by now: ENOTCONN
            os.close(fd)
    assert failures == dict.fromkeys(failures, errno.EIO), failures
    assert len(failures) == 6


def test_mmap_stores_are_volatile_until_msync_or_fsync(mount: Mount, disk: Path) -> None:
    fs = mount()
    fd = os.open(fs.mountpoint / "mapped", os.O_CREAT | os.O_RDWR)
    os.ftruncate(fd, 3 * PAGE)
    with mmap.mmap(fd, 3 * PAGE) as mm:  # shared and writable, as SQLite maps -shm
        mm[0:6] = b"fsync!"
        os.fsync(fd)
        mm[PAGE : PAGE + 6] = b"msync!"
        mm.flush()  # msync(MS_SYNC): on Linux a data sync of the range (fsync), durable
        mm[2 * PAGE : 2 * PAGE + 8] = b"volatile"
    os.close(fd)  # close writes the dirty page back to the file system, without a sync
    assert fs.stats().unsynced_bytes == PAGE
    fs.cut()
    data = (disk / "mapped").read_bytes()
    assert data[:6] == b"fsync!"
    assert data[PAGE : PAGE + 6] == b"msync!"
    assert data[2 * PAGE : 2 * PAGE + 8] == bytes(8)


def test_posix_locks_work_between_processes(mount: Mount) -> None:
    fs = mount()
    path = fs.mountpoint / "locked"
    fd = os.open(path, os.O_CREAT | os.O_RDWR)
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n"
        "    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "    print('locked')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
    )

    def other() -> str:
        done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                              text=True, timeout=30, check=True)  # fmt: skip
        return done.stdout.strip()

    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert other() in (f"refused {errno.EAGAIN}", f"refused {errno.EACCES}")
        fcntl.lockf(fd, fcntl.LOCK_UN)
        assert other() == "locked"
    finally:
        os.close(fd)


def test_torn_cut_keeps_whole_pages_at_random(mount: Mount, disk: Path) -> None:
    fs = mount()
    old = b"o" * (64 * PAGE)
    _write(fs.mountpoint / "f", old, sync=os.fsync)
    fd = os.open(fs.mountpoint / "f", os.O_RDWR)
    os.pwrite(fd, b"n" * (64 * PAGE), 0)
    os.close(fd)
    report = fs.cut(keep_unsynced=0.5, seed=3)
    data = (disk / "f").read_bytes()
    pages = [data[i : i + PAGE] for i in range(0, len(data), PAGE)]
    assert len(pages) == 64
    assert set(pages) == {b"o" * PAGE, b"n" * PAGE}  # each page old or new, none torn inside
    assert sum(p == b"n" * PAGE for p in pages) == report.kept_pages
    assert 10 < report.kept_pages < 54


def test_clean_unmount_keeps_everything_and_remount_sees_the_disk(mount: Mount, disk: Path) -> None:
    fs = mount()
    _write(fs.mountpoint / "a", b"unsynced but cleanly unmounted")
    fs.unmount()
    assert not fs.mounted
    assert (disk / "a").read_bytes() == b"unsynced but cleanly unmounted"
    again = mount()
    assert (again.mountpoint / "a").read_bytes() == b"unsynced but cleanly unmounted"
    _write(again.mountpoint / "a", b"UN")
    again.cut()
    assert (disk / "a").read_bytes() == b"unsynced but cleanly unmounted"


# --------------------------------------------------------------------------- SQLite on it

WRITER = r"""
import sqlite3, sys, time
path, mode, ckpt_every, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
db = sqlite3.connect(path, isolation_level=None, timeout=5)
assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
db.execute(f"PRAGMA synchronous={mode}")
print("open", db.execute("PRAGMA synchronous").fetchone()[0], flush=True)
payload = b"p" * 300
for i in range(1, limit + 1):
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t(id, payload) VALUES (?, ?)", (i, payload))
    db.execute("COMMIT")
    print("commit", i, flush=True)
    if i % ckpt_every == 0:
        busy, log, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if busy == 0 and log == done:
            print("ckpt", i, flush=True)
print("done", flush=True)
time.sleep(60)
"""
CKPT_EVERY = 50
SYNC_LEVEL = {"OFF": 0, "NORMAL": 1, "FULL": 2}


@dataclass
class Run:
    """One writer run cut mid-stream: what it reported, what the disk kept."""

    mode: str
    committed: list[int] = field(default_factory=list)  # ids whose COMMIT returned
    checkpoints: list[int] = field(default_factory=list)  # last id covered by a full checkpoint
    present: set[int] = field(default_factory=set)
    check: list[str] = field(default_factory=list)
    report: CutReport | None = None
    stderr: str = ""

    @property
    def lost(self) -> list[int]:
        """Committed ids missing after the cut."""
        return sorted(set(self.committed) - self.present)

    def __str__(self) -> str:
        return (f"{self.mode}: {len(self.lost)} of {len(self.committed)} committed rows lost "
                f"(last checkpoint {self.checkpoints[-1] if self.checkpoints else None}, "
                f"quick_check {self.check}, {self.report})")  # fmt: skip


def _make_db(path: Path) -> None:
    """The schema, durable on the disk before the power model starts (WAL is persistent)."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        conn.commit()
    finally:
        conn.close()


class _Writer:
    """The writer process on the mount, its stdout read on a thread (so every wait is bounded)."""

    def __init__(self, db: Path, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), mode, str(CKPT_EVERY), "200000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, ""):
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout: float) -> str:
        """The next line it printed; AssertionError if it ended."""
        line = self.lines.get(timeout=timeout)
        assert line is not None, f"writer ended: {self.stop()}"
        return line

    def stop(self) -> str:
        """SIGKILL (if still running), wait; its stderr."""
        self.proc.kill()
        self.proc.wait(30)
        self.reader.join(30)
        return self.proc.stderr.read() if self.proc.stderr else ""

    def rest(self) -> list[str]:
        """Lines printed and not yet taken (after stop())."""
        out: list[str] = []
        while (line := self.lines.get(timeout=5)) is not None:
            out.append(line)
        return out


def _fresh_db(disk: Path) -> Path:
    db = disk / "buffer.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    _make_db(db)
    return db


def _run_and_cut(
    mount: Mount, disk: Path, mode: str, *, cut_after: int, keep_unsynced: float = 0.0,
    seed: int | None = None,
) -> Run:  # fmt: skip
    """Start the writer on the mount, cut the power after ``cut_after`` commits, read the disk."""
    db = _fresh_db(disk)
    fs = mount()
    run = Run(mode)
    writer = _Writer(fs.mountpoint / db.name, mode)

    def take(line: str) -> None:
        word, _, value = line.strip().partition(" ")
        if word == "open":
            assert int(value) == SYNC_LEVEL[mode]
        elif word == "commit":
            run.committed.append(int(value))
        elif word == "ckpt":
            run.checkpoints.append(int(value))

    try:
        deadline = time.monotonic() + 60
        while len(run.committed) < cut_after:
            take(writer.next(timeout=max(0.1, deadline - time.monotonic())))
        run.report = fs.cut(kill=[writer.proc.pid], keep_unsynced=keep_unsynced, seed=seed)
    finally:
        run.stderr = writer.stop()
    for line in writer.rest():  # printed before the kill: committed too
        take(line)

    conn = sqlite3.connect(db)  # the disk as a reboot finds it, no file system model in between
    try:
        run.check = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
        run.present = {int(row[0]) for row in conn.execute("SELECT id FROM t")}
    finally:
        conn.close()
    print(run)
    return run


def _assert_no_committed_row_lost(run: Run) -> None:
    """The buffer's promise: intact, and every row whose COMMIT returned is on the disk."""
    assert run.check == ["ok"], run
    assert run.lost == [], run
    # Nothing invented: at most the one commit that returned but was not printed before the kill.
    assert run.present <= set(run.committed) | {max(run.committed) + 1}, run


@pytest.mark.parametrize("keep_unsynced", [0.0, 0.3, 0.7], ids=["drop-all", "torn-30", "torn-70"])
def test_sqlite_wal_full_keeps_every_committed_row(
    mount: Mount, disk: Path, keep_unsynced: float
) -> None:
    rng = random.Random(int(keep_unsynced * 10))
    for round_no in range(3):
        run = _run_and_cut(mount, disk, "FULL", cut_after=rng.randint(150, 400) + round_no * 400,
                           keep_unsynced=keep_unsynced, seed=rng.randrange(1 << 30))  # fmt: skip
        _assert_no_committed_row_lost(run)
        assert run.report is not None
        assert run.report.fsyncs >= len(run.committed)  # one WAL sync per commit at least


def test_sqlite_wal_normal_loses_at_most_the_commits_since_the_last_checkpoint(
    mount: Mount, disk: Path
) -> None:
    rng = random.Random(1)
    for _ in range(3):
        run = _run_and_cut(mount, disk, "NORMAL", cut_after=rng.randint(230, 480))
        assert run.check == ["ok"], run
        assert run.checkpoints, run
        last = run.checkpoints[-1]
        assert all(i > last for i in run.lost), run  # only the tail after the last checkpoint
        kept = sorted(set(run.committed) & run.present)
        assert kept == list(range(1, len(kept) + 1)), run  # the survivors are a prefix


def test_sqlite_wal_off_loses_committed_rows_and_the_check_sees_it(
    mount: Mount, disk: Path
) -> None:
    run = _run_and_cut(mount, disk, "OFF", cut_after=300)
    assert run.check == ["ok"], run
    assert len(run.lost) > 0, run
    with pytest.raises(AssertionError):
        _assert_no_committed_row_lost(run)


def test_sqlite_writer_sees_io_errors_while_the_power_is_gone(mount: Mount, disk: Path) -> None:
    db = _fresh_db(disk)
    fs = mount()
    writer = _Writer(fs.mountpoint / db.name, "FULL")
    try:
        for _ in range(20):
            writer.next(timeout=30)
        fs.cut(during=lambda: writer.proc.wait(30))  # not killed: it runs into the dead file system
    finally:
        stderr = writer.stop()
    assert writer.proc.returncode == 1, stderr
    assert "disk I/O error" in stderr, stderr
