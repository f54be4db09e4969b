"""Alarm notices and poll batches to the case bridge in arrival order, off the rules' path.

Opening a sensor case takes several database transactions and an evidence
query. In a storm that raises hundreds of alarms in one batch (the megacity
benchmark's fault burst opens 500 cases), doing that inside the rules would
hold the next batches, and so the next alarms, for seconds. Queued here, an
alarm is stored and published at once and its case follows. Notices and
batches share one queue, so the bridge still sees a batch's alarms before it
counts that batch's polls toward verification.
"""

from __future__ import annotations

import asyncio
import logging

from controller.cases.alarm_bridge import AlarmCaseBridge
from drivers.readings import ReadingBatch
from rules.alarm_model import AlarmNotice

log = logging.getLogger(__name__)


class CaseFeed:
    """One queue and one task feeding an :class:`AlarmCaseBridge`."""

    def __init__(self, bridge: AlarmCaseBridge) -> None:
        self.bridge = bridge
        self._queue: asyncio.Queue[AlarmNotice | ReadingBatch] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def on_alarm(self, notice: AlarmNotice) -> None:
        """Alarm subscriber: queue the notice."""
        self._queue.put_nowait(notice)

    async def on_batch(self, batch: ReadingBatch) -> None:
        """Poller subscriber: queue the batch (for verification counts)."""
        if len(batch):
            self._queue.put_nowait(batch)

    @property
    def backlog(self) -> int:
        """Notices and batches not yet handed to the bridge."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start feeding the bridge."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cases:feed")

    async def settled(self) -> None:
        """Return once everything queued so far has been handled."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, AlarmNotice):
                    await self.bridge.on_alarm(item)
                else:
                    await self.bridge.on_batch(item)
            except Exception:
                # The bridge keeps what the database did not take; anything else is
                # a notice that makes no case (logged), not a reason to stop feeding.
                log.exception("case feed: %s not handled", type(item).__name__)
            finally:
                self._queue.task_done()

    async def stop(self, grace: float = 10.0) -> None:
        """Hand on what is queued (within ``grace`` seconds), then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.settled(), grace)
        except TimeoutError:
            log.warning("case feed: %d notices and batches not handled at stop", self.backlog)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
