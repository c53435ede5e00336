"""``python -m bench``: run the scenarios, print the table last, write bench/results/<time>.json.

``--quick`` is the CI smoke (a few seconds): two devices, a short window, one
status call; it fails (exit 1) only if nothing flowed or a seq went missing.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.harness import Load
from bench.report import Runs, rows, table, write_json
from bench.scenarios import (
    Backlog,
    Settings,
    backlog,
    cpu_count,
    prepare_backlog,
    rtu_bus,
    steady,
)
from tests.support.agentproc import ROOT

RESULTS = ROOT / "bench" / "results"
ALL = ("S1", "S2", "S3", "S4", "S5", "S6", "S7")
S1_LOAD = Load(devices=10, tags=100, interval=1.0)
S2_LOAD = Load(devices=10, tags=1200, interval=1.0)
S3_LOAD = Load(devices=10, tags=2400, interval=0.1)
S7_LOAD = Load(devices=4, tags=100, interval=1.0, rtu=True, baud=19200)
S7_DEAD_LOAD = Load(devices=4, tags=100, interval=1.0, rtu=True, baud=19200, dead_units=1)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run_once(run: int, wanted: set[str], settings: Settings, work: Path,
              prepared: Backlog | None, runs: Runs) -> None:  # fmt: skip
    if wanted & {"S1", "S5", "S6"}:
        _say(f"run {run}: S1 (+S5 start-up, S6 status) 10 x 100 tags at 1 s")
        figs = steady(work / f"s1-{run}", S1_LOAD, settings, status_calls=settings.status_calls)
        runs["S1"].append(figs)
        runs["S5"].append({"startup_s": figs["startup_s"]})
        runs["S6"].append({k: figs[k] for k in ("status_ms", "status_offline_ms")})
    if "S2" in wanted:
        _say(f"run {run}: S2 10 x 1,200 tags at 1 s")
        runs["S2"].append(steady(work / f"s2-{run}", S2_LOAD, settings))
    if "S3" in wanted:
        _say(f"run {run}: S3 10 x 2,400 tags at 100 ms (offered {S3_LOAD.values_per_s:,.0f}/s)")
        runs["S3"].append(steady(work / f"s3-{run}", S3_LOAD, settings))
    if "S4" in wanted and prepared is not None:
        _say(f"run {run}: S4 drain a backlog of {prepared.last_seq:,} batches")
        runs["S4"].append(backlog(work / f"s4-{run}", prepared, settings))
    if "S7" in wanted:
        _say(f"run {run}: S7 RTU bus, 4 units x 100 tags at {S7_LOAD.baud} baud")
        runs["S7"].append(rtu_bus(work / f"s7-{run}", S7_LOAD, settings))
        _say(f"run {run}: S7 with a dead unit on the bus (timeout 200 ms)")
        runs["S7d"].append(rtu_bus(work / f"s7d-{run}", S7_DEAD_LOAD, settings))


def _quick(work: Path, runs: Runs) -> bool:
    _say("quick: 2 devices x 100 tags at 500 ms, 2 s window (smoke, not a measurement)")
    figs = steady(work / "quick", Load(2, 100, 0.5), Settings(1.0, 2.0, 1), status_calls=1)
    runs["S1"].append(figs)
    runs["S5"].append({"startup_s": figs["startup_s"]})
    runs["S6"].append({k: figs[k] for k in ("status_ms", "status_offline_ms")})
    return figs["values_per_s"] > 0 and figs["lost"] == 0 and not math.isnan(figs["startup_s"])


def main(argv: list[str] | None = None) -> int:
    """Entry point; the exit code is 1 only when ``--quick`` saw nothing flow or a loss."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI smoke: a few seconds")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--only", default=",".join(ALL), help="e.g. S1,S3 (default: all)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before a window")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of a window")
    parser.add_argument("--outage", type=int, default=3600, help="S4 outage seconds at 1,000/s")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    runs: Runs = defaultdict(list)
    ok = True
    started = time.monotonic()
    try:
        if args.quick:
            ok = _quick(work, runs)
        else:
            wanted = {s.strip().upper() for s in args.only.split(",")}
            settings = Settings(args.warmup, args.duration)
            prepared = None
            if "S4" in wanted:
                _say(f"S4: writing a backlog of {args.outage} s x 1,000 values/s")
                prepared = prepare_backlog(work, args.outage)
            for run in range(1, args.runs + 1):
                _run_once(run, wanted, settings, work, prepared, runs)
    finally:
        if args.keep:
            _say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = rows(runs)
    meta = {"quick": args.quick, "runs_per_scenario": 1 if args.quick else args.runs,
            "cpus": cpu_count(), "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    path = write_json(RESULTS, dict(runs), summary, meta)
    if args.quick:
        print("quick mode: smoke only, figures are not comparable with the targets")
    print(table(summary, int(meta["runs_per_scenario"])))
    print(f"results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
