"""DL/T 645 poll time per meter at 2400 baud, against its wire time.

python -m bench.dlt645_line [--polls 5] [--baud 2400]

The simulated meter sits behind a pty, which has no baud rate of its own, so
it holds each reply for the time both frames would take on the wire at
``--baud`` (11 bits a byte at 8E1) plus the standard's 20 ms turnaround. The
measured poll time minus that estimate is what the driver adds per exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import yaml

from agent.paths import SHIPPED_PROFILES
from drivers.dlt645 import SPEC
from drivers.dlt645.busload import poll_times
from drivers.dlt645.driver import Dlt645Driver
from simulators.dlt645_meter import Meter, MeterLine, PtyMeters

PROFILE = SHIPPED_PROFILES / "chint-dtsu666-dlt645.yaml"


async def measure(polls: int, baud: int) -> None:
    """Poll the profile's fast group ``polls`` times; print measured and wire time."""
    profile = yaml.safe_load(PROFILE.read_text(encoding="utf-8"))
    tags = {n: t for n, t in profile["tags"].items() if t.get("group") == "fast"}
    line = MeterLine([Meter("000000000161")], reply_preamble=4, baud=baud)
    async with PtyMeters(line) as sim:
        options = SPEC.parse(
            {
                "connection": {"dlt645": {"port": sim.path, "baud": baud}},
                "protocol": {"address": "000000000161"},
                "tags": tags,
            }
        )
        wire = poll_times(options)["fast"]
        driver = SPEC.create("bench-meter", options)
        assert isinstance(driver, Dlt645Driver)
        took = []
        async with driver:
            for _ in range(polls):
                started = time.perf_counter()
                reading = await driver.read("fast")
                took.append(time.perf_counter() - started)
                assert not reading.errors, reading.errors
    per = statistics.median(took)
    print(f"{len(tags)} tags (one exchange each) at {baud} baud 8E1, {polls} polls")
    print(f"wire time per poll (estimate): {wire * 1000:.0f} ms")
    print(f"measured poll time (median):   {per * 1000:.0f} ms")
    print(f"driver overhead per exchange:  {(per - wire) / len(tags) * 1000:.1f} ms")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.dlt645_line")
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--baud", type=int, default=2400)
    args = parser.parse_args()
    asyncio.run(measure(args.polls, args.baud))


if __name__ == "__main__":
    main()
