"""Live events for the dashboard: alarm, case and command changes, as server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)

#: A slow browser tab is dropped (it reloads) rather than let its queue grow without end.
QUEUE_LIMIT = 500
HEARTBEAT_S = 15.0


class EventHub:
    """Fans each event out to every connected client."""

    def __init__(self) -> None:
        self._clients: set[asyncio.Queue[tuple[str, dict[str, Any]] | None]] = set()

    @property
    def clients(self) -> int:
        """Connected clients."""
        return len(self._clients)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send an event to every client (never blocks)."""
        for queue in list(self._clients):
            try:
                queue.put_nowait((kind, data))
            except asyncio.QueueFull:
                self._clients.discard(queue)
                log.warning("dropped a live-event client that fell %d events behind", QUEUE_LIMIT)

    async def stream(self, disconnected: Any) -> AsyncIterator[str]:
        """One client's events in text/event-stream form, until it disconnects."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue(QUEUE_LIMIT)
        self._clients.add(queue)
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    if await disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if item is None or queue not in self._clients:
                    return
                kind, data = item
                yield f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
        finally:
            self._clients.discard(queue)

    def close(self) -> None:
        """End every stream (the server is shutting down)."""
        for queue in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):  # a full client is dropped anyway
                queue.put_nowait(None)
        self._clients.clear()
