"""The long fault runs (F6 x 500, F15, F9 1M rows; see tests/faults/README.md), not in CI.

::

    python -m tests.faults.longrun --kills 500        # F6 x 500: SIGKILL at random moments
    python -m tests.faults.longrun --soak 3600        # F15: random faults for an hour
    python -m tests.faults.longrun --backlog 1000000  # F9 at full size
    python -m tests.faults.longrun --soak 3600 --samples DIR  # + memory each minute
    python -m tests.faults.longrun --summary DIR      # summarise those samples

Each prints its figures (faults injected, batches and values sent and
received, lost, duplicated, memory growth, file descriptors) and exits 1 if
a promise was broken.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.faults import memsample
from tests.faults.harness import Rig, fd_count, prefill, quick_check, rss_kb, wait_status
from tests.faults.proxy import Mode
from tests.faults.test_f06_sigkill import kill_cycle
from tests.support.mosquitto import Mosquitto


def _figures(rig: Rig, started: float, faults: dict[str, int], extra: dict[str, Any]) -> int:
    report = rig.finish(timeout=300)
    out = {
        "faults_injected": sum(faults.values()), "faults": faults,
        "batches_committed": report.last_seq, "values_received": report.values,
        **report.summary(), "seconds": round(time.monotonic() - started, 1), **extra,
    }  # fmt: skip
    print(json.dumps(out, indent=2))
    return 1 if report.problems() or report.missing else 0


def run_kills(work: Path, broker: Mosquitto, kills: int, seed: int) -> int:
    """F6 long: ``kills`` SIGKILLs at random moments, quick_check after each."""
    rng, started, bad_checks = random.Random(seed), time.monotonic(), 0
    with Rig(work, broker, devices=2, interval="50ms", start_agent=False) as rig:
        for i in range(kills):
            kill_cycle(rig, rng)
            if quick_check(rig.agent.buffer) != ["ok"]:
                bad_checks += 1
            if i % 50 == 49:
                print(f"{i + 1} kills", file=sys.stderr)
        rig.agent.start()
        assert rig.agent.proc is not None
        extra = {"quick_check_failures": bad_checks, "rss_kb_last_run": rss_kb(rig.agent.proc.pid),
                 "fds_last_run": fd_count(rig.agent.proc.pid)}  # fmt: skip
        code = _figures(rig, started, {"sigkill": kills}, extra)
    return code or int(bad_checks > 0)


def _soak_faults(rig: Rig, broker: Mosquitto) -> dict[str, Callable[[random.Random], None]]:
    def proxy_for(mode: Mode, seconds: float, **shape: Any) -> Callable[[random.Random], None]:
        def run(rng: random.Random) -> None:
            rig.proxy.set(mode, **shape)
            if mode is Mode.REFUSE:
                rig.proxy.reset_connections()
            time.sleep(seconds)
            if mode is Mode.DROP_S2C:
                rig.proxy.set(Mode.RESET)
            rig.proxy.set(Mode.PASS)

        return run

    def restart_broker(rng: random.Random) -> None:
        broker.stop()
        time.sleep(rng.uniform(1, 5))
        broker.start()

    def device(rng: random.Random) -> None:
        name = rng.choice(rig.names)
        fault = rng.choice(["silent", "drop", "garbage", "exception:4", "slow:2", "reset",
                            "wrong_tid", "split"])  # fmt: skip
        rig.sims.call(lambda s: s[name].faults.set(fault))
        time.sleep(rng.uniform(1, 5))
        rig.sims.call(lambda s: s[name].faults.clear())

    return {
        "refuse": proxy_for(Mode.REFUSE, 8), "reset": proxy_for(Mode.RESET, 0.5),
        "blackhole": proxy_for(Mode.BLACKHOLE, 15), "puback_loss": proxy_for(Mode.DROP_S2C, 4),
        "slow_split": proxy_for(Mode.PASS, 10, latency_ms=200, split=True),
        "bandwidth": proxy_for(Mode.PASS, 10, bandwidth=4000),
        "broker_restart": restart_broker, "device": device,
    }  # fmt: skip


def run_soak(work: Path, broker: Mosquitto, seconds: float, seed: int,
             samples: Path | None = None) -> int:  # fmt: skip
    """F15: random faults for ``seconds``; memory and file descriptors sampled.

    With ``samples`` (a folder), the agent's memory is also sampled every
    minute, from outside and (``EDGE_AGENT_MEMDIAG``) from inside; see memsample.
    """
    rng, started = random.Random(seed), time.monotonic()
    counts: dict[str, int] = {}
    if samples is not None:
        samples.mkdir(parents=True, exist_ok=True)
        os.environ["EDGE_AGENT_MEMDIAG"] = str(samples / "agent.jsonl")  # the agent inherits it
    with Rig(work, broker, devices=4, interval="100ms") as rig:
        assert rig.agent.proc is not None
        pid = rig.agent.proc.pid
        sampler = (
            memsample.Sampler(pid, samples / "proc.jsonl", memsample.period()) if samples else None
        )
        if sampler is not None:
            sampler.start()
        time.sleep(30)  # warm up: imports, caches, SQLite page cache
        rss0, fds0 = rss_kb(pid), fd_count(pid)
        faults = _soak_faults(rig, broker)
        while time.monotonic() - started < seconds:
            name = rng.choice(sorted(faults))
            counts[name] = counts.get(name, 0) + 1
            faults[name](rng)
            time.sleep(rng.uniform(5, 20))
        wait_status(rig.agent, lambda d: d["broker"]["connected"], 60)
        time.sleep(10)
        rss1, fds1 = rss_kb(pid), fd_count(pid)
        if sampler is not None:
            sampler.stop()
        hours = max((time.monotonic() - started) / 3600, 1e-9)
        extra = {"rss_kb_start": rss0, "rss_kb_end": rss1,
                 "rss_growth_kb_per_hour": round((rss1 - rss0) / hours),
                 "fds_start": fds0, "fds_end": fds1}  # fmt: skip
        code = _figures(rig, started, counts, extra)
    if samples is not None:  # after the delivery figures: nothing here may hide them
        print(json.dumps(memsample.summary(samples), indent=1))
    return code


def run_backlog(work: Path, broker: Mosquitto, rows: int) -> int:
    """F9 at full size: ``rows`` batches on disk, then start and drain."""
    started = time.monotonic()
    with Rig(work, broker, devices=1, interval="200ms", start_agent=False,
             buffer={"max_size": "512MB"}) as rig:  # fmt: skip
        prefill(rig.agent.buffer, rows, max_bytes=512_000_000)
        rig.agent.start()
        t0 = time.monotonic()
        rig.checker.wait_for_count(1, 60)
        first = time.monotonic() - t0
        assert rig.agent.proc is not None
        rss0 = rss_kb(rig.agent.proc.pid)
        wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 50, 3600)
        extra = {"first_publish_s": round(first, 2), "rss_kb_start": rss0,
                 "rss_kb_end": rss_kb(rig.agent.proc.pid), "backlog": rows,
                 "drain_s": round(time.monotonic() - t0, 1)}  # fmt: skip
        return _figures(rig, started, {"backlog_rows": rows}, extra)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run one long fault run."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults.longrun",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--kills", type=int, help="F6: this many SIGKILLs")
    what.add_argument("--soak", type=float, metavar="SECONDS", help="F15: random faults")
    what.add_argument("--backlog", type=int, metavar="ROWS", help="F9: backlog size")
    what.add_argument("--summary", type=Path, metavar="DIR", help="summarise soak samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--samples", type=Path, metavar="DIR",
                        help="soak: sample the agent's memory each minute into DIR")  # fmt: skip
    parser.add_argument("--arena-max", type=int, metavar="N",
                        help="soak: run the agent with MALLOC_ARENA_MAX=N")  # fmt: skip
    args = parser.parse_args(argv)
    if args.arena_max is not None:  # read by the agent's glibc at start, not by this process
        os.environ["MALLOC_ARENA_MAX"] = str(args.arena_max)
    if args.summary is not None:
        print(json.dumps(memsample.summary(args.summary), indent=1))
        return 0
    with tempfile.TemporaryDirectory(prefix="edge-longrun-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker", persistence=True)
        broker.start()
        try:
            if args.kills is not None:
                return run_kills(work, broker, args.kills, args.seed)
            if args.soak is not None:
                return run_soak(work, broker, args.soak, args.seed, args.samples)
            return run_backlog(work, broker, args.backlog)
        finally:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
