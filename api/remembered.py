"""Answers of the state database about keys and sessions, remembered for a moment.

Every request is authenticated: asking the database each time would put its
round trip in front of every call and lock everyone out while it restarts.
An answer is taken as true for :data:`RECHECK_SECONDS`. A key revoked or a
session ended on another controller stops within that time (on this one at
once, since it forgets its own), and while the database is away what this
controller has already seen keeps working.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.exc import SQLAlchemyError

#: How long an answer is taken as still true before the database is asked again.
RECHECK_SECONDS = 10.0

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")


class Remembered(Generic[K, V]):
    """The database's last answer per key, asked again after :data:`RECHECK_SECONDS`."""

    def __init__(self) -> None:
        self._answers: dict[K, tuple[V, float]] = {}
        #: Counts what has been forgotten: an answer asked for before a change here and
        #: arriving after it is used for its own call, never remembered.
        self._changes = 0

    async def get(self, key: K, ask: Callable[[], Awaitable[V | None]], shown: str) -> V | None:
        """The answer for ``key``: remembered if checked lately, else ``ask``-ed (None: no
        such thing); the remembered one if the database cannot be reached."""
        known = self._answers.get(key)
        asked_at = time.monotonic()
        if known is not None and asked_at - known[1] < RECHECK_SECONDS:
            return known[0]
        changes = self._changes
        try:
            answer = await ask()
        except (SQLAlchemyError, OSError):
            if known is None:
                raise
            log.warning("state database unreachable: %s admitted as last checked", shown)
            return known[0]
        if answer is None:
            self._answers.pop(key, None)
        elif changes == self._changes:
            self._answers[key] = (answer, asked_at)
        return answer

    def forget(self, key: K) -> None:
        """Drop the answer for ``key`` (it has just changed here)."""
        self._changes += 1
        self._answers.pop(key, None)

    def forget_where(self, stale: Callable[[V], bool]) -> None:
        """Drop every answer ``stale`` says has changed."""
        self._changes += 1
        for key, (answer, _) in list(self._answers.items()):
            if stale(answer):
                del self._answers[key]
