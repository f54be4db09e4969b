"""The embedded store as a sink that fails alone: what it cannot take is spooled and retried.

While the store writes, batches go straight in (it is local and durable). When
a write fails (disk full, read-only file, a locked database), that batch and
every later one go to the store's own spool, in order, and a delivery task
writes them back as soon as the store takes writes again; then batches go
straight in once more.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from controller.telemetry.delivery import DeliveryError, RejectedPayload, SpooledDelivery
from controller.telemetry.embedded import EmbeddedStore
from controller.telemetry.spool import DiskSpool, SpoolItem
from drivers.readings import ReadingBatch, decode_batch, encode_batch

log = logging.getLogger(__name__)


@dataclass
class StoreHealth:
    """Writes of the embedded store: a failing store is reported, not silent."""

    writes: int = 0
    #: Readings the writes stored.
    points: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_write: float | None = None

    def failed(self, exc: BaseException) -> bool:
        """Count a failed write; True if it is the first of a run of failures."""
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        return self.consecutive_failures == 1

    def wrote(self, points: int) -> None:
        """Count a write of ``points`` readings that went in."""
        self.writes += 1
        self.points += points
        self.consecutive_failures = 0
        self.last_write = time.time()


class EmbeddedStoreTransport:
    """Writes spooled batches into the store (the retry path of :class:`StoreSink`)."""

    name = "embedded store"

    def __init__(self, store: EmbeddedStore, layout: bytes, health: StoreHealth) -> None:
        self.store = store
        self.layout = layout
        self.health = health

    async def send(self, payload: bytes) -> None:
        """Write one spooled batch; a DeliveryError while the store still fails."""
        try:
            batch = decode_batch(payload, self.layout)
        except ValueError as exc:
            raise RejectedPayload(str(exc)) from exc
        try:
            await self.store.write(batch)
        except Exception as exc:
            self.health.failed(exc)
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        self.health.wrote(len(batch))


class StoreSink:
    """Batches into the embedded store, through its spool whenever the store fails."""

    def __init__(self, store: EmbeddedStore, spool: DiskSpool, layout: bytes) -> None:
        self.store = store
        self.layout = layout
        self.health = StoreHealth()
        self.delivery = SpooledDelivery(
            EmbeddedStoreTransport(store, layout, self.health), spool, coalesce=False
        )

    async def start(self) -> None:
        """Open the store and its spool (batches an earlier run could not store go first)."""
        await self.store.open()
        await self.delivery.start()

    async def write(self, batch: ReadingBatch) -> None:
        """Store a batch now, or spool it behind the ones waiting."""
        if not len(batch):
            return
        if not self.delivery.pending:
            try:
                await self.store.write(batch)
            except Exception as exc:
                if self.health.failed(exc):
                    log.error(
                        "embedded store write failed (%s: %s): batches wait in %s until it "
                        "takes writes again",
                        type(exc).__name__,
                        exc,
                        self.delivery.spool.folder,
                        extra={"sink": "embedded"},
                    )
            else:
                self.health.wrote(len(batch))
                return
        await self.delivery.submit([SpoolItem(encode_batch(batch, self.layout), len(batch))])

    @property
    def up(self) -> bool:
        """Whether the store takes writes."""
        return self.health.consecutive_failures == 0

    async def close(self, grace: float) -> None:
        """Write what waits within ``grace``, then close the spool and the store."""
        await self.delivery.close(grace)
        await self.store.close()
