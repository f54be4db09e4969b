"""The poller: one scheduling task per link, readings out in columnar batches.

It knows when to read, not how: each target is read by the pull reader its
protocol registered for the target's plan (``drivers.pull``).

Each link runs its own loop (a bus carries one conversation at a time), and
the loops run concurrently. Within a link, targets are polled when due. A
device that stops answering goes offline after a few failures and is then
polled at a growing multiple of its interval, so that it costs its own
timeout rarely and never starves its neighbours on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from controller.config import PollingConfig
from controller.registry import PollTarget, Registry
from drivers.errors import LinkError
from drivers.health import DeviceHealth
from drivers.modbus.links import ModbusLink
from drivers.priority_lock import Priority
from drivers.pull import reader_for
from drivers.readings import ReadingBatch
from drivers.tasks import cancel_until_done

log = logging.getLogger(__name__)

BatchHandler = Callable[[ReadingBatch], Awaitable[None]]


@dataclass
class PollOutcome:
    """What one poll of one target produced."""

    batch: ReadingBatch
    #: Requests that got an answer, and all requests sent.
    answered: int
    requests: int
    latency: float
    error: LinkError | None = None


@dataclass
class PollStats:
    """Counters over all polls, for the CLI, API and benchmarks."""

    polls: int = 0
    failed_polls: int = 0
    readings: int = 0
    latencies: list[float] = field(default_factory=list)

    def record(self, outcome: PollOutcome) -> None:
        """Count one poll."""
        self.polls += 1
        self.readings += len(outcome.batch)
        if outcome.error is not None:
            self.failed_polls += 1
        if len(self.latencies) < 100_000:
            self.latencies.append(outcome.latency)


class Poller:
    """Polls every target of a registry over its link and hands on reading batches."""

    def __init__(
        self,
        registry: Registry,
        links: dict[str, ModbusLink],
        polling: PollingConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.links = links
        self.polling = polling
        self.clock = clock
        self.health = [DeviceHealth() for _ in registry.devices]
        self.stats = PollStats()
        self._handlers: list[BatchHandler] = []
        self._pending: list[ReadingBatch] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._stop_flushing = asyncio.Event()
        self._override: dict[int, float] = {}
        self._offline_logged: set[int] = set()
        #: Applied to every batch before it is handed on (the derived points).
        self.transform: Callable[[ReadingBatch], ReadingBatch] | None = None
        self._by_link: dict[str, list[PollTarget]] = {}
        for target in registry.targets:
            self._by_link.setdefault(target.link, []).append(target)

    def targets_by_link(self) -> dict[str, list[PollTarget]]:
        """The poll targets of each link, in poll order."""
        return {link: list(targets) for link, targets in self._by_link.items()}

    def subscribe(self, handler: BatchHandler) -> Callable[[], None]:
        """Call ``handler`` with every batch; returns the call that unsubscribes it."""
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler)

    async def push(self, batch: ReadingBatch) -> None:
        """Readings from a push source (MQTT devices) join the next batch."""
        if len(batch):
            self._pending.append(batch)

    def set_interval_override(self, devices: list[int], interval: float | None) -> None:
        """Poll these devices every ``interval`` seconds (storm mode), or as usual (None)."""
        for device in devices:
            if interval is None:
                self._override.pop(device, None)
            else:
                self._override[device] = interval

    def interval_of(self, target: PollTarget) -> float:
        """Poll interval of a target: its override (storm mode), else its class's."""
        if target.device in self._override:
            return self._override[target.device]
        intervals: dict[str, float] = {
            "cabinet": self.polling.cabinet_interval,
            "lamp": self.polling.lamp_interval,
            "gauge": self.polling.gauge_interval,
            "meter": self.polling.meter_interval,
        }
        return intervals[target.device_class]

    def next_delay(self, target: PollTarget) -> float:
        """Time to the next poll: the interval, stretched while the device is offline."""
        base = self.interval_of(target)
        health = self.health[target.device]
        if health.online or health.never_polled:
            return base
        over = health.consecutive_failures - self.polling.offline_after
        factor = min(1 << max(over + 1, 1), self.polling.offline_backoff_max)
        return base * factor

    async def poll_target(
        self, target: PollTarget, priority: Priority = Priority.POLL
    ) -> PollOutcome:
        """Poll one target with its protocol's reader; record the device's health."""
        health = self.health[target.device]
        # Only a device known to answer gets retries: a dead one would make its
        # neighbours on the bus pay for every retry. So a dead device costs one timeout.
        retries = None if health.online else 0
        started = time.perf_counter()
        read = await reader_for(target.plan).read(
            self.links[target.link], target, retries, priority, self.clock
        )
        latency = self._record(target, started, read.ts, read.error)
        return PollOutcome(read.batch, read.answered, read.requests, latency, read.error)

    def _record(
        self, target: PollTarget, started: float, ts: float, error: LinkError | None
    ) -> float:
        """Health after a poll at ``ts``; returns its latency."""
        health = self.health[target.device]
        latency = time.perf_counter() - started
        health.last_latency = latency
        if error is None:
            health.record_success(ts)
        else:
            health.record_failure(error.kind, str(error), self.polling.offline_after)
        self._log_change(target, error)
        return latency

    def _log_change(self, target: PollTarget, error: LinkError | None) -> None:
        """Once when a device goes offline and once when it is back, not once per poll."""
        health = self.health[target.device]
        if error is not None and health.consecutive_failures == self.polling.offline_after:
            self._offline_logged.add(target.device)
            device = self.registry.devices[target.device].id
            context = {"device": device, "link": target.link}
            log.warning("%s on %s is offline: %s", device, target.link, error, extra=context)
        elif error is None and target.device in self._offline_logged:
            self._offline_logged.discard(target.device)
            device = self.registry.devices[target.device].id
            context = {"device": device, "link": target.link}
            log.info("%s on %s is back online", device, target.link, extra=context)

    async def _poll_link_once(self, targets: list[PollTarget]) -> list[PollOutcome]:
        outcomes = []
        for target in targets:
            outcome = await self.poll_target(target)
            self.stats.record(outcome)
            outcomes.append(outcome)
        return outcomes

    async def poll_all_once(self) -> ReadingBatch:
        """Poll every target once (links concurrently) and return all readings."""
        per_link = await asyncio.gather(
            *(self._poll_link_once(targets) for targets in self._by_link.values())
        )
        return ReadingBatch.concat([o.batch for outcomes in per_link for o in outcomes])

    async def read_now(self, devices: set[int]) -> None:
        """Poll the units feeding these devices at once and hand the readings on
        (after a confirmed command, so the map shows the switch, not the last poll)."""
        targets = [
            t
            for t in self.registry.targets
            if t.device in devices or not devices.isdisjoint(t.field_device.tolist())
        ]
        # At a command's priority: it is the end of the command, not a routine poll.
        outcomes = await asyncio.gather(*(self.poll_target(t, Priority.COMMAND) for t in targets))
        for outcome in outcomes:
            self.stats.record(outcome)
            if len(outcome.batch):
                self._pending.append(outcome.batch)
        await self.flush()

    async def _run_link(self, targets: list[PollTarget]) -> None:
        now = time.monotonic()
        # Spread first polls over half the link's shortest interval, so a restart does not
        # burst the bus, yet a slow-interval device (a meter read every minute) is read
        # within seconds of the start rather than up to half its own interval later.
        spread = min((self.interval_of(t) for t in targets), default=0.0) * 0.5
        queue = [(now + spread * i / max(len(targets), 1), i, t) for i, t in enumerate(targets)]
        heapq.heapify(queue)
        while True:
            due, order, target = heapq.heappop(queue)
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            outcome = await self.poll_target(target)
            self.stats.record(outcome)
            if len(outcome.batch):
                self._pending.append(outcome.batch)
            # Late polls are not made up in a burst: the next one is a full delay away.
            next_due = max(due + self.next_delay(target), time.monotonic())
            heapq.heappush(queue, (next_due, order, target))

    async def _flush_loop(self) -> None:
        # Never cancelled: a flush cut short would leave a batch with some
        # subscribers (stored) and not others (sent on), so stop asks it to end.
        while not self._stop_flushing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_flushing.wait(), self.polling.batch_interval)
            await self.flush()

    async def flush(self) -> None:
        """Hand the readings gathered so far to every subscriber as one batch."""
        if not self._pending:
            return
        batch = ReadingBatch.concat(self._pending)
        self._pending = []
        if self.transform is not None:
            batch = self.transform(batch)
        for handler in self._handlers:
            try:
                await handler(batch)
            except Exception:
                # One failing consumer must not stop polling or starve the others.
                log.exception("reading batch handler %r failed", handler)

    def start(self) -> None:
        """Start one task per link and the batch flusher."""
        if self._tasks:
            raise RuntimeError("poller already running")
        for link_id, targets in self._by_link.items():
            self._tasks.append(asyncio.create_task(self._run_link(targets), name=f"poll:{link_id}"))
        self._stop_flushing.clear()
        self._flusher = asyncio.create_task(self._flush_loop(), name="poll:flush")

    async def stop(self) -> None:
        """Stop polling and flush what was read (the links stay open: their owner,
        the controller, closes them; commands and time tables use them too)."""
        await cancel_until_done(self._tasks)
        self._tasks = []
        if self._flusher is not None:
            self._stop_flushing.set()
            await self._flusher  # its last flush hands on what was read
            self._flusher = None
        await self.flush()
