"""Ordered, durable delivery of payloads to a server through a disk spool.

Every payload goes into the spool (:class:`DiskSpool`) before its first send
and leaves it only when the server has taken it, so nothing accepted waits in
memory alone. One task sends the oldest records first, several at a time when
a backlog has built up, and retries with backoff capped at ``retry_max``
(2 s by default): a server that comes back is noticed within that time, and
the backlog drains before anything newer.

The task survives whatever its transport or a payload raises: a payload the
server refuses for good is set aside; an unexpected error is retried a few
times and then the payload is set aside; and if the task dies anyway, it is
restarted and the restart counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from controller.telemetry.spool import DiskSpool, SpoolItem, SpoolRecord

log = logging.getLogger(__name__)
#: An unexpected error on the same payload this many times sets it aside.
UNEXPECTED_ATTEMPTS = 3
#: Seconds before a delivery task that died is started again.
RESTART_DELAY = 1.0


class DeliveryError(Exception):
    """The server could not take a payload now; try again later."""


class RejectedPayload(Exception):
    """The server refused a payload for good (malformed): retrying cannot help."""


class PayloadTransport(Protocol):
    """Something that sends one payload to a server, or raises."""

    name: str

    async def send(self, payload: bytes) -> None:
        """Deliver ``payload``; DeliveryError to retry later, RejectedPayload never to retry."""
        ...


@dataclass
class DeliveryStats:
    """Counters of one delivery."""

    delivered: int = 0
    delivered_points: int = 0
    delivered_bytes: int = 0
    failures: int = 0
    rejected: int = 0
    restarts: int = 0
    last_error: str = ""
    last_delivery: float | None = None
    server_up: bool = True


class SpooledDelivery:
    """Delivers payloads in order through ``transport``; nothing accepted is lost."""

    def __init__(
        self,
        transport: PayloadTransport,
        spool: DiskSpool,
        retry_initial: float = 0.25,
        retry_max: float = 2.0,
        max_points: int = 5000,
        coalesce: bool = True,
    ) -> None:
        self.transport = transport
        self.spool = spool
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        #: Records sent in one go add up to at most this many points.
        self.max_points = max_points
        #: Whether payloads may be concatenated into one send (line-oriented payloads).
        self.coalesce = coalesce
        self.stats = DeliveryStats()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_now = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._retry_delay = retry_initial
        self._single_until = -1
        self._unexpected: dict[int, int] = {}

    async def start(self) -> None:
        """Open the spool (an earlier run's records are sent first) and start sending."""
        await self.spool.open()
        self._start_task()
        if len(self.spool):
            self._idle.clear()
            self._wake.set()

    def _start_task(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"deliver:{self.transport.name}")
        self._task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled():
            return
        self.stats.restarts += 1
        log.error(
            "%s delivery task died (%r); restarting it in %.0f s",
            self.transport.name,
            task.exception(),
            RESTART_DELAY,
            exc_info=task.exception(),
        )
        # Not at once: a cause that persists (a broken disk) must not spin the event loop.
        asyncio.get_running_loop().call_later(RESTART_DELAY, self._restart)

    def _restart(self) -> None:
        if not self._stopping and not self.task_alive:
            self._start_task()

    @property
    def task_alive(self) -> bool:
        """Whether the sending task runs."""
        return self._task is not None and not self._task.done()

    async def submit(self, items: Sequence[SpoolItem]) -> bool:
        """Spool a batch of payloads (durably) for delivery; False if a full spool refused it."""
        if not any(i.payload for i in items):
            return True
        try:
            accepted = await self.spool.append(items)
        except Exception as exc:
            # The spool's own disk failed: the batch is lost for this sink, and said so.
            self.spool.could_not_keep(items, exc)
            return False
        self._idle.clear()
        self._wake.set()
        if self.spool.stats.full and not self.stats.server_up:
            # Room matters now: try the server at once instead of after the backoff.
            self._retry_now.set()
        return accepted

    @property
    def pending(self) -> int:
        """Records not yet delivered."""
        return len(self.spool)

    async def _run(self) -> None:
        while True:
            if not len(self.spool):
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            single = not self.coalesce or (self.spool.first_seq or 0) <= self._single_until
            records = await self.spool.oldest(1 if single else self.max_points)
            if records:
                await self._send(records)

    async def _send(self, records: list[SpoolRecord]) -> None:
        payload = b"".join(r.payload for r in records)
        try:
            await self.transport.send(payload)
        except RejectedPayload as exc:
            await self._give_up(records, f"{self.transport.name} refused it: {exc}")
            return
        except DeliveryError as exc:
            await self._failed(str(exc))
            return
        except Exception as exc:
            await self._unexpected_error(records, exc)
            return
        self._delivered(records, payload)
        await self.spool.ack(records)

    async def _unexpected_error(self, records: list[SpoolRecord], exc: Exception) -> None:
        seq = records[0].seq
        attempts = self._unexpected.get(seq, 0) + 1
        self._unexpected[seq] = attempts
        log.error(
            "%s: unexpected error sending (attempt %d of %d)",
            self.transport.name,
            attempts,
            UNEXPECTED_ATTEMPTS,
            exc_info=exc,
        )
        if attempts < UNEXPECTED_ATTEMPTS:
            await self._failed(f"{type(exc).__name__}: {exc}")
            return
        del self._unexpected[seq]
        await self._give_up(records, f"sending raised {type(exc).__name__}: {exc}")

    async def _give_up(self, records: list[SpoolRecord], reason: str) -> None:
        """Set a record aside for good; of several sent together, find which one first."""
        if len(records) > 1:
            # Send them one by one, so that only the bad one is set aside.
            self._single_until = records[-1].seq
            return
        self.stats.rejected += 1
        await self.spool.set_aside(records, reason)

    def _delivered(self, records: list[SpoolRecord], payload: bytes) -> None:
        if not self.stats.server_up:
            log.warning("%s is back: sending spooled data", self.transport.name)
        self.stats.server_up = True
        self.stats.delivered += len(records)
        self.stats.delivered_points += sum(r.points for r in records)
        self.stats.delivered_bytes += len(payload)
        self.stats.last_delivery = time.time()
        self._retry_delay = self.retry_initial
        for r in records:
            self._unexpected.pop(r.seq, None)

    async def _failed(self, error: str) -> None:
        self.stats.failures += 1
        self.stats.last_error = error
        if self.stats.server_up:
            log.warning(
                "%s unreachable (%s): data waits in %s",
                self.transport.name,
                error,
                self.spool.folder,
            )
        self.stats.server_up = False
        delay = self._retry_delay * random.uniform(0.5, 1.0)
        self._retry_delay = min(self._retry_delay * 2, self.retry_max)
        self._retry_now.clear()
        # A shutdown or a full spool cuts the wait short.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._retry_now.wait(), delay)

    async def drain(self, within: float) -> bool:
        """Wait until everything is delivered or ``within`` seconds pass; True if all went."""
        if self.pending == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True

    async def close(self, grace: float = 2.0) -> None:
        """Deliver what can go within ``grace`` seconds; the rest stays spooled for next time."""
        self._retry_now.set()
        await self.drain(grace)
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.spool.close()
