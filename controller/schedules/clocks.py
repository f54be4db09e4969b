"""Clocks for the schedule runner: the wall clock (through apscheduler) and a virtual one.

The runner only asks a clock two things: what time it is, and to wake it at
a given time. In production apscheduler's AsyncIOScheduler does the waking:
its date jobs fire by the wall clock (an NTP step or a suspended VM does not
stretch an 8-hour sleep the way a monotonic ``asyncio.sleep`` would) and a
late wake-up still runs (no misfire limit). Tests use :class:`VirtualClock`
to run a whole night in seconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger


class ScheduleClock(Protocol):
    """Time for the schedule runner."""

    def now(self) -> float:
        """Unix seconds."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return at (or soon after) ``when``."""
        ...

    def start(self) -> None:
        """Begin keeping time (inside the event loop)."""
        ...

    def stop(self) -> None:
        """Stop; sleepers are left to be cancelled by their owners."""
        ...


class WallClock:
    """The real time, with wake-ups as apscheduler date jobs."""

    def __init__(self) -> None:
        self._scheduler: AsyncIOScheduler | None = None

    def now(self) -> float:
        """Unix seconds."""
        return time.time()

    def start(self) -> None:
        """Start apscheduler on the running loop."""
        self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
        self._scheduler.start()

    def stop(self) -> None:
        """Shut apscheduler down without waiting for jobs (ours only set events)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    async def sleep_until(self, when: float) -> None:
        """Wait for an apscheduler date job at ``when``."""
        if when <= self.now():
            return
        if self._scheduler is None:
            raise RuntimeError("WallClock not started")
        woken = asyncio.Event()
        job = self._scheduler.add_job(
            woken.set,
            DateTrigger(run_date=datetime.fromtimestamp(when, tz=UTC)),
            misfire_grace_time=None,
        )
        try:
            await woken.wait()
        finally:
            if not woken.is_set():
                job.remove()


class VirtualClock:
    """Time that moves only when a test says so: a night in seconds.

    ``run_until(t)`` wakes sleepers in time order, each time waiting until
    somebody sleeps again (the runner has finished that step's commands).
    """

    def __init__(self, start: float) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._slept = asyncio.Event()

    def now(self) -> float:
        """The virtual time."""
        return self._now

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

    async def sleep_until(self, when: float) -> None:
        """Wait until the test moves time to ``when``."""
        if when <= self._now:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._order), future))
        self._slept.set()
        await future

    async def settle(self, limit: float = 30.0) -> None:
        """Wait (in real time) until some task sleeps on this clock."""
        await asyncio.wait_for(self._slept.wait(), limit)

    async def run_until(self, end: float, limit: float = 60.0) -> None:
        """Move time forward to ``end``, waking each sleeper at its time."""
        while True:
            await self.settle(limit)
            self._sleepers = [s for s in self._sleepers if not s[2].done()]
            heapq.heapify(self._sleepers)
            if not self._sleepers or self._sleepers[0][0] > end:
                break
            when, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            self._slept.clear()
            future.set_result(None)
        self._now = max(self._now, end)
