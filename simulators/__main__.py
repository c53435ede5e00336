"""Run simulated Modbus equipment in the foreground until Ctrl-C or SIGTERM.

python -m simulators --vfd 2 --meter 1 --base-port 5020
python -m simulators --vfd 1 --rtu /tmp/ttyV0 --fault motor-1=slow:2
python -m simulators --vfd 1 --counter 1 --timeline shift.yaml --start 1767225600
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Mapping

from simulators.faults import Fault
from simulators.run import run_simulators, standard_specs
from simulators.timeline import Timeline, load_timelines, parse_start


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators", description="Run simulated Modbus equipment."
    )
    parser.add_argument(
        "--factory",
        action="store_true",
        help="the whole sample factory at the addresses of config/examples/garden-tools.yaml",
    )
    parser.add_argument("--vfd", type=int, default=2, help="VFD-driven motors (inovance-md500)")
    parser.add_argument("--meter", type=int, default=1, help="energy meters (eastron-sdm630)")
    parser.add_argument("--counter", type=int, default=0, help="counter devices (generic-counter)")
    parser.add_argument("--base-port", type=int, default=5020, help="first port; 0 = free ports")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--rtu", metavar="SERIAL", help="also serve one VFD in RTU on this port")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the behaviour models")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="DEVICE=MODE",
        help="start with a fault: slow:SECONDS, exception:CODE, silent, drop, garbage",
    )
    parser.add_argument(
        "--timeline",
        metavar="FILE",
        help="YAML/JSON file of scripted steps per device (devices: {name: {steps: [...]}})",
    )
    parser.add_argument(
        "--start",
        metavar="EPOCH",
        help="the timelines' start instant, epoch seconds (default: the file's, else now)",
    )
    return parser


async def _print_steps(timelines: Mapping[str, Timeline]) -> None:
    """One line per applied step, as it is applied (what a test or a person follows)."""
    shown = dict.fromkeys(timelines, 0)
    while True:
        for name, timeline in timelines.items():
            for applied in timeline.log[shown[name] :]:
                print(f"timeline {name}: {applied.describe()}", flush=True)
            shown[name] = len(timeline.log)
        await asyncio.sleep(0.1)


async def _run_factory(stop: asyncio.Event, timelines: Mapping[str, Timeline]) -> int:
    from simulators.factory import FIXED, run_factory

    async with run_factory(FIXED, timelines) as factory:
        for line in factory.lines:
            print(line, flush=True)
        await _until(stop, timelines)
    return 0


async def _until(stop: asyncio.Event, timelines: Mapping[str, Timeline]) -> None:
    printer = asyncio.create_task(_print_steps(timelines)) if timelines else None
    try:
        await stop.wait()
    finally:
        if printer is not None:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer


async def _run(args: argparse.Namespace) -> int:
    specs = standard_specs(
        args.vfd, args.meter, args.counter, args.base_port, args.host, args.rtu, args.seed
    )
    start = None if args.start is None else parse_start(args.start, "--start")
    timelines = load_timelines(args.timeline, start) if args.timeline else {}
    faults = {}
    for item in args.fault:
        name, _, mode = item.partition("=")
        faults[name] = Fault.parse(mode)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.factory:
        return await _run_factory(stop, timelines)
    unknown = sorted(set(timelines) - {spec.name for spec in specs})
    if unknown:
        names = ", ".join(spec.name for spec in specs)
        raise ValueError(f"{args.timeline}: no simulated device {unknown} (devices: {names})")
    specs = [dataclasses.replace(s, timeline=timelines.get(s.name)) for s in specs]
    async with run_simulators(specs) as sims:
        for name, fault in faults.items():
            sims[name].faults.set(fault)
        for line in sims.describe():
            print(line, flush=True)
        await _until(stop, timelines)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m simulators``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # asyncua warns that a plain demo server has no security policy: expected here.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    try:
        return asyncio.run(_run(args))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        print(f"simulators: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
