"""F8: the buffer reaches its size cap, and the disk itself fills up.

Pass: no crash, no corruption; with the cap reached the oldest batches are
dropped, counted and shown in status, the file stays within the cap; once the
broker returns the agent drains, and every missing seq is accounted for by the
drop counter.

A full disk (a real tmpfs filled by a filler file) is not the cap: nothing
committed is dropped, new batches wait in RAM, status says ``disk_full``, the
process keeps polling and petting the watchdog of the shipped unit, a seq
reservation block is crossed safely, a restart on the full disk starts and
polls, and everything recovers by itself once the filler is deleted.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest

from agent.buffer.inbox import Put, Work
from agent.buffer.records import StoreConfig
from agent.buffer.seqfile import SeqReservation
from agent.buffer.store import Store
from agent.errors import DiskFull
from agent.message import encode_parts
from agent.status.document import StatusDocument
from drivers.base import Reading
from tests.faults.harness import AGENT, Rig, pending_seqs, prefill, quick_check, wait_status
from tests.faults.notify import NotifySocket, unit_watchdog_s
from tests.faults.proxy import Mode
from tests.support.mosquitto import Mosquitto
from tests.support.smalldisk import fill, small_disk

CAP = 2_000_000


def test_f08_cap_reached_drops_oldest_counted_and_recovers(
    tmp_path: Path, broker: Mosquitto
) -> None:
    with Rig(tmp_path, broker, devices=4, interval="50ms", start_agent=False,
             buffer={"max_size": f"{CAP}B"}) as rig:  # fmt: skip
        prefill(rig.agent.buffer, 12_000, max_bytes=CAP, pad=100)  # past the cap already
        rig.proxy.set(Mode.REFUSE)
        rig.agent.start()
        full = wait_status(rig.agent, lambda d: d["buffer"]["dropped_batches"] > 0, 30)
        first_drops = full["buffer"]["dropped_batches"]
        doc = wait_status(rig.agent, lambda d: d["buffer"]["dropped_batches"] > first_drops, 30)
        assert doc["buffer"]["file_bytes"] <= CAP
        assert os.path.getsize(rig.agent.buffer) <= CAP
        rig.proxy.set(Mode.PASS)
        wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 20, 60)
        report = rig.finish()
    assert quick_check(rig.agent.buffer) == ["ok"]
    assert report.dropped >= first_drops
    assert report.missing, "the cap should have dropped something"
    assert report.lost == 0, report.summary()
    assert report.problems() == []


def _disk_full(doc: StatusDocument) -> bool:
    return bool(doc["buffer"].get("disk_full"))


def _wait_failing(rig: Rig, timeout: float = 60.0) -> None:
    """Until the agent logs a failed commit (the WAL's spare room used up)."""
    deadline = time.monotonic() + timeout
    while "commit failed" not in rig.agent.log() and time.monotonic() < deadline:
        assert rig.agent.proc is not None
        assert rig.agent.proc.poll() is None, rig.agent.log()[-3000:]
        time.sleep(0.2)
    assert "commit failed" in rig.agent.log(), "the disk never filled"


def test_f08_disk_full_spell_keeps_committed_and_pets_watchdog(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A spell longer than the unit's WatchdogSec: pets go on, 0 committed batches dropped."""
    watchdog = unit_watchdog_s()
    with small_disk(tmp_path / "agent" / "data", "6m") as disk, \
            NotifySocket(tmp_path / "notify.sock") as notify, \
            Rig(tmp_path, broker, devices=4, interval="50ms", start_agent=False,
                buffer={"max_size": "256MB"}) as rig:  # fmt: skip
        rig.agent.env.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(int(watchdog * 1e6)))
        rig.proxy.set(Mode.REFUSE)
        rig.agent.start()
        wait_status(rig.agent, lambda d: d["buffer"]["last_seq"] > 50, 30)
        filler = fill(disk)
        _wait_failing(rig)
        spell = time.monotonic()
        before = rig.agent.status()["buffer"]
        seen_full = False
        while time.monotonic() - spell < watchdog + 5:  # bounded: the spell
            assert rig.agent.proc is not None
            assert rig.agent.proc.poll() is None, "the agent died of a full disk"
            seen_full = seen_full or _disk_full(rig.agent.status())
            time.sleep(0.5)
        filler.unlink()
        after = wait_status(rig.agent, lambda d: d["buffer"]["last_seq"] > before["last_seq"] + 20
                            and not _disk_full(d), 30)["buffer"]  # fmt: skip
        pets = notify.pets(since=spell - watchdog)
        rig.proxy.set(Mode.PASS)
        wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 20, 60)
        report = rig.finish()
    assert after["dropped_batches"] == 0, f"{after['dropped_batches']} committed batches dropped"
    assert after["pending_batches"] >= before["pending_batches"]
    assert report.missing == [], report.summary()
    assert report.lost == 0, report.summary()
    assert seen_full, "status never said disk_full during the spell"
    _assert_no_tick_lost(rig)
    gaps = [b - a for a, b in itertools.pairwise(pets)]
    assert len(pets) >= 3
    assert max(gaps) < watchdog, f"watchdog pets stopped: gaps {gaps}"
    assert report.problems() == []


def _assert_no_tick_lost(rig: Rig) -> None:
    """Every poll put while the disk was full reached the broker: no run of ticks is missing.

    A batch lost from RAM never got a seq, so the seqs show no gap; the
    simulator's ticks (10 a second, polled every 50 ms) do. A short gap is a
    slow poll; a lost inbox or retried commit is seconds of ticks.
    """
    ticks = rig.checker.ticks()
    assert sorted(ticks) == rig.names, ticks.keys()
    for device, ks in ticks.items():
        gaps = [b - a for a, b in itertools.pairwise(ks)]
        assert max(gaps) <= 20, f"{device}: {max(gaps)} simulator ticks never arrived"


def _puts(n: int) -> Work:
    head, tail = encode_parts(AGENT, "c1", [Reading(ts=1_764_270_000_000, values={"m": 1})])
    return Work(puts=[Put("c1", head, tail, 1_764_270_000_000, 1) for _ in range(n)], n_ops=n)


def test_f08_seq_reservation_crossed_while_full(tmp_path: Path) -> None:
    """The sidecar rewrite hits ENOSPC: DiskFull like a failed commit, no seq above it."""
    with small_disk(tmp_path / "data", "2m") as disk:
        path = disk / "buffer.db"
        store = Store(StoreConfig(path, AGENT, 64_000_000, "drop_oldest", "FULL"))
        sidecar = path.with_name("buffer.db.seq")
        store.seqfile = SeqReservation(sidecar, block=5)
        store.commit(_puts(3))
        assert int(sidecar.read_text(encoding="ascii")) == 8
        store.commit(_puts(4))  # seq 7: inside the reservation, no rewrite
        filler = fill(disk)
        work = _puts(3)  # seq 10 needs a new block: the sidecar cannot be written
        with pytest.raises(DiskFull):
            store.commit(work)
        assert store.last_seq == 7
        assert int(sidecar.read_text(encoding="ascii")) == 8
        assert len(pending_seqs(path)) == 7
        filler.unlink()
        assert store.commit(work) == 10  # the same work, retried once space is back
        assert int(sidecar.read_text(encoding="ascii")) == 15
        store.close()


def test_f08_restart_on_full_disk_polls_and_recovers(tmp_path: Path, broker: Mosquitto) -> None:
    """Started on a full disk: it runs, polls into RAM, opens the file once space returns."""
    with small_disk(tmp_path / "agent" / "data", "4m") as disk, \
            NotifySocket(tmp_path / "notify.sock") as notify, \
            Rig(tmp_path, broker, devices=4, interval="50ms", start_agent=False,
                buffer={"max_size": "64MB"}) as rig:  # fmt: skip
        last = prefill(rig.agent.buffer, 300)
        filler = fill(disk)
        rig.proxy.set(Mode.REFUSE)
        rig.agent.env["NOTIFY_SOCKET"] = str(notify.path)
        rig.agent.start()
        wait_status(rig.agent, lambda d: _disk_full(d)
                    and all(dev["polls_ok"] > 5 for dev in d["devices"].values()), 30)  # fmt: skip
        assert any(m == "READY=1" for _, m in notify.messages), notify.messages
        assert "cannot open buffer" in rig.agent.log(), (
            "the open did not fail: the disk was not full"
        )
        filler.unlink()
        doc = wait_status(rig.agent, lambda d: d["buffer"]["last_seq"] > last + 20
                          and not _disk_full(d), 30)  # fmt: skip
        assert doc["buffer"]["dropped_batches"] == 0
        assert pending_seqs(rig.agent.buffer)[:1] == [1]
        rig.proxy.set(Mode.PASS)
        wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 20, 60)
        report = rig.finish()
    assert report.missing == [], report.summary()
    assert report.lost == 0, report.summary()
    _assert_no_tick_lost(rig)
