"""Background tasks: stopping those that talk to devices, and a service's set of them."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any


async def cancel_until_done(tasks: Iterable[asyncio.Task[None]], recheck: float = 1.0) -> None:
    """Cancel the tasks and wait until every one has ended.

    Python 3.11's ``asyncio.wait_for`` (used inside pymodbus for every request)
    drops a cancellation that lands just as the answer arrives, so one cancel
    may leave a polling loop running: cancel again until each task is done.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recheck)


class BackgroundTasks:
    """The long-running tasks of one service, started by name and stopped together.

    A service keeps one of these instead of its own task attributes, so that
    every service stops the same way: cancelled until done, then forgotten.
    """

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``work`` in the background until :meth:`stop`."""
        self._tasks = [t for t in self._tasks if not t.done()]
        task = asyncio.create_task(work, name=name)
        self._tasks.append(task)
        return task

    @property
    def running(self) -> bool:
        """Whether any of the tasks is still running."""
        return any(not t.done() for t in self._tasks)

    async def stop(self) -> None:
        """Cancel every task and wait until each has ended."""
        await cancel_until_done(self._tasks)
        self._tasks = []
