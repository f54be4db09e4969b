"""Stopping tasks that talk to devices."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_until_done(tasks: Iterable[asyncio.Task[None]], recheck: float = 1.0) -> None:
    """Cancel the tasks and wait until every one has ended.

    Python 3.11's ``asyncio.wait_for`` (used inside pymodbus for every request)
    drops a cancellation that lands just as the answer arrives, so one cancel
    may leave a polling loop running: cancel again until each task is done.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recheck)
