"""Ordered delivery of payloads to a server, spooling to disk while it is away.

The invariant that keeps order: either the disk spool is empty or the memory
queue is. While the server answers, payloads go from memory. When a send
fails, that payload and everything queued behind it move to the spool, new
payloads follow them there, and the spool is replayed oldest first, with
backoff, until it is empty again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from controller.telemetry.spool import DiskSpool

log = logging.getLogger(__name__)


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
    delivered_bytes: int = 0
    failures: int = 0
    rejected: int = 0
    last_error: str = ""
    last_delivery: float | None = None
    server_up: bool = True


class SpooledDelivery:
    """Delivers payloads in order through ``transport``; nothing accepted is lost."""

    def __init__(
        self,
        transport: PayloadTransport,
        spool: DiskSpool,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        memory_limit: int = 64,
    ) -> None:
        self.transport = transport
        self.spool = spool
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.memory_limit = memory_limit
        self.stats = DeliveryStats()
        self._queue: collections.deque[bytes] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_now = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retry_delay = retry_initial

    async def start(self) -> None:
        """Open the spool (replaying an earlier run's payloads first) and start sending."""
        await self.spool.open()
        self._task = asyncio.create_task(self._run(), name=f"deliver:{self.transport.name}")
        if len(self.spool):
            self._idle.clear()
            self._wake.set()

    async def submit(self, payload: bytes) -> bool:
        """Accept a payload for delivery; False only if the spool is full and it was refused."""
        if not payload:
            return True
        self._idle.clear()
        if len(self.spool) or len(self._queue) >= self.memory_limit:
            await self._spill_queue()
            accepted = await self.spool.append(payload)
        else:
            self._queue.append(payload)
            accepted = True
        self._wake.set()
        return accepted

    @property
    def pending(self) -> int:
        """Payloads not yet delivered (memory and disk)."""
        return len(self._queue) + len(self.spool)

    async def _spill_queue(self) -> None:
        while self._queue:
            if not await self.spool.append(self._queue[0]):
                return
            self._queue.popleft()

    async def _run(self) -> None:
        while True:
            if not self._queue and not len(self.spool):
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            from_spool = len(self.spool) > 0
            payload = await self.spool.peek() if from_spool else self._queue[0]
            assert payload is not None
            try:
                await self.transport.send(payload)
            except RejectedPayload as exc:
                self.stats.rejected += 1
                await self._keep_rejected(payload, str(exc))
            except DeliveryError as exc:
                await self._failed(str(exc), from_spool)
                continue
            else:
                self._delivered(payload)
            if from_spool:
                await self.spool.pop()
            else:
                self._queue.popleft()

    def _delivered(self, payload: bytes) -> None:
        if not self.stats.server_up:
            log.warning("%s is back: replaying spooled data", self.transport.name)
        self.stats.server_up = True
        self.stats.delivered += 1
        self.stats.delivered_bytes += len(payload)
        self.stats.last_delivery = time.time()
        self._retry_delay = self.retry_initial

    async def _failed(self, error: str, from_spool: bool) -> None:
        self.stats.failures += 1
        self.stats.last_error = error
        if self.stats.server_up:
            log.warning(
                "%s unreachable (%s): spooling to %s", self.transport.name, error, self.spool.folder
            )
        self.stats.server_up = False
        if not from_spool:
            await self._spill_queue()
        delay = self._retry_delay * random.uniform(0.5, 1.0)
        self._retry_delay = min(self._retry_delay * 2, self.retry_max)
        self._retry_now.clear()
        # A shutdown cuts the wait short: one more try before spooling for the next run.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._retry_now.wait(), delay)

    async def _keep_rejected(self, payload: bytes, reason: str) -> None:
        """A refused payload is set aside with its reason, not silently dropped."""
        folder = self.spool.folder / "rejected"
        stamp = f"{time.time():.6f}"

        def write() -> Path:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{stamp}.reason.txt").write_text(reason, encoding="utf-8")
            path = folder / f"{stamp}.payload"
            path.write_bytes(payload)
            return path

        path = await asyncio.to_thread(write)
        log.error(
            "%s refused a payload for good (%s); kept in %s", self.transport.name, reason, path
        )

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
        """Deliver what can go within ``grace`` seconds; spool the rest for the next start."""
        self._retry_now.set()
        await self.drain(grace)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._spill_queue()
