"""Webhook delivery of case transitions: JSON, HMAC-signed, retried, in order, never dropped.

Transitions wait in the outbox table (written with the transition itself).
The sender posts the oldest first; a failure keeps it and everything after it
waiting, with exponential backoff, so the receiver sees each case's
transitions in order. Each body carries an idempotency key (also the
``Idempotency-Key`` header): if an answer is lost and a transition is sent
again, the receiver drops the duplicate.

Signature: ``X-Streetsense-Signature: sha256=HEX`` where HEX is the
HMAC-SHA256 of ``TIMESTAMP.BODY`` with the shared secret, and TIMESTAMP is the
``X-Streetsense-Timestamp`` header (Unix seconds), so a receiver can refuse
replays of old messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select

from controller.cases.config import WebhookConfig
from controller.cases.db import OutboxRow
from controller.state.database import StateDatabase
from drivers.tasks import BackgroundTasks

log = logging.getLogger(__name__)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for a body sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass
class DeliveryStatus:
    """What the sender has done and what waits."""

    delivered: int = 0
    failures: int = 0
    waiting: int = 0
    last_error: str = ""


class WebhookSender:
    """Posts outbox rows to the city platform until each is taken."""

    def __init__(
        self,
        config: WebhookConfig,
        secret: str,
        db: StateDatabase,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.secret = secret
        self.db = db
        self.clock = clock
        self.status = DeliveryStatus()
        self._wake = asyncio.Event()
        self._tasks = BackgroundTasks()
        self._client: httpx.AsyncClient | None = None
        self._failures_in_row = 0

    def start(self) -> None:
        """Start delivering (pending rows from before a restart go first)."""
        self._client = httpx.AsyncClient(timeout=self.config.timeout)
        self._tasks.start(self._run(), "cases:webhook")

    async def stop(self) -> None:
        """Stop; what is not delivered stays in the outbox for the next start."""
        await self._tasks.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        """Something new is in the outbox."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            # Cleared before looking, so a row added while we look wakes the next round.
            self._wake.clear()
            delay = await self.deliver_pending()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def deliver_pending(self) -> float:
        """Send what is due, oldest first; returns how long to wait before trying again."""
        async with self.db.session() as session:
            waiting = await session.scalar(
                select(func.count()).where(OutboxRow.delivered_at.is_(None))
            )
        self.status.waiting = int(waiting or 0)
        while True:
            async with self.db.session() as session:
                row = (
                    await session.scalars(
                        select(OutboxRow)
                        .where(OutboxRow.delivered_at.is_(None))
                        .order_by(OutboxRow.id)
                        .limit(1)
                    )
                ).first()
                if row is None:
                    return 60.0
                wait = row.next_at - self.clock()
                if wait > 0:
                    return wait
                error = await self._post(row)
                now = self.clock()
                row.attempts += 1
                if error is None:
                    row.delivered_at = now
                    row.last_error = ""
                    self.status.delivered += 1
                    self.status.waiting = max(self.status.waiting - 1, 0)
                    self._failures_in_row = 0
                else:
                    self._failures_in_row += 1
                    backoff = min(
                        self.config.backoff_max,
                        self.config.backoff_initial * 2 ** (self._failures_in_row - 1),
                    )
                    row.next_at = now + backoff * random.uniform(0.8, 1.0)
                    row.last_error = error
                    self.status.failures += 1
                    self.status.last_error = error
                await session.commit()
                if error is not None:
                    log.warning("webhook delivery of %s failed: %s", row.idempotency_key, error)
                    return max(row.next_at - now, 0.0)

    async def _post(self, row: OutboxRow) -> str | None:
        assert self._client is not None
        body = json.dumps(row.body, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": row.idempotency_key,
            "X-Streetsense-Event": "case.transition",
            "X-Streetsense-Timestamp": timestamp,
            "X-Streetsense-Signature": sign(self.secret, timestamp, body),
        }
        try:
            response = await self._client.post(self.config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}: {response.text[:200]}"
