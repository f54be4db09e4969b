"""What a standby shows of its leader's open alarms, read from the shared database.

The leader raises alarms in memory and writes them behind, within a batch; the
standby reads the open ones every few seconds into its own alarm manager, which
nothing else touches until it is elected. So the alarm list on either node's
API says the same, a few seconds apart, and a duty officer whose browser or
script reaches the standby still sees what is open. The standby judges
nothing: acknowledging and shelving stay the leader's.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.exc import SQLAlchemyError

from controller.alarm_store import AlarmStore
from drivers.tasks import BackgroundTasks
from rules.alarms import AlarmManager

log = logging.getLogger(__name__)


class StandbyAlarmMirror:
    """Refreshes a standby's alarm manager from the state database every ``interval``."""

    def __init__(self, manager: AlarmManager, store: AlarmStore, interval: float) -> None:
        self.manager = manager
        self.store = store
        self.interval = interval
        #: When the open alarms were last read (None: not yet, or not since it failed).
        self.refreshed_at: float | None = None
        self._tasks = BackgroundTasks()

    async def refresh(self) -> None:
        """Read the open alarms now and show them in place of the last read."""
        alarms = await self.store.read_open()
        self.manager.mirror(alarms)
        self.refreshed_at = time.time()

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except (SQLAlchemyError, OSError) as exc:
                # Shown stale rather than empty: health names the age of the last read.
                log.warning("the standby could not read the open alarms: %s", exc)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Start reading in the background."""
        if not self._tasks.running:
            self._tasks.start(self._loop(), "standby:alarm-mirror")

    async def stop(self) -> None:
        """Stop reading (before this node starts its own alarm manager)."""
        await self._tasks.stop()
