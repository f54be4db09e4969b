"""A lock whose waiters are served by priority: commands go before polls.

An operator who switches a circuit should not wait behind a queue of routine
polls on the same bus. ``asyncio.Lock`` serves waiters first come, first
served; this one serves the lowest priority number first and keeps arrival
order within one priority.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import IntEnum


class Priority(IntEnum):
    """Who waits for a link; lower goes first."""

    COMMAND = 0
    POLL = 10


class PriorityLock:
    """Mutual exclusion with waiters ordered by (priority, arrival)."""

    def __init__(self) -> None:
        self._locked = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    def locked(self) -> bool:
        """Whether someone holds the lock."""
        return self._locked

    @property
    def waiting(self) -> int:
        """Waiters still queued (cancelled ones may linger until the next release)."""
        return sum(1 for *_, future in self._waiters if not future.done())

    async def acquire(self, priority: int = Priority.POLL) -> None:
        """Wait for the lock."""
        if not self._locked:
            self._locked = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._arrivals), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # The lock was handed over just as the waiter was cancelled: pass it on.
                self.release()
            raise

    def release(self) -> None:
        """Hand the lock to the first waiter, or free it."""
        if not self._locked:
            raise RuntimeError("release of an unlocked PriorityLock")
        while self._waiters:
            *_, future = heapq.heappop(self._waiters)
            if not future.done():
                # Ownership passes directly: the lock stays locked for the waiter.
                future.set_result(None)
                return
        self._locked = False

    @asynccontextmanager
    async def hold(self, priority: int = Priority.POLL) -> AsyncIterator[None]:
        """``async with lock.hold(priority):`` holds the lock for the block."""
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
