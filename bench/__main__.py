"""``python -m bench``: run the scenarios, print the table last, write bench/results/<time>.json.

``--quick`` is the CI smoke (a few seconds): two devices, a short window, one
status call, then the two-destination scenarios at the same small scale; it
fails (exit 1) only if nothing flowed or a seq went missing.
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

from bench.encode_cost import encode_cost
from bench.harness import Load
from bench.report import Runs, rows, table, write_json
from bench.scenarios import (
    Backlog,
    Settings,
    backlog,
    cpu_count,
    drain_per_destination,
    one_down,
    prepare_backlog,
    recovery,
    rtu_bus,
    steady,
    two_destinations,
)
from bench.sweep import QUICK_SIZES, SIZES, tag_sweep
from tests.support.agentproc import ROOT

RESULTS = ROOT / "bench" / "results"
ALL = tuple(f"S{n}" for n in range(1, 16))
S1_LOAD = Load(devices=10, tags=100, interval=1.0)
S2_LOAD = Load(devices=10, tags=1200, interval=1.0)
S12_LOAD = Load(devices=10, tags=100, interval=1.0, facts=True)
S13_LOAD = Load(devices=10, tags=1200, interval=1.0, facts=True)
S3_LOAD = Load(devices=10, tags=2400, interval=0.1)
S7_LOAD = Load(devices=4, tags=100, interval=1.0, rtu=True, baud=19200)
S7_DEAD_LOAD = Load(devices=4, tags=100, interval=1.0, rtu=True, baud=19200, dead_units=1)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run_once(run: int, wanted: set[str], settings: Settings, work: Path,
              prepared: Backlog | None, runs: Runs, sp_outage: float,
              outage: float = 30.0) -> None:  # fmt: skip
    if wanted & {"S1", "S5", "S6", "S8"}:
        _say(f"run {run}: S1 (+S5 start-up, S6 status) 10 x 100 tags at 1 s")
        figs = steady(work / f"s1-{run}", S1_LOAD, settings, status_calls=settings.status_calls)
        runs["S1"].append(figs)
        runs["S5"].append({"startup_s": figs["startup_s"]})
        runs["S6"].append({k: figs[k] for k in ("status_ms", "status_offline_ms")})
    if "S12" in wanted:
        _say(f"run {run}: S12 S1 with every device a machine (state, 2 counters, OEE)")
        plain = runs["S1"][-1] if runs["S1"] else steady(work / f"s12p-{run}", S1_LOAD, settings)
        runs["S12"].append(_vs_plain(steady(work / f"s12-{run}", S12_LOAD, settings), plain))
    if "S2" in wanted or "S13" in wanted:
        _say(f"run {run}: S2 10 x 1,200 tags at 1 s")
        runs["S2"].append(steady(work / f"s2-{run}", S2_LOAD, settings))
    if "S13" in wanted:
        _say(f"run {run}: S13 S2 with every device a machine (state, 2 counters, OEE)")
        figs = steady(work / f"s13-{run}", S13_LOAD, settings)
        runs["S13"].append(_vs_plain(figs, runs["S2"][-1]))
    if "S3" in wanted:
        _say(f"run {run}: S3 10 x 2,400 tags at 100 ms (offered {S3_LOAD.values_per_s:,.0f}/s)")
        runs["S3"].append(steady(work / f"s3-{run}", S3_LOAD, settings))
    if "S4" in wanted and prepared is not None:
        _say(f"run {run}: S4 drain a backlog of {prepared.last_seq:,} batches")
        runs["S4"].append(backlog(work / f"s4-{run}", prepared, settings))
    if "S15" in wanted:
        _say(f"run {run}: S15 S1 load, the broker down for {outage:g} s, first data after")
        runs["S15"].append(recovery(work / f"s15-{run}", S1_LOAD, settings, outage))
    if "S7" in wanted:
        _say(f"run {run}: S7 RTU bus, 4 units x 100 tags at {S7_LOAD.baud} baud")
        runs["S7"].append(rtu_bus(work / f"s7-{run}", S7_LOAD, settings))
        _say(f"run {run}: S7 with a dead unit on the bus (timeout 200 ms)")
        runs["S7d"].append(rtu_bus(work / f"s7d-{run}", S7_DEAD_LOAD, settings))
    if "S14" in wanted:
        _say(f"run {run}: S14 tag-count sweep: no device, then 10 x 100, 10 x 1,200, 20 x 12,000")
        runs["S14"].append(tag_sweep(work / f"s14-{run}", settings.warmup_s, SIZES))
    _two_way(run, wanted, settings, work, prepared, runs, sp_outage)


def _two_way(run: int, wanted: set[str], settings: Settings, work: Path,
             prepared: Backlog | None, runs: Runs, sp_outage: float) -> None:  # fmt: skip
    """S8-S10: edge-json and Sparkplug B at once (S10 in the first run only: it is long)."""
    if "S8" in wanted:
        _say(f"run {run}: S8 S1 load to edge-json and Sparkplug B at once")
        runs["S8"].append(_with_single(two_destinations(work / f"s8-{run}", S1_LOAD, settings),
                                       runs["S1"][-1]))  # fmt: skip
    if "S9" in wanted and prepared is not None:
        _say(f"run {run}: S9 drain {prepared.last_seq:,} batches: edge-json, Sparkplug, both")
        runs["S9"].append(drain_per_destination(work / f"s9-{run}", prepared, settings))
    if "S10" in wanted and run == 1:
        _say(f"run {run}: S10 S1 load, the Sparkplug broker down for {sp_outage:g} s")
        runs["S10"].append(one_down(work / f"s10-{run}", S1_LOAD, settings, sp_outage))
    if "S11" in wanted and run == 1:
        _say("S11 Sparkplug B encode cost (in this process)")
        runs["S11"].append(encode_cost())


def _with_single(figs: dict[str, float], single: dict[str, float]) -> dict[str, float]:
    """S8's figures with the CPU of the S1 run just before (one destination) beside them."""
    return figs | {"single_cpu_pct": single["cpu_pct"],
                   "cpu_vs_single": figs["cpu_pct"] / single["cpu_pct"]}  # fmt: skip


def _vs_plain(figs: dict[str, float], plain: dict[str, float]) -> dict[str, float]:
    """A facts run's figures with its CPU beside that of the same load without facts."""
    return figs | {
        "plain_cpu_pct": plain["cpu_pct"],
        "cpu_vs_plain": figs["cpu_pct"] / plain["cpu_pct"],
    }


def _quick(work: Path, runs: Runs) -> bool:
    _say("quick: 2 devices x 100 tags at 500 ms, 2 s window (smoke, not a measurement)")
    figs = steady(work / "quick", Load(2, 100, 0.5), Settings(1.0, 2.0, 1), status_calls=1)
    runs["S1"].append(figs)
    runs["S5"].append({"startup_s": figs["startup_s"]})
    runs["S6"].append({k: figs[k] for k in ("status_ms", "status_offline_ms")})
    ok = figs["values_per_s"] > 0 and figs["lost"] == 0 and not math.isnan(figs["startup_s"])
    _say("quick: S12 the same load with every device a machine")
    facts = steady(work / "quick-s12", Load(2, 100, 0.5, facts=True), Settings(1.0, 2.0, 1))
    runs["S12"].append(_vs_plain(facts, figs))
    ok = ok and facts["values_per_s"] > 0 and facts["lost"] == 0
    _say("quick: S14 the tag-count sweep's smallest size (10 x 100) and the empty agent")
    sweep = tag_sweep(work / "quick-s14", 1.0, QUICK_SIZES)
    runs["S14"].append(sweep)
    ok = ok and not math.isnan(sweep["10x100_startup_s"])
    return _quick_two_way(work, runs, figs) and ok


def _quick_two_way(work: Path, runs: Runs, single: dict[str, float]) -> bool:
    load, settings = Load(2, 100, 0.5), Settings(1.0, 2.0, 1, drain_timeout_s=60)
    _say("quick: S8 the same load to edge-json and Sparkplug B at once")
    s8 = _with_single(two_destinations(work / "quick-s8", load, settings), single)
    runs["S8"].append(s8)
    _say("quick: S9 a 60 s backlog drained by edge-json, Sparkplug, both")
    s9 = drain_per_destination(work / "quick-s9", prepare_backlog(work, 60), settings)
    runs["S9"].append(s9)
    _say("quick: S10 the Sparkplug broker down for 3 s")
    s10 = one_down(work / "quick-s10", load, settings, 3.0)
    runs["S10"].append(s10)
    runs["S11"].append(encode_cost(batches=1000, repeats=1))
    _say("quick: S15 the edge-json broker down for 5 s, first data after")
    s15 = recovery(work / "quick-s15", load, settings, 5.0)
    runs["S15"].append(s15)
    flowed = [s8["json_values_per_s"], s8["sp_values_per_s"], s10.get("sp_missed_values", 0)]
    flowed += [v for k, v in s9.items() if k.endswith("_drain_values_per_s")]
    lost = [v for k, v in (s8 | s9 | s10).items() if k.endswith("lost")]
    back = not math.isnan(s10["catch_up_s"]) and not math.isnan(s15["first_data_after_s"])
    return all(v > 0 for v in flowed) and not any(lost) and back


def main(argv: list[str] | None = None) -> int:
    """Entry point; the exit code is 1 only when ``--quick`` saw nothing flow or a loss."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI smoke: a few seconds")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--only", default=",".join(ALL), help="e.g. S1,S3 (default: all)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before a window")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of a window")
    parser.add_argument("--outage", type=int, default=3600, help="S4 outage seconds at 1,000/s")
    parser.add_argument("--sp-outage", type=float, default=600.0,
                        help="S10: seconds the Sparkplug broker is down (default 600)")  # fmt: skip
    parser.add_argument("--recovery-outage", type=float, default=30.0,
                        help="S15: seconds the broker is down (default 30)")  # fmt: skip
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
            if wanted & {"S4", "S9"}:
                _say(f"S4: writing a backlog of {args.outage} s x 1,000 values/s")
                prepared = prepare_backlog(work, args.outage)
            for run in range(1, args.runs + 1):
                _run_once(
                    run,
                    wanted,
                    settings,
                    work,
                    prepared,
                    runs,
                    args.sp_outage,
                    args.recovery_outage,
                )
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
