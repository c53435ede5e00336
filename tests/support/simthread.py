"""Simulators on their own event loop in a background thread, for synchronous tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self, TypeVar

from simulators.run import RunningSimulators, SimDevice, run_simulators

T = TypeVar("T")


class SimThread:
    """``with SimThread([...]) as sims:`` serves the devices until the block ends."""

    def __init__(self, specs: Sequence[SimDevice], step_interval: float | None = 0.1) -> None:
        self.specs = list(specs)
        self.step_interval = step_interval
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.sims: RunningSimulators | None = None
        self._thread = threading.Thread(target=self._main, name="simulators", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # handed to the test thread
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with run_simulators(self.specs, step_interval=self.step_interval) as sims:
            self.sims = sims
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Callable[[RunningSimulators], T]) -> T:
        """Run ``fn(sims)`` on the simulators' loop (thread-safe) and return its result."""

        async def wrapper() -> T:
            assert self.sims is not None
            return fn(self.sims)

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)

    @property
    def ports(self) -> dict[str, int]:
        """Device name -> bound TCP port."""
        assert self.sims is not None
        return self.sims.ports

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(20) or self._error is not None:
            raise RuntimeError(f"simulators did not start: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
