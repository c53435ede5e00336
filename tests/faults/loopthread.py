"""An asyncio loop on a background thread, so synchronous tests can host async servers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Run coroutines and hold async context managers on a private loop thread.

    ``close()`` leaves every entered context (last in, first out) and stops the loop.
    """

    def __init__(self, name: str = "fault-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._contexts: list[AbstractAsyncContextManager[Any]] = []
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the loop and return its result (raise on timeout)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        """Call a plain function on the loop thread and return its result."""

        async def wrapper() -> Any:
            return fn(*args)

        return self.run(wrapper())

    def enter(self, context: AbstractAsyncContextManager[T], timeout: float = 60.0) -> T:
        """``async with context`` on the loop, held until :meth:`close`."""
        value = self.run(context.__aenter__(), timeout)
        self._contexts.append(context)
        return value

    def close(self) -> None:
        """Exit every entered context, then stop the loop and join the thread."""
        while self._contexts:
            context = self._contexts.pop()
            with contextlib.suppress(Exception):  # best effort at teardown
                self.run(context.__aexit__(None, None, None), 60)
        if self.loop.is_running():
            with contextlib.suppress(Exception):
                self.run(_cancel_leftovers(), 20)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(20)


async def _cancel_leftovers() -> None:
    """Cancel tasks that servers left behind, so the loop stops without 'destroyed' noise."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
